//! The service manager's readiness protocol (`sd_notify(3)`), for `Type=notify` units: a
//! datagram of `KEY=VALUE` lines sent to the Unix socket `$NOTIFY_SOCKET` names (a path, or
//! `@name` for the abstract namespace). Without `$NOTIFY_SOCKET` (not started by systemd)
//! nothing is sent. A dozen lines of std rather than a crate: nothing else is needed.
//!
//! `sluice run` sends `READY=1` once the balancer is attached and the API socket listens,
//! `RELOADING=1` … `READY=1` around a SIGHUP reload, and `STOPPING=1` when it stops.

use std::{
    ffi::OsStr,
    io,
    os::unix::{
        ffi::OsStrExt as _,
        net::{SocketAddr, UnixDatagram},
    },
};

/// The environment variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where `$NOTIFY_SOCKET` points: a filesystem path, or (a leading `@`) an abstract name.
fn address(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.split_first() {
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name)
        }
        Some((b'/', _)) => SocketAddr::from_pathname(socket),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{NOTIFY_SOCKET}={socket:?}: neither an absolute path nor @abstract"),
        )),
    }
}

/// Send `state` (newline-separated `KEY=VALUE` assignments) to `socket`.
pub fn send_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let addr = address(socket)?;
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent == state.len() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "sent {sent} of {} bytes",
            state.len()
        )))
    }
}

/// Send `state` to the service manager if there is one (`$NOTIFY_SOCKET` set): `Ok(true)`
/// when sent, `Ok(false)` when not running under one.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(s) if !s.is_empty() => send_to(&s, state).map(|()| true),
        _ => Ok(false),
    }
}

/// [`notify`], a failure logged (the daemon works on without it; systemd will time the
/// start out and say so).
pub fn notify_or_warn(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state, "cannot notify the service manager ($NOTIFY_SOCKET)");
    }
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd ≥ 253 asks for (`Type=notify-reload`;
/// older ones ignore it).
pub fn reloading_message() -> String {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000
        })
        .unwrap_or(0);
    format!("RELOADING=1\nMONOTONIC_USEC={now}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let n = sock.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path() {
        let dir = std::env::temp_dir().join(format!("sluice-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).expect("bind");
        send_to(path.as_os_str(), "READY=1").expect("sent");
        assert_eq!(receive(&sock), "READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sends_to_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("sluice-notify-test-{}", std::process::id());
        let sock = UnixDatagram::bind_addr(
            &SocketAddr::from_abstract_name(name.as_bytes()).expect("addr"),
        )
        .expect("bind");
        send_to(OsStr::new(&format!("@{name}")), "STOPPING=1").expect("sent");
        assert_eq!(receive(&sock), "STOPPING=1");
    }

    #[test]
    fn refuses_a_relative_path_and_reports_a_missing_socket() {
        assert!(send_to(OsStr::new("relative.sock"), "READY=1").is_err());
        assert!(send_to(OsStr::new(""), "READY=1").is_err());
        assert!(send_to(OsStr::new("/nonexistent/sluice-notify.sock"), "READY=1").is_err());
        let m = reloading_message();
        assert!(m.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{m}");
    }
}
