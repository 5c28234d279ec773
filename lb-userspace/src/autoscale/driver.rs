//! The daemon's autoscaler task. It owns no map and no configuration: every tick it asks
//! the daemon loop for a snapshot (configuration and status), and every change it wants is
//! a [`Call::Modify`] that the loop applies like an API edit (validated with the config
//! file's rules, published, persisted, logged). Scale-out: provider → probe the candidate
//! (`rise` passing checks in a row within `ready_timeout_ms`) → add it (slow start is the
//! daemon's); scale-in: set the chosen backend draining with `drain_remove`, and once the
//! daemon has removed it (drained, or the VIP's drain deadline), release it to the provider.

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::{mpsc, oneshot},
};
use tracing::{info, warn};

use super::{
    BackendView, Controller, Decision, Phase,
    clock::{Clock, Time},
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
    /// The running configuration and a status snapshot.
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
    pub decisions_up: u64,
    pub decisions_down: u64,
    pub decisions_hold: u64,
    pub added: u64,
    pub removed: u64,
    pub failures: u64,
    /// The last decisions, newest last.
    pub decisions: Vec<Decision>,
    /// The last actions and failures, newest last.
    pub events: Vec<String>,
}

/// The shared report (the daemon answers the API and renders metrics from it).
pub type Report = Arc<Mutex<AutoscaleStatus>>;

enum Done {
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
    draining: BTreeMap<IpAddr, Option<[u8; 6]>>,
    desired: u32,
    report: VipReport,
    events: VecDeque<String>,
    decisions: VecDeque<Decision>,
}

impl Scaler {
    fn new(name: &str, spec: &AutoscaleConfig, now: Time) -> Result<Self, String> {
        Ok(Self {
            controller: Controller::new(spec.clone())?,
            provider: Arc::from(provider::from_config(name, &spec.provider)),
            spec: spec.clone(),
            next_eval: now,
            prev: None,
            pending: 0,
            ready: Vec::new(),
            draining: BTreeMap::new(),
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
        })
    }

    fn event(&mut self, now: Time, what: String) {
        if self.events.len() == KEEP {
            self.events.pop_front();
        }
        self.events.push_back(format!("{now} {what}"));
    }
}

/// Start the autoscaler task; it ends when the daemon loop drops its end of `calls`.
pub fn spawn(
    calls: mpsc::Sender<Call>,
    clock: Arc<dyn Clock>,
) -> (tokio::task::JoinHandle<()>, Report) {
    let report = Report::default();
    let r = Arc::clone(&report);
    let task = tokio::spawn(async move { run(calls, clock, r).await });
    (task, report)
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

async fn run(calls: mpsc::Sender<Call>, clock: Arc<dyn Clock>, report: Report) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(64);
    let mut scalers: BTreeMap<String, Scaler> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(d) = done_rx.recv() => {
                let now = clock.now();
                match d {
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
                            release(&vip, Arc::clone(&s.provider), c);
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
        // Follow the configuration: new scaled VIPs, changed or removed sections.
        scalers.retain(|name, s| {
            config
                .vips
                .iter()
                .any(|v| &v.name == name && v.autoscale.as_ref() == Some(&s.spec))
        });
        for v in &config.vips {
            if let Some(a) = &v.autoscale
                && !scalers.contains_key(&v.name)
            {
                match Scaler::new(&v.name, a, now) {
                    Ok(s) => {
                        info!(vip = %v.name, min = a.min, max = a.max, "autoscaler: managing the VIP");
                        scalers.insert(v.name.clone(), s);
                    }
                    Err(e) => warn!(vip = %v.name, error = %e, "autoscaler: cannot manage the VIP"),
                }
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
        let mut r = report.lock().unwrap_or_else(PoisonError::into_inner);
        r.vips = scalers
            .values()
            .map(|s| {
                let mut rep = s.report.clone();
                rep.decisions = s.decisions.iter().cloned().collect();
                rep.events = s.events.iter().cloned().collect();
                rep.draining = s.draining.keys().copied().collect();
                rep.provisioning = s.pending;
                rep
            })
            .collect();
    }
}

fn release(vip: &str, p: Arc<dyn Provider>, c: Candidate) {
    let vip = vip.to_owned();
    tokio::spawn(async move {
        match p.release(c.clone()).await {
            Ok(()) => {
                info!(vip, backend = %c.address, "autoscaler: backend released to the provider")
            }
            Err(e) => {
                warn!(vip, backend = %c.address, error = %e, "autoscaler: releasing the backend failed")
            }
        }
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
    let gone: Vec<(IpAddr, Option<[u8; 6]>)> = s
        .draining
        .iter()
        .filter(|(a, _)| !v.backends.iter().any(|b| b.address == **a))
        .map(|(a, m)| (*a, *m))
        .collect();
    for (address, mac) in gone {
        s.draining.remove(&address);
        s.report.removed += 1;
        s.event(now, format!("{address} drained and removed; released"));
        release(name, Arc::clone(&s.provider), Candidate { address, mac });
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
                owned: s.provider.owns(b.address),
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
            s.event(now, format!("{} no longer needed; released", c.address));
            release(name, Arc::clone(&s.provider), c.clone());
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
                        release(name, Arc::clone(&s.provider), c.clone());
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
                Ok(c) => match ready(c.address, &health, timeout).await {
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
                    s.draining.insert(*a, mac);
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

/// `GET path` on the backend's own address: the body, a number.
pub async fn fetch(backend: IpAddr, m: &BackendMetricConfig) -> Option<f64> {
    let mut s = tokio::net::TcpStream::connect((backend, m.port))
        .await
        .ok()?;
    let host = match backend {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sluice-autoscale\r\nConnection: close\r\n\r\n",
        m.path
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.take(64 * 1024).read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.lines().next()?.split_whitespace().nth(1)?;
    if !code.starts_with('2') {
        return None;
    }
    body.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
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
}
