//! Which traffic generator feeds `sluice bench throughput`: the live-frames XDP generator
//! ([`super::traffic`], any kernel with `BPF_F_TEST_XDP_LIVE_FRAMES`) or the kernel's
//! pktgen ([`super::pktgen`], where the kernel has it: CI VMs; many hosts build it as a
//! module or not at all). The choice and its reason are part of the report.

use serde::Serialize;

/// What `--generator` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    /// pktgen when the kernel has it (`/proc/net/pktgen`, or `modprobe pktgen` works),
    /// live frames otherwise.
    #[default]
    Auto,
    /// The live-frames XDP generator (`sluice gen`).
    LiveFrames,
    /// The kernel's pktgen; an error where the kernel has none.
    Pktgen,
}

/// The generator that runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    LiveFrames,
    Pktgen,
}

impl Kind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::LiveFrames => "live-frames",
            Self::Pktgen => "pktgen",
        }
    }
}

/// The generator chosen, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Chosen {
    pub kind: Kind,
    pub why: String,
}

/// Decide, given whether `/proc/net/pktgen` exists and a way to load the module (called
/// only when it does not). Errors only for an explicit `pktgen` the kernel cannot give.
pub fn decide(
    choice: Choice,
    present: bool,
    load: impl FnOnce() -> Result<(), String>,
) -> anyhow::Result<Chosen> {
    let chosen = |kind, why: String| Ok(Chosen { kind, why });
    let flag = match choice {
        Choice::LiveFrames => {
            return chosen(Kind::LiveFrames, "--generator live-frames".into());
        }
        Choice::Pktgen => "--generator pktgen",
        Choice::Auto => "--generator auto",
    };
    if present {
        return chosen(Kind::Pktgen, format!("{flag}: /proc/net/pktgen exists"));
    }
    match load() {
        Ok(()) => chosen(
            Kind::Pktgen,
            format!("{flag}: `modprobe pktgen` loaded the module"),
        ),
        Err(e) if choice == Choice::Auto => chosen(
            Kind::LiveFrames,
            format!("{flag}: this kernel has no pktgen (`modprobe pktgen`: {e})"),
        ),
        Err(e) => anyhow::bail!(
            "{flag}: this kernel has no pktgen: /proc/net/pktgen does not exist and \
             `modprobe pktgen` failed: {e} (use --generator live-frames or auto)"
        ),
    }
}

/// [`decide`] on this machine.
pub fn resolve(choice: Choice) -> anyhow::Result<Chosen> {
    let present = std::path::Path::new("/proc/net/pktgen").exists();
    decide(choice, present, || {
        let out = std::process::Command::new("modprobe")
            .arg("pktgen")
            .output()
            .map_err(|e| format!("could not run modprobe: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(if err.is_empty() {
                format!("exit {}", out.status)
            } else {
                err
            });
        }
        // The module's per-namespace directory appears as it initialises.
        if std::path::Path::new("/proc/net/pktgen").exists() {
            Ok(())
        } else {
            Err("succeeded, but /proc/net/pktgen did not appear".into())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{Choice, Kind, decide};

    #[test]
    fn choices() {
        let never = || -> Result<(), String> { panic!("must not load") };
        let fails = || Err("Module pktgen not found".to_owned());
        let loads = || Ok(());

        let c = decide(Choice::LiveFrames, true, never).unwrap();
        assert_eq!(c.kind, Kind::LiveFrames);

        let c = decide(Choice::Auto, true, never).unwrap();
        assert_eq!(c.kind, Kind::Pktgen);
        assert!(c.why.contains("/proc/net/pktgen exists"), "{}", c.why);

        let c = decide(Choice::Auto, false, loads).unwrap();
        assert_eq!(c.kind, Kind::Pktgen);
        assert!(c.why.contains("modprobe"), "{}", c.why);

        let c = decide(Choice::Auto, false, fails).unwrap();
        assert_eq!(c.kind, Kind::LiveFrames);
        assert!(c.why.contains("Module pktgen not found"), "{}", c.why);

        assert_eq!(
            decide(Choice::Pktgen, false, loads).unwrap().kind,
            Kind::Pktgen
        );
        let e = decide(Choice::Pktgen, false, fails)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no pktgen") && e.contains("Module pktgen not found"),
            "{e}"
        );
    }
}
