//! Helpers for benchmarks: the floor every per-packet figure is a ratio to.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use network_types::eth::EthHdr;

use crate::parse::{copy_mac, ptr_at};

/// Swap the MACs and send the frame back: the least work an XDP forwarder can do.
#[inline(always)]
pub fn floor_tx(ctx: &XdpContext) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: `ptr_at` checked the header is inside the frame.
    let (dst, src) = unsafe { (copy_mac(&(*eth).dst_addr), copy_mac(&(*eth).src_addr)) };
    // SAFETY: as above.
    unsafe {
        (*eth).dst_addr = src;
        (*eth).src_addr = dst;
    }
    xdp_action::XDP_TX
}
