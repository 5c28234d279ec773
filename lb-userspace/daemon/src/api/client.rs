//! The API client the CLI uses.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use super::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the daemon at {path}: {error} (is `sluice run` running? is this its \
         daemon.api_socket? point at it with --api-socket, SLUICE_API_SOCKET or --config FILE)"
    )]
    Connect {
        path: String,
        // Not `source`: the message says it once (`{:#}` would repeat a source).
        error: std::io::Error,
    },
    /// The kernel refused the socket to this user (EACCES/EPERM).
    #[error("cannot reach the daemon: {0}")]
    Denied(String),
    #[error("talking to the daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon's answer is not understood: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("{0}")]
    Daemon(String),
}

/// Send one request; the daemon's response (an `Error` response becomes `Err`).
pub fn request(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    // Encoded before connecting: the daemon drops a connection that stays silent for its
    // idle timeout.
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    let mut s = UnixStream::connect(socket).map_err(|source| {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            ClientError::Denied(super::denied::advice(socket))
        } else {
            ClientError::Connect {
                path: socket.display().to_string(),
                error: source,
            }
        }
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    // The daemon may answer before reading everything (a request over its size limit, a
    // full connection table) and close: its answer says why, better than a broken pipe.
    let sent = s.write_all(&line);
    let mut answer = String::new();
    let read = BufReader::new(s).read_line(&mut answer);
    if answer.is_empty() {
        sent?;
        read?;
    }
    match serde_json::from_str(&answer)? {
        Response::Error { message } => Err(ClientError::Daemon(message)),
        r => Ok(r),
    }
}
