//! The packet fuzzer: frames through the real balancer (`BPF_PROG_TEST_RUN` on the loaded
//! program) with a published configuration of several VIPs (IPv4 and IPv6, TCP and UDP,
//! port 0, DSR and IPIP, each scheduler, a VIP without backends, a backend without a
//! route), each frame checked against the data plane's invariants:
//!
//! - never `XDP_ABORTED` (nor any other unknown action);
//! - exactly one reason counter moves, by one, over the global `REASONS` and the per-VIP
//!   `VIP_REASONS` together, and it agrees with the verdict (a pass reason with
//!   `XDP_PASS`, a drop reason with `XDP_DROP`, a forward reason with
//!   `XDP_TX`/`XDP_REDIRECT`); a reason that implies a VIP (forwarded, dropped for a VIP)
//!   is counted in that VIP's row, the others (passed) in the global map;
//! - `XDP_PASS` leaves the frame byte-identical;
//! - a frame not addressed to a VIP address is never forwarded;
//! - DSR changes only the MAC addresses, to a backend of that VIP address;
//! - IPIP adds a correct outer header (version, lengths, protocol, TTL, checksum, a
//!   backend of that VIP address as destination) and leaves the inner packet unchanged
//!   (but for a SYN's clamped MSS option and its checksum, counted `fwd_mss_clamped`);
//! - an ICMP too-big answer goes back to the frame's source, from the VIP.
//!
//! Frames: random bytes of every length, and valid frames (TCP with every flag mix, UDP,
//! VLAN tags, IPv4 options, ICMP errors quoting a flow, sizes up to past the MTU) mutated at
//! every layer (bit flips, truncation, length and header-length fields, fragments, stacked
//! VLANs, IPv6 extension headers, TCP data offsets). Deterministic for a seed: a failing
//! frame is printed in hex with the seed and its index.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::Context as _;
use lb_common::{MODE_DSR, MODE_IPIP, PROTO_TCP, PROTO_UDP, programs, reason};
use sluice_core::config::format_mac as mac;
use sluice_dataplane::{
    Dataplane, Desired, DesiredBackend, DesiredVip, Global, Sched, Sizes, VipIdent,
};

use sluice_lab::llm::loadgen::SplitMix64;

use crate::{
    frames::{LB_MAC, Spec},
    netns,
};

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

/// The VIP addresses: DSR (v4, v6), IPIP (v4, v6), one without backends, one whose only
/// backend has no route.
const DSR4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
const IPIP4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 11);
const EMPTY4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 12);
const NOROUTE4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 13);
const DSR6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 0x10);
const IPIP6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 0x11);
/// Not a VIP, on the same networks (a frame for it must never be forwarded).
const OTHER4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 99);
const OTHER6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 0x99);
const UNROUTED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
/// The MAC of the second interface (`fz2`), behind which two IPv6 backends are.
const SECOND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbb];

fn backend4(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 99, 1, i))
}

fn backend6(i: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 1, i))
}

/// The MAC of a backend's neighbour entry (and of its configured MAC, where it has one).
pub fn mac_of(a: IpAddr) -> [u8; 6] {
    let (fam, last) = match a {
        IpAddr::V4(x) => (4, x.octets()[3]),
        IpAddr::V6(x) => (6, x.octets()[15]),
    };
    [0x02, 0, 0, fam, 1, last]
}

/// The frame generator's randomness (the lab's SplitMix64), and the last flows sent (ICMP
/// errors quote them, so some find their flow).
#[derive(Clone, Debug)]
pub struct Rng(SplitMix64, Vec<Spec>);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed), Vec::new())
    }

    fn remember(&mut self, spec: &Spec) {
        if self.1.len() < 64 {
            self.1.push(spec.clone());
        } else {
            let i = self.below(64) as usize;
            self.1[i] = spec.clone();
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

/// The fuzzer's configuration: what is published and what each VIP address may do.
pub struct Setup {
    pub desired: Desired,
    /// Per VIP address: its forwarding mode and the backends its VIPs have.
    pub vips: BTreeMap<IpAddr, (u8, BTreeSet<IpAddr>)>,
    /// Every VIP as (address, port, protocol), for the frame generator.
    pub idents: Vec<VipIdent>,
}

fn vip(
    addr: IpAddr,
    port: u16,
    proto: u8,
    mode: u8,
    scheduler: Sched,
    backends: &[(IpAddr, bool)],
) -> DesiredVip {
    DesiredVip {
        ident: VipIdent {
            address: addr,
            port,
            proto,
        },
        mode,
        scheduler,
        table_size: 251,
        backends: backends
            .iter()
            .map(|(a, with_mac)| DesiredBackend {
                address: *a,
                weight: 1 + u32::from(a.is_ipv4()),
                mac: with_mac.then(|| mac_of(*a)),
                serving: true,
                in_flight: None,
            })
            .collect(),
    }
}

pub fn setup() -> Setup {
    let v4 = |a: Ipv4Addr| IpAddr::V4(a);
    let v6 = |a: Ipv6Addr| IpAddr::V6(a);
    let vips = vec![
        vip(
            v4(DSR4),
            80,
            PROTO_TCP,
            MODE_DSR,
            Sched::Maglev,
            &[(backend4(1), true), (backend4(2), true)],
        ),
        vip(
            v4(DSR4),
            53,
            PROTO_UDP,
            MODE_DSR,
            Sched::RoundRobin,
            &[(backend4(3), false)],
        ),
        vip(
            v4(DSR4),
            0,
            PROTO_TCP,
            MODE_DSR,
            Sched::WeightedLeastConn,
            &[(backend4(4), true), (backend4(1), false)],
        ),
        vip(
            v4(IPIP4),
            443,
            PROTO_TCP,
            MODE_IPIP,
            Sched::LeastConn,
            &[(backend4(1), false), (backend4(2), false)],
        ),
        vip(
            v4(IPIP4),
            0,
            PROTO_UDP,
            MODE_IPIP,
            Sched::SourceHash,
            &[(backend4(3), false)],
        ),
        vip(
            v6(DSR6),
            80,
            PROTO_TCP,
            MODE_DSR,
            Sched::WeightedRoundRobin,
            &[(backend6(1), false), (backend6(2), false)],
        ),
        vip(
            v6(IPIP6),
            443,
            PROTO_TCP,
            MODE_IPIP,
            Sched::Maglev,
            &[(backend6(3), false)],
        ),
        vip(
            v6(IPIP6),
            0,
            PROTO_UDP,
            MODE_IPIP,
            Sched::RoundRobin,
            &[(backend6(4), false)],
        ),
        vip(v4(EMPTY4), 80, PROTO_TCP, MODE_DSR, Sched::Maglev, &[]),
        vip(
            v4(NOROUTE4),
            80,
            PROTO_TCP,
            MODE_IPIP,
            Sched::Maglev,
            &[(IpAddr::V4(UNROUTED), false)],
        ),
    ];
    let mut by_addr: BTreeMap<IpAddr, (u8, BTreeSet<IpAddr>)> = BTreeMap::new();
    for v in &vips {
        let e = by_addr
            .entry(v.ident.address)
            .or_insert_with(|| (v.mode, BTreeSet::new()));
        assert_eq!(e.0, v.mode, "one forwarding mode per fuzzed VIP address");
        e.1.extend(v.backends.iter().map(|b| b.address));
    }
    Setup {
        idents: vips.iter().map(|v| v.ident).collect(),
        vips: by_addr,
        desired: Desired {
            global: Global {
                hash_seed: 0x5eed,
                icmp_too_big_per_sec: 1_000_000,
                ..Global::default()
            },
            vips,
        },
    }
}

/// The fuzz network in the calling thread's (private) namespace: `fz0` (the LB, MAC
/// `LB_MAC`, MTU 1500) with the backends' networks and their neighbour entries.
pub fn network() -> anyhow::Result<u32> {
    let lb = mac(&LB_MAC);
    let second = mac(&SECOND_MAC);
    for argv in [
        &[
            "ip", "link", "add", "fz0", "address", &lb, "mtu", "1500", "type", "veth", "peer",
            "name", "fz1",
        ][..],
        &[
            "ip", "link", "add", "fz2", "address", &second, "mtu", "1500", "type", "veth", "peer",
            "name", "fz3",
        ],
        &["ip", "link", "set", "fz2", "up"],
        &["ip", "link", "set", "fz3", "up"],
        &["ip", "link", "set", "fz0", "up"],
        &["ip", "link", "set", "fz1", "up"],
        &["ip", "addr", "add", "10.99.0.1/16", "dev", "fz0"],
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "fd99::1/64",
            "dev",
            "fz0",
            "nodad",
        ],
        &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
    ] {
        netns::run(argv)?;
    }
    // The IPv6 IPIP backends are behind the second interface (redirected there).
    for i in [3, 4] {
        let a = backend6(i).to_string();
        netns::run(&[
            "ip",
            "-6",
            "route",
            "add",
            &format!("{a}/128"),
            "dev",
            "fz2",
        ])?;
    }
    for a in (1..=4).map(backend4).chain((1..=4).map(backend6)) {
        let dev = if [backend6(3), backend6(4)].contains(&a) {
            "fz2"
        } else {
            "fz0"
        };
        netns::run(&[
            "ip",
            "neigh",
            "replace",
            &a.to_string(),
            "lladdr",
            &mac(&mac_of(a)),
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
    }
    netns::ifindex("fz0")
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub frames: u64,
    pub seed: u64,
    /// Frames per verdict (`XDP_DROP`, `XDP_PASS`, `XDP_TX`, `XDP_REDIRECT`).
    pub actions: BTreeMap<&'static str, u64>,
    /// Frames per reason counter.
    pub reasons: BTreeMap<&'static str, u64>,
    /// Frames counted in a VIP's row of `VIP_REASONS` (the rest: in `REASONS`).
    pub per_vip: u64,
    pub violations: u64,
    /// The first violations, each with its frame in hex.
    pub examples: Vec<String>,
}

/// Run `frames` frames from `seed` through the balancer, in the calling thread's network
/// namespace (which [`network`] prepared).
pub fn run(frames: u64, seed: u64, ifindex: u32) -> anyhow::Result<Report> {
    let setup = setup();
    let mut dp = Dataplane::load(Sizes {
        flow_entries: 65536,
        table_slots: 16384,
        ..Sizes::default()
    })
    .context("loading the balancer")?;
    dp.publish(&setup.desired)
        .context("publishing the fuzz configuration")?;
    let mut rng = Rng::new(seed);
    let mut report = Report {
        seed,
        ..Report::default()
    };
    let mut before = all_reasons(&dp)?;
    for i in 0..frames {
        let frame = make_frame(&mut rng, &setup);
        let r = dp.run_frame(programs::BALANCER, &frame, ifindex)?;
        let after = all_reasons(&dp)?;
        let moved: Vec<(usize, u64)> = after
            .iter()
            .zip(&before)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(k, (a, b))| (k, a - b))
            .collect();
        before = after;
        report.frames += 1;
        *report.actions.entry(action_name(r.action)).or_default() += 1;
        if let [(k, 1)] = moved.as_slice() {
            *report
                .reasons
                .entry(reason::NAMES[*k % reason::COUNT as usize])
                .or_default() += 1;
            report.per_vip += u64::from(*k >= reason::COUNT as usize);
        }
        if let Err(why) = check(&setup, &frame, r.action, &r.frame, &moved) {
            report.violations += 1;
            if report.examples.len() < 10 {
                report.examples.push(format!(
                    "seed {seed} frame {i}: {why}\n  in  {}\n  out {}",
                    hex(&frame),
                    hex(&r.frame)
                ));
            }
        }
    }
    Ok(report)
}

/// Every reason counter: the global ones (`REASONS`, slots `0..COUNT`), then each VIP
/// id's row (`VIP_REASONS`, slot `(vip_id + 1) * COUNT + code`).
fn all_reasons(dp: &Dataplane) -> anyhow::Result<Vec<u64>> {
    let (global, per_vip) = dp.reason_counts_split()?;
    Ok(global
        .into_iter()
        .chain(per_vip.into_iter().flatten())
        .collect())
}

/// Whether a reason is only ever counted for a VIP (its packet matched one): forwarded,
/// answered, or dropped for a VIP. The rest (passed, decapsulated) have no VIP;
/// `drop_internal` may have either.
fn implies_vip(code: u32) -> Option<bool> {
    match code {
        reason::DROP_INTERNAL => None,
        reason::FWD_TX
        | reason::FWD_REDIRECT
        | reason::FWD_MSS_CLAMPED
        | reason::FWD_ICMP
        | reason::ICMP_TOO_BIG => Some(true),
        c => Some(reason::is_drop(c)),
    }
}

fn action_name(a: u32) -> &'static str {
    match a {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "other",
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One frame: random bytes (a tenth), else a valid frame, mutated in half the cases.
pub fn make_frame(rng: &mut Rng, setup: &Setup) -> Vec<u8> {
    if rng.chance(10) {
        let len = 14 + rng.below(200) as usize;
        let mut f: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        // Now and then an IP ethertype, so the parser goes further in.
        if rng.chance(50) {
            let t: [u8; 2] = if rng.chance(50) { [8, 0] } else { [0x86, 0xdd] };
            f[12..14].copy_from_slice(&t);
        }
        return f;
    }
    let mut f = valid_frame(rng, setup);
    if rng.chance(50) {
        mutate(rng, &mut f);
    }
    if f.len() < 14 {
        f.resize(14, 0);
    }
    f
}

fn client(rng: &mut Rng, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            rng.below(4) as u16,
            rng.next_u64() as u16,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, rng.byte()))
    }
}

/// A well-formed frame toward a VIP (mostly) or another address.
fn valid_frame(rng: &mut Rng, setup: &Setup) -> Vec<u8> {
    let ident = setup.idents[rng.below(setup.idents.len() as u64) as usize];
    let v6 = ident.address.is_ipv6();
    let dst = if rng.chance(10) {
        if v6 {
            IpAddr::V6(OTHER6)
        } else {
            IpAddr::V4(OTHER4)
        }
    } else {
        ident.address
    };
    let src = client(rng, v6);
    let sport = 1024 + rng.below(64) as u16;
    let dport = match ident.port {
        0 => rng.next_u64() as u16,
        p if rng.chance(90) => p,
        _ => rng.next_u64() as u16,
    };
    let proto = if rng.chance(90) {
        ident.proto
    } else if ident.proto == PROTO_TCP {
        PROTO_UDP
    } else {
        PROTO_TCP
    };
    let (s, d) = (src.to_string(), dst.to_string());
    let mut spec = if proto == PROTO_TCP {
        const FLAGS: [u8; 8] = [0x02, 0x10, 0x18, 0x11, 0x04, 0x12, 0x14, 0x01];
        let flags = if rng.chance(80) {
            FLAGS[rng.below(FLAGS.len() as u64) as usize]
        } else {
            rng.byte()
        };
        Spec::tcp(&s, sport, &d, dport, flags)
    } else {
        Spec::udp(&s, sport, &d, dport)
    };
    // Sizes: mostly small, some near and past the MTU (too-big answers, MSS clamps).
    let len = match rng.below(10) {
        0..=5 => rng.below(64),
        6..=7 => rng.below(1400),
        _ => 1400 + rng.below(200),
    } as usize;
    spec.payload = (0..len).map(|_| rng.byte()).collect();
    if proto == PROTO_TCP && rng.chance(30) {
        // MSS first (sometimes large, for the clamp), then NOPs.
        let mss = [1460u16, 8960, 536, rng.next_u64() as u16][rng.below(4) as usize];
        let m = mss.to_be_bytes();
        spec = spec.tcp_options(&[2, 4, m[0], m[1], 1, 1, 1, 0]);
    }
    if !v6 && rng.chance(15) {
        let words = 1 + rng.below(10) as usize;
        let mut opts = vec![1u8; words * 4];
        opts[words * 4 - 1] = 0;
        spec = spec.options(&opts);
    }
    if rng.chance(10) {
        spec = spec.vlan(rng.below(4095) as u16 + 1);
    }
    if rng.chance(3) {
        // Broadcast, IPv4 or IPv6 multicast: never forwarded.
        const GROUPS: [[u8; 6]; 3] = [
            [0xff; 6],
            [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01],
            [0x33, 0x33, 0x00, 0x00, 0x00, 0x01],
        ];
        let group = GROUPS[rng.below(GROUPS.len() as u64) as usize];
        spec.dst_mac = group;
    }
    if !v6 && rng.chance(10) {
        spec = spec.no_df();
    }
    spec.trailer = if rng.chance(10) {
        rng.below(20) as usize
    } else {
        0
    };
    if rng.chance(10) {
        // Mostly about a flow sent before (which then has a backend), else this one.
        let flow = if rng.chance(70) && !rng.1.is_empty() {
            let n = rng.1.len() as u64;
            let i = rng.below(n) as usize;
            rng.1[i].clone()
        } else {
            spec
        };
        return icmp_error(rng, &flow);
    }
    rng.remember(&spec);
    spec.build()
}

/// An ICMP error (fragmentation needed / packet too big, port unreachable) from a router
/// to the VIP, quoting what the backend sent the client of `flow`.
fn icmp_error(rng: &mut Rng, flow: &Spec) -> Vec<u8> {
    let mut reply = flow.clone();
    std::mem::swap(&mut reply.src, &mut reply.dst);
    reply.l4 = match flow.l4 {
        crate::frames::L4::Tcp { sport, dport, .. } => crate::frames::L4::Tcp {
            sport: dport,
            dport: sport,
            flags: 0x12,
        },
        crate::frames::L4::Udp { sport, dport } => crate::frames::L4::Udp {
            sport: dport,
            dport: sport,
        },
    };
    reply.payload.truncate(rng.below(64) as usize);
    let quoted = reply.ip_packet();
    let n = match rng.below(4) {
        0 => quoted.len(),
        1 => 28.min(quoted.len()),
        _ => rng.below(quoted.len() as u64 + 1) as usize,
    };
    let quote = &quoted[..n];
    let mut body = Vec::new();
    let (ether, ip) = match (flow.src, flow.dst) {
        (IpAddr::V4(_), IpAddr::V4(vip)) => {
            let (t, c) = if rng.chance(50) { (3, 4) } else { (3, 3) };
            body.extend_from_slice(&[t, c, 0, 0, 0, 0, 0x05, 0xc8]);
            body.extend_from_slice(quote);
            let ck = inet_csum(&body);
            body[2..4].copy_from_slice(&ck);
            let mut h = etherparse::Ipv4Header::new(
                body.len() as u16,
                64,
                etherparse::IpNumber::ICMP,
                [203, 0, 113, 1],
                vip.octets(),
            )
            .expect("header");
            h.header_checksum = h.calc_header_checksum();
            let mut ip = h.to_bytes().to_vec();
            ip.extend_from_slice(&body);
            (0x0800u16, ip)
        }
        (IpAddr::V6(_), IpAddr::V6(vip)) => {
            let (t, c) = if rng.chance(50) { (2, 0) } else { (1, 4) };
            body.extend_from_slice(&[t, c, 0, 0, 0, 0, 0x05, 0x00]);
            body.extend_from_slice(quote);
            let src = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
            // ICMPv6 checksum over the pseudo-header.
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&vip.octets());
            pseudo.extend_from_slice(&(body.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 58]);
            pseudo.extend_from_slice(&body);
            let ck = inet_csum(&pseudo);
            body[2..4].copy_from_slice(&ck);
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(body.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[58, 64]);
            ip.extend_from_slice(&src.octets());
            ip.extend_from_slice(&vip.octets());
            ip.extend_from_slice(&body);
            (0x86ddu16, ip)
        }
        _ => unreachable!("a flow is of one family"),
    };
    let mut f = Vec::new();
    f.extend_from_slice(&flow.dst_mac);
    f.extend_from_slice(&flow.src_mac);
    f.extend_from_slice(&ether.to_be_bytes());
    f.extend_from_slice(&ip);
    f
}

fn inet_csum(b: &[u8]) -> [u8; 2] {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!(sum as u16)).to_be_bytes()
}

/// Where the IP header of a frame starts (behind one VLAN tag at most), if the frame says
/// it is IP.
fn l3_of(f: &[u8]) -> Option<(usize, u16)> {
    let t = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    match t {
        0x0800 | 0x86dd => Some((14, t)),
        0x8100 | 0x88a8 => {
            let inner = u16::from_be_bytes([*f.get(16)?, *f.get(17)?]);
            matches!(inner, 0x0800 | 0x86dd).then_some((18, inner))
        }
        _ => None,
    }
}

/// The L3 offset, ethertype, source and destination of an IP frame.
fn ip_of(f: &[u8]) -> Option<(usize, u16, IpAddr, IpAddr)> {
    let (l3, t) = l3_of(f)?;
    if t == 0x0800 {
        let h = f.get(l3..l3 + 20)?;
        let s = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
        let d = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
        Some((l3, t, IpAddr::V4(s), IpAddr::V4(d)))
    } else {
        let h = f.get(l3..l3 + 40)?;
        let s: [u8; 16] = h[8..24].try_into().ok()?;
        let d: [u8; 16] = h[24..40].try_into().ok()?;
        Some((l3, t, IpAddr::V6(s.into()), IpAddr::V6(d.into())))
    }
}

/// Bit flips, truncation, length fields, fragments, VLAN stacks, IPv6 extension headers,
/// TCP data offsets: one or two of them.
pub fn mutate(rng: &mut Rng, f: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(2) {
        let ip = l3_of(f);
        match rng.below(9) {
            0 => {
                let n = 1 + rng.below(4);
                for _ in 0..n {
                    let i = rng.below(f.len() as u64) as usize;
                    f[i] ^= 1 << rng.below(8);
                }
            }
            1 => {
                let at = 14 + rng.below(f.len().saturating_sub(13) as u64) as usize;
                f.truncate(at);
            }
            2 => {
                // A length field: IPv4 total length / IHL, IPv6 payload length.
                if let Some((l3, t)) = ip
                    && f.len() > l3 + 6
                {
                    if t == 0x0800 {
                        if rng.chance(50) {
                            f[l3 + 2] = rng.byte();
                            f[l3 + 3] = rng.byte();
                        } else {
                            f[l3] = 0x40 | (rng.byte() & 0x0f);
                        }
                    } else {
                        f[l3 + 4] = rng.byte();
                        f[l3 + 5] = rng.byte();
                    }
                }
            }
            3 => {
                // IPv4 fragments.
                if let Some((l3, 0x0800)) = ip
                    && f.len() > l3 + 8
                {
                    f[l3 + 6] = (rng.byte() & 0x3f) | (0x20 * u8::from(rng.chance(50)));
                    f[l3 + 7] = rng.byte();
                }
            }
            4 => {
                // Another VLAN tag in front (stacked tags), 802.1Q or 802.1ad.
                let tpid: [u8; 2] = if rng.chance(50) {
                    [0x81, 0]
                } else {
                    [0x88, 0xa8]
                };
                let tag = [tpid[0], tpid[1], rng.byte() & 0x0f, rng.byte()];
                f.splice(12..12, tag);
            }
            5 => {
                // IPv6: an extension header (or another protocol) as next header.
                if let Some((l3, 0x86dd)) = ip
                    && f.len() > l3 + 6
                {
                    const NEXT: [u8; 8] = [0, 43, 44, 60, 50, 51, 47, 135];
                    f[l3 + 6] = NEXT[rng.below(8) as usize];
                }
            }
            6 => {
                // The TCP data offset / UDP length (the L4 header follows the IP header).
                if let Some((l3, t)) = ip {
                    let l4 = if t == 0x0800 {
                        l3 + usize::from(f.get(l3).map_or(5, |b| b & 0x0f)) * 4
                    } else {
                        l3 + 40
                    };
                    if f.len() > l4 + 13 {
                        if rng.chance(50) {
                            f[l4 + 12] = rng.byte();
                        } else {
                            f[l4 + 4] = rng.byte();
                            f[l4 + 5] = rng.byte();
                        }
                    }
                }
            }
            7 => {
                // The IP protocol / version.
                if let Some((l3, t)) = ip
                    && f.len() > l3 + 9
                {
                    if t == 0x0800 {
                        f[l3 + 9] = [1, 6, 17, 47, 58, 132][rng.below(6) as usize];
                    } else {
                        f[l3] = rng.byte();
                    }
                }
            }
            _ => {
                // Random bytes appended (trailers) or a random byte anywhere.
                if rng.chance(50) {
                    for _ in 0..rng.below(32) {
                        f.push(rng.byte());
                    }
                } else {
                    let i = rng.below(f.len() as u64) as usize;
                    f[i] = rng.byte();
                }
            }
        }
    }
}

/// Check one frame's outcome (see the module documentation).
pub fn check(
    setup: &Setup,
    input: &[u8],
    action: u32,
    output: &[u8],
    moved: &[(usize, u64)],
) -> Result<(), String> {
    let count = reason::COUNT as usize;
    let [(slot, 1)] = moved else {
        return Err(format!(
            "{} reason counters moved, want exactly one by one: {:?}",
            moved.len(),
            moved
                .iter()
                .map(|(k, n)| format!("{}/{}+{n}", k / count, reason::NAMES[k % count]))
                .collect::<Vec<_>>()
        ));
    };
    let code = (slot % count) as u32;
    let name = reason::NAMES[code as usize];
    let per_vip = *slot >= count;
    if implies_vip(code).is_some_and(|v| v != per_vip) {
        return Err(format!(
            "{name} counted {}",
            if per_vip {
                "for a VIP"
            } else {
                "without its VIP"
            }
        ));
    }
    if per_vip && !ip_of(input).is_some_and(|(_, _, _, dst)| setup.vips.contains_key(&dst)) {
        return Err(format!(
            "{name} counted for a VIP, for a frame not sent to one"
        ));
    }
    let fwd = matches!(
        code,
        reason::FWD_TX | reason::FWD_REDIRECT | reason::FWD_MSS_CLAMPED | reason::FWD_ICMP
    );
    let want = if code == reason::ICMP_TOO_BIG {
        &[XDP_TX][..]
    } else if fwd {
        &[XDP_TX, XDP_REDIRECT][..]
    } else if reason::is_drop(code) {
        &[XDP_DROP][..]
    } else {
        &[XDP_PASS][..]
    };
    if !want.contains(&action) {
        return Err(format!("{} with reason {name}", action_name(action)));
    }
    if action == XDP_PASS {
        return if output == input {
            Ok(())
        } else {
            Err("XDP_PASS changed the frame".into())
        };
    }
    if action == XDP_DROP {
        return Ok(());
    }
    let Some((l3, _, src, dst)) = ip_of(input) else {
        return Err(format!("forwarded ({name}) a frame that is not IP"));
    };
    if input[0] & 1 != 0 {
        return Err(format!(
            "forwarded ({name}) a frame addressed to the group MAC {}",
            hex(&input[..6])
        ));
    }
    let Some((mode, backends)) = setup.vips.get(&dst) else {
        return Err(format!(
            "forwarded ({name}) a frame for {dst}, not a VIP address"
        ));
    };
    if code == reason::ICMP_TOO_BIG {
        let Some((_, _, osrc, odst)) = ip_of(output) else {
            return Err("the ICMP too-big answer is not IP".into());
        };
        return if osrc == dst && odst == src {
            Ok(())
        } else {
            Err(format!(
                "ICMP too-big answer {osrc} → {odst}, want {dst} → {src}"
            ))
        };
    }
    let macs: BTreeSet<[u8; 6]> = backends.iter().map(|b| mac_of(*b)).collect();
    let dmac: [u8; 6] = output[..6].try_into().map_err(|_| "output too short")?;
    if !macs.contains(&dmac) {
        return Err(format!(
            "sent to MAC {}, not a backend of {dst}",
            hex(&dmac)
        ));
    }
    // The egress interface's MAC; DSR to a configured MAC keeps the frame's own
    // destination MAC as the source (the program does not know its interface's MAC), so
    // a unicast frame addressed to another host's MAC (seen in promiscuous mode) leaves
    // with that one. Group-addressed frames are never forwarded (checked above).
    let egress = if action == XDP_REDIRECT {
        SECOND_MAC
    } else {
        LB_MAC
    };
    if output[6..12] != egress && !(*mode == MODE_DSR && output[6..12] == input[..6]) {
        return Err(format!(
            "source MAC {}, not the egress interface's",
            hex(&output[6..12])
        ));
    }
    match *mode {
        MODE_DSR => {
            if output.len() != input.len() || output[12..] != input[12..] {
                return Err("DSR changed more than the MAC addresses".into());
            }
            Ok(())
        }
        MODE_IPIP => check_ipip(input, l3, output, backends, code == reason::FWD_MSS_CLAMPED),
        m => Err(format!("unknown mode {m}")),
    }
}

fn check_ipip(
    input: &[u8],
    l3: usize,
    output: &[u8],
    backends: &BTreeSet<IpAddr>,
    clamped: bool,
) -> Result<(), String> {
    let inner = &input[l3..];
    let v4 = inner.first().is_some_and(|b| b >> 4 == 4);
    let outer = if v4 { 20 } else { 40 };
    if output.len() != input.len() + outer {
        return Err(format!(
            "IPIP output of {} bytes for {} in",
            output.len(),
            input.len()
        ));
    }
    // The L2 header keeps the VLAN tag (if any) and announces the outer family.
    if output[12..l3 - 2] != input[12..l3 - 2] {
        return Err("the VLAN tag changed".into());
    }
    let ether = if v4 { [8, 0] } else { [0x86, 0xdd] };
    if output[l3 - 2..l3] != ether {
        return Err("wrong outer ethertype".into());
    }
    let o = &output[l3..l3 + outer];
    let declared = if v4 {
        usize::from(u16::from_be_bytes([inner[2], inner[3]]))
    } else {
        40 + usize::from(u16::from_be_bytes([inner[4], inner[5]]))
    };
    let dst = if v4 {
        let ok = o[0] == 0x45
            && usize::from(u16::from_be_bytes([o[2], o[3]])) == declared + 20
            && o[8] == 64
            && o[9] == 4
            && inet_csum(o) == [0, 0]
            && o[4..6] == inner[4..6];
        if !ok {
            return Err(format!("bad outer IPv4 header {}", hex(o)));
        }
        IpAddr::V4(Ipv4Addr::new(o[16], o[17], o[18], o[19]))
    } else {
        let ok = o[0] >> 4 == 6
            && usize::from(u16::from_be_bytes([o[4], o[5]])) == declared
            && o[6] == 41
            && o[7] == 64;
        if !ok {
            return Err(format!("bad outer IPv6 header {}", hex(o)));
        }
        let d: [u8; 16] = o[24..40].try_into().map_err(|_| "short")?;
        IpAddr::V6(d.into())
    };
    if !backends.contains(&dst) {
        return Err(format!("encapsulated to {dst}, not a backend of the VIP"));
    }
    let got = &output[l3 + outer..];
    if got != inner {
        // A clamped SYN: only the TCP header (MSS option, checksum) may differ.
        let hl = if v4 {
            usize::from(inner[0] & 0x0f) * 4
        } else {
            40
        };
        let differ = got
            .iter()
            .zip(inner)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i)
            .collect::<Vec<_>>();
        let in_tcp = differ.iter().all(|i| (hl..hl + 60).contains(i));
        if !(clamped && in_tcp) {
            return Err(format!("the inner packet changed at {differ:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::CLIENT_MAC;

    #[test]
    fn the_generator_is_deterministic_and_varied() {
        let s = setup();
        let a: Vec<Vec<u8>> = {
            let mut r = Rng::new(7);
            (0..200).map(|_| make_frame(&mut r, &s)).collect()
        };
        let b: Vec<Vec<u8>> = {
            let mut r = Rng::new(7);
            (0..200).map(|_| make_frame(&mut r, &s)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().all(|f| f.len() >= 14));
        let lens: BTreeSet<usize> = a.iter().map(Vec::len).collect();
        assert!(lens.len() > 50, "{} distinct lengths", lens.len());
    }

    #[test]
    fn the_checker_catches_what_it_must() {
        let s = setup();
        let spec = Spec::tcp("192.0.2.1", 1111, "10.99.0.10", 80, 0x10);
        let f = spec.build();
        // Counted in a VIP's row (`VIP_REASONS`, slot `(vip_id + 1) * COUNT + code`).
        let count = reason::COUNT as usize;
        let tx = [(count + reason::FWD_TX as usize, 1)];
        // DSR to a backend of that VIP: fine.
        let ok = spec.clone().macs(LB_MAC, mac_of(backend4(1))).build();
        assert_eq!(check(&s, &f, XDP_TX, &ok, &tx), Ok(()));
        // To a MAC that is no backend of it.
        let bad = spec.clone().macs(LB_MAC, [2, 0, 0, 0, 0, 0x77]).build();
        assert!(check(&s, &f, XDP_TX, &bad, &tx).is_err());
        // A changed byte past the MACs.
        let mut changed = ok.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert!(check(&s, &f, XDP_TX, &changed, &tx).is_err());
        // Two reasons, or none.
        assert!(check(&s, &f, XDP_TX, &ok, &[]).is_err());
        assert!(check(&s, &f, XDP_TX, &ok, &[(12, 1), (1, 1)]).is_err());
        // Aborted.
        assert!(check(&s, &f, XDP_ABORTED, &f, &tx).is_err());
        // A pass that changed the frame; a pass with a forward reason.
        let pass = [(reason::PASS_NOT_VIP as usize, 1)];
        assert_eq!(check(&s, &f, XDP_PASS, &f, &pass), Ok(()));
        assert!(check(&s, &f, XDP_PASS, &ok, &pass).is_err());
        assert!(check(&s, &f, XDP_PASS, &f, &tx).is_err());
        // A forward counted without its VIP, a pass of a non-VIP frame counted for a VIP.
        let global_tx = [(reason::FWD_TX as usize, 1)];
        assert!(check(&s, &f, XDP_TX, &ok, &global_tx).is_err());
        let vip_pass = [(count + reason::PASS_NOT_VIP as usize, 1)];
        assert!(check(&s, &f, XDP_PASS, &f, &vip_pass).is_err());
        // Forwarding a frame that is not for a VIP address.
        let other = Spec::tcp("192.0.2.1", 1111, "10.99.0.99", 80, 0x10);
        let o = other.build();
        let o_out = other.macs(LB_MAC, mac_of(backend4(1))).build();
        assert!(check(&s, &o, XDP_TX, &o_out, &tx).is_err());
        // Forwarding a frame addressed to the broadcast MAC.
        let group = spec.clone().macs(CLIENT_MAC, [0xff; 6]);
        let g = group.build();
        let g_out = group.macs([0xff; 6], mac_of(backend4(1))).build();
        assert!(check(&s, &g, XDP_TX, &g_out, &tx).is_err());
    }
}
