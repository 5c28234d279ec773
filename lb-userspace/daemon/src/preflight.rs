//! Everything a daemon's start can fail on that does not need the balancer, checked and
//! acquired **before** it loads, pins or attaches anything ([`acquire`]): the interface
//! exists; `daemon.state_dir` is writable (and the temporary files a crash left there are
//! removed); `daemon.api_group` exists; the API socket is bound (a live socket of another
//! daemon, or anything that is not a socket, is refused and left alone); the metrics
//! listener is bound. A start refused here leaves the interface, the pins and the previous
//! daemon's balancer exactly as they were. The daemon then serves on the listeners bound
//! here.
//!
//! `sluice config check` runs the part of this that needs no privileges and changes
//! nothing ([`offline`]).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use crate::{api, atomic_file, config::DaemonConfig, metrics};

/// Why a start was refused before anything was touched.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("daemon.interface {name:?}: {message}")]
    Interface { name: String, message: String },
    /// `daemon.announce.interface` (announcing enabled) is not there.
    #[error(
        "daemon.announce.interface {name:?}: no such interface in this network namespace \
         (the VIP routes point at it; create it, or name another)"
    )]
    AnnounceInterface { name: String },
    #[error("daemon.state_dir {}: {message}", dir.display())]
    StateDir { dir: PathBuf, message: String },
    #[error(
        "daemon.api_group {group:?}: no such group on this host (create it, or leave \
         api_group out: then only root may use the API)"
    )]
    ApiGroup { group: String },
    #[error("daemon.api_socket {message}")]
    ApiSocket { message: String },
    #[error("daemon.metrics_listen {addr}: {message}")]
    Metrics { addr: SocketAddr, message: String },
}

/// What [`acquire`] holds for the daemon: the bound listeners it will serve on.
#[derive(Debug)]
pub struct Preflight {
    pub(crate) api: api::server::Bound,
    pub(crate) metrics: Option<(SocketAddr, std::net::TcpListener)>,
    /// Temporary files of crashed writes removed from `state_dir`.
    pub leftovers: Vec<PathBuf>,
}

/// Check and acquire, in this order, everything of `d` that can fail before the balancer
/// is loaded (see the module documentation). On an error, what was acquired is released
/// (the API socket file this created is removed).
pub fn acquire(d: &DaemonConfig) -> Result<Preflight, PreflightError> {
    if !interface_exists(&d.interface) {
        return Err(PreflightError::Interface {
            name: d.interface.clone(),
            message: "no such interface in this network namespace".to_owned(),
        });
    }
    let a = &d.announce;
    if a.enabled && !interface_exists(&a.interface) {
        return Err(PreflightError::AnnounceInterface {
            name: a.interface.clone(),
        });
    }
    let leftovers =
        prepare_state_dir(&d.state_dir).map_err(|message| PreflightError::StateDir {
            dir: d.state_dir.clone(),
            message,
        })?;
    let api = api::server::bind(&d.api_socket, d.api_group.as_deref()).map_err(|e| match e {
        api::server::BindError::NoGroup { group } => PreflightError::ApiGroup { group },
        e @ api::server::BindError::Socket { .. } => PreflightError::ApiSocket {
            message: e.to_string(),
        },
    })?;
    let metrics = match d.metrics_listen {
        Some(addr) => Some((
            addr,
            metrics::bind(addr).map_err(|e| PreflightError::Metrics {
                addr,
                message: if e.kind() == std::io::ErrorKind::AddrInUse {
                    format!(
                        "{e}: another process (another sluice daemon?) listens there; \
                         choose another address, or \"none\""
                    )
                } else {
                    e.to_string()
                },
            })?,
        )),
        None => None,
    };
    Ok(Preflight {
        api,
        metrics,
        leftovers,
    })
}

/// Whether `name` is an interface of this network namespace (`if_nametoindex`, as the
/// attach looks it up).
fn interface_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// Create `dir`, remove the temporary files crashed writes left there, and prove it
/// writable by creating (and removing) a file; the leftovers removed.
fn prepare_state_dir(dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating it: {e}"))?;
    let leftovers = atomic_file::remove_leftovers(dir)
        .map_err(|e| format!("removing the temporary files of crashed writes: {e}"))?;
    // Named like a temporary file of `atomic_file`: if removing it fails, the next start
    // removes it.
    let probe = dir.join(format!("write-check.tmp.{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| format!("not writable: {e}"))?;
    std::fs::remove_file(&probe).map_err(|e| format!("removing {}: {e}", probe.display()))?;
    Ok(leftovers)
}

/// One finding of [`offline`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The field it is about, as `config check` names it (`daemon.api_group`).
    pub field: &'static str,
    pub message: String,
    /// An error (the daemon would refuse to start), else a warning.
    pub error: bool,
}

/// What can be checked of `d` on this host without privileges and without changing
/// anything (`sluice config check`): the API group exists; the directories of the API
/// socket and of the state can be created and written; nothing that is not a socket sits
/// at `api_socket`; the interface exists here (a warning: the daemon may run in another
/// network namespace).
pub fn offline(d: &DaemonConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |field, message: String, error| {
        out.push(Finding {
            field,
            message,
            error,
        });
    };
    if let Some(g) = &d.api_group
        && !api::server::group_exists(g)
    {
        push(
            "daemon.api_group",
            format!("no group {g:?} on this host: the daemon would refuse to start"),
            true,
        );
    }
    let socket_dir = d.api_socket.parent().unwrap_or(Path::new("/"));
    match writable(socket_dir) {
        Ok(()) => {}
        Err(Unwritable::Surely(why)) => push(
            "daemon.api_socket",
            format!(
                "the socket's directory {}: {why}: the daemon could not create the socket",
                socket_dir.display()
            ),
            true,
        ),
        Err(Unwritable::ForThisUser(why)) => push(
            "daemon.api_socket",
            format!(
                "the socket's directory {}: {why} (checked as this user; the daemon runs \
                 as root)",
                socket_dir.display()
            ),
            false,
        ),
    }
    if let Ok(m) = std::fs::symlink_metadata(&d.api_socket) {
        use std::os::unix::fs::FileTypeExt as _;
        if !m.file_type().is_socket() {
            push(
                "daemon.api_socket",
                format!(
                    "{} exists and is not a socket: the daemon would refuse to replace it",
                    d.api_socket.display()
                ),
                true,
            );
        }
    }
    match writable(&d.state_dir) {
        Ok(()) => {}
        Err(Unwritable::Surely(why)) => push(
            "daemon.state_dir",
            format!("{}: {why}", d.state_dir.display()),
            true,
        ),
        Err(Unwritable::ForThisUser(why)) => push(
            "daemon.state_dir",
            format!(
                "{}: {why} (checked as this user; the daemon runs as root)",
                d.state_dir.display()
            ),
            false,
        ),
    }
    if !interface_exists(&d.interface) {
        push(
            "daemon.interface",
            format!(
                "no interface {:?} in this network namespace (the daemon needs it where it runs)",
                d.interface
            ),
            false,
        );
    }
    if d.announce.enabled && !interface_exists(&d.announce.interface) {
        push(
            "daemon.announce.interface",
            format!(
                "no interface {:?} in this network namespace (the VIP routes point at it)",
                d.announce.interface
            ),
            false,
        );
    }
    out
}

/// Why a directory cannot be written.
#[derive(Debug, PartialEq, Eq)]
enum Unwritable {
    /// Not even root could (not a directory, a read-only file system, ...).
    Surely(String),
    /// This user may not; root might.
    ForThisUser(String),
}

/// Whether `dir` can be created (if missing) and written: its nearest existing ancestor
/// must be a directory that the effective user may write and search.
fn writable(dir: &Path) -> Result<(), Unwritable> {
    let mut existing = None;
    for a in dir.ancestors() {
        match std::fs::metadata(a) {
            Ok(m) if m.is_dir() => {
                existing = Some(a);
                break;
            }
            Ok(_) => {
                return Err(Unwritable::Surely(format!(
                    "{} is not a directory",
                    a.display()
                )));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) => {}
            Err(e) => return Err(Unwritable::Surely(format!("{}: {e}", a.display()))),
        }
    }
    let Some(a) = existing else {
        return Err(Unwritable::Surely("no existing ancestor".to_owned()));
    };
    use nix::{
        fcntl::{AT_FDCWD, AtFlags},
        unistd::{AccessFlags, faccessat},
    };
    // The effective ids (AT_EACCESS), as the kernel checks the daemon's writes.
    let e = match faccessat(
        AT_FDCWD,
        a,
        AccessFlags::W_OK | AccessFlags::X_OK,
        AtFlags::AT_EACCESS,
    ) {
        Ok(()) => return Ok(()),
        Err(e) => std::io::Error::from(e),
    };
    let why = if a == dir {
        format!("not writable: {e}")
    } else {
        format!("cannot be created in {}: {e}", a.display())
    };
    let root = nix::unistd::geteuid().is_root();
    if e.raw_os_error() == Some(nix::errno::Errno::EACCES as i32) && !root {
        Err(Unwritable::ForThisUser(why))
    } else {
        Err(Unwritable::Surely(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sluice-preflight-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn interfaces_are_looked_up_by_name() {
        assert!(interface_exists("lo"));
        assert!(!interface_exists("sl-no-such0"));
        assert!(!interface_exists("bad\0name"));
    }

    #[test]
    fn a_directory_below_a_regular_file_is_not_writable() {
        let dir = scratch("file");
        std::fs::write(dir.join("file"), b"").unwrap();
        assert_eq!(writable(&dir.join("new/deeper")), Ok(()));
        assert_eq!(writable(&dir), Ok(()));
        match writable(&dir.join("file/sub")) {
            Err(Unwritable::Surely(why)) => {
                assert!(why.contains("file is not a directory"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_dir_is_prepared_and_proved_writable() {
        let dir = scratch("state");
        let dead = std::process::Command::new("true")
            .spawn()
            .and_then(|mut c| c.wait().map(|_| c.id()))
            .unwrap();
        let leftover = dir.join(format!("layout.json.tmp.{dead}"));
        std::fs::write(&leftover, b"half").unwrap();
        std::fs::write(dir.join("layout.json"), b"{}").unwrap();
        assert_eq!(prepare_state_dir(&dir).unwrap(), vec![leftover]);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "only layout.json stays: {left:?}");
        std::fs::write(dir.join("plain"), b"").unwrap();
        let why = prepare_state_dir(&dir.join("plain")).unwrap_err();
        assert!(why.starts_with("creating it:"), "{why}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
