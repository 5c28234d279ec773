//! The data plane's only owner: loads the balancer's eBPF object (and, for the benchmarks,
//! their own: [`BenchObject`]), attaches programs, publishes the
//! desired state into the maps (tables built in userspace, written to the inactive half,
//! flipped with one `VIPS` update), reads counters, and runs programs on synthetic frames
//! through `BPF_PROG_TEST_RUN` (fixtures, `lookup`, benchmarks).

mod adopt;
pub mod atomic_file;
mod attach;
mod batch;
#[cfg(feature = "test-helpers")]
mod bench_object;
pub mod conntrack;
mod flow_table;
mod flows;
pub mod host;
pub mod iface;
mod layout;
mod mapping;
pub mod neigh;
pub mod netlink;
pub mod nexthop;
pub mod pinned;
pub use reasons::{VipReasons, reason_totals};
mod publish;
mod reasons;
pub mod route;
mod tables;
mod testrun;

use std::{
    os::fd::{AsFd as _, OwnedFd},
    path::PathBuf,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::Xdp,
};
use lb_common::{Backend, Counters, GlobalConfig, NextHop, VipKey, VipMeta, names, programs};

pub use adopt::{
    ADOPTABLE_EPOCHS, Found, LAYOUT_FILE, LINK_PIN, MapSpec, PinConfig, SavedLayout, abi_hash,
    detach, object_specs, saved_layout_for,
};
pub use attach::{AttachMode, Attached};
#[cfg(feature = "test-helpers")]
pub use bench_object::{BENCH_OBJECT, BENCH_PROGRAMS, BenchObject};
pub use layout::BackendRecord;
pub use publish::{HopStatus, PublishReport, needs_hop};
pub use sluice_core::model::{Desired, DesiredBackend, DesiredVip, Global, Sched, VipIdent};
use sluice_core::{maglev, sched};
pub use testrun::RunResult;

pub use self::flow_table::{Entry as FlowEntry, FlowTable, Inserted, Resized};
use self::{layout::Layout, tables::TableMem};

/// The balancer's compiled eBPF object, embedded at build time by `build.rs` (aya-build).
/// The benchmarks' programs are in their own object ([`BENCH_OBJECT`]).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("mapping a table (TABLES or FLOWS) into memory: {0}")]
    Mmap(std::io::Error),
    #[error("the flow table: {0}")]
    FlowTable(String),
    #[error("no room left in {what} (limit {limit})")]
    Full { what: &'static str, limit: u32 },
    #[error(
        "lookup-table storage is full: {need} more slots needed, {free} free of {capacity} \
         (a maglev or source-hash VIP takes 2 × its table_size, an rr, wrr, lc or wlc VIP \
         4 × (its fallback Maglev table too); raise daemon.table_capacity)"
    )]
    TablesFull { need: u32, free: u64, capacity: u32 },
    #[error("building the table of VIP {vip}: {source}")]
    Maglev {
        vip: String,
        source: maglev::MaglevError,
    },
    #[error("interface {interface}: {message}")]
    Attach { interface: String, message: String },
    #[error("pin directory {}: {message}", dir.display())]
    Pins { dir: PathBuf, message: String },
    #[error(
        "the state pinned in {} does not fit this sluice build, so it cannot be adopted \
         without corrupting it: {}. To keep the flows, run the sluice that pinned it (or a \
         compatible one); to start over, dropping every flow: `sluice detach --config FILE` \
         (or `--interface IF --pin-dir {}`), then start again",
        dir.display(), differences.join("; "), dir.display()
    )]
    Incompatible {
        dir: PathBuf,
        differences: Vec<String>,
    },
    #[error(
        "the saved layout {} was written under ABI epoch {saved} (by another sluice build) \
         and this build uses epoch {ours}: it cannot vouch that the maps pinned in {} mean \
         what it expects. To keep every flow, run the sluice build that pinned them; or, if \
         its release notes say its maps are compatible, delete the saved layout (`rm {}`) \
         and start again: the state is then rebuilt from the pinned maps, keeping every \
         flow (no `sluice detach`: that would drop them all)",
        layout_file.display(), dir.display(), layout_file.display()
    )]
    Epoch {
        dir: PathBuf,
        layout_file: PathBuf,
        saved: u32,
        ours: u32,
    },
    #[error("test run of {program}: {source}")]
    TestRun {
        program: &'static str,
        source: aya::programs::ProgramError,
    },
}

/// Sizes fixed when the object is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// `FLOWS` entries (`daemon.flow_table_size`).
    pub flow_entries: u32,
    /// `TABLES` slots (`daemon.table_capacity`).
    pub table_slots: u32,
    /// VIP ids: `VIPS`, `CURSORS` and `VIP_STATS` entries (`daemon.vip_capacity`).
    pub vips: u32,
    /// Backend slots, slot 0 reserved: `BACKENDS`, `NEXT_HOPS` and `BACKEND_STATS` entries
    /// (`daemon.backend_capacity`).
    pub backend_slots: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            flow_entries: lb_common::DEFAULT_FLOW_ENTRIES,
            table_slots: lb_common::DEFAULT_TABLE_SLOTS,
            vips: lb_common::DEFAULT_VIP_CAPACITY,
            backend_slots: lb_common::DEFAULT_BACKEND_CAPACITY,
        }
    }
}

impl Sizes {
    /// The sizes a daemon configuration asks for (`daemon.flow_table_size`,
    /// `table_capacity`, `vip_capacity`, `backend_capacity`).
    pub fn of(d: &sluice_core::config::DaemonConfig) -> Self {
        Self {
            flow_entries: d.flow_table_size,
            table_slots: d.table_capacity,
            vips: d.vip_capacity,
            backend_slots: d.backend_capacity,
        }
    }

    /// The entries of the map `name` these sizes set (`None`: the object's own).
    pub fn max_entries(&self, name: &str) -> Option<u32> {
        match name {
            names::FLOWS => Some(lb_common::flow_slots_for(self.flow_entries)),
            names::TABLES => Some(self.table_slots),
            names::VIPS | names::CURSORS | names::VIP_STATS => Some(self.vips),
            names::VIP_REASONS => Some(self.vips.saturating_mul(lb_common::reason::COUNT)),
            names::BACKENDS | names::NEXT_HOPS | names::BACKEND_STATS => Some(self.backend_slots),
            _ => None,
        }
    }

    /// The maps these sizes set.
    pub const SIZED: &[&str] = &[
        names::FLOWS,
        names::TABLES,
        names::VIPS,
        names::CURSORS,
        names::VIP_STATS,
        names::VIP_REASONS,
        names::BACKENDS,
        names::NEXT_HOPS,
        names::BACKEND_STATS,
    ];
}

/// Number of possible CPUs (`/sys/devices/system/cpu/possible`): per-CPU maps are sized by
/// it.
pub fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()))
        .unwrap_or(1)
}

/// Count the CPUs in a list like `0-3,5`.
pub fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0;
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => n += b.parse::<usize>().ok()? - a.parse::<usize>().ok()? + 1,
            None => {
                part.parse::<usize>().ok()?;
                n += 1;
            }
        }
    }
    Some(n)
}

/// The loaded object and typed handles on every map.
pub struct Dataplane {
    ebpf: Ebpf,
    vips: HashMap<MapData, VipKey, VipMeta>,
    backends: Array<MapData, Backend>,
    tables: TableMem,
    flows: FlowTable,
    config: Array<MapData, GlobalConfig>,
    vip_stats: PerCpuArray<MapData, Counters>,
    backend_stats: PerCpuArray<MapData, Counters>,
    reasons: PerCpuArray<MapData, u64>,
    vip_reasons: PerCpuArray<MapData, u64>,
    /// Rows of `vip_reasons` and `vip_stats` that may hold counts (the highest VIP id
    /// seen, plus one): the global figures sum them, removed VIPs' too (see `reasons.rs`).
    vip_reason_rows: std::sync::atomic::AtomicU32,
    /// Each VIP row's `fwd_tx` as last read: it is derived, and kept from going backwards
    /// (`reasons.rs`).
    fwd_tx_seen: std::sync::Mutex<Vec<u64>>,
    cursors: Array<MapData, u64>,
    next_hops: Array<MapData, NextHop>,
    fib_fallbacks: PerCpuArray<MapData, u64>,
    flood_guard: PerCpuArray<MapData, lb_common::FloodGuard>,
    flood_limit: Array<MapData, lb_common::FloodLimit>,
    /// The next hops: what each address resolved to, and what each slot's `NEXT_HOPS`
    /// entry holds (`publish/hops.rs`).
    hops: publish::Hops,
    /// The maps the conntrack sweeper opens its own handles on (duplicates of the loaded
    /// maps' descriptors).
    flows_fd: OwnedFd,
    /// `FLOW_REGION`, the region of the flow table in use.
    region_fd: OwnedFd,
    /// The flow table's shape and hash secret (`FLOW_TABLE`), for the sweeper's mapping.
    flows_meta: lb_common::FlowTableMeta,
    /// The flows the table is sized to hold (`daemon.flow_table_size`).
    flows_capacity: u32,
    backend_stats_fd: OwnedFd,
    /// The flow clock, which the daemon keeps from a thread of its own ([`Dataplane::clock`]).
    clock_fd: OwnedFd,
    /// Active connections: the last sweep and the counters it goes with.
    book: conntrack::Book,
    /// How many new flows per second each least-connection VIP saw at the last refresh,
    /// and when (to size the plan of the next interval).
    lc_rates: std::collections::HashMap<VipIdent, (std::time::Instant, u64, f64)>,
    layout: Layout,
    attached: Vec<Attached>,
    /// Tables built and published since load.
    tables_built: u64,
    /// When the last publish switched tables (see `publish::GRACE`).
    last_flip: Option<std::time::Instant>,
    /// The pin directory, for a daemon's dataplane (`adopt.rs`); `None` for loads that
    /// must leave nothing in bpffs (tests, fixtures, benchmarks).
    pins: Option<adopt::Pins>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, DataplaneError> {
    ebpf.take_map(name).ok_or(DataplaneError::MissingMap(name))
}

/// `map` (named `name`) as the typed handle `T`, or why it is not one.
fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
    map: Map,
    name: &'static str,
) -> Result<T, DataplaneError> {
    map.try_into()
        .map_err(|source| DataplaneError::Map { name, source })
}

/// `a += c`, field by field: counters summed over CPUs or over slots.
fn add_counters(a: &mut Counters, c: &Counters) {
    a.packets += c.packets;
    a.bytes += c.bytes;
    a.new_flows += c.new_flows;
    a.closes += c.closes;
}

/// The kernel map behind `fd` (the object's map `name`), opened anew as the typed handle `T`
/// on a duplicate of `fd`. A duplicate, not `BPF_MAP_GET_FD_BY_ID`: that one needs
/// CAP_SYS_ADMIN, which the daemon's systemd unit does not grant.
fn open_typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
    fd: &OwnedFd,
    name: &'static str,
) -> Result<T, DataplaneError> {
    let fd = fd.try_clone().map_err(|e| DataplaneError::Map {
        name,
        source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "dup",
            io_error: e,
        }),
    })?;
    let data = MapData::from_fd(fd).map_err(|source| DataplaneError::Map { name, source })?;
    let map = Map::from_map_data(data).map_err(|source| DataplaneError::Map { name, source })?;
    typed(map, name)
}

/// The object's map `name`, taken out of `ebpf` as the typed handle `T`.
/// The flow table's shape and hash secret: as a previous daemon wrote it into a pinned
/// `FLOW_TABLE` (which must describe a table of the size this one has), or, for a new
/// table, a fresh secret from the kernel's random source, written now; and whether the
/// table is new.
fn flow_table_meta(
    ebpf: &mut Ebpf,
    capacity: u32,
) -> Result<(lb_common::FlowTableMeta, bool), DataplaneError> {
    let err = |source| DataplaneError::Map {
        name: names::FLOW_TABLE,
        source,
    };
    let slots = lb_common::flow_slots_for(capacity);
    let map = ebpf
        .map_mut(names::FLOW_TABLE)
        .ok_or(DataplaneError::MissingMap(names::FLOW_TABLE))?;
    let mut a: Array<&mut MapData, lb_common::FlowTableMeta> = Array::try_from(map).map_err(err)?;
    let meta = a.get(&0, 0).map_err(err)?;
    if meta.mask != 0 {
        if meta.mask != slots - 1 {
            return Err(DataplaneError::FlowTable(format!(
                "FLOW_TABLE describes {} slots, FLOWS has {slots}",
                u64::from(meta.mask) + 1
            )));
        }
        return Ok((meta, false));
    }
    let mut random = [0u8; 44];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))
        .map_err(|e| DataplaneError::FlowTable(format!("reading /dev/urandom: {e}")))?;
    let mut words = [0u32; 11];
    for (w, b) in words.iter_mut().zip(random.chunks_exact(4)) {
        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    let meta = lb_common::FlowTableMeta::new(slots, words);
    a.set(0, meta, 0).map_err(err)?;
    Ok((meta, true))
}

fn take_typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, DataplaneError> {
    typed(take(ebpf, name)?, name)
}

/// Every program of the object, loaded into the kernel (verified) by [`Dataplane::load`].
pub const ALL_PROGRAMS: &[&str] = &[
    programs::BALANCER,
    programs::DECAP,
    programs::PASS,
    programs::PROBE,
];

impl Dataplane {
    /// Load the object with the given map sizes and verify every program. Nothing is
    /// attached yet, nothing pinned.
    pub fn load(sizes: Sizes) -> Result<Self, DataplaneError> {
        Self::load_with(sizes, &[])
    }

    /// [`Dataplane::load`], with the maps named in `pins` taken from (or, where missing,
    /// pinned at) the given paths.
    fn load_with(sizes: Sizes, pins: &[(String, PathBuf)]) -> Result<Self, DataplaneError> {
        raise_memlock_limit();
        let mut loader = EbpfLoader::new();
        for name in Sizes::SIZED {
            if let Some(n) = sizes.max_entries(name) {
                loader.map_max_entries(name, n);
            }
        }
        for (name, path) in pins {
            loader.map_pin_path(name.as_str(), path.as_path());
        }
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        attach::load_programs(&mut ebpf, ALL_PROGRAMS)?;
        let fd_of = |ebpf: &Ebpf, name: &'static str| -> Result<OwnedFd, DataplaneError> {
            let data = match ebpf.map(name).ok_or(DataplaneError::MissingMap(name))? {
                Map::HashMap(d) | Map::LruHashMap(d) | Map::PerCpuArray(d) | Map::Array(d) => d,
                _ => return Err(DataplaneError::MissingMap(name)),
            };
            data.fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| DataplaneError::Map {
                    name,
                    source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                        call: "dup",
                        io_error: e,
                    }),
                })
        };
        let flows_fd = fd_of(&ebpf, names::FLOWS)?;
        let region_fd = fd_of(&ebpf, names::FLOW_REGION)?;
        let (flows_meta, fresh) = flow_table_meta(&mut ebpf, sizes.flow_entries)?;
        let flows = FlowTable::map(flows_fd.as_fd(), region_fd.as_fd(), flows_meta)?;
        // After `FLOW_TABLE`: the program takes a region as the sign that both are there.
        flows.init_region(fresh)?;
        let backend_stats_fd = fd_of(&ebpf, names::BACKEND_STATS)?;
        let clock_fd = fd_of(&ebpf, names::CLOCK)?;
        let tables = match take(&mut ebpf, names::TABLES)? {
            Map::Array(data) => TableMem::new(data, sizes.table_slots)?,
            _ => return Err(DataplaneError::MissingMap(names::TABLES)),
        };
        Ok(Self {
            vips: take_typed(&mut ebpf, names::VIPS)?,
            backends: take_typed(&mut ebpf, names::BACKENDS)?,
            flows,
            config: take_typed(&mut ebpf, names::CONFIG)?,
            vip_stats: take_typed(&mut ebpf, names::VIP_STATS)?,
            backend_stats: take_typed(&mut ebpf, names::BACKEND_STATS)?,
            reasons: take_typed(&mut ebpf, names::REASONS)?,
            vip_reasons: take_typed(&mut ebpf, names::VIP_REASONS)?,
            vip_reason_rows: std::sync::atomic::AtomicU32::new(0),
            fwd_tx_seen: std::sync::Mutex::default(),
            cursors: take_typed(&mut ebpf, names::CURSORS)?,
            next_hops: take_typed(&mut ebpf, names::NEXT_HOPS)?,
            fib_fallbacks: take_typed(&mut ebpf, names::FIB_FALLBACKS)?,
            flood_guard: take_typed(&mut ebpf, names::FLOOD_GUARD)?,
            flood_limit: take_typed(&mut ebpf, names::FLOOD_LIMIT)?,
            hops: publish::Hops::default(),
            flows_fd,
            region_fd,
            flows_meta,
            flows_capacity: sizes.flow_entries,
            backend_stats_fd,
            clock_fd,
            book: conntrack::Book::default(),
            lc_rates: std::collections::HashMap::new(),
            layout: Layout::new(sizes),
            tables,
            ebpf,
            attached: Vec::new(),
            tables_built: 0,
            last_flip: None,
            pins: None,
        })
    }

    fn program(&mut self, name: &'static str) -> Result<&mut Xdp, DataplaneError> {
        attach::xdp_program(&mut self.ebpf, name)
    }

    /// The loaded object: the benchmarks (`sluice-lab`) run its programs with their own
    /// lean `BPF_PROG_TEST_RUN` loop. Only with the `test-helpers` feature: the daemon never
    /// reaches past the data plane's own methods.
    #[cfg(feature = "test-helpers")]
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// Hand out the next backend slots from `id` on (round-robin as ever), so tests reach
    /// high slot ids without publishing that many backends first. Only with the
    /// `test-helpers` feature.
    #[cfg(feature = "test-helpers")]
    pub fn move_slot_cursor(&mut self, id: u32) {
        self.layout.slots.move_cursor(id as usize);
    }

    fn sum(
        map: &PerCpuArray<MapData, Counters>,
        name: &'static str,
        i: u32,
    ) -> Result<Counters, DataplaneError> {
        let per_cpu = map
            .get(&i, 0)
            .map_err(|source| DataplaneError::Map { name, source })?;
        Ok(per_cpu.iter().fold(Counters::default(), |mut a, c| {
            add_counters(&mut a, c);
            a
        }))
    }

    /// Counters of a VIP, summed over CPUs.
    pub fn vip_counters(&self, vip_id: u32) -> Result<Counters, DataplaneError> {
        Self::sum(&self.vip_stats, names::VIP_STATS, vip_id)
    }

    /// The highest VIP id in use, plus one.
    fn vips_in_use(&self) -> u32 {
        self.layout
            .vips()
            .map(|(_, r)| r.vip_id.saturating_add(1))
            .max()
            .unwrap_or(0)
    }

    /// Counters of every VIP (up to the highest id in use), summed over CPUs: one batch read
    /// of a map of VIPs. The program counts each packet for its backend and its VIP
    /// together, so these change whenever any counter does (the status tick's test of
    /// whether anything changed, without reading every backend's).
    pub fn used_vip_counters(&self) -> Result<Vec<Counters>, DataplaneError> {
        batch::sum_first(&self.vip_stats, self.vips_in_use(), add_counters).map_err(|source| {
            DataplaneError::Map {
                name: names::VIP_STATS,
                source,
            }
        })
    }

    /// Counters of every backend slot (up to the highest id in use), summed over CPUs and
    /// indexed by id: one batch read (see `batch`), for status snapshots.
    pub fn used_backend_counters(&self) -> Result<Vec<Counters>, DataplaneError> {
        let backend_max = self
            .layout
            .backends()
            .map(|b| b.id.saturating_add(1))
            .max()
            .unwrap_or(0);
        batch::sum_first(&self.backend_stats, backend_max, add_counters).map_err(|source| {
            DataplaneError::Map {
                name: names::BACKEND_STATS,
                source,
            }
        })
    }

    /// Counters of a backend slot, summed over CPUs.
    pub fn backend_counters(&self, backend_id: u32) -> Result<Counters, DataplaneError> {
        Self::sum(&self.backend_stats, names::BACKEND_STATS, backend_id)
    }

    /// The published backends whose slot is not serving (marked down by the daemon that
    /// wrote the maps). After adopting a previous daemon's maps, these were down when it
    /// stopped: the new daemon keeps them down until their checks pass, rather than sending
    /// new flows to them until their checks fail.
    pub fn backends_not_serving(&self) -> Vec<(VipIdent, std::net::IpAddr)> {
        let mut out = Vec::new();
        for (ident, rec) in self.layout.vips() {
            for (addr, b) in &rec.backends {
                let serving = self
                    .backends
                    .get(&b.id, 0)
                    .is_ok_and(|x| x.flags & lb_common::BACKEND_F_SERVING != 0);
                if !serving {
                    out.push((*ident, *addr));
                }
            }
        }
        out
    }

    /// Tables built and published since the object was loaded.
    pub fn tables_built(&self) -> u64 {
        self.tables_built
    }

    /// The published layout: VIP ids and backend slots.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it so large maps load.
fn raise_memlock_limit() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    // Failure only matters on old kernels, where the load error that follows says so.
    if setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY).is_err() {
        tracing::debug!("could not raise RLIMIT_MEMLOCK");
    }
}

/// What an edit plan reads of the running data plane (`sluice_core::plan`).
impl sluice_core::plan::Live for Dataplane {
    fn flows_per_backend(&self) -> std::collections::HashMap<u32, u64> {
        Dataplane::flows_per_backend(self)
    }

    fn backend_slots(&self, vip: &VipIdent) -> std::collections::HashMap<std::net::IpAddr, u32> {
        self.layout
            .vip(vip)
            .map(|r| r.backends.iter().map(|(a, b)| (*a, b.id)).collect())
            .unwrap_or_default()
    }

    fn live_table(&self, vip: &VipIdent) -> Option<Vec<u32>> {
        Dataplane::live_table(self, vip)
    }

    fn active(&self, id: u32) -> Option<u64> {
        Dataplane::active(self, id).ok()
    }
}

#[cfg(test)]
mod object_tests {
    use aya_obj::generated::{BPF_CALL, BPF_JMP, BPF_PSEUDO_CALL};

    use super::EBPF_OBJECT;

    /// Every XDP program of both objects is one function: no BPF-to-BPF call, which every
    /// packet would pay (a call, a frame, and a return through the kernel's return thunk).
    /// The `#[xdp]` macro wraps the function it is given in a new one; LLVM left the
    /// balancer's body out of line until it was marked `#[inline(always)]`.
    #[test]
    fn programs_make_no_bpf_to_bpf_calls() {
        let mut objects = vec![("sluice-ebpf", EBPF_OBJECT)];
        #[cfg(feature = "test-helpers")]
        objects.push(("sluice-bench-ebpf", super::BENCH_OBJECT));
        for (object, bytes) in objects {
            let obj = aya_obj::Object::parse(bytes).unwrap();
            assert!(!obj.programs.is_empty(), "{object}: no programs");
            for (name, p) in &obj.programs {
                let f = &obj.functions[&(p.section_index, p.address)];
                let calls = f
                    .instructions
                    .iter()
                    .filter(|i| {
                        u32::from(i.code) == BPF_JMP | BPF_CALL
                            && u32::from(i.src_reg()) == BPF_PSEUDO_CALL
                    })
                    .count();
                assert_eq!(calls, 0, "{object}: {name} calls {calls} BPF function(s)");
                assert!(f.instructions.len() > 1, "{object}: {name} is empty");
            }
        }
    }
}
