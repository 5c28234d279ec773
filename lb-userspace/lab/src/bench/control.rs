//! `sluice bench control`: the control plane and the data plane's capacity. Maglev table
//! builds, the time a published edit takes to be in effect, the daemon's resident memory
//! with many VIPs, the kernel memory of the maps, a table of a million flows, and the real
//! daemon with 1000 VIPs × 10 backends (`backend list` latency, idle CPU share:
//! [`super::daemon_scale`]).

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use anyhow::{Context as _, ensure};
use lb_common::{FAMILY_V4, FlowKey, MODE_DSR, PROTO_TCP, hash::flow_hash, programs};
use serde::Serialize;

use super::{
    frame,
    packet::{self, short},
    run::XDP_TX,
};
use crate::{
    dataplane::{Dataplane, Desired, DesiredBackend, DesiredVip, Global, Sizes, VipIdent},
    maglev,
};

const TABLE: u32 = 65537;
const SEED: u32 = 0x5eed;
pub const TARGET_BUILD_1000_MS: f64 = 1.0;
pub const TARGET_EDIT_MS: f64 = 20.0;
pub const TARGET_RSS_MIB: f64 = 48.0;

#[derive(Clone, Debug)]
pub struct Options {
    /// Builds per backend count (the median is reported).
    pub maglev_runs: usize,
    /// Edits (add one backend, then remove it again) measured.
    pub edit_rounds: usize,
    /// VIPs × backends for the memory figure.
    pub rss_vips: usize,
    pub rss_backends: usize,
    /// Flows for the flow-table capacity figure.
    pub scale_flows: u64,
    /// The CPUs to spread them over.
    pub cpus: Vec<usize>,
    /// VIPs × backends of the running daemon, latency rounds and idle window.
    pub daemon_vips: usize,
    pub daemon_backends: usize,
    pub daemon_rounds: usize,
    pub daemon_idle: std::time::Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct MaglevBuild {
    pub backends: usize,
    pub table_size: u32,
    pub runs: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub target_ms: Option<f64>,
    pub met: Option<bool>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PublishEdit {
    pub backends_before: usize,
    pub table_size: u32,
    pub rounds: usize,
    /// `publish` wall time for adding one backend: the table is live when it returns.
    pub add_median_ms: f64,
    pub add_max_ms: f64,
    /// Of which Maglev build time (median).
    pub add_build_median_ms: f64,
    pub remove_median_ms: f64,
    /// After every add, a new flow that the new table maps to the new backend was run
    /// through the balancer and went to that backend's MAC.
    pub verified_rounds: usize,
    pub target_ms: f64,
    pub met: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Memory {
    pub vips: usize,
    pub backends_per_vip: usize,
    pub table_slots: u32,
    /// Wall time of the one `publish` that created them all.
    pub publish_ms: f64,
    pub vmrss_before_kib: u64,
    pub vmrss_loaded_kib: u64,
    pub vmrss_published_kib: u64,
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    pub rss_shmem_kib: u64,
    /// The `TABLES` and `FLOWS` maps' shared mappings (kernel memory, also counted in
    /// `map_memory`): the kernel maps all of them at load time, and they count as
    /// resident.
    pub tables_mapping_kib: u64,
    /// `vmrss_published_kib - tables_mapping_kib`: the daemon's own memory.
    pub daemon_kib: u64,
    pub target_mib: f64,
    /// `daemon_kib` within the target.
    pub met: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct MapMem {
    pub name: String,
    pub map_type: u32,
    pub max_entries: u64,
    pub memlock_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MapMemory {
    pub flow_entries: u32,
    pub table_slots: u32,
    pub maps: Vec<MapMem>,
    pub total_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FlowScale {
    /// Flow-table capacity (the default size).
    pub capacity: u32,
    pub flows_offered: u64,
    /// CPUs the flows were spread over (one pinned thread each).
    pub cpus: usize,
    pub fill_s: f64,
    pub fill_flows_per_s: f64,
    /// Entries in the table afterwards (walked from userspace).
    pub held: u64,
    pub count_s: f64,
    /// The same flows all arriving on one CPU (one table for all CPUs: the same as from
    /// every CPU; with per-CPU LRU lists, as tables pinned by older builds have, a CPU's
    /// flows fill only its share).
    pub one_cpu_held: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub maglev: Vec<MaglevBuild>,
    pub publish_edit: PublishEdit,
    pub memory: Memory,
    pub map_memory: MapMemory,
    pub flow_scale: FlowScale,
    pub daemon: super::daemon_scale::DaemonScale,
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Run the control-plane benchmarks in the network `packet::network()` made.
pub fn run(opts: &Options, ifindex: u32) -> anyhow::Result<Report> {
    ensure!(
        opts.maglev_runs > 0 && opts.edit_rounds > 0,
        "nothing to run"
    );
    // Memory first, while the process is still small.
    tracing::info!(
        vips = opts.rss_vips,
        backends = opts.rss_backends,
        "memory with many VIPs"
    );
    let memory = memory(opts.rss_vips, opts.rss_backends)?;
    tracing::info!(
        vips = opts.daemon_vips,
        backends = opts.daemon_backends,
        "the daemon with many VIPs"
    );
    let daemon = super::daemon_scale::run(
        opts.daemon_vips,
        opts.daemon_backends,
        opts.daemon_rounds,
        opts.daemon_idle,
    )?;
    tracing::info!("Maglev builds");
    let maglev = [10, 100, 1000]
        .into_iter()
        .map(|n| maglev_build(n, opts.maglev_runs))
        .collect::<anyhow::Result<Vec<_>>>()?;
    tracing::info!("publishing edits");
    let publish_edit = publish_edit(opts.edit_rounds, ifindex)?;
    tracing::info!("kernel map memory");
    let map_memory = map_memory()?;
    tracing::info!(flows = opts.scale_flows, "flow-table capacity");
    let flow_scale = flow_scale(opts.scale_flows, &opts.cpus, ifindex)?;
    Ok(Report {
        maglev,
        publish_edit,
        memory,
        map_memory,
        flow_scale,
        daemon,
    })
}

fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{}.{}.{}", 1 + i / 62500, (i / 250) % 250, i % 250 + 1))
        .collect()
}

fn maglev_build(n: usize, runs: usize) -> anyhow::Result<MaglevBuild> {
    let names = names(n);
    let entries: Vec<maglev::Entry<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, name)| maglev::Entry {
            name,
            weight: 1,
            id: i as u32 + 1,
        })
        .collect();
    // One unmeasured build warms the allocator and caches.
    std::hint::black_box(maglev::build(&entries, TABLE, SEED)?);
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        std::hint::black_box(maglev::build(&entries, TABLE, SEED)?);
        t.push(ms(start.elapsed()));
    }
    let min = t.iter().copied().fold(f64::INFINITY, f64::min);
    let max = t.iter().copied().fold(0.0, f64::max);
    let median_ms = super::median(&mut t);
    let target = (n == 1000).then_some(TARGET_BUILD_1000_MS);
    Ok(MaglevBuild {
        backends: n,
        table_size: TABLE,
        runs,
        median_ms,
        min_ms: min,
        max_ms: max,
        target_ms: target,
        met: target.map(|t| median_ms <= t),
    })
}

fn backend(address: IpAddr, i: u32) -> DesiredBackend {
    DesiredBackend {
        address,
        weight: 1,
        mac: Some(packet::backend_mac(i)),
        serving: true,
        in_flight: None,
    }
}

fn edit_state(vip: VipIdent, n: usize, extra: Option<u32>) -> Desired {
    let mut backends: Vec<DesiredBackend> = (0..n as u32)
        .map(|i| {
            backend(
                IpAddr::V4(Ipv4Addr::new(10, 94, (i / 250) as u8, (i % 250 + 1) as u8)),
                i + 1,
            )
        })
        .collect();
    if let Some(r) = extra {
        backends.push(backend(
            IpAddr::V4(Ipv4Addr::new(10, 93, (r / 250) as u8, (r % 250 + 1) as u8)),
            0x10000 + r,
        ));
    }
    Desired {
        global: Global {
            hash_seed: SEED,
            ..Global::default()
        },
        vips: vec![DesiredVip {
            ident: vip,
            mode: MODE_DSR,
            scheduler: crate::dataplane::Sched::Maglev,
            table_size: TABLE,
            backends,
        }],
    }
}

/// One backend added to a 100-backend VIP: the `publish` wall time, then proof that the
/// new table is in effect (a flow it maps to the new backend goes there).
fn publish_edit(rounds: usize, ifindex: u32) -> anyhow::Result<PublishEdit> {
    const N: usize = 100;
    let vip = VipIdent {
        address: IpAddr::V4(Ipv4Addr::new(10, 95, 0, 1)),
        port: 80,
        proto: PROTO_TCP,
    };
    let mut dp = Dataplane::load(Sizes {
        flow_entries: 65536,
        ..Sizes::default()
    })?;
    dp.publish(&edit_state(vip, N, None))?;
    let (mut add, mut build, mut remove) = (Vec::new(), Vec::new(), Vec::new());
    let mut verified = 0;
    for r in 0..rounds as u32 {
        let state = edit_state(vip, N, Some(r));
        let start = Instant::now();
        let rep = dp.publish(&state)?;
        add.push(ms(start.elapsed()));
        build.push(rep.build_us as f64 / 1e3);
        let new = state.vips[0].backends[N].clone();
        if routes_to_new_backend(&mut dp, vip, &new, ifindex)? {
            verified += 1;
        }
        let start = Instant::now();
        dp.publish(&edit_state(vip, N, None))?;
        remove.push(ms(start.elapsed()));
    }
    let add_max_ms = add.iter().copied().fold(0.0, f64::max);
    let add_median_ms = super::median(&mut add);
    Ok(PublishEdit {
        backends_before: N,
        table_size: TABLE,
        rounds,
        add_median_ms,
        add_max_ms,
        add_build_median_ms: super::median(&mut build),
        remove_median_ms: super::median(&mut remove),
        verified_rounds: verified,
        target_ms: TARGET_EDIT_MS,
        met: add_median_ms <= TARGET_EDIT_MS,
    })
}

/// Find a new flow the live table sends to `new` and run it through the balancer.
fn routes_to_new_backend(
    dp: &mut Dataplane,
    vip: VipIdent,
    new: &DesiredBackend,
    ifindex: u32,
) -> anyhow::Result<bool> {
    let id = dp
        .layout()
        .backend_id(&vip, new.address)
        .context("new backend not in the layout")?;
    let table = dp.live_table(&vip).context("VIP not live")?;
    let mut syn = packet::syn_to(vip);
    let base = packet::source_base(&syn);
    let IpAddr::V4(dst) = vip.address else {
        unreachable!("an IPv4 VIP")
    };
    // The new backend owns ~1/101 of the slots: a few hundred tries find one.
    for i in 0..100_000u64 {
        let (a, p) = frame::flow_source(base, 1_000_000 + i);
        let mut key = FlowKey {
            sport: p.to_be_bytes(),
            dport: vip.port.to_be_bytes(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            ..FlowKey::default()
        };
        key.src[..4].copy_from_slice(&a.to_be_bytes());
        key.dst[..4].copy_from_slice(&dst.octets());
        if table[(flow_hash(&key, SEED) % TABLE) as usize] != id {
            continue;
        }
        syn.set_source(a, p);
        let r = dp.run_frame(programs::BALANCER, &syn.bytes, ifindex)?;
        return Ok(r.action == XDP_TX && Some(r.frame[..6].to_vec()) == new.mac.map(|m| m.to_vec()));
    }
    Ok(false)
}

/// `VmRSS`, `RssAnon`, `RssFile`, `RssShmem` of this process, in KiB.
pub(super) fn rss() -> anyhow::Result<[u64; 4]> {
    let s = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = s
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} missing from /proc/self/status"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("malformed status line")?
            .parse()?)
    };
    Ok([
        field("VmRSS:")?,
        field("RssAnon:")?,
        field("RssFile:")?,
        field("RssShmem:")?,
    ])
}

fn memory(vips: usize, backends: usize) -> anyhow::Result<Memory> {
    let table_slots = u32::try_from(vips * 2 * TABLE as usize)?;
    let state = Desired {
        global: Global {
            hash_seed: SEED,
            ..Global::default()
        },
        vips: (0..vips as u32)
            .map(|v| DesiredVip {
                ident: VipIdent {
                    address: IpAddr::V4(Ipv4Addr::new(
                        10,
                        92,
                        (v / 250) as u8,
                        (v % 250 + 1) as u8,
                    )),
                    port: 80,
                    proto: PROTO_TCP,
                },
                mode: MODE_DSR,
                scheduler: crate::dataplane::Sched::Maglev,
                table_size: TABLE,
                backends: (0..backends as u32)
                    .map(|i| {
                        backend(
                            IpAddr::V4(Ipv4Addr::new(10, 91, (i / 250) as u8, (i % 250 + 1) as u8)),
                            i + 1,
                        )
                    })
                    .collect(),
            })
            .collect(),
    };
    let before = rss()?;
    let mut dp = Dataplane::load(Sizes {
        table_slots,
        ..Sizes::default()
    })?;
    let loaded = rss()?;
    let start = Instant::now();
    dp.publish(&state)?;
    let publish_ms = ms(start.elapsed());
    let after = rss()?;
    drop(dp);
    // The kernel maps the whole of each shared array at mmap time: `TABLES` (8 bytes a
    // slot) and `FLOWS` (64 bytes a slot), whole pages.
    let flow_slots = lb_common::flow_slots_for(Sizes::default().flow_entries);
    let tables_mapping_kib = (u64::from(table_slots) * 8).div_ceil(4096) * 4
        + (u64::from(flow_slots) * 64).div_ceil(4096) * 4;
    let daemon_kib = after[0].saturating_sub(tables_mapping_kib);
    Ok(Memory {
        vips,
        backends_per_vip: backends,
        table_slots,
        publish_ms,
        vmrss_before_kib: before[0],
        vmrss_loaded_kib: loaded[0],
        vmrss_published_kib: after[0],
        rss_anon_kib: after[1],
        rss_file_kib: after[2],
        rss_shmem_kib: after[3],
        tables_mapping_kib,
        daemon_kib,
        target_mib: TARGET_RSS_MIB,
        met: daemon_kib as f64 / 1024.0 <= TARGET_RSS_MIB,
    })
}

/// The BPF map fds this process holds (fd numbers).
pub(super) fn map_fds() -> anyhow::Result<Vec<i32>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd")? {
        let e = e?;
        if let (Ok(target), Ok(fd)) = (
            std::fs::read_link(e.path()),
            e.file_name().to_string_lossy().parse::<i32>(),
        ) && target.to_string_lossy() == "anon_inode:bpf-map"
        {
            v.push(fd);
        }
    }
    Ok(v)
}

/// A map's fdinfo fields.
fn fdinfo(fd: i32) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    Ok(s.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

/// Every map this process opened since it held the map fds `old` ([`map_fds`]), from each
/// map fd's `memlock` (the kernel's own accounting of the map's memory), largest first,
/// and their total.
pub(super) fn maps_since(old: &[i32]) -> anyhow::Result<(Vec<MapMem>, u64)> {
    let mut maps = Vec::new();
    // A map may have several descriptors (the data plane keeps duplicates for the conntrack
    // sweeper): each map counted once, by id.
    let mut seen = std::collections::BTreeSet::new();
    for fd in map_fds()?.into_iter().filter(|fd| !old.contains(fd)) {
        let info = fdinfo(fd)?;
        let num = |k: &str| -> u64 {
            info.get(k)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        if !seen.insert(num("map_id")) {
            continue;
        }
        let name = aya::maps::MapInfo::from_id(num("map_id") as u32)
            .ok()
            .and_then(|i| i.name_as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("map id {}", num("map_id")));
        maps.push(MapMem {
            name,
            map_type: num("map_type") as u32,
            max_entries: num("max_entries"),
            memlock_bytes: num("memlock"),
        });
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.memlock_bytes));
    let total_bytes = maps.iter().map(|m| m.memlock_bytes).sum();
    Ok((maps, total_bytes))
}

/// Kernel memory of every map of an object loaded with the default sizes.
fn map_memory() -> anyhow::Result<MapMemory> {
    let sizes = Sizes::default();
    let old = map_fds()?;
    let dp = Dataplane::load(sizes)?;
    let (maps, total_bytes) = maps_since(&old)?;
    drop(dp);
    Ok(MapMemory {
        flow_entries: sizes.flow_entries,
        table_slots: sizes.table_slots,
        maps,
        total_bytes,
    })
}

/// Run `fill` while a thread checks the flow table's region every 20 ms, as the daemon's
/// sweeper does (it grows the region when a sample says it is past 3/8 used); then settle
/// the region for what the table holds, as the sweep after would.
fn with_region_keeper(
    dp: &Dataplane,
    fill: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut sweeper = dp.sweeper(crate::dataplane::conntrack::Timeouts::default())?;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let keeper = s.spawn(|| {
            let mut grown = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(r) = sweeper.check_region() {
                    grown.push(r);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let last = sweeper.fit_region(dp.flow_count() as u64);
            (grown, last)
        });
        let filled = fill();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let (grown, last) = keeper
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        for r in grown.iter().chain(&last) {
            r.log();
        }
        filled
    })
}

/// Fill a default-sized flow table with `flows` new flows spread over the CPUs, count it;
/// then the same from one CPU.
fn flow_scale(flows: u64, cpus: &[usize], ifindex: u32) -> anyhow::Result<FlowScale> {
    let vip = VipIdent {
        address: IpAddr::V4(Ipv4Addr::new(10, 95, 0, 2)),
        port: 80,
        proto: PROTO_TCP,
    };
    let sizes = Sizes::default();
    // No flood guard: a million new flows in under a second is the load being measured
    // (with the default rate, each CPU would pin about 100,000 a second and forward the
    // rest without an entry, and the table would look like it holds a third of them).
    let mut state = edit_state(vip, 10, None);
    state.global.new_flow_limit_per_cpu = 0;
    let mut dp = Dataplane::load(sizes)?;
    dp.publish(&state)?;
    let syn = packet::syn_to(vip);
    let start = Instant::now();
    // The daemon's sweeper meanwhile, growing the table's region as the flows pour in.
    with_region_keeper(&dp, || packet::prefill(&dp, &syn, 0..flows, ifindex, cpus))?;
    let fill_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let held = dp.flow_count() as u64;
    let count_s = start.elapsed().as_secs_f64();
    tracing::info!(held, "flows held; now from one CPU");
    drop(dp);
    let mut dp = Dataplane::load(sizes)?;
    dp.publish(&state)?;
    with_region_keeper(&dp, || {
        packet::prefill(&dp, &syn, 0..flows, ifindex, &cpus[..1])
    })?;
    let one_cpu_held = dp.flow_count() as u64;
    tracing::info!(
        one_cpu_held,
        flows = %short(flows),
        "flows held when they all arrive on one CPU"
    );
    Ok(FlowScale {
        capacity: sizes.flow_entries,
        flows_offered: flows,
        cpus: cpus.len(),
        fill_s,
        fill_flows_per_s: flows as f64 / fill_s,
        held,
        count_s,
        one_cpu_held,
    })
}
