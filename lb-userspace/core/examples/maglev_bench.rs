//! Maglev build times: `cargo run --release -p sluice-core --example maglev_bench [RUNS]
//! [PASSES] [ONLY]`. For 10, 100 and 1000 backends at M = 65537 with equal weights and
//! with weights 1..=10 (and, for 1000, weights 1..=100 and two skewed sets), the median
//! of RUNS builds (default 51) in each of PASSES passes (default 3; the cases
//! interleaved), and the best of those medians: other work on a shared machine only ever
//! slows a pass down. ONLY: just the cases whose label contains it (e.g. for `perf`).

use std::time::Instant;

use sluice_core::maglev::{Entry, build};

const M: u32 = 65537;
const SEED: u32 = 0x5eed;

/// The names `sluice bench control` uses.
fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{}.{}.{}", 1 + i / 62500, (i / 250) % 250, i % 250 + 1))
        .collect()
}

/// Weights 1..=max from a fixed generator (SplitMix64), the same on every run.
fn weights(n: usize, max: u64) -> Vec<u32> {
    let mut s: u64 = 42;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            1 + ((z ^ (z >> 31)) % max) as u32
        })
        .collect()
}

/// One backend of weight `heavy`, the others 1.
fn skewed(n: usize, heavy: u32) -> Vec<u32> {
    let mut w = vec![1; n];
    w[0] = heavy;
    w
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map_or(51, |a| a.parse().expect("RUNS"));
    let passes: usize = args.next().map_or(3, |a| a.parse().expect("PASSES"));
    let only = args.next().unwrap_or_default();
    let cases: Vec<(String, Vec<String>, Vec<u32>)> = [10, 100, 1000]
        .into_iter()
        .flat_map(|n| {
            [
                (format!("{n} equal"), names(n), vec![1; n]),
                (format!("{n} weighted 1..=10"), names(n), weights(n, 10)),
            ]
        })
        .chain([
            (
                "1000 weighted 1..=100".to_owned(),
                names(1000),
                weights(1000, 100),
            ),
            (
                "1000 skewed 1000 to 1".to_owned(),
                names(1000),
                skewed(1000, 1000),
            ),
            (
                "1000 skewed 100000 to 1 (heap)".to_owned(),
                names(1000),
                skewed(1000, 100_000),
            ),
        ])
        .filter(|(label, ..)| label.contains(&only))
        .collect();
    let mut best = vec![f64::INFINITY; cases.len()];
    for pass in 1..=passes {
        for (i, (label, names, weights)) in cases.iter().enumerate() {
            let entries: Vec<Entry<'_>> = names
                .iter()
                .zip(weights)
                .enumerate()
                .map(|(i, (name, &weight))| Entry {
                    name,
                    weight,
                    id: i as u32 + 1,
                })
                .collect();
            std::hint::black_box(build(&entries, M, SEED).expect("valid"));
            let mut t: Vec<f64> = (0..runs)
                .map(|_| {
                    let start = Instant::now();
                    std::hint::black_box(build(&entries, M, SEED).expect("valid"));
                    start.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            t.sort_by(f64::total_cmp);
            let median = t[runs / 2];
            best[i] = best[i].min(median);
            println!(
                "pass {pass}: {label:>20}: median {median:.3} ms, min {:.3} ms",
                t[0]
            );
        }
    }
    println!("best median of {passes} passes ({runs} builds each), M = {M}:");
    for ((label, ..), b) in cases.iter().zip(best) {
        println!("  {label:>20}: {b:.3} ms");
    }
}
