//! The packet fuzzer (`sluice_tests::fuzz`) through the real balancer: frames of every
//! kind and length, each checked against the data plane's invariants. Frames and seed from
//! `SLUICE_FUZZ_FRAMES` (default 100000) and `SLUICE_FUZZ_SEED` (default: from the clock,
//! printed, so a failure can be replayed); `cargo xtask fuzz --frames N --seed S` runs it
//! in release.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sluice_tests::{fuzz, netns::Private, require_root};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: not a number"))
    })
}

#[test]
fn packet_fuzz() {
    require_root();
    let frames = env_u64("SLUICE_FUZZ_FRAMES").unwrap_or(100_000);
    let seed = env_u64("SLUICE_FUZZ_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let _ns = Private::enter().expect("a private network namespace");
    let ifindex = fuzz::network().expect("the fuzz network");
    let t0 = Instant::now();
    let r = fuzz::run(frames, seed, ifindex).expect("the fuzz run");
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "packet fuzz: {} frames, seed {seed} (SLUICE_FUZZ_SEED={seed} replays it), {:.1} s ({:.0} frames/s), {} violations",
        r.frames,
        secs,
        r.frames as f64 / secs,
        r.violations
    );
    println!("  verdicts: {:?}", r.actions);
    println!("  reasons: {:?}", r.reasons);
    assert!(
        r.violations == 0,
        "{} violations (seed {seed}), the first:\n{}",
        r.violations,
        r.examples.join("\n")
    );
    // Every frame moved exactly one counter: they sum to the frames sent.
    assert_eq!(r.reasons.values().sum::<u64>(), r.frames);
    // Both reason maps count: the frames of a VIP in its row, the others globally.
    println!("  counted per VIP: {}", r.per_vip);
    assert!(r.per_vip > 0 && r.per_vip < r.frames, "{}", r.per_vip);
    // The fuzzer still reaches every kind of outcome (it cannot silently degrade into
    // sending only garbage, or only valid frames).
    if frames >= 20_000 {
        for want in [
            "fwd_tx",
            "fwd_redirect",
            "fwd_mss_clamped",
            "fwd_icmp",
            "icmp_too_big",
            "pass_not_ip",
            "pass_not_vip",
            "pass_truncated",
            "pass_malformed",
            "pass_fragment",
            "pass_ipv6_ext",
            "pass_vlan_stacked",
            "pass_other_l4",
            "drop_no_backend",
            "drop_no_route",
            "drop_ipv4_csum",
            "drop_tcp_doff",
            "drop_udp_len",
            "drop_icmp_no_flow",
        ] {
            assert!(
                r.reasons.get(want).copied().unwrap_or(0) > 0,
                "no frame ended as {want}: {:?}",
                r.reasons
            );
        }
    }
}
