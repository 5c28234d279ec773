//! On-demand thresholds: "above X for D, add N; below Y for D, remove M", each rule with
//! its own cooldown. A rule's timer starts when its condition first holds and restarts
//! whenever it stops holding or the metric is unknown; when it has held for `for_ms` and
//! the rule's cooldown has passed since it last fired, the rule fires (and its timer
//! restarts). Several rules firing at once: the highest count wins. Rules that do not fire
//! have no opinion, so they never hold the other policies back.

use super::{Opinion, Sample};
use crate::{
    autoscale::clock::Time,
    config::autoscale::{StepConfig, StepDirection},
};

#[derive(Debug, Clone)]
struct Rule {
    spec: StepConfig,
    /// Since when the condition holds.
    since: Option<Time>,
    last_fired: Option<Time>,
}

/// The step rules of one VIP.
#[derive(Debug, Clone)]
pub struct Steps {
    rules: Vec<Rule>,
}

impl Steps {
    pub fn new(specs: Vec<StepConfig>) -> Self {
        Self {
            rules: specs
                .into_iter()
                .map(|spec| Rule {
                    spec,
                    since: None,
                    last_fired: None,
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn evaluate(&mut self, s: &Sample) -> Opinion {
        let mut best: Option<(u32, String)> = None;
        let mut waiting = Vec::new();
        for (i, r) in self.rules.iter_mut().enumerate() {
            let spec = &r.spec;
            let Some(v) = s.metrics.per_backend(spec.metric, s.current) else {
                r.since = None;
                continue;
            };
            let (holds, op) = match spec.direction {
                StepDirection::Above => (v > spec.threshold.0, ">"),
                StepDirection::Below => (v < spec.threshold.0, "<"),
            };
            if !holds {
                r.since = None;
                continue;
            }
            let since = *r.since.get_or_insert(s.now);
            let held = s.now.since(since);
            if held < u64::from(spec.for_ms) {
                waiting.push(format!("step[{i}] holding {} of {} ms", held, spec.for_ms));
                continue;
            }
            if let Some(last) = r.last_fired
                && s.now.since(last) < u64::from(spec.cooldown_ms)
            {
                waiting.push(format!(
                    "step[{i}] in cooldown ({} of {} ms)",
                    s.now.since(last),
                    spec.cooldown_ms
                ));
                continue;
            }
            r.last_fired = Some(s.now);
            r.since = None;
            let desired = match spec.direction {
                StepDirection::Above => s.current.saturating_add(spec.change),
                StepDirection::Below => s.current.saturating_sub(spec.change),
            };
            let sign = if spec.direction == StepDirection::Above {
                '+'
            } else {
                '-'
            };
            let why = format!(
                "step[{i}]: {} {v:.1}/backend {op} {} for {} ms → {sign}{} = {desired}",
                spec.metric, spec.threshold.0, held, spec.change
            );
            if best.as_ref().is_none_or(|(d, _)| desired > *d) {
                best = Some((desired, why));
            }
        }
        match best {
            Some((d, why)) => Opinion {
                desired: Some(d),
                reason: why,
                ..Opinion::default()
            },
            None => Opinion {
                reason: if waiting.is_empty() {
                    "steps: no rule holds".to_owned()
                } else {
                    format!("steps: {}", waiting.join("; "))
                },
                ..Opinion::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        autoscale::policy::Metrics,
        config::autoscale::{MetricKind, Num},
    };

    fn rule(direction: StepDirection, threshold: f64, change: u32) -> StepConfig {
        StepConfig {
            metric: MetricKind::ActiveConnections,
            direction,
            threshold: Num(threshold),
            for_ms: 30_000,
            change,
            cooldown_ms: 60_000,
        }
    }

    fn at(t: u64, current: u32, per_backend: f64) -> Sample {
        Sample {
            now: Time::from_secs(t),
            current,
            metrics: Metrics {
                active_connections: per_backend * f64::from(current),
                ..Metrics::default()
            },
        }
    }

    #[test]
    fn above_for_duration_then_cooldown() {
        let mut p = Steps::new(vec![rule(StepDirection::Above, 80.0, 2)]);
        assert_eq!(p.evaluate(&at(0, 3, 90.0)).desired, None, "just started");
        assert_eq!(p.evaluate(&at(20, 3, 90.0)).desired, None, "20 s < 30 s");
        let o = p.evaluate(&at(30, 3, 90.0));
        assert_eq!(o.desired, Some(5), "{}", o.reason);
        // Timer restarted at the firing; held again 30 s later, but cooldown is 60 s.
        assert_eq!(p.evaluate(&at(40, 5, 90.0)).desired, None);
        let o = p.evaluate(&at(75, 5, 90.0));
        assert_eq!(o.desired, None);
        assert!(o.reason.contains("cooldown"), "{}", o.reason);
        assert_eq!(p.evaluate(&at(90, 5, 90.0)).desired, Some(7));
    }

    #[test]
    fn a_dip_restarts_the_timer() {
        let mut p = Steps::new(vec![rule(StepDirection::Above, 80.0, 1)]);
        p.evaluate(&at(0, 2, 90.0));
        p.evaluate(&at(20, 2, 50.0)); // condition broken
        assert_eq!(p.evaluate(&at(40, 2, 90.0)).desired, None);
        assert_eq!(p.evaluate(&at(69, 2, 90.0)).desired, None);
        assert_eq!(p.evaluate(&at(70, 2, 90.0)).desired, Some(3));
    }

    #[test]
    fn below_removes_and_highest_of_fired_rules_wins() {
        let mut p = Steps::new(vec![
            rule(StepDirection::Below, 20.0, 1),
            rule(StepDirection::Below, 40.0, 3),
        ]);
        p.evaluate(&at(0, 6, 10.0));
        let o = p.evaluate(&at(30, 6, 10.0));
        // Both fire: 6 - 1 = 5 and 6 - 3 = 3; the highest count wins.
        assert_eq!(o.desired, Some(5), "{}", o.reason);
        assert!(o.reason.starts_with("step[0]"), "{}", o.reason);
        // Unknown metric (no serving backend) restarts the timer.
        let mut p = Steps::new(vec![rule(StepDirection::Below, 20.0, 1)]);
        p.evaluate(&at(0, 2, 1.0));
        p.evaluate(&at(10, 0, 0.0));
        assert_eq!(p.evaluate(&at(30, 2, 1.0)).desired, None);
        assert_eq!(p.evaluate(&at(59, 2, 1.0)).desired, None);
        assert_eq!(p.evaluate(&at(60, 2, 1.0)).desired, Some(1));
    }
}
