//! Where things live in the kernel maps: VIP ids, backend slots (with generations), and the
//! regions of `TABLES` each VIP's two table halves occupy. Pure bookkeeping, no syscalls.

use std::collections::BTreeMap;

use super::{DataplaneError, Sizes};

/// Hands out backend slots `1..n` (`Sizes::backend_slots`) round-robin, so a freed slot is
/// reused as late as possible, and bumps its generation on every reuse.
#[derive(Debug)]
pub struct BackendSlots {
    used: Vec<bool>,
    generation: Vec<u32>,
    cursor: usize,
    /// Slots in use (slot 0 counted: reserved).
    in_use: usize,
}

impl BackendSlots {
    /// `n` slots, none used but the reserved slot 0.
    pub fn new(n: u32) -> Self {
        let n = (n as usize).max(1);
        let mut used = vec![false; n];
        used[0] = true; // reserved: "no backend"
        Self {
            used,
            generation: vec![0; n],
            cursor: 1,
            in_use: 1,
        }
    }

    /// Slots that can hold a backend (all but slot 0).
    pub fn limit(&self) -> u32 {
        (self.used.len() - 1) as u32
    }

    /// A free slot and its new generation.
    pub fn alloc(&mut self) -> Result<(u32, u32), DataplaneError> {
        let n = self.used.len();
        for step in 0..n {
            let i = (self.cursor + step) % n;
            if !self.used[i] {
                self.used[i] = true;
                self.in_use += 1;
                self.generation[i] = self.generation[i].wrapping_add(1);
                self.cursor = (i + 1) % n;
                return Ok((i as u32, self.generation[i]));
            }
        }
        Err(DataplaneError::Full {
            what: "backend slots (daemon.backend_capacity)",
            limit: self.limit(),
        })
    }

    pub fn free(&mut self, id: u32) {
        if id != 0
            && let Some(u) = self.used.get_mut(id as usize)
            && *u
        {
            *u = false;
            self.in_use -= 1;
        }
    }

    pub fn in_use(&self) -> usize {
        self.in_use - 1
    }

    /// Rebuild from what the kernel holds (adoption): every slot's last generation (freed
    /// slots keep theirs in `BACKENDS`, so a reuse still bumps past it), which slots are in
    /// use, and where the round-robin cursor stands.
    pub fn restore(n: u32, generations: &[u32], used: &[u32], cursor: usize) -> Self {
        let mut s = Self::new(n);
        for (g, have) in s.generation.iter_mut().zip(generations) {
            *g = *have;
        }
        for &id in used {
            if let Some(u) = s.used.get_mut(id as usize)
                && !*u
            {
                *u = true;
                s.in_use += 1;
            }
        }
        s.cursor = if (1..s.used.len()).contains(&cursor) {
            cursor
        } else {
            1
        };
        s
    }

    /// Move the round-robin cursor to slot `at` (ignored unless a slot of this range).
    #[cfg(feature = "test-helpers")]
    pub fn move_cursor(&mut self, at: usize) {
        if (1..self.used.len()).contains(&at) {
            self.cursor = at;
        }
    }

    /// The round-robin cursor (saved with the layout).
    pub fn cursor(&self) -> usize {
        self.cursor
    }
}

/// Hands out VIP ids `0..capacity` (`Sizes::vips`), lowest first.
#[derive(Debug)]
pub struct VipIds {
    used: std::collections::BTreeSet<u32>,
    capacity: u32,
}

impl VipIds {
    pub fn new(capacity: u32) -> Self {
        Self {
            used: std::collections::BTreeSet::new(),
            capacity,
        }
    }

    pub fn alloc(&mut self) -> Result<u32, DataplaneError> {
        // The lowest free id: the first gap in the (sorted) used ids.
        let mut id = 0;
        for &u in &self.used {
            if u != id {
                break;
            }
            id += 1;
        }
        if id >= self.capacity {
            return Err(DataplaneError::Full {
                what: "VIP ids (daemon.vip_capacity)",
                limit: self.capacity,
            });
        }
        self.used.insert(id);
        Ok(id)
    }

    pub fn free(&mut self, id: u32) {
        self.used.remove(&id);
    }

    /// Mark `id` used (adoption); false if it is out of range or already used.
    pub fn reserve(&mut self, id: u32) -> bool {
        id < self.capacity && self.used.insert(id)
    }
}

/// First-fit allocator of `TABLES` slot ranges.
#[derive(Debug)]
pub struct Regions {
    /// Free ranges: start → length, coalesced.
    free: BTreeMap<u32, u32>,
    capacity: u32,
}

impl Regions {
    pub fn new(capacity: u32) -> Self {
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Self { free, capacity }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn free_slots(&self) -> u64 {
        self.free.values().map(|l| u64::from(*l)).sum()
    }

    /// A range of `len` slots; its start.
    pub fn alloc(&mut self, len: u32) -> Result<u32, DataplaneError> {
        let (&start, &have) =
            self.free
                .iter()
                .find(|(_, l)| **l >= len)
                .ok_or(DataplaneError::TablesFull {
                    need: len,
                    free: self.free_slots(),
                    capacity: self.capacity,
                })?;
        self.free.remove(&start);
        if have > len {
            self.free.insert(start + len, have - len);
        }
        Ok(start)
    }

    /// Take exactly `[start, start + len)` (adoption: the halves the kernel already uses);
    /// false, changing nothing, unless that whole range is free.
    pub fn reserve(&mut self, start: u32, len: u32) -> bool {
        let Some((&fs, &fl)) = self.free.range(..=start).next_back() else {
            return false;
        };
        let (end, fend) = (
            u64::from(start) + u64::from(len),
            u64::from(fs) + u64::from(fl),
        );
        if len == 0 || end > fend {
            return false;
        }
        self.free.remove(&fs);
        if start > fs {
            self.free.insert(fs, start - fs);
        }
        if fend > end {
            // Both fit in u32: end < fend <= capacity.
            self.free.insert(end as u32, (fend - end) as u32);
        }
        true
    }

    /// Give back `[start, start + len)`, merging with free neighbours.
    pub fn release(&mut self, start: u32, len: u32) {
        let (mut s, mut l) = (start, len);
        if let Some((&ps, &pl)) = self.free.range(..s).next_back()
            && ps + pl == s
        {
            self.free.remove(&ps);
            s = ps;
            l += pl;
        }
        if let Some(&nl) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            l += nl;
        }
        self.free.insert(s, l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_first_fit_and_coalesce() {
        let mut r = Regions::new(100);
        let a = r.alloc(30).unwrap();
        let b = r.alloc(30).unwrap();
        let c = r.alloc(30).unwrap();
        assert_eq!((a, b, c), (0, 30, 60));
        assert!(r.alloc(20).is_err());
        r.release(b, 30);
        r.release(a, 30);
        assert_eq!(r.free_slots(), 70);
        assert_eq!(r.alloc(60).unwrap(), 0, "a and b coalesced into one range");
        r.release(c, 30);
        r.release(0, 60);
        assert_eq!(r.alloc(100).unwrap(), 0, "everything coalesced");
    }

    #[test]
    fn regions_reserve_exact_ranges() {
        let mut r = Regions::new(100);
        assert!(r.reserve(10, 20));
        assert!(!r.reserve(25, 10), "overlaps the first");
        assert!(r.reserve(90, 10));
        assert!(!r.reserve(95, 10), "beyond the capacity");
        assert_eq!(r.free_slots(), 70);
        assert_eq!(r.alloc(10).unwrap(), 0);
        assert_eq!(r.alloc(60).unwrap(), 30);
        assert!(r.alloc(1).is_err());
    }

    #[test]
    fn backend_slots_restore_keeps_generations() {
        let mut gens = vec![0; 64];
        gens[1] = 7;
        gens[2] = 3;
        let mut s = BackendSlots::restore(64, &gens, &[2], 1);
        assert_eq!(s.in_use(), 1);
        assert_eq!(
            s.alloc().unwrap(),
            (1, 8),
            "a freed slot's reuse bumps past its last generation"
        );
        assert_eq!(s.alloc().unwrap(), (3, 1));
    }

    #[test]
    fn backend_slots_skip_zero_and_bump_generation() {
        let mut s = BackendSlots::new(lb_common::DEFAULT_BACKEND_CAPACITY);
        let (a, ga) = s.alloc().unwrap();
        assert_eq!((a, ga), (1, 1));
        let (b, _) = s.alloc().unwrap();
        assert_eq!(b, 2);
        s.free(a);
        // Round-robin: the freed slot is not handed out again right away.
        assert_eq!(s.alloc().unwrap().0, 3);
        assert_eq!(s.in_use(), 2, "slots 2 and 3");
    }

    /// `daemon.vip_capacity` bounds the VIP ids: lowest free first, none beyond it.
    #[test]
    fn vip_ids_fill_their_capacity() {
        let mut ids = VipIds::new(3);
        assert_eq!((ids.alloc().unwrap(), ids.alloc().unwrap()), (0, 1));
        assert!(ids.reserve(2));
        assert!(!ids.reserve(3), "beyond the capacity");
        assert!(ids.alloc().is_err(), "full");
        ids.free(1);
        assert_eq!(ids.alloc().unwrap(), 1, "the lowest free id");
    }

    #[test]
    fn backend_slot_reuse_has_new_generation() {
        let n = lb_common::DEFAULT_BACKEND_CAPACITY;
        let mut s = BackendSlots::new(n);
        let mut first = None;
        for _ in 1..n {
            let (id, g) = s.alloc().unwrap();
            if id == 1 {
                first = Some(g);
            }
        }
        assert!(s.alloc().is_err(), "full");
        assert_eq!(s.in_use(), n as usize - 1);
        s.free(1);
        let (id, g) = s.alloc().unwrap();
        assert_eq!(id, 1);
        assert_eq!(g, first.unwrap() + 1);
    }
}

/// What has been published for one VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipRecord {
    pub vip_id: u32,
    pub mode: u8,
    /// Slots of each half.
    pub table_size: u32,
    /// Length of the live table (`table_size` for Maglev; the sequence length for the
    /// sequence schedulers; 0 = no backend for new flows).
    pub live_len: u32,
    /// What was published last, with the hash seed it was built with: an unchanged VIP is
    /// not rebuilt.
    pub published: Option<(super::DesiredVip, u32)>,
    /// `sluice_core::fingerprint::vip` of what was published last (`None`: not yet).
    pub fingerprint: Option<sluice_core::fingerprint::Fingerprint>,
    /// Starts of the two table halves in `TABLES`.
    pub halves: [u32; 2],
    /// Which half `VIPS` points at.
    pub live: usize,
    /// Slots of each half of the fallback Maglev table of a sequence scheduler (rr, wrr,
    /// lc, wlc: TCP packets of connections begun on another balancer are hashed into it,
    /// see `lb_common::SCHED_SEQUENCE`): the VIP's `table_size`, or 0 for other schedulers
    /// (which have none).
    pub hash_size: u32,
    /// Starts of the fallback table's two halves in `TABLES` (when `hash_size` > 0).
    pub hash_halves: [u32; 2],
    /// Which fallback half `VIPS` points at.
    pub hash_live: usize,
    /// Backend address → its slot.
    pub backends: BTreeMap<std::net::IpAddr, BackendRecord>,
}

/// A backend's slot in `BACKENDS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendRecord {
    pub id: u32,
    pub generation: u32,
}

/// Everything the dataplane has published, and the allocators behind it.
#[derive(Debug)]
pub struct Layout {
    pub(super) vips: BTreeMap<super::VipIdent, VipRecord>,
    pub(super) vip_ids: VipIds,
    pub(super) slots: BackendSlots,
    pub(super) regions: Regions,
}

impl Layout {
    pub fn new(sizes: Sizes) -> Self {
        Self {
            vips: BTreeMap::new(),
            vip_ids: VipIds::new(sizes.vips),
            slots: BackendSlots::new(sizes.backend_slots),
            regions: Regions::new(sizes.table_slots),
        }
    }

    pub fn vip(&self, ident: &super::VipIdent) -> Option<&VipRecord> {
        self.vips.get(ident)
    }

    pub fn vips(&self) -> impl Iterator<Item = (&super::VipIdent, &VipRecord)> {
        self.vips.iter()
    }

    /// Every backend slot in use (each VIP's backends), with its generation.
    pub fn backends(&self) -> impl Iterator<Item = BackendRecord> + '_ {
        self.vips
            .values()
            .flat_map(|r| r.backends.values().copied())
    }

    /// The backend slot of `addr` under the VIP.
    pub fn backend_id(&self, ident: &super::VipIdent, addr: std::net::IpAddr) -> Option<u32> {
        self.vips.get(ident)?.backends.get(&addr).map(|b| b.id)
    }
}
