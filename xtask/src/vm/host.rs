//! What the host needs for `vm-test` beyond `cargo xtask setup`: Debian packages, installed
//! only when missing (with everything present: one `dpkg-query` per package, no network).

use anyhow::{Context as _, bail};

use crate::cmd;

/// Debian packages, and why.
const PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "qemu-system-x86_64 boots the guests"),
    (
        "busybox-static",
        "the guests' init (a static busybox in the initramfs)",
    ),
    (
        "kmod",
        "depmod/modprobe for the guest kernels' module trees",
    ),
    (
        "xz-utils",
        "decompressing the modules the initramfs carries",
    ),
    ("python3", "the guest-side helper (tests/vm/helper.py)"),
];

pub fn ensure() -> anyhow::Result<()> {
    cmd::section("vm-test: host packages");
    let mut absent = Vec::new();
    for &(package, why) in PACKAGES {
        let installed = cmd::deb_installed(package, "vm-test")?;
        println!(
            "{:<10} Debian package {package} ({why})",
            if installed { "ok" } else { "installing" }
        );
        if !installed {
            absent.push(package);
        }
    }
    if absent.is_empty() {
        return Ok(());
    }
    let apt_get = || {
        let mut apt_get = cmd::privileged("apt-get");
        apt_get.env("DEBIAN_FRONTEND", "noninteractive");
        apt_get
    };
    cmd::run(apt_get().args(["-q", "update"]))?;
    cmd::run(
        apt_get()
            .args(["-q", "install", "-y", "--no-install-recommends"])
            .args(&absent),
    )
    .with_context(|| format!("installing {}", absent.join(" ")))?;
    let still: Vec<_> = absent
        .into_iter()
        .filter(|p| !cmd::deb_installed(p, "vm-test").unwrap_or(false))
        .collect();
    if !still.is_empty() {
        bail!("still not installed after apt-get: {}", still.join(" "));
    }
    Ok(())
}
