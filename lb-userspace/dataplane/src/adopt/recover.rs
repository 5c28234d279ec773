//! Rebuilding the [`Layout`] from adopted maps (`VIPS`, `BACKENDS`), with the saved layout
//! for what the maps cannot say, and cross-checking the two.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use lb_common::{Backend, FAMILY_V4, FAMILY_V6, VipKey, VipMeta, names};

use super::{Adoption, SavedLayout, SavedVip};
use crate::{
    Dataplane, DataplaneError, Sizes, VipIdent,
    layout::{BackendRecord, BackendSlots, Layout, Regions, VipRecord},
};

/// A VIP key as the daemon names it.
pub fn ident_of(k: &VipKey) -> Option<VipIdent> {
    let address = match k.family {
        FAMILY_V4 => IpAddr::V4(Ipv4Addr::new(k.addr[0], k.addr[1], k.addr[2], k.addr[3])),
        FAMILY_V6 => IpAddr::V6(Ipv6Addr::from(k.addr)),
        _ => return None,
    };
    Some(VipIdent {
        address,
        port: u16::from_be_bytes(k.port),
        proto: k.proto,
    })
}

/// A backend slot's address (`None`: a free slot).
fn addr_of(b: &Backend) -> Option<IpAddr> {
    match b.family {
        FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::new(
            b.addr[0], b.addr[1], b.addr[2], b.addr[3],
        ))),
        FAMILY_V6 => Some(IpAddr::V6(Ipv6Addr::from(b.addr))),
        _ => None,
    }
}
/// One double-buffered table of a VIP, as recovered: where its halves are, which one
/// `VIPS` points at, and the slots of each (0: the VIP has no such table).
#[derive(Clone, Copy, Debug)]
struct Halves {
    at: [u32; 2],
    live: usize,
    size: u32,
}

impl Halves {
    /// The table whose live half starts at `base` (from `VIPS`): with the saved halves and
    /// size where they hold that half (the live half may be either saved one:
    /// least-connection refreshes flip without saving), else a half of `size` slots.
    fn live_at(base: u32, size: u32, saved: Option<([u32; 2], u32)>) -> Self {
        match saved.and_then(|(at, size)| Some((at, at.iter().position(|h| *h == base)?, size))) {
            Some((at, live, size)) => Self { at, live, size },
            None => Self {
                at: [base, 0],
                live: 0,
                size,
            },
        }
    }

    /// Reserve the live half; false if it is beyond `TABLES` or overlaps another.
    fn reserve_live(&self, regions: &mut Regions) -> bool {
        self.size == 0 || regions.reserve(self.at[self.live], self.size)
    }

    /// Reserve the inactive half where the saved layout placed it (`saved`: these very
    /// halves were saved); false if it must be allocated anew.
    fn reserve_inactive(&mut self, regions: &mut Regions, saved: bool) -> bool {
        if self.size == 0 {
            self.at = [0, 0];
            return true;
        }
        saved && regions.reserve(self.at[1 - self.live], self.size)
    }
}

impl Layout {
    /// Rebuild the layout of pinned maps: `vips` is the content of `VIPS`, `backends` of
    /// `BACKENDS` (indexed by slot id). The maps decide (they are what the kernel forwards
    /// with); `saved` supplies the inactive halves and the cursor where it agrees with them.
    /// Returns the layout and the disagreements found (for the log); an error when the maps
    /// themselves are inconsistent (overlapping tables, duplicate VIP ids, out of range).
    pub fn recover(
        sizes: Sizes,
        vips: &[(VipIdent, VipMeta)],
        backends: &[Backend],
        saved: Option<&SavedLayout>,
    ) -> Result<(Self, Vec<String>), String> {
        let table_slots = sizes.table_slots;
        let mut layout = Self::new(sizes);
        let mut notes = Vec::new();
        let saved_vips: BTreeMap<VipIdent, &SavedVip> = saved
            .map(|s| s.vips.iter().map(|v| (v.ident(), v)).collect())
            .unwrap_or_default();
        let mut by_id: BTreeMap<u32, VipIdent> = BTreeMap::new();
        // `VipMeta::table_size` is the live table's length, which can be shorter than a half
        // (sequence schedulers) or 0 (no backend for new flows). The saved layout knows the
        // halves; without it (or where it disagrees) a half is as long as the live table,
        // and the first publish reallocates both if the VIP needs longer ones. A sequence
        // VIP's fallback Maglev table (`hash_base`, `hash_size`) is always whole.
        let mut placed: BTreeMap<VipIdent, [Halves; 2]> = BTreeMap::new();
        for (ident, meta) in vips {
            if !layout.vip_ids.reserve(meta.vip_id) {
                return Err(format!(
                    "VIPS: {ident} has VIP id {}, out of range or used twice",
                    meta.vip_id
                ));
            }
            by_id.insert(meta.vip_id, *ident);
            let s = saved_vips.get(ident).filter(|s| s.vip_id == meta.vip_id);
            let table = Halves::live_at(
                meta.table_base,
                meta.table_size,
                s.map(|s| (s.halves, s.table_size))
                    .filter(|(_, size)| *size >= meta.table_size),
            );
            let hash = Halves::live_at(
                meta.hash_base,
                meta.hash_size,
                s.map(|s| (s.hash_halves, s.hash_size))
                    .filter(|(_, size)| *size == meta.hash_size),
            );
            for (what, h) in [("table", table), ("fallback table", hash)] {
                if !h.reserve_live(&mut layout.regions) {
                    return Err(format!(
                        "VIPS: {ident}'s {what} [{}, +{}) is beyond TABLES ({table_slots} slots) or overlaps another",
                        h.at[h.live], h.size
                    ));
                }
            }
            placed.insert(*ident, [table, hash]);
        }
        let (mut members, used) = members(backends, &by_id, &mut notes);
        // Inactive halves: the saved ones where they agree, else fresh (after every saved
        // one is placed).
        let mut unplaced = Vec::new();
        for (ident, meta) in vips {
            let [mut table, mut hash] = placed[ident];
            let s = saved_vips.get(ident);
            let t_saved = s.is_some_and(|s| s.halves == table.at && s.table_size == table.size);
            let h_saved = s.is_some_and(|s| s.hash_halves == hash.at && s.hash_size == hash.size);
            let t_ok = table.reserve_inactive(&mut layout.regions, t_saved);
            let h_ok = hash.reserve_inactive(&mut layout.regions, h_saved);
            unplaced.push((*ident, *meta, [table, hash], [t_ok, h_ok]));
        }
        for (ident, meta, mut halves, ok) in unplaced {
            for (h, ok) in halves.iter_mut().zip(ok) {
                if !ok {
                    h.at[1 - h.live] = layout.regions.alloc(h.size).map_err(|e| {
                        format!("no room in TABLES for {ident}'s inactive table half: {e}")
                    })?;
                }
            }
            layout
                .vips
                .insert(ident, record(&meta, halves, &mut members, &ident));
        }
        let cursor = saved.map_or_else(
            || used.iter().max().map_or(1, |m| *m as usize + 1),
            |s| s.cursor,
        );
        layout.slots =
            BackendSlots::restore(sizes.backend_slots, &generations(backends), &used, cursor);
        if let Some(s) = saved {
            cross_check(s, &layout, table_slots, &mut notes);
        }
        Ok((layout, notes))
    }
}

fn generations(backends: &[Backend]) -> Vec<u32> {
    backends.iter().map(|b| b.generation).collect()
}

/// Backend slots: every slot with an address belongs to the VIP its `vip_id` names. The
/// members of each VIP and the slots in use.
fn members(
    backends: &[Backend],
    by_id: &BTreeMap<u32, VipIdent>,
    notes: &mut Vec<String>,
) -> (
    BTreeMap<VipIdent, BTreeMap<IpAddr, BackendRecord>>,
    Vec<u32>,
) {
    let mut members: BTreeMap<VipIdent, BTreeMap<IpAddr, BackendRecord>> = BTreeMap::new();
    let mut used = Vec::new();
    for (id, b) in backends.iter().enumerate().skip(1) {
        let Some(addr) = addr_of(b) else { continue };
        let id = id as u32;
        let Some(ident) = by_id.get(&b.vip_id) else {
            notes.push(format!(
                "BACKENDS slot {id} ({addr}) names VIP id {}, which VIPS does not have: freed",
                b.vip_id
            ));
            continue;
        };
        let m = members.entry(*ident).or_default();
        if m.contains_key(&addr) {
            notes.push(format!(
                "BACKENDS slot {id}: {addr} twice under {ident}: the later slot is freed"
            ));
            continue;
        }
        m.insert(
            addr,
            BackendRecord {
                id,
                generation: b.generation,
            },
        );
        used.push(id);
    }
    (members, used)
}

fn record(
    meta: &VipMeta,
    [table, hash]: [Halves; 2],
    members: &mut BTreeMap<VipIdent, BTreeMap<IpAddr, BackendRecord>>,
    ident: &VipIdent,
) -> VipRecord {
    VipRecord {
        vip_id: meta.vip_id,
        mode: meta.mode,
        table_size: table.size,
        live_len: meta.table_size,
        // Unknown: the first publish rebuilds every table (same backends, same slots: the
        // same table for Maglev, and the same fallback table for sequence schedulers).
        published: None,
        fingerprint: None,
        halves: table.at,
        live: table.live,
        hash_size: hash.size,
        hash_halves: hash.at,
        hash_live: hash.live,
        backends: members.remove(ident).unwrap_or_default(),
    }
}

/// Where the saved layout and the one rebuilt from the maps disagree (a daemon that died
/// between writing the maps and saving, or a file from another run).
fn cross_check(saved: &SavedLayout, layout: &Layout, table_slots: u32, notes: &mut Vec<String>) {
    if saved.table_slots != table_slots {
        notes.push(format!(
            "saved with {} table slots, TABLES has {table_slots}",
            saved.table_slots
        ));
    }
    for s in &saved.vips {
        let ident = s.ident();
        let Some(r) = layout.vips.get(&ident) else {
            notes.push(format!("{ident} is saved but not in VIPS"));
            continue;
        };
        if r.vip_id != s.vip_id || r.table_size != s.table_size {
            notes.push(format!(
                "{ident}: saved VIP id {} / table size {}, VIPS has {} / {}",
                s.vip_id, s.table_size, r.vip_id, r.table_size
            ));
        }
        if r.hash_size != s.hash_size
            || (r.hash_size > 0 && !s.hash_halves.contains(&r.hash_halves[r.hash_live]))
        {
            notes.push(format!(
                "{ident}: saved fallback table {:?} of {} slots, VIPS points at {} of {}",
                s.hash_halves, s.hash_size, r.hash_halves[r.hash_live], r.hash_size
            ));
        }
        if r.table_size > 0 && !s.halves.contains(&r.halves[r.live]) {
            notes.push(format!(
                "{ident}: saved live half at {:?}, VIPS points at {}",
                s.halves.get(s.live),
                r.halves[r.live]
            ));
        }
        let want: BTreeMap<IpAddr, (u32, u32)> = s
            .backends
            .iter()
            .map(|b| (b.address, (b.id, b.generation)))
            .collect();
        let have: BTreeMap<IpAddr, (u32, u32)> = r
            .backends
            .iter()
            .map(|(a, b)| (*a, (b.id, b.generation)))
            .collect();
        if want != have {
            notes.push(format!(
                "{ident}: saved backends (address → slot, generation) {want:?}, BACKENDS has {have:?}"
            ));
        }
    }
    for ident in layout.vips.keys() {
        if !saved.vips.iter().any(|s| s.ident() == *ident) {
            notes.push(format!("{ident} is in VIPS but not saved"));
        }
    }
}

impl Dataplane {
    /// Rebuild the layout from the adopted `VIPS` and `BACKENDS` (and `saved`), and count
    /// what was adopted in `adoption`.
    pub(super) fn adopt_layout(
        &mut self,
        sizes: Sizes,
        saved: Option<&SavedLayout>,
        dir: &Path,
        adoption: &mut Adoption,
    ) -> Result<(), DataplaneError> {
        let vips: Vec<(VipIdent, VipMeta)> = self
            .vips
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, m)| Some((ident_of(&k)?, m)))
            .collect();
        let backends: Vec<Backend> = crate::batch::get_first(&self.backends, sizes.backend_slots)
            .map_err(|source| DataplaneError::Map {
            name: names::BACKENDS,
            source,
        })?;
        let (layout, notes) = Layout::recover(sizes, &vips, &backends, saved).map_err(|why| {
            DataplaneError::Incompatible {
                dir: dir.to_owned(),
                differences: vec![why],
            }
        })?;
        adoption.vips = layout.vips.len();
        adoption.backends = layout.vips.values().map(|r| r.backends.len()).sum();
        adoption.flows = self.flow_count();
        adoption.notes.extend(notes);
        self.layout = layout;
        Ok(())
    }
}
