//! Figures counted as events happen rather than read from a status snapshot: how long
//! health checks take, and the API's requests and errors. One set per process (the
//! daemon's), read at each scrape.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use super::text::{Exposition, HistogramValue};

/// Upper bounds of the health-check duration buckets, in seconds (a check's timeout is
/// at most a few seconds).
pub const CHECK_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A histogram of durations, updated without a lock.
#[derive(Debug, Default)]
pub struct Latency {
    /// Per bucket (not cumulative), then the overflow.
    counts: [AtomicU64; CHECK_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Latency {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = CHECK_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(CHECK_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn value(&self) -> HistogramValue {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(CHECK_BUCKETS.len());
        for (le, c) in CHECK_BUCKETS.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            buckets.push((*le, cumulative));
        }
        let count = cumulative + self.counts[CHECK_BUCKETS.len()].load(Ordering::Relaxed);
        #[expect(clippy::cast_precision_loss, reason = "a sum of seconds")]
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        HistogramValue {
            buckets,
            sum,
            count,
        }
    }
}

/// The process's event counters.
#[derive(Debug, Default)]
pub struct Live {
    /// Health-check durations by (VIP name, check kind).
    checks: Mutex<BTreeMap<(String, String), Arc<Latency>>>,
    /// API requests and errors by request kind.
    api: Mutex<BTreeMap<String, (u64, u64)>>,
}

static LIVE: LazyLock<Live> = LazyLock::new(Live::default);

/// The daemon's event counters.
pub fn live() -> &'static Live {
    &LIVE
}

impl Live {
    /// The histogram a VIP's checks of `kind` record into (kept for the process's life: a
    /// VIP removed and added again continues its series).
    pub fn check_latency(&self, vip: &str, kind: &str) -> Arc<Latency> {
        let mut m = self
            .checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(m.entry((vip.to_owned(), kind.to_owned())).or_default())
    }

    /// One API request of `kind` answered, with an error or not. `kind` comes from a
    /// fixed set (the request's `op` once decoded, `invalid`, `refused`).
    pub fn api_request(&self, kind: &str, error: bool) {
        let mut m = self
            .api
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let e = m.entry(kind.to_owned()).or_default();
        e.0 += 1;
        e.1 += u64::from(error);
    }

    /// Add the live families to `e`.
    pub fn expose(&self, e: &mut Exposition) {
        let checks = self
            .checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((vip, kind), l) in checks.iter() {
            e.histogram(
                "sluice_health_check_duration_seconds",
                vec![("vip", vip.clone()), ("check", kind.clone())],
                l.value(),
            );
        }
        drop(checks);
        let api = self
            .api
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (kind, (n, errors)) in api.iter() {
            e.counter("sluice_api_requests", vec![("request", kind.clone())], *n);
            e.counter(
                "sluice_api_errors",
                vec![("request", kind.clone())],
                *errors,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_cumulative() {
        let l = Latency::default();
        l.observe(Duration::from_micros(300));
        l.observe(Duration::from_millis(30));
        l.observe(Duration::from_secs(10));
        let v = l.value();
        assert_eq!(v.count, 3);
        assert_eq!(v.buckets[0], (0.0005, 1));
        assert_eq!(v.buckets.last(), Some(&(2.5, 2)));
        assert!((v.sum - 10.0303).abs() < 1e-9, "{}", v.sum);
    }
}
