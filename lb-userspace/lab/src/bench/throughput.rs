//! `sluice bench throughput`: packets per second through sluice attached (native XDP) to a
//! veth, fed by a traffic generator from the peer, against the same generator into floor
//! programs on the same veth, in the same run:
//!
//! ```text
//!   generator ──────────▶ tg0 ══veth══ tl0 [sluice_lb | sluice_floor_tx | sluice_floor_miss | sluice_sink]
//!                            ▲                         │ XDP_TX (sluice, floor_tx, floor_miss)
//!                            └── tg0 [sluice_sink] ◀───┘
//! ```
//!
//! The generator ([`generator`]) is either the live-frames XDP generator (`sluice_gen`
//! test-run with `XDP_TX` as if on ingress of `tg0`: TCP ACKs to `10.90.1.1:80`) or the
//! kernel's pktgen transmitting on `tg0` from `kpktgend_<cpu>` (UDP to `10.90.1.1:9`, the
//! only L4 protocol it makes). sluice serves the VIP the generator sends to.
//!
//! - `sluice`: the balancer on `tl0` (DSR, backends with MACs), its output counted and
//!   dropped by the sink on `tg0`; rate = packets the balancer processed (its `REASONS`).
//! - `floor_tx`: `sluice_floor_tx` (swap MACs, `XDP_TX`) on `tl0`, the same sink; rate =
//!   packets the sink received.
//! - `floor_miss`: the memory floor, `sluice_floor_miss` (`floor_tx` plus one 64-byte line
//!   read a packet, of as many lines as there are flows, each at its own scattered place
//!   in as much memory as sluice's flow-table region at that flow count, and work that
//!   costs about what sluice's DSR path does: [`MISS_WORK`]), the same sink: the rate of
//!   a program of sluice's cost that must read its flow's line every packet.
//! - `drop`: the sink on `tl0` itself; rate = packets it dropped.
//!
//! Generator, both veth ends' NAPI and the programs all run on the pinned CPU (the veth
//! processes the frames in the softirq the generator's transmit raises), so a rate is the
//! whole chain's per-packet cost, and the difference between two configurations is what
//! their programs cost. Only the ratios compare across generators and machines.

use std::{net::IpAddr, time::Duration};

use anyhow::ensure;
use lb_common::{
    MODE_DSR, PROTO_TCP, PROTO_UDP, bench::programs as bench_programs, programs, reason,
};
use serde::Serialize;

use super::{
    frame::{FIRST_PORT, Frame, Spec, TCP_ACK},
    generator::{Chosen, Kind},
    netns, packet, pktgen, traffic,
};
use crate::dataplane::{
    AttachMode, BenchObject, Dataplane, Desired, DesiredBackend, DesiredVip, Global, Sizes,
    VipIdent,
};

const GEN_IF: &str = "tg0";
const LB_IF: &str = "tl0";
const GEN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x01];
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x02];
/// Minimum Ethernet frame without FCS.
const FRAME_LEN: usize = 60;

#[derive(Clone, Debug)]
pub struct Options {
    /// Flow counts to run each configuration with.
    pub flows: Vec<u32>,
    /// Frames per measurement, at most.
    pub packets: u64,
    /// Seconds per measurement, at most.
    pub max_seconds: f64,
    /// Measurements of each configuration, interleaved; the median rate is reported.
    pub rounds: usize,
    pub cpu: usize,
    /// The generator (resolved by the caller, with its reason).
    pub generator: Chosen,
}

/// One measurement of one configuration at one flow count.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// The VIP's forwarding mode for sluice: `dsr` or `ipip` (the floors run with each).
    pub mode: &'static str,
    /// `sluice`, `floor_tx`, `floor_miss` or `drop`.
    pub config: &'static str,
    pub flows: u32,
    pub round: usize,
    /// Frames the generator sent (live frames: made; pktgen: `pkts-sofar`).
    pub generated: u64,
    /// Frames pktgen's device refused (a full veth ring; not sent, not in `generated`).
    pub refused: u64,
    /// The generator's sending time (live frames: wall clock; pktgen: its own clock).
    pub seconds: f64,
    /// Frames the program on `tl0` processed (sluice: its `REASONS` total; floors: the
    /// sink's count).
    pub processed: u64,
    /// Frames that came back to `tg0` (sluice and floor_tx; 0 for drop).
    pub returned: u64,
    /// `processed / seconds`.
    pub pps: f64,
    /// `1e9 / pps`: the whole chain's cost per packet on the one CPU.
    pub ns_per_packet: f64,
}

/// sluice against the floors at one flow count (median rates over the rounds).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// `dsr` (MAC rewrite to a configured MAC) or `ipip` (encapsulation, the next hop from
    /// the backend's `NEXT_HOPS` slot).
    pub mode: &'static str,
    pub flows: u32,
    pub sluice_pps: f64,
    pub floor_tx_pps: f64,
    /// The memory floor (`sluice_floor_miss`: the MAC-swap floor plus one 64-byte line
    /// read a packet, the flows' lines scattered over as much memory as sluice's flow
    /// table region at this flow count, and [`MISS_WORK`] rounds of work): the rate of a
    /// program that costs about what sluice does with its flows cached and must read its
    /// flow's line every packet.
    pub floor_miss_pps: f64,
    pub drop_pps: f64,
    /// `sluice_pps / floor_tx_pps`.
    pub vs_floor_tx: f64,
    /// `floor_miss_pps / floor_tx_pps`: what reading one line a packet leaves of the floor.
    pub miss_vs_floor_tx: f64,
    pub vs_drop: f64,
    /// What sluice costs per packet beyond the MAC-swap floor (ns).
    pub sluice_extra_ns: f64,
    /// New flows sluice opened while measuring (0: every packet was a table hit).
    pub new_flows_measured: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `live-frames` or `pktgen`, and why.
    pub generator: Chosen,
    /// What the generator sends (`tcp` or `udp`) to the VIP.
    pub protocol: &'static str,
    pub vip: String,
    pub cpu: usize,
    pub frame_bytes: usize,
    /// Live frames: frames per batch; pktgen: 0 (`clone_skb 0`, no burst).
    pub batch: u32,
    pub attach_mode: String,
    pub rounds: usize,
    pub runs: Vec<Run>,
    pub summary: Vec<Summary>,
}

const VIP_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 90, 1, 1);
/// What the live-frames generator sends to.
const VIP: VipIdent = VipIdent {
    address: IpAddr::V4(VIP_ADDR),
    port: 80,
    proto: PROTO_TCP,
};
/// What pktgen sends to (it makes UDP only).
const VIP_UDP: VipIdent = VipIdent {
    address: IpAddr::V4(VIP_ADDR),
    port: 9,
    proto: PROTO_UDP,
};
/// Flow 0's source address (both generators).
const CLIENT: std::net::Ipv4Addr = std::net::Ipv4Addr::new(100, 64, 0, 0);

/// Rounds of work the memory floor does after its read in a throughput run (4 independent
/// chains of an add or XOR each): 50 make it cost about what sluice's DSR path costs with
/// its flows cached (at one flow 0.90–0.91× the MAC-swap floor's rate, sluice 0.90–0.93×,
/// in the runs of 2026-12-05). A program as small as the bare read hides part of its miss
/// behind the frames after it (the CPU runs ahead into the next frame's program while the
/// read is outstanding): at 1M flows it kept 0.79–0.82× of the floor, which no program
/// that does a balancer's work per packet can.
const MISS_WORK: u32 = 50;

/// The forwarding modes measured, with their names.
const MODES: [(u8, &str); 2] = [(MODE_DSR, "dsr"), (lb_common::MODE_IPIP, "ipip")];

fn desired(vip: VipIdent, mode: u8) -> Desired {
    Desired {
        // No flood guard: millions of new flows a second are the load being measured.
        global: Global {
            new_flow_limit_per_cpu: 0,
            ..Global::default()
        },
        vips: vec![DesiredVip {
            ident: vip,
            mode,
            scheduler: crate::dataplane::Sched::Maglev,
            table_size: 65537,
            backends: (1..=10u32)
                .map(|i| DesiredBackend {
                    address: IpAddr::V4(std::net::Ipv4Addr::new(10, 90, 2, i as u8)),
                    weight: 1,
                    mac: Some(packet::backend_mac(i)),
                    serving: true,
                    in_flight: None,
                })
                .collect(),
        }],
    }
}

/// The template: a minimum-size TCP ACK from the client range to the VIP.
pub fn template(dst_mac: [u8; 6], src_mac: [u8; 6], src: IpAddr, to: VipIdent) -> Frame {
    let headers = if to.address.is_ipv4() {
        14 + 20
    } else {
        14 + 40
    };
    let l4 = if to.proto == PROTO_TCP { 20 } else { 8 };
    Frame::build(&Spec {
        src_mac,
        dst_mac,
        src,
        dst: to.address,
        sport: FIRST_PORT as u16,
        dport: to.port,
        udp: to.proto != PROTO_TCP,
        tcp_flags: TCP_ACK,
        payload_len: FRAME_LEN.saturating_sub(headers + l4),
    })
}

fn reasons_total(dp: &Dataplane) -> anyhow::Result<u64> {
    Ok(dp.reason_counts()?.iter().sum())
}

/// Where the frames come from.
enum Source {
    /// `sluice_gen` in live-frames mode, transmitting `frame` (made into each flow) on
    /// `ifindex`.
    Live { frame: Frame, ifindex: u32 },
    /// pktgen on `tg0`.
    Pktgen {
        session: pktgen::Session,
        traffic: pktgen::Traffic,
    },
}

/// What one generator run sent.
struct Sent {
    generated: u64,
    refused: u64,
    seconds: f64,
}

impl Source {
    fn open(kind: Kind, cpu: usize, gen_if: u32) -> anyhow::Result<Self> {
        Ok(match kind {
            Kind::LiveFrames => Self::Live {
                frame: template(LB_MAC, GEN_MAC, IpAddr::V4(CLIENT), VIP),
                ifindex: gen_if,
            },
            Kind::Pktgen => Self::Pktgen {
                session: pktgen::Session::open(cpu, GEN_IF)?,
                traffic: pktgen::Traffic {
                    src_mac: GEN_MAC,
                    dst_mac: LB_MAC,
                    src: CLIENT,
                    dst: VIP_ADDR,
                    src_port: FIRST_PORT as u16,
                    dst_port: VIP_UDP.port,
                    flows: 1,
                    frame_len: FRAME_LEN,
                },
            },
        })
    }

    const fn vip(&self) -> VipIdent {
        match self {
            Self::Live { .. } => VIP,
            Self::Pktgen { .. } => VIP_UDP,
        }
    }

    /// Send `flows` flows: pktgen's device is set up for them here; the live-frames
    /// generator takes the count with each order ([`Source::set_order`]).
    fn set_flows(&mut self, flows: u32) -> anyhow::Result<()> {
        match self {
            Self::Live { .. } => Ok(()),
            Self::Pktgen { session, traffic } => {
                traffic.flows = flows;
                session.apply(&pktgen::device_commands(traffic)?)
            }
        }
    }

    /// Send the `flows` flows in `order` (live frames; pktgen keeps its own order).
    fn set_order(
        &self,
        bo: &mut BenchObject,
        flows: u32,
        order: traffic::Order,
    ) -> anyhow::Result<()> {
        match self {
            Self::Live { frame, .. } => traffic::configure(bo, frame, flows, order),
            Self::Pktgen { .. } => Ok(()),
        }
    }

    fn send(&self, bo: &BenchObject, packets: u64, max: Duration) -> anyhow::Result<Sent> {
        match self {
            Self::Live { frame, ifindex } => {
                let g0 = traffic::generated(bo)?;
                let s = traffic::send(bo, frame, *ifindex, traffic::DEFAULT_BATCH, packets, max)?;
                Ok(Sent {
                    generated: traffic::generated(bo)? - g0,
                    refused: 0,
                    seconds: s.seconds,
                })
            }
            Self::Pktgen { session, .. } => {
                let o = session.run(packets, max)?;
                Ok(Sent {
                    generated: o.sent,
                    refused: o.errors,
                    seconds: pktgen::seconds(&o),
                })
            }
        }
    }
}

/// Run the throughput comparison inside the calling thread's private namespace.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    ensure!(opts.packets > 0 && !opts.flows.is_empty(), "nothing to run");
    // No IPv6 on the pair: the kernel's own router and listener solicitations would be
    // counted as traffic.
    let (gen_mac, lb_mac) = (
        crate::config::format_mac(&GEN_MAC),
        crate::config::format_mac(&LB_MAC),
    );
    let (gen_v6, lb_v6) = (
        format!("net.ipv6.conf.{GEN_IF}.disable_ipv6=1"),
        format!("net.ipv6.conf.{LB_IF}.disable_ipv6=1"),
    );
    for argv in [
        &[
            "ip", "link", "add", GEN_IF, "address", &gen_mac, "type", "veth", "peer", "name",
            LB_IF, "address", &lb_mac,
        ][..],
        &["sysctl", "-qw", &gen_v6],
        &["sysctl", "-qw", &lb_v6],
        &["ip", "link", "set", GEN_IF, "up"],
        &["ip", "link", "set", LB_IF, "up"],
        // IPIP: the backends are on the LB's link, resolved (their encapsulated frames go
        // back out of it to the sink).
        &["ip", "addr", "add", "10.90.2.254/24", "dev", LB_IF],
    ] {
        netns::run(argv)?;
    }
    for i in 1..=10u32 {
        let a = format!("10.90.2.{i}");
        let m = crate::config::format_mac(&packet::backend_mac(i));
        netns::run(&[
            "ip",
            "neigh",
            "replace",
            &a,
            "lladdr",
            &m,
            "dev",
            LB_IF,
            "nud",
            "permanent",
        ])?;
    }
    let gen_if = netns::ifindex(GEN_IF)?;
    let max_flows = opts.flows.iter().copied().max().unwrap_or(1);
    let mut dp = Dataplane::load(Sizes {
        flow_entries: packet::flow_entries_for(u64::from(max_flows)),
        ..Sizes::default()
    })?;
    // The floors, the sink and the generator; the memory floor with as many lines as the
    // largest flow count's region will have slots (each count reads, of as many as its
    // own region has, one line per flow).
    let mut bo = BenchObject::load_with_miss_lines(lb_common::region_for(
        u64::from(max_flows),
        dp.flow_table().slots(),
    ))?;
    // Removes its device from pktgen when dropped, on every path out of here.
    let mut source = Source::open(opts.generator.kind, opts.cpu, gen_if)?;
    let vip = source.vip();
    let _restore = netns::Affinity::save();
    netns::pin_to_cpu(opts.cpu)?;
    // Fill the flow table with as many flows as the largest count and empty it, once: a
    // table's free entries then come back scattered over its memory, as in a long-running
    // balancer, for every mode alike. (A fresh table hands out its entries in address
    // order, and the first mode measured would find the flows it inserted side by side:
    // 200 ns a packet cheaper at 100k flows than the modes after it.)
    dp.publish(&desired(vip, MODE_DSR))?;
    let lb_if = netns::ifindex(LB_IF)?;
    dp.fit_flow_region(u64::from(max_flows));
    packet::prefill(
        &dp,
        &packet::syn_to(vip),
        0..u64::from(max_flows),
        lb_if,
        &[opts.cpu],
    )?;
    dp.clear_flows()?;
    let mut runs = Vec::new();
    let mut summary = Vec::new();
    let mut mode = String::new();
    for (fwd, fwd_name) in MODES {
        dp.publish(&desired(vip, fwd))?;
        let vip_id = dp.layout().vip(&vip).map_or(0, |r| r.vip_id);
        for &flows in &opts.flows {
            let before = dp.reason_counts()?;
            source.set_flows(flows)?;
            dp.clear_flows()?;
            // The region a daemon's sweeper gives this many flows; the memory floor reads a
            // line per flow scattered over as much memory.
            dp.fit_flow_region(u64::from(flows));
            packet::set_miss_state(&mut bo, dp.flow_table().region().slots(), flows, MISS_WORK)?;
            let mut pps: [Vec<f64>; 4] = Default::default();
            let mut new_flows_measured = 0;
            for round in 0..opts.rounds.max(1) {
                for (k, config) in CONFIGS.into_iter().enumerate() {
                    let r = measure(&mut dp, &mut bo, &source, vip_id, config, flows, opts)?;
                    mode.clone_from(&r.1);
                    new_flows_measured += r.2;
                    pps[k].push(r.0.pps);
                    runs.push(Run {
                        round,
                        mode: fwd_name,
                        ..r.0
                    });
                }
            }
            // Every frame sluice processed in this mode was forwarded (a frame passed or
            // dropped would make the rate meaningless).
            let counts = dp.reason_counts()?;
            let other: Vec<String> = reason::NAMES
                .iter()
                .zip(counts.iter().zip(&before))
                .filter(|(n, (a, b))| **n != "fwd_tx" && a != b)
                .map(|(n, (a, b))| format!("{n} {}", a - b))
                .collect();
            ensure!(
                other.is_empty(),
                "{fwd_name} at {flows} flows: sluice did not forward every frame: {}",
                other.join(", ")
            );
            let forwarded = counts[reason::FWD_TX as usize] - before[reason::FWD_TX as usize];
            ensure!(forwarded > 0, "sluice forwarded nothing");
            let [s, f, m, d] = pps.map(|mut v| super::median(&mut v));
            summary.push(Summary {
                mode: fwd_name,
                flows,
                sluice_pps: s,
                floor_tx_pps: f,
                floor_miss_pps: m,
                drop_pps: d,
                vs_floor_tx: s / f.max(1.0),
                miss_vs_floor_tx: m / f.max(1.0),
                vs_drop: s / d.max(1.0),
                sluice_extra_ns: 1e9 / s.max(1.0) - 1e9 / f.max(1.0),
                new_flows_measured,
            });
        }
    }
    let (protocol, batch) = match source {
        Source::Live { .. } => ("tcp", traffic::DEFAULT_BATCH),
        Source::Pktgen { session, .. } => {
            session.close()?;
            ("udp", 0)
        }
    };
    Ok(Report {
        generator: opts.generator.clone(),
        protocol,
        vip: format!("{}:{}", vip.address, vip.port),
        cpu: opts.cpu,
        frame_bytes: FRAME_LEN,
        batch,
        attach_mode: mode,
        rounds: opts.rounds.max(1),
        runs,
        summary,
    })
}

const CONFIGS: [&str; 4] = ["sluice", "floor_tx", "floor_miss", "drop"];

/// The count of frames the program on `tl0` has processed, once it stops moving: frames a
/// generator sent may still sit in the veth's ring when it returns (bounded: 2 s).
fn settled(mut read: impl FnMut() -> anyhow::Result<u64>) -> anyhow::Result<u64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut last = read()?;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = read()?;
        if now == last || std::time::Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// Attach `config`'s programs, warm up, measure once. The run, the attach mode the kernel
/// took, and the flows sluice opened while measuring.
fn measure(
    dp: &mut Dataplane,
    bo: &mut BenchObject,
    source: &Source,
    vip_id: u32,
    config: &'static str,
    flows: u32,
    opts: &Options,
) -> anyhow::Result<(Run, String, u64)> {
    dp.detach_all()?;
    bo.detach_all()?;
    // The balancer is in the balancer's object, the floor and the sink in the benchmarks'.
    let (far, near) = match config {
        "sluice" => (programs::BALANCER, Some(bench_programs::SINK)),
        "floor_tx" => (bench_programs::FLOOR_TX, Some(bench_programs::SINK)),
        "floor_miss" => (bench_programs::FLOOR_MISS, Some(bench_programs::SINK)),
        _ => (bench_programs::SINK, None),
    };
    // The receiving end first, so nothing sent back is lost.
    if let Some(p) = near {
        bo.attach(p, GEN_IF, AttachMode::Native)?;
    }
    let got = if far == programs::BALANCER {
        dp.attach(far, LB_IF, AttachMode::Native)?
    } else {
        bo.attach(far, LB_IF, AttachMode::Native)?
    };
    let mode = format!("{got:?}");
    let max = Duration::from_secs_f64(opts.max_seconds);
    // Warm-up: every flow once (for sluice: into the flow table, in that order in
    // memory), and then some. The measured frames visit the flows scattered: each lookup
    // pays for its own entry, as with real traffic, not the prefetcher's sequential luck.
    source.set_order(bo, flows, traffic::Order::Sequential)?;
    let warm = u64::from(flows) + opts.packets / 20;
    source.send(bo, warm, max)?;
    source.set_order(bo, flows, traffic::Order::Scattered)?;
    let processed_now = |dp: &Dataplane, bo: &BenchObject| match config {
        "sluice" => reasons_total(dp),
        _ => traffic::sunk(bo),
    };
    let (p0, s0) = (settled(|| processed_now(dp, bo))?, traffic::sunk(bo)?);
    let nf0 = dp.vip_counters(vip_id)?.new_flows;
    tracing::info!(config, flows, "measuring throughput");
    let sent = source.send(bo, opts.packets, max)?;
    let processed = settled(|| processed_now(dp, bo))? - p0;
    let sunk = traffic::sunk(bo)? - s0;
    let opened = match config {
        "sluice" => dp.vip_counters(vip_id)?.new_flows - nf0,
        _ => 0,
    };
    dp.detach_all()?;
    bo.detach_all()?;
    let pps = processed as f64 / sent.seconds;
    Ok((
        Run {
            mode: "",
            config,
            flows,
            round: 0,
            generated: sent.generated,
            refused: sent.refused,
            seconds: sent.seconds,
            processed,
            returned: if near.is_some() { sunk } else { 0 },
            pps,
            ns_per_packet: 1e9 / pps.max(1.0),
        },
        mode,
        opened,
    ))
}

/// The throughput section of `bench.txt`.
pub fn text(t: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let source = match t.generator.kind {
        Kind::LiveFrames => format!("live-frames generator (XDP_TX, batch {})", t.batch),
        Kind::Pktgen => format!("kernel pktgen (kpktgend_{}, clone_skb 0)", t.cpu),
    };
    let _ = writeln!(
        s,
        "\nThroughput: {source} → veth → program on the far end ({} XDP), {}-byte {} frames \
         to {}, all on CPU {}; Mpps, median of {} rounds; each flow count warmed up in flow \
         order, then measured with the flows visited scattered (live frames)",
        t.attach_mode,
        t.frame_bytes,
        t.protocol.to_uppercase(),
        t.vip,
        t.cpu,
        t.rounds
    );
    let _ = writeln!(
        s,
        "generator: {} ({})",
        t.generator.kind.name(),
        t.generator.why
    );
    let _ = writeln!(
        s,
        "{:>5} {:>8} {:>9} {:>9} {:>9} {:>11} {:>9} {:>14} {:>10}",
        "mode",
        "flows",
        "sluice",
        "floor_tx",
        "drop",
        "vs floor_tx",
        "vs drop",
        "sluice +ns/pkt",
        "floor_miss"
    );
    for x in &t.summary {
        let _ = writeln!(
            s,
            "{:>5} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>10.2}× {:>8.2}× {:>14.1} {:>9.2}×",
            x.mode,
            packet::short(u64::from(x.flows)),
            x.sluice_pps / 1e6,
            x.floor_tx_pps / 1e6,
            x.drop_pps / 1e6,
            x.vs_floor_tx,
            x.vs_drop,
            x.sluice_extra_ns,
            x.miss_vs_floor_tx
        );
    }
    let _ = writeln!(
        s,
        "floor_miss: the memory floor (sluice_floor_miss: floor_tx plus one 64-byte line read a \
         packet, one line per flow, the lines scattered over as much memory as sluice's flow \
         table region at that flow count, and {MISS_WORK} rounds of arithmetic, about what \
         sluice's DSR path costs with its flows cached), vs floor_tx: what a program of \
         sluice's cost that must read its flow's line every packet keeps of the floor"
    );
    let sum = |f: fn(&Run) -> u64| t.runs.iter().map(f).sum::<u64>();
    let _ = writeln!(
        s,
        "frames measured: {} sent by the generator, {} processed on {LB_IF}, {} refused by the \
         veth before it (not sent)",
        sum(|r| r.generated),
        sum(|r| r.processed),
        sum(|r| r.refused)
    );
    s
}
