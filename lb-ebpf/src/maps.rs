//! Every map of the balancer's object (the benchmarks' own maps are in `bench` and `gen`,
//! in their object). The daemon is their only writer (besides this program's own
//! flow inserts and counters); names and value types come from `lb-common`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use lb_common::{
    Backend, Counters, DEFAULT_BACKEND_CAPACITY, DEFAULT_FLOW_ENTRIES, DEFAULT_TABLE_SLOTS,
    DEFAULT_VIP_CAPACITY, FloodGuard, FloodLimit, FlowSlot, FlowTableMeta, GlobalConfig, IcmpLimit,
    NextHop, VipKey, VipMeta, flow_slots_for, reason,
};

/// `BPF_F_MMAPABLE`: the daemon writes tables through a shared mapping, not per-slot
/// syscalls.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// VIP (address, port, protocol) → its metadata and live lookup table.
#[map]
pub static VIPS: HashMap<VipKey, VipMeta> = HashMap::with_max_entries(DEFAULT_VIP_CAPACITY, 0);

/// Backend id → backend. Id 0 is reserved and never serving.
#[map]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(DEFAULT_BACKEND_CAPACITY, 0);

/// Backend id → the next hop the daemon resolved for it (IPIP, and DSR without a
/// configured MAC); `ifindex` 0: none, ask the FIB.
#[map]
pub static NEXT_HOPS: Array<NextHop> = Array::with_max_entries(DEFAULT_BACKEND_CAPACITY, 0);

/// Frames forwarded through `bpf_fib_lookup` because their backend had no resolved next
/// hop in `NEXT_HOPS` (one counter; the daemon re-resolves when it moves).
#[map]
pub static FIB_FALLBACKS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Storage of every VIP's lookup table (Maglev slots holding backend ids). The daemon sizes
/// it at load time and owns the allocation; each VIP's `VipMeta` says where its table is.
/// Elements sit at an 8-byte stride (the kernel rounds array values up to 8 bytes).
#[map]
pub static TABLES: Array<u32> = Array::with_max_entries(DEFAULT_TABLE_SLOTS, BPF_F_MMAPABLE);

/// The connection table: 5-tuple → backend, as slots of one cache line each, probed from
/// the flow's keyed hash (`lb_common::flow_table`). Sized by the daemon at load time (twice
/// `daemon.flow_table_size` or more, a power of two) and shared with it through a mapping
/// (its sweep reads and deletes slots in place). Nothing evicts an entry but the daemon,
/// so a flood of new flows cannot take a pinned connection's slot; a new flow that finds
/// no free slot is forwarded by its hash without one (counted in `FLOOD_GUARD`), and the
/// daemon's sweep frees room when the table passes its high-water mark (closing flows,
/// then those never seen again, then the least recently seen), as well as expiring idle
/// flows. Every CPU (and the daemon) sees every flow. Measured against the kernel's hash
/// map: about 30 ns less per established packet (a hash computed inline and one line
/// read, no helper call) and per new flow.
#[map]
pub static FLOWS: Array<FlowSlot> =
    Array::with_max_entries(flow_slots_for(DEFAULT_FLOW_ENTRIES), BPF_F_MMAPABLE);

/// The flow table's shape and hash secret (one entry), written once by the daemon that
/// made the table and pinned beside it.
#[map]
pub static FLOW_TABLE: Array<FlowTableMeta> = Array::with_max_entries(1, 0);

/// The region of `FLOWS` in use (one entry, `lb_common::FlowRegion` packed in a `u64`):
/// flows are hashed into its slots only, so the memory packets touch grows with the flows,
/// not with the table's capacity. Written by the daemon (through a mapping, atomically)
/// as it grows or shrinks the region; while it moves flows, it holds the old mask too.
#[map]
pub static FLOW_REGION: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Per-VIP cursor of the sequence schedulers (`SCHED_SEQUENCE`), indexed by `vip_id`: one
/// shared counter (not per CPU), stepped atomically, so rr/wrr/lc keep their order across
/// CPUs. The daemon resets it when it writes a new sequence.
#[map]
pub static CURSORS: Array<u64> = Array::with_max_entries(DEFAULT_VIP_CAPACITY, 0);

/// Per-CPU scratch space for `bpf_fib_lookup`'s 64-byte parameter block (kept off the
/// stack, see `forward::fib`).
#[map]
pub static FIB_SCRATCH: PerCpuArray<aya_ebpf::bindings::bpf_fib_lookup> =
    PerCpuArray::with_max_entries(1, 0);

/// Global settings, one entry.
#[map]
pub static CONFIG: Array<GlobalConfig> = Array::with_max_entries(1, 0);

/// Per-VIP counters, indexed by `VipMeta::vip_id`.
#[map]
pub static VIP_STATS: PerCpuArray<Counters> =
    PerCpuArray::with_max_entries(DEFAULT_VIP_CAPACITY, 0);

/// Per-backend counters, indexed by backend id.
#[map]
pub static BACKEND_STATS: PerCpuArray<Counters> =
    PerCpuArray::with_max_entries(DEFAULT_BACKEND_CAPACITY, 0);

/// One counter per pass/drop/forward reason (`lb_common::reason`), for the packets
/// without a VIP (not addressed to one, or not parsed as far as its lookup).
#[map]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(reason::COUNT, 0);

/// The same reasons per VIP (`vip_id * reason::COUNT + code`), for the packets whose VIP
/// is known: each packet counts in this map or in `REASONS`, never both.
#[map]
pub static VIP_REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(reason::VIP_ENTRIES, 0);

/// Per-CPU token bucket of the new flows that may take a flow-table entry, and the count
/// of those forwarded without one (`flood.rs`).
#[map]
pub static FLOOD_GUARD: PerCpuArray<FloodGuard> = PerCpuArray::with_max_entries(1, 0);

/// The flood guard's rate (new flows per CPU per second; 0: no limit), written by the
/// daemon.
#[map]
pub static FLOOD_LIMIT: Array<FloodLimit> = Array::with_max_entries(1, 0);

/// The flow clock: now, in `FLOW_TIME_SHIFT` ticks of `CLOCK_MONOTONIC`, written by the
/// daemon as it changes (see `FLOW_TIME_SHIFT`); flows are stamped with it.
#[map]
pub static CLOCK: Array<u32> = Array::with_max_entries(1, 0);

/// Per-CPU token bucket of the ICMP too-big messages (`forward::too_big`).
#[map]
pub static ICMP_LIMIT: PerCpuArray<IcmpLimit> = PerCpuArray::with_max_entries(1, 0);
