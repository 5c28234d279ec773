//! `cargo xtask clippy` and `cargo xtask fmt-check`.

use std::process::Command;

use anyhow::bail;
use clap::ValueEnum;

use crate::cmd;

/// The eBPF crate, its target, and the toolchain aya-build builds it with.
const EBPF_PACKAGE: &str = "lb-ebpf";
const EBPF_TARGET: &str = "bpfel-unknown-none";
const EBPF_TOOLCHAIN: &str = "nightly";

#[derive(clap::Args)]
pub struct ClippyArgs {
    /// Lint only one side.
    #[arg(long, value_enum)]
    only: Option<Side>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Side {
    /// The workspace, for the host.
    Host,
    /// `lb-ebpf`, for the BPF target.
    Ebpf,
}

/// Both runs happen even if the first fails, so one CI log shows all the lints.
pub fn clippy(args: &ClippyArgs) -> anyhow::Result<()> {
    let mut failed = Vec::new();

    if args.only != Some(Side::Ebpf) {
        cmd::section("clippy: workspace (host)");
        // Building sluice-dataplane runs its build script, which builds the eBPF object with
        // aya-build (nightly + bpf-linker): `cargo xtask setup` must have run. --keep-going:
        // a crate failing its lints does not stop the lints of crates that do not need it.
        let mut host = cmd::cargo();
        host.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--keep-going",
            "--",
            "-D",
            "warnings",
        ]);
        if let Err(err) = cmd::run(&mut host) {
            eprintln!("xtask: {err:#}");
            failed.push("host");
        }
    }

    if args.only != Some(Side::Host) {
        cmd::section(&format!(
            "clippy: {EBPF_PACKAGE} ({EBPF_TARGET}, {EBPF_TOOLCHAIN})"
        ));
        if let Err(err) = cmd::run(&mut ebpf_clippy()) {
            eprintln!("xtask: {err:#}");
            failed.push(EBPF_PACKAGE);
        }
    }

    if !failed.is_empty() {
        bail!("clippy failed for: {}", failed.join(", "));
    }
    Ok(())
}

/// `lb-ebpf` as aya-build compiles it (see aya-build's `build_ebpf`): the `build-ebpf` feature
/// (which enables its two binaries, the balancer's object `sluice-ebpf` and the benchmarks'
/// `sluice-bench-ebpf`, whose modules only `--bins` lints), `-Z build-std=core` on nightly, and
/// `--cfg bpf_target_arch` set to the host's architecture. Only `--lib --bins`: test targets
/// need `std`, which the BPF target does not have (the host run lints those).
fn ebpf_clippy() -> Command {
    let mut cmd = cmd::cargo();
    cmd.arg(format!("+{EBPF_TOOLCHAIN}"))
        .args([
            "clippy",
            "--package",
            EBPF_PACKAGE,
            "--lib",
            "--bins",
            "--keep-going",
        ])
        .args(["--target", EBPF_TARGET, "-Z", "build-std=core"])
        .args(["--features", "build-ebpf", "--", "-D", "warnings"])
        // aya-build passes these through CARGO_ENCODED_RUSTFLAGS, which wins over RUSTFLAGS;
        // -Cdebuginfo and -Clink-arg=--btf matter only when linking, which clippy does not.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{}\"", bpf_target_arch()),
        )
        // As aya-build does: make sure the nightly toolchain's rustc is the one used.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    cmd
}

/// aya-build's value: the architecture of the target the userspace is built for (the host
/// here), with riscv64 variants folded into `riscv64`.
fn bpf_target_arch() -> &'static str {
    match std::env::consts::ARCH {
        arch if arch.starts_with("riscv64") => "riscv64",
        arch => arch,
    }
}

pub fn fmt_check() -> anyhow::Result<()> {
    cmd::section("cargo fmt --all -- --check");
    cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))
}
