//! Attachments that outlive the process: the backend-side decap (`sluice decap attach`)
//! and the lab's `XDP_PASS` programs on veth peers. The link is pinned in bpffs; removing
//! the pin detaches it.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    programs::{Xdp, links::FdLink, links::PinnedLink},
};
use lb_common::names;

use super::{AttachMode, DataplaneError, EBPF_OBJECT, attach::attach_xdp, attach::error_chain};

/// Where sluice pins objects in bpffs.
pub const PIN_ROOT: &str = "/sys/fs/bpf/sluice";

/// The pin of `program` on `interface`.
pub fn link_pin_path(program: &str, interface: &str) -> PathBuf {
    pin_path(&format!("{program}@{interface}"))
}

/// The link pin called `name` (a file name: no '/').
pub fn pin_path(name: &str) -> PathBuf {
    Path::new(PIN_ROOT).join("links").join(name)
}

/// Mount bpffs at /sys/fs/bpf unless it already is.
pub fn ensure_bpffs() -> Result<(), DataplaneError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let _dev = f.next();
        f.next() == Some("/sys/fs/bpf") && f.next() == Some("bpf")
    }) {
        return Ok(());
    }
    let c = |s: &str| CString::new(s).unwrap_or_default();
    let (src, dst, fstype) = (c("bpf"), c("/sys/fs/bpf"), c("bpf"));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(DataplaneError::Attach {
            interface: String::new(),
            message: format!(
                "mounting bpffs at /sys/fs/bpf: {}",
                std::io::Error::last_os_error()
            ),
        });
    }
    Ok(())
}

/// Load `program` on its own (with minimal maps) and attach it to `interface` with a
/// pinned link. Fails if that program is already pinned there.
pub fn attach_pinned(
    program: &'static str,
    interface: &str,
    mode: AttachMode,
) -> Result<(AttachMode, PathBuf), DataplaneError> {
    attach_pinned_as(program, interface, mode, &format!("{program}@{interface}"))
}

/// [`attach_pinned`], pinned under `pin_name` ([`pin_path`]) instead of
/// `PROGRAM@INTERFACE`: for labs, whose interface names repeat across network namespaces.
/// Removing that pin (`std::fs::remove_file`) detaches it.
pub fn attach_pinned_as(
    program: &'static str,
    interface: &str,
    mode: AttachMode,
    pin_name: &str,
) -> Result<(AttachMode, PathBuf), DataplaneError> {
    if pin_name.is_empty() || pin_name.contains('/') || pin_name.starts_with('.') {
        return Err(DataplaneError::Attach {
            interface: interface.to_owned(),
            message: format!("{pin_name:?} is not a pin name"),
        });
    }
    ensure_bpffs()?;
    let path = pin_path(pin_name);
    if path.exists() {
        return Err(DataplaneError::Attach {
            interface: interface.to_owned(),
            message: format!(
                "{program} is already attached (pinned at {}); detach it first",
                path.display()
            ),
        });
    }
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(names::FLOWS, 1)
        .map_max_entries(names::TABLES, 1)
        .load(EBPF_OBJECT)?;
    let prog: &mut Xdp = ebpf
        .program_mut(program)
        .ok_or(DataplaneError::MissingProgram(program))?
        .try_into()
        .map_err(|source| DataplaneError::Program {
            name: program,
            source,
        })?;
    prog.load().map_err(|source| DataplaneError::Program {
        name: program,
        source,
    })?;
    let (id, got) = attach_xdp(prog, program, interface, mode)?;
    let pin_err = |message: String| DataplaneError::Attach {
        interface: interface.to_owned(),
        message,
    };
    let link = prog.take_link(id).map_err(|e| pin_err(error_chain(&e)))?;
    let link = FdLink::try_from(link)
        .map_err(|e| pin_err(format!("no bpf link to pin: {}", error_chain(&e))))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| pin_err(format!("creating {}: {e}", dir.display())))?;
    }
    link.pin(&path).map_err(|e| {
        pin_err(format!(
            "pinning at {}: {}",
            path.display(),
            error_chain(&e)
        ))
    })?;
    Ok((got, path))
}

/// Remove the pinned link of `program` on `interface`, which detaches it.
pub fn detach_pinned(program: &str, interface: &str) -> Result<(), DataplaneError> {
    let path = link_pin_path(program, interface);
    let err = |message: String| DataplaneError::Attach {
        interface: interface.to_owned(),
        message,
    };
    if !path.exists() {
        return Err(err(format!(
            "{program} is not attached by sluice (no pin at {})",
            path.display()
        )));
    }
    let link = PinnedLink::from_pin(&path).map_err(|e| err(error_chain(&e)))?;
    let link = link
        .unpin()
        .map_err(|e| err(format!("unpinning {}: {e}", path.display())))?;
    drop(link);
    Ok(())
}
