//! `sluice bench throughput`: packets per second through sluice attached (native XDP) to a
//! veth, fed by the live-frames generator from the peer, against the same generator into
//! floor programs on the same veth:
//!
//! ```text
//!   generator ──XDP_TX──▶ tg0 ══veth══ tl0 [sluice_lb | sluice_floor_tx | sluice_sink]
//!   (test run, ingress tg0)  ▲                         │ XDP_TX (sluice, floor_tx)
//!                            └── tg0 [sluice_sink] ◀───┘
//! ```
//!
//! - `sluice`: the balancer on `tl0` (DSR, backends with MACs), its output counted and
//!   dropped by the sink on `tg0`; rate = packets the balancer processed (its `REASONS`).
//! - `floor_tx`: `sluice_floor_tx` (swap MACs, `XDP_TX`) on `tl0`, the same sink; rate =
//!   packets the sink received.
//! - `drop`: the sink on `tl0` itself; rate = packets it dropped.
//!
//! Generator, both veth ends' NAPI and the programs all run on the pinned CPU (the veth
//! processes the frames in the softirq the generator's flush raises), so a rate is the
//! whole chain's per-packet cost, and the difference between two configurations is what
//! their programs cost.

use std::{net::IpAddr, time::Duration};

use anyhow::ensure;
use lb_common::{MODE_DSR, PROTO_TCP, programs, reason};
use serde::Serialize;

use super::{
    frame::{Frame, Spec, TCP_ACK},
    netns, packet, traffic,
};
use crate::dataplane::{
    AttachMode, Dataplane, Desired, DesiredBackend, DesiredVip, Global, Sizes, VipIdent,
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
}

/// One measurement of one configuration at one flow count.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// `sluice`, `floor_tx` or `drop`.
    pub config: &'static str,
    pub flows: u32,
    pub round: usize,
    pub generated: u64,
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
    pub flows: u32,
    pub sluice_pps: f64,
    pub floor_tx_pps: f64,
    pub drop_pps: f64,
    /// `sluice_pps / floor_tx_pps`.
    pub vs_floor_tx: f64,
    pub vs_drop: f64,
    /// What sluice costs per packet beyond the MAC-swap floor (ns).
    pub sluice_extra_ns: f64,
    /// New flows sluice opened while measuring (0: every packet was a table hit).
    pub new_flows_measured: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub cpu: usize,
    pub frame_bytes: usize,
    pub batch: u32,
    pub attach_mode: String,
    pub rounds: usize,
    pub runs: Vec<Run>,
    pub summary: Vec<Summary>,
}

const VIP: VipIdent = VipIdent {
    address: IpAddr::V4(std::net::Ipv4Addr::new(10, 90, 1, 1)),
    port: 80,
    proto: PROTO_TCP,
};

fn desired() -> Desired {
    Desired {
        global: Global::default(),
        vips: vec![DesiredVip {
            ident: VIP,
            mode: MODE_DSR,
            scheduler: crate::dataplane::Sched::Maglev,
            table_size: 65537,
            backends: (1..=10u32)
                .map(|i| DesiredBackend {
                    address: IpAddr::V4(std::net::Ipv4Addr::new(10, 90, 2, i as u8)),
                    weight: 1,
                    mac: Some(packet::backend_mac(i)),
                    serving: true,
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
        sport: super::frame::FIRST_PORT as u16,
        dport: to.port,
        udp: to.proto != PROTO_TCP,
        tcp_flags: TCP_ACK,
        payload_len: FRAME_LEN.saturating_sub(headers + l4),
    })
}

fn reasons_total(dp: &Dataplane) -> anyhow::Result<u64> {
    Ok(dp.reason_counts()?.iter().sum())
}

/// Run the throughput comparison inside the calling thread's private namespace.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    ensure!(opts.packets > 0 && !opts.flows.is_empty(), "nothing to run");
    // No IPv6 on the pair: the kernel's own router and listener solicitations would be
    // counted as traffic.
    netns::sh(&format!(
        "ip link add {GEN_IF} address {} type veth peer name {LB_IF} address {} \
         && sysctl -qw net.ipv6.conf.{GEN_IF}.disable_ipv6=1 \
         && sysctl -qw net.ipv6.conf.{LB_IF}.disable_ipv6=1 \
         && ip link set {GEN_IF} up && ip link set {LB_IF} up",
        netns::mac_str(GEN_MAC),
        netns::mac_str(LB_MAC)
    ))?;
    let gen_if = netns::ifindex(GEN_IF)?;
    let max_flows = opts.flows.iter().copied().max().unwrap_or(1);
    let mut dp = Dataplane::load(Sizes {
        flow_entries: packet::flow_entries_for(u64::from(max_flows), 1),
        ..Sizes::default()
    })?;
    dp.publish(&desired())?;
    let vip_id = dp.layout().vip(&VIP).map_or(0, |r| r.vip_id);
    let _restore = netns::Affinity::save();
    netns::pin_to_cpu(opts.cpu)?;
    let frame = template(
        LB_MAC,
        GEN_MAC,
        IpAddr::V4(std::net::Ipv4Addr::new(100, 64, 0, 0)),
        VIP,
    );
    let mut runs = Vec::new();
    let mut summary = Vec::new();
    let mut mode = String::new();
    for &flows in &opts.flows {
        traffic::configure(&mut dp, &frame, flows)?;
        dp.clear_flows()?;
        let mut pps: [Vec<f64>; 3] = Default::default();
        let mut new_flows_measured = 0;
        for round in 0..opts.rounds.max(1) {
            for (k, config) in CONFIGS.into_iter().enumerate() {
                let r = measure(&mut dp, &frame, gen_if, vip_id, config, flows, opts)?;
                mode.clone_from(&r.1);
                new_flows_measured += r.2;
                pps[k].push(r.0.pps);
                runs.push(Run { round, ..r.0 });
            }
        }
        let forwarded = dp.reason_counts()?[reason::FWD_TX as usize];
        ensure!(forwarded > 0, "sluice forwarded nothing");
        let [s, f, d] = pps.map(|mut v| median(&mut v));
        summary.push(Summary {
            flows,
            sluice_pps: s,
            floor_tx_pps: f,
            drop_pps: d,
            vs_floor_tx: s / f.max(1.0),
            vs_drop: s / d.max(1.0),
            sluice_extra_ns: 1e9 / s.max(1.0) - 1e9 / f.max(1.0),
            new_flows_measured,
        });
    }
    Ok(Report {
        cpu: opts.cpu,
        frame_bytes: frame.bytes.len(),
        batch: traffic::DEFAULT_BATCH,
        attach_mode: mode,
        rounds: opts.rounds.max(1),
        runs,
        summary,
    })
}

const CONFIGS: [&str; 3] = ["sluice", "floor_tx", "drop"];

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

/// Attach `config`'s programs, warm up, measure once. The run, the attach mode the kernel
/// took, and the flows sluice opened while measuring.
fn measure(
    dp: &mut Dataplane,
    frame: &Frame,
    gen_if: u32,
    vip_id: u32,
    config: &'static str,
    flows: u32,
    opts: &Options,
) -> anyhow::Result<(Run, String, u64)> {
    dp.detach_all()?;
    let (far, near) = match config {
        "sluice" => (programs::BALANCER, Some(programs::SINK)),
        "floor_tx" => (programs::FLOOR_TX, Some(programs::SINK)),
        _ => (programs::SINK, None),
    };
    // The receiving end first, so nothing sent back is lost.
    if let Some(p) = near {
        dp.attach(p, GEN_IF, AttachMode::Native)?;
    }
    let mode = format!("{:?}", dp.attach(far, LB_IF, AttachMode::Native)?);
    let max = Duration::from_secs_f64(opts.max_seconds);
    // Warm-up: every flow once (for sluice: into the flow table), and then some.
    let warm = u64::from(flows) + opts.packets / 20;
    traffic::send(dp, frame, gen_if, traffic::DEFAULT_BATCH, warm, max)?;
    let (g0, r0, s0) = (
        traffic::generated(dp)?,
        reasons_total(dp)?,
        traffic::sunk(dp)?,
    );
    let nf0 = dp.vip_counters(vip_id)?.new_flows;
    tracing::info!(config, flows, "measuring throughput");
    let sent = traffic::send(dp, frame, gen_if, traffic::DEFAULT_BATCH, opts.packets, max)?;
    let generated = traffic::generated(dp)? - g0;
    let sunk = traffic::sunk(dp)? - s0;
    let (processed, opened) = match config {
        "sluice" => (
            reasons_total(dp)? - r0,
            dp.vip_counters(vip_id)?.new_flows - nf0,
        ),
        _ => (sunk, 0),
    };
    dp.detach_all()?;
    let pps = processed as f64 / sent.seconds;
    Ok((
        Run {
            config,
            flows,
            round: 0,
            generated,
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
    let _ = writeln!(
        s,
        "\nThroughput: live-frames generator (XDP_TX, batch {}) → veth → program on the far end \
         ({} XDP), {}-byte frames, all on CPU {}; Mpps, median of {} rounds",
        t.batch, t.attach_mode, t.frame_bytes, t.cpu, t.rounds
    );
    let _ = writeln!(
        s,
        "{:>8} {:>9} {:>9} {:>9} {:>11} {:>9} {:>13}",
        "flows", "sluice", "floor_tx", "drop", "vs floor_tx", "vs drop", "sluice +ns/pkt"
    );
    for x in &t.summary {
        let _ = writeln!(
            s,
            "{:>8} {:>9.2} {:>9.2} {:>9.2} {:>10.2}× {:>8.2}× {:>13.1}",
            packet::short(u64::from(x.flows)),
            x.sluice_pps / 1e6,
            x.floor_tx_pps / 1e6,
            x.drop_pps / 1e6,
            x.vs_floor_tx,
            x.vs_drop,
            x.sluice_extra_ns
        );
    }
    s
}
