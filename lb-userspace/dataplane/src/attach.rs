//! Attaching programs to interfaces: native (driver) mode, generic (SKB) mode, or native
//! with a logged fallback to generic when the driver has no native XDP support (and only
//! then: any other refusal — no such interface, another program attached — is reported).

use aya::{
    Ebpf,
    programs::{ProgramError, Xdp, XdpError, XdpMode, xdp::XdpLinkId},
};
use nix::errno::Errno;

use super::{Dataplane, DataplaneError};

/// How to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    Native,
    Generic,
    /// Native, else generic with a warning.
    #[default]
    Auto,
}

/// As `daemon.xdp_mode` spells it (for the log).
impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
            Self::Auto => "auto",
        })
    }
}

/// A program attached to an interface; detached when the dataplane is dropped, unless
/// its link is pinned (the daemon's balancer: see `adopt.rs`).
#[derive(Debug)]
pub struct Attached {
    pub program: &'static str,
    pub interface: String,
    /// The mode the kernel accepted (never `Auto`).
    pub mode: AttachMode,
    /// `None`: a pinned link, which bpffs owns.
    pub(super) link: Option<XdpLinkId>,
}

/// Attach a loaded XDP program, honouring `mode` (with the `Auto` fallback).
pub(super) fn attach_xdp(
    prog: &mut Xdp,
    program: &'static str,
    interface: &str,
    mode: AttachMode,
) -> Result<(XdpLinkId, AttachMode), DataplaneError> {
    let err = |e: ProgramError| DataplaneError::Attach {
        interface: interface.to_owned(),
        message: format!("attaching {program}: {}", describe(&e, interface)),
    };
    match mode {
        AttachMode::Native => Ok((
            prog.attach(interface, XdpMode::Driver).map_err(err)?,
            AttachMode::Native,
        )),
        AttachMode::Generic => Ok((
            prog.attach(interface, XdpMode::Skb).map_err(err)?,
            AttachMode::Generic,
        )),
        AttachMode::Auto => match prog.attach(interface, XdpMode::Driver) {
            Ok(link) => Ok((link, AttachMode::Native)),
            Err(e) if native_unsupported(&e) => {
                tracing::warn!(
                    interface,
                    error = %error_chain(&e),
                    "native XDP not available (the driver does not support it); falling back to generic (SKB) mode, which is much slower"
                );
                Ok((
                    prog.attach(interface, XdpMode::Skb).map_err(err)?,
                    AttachMode::Generic,
                ))
            }
            Err(e) => Err(err(e)),
        },
    }
}

/// The errno of a failed attach, if the kernel gave one (through `bpf_link_create`, or
/// netlink on kernels without XDP links).
fn errno(e: &ProgramError) -> Option<i32> {
    match e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        ProgramError::XdpError(XdpError::NetlinkError(n)) => n.raw_os_error(),
        _ => None,
    }
}

/// Whether a native-mode attach failed because the driver has no native XDP (the kernel's
/// `EOPNOTSUPP`, or `ENOTSUPP` from some drivers): the one case where `Auto` falls back.
fn native_unsupported(e: &ProgramError) -> bool {
    /// The kernel-internal `ENOTSUPP`, which some drivers leak to user space.
    const ENOTSUPP: i32 = 524;
    errno(e).is_some_and(|n| n == Errno::EOPNOTSUPP as i32 || n == ENOTSUPP)
}

/// A failed attach in the operator's terms, with its cause.
fn describe(e: &ProgramError, interface: &str) -> String {
    match (e, errno(e).map(Errno::from_raw)) {
        (ProgramError::UnknownInterface { .. }, _) | (_, Some(Errno::ENODEV)) => {
            format!("no such interface {interface:?} (in this network namespace)")
        }
        (_, Some(Errno::EBUSY | Errno::EEXIST)) => format!(
            "{}: another XDP program is attached to {interface} (see `ip link show dev \
             {interface}`); remove it first (`sluice detach` if it is sluice's balancer, \
             else `ip link set dev {interface} xdp off`)",
            error_chain(e)
        ),
        _ => error_chain(e),
    }
}

/// Program `name` of a loaded object, as an XDP program.
pub(crate) fn xdp_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut Xdp, DataplaneError> {
    ebpf.program_mut(name)
        .ok_or(DataplaneError::MissingProgram(name))?
        .try_into()
        .map_err(|source| DataplaneError::Program { name, source })
}

/// How many times a program's load is tried while the kernel answers `EAGAIN`: the
/// verifier stops, with that error, when a signal arrives for the loading thread (another
/// thread's child exiting, a timer), so it is tried again, as libbpf does (five times).
const LOAD_ATTEMPTS: u32 = 5;

/// Load (verify) every program of `names` in `ebpf`.
pub(crate) fn load_programs(ebpf: &mut Ebpf, names: &[&'static str]) -> Result<(), DataplaneError> {
    for &name in names {
        let program = xdp_program(ebpf, name)?;
        retry_interrupted(LOAD_ATTEMPTS, || program.load())
            .map_err(|source| DataplaneError::Program { name, source })?;
    }
    Ok(())
}

/// `load`, tried again (at most `attempts` times in all) while it fails because the
/// verifier was interrupted (`EAGAIN`); any other result is returned as it is.
fn retry_interrupted(
    attempts: u32,
    mut load: impl FnMut() -> Result<(), ProgramError>,
) -> Result<(), ProgramError> {
    let mut tried = 1;
    loop {
        match load() {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(Errno::EAGAIN as i32) && tried < attempts =>
            {
                tracing::debug!(tried, "program load interrupted (EAGAIN): trying again");
                tried += 1;
            }
            r => return r,
        }
    }
}

/// Attach `program` of `ebpf` to `interface`, recorded in `attached`. Shared by the
/// balancer's object ([`Dataplane`]) and the benchmarks' (`BenchObject`).
pub(crate) fn attach_program(
    ebpf: &mut Ebpf,
    attached: &mut Vec<Attached>,
    program: &'static str,
    interface: &str,
    mode: AttachMode,
) -> Result<AttachMode, DataplaneError> {
    let (link, got) = attach_xdp(xdp_program(ebpf, program)?, program, interface, mode)?;
    attached.push(Attached {
        program,
        interface: interface.to_owned(),
        mode: got,
        link: Some(link),
    });
    Ok(got)
}

/// Detach everything in `attached` (the last attached first), except pinned links, which
/// carry no link of ours.
pub(crate) fn detach_programs(
    ebpf: &mut Ebpf,
    attached: &mut Vec<Attached>,
) -> Result<(), DataplaneError> {
    while let Some(a) = attached.pop() {
        let Some(link) = a.link else { continue };
        xdp_program(ebpf, a.program)?
            .detach(link)
            .map_err(|e| DataplaneError::Attach {
                interface: a.interface.clone(),
                message: format!("detaching {}: {}", a.program, error_chain(&e)),
            })?;
    }
    Ok(())
}

impl Dataplane {
    /// Attach `program` to `interface`; detached by [`Dataplane::detach_all`] or on drop.
    pub fn attach(
        &mut self,
        program: &'static str,
        interface: &str,
        mode: AttachMode,
    ) -> Result<AttachMode, DataplaneError> {
        let got = attach_program(&mut self.ebpf, &mut self.attached, program, interface, mode)?;
        if program == lb_common::programs::BALANCER {
            self.note_balancer_netns();
        }
        Ok(got)
    }

    /// Detach everything this dataplane attached, except pinned links (see
    /// [`Dataplane::stop`]).
    pub fn detach_all(&mut self) -> Result<(), DataplaneError> {
        detach_programs(&mut self.ebpf, &mut self.attached)
    }

    pub fn attached(&self) -> &[Attached] {
        &self.attached
    }
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use aya::sys::SyscallError;

    use super::*;

    fn syscall(errno: i32) -> ProgramError {
        ProgramError::SyscallError(SyscallError {
            call: "bpf_link_create",
            io_error: std::io::Error::from_raw_os_error(errno),
        })
    }

    /// [`retry_interrupted`] with 5 attempts over loads that fail with `errors` in turn
    /// (then succeed): whether it succeeded, and how many loads it made.
    fn loads(errors: &[Errno]) -> (bool, usize) {
        let mut calls = 0;
        let r = retry_interrupted(5, || {
            calls += 1;
            match errors.get(calls - 1) {
                Some(&e) => Err(ProgramError::LoadError {
                    io_error: std::io::Error::from_raw_os_error(e as i32),
                    verifier_log: aya_obj::VerifierLog::new(String::new()),
                }),
                None => Ok(()),
            }
        });
        (r.is_ok(), calls)
    }

    /// A load the verifier gave up on because a signal came (`EAGAIN`) is tried again, up
    /// to the attempts; any other failure, and success, end it at once.
    #[test]
    fn an_interrupted_load_is_tried_again() {
        assert_eq!(loads(&[Errno::EAGAIN, Errno::EAGAIN]), (true, 3));
        assert_eq!(
            loads(&[Errno::EAGAIN; 6]),
            (false, 5),
            "five attempts in all"
        );
        assert_eq!(
            loads(&[Errno::EACCES]),
            (false, 1),
            "a verifier's refusal is final"
        );
    }

    #[test]
    fn only_a_driver_without_native_xdp_falls_back() {
        assert!(native_unsupported(&syscall(Errno::EOPNOTSUPP as i32)));
        assert!(native_unsupported(&syscall(524)));
        for e in [
            ProgramError::UnknownInterface {
                name: "nope0".into(),
            },
            syscall(Errno::EBUSY as i32),
            syscall(Errno::EEXIST as i32),
            syscall(Errno::EPERM as i32),
            syscall(Errno::ENODEV as i32),
            syscall(Errno::EINVAL as i32),
        ] {
            assert!(!native_unsupported(&e), "{e:?} must not fall back");
        }
    }

    #[test]
    fn refusals_name_their_cause() {
        let missing = ProgramError::UnknownInterface {
            name: "nope0".into(),
        };
        assert!(describe(&missing, "nope0").contains("no such interface \"nope0\""));
        assert!(describe(&syscall(Errno::ENODEV as i32), "nope0").contains("no such interface"));
        let busy = describe(&syscall(Errno::EBUSY as i32), "eth0");
        assert!(
            busy.contains("another XDP program is attached to eth0") && busy.contains("busy"),
            "{busy}"
        );
    }
}
