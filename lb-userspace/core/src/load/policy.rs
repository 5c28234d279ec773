//! The load policy (inference-aware balancing): from each backend's configured weight, its
//! health and its latest load [`Reading`], the effective weight of new flows, and when a
//! VIP's table is worth rebuilding. Pure: it never reads a clock (`now` is passed in).
//!
//! # Per backend (in this order; the first rule that applies decides)
//!
//! 1. Not serving (health down): the configured weight; health, not this policy, decides
//!    whether it takes flows. It never counts in the saturation filter or the scores.
//! 2. Configured weight 0: stays 0.
//! 3. [`Reading::Never`] (not read successfully yet): the configured weight, not saturated.
//! 4. A report older than [`PolicyParams::stale_after`]: **saturated** ("stale report").
//! 5. An agent answer ([`Report::agent`]), no queue/KV scoring: `drain`, `maint`, `down` →
//!    0; `N%` → `max(1, round(configured × N / 100))` (0 for 0%); `weight:N` → N;
//!    `ready` → configured.
//! 6. A report without `waiting`, `running` and `kv_cache`: the configured weight.
//! 7. Otherwise the backend is scored. It is **saturated** when `waiting > queue_limit` or
//!    `kv_cache > kv_limit` (a report without `waiting` is never saturated by its queue).
//!
//! # Saturation filter (as the Gateway API Inference Extension's endpoint picker)
//!
//! A backend is *open* when it is serving, has a configured weight above 0, is not
//! saturated and (rules 3, 5, 6) its weight is above 0. If at least one backend of the VIP
//! is open, every saturated backend gets weight 0. If none is open but some are saturated,
//! the policy **fails open**: the saturated backends keep the weight they would have had
//! (rule 5, or the score below, computed from the last report even if stale).
//!
//! # Score (the backends of rule 7 that are not filtered out: the *scored set*)
//!
//! - `q` = `waiting`, or `running` when the report has no `waiting`. Over the scored set's
//!   backends that have a `q`: `queue = (max_q − q) / (max_q − min_q)`, 1.0 when
//!   `max_q − min_q < 1e-9` (all equal, or only one).
//! - `kv_score = 1 − kv_cache` (kv clamped to 0..=1).
//! - `score = (queue_weight × queue + kv_weight × kv_score) / (queue_weight + kv_weight)`;
//!   with only one of the two parts known, that part alone; with neither, 1.0. Negative
//!   mix weights count as 0; both 0 count as 0.5 each.
//! - `multiplier = floor + (1 − floor) × score` (floor clamped to 0..=1), so the busiest
//!   healthy backend still gets `floor` of its configured weight.
//! - `effective = max(1, round(configured × multiplier))`.
//!
//! Non-finite or negative report values count as missing or 0.
//!
//! # When to rebuild ([`Policy::update`])
//!
//! The [`Policy`] remembers the weights last applied (a backend it has not seen yet counts
//! as applied at its configured weight, which is what the daemon publishes without the
//! policy). A new target is *significant* when, for some backend, with `a` applied and `b`
//! the target: `a == 0` and `b > 0` or the reverse (crossing the saturation line, drain),
//! or `|b − a| ≥ min_change` **and** `|b − a| ≥ hysteresis × a`. A significant target is
//! applied whole (every backend's new weight) unless `max_rebuilds_per_sec` rebuilds were
//! already applied within the last second (0: no limit); then nothing is applied and the
//! change is held back: a later `update` applies it (if it is still significant against the
//! weights last applied) once the window allows ([`Policy::next_allowed`]).
//!
//! Output is sorted by backend address, whatever the input order.

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
    time::{Duration, Instant},
};

use super::{Agent, Reading, Report};

/// The policy's knobs (the config section `[vip.load]` maps onto them).
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyParams {
    /// A backend with more waiting requests than this is saturated.
    pub queue_limit: f64,
    /// A backend with a higher KV-cache use (0..=1) is saturated.
    pub kv_limit: f64,
    /// Share of the queue score in the combined score.
    pub queue_weight: f64,
    /// Share of the KV score in the combined score.
    pub kv_weight: f64,
    /// The multiplier of a backend with score 0 (0..=1).
    pub floor: f64,
    /// A change of less than this fraction of the applied weight is ignored.
    pub hysteresis: f64,
    /// A change of less than this many weight units is ignored.
    pub min_change: u32,
    /// At most this many rebuilds in any second (0: no limit).
    pub max_rebuilds_per_sec: u32,
    /// A report older than this counts as saturated.
    pub stale_after: Duration,
}

impl Default for PolicyParams {
    fn default() -> Self {
        Self {
            queue_limit: 5.0,
            kv_limit: 0.8,
            queue_weight: 0.5,
            kv_weight: 0.5,
            floor: 0.1,
            hysteresis: 0.1,
            min_change: 1,
            max_rebuilds_per_sec: 4,
            stale_after: Duration::from_secs(5),
        }
    }
}

/// One backend of a VIP, as the policy is given it.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub address: IpAddr,
    /// The configured (or live-edited, slow-start-ramped) weight.
    pub weight: u32,
    /// Health: false = down.
    pub serving: bool,
    pub reading: Reading,
}

/// The policy's answer for one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Weighted {
    pub address: IpAddr,
    pub configured: u32,
    /// The weight new flows should see.
    pub weight: u32,
    /// Saturated (over a limit, or a stale report), whether or not the policy failed open.
    pub saturated: bool,
    /// Why, for humans: "saturated: 7 waiting > 5", "score 0.62 (queue 0.50, kv 0.74)", ...
    pub reason: String,
}

/// The weights of a VIP's backends, sorted by address.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Decision {
    pub backends: Vec<Weighted>,
    /// Every open candidate was saturated, so the saturated kept their weights.
    pub fail_open: bool,
}

impl Decision {
    /// The weight decided for `address`.
    pub fn weight(&self, address: IpAddr) -> Option<u32> {
        self.backends
            .iter()
            .find(|b| b.address == address)
            .map(|b| b.weight)
    }
}

/// What rules 1–7 found for one backend before the filter and the scores.
enum Kind {
    /// A weight that needs no score.
    Fixed(u32, String),
    /// Queue length (`waiting`, else `running`) and KV use from a report.
    Scored { q: Option<f64>, kv: Option<f64> },
}

struct Pre<'a> {
    input: &'a Input,
    kind: Kind,
    /// Why it is saturated, if it is.
    saturated: Option<String>,
}

impl Pre<'_> {
    fn open(&self) -> bool {
        self.input.serving
            && self.input.weight > 0
            && self.saturated.is_none()
            && match self.kind {
                Kind::Fixed(w, _) => w > 0,
                Kind::Scored { .. } => true,
            }
    }
}

/// A report value that is usable: finite, at least 0.
fn value(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite()).map(|x| x.max(0.0))
}

fn agent_weight(agent: &Agent, configured: u32) -> (u32, String) {
    match agent {
        Agent::Drain => (0, "agent: drain".to_owned()),
        Agent::Maint => (0, "agent: maint".to_owned()),
        Agent::Down(why) if why.is_empty() => (0, "agent: down".to_owned()),
        Agent::Down(why) => (0, format!("agent: down ({why})")),
        Agent::Ready => (configured, "agent: ready".to_owned()),
        Agent::Weight(n) => (*n, format!("agent: weight {n}")),
        Agent::WeightPercent(p) => {
            let w = if *p == 0 {
                0
            } else {
                let scaled = (u64::from(configured) * u64::from(*p) + 50) / 100;
                u32::try_from(scaled).unwrap_or(u32::MAX).max(1)
            };
            (w, format!("agent: weight {p}%"))
        }
    }
}

fn saturation(p: &PolicyParams, waiting: Option<f64>, kv: Option<f64>) -> Option<String> {
    if let Some(w) = waiting.filter(|w| *w > p.queue_limit) {
        return Some(format!("saturated: {w} waiting > {}", p.queue_limit));
    }
    if let Some(k) = kv.filter(|k| *k > p.kv_limit) {
        return Some(format!("saturated: KV cache {k:.2} > {}", p.kv_limit));
    }
    None
}

fn classify<'a>(p: &PolicyParams, input: &'a Input) -> Pre<'a> {
    let fixed = |w: u32, why: &str| Pre {
        input,
        kind: Kind::Fixed(w, why.to_owned()),
        saturated: None,
    };
    if !input.serving {
        return fixed(
            input.weight,
            "not serving: configured weight (health decides)",
        );
    }
    if input.weight == 0 {
        return fixed(0, "configured weight 0");
    }
    let (report, age) = match &input.reading {
        Reading::Never => return fixed(input.weight, "no report: configured weight"),
        Reading::Report { report, age, .. } => (report, *age),
    };
    let stale = (age > p.stale_after).then(|| format!("stale report ({} ms)", age.as_millis()));
    let Report {
        waiting,
        running,
        kv_cache,
        agent,
    } = report;
    if let Some(agent) = agent {
        let (w, why) = agent_weight(agent, input.weight);
        return Pre {
            input,
            kind: Kind::Fixed(w, why),
            saturated: stale,
        };
    }
    let waiting = value(*waiting);
    let kv = value(*kv_cache).map(|k| k.min(1.0));
    let q = waiting.or(value(*running));
    if q.is_none() && kv.is_none() {
        let mut pre = fixed(
            input.weight,
            "report without load fields: configured weight",
        );
        pre.saturated = stale;
        return pre;
    }
    Pre {
        input,
        kind: Kind::Scored { q, kv },
        saturated: stale.or_else(|| saturation(p, waiting, kv)),
    }
}

/// The multiplier and its explanation for one scored backend.
fn score(p: &PolicyParams, q: Option<f64>, kv: Option<f64>, qs: (f64, f64)) -> (f64, String) {
    let (min_q, max_q) = qs;
    let queue = q.map(|q| {
        if max_q - min_q < 1e-9 {
            1.0
        } else {
            ((max_q - q) / (max_q - min_q)).clamp(0.0, 1.0)
        }
    });
    let kv_score = kv.map(|k| 1.0 - k);
    let usable = |w: f64| if w.is_finite() { w.max(0.0) } else { 0.0 };
    let (mut qw, mut kw) = (usable(p.queue_weight), usable(p.kv_weight));
    if qw + kw <= 0.0 {
        (qw, kw) = (0.5, 0.5);
    }
    let (s, why) = match (queue, kv_score) {
        (Some(a), Some(b)) => (
            (qw * a + kw * b) / (qw + kw),
            format!("queue {a:.2}, kv {b:.2}"),
        ),
        (Some(a), None) => (a, format!("queue {a:.2}")),
        (None, Some(b)) => (b, format!("kv {b:.2}")),
        (None, None) => (1.0, "no load fields".to_owned()),
    };
    let floor = if p.floor.is_finite() {
        p.floor.clamp(0.0, 1.0)
    } else {
        0.0
    };
    (floor + (1.0 - floor) * s, format!("score {s:.2} ({why})"))
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "configured × a multiplier in 0..=1, rounded: fits u32, never negative"
)]
fn scale(configured: u32, multiplier: f64) -> u32 {
    ((f64::from(configured) * multiplier).round() as u32).max(1)
}

/// The target weights for `inputs`, without hysteresis or rate limit (what `sluice plan`
/// shows as the policy's view now).
pub fn decide(p: &PolicyParams, inputs: &[Input]) -> Decision {
    let pres: Vec<Pre<'_>> = inputs.iter().map(|i| classify(p, i)).collect();
    let any_open = pres.iter().any(Pre::open);
    let fail_open = !any_open && pres.iter().any(|x| x.saturated.is_some());
    let filtered = |x: &Pre<'_>| x.saturated.is_some() && !fail_open;
    let qs: Vec<f64> = pres
        .iter()
        .filter(|x| !filtered(x))
        .filter_map(|x| match x.kind {
            Kind::Scored { q, .. } => q,
            Kind::Fixed(..) => None,
        })
        .collect();
    let min_q = qs.iter().copied().fold(f64::INFINITY, f64::min);
    let max_q = qs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut backends: Vec<Weighted> = pres
        .iter()
        .map(|x| {
            let (weight, why) = if filtered(x) {
                (0, x.saturated.clone().unwrap_or_default())
            } else {
                match &x.kind {
                    Kind::Fixed(w, why) => (*w, why.clone()),
                    Kind::Scored { q, kv } => {
                        let (m, why) = score(p, *q, *kv, (min_q, max_q));
                        (scale(x.input.weight, m), why)
                    }
                }
            };
            let reason = match (&x.saturated, fail_open) {
                (Some(sat), true) => format!("fail open: every backend saturated; {sat}; {why}"),
                _ => why,
            };
            Weighted {
                address: x.input.address,
                configured: x.input.weight,
                weight,
                saturated: x.saturated.is_some(),
                reason,
            }
        })
        .collect();
    backends.sort_by_key(|b| b.address);
    Decision {
        backends,
        fail_open,
    }
}

/// Per backend, requests in flight according to its report (`running + waiting`, whichever
/// are known), to stand in for the connection count of `lc`/`wlc` plans. `None` when
/// unknown: never read, stale, an agent answer, or neither field reported. Sorted by
/// address.
pub fn in_flight(p: &PolicyParams, inputs: &[Input]) -> Vec<(IpAddr, Option<u64>)> {
    let mut out: Vec<(IpAddr, Option<u64>)> = inputs
        .iter()
        .map(|i| (i.address, reading_in_flight(&i.reading, p.stale_after)))
        .collect();
    out.sort_by_key(|(a, _)| *a);
    out
}

/// [`in_flight`] for one reading.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "finite, non-negative, rounded; `as` saturates at u64::MAX"
)]
pub fn reading_in_flight(reading: &Reading, stale_after: Duration) -> Option<u64> {
    let Reading::Report { report, age, .. } = reading else {
        return None;
    };
    if *age > stale_after || report.agent.is_some() {
        return None;
    }
    match (value(report.running), value(report.waiting)) {
        (None, None) => None,
        (r, w) => Some((r.unwrap_or(0.0) + w.unwrap_or(0.0)).round() as u64),
    }
}

/// Lines for `sluice plan`: one per backend, addresses aligned.
pub fn explain(decision: &Decision) -> Vec<String> {
    let width = decision
        .backends
        .iter()
        .map(|b| b.address.to_string().len())
        .max()
        .unwrap_or(0);
    decision
        .backends
        .iter()
        .map(|b| {
            format!(
                "{:<width$}  weight {:>4} of {:>4}  {}",
                b.address.to_string(),
                b.weight,
                b.configured,
                b.reason
            )
        })
        .collect()
}

/// The policy of one VIP over time: the weights last applied and the recent rebuilds.
#[derive(Clone, Debug)]
pub struct Policy {
    params: PolicyParams,
    applied: BTreeMap<IpAddr, u32>,
    rebuilds: VecDeque<Instant>,
    held: bool,
}

const WINDOW: Duration = Duration::from_secs(1);

impl Policy {
    pub fn new(params: PolicyParams) -> Self {
        Self {
            params,
            applied: BTreeMap::new(),
            rebuilds: VecDeque::new(),
            held: false,
        }
    }

    pub fn params(&self) -> &PolicyParams {
        &self.params
    }

    /// The weight last applied for `address` (`None`: never decided, so configured).
    pub fn applied(&self, address: IpAddr) -> Option<u32> {
        self.applied.get(&address).copied()
    }

    /// Whether the last `update` held a significant change back (rate limit).
    pub fn held_back(&self) -> bool {
        self.held
    }

    /// Forget the applied weights (the daemon published configured weights again).
    pub fn reset(&mut self) {
        self.applied.clear();
        self.held = false;
    }

    /// The earliest time a rebuild is allowed again (`now` if it is allowed now).
    pub fn next_allowed(&self, now: Instant) -> Instant {
        let max = self.params.max_rebuilds_per_sec as usize;
        if max == 0 || self.in_window(now) < max {
            return now;
        }
        // The window holds at least `max` rebuilds: the `max`-th newest must leave it.
        self.rebuilds
            .iter()
            .rev()
            .nth(max - 1)
            .map_or(now, |t| *t + WINDOW)
    }

    fn in_window(&self, now: Instant) -> usize {
        self.rebuilds
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < WINDOW)
            .count()
    }

    /// Whether `b` differs enough from `a` (applied) to rebuild.
    fn significant(&self, a: u32, b: u32) -> bool {
        if (a == 0) != (b == 0) {
            return true;
        }
        let delta = a.abs_diff(b);
        delta > 0
            && delta >= self.params.min_change
            && f64::from(delta) >= self.params.hysteresis * f64::from(a)
    }

    /// The new weights if they are worth a rebuild now, else `None` (no significant
    /// change, or held back by the rate limit; see the module doc).
    pub fn update(&mut self, now: Instant, inputs: &[Input]) -> Option<Decision> {
        let target = decide(&self.params, inputs);
        let changed = target.backends.iter().any(|b| {
            let a = self
                .applied
                .get(&b.address)
                .copied()
                .unwrap_or(b.configured);
            self.significant(a, b.weight)
        });
        if !changed {
            self.held = false;
            return None;
        }
        while self
            .rebuilds
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            self.rebuilds.pop_front();
        }
        let max = self.params.max_rebuilds_per_sec as usize;
        if max > 0 && self.in_window(now) >= max {
            self.held = true;
            return None;
        }
        self.held = false;
        self.rebuilds.push_back(now);
        self.applied = target
            .backends
            .iter()
            .map(|b| (b.address, b.weight))
            .collect();
        Some(target)
    }
}

#[cfg(test)]
mod tests;
