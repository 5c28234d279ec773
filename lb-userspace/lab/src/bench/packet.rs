//! `sluice bench packet`: the real balancer on one frame per `BPF_PROG_TEST_RUN` call
//! (repeat = 1), many calls per case, each call's kernel-measured duration kept. Every call
//! of the balancer is paired with a call of the floor program (`sluice_floor_tx`: swap MACs,
//! `XDP_TX`) on the same frame, in alternating order, on the same pinned CPU; a case's
//! figure is its median over the floor's median of the same calls, which cancels the fixed
//! cost of a test run (timer, context setup) and the machine's speed.
//!
//! Everything runs inside the caller's private network namespace (`netns`), whose
//! interface, addresses and permanent neighbour entries make `bpf_fib_lookup` answer.

mod cases;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, bail, ensure};
use lb_common::{
    MODE_DSR, MODE_IPIP, PROTO_TCP, PROTO_UDP, bench::programs as bench_programs, programs,
};
use serde::Serialize;

use self::cases::{Def, Vary, case_defs, tcp};
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

/// Targets (median ratio to the floor), from the issue.
pub const TARGET_ESTABLISHED: f64 = 1.8;
pub const TARGET_NEW: f64 = 3.5;
pub const TARGET_NOT_VIP: f64 = 1.2;
pub const TARGET_50K: f64 = 2.5;

#[derive(Clone, Debug)]
pub struct Options {
    /// Calls per case.
    pub calls: u32,
    /// Flows in the table for the "many flows" hit cases.
    pub mid_flows: u64,
    pub big_flows: u64,
    /// The CPU the measuring thread is pinned to.
    pub cpu: usize,
    /// The CPUs the many-flow cases' flows are spread over when the table is filled.
    pub cpus: Vec<usize>,
}

/// A distribution of kernel-measured durations, in ns.
#[derive(Clone, Debug, Serialize)]
pub struct Dist {
    pub min: u64,
    pub median: u64,
    pub p90: u64,
    pub p99: u64,
    pub mean: f64,
}

impl Dist {
    pub fn of(samples: &mut [u64]) -> Self {
        samples.sort_unstable();
        let n = samples.len().max(1);
        let at = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Self {
            min: samples[0],
            median: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            mean: samples.iter().sum::<u64>() as f64 / n as f64,
        }
    }
}

/// One case's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Case {
    pub name: &'static str,
    pub label: String,
    /// What every call returned.
    pub verdict: &'static str,
    /// Flow-table entries while measuring.
    pub flows_in_table: u64,
    pub calls: u32,
    pub sluice_ns: Dist,
    pub floor_ns: Dist,
    /// `sluice_ns.median / floor_ns.median`.
    pub ratio: f64,
    pub target: Option<f64>,
    pub met: Option<bool>,
    /// Flows the balancer opened during the measured calls (0 for the hit cases: every
    /// packet found its flow; `calls` for the new-flow cases).
    pub new_flows: u64,
    /// Back to back instead of one frame per call: the kernel's average over `repeat =
    /// WARM_REPEAT` runs of the same frame (caches warm, as under load), median of
    /// `WARM_ROUNDS` calls. Only for one-flow cases whose frame a run leaves parseable
    /// the same way (not the encapsulating ones: the kernel does not restore the frame
    /// between repetitions).
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
    pub cpu: usize,
    pub calls_per_case: u32,
    /// Flow-table capacity the benchmark loaded the object with.
    pub flow_entries: u32,
    /// All floor calls of the run.
    pub floor_ns: Dist,
    pub cases: Vec<Case>,
}

/// The VIPs: DSR with configured MACs (the cheapest forwarding; most cases), UDP, IPv6,
/// DSR through the FIB, IPIP and IP6IP6 (FIB), and one with 1000 backends.
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
        payload_len: 64,
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

/// Flow-table capacity so that `flows` spread evenly over `cpus` CPUs fit: the table's
/// LRU lists are per CPU (`BPF_F_NO_COMMON_LRU`), each holding capacity / possible CPUs.
pub fn flow_entries_for(flows: u64, cpus: usize) -> u32 {
    let possible = netns::possible_cpus() as u64;
    let online = cpus.max(1) as u64;
    let need = flows * possible / online * 5 / 4;
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
    let sizes = Sizes {
        flow_entries: flow_entries_for(opts.big_flows, opts.cpus.len()),
        ..Sizes::default()
    };
    let mut dp = Dataplane::load(sizes).context("loading the eBPF object")?;
    dp.publish(&desired())
        .context("publishing the benchmark VIPs")?;
    // The floor every case is paired with.
    let bo = BenchObject::load().context("loading the benchmark object")?;
    let _restore = netns::Affinity::save();
    netns::pin_to_cpu(opts.cpu)?;

    let defs = case_defs(opts);
    let (cases, mut all_floor) = measure_cases(&mut dp, &bo, &defs, opts, ifindex)?;
    drop(dp);
    drop(bo);
    Ok(Report {
        cpu: opts.cpu,
        calls_per_case: opts.calls,
        flow_entries: sizes.flow_entries,
        floor_ns: Dist::of(&mut all_floor),
        cases,
    })
}

/// Measure every case: its calls and the floor calls paired with them.
fn measure_cases(
    dp: &mut Dataplane,
    bo: &BenchObject,
    defs: &[Def],
    opts: &Options,
    ifindex: u32,
) -> anyhow::Result<(Vec<Case>, Vec<u64>)> {
    let mut cases = Vec::new();
    let mut all_floor = Vec::new();
    let mut filled = 0u64;
    for def in defs {
        match def.vary {
            Vary::Cycle(n) => {
                // The many-flow cases share one growing table: fill up to `n`.
                if filled == 0 {
                    dp.clear_flows()?;
                }
                let syn = tcp(VIPS.tcp, TCP_SYN);
                tracing::info!(flows = n, "filling the flow table");
                prefill(dp, &syn, filled..n, ifindex, &opts.cpus)?;
                filled = n;
            }
            _ => dp.clear_flows()?,
        }
        tracing::info!(case = def.name, calls = opts.calls, "measuring");
        let (case, mut floor) = measure(dp, bo, def, opts.calls, ifindex)?;
        all_floor.append(&mut floor);
        cases.push(case);
    }
    Ok((cases, all_floor))
}

fn new_flows(dp: &Dataplane, vip: Option<VipIdent>) -> anyhow::Result<u64> {
    let Some(v) = vip else { return Ok(0) };
    let id = dp
        .layout()
        .vip(&v)
        .with_context(|| format!("VIP {v} not published"))?
        .vip_id;
    Ok(dp.vip_counters(id)?.new_flows)
}

/// Put flows `range` into the table by running the balancer on their SYNs, spread over
/// `cpus` (one pinned thread each), as RSS spreads flows over a NIC's queues.
pub fn prefill(
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

/// Warm up, then measure `calls` calls of the balancer, each paired with one of the floor.
fn measure(
    dp: &Dataplane,
    bo: &BenchObject,
    def: &Def,
    calls: u32,
    ifindex: u32,
) -> anyhow::Result<(Case, Vec<u64>)> {
    let lb = run::xdp(dp.ebpf(), programs::BALANCER)?;
    let floor = run::xdp(bo.ebpf(), bench_programs::FLOOR_TX)?;
    let mut f = def.template.clone();
    let md = run::xdp_md(f.bytes.len(), ifindex);
    let base = base_of(&f);
    let warm = (calls / 10).clamp(1, 2000);
    // Fresh flows: the warm-up's flows come after the measured ones.
    let flow = |i: u64, warmup: bool| -> Option<u64> {
        match def.vary {
            Vary::Fixed => None,
            Vary::Fresh => Some(if warmup { u64::from(calls) + i } else { i }),
            Vary::Cycle(n) => Some(i % n),
        }
    };
    let step = |f: &mut Frame, i: u64, warmup: bool| -> anyhow::Result<(u64, u64)> {
        if let Some(k) = flow(i, warmup) {
            let (a, p) = frame::flow_source(base, k);
            f.set_source(a, p);
        }
        // Alternate which program runs first, so neither always finds the caches warm.
        let (first, second) = if i.is_multiple_of(2) {
            (lb, floor)
        } else {
            (floor, lb)
        };
        let (a1, t1) = run::once(first, &f.bytes, &md)?;
        let (a2, t2) = run::once(second, &f.bytes, &md)?;
        let ((la, lt), (fa, ft)) = if i.is_multiple_of(2) {
            ((a1, t1), (a2, t2))
        } else {
            ((a2, t2), (a1, t1))
        };
        if la != def.expect {
            bail!(
                "{}: the balancer returned {} instead of {}",
                def.name,
                run::action_name(la),
                run::action_name(def.expect)
            );
        }
        if fa != XDP_TX {
            bail!("floor returned {}", run::action_name(fa));
        }
        Ok((lt, ft))
    };
    for i in 0..u64::from(warm) {
        step(&mut f, i, true)?;
    }
    let flows_in_table = match def.vary {
        Vary::Cycle(n) => n,
        _ => dp.flow_count() as u64,
    };
    let opened = new_flows(dp, def.vip)?;
    let mut ours = Vec::with_capacity(calls as usize);
    let mut base_ns = Vec::with_capacity(calls as usize);
    for i in 0..u64::from(calls) {
        let (lt, ft) = step(&mut f, i, false)?;
        ours.push(lt);
        base_ns.push(ft);
    }
    let opened = new_flows(dp, def.vip)? - opened;
    if matches!(def.vary, Vary::Cycle(_) | Vary::Fixed) && opened != 0 {
        tracing::warn!(
            case = def.name,
            opened,
            "flows were (re)opened while measuring table hits"
        );
    }
    let warm = if matches!(def.vary, Vary::Fixed)
        && def.vip.is_none_or(|v| v != VIPS.ipip && v != VIPS.ip6ip6)
    {
        Some(back_to_back(lb, floor, &f.bytes, &md)?)
    } else {
        None
    };
    let sluice_ns = Dist::of(&mut ours);
    let floor_ns = Dist::of(&mut base_ns);
    let ratio = sluice_ns.median as f64 / floor_ns.median.max(1) as f64;
    Ok((
        Case {
            name: def.name,
            label: def.label.clone(),
            verdict: run::action_name(def.expect),
            flows_in_table,
            calls,
            sluice_ns,
            floor_ns,
            ratio,
            target: def.target,
            met: def.target.map(|t| ratio <= t),
            new_flows: opened,
            warm,
        },
        base_ns,
    ))
}

/// Back-to-back runs of one frame (see [`Case::warm`]), alternating the two programs.
fn back_to_back(
    lb: &aya::programs::Xdp,
    floor: &aya::programs::Xdp,
    frame: &[u8],
    md: &[u8; 24],
) -> anyhow::Result<Warm> {
    use aya::programs::{TestRun as _, TestRunOptions};
    let avg = |p: &aya::programs::Xdp| -> anyhow::Result<f64> {
        let r = p.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&md[..]),
            repeat: WARM_REPEAT,
            ..TestRunOptions::default()
        })?;
        Ok(r.duration.as_nanos() as f64)
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..WARM_ROUNDS {
        a.push(avg(lb)?);
        b.push(avg(floor)?);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (sluice_ns, floor_ns) = (med(&mut a), med(&mut b));
    Ok(Warm {
        sluice_ns,
        floor_ns,
        ratio: sluice_ns / floor_ns.max(1.0),
    })
}

#[cfg(test)]
mod tests;
