//! `sluice bench packet`: the real balancer on one frame per `BPF_PROG_TEST_RUN` call
//! (repeat = 1), each call's kernel-measured duration kept, against the floor program
//! (`sluice_floor_tx`: swap MACs, `XDP_TX`) on the same pinned CPU. Two methods:
//!
//! - **block** (the default; how the comparison with Katran was made): in each of `rounds`
//!   rounds, the floor's `calls` calls back to back first, then every case's `calls` calls
//!   back to back (the same program, one case after the other); a case's ratio is the
//!   median over rounds of (its p50 / that round's floor p50).
//! - **paired**: every call of the balancer paired with a call of the floor on the same
//!   frame, in alternating order; a round's ratio is the case's p50 over the p50 of the
//!   floor calls paired with it. Each call then finds the caches and branch predictors as
//!   the other program left them, which can inflate the costlier cases' ratios (new
//!   flows, big tables) against the block method.
//!
//! The one-flow cases share one flow table, emptied before each case's block. Each
//! new-flow block runs in an object loaded for it (an empty table of the default size,
//! its free lists in address order): its calls each insert a flow never seen (warm-up
//! included), all held by the table, so none finds it full. Each
//! many-flow case has a table of its own, filled before the first round from every CPU
//! (as RSS spreads flows) and sized so that its flows fit (`flow_entries_for`); its calls
//! cycle over those flows, each a hit, continuing from round to round.
//!
//! Everything runs inside the caller's private network namespace (`netns`), whose
//! interface, addresses and permanent neighbour entries resolve the routed backends.

mod cases;
mod measure;
mod stats;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, bail, ensure};
use lb_common::{MODE_DSR, MODE_IPIP, PROTO_TCP, PROTO_UDP, programs};
use serde::Serialize;

use self::cases::{Def, Vary, case_defs, tcp};
pub use self::cases::{
    TARGET_1M, TARGET_50K, TARGET_ESTABLISHED, TARGET_IPIP, TARGET_NEW, TARGET_NOT_VIP,
};
pub use self::stats::{Dist, median, percentile, ratio, round_ratios};
use super::{
    frame::{self, Frame, Spec, TCP_SYN},
    netns,
    run::{self, XDP_TX},
};
use crate::dataplane::{
    BenchObject, Dataplane, Desired, DesiredBackend, DesiredVip, Global, Sizes, VipIdent,
};

/// The LB interface's MAC in the benchmark namespace.
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SEED: u32 = 0x5eed;
/// The production table size (the config default).
const TABLE: u32 = 65537;
/// Clients: 100.64.0.0 upwards, 2001:db8::1:0 upwards (64000 flows per address).
const CLIENT4: u32 = 0x6440_0000;
const CLIENT6_LOW: u32 = 0x0001_0000;
const CLIENT6_HIGH: [u8; 12] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0];

/// How the calls are arranged (see the module's documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Each round: the floor's calls back to back, then each case's calls back to back;
    /// ratio = median over rounds of (case p50 / that round's floor p50).
    #[default]
    Block,
    /// Every call of the balancer paired with one of the floor on the same frame.
    Paired,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Paired => "paired",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub method: Method,
    /// Measured calls per case (and of the floor) in each round.
    pub calls: u32,
    pub rounds: u32,
    /// Unmeasured calls before each block (a one-flow case's first one opens its flow).
    pub warmup: u32,
    /// Flows in the table for the "many flows" hit cases.
    pub mid_flows: u64,
    pub big_flows: u64,
    /// A short run (`--quick`): said in the report.
    pub quick: bool,
    /// The CPU the measuring thread is pinned to.
    pub cpu: usize,
    /// The CPUs the many-flow cases' flows are spread over when their tables are filled.
    pub cpus: Vec<usize>,
    /// Only these cases (by name; empty: all), e.g. to profile one.
    pub only: Vec<String>,
}

/// The flows the 1M-flow case stands for (scaled down in quick runs).
pub const BIG_FLOWS: u64 = 1_000_000;

/// One case's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Case {
    pub name: &'static str,
    pub label: String,
    /// What every call returned.
    pub verdict: &'static str,
    /// Flow-table entries when the measured calls began (first round).
    pub flows_in_table: u64,
    /// Measured calls, all rounds.
    pub calls: u64,
    pub rounds: u32,
    /// The measured calls of every round, pooled.
    pub sluice_ns: Dist,
    /// Block: the floor's calls of every round, pooled (the same for every case); paired:
    /// the floor calls paired with this case's.
    pub floor_ns: Dist,
    /// This case's p50 in each round.
    pub round_p50_ns: Vec<u64>,
    /// The floor's p50 each round's ratio divides by.
    pub round_floor_p50_ns: Vec<u64>,
    /// Each round's p50 / floor p50.
    pub round_ratios: Vec<f64>,
    /// The median of `round_ratios`.
    pub ratio: f64,
    /// The target (block method only: the paired method's ratios are not comparable).
    pub target: Option<f64>,
    pub met: Option<bool>,
    /// Every call a new flow (a SYN of a 5-tuple never seen).
    pub fresh: bool,
    /// Flows the balancer opened during the measured calls (0 for the hit cases: every
    /// call found its flow; `calls` for the new-flow cases: every call inserted one).
    pub new_flows: u64,
    /// Back to back inside one call: the kernel's average over `repeat = WARM_REPEAT`
    /// runs of the same frame (caches warm, as under load), median of `WARM_ROUNDS`
    /// calls. Only for one-flow cases whose frame a run leaves parseable the same way
    /// (not the encapsulating ones: the kernel does not restore the frame between
    /// repetitions).
    pub warm: Option<Warm>,
}

/// Back-to-back figures (see [`Case::warm`]).
#[derive(Clone, Debug, Serialize)]
pub struct Warm {
    pub sluice_ns: f64,
    pub floor_ns: f64,
    pub ratio: f64,
}

pub const WARM_REPEAT: u32 = 1000;
const WARM_ROUNDS: usize = 21;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub method: Method,
    pub cpu: usize,
    /// Measured calls per case (and of the floor, block method) in each round.
    pub calls_per_case: u32,
    pub rounds: u32,
    /// Unmeasured calls before each block.
    pub warmup_calls: u32,
    /// Flow-table capacity of the one-flow and new-flow cases' objects.
    pub flow_entries: u32,
    /// Flow-table capacity of each many-flow case's object.
    pub filled_flow_entries: u32,
    /// All floor calls of the run.
    pub floor_ns: Dist,
    /// Block: the floor block's p50 in each round.
    pub floor_round_p50_ns: Vec<u64>,
    pub cases: Vec<Case>,
    /// What the reader must know (a quick run's scaled-down case).
    pub notes: Vec<String>,
}

/// The VIPs: DSR with configured MACs (the cheapest forwarding; most cases), UDP, IPv6,
/// DSR without a configured MAC (the routed next hop), IPIP and IP6IP6, and one with
/// 1000 backends.
struct Vips {
    tcp: VipIdent,
    udp: VipIdent,
    v6: VipIdent,
    fib: VipIdent,
    ipip: VipIdent,
    ip6ip6: VipIdent,
    big: VipIdent,
}

const VIPS: Vips = Vips {
    tcp: VipIdent {
        address: IpAddr::V4(Ipv4Addr::new(10, 97, 0, 10)),
        port: 80,
        proto: PROTO_TCP,
    },
    udp: VipIdent {
        address: IpAddr::V4(Ipv4Addr::new(10, 97, 0, 11)),
        port: 53,
        proto: PROTO_UDP,
    },
    v6: VipIdent {
        address: IpAddr::V6(Ipv6Addr::new(0xfd97, 0, 0, 0, 0, 0, 0, 0x10)),
        port: 80,
        proto: PROTO_TCP,
    },
    fib: VipIdent {
        address: IpAddr::V4(Ipv4Addr::new(10, 97, 0, 12)),
        port: 80,
        proto: PROTO_TCP,
    },
    ipip: VipIdent {
        address: IpAddr::V4(Ipv4Addr::new(10, 97, 0, 13)),
        port: 80,
        proto: PROTO_TCP,
    },
    ip6ip6: VipIdent {
        address: IpAddr::V6(Ipv6Addr::new(0xfd97, 0, 0, 0, 0, 0, 0, 0x13)),
        port: 80,
        proto: PROTO_TCP,
    },
    big: VipIdent {
        address: IpAddr::V4(Ipv4Addr::new(10, 97, 0, 14)),
        port: 80,
        proto: PROTO_TCP,
    },
};

/// Not a VIP (same network, other address).
const NOT_VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 97, 0, 99));

pub fn backend_mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0x0b, b[0], b[1], b[2], b[3]]
}

/// Backend `i` (from 1) of the small VIPs: on the LB's link, with a permanent neighbour.
fn backend4(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 98, 1, i as u8))
}

fn backend6(i: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd98, 0, 0, 0, 0, 0, 1, i as u16))
}

/// Backend `i` of the 1000-backend VIP (DSR with configured MACs: no neighbour needed).
fn backend_big(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 96, (i / 250) as u8, (i % 250 + 1) as u8))
}

fn vip(ident: VipIdent, mode: u8, addrs: Vec<IpAddr>, with_mac: bool) -> DesiredVip {
    DesiredVip {
        ident,
        mode,
        scheduler: crate::dataplane::Sched::Maglev,
        table_size: TABLE,
        backends: addrs
            .into_iter()
            .enumerate()
            .map(|(i, address)| DesiredBackend {
                address,
                weight: 1,
                mac: with_mac.then(|| backend_mac(i as u32 + 1)),
                serving: true,
                in_flight: None,
            })
            .collect(),
    }
}

fn desired() -> Desired {
    let small4 = || (1..=10).map(backend4).collect::<Vec<_>>();
    let fib4 = || (1..=4).map(backend4).collect::<Vec<_>>();
    Desired {
        global: Global {
            hash_seed: SEED,
            // Every new flow is pinned: the per-packet cost of an insert is measured (the
            // flood guard's rate would otherwise be exceeded within a second of calls).
            new_flow_limit_per_cpu: 0,
            ..Global::default()
        },
        vips: vec![
            vip(VIPS.tcp, MODE_DSR, small4(), true),
            vip(VIPS.udp, MODE_DSR, small4(), true),
            vip(VIPS.v6, MODE_DSR, (1..=10).map(backend6).collect(), true),
            vip(VIPS.fib, MODE_DSR, fib4(), false),
            vip(VIPS.ipip, MODE_IPIP, fib4(), false),
            vip(
                VIPS.ip6ip6,
                MODE_IPIP,
                (1..=4).map(backend6).collect(),
                false,
            ),
            vip(
                VIPS.big,
                MODE_DSR,
                (0..1000).map(backend_big).collect(),
                true,
            ),
        ],
    }
}

/// Permanent neighbour entries for the FIB-resolved backends.
fn neighbours() -> Vec<(IpAddr, [u8; 6])> {
    (1..=10)
        .map(|i| (backend4(i), backend_mac(i)))
        .chain((1..=10).map(|i| (backend6(i), backend_mac(0x600 + i))))
        .collect()
}

/// A client frame to `vip` (first flow of the client range).
fn client_frame(to: IpAddr, port: u16, udp: bool, flags: u8) -> Frame {
    let src = match to {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(CLIENT4)),
        IpAddr::V6(_) => {
            let mut o = [0u8; 16];
            o[..12].copy_from_slice(&CLIENT6_HIGH);
            o[12..].copy_from_slice(&CLIENT6_LOW.to_be_bytes());
            IpAddr::V6(Ipv6Addr::from(o))
        }
    };
    let mut f = Frame::build(&Spec {
        src_mac: CLIENT_MAC,
        dst_mac: LB_MAC,
        src,
        dst: to,
        sport: 0,
        dport: port,
        udp,
        tcp_flags: flags,
        // 64-byte IPv4/TCP frames (14 + 20 + 20 + 10), as in the comparison with Katran.
        payload_len: 10,
    });
    let base = if to.is_ipv4() { CLIENT4 } else { CLIENT6_LOW };
    let (a, p) = frame::flow_source(base, 0);
    f.set_source(a, p);
    f
}

fn base_of(f: &Frame) -> u32 {
    let o = f.addr_off();
    let b = &f.bytes[o..o + 4];
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// "50k", "1M", "1500".
pub fn short(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// Flow-table capacity so that `flows` fit, whichever CPUs they arrive on (one table for
/// all CPUs), with a quarter to spare: under the sweep's 90% high-water mark, and the same
/// capacities as earlier rounds' figures.
pub fn flow_entries_for(flows: u64) -> u32 {
    let need = flows * 5 / 4;
    u32::try_from(need.max(u64::from(lb_common::DEFAULT_FLOW_ENTRIES))).unwrap_or(u32::MAX)
}

/// The benchmark network (`netns::packet_network`) with the neighbours these cases need;
/// its ifindex. Call it inside a private network namespace.
pub fn network() -> anyhow::Result<u32> {
    netns::packet_network(LB_MAC, &neighbours())
}

/// A SYN of flow 0 to `vip` from the benchmark's client range;
/// `frame::flow_source(source_base(&f), i)` makes it flow `i`.
pub fn syn_to(vip: VipIdent) -> Frame {
    client_frame(vip.address, vip.port, vip.proto == PROTO_UDP, TCP_SYN)
}

pub fn source_base(f: &Frame) -> u32 {
    base_of(f)
}

/// Run the per-packet benchmark in the network `network()` made (`ifindex`).
pub fn run(opts: &Options, ifindex: u32) -> anyhow::Result<Report> {
    ensure!(opts.calls > 0, "--calls must be at least 1");
    ensure!(opts.rounds > 0, "--rounds must be at least 1");
    let defs = select_cases(case_defs(opts), &opts.only)?;
    // The one-flow and new-flow cases' tables: a new-flow block's calls and its warm-up
    // all insert, and the table must hold them.
    let fresh = u64::from(opts.calls) + u64::from(opts.warmup) + 64;
    let sizes = Sizes {
        flow_entries: flow_entries_for(fresh),
        ..Sizes::default()
    };
    let mut filled_counts: Vec<u64> = defs
        .iter()
        .filter_map(|d| match d.vary {
            Vary::Cycle(n) => Some(n),
            _ => None,
        })
        .collect();
    filled_counts.dedup();
    // Every many-flow table the same size (that of the largest), so that they differ only
    // in the flows they hold.
    let filled_sizes = Sizes {
        flow_entries: flow_entries_for(filled_counts.iter().copied().max().unwrap_or(0)),
        ..Sizes::default()
    };
    let mut tables = measure::Tables {
        main: load_published(sizes)?,
        fresh: None,
        fresh_sizes: sizes,
        fresh_flows: fresh,
        filled: Vec::new(),
    };
    for n in filled_counts {
        let dp = load_published(filled_sizes)?;
        // The region a daemon's sweeper gives these flows (no sweeper runs here).
        dp.fit_flow_region(n);
        tracing::info!(flows = n, "filling a flow table");
        prefill(&dp, &tcp(VIPS.tcp, TCP_SYN), 0..n, ifindex, &opts.cpus)?;
        let held = dp.flow_count() as u64;
        ensure!(
            held == n,
            "the {}-flow table holds {held} flows after the fill (evicted?)",
            short(n)
        );
        tables.filled.push((n, dp));
    }
    // The memory floor's lines: as many as its biggest case reads among (set per case).
    let lines = cases::miss_lines(opts, opts.big_flows);
    let mut bo =
        BenchObject::load_with_miss_lines(lines).context("loading the benchmark object")?;
    let _restore = netns::Affinity::save();
    netns::pin_to_cpu(opts.cpu)?;
    let m = measure::run(&mut tables, &mut bo, &defs, opts, ifindex)?;
    let mut notes = Vec::new();
    if opts.big_flows < BIG_FLOWS {
        notes.push(format!(
            "{}the {}-flow case is scaled down to {} flows",
            if opts.quick { "quick run: " } else { "" },
            short(BIG_FLOWS),
            short(opts.big_flows)
        ));
    }
    if opts.method == Method::Paired {
        notes.push(
            "paired method: no targets (they are set for the block method, whose ratios \
             are lower for the costlier cases)"
                .into(),
        );
    }
    Ok(Report {
        method: opts.method,
        cpu: opts.cpu,
        calls_per_case: opts.calls,
        rounds: opts.rounds,
        warmup_calls: opts.warmup,
        flow_entries: sizes.flow_entries,
        filled_flow_entries: filled_sizes.flow_entries,
        floor_ns: m.floor_ns,
        floor_round_p50_ns: m.floor_round_p50_ns,
        cases: m.cases,
        notes,
    })
}

/// The memory floor's state on every CPU: `flows` of its lines read in turn (`lines`: a
/// power of two, at most as many as `BenchObject::load_with_miss_lines` gave it), `work`
/// rounds of arithmetic after each read, every CPU from the first flow.
pub fn set_miss_state(
    bo: &mut BenchObject,
    lines: u32,
    flows: u32,
    work: u32,
) -> anyhow::Result<()> {
    let state = lb_common::bench::MissState::new(lines, flows, work);
    super::traffic::set_every_cpu(bo, lb_common::bench::names::MISS_STATE, state)
}

/// The memory floor's state on each CPU.
pub fn miss_state(bo: &BenchObject) -> anyhow::Result<Vec<lb_common::bench::MissState>> {
    super::traffic::per_cpu(bo, lb_common::bench::names::MISS_STATE)
}

/// The cases named in `only` (all when it is empty), in the benchmark's order; an unknown
/// name is an error that lists the known ones.
fn select_cases(defs: Vec<Def>, only: &[String]) -> anyhow::Result<Vec<Def>> {
    if only.is_empty() {
        return Ok(defs);
    }
    if let Some(bad) = only
        .iter()
        .find(|n| !defs.iter().any(|d| d.name == n.as_str()))
    {
        let known: Vec<_> = defs.iter().map(|d| d.name).collect();
        bail!(
            "--case {bad}: no such case (the cases: {})",
            known.join(", ")
        );
    }
    Ok(defs
        .into_iter()
        .filter(|d| only.iter().any(|n| n == d.name))
        .collect())
}

/// The balancer's object with the benchmark VIPs published.
fn load_published(sizes: Sizes) -> anyhow::Result<Dataplane> {
    let mut dp = Dataplane::load(sizes).context("loading the eBPF object")?;
    dp.publish(&desired())
        .context("publishing the benchmark VIPs")?;
    Ok(dp)
}

/// Put flows `range` into the table by running the balancer on their SYNs, spread over
/// `cpus` (one pinned thread each), as RSS spreads flows over a NIC's queues. A SYN whose
/// free slot another CPU's flow took between its probe and its claim goes without an entry
/// (the program does not probe again: its next packet inserts it); if any did, a second
/// pass on the first CPU gives them theirs (the others' SYNs follow their entries).
pub fn prefill(
    dp: &Dataplane,
    syn: &Frame,
    range: std::ops::Range<u64>,
    ifindex: u32,
    cpus: &[usize],
) -> anyhow::Result<()> {
    let want = dp.flow_count() as u64 + (range.end - range.start);
    fill(dp, syn, range.clone(), ifindex, cpus)?;
    let held = dp.flow_count() as u64;
    if held < want {
        let lost = want - held;
        tracing::info!(
            lost,
            "flows that lost a slot to another CPU's: filled again"
        );
        fill(dp, syn, range, ifindex, &cpus[..1.min(cpus.len())])?;
    }
    Ok(())
}

/// One pass of [`prefill`] over `cpus`.
fn fill(
    dp: &Dataplane,
    syn: &Frame,
    range: std::ops::Range<u64>,
    ifindex: u32,
    cpus: &[usize],
) -> anyhow::Result<()> {
    let lb = run::xdp(dp.ebpf(), programs::BALANCER)?;
    let per = (range.end - range.start).div_ceil(cpus.len() as u64);
    let base = base_of(syn);
    std::thread::scope(|s| {
        let handles: Vec<_> = cpus
            .iter()
            .enumerate()
            .map(|(k, &cpu)| {
                let from = range.start + k as u64 * per;
                let to = (from + per).min(range.end);
                let mut f = syn.clone();
                s.spawn(move || -> anyhow::Result<()> {
                    netns::pin_to_cpu(cpu)?;
                    let md = run::xdp_md(f.bytes.len(), ifindex);
                    for i in from..to {
                        let (a, p) = frame::flow_source(base, i);
                        f.set_source(a, p);
                        let (action, _) = run::once(lb, &f.bytes, &md)?;
                        if action != XDP_TX {
                            bail!("filling flow {i}: {}", run::action_name(action));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })
}

#[cfg(test)]
mod tests;
