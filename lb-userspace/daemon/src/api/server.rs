//! The API listener: accepts connections, checks the peer, reads one request, decodes it
//! (and parses an `Apply`'s configuration) off the daemon's loop, hands it to the loop and
//! writes its answer back.
//!
//! Nothing a client does can hold the daemon: a request is at most [`MAX_REQUEST_BYTES`];
//! a connection that sends nothing for [`IDLE_TIMEOUT`], or has not sent its whole request
//! within [`REQUEST_TIMEOUT`], or does not take its answer within [`WRITE_TIMEOUT`], is
//! dropped; at most [`MAX_CONNECTIONS`] are served at once (more are refused at once with
//! an error); decoding and parsing run on blocking threads, so the loop only sees parsed
//! requests; and when accepting fails (out of file descriptors), the listener backs off
//! instead of spinning.

use std::{
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream},
    sync::{Semaphore, mpsc, oneshot},
    time::Instant,
};
use tracing::{debug, info, warn};

use super::{Request, Response};
use crate::config::Config;

/// The largest request accepted, newline included (a configuration of 1024 VIPs with
/// 16383 backends is well under 4 MiB).
pub const MAX_REQUEST_BYTES: usize = 16 << 20;
/// A connection that sends nothing for this long while its request is incomplete is
/// dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole request must have arrived this long after the connection was accepted.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The answer must have been taken by the client within this long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more are answered with an error and closed at once.
pub const MAX_CONNECTIONS: usize = 64;

/// A request on its way to the daemon's loop, decoded (and an `Apply`'s configuration
/// parsed and validated) off the loop.
#[derive(Debug)]
pub enum Call {
    /// An `Apply` whose configuration passed the config file's rules.
    Apply {
        config: Box<Config>,
        dry_run: bool,
        base_version: Option<u64>,
        force: bool,
    },
    /// Any other request.
    Other(Request),
}

/// Who sent a request: the peer's credentials (`SO_PEERCRED`), for the log of every edit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    /// None where the kernel does not say.
    pub pid: Option<i32>,
}

/// A call, who made it, and where to answer it.
pub type ApiCall = (Call, Peer, oneshot::Sender<Response>);

/// How an `Apply` refused by the config file's rules starts ([`parse_apply`]).
pub const REJECTED: &str = "rejected, nothing changed";

/// The `Apply` text parsed and validated with the config file's rules, or the error to
/// answer (every problem, `path: message` each).
pub fn parse_apply(config: &str) -> Result<Config, String> {
    crate::config::parse(config, "edit")
        .map(|l| l.config)
        .map_err(|e| refusal(&e))
}

/// An edited configuration model validated with the config file's rules (no text), or
/// the error to answer, as [`parse_apply`] words it.
pub fn validate_model(config: &Config) -> Result<Config, String> {
    crate::config::validate_model(config, "edit")
        .map(|l| l.config)
        .map_err(|e| refusal(&e))
}

fn refusal(e: &crate::config::ConfigError) -> String {
    let problems: Vec<String> = e
        .problems()
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    format!("{REJECTED}:\n{}", problems.join("\n"))
}

/// One request line decoded into a call for the loop, or the error to answer (public for
/// the parser fuzzer, `fuzz/fuzz_targets/api_request.rs`).
pub fn decode(text: &[u8]) -> Result<Call, String> {
    match serde_json::from_slice::<Request>(text) {
        Err(e) => Err(format!("bad request: {e}")),
        Ok(Request::Apply {
            config,
            dry_run,
            base_version,
            force,
        }) => parse_apply(&config).map(|c| Call::Apply {
            config: Box::new(c),
            dry_run,
            base_version,
            force,
        }),
        Ok(other) => Ok(Call::Other(other)),
    }
}

/// The gid of `group`, and its members.
pub(crate) fn group_gid(group: &str) -> std::io::Result<(u32, Vec<String>)> {
    use nix::errno::Errno;
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok((g.gid.as_raw(), g.mem)),
        // getgrnam_r(3) lists these for "not found" as well.
        Ok(None) | Err(Errno::ENOENT | Errno::ESRCH | Errno::EBADF | Errno::EPERM) => {
            Err(std::io::Error::other(format!("no group {group:?}")))
        }
        Err(e) => Err(std::io::Error::other(format!(
            "looking up group {group:?}: {}",
            std::io::Error::from(e)
        ))),
    }
}

/// Whether `group` exists on this host (`config check`).
pub fn group_exists(group: &str) -> bool {
    group_gid(group).is_ok()
}

fn user_name(uid: u32) -> Option<String> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok()??;
    Some(user.name)
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
        // The group of the socket we just created (its owner is this daemon's user: root,
        // or the unprivileged user of the systemd unit, which needs no CAP_CHOWN to give
        // its file a group it belongs to).
        std::os::unix::fs::chown(path, None, Some(*gid)).map_err(|e| io("setting its group", e))?;
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
        accept_loop(listener, access, calls).await;
        let _ = std::fs::remove_file(owned);
    }))
}

/// How long the accept loop waits after a failed `accept`: 10 ms, doubling with every
/// failure in a row up to 1 s; the first success resets it. When the process is out of
/// file descriptors (`EMFILE`, `ENFILE`) the pending connection stays queued and the
/// listener stays readable, so without a pause the loop would spin on the same error.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(10);
    pub const MAX: Duration = Duration::from_secs(1);

    /// The pause after one more failure in a row.
    pub fn failed(&mut self) -> Duration {
        let d = Self::FIRST
            .saturating_mul(1u32 << self.failures.min(16))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

async fn accept_loop(listener: UnixListener, access: Access, calls: mpsc::Sender<ApiCall>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Backoff::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                if backoff.failures() > 0 {
                    warn!(
                        failures = backoff.failures(),
                        "API accepting connections again"
                    );
                }
                backoff.succeeded();
                stream
            }
            Err(e) => {
                let pause = backoff.failed();
                if backoff.failures() == 1 {
                    warn!(error = %e, "API accept failed (out of file descriptors?); backing off up to 1 s between tries");
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        if calls.is_closed() {
            break;
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            warn!(
                limit = MAX_CONNECTIONS,
                "API connection refused: too many connections open"
            );
            crate::metrics::live().api_request("refused", true);
            tokio::spawn(refuse_busy(stream));
            continue;
        };
        let (calls, access) = (calls.clone(), access.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_one(stream, &access, calls).await {
                debug!(error = %e, "API connection");
            }
            drop(slot);
        });
    }
}

/// Tell a connection over the limit so (without reading its request) and close it.
async fn refuse_busy(mut stream: UnixStream) {
    let line = answer(&Response::Error {
        message: format!(
            "the daemon is busy: {MAX_CONNECTIONS} API connections are open (the limit); try again"
        ),
    });
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&line)).await;
}

fn answer(resp: &Response) -> Vec<u8> {
    let mut line = serde_json::to_vec(resp).unwrap_or_else(|e| {
        format!("{{\"result\":\"error\",\"message\":\"encoding the answer: {e}\"}}").into_bytes()
    });
    line.push(b'\n');
    line
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the connection closed before a whole request")]
    Closed,
    #[error("no data for {} s: connection dropped", IDLE_TIMEOUT.as_secs())]
    Idle,
    #[error("the request did not arrive within {} s", REQUEST_TIMEOUT.as_secs())]
    Slow,
    #[error(
        "request too large: more than {MAX_REQUEST_BYTES} bytes ({} MiB, the API's limit); nothing changed",
        MAX_REQUEST_BYTES >> 20
    )]
    TooLarge,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How much a request may take: bytes, and time without data / in all.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    pub max_bytes: usize,
    pub idle: Duration,
    pub total: Duration,
}

const READ_LIMITS: ReadLimits = ReadLimits {
    max_bytes: MAX_REQUEST_BYTES,
    idle: IDLE_TIMEOUT,
    total: REQUEST_TIMEOUT,
};

/// Read one request line (without its newline), within `limits` (public for the parser
/// fuzzer).
pub async fn read_request(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    limits: ReadLimits,
) -> Result<Vec<u8>, ReadError> {
    let deadline = Instant::now() + limits.total;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = limits.idle.min(left);
        let n = match tokio::time::timeout(wait, r.read(&mut chunk)).await {
            Ok(n) => n?,
            Err(_) if left <= limits.idle => return Err(ReadError::Slow),
            Err(_) => return Err(ReadError::Idle),
        };
        if n == 0 {
            return Err(ReadError::Closed);
        }
        let start = buf.len();
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf[start..].iter().position(|b| *b == b'\n') {
            if start + i + 1 > limits.max_bytes {
                return Err(ReadError::TooLarge);
            }
            buf.truncate(start + i);
            return Ok(buf);
        }
        if buf.len() >= limits.max_bytes {
            return Err(ReadError::TooLarge);
        }
    }
}

async fn serve_one(
    stream: UnixStream,
    access: &Access,
    calls: mpsc::Sender<ApiCall>,
) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let peer = Peer {
        uid: cred.uid(),
        pid: cred.pid(),
    };
    let (mut r, mut w) = stream.into_split();
    let write = |resp: Response| async move {
        // A big answer (a status of thousands of backends) is encoded off the runtime's
        // workers too.
        let line = tokio::task::spawn_blocking(move || answer(&resp))
            .await
            .map_err(std::io::Error::other)?;
        tokio::time::timeout(WRITE_TIMEOUT, w.write_all(&line))
            .await
            .map_err(|_| std::io::Error::other("the client did not take its answer"))?
    };
    // Read the request first even from a refused peer, so that it reads the refusal
    // rather than a broken pipe; it is not looked at.
    let text = match read_request(&mut r, READ_LIMITS).await {
        Ok(text) => text,
        Err(e @ ReadError::TooLarge) => {
            warn!(peer_uid = peer.uid, peer_pid = peer.pid, error = %e, "API request refused");
            crate::metrics::live().api_request("refused", true);
            return write(Response::Error {
                message: e.to_string(),
            })
            .await;
        }
        Err(e) => {
            debug!(peer_uid = peer.uid, peer_pid = peer.pid, error = %e, "API connection dropped");
            return Ok(());
        }
    };
    if !access.allows(cred.uid(), cred.gid()) {
        warn!(
            peer_uid = peer.uid,
            peer_pid = peer.pid,
            peer_gid = cred.gid(),
            "API request refused: not root nor in daemon.api_group"
        );
        crate::metrics::live().api_request("refused", true);
        return write(Response::Error {
            message: "permission denied: the sluice API is for root and daemon.api_group"
                .to_owned(),
        })
        .await;
    }
    let call = tokio::task::spawn_blocking(move || decode(&text))
        .await
        .map_err(std::io::Error::other)?;
    let kind = call.as_ref().map_or_else(|_| "invalid".to_owned(), kind_of);
    let resp = match call {
        Err(message) => {
            // An edit the config file's rules refuse never reaches the loop: logged here.
            if message.starts_with(REJECTED) {
                info!(
                    peer_uid = peer.uid,
                    peer_pid = peer.pid,
                    reason = %message.replace('\n', "; "),
                    "edit refused through the API; nothing changed"
                );
            } else {
                debug!(peer_uid = peer.uid, peer_pid = peer.pid, error = %message, "bad API request");
            }
            Response::Error { message }
        }
        Ok(call) => {
            let (tx, rx) = oneshot::channel();
            if calls.send((call, peer, tx)).await.is_err() {
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
    crate::metrics::live().api_request(&kind, matches!(resp, Response::Error { .. }));
    write(resp).await
}

/// A decoded call's kind, as the metrics count it: its request's `op` (`apply`,
/// `status`, …), from the fixed set of requests.
fn kind_of(call: &Call) -> String {
    match call {
        Call::Apply { .. } => "apply".to_owned(),
        Call::Other(r) => serde_json::to_value(r)
            .ok()
            .and_then(|v| v.get("op")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "other".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lookups (nix's getgrnam_r/getpwuid_r) agree with `/etc/group`: gid and members
    /// of every group listed there, and an unknown group is named in the error.
    #[test]
    fn groups_and_users_are_looked_up_by_name() {
        assert_eq!(group_gid("root").unwrap().0, 0);
        assert_eq!(user_name(0).as_deref(), Some("root"));
        let e = group_gid("sluice-no-such-group").unwrap_err().to_string();
        assert_eq!(e, "no group \"sluice-no-such-group\"");
        assert!(!group_exists("sluice-no-such-group"));
        let etc = std::fs::read_to_string("/etc/group").unwrap();
        for line in etc.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&str> = line.split(':').collect();
            let [name, _, gid, members] = f[..] else {
                continue;
            };
            let members: Vec<String> = members
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect();
            assert_eq!(
                group_gid(name).unwrap(),
                (gid.parse().unwrap(), members),
                "{line}"
            );
        }
    }

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = Backoff::default();
        let pauses: Vec<u64> = (0..10).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        // A long outage never overflows and stays at the ceiling.
        for _ in 0..100 {
            assert_eq!(b.failed(), Backoff::MAX);
        }
        b.succeeded();
        assert_eq!(b.failed(), Backoff::FIRST);
    }

    const SMALL: ReadLimits = ReadLimits {
        max_bytes: 1000,
        idle: Duration::from_millis(100),
        total: Duration::from_millis(300),
    };

    #[tokio::test]
    async fn requests_are_read_within_the_limits() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(b"{\"op\":\"config\"}\nrest").await.unwrap();
        assert_eq!(
            read_request(&mut b, SMALL).await.unwrap(),
            b"{\"op\":\"config\"}"
        );

        // Too large: refused once the limit is passed, without waiting for a newline.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&[b' '; 1001]).await.unwrap();
        assert!(matches!(
            read_request(&mut b, SMALL).await,
            Err(ReadError::TooLarge)
        ));
        // Exactly at the limit with its newline: fine.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let mut line = vec![b' '; 999];
        line.push(b'\n');
        a.write_all(&line).await.unwrap();
        assert_eq!(read_request(&mut b, SMALL).await.unwrap().len(), 999);

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"{\"op\":").await.unwrap();
        drop(a);
        assert!(matches!(
            read_request(&mut b, SMALL).await,
            Err(ReadError::Closed)
        ));
    }

    #[tokio::test]
    async fn silent_and_slow_clients_are_dropped() {
        // Nothing at all: dropped after the idle time.
        let (_a, mut b) = tokio::io::duplex(64);
        assert!(matches!(
            read_request(&mut b, SMALL).await,
            Err(ReadError::Idle)
        ));
        // A byte now and then, never a whole request: dropped at the total deadline.
        let (mut a, mut b) = tokio::io::duplex(64);
        let trickle = tokio::spawn(async move {
            for _ in 0..20 {
                if a.write_all(b" ").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        assert!(matches!(
            read_request(&mut b, SMALL).await,
            Err(ReadError::Slow)
        ));
        trickle.abort();
    }
}
