//! Target tracking: the Kubernetes HPA rule. `desired = ceil(current × metric / target)`,
//! nothing while `|metric / target − 1| ≤ tolerance`, then stabilised: a scale-down goes
//! only as low as the highest recommendation of the last `scale_down_stabilization_ms`,
//! a scale-up only as high as the lowest one of the last `scale_up_stabilization_ms`
//! (Kubernetes' `stabilizeRecommendationWithBehaviors`). Rate limits and `[min, max]` apply
//! to the combined decision, in the controller.

use std::collections::VecDeque;

use super::{Opinion, Sample, ceil_count, missing_rule_ratio};
use crate::{
    autoscale::clock::Time,
    config::autoscale::{MetricKind, TargetConfig},
};

/// Target tracking for one VIP.
#[derive(Debug, Clone)]
pub struct Target {
    spec: TargetConfig,
    /// Raw recommendations, oldest first, kept as long as the longer window.
    history: VecDeque<(Time, u32)>,
}

impl Target {
    pub fn new(spec: TargetConfig) -> Self {
        Self {
            spec,
            history: VecDeque::new(),
        }
    }

    /// The usage ratio (metric / target) and a description of the inputs; `None` when the
    /// metric is unknown. A reported metric (`backend`, `load_*`) follows the missing-backend
    /// rule ([`missing_rule_ratio`]).
    fn ratio(&self, s: &Sample) -> Option<(f64, String)> {
        let metric = self.spec.metric;
        let target = self.spec.value.0;
        if let Some(values) = s.metrics.reported(metric) {
            let name = if metric == MetricKind::Backend {
                "backend metric"
            } else {
                metric.as_str()
            };
            return missing_rule_ratio(values, target, self.spec.tolerance.0, name);
        }
        let per = s.metrics.per_backend(metric, s.current)?;
        Some((per / target, format!("{metric} {per:.1}/backend")))
    }

    pub fn evaluate(&mut self, s: &Sample) -> Opinion {
        let Some((ratio, what)) = self.ratio(s) else {
            return Opinion {
                reason: format!("target: {} unknown", self.spec.metric),
                ..Opinion::default()
            };
        };
        let target = self.spec.value.0;
        let current = s.current;
        let raw = if (ratio - 1.0).abs() <= self.spec.tolerance.0 {
            current
        } else {
            ceil_count(ratio * f64::from(current))
        };
        let window = self
            .spec
            .scale_down_stabilization_ms
            .max(self.spec.scale_up_stabilization_ms);
        let cutoff = s.now.minus_ms(u64::from(window));
        while self.history.front().is_some_and(|(t, _)| *t < cutoff) {
            self.history.pop_front();
        }
        self.history.push_back((s.now, raw));
        let within = |ms: u32| {
            let from = s.now.minus_ms(u64::from(ms));
            self.history
                .iter()
                .filter(move |(t, _)| *t >= from)
                .map(|(_, r)| *r)
        };
        let up = within(self.spec.scale_up_stabilization_ms)
            .min()
            .unwrap_or(raw);
        let down = within(self.spec.scale_down_stabilization_ms)
            .max()
            .unwrap_or(raw);
        let mut desired = current;
        if desired < up {
            desired = up;
        }
        if desired > down {
            desired = down;
        }
        let mut reason = format!(
            "target: {what} vs {target} (ratio {ratio:.2}, tolerance {}) → {raw}",
            self.spec.tolerance.0
        );
        if desired != raw {
            let which = if raw < current { "down" } else { "up" };
            reason.push_str(&format!(", stabilised ({which} window) → {desired}"));
        }
        Opinion {
            desired: Some(desired),
            reason,
            ..Opinion::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{autoscale::policy::Metrics, config::autoscale::Num};

    fn spec(metric: MetricKind, value: f64, down_ms: u32) -> TargetConfig {
        TargetConfig {
            metric,
            value: Num(value),
            tolerance: Num(0.1),
            scale_down_stabilization_ms: down_ms,
            scale_up_stabilization_ms: 0,
        }
    }

    fn conns(t: u64, current: u32, total: f64) -> Sample {
        Sample {
            now: Time::from_secs(t),
            current,
            metrics: Metrics {
                active_connections: total,
                ..Metrics::default()
            },
        }
    }

    /// The examples of the Kubernetes documentation: current 1, metric 200 vs target 100
    /// → 2; metric 50 → ceil(0.5 × current).
    #[test]
    fn hpa_formula() {
        let mut p = Target::new(spec(MetricKind::ActiveConnections, 100.0, 0));
        assert_eq!(p.evaluate(&conns(0, 1, 200.0)).desired, Some(2));
        assert_eq!(p.evaluate(&conns(15, 4, 200.0)).desired, Some(2)); // 50/backend
        assert_eq!(p.evaluate(&conns(30, 3, 1000.0)).desired, Some(10)); // ceil(3 × 3.33)
        assert_eq!(p.evaluate(&conns(45, 10, 1.0)).desired, Some(1)); // never 0 while busy
        assert_eq!(p.evaluate(&conns(60, 10, 0.0)).desired, Some(0));
    }

    #[test]
    fn tolerance_band_holds() {
        let mut p = Target::new(spec(MetricKind::ActiveConnections, 100.0, 0));
        // 4 backends at 109 each: ratio 1.09, inside ±0.1 → stay at 4 (ceil would say 5).
        assert_eq!(p.evaluate(&conns(0, 4, 436.0)).desired, Some(4));
        // 91 each: 0.91, inside → 4 (ceil would say 4 anyway); 89 each: 0.89 → ceil(3.56) = 4.
        assert_eq!(p.evaluate(&conns(15, 4, 364.0)).desired, Some(4));
        // 111 each: 1.11 → ceil(4.44) = 5.
        assert_eq!(p.evaluate(&conns(30, 4, 444.0)).desired, Some(5));
        // 70 each on 10: 0.7 → 7.
        assert_eq!(p.evaluate(&conns(45, 10, 700.0)).desired, Some(7));
    }

    /// A dip shorter than the window does not scale down; the highest recommendation of the
    /// window wins, and the scale-down comes once the high ones leave the window.
    #[test]
    fn scale_down_stabilisation_window() {
        let mut p = Target::new(spec(MetricKind::ActiveConnections, 100.0, 300_000));
        assert_eq!(p.evaluate(&conns(0, 4, 800.0)).desired, Some(8));
        // Load falls: raw 2, but 8 was recommended 15 s ago.
        let o = p.evaluate(&conns(15, 8, 200.0));
        assert_eq!(o.desired, Some(8), "{}", o.reason);
        assert!(o.reason.contains("stabilised"), "{}", o.reason);
        // Still inside 300 s: held at 8.
        assert_eq!(p.evaluate(&conns(299, 8, 200.0)).desired, Some(8));
        // 8 leaves the window at t = 300: the highest left is 2 (t=15..299 all said 2 with
        // 8 serving: 200/8 = 25/backend → ceil(0.25 × 8) = 2).
        assert_eq!(p.evaluate(&conns(301, 8, 200.0)).desired, Some(2));
        // Scale-up is not delayed by the down window.
        assert_eq!(p.evaluate(&conns(316, 2, 600.0)).desired, Some(6));
    }

    #[test]
    fn scale_up_window_takes_the_lowest() {
        let mut s = spec(MetricKind::NewConnections, 10.0, 0);
        s.scale_up_stabilization_ms = 60_000;
        let mut p = Target::new(s);
        let rate = |t, cur, r| Sample {
            now: Time::from_secs(t),
            current: cur,
            metrics: Metrics {
                new_connections_per_s: r,
                ..Metrics::default()
            },
        };
        assert_eq!(p.evaluate(&rate(0, 2, 20.0)).desired, Some(2));
        // A spike: raw 10, but the lowest of the last 60 s is 2.
        assert_eq!(p.evaluate(&rate(15, 2, 100.0)).desired, Some(2));
        assert_eq!(p.evaluate(&rate(61, 2, 100.0)).desired, Some(10));
    }

    #[test]
    fn silent_backends_follow_the_kubernetes_rule() {
        let mut p = Target::new(spec(MetricKind::Backend, 10.0, 0));
        let b = |t, v: Vec<Option<f64>>| Sample {
            now: Time::from_secs(t),
            current: u32::try_from(v.len()).unwrap(),
            metrics: Metrics {
                backend: v,
                ..Metrics::default()
            },
        };
        // Answered ones say 20 (ratio 2, up); the silent one counts 0: (20+20+0)/3 = 13.3
        // → ceil(3 × 1.33) = 4.
        assert_eq!(
            p.evaluate(&b(0, vec![Some(20.0), Some(20.0), None]))
                .desired,
            Some(4)
        );
        // Answered say 2 (down); silent ones count as the target: (2+10+10)/3 = 7.33
        // → ceil(3 × 0.733) = 3: no change.
        let o = p.evaluate(&b(15, vec![Some(2.0), None, None]));
        assert_eq!(o.desired, Some(3), "{}", o.reason);
        // Answered 12 (up, 1.2) with one silent of 2: (12+0)/2 = 6: direction flips → stay.
        let o = p.evaluate(&b(30, vec![Some(12.0), None]));
        assert_eq!(o.desired, Some(2), "{}", o.reason);
        assert!(o.reason.contains("no change"), "{}", o.reason);
        // Nobody answers: no opinion.
        assert_eq!(p.evaluate(&b(45, vec![None, None])).desired, None);
    }

    /// The load figures follow the same rule; a stale or never-read backend is missing.
    #[test]
    fn load_waiting_target_with_missing_backends() {
        let mut p = Target::new(spec(MetricKind::LoadWaiting, 5.0, 0));
        let w = |t, v: Vec<Option<f64>>| Sample {
            now: Time::from_secs(t),
            current: u32::try_from(v.len()).unwrap(),
            metrics: Metrics {
                load_waiting: v,
                ..Metrics::default()
            },
        };
        // All fresh: mean 10 vs 5 → ratio 2 → 4.
        let o = p.evaluate(&w(0, vec![Some(10.0), Some(10.0)]));
        assert_eq!(o.desired, Some(4), "{}", o.reason);
        assert!(
            o.reason.contains("load_waiting 10.0/backend"),
            "{}",
            o.reason
        );
        // One stale (missing) while the others say up: it counts as 0 waiting,
        // (12 + 12 + 0) / 3 = 8 → ratio 1.6 → ceil(4.8) = 5.
        let o = p.evaluate(&w(15, vec![Some(12.0), None, Some(12.0)]));
        assert_eq!(o.desired, Some(5), "{}", o.reason);
        assert!(o.reason.contains("1 of 3 silent"), "{}", o.reason);
        // The others say down: the missing one counts as the target, (1 + 5) / 2 = 3 →
        // ratio 0.6 → ceil(1.2) = 2: no scale-down on the missing one's behalf.
        let o = p.evaluate(&w(30, vec![Some(1.0), None]));
        assert_eq!(o.desired, Some(2), "{}", o.reason);
        // Every report stale: no opinion (the count stays).
        let o = p.evaluate(&w(45, vec![None, None, None]));
        assert_eq!(o.desired, None, "{}", o.reason);
        assert!(o.reason.contains("load_waiting unknown"), "{}", o.reason);
    }
}
