//! Attachments that outlive the process: the backend-side decap (`sluice decap attach`)
//! and the lab's `XDP_PASS` programs on veth peers. The link is pinned in bpffs; removing
//! the pin detaches it. Also the bpffs chores of the balancer's pin directory (see
//! `adopt.rs`): where it is, that it is on bpffs, and its removal (`sluice detach`).

use std::path::{Path, PathBuf};

use aya::{
    EbpfLoader,
    programs::{Xdp, links::FdLink, links::PinnedLink},
};
use lb_common::names;

use super::{AttachMode, DataplaneError, EBPF_OBJECT, attach::attach_xdp, attach::error_chain};

pub use sluice_core::config::pins::{PIN_ROOT, check_pin_dir_syntax, default_pin_dir};

pub(crate) fn is_bpffs(path: &Path) -> bool {
    use nix::sys::statfs::{BPF_FS_MAGIC, statfs};
    statfs(path).is_ok_and(|st| st.filesystem_type() == BPF_FS_MAGIC)
}

/// Check `dir` (syntax, and that its nearest existing ancestor is on bpffs: pins can live
/// nowhere else) and create it.
pub fn prepare_pin_dir(dir: &Path) -> Result<(), DataplaneError> {
    let err = |message: String| DataplaneError::Pins {
        dir: dir.to_owned(),
        message,
    };
    check_pin_dir_syntax(dir).map_err(|why| err(format!("the pin directory {why}")))?;
    if dir.starts_with("/sys/fs/bpf") {
        ensure_bpffs()?;
    }
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    if !is_bpffs(existing) {
        return Err(err(format!(
            "{} is not on a bpffs (BPF objects can only be pinned there; mount one with \
             `mount -t bpf bpf DIR` or choose a daemon.pin_dir under /sys/fs/bpf)",
            existing.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| err(format!("creating it: {e}")))
}

/// Remove `dir`'s empty ancestors that sluice creates (`/sys/fs/bpf/sluice` and the
/// directories below it), nearest first, stopping at the first one that is not empty.
pub fn remove_empty_parents(dir: &Path) {
    for a in dir.ancestors().skip(1) {
        if !a.starts_with(PIN_ROOT) || std::fs::remove_dir(a).is_err() {
            break;
        }
    }
}

/// Remove everything pinned in `dir` (the XDP link first, which detaches the program,
/// then the maps), `dir` itself and its empty parents ([`remove_empty_parents`]); what
/// was removed. The caller makes sure no daemon uses it (see `adopt::lock_pin_dir`).
pub fn remove_pin_dir(dir: &Path, link_name: &str) -> Result<Vec<PathBuf>, DataplaneError> {
    let err = |message: String| DataplaneError::Pins {
        dir: dir.to_owned(),
        message,
    };
    let mut removed = Vec::new();
    let link = dir.join(link_name);
    if link.exists() {
        std::fs::remove_file(&link)
            .map_err(|e| err(format!("removing {}: {e}", link.display())))?;
        removed.push(link);
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(err(format!("reading it: {e}"))),
    };
    for e in entries {
        let path = e.map_err(|e| err(format!("reading it: {e}")))?.path();
        std::fs::remove_file(&path)
            .map_err(|e| err(format!("removing {}: {e}", path.display())))?;
        removed.push(path);
    }
    std::fs::remove_dir(dir).map_err(|e| err(format!("removing it: {e}")))?;
    removed.push(dir.to_owned());
    remove_empty_parents(dir);
    Ok(removed)
}

/// The pin of `program` on `interface` of the network namespace `netns` ([`netns_id`]):
/// `PROGRAM@INTERFACE@netns-INODE`. bpffs is shared by every namespace of a host while
/// interface names repeat across them (each container's `eth0`), so the name says which.
pub fn link_pin_path(program: &str, interface: &str, netns: u64) -> PathBuf {
    pin_path(&format!("{program}@{interface}@netns-{netns}"))
}

/// The pin of `program` on `interface` before pins named their namespace: still detached
/// by [`detach_pinned`].
fn old_link_pin_path(program: &str, interface: &str) -> PathBuf {
    pin_path(&format!("{program}@{interface}"))
}

/// The calling thread's network namespace: the inode of its `ns/net` (what `ip netns
/// identify` compares, and the number in `net:[...]`).
pub fn netns_id() -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino())
}

/// Namespace `id` for people: its `ip netns` name if it has one, else `net:[id]`.
pub fn netns_label(id: u64) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let named = std::fs::read_dir("/run/netns").ok().and_then(|d| {
        d.flatten().find_map(|e| {
            std::fs::metadata(e.path())
                .is_ok_and(|m| m.ino() == id)
                .then(|| format!("{} (net:[{id}])", e.file_name().to_string_lossy()))
        })
    });
    named.unwrap_or_else(|| format!("net:[{id}]"))
}

/// The namespaces (ids) where `program` is pinned on an interface called `interface`.
fn pinned_namespaces(program: &str, interface: &str) -> Vec<u64> {
    let prefix = format!("{program}@{interface}@netns-");
    let Ok(dir) = std::fs::read_dir(Path::new(PIN_ROOT).join("links")) else {
        return Vec::new();
    };
    let mut ids: Vec<u64> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix(&prefix)?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
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
    nix::mount::mount(
        Some("bpf"),
        "/sys/fs/bpf",
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| DataplaneError::Attach {
        interface: String::new(),
        message: format!("mounting bpffs at /sys/fs/bpf: {}", std::io::Error::from(e)),
    })
}

/// Load `program` on its own (with minimal maps) and attach it to `interface` of the
/// calling thread's network namespace with a pinned link ([`link_pin_path`]). Fails if
/// that program is already pinned there.
pub fn attach_pinned(
    program: &'static str,
    interface: &str,
    mode: AttachMode,
) -> Result<(AttachMode, PathBuf), DataplaneError> {
    let netns = netns_id().map_err(|e| DataplaneError::Attach {
        interface: interface.to_owned(),
        message: format!("which network namespace is this (/proc/thread-self/ns/net): {e}"),
    })?;
    let path = link_pin_path(program, interface, netns);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    attach_pinned_as(program, interface, mode, &name)
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

/// Remove the pinned link of `program` on `interface` of the calling thread's network
/// namespace, which detaches it. A pin from before pins named their namespace
/// (`PROGRAM@INTERFACE`) is removed when its link is on this namespace's `interface` (by
/// interface index: that is all a link tells).
pub fn detach_pinned(program: &str, interface: &str) -> Result<(), DataplaneError> {
    let err = |message: String| DataplaneError::Attach {
        interface: interface.to_owned(),
        message,
    };
    let netns = netns_id().map_err(|e| {
        err(format!(
            "which network namespace is this (/proc/thread-self/ns/net): {e}"
        ))
    })?;
    let mut path = link_pin_path(program, interface, netns);
    if !path.exists() {
        let old = old_link_pin_path(program, interface);
        let here = super::iface::lookup(interface)
            .ok()
            .flatten()
            .map(|i| i.ifindex);
        let old_here = old.exists()
            && here.is_some_and(|i| super::adopt::link_ifindex(&old).is_ok_and(|l| l == i));
        if !old_here {
            let elsewhere: Vec<String> = pinned_namespaces(program, interface)
                .into_iter()
                .map(netns_label)
                .collect();
            let mut message = format!(
                "{program} is not attached to {interface} by sluice in this network namespace \
                 ({}; no pin at {})",
                netns_label(netns),
                path.display()
            );
            if !elsewhere.is_empty() {
                message.push_str(&format!(
                    "; it is on an {interface} of network namespace {}: detach it there \
                     (`sluice --netns NAME {} detach --interface {interface}`)",
                    elsewhere.join(", "),
                    if program == lb_common::programs::DECAP {
                        "decap"
                    } else {
                        "peer"
                    }
                ));
            }
            return Err(err(message));
        }
        path = old;
    }
    let link = PinnedLink::from_pin(&path).map_err(|e| err(error_chain(&e)))?;
    let link = link
        .unpin()
        .map_err(|e| err(format!("unpinning {}: {e}", path.display())))?;
    drop(link);
    remove_empty_parents(&path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statfs magic check: bpffs where /proc/self/mounts says so, nothing else.
    #[test]
    fn bpffs_is_recognised_by_its_magic() {
        assert!(!is_bpffs(Path::new("/")));
        assert!(!is_bpffs(&std::env::temp_dir()));
        assert!(!is_bpffs(Path::new("/nonexistent/sluice")));
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        for l in mounts.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(2) == Some(&"bpf") {
                assert!(is_bpffs(Path::new(f[1])), "{l}");
            }
        }
    }
}
