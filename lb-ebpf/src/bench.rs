//! Helpers for benchmarks: the floor every per-packet figure is a ratio to, the memory
//! floor (the floor plus one line read from memory), and the sink at the far end of a
//! throughput run.

use aya_ebpf::{
    bindings::xdp_action,
    macros::map,
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use lb_common::bench::{MISS_WORK_MAX, MissLine, MissState, miss_line};
use network_types::eth::EthHdr;

use crate::frame::ptr_at;

/// A MAC address copied byte by byte, as the floor has always done it (its figure is the
/// reference every ratio divides by; the balancer moves MACs as 16-bit words).
#[inline(always)]
fn copy_mac(m: &[u8; 6]) -> [u8; 6] {
    [m[0], m[1], m[2], m[3], m[4], m[5]]
}

/// Swap the MACs and send the frame back: the least work an XDP forwarder can do.
#[inline(always)]
pub fn floor_tx(ctx: &XdpContext) -> u32 {
    swap_macs(ctx, 0)
}

/// Swap the MACs, the new source's first byte XORed with `z` (0 but for the memory floor,
/// whose rewrite must depend on the line it read; a constant 0 compiles away), and send
/// the frame back.
#[inline(always)]
fn swap_macs(ctx: &XdpContext, z: u8) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: `ptr_at` checked the header is inside the frame.
    let (mut dst, src) = unsafe { (copy_mac(&(*eth).dst_addr), copy_mac(&(*eth).src_addr)) };
    dst[0] ^= z;
    // SAFETY: as above.
    unsafe {
        (*eth).dst_addr = src;
        (*eth).src_addr = dst;
    }
    xdp_action::XDP_TX
}

/// Per-CPU count of the frames [`sink`] dropped (`lb_common::bench::names::SINK_COUNT`).
#[map]
pub static SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The far end of a throughput run: count the frame, drop it.
#[inline(always)]
pub fn sink() -> u32 {
    if let Some(c) = SINK_COUNT.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_DROP
}

/// The memory floor's lines (`lb_common::bench::names::MISS_LINES`): one by default, sized
/// by the benchmark that runs [`floor_miss`] (a power of two).
#[map]
pub static MISS_LINES: Array<MissLine> = Array::with_max_entries(1, 0);

/// The memory floor's state, per CPU (`names::MISS_STATE`, `lb_common::bench::MissState`).
#[map]
pub static MISS_STATE: PerCpuArray<MissState> = PerCpuArray::with_max_entries(1, 0);

/// The memory floor: what a lookup that misses every cache costs above [`floor_tx`]. Read
/// the first word of the next "flow"'s line of `MISS_LINES` (each flow's line at its own
/// scattered place, as a flow-table lookup reads its slot's tag), branch on it as a lookup
/// does, do `work` rounds of arithmetic that does not wait for it (a program's other work),
/// then swap MACs with a rewrite that does (as a balancer's on its flow's entry) and send
/// the frame back.
#[inline(always)]
pub fn floor_miss(ctx: &XdpContext) -> u32 {
    let Some(st) = MISS_STATE.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
    let MissState {
        mask,
        shift,
        flows,
        next,
        work,
    } = unsafe { *st };
    let after = next.wrapping_add(1);
    // SAFETY: as above.
    unsafe { (*st).next = if after >= flows { 0 } else { after } };
    let Some(line) = MISS_LINES.get(miss_line(next, mask, shift)) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: a live array value; read once, as the balancer reads a slot's tag.
    let word = unsafe { core::ptr::read_volatile(&line.0[0]) };
    // Never true (the lines stay zero): a branch on the loaded word, predicted, as a
    // lookup's on its slot's tag.
    if word == u64::MAX {
        return xdp_action::XDP_PASS;
    }
    // Four independent chains of adds and XORs, none waiting for the line.
    let (mut a, mut b, mut c, mut d) = (u64::from(work), 1u64, 2u64, 3u64);
    let mut i = 0;
    while i < work && i < MISS_WORK_MAX {
        let x = u64::from(i);
        a = a.wrapping_add(x);
        b ^= x;
        c = c.wrapping_add(x << 1);
        d ^= x << 2;
        i += 1;
    }
    let w = core::hint::black_box(a ^ b ^ c ^ d);
    // The rewrite depends on the line, as a balancer's on its flow's entry: zero (the
    // word is zero, `w ^ w` too, unknown to LLVM), so the MACs are swapped, nothing else.
    swap_macs(ctx, (w ^ core::hint::black_box(w) ^ word) as u8)
}
