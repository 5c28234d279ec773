//! A full flow table. Nothing but the daemon evicts an entry, so a pinned connection keeps
//! its backend whatever else arrives. A new flow that finds no free slot in its probe is
//! forwarded by its hash without an entry (counted); a sequence VIP's SYN that finds no
//! room is sent where its later packets, without an entry, will go (its fallback table,
//! not the cursor). The daemon's sweep evicts past the table's high-water mark (closing
//! flows, then those never seen again, then the least recently seen), turns the deleted
//! slots no probe needs back into empty ones, and new flows take slots again at once.
//! Packet level, through the real balancer on the packet fuzzer's network and VIPs, with a
//! table sized for 64 flows (128 slots).
//!
//! And the region of the table in use, which the daemon grows and shrinks with the flows:
//! while it changes size (also when a daemon stopped in the middle of a change), every flow
//! is found in the old region or the new, new flows go into the new one, and no flow
//! changes backend through a growth, a shrink or a settled change.
//!
//! And the sweep's count of a backend slot that another backend took over: the removed
//! backend's flows left in the table are not the new one's connections.

use lb_common::FlowRegion;
use lb_common::programs;
use sluice_dataplane::{Dataplane, Sizes, conntrack};
use sluice_tests::{
    frames::{LB_MAC, SYN, Spec},
    fuzz, require_root,
};

const XDP_TX: u32 = 3;
const ACK: u8 = 0x10;
const ENTRIES: u32 = 64;
/// The slots of a table sized for `ENTRIES` flows.
const SLOTS: usize = 128;
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
    let (_ns, ifindex, mut dp) = lab(Sizes {
        flow_entries: ENTRIES,
        table_slots: 16384,
        ..Sizes::default()
    });
    pin_to_cpu(0);
    assert_eq!(dp.flow_table().slots() as usize, SLOTS);
    dp.publish(&fuzz::setup().desired).unwrap();
    let mut clock = dp.clock().unwrap();
    clock.tick().unwrap();
    let mut b = Balancer { dp, ifindex };

    // Fill every slot: new flows until the table holds one in each (a flow whose probe
    // finds no free slot while others are free elsewhere goes without an entry).
    let mut pinned: Vec<(Spec, Vec<u8>)> = Vec::new();
    let mut i = 0u16;
    while b.dp.flow_count() < SLOTS {
        assert!(i < 20_000, "the table never filled: {}", b.dp.flow_count());
        let s = syn(i, MAGLEV);
        let before = b.full_count();
        let out = b.run(&s, "a SYN while there is room");
        if b.full_count() == before {
            pinned.push((s, out));
        }
        i += 1;
    }
    assert_eq!(pinned.len(), SLOTS);

    // One more: forwarded, no entry, counted; its ACK (no entry either) goes the same way.
    let full = b.full_count();
    let extra = syn(30_000, MAGLEV);
    let out = b.run(&extra, "the SYN that finds the table full");
    assert_eq!(b.dp.flow_count(), SLOTS, "nothing was evicted");
    assert_eq!(b.full_count(), full + 1);
    let ack = b.run(&ack_of(&extra), "its ACK");
    assert_eq!(
        dest(&ack),
        dest(&out),
        "an unpinned flow's ACK went elsewhere"
    );
    assert_eq!(b.full_count(), full + 2);

    // The pinned flows keep their entries and their backends.
    for (i, (s, out)) in pinned.iter().enumerate() {
        let ack = b.run(&ack_of(s), "a pinned flow's ACK");
        assert_eq!(dest(&ack), dest(out), "pinned flow {i} moved");
    }
    assert_eq!(b.dp.flow_count(), SLOTS);

    // A sequence VIP: its SYN is picked by the cursor, then finds no room in its insert,
    // and must go where its ACK, picked anew by hash without an entry, will go.
    for i in 0..24u16 {
        let s = syn(31_000 + i, LC);
        let out = b.run(&s, "an lc SYN finding the table full");
        let ack = b.run(&ack_of(&s), "its ACK");
        assert_eq!(
            dest(&ack),
            dest(&out),
            "lc flow {i}: the ACK went elsewhere than its SYN"
        );
    }
    assert_eq!(b.dp.flow_count(), SLOTS);
    assert_eq!(b.full_count(), full + 2 + 2 * 24);

    // The sweep evicts down to the low-water mark of the flows the table is sized for,
    // and empties the deleted slots no probe passes over.
    let mut sweeper = b.dp.sweeper(conntrack::Timeouts::default()).unwrap();
    let swept = sweeper.sweep(&[]).unwrap();
    let low = (u64::from(ENTRIES) * conntrack::LOW_WATER / 1000) as usize;
    assert_eq!(swept.evicted as usize, SLOTS - low);
    assert_eq!((swept.expired, swept.reaped), (0, 0));
    assert!(swept.tidied > 0, "no deleted slot was emptied");
    assert_eq!(b.dp.flow_count(), low);
    // The flows left keep their backends.
    let mut kept = 0;
    for (i, (s, out)) in pinned.iter().enumerate() {
        if b.dp.flow(&s.key()).is_some() {
            kept += 1;
            let ack = b.run(&ack_of(s), "a kept flow's ACK");
            assert_eq!(dest(&ack), dest(out), "kept flow {i} moved");
        }
    }
    assert_eq!(kept, low);
    // A table at its low-water mark is left alone.
    assert_eq!(sweeper.sweep(&[]).unwrap().evicted, 0);

    // New flows take slots again at once.
    let s = syn(32_000, MAGLEV);
    let out = b.run(&s, "a SYN after the sweep");
    assert_eq!(b.dp.flow_count(), low + 1, "the new flow took an entry");
    let ack = b.run(&ack_of(&s), "its ACK");
    assert_eq!(dest(&ack), dest(&out));
}

/// Every flow of `flows` is forwarded where its SYN went, and nothing opened a new flow.
fn all_follow(b: &mut Balancer, flows: &[(Spec, Vec<u8>)], when: &str) {
    let held = b.dp.flow_count();
    for (i, (s, out)) in flows.iter().enumerate() {
        let ack = b.run(&ack_of(s), when);
        assert_eq!(dest(&ack), dest(out), "{when}: flow {i} changed backend");
        assert!(
            b.dp.flow(&s.key()).is_some(),
            "{when}: flow {i} has no entry"
        );
    }
    assert_eq!(b.dp.flow_count(), held, "{when}: an ACK opened a flow");
}

/// A private namespace with the fuzz network (its ifindex), and a data plane of `sizes`.
fn lab(sizes: Sizes) -> (sluice_tests::netns::Private, u32, Dataplane) {
    let ns = sluice_tests::netns::Private::enter().unwrap();
    let ifindex = fuzz::network().unwrap();
    (ns, ifindex, Dataplane::load(sizes).unwrap())
}

/// [`lab`] with a flow table of 2^18 slots: more than the smallest region (2^17), where a
/// new table starts.
fn region_lab() -> (sluice_tests::netns::Private, u32, Dataplane) {
    lab(Sizes {
        flow_entries: 1 << 17,
        table_slots: 16384,
        ..Sizes::default()
    })
}

#[test]
fn the_region_in_use_grows_and_shrinks_without_moving_a_flow_off_its_backend() {
    require_root();
    let (_ns, ifindex, mut dp) = region_lab();
    pin_to_cpu(0);
    let (all, small) = (1 << 18, lb_common::MIN_REGION_SLOTS);
    assert_eq!(dp.flow_table().slots(), all);
    assert_eq!(dp.flow_table().region(), FlowRegion::of(small));
    dp.publish(&fuzz::setup().desired).unwrap();
    dp.clock().unwrap().tick().unwrap();
    let mut b = Balancer { dp, ifindex };
    // Maglev flows, and least-connections ones (picked by a cursor: a flow that lost its
    // entry would be picked anew, most likely elsewhere).
    let mut flows: Vec<(Spec, Vec<u8>)> = Vec::new();
    for i in 0..1500u16 {
        let s = syn(i, if i % 3 == 0 { LC } else { MAGLEV });
        let out = b.run(&s, "a SYN");
        flows.push((s, out));
    }
    assert_eq!(b.dp.flow_count(), 1500);
    assert!(b.dp.flow_table().iter().all(|e| e.index < small));
    all_follow(&mut b, &flows, "in the smallest region");

    // A daemon stopped right after publishing a growth: nothing moved yet. The program
    // finds every flow in the old region, and puts new flows in the new one.
    b.dp.flow_table().start_resize(all);
    assert_eq!(b.dp.flow_table().region(), FlowRegion::moving(all, small));
    all_follow(&mut b, &flows, "while the region grows");
    for i in 1500..1800u16 {
        let s = syn(i, if i % 3 == 0 { LC } else { MAGLEV });
        let out = b.run(&s, "a SYN while the region grows");
        flows.push((s, out));
    }
    assert_eq!(b.dp.flow_count(), 1800);
    assert!(
        b.dp.flow_table().iter().any(|e| e.index >= small),
        "no new flow went into the new region"
    );
    all_follow(&mut b, &flows, "new flows while the region grows");

    // The next daemon's sweep settles it, then shrinks the region back for 1800 flows.
    let mut sweeper = b.dp.sweeper(conntrack::Timeouts::default()).unwrap();
    let swept = sweeper.sweep(&[]).unwrap();
    let r = swept.resized.expect("the change under way was settled");
    assert_eq!((r.to, r.unplaced), (all, 0));
    assert!(r.moved > 0);
    assert_eq!(b.dp.flow_table().region(), FlowRegion::of(all));
    all_follow(&mut b, &flows, "after the growth was settled");
    let swept = sweeper.sweep(&[]).unwrap();
    let r = swept
        .resized
        .expect("a region 1800 flows barely use shrinks");
    assert_eq!((r.from, r.to, r.unplaced), (all, small, 0));
    assert_eq!(b.dp.flow_table().region().slots(), small);
    assert!(b.dp.flow_table().iter().all(|e| e.index < small));
    all_follow(&mut b, &flows, "after the shrink");

    // Grown for many more flows (as the sweeper does when a sample finds it 3/8 used).
    let r = b.dp.fit_flow_region(60_000);
    assert_eq!((r.from, r.to, r.unplaced), (small, all, 0));
    assert!(r.moved > 0);
    all_follow(&mut b, &flows, "after the growth");
    assert!(
        sweeper.check_region().is_none(),
        "a quiet region was resized"
    );
}

/// The region grown and shrunk over and over on one CPU while the program opens and
/// follows flows on the other: no flow ever changes backend (least-connections flows
/// included, which a lost entry would send elsewhere), none is opened twice, and every one
/// is in the table at the end, exactly once. Bounded: at most 6000 flows and 60 s.
#[test]
fn resizing_while_packets_flow_moves_no_flow_and_duplicates_none() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    require_root();
    let (_ns, ifindex, mut dp) = region_lab();
    dp.publish(&fuzz::setup().desired).unwrap();
    dp.clock().unwrap().tick().unwrap();
    let (all, small) = (1u32 << 18, lb_common::MIN_REGION_SLOTS);
    const RESIZES: u32 = 40;
    let sweeper = dp.sweeper(conntrack::Timeouts::default()).unwrap();
    let (done, resized) = (AtomicBool::new(false), AtomicU32::new(0));
    let mut b = Balancer { dp, ifindex };
    let flows = std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_cpu(1);
            while !done.load(Ordering::Relaxed) {
                let n = resized.load(Ordering::Relaxed);
                let r = sweeper
                    .flow_table()
                    .resize(if n.is_multiple_of(2) { all } else { small });
                assert_eq!(r.unplaced, 0, "{r:?}");
                resized.fetch_add(1, Ordering::Relaxed);
            }
        });
        pin_to_cpu(0);
        // Stops the resizing thread also when an assertion below fails (else the scope
        // would wait for it forever).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&done);
        let mut flows: Vec<(Spec, Vec<u8>)> = Vec::new();
        let started = std::time::Instant::now();
        let mut round = 0u32;
        while resized.load(Ordering::Relaxed) < RESIZES
            && started.elapsed() < std::time::Duration::from_secs(60)
        {
            for _ in 0..if flows.len() < 6000 { 100 } else { 0 } {
                let i = flows.len() as u16;
                let to = if i.is_multiple_of(2) { LC } else { MAGLEV };
                let s = syn(i, to);
                let out = b.run(&s, "a SYN while the region changes");
                flows.push((s, out));
            }
            // Every flow so far, again: each still goes where its SYN went.
            for (j, (s, out)) in flows.iter().enumerate() {
                let ack = b.run(&ack_of(s), "an ACK while the region changes");
                assert_eq!(dest(&ack), dest(out), "round {round}: flow {j} moved");
            }
            round += 1;
        }
        flows
    });
    let n = resized.load(Ordering::Relaxed);
    assert!(
        n >= RESIZES,
        "only {n} resizes ran while the packets flowed"
    );
    // Settled: every flow once, found where the program looks.
    let r = b.dp.flow_table().region();
    assert_eq!(r.old_mask, 0, "{r:?}");
    assert_eq!(b.dp.flow_count(), flows.len(), "a flow was opened twice");
    for (j, (s, out)) in flows.iter().enumerate() {
        let ack = b.run(&ack_of(s), "an ACK after");
        assert_eq!(dest(&ack), dest(out), "flow {j} moved");
    }
    assert_eq!(b.dp.flow_count(), flows.len());
}

/// A backend slot that another backend takes over: the flows still pinned to the slot's
/// earlier backend (removed; its flows stay until they expire or send again) are not the
/// new backend's connections. The sweep counts a flow for its slot only if it was pinned
/// to that slot's current backend (its generation); once an old flow sends again it moves,
/// and counts where it went.
#[test]
fn a_reused_backend_slot_counts_only_its_own_backends_flows() {
    use std::net::IpAddr;

    use sluice_dataplane::{Desired, DesiredVip};

    require_root();
    // Slot 0 is reserved: two slots, so the third backend must take the removed one's.
    let (_ns, ifindex, mut dp) = lab(Sizes {
        flow_entries: 1024,
        backend_slots: 3,
        ..Sizes::default()
    });
    pin_to_cpu(0);
    let full = fuzz::setup().desired;
    let vip_addr: IpAddr = MAGLEV.0.parse().unwrap();
    let vip = full
        .vips
        .iter()
        .find(|v| v.ident.address == vip_addr && v.ident.port == MAGLEV.1)
        .unwrap()
        .clone();
    let (x, y) = (vip.backends[0].clone(), vip.backends[1].clone());
    let mut z = x.clone();
    z.address = "10.99.1.9".parse().unwrap();
    z.mac = Some([0x02, 0, 0, 4, 1, 9]);
    let with = |backends: &[&sluice_dataplane::DesiredBackend]| Desired {
        global: full.global,
        vips: vec![DesiredVip {
            backends: backends.iter().map(|&b| b.clone()).collect(),
            ..vip.clone()
        }],
    };
    dp.publish(&with(&[&x, &y])).unwrap();
    dp.clock().unwrap().tick().unwrap();
    let mut sweeper = dp.sweeper(conntrack::Timeouts::default()).unwrap();
    let mut b = Balancer { dp, ifindex };
    let slot = |b: &Balancer, addr: IpAddr| {
        let (_, r) = b.dp.layout().vips().next().unwrap();
        r.backends.get(&addr).copied()
    };
    let recount = |b: &mut Balancer, sweeper: &mut conntrack::Sweeper| {
        let backends: Vec<_> = b.dp.layout().backends().collect();
        let s = sweeper.sweep(&backends).unwrap();
        b.dp.rebase_conntrack(&s);
    };

    // 40 connections over x and y.
    let flows: Vec<Spec> = (0..40).map(|i| syn(i, MAGLEV)).collect();
    for s in &flows {
        b.run(s, "a SYN");
        b.run(&ack_of(s), "its ACK");
    }
    let (xs, ys) = (slot(&b, x.address).unwrap(), slot(&b, y.address).unwrap());
    let on = |b: &Balancer, id: u32| {
        flows
            .iter()
            .filter(|s| b.dp.flow(&s.key()).is_some_and(|v| v.backend_id == id))
            .count() as u64
    };
    let (on_x, on_y) = (on(&b, xs.id), on(&b, ys.id));
    assert!(on_x > 0 && on_y > 0 && on_x + on_y == 40, "{on_x} + {on_y}");
    recount(&mut b, &mut sweeper);
    assert_eq!(b.dp.active(xs.id).unwrap(), on_x);
    assert_eq!(b.dp.active(ys.id).unwrap(), on_y);

    // x removed (its flows stay in the table, idle), then z added: z takes x's slot.
    b.dp.publish(&with(&[&y])).unwrap();
    b.dp.publish(&with(&[&y, &z])).unwrap();
    let zs = slot(&b, z.address).unwrap();
    assert_eq!(zs.id, xs.id, "z did not reuse x's slot");
    assert_ne!(zs.generation, xs.generation);
    assert_eq!(on(&b, zs.id), on_x, "x's flows left the table");
    recount(&mut b, &mut sweeper);
    assert_eq!(
        b.dp.active(zs.id).unwrap(),
        0,
        "x's idle flows counted as z's connections"
    );
    assert_eq!(b.dp.active(ys.id).unwrap(), on_y);

    // x's flows send again: they move to y or z and count there.
    for s in &flows {
        b.run(&ack_of(s), "an ACK after the change");
    }
    let z_now = flows
        .iter()
        .filter(|s| {
            b.dp.flow(&s.key())
                .is_some_and(|v| v.backend_id == zs.id && v.generation == zs.generation)
        })
        .count() as u64;
    assert!(z_now > 0, "no flow moved to z");
    recount(&mut b, &mut sweeper);
    assert_eq!(b.dp.active(zs.id).unwrap(), z_now);
    assert_eq!(b.dp.active(ys.id).unwrap(), 40 - z_now);
}
