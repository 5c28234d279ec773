//! The benchmarks' lean `BPF_PROG_TEST_RUN` path: the caller's buffers are reused, nothing
//! is allocated or copied back per call (`Dataplane::run_frame` is for fixtures and tools,
//! and allocates its output frame every time).

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions, Xdp},
};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// A loaded XDP program of the object, shared (test runs only need `&Xdp`).
pub fn xdp<'a>(ebpf: &'a Ebpf, name: &'static str) -> anyhow::Result<&'a Xdp> {
    let p = ebpf
        .program(name)
        .ok_or_else(|| anyhow::anyhow!("program {name} is missing from the eBPF object"))?;
    Ok(<&Xdp>::try_from(p)?)
}

/// An `xdp_md` for `BPF_PROG_TEST_RUN`: data, data_end (= the frame length, as the kernel
/// requires), data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
pub fn xdp_md(len: usize, ingress_ifindex: u32) -> [u8; 24] {
    let mut md = [0u8; 24];
    md[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    md
}

/// Run `prog` once on `frame`; the verdict and the kernel-measured duration (ns).
#[inline]
pub fn once(prog: &Xdp, frame: &[u8], md: &[u8; 24]) -> anyhow::Result<(u32, u64)> {
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&md[..]),
        repeat: 1,
        ..TestRunOptions::default()
    })?;
    Ok((r.return_value, r.duration.as_nanos() as u64))
}

pub fn action_name(a: u32) -> &'static str {
    match a {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "?",
    }
}
