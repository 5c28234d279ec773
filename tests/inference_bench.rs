//! `sluice bench inference` end to end, small: the lab's model servers behind the real
//! daemon, a few short conversations through the balancer (and some straight to backend 1
//! in the background) under `lc` and `lc+load`. It checks the comparison runs and
//! measures what it says (every request answered with all its tokens, each counted on the
//! backend that answered it), not its latencies: those are the benchmark's to print.
//! The lab (prefix `sl-ib-<pid>-<n>`) is removed when it drops, also on failure; every
//! request is bounded by the scenario's timeout.

use std::time::Duration;

use sluice_lab::llm::{
    bench,
    loadgen::Sessions,
    scenario::{Balancer, Scenario},
};
use sluice_tests::{prefix, require_root, serial};

#[test]
fn the_inference_comparison_runs_every_policy_without_a_failed_request() {
    require_root();
    let _serial = serial();
    let mut s = Scenario::default();
    s.sessions.sessions = 10;
    s.sessions.rate = 4.0;
    s.sessions.turns.median = 2.0;
    s.sessions.turns.max = 3;
    s.sessions.output.max = 48;
    s.sessions.context.max = 4000;
    s.set_background(2.0);
    s.timeout = Duration::from_secs(30);
    let want = Sessions::generate(&s.sessions).requests();
    let policies = [Balancer::LeastConn, Balancer::LeastConnLoad];
    let mut log = Vec::new();
    let rows = bench::run(&prefix("ib", "a"), &s, &policies, &mut |m| {
        log.push(m.to_owned());
    })
    .expect("the comparison runs");
    let log = log.join("\n");
    assert_eq!(rows.len(), 2, "{log}");
    for (row, policy) in rows.iter().zip(policies) {
        let sum = &row.summary;
        assert_eq!(row.balancer, policy);
        assert_eq!((sum.requests, sum.failures), (want, 0), "{policy}: {log}");
        let served: usize = sum.by_backend.iter().map(|(_, n)| n).sum();
        assert_eq!(
            served, want,
            "{policy}: every request names its backend: {log}"
        );
        assert!(
            sum.ttft.p50 <= sum.ttft.p99 && sum.ttft.p99 <= sum.total.p99,
            "{policy}: {sum}"
        );
        assert!(sum.tokens_per_s > 0.0, "{policy}: {sum}");
    }
    let table = sluice_lab::llm::scenario::table(&rows);
    assert!(table.contains("lc+load p99 TTFT = "), "{table}");
}
