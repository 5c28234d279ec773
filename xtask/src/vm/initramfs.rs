//! The guests' initramfs: busybox, `tests/vm/init` as `/init`, the modules the 9p share
//! needs (decompressed, numbered in load order) and `/vm.env`. Written as an uncompressed
//! `newc` cpio archive (what the kernel unpacks), without external tools.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, bail};

use super::kernels::Kernel;
use crate::cmd;

/// The static busybox of Debian's busybox-static.
pub const BUSYBOX: &str = "/bin/busybox";

/// Modules for the virtio PCI transport and the 9p filesystem (with their dependencies;
/// those built into a kernel are skipped).
const BOOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];

/// A `newc` archive being built.
#[derive(Default)]
struct Cpio {
    data: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        rdev: (u32, u32),
        body: &[u8],
    ) -> anyhow::Result<()> {
        self.ino += 1;
        let size = u32::try_from(body.len()).context("file too large for cpio")?;
        let namesize = u32::try_from(name.len() + 1).context("name too long")?;
        let fields = [
            self.ino, mode, 0, 0, 1, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        self.data.extend_from_slice(b"070701");
        for f in fields {
            self.data.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(body);
        self.pad();
        Ok(())
    }

    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    fn dir(&mut self, name: &str) -> anyhow::Result<()> {
        self.entry(name, 0o040_755, (0, 0), &[])
    }

    fn file(&mut self, name: &str, mode: u32, body: &[u8]) -> anyhow::Result<()> {
        self.entry(name, 0o100_000 | mode, (0, 0), body)
    }

    fn finish(mut self) -> anyhow::Result<Vec<u8>> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        Ok(self.data)
    }
}

/// The modules of `BOOT_MODULES` not built into `kernel`, in load order, as paths.
fn boot_modules(kernel: &Kernel) -> anyhow::Result<Vec<String>> {
    let out = cmd::stdout(
        Command::new("modprobe")
            .arg("-d")
            .arg(&kernel.root)
            .args(["-S", &kernel.release, "--show-depends", "-a"])
            .args(BOOT_MODULES),
    )?;
    let mut paths: Vec<String> = Vec::new();
    for line in out.lines() {
        // "insmod /path/x.ko[.xz] [options]" or "builtin x".
        let mut words = line.split_whitespace();
        if words.next() == Some("insmod")
            && let Some(path) = words.next()
            && !paths.iter().any(|p| p == path)
        {
            paths.push(path.to_owned());
        }
    }
    Ok(paths)
}

/// A module's contents, decompressed (busybox's insmod reads plain ELF).
fn module_bytes(path: &str) -> anyhow::Result<Vec<u8>> {
    let tool = if path.ends_with(".ko.xz") {
        "xz"
    } else if path.ends_with(".ko.zst") {
        "zstd"
    } else if path.ends_with(".ko.gz") {
        "gzip"
    } else if path.ends_with(".ko") {
        return fs::read(path).with_context(|| format!("reading {path}"));
    } else {
        bail!("unexpected module file {path}");
    };
    let out = cmd::output(Command::new(tool).args(["-dc", path]))?;
    if !out.status.success() {
        bail!("`{tool} -dc {path}` failed ({})", out.status);
    }
    Ok(out.stdout)
}

/// Writes the initramfs for `kernel` to `dest`; `env` is the contents of `/vm.env`.
pub fn build(kernel: &Kernel, init: &Path, env: &str, dest: &Path) -> anyhow::Result<()> {
    let mut cpio = Cpio::default();
    for dir in [
        "bin", "sbin", "dev", "proc", "sys", "host", "orig", "modules",
    ] {
        cpio.dir(dir)?;
    }
    // The kernel opens /dev/console for init's standard streams.
    cpio.entry("dev/console", 0o020_600, (5, 1), &[])?;
    let busybox = fs::read(BUSYBOX).with_context(|| format!("reading {BUSYBOX}"))?;
    cpio.file("bin/busybox", 0o755, &busybox)?;
    let init = fs::read(init).with_context(|| format!("reading {}", init.display()))?;
    cpio.file("init", 0o755, &init)?;
    cpio.file("vm.env", 0o644, env.as_bytes())?;
    for (i, path) in boot_modules(kernel)?.iter().enumerate() {
        let base = Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .context("module without a file name")?;
        let stem = base.split(".ko").next().unwrap_or(base);
        cpio.file(
            &format!("modules/{:02}-{stem}.ko", i + 1),
            0o644,
            &module_bytes(path)?,
        )?;
    }
    fs::write(dest, cpio.finish()?).with_context(|| format!("writing {}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::Cpio;

    #[test]
    fn newc_layout() {
        let mut c = Cpio::default();
        c.file("init", 0o755, b"#!/bin/sh\n").expect("entry");
        let data = c.finish().expect("finish");
        // Header (110 bytes) + "init\0" padded to 116, body 10 padded to 12, then the trailer.
        assert_eq!(&data[..6], b"070701");
        assert_eq!(&data[6..14], b"00000001");
        assert_eq!(&data[14..22], b"000081ed");
        assert_eq!(&data[54..62], b"0000000a");
        assert_eq!(&data[110..115], b"init\0");
        assert_eq!(&data[116..126], b"#!/bin/sh\n");
        assert_eq!(&data[128..134], b"070701");
        assert!(data.len().is_multiple_of(4));
        assert!(data.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
