//! Sending a packet to its backend: DSR (MAC rewrite) or IPIP/IP6IP6 encapsulation.

mod csum;
mod dsr;
mod fib;
mod ipip;

use aya_ebpf::programs::XdpContext;
use lb_common::{Backend, GlobalConfig, MODE_IPIP};

use crate::parse::Packet;

/// What to do with the frame after it was rewritten.
pub enum Verdict {
    /// Send back out of the interface it came in on.
    Tx,
    /// Send out of another interface.
    Redirect(u32),
}

/// Rewrite the frame for `backend`. `cfg` is the configuration the caller already looked
/// up (one `CONFIG` lookup a packet); `hash` is the flow hash when the caller has it (IPIP
/// computes it otherwise). `Err` carries the drop reason.
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    pkt: &Packet,
    mode: u8,
    backend: &Backend,
    cfg: &GlobalConfig,
    hash: Option<u32>,
) -> Result<Verdict, u32> {
    if mode == MODE_IPIP {
        ipip::encap(ctx, pkt, backend, cfg, hash)
    } else {
        dsr::rewrite(ctx, pkt, backend)
    }
}
