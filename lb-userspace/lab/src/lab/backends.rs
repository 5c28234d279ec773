//! The backend servers the lab runs (threads or `sluice lab backend` processes), and the
//! operations that change the pool under a running daemon (kill, break, repair).

use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use super::{
    Lab, LabError, Node, SERVER_READY, Servers, TCP_PORT, VIP4, VIP6, lab_dir,
    server::BackendServer,
};

/// A backend server the lab runs.
#[derive(Debug)]
pub(super) enum Running {
    InProcess(BackendServer),
    Process(Child),
}

impl Lab {
    /// Start backend `i`'s server (per [`LabSpec::servers`](super::LabSpec::servers);
    /// nothing for [`Servers::None`]) and wait until it listens. Fails if it runs already.
    pub fn start_backend_server(&self, i: usize) -> Result<(), LabError> {
        let b = self.backend_checked(i)?;
        let mut servers = self.servers();
        if servers[i].is_some() {
            return Err(LabError::Server {
                name: b.name(),
                message: "already running".into(),
            });
        }
        let addrs = [b.addr4.into(), b.addr6.into(), VIP4.into(), VIP6.into()];
        servers[i] = spawn_server(&self.spec.servers, b, &addrs, self.prefix())?;
        Ok(())
    }

    /// The pid of backend `i`'s server process ([`Servers::Process`] only).
    pub fn backend_server_pid(&self, i: usize) -> Option<u32> {
        match self.servers().get(i)? {
            Some(Running::Process(c)) => Some(c.id()),
            _ => None,
        }
    }

    /// Stop backend `i`'s server as a crash would: listeners and open connections closed
    /// (a process gets SIGKILL). Nothing to do if it is not running.
    pub fn kill_backend_server(&self, i: usize) -> Result<(), LabError> {
        self.backend_checked(i)?;
        let running = self.servers()[i].take();
        stop(running);
        Ok(())
    }

    /// Misconfigure backend `i`: remove the VIPs from its `lo`, so it drops VIP traffic
    /// (its own addresses still answer, e.g. health checks).
    pub fn break_backend(&self, i: usize) -> Result<(), LabError> {
        let b = self.backend_checked(i)?;
        b.ns.ip(&[
            &["addr", "del", &format!("{VIP4}/32"), "dev", "lo"],
            &["addr", "del", &format!("{VIP6}/128"), "dev", "lo"],
        ])
    }

    /// Undo [`Lab::break_backend`].
    pub fn repair_backend(&self, i: usize) -> Result<(), LabError> {
        let b = self.backend_checked(i)?;
        b.ns.ip(&[
            &["addr", "replace", &format!("{VIP4}/32"), "dev", "lo"],
            &["addr", "replace", &format!("{VIP6}/128"), "dev", "lo"],
        ])
    }
}

/// Start `b`'s server on `addrs` as `servers` says, and wait until it listens.
pub(super) fn spawn_server(
    servers: &Servers,
    b: &Node,
    addrs: &[IpAddr],
    prefix: &str,
) -> Result<Option<Running>, LabError> {
    let server_err = |message: String| LabError::Server {
        name: b.name(),
        message,
    };
    Ok(match servers {
        Servers::None => None,
        Servers::InProcess => Some(Running::InProcess(
            b.run(|| BackendServer::start(&b.name(), addrs))?
                .map_err(|e| server_err(e.to_string()))?,
        )),
        Servers::Process(exe) => {
            let dir = lab_dir(prefix);
            let io = |what: String| move |source| LabError::Io { what, source };
            std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
            let log_path = dir.join(format!("{}.log", b.name()));
            let log = std::fs::File::options()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(io(format!("opening {}", log_path.display())))?;
            let log2 = log
                .try_clone()
                .map_err(io(format!("opening {}", log_path.display())))?;
            let mut cmd = std::process::Command::new(exe);
            cmd.args(["--netns", b.ns(), "lab", "backend", "--name", &b.name()]);
            for a in addrs {
                cmd.arg("--addr").arg(a.to_string());
            }
            use std::os::unix::process::CommandExt as _;
            cmd.process_group(0)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2);
            let mut child = cmd
                .spawn()
                .map_err(|e| server_err(format!("starting {}: {e}", exe.display())))?;
            if let Err(e) = wait_listening(b, addrs, &mut child) {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(server_err(format!("{e}; its log: {}", log.trim())));
            }
            Some(Running::Process(child))
        }
    })
}

pub(super) fn stop(running: Option<Running>) {
    match running {
        None => {}
        Some(Running::InProcess(s)) => s.stop(),
        Some(Running::Process(mut c)) => {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Wait (bounded) until the server process listens on TCP at every one of `addrs`.
fn wait_listening(b: &Node, addrs: &[IpAddr], child: &mut Child) -> Result<(), String> {
    let start = Instant::now();
    let targets: Vec<SocketAddr> = addrs.iter().map(|a| (*a, TCP_PORT).into()).collect();
    let mut pending: &[SocketAddr] = &targets;
    while let Some(t) = pending.first() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited ({status})"));
        }
        let up = b
            .run(|| TcpStream::connect_timeout(t, Duration::from_millis(200)))
            .map_err(|e| e.to_string())?
            .is_ok();
        if up {
            pending = &pending[1..];
            continue;
        }
        if start.elapsed() > SERVER_READY {
            return Err(format!("not listening on {t} after {SERVER_READY:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
