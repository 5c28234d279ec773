//! What an edit would move, computed before it is applied (`sluice plan`, and every apply
//! reports it): per VIP, the share of lookup-table slots whose backend changes, the backends
//! added and removed, the live flows on removed backends (those connections would be
//! reassigned), and the new shares of new flows.

use std::{collections::HashMap, fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::{
    config::{BackendState, VipConfig},
    maglev,
    model::{DesiredVip, VipIdent},
    state::State,
};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Plan {
    pub vips: Vec<VipPlan>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Changed,
    Unchanged,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VipPlan {
    pub name: String,
    pub vip: String,
    pub change: Change,
    /// Share of table slots whose backend changes (0..=1); hashing schedulers only.
    pub slots_moved: f64,
    /// The VIP's scheduler hashes flows to slots (maglev, source-hash): `slots_moved` says
    /// how many future flows land elsewhere. Otherwise new flows follow a sequence.
    #[serde(default)]
    pub hashed: bool,
    pub added: Vec<IpAddr>,
    pub removed: Vec<IpAddr>,
    /// Live flows on the removed backends.
    pub flows_on_removed: u64,
    /// Each backend's share of new flows after the edit.
    pub shares: Vec<(IpAddr, f64)>,
    /// Backends this edit starts draining, with their active connections (which continue).
    #[serde(default)]
    pub draining: Vec<(IpAddr, u64)>,
}

/// Table of `v` with the backends' current ids (new ones get ids no slot holds yet).
fn table(
    v: &DesiredVip,
    ids: &HashMap<IpAddr, u32>,
    seed: u32,
) -> (Vec<u32>, HashMap<u32, IpAddr>) {
    let names: Vec<String> = v.backends.iter().map(|b| b.address.to_string()).collect();
    let mut by_id = HashMap::new();
    let mut fresh = u32::MAX;
    let entries: Vec<maglev::Entry<'_>> = v
        .backends
        .iter()
        .zip(&names)
        .map(|(b, name)| {
            let id = ids.get(&b.address).copied().unwrap_or_else(|| {
                fresh -= 1;
                fresh
            });
            by_id.insert(id, b.address);
            maglev::Entry {
                name,
                weight: if b.serving { b.weight } else { 0 },
                id,
            }
        })
        .collect();
    let t = match v.scheduler.order() {
        None => maglev::build(&entries, v.table_size, seed).unwrap_or_default(),
        // Sequence schedulers: the long-run shares (least-connection plans depend on live
        // counts; with equal counts they share like their weights).
        Some(order) => {
            let members: Vec<crate::sched::Member> = entries
                .iter()
                .map(|e| crate::sched::Member {
                    id: e.id,
                    weight: e.weight,
                    active: 0,
                })
                .collect();
            crate::sched::sequence(order, &members, v.table_size, v.table_size)
        }
    };
    (t, by_id)
}

/// What a plan needs to know of the running data plane (the data plane implements it; the
/// tests use a fake).
pub trait Live {
    /// Flow-table entries per backend slot.
    fn flows_per_backend(&self) -> HashMap<u32, u64>;
    /// The backend slots of VIP `vip`, by address; empty when it is not published yet.
    fn backend_slots(&self, vip: &VipIdent) -> HashMap<IpAddr, u32>;
    /// The lookup table the kernel uses for `vip` now (`None`: not published yet).
    fn live_table(&self, vip: &VipIdent) -> Option<Vec<u32>>;
    /// Open connections of backend slot `id` (`None`: unknown).
    fn active(&self, id: u32) -> Option<u64>;
}

/// The plan of going from `now` to `next` (`now.with_config(...)`): the VIPs the edit adds,
/// removes or changes. A VIP whose configuration is the same on both sides is left out,
/// without reading its live table (an edit of one VIP among 4096 is planned in the time of
/// one); the flow table is walked only when an edit removes backends.
pub fn compute(now: &State, next: &State, dp: &impl Live) -> Plan {
    let seed = next.config.daemon.hash_seed;
    let flows = std::cell::OnceCell::new();
    let flows = || flows.get_or_init(|| dp.flows_per_backend());
    // By identity: an edit of 1000 VIPs must not search them for each one.
    let old_cfgs: HashMap<_, _> = now
        .config
        .vips
        .iter()
        .map(|o| (crate::state::ident(o), o))
        .collect();
    let mut vips = Vec::new();
    for cfg in &next.config.vips {
        let ident = crate::state::ident(cfg);
        let old_cfg = old_cfgs.get(&ident).copied();
        // The same configuration: `next` (made by `State::with_config`) kept its health
        // and lifecycle as they are, so its desired state is the same too.
        if old_cfg == Some(cfg) {
            continue;
        }
        let v = next.desired_vip(cfg);
        let before = old_cfg.map(|o| now.desired_vip(o));
        let old = Old {
            vip: before.as_ref(),
            cfg: old_cfg,
        };
        vips.push(vip_plan(cfg, &v, old, dp, flows, seed));
    }
    let after: std::collections::HashSet<_> =
        next.config.vips.iter().map(crate::state::ident).collect();
    for cfg in &now.config.vips {
        if !after.contains(&crate::state::ident(cfg)) {
            vips.push(removed_vip_plan(cfg, &now.desired_vip(cfg), dp, flows()));
        }
    }
    Plan { vips }
}

/// A VIP as it is before the edit (`None`s: the edit adds it).
#[derive(Clone, Copy)]
struct Old<'a> {
    vip: Option<&'a DesiredVip>,
    cfg: Option<&'a VipConfig>,
}

/// The plan of VIP `v` (configured as `cfg`) after the edit.
fn vip_plan<'f>(
    cfg: &VipConfig,
    v: &DesiredVip,
    old: Old<'_>,
    dp: &impl Live,
    flows: impl FnOnce() -> &'f HashMap<u32, u64>,
    seed: u32,
) -> VipPlan {
    let ids = dp.backend_slots(&v.ident);
    let by_id: HashMap<u32, IpAddr> = ids.iter().map(|(a, id)| (*id, *a)).collect();
    let live = dp.live_table(&v.ident);
    // An unchanged VIP keeps its live table: its shares are read from it, nothing is
    // built or compared (an edit of one VIP among 1000 built 1000 tables).
    let unchanged = old.vip == Some(v) && live.is_some();
    let (new_table, new_by_id) = match &live {
        Some(l) if unchanged => (l.clone(), by_id.clone()),
        _ => table(v, &ids, seed),
    };
    let (slots_moved, removed, change) = if unchanged {
        (0.0, Vec::new(), Change::Unchanged)
    } else {
        table_change(v, old.vip, live, &by_id, &new_table, &new_by_id)
    };
    let added: Vec<IpAddr> = v
        .backends
        .iter()
        .map(|b| b.address)
        .filter(|a| {
            old.vip
                .is_none_or(|o| !o.backends.iter().any(|b| b.address == *a))
        })
        .collect();
    let flows_on_removed = if removed.is_empty() {
        0
    } else {
        let flows = flows();
        removed
            .iter()
            .filter_map(|a| ids.get(a))
            .map(|id| flows.get(id).copied().unwrap_or(0))
            .sum()
    };
    let hashed = v.scheduler.order().is_none();
    let draining = newly_draining(cfg, old.cfg, &ids, dp);
    VipPlan {
        name: cfg.name.clone(),
        vip: v.ident.to_string(),
        change,
        hashed,
        draining,
        slots_moved: if hashed { slots_moved } else { 0.0 },
        added,
        removed,
        flows_on_removed,
        shares: new_shares(v, &new_table, &new_by_id),
    }
}

/// (share of slots moved, backends removed, the kind of change) of a VIP that is not
/// known unchanged: slots are compared with the live table when there is one of the same
/// size; otherwise every slot counts as moved.
fn table_change(
    v: &DesiredVip,
    old: Option<&DesiredVip>,
    live: Option<Vec<u32>>,
    by_id: &HashMap<u32, IpAddr>,
    new_table: &[u32],
    new_by_id: &HashMap<u32, IpAddr>,
) -> (f64, Vec<IpAddr>, Change) {
    match (old, live) {
        (Some(o), Some(live)) if live.len() == new_table.len() => {
            let moved = live
                .iter()
                .zip(new_table)
                .filter(|(a, b)| by_id.get(a) != new_by_id.get(b))
                .count();
            let removed: Vec<IpAddr> = o
                .backends
                .iter()
                .map(|b| b.address)
                .filter(|a| !v.backends.iter().any(|b| b.address == *a))
                .collect();
            let change = if o == v {
                Change::Unchanged
            } else {
                Change::Changed
            };
            (
                moved as f64 / new_table.len().max(1) as f64,
                removed,
                change,
            )
        }
        (Some(o), _) => (
            1.0,
            o.backends
                .iter()
                .map(|b| b.address)
                .filter(|a| !v.backends.iter().any(|b| b.address == *a))
                .collect(),
            Change::Changed,
        ),
        (None, _) => (1.0, Vec::new(), Change::Added),
    }
}

/// Backends this edit starts draining (draining now, not before), with their active
/// connections.
fn newly_draining(
    cfg: &VipConfig,
    old_cfg: Option<&VipConfig>,
    ids: &HashMap<IpAddr, u32>,
    dp: &impl Live,
) -> Vec<(IpAddr, u64)> {
    cfg.backends
        .iter()
        .filter(|b| b.state == BackendState::Draining)
        .filter(|b| {
            old_cfg.is_none_or(|o| {
                o.backends
                    .iter()
                    .any(|ob| ob.address == b.address && ob.state != BackendState::Draining)
            })
        })
        .map(|b| {
            let active = ids
                .get(&b.address)
                .and_then(|id| dp.active(*id))
                .unwrap_or(0);
            (b.address, active)
        })
        .collect()
}

/// Each backend's share of new flows in `new_table`.
fn new_shares(
    v: &DesiredVip,
    new_table: &[u32],
    new_by_id: &HashMap<u32, IpAddr>,
) -> Vec<(IpAddr, f64)> {
    let shares = maglev::shares(new_table);
    let size = new_table.len().max(1) as f64;
    v.backends
        .iter()
        .map(|b| {
            let id = new_by_id
                .iter()
                .find(|(_, a)| **a == b.address)
                .map(|(id, _)| *id);
            (
                b.address,
                id.and_then(|id| shares.get(&id))
                    .map_or(0.0, |n| *n as f64 / size),
            )
        })
        .collect()
}

/// The plan of a VIP the edit removes: every flow on it is reassigned.
fn removed_vip_plan(
    cfg: &VipConfig,
    o: &DesiredVip,
    dp: &impl Live,
    flows: &HashMap<u32, u64>,
) -> VipPlan {
    let ids = dp.backend_slots(&o.ident);
    VipPlan {
        name: cfg.name.clone(),
        vip: o.ident.to_string(),
        change: Change::Removed,
        hashed: true,
        draining: Vec::new(),
        slots_moved: 1.0,
        added: Vec::new(),
        removed: o.backends.iter().map(|b| b.address).collect(),
        flows_on_removed: ids
            .values()
            .map(|id| flows.get(id).copied().unwrap_or(0))
            .sum(),
        shares: Vec::new(),
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let changed: Vec<&VipPlan> = self
            .vips
            .iter()
            .filter(|v| v.change != Change::Unchanged)
            .collect();
        if changed.is_empty() {
            return writeln!(f, "no change");
        }
        for v in changed {
            writeln!(f, "{} {} ({:?})", v.name, v.vip, v.change)?;
            if v.change == Change::Changed && v.hashed {
                writeln!(f, "  table slots moving: {:.2}%", 100.0 * v.slots_moved)?;
            } else if v.change == Change::Changed {
                writeln!(
                    f,
                    "  new flows follow the new order; existing flows keep their backend"
                )?;
            }
            for a in &v.added {
                writeln!(f, "  + backend {a}")?;
            }
            for a in &v.removed {
                writeln!(f, "  - backend {a}")?;
            }
            for (a, n) in &v.draining {
                writeln!(
                    f,
                    "  ~ backend {a} drains: no new flows; its {n} active connections continue"
                )?;
            }
            if !v.removed.is_empty() {
                writeln!(
                    f,
                    "  live flows on removed backends (reassigned): {}",
                    v.flows_on_removed
                )?;
            }
            if !v.shares.is_empty() {
                writeln!(f, "  new shares of new flows:")?;
                for (a, s) in &v.shares {
                    writeln!(f, "    {a:<40} {:>6.2}%", 100.0 * s)?;
                }
            }
        }
        Ok(())
    }
}
