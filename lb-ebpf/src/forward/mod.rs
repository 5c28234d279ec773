//! Sending a packet to its backend: DSR (MAC rewrite) or IPIP/IP6IP6 encapsulation.

mod csum;
mod dsr;
mod fib;
mod ipip;
mod mss;
mod too_big;

use aya_ebpf::programs::XdpContext;
use lb_common::{Backend, FAMILY_V6, GlobalConfig, MODE_IPIP};

use crate::parse::Packet;

/// Answer a packet too big once encapsulated (`Err(ICMP_TOO_BIG)` from [`forward`]); only
/// the balancer does (health probes are small).
#[inline(always)]
pub fn too_big(ctx: &XdpContext, pkt: &Packet, cfg: &GlobalConfig) -> u32 {
    let outer = if pkt.key.family == FAMILY_V6 { 40 } else { 20 };
    too_big::reply(ctx, pkt, cfg, u32::from(fib::mtu()), outer)
}

/// What to do with the frame after it was rewritten.
pub enum Verdict {
    /// Send back out of the interface it came in on.
    Tx,
    /// Send out of another interface.
    Redirect(u32),
}

/// Rewrite the frame for `backend` (slot `id`). `cfg` is the configuration the caller
/// already looked up (one `CONFIG` lookup a packet). The bool says a SYN's MSS was clamped
/// (IPIP only). `Err` carries the drop reason, or `ICMP_TOO_BIG` for a packet too big once
/// encapsulated (untouched: the caller may answer it with [`too_big`]).
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    pkt: &Packet,
    mode: u8,
    id: u32,
    backend: &Backend,
    cfg: &GlobalConfig,
) -> Result<(Verdict, bool), u32> {
    if mode == MODE_IPIP {
        ipip::encap(ctx, pkt, id, backend, cfg)
    } else {
        Ok((dsr::rewrite(ctx, pkt, id, backend)?, false))
    }
}
