//! Validation of `[vip.autoscale]`: bounds, rate limits, each policy, the backend metric
//! and the provider.

use std::net::IpAddr;

use super::raw::{
    RawAutoscale, RawBackendMetric, RawCron, RawNum, RawProvider, RawStep, RawTarget,
};
use super::{
    AUTOSCALE_COUNT_RANGE, AUTOSCALE_INTERVAL_RANGE, DEFAULT_AUTOSCALE_INTERVAL_MS,
    DEFAULT_BACKEND_METRIC_PATH, DEFAULT_BACKEND_METRIC_TIMEOUT_MS, DEFAULT_DOWN_BACKENDS,
    DEFAULT_DOWN_PERCENT, DEFAULT_DOWN_STABILIZATION_MS, DEFAULT_EXEC_RETRIES,
    DEFAULT_EXEC_TIMEOUT_MS, DEFAULT_PERIOD_MS, DEFAULT_READY_TIMEOUT_MS, DEFAULT_STEP_COOLDOWN_MS,
    DEFAULT_STEP_FOR_MS, DEFAULT_TOLERANCE, DEFAULT_UP_BACKENDS, DEFAULT_UP_PERCENT,
    DEFAULT_UP_STABILIZATION_MS, EXEC_RETRIES_RANGE, EXEC_TIMEOUT_RANGE, PERCENT_RANGE,
    PERIOD_RANGE, READY_TIMEOUT_RANGE, STEP_CHANGE_RANGE, WINDOW_RANGE,
};
use super::{
    AutoscaleConfig, BackendMetricConfig, CronConfig, CronSchedule, CronZone, MetricKind, Num,
    ProviderConfig, StepConfig, StepDirection, TargetConfig,
};
use crate::config::Named;
use crate::config::validate::Cx;

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

/// The rate limits of `[vip.autoscale]`, each `None` when invalid.
struct RateLimits {
    up_backends: Option<u32>,
    up_percent: Option<u32>,
    up_period_ms: Option<u32>,
    down_backends: Option<u32>,
    down_percent: Option<u32>,
    down_period_ms: Option<u32>,
}

/// The policies of `[vip.autoscale]` and the backend metric they may use; each `None` when
/// invalid.
struct Policies {
    backend_metric: Option<Option<BackendMetricConfig>>,
    target: Option<Option<TargetConfig>>,
    steps: Option<Vec<StepConfig>>,
    crons: Option<Vec<CronConfig>>,
}

/// Where the backend-reported metrics can come from: `[vip.autoscale.backend_metric]`, and
/// the VIP's `[vip.load]`.
#[derive(Clone, Copy)]
struct Sources {
    backend_metric: bool,
    load: LoadContext,
}

/// What validation needs to know of the VIP around the section.
pub(in crate::config) struct VipContext<'a> {
    pub address: Option<IpAddr>,
    /// The VIP's configured backend addresses (those that parsed).
    pub backends: &'a [IpAddr],
    /// A simulator policy file: no provider needed.
    pub simulated: bool,
    /// What the VIP's `[vip.load]` reads (for the `load_*` metrics).
    pub load: LoadContext,
}

/// What the VIP's `[vip.load]` section reads, as the `load_*` metrics need to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::config) enum LoadContext {
    /// The VIP has no `[vip.load]`.
    Absent,
    /// It has one, but it is invalid (already an error): no further complaint.
    Invalid,
    /// `source = "agent"`: weights and states, no figures.
    Agent,
    /// `source = "prometheus"`: which figures its selectors (explicit or the preset's) read.
    Reads {
        waiting: bool,
        running: bool,
        kv_cache: bool,
    },
    /// The simulator, which models the figures from its capacity model.
    Simulated,
}

impl LoadContext {
    /// From the VIP's `[vip.load]` as written (`raw`) and as validated (`valid`).
    pub(in crate::config) fn of(raw: bool, valid: Option<&crate::config::LoadConfig>) -> Self {
        use crate::config::LoadSource;
        match (raw, valid) {
            (false, _) => LoadContext::Absent,
            (true, None) => LoadContext::Invalid,
            (true, Some(l)) if l.source == LoadSource::Agent => LoadContext::Agent,
            (true, Some(l)) => {
                let s = l.selectors();
                LoadContext::Reads {
                    waiting: !s.waiting.is_empty(),
                    running: !s.running.is_empty(),
                    kv_cache: !s.kv_cache.is_empty(),
                }
            }
        }
    }

    /// Why a policy cannot use the load metric `m` on this VIP, if it cannot.
    fn problem(self, m: MetricKind) -> Option<String> {
        let what = match m {
            MetricKind::LoadWaiting => "waiting requests",
            MetricKind::LoadRunning => "running requests",
            MetricKind::LoadKvCachePercent => "KV-cache use",
            _ => return None,
        };
        match self {
            LoadContext::Invalid | LoadContext::Simulated => None,
            LoadContext::Absent => Some(format!(
                "metric \"{m}\" needs [vip.load] on this VIP (where each backend reports its \
                 load; e.g. source = \"prometheus\", preset = \"vllm\")"
            )),
            LoadContext::Agent => Some(format!(
                "metric \"{m}\" needs a prometheus [vip.load]: this VIP's source = \"agent\" \
                 reports no {what}"
            )),
            LoadContext::Reads {
                waiting,
                running,
                kv_cache,
            } => {
                let (reads, key) = match m {
                    MetricKind::LoadWaiting => (waiting, "waiting"),
                    MetricKind::LoadRunning => (running, "running"),
                    _ => (kv_cache, "kv_cache"),
                };
                (!reads).then(|| {
                    format!(
                        "metric \"{m}\" needs {what}, which this VIP's [vip.load] does not read: \
                         set vip.load.{key} (a metric selector) or a preset that reports it"
                    )
                })
            }
        }
    }
}

impl Cx<'_> {
    /// A number in `range`, or `default` when absent (`None`: required).
    pub(super) fn num(
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
    pub(in crate::config) fn autoscale(
        &mut self,
        a: &RawAutoscale,
        path: &str,
        vip: &VipContext<'_>,
    ) -> Option<AutoscaleConfig> {
        let at = |key: &str| format!("{path}.{key}");
        let (min, max) = self.bounds(a, path);
        let interval_ms = self.ms(
            &at("interval_ms"),
            a.interval_ms,
            DEFAULT_AUTOSCALE_INTERVAL_MS,
            AUTOSCALE_INTERVAL_RANGE,
        );
        let weight = self.int(
            &at("weight"),
            a.weight,
            Some(crate::config::DEFAULT_WEIGHT),
            1..=*crate::config::WEIGHT_RANGE.end(),
        );
        let ready_timeout_ms = self.ms(
            &at("ready_timeout_ms"),
            a.ready_timeout_ms,
            DEFAULT_READY_TIMEOUT_MS,
            READY_TIMEOUT_RANGE,
        );
        let rates = self.rate_limits(a, path);
        let policies = self.policies(a, path, interval_ms, vip.load);
        let provider = self.autoscale_provider(a, path, vip, max);
        Some(AutoscaleConfig {
            min: min?,
            max: max?,
            interval_ms: interval_ms?,
            weight: weight?,
            ready_timeout_ms: ready_timeout_ms?,
            up_backends: rates.up_backends?,
            up_percent: rates.up_percent?,
            up_period_ms: rates.up_period_ms?,
            down_backends: rates.down_backends?,
            down_percent: rates.down_percent?,
            down_period_ms: rates.down_period_ms?,
            target: policies.target?,
            steps: policies.steps?,
            crons: policies.crons?,
            backend_metric: policies.backend_metric?,
            provider: provider?,
        })
        .filter(|c| c.min <= c.max)
    }

    /// `min` and `max`, min ≤ max.
    fn bounds(&mut self, a: &RawAutoscale, path: &str) -> (Option<u32>, Option<u32>) {
        let at = |key: &str| format!("{path}.{key}");
        let count = AUTOSCALE_COUNT_RANGE;
        let min = self.int(&at("min"), a.min, Some(1), count.clone());
        let max = self.int(&at("max"), a.max, None, 1..=*count.end());
        if let (Some(lo), Some(hi)) = (min, max)
            && lo > hi
        {
            self.error(&at("min"), format!("{lo} is more than max ({hi})"));
        }
        (min, max)
    }

    /// The rate limits of scaling up and down; up must be able to add a backend.
    fn rate_limits(&mut self, a: &RawAutoscale, path: &str) -> RateLimits {
        let at = |key: &str| format!("{path}.{key}");
        let count = AUTOSCALE_COUNT_RANGE;
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
        RateLimits {
            up_backends,
            up_percent,
            up_period_ms,
            down_backends,
            down_percent,
            down_period_ms,
        }
    }

    /// The backend metric and the policies (target, steps, crons); at least one policy.
    fn policies(
        &mut self,
        a: &RawAutoscale,
        path: &str,
        interval_ms: Option<u32>,
        load: LoadContext,
    ) -> Policies {
        let at = |key: &str| format!("{path}.{key}");
        let backend_metric = match &a.backend_metric {
            None => Some(None),
            Some(m) => self
                .backend_metric(m, &at("backend_metric"), interval_ms)
                .map(Some),
        };
        let on = Sources {
            backend_metric: a.backend_metric.is_some(),
            load,
        };
        let target = match &a.target {
            None => Some(None),
            Some(t) => self.target(t, &at("target"), on).map(Some),
        };
        let mut steps = Some(Vec::new());
        for (i, s) in a.step.iter().enumerate() {
            match (self.step(s, &format!("{path}.step[{i}]"), on), &mut steps) {
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
        Policies {
            backend_metric,
            target,
            steps,
            crons,
        }
    }

    /// The provider (required outside the simulator); warns when a pool cannot reach `max`.
    fn autoscale_provider(
        &mut self,
        a: &RawAutoscale,
        path: &str,
        vip: &VipContext<'_>,
        max: Option<u32>,
    ) -> Option<ProviderConfig> {
        let at = |key: &str| format!("{path}.{key}");
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
        provider
    }

    fn metric(&mut self, path: &str, value: Option<&String>, on: Sources) -> Option<MetricKind> {
        let m = self.named::<MetricKind>(path, value, None)?;
        if m == MetricKind::Backend && !on.backend_metric {
            self.error(path, "metric \"backend\" needs [vip.autoscale.backend_metric] (where to ask each backend)");
            return None;
        }
        if let Some(why) = on.load.problem(m) {
            self.error(path, why);
            return None;
        }
        Some(m)
    }

    fn target(&mut self, t: &RawTarget, path: &str, on: Sources) -> Option<TargetConfig> {
        let at = |key: &str| format!("{path}.{key}");
        let metric = self.metric(&at("metric"), t.metric.as_ref(), on);
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

    fn step(&mut self, s: &RawStep, path: &str, on: Sources) -> Option<StepConfig> {
        let at = |key: &str| format!("{path}.{key}");
        let metric = self.metric(&at("metric"), s.metric.as_ref(), on);
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
            crate::config::HEALTH_TIMEOUT_RANGE,
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
