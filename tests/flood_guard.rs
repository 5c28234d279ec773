//! The flood guard (`daemon.new_flow_limit_per_cpu`): beyond the rate, new flows are still
//! forwarded, by their hash, but take no flow entry, so they cannot evict established
//! ones. Packet level, through the real balancer on the packet fuzzer's network and VIPs:
//! with a limit of 50 a second, of 300 distinct SYNs sent at once to a maglev VIP and to an
//! lc VIP (a sequence VIP, whose unpinned flows must take the hash path too), every one is
//! forwarded, only the bucket's 50 are pinned, the rest are counted unpinned, and every
//! later packet of an unpinned flow goes to the same backend as its SYN.

use lb_common::programs;
use sluice_dataplane::{Dataplane, Sizes};
use sluice_tests::{
    frames::{LB_MAC, SYN, Spec},
    fuzz, require_root,
};

const XDP_TX: u32 = 3;
const ACK: u8 = 0x10;

#[test]
fn new_flows_beyond_the_rate_are_forwarded_by_hash_without_an_entry() {
    require_root();
    let _ns = sluice_tests::netns::Private::enter().unwrap();
    // The buckets are per CPU: every call on one.
    let mut one = nix::sched::CpuSet::new();
    one.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one).unwrap();
    let ifindex = fuzz::network().unwrap();
    let mut setup = fuzz::setup();
    setup.desired.global.new_flow_limit_per_cpu = 50;
    let mut dp = Dataplane::load(Sizes {
        flow_entries: 65536,
        table_slots: 16384,
        ..Sizes::default()
    })
    .unwrap();
    dp.publish(&setup.desired).unwrap();
    // (VIP address, port): DSR maglev, and IPIP lc.
    for (vip, port) in [("10.99.0.10", 80), ("10.99.0.11", 443)] {
        dp.clear_flows().unwrap();
        // A full bucket again (one second of credit).
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let before = dp.unpinned_flows().unwrap();
        let flows_before = dp.flow_count();
        let mut first: Vec<(Spec, Vec<u8>)> = Vec::new();
        let t0 = std::time::Instant::now();
        for i in 0..300u16 {
            let spec = Spec::tcp(&format!("192.0.2.{}", i % 250), 2000 + i, vip, port, SYN)
                .macs([2, 0, 0, 0, 0, 1], LB_MAC);
            let r = dp
                .run_frame(programs::BALANCER, &spec.build(), ifindex)
                .unwrap();
            assert_eq!(r.action, XDP_TX, "{vip}:{port} SYN {i} forwarded");
            first.push((spec, r.frame));
        }
        let pinned = dp.flow_count() - flows_before;
        let unpinned = dp.unpinned_flows().unwrap() - before;
        println!("{vip}:{port}: 300 SYNs, {pinned} pinned, {unpinned} forwarded without an entry");
        // The bucket holds one second (50); while the calls run, one more token comes in
        // every 20 ms.
        let refill = (t0.elapsed().as_secs_f64() * 50.0).ceil() as usize;
        assert!(
            (50..=51 + refill).contains(&pinned),
            "{pinned} pinned (refill {refill})"
        );
        assert_eq!(pinned as u64 + unpinned, 300);
        // Later packets of the unpinned flows go where their SYN went (by the hash, not
        // the lc cursor, which moved on): compared past the frame's first 6 bytes only
        // where the destination is the backend (DSR: MAC; IPIP: MAC and outer header).
        for (spec, out) in first.iter().skip(60) {
            let ack = spec.clone().tcp_flags(ACK);
            let r = dp
                .run_frame(programs::BALANCER, &ack.build(), ifindex)
                .unwrap();
            assert_eq!(r.action, XDP_TX);
            assert_eq!(
                r.frame[..6],
                out[..6],
                "{vip}:{port}: an ACK went to another backend than its SYN"
            );
        }
    }
}

/// What one flood scenario did.
struct Flood {
    /// Held connections that failed (reset, or answered by another backend).
    broken: usize,
    generated: u64,
    seconds: f64,
    unpinned: u64,
    /// New flows forwarded without an entry because the flow table was full.
    table_full: u64,
    /// Flows the daemon's sweep evicted to make room.
    evicted: u64,
    /// Flows that took a flow-table entry (the VIP's opens).
    opened: u64,
    /// New connections (each over two echoes) completed while the flood ran, and batches
    /// of them that failed.
    legit: u64,
    legit_failed: u64,
}

/// A lab (2 backends, DSR, a 16384-entry flow table) with `limit` as the flood guard's
/// rate: 50 held connections, then a flood of a million distinct new flows from the
/// live-frames generator (far more than the flow table holds) while a backend is added;
/// then an echo on every held connection.
fn flood(tag: &str, limit: u32) -> Flood {
    use std::{
        net::SocketAddr,
        sync::atomic::{AtomicBool, Ordering},
        time::{Duration, Instant},
    };

    use sluice_daemon::daemon::Edit;
    use sluice_lab::{
        bench::traffic,
        lab::{self, Lab, LabSpec, Weights, daemon::Daemon},
    };
    use sluice_tests::conn::Held;

    let mut lab = Lab::up(
        LabSpec::new(&sluice_tests::prefix("flood", tag))
            .backends(2)
            .clients(2),
    )
    .expect("bring the lab up");
    let config = |lab: &Lab| {
        let mut c = lab
            .daemon_config(&Weights::Equal)
            .expect("the lab's config");
        c.daemon.flow_table_size = 16384;
        c.daemon.new_flow_limit_per_cpu = limit;
        c
    };
    let d = Daemon::start(&lab, config(&lab)).expect("start the daemon");
    let vip = SocketAddr::new(lab.vip4().into(), lab::TCP_PORT);
    // The flood comes in on CPU 0: the held connections' entries are made there too (their
    // packets leave from this thread), so that a per-CPU structure could not spare them.
    let all = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    let mut cpu0 = nix::sched::CpuSet::new();
    cpu0.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu0).unwrap();
    let mut held: Vec<Held> = (0..50)
        .map(|_| Held::open(lab.client(0), vip))
        .collect::<anyhow::Result<_>>()
        .expect("open the held connections");
    for (i, c) in held.iter_mut().enumerate() {
        c.echo(&format!("before{i}"))
            .expect("echo before the flood");
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &all).unwrap();
    lab.allow_xdp_tx_from_client(0)
        .expect("XDP transmit from the client");
    let lb_mac = lab.lb().mac();
    let done = AtomicBool::new(false);
    // Legitimate traffic during the flood: new connections from the second client, each
    // checked over two echoes.
    let mut legit = 0u64;
    let mut legit_failed = 0u64;
    let sent = std::thread::scope(|s| {
        let client = lab.client(0).clone();
        let done = &done;
        let flood = s.spawn(move || {
            let r = client.run(|| {
                traffic::generate(&traffic::GenOptions {
                    interface: "eth0".into(),
                    to: vip,
                    udp: false,
                    from: None,
                    dst_mac: lb_mac,
                    src_mac: None,
                    flows: 1_000_000,
                    order: traffic::Order::Sequential,
                    size: 60,
                    count: 1_500_000,
                    duration: Duration::from_secs(4),
                    batch: 64,
                    cpu: Some(0),
                })
            });
            done.store(true, Ordering::SeqCst);
            r
        });
        // While it floods (the held connections idle): add a backend (the Maglev table
        // changes), and open new connections.
        std::thread::sleep(Duration::from_millis(300));
        lab.add_backend().expect("add a backend");
        d.edit(Edit::Replace(Box::new(config(&lab))))
            .expect("edit: the added backend");
        let t0 = Instant::now();
        while !done.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(10) {
            match sluice_tests::conn::connections(lab.client(1), vip, 10) {
                Ok(_) => legit += 10,
                Err(_) => legit_failed += 1,
            }
        }
        flood.join().expect("the flood thread")
    });
    let sent = sent
        .expect("the generator ran in the client")
        .expect("the generator");
    let mut broken = 0;
    for (i, c) in held.iter_mut().enumerate() {
        if let Err(e) = c.echo(&format!("after{i}")) {
            if broken < 3 {
                println!("{tag}: held connection {i} broken: {e:#}");
            }
            broken += 1;
        }
    }
    let status = d.status();
    let unpinned = status.as_ref().map_or(0, |s| s.unpinned_flows);
    let table_full = status.as_ref().map_or(0, |s| s.table_full_flows);
    let evicted = status.as_ref().map_or(0, |s| s.conntrack.evicted);
    let opened = status.map_or(0, |s| s.vips.iter().map(|v| v.new_flows).sum());
    drop(held);
    drop(d);
    lab.down().expect("take the lab down");
    Flood {
        broken,
        legit,
        legit_failed,
        generated: sent.generated,
        seconds: sent.seconds,
        unpinned,
        table_full,
        evicted,
        opened,
    }
}

/// 50 long-lived connections survive a flood of new flows far larger than the flow table,
/// with a backend added in the middle. With the guard on (1000 new flows a second per CPU
/// may take an entry), the flood takes almost no entries: most of it is forwarded without
/// one, and the table never fills. Without it (limit 0, the control), the flood fills the
/// 16,384-entry table within milliseconds and the rest of it goes without an entry (the
/// table never evicts by itself); the daemon's sweeps evict to make room, the flood's
/// flows (never seen again) before the held connections (seen again, however idle), so
/// those survive too. (With the kernel's LRU, the table before, the control churned the
/// table many times over; with per-CPU LRU lists 7 of 50 broke, and the first version of
/// the sweep's eviction, by idle time alone, broke 11 of 50.)
#[test]
fn a_flood_of_new_flows_breaks_no_established_connection() {
    require_root();
    let _serial = sluice_tests::serial();
    let guarded = flood("on", 1000);
    println!(
        "flood guard on (1000/s per CPU): {} frames of a million flows in {:.2} s ({:.2} Mpps), {} forwarded without an entry; {} new connections completed during the flood ({:.0}/s, {} batches failed); {} of 50 idle held connections broken",
        guarded.generated,
        guarded.seconds,
        guarded.generated as f64 / guarded.seconds / 1e6,
        guarded.unpinned,
        guarded.legit,
        guarded.legit as f64 / guarded.seconds,
        guarded.legit_failed,
        guarded.broken
    );
    let unguarded = flood("off", 0);
    println!(
        "flood guard off: {} frames in {:.2} s, {} flows took an entry (with the guard: {}), {} forwarded without one as the table was full (with the guard: {}), {} evicted by the sweeps; {} new connections during the flood; {} of 50 idle held connections broken",
        unguarded.generated,
        unguarded.seconds,
        unguarded.opened,
        guarded.opened,
        unguarded.table_full,
        guarded.table_full,
        unguarded.evicted,
        unguarded.legit,
        unguarded.broken
    );
    assert!(
        guarded.generated > 100_000,
        "the flood was too small to mean anything"
    );
    assert!(
        guarded.unpinned > 50_000,
        "{} unpinned flows",
        guarded.unpinned
    );
    assert_eq!(guarded.broken, 0, "held connections broken under the guard");
    assert_eq!(guarded.table_full, 0, "the table filled under the guard");
    // The control: without the guard the flood filled the table, and most of it went
    // without an entry; the sweeps made room without evicting a held connection.
    assert!(
        unguarded.opened >= 16384 * 9 / 10,
        "without the guard only {} flows took an entry",
        unguarded.opened
    );
    assert!(
        unguarded.table_full > 500_000,
        "without the guard only {} flows found the table full",
        unguarded.table_full
    );
    assert_eq!(
        unguarded.broken, 0,
        "held connections broken by the sweeps' evictions"
    );
}
