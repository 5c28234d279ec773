//! Making the maps match a [`Desired`] state without disturbing live flows:
//!
//! 1. global settings;
//! 2. per VIP: backend slots (unchanged backends keep slot and generation, so their flows
//!    stay), the Maglev table built in userspace and written into the half no packet reads,
//!    then one `VIPS` update that switches `table_base`/`table_size` together;
//! 3. only after the new tables are live: backends that left are marked not serving (their
//!    flows move on the next packet) and their slots freed; VIPs that left are removed.

mod hops;

use std::{collections::BTreeMap, net::IpAddr, time::Instant};

use lb_common::{BACKEND_F_HAS_MAC, BACKEND_F_SERVING, Backend, GlobalConfig, VipMeta, names};

use super::conntrack::OpenClose;

use super::{
    Dataplane, DataplaneError, Desired, DesiredVip, VipIdent,
    layout::{BackendRecord, VipRecord},
};
use sluice_core::{fingerprint, model::addr_bytes};

use crate::{maglev, sched};

/// How long userspace waits after switching a VIP to a new table before it reuses what the
/// old one referenced (backend slots, table halves). An XDP program reads `VipMeta`, then
/// the table slot, then the backend, within one run of well under a microsecond, inside the
/// NAPI poll's RCU read section (tens of microseconds at most); 5 ms is a wide margin, and
/// keeps an edit's effect well under the 20 ms target.
pub use self::hops::{HopStatus, Hops, needs_hop};

pub const GRACE: std::time::Duration = std::time::Duration::from_millis(5);

/// What a publish made unreachable, retired after the grace period.
#[derive(Default)]
struct Deferred {
    backends: Vec<(BackendRecord, u32)>,
    regions: Vec<(u32, u32)>,
    vip_ids: Vec<u32>,
}

/// What a publish changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishReport {
    pub vips_added: usize,
    pub vips_removed: usize,
    pub backends_added: usize,
    pub backends_removed: usize,
    pub tables_built: usize,
    /// Time spent building tables, in microseconds.
    pub build_us: u128,
}

fn prefix_mask_v4(len: u8) -> [u8; 4] {
    let m: u32 = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    };
    m.to_be_bytes()
}

impl Dataplane {
    /// Make the maps match `desired`. Validation (config rules) happens before; errors here
    /// are capacity or kernel errors.
    pub fn publish(&mut self, desired: &Desired) -> Result<PublishReport, DataplaneError> {
        self.check_capacity(desired)?;
        let mut report = PublishReport::default();

        let g = &desired.global;
        let mask = prefix_mask_v4(g.encap_v4.1);
        let mut v4 = g.encap_v4.0.octets();
        for (b, m) in v4.iter_mut().zip(mask) {
            *b &= m;
        }
        let cfg = GlobalConfig {
            encap_v4_prefix: v4,
            encap_v4_mask: mask,
            encap_v6_prefix: g.encap_v6.0.octets(),
            hash_seed: g.hash_seed,
            icmp_too_big_per_sec: g.icmp_too_big_per_sec,
            vip_filter: [0; 4],
        };
        // The filter covers the VIPs about to be published and those still published (a
        // VIP being removed keeps its bit until the next publish: a spurious bit only costs
        // a hash lookup, a missing one would pass a VIP's traffic).
        let mut cfg = cfg;
        for key in desired
            .vips
            .iter()
            .map(|v| v.ident.key())
            .chain(self.layout.vips.keys().map(VipIdent::key))
        {
            let bit = lb_common::vip_filter_bit(&key.addr);
            cfg.vip_filter[(bit >> 6) as usize] |= 1 << (bit & 63);
        }
        self.config
            .set(0, cfg, 0)
            .map_err(|source| DataplaneError::Map {
                name: names::CONFIG,
                source,
            })?;
        let limit = lb_common::FloodLimit {
            per_cpu_per_sec: g.new_flow_limit_per_cpu,
            _pad: 0,
        };
        self.flood_limit
            .set(0, limit, 0)
            .map_err(|source| DataplaneError::Map {
                name: names::FLOOD_LIMIT,
                source,
            })?;

        // A half that was live until the previous publish's flip may still be read by a
        // packet that fetched the old `VipMeta`: wait out the grace period before rewriting.
        if let Some(t) = self.last_flip {
            // One reading of the clock: two could straddle GRACE and underflow.
            let left = GRACE.saturating_sub(t.elapsed());
            if !left.is_zero() {
                std::thread::sleep(left);
            }
        }
        self.resolve_new_hops(desired);
        let mut later = Deferred::default();
        let mut keep = std::collections::BTreeSet::new();
        for vip in &desired.vips {
            keep.insert(vip.ident);
            self.publish_vip(vip, g.hash_seed, &mut report, &mut later)?;
        }
        let gone: Vec<VipIdent> = self
            .layout
            .vips
            .keys()
            .filter(|k| !keep.contains(k))
            .copied()
            .collect();
        for ident in gone {
            self.remove_vip(&ident, &mut later)?;
            report.vips_removed += 1;
        }
        self.last_flip = Some(Instant::now());
        self.retire(later)?;
        // For the next daemon (`adopt.rs`); a no-op for unpinned loads.
        self.save_layout();
        Ok(report)
    }

    /// Refuse, before touching anything, a state that cannot fit.
    fn check_capacity(&self, desired: &Desired) -> Result<(), DataplaneError> {
        let mut new_backends = 0u32;
        let mut new_slots = 0u64;
        for vip in &desired.vips {
            let rec = self.layout.vips.get(&vip.ident);
            new_backends += vip
                .backends
                .iter()
                .filter(|b| rec.is_none_or(|r| !r.backends.contains_key(&b.address)))
                .count() as u32;
            new_slots += new_table_slots(vip, rec);
        }
        let limit = self.layout.slots.limit();
        let free_backends = limit - self.layout.slots.in_use() as u32;
        if new_backends > free_backends {
            return Err(DataplaneError::Full {
                what: "backend slots (daemon.backend_capacity)",
                limit,
            });
        }
        if new_slots > self.layout.regions.free_slots() {
            return Err(DataplaneError::TablesFull {
                need: u32::try_from(new_slots).unwrap_or(u32::MAX),
                free: self.layout.regions.free_slots(),
                capacity: self.layout.regions.capacity(),
            });
        }
        Ok(())
    }

    fn write_backend(&mut self, id: u32, b: Backend) -> Result<(), DataplaneError> {
        self.backends
            .set(id, b, 0)
            .map_err(|source| DataplaneError::Map {
                name: names::BACKENDS,
                source,
            })
    }

    fn publish_vip(
        &mut self,
        vip: &DesiredVip,
        seed: u32,
        report: &mut PublishReport,
        later: &mut Deferred,
    ) -> Result<(), DataplaneError> {
        let existing = self.layout.vips.get(&vip.ident).cloned();
        // Unchanged since the last publish: nothing to build (least-connection tables are
        // rebuilt: they follow the live counts).
        if let Some(r) = &existing
            && same_vip(r.published.as_ref(), vip, seed)
            && !vip.scheduler.least_conn()
        {
            return Ok(());
        }
        let mut rec = match existing {
            Some(r) => r,
            None => {
                report.vips_added += 1;
                VipRecord {
                    vip_id: self.layout.vip_ids.alloc()?,
                    mode: vip.mode,
                    table_size: 0,
                    live_len: 0,
                    published: None,
                    fingerprint: None,
                    halves: [0, 0],
                    live: 1,
                    hash_size: 0,
                    hash_halves: [0, 0],
                    hash_live: 1,
                    backends: BTreeMap::new(),
                }
            }
        };
        rec.mode = vip.mode;
        // The fallback table follows the backends and weights, not the live counts: built
        // when they (or its halves) changed.
        let fresh_hash = self.place_tables(vip, &mut rec, later)?;
        let rebuild_hash = vip.scheduler.order().is_some()
            && (fresh_hash || !same_vip(rec.published.as_ref(), vip, seed));

        // Backend slots: keep the ones that stay, allocate the new ones.
        let mut next: BTreeMap<IpAddr, BackendRecord> = BTreeMap::new();
        let mut slots = Vec::with_capacity(vip.backends.len());
        for b in &vip.backends {
            let r = match rec.backends.get(&b.address) {
                Some(r) => *r,
                None => {
                    let (id, generation) = self.layout.slots.alloc()?;
                    report.backends_added += 1;
                    // A reused slot's counters carry its old life: start from them. A
                    // slot's first use in maps this data plane created has none (and
                    // skipping the read saves a syscall a backend on a large publish).
                    let now: OpenClose = if generation == 1 && !self.adopted() {
                        OpenClose::default()
                    } else {
                        self.backend_counters(id)?.into()
                    };
                    self.book.reset(id, generation, now);
                    BackendRecord { id, generation }
                }
            };
            let (addr, family) = addr_bytes(b.address);
            let mut flags = 0;
            if b.serving {
                flags |= BACKEND_F_SERVING;
            }
            if b.mac.is_some() {
                flags |= BACKEND_F_HAS_MAC;
            }
            if vip.mode == lb_common::MODE_IPIP {
                flags |= lb_common::BACKEND_F_IPIP;
            }
            // The next hop first: the slot never serves without it.
            self.write_hop(r.id, needs_hop(vip, b).then_some(b.address))?;
            slots.push((
                r.id,
                Backend {
                    addr,
                    mac: b.mac.unwrap_or_default(),
                    family,
                    flags,
                    generation: r.generation,
                    vip_id: rec.vip_id,
                },
            ));
            next.insert(b.address, r);
        }
        // Every slot of the VIP in one write, before its tables name them.
        super::batch::set_all(&mut self.backends, &slots).map_err(|source| {
            DataplaneError::Map {
                name: names::BACKENDS,
                source,
            }
        })?;

        let started = Instant::now();
        let table = self.build_table(vip, &next, seed)?;
        let hash = if rebuild_hash {
            Some(maglev_table(vip, &next, seed)?)
        } else {
            None
        };
        report.build_us += started.elapsed().as_micros();
        report.tables_built += 1;
        self.flip(vip, &mut rec, &table, hash.as_deref())?;
        // Fingerprinted from the table just built; a least-connection plan follows this
        // balancer's own connections, so its fingerprint is of the plan with equal counts
        // (built again only when the VIP changed).
        if !vip.scheduler.least_conn() {
            let ids: Vec<(u32, IpAddr)> = next.iter().map(|(a, r)| (r.id, *a)).collect();
            rec.fingerprint = Some(fingerprint::table(vip, seed, &table, &ids));
        } else if rec.fingerprint.is_none() || !same_vip(rec.published.as_ref(), vip, seed) {
            rec.fingerprint = Some(fingerprint::vip(vip, seed));
        }

        // The backends that left and the old halves are only retired after a grace period
        // (see `publish`): a packet that read the old `VipMeta` may still be using them.
        for r in rec
            .backends
            .iter()
            .filter(|(a, _)| !next.contains_key(a))
            .map(|(_, r)| *r)
        {
            later.backends.push((r, rec.vip_id));
            report.backends_removed += 1;
        }
        rec.backends = next;
        rec.published = Some((vip.clone(), seed));
        self.layout.vips.insert(vip.ident, rec);
        Ok(())
    }

    /// Give `rec` what its tables need in `TABLES`: two halves of the VIP's table size
    /// (fresh ones for a new VIP or a new size), and for a sequence scheduler two halves of
    /// its fallback Maglev table (fresh ones when it had none or of another size; none
    /// for other schedulers). What it leaves is retired after the flip (`later`). Whether
    /// the fallback halves are fresh (so its table must be built).
    fn place_tables(
        &mut self,
        vip: &DesiredVip,
        rec: &mut VipRecord,
        later: &mut Deferred,
    ) -> Result<bool, DataplaneError> {
        if rec.table_size != vip.table_size {
            let a = self.layout.regions.alloc(vip.table_size)?;
            let b = self.layout.regions.alloc(vip.table_size)?;
            if rec.table_size != 0 {
                later.regions.push((rec.halves[0], rec.table_size));
                later.regions.push((rec.halves[1], rec.table_size));
            }
            rec.halves = [a, b];
            rec.live = 1;
            rec.table_size = vip.table_size;
        }
        let want = if vip.scheduler.order().is_some() {
            vip.table_size
        } else {
            0
        };
        if rec.hash_size == want {
            return Ok(false);
        }
        let fresh = if want > 0 {
            [
                self.layout.regions.alloc(want)?,
                self.layout.regions.alloc(want)?,
            ]
        } else {
            [0, 0]
        };
        if rec.hash_size != 0 {
            later.regions.push((rec.hash_halves[0], rec.hash_size));
            later.regions.push((rec.hash_halves[1], rec.hash_size));
        }
        rec.hash_halves = fresh;
        rec.hash_live = 1;
        rec.hash_size = want;
        Ok(want > 0)
    }

    /// The table of `vip` given its backends' slots: a Maglev table, or the scheduler's
    /// sequence (least-connection ones from the live active counts).
    fn build_table(
        &mut self,
        vip: &DesiredVip,
        slots: &BTreeMap<IpAddr, BackendRecord>,
        seed: u32,
    ) -> Result<Vec<u32>, DataplaneError> {
        let Some(order) = vip.scheduler.order() else {
            return maglev_table(vip, slots, seed);
        };
        let members = members(vip, slots, |id| self.active(id))?;
        let horizon = if vip.scheduler.least_conn() {
            let eligible = members.iter().filter(|m| m.weight > 0).count();
            sched::lc_horizon(self.lc_rate(vip)?, eligible)
        } else {
            0
        };
        Ok(sched::sequence(order, &members, vip.table_size, horizon))
    }

    /// The recent new-flow rate of a least-connection VIP (per second), updated from its
    /// counters at most every 100 ms.
    fn lc_rate(&mut self, vip: &DesiredVip) -> Result<f64, DataplaneError> {
        let Some(rec) = self.layout.vips.get(&vip.ident) else {
            return Ok(0.0);
        };
        let now = Instant::now();
        let flows = self.vip_counters(rec.vip_id)?.new_flows;
        let rate = match self.lc_rates.get(&vip.ident) {
            Some(&(at, n, rate)) => {
                let dt = now.duration_since(at).as_secs_f64();
                if dt < 0.1 {
                    return Ok(rate);
                }
                let fresh = flows.saturating_sub(n) as f64 / dt;
                // Smooth a little: one quiet interval does not erase a busy one.
                0.5 * fresh + 0.5 * rate
            }
            None => 0.0,
        };
        self.lc_rates.insert(vip.ident, (now, flows, rate));
        Ok(rate)
    }

    /// Write `table` (and a new fallback table `hash`, if given) into the half no packet
    /// reads and switch the VIP to it with one `VIPS` update; sequence schedulers restart
    /// at the sequence's head. Without `hash`, the live fallback table stays.
    fn flip(
        &mut self,
        vip: &DesiredVip,
        rec: &mut VipRecord,
        table: &[u32],
        hash: Option<&[u32]>,
    ) -> Result<(), DataplaneError> {
        self.tables_built += 1;
        let target = 1 - rec.live;
        self.tables.write(rec.halves[target], table);
        let hash_target = match hash {
            Some(h) if rec.hash_size > 0 => {
                let t = 1 - rec.hash_live;
                self.tables.write(rec.hash_halves[t], h);
                t
            }
            _ => rec.hash_live,
        };
        let len = table.len() as u32;
        let meta = VipMeta {
            vip_id: rec.vip_id,
            table_base: rec.halves[target],
            table_size: len,
            mode: vip.mode,
            scheduler: vip.scheduler.kernel(),
            flags: 0,
            _pad: 0,
            hash_base: if rec.hash_size > 0 {
                rec.hash_halves[hash_target]
            } else {
                0
            },
            hash_size: rec.hash_size,
        };
        self.vips
            .insert(vip.ident.key(), meta, 0)
            .map_err(|source| DataplaneError::Map {
                name: names::VIPS,
                source,
            })?;
        rec.live = target;
        rec.hash_live = hash_target;
        rec.live_len = len;
        if vip.scheduler.order().is_some() {
            self.cursors
                .set(rec.vip_id, 0, 0)
                .map_err(|source| DataplaneError::Map {
                    name: names::CURSORS,
                    source,
                })?;
        }
        Ok(())
    }

    /// Recompute the least-connection VIPs' plans from the live active counts and switch
    /// those that changed. Returns how many were switched. (The daemon calls this every
    /// `daemon.least_conn_refresh_ms`.)
    pub fn refresh_least_conn(&mut self) -> Result<usize, DataplaneError> {
        let lc: Vec<(VipIdent, DesiredVip, u32)> = self
            .layout
            .vips
            .iter()
            .filter_map(|(i, r)| {
                let (v, seed) = r.published.as_ref()?;
                v.scheduler.least_conn().then(|| (*i, v.clone(), *seed))
            })
            .collect();
        if lc.is_empty() {
            return Ok(0);
        }
        if let Some(t) = self.last_flip {
            let left = GRACE.saturating_sub(t.elapsed());
            if !left.is_zero() {
                std::thread::sleep(left);
            }
        }
        let mut switched = 0;
        for (ident, vip, seed) in lc {
            let Some(mut rec) = self.layout.vips.get(&ident).cloned() else {
                continue;
            };
            let table = self.build_table(&vip, &rec.backends, seed)?;
            if self.tables.read(rec.halves[rec.live], rec.live_len) == table {
                continue;
            }
            self.flip(&vip, &mut rec, &table, None)?;
            self.layout.vips.insert(ident, rec);
            switched += 1;
        }
        if switched > 0 {
            self.last_flip = Some(Instant::now());
        }
        Ok(switched)
    }

    /// Retire what the last flips made unreachable, once no packet can still be using it.
    fn retire(&mut self, later: Deferred) -> Result<(), DataplaneError> {
        if later.backends.is_empty() && later.regions.is_empty() && later.vip_ids.is_empty() {
            return Ok(());
        }
        std::thread::sleep(GRACE);
        for (r, vip_id) in later.backends {
            self.retire_backend(r, vip_id)?;
        }
        for (start, len) in later.regions {
            self.layout.regions.release(start, len);
        }
        for id in later.vip_ids {
            self.layout.vip_ids.free(id);
        }
        Ok(())
    }

    /// Mark a slot not serving (flows on it move on their next packet) and free it.
    fn retire_backend(&mut self, r: BackendRecord, vip_id: u32) -> Result<(), DataplaneError> {
        self.write_hop(r.id, None)?;
        self.write_backend(
            r.id,
            Backend {
                generation: r.generation,
                vip_id,
                ..Backend::default()
            },
        )?;
        self.layout.slots.free(r.id);
        Ok(())
    }

    fn remove_vip(&mut self, ident: &VipIdent, later: &mut Deferred) -> Result<(), DataplaneError> {
        let Some(rec) = self.layout.vips.remove(ident) else {
            return Ok(());
        };
        match self.vips.remove(&ident.key()) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(source) => {
                return Err(DataplaneError::Map {
                    name: names::VIPS,
                    source,
                });
            }
        }
        for r in rec.backends.values() {
            later.backends.push((*r, rec.vip_id));
        }
        later.regions.push((rec.halves[0], rec.table_size));
        later.regions.push((rec.halves[1], rec.table_size));
        if rec.hash_size > 0 {
            later.regions.push((rec.hash_halves[0], rec.hash_size));
            later.regions.push((rec.hash_halves[1], rec.hash_size));
        }
        later.vip_ids.push(rec.vip_id);
        Ok(())
    }

    /// The live table of a VIP, as the kernel reads it.
    pub fn live_table(&self, ident: &VipIdent) -> Option<Vec<u32>> {
        let rec = self.layout.vips.get(ident)?;
        Some(self.tables.read(rec.halves[rec.live], rec.live_len))
    }

    /// The live fallback Maglev table of a sequence VIP, as the kernel reads it (`None`
    /// for other schedulers).
    pub fn fallback_table(&self, ident: &VipIdent) -> Option<Vec<u32>> {
        let rec = self.layout.vips.get(ident)?;
        (rec.hash_size > 0).then(|| {
            self.tables
                .read(rec.hash_halves[rec.hash_live], rec.hash_size)
        })
    }
}

/// `TABLES` slots a publish of `vip` allocates, given what `rec` holds: two halves of a new
/// table size, and two halves of a sequence scheduler's fallback Maglev table where it had
/// none of that size (together `Sched::table_slots` for a new VIP).
fn new_table_slots(vip: &DesiredVip, rec: Option<&VipRecord>) -> u64 {
    let size = u64::from(vip.table_size);
    let mut n = 0;
    if rec.is_none_or(|r| r.table_size != vip.table_size) {
        n += 2 * size;
    }
    if vip.scheduler.order().is_some() && rec.is_none_or(|r| r.hash_size != vip.table_size) {
        n += 2 * size;
    }
    n
}

/// The sequence scheduler's view of `vip`'s backends (with their slots' ids): for a
/// least-connection VIP each one's load is its reported requests in flight (`[vip.load]`)
/// when known, else its open connections (`active`, the kernel's count).
fn members<E>(
    vip: &DesiredVip,
    slots: &BTreeMap<IpAddr, BackendRecord>,
    mut active: impl FnMut(u32) -> Result<u64, E>,
) -> Result<Vec<sched::Member>, E> {
    vip.backends
        .iter()
        .map(|b| {
            let id = slots[&b.address].id;
            let active = match (vip.scheduler.least_conn(), b.in_flight) {
                (false, _) => 0,
                (true, Some(reported)) => reported,
                (true, None) => active(id)?,
            };
            Ok(sched::Member {
                id,
                weight: serving_weight(b),
                active,
            })
        })
        .collect()
}

/// Whether `published` is `vip` with `seed`, the reported requests in flight aside: they only
/// feed the least-connection plan, which every publish and refresh builds again, so a new
/// figure rebuilds neither the fallback table nor the fingerprint.
fn same_vip(published: Option<&(DesiredVip, u32)>, vip: &DesiredVip, seed: u32) -> bool {
    let Some((p, s)) = published else {
        return false;
    };
    let DesiredVip {
        ident,
        mode,
        scheduler,
        table_size,
        backends,
    } = vip;
    let same_backend = |a: &super::DesiredBackend, b: &super::DesiredBackend| {
        let super::DesiredBackend {
            address,
            weight,
            mac,
            serving,
            in_flight: _,
        } = a;
        *address == b.address && *weight == b.weight && *mac == b.mac && *serving == b.serving
    };
    *s == seed
        && p.ident == *ident
        && p.mode == *mode
        && p.scheduler == *scheduler
        && p.table_size == *table_size
        && p.backends.len() == backends.len()
        && p.backends
            .iter()
            .zip(backends)
            .all(|(a, b)| same_backend(b, a))
}

/// A backend's weight in a new table: 0 when it does not serve.
fn serving_weight(b: &super::DesiredBackend) -> u32 {
    if b.serving { b.weight } else { 0 }
}

/// The Maglev table of `vip`'s backends (by address, with their slots' ids) and weights:
/// a `maglev` VIP's live table, and a sequence VIP's fallback table (the same table, so
/// balancers with the same config agree on it whatever their scheduler's state).
fn maglev_table(
    vip: &DesiredVip,
    slots: &BTreeMap<IpAddr, BackendRecord>,
    seed: u32,
) -> Result<Vec<u32>, DataplaneError> {
    let names: Vec<String> = vip.backends.iter().map(|b| b.address.to_string()).collect();
    let entries: Vec<maglev::Entry<'_>> = vip
        .backends
        .iter()
        .zip(&names)
        .map(|(b, name)| maglev::Entry {
            name,
            weight: serving_weight(b),
            id: slots[&b.address].id,
        })
        .collect();
    maglev::build(&entries, vip.table_size, seed).map_err(|source| DataplaneError::Maglev {
        vip: vip.ident.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::Sched;

    fn desired(scheduler: Sched, table_size: u32) -> DesiredVip {
        DesiredVip {
            ident: VipIdent {
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                port: 80,
                proto: lb_common::PROTO_TCP,
            },
            mode: lb_common::MODE_DSR,
            scheduler,
            table_size,
            backends: Vec::new(),
        }
    }

    fn record(table_size: u32, hash_size: u32) -> VipRecord {
        VipRecord {
            vip_id: 0,
            mode: lb_common::MODE_DSR,
            table_size,
            live_len: table_size,
            published: None,
            fingerprint: None,
            halves: [0, table_size],
            live: 0,
            hash_size,
            hash_halves: [2 * table_size, 2 * table_size + hash_size],
            hash_live: 0,
            backends: BTreeMap::new(),
        }
    }

    /// A new sequence VIP takes four halves (its table's and its fallback table's), a new
    /// Maglev VIP two: `Sched::table_slots`, which config validation counts with too.
    #[test]
    fn a_new_vip_needs_its_schedulers_table_slots() {
        for s in [
            Sched::Maglev,
            Sched::SourceHash,
            Sched::RoundRobin,
            Sched::WeightedRoundRobin,
            Sched::LeastConn,
            Sched::WeightedLeastConn,
        ] {
            assert_eq!(
                new_table_slots(&desired(s, 1021), None),
                s.table_slots(1021),
                "{s:?}"
            );
        }
        assert_eq!(Sched::RoundRobin.table_slots(1021), 4 * 1021);
        assert_eq!(Sched::Maglev.table_slots(1021), 2 * 1021);
    }

    fn with_backends(scheduler: Sched, in_flight: &[Option<u64>]) -> DesiredVip {
        let mut v = desired(scheduler, 1021);
        v.backends = in_flight
            .iter()
            .enumerate()
            .map(|(i, n)| super::super::DesiredBackend {
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 1, i as u8 + 1)),
                weight: 100,
                mac: None,
                serving: true,
                in_flight: *n,
            })
            .collect();
        v
    }

    fn slots(v: &DesiredVip) -> BTreeMap<IpAddr, BackendRecord> {
        v.backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let r = BackendRecord {
                    id: i as u32 + 10,
                    generation: 1,
                };
                (b.address, r)
            })
            .collect()
    }

    /// `lc`/`wlc`: a backend's reported requests in flight replace its connection count;
    /// one without a report is counted by its connections; other schedulers count nothing.
    #[test]
    fn least_connection_members_count_reported_requests_first() {
        let conns = |id: u32| Ok::<u64, ()>(u64::from(id) * 100);
        let v = with_backends(Sched::LeastConn, &[Some(3), None]);
        let m = members(&v, &slots(&v), conns).expect("members");
        let active: Vec<u64> = m.iter().map(|m| m.active).collect();
        assert_eq!(active, [3, 1100], "reported, then the kernel's count");
        // The plan follows: the backend reporting 3 in flight takes the next flows, though
        // it may hold more connections.
        let seq = sched::sequence(sched::Order::LeastConn, &m, 1021, 8);
        assert!(seq.iter().all(|id| *id == 10), "{seq:?}");
        let v = with_backends(Sched::RoundRobin, &[Some(3), None]);
        let m = members(&v, &slots(&v), conns).expect("members");
        assert!(m.iter().all(|m| m.active == 0));
    }

    /// A new reported figure changes neither the fallback table nor the fingerprint: the
    /// published VIP is the same but for it.
    #[test]
    fn reported_in_flight_is_not_a_change_of_the_vip() {
        let a = with_backends(Sched::WeightedLeastConn, &[Some(3), None]);
        let b = with_backends(Sched::WeightedLeastConn, &[Some(9), Some(1)]);
        assert!(same_vip(Some(&(a.clone(), 7)), &b, 7));
        assert!(!same_vip(Some(&(a.clone(), 7)), &b, 8), "another seed");
        let mut c = b.clone();
        c.backends[1].weight = 0;
        assert!(!same_vip(Some(&(a.clone(), 7)), &c, 7), "another weight");
        assert!(!same_vip(None, &a, 7));
    }

    /// What an existing VIP's publish allocates: nothing when its halves fit; the fallback
    /// halves when it becomes a sequence VIP; both pairs for a new table size.
    #[test]
    fn an_existing_vip_needs_only_what_changed() {
        let maglev = record(1021, 0);
        let seq = record(1021, 1021);
        assert_eq!(
            new_table_slots(&desired(Sched::Maglev, 1021), Some(&maglev)),
            0
        );
        assert_eq!(
            new_table_slots(&desired(Sched::LeastConn, 1021), Some(&seq)),
            0
        );
        assert_eq!(
            new_table_slots(&desired(Sched::RoundRobin, 1021), Some(&maglev)),
            2 * 1021
        );
        assert_eq!(
            new_table_slots(&desired(Sched::Maglev, 1021), Some(&seq)),
            0
        );
        assert_eq!(
            new_table_slots(&desired(Sched::WeightedRoundRobin, 2039), Some(&seq)),
            4 * 2039
        );
    }
}
