//! L2 direct server return: the frame goes to the backend's MAC unchanged above L2; the
//! backend holds the VIP on its loopback and answers the client directly.

use aya_ebpf::programs::XdpContext;
use lb_common::{BACKEND_F_HAS_MAC, Backend, reason};
use network_types::eth::EthHdr;

use super::{Verdict, fib};
use crate::parse::{Packet, ptr_at};

/// Destination MAC := the backend's (configured, or from the FIB/neighbour table); source
/// MAC := the LB interface's (the frame's old destination, or the FIB's egress MAC).
#[inline(always)]
pub(super) fn rewrite(ctx: &XdpContext, pkt: &Packet, backend: &Backend) -> Result<Verdict, u32> {
    if backend.flags & BACKEND_F_HAS_MAC != 0 {
        let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(reason::DROP_INTERNAL)?;
        // SAFETY: `ptr_at` checked the Ethernet header is inside the frame.
        unsafe {
            let own = (*eth).dst_addr;
            (*eth).src_addr = own;
            (*eth).dst_addr = backend.mac;
        }
        return Ok(Verdict::Tx);
    }
    let hop = fib::lookup(ctx, backend.family, &[0; 16], &backend.addr, pkt.l3_len)?;
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(reason::DROP_INTERNAL)?;
    // SAFETY: as above.
    unsafe {
        (*eth).src_addr = hop.smac;
        (*eth).dst_addr = hop.dmac;
    }
    Ok(hop.verdict(ctx))
}
