//! An HAProxy agent-check server for a lab backend (`[vip.load] source = "agent"`): a TCP
//! listener in the backend's namespace that answers every connection with its current
//! line (`ready`, `drain`, `75%`, ...) and closes it. The answer can change at any time;
//! the server stops (and its socket closes) when the [`Agent`] drops, also on failure.

use std::{
    io::Write as _,
    net::{SocketAddr, TcpListener},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::Context as _;
use sluice_lab::lab::Node;

/// How often the stopped flag is looked at while no agent check connects.
const POLL: Duration = Duration::from_millis(10);

pub struct Agent {
    line: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Agent {
    /// Serve `line` on `port` of `node`'s IPv4 address, from inside its namespace.
    pub fn start(node: &Node, port: u16, line: &str) -> anyhow::Result<Self> {
        let addr = SocketAddr::from((node.addr4(), port));
        let listener = node
            .run(|| TcpListener::bind(addr))
            .context("entering the backend's namespace")?
            .with_context(|| format!("binding the agent's port {addr}"))?;
        listener.set_nonblocking(true)?;
        let line = Arc::new(Mutex::new(line.to_owned()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (line, stop) = (Arc::clone(&line), Arc::clone(&stop));
            thread::spawn(move || serve(&listener, &line, &stop))
        };
        Ok(Self {
            line,
            stop,
            thread: Some(thread),
            addr,
        })
    }

    /// Answer `line` from the next agent check on.
    pub fn say(&self, line: &str) {
        *self.line.lock().unwrap_or_else(PoisonError::into_inner) = line.to_owned();
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn serve(listener: &TcpListener, line: &Mutex<String>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut s, _)) => {
                let answer = format!("{}\n", line.lock().unwrap_or_else(PoisonError::into_inner));
                // A check that went away is no concern of the agent's.
                let _ = s.set_nonblocking(false);
                let _ = s.write_all(answer.as_bytes());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // A panic in the server thread has already been reported by the test's
            // failure; nothing to add when dropping.
            let _ = t.join();
        }
    }
}
