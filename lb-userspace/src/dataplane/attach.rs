//! Attaching programs to interfaces: native (driver) mode, generic (SKB) mode, or native
//! with a logged fallback to generic.

use aya::programs::{Xdp, XdpMode, xdp::XdpLinkId};

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
    let err = |e: aya::programs::ProgramError| DataplaneError::Attach {
        interface: interface.to_owned(),
        message: format!("attaching {program}: {}", error_chain(&e)),
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
            Err(e) => {
                tracing::warn!(
                    interface,
                    error = %error_chain(&e),
                    "native XDP not available; falling back to generic (SKB) mode, which is much slower"
                );
                Ok((
                    prog.attach(interface, XdpMode::Skb).map_err(err)?,
                    AttachMode::Generic,
                ))
            }
        },
    }
}

impl Dataplane {
    /// Attach `program` to `interface`; detached by [`Dataplane::detach_all`] or on drop.
    pub fn attach(
        &mut self,
        program: &'static str,
        interface: &str,
        mode: AttachMode,
    ) -> Result<AttachMode, DataplaneError> {
        let prog = self.program(program)?;
        let (link, got) = attach_xdp(prog, program, interface, mode)?;
        self.attached.push(Attached {
            program,
            interface: interface.to_owned(),
            mode: got,
            link: Some(link),
        });
        Ok(got)
    }

    /// Detach everything this dataplane attached, except pinned links (see
    /// [`Dataplane::stop`]).
    pub fn detach_all(&mut self) -> Result<(), DataplaneError> {
        while let Some(a) = self.attached.pop() {
            let Some(link) = a.link else { continue };
            let prog = self.program(a.program)?;
            prog.detach(link).map_err(|e| DataplaneError::Attach {
                interface: a.interface.clone(),
                message: format!("detaching {}: {}", a.program, error_chain(&e)),
            })?;
        }
        Ok(())
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
