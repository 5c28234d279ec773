//! Helpers for benchmarks: the floor every per-packet figure is a ratio to.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use network_types::eth::EthHdr;

use crate::parse::ptr_at;

/// Swap the MACs and send the frame back: the least work an XDP forwarder can do.
#[inline(always)]
pub fn floor_tx(ctx: &XdpContext) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: `ptr_at` checked the header is inside the frame.
    #[expect(
        clippy::manual_swap,
        reason = "mem::swap of packet memory may become a memcpy call the verifier rejects"
    )]
    unsafe {
        let dst = (*eth).dst_addr;
        (*eth).dst_addr = (*eth).src_addr;
        (*eth).src_addr = dst;
    }
    xdp_action::XDP_TX
}
