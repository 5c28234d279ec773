//! sluice's developer tasks, run as `cargo xtask <task>` (an alias in `.cargo/config.toml`).
//!
//! - `setup [--check] [STEP]`: install what building and testing sluice needs (idempotent).
//! - `clippy`: lint the host crates, then the eBPF crate for its own target.
//! - `fmt-check`: `cargo fmt --all -- --check`.
//! - `test [ARGS]...`: `setup`, then `cargo test --workspace [ARGS]...`.
//! - `demo [CONNECTIONS]`: `setup`, build `sluice`, run `sluice demo`.
//! - `vm-test [--kernel 6.1|6.12|all]`: the checks in QEMU guests of other kernels (`vm/`).
//! - `deb [--no-build]`: the Debian package in `<target>/debian/`, its contents checked
//!   (`deb.rs`).
//! - `fuzz [--frames N] [--seed S]`: the packet fuzzer through the real balancer
//!   (`tests/packet_fuzz.rs`), release build.
//! - `fuzz-parsers [--seconds N] [TARGET]...`: libFuzzer on the userspace parsers (`fuzz/`).

mod cmd;
mod deb;
mod fuzz_parsers;
mod lint;
mod setup;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "sluice's developer tasks",
    version
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing sluice needs: the nightly toolchain's rust-src and
    /// clippy, Debian packages (LLVM 22, network tools), bpf-linker, and a bpffs at
    /// /sys/fs/bpf. Only what is missing is installed.
    Setup(setup::Args),
    /// Lint with `-D warnings`: the workspace for the host (`--all-targets`), then `lb-ebpf`
    /// for `bpfel-unknown-none` on the nightly toolchain.
    Clippy(lint::ClippyArgs),
    /// Check formatting: `cargo fmt --all -- --check`.
    FmtCheck,
    /// Run `cargo xtask setup`, then `cargo test --workspace --no-fail-fast` (extra arguments
    /// are passed on, e.g. `cargo xtask test -- --nocapture`; with `-p` in them, only those
    /// packages are tested).
    Test {
        /// Arguments for `cargo test`, after `--workspace`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run `cargo xtask setup`, build `sluice`, and run `sluice demo`: a namespace lab with a
    /// client, sluice and three backends weighted 1:2:3, real TCP connections through the
    /// XDP balancer, a table of who answered, and a failover. Leaves nothing behind.
    Demo {
        /// How many connections the client makes.
        #[arg(default_value_t = 600)]
        connections: u32,
    },
    /// Boot each kernel of the matrix (Debian 12's 6.1 and 6.12) in QEMU and run, in each:
    /// the packet fixtures, the DSR/IPIP smoke test, pktgen through the daemon with exact
    /// counter reconciliation, and TCP to a backend decapsulating with the kernel's ipip
    /// device. Prints a per-kernel summary (also `<target>/vm/summary.txt`).
    VmTest(vm::Args),
    /// Run the packet fuzzer (release build) through the real balancer: `--frames` frames
    /// (random and mutated valid ones) from `--seed`, each checked against the data plane's
    /// invariants (see `tests/src/fuzz.rs`); a violation prints its frame in hex and the
    /// seed. For a long run: `cargo xtask fuzz --frames 100000000`.
    Fuzz {
        #[arg(long, default_value_t = 1_000_000)]
        frames: u64,
        /// Default: from the clock (printed, to replay a failure).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Build the Debian package `<target>/debian/sluice_<version>_<arch>.deb` (release
    /// binary, /etc/sluice/sluice.toml, the systemd unit, completions, man pages) with
    /// dpkg-deb, and check that it holds every expected path.
    Deb(deb::Args),
    /// Coverage-guided fuzzing (cargo-fuzz, libFuzzer, nightly) of every userspace parser
    /// that reads outside input (`fuzz/fuzz_targets/`: the config file, API requests,
    /// Prometheus load pages and metric selectors, agent-check lines, HTTP answers, cron
    /// schedules), `--seconds` each; installs cargo-fuzz if missing. Separate from `fuzz`
    /// (the packet fuzzer). A crash, hang or runaway allocation fails it and saves the
    /// input under `fuzz/artifacts/`. For a long run: `cargo xtask fuzz-parsers --seconds
    /// 3600`.
    FuzzParsers(fuzz_parsers::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup(args) => setup::run(&args),
        Task::Clippy(args) => lint::clippy(&args),
        Task::FmtCheck => lint::fmt_check(),
        Task::Demo { connections } => demo(connections),
        Task::VmTest(args) => vm::run(&args),
        Task::Fuzz { frames, seed } => fuzz(frames, seed),
        Task::Deb(args) => deb::run(&args),
        Task::FuzzParsers(args) => fuzz_parsers::run(&args),
        Task::Test { mut args } => {
            // clap swallows a `--` right after `test`; in `cargo xtask test -- --list` it is
            // meant for cargo (the test binaries' arguments follow).
            if std::env::args()
                .skip_while(|a| a != "test")
                .nth(1)
                .as_deref()
                == Some("--")
            {
                args.insert(0, "--".to_owned());
            }
            test(&args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn test(args: &[String]) -> anyhow::Result<()> {
    setup::run(&setup::Args::default())?;
    let mut test = cmd::cargo();
    test.arg("test");
    // The whole workspace unless packages are picked (cargo would ignore them otherwise).
    let picks_packages = args
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a.starts_with("-p") || a.starts_with("--package"));
    if !picks_packages {
        test.arg("--workspace");
    }
    // --no-fail-fast: one failing test binary does not hide the results of the others.
    test.arg("--no-fail-fast").args(args);
    cmd::section("test");
    cmd::run(&mut test)
}

fn fuzz(frames: u64, seed: Option<u64>) -> anyhow::Result<()> {
    setup::run(&setup::Args::default())?;
    let mut test = cmd::cargo();
    test.args([
        "test",
        "--release",
        "--package",
        "sluice-tests",
        "--test",
        "packet_fuzz",
        "--",
        "--nocapture",
    ])
    .env("SLUICE_FUZZ_FRAMES", frames.to_string());
    if let Some(s) = seed {
        test.env("SLUICE_FUZZ_SEED", s.to_string());
    }
    cmd::section("packet fuzz");
    cmd::run(&mut test)
}

fn demo(connections: u32) -> anyhow::Result<()> {
    setup::run(&setup::Args::default())?;
    cmd::section("build");
    cmd::run(cmd::cargo().args(["build", "--package", "lb-userspace", "--bin", "sluice"]))?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), std::path::PathBuf::from);
    cmd::section("demo");
    cmd::run(
        std::process::Command::new(target.join("debug/sluice"))
            .args(["demo", "--connections"])
            .arg(connections.to_string()),
    )
}
