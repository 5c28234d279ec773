//! The real daemon (`daemon::start` + `daemon::serve`) run in-process on its own thread,
//! inside the lab's load-balancer namespace: used by `sluice demo` and the end-to-end tests.
//! It pins in the lab's own pin directory ([`super::lab_pin_dir`]; interfaces in different
//! labs share the name eth0) unless the config names one, and by default removes it all
//! when it stops ([`Daemon::start_keeping`] leaves it, as `sluice run` does).

use std::{
    net::IpAddr,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

use super::{Lab, LabError, netns::Netns};
use crate::{
    config::Config,
    daemon::{self, Edit, EditRequest, OnExit},
    health::Health,
    state::{self, State, Status},
};

/// A daemon serving the lab until dropped.
#[derive(Debug)]
pub struct Daemon {
    edits: mpsc::Sender<EditRequest>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<Result<(), String>>>,
    state_dir: PathBuf,
}

fn err(message: impl Into<String>) -> LabError {
    LabError::Invalid(message.into())
}

impl Daemon {
    /// Start serving `config` (attach, publish, health checks); returns once attached.
    /// Everything is detached and unpinned when it stops.
    pub fn start(lab: &Lab, config: Config) -> Result<Self, LabError> {
        Self::start_with(lab, config, OnExit::Remove)
    }

    /// [`Daemon::start`], but leaving the balancer attached and pinned when it stops, for
    /// the next daemon to adopt (restart tests); [`super::Lab::down`] removes it.
    pub fn start_keeping(lab: &Lab, config: Config) -> Result<Self, LabError> {
        Self::start_with(lab, config, OnExit::Keep)
    }

    fn start_with(lab: &Lab, mut config: Config, on_exit: OnExit) -> Result<Self, LabError> {
        if config.daemon.pin_dir.is_none() {
            config.daemon.pin_dir = Some(super::lab_pin_dir(lab.prefix()));
        }
        Self::start_in(lab.lb().netns().clone(), config, on_exit)
    }

    /// Start serving `config` inside namespace `ns` (a fleet lab's balancer): as
    /// [`Daemon::start`], but the config names its pin directory.
    pub fn start_on(ns: &Netns, config: Config) -> Result<Self, LabError> {
        if config.daemon.pin_dir.is_none() {
            return Err(err(
                "a daemon on a namespace of its own needs daemon.pin_dir",
            ));
        }
        Self::start_in(ns.clone(), config, OnExit::Remove)
    }

    fn start_in(lb: Netns, config: Config, on_exit: OnExit) -> Result<Self, LabError> {
        let (edits, edit_rx) = mpsc::channel(8);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let state_dir = config.daemon.state_dir.clone();
        let api_socket = config.daemon.api_socket.clone();
        let thread = thread::spawn(move || {
            lb.run(|| -> Result<(), String> {
                // The runtime's threads are created here, inside the LB namespace.
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                let mut state = State::new(config);
                let dp = match daemon::start(&mut state, on_exit) {
                    Ok(dp) => dp,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return Err(e.to_string());
                    }
                };
                let _ = ready_tx.send(Ok(()));
                rt.block_on(daemon::serve(state, dp, edit_rx, async {
                    let _ = stop_rx.await;
                }))
                // The cause chain, as before (anyhow's alternate form).
                .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
            })
            .map_err(|e| e.to_string())?
        });
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(err(format!("the daemon did not start: {e}"))),
            Err(_) => return Err(err("the daemon did not start within 30 s")),
        }
        // The API socket is bound before the attach; requests wait in its backlog until
        // serving starts, right after it.
        let t0 = Instant::now();
        while !api_socket.exists() && t0.elapsed() < Duration::from_secs(10) {
            if thread.is_finished() {
                let why = thread
                    .join()
                    .map_or_else(|_| "panicked".to_owned(), |r| format!("{r:?}"));
                return Err(err(format!(
                    "the daemon stopped right after starting: {why}"
                )));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(Self {
            edits,
            stop: Some(stop),
            thread: Some(thread),
            state_dir,
        })
    }

    /// Apply an edit; the daemon's answer.
    pub fn edit(&self, edit: Edit) -> Result<String, LabError> {
        let (tx, rx) = oneshot::channel();
        self.edits
            .blocking_send((edit, tx))
            .map_err(|_| err("the daemon is gone"))?;
        rx.blocking_recv()
            .map_err(|_| err("the daemon did not answer"))?
            .map_err(err)
    }

    /// The daemon's status file.
    pub fn status(&self) -> Option<Status> {
        state::read_status(&self.state_dir).ok()
    }

    /// The health of `backend` under the VIP named `vip`, and the last check's outcome.
    pub fn health(&self, vip: &str, backend: IpAddr) -> Option<(Health, String)> {
        let s = self.status()?;
        let v = s.vips.iter().find(|v| v.name == vip)?;
        let b = v.backends.iter().find(|b| b.address == backend)?;
        Some((b.health, b.reason.clone()))
    }

    /// Wait (at most `within`) until `backend` has `want`; how long it took.
    pub fn wait_health(
        &self,
        vip: &str,
        backend: IpAddr,
        want: Health,
        within: Duration,
    ) -> Result<Duration, LabError> {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if self.health(vip, backend).is_some_and(|(h, _)| h == want) {
                return Ok(t0.elapsed());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err(err(format!(
            "{backend} not {want:?} within {within:?}: {:?}",
            self.health(vip, backend)
        )))
    }

    /// Stop serving (detach) and wait for it.
    pub fn stop(mut self) -> Result<(), LabError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), LabError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take().map(thread::JoinHandle::join) {
            Some(Ok(Err(e))) => Err(err(format!("the daemon failed: {e}"))),
            Some(Err(_)) => Err(err("the daemon thread panicked")),
            _ => Ok(()),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
