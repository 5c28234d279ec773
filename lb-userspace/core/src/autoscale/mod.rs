//! The LB-aware autoscaler: per VIP, policies decide how many backends should serve, and a
//! reconciler turns that count into changes of the daemon's configuration.
//!
//! ```text
//! kernel counters, conntrack,      ┌ target (HPA) ┐
//! backend-reported metric ─ Sample ┼ steps        ┼ Opinions → Controller::decide → Decision
//!                                  └ cron         ┘   highest count, rate limits, [min, max]
//! Decision + live view ─ reconcile → Plan { provision n, drain [fewest connections] }
//! provider (pool | exec) → candidate → health probe passes → add (slow start) ─┐
//! drain (draining, drain_remove) → the daemon removes it once drained → release ┴→ edits
//! ```
//!
//! **The rule when several policies speak** (documented in config/sluice.toml): a cron entry
//! whose `desired` fires this round sets the count; otherwise the **highest** count any
//! policy asks for wins (a policy without an opinion, e.g. a step rule that did not fire,
//! does not count; with none, the count stays). Then the rate limits (Kubernetes HPA
//! `behavior`: the most permissive of `up_backends` and `up_percent` per `up_period_ms`, the
//! same for down), then `[min, max]`, with a cron entry in force replacing `min`/`max`.
//! Scaling down therefore needs every speaking policy to agree.
//!
//! Everything here is pure: time comes in as [`clock::Time`] and nothing touches the
//! kernel, so the daemon, the simulator ([`sim`]) and the tests run the same code. The
//! daemon's driver (`sluice_daemon::autoscale::driver`) turns plans into edits of the configuration through the same
//! path as the API (validate, publish, persist); it never touches the data plane itself.

pub mod clock;
pub mod policy;
pub mod sim;

use std::{collections::VecDeque, net::IpAddr};

use serde::{Deserialize, Serialize};

use self::{
    clock::Time,
    policy::{Metrics, Opinion, Sample, cron::Schedules, step::Steps, target::Target},
};
use crate::config::autoscale::AutoscaleConfig;

/// One policy's say in a decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Said {
    pub policy: String,
    pub desired: Option<u32>,
    pub reason: String,
}

/// One evaluation: what was decided, why, and from what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub at: Time,
    /// Serving backends when deciding.
    pub current: u32,
    pub desired: u32,
    /// The bounds in force (cron may replace the section's).
    pub min: u32,
    pub max: u32,
    /// The rule that produced `desired`, in words.
    pub reason: String,
    pub said: Vec<Said>,
    pub metrics: Metrics,
}

impl Decision {
    /// "up", "down" or "hold".
    pub fn direction(&self) -> &'static str {
        match self.desired.cmp(&self.current) {
            std::cmp::Ordering::Greater => "up",
            std::cmp::Ordering::Less => "down",
            std::cmp::Ordering::Equal => "hold",
        }
    }
}

/// The policies and rate-limit memory of one VIP.
#[derive(Debug, Clone)]
pub struct Controller {
    spec: AutoscaleConfig,
    target: Option<Target>,
    steps: Steps,
    cron: Schedules,
    /// Decided changes (time, signed count), kept for the rate-limit periods.
    changes: VecDeque<(Time, i64)>,
}

impl Controller {
    pub fn new(spec: AutoscaleConfig) -> Self {
        Self {
            target: spec.target.clone().map(Target::new),
            steps: Steps::new(spec.steps.clone()),
            cron: Schedules::new(spec.crons.clone()),
            changes: VecDeque::new(),
            spec,
        }
    }

    pub fn spec(&self) -> &AutoscaleConfig {
        &self.spec
    }

    /// Evaluate every policy on `s` and combine their opinions (see the module's doc).
    pub fn decide(&mut self, s: &Sample) -> Decision {
        let mut said = Vec::new();
        let mut note = |name: &str, o: &Opinion| {
            said.push(Said {
                policy: name.to_owned(),
                desired: o.desired.or(o.set),
                reason: o.reason.clone(),
            });
        };
        let target = self.target.as_mut().map(|t| t.evaluate(s));
        if let Some(o) = &target {
            note("target", o);
        }
        let steps = (!self.steps.is_empty()).then(|| self.steps.evaluate(s));
        if let Some(o) = &steps {
            note("step", o);
        }
        let cron = (!self.cron.is_empty()).then(|| self.cron.evaluate(s));
        if let Some(o) = &cron {
            note("cron", o);
        }
        let current = s.current;
        let mut min = cron.as_ref().and_then(|o| o.min).unwrap_or(self.spec.min);
        let max = cron.as_ref().and_then(|o| o.max).unwrap_or(self.spec.max);
        let mut reason;
        if min > max {
            min = max;
        }
        let set = cron.as_ref().and_then(|o| o.set);
        let mut desired = if let Some(n) = set {
            reason = format!("cron set {n}");
            n
        } else {
            let best = [&target, &steps]
                .into_iter()
                .flatten()
                .zip(["target", "step"])
                .filter_map(|(o, name)| o.desired.map(|d| (d, name)))
                .max_by_key(|(d, _)| *d);
            match best {
                Some((d, name)) => {
                    reason = format!("{name} asks {d} (highest)");
                    d
                }
                None => {
                    reason = "no policy asks a count: hold".to_owned();
                    current
                }
            }
        };
        if set.is_none() {
            desired = self.rate_limit(s.now, current, desired, &mut reason);
        }
        if desired < min {
            reason.push_str(&format!(", raised to min {min}"));
            desired = min;
        } else if desired > max {
            reason.push_str(&format!(", lowered to max {max}"));
            desired = max;
        }
        if desired != current {
            self.changes
                .push_back((s.now, i64::from(desired) - i64::from(current)));
        }
        Decision {
            at: s.now,
            current,
            desired,
            min,
            max,
            reason,
            said,
            metrics: s.metrics.clone(),
        }
    }

    /// Kubernetes HPA's rate limits: within a period, the count may move from where it
    /// stood at the period's start by the most permissive of the two policies.
    fn rate_limit(&mut self, now: Time, current: u32, desired: u32, reason: &mut String) -> u32 {
        let sp = &self.spec;
        let keep = u64::from(sp.up_period_ms.max(sp.down_period_ms));
        while self
            .changes
            .front()
            .is_some_and(|(t, _)| now.since(*t) >= keep)
        {
            self.changes.pop_front();
        }
        let moved = |period: u32, up: bool| -> i64 {
            self.changes
                .iter()
                .filter(|(t, d)| now.since(*t) < u64::from(period) && (*d > 0) == up)
                .map(|(_, d)| d.abs())
                .sum()
        };
        let cur = i64::from(current);
        if desired > current {
            let base = (cur - moved(sp.up_period_ms, true)).max(0);
            let by_percent = (base * i64::from(sp.up_percent) + 99) / 100;
            let limit = base + i64::from(sp.up_backends).max(by_percent);
            if i64::from(desired) > limit {
                let limit = u32::try_from(limit.max(cur)).unwrap_or(u32::MAX);
                reason.push_str(&format!(
                    ", rate-limited to {limit} (up: {} backends or {}% per {} ms)",
                    sp.up_backends, sp.up_percent, sp.up_period_ms
                ));
                return limit;
            }
        } else if desired < current {
            let base = cur + moved(sp.down_period_ms, false);
            let by_percent = base * i64::from(sp.down_percent) / 100;
            let low = (base - i64::from(sp.down_backends).max(by_percent)).max(0);
            if i64::from(desired) < low {
                let low = u32::try_from(low.min(cur)).unwrap_or(current);
                reason.push_str(&format!(
                    ", rate-limited to {low} (down: {} backends or {}% per {} ms)",
                    sp.down_backends, sp.down_percent, sp.down_period_ms
                ));
                return low;
            }
        }
        desired
    }
}

/// Where a backend of a scaled VIP is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Takes new connections (if healthy).
    Active,
    /// Takes none; removed once drained.
    Draining,
}

/// One backend as the reconciler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendView {
    pub address: IpAddr,
    pub phase: Phase,
    pub healthy: bool,
    pub active_connections: u64,
    /// The provider gave it (so the autoscaler may take it away).
    pub owned: bool,
}

/// What the reconciler asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// New backends to ask the provider for.
    pub provision: u32,
    /// Backends to start draining, fewest active connections first.
    pub drain: Vec<IpAddr>,
}

/// Serving backends: active and healthy.
pub fn serving(backends: &[BackendView]) -> u32 {
    let n = backends
        .iter()
        .filter(|b| b.phase == Phase::Active && b.healthy)
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// From the decided count to actions. Scale-out asks only for what neither the serving
/// backends nor those already being provisioned (`pending`) cover. Scale-in drains owned,
/// active backends, the one with the fewest active connections first (ties: the last
/// address, so the pool's first addresses stay longest); backends the provider did not
/// give are never taken away.
pub fn reconcile(desired: u32, backends: &[BackendView], pending: u32) -> Plan {
    let serving = serving(backends);
    let mut plan = Plan::default();
    let have = serving.saturating_add(pending);
    if desired > have {
        plan.provision = desired - have;
    } else if desired < serving {
        let mut candidates: Vec<&BackendView> = backends
            .iter()
            .filter(|b| b.phase == Phase::Active && b.healthy && b.owned)
            .collect();
        candidates.sort_by(|a, b| {
            a.active_connections
                .cmp(&b.active_connections)
                .then(b.address.cmp(&a.address))
        });
        plan.drain = candidates
            .into_iter()
            .take((serving - desired) as usize)
            .map(|b| b.address)
            .collect();
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::autoscale::{
        CronConfig, CronSchedule, CronZone, MetricKind, Num, ProviderConfig, StepConfig,
        StepDirection, TargetConfig,
    };

    pub(crate) fn spec(min: u32, max: u32) -> AutoscaleConfig {
        AutoscaleConfig {
            min,
            max,
            interval_ms: 15_000,
            weight: 1,
            ready_timeout_ms: 60_000,
            up_backends: 4,
            up_percent: 100,
            up_period_ms: 15_000,
            down_backends: 0,
            down_percent: 100,
            down_period_ms: 15_000,
            target: Some(TargetConfig {
                metric: MetricKind::ActiveConnections,
                value: Num(100.0),
                tolerance: Num(0.1),
                scale_down_stabilization_ms: 0,
                scale_up_stabilization_ms: 0,
            }),
            steps: Vec::new(),
            crons: Vec::new(),
            backend_metric: None,
            provider: ProviderConfig::Pool {
                standby: Vec::new(),
            },
        }
    }

    fn sample(t: u64, current: u32, conns: f64) -> Sample {
        Sample {
            now: Time::from_secs(t),
            current,
            metrics: Metrics {
                active_connections: conns,
                ..Metrics::default()
            },
        }
    }

    #[test]
    fn bounds_and_rate_limits() {
        let mut c = Controller::new(spec(2, 20));
        // 2 backends at 1000 each → HPA says 20; up is limited to max(4, 100% of 2) = +4.
        let d = c.decide(&sample(0, 2, 2000.0));
        assert_eq!(d.desired, 6, "{}", d.reason);
        assert!(d.reason.contains("rate-limited"), "{}", d.reason);
        // 10 s later (same period, 4 already added from a base of 2): still 6.
        let d = c.decide(&sample(10, 6, 6000.0));
        assert_eq!(d.desired, 6, "{}", d.reason);
        // Next period: base 6 → +6 = 12.
        let d = c.decide(&sample(16, 6, 6000.0));
        assert_eq!(d.desired, 12, "{}", d.reason);
        // Idle: HPA says 0, min 2 holds.
        let d = c.decide(&sample(40, 12, 0.0));
        assert_eq!(d.desired, 2, "{}", d.reason);
        assert!(d.reason.contains("min 2"), "{}", d.reason);
        // Max.
        let d = c.decide(&sample(60, 12, 100_000.0));
        assert_eq!(d.desired, 20, "{}", d.reason);
    }

    #[test]
    fn scale_down_rate_by_backends() {
        let mut s = spec(1, 20);
        s.down_percent = 0;
        s.down_backends = 2;
        let mut c = Controller::new(s);
        assert_eq!(c.decide(&sample(0, 10, 100.0)).desired, 8);
        assert_eq!(
            c.decide(&sample(5, 8, 100.0)).desired,
            8,
            "2 already this period"
        );
        assert_eq!(c.decide(&sample(15, 8, 100.0)).desired, 6);
    }

    /// The highest count wins: the target says 3, a step rule says +3 → the step's count.
    /// A step rule that does not fire does not hold the target back.
    #[test]
    fn highest_opinion_wins_and_silence_does_not_count() {
        let mut s = spec(1, 20);
        s.steps = vec![StepConfig {
            metric: MetricKind::NewConnections,
            direction: StepDirection::Above,
            threshold: Num(50.0),
            for_ms: 0,
            change: 3,
            cooldown_ms: 0,
        }];
        let mut c = Controller::new(s);
        let mut smp = sample(0, 3, 300.0);
        smp.metrics.new_connections_per_s = 300.0;
        let d = c.decide(&smp);
        assert_eq!(d.desired, 6, "{}", d.reason);
        assert!(d.reason.starts_with("step"), "{}", d.reason);
        assert_eq!(d.said.len(), 2);
        let d = c.decide(&sample(30, 6, 60.0));
        assert_eq!(d.desired, 1, "{}", d.reason);
    }

    #[test]
    fn cron_min_and_set() {
        let mut s = spec(1, 20);
        s.crons = vec![CronConfig {
            schedule: CronSchedule::parse("0 8 * * *").unwrap(),
            timezone: CronZone::parse("UTC").unwrap(),
            min: Some(5),
            max: None,
            desired: Some(8),
        }];
        let mut c = Controller::new(s);
        let day = 20_000 * 86_400; // 2024-10-04 00:00 UTC
        // 07:59: yesterday's 08:00 entry is in force: min 5.
        let d = c.decide(&sample(day + 7 * 3600 + 59 * 60, 5, 0.0));
        assert_eq!((d.desired, d.min), (5, 5), "{}", d.reason);
        // 08:00:10: it fires: set 8, above what the idle target asks.
        let d = c.decide(&sample(day + 8 * 3600 + 10, 5, 0.0));
        assert_eq!(d.desired, 8, "{}", d.reason);
        // Next round: the target's 0 is raised to min 5.
        let d = c.decide(&sample(day + 8 * 3600 + 25, 8, 0.0));
        assert_eq!(d.desired, 5, "{}", d.reason);
    }

    /// Inference: target tracking on the requests waiting (the usual HPA setting for vLLM,
    /// 5 per backend) with KV-cache use as a second trigger (a step rule above 80 %). Each
    /// works alone, and when both speak the higher count wins; a stale KV report silences
    /// the step rule without holding the target back.
    #[test]
    fn waiting_target_and_kv_cache_step_together() {
        let mut s = spec(1, 20);
        s.target = Some(TargetConfig {
            metric: MetricKind::LoadWaiting,
            value: Num(5.0),
            tolerance: Num(0.1),
            scale_down_stabilization_ms: 0,
            scale_up_stabilization_ms: 0,
        });
        s.steps = vec![StepConfig {
            metric: MetricKind::LoadKvCachePercent,
            direction: StepDirection::Above,
            threshold: Num(80.0),
            for_ms: 30_000,
            change: 2,
            cooldown_ms: 60_000,
        }];
        let mut c = Controller::new(s);
        let load = |t: u64, waiting: Vec<Option<f64>>, kv: Vec<Option<f64>>| Sample {
            now: Time::from_secs(t),
            current: u32::try_from(waiting.len()).unwrap(),
            metrics: Metrics {
                load_waiting: waiting,
                load_kv_cache_percent: kv,
                ..Metrics::default()
            },
        };
        let each = |n: usize, v: f64| vec![Some(v); n];
        // Queues at the target, KV caches full: the target holds, the step rule waits.
        let d = c.decide(&load(
            0,
            vec![Some(6.0), Some(4.0)],
            vec![Some(90.0), Some(85.0)],
        ));
        assert_eq!(d.desired, 2, "{}", d.reason);
        assert_eq!(d.said.len(), 2, "{:?}", d.said);
        assert!(d.said[1].reason.contains("holding"), "{:?}", d.said);
        // KV above 80 for 30 s: the step rule adds 2, more than the target's 2.
        let d = c.decide(&load(
            30,
            vec![Some(6.0), Some(4.0)],
            vec![Some(90.0), Some(85.0)],
        ));
        assert_eq!(d.desired, 4, "{}", d.reason);
        assert!(d.reason.starts_with("step asks 4"), "{}", d.reason);
        assert!(
            d.said[1]
                .reason
                .contains("load_kv_cache_percent 87.5/backend > 80"),
            "{:?}",
            d.said
        );
        assert_eq!(
            d.metrics.load_kv_cache_percent.len(),
            2,
            "the inputs are kept"
        );
        // Queues grow to 8 per backend: the target asks ceil(4 × 8 / 5) = 7 while the
        // step rule is in its cooldown: the target's count.
        let d = c.decide(&load(45, each(4, 8.0), each(4, 90.0)));
        assert_eq!(d.desired, 7, "{}", d.reason);
        assert!(d.reason.starts_with("target asks 7"), "{}", d.reason);
        // KV reports stale (missing): the step rule has no value; the target decides alone.
        let d = c.decide(&load(60, each(7, 5.0), vec![None; 7]));
        assert_eq!(d.desired, 7, "{}", d.reason);
        assert!(d.said[1].reason.contains("no rule holds"), "{:?}", d.said);
        // Queues empty but KV still full: the target alone speaks first (down to min 1:
        // the step rule's timer restarted with the stale round), then the step rule again
        // once KV has held above 80 for 30 s (past its cooldown): the higher count wins.
        let d = c.decide(&load(100, each(7, 0.0), each(7, 95.0)));
        assert_eq!(d.desired, 1, "{}", d.reason);
        let d = c.decide(&load(130, each(1, 0.0), each(1, 95.0)));
        assert_eq!(d.desired, 3, "{}", d.reason);
        assert!(d.reason.starts_with("step asks 3"), "{}", d.reason);
    }

    fn view(addr: u8, conns: u64, owned: bool) -> BackendView {
        BackendView {
            address: IpAddr::from([10, 0, 0, addr]),
            phase: Phase::Active,
            healthy: true,
            active_connections: conns,
            owned,
        }
    }

    #[test]
    fn reconcile_drains_fewest_connections_owned_only() {
        let b = vec![
            view(1, 0, false),
            view(2, 30, true),
            view(3, 5, true),
            view(4, 5, true),
        ];
        assert_eq!(
            reconcile(2, &b, 0).drain,
            vec![IpAddr::from([10, 0, 0, 4]), IpAddr::from([10, 0, 0, 3])]
        );
        assert_eq!(reconcile(6, &b, 1).provision, 1);
        assert_eq!(reconcile(4, &b, 1), Plan::default());
        let mut d = b.clone();
        d[3].phase = Phase::Draining;
        assert_eq!(serving(&d), 3);
        assert_eq!(reconcile(3, &d, 0), Plan::default());
    }
}
