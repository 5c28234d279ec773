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
        // The bucket holds one second (50); the calls take well under a second, so at
        // most a token or two more come in.
        assert!((50..=53).contains(&pinned), "{pinned} pinned");
        assert_eq!(pinned as u64 + unpinned, 300);
        // Later packets of the unpinned flows go where their SYN went (by the hash, not
        // the lc cursor, which moved on): compared past the frame's first 6 bytes only
        // where the destination is the backend (DSR: MAC; IPIP: MAC and outer header).
        for (spec, out) in first.iter().skip(60) {
            let mut ack = spec.clone();
            if let sluice_tests::frames::L4::Tcp { flags, .. } = &mut ack.l4 {
                *flags = ACK;
            }
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
