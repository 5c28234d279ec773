//! L2 direct server return: the frame goes to the backend's MAC unchanged above L2; the
//! backend holds the VIP on its loopback and answers the client directly.

use aya_ebpf::programs::XdpContext;
use lb_common::{BACKEND_F_HAS_MAC, Backend};

use super::{Verdict, fib};
use crate::parse::{Packet, frame_macs, mac_at, write_macs};

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
        let (own, _) = frame_macs(ctx)?;
        // SAFETY: `mac` sits at an even offset of the backend's (8-byte aligned) slot.
        write_macs(ctx, unsafe { mac_at(&backend.mac) }, own)?;
        return Ok(Verdict::Tx);
    }
    let hop = fib::next_hop(
        ctx,
        id,
        backend.family,
        &[0; 4],
        backend.addr_words(),
        pkt.l3_len,
    )?;
    write_macs(ctx, hop.dmac, hop.smac)?;
    Ok(hop.verdict(ctx))
}
