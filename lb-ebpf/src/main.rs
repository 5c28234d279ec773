//! The XDP programs of sluice's balancer object (`sluice-ebpf`): entry points only (logic
//! lives in the library). Only what production runs is here; the benchmarks' programs and
//! maps are in their own object (`sluice-bench-ebpf`, `bin/sluice-bench-ebpf.rs`).
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// The load balancer. `#[inline(always)]` goes on the function the macro wraps: left to
/// LLVM, this one (unlike the smaller programs) stays a function of its own, and every
/// packet pays a BPF-to-BPF call and return into it.
#[xdp]
#[inline(always)]
pub fn sluice_lb(ctx: XdpContext) -> u32 {
    lb_ebpf::balancer::run(&ctx)
}

/// Backend-side decapsulation of IPIP / IP6IP6.
#[xdp]
pub fn sluice_decap(ctx: XdpContext) -> u32 {
    lb_ebpf::decap::run(&ctx)
}

/// Health probes through the forwarding path (run by the daemon with live frames).
#[xdp]
pub fn sluice_probe(ctx: XdpContext) -> u32 {
    lb_ebpf::probe::run(&ctx)
}

/// `XDP_PASS`: veth peers only receive `XDP_TX`/redirected frames with a program attached.
#[xdp]
pub fn sluice_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

/// GPL-compatible: `bpf_fib_lookup` and friends are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
