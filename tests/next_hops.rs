//! Next hops resolved in userspace (`NEXT_HOPS`): the program forwards IPIP and FIB-routed
//! DSR backends from the slot the data plane wrote, not from `bpf_fib_lookup`, and the
//! slot follows the kernel's neighbour and route tables when the watcher reports a change:
//! a neighbour's new MAC, a route moved to another interface (and its MTU), a next hop that
//! is lost (the program falls back to the FIB, which drops it, and counts the fallback)
//! and found again. Each frame is compared byte for byte with the one built independently.
//!
//! Prints how long the watcher took to report each change and the refresh to rewrite the
//! slots (`next hops: ...`).

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use lb_common::{MODE_DSR, MODE_IPIP, NextHop, PROTO_TCP, hash::encap_hash, programs, reason};
use sluice_dataplane::{
    Dataplane, Desired, DesiredBackend, DesiredVip, Global, Sched, Sizes, VipIdent,
    nexthop::{Unresolved, Watcher},
};
use sluice_tests::{
    frames::{Encap, LB_MAC, SYN, Spec},
    netns::{Private, ifindex, run},
    require_root,
};

const XDP_DROP: u32 = 1;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;
const SEED: u32 = 0x5eed;
const VIP: &str = "10.99.0.10";
const CLIENT: &str = "192.0.2.7";
/// On `nh0`'s network, first with MAC `A`, then `A2`; later routed through `GW` on `nh2`.
const BACKEND: &str = "10.98.0.5";
/// A DSR backend without a configured MAC, on `nh0`'s network.
const DSR_BACKEND: &str = "10.98.0.6";
const GW: &str = "10.97.0.254";
const A: [u8; 6] = [2, 0, 0, 0, 0xa, 1];
const A2: [u8; 6] = [2, 0, 0, 0, 0xa, 2];
const D: [u8; 6] = [2, 0, 0, 0, 0xd, 1];
const G: [u8; 6] = [2, 0, 0, 0, 0x6, 1];
const NH2_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xbb];

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn vip(port: u16, mode: u8, backend: &str) -> DesiredVip {
    DesiredVip {
        ident: VipIdent {
            address: ip(VIP),
            port,
            proto: PROTO_TCP,
        },
        mode,
        scheduler: Sched::Maglev,
        table_size: 251,
        backends: vec![DesiredBackend {
            address: ip(backend),
            weight: 1,
            mac: None,
            serving: true,
            in_flight: None,
        }],
    }
}

/// The frame IPIP must send for `spec` to `BACKEND` through (`smac`, `dmac`).
fn encapsulated(spec: &Spec, smac: [u8; 6], dmac: [u8; 6]) -> Vec<u8> {
    let h = encap_hash(&spec.key(), SEED).to_be_bytes();
    Encap {
        src_mac: smac,
        dst_mac: dmac,
        vlan: None,
        src: IpAddr::from([172, 16, h[2], h[3]]),
        dst: ip(BACKEND),
        tos: 0,
        flow_label: 0,
    }
    .wrap(&spec.ip_packet())
}

/// Wait until the watcher has reported a change after `before` (its count moved), at most
/// 2 s; how long it took since `t0`.
fn reported(events: &AtomicU64, before: u64, t0: Instant) -> Duration {
    while events.load(Ordering::SeqCst) == before {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "the watcher reported nothing within 2 s"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    t0.elapsed()
}

#[test]
fn next_hops_follow_neighbour_and_route_changes() {
    require_root();
    let _ns = Private::enter().unwrap();
    for argv in [
        &[
            "ip",
            "link",
            "add",
            "nh0",
            "address",
            &mac(LB_MAC),
            "type",
            "veth",
            "peer",
            "name",
            "nh1",
        ][..],
        &[
            "ip",
            "link",
            "add",
            "nh2",
            "address",
            &mac(NH2_MAC),
            "mtu",
            "1400",
            "type",
            "veth",
            "peer",
            "name",
            "nh3",
        ],
        &["ip", "link", "set", "nh0", "up"],
        &["ip", "link", "set", "nh1", "up"],
        &["ip", "link", "set", "nh2", "up"],
        &["ip", "link", "set", "nh3", "up"],
        &["ip", "addr", "add", "10.98.0.1/24", "dev", "nh0"],
        &["ip", "addr", "add", "10.97.0.1/24", "dev", "nh2"],
        &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        &[
            "ip",
            "neigh",
            "replace",
            BACKEND,
            "lladdr",
            &mac(A),
            "dev",
            "nh0",
            "nud",
            "permanent",
        ],
        &[
            "ip",
            "neigh",
            "replace",
            DSR_BACKEND,
            "lladdr",
            &mac(D),
            "dev",
            "nh0",
            "nud",
            "permanent",
        ],
        &[
            "ip",
            "neigh",
            "replace",
            GW,
            "lladdr",
            &mac(G),
            "dev",
            "nh2",
            "nud",
            "permanent",
        ],
    ] {
        run(argv).unwrap();
    }
    let (nh0, nh2) = (ifindex("nh0").unwrap(), ifindex("nh2").unwrap());
    let mut dp = Dataplane::load(Sizes {
        flow_entries: 4096,
        table_slots: 4 * 251,
        ..Sizes::default()
    })
    .unwrap();
    let events = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&events);
    let _watcher = Watcher::spawn(move || {
        seen.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    let ipip = vip(80, MODE_IPIP, BACKEND);
    let dsr = vip(81, MODE_DSR, DSR_BACKEND);
    dp.publish(&Desired {
        global: Global {
            hash_seed: SEED,
            ..Global::default()
        },
        vips: vec![ipip.clone(), dsr.clone()],
    })
    .unwrap();
    let id = dp.layout().backend_id(&ipip.ident, ip(BACKEND)).unwrap();
    let dsr_id = dp.layout().backend_id(&dsr.ident, ip(DSR_BACKEND)).unwrap();
    let hop = |dmac, smac, ifindex, mtu| NextHop {
        dmac,
        smac,
        ifindex,
        mtu,
        _pad: [0; 2],
    };
    assert_eq!(dp.next_hop_entry(id).unwrap(), hop(A, LB_MAC, nh0, 1500));
    assert_eq!(
        dp.next_hop_entry(dsr_id).unwrap(),
        hop(D, LB_MAC, nh0, 1500)
    );

    // Every frame is a new flow of its own (distinct source ports).
    let mut port = 40000;
    let mut send = |dp: &mut Dataplane, vport: u16| {
        port += 1;
        let spec = Spec::tcp(CLIENT, port, VIP, vport, SYN).macs([2, 0, 0, 0, 0, 1], LB_MAC);
        let r = dp
            .run_frame(programs::BALANCER, &spec.build(), nh0)
            .unwrap();
        (spec, r)
    };

    // Resolved: forwarded from the slot, no FIB lookup.
    let (spec, r) = send(&mut dp, 80);
    assert_eq!(r.action, XDP_TX);
    assert_eq!(r.frame, encapsulated(&spec, LB_MAC, A));
    let (spec, r) = send(&mut dp, 81);
    assert_eq!(r.action, XDP_TX);
    assert_eq!(r.frame, spec.clone().macs(LB_MAC, D).build());
    assert_eq!(dp.fib_fallbacks().unwrap(), 0);

    // The neighbour changes its MAC. Until the refresh the slot still says A (what the FIB
    // would no longer say: the frames come from the slot).
    let before = events.load(Ordering::SeqCst);
    let t0 = Instant::now();
    run(&[
        "ip",
        "neigh",
        "replace",
        BACKEND,
        "lladdr",
        &mac(A2),
        "dev",
        "nh0",
        "nud",
        "permanent",
    ])
    .unwrap();
    let neigh_seen = reported(&events, before, t0);
    let (spec, r) = send(&mut dp, 80);
    assert_eq!(r.frame, encapsulated(&spec, LB_MAC, A));
    let t1 = Instant::now();
    assert_eq!(dp.refresh_next_hops().unwrap(), 1, "one slot changed");
    let refresh = t1.elapsed();
    assert_eq!(dp.next_hop_entry(id).unwrap(), hop(A2, LB_MAC, nh0, 1500));
    let (spec, r) = send(&mut dp, 80);
    assert_eq!(r.action, XDP_TX);
    assert_eq!(r.frame, encapsulated(&spec, LB_MAC, A2));

    // The route moves to another interface, through a gateway, with that interface's MTU:
    // redirected there, with its MAC and the gateway's.
    let before = events.load(Ordering::SeqCst);
    let t0 = Instant::now();
    run(&[
        "ip",
        "route",
        "replace",
        &format!("{BACKEND}/32"),
        "via",
        GW,
        "dev",
        "nh2",
    ])
    .unwrap();
    let route_seen = reported(&events, before, t0);
    assert_eq!(dp.refresh_next_hops().unwrap(), 1);
    assert_eq!(dp.next_hop_entry(id).unwrap(), hop(G, NH2_MAC, nh2, 1400));
    let (spec, r) = send(&mut dp, 80);
    assert_eq!(r.action, XDP_REDIRECT);
    assert_eq!(r.frame, encapsulated(&spec, NH2_MAC, G));
    // The DSR backend's route did not change.
    assert_eq!(
        dp.next_hop_entry(dsr_id).unwrap(),
        hop(D, LB_MAC, nh0, 1500)
    );

    // The gateway is lost: the slot is emptied, the program asks the FIB, which has no
    // neighbour either: dropped as before, and the fallback counted.
    run(&["ip", "neigh", "del", GW, "dev", "nh2"]).unwrap();
    assert_eq!(dp.refresh_next_hops().unwrap(), 1);
    assert_eq!(dp.next_hop_entry(id).unwrap().ifindex, 0);
    let status = dp.next_hops();
    let s = status.iter().find(|s| s.slot == id).unwrap();
    assert_eq!(
        s.resolution,
        Err(Unresolved::NoNeighbour {
            next_hop: ip(GW),
            interface: "nh2".into()
        })
    );
    let drops = dp.reason_counts().unwrap()[reason::DROP_NO_NEIGH as usize];
    let (_, r) = send(&mut dp, 80);
    assert_eq!(r.action, XDP_DROP);
    assert_eq!(
        dp.reason_counts().unwrap()[reason::DROP_NO_NEIGH as usize],
        drops + 1
    );
    assert_eq!(dp.fib_fallbacks().unwrap(), 1);

    // Found again.
    run(&[
        "ip",
        "neigh",
        "replace",
        GW,
        "lladdr",
        &mac(G),
        "dev",
        "nh2",
        "nud",
        "permanent",
    ])
    .unwrap();
    assert_eq!(dp.refresh_next_hops().unwrap(), 1);
    let (spec, r) = send(&mut dp, 80);
    assert_eq!(r.frame, encapsulated(&spec, NH2_MAC, G));
    assert_eq!(dp.fib_fallbacks().unwrap(), 1);
    println!(
        "next hops: neighbour change reported in {} µs, route change in {} µs; a refresh of 2 slots took {} µs",
        neigh_seen.as_micros(),
        route_seen.as_micros(),
        refresh.as_micros()
    );
}

/// The daemon follows a neighbour change at once: in an IPIP lab, the LB's neighbour
/// entry of a backend's next hop is replaced by a wrong MAC, then restored; each time the
/// backend's next hop (as `sluice backend list` shows it) follows within a bound, and
/// after the restore every connection works again.
#[test]
fn the_daemon_rewrites_a_next_hop_when_its_neighbour_changes() {
    use sluice_core::config::Forwarding;
    use sluice_lab::lab::{self, Lab, LabSpec, Weights, daemon::Daemon};

    require_root();
    let prefix = format!("sl-nh-{}", std::process::id() % 100_000);
    let lab = Lab::up(LabSpec::new(&prefix).backends(2).mode(Forwarding::Ipip))
        .expect("bring the lab up");
    let d =
        Daemon::start(&lab, lab.daemon_config(&Weights::Equal).unwrap()).expect("start the daemon");
    let vip4 = lab.vips()[0];
    let backend = lab.backend(0).addr4();
    // The backend's next hop as the LB's kernel resolves it: `ip route get`.
    let route = lab
        .lb()
        .exec(&["ip", "-o", "route", "get", &backend.to_string()])
        .unwrap();
    let words: Vec<&str> = route.split_whitespace().collect();
    let after = |w: &str| {
        words
            .iter()
            .skip_while(|x| **x != w)
            .nth(1)
            .map(|s| s.to_string())
    };
    let via = after("via").unwrap_or_else(|| backend.to_string());
    let dev = after("dev").expect("a device");
    // Its MAC in the LB's neighbour table, if it has one yet.
    let lladdr = || {
        let n = lab
            .lb()
            .exec(&["ip", "neigh", "show", &via, "dev", &dev])
            .unwrap();
        n.split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .map(str::to_owned)
    };
    let real = lladdr();
    // The next hop `backend list` shows for backend 0 of the IPv4 VIP.
    let shown = || -> Option<String> {
        let s = d.status()?;
        let v = s
            .vips
            .iter()
            .find(|v| v.vip.starts_with(&vip4.to_string()))?;
        let b = v
            .backends
            .iter()
            .find(|b| b.address == IpAddr::V4(backend))?;
        b.next_hop.as_ref().map(|h| h.detail.clone())
    };
    let wait_for = |want: &str| -> Duration {
        let t0 = Instant::now();
        loop {
            if shown().is_some_and(|s| s.contains(want)) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "backend list never showed {want}: {:?}",
                shown()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let real = real.unwrap_or_else(|| {
        // Not resolved yet: the daemon primes it; wait for the entry.
        std::thread::sleep(Duration::from_secs(1));
        lladdr().expect("the next hop resolved")
    });
    wait_for(&real);
    let bogus = "02:de:ad:be:ef:01";
    lab.lb()
        .exec(&[
            "ip",
            "neigh",
            "replace",
            &via,
            "lladdr",
            bogus,
            "dev",
            &dev,
            "nud",
            "permanent",
        ])
        .unwrap();
    let to_bogus = wait_for(bogus);
    lab.lb()
        .exec(&[
            "ip",
            "neigh",
            "replace",
            &via,
            "lladdr",
            &real,
            "dev",
            &dev,
            "nud",
            "reachable",
        ])
        .unwrap();
    let back = wait_for(&real);
    // Status snapshots are taken once a second: the bound includes that.
    println!(
        "next hop of {backend} via {via} on {dev}: wrong MAC shown after {} ms, the real one again after {} ms",
        to_bogus.as_millis(),
        back.as_millis()
    );
    // Every connection works again (both backends answer).
    let answers = sluice_lab::conn::connections(
        lab.client(0),
        std::net::SocketAddr::new(vip4, lab::TCP_PORT),
        20,
    )
    .expect("connections after the restore");
    assert_eq!(answers.len(), 2, "both backends answered: {answers:?}");
    drop(d);
    lab.down().expect("take the lab down");
}
