//! Real TCP connections to a lab VIP (tests, the fleet demo), speaking the lab servers' `HOLD` protocol: the server
//! names itself, then echoes every line prefixed with its name, so a test knows which
//! backend holds each connection and sees at once if a connection moved or was reset.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use crate::lab::Node;
use anyhow::{Context as _, ensure};

/// How long a connect or a read may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Connect from `node` to `to`, send `send`, half-close, read to EOF.
pub fn ask(node: &Node, to: SocketAddr, send: &[u8]) -> anyhow::Result<String> {
    let mut s = node
        .run(|| TcpStream::connect_timeout(&to, TIMEOUT))?
        .with_context(|| format!("connecting from {} to {to}", node.name()))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.write_all(send)?;
    s.shutdown(Shutdown::Write)?;
    let mut got = String::new();
    s.read_to_string(&mut got)
        .with_context(|| format!("reading from {to}"))?;
    Ok(got)
}

/// One UDP exchange from `node` with `to`.
pub fn udp(node: &Node, to: SocketAddr, send: &[u8]) -> anyhow::Result<String> {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let s = node.run(|| UdpSocket::bind(any))??;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.connect(to)?;
    s.send(send)?;
    let mut buf = [0u8; 512];
    let n = s
        .recv(&mut buf)
        .with_context(|| format!("udp reply from {to}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A long-lived connection to a VIP through the `HOLD` protocol: the server names itself,
/// then echoes every line prefixed with its name.
pub struct Held {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    pub backend: String,
}

impl Held {
    pub fn open(client: &Node, to: SocketAddr) -> anyhow::Result<Self> {
        let mut stream = client
            .run(|| TcpStream::connect_timeout(&to, TIMEOUT))?
            .with_context(|| format!("connecting to {to}"))?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.write_all(b"HOLD\n")?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut name = String::new();
        reader.read_line(&mut name)?;
        ensure!(name.ends_with('\n'), "no name from {to}: {name:?}");
        Ok(Self {
            stream,
            reader,
            backend: name.trim().to_owned(),
        })
    }

    /// Send a line; the echo must come from the same backend.
    pub fn echo(&mut self, line: &str) -> anyhow::Result<()> {
        self.stream.write_all(format!("{line}\n").as_bytes())?;
        let mut got = String::new();
        self.reader
            .read_line(&mut got)
            .with_context(|| format!("echo of {line:?} from {}", self.backend))?;
        ensure!(
            got == format!("{}:{line}\n", self.backend),
            "{} answered {got:?} to {line:?}",
            self.backend
        );
        Ok(())
    }
}

/// `n` long-lived connections to `to`, left open.
pub fn connections_held(client: &Node, to: SocketAddr, n: usize) -> anyhow::Result<Vec<Held>> {
    (0..n)
        .map(|i| Held::open(client, to).with_context(|| format!("held connection {i}")))
        .collect()
}

/// `n` connections, each checked for consistency over 2 echoed lines; answers per backend.
pub fn connections(
    client: &Node,
    to: SocketAddr,
    n: usize,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let mut c = Held::open(client, to).with_context(|| format!("connection {i}"))?;
        c.echo(&format!("a{i}"))?;
        c.echo(&format!("b{i}"))?;
        *counts.entry(c.backend.clone()).or_insert(0) += 1;
    }
    Ok(counts)
}

impl Held {
    /// Close cleanly: half-close, then the server's FIN must arrive (EOF). A reset, or
    /// data from anyone, is an error.
    pub fn close(mut self) -> anyhow::Result<()> {
        self.stream.shutdown(Shutdown::Write)?;
        let mut rest = String::new();
        let n = self
            .reader
            .read_line(&mut rest)
            .with_context(|| format!("closing a connection to {}", self.backend))?;
        ensure!(n == 0, "{} sent {rest:?} instead of closing", self.backend);
        Ok(())
    }
}

/// One echo on every held connection (`{phase}-{i}`): each must answer, from its backend.
pub fn echo_all(held: &mut [Held], phase: &str) -> anyhow::Result<()> {
    for (i, c) in held.iter_mut().enumerate() {
        c.echo(&format!("{phase}-{i}"))
            .with_context(|| format!("held connection {i} ({phase})"))?;
    }
    Ok(())
}

/// How many held connections each backend (by name) holds.
pub fn per_backend(held: &[Held]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for h in held {
        *m.entry(h.backend.clone()).or_insert(0) += 1;
    }
    m
}

/// One echo on every held connection, all at once (a thread each); per connection, how long
/// it took or why it failed (a reset, a timeout, another backend answering).
pub fn echo_parallel(held: &mut [Held], phase: &str) -> Vec<Result<Duration, String>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = held
            .iter_mut()
            .enumerate()
            .map(|(i, c)| {
                s.spawn(move || {
                    let t0 = std::time::Instant::now();
                    c.echo(&format!("{phase}-{i}"))
                        .map(|()| t0.elapsed())
                        .map_err(|e| format!("{e:#}"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
            .collect()
    })
}
