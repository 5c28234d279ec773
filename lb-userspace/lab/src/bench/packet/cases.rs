//! The per-packet benchmark's cases: what each sends, what it must answer, its target.

use super::{NOT_VIP, Options, VIPS, client_frame, short};
use crate::{
    bench::{
        frame::{Frame, TCP_ACK, TCP_SYN},
        run::{XDP_PASS, XDP_TX},
    },
    dataplane::VipIdent,
};

/// Targets: a case's ratio to the floor (block method: the median over rounds of its
/// p50 / that round's floor p50), from the comparison with Katran.
pub const TARGET_NOT_VIP: f64 = 1.10;
/// An established flow, DSR with a configured backend MAC, one flow in the table.
pub const TARGET_ESTABLISHED: f64 = 1.6;
/// An established IPIP flow, one flow in the table.
pub const TARGET_IPIP: f64 = 2.0;
/// A new flow (SYN, a 5-tuple never seen, room in the table: no eviction).
pub const TARGET_NEW: f64 = 4.0;
/// An established flow among 50k in the table.
pub const TARGET_50K: f64 = 2.5;
/// An established flow among 1M in the table.
pub const TARGET_1M: f64 = 3.5;

/// Which flow each call sends.
#[derive(Clone, Copy, Debug)]
pub(super) enum Vary {
    /// The same frame every call (one flow).
    Fixed,
    /// A flow never seen before every call (the table is emptied before each block, so
    /// nothing is evicted).
    Fresh,
    /// Flows `0..n`, round and round (all in the table beforehand: a table of their own,
    /// filled once).
    Cycle(u64),
}

/// The program a case runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Program {
    /// The balancer (`sluice_lb`).
    Balancer,
    /// The memory floor (`sluice_floor_miss`: the floor plus one 64-byte line read a call,
    /// each of `flows` lines in turn, scattered over as many lines as a many-flow case's
    /// region has slots for that many flows, [`miss_lines`]): what a lookup among that
    /// many flows costs here when the program does nothing else, for the many-flow case
    /// of as many flows to be read against. Not a target: a reference.
    MemoryFloor { flows: u64 },
}

/// A case: what it sends, what it must answer, its target.
pub(super) struct Def {
    pub(super) name: &'static str,
    pub(super) program: Program,
    pub(super) label: String,
    pub(super) template: Frame,
    pub(super) vary: Vary,
    pub(super) expect: u32,
    pub(super) vip: Option<VipIdent>,
    pub(super) target: Option<f64>,
}

/// The memory floor's lines for `flows` flows: as many as the region of a many-flow case's
/// table holding them has slots (a power of two: 256 MiB of lines for a million flows, far
/// past the caches and the TLB's reach), every many-flow table being the size of the
/// biggest case's.
pub(super) fn miss_lines(opts: &Options, flows: u64) -> u32 {
    let slots = lb_common::flow_slots_for(super::flow_entries_for(opts.big_flows));
    lb_common::region_for(flows, slots)
}

/// A TCP frame from the benchmark's client range to `to`, with `flags`.
pub(super) fn tcp(to: VipIdent, flags: u8) -> Frame {
    client_frame(to.address, to.port, false, flags)
}

/// The cases, in the order each round measures them (after the floor): the one-flow and
/// new-flow cases in one table, emptied before each case; the many-flow cases last, each in
/// a table of its own filled before the first round.
pub(super) fn case_defs(opts: &Options) -> Vec<Def> {
    let est = |name, label: &str, to: VipIdent, target| Def {
        name,
        program: Program::Balancer,
        label: label.into(),
        template: tcp(to, TCP_ACK),
        vary: Vary::Fixed,
        expect: XDP_TX,
        vip: Some(to),
        target,
    };
    let new = |name, label: &str, to: VipIdent, target| Def {
        name,
        program: Program::Balancer,
        label: label.into(),
        template: tcp(to, TCP_SYN),
        vary: Vary::Fresh,
        expect: XDP_TX,
        vip: Some(to),
        target,
    };
    let mut defs = vec![
        Def {
            name: "not_vip",
            program: Program::Balancer,
            label: "not a VIP: XDP_PASS".into(),
            template: client_frame(NOT_VIP, 80, false, TCP_ACK),
            vary: Vary::Fixed,
            expect: XDP_PASS,
            vip: None,
            target: Some(TARGET_NOT_VIP),
        },
        est(
            "tcp_established",
            "established, 1 flow, DSR (configured MAC)",
            VIPS.tcp,
            Some(TARGET_ESTABLISHED),
        ),
        Def {
            name: "udp_established",
            program: Program::Balancer,
            label: "UDP established, 1 flow, DSR".into(),
            template: client_frame(VIPS.udp.address, VIPS.udp.port, true, 0),
            vary: Vary::Fixed,
            expect: XDP_TX,
            vip: Some(VIPS.udp),
            target: None,
        },
        est(
            "ipv6_established",
            "IPv6 established, 1 flow, DSR",
            VIPS.v6,
            None,
        ),
        est(
            "dsr_fib_established",
            "established, 1 flow, DSR (routed: no MAC)",
            VIPS.fib,
            None,
        ),
        est(
            "ipip_established",
            "IPIP established, 1 flow",
            VIPS.ipip,
            Some(TARGET_IPIP),
        ),
        est(
            "ip6ip6_established",
            "IP6IP6 established, 1 flow",
            VIPS.ip6ip6,
            None,
        ),
        new(
            "tcp_new",
            "new flow: SYN, DSR (Maglev, insert)",
            VIPS.tcp,
            Some(TARGET_NEW),
        ),
        new("ipip_new", "IPIP new flow: SYN", VIPS.ipip, None),
        new("ipv6_new", "IPv6 new flow: SYN, DSR", VIPS.v6, None),
        new(
            "tcp_new_1000_backends",
            "new flow: SYN, VIP with 1000 backends",
            VIPS.big,
            None,
        ),
    ];
    for (name, floor, n, target) in [
        (
            "tcp_established_mid",
            "memory_floor_mid",
            opts.mid_flows,
            (50_000, TARGET_50K),
        ),
        (
            "tcp_established_big",
            "memory_floor_big",
            opts.big_flows,
            (1_000_000, TARGET_1M),
        ),
    ] {
        defs.push(Def {
            name: floor,
            program: Program::MemoryFloor { flows: n },
            label: format!(
                "memory floor: 1 of {} lines in {} MiB",
                short(n),
                (u64::from(miss_lines(opts, n)) * 64) >> 20
            ),
            template: tcp(VIPS.tcp, TCP_ACK),
            vary: Vary::Fixed,
            expect: XDP_TX,
            vip: None,
            target: None,
        });
        defs.push(Def {
            name,
            program: Program::Balancer,
            label: format!("established, {} flows in table", short(n)),
            template: tcp(VIPS.tcp, TCP_ACK),
            vary: Vary::Cycle(n),
            expect: XDP_TX,
            vip: Some(VIPS.tcp),
            target: (n == target.0).then_some(target.1),
        });
    }
    defs
}
