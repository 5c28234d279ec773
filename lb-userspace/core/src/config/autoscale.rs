//! `[vip.autoscale]`: the autoscaler's settings for one VIP (policies, bounds, rate limits,
//! provider), their validation and defaults. The policies themselves live in
//! `crate::autoscale`; this file only says what a valid section is.

use std::net::IpAddr;

use serde::{Deserialize, Serialize, Serializer};

pub use super::cron::{CronError, CronSchedule, CronZone};
use super::{Named, validate::Cx};

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
/// target and threshold is **per backend**.
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
}

impl Named for MetricKind {
    const FIELD: &'static str = "metric";
    const ALL: &'static [(&'static str, Self)] = &[
        ("active_connections", MetricKind::ActiveConnections),
        ("new_connections", MetricKind::NewConnections),
        ("packets", MetricKind::Packets),
        ("bytes", MetricKind::Bytes),
        ("backend", MetricKind::Backend),
    ];
    const RESERVED: &'static [&'static str] = &[];
}

impl MetricKind {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        Named::name(self)
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

/// The file's `[vip.autoscale]` as written (see `raw.rs` for why everything is optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAutoscale {
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
pub(super) enum RawNum {
    Int(i64),
    Float(f64),
}

impl RawNum {
    fn get(self) -> f64 {
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
pub(super) struct RawTarget {
    pub metric: Option<String>,
    pub value: Option<RawNum>,
    pub tolerance: Option<RawNum>,
    pub scale_down_stabilization_ms: Option<i64>,
    pub scale_up_stabilization_ms: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
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
pub(super) struct RawCron {
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub desired: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackendMetric {
    pub port: Option<i64>,
    pub path: Option<String>,
    pub timeout_ms: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    pub kind: Option<String>,
    pub standby: Option<Vec<String>>,
    pub create: Option<Vec<String>>,
    pub destroy: Option<Vec<String>>,
    pub timeout_ms: Option<i64>,
    pub retries: Option<i64>,
}

/// `provider.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProviderKind {
    Pool,
    Exec,
}

impl Named for ProviderKind {
    const FIELD: &'static str = "kind";
    const ALL: &'static [(&'static str, Self)] =
        &[("pool", ProviderKind::Pool), ("exec", ProviderKind::Exec)];
    const RESERVED: &'static [&'static str] = &["kubernetes"];
}

/// What validation needs to know of the VIP around the section.
pub(super) struct VipContext<'a> {
    pub address: Option<IpAddr>,
    /// The VIP's configured backend addresses (those that parsed).
    pub backends: &'a [IpAddr],
    /// A simulator policy file: no provider needed.
    pub simulated: bool,
}

impl Cx<'_> {
    /// A number in `range`, or `default` when absent (`None`: required).
    fn num(
        &mut self,
        path: &str,
        value: Option<RawNum>,
        default: Option<f64>,
        range: std::ops::RangeInclusive<f64>,
    ) -> Option<Num> {
        let Some(v) = value.map(RawNum::get) else {
            if default.is_none() {
                self.missing(path);
            }
            return default.map(Num);
        };
        if v.is_finite() && range.contains(&v) {
            Some(Num(v))
        } else {
            self.error(
                path,
                format!("{v} is out of range ({}..={})", range.start(), range.end()),
            );
            None
        }
    }

    fn ms(
        &mut self,
        path: &str,
        value: Option<i64>,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Option<u32> {
        self.int(path, value, Some(default), range)
    }

    /// Validate `[vip.autoscale]` at `path`.
    pub(super) fn autoscale(
        &mut self,
        a: &RawAutoscale,
        path: &str,
        vip: &VipContext<'_>,
    ) -> Option<AutoscaleConfig> {
        let at = |key: &str| format!("{path}.{key}");
        let count = AUTOSCALE_COUNT_RANGE;
        let min = self.int(&at("min"), a.min, Some(1), count.clone());
        let max = self.int(&at("max"), a.max, None, 1..=*count.end());
        if let (Some(lo), Some(hi)) = (min, max)
            && lo > hi
        {
            self.error(&at("min"), format!("{lo} is more than max ({hi})"));
        }
        let interval_ms = self.ms(
            &at("interval_ms"),
            a.interval_ms,
            DEFAULT_AUTOSCALE_INTERVAL_MS,
            AUTOSCALE_INTERVAL_RANGE,
        );
        let weight = self.int(
            &at("weight"),
            a.weight,
            Some(super::DEFAULT_WEIGHT),
            1..=*super::WEIGHT_RANGE.end(),
        );
        let ready_timeout_ms = self.ms(
            &at("ready_timeout_ms"),
            a.ready_timeout_ms,
            DEFAULT_READY_TIMEOUT_MS,
            READY_TIMEOUT_RANGE,
        );
        let up_backends = self.int(
            &at("up_backends"),
            a.up_backends,
            Some(DEFAULT_UP_BACKENDS),
            count.clone(),
        );
        let up_percent = self.int(
            &at("up_percent"),
            a.up_percent,
            Some(DEFAULT_UP_PERCENT),
            PERCENT_RANGE,
        );
        let up_period_ms = self.ms(
            &at("up_period_ms"),
            a.up_period_ms,
            DEFAULT_PERIOD_MS,
            PERIOD_RANGE,
        );
        let down_backends = self.int(
            &at("down_backends"),
            a.down_backends,
            Some(DEFAULT_DOWN_BACKENDS),
            count.clone(),
        );
        let down_percent = self.int(
            &at("down_percent"),
            a.down_percent,
            Some(DEFAULT_DOWN_PERCENT),
            0..=100,
        );
        let down_period_ms = self.ms(
            &at("down_period_ms"),
            a.down_period_ms,
            DEFAULT_PERIOD_MS,
            PERIOD_RANGE,
        );
        if up_backends == Some(0) && up_percent == Some(0) {
            self.error(
                &at("up_backends"),
                "up_backends and up_percent are both 0: the autoscaler could never add a backend",
            );
        }
        let backend_metric = match &a.backend_metric {
            None => Some(None),
            Some(m) => self
                .backend_metric(m, &at("backend_metric"), interval_ms)
                .map(Some),
        };
        let has_backend_metric = a.backend_metric.is_some();
        let target = match &a.target {
            None => Some(None),
            Some(t) => self.target(t, &at("target"), has_backend_metric).map(Some),
        };
        let mut steps = Some(Vec::new());
        for (i, s) in a.step.iter().enumerate() {
            match (
                self.step(s, &format!("{path}.step[{i}]"), has_backend_metric),
                &mut steps,
            ) {
                (Some(s), Some(list)) => list.push(s),
                _ => steps = None,
            }
        }
        let mut crons = Some(Vec::new());
        for (i, c) in a.cron.iter().enumerate() {
            match (self.cron(c, &format!("{path}.cron[{i}]")), &mut crons) {
                (Some(c), Some(list)) => list.push(c),
                _ => crons = None,
            }
        }
        if a.target.is_none() && a.step.is_empty() && a.cron.is_empty() {
            self.error(path, "no policy: set [vip.autoscale.target], [[vip.autoscale.step]] or [[vip.autoscale.cron]]");
        }
        let provider = match &a.provider {
            // The simulator has no provider: an empty pool stands for it.
            None if vip.simulated => Some(ProviderConfig::Pool {
                standby: Vec::new(),
            }),
            None => {
                self.missing(&at("provider"));
                None
            }
            Some(p) => self.provider(p, &at("provider"), vip),
        };
        if let (Some(ProviderConfig::Pool { standby }), Some(max), false) =
            (&provider, max, vip.simulated)
        {
            let fixed = vip.backends.iter().filter(|b| !standby.contains(b)).count();
            let reachable = fixed + standby.len();
            if (max as usize) > reachable {
                self.warn(&at("max"), format!("{max} can never be reached: {fixed} fixed backends + {} standby addresses = {reachable}", standby.len()));
            }
        }
        Some(AutoscaleConfig {
            min: min?,
            max: max?,
            interval_ms: interval_ms?,
            weight: weight?,
            ready_timeout_ms: ready_timeout_ms?,
            up_backends: up_backends?,
            up_percent: up_percent?,
            up_period_ms: up_period_ms?,
            down_backends: down_backends?,
            down_percent: down_percent?,
            down_period_ms: down_period_ms?,
            target: target?,
            steps: steps?,
            crons: crons?,
            backend_metric: backend_metric?,
            provider: provider?,
        })
        .filter(|c| c.min <= c.max)
    }

    fn metric(
        &mut self,
        path: &str,
        value: Option<&String>,
        has_backend_metric: bool,
    ) -> Option<MetricKind> {
        let m = self.named::<MetricKind>(path, value, None)?;
        if m == MetricKind::Backend && !has_backend_metric {
            self.error(path, "metric \"backend\" needs [vip.autoscale.backend_metric] (where to ask each backend)");
            return None;
        }
        Some(m)
    }

    fn target(
        &mut self,
        t: &RawTarget,
        path: &str,
        has_backend_metric: bool,
    ) -> Option<TargetConfig> {
        let at = |key: &str| format!("{path}.{key}");
        let metric = self.metric(&at("metric"), t.metric.as_ref(), has_backend_metric);
        let mut value = self.num(&at("value"), t.value, None, 0.0..=1e15);
        if value.is_some_and(|v| v.0 <= 0.0) {
            self.error(&at("value"), "the target must be more than 0");
            value = None;
        }
        let tolerance = self.num(
            &at("tolerance"),
            t.tolerance,
            Some(DEFAULT_TOLERANCE),
            0.0..=0.99,
        );
        let down = self.ms(
            &at("scale_down_stabilization_ms"),
            t.scale_down_stabilization_ms,
            DEFAULT_DOWN_STABILIZATION_MS,
            WINDOW_RANGE,
        );
        let up = self.ms(
            &at("scale_up_stabilization_ms"),
            t.scale_up_stabilization_ms,
            DEFAULT_UP_STABILIZATION_MS,
            WINDOW_RANGE,
        );
        Some(TargetConfig {
            metric: metric?,
            value: value?,
            tolerance: tolerance?,
            scale_down_stabilization_ms: down?,
            scale_up_stabilization_ms: up?,
        })
    }

    fn step(&mut self, s: &RawStep, path: &str, has_backend_metric: bool) -> Option<StepConfig> {
        let at = |key: &str| format!("{path}.{key}");
        let metric = self.metric(&at("metric"), s.metric.as_ref(), has_backend_metric);
        let range = 0.0..=1e15;
        let (direction, threshold, change) = match (s.above, s.below) {
            (Some(_), Some(_)) => {
                self.error(
                    &at("below"),
                    "a rule has either `above` or `below`, not both (write two rules)",
                );
                return None;
            }
            (None, None) => {
                self.error(
                    path,
                    "missing `above` or `below` (the threshold of the rule)",
                );
                return None;
            }
            (Some(v), None) => {
                if s.remove.is_some() {
                    self.error(&at("remove"), "an `above` rule adds backends: use `add`");
                    return None;
                }
                let ch = self.int(&at("add"), s.add, None, STEP_CHANGE_RANGE);
                (
                    StepDirection::Above,
                    self.num(&at("above"), Some(v), None, range),
                    ch,
                )
            }
            (None, Some(v)) => {
                if s.add.is_some() {
                    self.error(&at("add"), "a `below` rule removes backends: use `remove`");
                    return None;
                }
                let ch = self.int(&at("remove"), s.remove, None, STEP_CHANGE_RANGE);
                (
                    StepDirection::Below,
                    self.num(&at("below"), Some(v), None, range),
                    ch,
                )
            }
        };
        let for_ms = self.ms(&at("for_ms"), s.for_ms, DEFAULT_STEP_FOR_MS, WINDOW_RANGE);
        let cooldown_ms = self.ms(
            &at("cooldown_ms"),
            s.cooldown_ms,
            DEFAULT_STEP_COOLDOWN_MS,
            WINDOW_RANGE,
        );
        Some(StepConfig {
            metric: metric?,
            direction,
            threshold: threshold?,
            for_ms: for_ms?,
            change: change?,
            cooldown_ms: cooldown_ms?,
        })
    }

    fn cron(&mut self, c: &RawCron, path: &str) -> Option<CronConfig> {
        let at = |key: &str| format!("{path}.{key}");
        let schedule = self
            .required(&at("schedule"), c.schedule.as_ref())
            .and_then(|s| match CronSchedule::parse(s) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.error(&at("schedule"), e);
                    None
                }
            });
        let tz = c.timezone.as_deref().unwrap_or("UTC");
        let timezone = match CronZone::parse(tz) {
            Ok(z) => Some(z),
            Err(e) => {
                self.error(&at("timezone"), e);
                None
            }
        };
        let count = AUTOSCALE_COUNT_RANGE;
        let opt = |cx: &mut Self, key: &str, v: Option<i64>| match v {
            None => Some(None),
            Some(_) => cx.int(&at(key), v, None, count.clone()).map(Some),
        };
        let min = opt(self, "min", c.min);
        let max = opt(self, "max", c.max);
        let desired = opt(self, "desired", c.desired);
        if c.min.is_none() && c.max.is_none() && c.desired.is_none() {
            self.error(
                path,
                "the entry sets nothing: give `min`, `max` or `desired`",
            );
            return None;
        }
        if let (Some(Some(lo)), Some(Some(hi))) = (min, max)
            && lo > hi
        {
            self.error(&at("min"), format!("{lo} is more than max ({hi})"));
            return None;
        }
        Some(CronConfig {
            schedule: schedule?,
            timezone: timezone?,
            min: min?,
            max: max?,
            desired: desired?,
        })
    }

    fn backend_metric(
        &mut self,
        m: &RawBackendMetric,
        path: &str,
        interval_ms: Option<u32>,
    ) -> Option<BackendMetricConfig> {
        let at = |key: &str| format!("{path}.{key}");
        let port = self.int(&at("port"), m.port, None, 1..=u16::MAX);
        let p = m
            .path
            .clone()
            .unwrap_or_else(|| DEFAULT_BACKEND_METRIC_PATH.to_owned());
        let path_ok = p.starts_with('/') && !p.chars().any(|c| c.is_whitespace() || c.is_control());
        if !path_ok {
            self.error(
                &at("path"),
                format!("{p:?} is not an HTTP path (it must start with '/' and have no spaces)"),
            );
        }
        let timeout_ms = self.int(
            &at("timeout_ms"),
            m.timeout_ms,
            Some(DEFAULT_BACKEND_METRIC_TIMEOUT_MS),
            super::HEALTH_TIMEOUT_RANGE,
        );
        if let (Some(t), Some(i)) = (timeout_ms, interval_ms)
            && t >= i
        {
            self.error(
                &at("timeout_ms"),
                format!("{t} ms is not shorter than interval_ms ({i} ms)"),
            );
            return None;
        }
        Some(BackendMetricConfig {
            port: port?,
            path: path_ok.then_some(p)?,
            timeout_ms: timeout_ms?,
        })
    }

    fn provider(
        &mut self,
        p: &RawProvider,
        path: &str,
        vip: &VipContext<'_>,
    ) -> Option<ProviderConfig> {
        let at = |key: &str| format!("{path}.{key}");
        let kind = self.named::<ProviderKind>(&at("kind"), p.kind.as_ref(), None)?;
        let not_for = |cx: &mut Self, key: &str, set: bool| {
            if set {
                cx.error(
                    &at(key),
                    format!("`{key}` does not apply to kind = \"{}\"", kind.name()),
                );
            }
            !set
        };
        match kind {
            ProviderKind::Pool => {
                let ok = not_for(self, "create", p.create.is_some())
                    & not_for(self, "destroy", p.destroy.is_some())
                    & not_for(self, "timeout_ms", p.timeout_ms.is_some())
                    & not_for(self, "retries", p.retries.is_some());
                let list = self.required(&at("standby"), p.standby.as_ref())?;
                if list.is_empty() {
                    self.error(
                        &at("standby"),
                        "no standby addresses: the pool could never add a backend",
                    );
                    return None;
                }
                let mut out = Some(Vec::new());
                let mut seen = std::collections::HashMap::new();
                for (i, s) in list.iter().enumerate() {
                    let ip_path = format!("{path}.standby[{i}]");
                    let ip = self.ip(&ip_path, Some(s), "a standby backend");
                    if let (Some(a), Some(v)) = (ip, vip.address)
                        && a.is_ipv4() != v.is_ipv4()
                    {
                        self.error(
                            &ip_path,
                            format!("{a} is not the same family as the VIP {v}"),
                        );
                        out = None;
                        continue;
                    }
                    if let Some(a) = ip
                        && let Some(first) = seen.insert(a, i)
                    {
                        self.error(
                            &ip_path,
                            format!("duplicate standby address {a}: standby[{first}] has it too"),
                        );
                        out = None;
                        continue;
                    }
                    match (ip, &mut out) {
                        (Some(a), Some(l)) => l.push(a),
                        _ => out = None,
                    }
                }
                ok.then_some(())?;
                Some(ProviderConfig::Pool { standby: out? })
            }
            ProviderKind::Exec => {
                let ok = not_for(self, "standby", p.standby.is_some());
                let argv = |cx: &mut Self, key: &str, v: Option<&Vec<String>>| {
                    let v = cx.required(&at(key), v)?;
                    if v.is_empty() || v[0].trim().is_empty() || v.iter().any(|a| a.contains('\0'))
                    {
                        cx.error(
                            &at(key),
                            "expected a command as a list: [\"/path/to/program\", \"arg\", ...]",
                        );
                        return None;
                    }
                    Some(v.clone())
                };
                let create = argv(self, "create", p.create.as_ref());
                let destroy = argv(self, "destroy", p.destroy.as_ref());
                let timeout_ms = self.ms(
                    &at("timeout_ms"),
                    p.timeout_ms,
                    DEFAULT_EXEC_TIMEOUT_MS,
                    EXEC_TIMEOUT_RANGE,
                );
                let retries = self.int(
                    &at("retries"),
                    p.retries,
                    Some(DEFAULT_EXEC_RETRIES),
                    EXEC_RETRIES_RANGE,
                );
                ok.then_some(())?;
                Some(ProviderConfig::Exec {
                    create: create?,
                    destroy: destroy?,
                    timeout_ms: timeout_ms?,
                    retries: retries?,
                })
            }
        }
    }
}

/// `[sim]` of a simulator policy file: the capacity model.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSettings {
    /// Concurrent connections one backend serves at 100 % utilisation.
    pub capacity: f64,
    /// Backends at the start (default: `min`).
    pub initial: Option<u32>,
    /// From the decision to a serving backend: provisioning plus health checks.
    pub startup_ms: u32,
    /// Wall-clock time of the trace's 0 (for cron), as an RFC 3339 time.
    pub start: String,
    /// Simulation step.
    pub step_ms: u32,
    /// A draining backend leaves at the latest this long after its drain began (the VIP's
    /// `drain_timeout_ms` in the daemon).
    pub drain_timeout_ms: u32,
    /// Packets per second each open connection sends, and bytes per packet (for the
    /// packets/bytes metrics).
    pub packets_per_connection: f64,
    pub bytes_per_packet: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicyFile {
    autoscale: Option<RawAutoscale>,
    sim: Option<RawSim>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSim {
    capacity: Option<RawNum>,
    initial: Option<i64>,
    startup_ms: Option<i64>,
    start: Option<String>,
    step_ms: Option<i64>,
    drain_timeout_ms: Option<i64>,
    packets_per_connection: Option<RawNum>,
    bytes_per_packet: Option<RawNum>,
}

/// Default `sim.start`: a Monday, midnight UTC.
pub const DEFAULT_SIM_START: &str = "2025-01-06T00:00:00Z";

/// Parse and validate a simulator policy file: `[autoscale]` with exactly the keys and
/// rules of `[vip.autoscale]` (the provider may be left out), and `[sim]`.
pub fn parse_policy(
    text: &str,
    origin: &str,
) -> Result<(AutoscaleConfig, SimSettings), super::ConfigError> {
    let loc = super::locate::Locator::new(text).map_err(|e| super::ConfigError::Parse {
        origin: origin.to_owned(),
        problem: super::Problem {
            line: e.span().map(|s| super::locate::line_col(text, s.start).0),
            path: String::new(),
            message: format!("invalid TOML: {}", e.message().trim_end()),
        },
        column: None,
    })?;
    let raw: RawPolicyFile = toml::from_str(text).map_err(|e| super::ConfigError::Parse {
        origin: origin.to_owned(),
        problem: loc.describe_serde_error(&e),
        column: None,
    })?;
    let ((a, sim), problems, _) = super::validate::with_cx(&loc, |cx| {
        let vip = VipContext {
            address: None,
            backends: &[],
            simulated: true,
        };
        let a = match &raw.autoscale {
            Some(a) => cx.autoscale(a, "autoscale", &vip),
            None => {
                cx.error("autoscale", "missing required table [autoscale]");
                None
            }
        };
        let sim = match &raw.sim {
            Some(s) => cx.sim(s),
            None => {
                cx.error(
                    "sim",
                    "missing required table [sim] (it must set at least `capacity`)",
                );
                None
            }
        };
        (a, sim)
    });
    match (a, sim) {
        (Some(a), Some(s)) if problems.is_empty() => Ok((a, s)),
        _ => Err(super::ConfigError::Invalid {
            origin: origin.to_owned(),
            problems,
        }),
    }
}

impl Cx<'_> {
    fn sim(&mut self, s: &RawSim) -> Option<SimSettings> {
        let mut capacity = self.num("sim.capacity", s.capacity, None, 0.0..=1e12);
        if capacity.is_some_and(|c| c.0 < 1.0) {
            self.error("sim.capacity", "a backend must serve at least 1 connection");
            capacity = None;
        }
        let initial = match s.initial {
            None => Some(None),
            Some(_) => self
                .int("sim.initial", s.initial, None, AUTOSCALE_COUNT_RANGE)
                .map(Some),
        };
        let startup_ms = self.int("sim.startup_ms", s.startup_ms, Some(30_000), 0..=3_600_000);
        let step_ms = self.int("sim.step_ms", s.step_ms, Some(1000), 10..=60_000);
        let drain_timeout_ms = self.int(
            "sim.drain_timeout_ms",
            s.drain_timeout_ms,
            Some(super::DEFAULT_DRAIN_TIMEOUT_MS),
            super::DRAIN_TIMEOUT_RANGE,
        );
        let start = s
            .start
            .clone()
            .unwrap_or_else(|| DEFAULT_SIM_START.to_owned());
        let start = match chrono::DateTime::parse_from_rfc3339(&start) {
            Ok(_) => Some(start),
            Err(e) => {
                self.error(
                    "sim.start",
                    format!("{start:?} is not an RFC 3339 time like \"{DEFAULT_SIM_START}\": {e}"),
                );
                None
            }
        };
        let ppc = self.num(
            "sim.packets_per_connection",
            s.packets_per_connection,
            Some(10.0),
            0.0..=1e9,
        );
        let bpp = self.num(
            "sim.bytes_per_packet",
            s.bytes_per_packet,
            Some(800.0),
            0.0..=1e6,
        );
        Some(SimSettings {
            capacity: capacity?.0,
            initial: initial?,
            startup_ms: startup_ms?,
            start: start?,
            step_ms: step_ms?,
            drain_timeout_ms: drain_timeout_ms?,
            packets_per_connection: ppc?.0,
            bytes_per_packet: bpp?.0,
        })
    }
}
