//! The API listener: accepts connections, checks the peer, reads one request, hands it to
//! the daemon's loop and writes its answer back.

use std::{
    ffi::CString,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::{debug, warn};

use super::{Request, Response};

/// A request on its way to the daemon's loop, with where to answer.
pub type ApiCall = (Request, oneshot::Sender<Response>);

/// The gid of `group`.
fn group_gid(group: &str) -> std::io::Result<(u32, Vec<String>)> {
    let c = CString::new(group).map_err(std::io::Error::other)?;
    // SAFETY: getgrnam with a valid C string; the result is read before any other call.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    if g.is_null() {
        return Err(std::io::Error::other(format!("no group {group:?}")));
    }
    // SAFETY: non-null result of getgrnam: a valid group record.
    let (gid, mut members) = unsafe { ((*g).gr_gid, Vec::new()) };
    // SAFETY: gr_mem is a NULL-terminated array of C strings.
    unsafe {
        let mut m = (*g).gr_mem;
        while !m.is_null() && !(*m).is_null() {
            members.push(std::ffi::CStr::from_ptr(*m).to_string_lossy().into_owned());
            m = m.add(1);
        }
    }
    Ok((gid, members))
}

/// Whether `group` exists on this host (`config check`).
pub fn group_exists(group: &str) -> bool {
    group_gid(group).is_ok()
}

fn user_name(uid: u32) -> Option<String> {
    // SAFETY: getpwuid; the result is read before any other call.
    let p = unsafe { libc::getpwuid(uid) };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null: a valid passwd record with a C string name.
    let name = unsafe { std::ffi::CStr::from_ptr((*p).pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Who may talk to the API.
#[derive(Clone, Debug)]
struct Access {
    group: Option<(u32, Vec<String>)>,
}

impl Access {
    fn allows(&self, uid: u32, gid: u32) -> bool {
        if uid == 0 {
            return true;
        }
        match &self.group {
            Some((g, members)) => gid == *g || user_name(uid).is_some_and(|n| members.contains(&n)),
            None => false,
        }
    }
}

/// Why the API socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// `daemon.api_group` names no group on this host.
    #[error("no group {group:?} on this host")]
    NoGroup { group: String },
    #[error("{}: {message}", path.display())]
    Socket { path: PathBuf, message: String },
}

/// The API socket, bound and owned (mode 0660, its group set) but not yet served
/// ([`serve`]): the daemon binds it before it loads or attaches anything, so that a socket
/// it cannot have stops the start early. Dropped unserved, it removes its socket file.
#[derive(Debug)]
pub struct Bound {
    listener: Option<std::os::unix::net::UnixListener>,
    path: PathBuf,
    access: Access,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if self.listener.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Resolve `group`, then bind the socket at `path`: a stale socket (nobody accepts on it)
/// is replaced; a live one (another daemon) and anything that is not a socket are refused
/// and left alone.
pub fn bind(path: &Path, group: Option<&str>) -> Result<Bound, BindError> {
    let group = group
        .map(|g| {
            group_gid(g).map_err(|_| BindError::NoGroup {
                group: g.to_owned(),
            })
        })
        .transpose()?;
    let err = |message: String| BindError::Socket {
        path: path.to_owned(),
        message,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("creating its directory {}: {e}", dir.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(err(
                    "in use: another sluice daemon is serving on it (stop it, or give this \
                     one another daemon.api_socket)"
                        .to_owned(),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                // Left by a daemon that died: nobody listens.
                std::fs::remove_file(path)
                    .map_err(|e| err(format!("removing the stale socket: {e}")))?;
            }
            Err(e) => return Err(err(format!("cannot tell whether a daemon uses it: {e}"))),
        },
        Ok(m) => {
            return Err(err(format!(
                "exists and is not a socket (a {}): refusing to replace it; remove it or \
                 choose another daemon.api_socket",
                file_kind(&m.file_type())
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    let listener =
        std::os::unix::net::UnixListener::bind(path).map_err(|e| err(format!("binding: {e}")))?;
    // From here on, a failure removes the socket just created (`Drop`).
    let mut bound = Bound {
        listener: Some(listener),
        path: path.to_owned(),
        access: Access { group: None },
    };
    let io = |what: &str, e: std::io::Error| err(format!("{what}: {e}"));
    if let Some(l) = &bound.listener {
        l.set_nonblocking(true)
            .map_err(|e| io("setting it non-blocking", e))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| io("setting its mode", e))?;
    if let Some((gid, _)) = &group {
        let c =
            CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| err(e.to_string()))?;
        // SAFETY: chown of a path we just created, to root and the group.
        if unsafe { libc::chown(c.as_ptr(), 0, *gid) } != 0 {
            return Err(io("setting its group", std::io::Error::last_os_error()));
        }
    }
    bound.access = Access { group };
    Ok(bound)
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    if t.is_file() {
        "regular file"
    } else if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symbolic link"
    } else if t.is_fifo() {
        "FIFO"
    } else {
        "device or other special file"
    }
}

/// Serve the [bound](bind) socket until the daemon's loop goes away.
pub fn serve(
    mut bound: Bound,
    calls: mpsc::Sender<ApiCall>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let Some(std_listener) = bound.listener.take() else {
        return Err(std::io::Error::other("the API socket is already served"));
    };
    let owned: PathBuf = bound.path.clone();
    let listener = UnixListener::from_std(std_listener).inspect_err(|_| {
        let _ = std::fs::remove_file(&owned);
    })?;
    let access = bound.access.clone();
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (calls, access) = (calls.clone(), access.clone());
            if calls.is_closed() {
                break;
            }
            tokio::spawn(async move {
                if let Err(e) = serve_one(stream, &access, calls).await {
                    debug!(error = %e, "API connection");
                }
            });
        }
        let _ = std::fs::remove_file(owned);
    }))
}

async fn serve_one(
    stream: UnixStream,
    access: &Access,
    calls: mpsc::Sender<ApiCall>,
) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let (r, mut w) = stream.into_split();
    let reply = |resp: Response| async move {
        let mut line = serde_json::to_vec(&resp).map_err(std::io::Error::other)?;
        line.push(b'\n');
        std::io::Result::Ok(line)
    };
    // Read the request first even from a refused peer, so that it reads the refusal
    // rather than a broken pipe; it is not looked at.
    let mut lines = BufReader::new(r).lines();
    let Some(text) = lines.next_line().await? else {
        return Ok(());
    };
    if !access.allows(cred.uid(), cred.gid()) {
        warn!(
            uid = cred.uid(),
            gid = cred.gid(),
            "API request refused: not root nor in daemon.api_group"
        );
        let line = reply(Response::Error {
            message: "permission denied: the sluice API is for root and daemon.api_group"
                .to_owned(),
        })
        .await?;
        return w.write_all(&line).await;
    }
    let resp = match serde_json::from_str::<Request>(&text) {
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
        Ok(req) => {
            let (tx, rx) = oneshot::channel();
            if calls.send((req, tx)).await.is_err() {
                Response::Error {
                    message: "the daemon is shutting down".to_owned(),
                }
            } else {
                rx.await.unwrap_or(Response::Error {
                    message: "the daemon dropped the request".to_owned(),
                })
            }
        }
    };
    let line = reply(resp).await?;
    w.write_all(&line).await
}
