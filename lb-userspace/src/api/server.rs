//! The API listener: accepts connections, checks the peer, reads one request, hands it to
//! the daemon's loop and writes its answer back.

use std::{
    ffi::CString,
    os::unix::fs::PermissionsExt as _,
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

/// Bind the socket (replacing a stale one), set its mode and group, and serve until the
/// daemon's loop goes away.
pub fn start(
    path: &Path,
    group: Option<&str>,
    calls: mpsc::Sender<ApiCall>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::other(format!(
                "{} is in use: is another daemon running?",
                path.display()
            )));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let group = match group {
        Some(g) => {
            let (gid, members) = group_gid(g)?;
            let c =
                CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
            // SAFETY: chown of a path we just created, to root and the group.
            if unsafe { libc::chown(c.as_ptr(), 0, gid) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Some((gid, members))
        }
        None => None,
    };
    let access = Access { group };
    let owned: PathBuf = path.to_owned();
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
