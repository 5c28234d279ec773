//! The balancer's pinned XDP link: which interface a pinned link is on, whether a new
//! daemon can reuse it, and attaching the balancer through it.

use std::{os::fd::AsRawFd as _, path::Path};

use aya::programs::{
    Xdp,
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
};

use super::LINK_PIN;
use crate::{
    AttachMode, Dataplane, DataplaneError,
    attach::{attach_xdp, error_chain},
};

/// The interface index the XDP link pinned at `path` is attached to (0: the interface is
/// gone), read with `BPF_OBJ_GET` + `BPF_OBJ_GET_INFO_BY_FD` (aya's `LinkInfo` has no
/// ifindex, and `FdLink` does not lend its descriptor).
pub(crate) fn link_ifindex(path: &Path) -> Result<u32, String> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C)]
    struct GetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let mut get = GetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: the bpf syscall with a valid attribute block (a NUL-terminated path).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &raw mut get,
            size_of::<GetAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: a descriptor the kernel just gave us, owned from here on.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id (u32 each), then the union at offset 16,
    // whose `xdp` member is `ifindex`. 64 bytes cover every member.
    let mut info = [0u32; 16];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: as above; `info` is our buffer of `info_len` bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    const BPF_LINK_TYPE_XDP: u32 = 6;
    if info[0] != BPF_LINK_TYPE_XDP {
        return Err(format!("not an XDP link (link type {})", info[0]));
    }
    Ok(info[4])
}

/// Whether the balancer's XDP link pinned in `dir` can be reused on `interface`: yes when it
/// is attached to it. A link whose interface is gone is dead weight: removed (the balancer
/// is attached anew). One on another interface is not ours: an error.
pub(super) fn reusable_link(dir: &Path, interface: &str) -> Result<bool, DataplaneError> {
    let err = |message: String| DataplaneError::Pins {
        dir: dir.to_owned(),
        message,
    };
    let link_path = dir.join(LINK_PIN);
    let want = crate::iface::lookup(interface)
        .ok()
        .flatten()
        .map(|i| i.ifindex);
    match link_ifindex(&link_path) {
        Ok(0) => {
            tracing::warn!(link = %link_path.display(), "the pinned XDP link's interface is gone; attaching anew");
            std::fs::remove_file(&link_path)
                .map_err(|e| err(format!("removing {}: {e}", link_path.display())))?;
            Ok(false)
        }
        Ok(i) if Some(i) == want => Ok(true),
        Ok(i) => Err(err(format!(
            "its XDP link is attached to interface index {i}, not to {interface} ({}): \
             the pin directory of another interface? (daemon.pin_dir)",
            want.map_or_else(|| "not found".to_owned(), |w| format!("index {w}"))
        ))),
        Err(e) => Err(err(format!("{}: {e}", link_path.display()))),
    }
}

/// Open the link pinned in `dir`, for [`Dataplane::attach_balancer`] to take over.
pub(super) fn open_pinned_link(dir: &Path) -> Result<FdLink, DataplaneError> {
    let link_path = dir.join(LINK_PIN);
    let l = PinnedLink::from_pin(&link_path).map_err(|e| DataplaneError::Pins {
        dir: dir.to_owned(),
        message: format!("{}: {}", link_path.display(), error_chain(&e)),
    })?;
    Ok(FdLink::from(l))
}

impl Dataplane {
    /// Attach the balancer to `interface`. A pinning dataplane reuses the pinned link of
    /// the previous daemon, replacing its program atomically (`bpf_link_update`; the mode
    /// stays what it was), or attaches anew and pins the link. Returns the mode and
    /// whether an existing link was taken over.
    pub fn attach_balancer(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<(AttachMode, bool), DataplaneError> {
        const BALANCER: &str = lb_common::programs::BALANCER;
        let Some(pins) = self.pins.as_mut() else {
            return self.attach(BALANCER, interface, mode).map(|m| (m, false));
        };
        let dir = pins.cfg.dir.clone();
        let existing = pins.existing_link.take();
        let prev_mode = pins.mode;
        let err = |message: String| DataplaneError::Attach {
            interface: interface.to_owned(),
            message,
        };
        let prog: &mut Xdp = self.program(BALANCER)?;
        let (got, replaced) = match existing {
            Some(fd_link) => {
                let link = XdpLink::try_from(fd_link)
                    .map_err(|e| err(format!("the pinned link: {}", error_chain(&e))))?;
                let id = prog.attach_to_link(link).map_err(|e| {
                    err(format!(
                        "replacing the program in the pinned link: {}",
                        error_chain(&e)
                    ))
                })?;
                // The pin keeps the link; the program's own handle on it is not needed.
                drop(prog.take_link(id));
                let got = prev_mode.unwrap_or(mode);
                if mode != AttachMode::Auto && prev_mode.is_some_and(|p| p != mode) {
                    tracing::warn!(interface, mode = %got, wanted = %mode, "the adopted link keeps its XDP mode; `sluice detach` and start again to change it (drops the flows)");
                }
                (got, true)
            }
            None => {
                let (id, got) = attach_xdp(prog, BALANCER, interface, mode)?;
                let link = prog.take_link(id).map_err(|e| err(error_chain(&e)))?;
                let link = FdLink::try_from(link).map_err(|e| {
                    err(format!(
                        "the kernel gave no bpf_link to pin (XDP links need Linux 5.9): {}",
                        error_chain(&e)
                    ))
                })?;
                let path = dir.join(LINK_PIN);
                link.pin(&path).map_err(|e| {
                    err(format!(
                        "pinning at {}: {}",
                        path.display(),
                        error_chain(&e)
                    ))
                })?;
                (got, false)
            }
        };
        // The kernel must now run this program on that link.
        let want = prog.info().map_err(|e| err(error_chain(&e)))?.id();
        let path = dir.join(LINK_PIN);
        let have = PinnedLink::from_pin(&path)
            .map_err(|e| err(error_chain(&e)))
            .and_then(|l| FdLink::from(l).info().map_err(|e| err(error_chain(&e))))?
            .program_id();
        if have != want {
            return Err(err(format!(
                "the pinned link at {} runs program {have}, not the one just loaded ({want})",
                path.display()
            )));
        }
        // An upgrade across the flow table's change of layout: the flows the old program
        // opened since the first copy, now that it no longer runs.
        if let Some(old) = self.pins.as_mut().and_then(|p| p.old_flows.take()) {
            let m = self.copy_flows_from(&old);
            tracing::info!(
                copied = m.copied,
                lost = m.lost,
                "moved the flows the older build's program opened meanwhile"
            );
        }
        self.attached.push(crate::Attached {
            program: BALANCER,
            interface: interface.to_owned(),
            mode: got,
            link: None,
        });
        if let Some(p) = self.pins.as_mut() {
            p.mode = Some(got);
        }
        self.save_layout();
        self.note_balancer_netns();
        Ok((got, replaced))
    }
}
