//! `cargo xtask setup`: check each thing building and testing sluice needs, install only what
//! is missing. With everything present it runs a handful of quick queries (no `apt-get
//! update`, no network) and takes well under a second.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::cmd;

/// The nightly toolchain aya-build builds `lb-ebpf` with (`aya_build::Toolchain::default()`).
const NIGHTLY: &str = "nightly";
/// rust-src: `-Z build-std=core` for the BPF target; clippy: `cargo xtask clippy` for it.
const NIGHTLY_COMPONENTS: &[&str] = &["rust-src", "clippy"];
/// `cargo xtask clippy` and `cargo xtask fmt-check` on the toolchain running xtask.
const ACTIVE_COMPONENTS: &[&str] = &["clippy", "rustfmt"];

/// Debian packages, and why they are needed.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "libLLVM 22 for bpf-linker"),
    (
        "iproute2",
        "ip/tc for the network namespaces and veths of the tests",
    ),
    ("ethtool", "NIC offload settings in the tests"),
    ("procps", "sysctl in the tests"),
    ("iputils-ping", "ping in the tests"),
    (
        "bird2",
        "BIRD 2, the BGP speaker of the fleet lab and tests; the shipped configurations are checked with it",
    ),
    (
        "frr",
        "FRR, the documented alternative to BIRD: the shipped configuration is checked with vtysh",
    ),
    (
        "dpkg-dev",
        "dpkg-shlibdeps for the Debian package's Depends (`cargo xtask deb`)",
    ),
    (
        "systemd",
        "systemd-analyze verify/security on the package's unit (CI's deb stage)",
    ),
    (
        "util-linux",
        "setpriv: the least-privilege test runs the daemon with the unit's capabilities",
    ),
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// bpf-linker links libLLVM dynamically (its default, without `llvm-link-static`), found
/// under this prefix; llvm-22-dev provides it. libpolly-22-dev is not needed: neither
/// bpf-linker's nor llvm-sys's build script runs `llvm-config --link-static` in this mode.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

const BPFFS: &str = "/sys/fs/bpf";

#[derive(clap::Args, Default)]
pub struct Args {
    /// Only report what is missing (exit status 1 if anything is); install nothing.
    #[arg(long, global = true)]
    pub check: bool,
    /// One step only (default: all, in this order).
    #[command(subcommand)]
    pub step: Option<Step>,
}

#[derive(Subcommand, Clone, Copy)]
pub enum Step {
    /// rustup components: rust-src and clippy for nightly, clippy and rustfmt for the
    /// toolchain running xtask.
    Rust,
    /// Debian packages: llvm-22-dev, iproute2, ethtool, procps, iputils-ping, bird2, frr,
    /// dpkg-dev, systemd, util-linux.
    Apt,
    /// bpf-linker (a pinned version, built against LLVM 22) in ~/.cargo/bin.
    BpfLinker,
    /// A bpffs mounted at /sys/fs/bpf (the daemon pins its maps there).
    Bpffs,
}

impl Step {
    const ALL: [Self; 4] = [Self::Rust, Self::Apt, Self::BpfLinker, Self::Bpffs];

    const fn name(self) -> &'static str {
        match self {
            Self::Rust => "rust",
            Self::Apt => "apt",
            Self::BpfLinker => "bpf-linker",
            Self::Bpffs => "bpffs",
        }
    }
}

/// Prints the status line of one item.
fn report(status: &str, item: &str) {
    println!("{status:<10} {item}");
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    cmd::section(if args.check { "setup --check" } else { "setup" });
    let steps = args
        .step
        .as_ref()
        .map_or(&Step::ALL[..], std::slice::from_ref);
    let mut missing = Vec::new();
    for &step in steps {
        let result = match step {
            Step::Rust => rust(args.check),
            Step::Apt => apt(args.check),
            Step::BpfLinker => bpf_linker(args.check),
            Step::Bpffs => bpffs(args.check),
        };
        missing.extend(result.with_context(|| format!("setup step `{}` failed", step.name()))?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    if !missing.is_empty() {
        bail!(
            "missing: {}; run `cargo xtask setup` to install",
            missing.join(", ")
        );
    }
    if args.check {
        println!("setup --check: all present ({elapsed:.1}s)");
    } else {
        println!("setup: done ({elapsed:.1}s)");
    }
    Ok(())
}

// ---- rust ------------------------------------------------------------------------------

fn rust(check: bool) -> anyhow::Result<Vec<String>> {
    let mut missing = Vec::new();
    let mut installed_any = false;

    // The toolchain running xtask (rustup's proxy tells the child which via
    // RUSTUP_TOOLCHAIN; without --toolchain, rustup resolves it the same way).
    let active = env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "active toolchain".into());
    let installed = installed_components(None)?
        .context("rustup lists no components for the active toolchain")?;
    let absent = absent_components(&installed, ACTIVE_COMPONENTS);
    for component in ACTIVE_COMPONENTS {
        let item = format!("rustup component {component} ({active})");
        if !absent.contains(component) {
            report("ok", &item);
        } else if check {
            report("missing", &item);
            missing.push(item);
        } else {
            report("installing", &item);
        }
    }
    if !check && !absent.is_empty() {
        cmd::run(
            Command::new("rustup")
                .args(["component", "add"])
                .args(&absent),
        )?;
        installed_any = true;
    }

    let item = |component: &str| format!("rustup component {component} ({NIGHTLY})");
    match installed_components(Some(NIGHTLY))? {
        Some(installed) => {
            let absent = absent_components(&installed, NIGHTLY_COMPONENTS);
            for component in NIGHTLY_COMPONENTS {
                if !absent.contains(component) {
                    report("ok", &item(component));
                } else if check {
                    report("missing", &item(component));
                    missing.push(item(component));
                } else {
                    report("installing", &item(component));
                }
            }
            if !check && !absent.is_empty() {
                cmd::run(
                    Command::new("rustup")
                        .args(["component", "add", "--toolchain", NIGHTLY])
                        .args(&absent),
                )?;
                installed_any = true;
            }
        }
        None => {
            let item = format!(
                "rust toolchain {NIGHTLY} with {}",
                NIGHTLY_COMPONENTS.join(", ")
            );
            if check {
                report("missing", &item);
                missing.push(item);
            } else {
                report("installing", &item);
                let mut install = Command::new("rustup");
                install.args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]);
                for component in NIGHTLY_COMPONENTS {
                    install.args(["--component", component]);
                }
                cmd::run(&mut install)?;
                installed_any = true;
            }
        }
    }

    if installed_any {
        // Whatever was installed must now be listed.
        let still: Vec<_> = absent_components(
            &installed_components(None)?.unwrap_or_default(),
            ACTIVE_COMPONENTS,
        )
        .into_iter()
        .map(|c| format!("{c} ({active})"))
        .chain(
            absent_components(
                &installed_components(Some(NIGHTLY))?.unwrap_or_default(),
                NIGHTLY_COMPONENTS,
            )
            .into_iter()
            .map(|c| format!("{c} ({NIGHTLY})")),
        )
        .collect();
        if !still.is_empty() {
            bail!(
                "rustup components still missing after installing: {}",
                still.join(", ")
            );
        }
    }
    Ok(missing)
}

/// `rustup component list --installed` for `toolchain` (the active one if `None`); `None`
/// if that toolchain is not installed.
fn installed_components(toolchain: Option<&str>) -> anyhow::Result<Option<Vec<String>>> {
    let mut list = Command::new("rustup");
    list.args(["component", "list", "--installed"])
        // rustup would otherwise install a missing toolchain right here, even for --check.
        .env("RUSTUP_AUTO_INSTALL", "0");
    if let Some(toolchain) = toolchain {
        list.args(["--toolchain", toolchain]);
    }
    let out = cmd::output(&mut list).context("rustup is needed (aya-build runs it too)")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if toolchain.is_some() && stderr.contains("not installed") {
            return Ok(None);
        }
        bail!(
            "`{}` failed ({}): {}",
            cmd::show(&list),
            out.status,
            stderr.trim()
        );
    }
    Ok(Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
    ))
}

/// Which of `wanted` are not in `installed` (lines such as `rust-src` or
/// `clippy-x86_64-unknown-linux-gnu`).
fn absent_components<'a>(installed: &[String], wanted: &[&'a str]) -> Vec<&'a str> {
    wanted
        .iter()
        .copied()
        .filter(|&component| {
            !installed.iter().any(|line| {
                let line = line.trim();
                line == component
                    || line
                        .strip_prefix(component)
                        .and_then(|rest| rest.strip_prefix('-'))
                        // The rest is a target triple (`rust-src` must not match `rust-std-…`).
                        .is_some_and(|triple| triple.matches('-').count() >= 2)
            })
        })
        .collect()
}

// ---- apt -------------------------------------------------------------------------------

fn apt(check: bool) -> anyhow::Result<Vec<String>> {
    let mut absent = Vec::new();
    for &(package, why) in DEBIAN_PACKAGES {
        let item = format!("Debian package {package} ({why})");
        if cmd::deb_installed(package, "this step")? {
            report("ok", &item);
        } else {
            report(if check { "missing" } else { "installing" }, &item);
            absent.push(package);
        }
    }
    if check {
        return Ok(absent
            .iter()
            .map(|p| format!("Debian package {p}"))
            .collect());
    }
    if absent.is_empty() {
        return Ok(Vec::new());
    }

    let apt_get = || {
        let mut apt_get = cmd::privileged("apt-get");
        apt_get.env("DEBIAN_FRONTEND", "noninteractive");
        apt_get
    };
    cmd::run(apt_get().args(["-q", "update"]))?;
    cmd::run(apt_get().args(["-q", "install", "-y"]).args(&absent)).with_context(|| {
        format!(
            "installing {} failed (are they in the apt sources? try `apt-cache policy {}`)",
            absent.join(" "),
            absent.join(" ")
        )
    })?;
    let still: Vec<_> = absent
        .into_iter()
        .filter(|p| !cmd::deb_installed(p, "this step").unwrap_or(false))
        .collect();
    if !still.is_empty() {
        bail!(
            "Debian packages still not installed after apt-get: {}",
            still.join(" ")
        );
    }
    Ok(Vec::new())
}

// ---- bpf-linker ------------------------------------------------------------------------

fn bpf_linker(check: bool) -> anyhow::Result<Vec<String>> {
    let item = format!("bpf-linker {BPF_LINKER_VERSION} (LLVM 22)");
    let cargo_bin = cargo_home()?.join("bin");
    let installed = cargo_bin.join("bpf-linker");

    let problem = match find_on_path("bpf-linker") {
        Some(found) => match bpf_linker_version(&found) {
            Ok(version) if version == BPF_LINKER_VERSION => None,
            Ok(version) => Some(format!("{} is version {version}", found.display())),
            Err(err) => Some(format!("{err:#}")),
        },
        None if installed.exists() => {
            // rustc looks the linker up on PATH; installing again would not help.
            bail!(
                "{} exists but {} is not on PATH; add it (e.g. `source ~/.cargo/env`)",
                installed.display(),
                cargo_bin.display()
            );
        }
        None => Some("not on PATH".to_owned()),
    };
    let Some(problem) = problem else {
        report("ok", &item);
        return Ok(Vec::new());
    };
    if check {
        report("missing", &format!("{item}: {problem}"));
        return Ok(vec![item]);
    }
    report("installing", &format!("{item}: {problem}"));

    let libllvm = Path::new(LLVM_PREFIX).join("lib/libLLVM.so");
    if !libllvm.exists() {
        bail!(
            "{} is missing: install llvm-22-dev first (`cargo xtask setup apt`)",
            libllvm.display()
        );
    }
    let mut install = Command::new("cargo");
    install
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22", "--force"])
        .env("LLVM_PREFIX", LLVM_PREFIX)
        // Out of the workspace, so its .cargo/config.toml does not apply.
        .current_dir(env::temp_dir());
    cmd::run(&mut install)?;

    let version = bpf_linker_version(&installed)?;
    if version != BPF_LINKER_VERSION {
        bail!(
            "{} reports version {version} after installing",
            installed.display()
        );
    }
    match find_on_path("bpf-linker") {
        Some(found) if found == installed => Ok(Vec::new()),
        Some(found) => bail!(
            "installed {}, but {} comes first on PATH",
            installed.display(),
            found.display()
        ),
        None => bail!(
            "installed {}, but {} is not on PATH; add it (e.g. `source ~/.cargo/env`)",
            installed.display(),
            cargo_bin.display()
        ),
    }
}

/// `bpf-linker --version` prints "bpf-linker 0.13.0".
fn bpf_linker_version(path: &Path) -> anyhow::Result<String> {
    let out = cmd::stdout(Command::new(path).arg("--version"))?;
    Ok(out
        .trim()
        .trim_start_matches("bpf-linker")
        .trim()
        .to_owned())
}

fn cargo_home() -> anyhow::Result<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Ok(home.into());
    }
    let home = env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(Path::new(&home).join(".cargo"))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

// ---- bpffs -----------------------------------------------------------------------------

fn bpffs(check: bool) -> anyhow::Result<Vec<String>> {
    let item = format!("bpffs mounted at {BPFFS}");
    if bpffs_mounted()? {
        report("ok", &item);
        return Ok(Vec::new());
    }
    if check {
        report("missing", &item);
        return Ok(vec![item]);
    }
    report("installing", &item);
    cmd::run(cmd::privileged("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    if !bpffs_mounted()? {
        bail!("{BPFFS} is still not a bpffs after mounting");
    }
    Ok(Vec::new())
}

fn bpffs_mounted() -> anyhow::Result<bool> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    Ok(mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(BPFFS) && fields.next() == Some("bpf")
    }))
}

#[cfg(test)]
mod tests {
    use super::absent_components;

    #[test]
    fn components_match_with_or_without_target_triple() {
        let installed: Vec<String> = [
            "cargo-x86_64-unknown-linux-gnu",
            "clippy-x86_64-unknown-linux-gnu",
            "rust-std-x86_64-unknown-linux-gnu",
            "rustc-x86_64-unknown-linux-gnu",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            absent_components(&installed, &["rust-src", "clippy", "rustfmt"]),
            ["rust-src", "rustfmt"]
        );
        let installed = vec![
            "rust-src".to_owned(),
            "rustfmt-aarch64-unknown-linux-gnu".to_owned(),
        ];
        assert!(absent_components(&installed, &["rust-src", "rustfmt"]).is_empty());
    }
}
