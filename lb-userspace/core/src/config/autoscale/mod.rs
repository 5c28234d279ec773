//! `[vip.autoscale]`: the autoscaler's settings for one VIP (policies, bounds, rate limits,
//! provider), their validation and defaults. The policies themselves live in
//! `crate::autoscale`; this module only says what a valid section is: the types and
//! defaults here, the file's shape in `raw`, the checks in `validate`, and the simulator's
//! policy files in `policy_file`.

mod policy_file;
mod raw;
mod validate;

use std::net::IpAddr;

use serde::{Serialize, Serializer};

pub use self::policy_file::{DEFAULT_SIM_START, SimSettings, parse_policy};
pub(in crate::config) use self::raw::RawAutoscale;
pub(in crate::config) use self::validate::{LoadContext, VipContext};
use super::Named;
pub use super::cron::{CronError, CronSchedule, CronZone};

/// A finite, non-negative number from the file (targets, thresholds). `Eq` by bits so the
/// configuration stays comparable as a whole.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Num(pub f64);

impl Eq for Num {}

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

/// Defaults and ranges of `[vip.autoscale]`. The rate limits and the scale-down window are
/// Kubernetes' HPA defaults (`behavior`: up max(100 %, 4 pods) per 15 s, down 100 % per
/// 15 s, 300 s scale-down stabilisation, tolerance 0.1, sync every 15 s).
pub const DEFAULT_AUTOSCALE_INTERVAL_MS: u32 = 15_000;
pub const AUTOSCALE_INTERVAL_RANGE: std::ops::RangeInclusive<u32> = 100..=3_600_000;
pub const AUTOSCALE_COUNT_RANGE: std::ops::RangeInclusive<u32> = 0..=10_000;
pub const DEFAULT_UP_BACKENDS: u32 = 4;
pub const DEFAULT_UP_PERCENT: u32 = 100;
pub const DEFAULT_DOWN_BACKENDS: u32 = 0;
pub const DEFAULT_DOWN_PERCENT: u32 = 100;
pub const PERCENT_RANGE: std::ops::RangeInclusive<u32> = 0..=10_000;
pub const DEFAULT_PERIOD_MS: u32 = 15_000;
pub const PERIOD_RANGE: std::ops::RangeInclusive<u32> = 100..=86_400_000;
pub const DEFAULT_TOLERANCE: f64 = 0.1;
pub const DEFAULT_DOWN_STABILIZATION_MS: u32 = 300_000;
pub const DEFAULT_UP_STABILIZATION_MS: u32 = 0;
pub const WINDOW_RANGE: std::ops::RangeInclusive<u32> = 0..=86_400_000;
pub const DEFAULT_READY_TIMEOUT_MS: u32 = 60_000;
pub const READY_TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 1000..=3_600_000;
pub const DEFAULT_EXEC_TIMEOUT_MS: u32 = 60_000;
pub const EXEC_TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 100..=3_600_000;
pub const DEFAULT_EXEC_RETRIES: u32 = 2;
pub const EXEC_RETRIES_RANGE: std::ops::RangeInclusive<u32> = 0..=10;
pub const DEFAULT_BACKEND_METRIC_TIMEOUT_MS: u32 = 1000;
pub const DEFAULT_BACKEND_METRIC_PATH: &str = "/metric";

/// What a policy measures. VIP-wide rates are divided by the serving backends, so every
/// target and threshold is **per backend**. The `load_*` kinds are the figures of the
/// VIP's `[vip.load]` reports (the backends' own view of their load: a model server's queue,
/// batch and KV cache), one value per serving backend, averaged like `backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Open connections (kernel connection tracking) per serving backend.
    ActiveConnections,
    /// New connections per second to the VIP, per serving backend.
    NewConnections,
    /// Packets per second to the VIP, per serving backend.
    Packets,
    /// Bytes per second to the VIP, per serving backend.
    Bytes,
    /// The value each backend reports over HTTP (`[vip.autoscale.backend_metric]`),
    /// averaged over the backends that answered.
    Backend,
    /// Requests waiting to be scheduled, from `[vip.load]` (vLLM `num_requests_waiting`).
    LoadWaiting,
    /// Requests in the running batch, from `[vip.load]` (vLLM `num_requests_running`).
    LoadRunning,
    /// KV-cache use in **percent** (0..=100), from `[vip.load]` (vLLM reports a fraction;
    /// it is multiplied by 100 so thresholds read like `kv_limit_percent`).
    LoadKvCachePercent,
}

impl Named for MetricKind {
    const FIELD: &'static str = "metric";
    const ALL: &'static [(&'static str, Self)] = &[
        ("active_connections", MetricKind::ActiveConnections),
        ("new_connections", MetricKind::NewConnections),
        ("packets", MetricKind::Packets),
        ("bytes", MetricKind::Bytes),
        ("backend", MetricKind::Backend),
        ("load_waiting", MetricKind::LoadWaiting),
        ("load_running", MetricKind::LoadRunning),
        ("load_kv_cache_percent", MetricKind::LoadKvCachePercent),
    ];
    const RESERVED: &'static [&'static str] = &[];
}

impl MetricKind {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        Named::name(self)
    }

    /// A figure of the backends' load reports (`[vip.load]`).
    pub fn is_load(self) -> bool {
        matches!(
            self,
            MetricKind::LoadWaiting | MetricKind::LoadRunning | MetricKind::LoadKvCachePercent
        )
    }
}

impl std::fmt::Display for MetricKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[vip.autoscale]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoscaleConfig {
    /// Fewest serving backends (the autoscaler never goes below, cron may change it).
    pub min: u32,
    /// Most serving backends.
    pub max: u32,
    /// How often the policies are evaluated.
    pub interval_ms: u32,
    /// Weight of the backends the autoscaler adds.
    pub weight: u32,
    /// How long a new backend may take to pass its health checks before it is given back.
    pub ready_timeout_ms: u32,
    /// Rate limits of the final decision (HPA `behavior`).
    pub up_backends: u32,
    pub up_percent: u32,
    pub up_period_ms: u32,
    pub down_backends: u32,
    pub down_percent: u32,
    pub down_period_ms: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetConfig>,
    #[serde(rename = "step", skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepConfig>,
    #[serde(rename = "cron", skip_serializing_if = "Vec::is_empty")]
    pub crons: Vec<CronConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_metric: Option<BackendMetricConfig>,
    pub provider: ProviderConfig,
}

impl AutoscaleConfig {
    /// The metrics its target and step rules measure.
    pub fn metrics(&self) -> impl Iterator<Item = MetricKind> + '_ {
        self.target
            .iter()
            .map(|t| t.metric)
            .chain(self.steps.iter().map(|s| s.metric))
    }
}

/// `[vip.autoscale.target]`: target tracking, the Kubernetes HPA rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetConfig {
    pub metric: MetricKind,
    /// The per-backend value to hold.
    pub value: Num,
    /// No change while |metric / value − 1| ≤ tolerance.
    pub tolerance: Num,
    /// Scale down only to the highest recommendation of this window.
    pub scale_down_stabilization_ms: u32,
    /// Scale up only to the lowest recommendation of this window.
    pub scale_up_stabilization_ms: u32,
}

/// Which way a step rule looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepDirection {
    Above,
    Below,
}

/// `[[vip.autoscale.step]]`: "above X for D, add N" or "below Y for D, remove M".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepConfig {
    pub metric: MetricKind,
    pub direction: StepDirection,
    pub threshold: Num,
    /// The condition must hold this long.
    pub for_ms: u32,
    /// Backends added (above) or removed (below).
    pub change: u32,
    /// After firing, the rule waits this long before it may fire again.
    pub cooldown_ms: u32,
}

impl Serialize for StepConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out {
            metric: MetricKind,
            #[serde(skip_serializing_if = "Option::is_none")]
            above: Option<Num>,
            #[serde(skip_serializing_if = "Option::is_none")]
            below: Option<Num>,
            for_ms: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            add: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            remove: Option<u32>,
            cooldown_ms: u32,
        }
        let above = self.direction == StepDirection::Above;
        Out {
            metric: self.metric,
            above: above.then_some(self.threshold),
            below: (!above).then_some(self.threshold),
            for_ms: self.for_ms,
            add: above.then_some(self.change),
            remove: (!above).then_some(self.change),
            cooldown_ms: self.cooldown_ms,
        }
        .serialize(s)
    }
}

/// `[[vip.autoscale.cron]]`: from each firing of `schedule` (in `timezone`) until the next
/// firing of any cron entry of the VIP, `min`/`max` replace the section's; `desired` is set
/// once, when it fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CronConfig {
    pub schedule: CronSchedule,
    pub timezone: CronZone,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired: Option<u32>,
}

/// `[vip.autoscale.backend_metric]`: each serving backend answers `GET path` on `port`
/// with a number as the body. A backend that does not answer in time (or answers something
/// else) has no value this round; see `crate::autoscale::policy` for what then happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendMetricConfig {
    pub port: u16,
    pub path: String,
    pub timeout_ms: u32,
}

/// `[vip.autoscale.provider]`: where backends come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderConfig {
    /// Pre-provisioned standby addresses.
    Pool { standby: Vec<IpAddr> },
    /// Commands that create and destroy a backend.
    Exec {
        create: Vec<String>,
        destroy: Vec<String>,
        timeout_ms: u32,
        retries: u32,
    },
}

/// Default `for_ms` and `cooldown_ms` of a step rule.
pub const DEFAULT_STEP_FOR_MS: u32 = 60_000;
pub const DEFAULT_STEP_COOLDOWN_MS: u32 = 120_000;
/// Backends a step rule may add or remove at once.
pub const STEP_CHANGE_RANGE: std::ops::RangeInclusive<u32> = 1..=1000;
