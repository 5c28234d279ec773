//! The scaling policies. Each is a pure state machine: it is given a [`Sample`] (the time,
//! the serving backends, the metrics) and answers an [`Opinion`]; it never reads a clock,
//! the kernel or the network, so the same code runs in the daemon, in the simulator and in
//! unit tests on scripted series.
//!
//! Metrics are **per serving backend**: open connections are averaged over the serving
//! backends, VIP-wide rates (new connections/s, packets/s, bytes/s) are divided by their
//! number, and the *reported* metrics (the `backend` metric, and the `load_*` figures of
//! `[vip.load]`: waiting and running requests, KV-cache use in percent) are the mean over
//! the backends that have a value.
//!
//! A backend without a value (no answer to its metric request; for a load figure: never
//! read, a report older than the load section's `stale_after_ms`, or a report that does not
//! give that figure) is *missing*. Target tracking then
//! follows Kubernetes' rule for missing pod metrics: the ratio is computed from the
//! backends that answered; if that says scale up, the silent ones count as 0, if it says
//! scale down, they count as exactly the target (both bias against acting); when the
//! recomputed ratio flips direction or falls inside the tolerance, nothing changes. A step
//! rule sees the mean of those that answered; when none answered it has no value, and its
//! "for" timer restarts. When no backend serves, every per-backend metric is unknown.

pub mod cron;
pub mod step;
pub mod target;

use serde::{Deserialize, Serialize};

use super::clock::Time;
use crate::{config::autoscale::MetricKind, state::LoadStatus};

/// What the kernel counters and the backends said, for one VIP at one time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Open connections over all serving backends.
    pub active_connections: f64,
    pub new_connections_per_s: f64,
    pub packets_per_s: f64,
    pub bytes_per_s: f64,
    /// The backend-reported metric, one entry per serving backend (`None`: no answer).
    #[serde(default)]
    pub backend: Vec<Option<f64>>,
    /// The figures of the `[vip.load]` reports, one entry per serving backend (`None`:
    /// missing, see the module's doc); empty when the VIP has no load section.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_waiting: Vec<Option<f64>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_running: Vec<Option<f64>>,
    /// KV-cache use in percent (0..=100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_kv_cache_percent: Vec<Option<f64>>,
}

impl Metrics {
    /// The VIP-wide total of a kernel metric (`None` for the reported ones).
    pub fn total(&self, m: MetricKind) -> Option<f64> {
        match m {
            MetricKind::ActiveConnections => Some(self.active_connections),
            MetricKind::NewConnections => Some(self.new_connections_per_s),
            MetricKind::Packets => Some(self.packets_per_s),
            MetricKind::Bytes => Some(self.bytes_per_s),
            MetricKind::Backend
            | MetricKind::LoadWaiting
            | MetricKind::LoadRunning
            | MetricKind::LoadKvCachePercent => None,
        }
    }

    /// The per-backend values of a reported metric, one per serving backend (`None` for the
    /// kernel metrics).
    pub fn reported(&self, m: MetricKind) -> Option<&[Option<f64>]> {
        match m {
            MetricKind::Backend => Some(&self.backend),
            MetricKind::LoadWaiting => Some(&self.load_waiting),
            MetricKind::LoadRunning => Some(&self.load_running),
            MetricKind::LoadKvCachePercent => Some(&self.load_kv_cache_percent),
            MetricKind::ActiveConnections
            | MetricKind::NewConnections
            | MetricKind::Packets
            | MetricKind::Bytes => None,
        }
    }

    /// The per-backend value of `m` with `serving` backends (`None` when unknown): a
    /// kernel metric divided by `serving`, a reported one the mean of the known values.
    pub fn per_backend(&self, m: MetricKind, serving: u32) -> Option<f64> {
        if serving == 0 {
            return None;
        }
        match (self.total(m), self.reported(m)) {
            (Some(t), _) => Some(t / f64::from(serving)),
            (None, Some(values)) => mean_known(values),
            (None, None) => None,
        }
    }

    /// Fill the `load_*` figures from each serving backend's load status (`None`: the
    /// backend has none).
    pub fn fill_load<'a>(&mut self, serving: impl IntoIterator<Item = Option<&'a LoadStatus>>) {
        for s in serving {
            let f = |m| s.and_then(|s| load_figure(s, m));
            self.load_waiting.push(f(MetricKind::LoadWaiting));
            self.load_running.push(f(MetricKind::LoadRunning));
            self.load_kv_cache_percent
                .push(f(MetricKind::LoadKvCachePercent));
        }
    }
}

/// One figure of a backend's load status as the `load_*` metric `m` uses it: `None` when
/// missing (never read or stale, an agent's answer, not reported, or not a finite number
/// ≥ 0); KV-cache use in percent.
pub fn load_figure(s: &LoadStatus, m: MetricKind) -> Option<f64> {
    if s.stale || s.agent.is_some() {
        return None;
    }
    let v = match m {
        MetricKind::LoadWaiting => s.waiting,
        MetricKind::LoadRunning => s.running,
        MetricKind::LoadKvCachePercent => s.kv_cache.map(|f| f * 100.0),
        _ => None,
    }?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// The mean of the known values (`None`: none known).
fn mean_known(values: &[Option<f64>]) -> Option<f64> {
    let known: Vec<f64> = values.iter().flatten().copied().collect();
    (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
}

/// The usage ratio (mean / `target`) of a reported metric's per-backend `values`, with
/// Kubernetes' rule for missing pod metrics (see the module's doc), and the inputs in
/// words (`name`: the metric's). `None` when no backend has a value; a ratio of exactly
/// 1.0 ("no change") when the missing ones flip the direction or bring it inside
/// `tolerance`.
pub(crate) fn missing_rule_ratio(
    values: &[Option<f64>],
    target: f64,
    tolerance: f64,
    name: &str,
) -> Option<(f64, String)> {
    let n = values.len();
    let known: Vec<f64> = values.iter().flatten().copied().collect();
    if known.is_empty() {
        return None;
    }
    let sum: f64 = known.iter().sum();
    let ratio = sum / known.len() as f64 / target;
    let missing = n - known.len();
    if missing == 0 {
        return Some((ratio, format!("{name} {:.1}/backend", ratio * target)));
    }
    // Kubernetes' rule for missing metrics: assume the value that argues against acting.
    let assumed = if ratio > 1.0 { 0.0 } else { target };
    let new_ratio = (sum + assumed * missing as f64) / n as f64 / target;
    let what = format!(
        "{name} {:.1}/backend ({missing} of {n} silent, counted as {assumed})",
        new_ratio * target
    );
    if (ratio > 1.0) != (new_ratio > 1.0) || (new_ratio - 1.0).abs() <= tolerance {
        return Some((1.0, format!("{what}: no change")));
    }
    Some((new_ratio, what))
}

/// One evaluation's input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub now: Time,
    /// Serving backends (active, healthy, not draining).
    pub current: u32,
    pub metrics: Metrics,
}

/// What one policy says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opinion {
    /// The backend count this policy wants (`None`: no opinion this round).
    pub desired: Option<u32>,
    /// A one-off count that overrides the others this round (a cron `desired` firing).
    pub set: Option<u32>,
    /// Bounds replacing the section's `min`/`max` (cron).
    pub min: Option<u32>,
    pub max: Option<u32>,
    /// Why, in words, with the inputs.
    pub reason: String,
}

/// `ceil` of a non-negative finite value as a backend count (saturating). A value within a
/// relative 1e-12 above a whole number counts as that number: `current × metric / target`
/// is computed as `(total / current) / target × current`, which rounding can leave a few
/// ulps above the exact result (29 connections over 7 backends at a target of 1 gives
/// 29.000000000000004), and that must not ask for one more backend.
pub(crate) fn ceil_count(x: f64) -> u32 {
    let x = x * (1.0 - 1e-12);
    if x.is_nan() || x <= 0.0 {
        0
    } else if x >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        // In range and non-negative: the cast is exact after ceil.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked to be in 0..u32::MAX above"
        )]
        let n = x.ceil() as u32;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_backend_values() {
        let m = Metrics {
            active_connections: 300.0,
            new_connections_per_s: 90.0,
            backend: vec![Some(4.0), None, Some(8.0)],
            ..Metrics::default()
        };
        assert_eq!(m.per_backend(MetricKind::ActiveConnections, 3), Some(100.0));
        assert_eq!(m.per_backend(MetricKind::NewConnections, 3), Some(30.0));
        assert_eq!(m.per_backend(MetricKind::Backend, 3), Some(6.0));
        assert_eq!(m.per_backend(MetricKind::ActiveConnections, 0), None);
        let silent = Metrics {
            backend: vec![None, None],
            ..Metrics::default()
        };
        assert_eq!(silent.per_backend(MetricKind::Backend, 2), None);
        assert_eq!(ceil_count(2.000_1), 3);
        assert_eq!(ceil_count(2.0), 2);
        // Rounding noise above a whole number is not one more backend.
        assert_eq!(ceil_count(29.0 / 7.0 / 1.0 * 7.0), 29);
        assert_eq!(ceil_count(130.0 / 3.0 / 10.0 * 3.0), 13);
        assert_eq!(ceil_count(-1.0), 0);
        assert_eq!(ceil_count(f64::NAN), 0);
    }

    fn status(waiting: Option<f64>, kv: Option<f64>) -> LoadStatus {
        LoadStatus {
            waiting,
            running: Some(2.0),
            kv_cache: kv,
            agent: None,
            age_ms: Some(100),
            stale: false,
            error: None,
            errors: 0,
        }
    }

    /// A load figure is missing when the backend was never read or its report is stale,
    /// when the source is an agent, when the report does not give it, or when it is not a
    /// number ≥ 0; KV-cache use is in percent.
    #[test]
    fn load_figures_and_the_missing_ones() {
        let fresh = status(Some(7.0), Some(0.85));
        assert_eq!(load_figure(&fresh, MetricKind::LoadWaiting), Some(7.0));
        assert_eq!(load_figure(&fresh, MetricKind::LoadRunning), Some(2.0));
        let kv = load_figure(&fresh, MetricKind::LoadKvCachePercent).unwrap();
        assert!((kv - 85.0).abs() < 1e-9, "{kv}");
        assert_eq!(load_figure(&fresh, MetricKind::ActiveConnections), None);
        let stale = LoadStatus {
            stale: true,
            ..fresh.clone()
        };
        assert_eq!(load_figure(&stale, MetricKind::LoadWaiting), None);
        let never = LoadStatus {
            stale: true,
            age_ms: None,
            ..status(None, None)
        };
        assert_eq!(load_figure(&never, MetricKind::LoadRunning), None);
        let agent = LoadStatus {
            agent: Some("75%".to_owned()),
            ..fresh.clone()
        };
        assert_eq!(load_figure(&agent, MetricKind::LoadWaiting), None);
        let tgi = status(Some(1.0), None);
        assert_eq!(load_figure(&tgi, MetricKind::LoadKvCachePercent), None);
        let odd = status(Some(-1.0), Some(f64::NAN));
        assert_eq!(load_figure(&odd, MetricKind::LoadWaiting), None);
        assert_eq!(load_figure(&odd, MetricKind::LoadKvCachePercent), None);

        // Per serving backend, in order; a backend without a status is missing too.
        let mut m = Metrics::default();
        m.fill_load([Some(&fresh), Some(&stale), None, Some(&tgi)]);
        assert_eq!(m.load_waiting, vec![Some(7.0), None, None, Some(1.0)]);
        assert_eq!(m.load_kv_cache_percent.iter().flatten().count(), 1);
        // The mean of the known values, as for the backend metric.
        assert_eq!(m.per_backend(MetricKind::LoadWaiting, 4), Some(4.0));
        assert_eq!(m.per_backend(MetricKind::LoadRunning, 4), Some(2.0));
        assert_eq!(m.per_backend(MetricKind::LoadWaiting, 0), None);
        let none = Metrics {
            load_waiting: vec![None, None],
            ..Metrics::default()
        };
        assert_eq!(none.per_backend(MetricKind::LoadWaiting, 2), None);
        assert_eq!(none.per_backend(MetricKind::LoadKvCachePercent, 2), None);
    }
}
