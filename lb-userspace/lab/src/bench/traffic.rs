//! The live-frames traffic generator behind `sluice gen` and `sluice bench throughput`:
//! `sluice_gen` run by `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`. The kernel
//! runs it on copies of one template frame, as if they had arrived on the given interface;
//! the program makes each the next of `flows` flows (source port, then source address) and
//! returns `XDP_TX`, which transmits it on that interface. One core makes several million
//! frames a second this way, with no packet socket and no copy per frame.
//!
//! A veth only receives frames XDP sends into it if its peer runs an XDP program.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use aya::{
    maps::{Array, PerCpuArray, PerCpuValues},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions},
};
use lb_common::bench::{GEN_MAX_OFFSET, GEN_TEMPLATE_LEN, GenConfig, names, programs};

use super::{
    frame::{FIRST_PORT, Frame, PORTS_PER_ADDR},
    run,
};
use crate::dataplane::BenchObject;

/// Frames per batch the kernel builds and flushes at once (its maximum is 256).
pub const DEFAULT_BATCH: u32 = 64;
/// Frames per `BPF_PROG_TEST_RUN` call: bounds how long one call runs.
const CHUNK: u64 = 1 << 18;

fn off(v: usize) -> anyhow::Result<u32> {
    let v = u32::try_from(v)?;
    anyhow::ensure!(
        v + 4 <= GEN_MAX_OFFSET,
        "header offset {v} too large for the generator"
    );
    Ok(v)
}

/// The order the generator sends its flows in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// Flow 0, 1, 2, ...: a flow table filled by this traffic holds its entries in that
    /// order in memory, so every lookup finds its entry already prefetched.
    #[default]
    Sequential,
    /// Every flow once per round, consecutive frames far apart (a stride of about 0.618 ×
    /// flows, coprime to it): each lookup pays for its own entry, as with real traffic.
    Scattered,
}

impl Order {
    /// The generator's stride for `flows` flows.
    pub fn stride(self, flows: u32) -> u32 {
        match self {
            Self::Sequential => 1,
            Self::Scattered => {
                let mut s = ((f64::from(flows) * 0.618) as u32).max(1);
                while gcd(s, flows) != 1 {
                    s += 1;
                }
                s
            }
        }
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Tell `sluice_gen` how to turn `template` into `flows` flows (flow 0 is the template's
/// own source address with port `FIRST_PORT`), sent in `order`.
pub fn configure(
    bo: &mut BenchObject,
    template: &Frame,
    flows: u32,
    order: Order,
) -> anyhow::Result<()> {
    anyhow::ensure!(flows > 0, "at least one flow");
    let a = template.addr_off();
    let base = u32::from_be_bytes(template.bytes[a..a + 4].try_into()?);
    let cfg = GenConfig {
        flows,
        ports: PORTS_PER_ADDR,
        sport_base: FIRST_PORT,
        addr_base: base,
        sport_off: off(template.sport_off())?,
        addr_off: off(a)?,
        ip_csum_off: template.ip_csum_off().map(off).transpose()?.unwrap_or(0),
        l4_csum_off: off(template.l4_csum_off())?,
        udp: u32::from(template.is_udp()),
        // The headers (and, for short frames, all of it), whole 8-byte words.
        restore_len: (template.bytes.len().min(GEN_TEMPLATE_LEN) / 8 * 8) as u32,
        stride: order.stride(flows),
    };
    let mut t = [0u8; GEN_TEMPLATE_LEN];
    let n = cfg.restore_len as usize;
    t[..n].copy_from_slice(&template.bytes[..n]);
    {
        let map = bo
            .ebpf_mut()
            .map_mut(names::GEN_TEMPLATE)
            .context("GEN_TEMPLATE missing from the benchmark object")?;
        let mut arr: Array<_, [u8; GEN_TEMPLATE_LEN]> = Array::try_from(map)?;
        arr.set(0, t, 0)?;
    }
    let map = bo
        .ebpf_mut()
        .map_mut(names::GEN_CONFIG)
        .context("GEN_CONFIG missing from the benchmark object")?;
    let mut arr: Array<_, GenConfig> = Array::try_from(map)?;
    arr.set(0, cfg, 0)?;
    Ok(())
}

/// Each CPU's value of the one-entry per-CPU array `name` of the benchmark object.
pub(super) fn per_cpu<T: aya::Pod>(bo: &BenchObject, name: &'static str) -> anyhow::Result<Vec<T>> {
    let map = bo
        .ebpf()
        .map(name)
        .with_context(|| format!("{name} missing from the benchmark object"))?;
    let arr: PerCpuArray<_, T> = PerCpuArray::try_from(map)?;
    Ok(arr.get(&0, 0)?.iter().copied().collect())
}

/// Set the one-entry per-CPU array `name` of the benchmark object to `value` on every CPU.
pub(super) fn set_every_cpu<T: aya::Pod>(
    bo: &mut BenchObject,
    name: &'static str,
    value: T,
) -> anyhow::Result<()> {
    let map = bo
        .ebpf_mut()
        .map_mut(name)
        .with_context(|| format!("{name} missing from the benchmark object"))?;
    let mut arr: PerCpuArray<_, T> = PerCpuArray::try_from(map)?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    arr.set(0, PerCpuValues::try_from(vec![value; cpus])?, 0)?;
    Ok(())
}

/// A per-CPU `u64` counter of the benchmark object, summed.
fn per_cpu_sum(bo: &BenchObject, name: &'static str) -> anyhow::Result<u64> {
    Ok(per_cpu::<u64>(bo, name)?.iter().sum())
}

/// Set the generator's packet counter on every CPU (the next frame on any CPU is flow
/// `value % flows`).
pub fn set_counter(bo: &mut BenchObject, value: u64) -> anyhow::Result<()> {
    set_every_cpu(bo, names::GEN_COUNTER, value)
}

/// Frames the generator has made so far (all CPUs).
pub fn generated(bo: &BenchObject) -> anyhow::Result<u64> {
    per_cpu_sum(bo, names::GEN_COUNTER)
}

/// Frames `sluice_sink` has dropped so far (all its attachments, all CPUs).
pub fn sunk(bo: &BenchObject) -> anyhow::Result<u64> {
    per_cpu_sum(bo, names::SINK_COUNT)
}

/// What one `send` did.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub packets: u64,
    pub seconds: f64,
}

/// Transmit `packets` frames (or as many as fit in `max`) made from `template` on
/// `ifindex`, `batch` at a time, from the calling thread's CPU.
pub fn send(
    bo: &BenchObject,
    template: &Frame,
    ifindex: u32,
    batch: u32,
    packets: u64,
    max: Duration,
) -> anyhow::Result<Sent> {
    let prog = run::xdp(bo.ebpf(), programs::GEN)?;
    let md = run::xdp_md(template.bytes.len(), ifindex);
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < packets && start.elapsed() < max {
        let n = (packets - sent).min(CHUNK);
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(&template.bytes),
                ctx_in: Some(&md[..]),
                repeat: n as u32,
                attrs: TestRunAttrs::new().xdp_live_frames(batch),
                ..TestRunOptions::default()
            })
            .context("BPF_PROG_TEST_RUN in live-frames mode")?;
        anyhow::ensure!(
            r.return_value == 0,
            "live-frames run returned {}",
            r.return_value
        );
        sent += n;
    }
    Ok(Sent {
        packets: sent,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// What `sluice gen` sends.
#[derive(Clone, Debug)]
pub struct GenOptions {
    /// Transmit on this interface (of the current network namespace).
    pub interface: String,
    /// Destination address and port (the VIP).
    pub to: std::net::SocketAddr,
    pub udp: bool,
    /// Flow 0's source address (default 100.64.0.0 or 2001:db8::1:0).
    pub from: Option<std::net::IpAddr>,
    pub dst_mac: [u8; 6],
    /// Default: the interface's own.
    pub src_mac: Option<[u8; 6]>,
    pub flows: u32,
    /// The order the flows are sent in.
    pub order: Order,
    /// Frame length without FCS (at least the headers).
    pub size: usize,
    pub count: u64,
    pub duration: Duration,
    pub batch: u32,
    /// Pin to this CPU.
    pub cpu: Option<usize>,
}

/// What `sluice gen` did.
#[derive(Clone, Copy, Debug)]
pub struct GenResult {
    pub generated: u64,
    pub seconds: f64,
}

/// The MAC of `interface` (asked over netlink, so it is the current namespace's).
fn interface_mac(interface: &str) -> anyhow::Result<[u8; 6]> {
    let link = crate::dataplane::netlink::link(interface)
        .with_context(|| format!("looking up {interface}"))?
        .with_context(|| format!("no interface {interface}"))?;
    link.mac
        .filter(|_| link.ether)
        .with_context(|| format!("{interface} has no Ethernet address"))
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let mut m = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    anyhow::ensure!(parts.len() == 6, "{s:?} is not a MAC address");
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).with_context(|| format!("{s:?} is not a MAC address"))?;
    }
    Ok(m)
}

/// Run the generator as `o` says, from the current network namespace.
pub fn generate(o: &GenOptions) -> anyhow::Result<GenResult> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ifindex = super::netns::ifindex(&o.interface)?;
    let src_mac = match o.src_mac {
        Some(m) => m,
        None => interface_mac(&o.interface)?,
    };
    let from = o.from.unwrap_or(match o.to.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(100, 64, 0, 0)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, 0)),
    });
    anyhow::ensure!(
        from.is_ipv4() == o.to.is_ipv4(),
        "source and destination must be of the same family"
    );
    let headers = 14 + if from.is_ipv4() { 20 } else { 40 } + if o.udp { 8 } else { 20 };
    anyhow::ensure!(
        (headers..=1500).contains(&o.size),
        "--size must be between {headers} (the headers) and 1500"
    );
    let template = Frame::build(&super::frame::Spec {
        src_mac,
        dst_mac: o.dst_mac,
        src: from,
        dst: o.to.ip(),
        sport: FIRST_PORT as u16,
        dport: o.to.port(),
        udp: o.udp,
        tcp_flags: super::frame::TCP_ACK,
        payload_len: o.size - headers,
    });
    // The generator needs only its own object, not the balancer's.
    let mut bo = BenchObject::load()?;
    configure(&mut bo, &template, o.flows, o.order)?;
    let _restore = super::netns::Affinity::save();
    if let Some(cpu) = o.cpu {
        super::netns::pin_to_cpu(cpu)?;
    }
    let before = generated(&bo)?;
    let sent = send(&bo, &template, ifindex, o.batch, o.count, o.duration)?;
    Ok(GenResult {
        generated: generated(&bo)? - before,
        seconds: sent.seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::Order;

    /// The scattered order visits every flow once per round (as `sluice_gen` computes it:
    /// counter × stride mod flows), with consecutive frames far apart.
    #[test]
    fn scattered_order_visits_every_flow_once_per_round() {
        for flows in [1u32, 2, 3, 10, 1000, 65_536, 100_000, 1_000_000] {
            let stride = Order::Scattered.stride(flows);
            let mut seen = vec![false; flows as usize];
            for n in 0..u64::from(flows) {
                let i = (n * u64::from(stride) % u64::from(flows)) as usize;
                assert!(!seen[i], "{flows} flows: flow {i} twice in one round");
                seen[i] = true;
            }
            if flows >= 1000 {
                let gap = u64::from(stride).min(u64::from(flows - stride));
                assert!(gap * 4 > u64::from(flows), "{flows} flows: stride {stride}");
            }
        }
        assert_eq!(Order::Sequential.stride(1000), 1);
    }
}
