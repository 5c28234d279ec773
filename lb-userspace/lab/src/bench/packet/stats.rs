//! The per-packet benchmark's statistics (pure, unit-tested with exact values):
//! nearest-rank percentiles of kernel-measured durations, and a case's ratio to the floor
//! as the median over rounds of (the case's p50 / that round's floor p50).

use serde::Serialize;

/// A distribution of kernel-measured durations, in ns (nearest-rank percentiles).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dist {
    pub min: u64,
    pub p10: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
    /// Samples it was computed from.
    pub samples: u64,
    /// Every distinct duration and how many samples had it, ascending: the kernel's clock
    /// may step coarser than a nanosecond (10 ns on the benchmark VM), so a percentile moves
    /// by whole steps; the histogram keeps what lies between them for an analysis of
    /// its own (e.g. a median interpolated within the step).
    pub hist: Vec<(u64, u64)>,
}

impl Dist {
    /// Sorts `samples`; an empty slice gives all zeros.
    pub fn of(samples: &mut [u64]) -> Self {
        samples.sort_unstable();
        let n = samples.len();
        if n == 0 {
            return Self {
                min: 0,
                p10: 0,
                p50: 0,
                p90: 0,
                p99: 0,
                max: 0,
                mean: 0.0,
                samples: 0,
                hist: Vec::new(),
            };
        }
        Self {
            min: samples[0],
            p10: percentile(samples, 10),
            p50: percentile(samples, 50),
            p90: percentile(samples, 90),
            p99: percentile(samples, 99),
            max: samples[n - 1],
            mean: samples.iter().sum::<u64>() as f64 / n as f64,
            samples: n as u64,
            hist: histogram(samples),
        }
    }
}

/// The distinct values of `sorted` (ascending) with their counts.
pub fn histogram(sorted: &[u64]) -> Vec<(u64, u64)> {
    sorted
        .chunk_by(|a, b| a == b)
        .map(|run| (run[0], run.len() as u64))
        .collect()
}

/// The nearest-rank `pct`-th percentile of `sorted` (ascending, not empty): the smallest
/// sample with at least `pct`% of the samples at or below it, `sorted[ceil(pct·n/100) − 1]`
/// (integer arithmetic: no rounding surprise such as 0.1 × 30 = 3.0000000000000004).
pub fn percentile(sorted: &[u64], pct: u32) -> u64 {
    let n = sorted.len();
    let rank = (pct as usize * n).div_ceil(100).clamp(1, n);
    sorted[rank - 1]
}

/// The median of `v`: the middle value, or the mean of the two middle ones for an even
/// count; 0 for an empty slice.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => s[n / 2],
        _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Each round's ratio: the case's p50 over the floor's p50 of the same round.
pub fn round_ratios(case_p50: &[u64], floor_p50: &[u64]) -> Vec<f64> {
    assert_eq!(case_p50.len(), floor_p50.len(), "one floor per round");
    case_p50
        .iter()
        .zip(floor_p50)
        .map(|(&c, &f)| c as f64 / f.max(1) as f64)
        .collect()
}

/// A case's ratio to the floor: the median over rounds of the per-round ratios.
pub fn ratio(case_p50: &[u64], floor_p50: &[u64]) -> f64 {
    median(&round_ratios(case_p50, floor_p50))
}
