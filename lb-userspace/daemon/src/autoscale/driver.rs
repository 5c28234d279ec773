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
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::{
    BackendView, Controller, Decision, Phase,
    clock::{Clock, Time},
    persist::{self, Saved, VipSaved},
    policy::{Metrics, Sample},
    provider::{self, Candidate, Provider},
    reconcile,
};
use crate::{
    config::{
        BackendConfig, BackendState, CheckKind, Config, HealthConfig, VipConfig,
        autoscale::{AutoscaleConfig, BackendMetricConfig},
    },
    health::Health,
    state::{Status, VipStatus},
};

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
    let mut scalers: BTreeMap<String, Scaler> = BTreeMap::new();
    let mut parked = load(&dir);
    let mut written = collect(&scalers, &parked);
    let mut warned_parked = false;
    loop {
        // Written before anyone can see the change in the report.
        save(&dir, &collect(&scalers, &parked), &mut written);
        tokio::select! {
            _ = tick.tick() => {}
            Some(d) = done_rx.recv() => {
                let now = clock.now();
                match d {
                    Done::Created { vip, candidate } => if let Some(s) = scalers.get_mut(&vip) {
                        s.owned.insert(candidate.address, candidate);
                    } else {
                        let p = parked.entry(vip).or_insert(Parked { saved: VipSaved::default(), from_disk: false });
                        p.saved.owned.retain(|c| c.address != candidate.address);
                        p.saved.owned.push(candidate);
                    },
                    Done::Released { vip, candidate, outcome } => {
                        match &outcome {
                            Ok(()) => info!(vip, backend = %candidate.address, "autoscaler: backend released to the provider"),
                            Err(e) => warn!(vip, backend = %candidate.address, error = %e, "autoscaler: releasing the backend failed; it stays recorded and is released again at the next start"),
                        }
                        if let Some(s) = scalers.get_mut(&vip) {
                            match outcome {
                                Ok(()) => {
                                    s.event(now, format!("{} released to the provider", candidate.address));
                                    s.owned.remove(&candidate.address);
                                }
                                Err(why) => {
                                    s.report.failures += 1;
                                    s.report.release_failures += 1;
                                    s.event(now, format!("releasing {} failed (retried at the next start): {why}", candidate.address));
                                    s.owned.insert(candidate.address, candidate);
                                }
                            }
                        } else {
                            // The VIP's scaler went meanwhile: its parked record follows.
                            let p = parked.entry(vip).or_insert(Parked { saved: VipSaved::default(), from_disk: false });
                            p.saved.owned.retain(|c| c.address != candidate.address);
                            if outcome.is_err() {
                                p.saved.owned.push(candidate);
                            }
                        }
                    }
                    Done::Ready { vip, candidate, took } => if let Some(s) = scalers.get_mut(&vip) {
                        s.pending = s.pending.saturating_sub(1);
                        s.event(now, format!("{} passed its checks after {} ms", candidate.address, took.as_millis()));
                        s.ready.push(candidate);
                    },
                    Done::Failed { vip, candidate, why } => if let Some(s) = scalers.get_mut(&vip) {
                        s.pending = s.pending.saturating_sub(1);
                        s.report.failures += 1;
                        warn!(vip, error = %why, "autoscaler: scale-out failed");
                        s.event(now, format!("scale-out failed: {why}"));
                        if let Some(c) = candidate {
                            release(&vip, Arc::clone(&s.provider), c, &done_tx);
                        }
                    },
                }
                continue;
            }
        }
        let Some((config, status)) = snapshot(&calls).await else {
            return;
        };
        let now = clock.now();
        // Follow the configuration: new scaled VIPs, changed or removed sections. A dropped
        // scaler's state is parked for the next scaler of the VIP (or the next start).
        let gone: Vec<String> = scalers
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
            if let Some(s) = scalers.remove(&name) {
                let saved = s.saved();
                if !saved.is_empty() {
                    parked.insert(
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
                && !scalers.contains_key(&v.name)
            {
                let (owned, draining, release_now) = match parked.remove(&v.name) {
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
                    release(&v.name, Arc::clone(&s.provider), c, &done_tx);
                }
                scalers.insert(v.name.clone(), s);
            }
        }
        if !warned_parked {
            warned_parked = true;
            for (name, p) in parked.iter().filter(|(_, p)| p.from_disk) {
                let list = |l: &[Candidate]| {
                    l.iter()
                        .map(|c| c.address.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                warn!(vip = %name, owned = %list(&p.saved.owned), draining = %list(&p.saved.draining), "autoscaler: saved state for a VIP that is not scaled now; kept in the state file and not released until it is scaled again");
            }
        }
        for (name, s) in &mut scalers {
            let (Some(v), Some(vs)) = (
                config.vips.iter().find(|v| &v.name == name),
                status.vips.iter().find(|vs| &vs.name == name),
            ) else {
                continue;
            };
            step(name, s, v, vs, now, &calls, &done_tx).await;
        }
        save(&dir, &collect(&scalers, &parked), &mut written);
        let mut r = report.lock().unwrap_or_else(PoisonError::into_inner);
        r.vips = scalers
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

/// One VIP, one tick.
async fn step(
    name: &str,
    s: &mut Scaler,
    v: &VipConfig,
    vs: &VipStatus,
    now: Time,
    calls: &mpsc::Sender<Call>,
    done: &mpsc::Sender<Done>,
) {
    // Drained backends the daemon removed go back to the provider.
    let gone: Vec<Candidate> = s
        .draining
        .values()
        .filter(|c| !v.backends.iter().any(|b| b.address == c.address))
        .cloned()
        .collect();
    for c in gone {
        s.draining.remove(&c.address);
        s.report.removed += 1;
        s.event(now, format!("{} drained and removed; releasing", c.address));
        // The provider's record (e.g. the MAC `create` printed) is the better one.
        let c = s.owned.get(&c.address).cloned().unwrap_or(c);
        release(name, Arc::clone(&s.provider), c, done);
    }
    let views: Vec<BackendView> = v
        .backends
        .iter()
        .map(|b| {
            let st = vs.backends.iter().find(|x| x.address == b.address);
            BackendView {
                address: b.address,
                phase: if b.state == BackendState::Draining {
                    Phase::Draining
                } else {
                    Phase::Active
                },
                healthy: st.is_none_or(|x| x.health == Health::Up),
                active_connections: st.map_or(0, |x| x.active),
                owned: s.owned.contains_key(&b.address) || s.provider.owns(b.address),
            }
        })
        .collect();
    let serving = super::serving(&views);
    s.report.serving = serving;

    // Candidates that passed their checks join if still wanted, else go back.
    if !s.ready.is_empty() {
        let want = s.desired.saturating_sub(serving) as usize;
        let ready = std::mem::take(&mut s.ready);
        let (join, back) = ready.split_at(want.min(ready.len()));
        for c in back {
            s.event(now, format!("{} no longer needed; releasing", c.address));
            release(name, Arc::clone(&s.provider), c.clone(), done);
        }
        if !join.is_empty() {
            let add: Vec<Candidate> = join.to_vec();
            let weight = s.spec.weight;
            let vip_name = name.to_owned();
            let list: Vec<String> = add.iter().map(|c| c.address.to_string()).collect();
            let change: Change = Box::new(move |c: &mut Config| {
                let v = c
                    .vips
                    .iter_mut()
                    .find(|v| v.name == vip_name)
                    .ok_or("the VIP is gone")?;
                for cand in &add {
                    v.backends.push(BackendConfig {
                        address: cand.address,
                        weight,
                        mac: if v.forwarding == crate::config::Forwarding::Dsr {
                            cand.mac
                        } else {
                            None
                        },
                        state: BackendState::Active,
                        drain_remove: false,
                        health: None,
                    });
                }
                Ok(())
            });
            match modify(
                calls,
                format!("autoscaler: add {}", list.join(", ")),
                change,
            )
            .await
            {
                Ok(what) => {
                    s.report.added += join.len() as u64;
                    info!(vip = name, backends = %list.join(", "), edit = %what, "autoscaler: backends added");
                    s.event(now, format!("added {}", list.join(", ")));
                }
                Err(why) => {
                    s.report.failures += 1;
                    warn!(vip = name, error = %why, "autoscaler: adding backends rejected");
                    s.event(now, format!("adding {} rejected: {why}", list.join(", ")));
                    for c in join {
                        release(name, Arc::clone(&s.provider), c.clone(), done);
                    }
                }
            }
            return;
        }
    }

    if now < s.next_eval {
        return;
    }
    s.next_eval = now.plus_ms(u64::from(s.spec.interval_ms));
    let mut metrics = Metrics {
        active_connections: views
            .iter()
            .filter(|b| b.phase == Phase::Active && b.healthy)
            .map(|b| b.active_connections as f64)
            .sum(),
        ..Metrics::default()
    };
    if let Some((t, nf, p, by)) = s.prev {
        let secs = now.since(t) as f64 / 1000.0;
        if secs > 0.0 {
            metrics.new_connections_per_s = vs.new_flows.saturating_sub(nf) as f64 / secs;
            metrics.packets_per_s = vs.packets.saturating_sub(p) as f64 / secs;
            metrics.bytes_per_s = vs.bytes.saturating_sub(by) as f64 / secs;
        }
    }
    s.prev = Some((now, vs.new_flows, vs.packets, vs.bytes));
    if let Some(m) = &s.spec.backend_metric {
        let serving_addrs: Vec<IpAddr> = views
            .iter()
            .filter(|b| b.phase == Phase::Active && b.healthy)
            .map(|b| b.address)
            .collect();
        metrics.backend = fetch_all(&serving_addrs, m).await;
    }
    let d = s.controller.decide(&Sample {
        now,
        current: serving,
        metrics,
    });
    s.desired = d.desired;
    s.report.desired = d.desired;
    s.report.min = d.min;
    s.report.max = d.max;
    match d.direction() {
        "up" => s.report.decisions_up += 1,
        "down" => s.report.decisions_down += 1,
        _ => s.report.decisions_hold += 1,
    }
    if d.desired != d.current {
        info!(vip = name, current = d.current, desired = d.desired, reason = %d.reason, inputs = ?d.metrics, said = ?d.said, "autoscaler: decision");
    }
    if s.decisions.len() == KEEP {
        s.decisions.pop_front();
    }
    s.decisions.push_back(d);

    let plan = reconcile(s.desired, &views, s.pending);
    let in_use: Vec<IpAddr> = v.backends.iter().map(|b| b.address).collect();
    for _ in 0..plan.provision {
        s.pending += 1;
        let (p, vip, health, timeout) = (
            Arc::clone(&s.provider),
            name.to_owned(),
            v.health.clone(),
            Duration::from_millis(u64::from(s.spec.ready_timeout_ms)),
        );
        let (in_use, done) = (in_use.clone(), done.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let outcome = match p.acquire(&in_use).await {
                Err(e) => Done::Failed {
                    vip,
                    candidate: None,
                    why: e.to_string(),
                },
                Ok(c) => match done
                    .send(Done::Created {
                        vip: vip.clone(),
                        candidate: c.clone(),
                    })
                    .await
                {
                    Err(_) => return,
                    Ok(()) => match ready(c.address, &health, timeout).await {
                        Ok(()) => Done::Ready {
                            vip,
                            candidate: c,
                            took: start.elapsed(),
                        },
                        Err(why) => Done::Failed {
                            vip,
                            why: format!("{}: {why}", c.address),
                            candidate: Some(c),
                        },
                    },
                },
            };
            let _ = done.send(outcome).await;
        });
    }
    if !plan.drain.is_empty() {
        let drain = plan.drain.clone();
        let vip_name = name.to_owned();
        let list: Vec<String> = drain.iter().map(ToString::to_string).collect();
        let change: Change = Box::new(move |c: &mut Config| {
            let v = c
                .vips
                .iter_mut()
                .find(|v| v.name == vip_name)
                .ok_or("the VIP is gone")?;
            for b in &mut v.backends {
                if drain.contains(&b.address) {
                    b.state = BackendState::Draining;
                    b.drain_remove = true;
                }
            }
            Ok(())
        });
        match modify(
            calls,
            format!("autoscaler: drain {}", list.join(", ")),
            change,
        )
        .await
        {
            Ok(_) => {
                for a in &plan.drain {
                    let mac = v
                        .backends
                        .iter()
                        .find(|b| b.address == *a)
                        .and_then(|b| b.mac);
                    s.draining.insert(*a, Candidate { address: *a, mac });
                }
                info!(vip = name, backends = %list.join(", "), "autoscaler: draining (fewest active connections)");
                s.event(now, format!("draining {}", list.join(", ")));
            }
            Err(why) => {
                s.report.failures += 1;
                warn!(vip = name, error = %why, "autoscaler: draining rejected");
                s.event(now, format!("draining {} rejected: {why}", list.join(", ")));
            }
        }
    }
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
    if !(200..300).contains(&answer.status) {
        return None;
    }
    let body = answer.body?;
    String::from_utf8_lossy(&body)
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn backend_metric_over_http() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            for body in ["42.5\n", "not a number"] {
                let (mut c, _) = l.accept().await.unwrap();
                let mut b = [0u8; 512];
                let n = c.read(&mut b).await.unwrap();
                assert!(String::from_utf8_lossy(&b[..n]).starts_with("GET /queue HTTP/1.1\r\n"));
                c.write_all(format!("HTTP/1.1 200 OK\r\n\r\n{body}").as_bytes())
                    .await
                    .unwrap();
            }
        });
        let m = BackendMetricConfig {
            port,
            path: "/queue".to_owned(),
            timeout_ms: 500,
        };
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(fetch_all(&[lo], &m).await, vec![Some(42.5)]);
        assert_eq!(fetch_all(&[lo], &m).await, vec![None]);
        // Nobody listens any more: no answer.
        assert_eq!(fetch_all(&[lo], &m).await, vec![None]);
    }

    /// One local server answer per connection (the request is read, then `answer` sent and
    /// the connection closed).
    async fn answering(answers: Vec<Vec<u8>>) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            for a in answers {
                let (mut c, _) = l.accept().await.unwrap();
                let mut b = [0u8; 512];
                let _ = c.read(&mut b).await.unwrap();
                c.write_all(&a).await.unwrap();
            }
        });
        port
    }

    /// A chunked answer is read whole (the hand-written client saw no metric in it), with
    /// or without a length; a non-2xx status or a body over the limit gives no value.
    #[tokio::test]
    async fn backend_metric_chunked_and_limits() {
        let big = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
            METRIC_BODY_LIMIT + 1,
            "1".repeat(METRIC_BODY_LIMIT + 1)
        );
        let port = answering(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n17\r\n3\r\n.25\r\n0\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n7.5".to_vec(),
            b"HTTP/1.1 503 Busy\r\nContent-Length: 1\r\n\r\n9".to_vec(),
            big.into_bytes(),
        ])
        .await;
        let m = BackendMetricConfig {
            port,
            path: "/queue".to_owned(),
            timeout_ms: 2000,
        };
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(fetch_all(&[lo], &m).await, vec![Some(17.25)], "chunked");
        assert_eq!(fetch_all(&[lo], &m).await, vec![Some(7.5)], "length");
        assert_eq!(fetch_all(&[lo], &m).await, vec![None], "503");
        assert_eq!(fetch_all(&[lo], &m).await, vec![None], "over the limit");
    }
}
