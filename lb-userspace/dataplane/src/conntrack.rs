//! Active connections per backend, from the kernel's connection tracking.
//!
//! The XDP program counts, per backend and per VIP (per-CPU `Counters`): `new_flows` when a
//! connection opens (a flow is inserted, or a SYN reopens a closing flow) and `closes` when
//! it closes (the client's first FIN or RST, or the flow leaving a backend that stopped
//! serving). It stamps every flow with the last time it saw it (`FlowValue::last_seen`),
//! read from the flow clock the daemon keeps ([`Clock`]: the `CLOCK` array, written as the
//! tick changes) rather than from a helper call per packet.
//!
//! The daemon turns that into active counts in two ways, combined:
//!
//! - **sweep** (every `daemon.conntrack_sweep_ms`, off the data-plane lock): walk the flow
//!   table, delete flows idle for longer than the protocol's idle timeout (open) or the
//!   close timeout (closing), and count the open ones per backend (a flow counts for its
//!   slot's backend only if it was pinned to that backend, the slot's generation: a
//!   removed backend's flows do not count for one that reuses the slot): that is the exact
//!   figure at the time of the sweep (expiries included). Nothing else deletes flows:
//!   when the flows left pass [`HIGH_WATER`] of the capacity, the sweep also evicts down
//!   to [`LOW_WATER`] (closing flows first, then those never seen after their first
//!   packet, then the least recently seen), so new flows find room again; then it tidies
//!   the deleted slots ([`FlowTable::tidy`]);
//! - **between sweeps**: active = the sweep's count + opens − closes since the counters
//!   snapshot taken just before that sweep.
//!
//! So a count is at most one counter read old (the daemon reads counters when it asks);
//! what the counters cannot see (an idle flow, an eviction) is corrected at the next sweep.
//! A flow opened or closed *during* a sweep's walk could be counted twice or not at all:
//! by the walk, and by the counters since the snapshot taken before it. The sweep
//! therefore walks again (at most 3 walks) until the counters did not move during a walk.
//! A backend whose counters still moved during the last walk (constant churn: a burst of
//! new connections) is not rebased on that walk: its count goes on from its last exact
//! base, less the open flows of its that this sweep deleted (idle or evicted: what its
//! counters cannot see), so a burst does not skew it. Only a backend that never had an
//! exact base (adopted at a restart, and churning since) takes the walk's count as it is,
//! off by the flows that opened or closed while it ran, until a sweep during which it is
//! quiet. (Left: a flow is in the table a few instructions before the program counts its
//! open, and a FIN marks it closing before its close is counted; a walk that ends in
//! between is off by that flow until the next sweep.)

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use aya::maps::{Array, MapData, PerCpuArray};
use lb_common::{
    Counters, FLOW_CLOSING, FLOW_NEW, FLOW_TIME_SHIFT, FlowValue, PROTO_UDP, flow_is_open, names,
    region_change, region_overfull,
};

use super::{BackendRecord, DataplaneError, FlowTable, Resized};

/// How long flows may stay idle before the daemon expires them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// An open TCP connection with no packet for this long is closed (IPVS: 900 s).
    pub tcp_idle: Duration,
    /// A TCP connection whose close was seen keeps its backend this long (IPVS: 120 s).
    pub tcp_fin: Duration,
    /// A UDP flow with no packet for this long is closed (IPVS: 300 s).
    pub udp_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_idle: Duration::from_secs(900),
            tcp_fin: Duration::from_secs(120),
            udp_idle: Duration::from_secs(300),
        }
    }
}

/// Now on the clock the kernel stamps flows with (`CLOCK_MONOTONIC_COARSE`), in
/// `FLOW_TIME_SHIFT` ticks.
pub fn now_ticks() -> u32 {
    use nix::{
        sys::time::TimeSpec,
        time::{ClockId, clock_gettime},
    };
    // Cannot fail for a clock the kernel has; zero (as before) if it ever did.
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE).unwrap_or(TimeSpec::new(0, 0));
    let ns = (ts.tv_sec() as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec() as u64);
    (ns >> FLOW_TIME_SHIFT) as u32
}

/// The flow clock's writer: keeps the `CLOCK` array at [`now_ticks`], which the program
/// stamps flows with. [`Clock::tick`] writes only when the tick changed (about once a
/// second); a daemon calls it every [`Clock::PERIOD`], so a stamp is at most that much
/// behind the time of its packet.
pub struct Clock {
    map: Array<MapData, u32>,
    last: Option<u32>,
}

impl Clock {
    /// How often the daemon calls [`Clock::tick`].
    pub const PERIOD: Duration = Duration::from_millis(100);

    pub(super) fn new(map: Array<MapData, u32>) -> Self {
        Self { map, last: None }
    }

    /// Write the current tick if it changed since the last write; the tick written.
    pub fn tick(&mut self) -> Result<u32, DataplaneError> {
        let now = now_ticks();
        if self.last != Some(now) {
            self.map.set(0, now, 0).map_err(map_err(names::CLOCK))?;
            self.last = Some(now);
        }
        Ok(now)
    }
}

/// A duration in flow-time ticks, rounded up (a flow is never expired early).
fn ticks(d: Duration) -> u32 {
    let t = 1u128 << FLOW_TIME_SHIFT;
    u32::try_from(d.as_nanos().div_ceil(t)).unwrap_or(u32::MAX)
}

/// One backend's opens and closes, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenClose {
    pub opens: u64,
    pub closes: u64,
}

impl From<Counters> for OpenClose {
    fn from(c: Counters) -> Self {
        Self {
            opens: c.new_flows,
            closes: c.closes,
        }
    }
}

/// What one sweep found.
#[derive(Clone, Debug, Default)]
pub struct Sweep {
    /// The generation of each backend slot it counted: its counts are of that backend, not
    /// of one that took the slot since.
    pub generations: HashMap<u32, u32>,
    /// Open, not idle flows per backend id (flows of that backend's generation only).
    pub active: HashMap<u32, u64>,
    /// The counters just before the walk.
    pub counters: HashMap<u32, OpenClose>,
    /// Backends whose counters moved during the last walk (its count of theirs is not
    /// exact), each with the open flows of theirs this sweep deleted (expired or evicted).
    pub unsettled: HashMap<u32, u64>,
    pub scanned: u64,
    /// Open flows expired for idleness.
    pub expired: u64,
    /// Closing flows removed after the close timeout.
    pub reaped: u64,
    /// Flows evicted (in [`eviction_rank`] order) because the table was past its
    /// high-water mark.
    pub evicted: u64,
    /// Deleted slots turned back into empty ones ([`FlowTable::tidy`], after a sweep that
    /// deleted flows).
    pub tidied: u64,
    /// The flow table's region grown or shrunk for the flows it holds ([`Sweeper::fit_region`]).
    pub resized: Option<Resized>,
    pub took: Duration,
}

impl Sweep {
    /// The sweep deleted an open flow of `backend_id` (counted for an unsettled backend).
    fn deleted_open(&mut self, backend_id: u32) {
        if let Some(n) = self.unsettled.get_mut(&backend_id) {
            *n += 1;
        }
    }
}

/// The backends a sweep counts, by slot id: a flow counts for its slot's backend only if
/// it was pinned to that backend, not to an earlier one that had the slot (a removed
/// backend's flows stay in the table until they expire or their next packet moves them,
/// and must not count for the backend that reuses the slot).
struct Counted(Vec<Option<u32>>);

impl Counted {
    fn new(backends: &[BackendRecord]) -> Self {
        let len = backends
            .iter()
            .map(|b| b.id as usize + 1)
            .max()
            .unwrap_or(0);
        let mut generation = vec![None; len];
        for b in backends {
            generation[b.id as usize] = Some(b.generation);
        }
        Self(generation)
    }

    /// Whether the open flow `v` counts for its backend.
    fn counts(&self, v: &FlowValue) -> bool {
        flow_is_open(v.state)
            && self.0.get(v.backend_id as usize).copied().flatten() == Some(v.generation)
    }
}

/// The share of the flow table past which a sweep evicts flows (in per mille).
pub const HIGH_WATER: u64 = 900;
/// What a sweep that evicts leaves of the table (in per mille).
pub const LOW_WATER: u64 = 800;

/// Which flows go first when the table must shrink: closing ones, then those not seen
/// since the packet that opened them (a flood's, a one-packet flow's), then the others;
/// within each, the longest idle (`idle` as [`idle_ticks`] gives it: a stamp from the
/// future counts as not idle).
fn eviction_rank(v: &FlowValue, idle: u32) -> u64 {
    let class = match v.state {
        FLOW_CLOSING => 2,
        FLOW_NEW => 1,
        _ => 0,
    };
    let idle = if idle < u32::MAX / 2 { idle } else { 0 };
    (class << 32) | u64::from(idle)
}

/// How many flows to evict from a table of `capacity` entries holding `kept` after expiry:
/// none up to the high-water mark, else down to the low-water mark.
fn excess(kept: u64, capacity: u32) -> u64 {
    let capacity = u64::from(capacity);
    if kept * 1000 <= capacity * HIGH_WATER {
        0
    } else {
        kept - capacity * LOW_WATER / 1000
    }
}

/// The lowest rank that goes, and how many flows of exactly that rank go, to evict `need`
/// flows whose ranks are counted in `ranks`: every flow ranked above it goes too.
fn eviction_cut(ranks: &BTreeMap<u64, u64>, need: u64) -> Option<(u64, u64)> {
    if need == 0 {
        return None;
    }
    let mut left = need;
    for (&rank, &n) in ranks.iter().rev() {
        if n >= left {
            return Some((rank, left));
        }
        left -= n;
    }
    // Fewer flows than asked for: all of them.
    ranks.keys().next().map(|&r| (r, ranks[&r]))
}

/// Whether the `j`-th of `of` candidates is one of the `need` picked, spread evenly over
/// them: the `j` at which `need * j / of` steps up.
fn spread_pick(j: u64, need: u64, of: u64) -> bool {
    let of = of.max(1);
    (j + 1) * need / of > j * need / of
}

/// Walks the flow table on its own mapping, so the daemon does not hold the data plane
/// while it runs.
pub struct Sweeper {
    flows: FlowTable,
    stats: PerCpuArray<MapData, Counters>,
    pub timeouts: Timeouts,
    /// The flow table's entries.
    capacity: u32,
    /// The tick this sweeper started at: no flow counts as idle for longer than since then.
    /// A stamp from before it was written while no daemon kept the clock (it stood still:
    /// the flow may have been busy until now), or by an earlier daemon.
    since: u32,
    /// Seed of the region checks' samples.
    samples: u64,
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

impl Sweeper {
    pub(super) fn new(
        flows: FlowTable,
        stats: PerCpuArray<MapData, Counters>,
        timeouts: Timeouts,
        capacity: u32,
    ) -> Self {
        Self {
            flows,
            stats,
            timeouts,
            capacity,
            since: now_ticks(),
            samples: u64::from(now_ticks()),
        }
    }

    /// Read the open/close counters of backend `id`.
    pub fn counters(&self, id: u32) -> Result<OpenClose, DataplaneError> {
        read(&self.stats, id)
    }

    /// Expire idle flows and count the open ones of `backends` (each by its slot and
    /// generation).
    pub fn sweep(&mut self, backends: &[BackendRecord]) -> Result<Sweep, DataplaneError> {
        let started = Instant::now();
        let ids: Vec<u32> = backends.iter().map(|b| b.id).collect();
        let ids = &ids[..];
        let counted = Counted::new(backends);
        let mut out = Sweep {
            generations: backends.iter().map(|b| (b.id, b.generation)).collect(),
            ..Sweep::default()
        };
        let now = now_ticks();
        let (tcp_idle, tcp_fin, udp_idle) = (
            ticks(self.timeouts.tcp_idle),
            ticks(self.timeouts.tcp_fin),
            ticks(self.timeouts.udp_idle),
        );
        let mut doomed = Vec::new();
        // The flows that stay, counted by eviction rank (in case the table must shrink).
        let mut ranks = BTreeMap::<u64, u64>::new();
        // A flow that opens or closes during the walk may be counted by both the walk and
        // the counters (or by neither) until the next sweep. So the walk is repeated (at
        // most `WALKS` times) until the backends' counters did not move while it ran: then
        // its count and its snapshot agree exactly.
        for walk in 1..=WALKS {
            let before = self.snapshot(ids)?;
            out.active = ids.iter().map(|&id| (id, 0)).collect();
            out.scanned = 0;
            doomed.clear();
            ranks.clear();
            for e in self.flows.iter() {
                let (k, v) = (e.key, e.value);
                out.scanned += 1;
                let idle = idle_ticks(now, v.last_seen, self.since);
                let limit = match (k.proto, v.state) {
                    (_, FLOW_CLOSING) => tcp_fin,
                    (PROTO_UDP, _) => udp_idle,
                    _ => tcp_idle,
                };
                // `idle` beyond half the u32 range is a stamp from the future (a clock read
                // between the kernel's stamp and ours): not idle.
                if idle > limit && idle < u32::MAX / 2 {
                    doomed.push(e);
                    continue;
                }
                if counted.counts(&v) {
                    *out.active.entry(v.backend_id).or_insert(0) += 1;
                }
                *ranks.entry(eviction_rank(&v, idle)).or_insert(0) += 1;
            }
            out.counters = before;
            let after = self.snapshot(ids)?;
            if after == out.counters {
                break;
            }
            if walk == WALKS {
                out.unsettled = ids
                    .iter()
                    .filter(|&id| after.get(id) != out.counters.get(id))
                    .map(|&id| (id, 0))
                    .collect();
            }
        }
        for e in doomed {
            // A packet may have arrived since the walk: only delete an entry unchanged.
            if !self.flows.remove_if_unchanged(&e) {
                if let Some(now) = self.flows.read(e.index)
                    && now.key == e.key
                    && counted.counts(&now.value)
                {
                    *out.active.entry(now.value.backend_id).or_insert(0) += 1;
                }
                continue;
            }
            if flow_is_open(e.value.state) {
                out.expired += 1;
                if counted.counts(&e.value) {
                    out.deleted_open(e.value.backend_id);
                }
            } else {
                out.reaped += 1;
            }
        }
        let kept: u64 = ranks.values().sum();
        if let Some(cut) = eviction_cut(&ranks, excess(kept, self.capacity)) {
            let of = ranks.get(&cut.0).copied().unwrap_or(cut.1);
            self.evict(cut, of, now, &counted, &mut out);
        }
        // Only after deleting: an idle table is not walked twice.
        if out.expired + out.reaped + out.evicted > 0 {
            out.tidied = self.flows.tidy();
        }
        out.resized = self.fit_region(kept.saturating_sub(out.evicted));
        out.took = started.elapsed();
        Ok(out)
    }

    /// The flow table, on this sweeper's own mapping (tests that resize its region while
    /// the program runs on another thread). Only with the `test-helpers` feature.
    #[cfg(feature = "test-helpers")]
    pub fn flow_table(&self) -> &FlowTable {
        &self.flows
    }

    /// Grow or shrink the flow table's region if `flows` flows call for it
    /// ([`lb_common::region_change`]), or settle a change a daemon left under way.
    pub fn fit_region(&self, flows: u64) -> Option<Resized> {
        let t = &self.flows;
        let r = t.region();
        if r.old_mask != 0 {
            return Some(t.resize(r.slots()));
        }
        let want = region_change(flows, r.slots(), t.slots())?;
        Some(t.resize(want))
    }

    /// Between sweeps: grow the region at once if a sample of it says it is past the load at
    /// which a sweep would (a burst of new flows fills it faster than sweeps come). Cheap:
    /// 4096 slots read, unless it must grow (then the region is counted, and flows move).
    pub fn check_region(&mut self) -> Option<Resized> {
        let t = &self.flows;
        let r = t.region();
        if r.slots() >= t.slots() {
            return None;
        }
        self.samples = self.samples.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let (used, seen) = t.sample_load(16, self.samples);
        if !region_overfull(used, seen) {
            return None;
        }
        self.fit_region(t.count() as u64)
    }

    /// Evict every flow ranked above `cut.0`, and `cut.1` of the `of` ranked exactly
    /// `cut.0` ([`eviction_cut`]), in a second walk; an entry seen again since the first
    /// walk ranks lower now and may stay. Those of the cut rank that go are spread evenly
    /// over the table ([`spread_pick`]), not the first ones in slot order: a run of
    /// evicted slots next to a run of kept ones would leave long runs of used slots,
    /// whose probes find no room.
    fn evict(&mut self, cut: (u64, u64), of: u64, now: u32, counted: &Counted, out: &mut Sweep) {
        let (rank, need) = cut;
        let (mut seen, mut taken) = (0, 0);
        let mut victims = Vec::new();
        for e in self.flows.iter() {
            let r = eviction_rank(&e.value, idle_ticks(now, e.value.last_seen, self.since));
            let go = r > rank || (r == rank && spread_pick(seen, need, of) && taken < need);
            if r == rank {
                seen += 1;
                taken += u64::from(go);
            }
            if go {
                victims.push(e);
            }
        }
        for e in victims {
            // As for expiry: only an entry unchanged since it was ranked.
            if !self.flows.remove_if_unchanged(&e) {
                continue;
            }
            out.evicted += 1;
            if counted.counts(&e.value) {
                out.deleted_open(e.value.backend_id);
                if let Some(n) = out.active.get_mut(&e.value.backend_id) {
                    *n = n.saturating_sub(1);
                }
            }
        }
    }
}

/// How long a flow stamped `seen` has been idle at `now`, for a sweeper that started at
/// `since` (wrapping tick arithmetic): from its stamp, but from no earlier than `since`. A
/// result beyond half the `u32` range is a stamp from the future.
fn idle_ticks(now: u32, seen: u32, since: u32) -> u32 {
    let idle = now.wrapping_sub(seen);
    let up = now.wrapping_sub(since);
    if idle < u32::MAX / 2 && idle > up {
        up
    } else {
        idle
    }
}

/// How many times a sweep walks the flow table, at most, to find a walk during which no
/// counted backend opened or closed a flow.
const WALKS: u32 = 3;

impl Sweeper {
    /// The open/close counters of backends `ids`, in one batch read of the slots in use.
    fn snapshot(&self, ids: &[u32]) -> Result<HashMap<u32, OpenClose>, DataplaneError> {
        let used = ids.iter().max().map_or(0, |m| m.saturating_add(1));
        let all = super::batch::sum_first(&self.stats, used, |a: &mut Counters, c: &Counters| {
            a.new_flows += c.new_flows;
            a.closes += c.closes;
        })
        .map_err(map_err(names::BACKEND_STATS))?;
        Ok(ids
            .iter()
            .map(|&id| (id, all.get(id as usize).copied().unwrap_or_default().into()))
            .collect())
    }
}

fn read(stats: &PerCpuArray<MapData, Counters>, id: u32) -> Result<OpenClose, DataplaneError> {
    let per_cpu = stats.get(&id, 0).map_err(map_err(names::BACKEND_STATS))?;
    Ok(per_cpu.iter().fold(OpenClose::default(), |mut a, c| {
        a.opens += c.new_flows;
        a.closes += c.closes;
        a
    }))
}

/// One backend's base: which backend (the slot's generation), its active count at a
/// counter snapshot, whether that count is exact (a slot started empty, or a sweep during
/// which its counters did not move), and the open flows of its that sweeps deleted since
/// (what its counters cannot see).
#[derive(Clone, Copy, Debug, Default)]
struct Base {
    generation: u32,
    active: u64,
    at: OpenClose,
    exact: bool,
    gone: u64,
}

impl Base {
    /// `active` connections of the slot's backend `generation` at counters `at`, none
    /// deleted since.
    const fn new(generation: u32, active: u64, at: OpenClose, exact: bool) -> Self {
        Self {
            generation,
            active,
            at,
            exact,
            gone: 0,
        }
    }
}

/// The last sweep's counts and the counter snapshot they go with, per backend id.
#[derive(Debug, Default)]
pub struct Book {
    base: HashMap<u32, Base>,
    pub last_sweep: Option<(Instant, Duration, u64)>,
    /// Flows expired for idleness, closing flows reaped, and flows evicted for room, since
    /// the daemon started.
    pub expired_total: u64,
    pub reaped_total: u64,
    pub evicted_total: u64,
}

impl Book {
    /// Take a sweep's result as the new base: its count, for every backend whose counters
    /// did not move while it walked; a backend whose did keeps its exact base, less the
    /// open flows of its that the sweep deleted (and takes the walk's count only if it had
    /// no exact base). A slot that another backend took while the sweep ran (its base
    /// [reset](Self::reset) for a newer generation than the sweep counted) keeps its base:
    /// the sweep's count is of the backend that had it.
    pub fn rebase(&mut self, s: &Sweep) {
        for (id, c) in &s.counters {
            let Some(&generation) = s.generations.get(id) else {
                continue;
            };
            let base = self.base.get_mut(id);
            if let Some(b) = &base
                && b.generation != generation
            {
                continue;
            }
            if let Some(&deleted) = s.unsettled.get(id)
                && let Some(b) = base
                && b.exact
            {
                b.gone += deleted;
                continue;
            }
            let active = s.active.get(id).copied().unwrap_or(0);
            let exact = !s.unsettled.contains_key(id);
            self.base
                .insert(*id, Base::new(generation, active, *c, exact));
        }
        self.last_sweep = Some((Instant::now(), s.took, s.scanned));
        self.expired_total += s.expired;
        self.reaped_total += s.reaped;
        self.evicted_total += s.evicted;
    }

    /// A backend slot starts (or restarts) from zero with these counters, for its backend
    /// of `generation`.
    pub fn reset(&mut self, id: u32, generation: u32, now: OpenClose) {
        self.base.insert(id, Base::new(generation, 0, now, true));
    }

    /// Active connections of backend `id` given its counters now.
    pub fn active(&self, id: u32, now: OpenClose) -> u64 {
        let b = self.base.get(&id).copied().unwrap_or_default();
        let opened = now.opens.saturating_sub(b.at.opens);
        let closed = now.closes.saturating_sub(b.at.closes);
        (b.active + opened).saturating_sub(closed + b.gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oc(opens: u64, closes: u64) -> OpenClose {
        OpenClose { opens, closes }
    }

    /// A sweep that counted `active` open flows of backend slot `id` (its backend of
    /// `generation`) at counters `at`, which did not move while it walked.
    fn swept(id: u32, generation: u32, active: u64, at: OpenClose) -> Sweep {
        let mut s = Sweep::default();
        s.generations.insert(id, generation);
        s.active.insert(id, active);
        s.counters.insert(id, at);
        s
    }

    #[test]
    fn book_adds_opens_and_subtracts_closes_since_the_sweep() {
        let mut b = Book::default();
        b.rebase(&swept(7, 1, 10, oc(100, 90)));
        let now = oc(105, 93);
        assert_eq!(b.active(7, now), 12);
        // Never negative, even if closes outrun what the base knew of.
        assert_eq!(b.active(7, oc(100, 200)), 0);
        b.reset(7, 1, now);
        assert_eq!(b.active(7, oc(106, 93)), 1);
    }

    /// A sweep whose walk raced with a backend's opens does not replace that backend's
    /// exact count with its own (which may count those flows twice): the count goes on
    /// from the exact base, less the open flows the sweep deleted.
    #[test]
    fn a_churning_backend_keeps_its_exact_base_less_what_the_sweep_deleted() {
        let mut b = Book::default();
        b.reset(7, 1, oc(100, 90));
        // The walk counted 8 (some of the 3 flows opened while it ran, twice); the sweep
        // expired one open flow of backend 7.
        let mut churned = swept(7, 1, 8, oc(103, 90));
        churned.unsettled.insert(7, 1);
        b.rebase(&churned);
        // Since the reset: 5 opened, 1 closed, 1 expired.
        let now = oc(105, 91);
        assert_eq!(b.active(7, now), 3);

        // Without an exact base (a backend adopted at a restart) the walk's count is all
        // there is...
        let mut adopted = Book::default();
        adopted.rebase(&churned);
        assert_eq!(adopted.active(7, now), 8 + 2 - 1);
        // ... until a sweep during which its counters did not move,
        adopted.rebase(&swept(7, 1, 3, now));
        assert_eq!(adopted.active(7, now), 3);
        // after which a churning sweep no longer replaces it.
        let mut again = churned.clone();
        again.active.insert(7, 50);
        again.counters.insert(7, now);
        again.unsettled.insert(7, 0);
        adopted.rebase(&again);
        assert_eq!(adopted.active(7, oc(106, 91)), 4);
    }

    /// A sweep that counted a slot's earlier backend does not replace the base of the
    /// backend that took the slot while it walked (reset for the new generation).
    #[test]
    fn a_sweep_of_a_slots_earlier_backend_leaves_the_new_backends_base() {
        let mut b = Book::default();
        b.reset(7, 1, oc(0, 0));
        let old = swept(7, 1, 30, oc(40, 10));
        // The slot changes hands before that sweep is taken in; its counters carry the old
        // backend's life.
        b.reset(7, 2, oc(45, 12));
        b.rebase(&old);
        assert_eq!(b.active(7, oc(47, 12)), 2);
        // The next sweep counts the new backend: taken.
        b.rebase(&swept(7, 2, 2, oc(47, 12)));
        assert_eq!(b.active(7, oc(48, 13)), 2);
    }

    /// An open flow counts for its slot's backend only if it was pinned to that backend
    /// (the same generation); closing flows and slots not counted never.
    #[test]
    fn a_flow_counts_for_its_slots_backend_of_its_generation_only() {
        let counted = Counted::new(&[
            BackendRecord {
                id: 3,
                generation: 2,
            },
            BackendRecord {
                id: 1,
                generation: 7,
            },
        ]);
        let v = |backend_id, generation, state| FlowValue {
            backend_id,
            generation,
            last_seen: 0,
            state,
        };
        assert!(counted.counts(&v(3, 2, FLOW_NEW)));
        assert!(counted.counts(&v(1, 7, lb_common::FLOW_OPEN)));
        assert!(
            !counted.counts(&v(3, 1, lb_common::FLOW_OPEN)),
            "an earlier backend's"
        );
        assert!(!counted.counts(&v(3, 2, FLOW_CLOSING)), "closing");
        assert!(!counted.counts(&v(2, 2, FLOW_NEW)), "a slot not counted");
        assert!(
            !counted.counts(&v(9, 2, FLOW_NEW)),
            "past the slots counted"
        );
    }

    /// The clock is read (a failed read would give 0; a host up for over a tick is past it).
    #[test]
    fn now_is_read_from_the_monotonic_clock() {
        let (a, b) = (now_ticks(), now_ticks());
        assert!(a > 0 && b >= a, "{a} {b}");
    }

    #[test]
    fn a_table_past_its_high_water_mark_shrinks_to_the_low_one() {
        assert_eq!(excess(0, 1000), 0);
        assert_eq!(excess(900, 1000), 0);
        assert_eq!(excess(901, 1000), 101);
        assert_eq!(excess(1000, 1000), 200);
        // A table adopted with more entries than this build's capacity figure: still
        // down to the low-water mark.
        assert_eq!(excess(1 << 20, 1 << 20), (1 << 20) - (1 << 20) * 4 / 5);
    }

    #[test]
    fn closing_flows_go_first_then_those_never_seen_again_then_the_longest_idle() {
        let v = |state| FlowValue {
            backend_id: 1,
            generation: 1,
            last_seen: 0,
            state,
        };
        let closing_fresh = eviction_rank(&v(FLOW_CLOSING), 0);
        let new_fresh = eviction_rank(&v(FLOW_NEW), 0);
        let open_idle = eviction_rank(&v(lb_common::FLOW_OPEN), 800);
        let open_busy = eviction_rank(&v(lb_common::FLOW_OPEN), 1);
        assert!(closing_fresh > new_fresh && new_fresh > open_idle && open_idle > open_busy);
        assert!(eviction_rank(&v(FLOW_CLOSING), 5) > closing_fresh);
        assert!(eviction_rank(&v(FLOW_NEW), 5) > new_fresh);
        // A stamp from the future is not idle.
        assert_eq!(eviction_rank(&v(FLOW_NEW), u32::MAX - 3), new_fresh);
    }

    #[test]
    fn the_cut_takes_the_highest_ranks_and_part_of_the_last() {
        let ranks: BTreeMap<u64, u64> = [(1, 10), (5, 3), (9, 2)].into();
        assert_eq!(eviction_cut(&ranks, 0), None);
        assert_eq!(eviction_cut(&ranks, 1), Some((9, 1)));
        assert_eq!(eviction_cut(&ranks, 2), Some((9, 2)));
        assert_eq!(eviction_cut(&ranks, 4), Some((5, 2)));
        assert_eq!(eviction_cut(&ranks, 6), Some((1, 1)));
        // More than there are: all of them.
        assert_eq!(eviction_cut(&ranks, 100), Some((1, 10)));
        assert_eq!(eviction_cut(&BTreeMap::new(), 3), None);
    }

    #[test]
    fn ticks_round_up() {
        assert_eq!(ticks(Duration::ZERO), 0);
        assert_eq!(ticks(Duration::from_nanos(1)), 1);
        assert_eq!(ticks(Duration::from_secs(2)), 2);
        assert_eq!(ticks(Duration::from_secs(900)), 839);
    }

    #[test]
    fn idle_counts_from_the_stamp_but_not_before_the_sweeper_started() {
        // Stamped while this sweeper ran: idle since the stamp.
        assert_eq!(idle_ticks(100, 90, 50), 10);
        assert_eq!(idle_ticks(100, 100, 50), 0);
        // Stamped before it started (an earlier daemon's clock, or none: 0): idle since
        // the start at most, the flow may have been busy while the clock stood still.
        assert_eq!(idle_ticks(100, 20, 50), 50);
        assert_eq!(idle_ticks(100, 0, 50), 50);
        // A stamp from the future stays one (beyond half the range: not idle).
        assert!(idle_ticks(100, 101, 50) > u32::MAX / 2);
        // Across the wrap of the tick counter.
        assert_eq!(idle_ticks(5, u32::MAX - 4, u32::MAX - 10), 10);
        assert_eq!(idle_ticks(5, u32::MAX - 20, u32::MAX - 10), 16);
    }

    #[test]
    fn evictions_of_one_rank_are_spread_over_the_table() {
        for (need, of) in [(0, 10), (1, 10), (3, 10), (7, 10), (10, 10), (77, 128)] {
            let picks: Vec<u64> = (0..of).filter(|&j| spread_pick(j, need, of)).collect();
            assert_eq!(picks.len() as u64, need, "{need} of {of}");
            // No two picks further apart than an even spacing allows.
            for w in picks.windows(2) {
                assert!(
                    w[1] - w[0] <= of.div_ceil(need.max(1)),
                    "{need} of {of}: {picks:?}"
                );
            }
        }
    }
}
