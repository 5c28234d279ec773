//! Builds the eBPF objects (every binary of `lb-ebpf`, for the BPF target, on the nightly
//! toolchain with bpf-linker) into OUT_DIR so `dataplane` can embed them: the balancer's
//! `sluice-ebpf` and the benchmarks' `sluice-bench-ebpf`. `cargo xtask setup` installs what
//! this needs.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../lb-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "lb-ebpf",
            root_dir: root,
            features: &["build-ebpf"],
            ..Package::default()
        }],
        Toolchain::default(),
    )
}
