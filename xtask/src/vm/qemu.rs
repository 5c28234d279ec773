//! Booting a guest: QEMU with KVM where the machine has hardware virtualisation, TCG
//! otherwise; the console streamed (prefixed) to stdout and saved; a deadline.

use std::{
    fs::{self, File, OpenOptions},
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::ValueEnum;

use crate::cmd;

pub const QEMU: &str = "qemu-system-x86_64";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    /// KVM if the CPU has vmx/svm and /dev/kvm opens, TCG otherwise.
    Auto,
    /// Hardware virtualisation (`-accel kvm -cpu host`).
    Kvm,
    /// Emulation (`-accel tcg,thread=multi -cpu max`): slow, for correctness only.
    Tcg,
}

impl Accel {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }

    /// `Auto` resolved on this machine, with why; `Kvm` checked (an error if `/dev/kvm`
    /// cannot be opened, rather than a guest that never boots).
    pub fn resolve(self) -> anyhow::Result<(Self, String)> {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let kvm = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map(drop)
            .map_err(|e| e.to_string());
        self.decide(&cpuinfo, kvm)
    }

    /// The decision of [`Self::resolve`], given `/proc/cpuinfo` and the outcome of opening
    /// `/dev/kvm`. KVM needs both: a `/dev/kvm` that opens is not enough (a machine may
    /// expose one without hardware virtualisation: Debian's kernels then never boot).
    pub fn decide(self, cpuinfo: &str, kvm: Result<(), String>) -> anyhow::Result<(Self, String)> {
        const EMULATING: &str = "emulating (TCG: slow, rates for correctness only)";
        let virt = cpuinfo.lines().any(|l| {
            l.starts_with("flags") && l.split_whitespace().any(|f| f == "vmx" || f == "svm")
        });
        Ok(match (self, virt, kvm) {
            (Self::Tcg, ..) => (Self::Tcg, format!("--accel tcg: {EMULATING}")),
            (Self::Kvm, _, Err(e)) => {
                anyhow::bail!("--accel kvm: /dev/kvm cannot be opened ({e})")
            }
            (Self::Kvm, true, Ok(())) => (
                Self::Kvm,
                "--accel kvm: the CPU has vmx/svm and /dev/kvm opens".into(),
            ),
            (Self::Kvm, false, Ok(())) => (
                Self::Kvm,
                "--accel kvm, although the CPU shows no vmx/svm (guests may not boot)".into(),
            ),
            (Self::Auto, true, Ok(())) => (
                Self::Kvm,
                "auto: the CPU has vmx/svm and /dev/kvm opens: hardware virtualisation".into(),
            ),
            (Self::Auto, false, Ok(())) => (
                Self::Tcg,
                format!(
                    "auto: /dev/kvm opens but the CPU shows no vmx/svm in /proc/cpuinfo: \
                     {EMULATING}"
                ),
            ),
            (Self::Auto, false, Err(_)) => (
                Self::Tcg,
                format!("auto: no vmx/svm in /proc/cpuinfo, no /dev/kvm: {EMULATING}"),
            ),
            (Self::Auto, true, Err(e)) => (
                Self::Tcg,
                format!(
                    "auto: the CPU has vmx/svm but /dev/kvm cannot be opened ({e}): {EMULATING}"
                ),
            ),
        })
    }
}

/// One guest boot.
pub struct Boot<'a> {
    pub label: &'a str,
    pub accel: Accel,
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    /// Shared writable as the `results` 9p tag.
    pub out: &'a Path,
    pub console: PathBuf,
    pub timeout: Duration,
    pub cpus: u32,
    pub memory_mib: u32,
}

/// How a boot ended.
pub enum Ended {
    /// QEMU exited (the guest powered off, or QEMU failed).
    Exited(ExitStatus),
    /// Killed at the deadline.
    TimedOut,
}

impl Boot<'_> {
    pub fn command(&self) -> Command {
        let mut qemu = Command::new(QEMU);
        match self.accel {
            Accel::Kvm => qemu.args(["-accel", "kvm", "-cpu", "host"]),
            _ => qemu.args(["-accel", "tcg,thread=multi", "-cpu", "max"]),
        };
        qemu.args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-m", &self.memory_mib.to_string()])
            .arg("-kernel")
            .arg(self.vmlinuz)
            .arg("-initrd")
            .arg(self.initramfs)
            .args([
                "-append",
                "console=ttyS0 panic=-1 oops=panic quiet loglevel=4 mitigations=off",
            ])
            .args([
                "-virtfs",
                "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            ])
            .arg("-virtfs")
            .arg(format!(
                "local,path={},mount_tag=results,security_model=none",
                self.out.display()
            ));
        qemu
    }

    /// Boots and waits for the guest to power off (or the deadline); every console line is
    /// printed as `[label] line` and saved to `self.console`.
    pub fn run(&self) -> anyhow::Result<Ended> {
        let mut qemu = self.command();
        println!("+ {}", cmd::show(&qemu));
        let mut child = qemu
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {QEMU} (is qemu-system-x86 installed?)"))?;
        let stdout = child.stdout.take().context("qemu's stdout")?;
        let mut log = File::create(&self.console)
            .with_context(|| format!("creating {}", self.console.display()))?;
        let label = self.label.to_owned();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                let _ = log.write_all(&line);
                let _ = log.write_all(b"\n");
                println!("[{label}] {}", printable(&String::from_utf8_lossy(&line)));
            }
        });
        let deadline = Instant::now() + self.timeout;
        let ended = loop {
            if let Some(status) = child.try_wait()? {
                break Ended::Exited(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break Ended::TimedOut;
            }
            thread::sleep(Duration::from_millis(100));
        };
        let _ = reader.join();
        Ok(ended)
    }
}

/// A console line without its terminal escapes (`ESC [ ... letter`) and control characters
/// (the serial console ends lines with `\r\n`; the firmware clears the screen).
pub fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Accel, printable};

    #[test]
    fn accelerator_choice() {
        let vmx = "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse2\n";
        let plain = "processor\t: 0\nflags\t\t: fpu vme de pse hypervisor sse2\n";
        let opens = || Ok(());
        let absent = || Err("No such file or directory (os error 2)".to_owned());
        let auto = |c, k| Accel::Auto.decide(c, k).unwrap();

        assert_eq!(auto(vmx, opens()).0, Accel::Kvm);
        // This development machine: /dev/kvm opens, no vmx/svm: emulate, and say why.
        let (a, why) = auto(plain, opens());
        assert_eq!(a, Accel::Tcg);
        assert!(why.contains("no vmx/svm") && why.contains("TCG"), "{why}");
        let (a, why) = auto(vmx, absent());
        assert_eq!(a, Accel::Tcg);
        assert!(
            why.contains("cannot be opened") && why.contains("TCG"),
            "{why}"
        );
        assert_eq!(auto(plain, absent()).0, Accel::Tcg);
        // "svm" as a word of the flags line only.
        assert_eq!(
            auto("flags\t: svm_lock\nmodel name: vmx\n", opens()).0,
            Accel::Tcg
        );
        assert_eq!(auto("flags\t: fpu svm\n", opens()).0, Accel::Kvm);

        assert_eq!(Accel::Tcg.decide(vmx, opens()).unwrap().0, Accel::Tcg);
        assert!(Accel::Kvm.decide(vmx, absent()).is_err());
        let (a, why) = Accel::Kvm.decide(plain, opens()).unwrap();
        assert_eq!(a, Accel::Kvm);
        assert!(why.contains("may not boot"), "{why}");
    }

    #[test]
    fn console_lines() {
        assert_eq!(printable("\x1bc\x1b[?7l\x1b[2JBooting\r"), "Booting");
        assert_eq!(printable("a\tb"), "a\tb");
    }
}
