//! L2 direct server return: the frame goes to the backend's MAC unchanged above L2; the
//! backend holds the VIP on its loopback and answers the client directly.

use aya_ebpf::programs::XdpContext;
use lb_common::{BACKEND_F_HAS_MAC, Backend, reason};
use network_types::eth::EthHdr;

use super::{Verdict, fib};
use crate::parse::{Packet, copy_mac, ptr_at, write_macs};

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
        let eth: *const EthHdr = ptr_at(ctx, 0).ok_or(reason::DROP_INTERNAL)?;
        // SAFETY: `ptr_at` checked the Ethernet header is inside the frame.
        let own = copy_mac(unsafe { &(*eth).dst_addr });
        write_macs(ctx, &backend.mac, &own)?;
        return Ok(Verdict::Tx);
    }
    let hop = fib::next_hop(ctx, id, backend.family, &[0; 16], &backend.addr, pkt.l3_len)?;
    write_macs(ctx, &hop.dmac, &hop.smac)?;
    Ok(hop.verdict(ctx))
}
