//! The file's `[vip.autoscale]` (and its tables) as written: the shape serde checks.

use serde::Deserialize;

/// The file's `[vip.autoscale]` as written (see `raw.rs` for why everything is optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawAutoscale {
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub interval_ms: Option<i64>,
    pub weight: Option<i64>,
    pub ready_timeout_ms: Option<i64>,
    pub up_backends: Option<i64>,
    pub up_percent: Option<i64>,
    pub up_period_ms: Option<i64>,
    pub down_backends: Option<i64>,
    pub down_percent: Option<i64>,
    pub down_period_ms: Option<i64>,
    pub target: Option<RawTarget>,
    #[serde(default)]
    pub step: Vec<RawStep>,
    #[serde(default)]
    pub cron: Vec<RawCron>,
    pub backend_metric: Option<RawBackendMetric>,
    pub provider: Option<RawProvider>,
}

/// A number written as an integer or a float.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub(in crate::config) enum RawNum {
    Int(i64),
    Float(f64),
}

impl RawNum {
    pub(super) fn get(self) -> f64 {
        match self {
            #[expect(
                clippy::cast_precision_loss,
                reason = "thresholds beyond 2^53 are not meaningful"
            )]
            RawNum::Int(i) => i as f64,
            RawNum::Float(f) => f,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawTarget {
    pub metric: Option<String>,
    pub value: Option<RawNum>,
    pub tolerance: Option<RawNum>,
    pub scale_down_stabilization_ms: Option<i64>,
    pub scale_up_stabilization_ms: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawStep {
    pub metric: Option<String>,
    pub above: Option<RawNum>,
    pub below: Option<RawNum>,
    pub for_ms: Option<i64>,
    pub add: Option<i64>,
    pub remove: Option<i64>,
    pub cooldown_ms: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawCron {
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub desired: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawBackendMetric {
    pub port: Option<i64>,
    pub path: Option<String>,
    pub timeout_ms: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawProvider {
    pub kind: Option<String>,
    pub standby: Option<Vec<String>>,
    pub create: Option<Vec<String>>,
    pub destroy: Option<Vec<String>>,
    pub timeout_ms: Option<i64>,
    pub retries: Option<i64>,
}
