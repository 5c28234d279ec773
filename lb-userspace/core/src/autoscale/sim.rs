//! The offline simulator (`sluice simulate`): a load trace replayed through the same
//! [`Controller`] and [`reconcile`] as the daemon, with a simple capacity model.
//!
//! Model, per step (`sim.step_ms`, 1 s by default):
//! - the trace gives the offered new connections per second and their mean duration,
//!   linearly interpolated between its points;
//! - new connections are spread evenly over the serving backends; connections end at
//!   rate 1 / duration (exponential durations: the fluid form of Little's law, so the
//!   steady state is `active = rate × duration`);
//! - a backend serves `sim.capacity` connections at 100 % utilisation;
//! - scale-out takes `sim.startup_ms` from the decision (provisioning and health checks);
//!   a backend that becomes ready when it is no longer wanted is given back unused;
//! - scale-in drains: the backend takes no new connections and leaves when its last one
//!   ends (under half a connection left in the fluid model) or at `sim.drain_timeout_ms`;
//! - packets/s = open connections × `packets_per_connection`, bytes/s = packets ×
//!   `bytes_per_packet`;
//! - the load reports (the `load_*` metrics) read each serving backend as a model server
//!   whose batch holds `sim.capacity` requests (one per open connection): running =
//!   min(open, capacity), waiting = the rest, KV-cache use = running / capacity × 100 %;
//! - a backend costs from the decision that provisioned it until it is released.
//!
//! Figures: backends over time, utilisation (open connections / serving capacity), time
//! over target (the per-backend value of the target metric above the target × (1 +
//! tolerance)), time overloaded (above capacity), backend-seconds used.

use std::{collections::VecDeque, fmt::Write as _, path::Path};

use super::{
    BackendView, Controller, Phase, Plan,
    clock::Time,
    policy::{Metrics, Sample},
    reconcile,
};
use crate::config::autoscale::{AutoscaleConfig, MetricKind, SimSettings, TargetConfig};

/// One point of a load trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TracePoint {
    pub time_s: f64,
    pub conns_per_s: f64,
    pub mean_duration_s: f64,
}

/// Parse a trace: CSV `time_s,conns_per_s,mean_duration_s`, an optional header line,
/// `#` comments; times strictly increasing from 0. Errors name the line.
pub fn parse_trace(text: &str, origin: &str) -> Result<Vec<TracePoint>, String> {
    let mut out: Vec<TracePoint> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with("time") {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [t, r, d] = f.as_slice() else {
            return Err(format!(
                "{origin}:{n}: expected 3 fields time_s,conns_per_s,mean_duration_s, got {}",
                f.len()
            ));
        };
        let num = |what: &str, s: &str| -> Result<f64, String> {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("{origin}:{n}: {what} {s:?} is not a number ≥ 0"))
        };
        let p = TracePoint {
            time_s: num("time_s", t)?,
            conns_per_s: num("conns_per_s", r)?,
            mean_duration_s: num("mean_duration_s", d)?,
        };
        if p.mean_duration_s <= 0.0 {
            return Err(format!("{origin}:{n}: mean_duration_s must be more than 0"));
        }
        match out.last() {
            None if p.time_s != 0.0 => {
                return Err(format!("{origin}:{n}: the trace must start at time 0"));
            }
            Some(prev) if p.time_s <= prev.time_s => {
                return Err(format!(
                    "{origin}:{n}: time {} is not after the previous point's {}",
                    p.time_s, prev.time_s
                ));
            }
            _ => {}
        }
        out.push(p);
    }
    if out.len() < 2 {
        return Err(format!("{origin}: a trace needs at least two points"));
    }
    Ok(out)
}

/// The trace at `t` seconds (linear between points, the last point after the end).
fn at(trace: &[TracePoint], t: f64) -> (f64, f64) {
    let i = trace.partition_point(|p| p.time_s <= t);
    if i == 0 {
        return (trace[0].conns_per_s, trace[0].mean_duration_s);
    }
    let a = trace[i - 1];
    let Some(b) = trace.get(i) else {
        return (a.conns_per_s, a.mean_duration_s);
    };
    let x = (t - a.time_s) / (b.time_s - a.time_s);
    (
        a.conns_per_s + x * (b.conns_per_s - a.conns_per_s),
        a.mean_duration_s + x * (b.mean_duration_s - a.mean_duration_s),
    )
}

#[derive(Clone, Debug)]
struct SimBackend {
    id: u32,
    conns: f64,
    phase: Phase,
    drain_since: u64,
}

/// The simulated backends: those serving or draining, and those being provisioned.
struct Fleet {
    backends: Vec<SimBackend>,
    /// Ready times of backends being provisioned.
    starting: VecDeque<u64>,
    next_id: u32,
}

impl Fleet {
    /// `initial` serving backends.
    fn new(initial: u32) -> Self {
        let mut fleet = Fleet {
            backends: Vec::new(),
            starting: VecDeque::new(),
            next_id: 0,
        };
        for _ in 0..initial {
            fleet.add_serving();
        }
        fleet
    }

    fn add_serving(&mut self) {
        self.next_id += 1;
        self.backends.push(SimBackend {
            id: self.next_id,
            conns: 0.0,
            phase: Phase::Active,
            drain_since: 0,
        });
    }

    fn serving(&self) -> u32 {
        self.backends
            .iter()
            .filter(|b| b.phase == Phase::Active)
            .count() as u32
    }

    /// Backends ready by `t_ms` join (if still wanted) or are given back.
    fn admit_ready(&mut self, t_ms: u64, desired: u32) {
        while self.starting.front().is_some_and(|r| *r <= t_ms) {
            self.starting.pop_front();
            if self.serving() < desired {
                self.add_serving();
            }
        }
    }

    /// One step of connections: arrivals on serving backends, departures everywhere.
    fn flow(&mut self, rate: f64, duration: f64, dt: f64) {
        let serving = self.serving();
        let leave = 1.0 - (-dt / duration).exp();
        for b in &mut self.backends {
            b.conns -= b.conns * leave;
            if b.phase == Phase::Active && serving > 0 {
                // Arrivals during the step, less those that also ended in it (exact for
                // the exponential model: the steady state is rate × duration).
                b.conns += rate * duration * leave / f64::from(serving);
            }
        }
    }

    /// Draining backends leave once (nearly) empty or at the drain deadline.
    fn release_drained(&mut self, t_ms: u64, deadline: u64) {
        self.backends.retain(|b| {
            b.phase == Phase::Active
                || (b.conns >= 0.5 && t_ms.saturating_sub(b.drain_since) < deadline)
        });
    }

    /// Open connections on the serving backends.
    fn active_connections(&self) -> f64 {
        self.backends
            .iter()
            .filter(|b| b.phase == Phase::Active)
            .map(|b| b.conns)
            .sum()
    }

    /// The load reports of the serving backends (see the module's doc): running, waiting
    /// and KV-cache percent, each per serving backend.
    fn load_reports(&self, capacity: f64, m: &mut Metrics) {
        for b in self.backends.iter().filter(|b| b.phase == Phase::Active) {
            let running = b.conns.min(capacity);
            m.load_running.push(Some(running));
            m.load_waiting.push(Some((b.conns - capacity).max(0.0)));
            m.load_kv_cache_percent
                .push(Some(running / capacity * 100.0));
        }
    }

    /// The backends as the reconciler sees them (addressed by id).
    fn views(&self) -> Vec<BackendView> {
        self.backends
            .iter()
            .map(|b| BackendView {
                address: std::net::IpAddr::from(b.id.to_be_bytes()),
                phase: b.phase,
                healthy: true,
                active_connections: b.conns.round() as u64,
                owned: true,
            })
            .collect()
    }

    /// Provision and drain as `plan` says, at `t_ms`.
    fn apply(&mut self, plan: Plan, t_ms: u64, startup_ms: u32) {
        for _ in 0..plan.provision {
            self.starting.push_back(t_ms + u64::from(startup_ms));
        }
        for a in plan.drain {
            let std::net::IpAddr::V4(v4) = a else {
                continue;
            };
            let id = u32::from_be_bytes(v4.octets());
            if let Some(b) = self.backends.iter_mut().find(|b| b.id == id) {
                b.phase = Phase::Draining;
                b.drain_since = t_ms;
            }
        }
    }
}

/// One row of the time series.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub t_s: f64,
    pub offered_cps: f64,
    pub active: f64,
    pub serving: u32,
    pub starting: u32,
    pub draining: u32,
    pub desired: u32,
    pub utilisation: f64,
}

/// What a run gives.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub rows: Vec<Row>,
    pub duration_s: f64,
    pub max_serving: u32,
    pub backend_seconds: f64,
    /// Time-weighted mean of open connections / serving capacity.
    pub mean_utilisation: f64,
    pub over_target_s: f64,
    pub overloaded_s: f64,
    pub scale_ups: u32,
    pub scale_downs: u32,
    /// Decisions whose direction reversed the previous change's within 5 minutes.
    pub reversals: u32,
}

/// Run `policy` over `trace`.
pub fn run(
    trace: &[TracePoint],
    policy: &AutoscaleConfig,
    sim: &SimSettings,
) -> Result<Outcome, String> {
    let mut ctl = Controller::new(policy.clone());
    let start =
        chrono::DateTime::parse_from_rfc3339(&sim.start).map_err(|e| format!("sim.start: {e}"))?;
    let t0 = Time::from_chrono(&start);
    let step_ms = u64::from(sim.step_ms);
    let dt = step_ms as f64 / 1000.0;
    let end_ms = (trace.last().map_or(0.0, |p| p.time_s) * 1000.0) as u64;
    let initial = sim.initial.unwrap_or(policy.min).max(1);
    let mut fleet = Fleet::new(initial);
    let mut desired = initial;
    let mut out = Outcome {
        rows: Vec::new(),
        duration_s: end_ms as f64 / 1000.0,
        max_serving: initial,
        backend_seconds: 0.0,
        mean_utilisation: 0.0,
        over_target_s: 0.0,
        overloaded_s: 0.0,
        scale_ups: 0,
        scale_downs: 0,
        reversals: 0,
    };
    let interval = u64::from(policy.interval_ms);
    let uses_load = policy.metrics().any(MetricKind::is_load);
    let mut last_change: Option<(u64, bool)> = None;
    let mut util_sum = 0.0;
    let mut t_ms = 0u64;
    while t_ms <= end_ms {
        let t = t_ms as f64 / 1000.0;
        let (rate, duration) = at(trace, t);
        fleet.admit_ready(t_ms, desired);
        let serving = fleet.serving();
        fleet.flow(rate, duration, dt);
        fleet.release_drained(t_ms, u64::from(sim.drain_timeout_ms));
        let active = fleet.active_connections();
        let mut metrics = Metrics {
            active_connections: active,
            new_connections_per_s: rate,
            packets_per_s: active * sim.packets_per_connection,
            bytes_per_s: active * sim.packets_per_connection * sim.bytes_per_packet,
            ..Metrics::default()
        };
        if uses_load {
            fleet.load_reports(sim.capacity, &mut metrics);
        }
        // Decide every interval.
        if t_ms.is_multiple_of(interval) {
            let d = ctl.decide(&Sample {
                now: t0.plus_ms(t_ms),
                current: serving,
                metrics: metrics.clone(),
            });
            desired = d.desired;
            out.count_change(d.current, d.desired, t_ms, &mut last_change);
            let plan = reconcile(desired, &fleet.views(), fleet.starting.len() as u32);
            fleet.apply(plan, t_ms, sim.startup_ms);
        }
        let step = Step {
            t,
            dt,
            rate,
            active,
            desired,
        };
        let util = out.record(&step, &fleet, &metrics, policy, sim);
        util_sum += util.min(10.0) * dt;
        t_ms += step_ms;
    }
    out.mean_utilisation = util_sum / out.duration_s.max(dt);
    Ok(out)
}

/// What a step of the run saw, for [`Outcome::record`].
struct Step {
    t: f64,
    dt: f64,
    rate: f64,
    active: f64,
    desired: u32,
}

impl Outcome {
    /// Counts a decision from `current` to `desired` backends at `t_ms`: a scale-up or
    /// -down, and a reversal when it turns back the previous change within 5 minutes.
    fn count_change(
        &mut self,
        current: u32,
        desired: u32,
        t_ms: u64,
        last_change: &mut Option<(u64, bool)>,
    ) {
        if desired == current {
            return;
        }
        let up = desired > current;
        if up {
            self.scale_ups += 1;
        } else {
            self.scale_downs += 1;
        }
        if let Some((when, was_up)) = *last_change
            && was_up != up
            && t_ms - when < 300_000
        {
            self.reversals += 1;
        }
        *last_change = Some((t_ms, up));
    }

    /// Adds the step's figures and row; returns its utilisation.
    fn record(
        &mut self,
        step: &Step,
        fleet: &Fleet,
        metrics: &Metrics,
        policy: &AutoscaleConfig,
        sim: &SimSettings,
    ) -> f64 {
        let Step {
            t,
            dt,
            rate,
            active,
            desired,
        } = *step;
        let serving = fleet.serving();
        let draining = fleet.backends.len() as u32 - serving;
        self.max_serving = self.max_serving.max(serving);
        self.backend_seconds += (fleet.backends.len() + fleet.starting.len()) as f64 * dt;
        let cap = f64::from(serving) * sim.capacity;
        let util = if cap > 0.0 {
            active / cap
        } else if active > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        if let Some(tc) = &policy.target
            && over_target(tc, metrics, serving)
        {
            self.over_target_s += dt;
        }
        if fleet
            .backends
            .iter()
            .any(|b| b.phase == Phase::Active && b.conns > sim.capacity)
            || (serving == 0 && active > 0.0)
        {
            self.overloaded_s += dt;
        }
        self.rows.push(Row {
            t_s: t,
            offered_cps: rate,
            active,
            serving,
            starting: fleet.starting.len() as u32,
            draining,
            desired,
            utilisation: util,
        });
        util
    }
}

fn over_target(t: &TargetConfig, m: &Metrics, serving: u32) -> bool {
    m.per_backend(t.metric, serving)
        .is_some_and(|v| v > t.value.0 * (1.0 + t.tolerance.0))
}

/// The plain Kubernetes HPA defaults with the same target, bounds and interval as `p`:
/// the baseline the simulator compares against.
pub fn hpa_defaults(p: &AutoscaleConfig) -> Option<AutoscaleConfig> {
    use crate::config::autoscale as d;
    let t = p.target.as_ref()?;
    Some(AutoscaleConfig {
        up_backends: d::DEFAULT_UP_BACKENDS,
        up_percent: d::DEFAULT_UP_PERCENT,
        up_period_ms: d::DEFAULT_PERIOD_MS,
        down_backends: d::DEFAULT_DOWN_BACKENDS,
        down_percent: d::DEFAULT_DOWN_PERCENT,
        down_period_ms: d::DEFAULT_PERIOD_MS,
        interval_ms: d::DEFAULT_AUTOSCALE_INTERVAL_MS,
        target: Some(TargetConfig {
            metric: t.metric,
            value: t.value,
            tolerance: crate::config::autoscale::Num(d::DEFAULT_TOLERANCE),
            scale_down_stabilization_ms: d::DEFAULT_DOWN_STABILIZATION_MS,
            scale_up_stabilization_ms: d::DEFAULT_UP_STABILIZATION_MS,
        }),
        steps: Vec::new(),
        crons: Vec::new(),
        ..p.clone()
    })
}

/// The time series as CSV.
pub fn csv(o: &Outcome) -> String {
    let mut s = String::from(
        "time_s,offered_conns_per_s,active_connections,serving,starting,draining,desired,utilisation\n",
    );
    for r in &o.rows {
        let _ = writeln!(
            s,
            "{},{:.2},{:.1},{},{},{},{},{:.4}",
            r.t_s,
            r.offered_cps,
            r.active,
            r.serving,
            r.starting,
            r.draining,
            r.desired,
            r.utilisation
        );
    }
    s
}

/// The summary table's header and one line per (name, outcome).
pub fn table(runs: &[(String, &Outcome)]) -> String {
    let mut s = format!(
        "{:<22} {:>8} {:>12} {:>10} {:>12} {:>11} {:>9} {:>10}\n",
        "policy",
        "max bk",
        "backend-s",
        "mean util",
        "over target",
        "overloaded",
        "up/down",
        "reversals"
    );
    for (name, o) in runs {
        let _ = writeln!(
            s,
            "{:<22} {:>8} {:>12.0} {:>9.1}% {:>11.0}s {:>10.0}s {:>9} {:>10}",
            name,
            o.max_serving,
            o.backend_seconds,
            o.mean_utilisation * 100.0,
            o.over_target_s,
            o.overloaded_s,
            format!("{}/{}", o.scale_ups, o.scale_downs),
            o.reversals
        );
    }
    s
}

/// Backends over time as a coarse text chart (one line per `every_s`).
pub fn timeline(o: &Outcome, every_s: f64) -> String {
    let mut s = String::new();
    let mut next = 0.0;
    for r in &o.rows {
        if r.t_s + 1e-9 < next {
            continue;
        }
        next += every_s;
        let _ = writeln!(
            s,
            "{:>7.0}s {:>7.1} c/s {:>8.0} open  {:>3} serving {:>2} starting {:>2} draining  util {:>5.1}%  {}",
            r.t_s,
            r.offered_cps,
            r.active,
            r.serving,
            r.starting,
            r.draining,
            r.utilisation * 100.0,
            "#".repeat(r.serving as usize)
        );
    }
    s
}

/// Read a trace and a policy file (errors name file and line).
pub fn load(
    trace: &Path,
    policy: &Path,
) -> Result<(Vec<TracePoint>, AutoscaleConfig, SimSettings), String> {
    let t = std::fs::read_to_string(trace)
        .map_err(|e| format!("{}: cannot read: {e}", trace.display()))?;
    let p = std::fs::read_to_string(policy)
        .map_err(|e| format!("{}: cannot read: {e}", policy.display()))?;
    let points = parse_trace(&t, &trace.display().to_string())?;
    let (a, s) = crate::config::autoscale::parse_policy(&p, &policy.display().to_string())
        .map_err(|e| e.to_string())?;
    Ok((points, a, s))
}

/// The metric a policy's target uses, for labels.
pub fn target_metric(p: &AutoscaleConfig) -> Option<MetricKind> {
    p.target.as_ref().map(|t| t.metric)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "[autoscale]\nmin = 1\nmax = 20\n[autoscale.target]\n\
        metric = \"active_connections\"\nvalue = 100\n[sim]\ncapacity = 150\nstartup_ms = 10000\n";

    /// The load reports are modelled: a backend's batch holds `capacity` requests, so with
    /// 600 open and a target of 60 running per backend the count settles at 10.
    #[test]
    fn load_reports_are_modelled() {
        let trace = parse_trace("0,20,30\n1800,20,30\n", "t").unwrap();
        let policy = "[autoscale]\nmin = 1\nmax = 20\n[autoscale.target]\n\
            metric = \"load_running\"\nvalue = 60\n[sim]\ncapacity = 100\nstartup_ms = 10000\n";
        let (p, s) = crate::config::autoscale::parse_policy(policy, "p").unwrap();
        let o = run(&trace, &p, &s).unwrap();
        assert_eq!(
            o.rows.last().unwrap().serving,
            10,
            "{}",
            timeline(&o, 120.0)
        );
        let mut m = Metrics::default();
        let mut fleet = Fleet::new(2);
        fleet.backends[0].conns = 130.0;
        fleet.backends[1].conns = 40.0;
        fleet.load_reports(100.0, &mut m);
        assert_eq!(m.load_running, vec![Some(100.0), Some(40.0)]);
        assert_eq!(m.load_waiting, vec![Some(30.0), Some(0.0)]);
        assert_eq!(m.load_kv_cache_percent, vec![Some(100.0), Some(40.0)]);
    }

    #[test]
    fn steady_load_settles_at_the_formula() {
        // 20 conns/s × 30 s = 600 open; target 100 → 6 backends.
        let trace = parse_trace(
            "time_s,conns_per_s,mean_duration_s\n0,20,30\n1800,20,30\n",
            "t",
        )
        .unwrap();
        let (p, s) = crate::config::autoscale::parse_policy(POLICY, "p").unwrap();
        let o = run(&trace, &p, &s).unwrap();
        let last = o.rows.last().unwrap();
        assert_eq!(last.serving, 6, "{}", timeline(&o, 120.0));
        assert!((last.active - 600.0).abs() < 5.0, "{}", last.active);
        // Scaled up a few times, never down, no reversals.
        assert_eq!((o.scale_downs, o.reversals), (0, 0));
    }

    #[test]
    fn load_falls_and_backends_drain_away() {
        let trace = parse_trace("0,30,20\n600,30,20\n601,3,20\n2400,3,20\n", "t").unwrap();
        let (p, s) = crate::config::autoscale::parse_policy(POLICY, "p").unwrap();
        let o = run(&trace, &p, &s).unwrap();
        let peak = o.rows.iter().map(|r| r.serving).max().unwrap();
        assert_eq!(peak, 6, "{}", timeline(&o, 60.0));
        let last = o.rows.last().unwrap();
        // 3 × 20 = 60 open → 1 backend; drained ones are gone.
        assert_eq!(
            (last.serving, last.draining),
            (1, 0),
            "{}",
            timeline(&o, 60.0)
        );
        // The 300 s stabilisation window: still 6 serving 250 s after the drop.
        let r = o.rows.iter().find(|r| r.t_s == 850.0).unwrap();
        assert_eq!(r.serving, 6, "{}", timeline(&o, 60.0));
        assert_eq!(o.reversals, 0);
    }

    #[test]
    fn trace_errors_name_the_line() {
        assert!(
            parse_trace("0,1,1\n5,1\n", "f.csv")
                .unwrap_err()
                .starts_with("f.csv:2:")
        );
        assert!(
            parse_trace("0,1,1\n0,1,1\n", "f.csv")
                .unwrap_err()
                .contains("not after")
        );
        assert!(
            parse_trace("1,1,1\n2,1,1\n", "f.csv")
                .unwrap_err()
                .contains("start at time 0")
        );
        assert!(
            parse_trace("0,1,0\n2,1,1\n", "f.csv")
                .unwrap_err()
                .contains("more than 0")
        );
        let e = crate::config::autoscale::parse_policy("[autoscale]\nmax = 0\n[sim]\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("p.toml:2: autoscale.max: 0 is out of range"),
            "{e}"
        );
        assert!(e.contains("sim.capacity: missing required key"), "{e}");
    }
}
