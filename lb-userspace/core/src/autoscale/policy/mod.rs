//! The scaling policies. Each is a pure state machine: it is given a [`Sample`] (the time,
//! the serving backends, the metrics) and answers an [`Opinion`]; it never reads a clock,
//! the kernel or the network, so the same code runs in the daemon, in the simulator and in
//! unit tests on scripted series.
//!
//! Metrics are **per serving backend**: open connections are averaged over the serving
//! backends, VIP-wide rates (new connections/s, packets/s, bytes/s) are divided by their
//! number, and the backend-reported metric is the mean over the backends that answered.
//!
//! A backend that does not answer its metric request has no value. Target tracking then
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
use crate::config::autoscale::MetricKind;

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
}

impl Metrics {
    /// The VIP-wide total of a kernel metric (`None` for the backend-reported one).
    pub fn total(&self, m: MetricKind) -> Option<f64> {
        match m {
            MetricKind::ActiveConnections => Some(self.active_connections),
            MetricKind::NewConnections => Some(self.new_connections_per_s),
            MetricKind::Packets => Some(self.packets_per_s),
            MetricKind::Bytes => Some(self.bytes_per_s),
            MetricKind::Backend => None,
        }
    }

    /// The per-backend value of `m` with `serving` backends (`None` when unknown).
    pub fn per_backend(&self, m: MetricKind, serving: u32) -> Option<f64> {
        if serving == 0 {
            return None;
        }
        match self.total(m) {
            Some(t) => Some(t / f64::from(serving)),
            None => {
                let known: Vec<f64> = self.backend.iter().flatten().copied().collect();
                (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
            }
        }
    }
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
}
