use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use super::*;

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
}

fn reading(report: Report, age_ms: u64) -> Reading {
    Reading::Report {
        report,
        age: Duration::from_millis(age_ms),
        error: None,
    }
}

/// A backend whose report says `waiting` and `kv`, 100 ms old.
fn load(n: u8, weight: u32, waiting: f64, kv: f64) -> Input {
    Input {
        address: ip(n),
        weight,
        serving: true,
        reading: reading(
            Report {
                waiting: Some(waiting),
                running: Some(1.0),
                kv_cache: Some(kv),
                agent: None,
            },
            100,
        ),
    }
}

fn never(n: u8, weight: u32) -> Input {
    Input {
        address: ip(n),
        weight,
        serving: true,
        reading: Reading::Never,
    }
}

fn agent(n: u8, weight: u32, a: Agent) -> Input {
    Input {
        address: ip(n),
        weight,
        serving: true,
        reading: reading(
            Report {
                agent: Some(a),
                waiting: Some(100.0),
                ..Report::default()
            },
            100,
        ),
    }
}

fn of(d: &Decision, n: u8) -> &Weighted {
    d.backends
        .iter()
        .find(|b| b.address == ip(n))
        .unwrap_or_else(|| panic!("no backend {n} in {d:?}"))
}

fn weights(d: &Decision) -> Vec<u32> {
    d.backends.iter().map(|b| b.weight).collect()
}

#[test]
fn saturated_backends_get_no_new_flows() {
    let p = PolicyParams::default();
    let d = decide(
        &p,
        &[
            load(1, 10, 7.0, 0.1),
            load(2, 10, 1.0, 0.9),
            load(3, 10, 1.0, 0.3),
        ],
    );
    assert!(!d.fail_open, "{d:?}");
    assert_eq!(of(&d, 1).weight, 0);
    assert!(of(&d, 1).saturated);
    assert_eq!(of(&d, 1).reason, "saturated: 7 waiting > 5");
    assert_eq!(of(&d, 2).weight, 0);
    assert_eq!(of(&d, 2).reason, "saturated: KV cache 0.90 > 0.8");
    assert!(of(&d, 3).weight > 0, "{d:?}");
    assert!(!of(&d, 3).saturated);
    // Exactly at the limits is not over them.
    let d = decide(&p, &[load(1, 10, 5.0, 0.8), load(2, 10, 0.0, 0.0)]);
    assert!(of(&d, 1).weight > 0, "{d:?}");
}

#[test]
fn every_backend_saturated_fails_open() {
    let p = PolicyParams::default();
    let d = decide(
        &p,
        &[
            load(1, 10, 7.0, 0.5),
            load(2, 10, 20.0, 0.5),
            // Down: neither open nor saturated, does not prevent failing open.
            Input {
                serving: false,
                ..load(3, 10, 0.0, 0.0)
            },
        ],
    );
    assert!(d.fail_open, "{d:?}");
    assert!(
        of(&d, 1)
            .reason
            .starts_with("fail open: every backend saturated; saturated: 7 waiting > 5; score")
    );
    // They keep their scored weights: the less loaded gets more.
    assert!(of(&d, 1).weight > of(&d, 2).weight, "{d:?}");
    assert!(of(&d, 2).weight >= 1);
    assert!(of(&d, 1).saturated && of(&d, 2).saturated);
    // One open backend (even a never-read one) keeps the filter on.
    let d = decide(&p, &[load(1, 10, 7.0, 0.5), never(2, 10)]);
    assert!(!d.fail_open);
    assert_eq!(weights(&d), [0, 10]);
}

#[test]
fn stale_reports_count_as_saturated() {
    let p = PolicyParams {
        stale_after: Duration::from_millis(500),
        ..PolicyParams::default()
    };
    let mut stale = load(1, 10, 0.0, 0.0);
    stale.reading = reading(
        Report {
            waiting: Some(0.0),
            ..Report::default()
        },
        912,
    );
    let d = decide(&p, &[stale.clone(), load(2, 10, 3.0, 0.5)]);
    assert_eq!(of(&d, 1).weight, 0);
    assert!(of(&d, 1).saturated);
    assert_eq!(of(&d, 1).reason, "stale report (912 ms)");
    assert!(of(&d, 2).weight > 0);
    // A stale agent answer too.
    let mut a = agent(3, 10, Agent::Ready);
    if let Reading::Report { age, .. } = &mut a.reading {
        *age = Duration::from_secs(2);
    }
    let d = decide(&p, &[a.clone(), load(2, 10, 3.0, 0.5)]);
    assert_eq!(of(&d, 3).weight, 0);
    assert_eq!(of(&d, 3).reason, "stale report (2000 ms)");
    // All stale: fail open, scored from the last report.
    let d = decide(&p, &[stale, a]);
    assert!(d.fail_open);
    assert_eq!(weights(&d), [10, 10]);
    assert_eq!(
        of(&d, 3).reason,
        "fail open: every backend saturated; stale report (2000 ms); agent: ready"
    );
}

#[test]
fn never_read_keeps_configured_weight() {
    let p = PolicyParams::default();
    let d = decide(&p, &[never(1, 7), never(2, 3)]);
    assert!(!d.fail_open);
    assert_eq!(weights(&d), [7, 3]);
    assert!(!of(&d, 1).saturated);
    assert_eq!(of(&d, 1).reason, "no report: configured weight");
    // Next to a scored backend it is not scored either.
    let d = decide(&p, &[never(1, 7), load(2, 10, 4.0, 0.7)]);
    assert_eq!(of(&d, 1).weight, 7);
}

#[test]
fn agent_words_set_the_weight() {
    let p = PolicyParams::default();
    let d = decide(
        &p,
        &[
            agent(1, 8, Agent::Drain),
            agent(2, 8, Agent::Maint),
            agent(3, 8, Agent::Down("disk full".to_owned())),
            agent(4, 8, Agent::WeightPercent(75)),
            agent(5, 8, Agent::Weight(3)),
            agent(6, 8, Agent::Ready),
            agent(7, 8, Agent::WeightPercent(0)),
            agent(8, 8, Agent::WeightPercent(1)),
            agent(9, 8, Agent::Down(String::new())),
        ],
    );
    assert_eq!(weights(&d), [0, 0, 0, 6, 3, 8, 0, 1, 0]);
    // The queue of 100 in the agent's report is not scored nor saturating.
    assert!(d.backends.iter().all(|b| !b.saturated), "{d:?}");
    assert_eq!(of(&d, 1).reason, "agent: drain");
    assert_eq!(of(&d, 2).reason, "agent: maint");
    assert_eq!(of(&d, 3).reason, "agent: down (disk full)");
    assert_eq!(of(&d, 4).reason, "agent: weight 75%");
    assert_eq!(of(&d, 5).reason, "agent: weight 3");
    assert_eq!(of(&d, 6).reason, "agent: ready");
    assert_eq!(of(&d, 9).reason, "agent: down");
    // A drained agent backend is not open: with the rest saturated the policy fails open,
    // and the drain still holds.
    let d = decide(&p, &[agent(1, 8, Agent::Drain), load(2, 10, 9.0, 0.1)]);
    assert!(d.fail_open);
    assert_eq!(weights(&d), [0, 10]);
}

#[test]
fn less_loaded_backends_get_more() {
    let p = PolicyParams::default();
    let d = decide(
        &p,
        &[
            load(3, 100, 4.0, 0.7),
            load(1, 100, 0.0, 0.2),
            load(2, 100, 2.0, 0.5),
        ],
    );
    // 1: queue 1, kv 0.8 → score 0.9 → multiplier 0.1 + 0.9 × 0.9 = 0.91.
    assert_eq!(of(&d, 1).weight, 91);
    assert_eq!(of(&d, 1).reason, "score 0.90 (queue 1.00, kv 0.80)");
    // 2: queue 0.5, kv 0.5 → 0.5 → 0.55.
    assert_eq!(of(&d, 2).weight, 55);
    // 3: queue 0, kv 0.3 → 0.15 → 0.235 → 24 (rounded).
    assert_eq!(of(&d, 3).weight, 24);
    assert_eq!(of(&d, 3).reason, "score 0.15 (queue 0.00, kv 0.30)");
    // The mix weights are normalised: queue only.
    let q = PolicyParams {
        queue_weight: 3.0,
        kv_weight: 0.0,
        ..PolicyParams::default()
    };
    let d = decide(&q, &[load(1, 100, 0.0, 0.7), load(2, 100, 4.0, 0.0)]);
    assert_eq!(weights(&d), [100, 10]);
    // All queues equal: the queue part is 1 for all.
    let d = decide(&p, &[load(1, 100, 2.0, 0.0), load(2, 100, 2.0, 0.0)]);
    assert_eq!(weights(&d), [100, 100]);
}

#[test]
fn missing_fields() {
    let p = PolicyParams::default();
    let with = |n: u8, waiting: Option<f64>, running: Option<f64>, kv: Option<f64>| Input {
        reading: reading(
            Report {
                waiting,
                running,
                kv_cache: kv,
                agent: None,
            },
            100,
        ),
        ..never(n, 100)
    };
    // Without waiting: running is the queue (and never saturates by itself).
    let d = decide(
        &p,
        &[
            with(1, None, Some(50.0), Some(0.0)),
            with(2, None, Some(10.0), Some(0.0)),
        ],
    );
    assert_eq!(weights(&d), [55, 100]);
    // Without kv: the queue part alone.
    let d = decide(
        &p,
        &[
            with(1, Some(1.0), None, None),
            with(2, Some(3.0), None, None),
        ],
    );
    assert_eq!(weights(&d), [100, 10]);
    assert_eq!(of(&d, 2).reason, "score 0.00 (queue 0.00)");
    // Without any load field: configured.
    let d = decide(
        &p,
        &[with(1, None, None, None), with(2, Some(3.0), None, None)],
    );
    assert_eq!(of(&d, 1).weight, 100);
    assert_eq!(
        of(&d, 1).reason,
        "report without load fields: configured weight"
    );
    // Garbage values count as missing (NaN) or 0 (negative).
    let d = decide(
        &p,
        &[
            with(1, Some(f64::NAN), Some(-3.0), Some(f64::INFINITY)),
            with(2, Some(0.0), None, Some(0.0)),
        ],
    );
    assert_eq!(weights(&d), [100, 100], "{d:?}");
}

#[test]
fn the_floor_keeps_busy_backends_in() {
    let p = PolicyParams::default();
    // Score 0 (the longest queue, KV full but under a raised limit).
    let q = PolicyParams {
        kv_limit: 1.0,
        ..p.clone()
    };
    let d = decide(&q, &[load(1, 100, 0.0, 0.0), load(2, 100, 4.0, 1.0)]);
    assert_eq!(of(&d, 2).weight, 10, "{d:?}");
    // A small configured weight still gets at least 1.
    let d = decide(&q, &[load(1, 3, 0.0, 0.0), load(2, 3, 4.0, 1.0)]);
    assert_eq!(weights(&d), [3, 1]);
    // Floor 0: still at least 1 (0 would mean "no new flows", which only saturation says).
    let z = PolicyParams { floor: 0.0, ..q };
    let d = decide(&z, &[load(1, 100, 0.0, 0.0), load(2, 100, 4.0, 1.0)]);
    assert_eq!(weights(&d), [100, 1]);
}

#[test]
fn configured_weight_zero_stays_zero() {
    let p = PolicyParams::default();
    let d = decide(
        &p,
        &[
            load(1, 0, 0.0, 0.0),
            agent(2, 0, Agent::Weight(5)),
            agent(3, 0, Agent::Ready),
            never(4, 0),
            load(5, 10, 9.0, 0.0),
        ],
    );
    assert_eq!(weights(&d), [0, 0, 0, 0, 10]);
    assert!(d.fail_open, "weight-0 backends are not open: {d:?}");
    assert_eq!(of(&d, 1).reason, "configured weight 0");
}

#[test]
fn not_serving_backends_keep_configured_weight_and_do_not_count() {
    let p = PolicyParams::default();
    let down = Input {
        serving: false,
        ..load(1, 10, 50.0, 1.0)
    };
    let d = decide(&p, &[down, load(2, 10, 0.0, 0.0), load(3, 10, 4.0, 0.0)]);
    assert_eq!(of(&d, 1).weight, 10);
    assert!(!of(&d, 1).saturated);
    // The down backend's queue does not stretch the others' range: 2 gets queue 1, 3 gets 0.
    assert_eq!(of(&d, 3).reason, "score 0.50 (queue 0.00, kv 1.00)");
}

#[test]
fn output_order_is_by_address_whatever_the_input_order() {
    let p = PolicyParams::default();
    let inputs = vec![
        load(4, 10, 2.0, 0.3),
        never(1, 5),
        agent(3, 8, Agent::Drain),
        load(2, 10, 9.0, 0.3),
        load(5, 10, 0.0, 0.6),
    ];
    let want = decide(&p, &inputs);
    let addresses: Vec<IpAddr> = want.backends.iter().map(|b| b.address).collect();
    assert_eq!(addresses, [ip(1), ip(2), ip(3), ip(4), ip(5)]);
    let mut rev = inputs.clone();
    rev.reverse();
    assert_eq!(decide(&p, &rev), want);
    let mut rot = inputs.clone();
    rot.rotate_left(2);
    assert_eq!(decide(&p, &rot), want);
    let flights: Vec<IpAddr> = in_flight(&p, &inputs).iter().map(|f| f.0).collect();
    assert_eq!(flights, addresses);
}

#[test]
fn in_flight_is_running_plus_waiting_when_known() {
    let p = PolicyParams::default();
    let mut stale = load(3, 10, 2.0, 0.0);
    if let Reading::Report { age, .. } = &mut stale.reading {
        *age = Duration::from_secs(60);
    }
    let only_running = Input {
        reading: reading(
            Report {
                running: Some(4.4),
                ..Report::default()
            },
            0,
        ),
        ..never(5, 10)
    };
    let empty = Input {
        reading: reading(Report::default(), 0),
        ..never(6, 10)
    };
    let got = in_flight(
        &p,
        &[
            load(1, 10, 2.0, 0.0),
            never(2, 10),
            stale,
            agent(4, 10, Agent::Ready),
            only_running,
            empty,
        ],
    );
    assert_eq!(
        got,
        [
            (ip(1), Some(3)),
            (ip(2), None),
            (ip(3), None),
            (ip(4), None),
            (ip(5), Some(4)),
            (ip(6), None),
        ]
    );
}

#[test]
fn explain_has_a_line_per_backend() {
    let p = PolicyParams::default();
    let d = decide(&p, &[load(1, 10, 7.0, 0.1), load(12, 10, 0.0, 0.1)]);
    let lines = explain(&d);
    assert_eq!(
        lines,
        [
            "10.0.0.1   weight    0 of   10  saturated: 7 waiting > 5",
            "10.0.0.12  weight   10 of   10  score 0.95 (queue 1.00, kv 0.90)",
        ]
    );
}

// ---- Policy::update: hysteresis, min_change, rate limit ----

#[test]
fn nothing_to_do_when_weights_equal_the_configured_ones() {
    let t0 = Instant::now();
    let mut pol = Policy::new(PolicyParams::default());
    assert_eq!(pol.update(t0, &[never(1, 10), never(2, 10)]), None);
    assert_eq!(pol.applied(ip(1)), None);
}

#[test]
fn small_noise_does_not_rebuild() {
    let t0 = Instant::now();
    let mut pol = Policy::new(PolicyParams::default());
    let first = pol
        .update(t0, &[load(1, 100, 0.0, 0.2), load(2, 100, 4.0, 0.6)])
        .expect("the first scores change the weights");
    assert_eq!(weights(&first), [91, 28]);
    assert_eq!(pol.applied(ip(2)), Some(28));
    // 28 → 30 (kv 0.6 → 0.55) is 7%: ignored; 91 stays.
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(
        pol.update(t1, &[load(1, 100, 0.0, 0.2), load(2, 100, 4.0, 0.55)]),
        None
    );
    assert_eq!(pol.applied(ip(2)), Some(28));
    // 28 → 35 (kv 0.45) is 25%: applied, with every backend's weight.
    let d = pol
        .update(t1, &[load(1, 100, 0.0, 0.2), load(2, 100, 4.0, 0.45)])
        .expect("a big enough change");
    assert_eq!(weights(&d), [91, 35]);
    assert_eq!(pol.applied(ip(2)), Some(35));
}

#[test]
fn min_change_is_an_absolute_threshold() {
    let t0 = Instant::now();
    let mut pol = Policy::new(PolicyParams {
        hysteresis: 0.0,
        min_change: 5,
        queue_weight: 0.0,
        ..PolicyParams::default()
    });
    // kv only: multiplier 0.1 + 0.9 × (1 − kv).
    let at = |kv: f64| [load(1, 100, 0.0, kv), never(2, 100)];
    assert_eq!(pol.update(t0, &at(0.0)), None, "100 = configured");
    // 100 → 97: 3 < 5.
    assert_eq!(pol.update(t0, &at(0.033)), None);
    // 100 → 94: 6 ≥ 5.
    let d = pol.update(t0, &at(0.067)).expect("a change of 6");
    assert_eq!(of(&d, 1).weight, 94);
}

#[test]
fn crossing_zero_is_always_significant() {
    let t0 = Instant::now();
    let mut pol = Policy::new(PolicyParams {
        hysteresis: 100.0,
        min_change: 1000,
        max_rebuilds_per_sec: 0,
        ..PolicyParams::default()
    });
    let calm = [load(1, 10, 0.0, 0.0), load(2, 10, 0.0, 0.0)];
    let busy = [load(1, 10, 9.0, 0.0), load(2, 10, 0.0, 0.0)];
    assert_eq!(pol.update(t0, &calm), None);
    let d = pol.update(t0, &busy).expect("saturated: 10 → 0");
    assert_eq!(weights(&d), [0, 10]);
    assert_eq!(pol.update(t0, &busy), None);
    let d = pol.update(t0, &calm).expect("back: 0 → 10");
    assert_eq!(weights(&d), [10, 10]);
    // An agent drain too.
    let d = pol
        .update(t0, &[agent(1, 10, Agent::Drain), load(2, 10, 0.0, 0.0)])
        .expect("drain: 10 → 0");
    assert_eq!(weights(&d), [0, 10]);
}

#[test]
fn rebuilds_are_rate_limited_and_held_changes_applied_later() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut pol = Policy::new(PolicyParams {
        max_rebuilds_per_sec: 2,
        ..PolicyParams::default()
    });
    let calm = [load(1, 10, 0.0, 0.0), load(2, 10, 0.0, 0.0)];
    let busy = [load(1, 10, 9.0, 0.0), load(2, 10, 0.0, 0.0)];
    assert!(pol.update(t0, &busy).is_some());
    assert!(pol.update(t0 + ms(100), &calm).is_some());
    assert_eq!(pol.next_allowed(t0 + ms(200)), t0 + ms(1000));
    // The third change within the second is held back.
    assert_eq!(pol.update(t0 + ms(200), &busy), None);
    assert!(pol.held_back());
    assert_eq!(pol.applied(ip(1)), Some(10));
    // Still held just before the window opens, even with no new report.
    assert_eq!(pol.update(t0 + ms(999), &busy), None);
    // Applied at the next allowed update, though the inputs did not change since.
    let d = pol
        .update(t0 + ms(1000), &busy)
        .expect("the held change is applied once allowed");
    assert_eq!(weights(&d), [0, 10]);
    assert!(!pol.held_back());
    // t0 + 100 ms and t0 + 1000 ms fill the window until t0 + 1100 ms.
    assert_eq!(pol.next_allowed(t0 + ms(1050)), t0 + ms(1100));
    assert_eq!(pol.update(t0 + ms(1050), &calm), None);
    assert!(pol.held_back());
    // A held change that goes away is simply dropped.
    assert_eq!(pol.update(t0 + ms(1060), &busy), None);
    assert!(!pol.held_back());
    assert_eq!(pol.next_allowed(t0 + ms(2100)), t0 + ms(2100));
}

#[test]
fn reset_forgets_applied_weights() {
    let t0 = Instant::now();
    let mut pol = Policy::new(PolicyParams::default());
    assert!(
        pol.update(t0, &[load(1, 10, 9.0, 0.0), load(2, 10, 0.0, 0.0)])
            .is_some()
    );
    assert_eq!(pol.applied(ip(1)), Some(0));
    pol.reset();
    assert_eq!(pol.applied(ip(1)), None);
    // Compared with configured again: the saturated backend is a change again.
    assert!(
        pol.update(
            t0 + Duration::from_secs(1),
            &[load(1, 10, 9.0, 0.0), load(2, 10, 0.0, 0.0)]
        )
        .is_some()
    );
}
