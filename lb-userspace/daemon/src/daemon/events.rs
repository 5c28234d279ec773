//! The daemon's loop ([`super::serve`]): a [`Daemon`] owns the running state and answers
//! one event at a time, one method per event. Every change of the configuration, whoever
//! made it (API, edit, drained-backend removal, autoscaler), is [`commit`](super::commit)ted
//! and then followed by [`Daemon::after_commit`], the one place for what a new
//! configuration needs beyond the maps.
//!
//! The data plane's lock is held only while the maps are read or written (it is shared
//! with the conntrack sweeper and the path prober's injections); files, the neighbour
//! table and the metrics snapshot are handled after it is released.

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    sync::{Notify, mpsc, oneshot, watch},
    task::JoinHandle,
    time::{Interval, MissedTickBehavior},
};
use tracing::{info, warn};

use super::{
    Checkers, DaemonError, EditRequest, LIFECYCLE_TICK, NEIGH_REFRESH, STATUS_REFRESH, Started,
    SweeperTask, apply_edit, commit_config, lock, requests::handle_api, revalidate, spawn_sweeper,
};
use crate::{
    announce::{self, Announcer},
    api::{
        self, Response,
        server::{ApiCall, Call, Peer},
    },
    autoscale,
    config::{OnDown, VipConfig},
    dataplane::{Dataplane, iface, neigh, nexthop},
    health::{self, Health, PathProber},
    lifecycle, load, metrics,
    state::{self, Snapshot as _, State},
};

/// The running daemon: the state, the data plane, and what follows them.
pub(super) struct Daemon {
    pub(super) state: State,
    pub(super) dp: Arc<Mutex<Dataplane>>,
    checkers: Checkers,
    status_file: state::StatusFile,
    /// The backends the kernel must resolve for `bpf_fib_lookup` (no configured MAC),
    /// primed every [`NEIGH_REFRESH`] and after every commit.
    fib_backends: Vec<IpAddr>,
    /// Whether a slow start was ramping at the last lifecycle tick.
    was_ramping: bool,
    /// Bumped by the events that may change the status but neither the counters nor the
    /// version ([`state::StatusInputs`]), and the inputs of the last snapshot with when it
    /// was made.
    status_generation: u64,
    status_inputs: Option<(state::StatusInputs, std::time::Instant)>,
    metrics: watch::Sender<metrics::Snapshot>,
    scale_report: autoscale::driver::Report,
    /// The VIP routes (`[daemon.announce]`).
    announcer: Announcer,
    /// The backends' load reports (`[vip.load]`): the readers and their readings.
    pub(super) loads: load::Readers,
    /// The load policy of each load-driven VIP.
    pub(super) policies: super::load_weights::Policies,
    /// Reports link, neighbour and route changes (`Inputs::hops`); `None` if it could not
    /// subscribe (next hops then follow only publishes and `FIB_FALLBACKS`).
    _hop_watcher: Option<nexthop::Watcher>,
    /// `FIB_FALLBACKS` at the last neighbour tick.
    fib_fallbacks: u64,
}

/// What the loop waits on (apart from shutdown), kept out of the [`Daemon`] so that
/// `select!` borrows it while a handler borrows the daemon.
struct Inputs {
    health: mpsc::Receiver<health::Event>,
    calls: mpsc::Receiver<ApiCall>,
    edits: mpsc::Receiver<EditRequest>,
    scale: mpsc::Receiver<autoscale::driver::Call>,
    least_conn: Interval,
    lifecycle: Interval,
    neigh: Interval,
    status: Interval,
    announce: Interval,
    /// Woken by the next-hop watcher (one permit however many changes came).
    hops: Arc<Notify>,
}

/// What runs beside the loop and stops with it.
struct Tasks {
    api: JoinHandle<()>,
    metrics: Option<JoinHandle<()>>,
    scale: JoinHandle<()>,
    sweeper: SweeperTask,
}

/// [`super::serve`]: start the daemon's tasks, answer events until `shutdown` completes,
/// then stop.
pub(super) async fn run(
    state: State,
    started: Started,
    edits: mpsc::Receiver<EditRequest>,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), DaemonError> {
    let (mut daemon, mut inputs, tasks) = Daemon::start(state, started, edits)?;
    ready();
    tokio::pin!(shutdown);
    loop {
        // A health event or a next-hop change may change the status without a new
        // version (an edit, a reload, the autoscaler and drained-backend removals make one;
        // a lifecycle tick bumps it itself when something is going on).
        let mut changes = false;
        tokio::select! {
            () = &mut shutdown => break,
            Some(e) = inputs.health.recv() => { changes = true; daemon.on_health(&e)? }
            Some((call, peer, reply)) = inputs.calls.recv() => daemon.on_api(call, peer, reply),
            Some((edit, reply)) = inputs.edits.recv() => daemon.on_edit(edit, reply),
            _ = inputs.least_conn.tick() => daemon.on_least_conn_tick()?,
            _ = inputs.lifecycle.tick() => daemon.on_lifecycle_tick()?,
            Some(call) = inputs.scale.recv() => daemon.on_autoscaler(call)?,
            _ = inputs.neigh.tick() => daemon.on_neigh_tick()?,
            () = inputs.hops.notified() => { changes = true; daemon.on_next_hop_change()? }
            _ = inputs.status.tick() => daemon.on_status_tick()?,
            _ = inputs.announce.tick() => daemon.reconcile_routes()?,
        }
        daemon.status_generation += u64::from(changes);
    }
    daemon.stop(tasks).await
}

impl Daemon {
    /// The health checkers, the API server, the metrics listener, the conntrack sweeper
    /// and the autoscaler, started on what [`super::start`] acquired and loaded.
    fn start(
        state: State,
        started: Started,
        edits: mpsc::Receiver<EditRequest>,
    ) -> Result<(Self, Inputs, Tasks), DaemonError> {
        let Started { dp, acquired } = started;
        let dp = Arc::new(Mutex::new(dp));
        let (tx, health) = mpsc::channel(256);
        let mut checkers = Checkers {
            prober: path_prober(&dp, &state.config.daemon.interface),
            events: tx,
            running: Vec::new(),
        };
        checkers.restart(&state);
        let mut loads = load::Readers::default();
        loads.restart(&state.config);
        log_config_fingerprint(&state, "configuration running");
        let (call_tx, calls) = mpsc::channel::<ApiCall>(32);
        let d = &state.config.daemon;
        let api_task =
            api::server::serve(acquired.api, call_tx).map_err(|source| DaemonError::Api {
                path: d.api_socket.clone(),
                source,
            })?;
        info!(socket = %d.api_socket.display(), "control API listening");
        let (metrics_tx, metrics_rx) = watch::channel(metrics::Snapshot::default());
        let metrics_task = match acquired.metrics {
            Some((addr, listener)) => {
                let t = metrics::serve(listener, metrics_rx)
                    .map_err(|source| DaemonError::Metrics { addr, source })?;
                info!(%addr, "metrics at http://{addr}/metrics");
                Some(t)
            }
            None => None,
        };
        let dir = state.config.daemon.state_dir.clone();
        let sweeper = spawn_sweeper(&dp, &state.config.daemon)?;
        let mut least_conn = tokio::time::interval(Duration::from_millis(u64::from(
            state.config.daemon.least_conn_refresh_ms,
        )));
        least_conn.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut status = tokio::time::interval(STATUS_REFRESH);
        status.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let status_file = state::StatusFile::new(&dir, state.config.daemon.api_group.as_deref());
        let (scale_tx, scale) = mpsc::channel::<autoscale::driver::Call>(16);
        let (scale_task, scale_report) =
            autoscale::driver::spawn(scale_tx, Arc::new(autoscale::clock::SystemClock), dir);
        let mut announce = tokio::time::interval(announce::RECONCILE_EVERY);
        announce.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut announcer = Announcer::new(&state.config);
        announcer.warn_sequence(&state.config);
        let mut policies = super::load_weights::Policies::default();
        policies.follow(&state.config);
        // Subscribed here, in the daemon's network namespace.
        let hops = Arc::new(Notify::new());
        let wake = Arc::clone(&hops);
        let hop_watcher = match nexthop::Watcher::spawn(move || wake.notify_one()) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "cannot watch route and neighbour changes: backends' next hops follow only publishes and FIB fallbacks");
                None
            }
        };
        let daemon = Self {
            announcer,
            was_ramping: state.ramping(),
            status_generation: 0,
            status_inputs: None,
            fib_backends: neigh::fib_backends(&state.desired()),
            state,
            dp,
            checkers,
            status_file,
            metrics: metrics_tx,
            scale_report,
            policies,
            loads,
            _hop_watcher: hop_watcher,
            fib_fallbacks: 0,
        };
        let inputs = Inputs {
            health,
            calls,
            edits,
            scale,
            least_conn,
            lifecycle: tokio::time::interval(LIFECYCLE_TICK),
            neigh: tokio::time::interval(NEIGH_REFRESH),
            status,
            // Its first tick, at once, is the start's reconciliation (stale routes of a
            // crashed daemon removed).
            announce,
            hops,
        };
        let tasks = Tasks {
            api: api_task,
            metrics: metrics_task,
            scale: scale_task,
            sweeper,
        };
        Ok((daemon, inputs, tasks))
    }

    /// After every commit of a new configuration (an API apply or reload, an edit, the
    /// removal of drained backends, an autoscaler edit; [`super::commit`] persisted and
    /// published it): health checkers for the backends it has, and the neighbour entries
    /// of its FIB-resolved backends primed, so that an added backend is reachable at once;
    /// the VIP routes follow (and a VIP it adds with a sequence scheduler is warned about).
    fn after_commit(&mut self) {
        log_config_fingerprint(&self.state, "configuration committed");
        self.checkers.restart(&self.state);
        self.loads.restart(&self.state.config);
        self.policies.follow(&self.state.config);
        self.fib_backends = neigh::fib_backends(&self.state.desired());
        neigh::prime(&self.fib_backends);
        self.announcer.warn_sequence(&self.state.config);
        if let Err(e) = self.reconcile_routes() {
            warn!(error = %e, "announcing after the commit failed");
        }
    }

    /// Make the VIP routes what the state asks for (see [`Announcer::reconcile`]).
    fn reconcile_routes(&mut self) -> Result<(), DaemonError> {
        let dp = lock(&self.dp)?;
        self.announcer.reconcile(&self.state, &dp);
        Ok(())
    }

    /// `sluice announce status|withdraw|restore`.
    fn on_announce(&mut self, req: &api::Request) -> Response {
        let outcome = match req {
            api::Request::AnnounceWithdraw { all: true } => self.announcer.set_maintenance(true),
            api::Request::AnnounceWithdraw { all: false } => Err(
                "withdraw needs `all` (--all): withdrawing single VIPs is not supported".to_owned(),
            ),
            api::Request::AnnounceRestore => self.announcer.set_maintenance(false),
            _ => Ok(String::new()),
        };
        match outcome.and_then(|message| {
            self.reconcile_routes().map_err(|e| e.to_string())?;
            Ok(message)
        }) {
            Ok(message) => Response::Announce {
                status: self.announcer.status().clone(),
                message,
            },
            Err(message) => Response::Error { message },
        }
    }

    /// A backend's health changed: republish, remember it across a restart (`down.json`)
    /// and show it in the status file.
    fn on_health(&mut self, e: &health::Event) -> Result<(), DaemonError> {
        if !self.state.apply(e) {
            return Ok(());
        }
        match e.health {
            Health::Down => {
                let keep = self
                    .state
                    .config
                    .vips
                    .iter()
                    .any(|v| state::ident(v) == e.vip && v.on_down == OnDown::Keep);
                let flows = if keep {
                    "its flows stay (on_down = keep)"
                } else {
                    "its flows move (on_down = reassign)"
                };
                warn!(vip = %e.vip, backend = %e.backend, reason = %e.reason, "backend down: no new flows, {flows}");
            }
            Health::Up => {
                info!(vip = %e.vip, backend = %e.backend, reason = %e.reason, "backend up");
            }
        }
        let desired = self.state.desired();
        let status = {
            let mut dp = lock(&self.dp)?;
            if let Err(err) = dp.publish(&desired) {
                warn!(error = %err, "publishing the health change failed; the data plane keeps the previous state");
            }
            let mut status = self.state.status(&dp);
            self.loads.fill(&mut status, &self.state.config);
            Arc::new(status)
        };
        self.fib_backends = neigh::fib_backends(&desired);
        self.reconcile_routes()?;
        let dir = &self.state.config.daemon.state_dir;
        if let Err(err) = state::write_down(dir, &self.state) {
            warn!(error = %err, dir = %dir.display(), "writing the down backends file");
        }
        self.status_file.write(status);
        Ok(())
    }

    /// A control API request.
    fn on_api(&mut self, call: Call, peer: Peer, reply: oneshot::Sender<Response>) {
        if let Call::Other(api::Request::AutoscaleStatus) = call {
            let status = self
                .scale_report
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default();
            let _ = reply.send(Response::Autoscale { status });
            return;
        }
        if let Call::Other(
            req @ (api::Request::AnnounceStatus
            | api::Request::AnnounceWithdraw { .. }
            | api::Request::AnnounceRestore),
        ) = &call
        {
            let resp = self.on_announce(req);
            let name = match req {
                api::Request::AnnounceWithdraw { .. } => "announce withdraw",
                api::Request::AnnounceRestore => "announce restore",
                _ => "",
            };
            if !name.is_empty() {
                match &resp {
                    Response::Error { message } => {
                        info!(peer_uid = peer.uid, peer_pid = peer.pid, request = name, reason = %message, "announce request refused");
                    }
                    _ => info!(
                        peer_uid = peer.uid,
                        peer_pid = peer.pid,
                        request = name,
                        "announce request done"
                    ),
                }
            }
            let _ = reply.send(resp);
            return;
        }
        if let Call::Other(api::Request::LoadExplain { vip }) = &call {
            let resp = match self.explain_load(vip.as_deref()) {
                Ok(explain) => Response::LoadExplain { explain },
                Err(message) => Response::Error { message },
            };
            let _ = reply.send(resp);
            return;
        }
        let (mut resp, changed) = handle_api(&mut self.state, &self.dp, call, peer);
        if let Response::Status { status } = &mut resp {
            self.loads.fill(status, &self.state.config);
        }
        if changed {
            self.after_commit();
        }
        let _ = reply.send(resp);
    }

    /// An edit from inside the process (SIGHUP's reload, the lab, tests).
    fn on_edit(&mut self, edit: super::Edit, reply: oneshot::Sender<Result<String, String>>) {
        // What a replacement changes, field by field (a reload says it itself).
        let summary = match &edit {
            super::Edit::Replace(c) => Some(crate::persist::merge::summary(
                &self.state.config,
                c,
                super::requests::SUMMARY_CHANGES,
            )),
            super::Edit::Reload => None,
        };
        let outcome = apply_edit(&mut self.state, &self.dp, edit);
        match &outcome {
            Ok(what) => {
                info!(change = %summary.as_deref().unwrap_or(what), "edit applied");
                self.after_commit();
            }
            Err(why) => warn!(reason = %why, "edit rejected; nothing changed"),
        }
        let _ = reply.send(outcome);
    }

    /// Refresh the least-connection plans from the active-connection counts.
    fn on_least_conn_tick(&mut self) -> Result<(), DaemonError> {
        let mut dp = lock(&self.dp)?;
        if let Err(err) = dp.refresh_least_conn() {
            warn!(error = %err, "refreshing the least-connection plans failed");
        }
        Ok(())
    }

    /// Step slow starts, check drains, and remove the drained backends that asked for it.
    fn on_lifecycle_tick(&mut self) -> Result<(), DaemonError> {
        // Slow start: republish while weights ramp (unchanged VIPs are skipped); and when
        // the load policy set new weights.
        let ramping = self.state.ramping();
        let load_changed = self.apply_load_policies();
        let draining = self.state.config.vips.iter().any(|v| {
            v.backends
                .iter()
                .any(|b| b.state == crate::config::BackendState::Draining)
        });
        if ramping || self.was_ramping || load_changed || draining {
            // Weights ramp, drains go on: the status changes.
            self.status_generation += 1;
        }
        if ramping || self.was_ramping || load_changed {
            let desired = self.state.desired();
            let mut dp = lock(&self.dp)?;
            if let Err(err) = dp.publish(&desired) {
                warn!(error = %err, "publishing a slow-start step failed");
            }
        }
        self.was_ramping = ramping;
        let done = {
            let dp = lock(&self.dp)?;
            lifecycle::check(&mut self.state, std::time::Instant::now(), |vip, addr| {
                let id = dp.layout().backend_id(&vip, addr)?;
                dp.active(id).ok()
            })
        };
        for d in &done {
            if d.left == 0 {
                info!(vip = %d.vip_name, backend = %d.backend, took_ms = d.took.as_millis() as u64, remove = d.remove, "backend drained: no active connections left");
            } else {
                warn!(vip = %d.vip_name, backend = %d.backend, took_ms = d.took.as_millis() as u64, left = d.left, remove = d.remove, "drain deadline passed with connections left (they move or reset when it is removed)");
            }
        }
        if let Some(next) = lifecycle::without_removed(&self.state.config, &done) {
            match commit_config(&mut self.state, &self.dp, next) {
                Ok(what) => {
                    info!(change = %what, "drained backends removed");
                    self.after_commit();
                }
                Err(why) => {
                    warn!(reason = %why, "removing drained backends failed; they stay drained");
                }
            }
        }
        Ok(())
    }

    /// The autoscaler asks for a snapshot or an edit.
    fn on_autoscaler(&mut self, call: autoscale::driver::Call) -> Result<(), DaemonError> {
        match call {
            autoscale::driver::Call::Snapshot(tx) => {
                // Twice a second: only the scaled VIPs (all the autoscaler looks at),
                // not a copy and status of every VIP.
                let scaled = |v: &VipConfig| v.autoscale.is_some();
                let state = &mut self.state;
                let all = std::mem::take(&mut state.config.vips);
                let mut config = state.config.clone();
                state.config.vips = all;
                config.vips = state
                    .config
                    .vips
                    .iter()
                    .filter(|v| scaled(v))
                    .cloned()
                    .collect();
                let mut status = state.status_of(&*lock(&self.dp)?, scaled);
                // The load readings of the backends (for the `load_*` metrics).
                self.loads.fill(&mut status, &config);
                let _ = tx.send((config, status));
            }
            autoscale::driver::Call::Modify { why, change, reply } => {
                // The autoscaler's edits take the API's path: the whole configuration
                // validated with the file's rules, published, persisted.
                let mut next = self.state.config.clone();
                let outcome = change(&mut next)
                    .and_then(|()| revalidate(&next))
                    .and_then(|c| commit_config(&mut self.state, &self.dp, c));
                match &outcome {
                    Ok(what) => {
                        info!(why = %why, change = %what, "autoscaler edit applied");
                        self.after_commit();
                    }
                    Err(e) => {
                        warn!(why = %why, reason = %e, "autoscaler edit rejected; nothing changed");
                    }
                }
                let _ = reply.send(outcome);
            }
        }
        Ok(())
    }

    /// Keep the neighbour entries of FIB-resolved backends from going stale; when frames
    /// went through the FIB since the last tick (a next hop unresolved), resolve again.
    fn on_neigh_tick(&mut self) -> Result<(), DaemonError> {
        neigh::prime(&self.fib_backends);
        let fallbacks = lock(&self.dp)?.fib_fallbacks().unwrap_or_default();
        if fallbacks != self.fib_fallbacks {
            self.fib_fallbacks = fallbacks;
            self.on_next_hop_change()?;
        }
        Ok(())
    }

    /// A link, neighbour or route changed (or frames went through the FIB): resolve every
    /// backend's next hop again and rewrite the slots that moved.
    fn on_next_hop_change(&mut self) -> Result<(), DaemonError> {
        let started = std::time::Instant::now();
        let changed = lock(&self.dp)?.refresh_next_hops()?;
        if changed > 0 {
            info!(
                changed,
                took_us = started.elapsed().as_micros() as u64,
                "backends' next hops rewritten after a route or neighbour change"
            );
        }
        Ok(())
    }

    /// Refresh the metrics snapshot and the status file.
    fn on_status_tick(&mut self) -> Result<(), DaemonError> {
        // Under the lock only the counters are read (one batch read per map); the status
        // file is encoded and written (on a blocking thread), and the metrics rendered (on
        // scrape), after it is released.
        let (fresh, tables_built, new_flows_per_cpu, flows_one_cpu) = {
            let dp = lock(&self.dp)?;
            // The status is built again only when its inputs changed (or it is getting old):
            // at thousands of backends building and writing it is most of an idle daemon's
            // work. Load reports change it on their own, so VIPs with `[vip.load]` always
            // rebuild it.
            let inputs =
                state::StatusInputs::read(&dp, (self.status_generation, self.state.version));
            let reported = self.state.config.vips.iter().any(|v| v.load.is_some());
            let unchanged = !reported
                && matches!((&inputs, &self.status_inputs),
                    (Some(now), Some((last, at)))
                        if now == last && at.elapsed() < state::STATUS_UNCHANGED_REWRITE);
            let fresh = if unchanged {
                None
            } else {
                // Built with the counters just read, not read again.
                let mut status = match &inputs {
                    Some(i) => self.state.status_with(&dp, i),
                    None => self.state.status(&dp),
                };
                self.status_inputs = inputs.map(|i| (i, std::time::Instant::now()));
                self.loads.fill(&mut status, &self.state.config);
                Some(Arc::new(status))
            };
            let per_cpu = dp.new_flows_per_cpu().unwrap_or_default();
            (fresh, dp.tables_built(), per_cpu, dp.flows_one_cpu_holds())
        };
        // The rest of the metrics snapshot (the announcer's and the autoscaler's state) is
        // cheap: refreshed on every tick, with the status kept when it was not rebuilt.
        let status = match &fresh {
            Some(s) => Some(Arc::clone(s)),
            None => self.metrics.borrow().status.clone(),
        };
        let scaled = self
            .scale_report
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        self.metrics.send_replace(metrics::Snapshot {
            status,
            edits: self.state.version,
            tables_built,
            scaled,
            announce: Some(Arc::new(self.announcer.status().clone())),
            flow_capacity: u64::from(self.state.config.daemon.flow_table_size),
            flows_one_cpu: u64::from(flows_one_cpu),
            new_flows_per_cpu,
        });
        if let Some(status) = fresh {
            self.status_file.write(status);
        }
        Ok(())
    }

    /// Stop everything beside the loop, then the data plane: it stays attached and pinned
    /// ([`super::OnExit::Keep`]) or is removed.
    async fn stop(mut self, tasks: Tasks) -> Result<(), DaemonError> {
        if let Some(p) = &self.checkers.prober {
            let st = p.stats();
            info!(
                sent = st.sent,
                syn_acks = st.syn_acks,
                refused = st.refused,
                udp_replies = st.udp_replies,
                challenged = st.challenged,
                late = st.late,
                resets = st.resets,
                reset_failures = st.reset_failures,
                timeouts = st.timeouts,
                "health probes through the forwarding path"
            );
        }
        drop(self.checkers);
        tasks.scale.abort();
        tasks.sweeper.stop();
        tasks.api.abort();
        if let Some(t) = tasks.metrics {
            t.abort();
        }
        let d = &self.state.config.daemon;
        let dir: PathBuf = d.state_dir.clone();
        let _ = std::fs::remove_file(&d.api_socket);
        match lock(&self.dp)?.stop()? {
            Some(pins) => {
                info!(
                    interface = %d.interface,
                    pin_dir = %pins.display(),
                    "shutting down; the balancer stays attached and keeps forwarding with the last published state (the next `sluice run` adopts it without dropping a flow); remove it with `sluice detach --config FILE` or `sluice detach --interface IF --pin-dir DIR`"
                );
                if d.announce.enabled {
                    info!(
                        table = d.announce.table,
                        "the VIP routes stay announced (the balancer keeps forwarding); `sluice announce withdraw --all` before stopping takes this balancer out of the fleet"
                    );
                }
            }
            None => {
                info!("shut down; detached and unpinned");
                self.announcer.withdraw_all();
                // Nothing to adopt: nothing to remember.
                let _ = std::fs::remove_file(dir.join(state::DOWN_FILE));
            }
        }
        self.status_file.finish().await;
        let _ = std::fs::remove_file(dir.join("status.json"));
        // Only if nothing else lives there.
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }
}

/// Health checks through the forwarding path (raw sockets on the LB interface), if they
/// can be set up.
fn path_prober(dp: &Arc<Mutex<Dataplane>>, ifname: &str) -> Option<Arc<PathProber>> {
    match iface::lookup(ifname) {
        Ok(Some(i)) => match PathProber::start(Arc::clone(dp), i) {
            Ok(p) => Some(p),
            Err(e) => {
                warn!(error = %e, "health checks cannot go through the forwarding path (raw sockets); checking backends' own addresses only");
                None
            }
        },
        Ok(None) | Err(_) => {
            warn!(interface = %ifname, "interface not found for health probes; checking backends' own addresses only");
            None
        }
    }
}

/// The configuration fingerprint in the log (at start and after every commit): balancers
/// whose logs show the same one run the same configuration (`sluice fleet check`).
fn log_config_fingerprint(state: &State, what: &str) {
    match state.config_fingerprint() {
        Some(fp) => info!(config_fingerprint = %fp, version = state.version, "{what}"),
        None => tracing::warn!(
            version = state.version,
            "{what}; its fingerprint is unknown: the configuration could not be exported"
        ),
    }
}
