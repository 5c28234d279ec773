//! The kernel matrix: which Debian kernel packages, the newest of each from the apt sources,
//! downloaded and unpacked once into `<target>/vm/kernels/` (reruns reuse them).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// One kernel line of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line {
    /// What `--kernel` takes and the summary shows.
    pub label: &'static str,
    /// The package name is `{prefix}{N}{suffix}`; the greatest `N` with an installable
    /// candidate wins.
    prefix: &'static str,
    suffix: &'static str,
}

/// Debian 12's kernels: its own 6.1 LTS, and the 6.12 LTS it gained in the 12.x point
/// releases. To add one, add a line: `--kernel` takes its label, and `all` includes it.
pub const MATRIX: &[Line] = &[
    Line {
        label: "6.1",
        prefix: "linux-image-6.1.0-",
        suffix: "-amd64-unsigned",
    },
    Line {
        label: "6.12",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-amd64-unsigned",
    },
];

impl Line {
    /// The `N` of a package of this line, or `None` if `name` is not one.
    fn number(&self, name: &str) -> Option<u32> {
        let n = name.strip_prefix(self.prefix)?.strip_suffix(self.suffix)?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse().ok()
    }
}

/// A kernel ready to boot.
#[derive(Debug)]
pub struct Kernel {
    pub package: String,
    /// The Debian package version (e.g. `6.12.117-1~deb12u1`).
    pub version: String,
    /// `uname -r` of the kernel (the directory under `lib/modules`).
    pub release: String,
    /// The unpacked package: `boot/vmlinuz-*`, `lib/modules/<release>` with `depmod` run.
    pub root: PathBuf,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }
}

/// The newest package of `line` that apt can install, as (name, version); `apt-get update`
/// once if the lists know none.
fn newest(line: &Line) -> anyhow::Result<(String, String)> {
    for attempt in 0..2 {
        if attempt == 1 {
            println!(
                "no {}N{} package known to apt; updating the package lists",
                line.prefix, line.suffix
            );
            let mut update = cmd::privileged("apt-get");
            update
                .args(["-q", "update"])
                .env("DEBIAN_FRONTEND", "noninteractive");
            cmd::run(&mut update)?;
        }
        let names = cmd::stdout(Command::new("apt-cache").args(["pkgnames", line.prefix]))?;
        let mut found: Vec<(u32, &str)> = names
            .lines()
            .filter_map(|name| Some((line.number(name.trim())?, name.trim())))
            .collect();
        found.sort_unstable_by(|a, b| b.cmp(a));
        for (_, name) in found {
            // A name apt knows may have no installable version (only referenced).
            let policy = cmd::stdout(Command::new("apt-cache").args(["policy", name]))?;
            if let Some(candidate) = candidate(&policy) {
                return Ok((name.to_owned(), candidate));
            }
        }
    }
    bail!(
        "apt knows no installable {}N{} package (are Debian 12's main and security sources \
         configured?)",
        line.prefix,
        line.suffix
    )
}

/// The `Candidate:` of `apt-cache policy` output, unless `(none)`.
fn candidate(policy: &str) -> Option<String> {
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|c| !c.is_empty() && *c != "(none)")
        .map(str::to_owned)
}

/// The newest kernel of `line`, downloaded and unpacked under `cache` unless it already is.
pub fn fetch(line: &Line, cache: &Path) -> anyhow::Result<Kernel> {
    let (package, version) = newest(line)?;
    let root = cache.join("kernels").join(&package);
    let ready = root.join(".sluice-vm-ready");
    if fs::read_to_string(&ready).is_ok_and(|v| v.trim() == version) {
        let release = release_of(&root)?;
        println!("kernel {}: {package} {version} (cached)", line.label);
        return Ok(Kernel {
            package,
            version,
            release,
            root,
        });
    }

    println!("kernel {}: fetching {package} {version}", line.label);
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    // Downloading as root into a directory the `_apt` user cannot write makes apt warn;
    // harmless.
    cmd::run(
        Command::new("apt-get")
            .args(["-q", "download"])
            .arg(format!("{package}={version}"))
            .current_dir(&debs),
    )
    .with_context(|| format!("downloading kernel {} ({package})", line.label))?;
    let deb = fs::read_dir(&debs)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        })
        .with_context(|| {
            format!(
                "apt-get download left no {package}_*.deb in {}",
                debs.display()
            )
        })?;

    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    fs::create_dir_all(&root)?;
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let release = release_of(&root)?;
    cmd::run(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
    fs::write(&ready, format!("{version}\n"))?;
    // The .deb is not needed any more; the unpacked tree is the cache.
    fs::remove_file(&deb)?;
    Ok(Kernel {
        package,
        version,
        release,
        root,
    })
}

/// The one directory under `<root>/lib/modules`.
fn release_of(root: &Path) -> anyhow::Result<String> {
    let dir = root.join("lib/modules");
    let mut releases: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    match releases.len() {
        1 => Ok(releases.remove(0)),
        n => bail!("{} holds {n} kernel releases, expected 1", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::{MATRIX, candidate};

    #[test]
    fn package_numbers() {
        let [v61, v612] = [MATRIX[0], MATRIX[1]];
        assert_eq!(v61.number("linux-image-6.1.0-56-amd64-unsigned"), Some(56));
        assert_eq!(
            v61.number("linux-image-6.1.0-56-cloud-amd64-unsigned"),
            None
        );
        assert_eq!(v61.number("linux-image-6.1.0-56-amd64"), None);
        assert_eq!(v61.number("linux-image-6.1.0--amd64-unsigned"), None);
        assert_eq!(
            v612.number("linux-image-6.12.117+deb12-amd64-unsigned"),
            Some(117)
        );
        assert_eq!(
            v612.number("linux-image-6.12.117+deb12-rt-amd64-unsigned"),
            None
        );
        assert_eq!(v612.number("linux-image-6.1.0-56-amd64-unsigned"), None);
    }

    #[test]
    fn policy_candidate() {
        let policy = "linux-image-x:\n  Installed: (none)\n  Candidate: 6.1.192-2\n";
        assert_eq!(candidate(policy).as_deref(), Some("6.1.192-2"));
        assert_eq!(
            candidate("x:\n  Installed: (none)\n  Candidate: (none)\n"),
            None
        );
        assert_eq!(candidate(""), None);
    }
}
