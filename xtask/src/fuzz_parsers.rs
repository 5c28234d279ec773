//! `cargo xtask fuzz-parsers`: coverage-guided fuzzing (cargo-fuzz, libFuzzer, nightly) of
//! every userspace parser that reads outside input, `fuzz/fuzz_targets/*.rs`. Each target
//! runs for `--seconds` from its committed seeds (`fuzz/seeds/<target>`) and what it found
//! before (`fuzz/corpus/<target>`, not committed); a crash, a hang (an input over 3 s; the slowest real ones take milliseconds) or
//! an allocation beyond 2 GiB fails the task, and its input is saved under
//! `fuzz/artifacts/<target>/` (replay: `cargo +nightly fuzz run -s none <target> <file>`).
//!
//! Built without a sanitizer (`-s none`): the parsers and what they call are safe Rust, so
//! AddressSanitizer would find nothing more and halves the executions; overflow checks and
//! debug assertions stay on (cargo-fuzz's default).

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::{Context as _, bail};

use crate::{cmd, setup};

/// The cargo-fuzz installed (`cargo install --locked`), pinned.
const CARGO_FUZZ_VERSION: &str = "0.13.1";
/// The toolchain libFuzzer's instrumentation needs.
const NIGHTLY: &str = "+nightly";
/// Every target, in the order they run.
pub const TARGETS: &[&str] = &[
    "config_toml",
    "api_request",
    "prom_report",
    "agent_line",
    "http_answer",
    "cron_schedule",
];

#[derive(clap::Args)]
pub struct Args {
    /// How long each target runs (libFuzzer's `-max_total_time`).
    #[arg(long, default_value_t = 30)]
    pub seconds: u32,
    /// Only these targets (default: all).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub targets: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    // The daemon's crate embeds the eBPF object: its build needs what setup installs.
    setup::run(&setup::Args::default())?;
    install_cargo_fuzz()?;
    let root = cmd::workspace_root();
    let fuzz = root.join("fuzz");
    // The workspace's target directory (CARGO_TARGET_DIR or target/), in a fuzz/ of its own.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("fuzz");
    let fuzz_cmd = |sub: &str| {
        let mut c = cmd::cargo();
        c.args([NIGHTLY, "fuzz", sub, "--sanitizer", "none", "--target-dir"])
            .arg(&target_dir);
        c
    };

    cmd::section("parser fuzz: build");
    let start = Instant::now();
    cmd::run(&mut fuzz_cmd("build"))?;
    println!("built in {} s", start.elapsed().as_secs());

    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    let logs = target_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut summary = Vec::new();
    let mut failed = Vec::new();
    for t in &targets {
        cmd::section(&format!("parser fuzz: {t}, {} s", args.seconds));
        let corpus = fuzz.join("corpus").join(t);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let mut run = fuzz_cmd("run");
        run.arg(t)
            .arg(&corpus)
            .arg(fuzz.join("seeds").join(t))
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .args(["-timeout=3", "-rss_limit_mb=2048", "-print_final_stats=1"]);
        println!("+ {}", cmd::show(&run));
        let out = cmd::output(&mut run)?;
        let text = String::from_utf8_lossy(&out.stderr);
        let log = logs.join(format!("{t}.log"));
        std::fs::write(&log, text.as_bytes())
            .with_context(|| format!("writing {}", log.display()))?;
        // libFuzzer's progress lines start with '#'; the rest (start, final stats, a
        // crash's report and artifact) is worth the CI log.
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') || l.contains("DONE"))
        {
            println!("{line}");
        }
        let runs = stat(&text, "stat::number_of_executed_units:");
        let corpus_size = text
            .lines()
            .rev()
            .find_map(|l| l.split_once(" corp: ").map(|(_, r)| r.to_owned()))
            .and_then(|r| r.split_whitespace().next().map(str::to_owned))
            .unwrap_or_else(|| "?".to_owned());
        let verdict = if out.status.success() {
            "ok"
        } else {
            failed.push(*t);
            "FAILED"
        };
        summary.push(format!(
            "{t:<14} {verdict:<7} {:>12} runs  corpus {corpus_size:>10}  log {}",
            runs.unwrap_or_else(|| "?".to_owned()),
            log.display()
        ));
    }
    cmd::section("parser fuzz: summary");
    for line in &summary {
        println!("{line}");
    }
    if !failed.is_empty() {
        bail!(
            "{} found a problem: see its input under {}",
            failed.join(", "),
            fuzz.join("artifacts").display()
        );
    }
    Ok(())
}

/// The value of a `-print_final_stats` line.
fn stat(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_owned())
}

/// `cargo install cargo-fuzz` unless the pinned version is on PATH.
fn install_cargo_fuzz() -> anyhow::Result<()> {
    let item = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    // `cargo fuzz --version` prints "cargo-fuzz 0.13.1".
    let found = cmd::output(Command::new("cargo").args(["fuzz", "--version"]))
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if found.as_deref() == Some(item.as_str()) {
        println!("{:<10} {item}", "ok");
        return Ok(());
    }
    println!(
        "{:<10} {item} ({})",
        "installing",
        found.as_deref().unwrap_or("not installed")
    );
    cmd::run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
}
