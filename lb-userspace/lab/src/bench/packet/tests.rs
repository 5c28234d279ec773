use super::*;

#[test]
fn percentiles_nearest_rank() {
    let mut v: Vec<u64> = (1..=100).rev().collect();
    let d = Dist::of(&mut v);
    assert_eq!((d.min, d.median, d.p90, d.p99), (1, 50, 90, 99));
    let d = Dist::of(&mut [7]);
    assert_eq!((d.min, d.median, d.p99), (7, 7, 7));
}

#[test]
fn short_counts() {
    assert_eq!(short(50_000), "50k");
    assert_eq!(short(1_000_000), "1M");
    assert_eq!(short(1500), "1500");
}
