//! A full flow table. The table is a plain hash: the kernel never evicts an entry, so a
//! pinned connection keeps its backend whatever else arrives. A new flow that finds no room
//! is forwarded by its hash without an entry (counted), and so is every new flow on that
//! CPU until the flow clock ticks; a sequence VIP's SYN that finds the table full in its
//! insert is sent where its later packets, without an entry, will go (its fallback table,
//! not the cursor). The daemon's sweep evicts the least recently seen flows past the
//! table's high-water mark, and new flows take entries again after the next tick. Packet
//! level, through the real balancer on the packet fuzzer's network and VIPs, with a table
//! of 64 entries.

use lb_common::programs;
use sluice_dataplane::{Dataplane, Sizes, conntrack};
use sluice_tests::{
    frames::{LB_MAC, SYN, Spec},
    fuzz, require_root,
};

const XDP_TX: u32 = 3;
const ACK: u8 = 0x10;
const ENTRIES: u32 = 64;
/// The fuzz setup's VIPs: DSR Maglev, and IPIP least-connections (a sequence VIP).
const MAGLEV: (&str, u16) = ("10.99.0.10", 80);
const LC: (&str, u16) = ("10.99.0.11", 443);

fn pin_to_cpu(cpu: usize) {
    let mut one = nix::sched::CpuSet::new();
    one.set(cpu).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one).unwrap();
}

fn syn(i: u16, (vip, port): (&str, u16)) -> Spec {
    Spec::tcp(
        &format!("192.0.2.{}", 1 + i % 250),
        10_000 + i,
        vip,
        port,
        SYN,
    )
    .macs([2, 0, 0, 0, 0, 1], LB_MAC)
}

fn ack_of(spec: &Spec) -> Spec {
    spec.clone().tcp_flags(ACK)
}

/// Where a forwarded frame goes: its destination MAC and, encapsulated in IPv4, the outer
/// destination address.
fn dest(frame: &[u8]) -> Vec<u8> {
    let mut d = frame[..6].to_vec();
    if frame[12..14] == [0x08, 0x00] && frame[14 + 9] == 4 {
        d.extend_from_slice(&frame[30..34]);
    }
    d
}

struct Balancer {
    dp: Dataplane,
    ifindex: u32,
}

impl Balancer {
    /// Run one frame; it must be forwarded. The frame out.
    fn run(&mut self, spec: &Spec, what: &str) -> Vec<u8> {
        let r = self
            .dp
            .run_frame(programs::BALANCER, &spec.build(), self.ifindex)
            .unwrap();
        assert_eq!(r.action, XDP_TX, "{what}: not forwarded");
        r.frame
    }

    fn full_count(&self) -> u64 {
        self.dp.table_full_flows().unwrap()
    }
}

#[test]
fn a_full_table_forwards_new_flows_by_hash_and_the_sweep_makes_room() {
    require_root();
    let _ns = sluice_tests::netns::Private::enter().unwrap();
    // What the program remembers of a full table is per CPU: every call on one.
    pin_to_cpu(0);
    let ifindex = fuzz::network().unwrap();
    let mut dp = Dataplane::load(Sizes {
        flow_entries: ENTRIES,
        table_slots: 16384,
        ..Sizes::default()
    })
    .unwrap();
    dp.publish(&fuzz::setup().desired).unwrap();
    let mut clock = dp.clock().unwrap();
    clock.tick().unwrap();
    let mut b = Balancer { dp, ifindex };

    // Fill the table.
    let pinned: Vec<(Spec, Vec<u8>)> = (0..ENTRIES as u16)
        .map(|i| {
            let s = syn(i, MAGLEV);
            let out = b.run(&s, "a SYN while there is room");
            (s, out)
        })
        .collect();
    assert_eq!(b.dp.flow_count(), ENTRIES as usize);
    assert_eq!(b.full_count(), 0);

    // One more: forwarded, no entry, counted; its ACK (no entry either) goes the same way.
    let extra = syn(1000, MAGLEV);
    let out = b.run(&extra, "the SYN that finds the table full");
    assert_eq!(b.dp.flow_count(), ENTRIES as usize, "nothing was evicted");
    assert_eq!(b.full_count(), 1);
    let ack = b.run(&ack_of(&extra), "its ACK");
    assert_eq!(
        dest(&ack),
        dest(&out),
        "an unpinned flow's ACK went elsewhere"
    );
    assert_eq!(b.full_count(), 2);

    // The pinned flows keep their entries and their backends.
    for (i, (s, out)) in pinned.iter().enumerate() {
        let ack = b.run(&ack_of(s), "a pinned flow's ACK");
        assert_eq!(dest(&ack), dest(out), "pinned flow {i} moved");
    }
    assert_eq!(b.dp.flow_count(), ENTRIES as usize);

    // A sequence VIP: its SYN is picked by the cursor, then finds the table full in its
    // insert (the CPU forgets what it knew before each), and must go where its ACK, picked
    // anew by hash without an entry, will go.
    for i in 0..24u16 {
        b.dp.forget_table_full().unwrap();
        let s = syn(2000 + i, LC);
        let out = b.run(&s, "an lc SYN finding the table full");
        let ack = b.run(&ack_of(&s), "its ACK");
        assert_eq!(
            dest(&ack),
            dest(&out),
            "lc flow {i}: the ACK went elsewhere than its SYN"
        );
    }
    // And while the CPU knows the table is full (no insert tried): the same.
    for i in 0..8u16 {
        let s = syn(3000 + i, LC);
        let out = b.run(&s, "an lc SYN while the table is known full");
        let ack = b.run(&ack_of(&s), "its ACK");
        assert_eq!(dest(&ack), dest(&out), "lc flow {i} (known full)");
    }
    assert_eq!(b.dp.flow_count(), ENTRIES as usize);
    assert_eq!(b.full_count(), 2 + 2 * 24 + 2 * 8);

    // The sweep evicts down to the low-water mark: 64 → 51 (all equally recent here).
    let mut sweeper = b.dp.sweeper(conntrack::Timeouts::default()).unwrap();
    let swept = sweeper.sweep(&[]).unwrap();
    let low = (u64::from(ENTRIES) * conntrack::LOW_WATER / 1000) as usize;
    assert_eq!(swept.evicted as usize, ENTRIES as usize - low);
    assert_eq!((swept.expired, swept.reaped), (0, 0));
    assert_eq!(b.dp.flow_count(), low);
    // A table at its low-water mark is left alone.
    assert_eq!(sweeper.sweep(&[]).unwrap().evicted, 0);

    // This CPU still forwards new flows without an entry until the clock ticks; then they
    // take one again.
    b.run(&syn(4000, MAGLEV), "a SYN in the same tick");
    assert_eq!(b.dp.flow_count(), low);
    let tick = conntrack::now_ticks();
    let t0 = std::time::Instant::now();
    while conntrack::now_ticks() == tick {
        assert!(t0.elapsed().as_secs() < 5, "the flow clock did not tick");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    clock.tick().unwrap();
    let s = syn(4001, MAGLEV);
    let out = b.run(&s, "a SYN after the tick");
    assert_eq!(b.dp.flow_count(), low + 1, "the new flow took an entry");
    let ack = b.run(&ack_of(&s), "its ACK");
    assert_eq!(dest(&ack), dest(&out));
}
