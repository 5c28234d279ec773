//! L2 direct server return: the frame goes to the backend's MAC unchanged above L2; the
//! backend holds the VIP on its loopback and answers the client directly.

use aya_ebpf::programs::XdpContext;
use lb_common::{BACKEND_F_HAS_MAC, Backend, reason};
use network_types::eth::EthHdr;

use super::{Verdict, fib};
use crate::parse::{Packet, copy_mac, ptr_at};

/// Store a MAC into the frame as three 16-bit words (volatile: a merged 6-byte copy becomes
/// a `memmove` call, see `fib::zeroed_params`). The Ethernet addresses sit at even offsets
/// of a 2-byte aligned frame.
#[inline(always)]
fn put_mac(dst: *mut [u8; 6], m: &[u8; 6]) {
    let d = dst.cast::<u16>();
    for i in 0..3 {
        // SAFETY: `dst` points at 6 bytes inside the frame (checked by the caller's
        // `ptr_at`), 2-byte aligned; `i < 3`.
        unsafe {
            core::ptr::write_volatile(d.add(i), u16::from_ne_bytes([m[2 * i], m[2 * i + 1]]))
        };
    }
}

/// Destination MAC := the backend's (configured, or its resolved next hop's); source MAC :=
/// the LB interface's (the frame's old destination, or the next hop's egress MAC).
#[inline(always)]
pub(super) fn rewrite(
    ctx: &XdpContext,
    pkt: &Packet,
    id: u32,
    backend: &Backend,
) -> Result<Verdict, u32> {
    if backend.flags & BACKEND_F_HAS_MAC != 0 {
        let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(reason::DROP_INTERNAL)?;
        // SAFETY: `ptr_at` checked the Ethernet header is inside the frame.
        unsafe {
            let own = copy_mac(&(*eth).dst_addr);
            put_mac(&raw mut (*eth).src_addr, &own);
            put_mac(&raw mut (*eth).dst_addr, &backend.mac);
        }
        return Ok(Verdict::Tx);
    }
    let hop = fib::next_hop(ctx, id, backend.family, &[0; 16], &backend.addr, pkt.l3_len)?;
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(reason::DROP_INTERNAL)?;
    // SAFETY: as above.
    unsafe {
        put_mac(&raw mut (*eth).src_addr, &hop.smac);
        put_mac(&raw mut (*eth).dst_addr, &hop.dmac);
    }
    Ok(hop.verdict(ctx))
}
