//! The daemon's autoscaler task. It owns no map and no configuration: every tick it asks
//! the daemon loop for a snapshot (configuration and status), and every change it wants is
//! a [`Call::Modify`] that the loop applies like an API edit (validated with the config
//! file's rules, published, persisted, logged). Scale-out: provider → probe the candidate
//! (`rise` passing checks in a row within `ready_timeout_ms`) → add it (slow start is the
//! daemon's); scale-in: set the chosen backend draining with `drain_remove`, and once the
//! daemon has removed it (drained, or the VIP's drain deadline), release it to the provider.
//!
//! What the configuration does not say (which backends the provider created, which ones
//! are being drained to be released) is kept in `<state_dir>/autoscale.json` ([`persist`])
//! and reconciled with the running configuration when the daemon starts again.

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::{
    Controller, Decision,
    clock::{Clock, Time},
    persist::{self, Saved, VipSaved},
    provider::{self, Candidate, Provider},
};
use crate::{
    config::{
        CheckKind, Config, HealthConfig, VipConfig,
        autoscale::{AutoscaleConfig, BackendMetricConfig},
    },
    state::Status,
};

mod tick;

/// How often the task looks at the daemon's state (policies run every `interval_ms`).
const TICK: Duration = Duration::from_millis(500);
/// Decisions and events kept per VIP for `sluice autoscale status`.
const KEEP: usize = 20;

/// A configuration change the autoscaler asks of the daemon loop.
pub type Change = Box<dyn FnOnce(&mut Config) -> Result<(), String> + Send>;

/// What the autoscaler asks of the daemon loop.
pub enum Call {
    /// The running configuration and a status snapshot, of the scaled VIPs only.
    Snapshot(oneshot::Sender<(Config, Status)>),
    /// Change the configuration (applied like an API edit, or not at all).
    Modify {
        why: String,
        change: Change,
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// `sluice autoscale status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AutoscaleStatus {
    pub vips: Vec<VipReport>,
}

/// One scaled VIP.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VipReport {
    pub name: String,
    pub provider: String,
    pub serving: u32,
    pub desired: u32,
    pub min: u32,
    pub max: u32,
    /// Candidates being created or probed.
    pub provisioning: u32,
    /// Backends this autoscaler set draining, not yet removed.
    pub draining: Vec<IpAddr>,
    /// Backends the provider created and not yet released (kept across restarts).
    #[serde(default)]
    pub owned: Vec<IpAddr>,
    pub decisions_up: u64,
    pub decisions_down: u64,
    pub decisions_hold: u64,
    pub added: u64,
    pub removed: u64,
    /// Failed scale-outs, rejected edits and failed releases.
    pub failures: u64,
    /// Of `failures`: releases to the provider that failed (retried at the next start).
    #[serde(default)]
    pub release_failures: u64,
    /// The last decisions, newest last.
    pub decisions: Vec<Decision>,
    /// The last actions and failures, newest last.
    pub events: Vec<String>,
}

/// The shared report (the daemon answers the API and renders metrics from it).
pub type Report = Arc<Mutex<AutoscaleStatus>>;

enum Done {
    /// The provider made a candidate (recorded as owned before it is probed).
    Created { vip: String, candidate: Candidate },
    Ready {
        vip: String,
        candidate: Candidate,
        took: Duration,
    },
    Failed {
        vip: String,
        candidate: Option<Candidate>,
        why: String,
    },
    Released {
        vip: String,
        candidate: Candidate,
        outcome: Result<(), String>,
    },
}

struct Scaler {
    spec: AutoscaleConfig,
    controller: Controller,
    provider: Arc<dyn Provider>,
    next_eval: Time,
    /// The previous counters (time, new flows, packets, bytes) for rates.
    prev: Option<(Time, u64, u64, u64)>,
    pending: u32,
    ready: Vec<Candidate>,
    /// Backends we set draining (with their MAC, for the release).
    draining: BTreeMap<IpAddr, Candidate>,
    /// Backends the provider created, until their release succeeds.
    owned: BTreeMap<IpAddr, Candidate>,
    desired: u32,
    report: VipReport,
    events: VecDeque<String>,
    decisions: VecDeque<Decision>,
}

impl Scaler {
    fn new(
        name: &str,
        spec: &AutoscaleConfig,
        now: Time,
        owned: BTreeMap<IpAddr, Candidate>,
        draining: BTreeMap<IpAddr, Candidate>,
    ) -> Self {
        Self {
            controller: Controller::new(spec.clone()),
            provider: Arc::from(provider::from_config(name, &spec.provider)),
            spec: spec.clone(),
            next_eval: now,
            prev: None,
            pending: 0,
            ready: Vec::new(),
            draining,
            owned,
            desired: spec.min,
            report: VipReport {
                name: name.to_owned(),
                provider: match &spec.provider {
                    crate::config::autoscale::ProviderConfig::Pool { .. } => "pool",
                    crate::config::autoscale::ProviderConfig::Exec { .. } => "exec",
                }
                .to_owned(),
                ..VipReport::default()
            },
            events: VecDeque::new(),
            decisions: VecDeque::new(),
        }
    }

    fn event(&mut self, now: Time, what: String) {
        if self.events.len() == KEEP {
            self.events.pop_front();
        }
        self.events.push_back(format!("{now} {what}"));
    }

    fn saved(&self) -> VipSaved {
        VipSaved {
            owned: self.owned.values().cloned().collect(),
            draining: self.draining.values().cloned().collect(),
        }
    }
}

/// Start the autoscaler task; it ends when the daemon loop drops its end of `calls`. Its
/// own state is kept in `state_dir` (see [`persist`]).
pub fn spawn(
    calls: mpsc::Sender<Call>,
    clock: Arc<dyn Clock>,
    state_dir: PathBuf,
) -> (tokio::task::JoinHandle<()>, Report) {
    let report = Report::default();
    let r = Arc::clone(&report);
    let task = tokio::spawn(async move { run(calls, clock, r, state_dir).await });
    (task, report)
}

/// A VIP's state without a scaler: loaded from the file and not yet reconciled
/// (`from_disk`), or kept from a scaler that was dropped (its section changed or went).
struct Parked {
    saved: VipSaved,
    from_disk: bool,
}

/// The state file at start: unusable files are logged and set aside, never fatal.
fn load(dir: &std::path::Path) -> BTreeMap<String, Parked> {
    match persist::read(dir) {
        Ok(None) => BTreeMap::new(),
        Ok(Some(saved)) => {
            info!(file = %persist::path(dir).display(), vips = saved.vips.len(), "autoscaler: state restored");
            saved
                .vips
                .into_iter()
                .map(|(k, saved)| {
                    (
                        k,
                        Parked {
                            saved,
                            from_disk: true,
                        },
                    )
                })
                .collect()
        }
        Err(e) => {
            let aside = persist::set_aside(dir)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|e| format!("not moved aside: {e}"));
            warn!(error = %e, kept_as = %aside, "autoscaler: state file ignored; backends it listed are not released (check the file and release them by hand)");
            BTreeMap::new()
        }
    }
}

/// Write the state if it changed since the last successful write.
fn save(dir: &std::path::Path, now: &Saved, written: &mut Saved) {
    if now == written {
        return;
    }
    match persist::write(dir, now) {
        Ok(()) => *written = now.clone(),
        Err(e) => {
            warn!(error = %e, file = %persist::path(dir).display(), "autoscaler: writing its state failed (retried at the next change)");
        }
    }
}

/// Everything to persist now.
fn collect(scalers: &BTreeMap<String, Scaler>, parked: &BTreeMap<String, Parked>) -> Saved {
    let mut vips: BTreeMap<String, VipSaved> = parked
        .iter()
        .map(|(k, p)| (k.clone(), p.saved.clone()))
        .collect();
    for (k, s) in scalers {
        vips.insert(k.clone(), s.saved());
    }
    vips.retain(|_, v| !v.is_empty());
    Saved {
        version: persist::VERSION,
        vips,
    }
}

async fn snapshot(calls: &mpsc::Sender<Call>) -> Option<(Config, Status)> {
    let (tx, rx) = oneshot::channel();
    calls.send(Call::Snapshot(tx)).await.ok()?;
    rx.await.ok()
}

async fn modify(calls: &mpsc::Sender<Call>, why: String, change: Change) -> Result<String, String> {
    let (reply, rx) = oneshot::channel();
    calls
        .send(Call::Modify { why, change, reply })
        .await
        .map_err(|_| "the daemon is stopping".to_owned())?;
    rx.await.map_err(|_| "the daemon is stopping".to_owned())?
}

async fn run(calls: mpsc::Sender<Call>, clock: Arc<dyn Clock>, report: Report, dir: PathBuf) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(64);
    let mut task = Task::new(calls, clock, report, dir, done_tx);
    loop {
        // Written before anyone can see the change in the report.
        task.save();
        tokio::select! {
            _ = tick.tick() => {}
            Some(d) = done_rx.recv() => {
                task.on_done(d);
                continue;
            }
        }
        let Some((config, status)) = snapshot(&task.calls).await else {
            return;
        };
        task.tick(&config, &status).await;
    }
}

/// The autoscaler task's state ([`run`]): a scaler per scaled VIP, the state of VIPs
/// without one, and what was last written to the state file.
struct Task {
    calls: mpsc::Sender<Call>,
    clock: Arc<dyn Clock>,
    report: Report,
    dir: PathBuf,
    done_tx: mpsc::Sender<Done>,
    scalers: BTreeMap<String, Scaler>,
    parked: BTreeMap<String, Parked>,
    written: Saved,
    warned_parked: bool,
}

impl Task {
    fn new(
        calls: mpsc::Sender<Call>,
        clock: Arc<dyn Clock>,
        report: Report,
        dir: PathBuf,
        done_tx: mpsc::Sender<Done>,
    ) -> Self {
        let scalers = BTreeMap::new();
        let parked = load(&dir);
        let written = collect(&scalers, &parked);
        Self {
            calls,
            clock,
            report,
            dir,
            done_tx,
            scalers,
            parked,
            written,
            warned_parked: false,
        }
    }

    /// Write the state file if it changed.
    fn save(&mut self) {
        save(
            &self.dir,
            &collect(&self.scalers, &self.parked),
            &mut self.written,
        );
    }

    /// The parked record of `vip` (a new, empty one if there is none).
    fn parked(&mut self, vip: String) -> &mut Parked {
        self.parked.entry(vip).or_insert(Parked {
            saved: VipSaved::default(),
            from_disk: false,
        })
    }

    /// A background scale-out or release finished.
    fn on_done(&mut self, d: Done) {
        let now = self.clock.now();
        match d {
            Done::Created { vip, candidate } => {
                if let Some(s) = self.scalers.get_mut(&vip) {
                    s.owned.insert(candidate.address, candidate);
                } else {
                    let p = self.parked(vip);
                    p.saved.owned.retain(|c| c.address != candidate.address);
                    p.saved.owned.push(candidate);
                }
            }
            Done::Released {
                vip,
                candidate,
                outcome,
            } => self.on_released(now, vip, candidate, outcome),
            Done::Ready {
                vip,
                candidate,
                took,
            } => {
                if let Some(s) = self.scalers.get_mut(&vip) {
                    s.pending = s.pending.saturating_sub(1);
                    s.event(
                        now,
                        format!(
                            "{} passed its checks after {} ms",
                            candidate.address,
                            took.as_millis()
                        ),
                    );
                    s.ready.push(candidate);
                }
            }
            Done::Failed {
                vip,
                candidate,
                why,
            } => {
                if let Some(s) = self.scalers.get_mut(&vip) {
                    s.pending = s.pending.saturating_sub(1);
                    s.report.failures += 1;
                    warn!(vip, error = %why, "autoscaler: scale-out failed");
                    s.event(now, format!("scale-out failed: {why}"));
                    if let Some(c) = candidate {
                        release(&vip, Arc::clone(&s.provider), c, &self.done_tx);
                    }
                }
            }
        }
    }

    /// A release to the provider finished: a failed one keeps the backend owned (so
    /// recorded, and released again at the next start).
    fn on_released(
        &mut self,
        now: Time,
        vip: String,
        candidate: Candidate,
        outcome: Result<(), String>,
    ) {
        match &outcome {
            Ok(()) => {
                info!(vip, backend = %candidate.address, "autoscaler: backend released to the provider");
            }
            Err(e) => {
                warn!(vip, backend = %candidate.address, error = %e, "autoscaler: releasing the backend failed; it stays recorded and is released again at the next start");
            }
        }
        if let Some(s) = self.scalers.get_mut(&vip) {
            match outcome {
                Ok(()) => {
                    s.event(
                        now,
                        format!("{} released to the provider", candidate.address),
                    );
                    s.owned.remove(&candidate.address);
                }
                Err(why) => {
                    s.report.failures += 1;
                    s.report.release_failures += 1;
                    s.event(
                        now,
                        format!(
                            "releasing {} failed (retried at the next start): {why}",
                            candidate.address
                        ),
                    );
                    s.owned.insert(candidate.address, candidate);
                }
            }
        } else {
            // The VIP's scaler went meanwhile: its parked record follows.
            let p = self.parked(vip);
            p.saved.owned.retain(|c| c.address != candidate.address);
            if outcome.is_err() {
                p.saved.owned.push(candidate);
            }
        }
    }

    /// One tick on a snapshot of the daemon: follow the configuration, step every scaled
    /// VIP, save, and publish the report.
    async fn tick(&mut self, config: &Config, status: &Status) {
        let now = self.clock.now();
        self.follow(config, now);
        self.warn_parked_once();
        for (name, s) in &mut self.scalers {
            let (Some(v), Some(vs)) = (
                config.vips.iter().find(|v| &v.name == name),
                status.vips.iter().find(|vs| &vs.name == name),
            ) else {
                continue;
            };
            tick::step(name, s, v, vs, now, &self.calls, &self.done_tx).await;
        }
        self.save();
        self.publish_report();
    }

    /// Follow the configuration: new scaled VIPs, changed or removed sections. A dropped
    /// scaler's state is parked for the next scaler of the VIP (or the next start).
    fn follow(&mut self, config: &Config, now: Time) {
        let gone: Vec<String> = self
            .scalers
            .iter()
            .filter(|(name, s)| {
                !config
                    .vips
                    .iter()
                    .any(|v| &v.name == *name && v.autoscale.as_ref() == Some(&s.spec))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(s) = self.scalers.remove(&name) {
                let saved = s.saved();
                if !saved.is_empty() {
                    self.parked.insert(
                        name,
                        Parked {
                            saved,
                            from_disk: false,
                        },
                    );
                }
            }
        }
        for v in &config.vips {
            if let Some(a) = &v.autoscale
                && !self.scalers.contains_key(&v.name)
            {
                let s = self.start_scaler(v, a, now);
                self.scalers.insert(v.name.clone(), s);
            }
        }
    }

    /// A scaler for a newly scaled VIP, from its parked state if any (reconciled with the
    /// configuration when it comes from the file: what is gone is released now).
    fn start_scaler(&mut self, v: &VipConfig, a: &AutoscaleConfig, now: Time) -> Scaler {
        let (owned, draining, release_now) = match self.parked.remove(&v.name) {
            None => Default::default(),
            Some(Parked {
                saved,
                from_disk: true,
            }) => {
                let r = persist::restore(&saved, v);
                for n in &r.notes {
                    info!(vip = %v.name, "autoscaler: after the restart, {n}");
                }
                (r.owned, r.draining, r.release)
            }
            Some(Parked {
                saved,
                from_disk: false,
            }) => (
                saved.owned.into_iter().map(|c| (c.address, c)).collect(),
                saved.draining.into_iter().map(|c| (c.address, c)).collect(),
                Vec::new(),
            ),
        };
        let mut s = Scaler::new(&v.name, a, now, owned, draining);
        info!(vip = %v.name, min = a.min, max = a.max, owned = s.owned.len(), draining = s.draining.len(), "autoscaler: managing the VIP");
        for c in release_now {
            s.event(now, format!("{} released after the restart", c.address));
            release(&v.name, Arc::clone(&s.provider), c, &self.done_tx);
        }
        s
    }

    /// Once, at the first tick: saved state for VIPs that are not scaled is kept, not
    /// released; say so.
    fn warn_parked_once(&mut self) {
        if self.warned_parked {
            return;
        }
        self.warned_parked = true;
        for (name, p) in self.parked.iter().filter(|(_, p)| p.from_disk) {
            let list = |l: &[Candidate]| {
                l.iter()
                    .map(|c| c.address.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            warn!(vip = %name, owned = %list(&p.saved.owned), draining = %list(&p.saved.draining), "autoscaler: saved state for a VIP that is not scaled now; kept in the state file and not released until it is scaled again");
        }
    }

    /// The shared report (`sluice autoscale status`, metrics) from the scalers.
    fn publish_report(&self) {
        let mut r = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        r.vips = self
            .scalers
            .values()
            .map(|s| {
                let mut rep = s.report.clone();
                rep.decisions = s.decisions.iter().cloned().collect();
                rep.events = s.events.iter().cloned().collect();
                rep.draining = s.draining.keys().copied().collect();
                rep.owned = s.owned.keys().copied().collect();
                rep.provisioning = s.pending;
                rep
            })
            .collect();
    }
}

/// Release in the background; the outcome comes back as [`Done::Released`] (logged,
/// counted, and the backend stays owned, so recorded, if it failed).
fn release(vip: &str, p: Arc<dyn Provider>, c: Candidate, done: &mpsc::Sender<Done>) {
    let (vip, done) = (vip.to_owned(), done.clone());
    tokio::spawn(async move {
        let outcome = p.release(c.clone()).await.map_err(|e| e.to_string());
        let _ = done
            .send(Done::Released {
                vip,
                candidate: c,
                outcome,
            })
            .await;
    });
}

/// Probe a candidate until `rise` checks in a row pass, or `timeout`.
async fn ready(address: IpAddr, spec: &HealthConfig, timeout: Duration) -> Result<(), String> {
    if spec.check == CheckKind::None {
        return Ok(());
    }
    let interval = Duration::from_millis(u64::from(spec.interval_ms));
    let mut streak = 0;
    let mut last = String::new();
    let run = async {
        loop {
            let (ok, why) = crate::health::probe(address, spec).await;
            streak = if ok { streak + 1 } else { 0 };
            last = why;
            if streak >= spec.rise {
                return;
            }
            tokio::time::sleep(interval).await;
        }
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| {
        format!(
            "did not pass its checks within {} ms (last: {last})",
            timeout.as_millis()
        )
    })
}

/// Ask every serving backend for its metric (concurrently); `None` for those that do not
/// answer in time or answer something that is not a number.
async fn fetch_all(backends: &[IpAddr], m: &BackendMetricConfig) -> Vec<Option<f64>> {
    let mut tasks = Vec::new();
    for &b in backends {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let limit = Duration::from_millis(u64::from(m.timeout_ms));
            tokio::time::timeout(limit, fetch(b, &m))
                .await
                .ok()
                .flatten()
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.ok().flatten());
    }
    out
}

/// The largest backend-metric answer read (a number needs a few bytes).
const METRIC_BODY_LIMIT: usize = 64 * 1024;

/// `GET path` on the backend's own address: the body, a number.
pub async fn fetch(backend: IpAddr, m: &BackendMetricConfig) -> Option<f64> {
    let answer = crate::health::get(
        backend,
        m.port,
        &m.path,
        "sluice-autoscale",
        Some(METRIC_BODY_LIMIT),
    )
    .await
    .ok()?;
    metric_value(&answer)
}

/// The number a backend-metric `answer` gives: a 2xx status and a finite number as the
/// body (blanks around it allowed).
pub fn metric_value(answer: &crate::health::Answer) -> Option<f64> {
    if !(200..300).contains(&answer.status) {
        return None;
    }
    let body = answer.body.as_ref()?;
    String::from_utf8_lossy(body)
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests;
