//! The benchmarks' XDP programs (`sluice-bench-ebpf`), an object of their own so that the
//! balancer's object (`sluice-ebpf`) carries only what production runs, and this one only
//! the benchmarks' programs and maps (`GEN_CONFIG`, `GEN_COUNTER`, `SINK_COUNT`,
//! `MISS_LINES`, `MISS_STATE`). Its logic
//! is in its own modules `bench` and `gen`; it does not link the library (every map of the
//! library would come with it), only `frame` (the bounds-checked access) is shared.
#![no_std]
#![no_main]

mod bench;
mod frame;
mod r#gen;

use aya_ebpf::{macros::xdp, programs::XdpContext};

/// Benchmark floor: swap MACs, `XDP_TX`.
#[xdp]
pub fn sluice_floor_tx(ctx: XdpContext) -> u32 {
    bench::floor_tx(&ctx)
}

/// Benchmark memory floor: the next flow's 64-byte line read from a large array, some work,
/// then as the floor.
#[xdp]
pub fn sluice_floor_miss(ctx: XdpContext) -> u32 {
    bench::floor_miss(&ctx)
}

/// Benchmarks: the live-frames traffic generator (`BPF_PROG_TEST_RUN`, `XDP_TX`).
#[xdp]
pub fn sluice_gen(ctx: XdpContext) -> u32 {
    r#gen::run(&ctx)
}

/// Benchmarks: count and drop (the far end of a throughput run).
#[xdp]
pub fn sluice_sink(_ctx: XdpContext) -> u32 {
    bench::sink()
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

/// The same license as the balancer's object.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
