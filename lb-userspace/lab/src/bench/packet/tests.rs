use super::{cases::Vary, measure::flow_of, *};

#[test]
fn percentiles_nearest_rank() {
    let mut v: Vec<u64> = (1..=100).rev().collect();
    let d = Dist::of(&mut v);
    assert_eq!(
        (d.min, d.p10, d.p50, d.p90, d.p99, d.max),
        (1, 10, 50, 90, 99, 100)
    );
    assert_eq!(d.mean, 50.5);
    assert_eq!(d.samples, 100);
    let d = Dist::of(&mut [7]);
    assert_eq!(
        (d.min, d.p10, d.p50, d.p90, d.p99, d.max),
        (7, 7, 7, 7, 7, 7)
    );
    assert_eq!(d.mean, 7.0);
}

/// Ten samples: p10 is the first, p50 the fifth, p90 the ninth, p99 the last.
#[test]
fn percentiles_of_ten_samples() {
    let mut v = [130, 110, 190, 100, 150, 120, 170, 140, 160, 180];
    let d = Dist::of(&mut v);
    assert_eq!((d.p10, d.p50, d.p90, d.p99), (100, 140, 180, 190));
    assert_eq!(d.mean, 145.0);
}

/// The histogram: each distinct duration once, ascending, with its count; the counts add
/// up to the samples.
#[test]
fn histogram_of_stepped_durations() {
    let mut v = [60, 50, 61, 60, 70, 60, 50, 61];
    let d = Dist::of(&mut v);
    assert_eq!(d.hist, [(50, 2), (60, 3), (61, 2), (70, 1)]);
    assert_eq!(d.hist.iter().map(|&(_, n)| n).sum::<u64>(), d.samples);
    assert!(Dist::of(&mut []).hist.is_empty());
}

/// Ranks in integers: 10% of 30 is rank 3 exactly (in floating point 0.1 × 30 is
/// 3.0000000000000004, whose ceiling would be rank 4).
#[test]
fn percentile_ranks_are_exact() {
    let v: Vec<u64> = (1..=30).collect();
    assert_eq!(percentile(&v, 10), 3);
    assert_eq!(percentile(&v, 50), 15);
    assert_eq!(percentile(&v, 90), 27);
    assert_eq!(percentile(&v, 99), 30);
    // Two samples: p50 is the lower, p90 the upper.
    assert_eq!((percentile(&[4, 9], 50), percentile(&[4, 9], 90)), (4, 9));
    assert_eq!(Dist::of(&mut []).samples, 0);
}

#[test]
fn median_of_odd_and_even_counts() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    assert_eq!(median(&[1.25]), 1.25);
    assert_eq!(median(&[]), 0.0);
}

/// A case's ratio divides each round's p50 by that round's floor, then takes the median:
/// here 1.5, where the pooled medians (160 / 100) would say 1.6.
#[test]
fn ratio_is_the_median_of_per_round_ratios() {
    let case = [150, 300, 160, 330, 120];
    let floor = [100, 200, 100, 200, 100];
    assert_eq!(round_ratios(&case, &floor), [1.5, 1.5, 1.6, 1.65, 1.2]);
    assert_eq!(ratio(&case, &floor), 1.5);
    // Even round count: the mean of the two middle ratios ((2.0 + 3.0) / 2).
    assert_eq!(ratio(&[200, 300, 400, 100], &[100, 100, 100, 100]), 2.5);
    // A zero floor divides by 1 rather than by 0.
    assert_eq!(round_ratios(&[5], &[0]), [5.0]);
}

/// Fresh blocks send flows 0..calls when measured and the flows after them in the
/// warm-up; cycling blocks continue over the table's flows from round to round.
#[test]
fn flows_of_a_block() {
    let (w, n) = (2, 4);
    let fresh: Vec<_> = (0..w + n)
        .map(|j| flow_of(Vary::Fresh, 3, j, w, n).unwrap())
        .collect();
    assert_eq!(fresh, [4, 5, 0, 1, 2, 3]);
    let cycle = |round| -> Vec<u64> {
        (0..w + n)
            .map(|j| flow_of(Vary::Cycle(10), round, j, w, n).unwrap())
            .collect()
    };
    assert_eq!(cycle(0), [0, 1, 2, 3, 4, 5]);
    assert_eq!(cycle(1), [6, 7, 8, 9, 0, 1]);
    assert_eq!(flow_of(Vary::Fixed, 0, 1, w, n), None);
}

#[test]
fn short_counts() {
    assert_eq!(short(50_000), "50k");
    assert_eq!(short(1_000_000), "1M");
    assert_eq!(short(1500), "1500");
}

/// The targets sit on the cases they belong to, and the 1M target only on a 1M table.
#[test]
fn targets_on_their_cases() {
    let opts = |big| Options {
        method: Method::Block,
        calls: 1,
        rounds: 1,
        warmup: 1,
        mid_flows: 50_000,
        big_flows: big,
        quick: false,
        cpu: 0,
        cpus: vec![0],
        only: Vec::new(),
    };
    let target = |big, name| {
        case_defs(&opts(big))
            .into_iter()
            .find(|d| d.name == name)
            .unwrap()
            .target
    };
    assert_eq!(target(BIG_FLOWS, "not_vip"), Some(1.10));
    assert_eq!(target(BIG_FLOWS, "tcp_established"), Some(1.6));
    assert_eq!(target(BIG_FLOWS, "ipip_established"), Some(2.0));
    assert_eq!(target(BIG_FLOWS, "tcp_new"), Some(4.0));
    assert_eq!(target(BIG_FLOWS, "tcp_established_mid"), Some(2.5));
    assert_eq!(target(BIG_FLOWS, "tcp_established_big"), Some(3.5));
    assert_eq!(target(20_000, "tcp_established_big"), None);
    let defs = case_defs(&opts(BIG_FLOWS));
    let names: Vec<_> = defs.iter().map(|d| d.name).collect();
    for n in [
        "ipip_new",
        "ipv6_established",
        "ipv6_new",
        "udp_established",
        "memory_floor_mid",
        "memory_floor_big",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    // The memory floors are references, without a target, each over as many lines as
    // the region of its many-flow case has slots, and right before that case.
    assert_eq!(target(BIG_FLOWS, "memory_floor_big"), None);
    assert_eq!(target(BIG_FLOWS, "memory_floor_mid"), None);
    let at = |n| names.iter().position(|x| *x == n);
    assert_eq!(
        at("memory_floor_mid").map(|i| i + 1),
        at("tcp_established_mid")
    );
    assert_eq!(
        at("memory_floor_big").map(|i| i + 1),
        at("tcp_established_big")
    );
    assert_eq!(cases::miss_lines(&opts(1_000_000), 1_000_000), 1 << 22);
    assert_eq!(cases::miss_lines(&opts(1_000_000), 50_000), 1 << 18);
    // A region never below its minimum, whatever the flows.
    assert_eq!(cases::miss_lines(&opts(20_000), 20_000), 1 << 17);
}

/// `--case` keeps the named cases in the benchmark's order and refuses an unknown name,
/// listing the known ones.
#[test]
fn case_filter() {
    let opts = Options {
        method: Method::Block,
        calls: 1,
        rounds: 1,
        warmup: 1,
        mid_flows: 50_000,
        big_flows: BIG_FLOWS,
        quick: false,
        cpu: 0,
        cpus: vec![0],
        only: Vec::new(),
    };
    let names = |only: &[&str]| -> Result<Vec<&'static str>, String> {
        let only: Vec<String> = only.iter().map(|s| (*s).to_owned()).collect();
        select_cases(case_defs(&opts), &only)
            .map(|d| d.iter().map(|d| d.name).collect())
            .map_err(|e| e.to_string())
    };
    assert_eq!(names(&[]).unwrap().len(), case_defs(&opts).len());
    assert_eq!(
        names(&["tcp_new", "not_vip"]).unwrap(),
        ["not_vip", "tcp_new"]
    );
    let err = names(&["tcp_nwe"]).unwrap_err();
    assert!(
        err.starts_with("--case tcp_nwe: no such case (the cases: not_vip, tcp_established,"),
        "{err}"
    );
}
