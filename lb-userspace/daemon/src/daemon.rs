//! `sluice run`: check and acquire what can fail without the balancer (`preflight.rs`: the
//! interface, the state directory, the API socket and group, the metrics listener), load
//! (adopting what a previous daemon pinned: `dataplane/adopt.rs`), publish the configured
//! state, attach, then serve on the listeners acquired first: health checks and API edits
//! turn into republished states, the status file and metrics are refreshed, and FIB-resolved
//! backends' neighbour entries are kept warm, until shutdown; then the balancer stays
//! attached and pinned (`sluice detach` removes it), or, for an ephemeral daemon, detaches.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::{
    config::{CheckKind, Config, XdpMode},
    dataplane::{
        AttachMode, Dataplane, DataplaneError, LAYOUT_FILE, PinConfig, PublishReport, Sizes,
        conntrack, neigh,
    },
    health::{self, Health, PathProber},
    persist::{self, StoreFiles as _},
    plan,
    preflight::{self, Preflight, PreflightError},
    state::{self, State},
};

mod events;
mod load_weights;
mod requests;

/// How often the neighbour entries of FIB-resolved backends are refreshed (well inside the
/// kernel's default 60 s `gc_stale_time`).
const NEIGH_REFRESH: Duration = Duration::from_secs(20);
/// How often the status file (with counters) is rewritten.
const STATUS_REFRESH: Duration = Duration::from_secs(1);
/// How often drains are checked and slow starts stepped.
const LIFECYCLE_TICK: Duration = Duration::from_millis(200);

fn lock(dp: &Mutex<Dataplane>) -> Result<std::sync::MutexGuard<'_, Dataplane>, DaemonError> {
    dp.lock().map_err(|_| DaemonError::LockPoisoned)
}

pub fn attach_mode(m: XdpMode) -> AttachMode {
    match m {
        XdpMode::Native => AttachMode::Native,
        XdpMode::Generic => AttachMode::Generic,
        XdpMode::Auto => AttachMode::Auto,
    }
}

/// What becomes of the balancer when the daemon stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExit {
    /// It stays attached, forwarding with the last published state, and pinned for the
    /// next daemon to adopt (`sluice run`); `sluice detach` removes it.
    Keep,
    /// Detached and unpinned: the daemon leaves nothing behind (`sluice demo`, the lab's
    /// in-process daemon, tests).
    Remove,
}

/// Why a daemon did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The preflight's message is part of this one (not a `source`, which `{:#}` would
    /// print a second time).
    #[error("refused before anything was loaded, pinned or attached: {0}")]
    Preflight(PreflightError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

impl From<PreflightError> for StartError {
    fn from(e: PreflightError) -> Self {
        Self::Preflight(e)
    }
}

/// Why a started daemon stopped serving ([`serve`]). The messages read as the CLI showed
/// them before (`error: {e:#}` prints the cause after the message).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A thread panicked while it held the data plane.
    #[error("data plane lock poisoned")]
    LockPoisoned,
    /// The control API socket (bound before the attach) could not be served.
    #[error("the control API socket {}", path.display())]
    Api {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The metrics listener (bound before the attach) could not be served.
    #[error("the metrics listener daemon.metrics_listen = {addr}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The connection-tracking sweeper's or the flow clock's thread could not be started.
    #[error("starting the conntrack sweeper and flow clock threads")]
    SweeperThread(#[source] std::io::Error),
    /// The data plane failed (the sweeper's map handles, the stop).
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

/// A started daemon, for [`serve`]: its data plane, attached, and the listeners acquired
/// before (see `preflight.rs`).
#[derive(Debug)]
pub struct Started {
    dp: Dataplane,
    acquired: Preflight,
}

/// Acquire what can fail without the balancer ([`preflight::acquire`]), then load the data
/// plane for `state` (pinned in `daemon.pin_dir`, adopting a previous daemon's maps, layout
/// and link when they are there), publish it and attach the balancer (atomically replacing
/// the previous program, if any).
pub fn start(state: &mut State, on_exit: OnExit) -> Result<Started, StartError> {
    let acquired = preflight::acquire(&state.config.daemon)?;
    for f in &acquired.leftovers {
        info!(file = %f.display(), "removed a temporary file left by a crashed write");
    }
    let dp = start_dataplane(state, on_exit)?;
    Ok(Started { dp, acquired })
}

fn start_dataplane(state: &mut State, on_exit: OnExit) -> Result<Dataplane, DataplaneError> {
    let d = state.config.daemon.clone();
    let pin = PinConfig {
        dir: d.pin_dir(),
        interface: d.interface.clone(),
        layout_file: d.state_dir.join(LAYOUT_FILE),
        keep: on_exit == OnExit::Keep,
    };
    let started = std::time::Instant::now();
    let (mut dp, adoption) = Dataplane::load_pinned(Sizes::of(&d), pin)?;
    let load_ms = started.elapsed().as_millis() as u64;
    let dir = d.pin_dir();
    if adoption.maps.is_empty() {
        info!(pin_dir = %dir.display(), load_ms, "maps pinned (nothing to adopt)");
    } else {
        info!(
            pin_dir = %dir.display(),
            vips = adoption.vips,
            backends = adoption.backends,
            flows = adoption.flows,
            link = adoption.link,
            load_ms,
            "adopting the pinned state of the previous daemon"
        );
        for n in &adoption.notes {
            warn!(note = %n, "saved layout vs pinned maps (the maps win)");
        }
        if !adoption.new.is_empty() {
            info!(maps = %adoption.new.join(", "), "maps new in this build: created and pinned");
        }
        if !adoption.stale.is_empty() {
            info!(maps = %adoption.stale.join(", "), "pinned maps this build no longer has: removed");
        }
        // Backends that were down when the previous daemon stopped stay down until their
        // checks pass (`rise`), instead of taking new flows until they fail (`fall`). The
        // maps tell which were not serving; under `on_down = "keep"` a down backend still
        // serves its flows (out of the table only), and the previous daemon's `down.json`
        // tells it was down.
        let not_serving = dp.backends_not_serving().into_iter().map(|p| (p, false));
        let kept = kept_down(state).into_iter().map(|p| (p, true));
        for ((vip, backend), keep) in not_serving.chain(kept) {
            let e = health::Event {
                vip,
                backend,
                health: Health::Down,
                reason: "down when the previous daemon stopped; back after `rise` checks"
                    .to_owned(),
                ok: None,
            };
            if state.apply(&e) {
                let flows = if keep {
                    " (on_down = keep, its flows stay)"
                } else {
                    ""
                };
                warn!(%vip, %backend, "backend was down before the restart{flows}: kept down until its checks pass");
            }
        }
    }
    // From now on the file speaks for this daemon (an older one may be stale).
    if let Err(err) = state::write_down(&d.state_dir, state) {
        warn!(error = %err, dir = %d.state_dir.display(), "writing the down backends file");
    }
    let result = (|| {
        let t = std::time::Instant::now();
        let desired = state.desired();
        let report = dp.publish(&desired)?;
        let publish_ms = t.elapsed().as_millis() as u64;
        neigh::prime(&neigh::fib_backends(&desired));
        info!(
            vips_added = report.vips_added,
            vips_removed = report.vips_removed,
            backends_added = report.backends_added,
            backends_removed = report.backends_removed,
            tables = report.tables_built,
            build_us = report.build_us,
            publish_ms,
            "published"
        );
        let (mode, replaced) = dp.attach_balancer(&d.interface, attach_mode(d.xdp_mode))?;
        if replaced {
            info!(interface = %d.interface, mode = %mode, "balancer program replaced atomically in the pinned XDP link");
        } else {
            info!(interface = %d.interface, mode = %mode, "balancer attached (link pinned)");
        }
        Ok(())
    })();
    if let Err(e) = result {
        // A fresh start leaves nothing behind; adopted state stays for the next try.
        if !dp.adopted() {
            let _ = dp.stop_removing();
        }
        return Err(e);
    }
    Ok(dp)
}

/// The backends of `on_down = "keep"` VIPs that the previous daemon had down
/// (`state::DOWN_FILE`; same VIP, same address).
fn kept_down(state: &State) -> Vec<(crate::dataplane::VipIdent, std::net::IpAddr)> {
    let prev = state::read_down(&state.config.daemon.state_dir);
    let mut out = Vec::new();
    for v in &state.config.vips {
        if v.on_down != crate::config::OnDown::Keep {
            continue;
        }
        let id = state::ident(v);
        for b in &v.backends {
            if prev
                .iter()
                .any(|(pv, pb)| *pv == id.to_string() && *pb == b.address)
            {
                out.push((id, b.address));
            }
        }
    }
    out
}

/// A change asked of the running daemon (the control API, tests). Each is validated by the
/// daemon and answered; a rejected edit leaves everything as it was.
#[derive(Debug)]
pub enum Edit {
    /// Replace the VIPs and backends with those of this (already validated) configuration.
    /// Backends that stay keep their slot, flows and health; `[daemon]` must be unchanged.
    Replace(Box<Config>),
    /// Read the config file again (SIGHUP), merged with the live edits ([`reload`]).
    Reload,
}

/// An edit and where to send its outcome.
pub type EditRequest = (Edit, oneshot::Sender<Result<String, String>>);

/// The daemon's health checkers, one per checked backend.
struct Checkers {
    prober: Option<Arc<PathProber>>,
    events: mpsc::Sender<health::Event>,
    running: Vec<tokio::task::JoinHandle<()>>,
}

impl Checkers {
    /// (Re)start one checker per backend whose check is not `none`.
    fn restart(&mut self, state: &State) {
        for c in self.running.drain(..) {
            c.abort();
        }
        for v in &state.config.vips {
            let id = state::ident(v);
            for (i, b) in v.backends.iter().enumerate() {
                let spec = v.health_of(i).clone();
                if spec.check == CheckKind::None {
                    continue;
                }
                let initial = state
                    .health_of(id, b.address)
                    .map_or(Health::Up, |h| h.health);
                let latency = crate::metrics::live().check_latency(&v.name, spec.check.as_str());
                self.running.push(health::spawn(
                    self.prober.clone(),
                    (id, b.address),
                    spec,
                    initial,
                    latency,
                    self.events.clone(),
                ));
            }
        }
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        for c in &self.running {
            c.abort();
        }
    }
}

/// Serve until `shutdown` completes: the daemon's main loop ([`events`]). Must run inside
/// a tokio runtime, in the network namespace of the LB interface.
pub async fn serve(
    state: State,
    started: Started,
    edits: mpsc::Receiver<EditRequest>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    events::run(state, started, edits, shutdown, || {}).await
}

/// [`serve`], calling `ready` once every task is started (the balancer was attached by
/// [`start`], the API socket is served): where `sluice run` tells systemd `READY=1`.
pub async fn serve_ready(
    state: State,
    started: Started,
    edits: mpsc::Receiver<EditRequest>,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), DaemonError> {
    events::run(state, started, edits, shutdown, ready).await
}

/// Apply one edit to the state and the data plane, or change nothing.
fn apply_edit(state: &mut State, dp: &Mutex<Dataplane>, edit: Edit) -> Result<String, String> {
    match edit {
        Edit::Replace(config) => {
            daemon_unchanged(state, &config)?;
            if *config == state.config {
                return Ok("no change".to_owned());
            }
            commit_config(state, dp, *config)
        }
        Edit::Reload => reload(state, dp).map(|(_, what)| what),
    }
}

/// An edit may change everything but `[daemon]`, which is read once at start.
fn daemon_unchanged(state: &State, config: &Config) -> Result<(), String> {
    if config.daemon == state.config.daemon {
        Ok(())
    } else {
        Err("[daemon] settings cannot change while running (restart the daemon)".to_owned())
    }
}

/// A rejected configuration's problems, one `path: message` each.
fn problems(e: &crate::config::ConfigError) -> Vec<String> {
    e.problems()
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect()
}

/// `config` checked with exactly the rules of the config file (through its TOML form).
fn revalidate(config: &Config) -> Result<Config, String> {
    let text = config
        .to_toml()
        .map_err(|e| format!("exporting the configuration: {e}"))?;
    crate::config::parse(&text, "edit")
        .map(|l| l.config)
        .map_err(|e| problems(&e).join("; "))
}

/// Make `next` the running state. Every change of the configuration ends here, whoever
/// made it (API apply, reload, autoscaler, drained-backend removal): it is persisted first
/// (nothing is acknowledged that a restart would lose), then published, and only if both
/// worked taken as the state with a new version. A failed publish puts the saved
/// configuration back; a failure leaves the running state and the data plane as they were.
/// The data plane's lock is taken for the publish only: the saves (fsynced) happen without.
fn commit(
    state: &mut State,
    dp: &Mutex<Dataplane>,
    mut next: State,
) -> Result<PublishReport, String> {
    let version = state.version + 1;
    if let Some(store) = &next.persist {
        // Made of the VIPs' texts the state keeps: only the VIPs an edit changed were
        // written out again.
        let text = next
            .config_toml()
            .map_err(|e| format!("exporting the configuration: {e}"))?;
        store.save_text(&text, version).map_err(|e| e.to_string())?;
    }
    let desired = next.desired();
    let published = match dp.lock() {
        Ok(mut dp) => dp.publish(&desired).map_err(|e| e.to_string()),
        Err(_) => Err("data plane lock poisoned".to_owned()),
    };
    match published {
        Ok(report) => {
            next.version = version;
            *state = next;
            Ok(report)
        }
        Err(e) => {
            if let Some(store) = &state.persist
                && let Err(re) = state
                    .config_toml()
                    .map_err(persist::PersistError::from)
                    .and_then(|text| store.save_text(&text, state.version))
            {
                error!(error = %re, "putting the saved configuration back after a failed publish failed: the saved file has an edit that is not running");
            }
            Err(e)
        }
    }
}

/// Read the config file again and make it the running configuration, merged with the
/// live edits made since its base ([`persist::merge`]): what SIGHUP and `sluice reload`
/// do. Conflicts refuse the reload with their report; `[daemon]` changes wait for the
/// next start. The file becomes the new base of the live edits. The data plane's lock is
/// taken only for the plan and the publish, not while files are read and written.
fn reload(state: &mut State, dp: &Mutex<Dataplane>) -> Result<(plan::Plan, String), String> {
    let planned = |now: &State, next: &State| {
        dp.lock()
            .map(|dp| plan::compute(now, next, &*dp))
            .map_err(|_| "data plane lock poisoned".to_owned())
    };
    let Some(store) = state.persist.clone() else {
        return Err(
            "this daemon does not run a config file (in-process): nothing to reload".to_owned(),
        );
    };
    let path = &store.config_file;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}; nothing changed", path.display()))?;
    let file = crate::config::parse(&text, &path.display().to_string())
        .map_err(|e| format!("{e}\nnothing changed"))?
        .config;
    let base_text = store.base_text();
    let base = base_text
        .as_deref()
        .and_then(|t| crate::config::parse(t, persist::BASE_FILE).ok())
        .map(|l| l.config);
    let m = persist::merge::merge(base.as_ref(), &state.config, &file);
    let Some(merged) = m.clean() else {
        return Err(persist::conflict_report(
            path,
            &store.dir,
            &m,
            persist::Refused::Reload,
        ));
    };
    let mut merged = merged.clone();
    let mut notes = Vec::new();
    if base.as_ref().is_some_and(|b| b.daemon != file.daemon) {
        notes.push("[daemon] changed in the file: it takes effect at the next start".to_owned());
    }
    merged.daemon = state.config.daemon.clone();
    let hash = persist::file_hash(text.as_bytes());
    if merged == state.config && hash == store.base_hash {
        return Ok((
            planned(state, &state.with_config(merged.clone()))?,
            "reloaded: nothing changed".to_owned(),
        ));
    }
    let mut next = state.with_config(merged);
    let plan = planned(state, &next)?;
    let mut new_store = store.clone();
    new_store
        .save_base(&text)
        .map_err(|e| format!("{e}; nothing changed"))?;
    next.persist = Some(new_store);
    match commit(state, dp, next) {
        Ok(r) => {
            let kept = m.live_changes.len();
            notes.insert(
                0,
                format!(
                    "reloaded {} ({} file change(s), {kept} live edit(s) kept): {} VIPs added, {} removed; {} backends added, {} removed",
                    path.display(),
                    m.file_changes.len(),
                    r.vips_added,
                    r.vips_removed,
                    r.backends_added,
                    r.backends_removed
                ),
            );
            Ok((plan, notes.join("; ")))
        }
        Err(e) => {
            if let Some(b) = base_text
                && let Err(re) = store.clone().save_base(&b)
            {
                error!(error = %re, "putting the previous base file back failed");
            }
            Err(format!("{e}; nothing changed"))
        }
    }
}

/// [`commit`] of `config`, summed up for the log.
fn commit_config(
    state: &mut State,
    dp: &Mutex<Dataplane>,
    config: Config,
) -> Result<String, String> {
    let next = state.with_config(config);
    let report = commit(state, dp, next)?;
    Ok(format!(
        "{} VIPs added, {} removed; {} backends added, {} removed",
        report.vips_added, report.vips_removed, report.backends_added, report.backends_removed
    ))
}

/// The connection-tracking sweeper: a thread that walks the flow table every
/// `daemon.conntrack_sweep_ms` on its own map handles (the data plane stays free), then
/// hands the exact counts to the data plane as the new base of the active figures; and
/// the flow clock's thread, which keeps the tick the program stamps flows with (a walk of
/// a large table takes seconds, the clock must not wait for it).
struct SweeperTask {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl SweeperTask {
    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The flow clock's thread: [`conntrack::Clock::tick`] every [`conntrack::Clock::PERIOD`]
/// until `stop`. A failed write is logged once until one succeeds again (flows are then
/// stamped with the last tick written: they look idle for longer than they are).
fn spawn_clock(
    dp: &Arc<Mutex<Dataplane>>,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, DaemonError> {
    let mut clock = lock(dp)?.clock()?;
    // The first tick before the program forwards with this daemon's maps.
    if let Err(e) = clock.tick() {
        warn!(error = %e, "the flow clock could not be written");
    }
    let flag = Arc::clone(stop);
    std::thread::Builder::new()
        .name("sluice-clock".to_owned())
        .spawn(move || {
            let mut failing = false;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(conntrack::Clock::PERIOD);
                match clock.tick() {
                    Ok(_) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        warn!(error = %e, "the flow clock could not be written");
                    }
                    Err(_) => {}
                }
            }
        })
        .map_err(DaemonError::SweeperThread)
}

/// How often the sweeper samples the flow table's region between sweeps.
const REGION_CHECK: Duration = Duration::from_millis(20);

fn spawn_sweeper(
    dp: &Arc<Mutex<Dataplane>>,
    d: &crate::config::DaemonConfig,
) -> Result<SweeperTask, DaemonError> {
    let timeouts = conntrack::Timeouts {
        tcp_idle: Duration::from_millis(u64::from(d.tcp_idle_timeout_ms)),
        tcp_fin: Duration::from_millis(u64::from(d.tcp_fin_timeout_ms)),
        udp_idle: Duration::from_millis(u64::from(d.udp_idle_timeout_ms)),
    };
    let mut sweeper = lock(dp)?.sweeper(timeouts)?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clock = spawn_clock(dp, &stop)?;
    let task = |threads| SweeperTask {
        stop: Arc::clone(&stop),
        threads,
    };
    let period = Duration::from_millis(u64::from(d.conntrack_sweep_ms));
    let (dp, flag) = (Arc::clone(dp), Arc::clone(&stop));
    let spawned = std::thread::Builder::new()
        .name("sluice-conntrack".to_owned())
        .spawn(move || {
            let mut next = std::time::Instant::now();
            let mut next_check = next;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                // A burst of new flows may fill the flow table's region faster than sweeps
                // come: a cheap sample of it every 20 ms grows it early.
                if std::time::Instant::now() >= next_check {
                    next_check = std::time::Instant::now() + REGION_CHECK;
                    if let Some(r) = sweeper.check_region() {
                        r.log();
                    }
                }
                if std::time::Instant::now() >= next {
                    next += period;
                    let backends: Vec<_> = match dp.lock() {
                        Ok(dp) => dp.layout().backends().collect(),
                        Err(_) => return,
                    };
                    match sweeper.sweep(&backends) {
                        Ok(s) => {
                            if let Some(r) = &s.resized {
                                r.log();
                            }
                            // Every sweep that removed something, at debug: a busy
                            // balancer sweeps every few seconds (the counts are in the
                            // status and the metrics).
                            if s.expired + s.reaped > 0 {
                                debug!(
                                    expired = s.expired,
                                    reaped = s.reaped,
                                    scanned = s.scanned,
                                    took_us = s.took.as_micros() as u64,
                                    "conntrack sweep removed idle flows"
                                );
                            }
                            match dp.lock() {
                                Ok(mut dp) => dp.rebase_conntrack(&s),
                                Err(_) => return,
                            }
                        }
                        Err(e) => warn!(error = %e, "conntrack sweep failed"),
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    match spawned {
        Ok(thread) => Ok(task(vec![clock, thread])),
        Err(e) => {
            task(vec![clock]).stop();
            Err(DaemonError::SweeperThread(e))
        }
    }
}
