//! The lab's backend server (`sluice lab backend`): answers with its name, so that a client
//! can tell which backend a connection or datagram reached.
//!
//! On every address it is given (sockets are bound in the calling thread's network
//! namespace):
//!
//! - **TCP [`TCP_PORT`]**, one thread a connection, three protocols told apart by the first
//!   bytes a client sends:
//!   - HTTP/1.x (a request line `METHOD target HTTP/1.x`): `200 OK`, body `NAME\n`
//!     (`ok\n` for `GET /health`), header `X-Backend: NAME`, `Connection: close`; the
//!     server closes after the response (no keep-alive).
//!   - `HOLD\n`: a long-lived connection. The server answers `NAME\n`, then echoes every
//!     following line as `NAME:line\n` until the client closes.
//!   - anything else (any bytes, or none and a half-close): `NAME\n`, then close. A client
//!     that writes something and reads to EOF gets the name.
//! - **UDP [`UDP_PORT`]**: every datagram is answered with `NAME:` + its payload, from the
//!   address it was sent to.
//!
//! The server closes its side with a FIN after draining what the client sent, so clients
//! never see a reset for a request they sent in several pieces. [`BackendServer::stop`]
//! closes the listeners and every open connection, as the death of a server process would.

use std::{
    collections::HashMap,
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// The TCP port the backend servers listen on (HTTP, `HOLD`, raw).
pub const TCP_PORT: u16 = 80;
/// The UDP port of the backend servers' echo.
pub const UDP_PORT: u16 = 53;

/// How long a connection may take to send enough to tell its protocol (then: raw).
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the server drains a closing connection.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest request head (request line + headers) read before answering anyway.
const MAX_HEAD: usize = 16 * 1024;
/// Most bytes drained from a closing connection.
const MAX_DRAIN: usize = 1 << 20;
/// Most connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 4096;
/// How often the UDP threads look at the stop flag.
const UDP_POLL: Duration = Duration::from_millis(100);
/// How long a bind is retried while its address is in use.
const BIND_RETRY: Duration = Duration::from_secs(2);
/// Connection threads need little stack.
const STACK: usize = 128 * 1024;

/// HTTP methods recognised in a request line.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

/// A running backend server; stopped (listeners and connections closed) by
/// [`BackendServer::stop`] or on drop.
#[derive(Debug)]
pub struct BackendServer {
    name: Arc<str>,
    addrs: Vec<IpAddr>,
    shared: Arc<Shared>,
    listeners: Vec<Arc<TcpListener>>,
    udp_addrs: Vec<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    next_id: AtomicU64,
    /// Open connections (clones), so that `stop` can close them.
    conns: Mutex<HashMap<u64, TcpStream>>,
}

impl BackendServer {
    /// Bind TCP [`TCP_PORT`] and UDP [`UDP_PORT`] on every address in `addrs` (in the
    /// calling thread's network namespace) and serve them from background threads.
    pub fn start(name: &str, addrs: &[IpAddr]) -> io::Result<Self> {
        Self::start_on(name, addrs, TCP_PORT, UDP_PORT)
    }

    /// [`BackendServer::start`] on other ports (0: any free port).
    pub fn start_on(
        name: &str,
        addrs: &[IpAddr],
        tcp_port: u16,
        udp_port: u16,
    ) -> io::Result<Self> {
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no address to listen on",
            ));
        }
        let with = |addr: IpAddr, port: u16, what: &'static str| {
            move |e: io::Error| {
                io::Error::new(
                    e.kind(),
                    format!("{what} {}: {e}", SocketAddr::new(addr, port)),
                )
            }
        };
        // Bind everything before serving anything: once the last TCP listener accepts, the
        // whole server is ready.
        let mut udp = Vec::new();
        for &a in addrs {
            let sock = bind_retrying(|| UdpSocket::bind((a, udp_port)));
            udp.push(sock.map_err(with(a, udp_port, "binding udp"))?);
        }
        let mut listeners = Vec::new();
        for &a in addrs {
            let listener = bind_retrying(|| TcpListener::bind((a, tcp_port))).map_err(with(
                a,
                tcp_port,
                "binding tcp",
            ))?;
            listeners.push(Arc::new(listener));
        }
        let mut server = Self {
            name: Arc::from(name),
            addrs: addrs.to_vec(),
            shared: Arc::default(),
            listeners: listeners.clone(),
            udp_addrs: udp.iter().filter_map(|u| u.local_addr().ok()).collect(),
            threads: Vec::new(),
        };
        for sock in udp {
            sock.set_read_timeout(Some(UDP_POLL))?;
            let (name, shared) = (server.name.clone(), server.shared.clone());
            server
                .threads
                .push(spawn("udp", move || serve_udp(&sock, &name, &shared))?);
        }
        for l in listeners {
            let (name, shared) = (server.name.clone(), server.shared.clone());
            server
                .threads
                .push(spawn("accept", move || accept(&l, &name, &shared))?);
        }
        Ok(server)
    }

    /// The name it answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The addresses it listens on.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    /// The local TCP addresses (with the ports actually bound).
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The local UDP addresses (with the ports actually bound).
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp_addrs.clone()
    }

    /// Connections being served now.
    pub fn connections(&self) -> usize {
        self.shared.conns.lock().map_or(0, |c| c.len())
    }

    /// Serve until the process is killed.
    pub fn wait(self) -> ! {
        loop {
            std::thread::park();
        }
    }

    /// Close the listeners and every open connection, and wait for the serving threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        close_all(
            &self.shared.stop,
            &mut self.listeners,
            &self.shared.conns,
            &mut self.threads,
        );
    }
}

/// Stop a server (once: `stop` says whether it was stopped already): wake its accept
/// loops, close every open connection, wait for its threads, drop its listeners. Shared by
/// the lab's servers ([`BackendServer`], the LLM-like backend).
pub(crate) fn close_all(
    stop: &AtomicBool,
    listeners: &mut Vec<Arc<TcpListener>>,
    conns: &Mutex<HashMap<u64, TcpStream>>,
    threads: &mut Vec<JoinHandle<()>>,
) {
    if stop.swap(true, Ordering::SeqCst) {
        return;
    }
    for l in listeners.iter() {
        // shutdown(2) on a listening socket wakes a blocked accept(2) (EINVAL); an error
        // means it is not listening any more, which is what we want.
        let _ = nix::sys::socket::shutdown(l.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }
    if let Ok(mut conns) = conns.lock() {
        for (_, c) in conns.drain() {
            // Already closed by the peer: nothing to do.
            let _ = c.shutdown(Shutdown::Both);
        }
    }
    for t in threads.drain(..) {
        // A serving thread that panicked has nothing left to clean up.
        let _ = t.join();
    }
    // The listeners close when the last Arc (ours) goes.
    listeners.clear();
}

impl Drop for BackendServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Bind, retrying for a while if the address is in use: right after a server of this
/// process stopped, a child that another thread forked (and has not yet exec'd) may still
/// hold its sockets.
fn bind_retrying<T>(bind: impl Fn() -> io::Result<T>) -> io::Result<T> {
    let start = Instant::now();
    loop {
        match bind() {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && start.elapsed() < BIND_RETRY => {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

fn spawn(what: &str, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("lab-{what}"))
        .stack_size(STACK)
        .spawn(f)
}

fn serve_udp(sock: &UdpSocket, name: &str, shared: &Shared) {
    let mut buf = vec![0u8; 65536];
    let mut reply = Vec::with_capacity(65536 + name.len() + 1);
    while !shared.stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                reply.clear();
                reply.extend_from_slice(name.as_bytes());
                reply.push(b':');
                reply.extend_from_slice(&buf[..n]);
                let _ = sock.send_to(&reply, from);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "udp receive");
                std::thread::sleep(UDP_POLL);
            }
        }
    }
}

fn accept(listener: &TcpListener, name: &Arc<str>, shared: &Arc<Shared>) {
    loop {
        let conn = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match conn {
            Ok((s, _)) => s,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::warn!(error = %e, "tcp accept");
                    std::thread::sleep(UDP_POLL);
                }
                continue;
            }
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let Ok(mut conns) = shared.conns.lock() else {
                return;
            };
            // Registered under the lock that `stop` drains, so no connection escapes it.
            if shared.stop.load(Ordering::SeqCst) || conns.len() >= MAX_CONNECTIONS {
                continue;
            }
            match stream.try_clone() {
                Ok(c) => conns.insert(id, c),
                Err(_) => continue,
            };
        }
        let (name, shared2) = (name.clone(), shared.clone());
        let spawned = spawn("conn", move || {
            let _ = serve_tcp(stream, &name);
            if let Ok(mut conns) = shared2.conns.lock() {
                conns.remove(&id);
            }
        });
        if spawned.is_err()
            && let Ok(mut conns) = shared.conns.lock()
            && let Some(c) = conns.remove(&id)
        {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// What the first bytes of a connection say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Not enough bytes yet.
    Undecided,
    Http,
    Hold,
    Raw,
}

fn classify(buf: &[u8]) -> Kind {
    if buf.is_empty() {
        return Kind::Undecided;
    }
    let line_end = buf.iter().position(|&b| b == b'\n');
    let line = &buf[..line_end.unwrap_or(buf.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let complete = line_end.is_some();
    if complete && line == b"HOLD" {
        return Kind::Hold;
    }
    let word_end = line.iter().position(|&b| b == b' ');
    let word = &line[..word_end.unwrap_or(line.len())];
    let is_method = METHODS.iter().any(|m| m.as_bytes() == word);
    if complete {
        let http = is_method
            && line
                .rsplit(|&b| b == b' ')
                .next()
                .is_some_and(|v| v.starts_with(b"HTTP/"));
        return if http { Kind::Http } else { Kind::Raw };
    }
    // An incomplete first line: wait while it can still become HOLD or a request line.
    let could_be =
        |w: &[u8]| b"HOLD".starts_with(w) || METHODS.iter().any(|m| m.as_bytes().starts_with(w));
    let undecided = match word_end {
        None => !line.is_empty() && could_be(line),
        Some(_) => is_method,
    };
    if undecided && buf.len() < MAX_HEAD {
        Kind::Undecided
    } else {
        Kind::Raw
    }
}

fn serve_tcp(mut s: TcpStream, name: &str) -> io::Result<()> {
    s.set_read_timeout(Some(FIRST_BYTES_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut eof = false;
    let mut kind = Kind::Undecided;
    while kind == Kind::Undecided {
        match s.read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                eof = true; // silent client: treat as a raw request
            }
            Err(e) => return Err(e),
        }
        kind = match classify(&buf) {
            Kind::Undecided if eof => Kind::Raw,
            k => k,
        };
    }
    match kind {
        Kind::Hold => hold(s, name, &buf),
        Kind::Http => {
            // The rest of the head (bounded in size and time).
            while !eof && !head_complete(&buf) && buf.len() < MAX_HEAD {
                match s.read(&mut chunk) {
                    Ok(0) => eof = true,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => eof = true,
                }
            }
            let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
            let mut parts = line.split(|&b| b == b' ');
            let method = parts.next().unwrap_or_default();
            let target = parts.next().unwrap_or_default();
            let body = if target == b"/health" {
                "ok\n".to_owned()
            } else {
                format!("{name}\n")
            };
            let mut response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 X-Backend: {name}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if method != b"HEAD" {
                response.push_str(&body);
            }
            s.write_all(response.as_bytes())?;
            close(s, eof)
        }
        Kind::Raw | Kind::Undecided => {
            s.write_all(format!("{name}\n").as_bytes())?;
            close(s, eof)
        }
    }
}

fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

/// Half-close, then read what the client still sends (bounded) so that closing does not
/// reset the connection under a response the client has not read yet.
fn close(mut s: TcpStream, eof: bool) -> io::Result<()> {
    s.shutdown(Shutdown::Write)?;
    if !eof {
        s.set_read_timeout(Some(DRAIN_TIMEOUT))?;
        let mut chunk = [0u8; 4096];
        let mut drained = 0;
        while drained < MAX_DRAIN {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
    Ok(())
}

/// `HOLD`: answer the name, then echo every line with the name in front until EOF.
fn hold(s: TcpStream, name: &str, first: &[u8]) -> io::Result<()> {
    s.set_read_timeout(None)?;
    let mut w = &s;
    w.write_all(format!("{name}\n").as_bytes())?;
    let rest = first
        .iter()
        .position(|&b| b == b'\n')
        .map_or(&[][..], |i| &first[i + 1..]);
    let mut reader = BufReader::new(rest.chain(&s));
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let mut out = Vec::with_capacity(name.len() + 1 + line.len() + 1);
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&line);
        if !line.ends_with(b"\n") {
            out.push(b'\n');
        }
        w.write_all(&out)?;
    }
    s.shutdown(Shutdown::Write)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b""), Kind::Undecided);
        assert_eq!(classify(b"HO"), Kind::Undecided);
        assert_eq!(classify(b"HOLD\n"), Kind::Hold);
        assert_eq!(classify(b"HOLD\r\nabc\n"), Kind::Hold);
        assert_eq!(classify(b"GET / HT"), Kind::Undecided);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Kind::Http);
        assert_eq!(classify(b"hi"), Kind::Raw);
        assert_eq!(classify(b"hello 1"), Kind::Raw);
        assert_eq!(classify(b"GET something\n"), Kind::Raw);
        assert_eq!(classify(b"HOLDING\n"), Kind::Raw);
    }

    fn exchange(addr: SocketAddr, send: &[u8], half_close: bool) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(send).expect("write");
        if half_close {
            s.shutdown(Shutdown::Write).expect("shutdown");
        }
        let mut got = String::new();
        s.read_to_string(&mut got).expect("read");
        got
    }

    #[test]
    fn answers_raw_http_hold_and_udp_then_stops() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let server = BackendServer::start_on("be-x", &[lo], 0, 0).expect("start");
        let addr = server.tcp_addrs()[0];
        assert_eq!(exchange(addr, b"hi", false), "be-x\n");
        assert_eq!(exchange(addr, b"", true), "be-x\n");
        let http = exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false);
        assert!(http.starts_with("HTTP/1.1 200 OK\r\n"), "{http}");
        assert!(http.ends_with("\r\n\r\nbe-x\n"), "{http}");
        let health = exchange(addr, b"GET /health HTTP/1.0\r\n\r\n", false);
        assert!(health.ends_with("\r\n\r\nok\n"), "{health}");
        // The server forgets a finished connection only when its thread sees the client's
        // close, which can come after `exchange` returned: wait for every one to be gone,
        // so that the count below is exactly the HOLD connection.
        let t0 = Instant::now();
        while server.connections() != 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "{} finished connections still served after 5 s",
                server.connections()
            );
            std::thread::sleep(Duration::from_millis(5));
        }

        // HOLD: long-lived, line by line, closed by the server's stop.
        let mut h = TcpStream::connect(addr).expect("connect");
        h.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        h.write_all(b"HOLD\n").expect("write");
        let mut r = BufReader::new(h.try_clone().expect("clone"));
        let mut line = String::new();
        r.read_line(&mut line).expect("read");
        assert_eq!(line, "be-x\n");
        for i in 0..3 {
            h.write_all(format!("ping {i}\n").as_bytes())
                .expect("write");
            line.clear();
            r.read_line(&mut line).expect("read");
            assert_eq!(line, format!("be-x:ping {i}\n"));
        }
        assert_eq!(server.connections(), 1);

        server.stop();
        line.clear();
        assert_eq!(r.read_line(&mut line).expect("eof after stop"), 0);
        assert!(TcpStream::connect(addr).is_err(), "listener still open");
    }

    #[test]
    fn udp_echo() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let server = BackendServer::start_on("be-u", &[lo], 0, 0).expect("start");
        let c = UdpSocket::bind((lo, 0)).expect("bind");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.connect(server.udp_addrs()[0]).expect("connect");
        c.send(b"abc").expect("send");
        let mut buf = [0u8; 64];
        let n = c.recv(&mut buf).expect("reply");
        assert_eq!(&buf[..n], b"be-u:abc");
        server.stop();
    }
}
