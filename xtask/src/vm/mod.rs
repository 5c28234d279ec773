//! `cargo xtask vm-test`: sluice on the kernels users run, each booted in QEMU.
//!
//! On the host: build `sluice` and the test binaries, fetch each kernel of the matrix
//! (Debian packages, cached under `<target>/vm/kernels`), build a busybox initramfs per
//! kernel. In each guest (`tests/vm/init`, then `tests/vm/guest.sh` in a chroot into the
//! host's root, shared read-only over 9p, so the host-built binaries run unchanged): the
//! packet fixtures, the DSR/IPIP smoke test, a pktgen run through the `sluice` daemon with
//! exact counter reconciliation, TCP through sluice to a backend decapsulating with the
//! kernel's own ipip device, and a short `sluice bench throughput --generator pktgen`.
//! Prints a per-kernel summary (also in `<target>/vm/summary.txt`); fails if any check
//! failed on any kernel, a guest ran with another accelerator than the one asked for, or a
//! kernel could not be fetched or booted.

mod host;
mod initramfs;
mod kernels;
mod qemu;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::builder::PossibleValuesParser;

use crate::{cmd, setup};
use kernels::{Kernel, Line, MATRIX};
use qemu::{Accel, Boot, Ended};

#[derive(clap::Args)]
pub struct Args {
    /// Kernels to boot (repeatable): a line of the matrix, or `all`.
    #[arg(long, default_value = "all", value_parser = kernel_values())]
    kernel: Vec<String>,
    /// How QEMU runs the guests.
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    accel: Accel,
    /// Deadline of one guest, in seconds (boot, every check, power-off).
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// UDP frames pktgen sends in each guest.
    #[arg(long, default_value_t = 10_000)]
    pktgen_count: u32,
}

fn kernel_values() -> PossibleValuesParser {
    PossibleValuesParser::new(MATRIX.iter().map(|l| l.label).chain(["all"]))
}

/// What the guests run, built on the host.
struct Binaries {
    sluice: PathBuf,
    fixtures: PathBuf,
    smoke: PathBuf,
}

/// One kernel's outcome.
struct Row {
    label: &'static str,
    release: String,
    seconds: f64,
    /// Problems found on the host side (fetch, boot), before any guest result.
    error: Option<String>,
    /// The guest's `result.txt`.
    results: BTreeMap<String, String>,
    /// Kernel panics, oopses and BUGs on the console.
    console: Vec<String>,
}

impl Row {
    fn get(&self, key: &str) -> &str {
        self.results.get(key).map_or("", String::as_str)
    }

    fn ok(&self, key: &str) -> bool {
        self.get(key) == "ok"
    }

    /// What failed; empty if the kernel passed.
    fn failures(&self, accel: Accel) -> Vec<String> {
        let mut f: Vec<String> = self.error.iter().cloned().collect();
        f.extend(self.console.iter().map(|l| format!("console: {l}")));
        if !self.get("refused").is_empty() {
            f.push(format!(
                "the kernel's verifier refused {}",
                self.get("refused")
            ));
        }
        if self.error.is_none() {
            for key in [
                "modules",
                "fixtures",
                "smoke",
                "pktgen",
                "interop",
                "daemon_exit",
                "bench",
            ] {
                if !self.ok(key) {
                    f.push(format!("{key}: {}", or_missing(self.get(key))));
                }
            }
            let seen = self.get("accel_guest");
            if seen != accel.name() {
                f.push(format!(
                    "QEMU was asked for {} but the guest runs under {}",
                    accel.name(),
                    or_missing(seen)
                ));
            }
            if self.get("done") != "1" {
                f.push("the guest script did not finish".into());
            }
        }
        f
    }
}

fn or_missing(s: &str) -> &str {
    if s.is_empty() { "no result" } else { s }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    setup::run(&setup::Args::default())?;
    host::ensure()?;

    let lines: Vec<&'static Line> = if args.kernel.iter().any(|k| k == "all") {
        MATRIX.iter().collect()
    } else {
        MATRIX
            .iter()
            .filter(|l| args.kernel.iter().any(|k| k == l.label))
            .collect()
    };
    let (accel, why) = args.accel.resolve()?;
    cmd::section("vm-test: plan");
    println!(
        "kernels: {}",
        lines.iter().map(|l| l.label).collect::<Vec<_>>().join(", ")
    );
    println!("accelerator: {} ({why})", accel.name());
    println!(
        "host kernel {}: not booted here; `cargo xtask test` covers it",
        host_release()
    );

    let build_started = Instant::now();
    let bins = build()?;
    let build_secs = build_started.elapsed().as_secs_f64();

    let root = canonical(&cmd::workspace_root())?;
    let target = target_dir(&root)?;
    let vm = target.join("vm");
    fs::create_dir_all(&vm).with_context(|| format!("creating {}", vm.display()))?;

    let mut rows = Vec::new();
    for line in lines {
        cmd::section(&format!("vm-test: kernel {}", line.label));
        let t = Instant::now();
        let mut row = Row {
            label: line.label,
            release: String::new(),
            seconds: 0.0,
            error: None,
            results: BTreeMap::new(),
            console: Vec::new(),
        };
        match kernels::fetch(line, &vm) {
            Err(err) => row.error = Some(format!("could not fetch the kernel: {err:#}")),
            Ok(kernel) => {
                row.release.clone_from(&kernel.release);
                if let Err(err) = boot(
                    line, &kernel, accel, args, &bins, &root, &target, &vm, &mut row,
                ) {
                    row.error = Some(format!("{err:#}"));
                }
            }
        }
        row.seconds = t.elapsed().as_secs_f64();
        rows.push(row);
    }

    let summary = summary(&rows, accel, &why, build_secs, started.elapsed());
    cmd::section("vm-test: summary");
    print!("{summary}");
    let file = vm.join("summary.txt");
    fs::write(&file, &summary).with_context(|| format!("writing {}", file.display()))?;
    println!("(written to {})", file.display());
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.failures(accel).is_empty())
        .map(|r| r.label)
        .collect();
    if !failed.is_empty() {
        bail!("vm-test failed on kernel(s) {}", failed.join(", "));
    }
    Ok(())
}

fn host_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().into())
}

fn canonical(p: &Path) -> anyhow::Result<PathBuf> {
    fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()))
}

/// Cargo's target directory (as `cargo xtask demo` finds it).
fn target_dir(root: &Path) -> anyhow::Result<PathBuf> {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    fs::create_dir_all(&target)?;
    canonical(&target)
}

/// Builds `sluice` and the workspace's test binaries (the same artifacts `cargo xtask test`
/// and `cargo xtask demo` build); returns the paths the guests run.
fn build() -> anyhow::Result<Binaries> {
    cmd::section("vm-test: build");
    let sluice =
        artifacts(cmd::cargo().args(["build", "--package", "lb-userspace", "--bin", "sluice"]))?;
    let tests = artifacts(cmd::cargo().args(["test", "--workspace", "--no-run"]))?;
    let find = |list: &[Artifact], name: &str, kind: &str| {
        list.iter()
            .find(|a| a.name == name && a.kind == kind)
            .map(|a| a.executable.clone())
            .with_context(|| format!("cargo built no {kind} target `{name}`"))
    };
    Ok(Binaries {
        sluice: find(&sluice, "sluice", "bin")?,
        fixtures: find(&tests, "fixtures", "test")?,
        smoke: find(&tests, "smoke", "test")?,
    })
}

/// An executable cargo built.
#[derive(Debug, PartialEq, Eq)]
struct Artifact {
    name: String,
    kind: String,
    executable: PathBuf,
}

/// Runs a cargo build command with `--message-format=json-render-diagnostics` (diagnostics
/// and progress still go to stderr) and returns its executables.
fn artifacts(cargo: &mut Command) -> anyhow::Result<Vec<Artifact>> {
    cargo.arg("--message-format=json-render-diagnostics");
    println!("+ {}", cmd::show(cargo));
    let out = cargo
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{}`", cmd::show(cargo)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", cmd::show(cargo), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(artifact)
        .collect())
}

/// The executable of one `compiler-artifact` message, if it has one. Cargo's JSON is read
/// with string searches (xtask has no JSON dependency): the first `"name"` after
/// `"target":{` is the target's, and `"kind":["…"]` comes first in it.
fn artifact(line: &str) -> Option<Artifact> {
    if !line.contains(r#""reason":"compiler-artifact""#) {
        return None;
    }
    let target = &line[line.find(r#""target":{"#)?..];
    let kind = json_string(target, r#""kind":[""#)?;
    let name = json_string(target, r#""name":""#)?;
    let executable = json_string(line, r#""executable":""#)?;
    Some(Artifact {
        name,
        kind,
        executable: executable.into(),
    })
}

/// The JSON string that follows `key` (which ends with its opening quote), unescaped.
fn json_string(s: &str, key: &str) -> Option<String> {
    let rest = &s[s.find(key)? + key.len()..];
    let mut out = String::new();
    let mut chars = rest.chars();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
}

/// Single-quoted for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
fn boot(
    line: &Line,
    kernel: &Kernel,
    accel: Accel,
    args: &Args,
    bins: &Binaries,
    root: &Path,
    target: &Path,
    vm: &Path,
    row: &mut Row,
) -> anyhow::Result<()> {
    println!(
        "kernel {}: {} {} ({})",
        line.label, kernel.package, kernel.version, kernel.release
    );
    let dir = vm.join(line.label);
    let out = dir.join("guest");
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    // The init script binds these back over the guest's tmpfs /tmp and /run when they are
    // under them; it splits the list on whitespace.
    let keep = [root, target];
    if let Some(p) = keep
        .iter()
        .find(|p| p.to_string_lossy().contains(char::is_whitespace))
    {
        bail!(
            "{} has whitespace in it; vm-test cannot share it",
            p.display()
        );
    }
    let vars: [(&str, String); 11] = [
        ("VM_LABEL", line.label.into()),
        ("VM_ACCEL", accel.name().into()),
        ("VM_KROOT", kernel.root.display().to_string()),
        ("VM_OUT", out.display().to_string()),
        (
            "VM_KEEP",
            keep.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        ("VM_WORKSPACE", root.display().to_string()),
        (
            "VM_SCRIPT",
            root.join("tests/vm/guest.sh").display().to_string(),
        ),
        ("VM_SLUICE", bins.sluice.display().to_string()),
        ("VM_FIXTURES", bins.fixtures.display().to_string()),
        ("VM_SMOKE", bins.smoke.display().to_string()),
        ("VM_PKTGEN_COUNT", args.pktgen_count.to_string()),
    ];
    let env: String = vars
        .iter()
        .map(|(k, v)| format!("{k}={}\n", sh_quote(v)))
        .collect();
    fs::write(out.join("vm.env"), &env)?;

    let initramfs = dir.join("initramfs.cpio");
    initramfs::build(kernel, &root.join("tests/vm/init"), &env, &initramfs)?;

    let boot = Boot {
        label: line.label,
        accel,
        vmlinuz: &kernel.vmlinuz(),
        initramfs: &initramfs,
        out: &out,
        console: dir.join("console.log"),
        timeout: Duration::from_secs(args.timeout),
        cpus: 2,
        memory_mib: 2048,
    };
    let ended = boot.run()?;
    row.results = read_results(&out.join("result.txt"));
    row.console = kernel_problems(&fs::read_to_string(&boot.console).unwrap_or_default());
    match ended {
        Ended::TimedOut => bail!(
            "the guest did not power off within {} s (console: {})",
            args.timeout,
            boot.console.display()
        ),
        Ended::Exited(status) if !status.success() => bail!(
            "{} exited with {status} (console: {})",
            qemu::QEMU,
            boot.console.display()
        ),
        Ended::Exited(_) => Ok(()),
    }
}

fn read_results(path: &Path) -> BTreeMap<String, String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Console lines that say the guest kernel itself failed (the first few).
fn kernel_problems(console: &str) -> Vec<String> {
    console
        .lines()
        .map(qemu::printable)
        .filter(|l| {
            ["Kernel panic", "BUG:", "Oops:", "general protection fault"]
                .iter()
                .any(|p| l.contains(p))
        })
        .take(3)
        .collect()
}

/// "357 of 357 vectors passed in 62 cases (+40 state checks)" from the fixtures' line.
fn fixtures_cell(row: &Row) -> String {
    let detail = row.get("fixtures_detail");
    let short = detail
        .strip_prefix("fixtures: ")
        .and_then(|d| d.split(" passed").next())
        .map_or_else(|| or_missing(detail).to_owned(), |n| n.replace(" of ", "/"));
    if row.ok("fixtures") {
        short
    } else if detail.is_empty() {
        "FAILED".into()
    } else {
        format!("FAILED ({short})")
    }
}

fn pktgen_cell(row: &Row) -> String {
    if !row.results.contains_key("pktgen_sent") {
        return if row.ok("pktgen") {
            "ok".into()
        } else {
            "FAILED".into()
        };
    }
    let cell = format!(
        "{} = {} + {} + {} -> {}",
        row.get("pktgen_sent"),
        row.get("pktgen_forwarded"),
        row.get("pktgen_dropped"),
        row.get("pktgen_passed"),
        row.get("pktgen_backend_rx"),
    );
    if row.ok("pktgen") {
        cell
    } else {
        format!("FAILED {cell}")
    }
}

fn interop_cell(row: &Row) -> String {
    let detail = row.get("interop_detail");
    let short = detail
        .split(" TCP connections completed")
        .next()
        .filter(|_| detail.contains("TCP connections completed"))
        .map_or_else(
            || or_missing(detail).to_owned(),
            |n| format!("{} TCP", n.replace(" of ", "/")),
        );
    if row.ok("interop") {
        short
    } else {
        format!("FAILED ({short})")
    }
}

/// The pktgen benchmark's ratios ("1 flows 0.71x floor_tx (8.1 kpps), ..."), shortened.
fn bench_cell(row: &Row) -> String {
    let ratios: Vec<String> = row
        .get("bench_ratios")
        .split(", ")
        .filter_map(|r| {
            let (flows, rest) = r.split_once(" flows ")?;
            let ratio = rest.split_whitespace().next()?;
            Some(format!("{flows}: {ratio}"))
        })
        .collect();
    let ran = row.get("bench_generator") == "pktgen";
    match (row.ok("bench"), ran, ratios.is_empty()) {
        (true, true, false) => format!("pktgen, {}", ratios.join(" ")),
        (true, true, true) => "pktgen".into(),
        (false, true, _) => format!("FAILED (pktgen ran: {})", ratios.join(" ")),
        _ => "FAILED".into(),
    }
}

fn summary(rows: &[Row], accel: Accel, why: &str, build_secs: f64, total: Duration) -> String {
    let header = [
        "kernel",
        "release",
        "accel",
        "time",
        "programs",
        "fixtures",
        "smoke dsr+ipip",
        "pktgen sent = fwd + drop + pass -> backend",
        "ipip interop",
        "bench (sluice/floor_tx)",
        "result",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    table.extend(rows.iter().map(|r| summary_row(r, accel, header.len())));
    let mut s = String::new();
    write_table(&mut s, &table);
    let _ = writeln!(s);
    write_details(&mut s, rows, accel);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "host kernel {} is not booted here: `cargo xtask test` covers it",
        host_release()
    );
    let _ = writeln!(s, "accelerator: {} ({why})", accel.name());
    if accel == Accel::Tcg {
        let _ = writeln!(
            s,
            "emulated guests: rates (bench, pktgen) are for correctness only, never for speed"
        );
    }
    let _ = writeln!(
        s,
        "time: build {build_secs:.0}s, total {:.0}s",
        total.as_secs_f64()
    );
    s
}

/// One kernel's line of the summary table (`columns` cells).
fn summary_row(r: &Row, accel: Accel, columns: usize) -> Vec<String> {
    let failures = r.failures(accel);
    if r.results.is_empty() {
        // The guest never ran (the kernel could not be fetched or booted).
        let mut row = vec!["-".to_owned(); columns];
        row[0] = r.label.to_owned();
        row[3] = format!("{:.0}s", r.seconds);
        row[columns - 1] = "FAILED".into();
        return row;
    }
    vec![
        r.label.to_owned(),
        or_missing(&r.release).to_owned(),
        // What the guest saw (a mismatch with the request is a failure).
        or_missing(r.get("accel_guest")).to_owned(),
        format!("{:.0}s", r.seconds),
        if r.get("refused").is_empty() {
            or_missing(r.get("programs_loaded")).to_owned()
        } else {
            format!(
                "REFUSED {}",
                r.get("refused").split(':').next().unwrap_or("?")
            )
        },
        fixtures_cell(r),
        if r.ok("smoke") {
            "ok".into()
        } else {
            "FAILED".into()
        },
        pktgen_cell(r),
        interop_cell(r),
        bench_cell(r),
        if failures.is_empty() {
            "ok".into()
        } else {
            "FAILED".into()
        },
    ]
}

/// The table, each column as wide as its widest cell.
fn write_table(s: &mut String, table: &[Vec<String>]) {
    let widths: Vec<usize> = (0..table[0].len())
        .map(|c| {
            table
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(s, "{}", line.join("  ").trim_end());
    }
}

/// Each kernel's details: what the guest reported, and its failures.
fn write_details(s: &mut String, rows: &[Row], accel: Accel) {
    for r in rows {
        let _ = writeln!(s, "kernel {} ({}):", r.label, or_missing(&r.release));
        let programs = r.get("programs");
        if !programs.is_empty() {
            let _ = writeln!(
                s,
                "  programs the daemon loaded (name:instructions verified): {programs}"
            );
        }
        for (key, what) in [
            ("xdp_attach", "balancer attached"),
            ("fixtures_tests", "fixtures"),
            ("smoke_tests", "smoke"),
            ("pktgen_reasons", "pktgen: sluice's counters moved"),
            ("pktgen_new_flows", "pktgen: new flows"),
            (
                "pktgen_errors",
                "pktgen: frames veth refused before XDP (not sent)",
            ),
            ("interop_detail", "interop"),
            (
                "interop_tunl0_rx",
                "interop: packets the backend's tunl0 decapsulated",
            ),
            ("bench_why", "bench: generator chosen"),
            ("bench_ratios", "bench: sluice against the MAC-swap floor"),
            ("bench_frames", "bench: frames"),
        ] {
            let v = r.get(key);
            if !v.is_empty() {
                let _ = writeln!(s, "  {what}: {v}");
            }
        }
        for f in r.failures(accel) {
            let _ = writeln!(s, "  FAILED: {f}");
        }
        if !r.get("pktgen_error").is_empty() {
            let _ = writeln!(s, "  pktgen mismatch: {}", r.get("pktgen_error"));
        }
        if !r.get("bench_error").is_empty() {
            let _ = writeln!(s, "  bench: {}", r.get("bench_error"));
        }
    }
}

#[cfg(test)]
mod tests;
