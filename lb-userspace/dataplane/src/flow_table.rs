//! The flow table (`FLOWS`) as the daemon sees it: the program's array of slots
//! (`lb_common::flow_table`), mapped into this process and read and written in place, by
//! the same rules as the program (tags changed by compare-and-swap, a flow's key and value
//! read between two reads of its tag). The sweep walks it as memory, without a system
//! call per flow.

use std::{
    os::fd::BorrowedFd,
    sync::atomic::{AtomicU64, Ordering},
};

use lb_common::{
    FLOW_PROBES, FlowKey, FlowSlot, FlowTableMeta, FlowValue, SLOT_BUSY, SLOT_EMPTY, SLOT_FREE,
    is_flow_tag, same_key, slot_tag, table_hash,
};

use super::{DataplaneError, mapping::Mapping};

/// One flow as read from its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: u32,
    pub tag: u64,
    pub key: FlowKey,
    pub value: FlowValue,
}

/// What a probe found: the flow's slot, or where it would go (and that slot's tag then).
struct Scan {
    found: Option<Entry>,
    free: Option<(u32, u64)>,
    /// The tag of a slot holding this flow.
    tag: u64,
}

/// What an insert from userspace did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The flow took a slot.
    Taken,
    /// The flow had one already (left as it was).
    Exists,
    /// No free slot in its probe.
    Full,
}

/// A mapping of `FLOWS` (shared with the program) and the table's shape and hash secret.
pub struct FlowTable {
    mem: Mapping,
    meta: FlowTableMeta,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("slots", &self.slots())
            .finish_non_exhaustive()
    }
}

impl FlowTable {
    /// Map the `FLOWS` array of `fd` (`meta.mask + 1` slots). Every access to a slot goes
    /// through atomic tag operations, or volatile reads validated by them: the program
    /// writes concurrently.
    pub fn map(fd: BorrowedFd<'_>, meta: FlowTableMeta) -> Result<Self, DataplaneError> {
        let bytes = (meta.mask as usize + 1) * size_of::<FlowSlot>();
        Ok(Self {
            mem: Mapping::new(fd, bytes, "FLOWS")?,
            meta,
        })
    }

    /// The table's slots.
    pub fn slots(&self) -> u32 {
        self.meta.mask.wrapping_add(1)
    }

    fn slot(&self, i: u32) -> *mut FlowSlot {
        debug_assert!(i <= self.meta.mask);
        // SAFETY: `i & mask` is within the mapping (of `mask + 1` slots), which is page
        // aligned.
        unsafe {
            self.mem
                .as_ptr()
                .cast::<FlowSlot>()
                .add((i & self.meta.mask) as usize)
        }
    }

    fn tag(&self, i: u32) -> &AtomicU64 {
        // SAFETY: a slot's tag: 8-byte aligned (slots are 64-byte, the mapping page aligned)
        // and only ever accessed atomically, here and by the program.
        unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*self.slot(i)).tag)) }
    }

    /// The flow in slot `i`, if it holds one: its key and value read between two reads of
    /// its tag (`None` if the tag changed meanwhile: the slot was deleted or reused).
    pub fn read(&self, i: u32) -> Option<Entry> {
        let tag = self.tag(i).load(Ordering::Acquire);
        if !is_flow_tag(tag) {
            return None;
        }
        let s = self.slot(i);
        // SAFETY: plain data within the mapping; a torn read is caught by the tag check.
        let (key, value) = unsafe {
            (
                std::ptr::read_volatile(std::ptr::addr_of!((*s).key)),
                std::ptr::read_volatile(std::ptr::addr_of!((*s).value)),
            )
        };
        (self.tag(i).load(Ordering::Acquire) == tag).then_some(Entry {
            index: i,
            tag,
            key,
            value,
        })
    }

    /// Every flow, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        (0..self.slots()).filter_map(|i| self.read(i))
    }

    /// Number of flows (walks the table).
    pub fn count(&self) -> usize {
        (0..self.slots())
            .filter(|&i| is_flow_tag(self.tag(i).load(Ordering::Relaxed)))
            .count()
    }

    /// The slot of `key`'s flow, as the program finds it.
    pub fn find(&self, key: &FlowKey) -> Option<Entry> {
        self.scan(key).found
    }

    /// The probe of `key`, as the program makes it (`lb-ebpf`'s `flow::scan`): the slot
    /// holding its flow, else the first deleted or empty slot (with the tag it had) before
    /// the first empty one.
    fn scan(&self, key: &FlowKey) -> Scan {
        let h = table_hash(key, &self.meta);
        let mut out = Scan {
            found: None,
            free: None,
            tag: slot_tag(h),
        };
        for i in 0..FLOW_PROBES {
            let index = h.wrapping_add(i) & self.meta.mask;
            let t = self.tag(index).load(Ordering::Acquire);
            if t == out.tag
                && let Some(e) = self.read(index)
                && same_key(&e.key, key)
            {
                out.found = Some(e);
                out.free = None;
                break;
            }
            if (t == SLOT_EMPTY || t == SLOT_FREE) && out.free.is_none() {
                out.free = Some((index, t));
            }
            if t == SLOT_EMPTY {
                break;
            }
        }
        out
    }

    /// Delete the flow in slot `index` if its tag is still `tag`. Whether it was deleted.
    fn free_slot(&self, index: u32, tag: u64) -> bool {
        self.tag(index)
            .compare_exchange(tag, SLOT_FREE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The flow of `key`, if any.
    pub fn get(&self, key: &FlowKey) -> Option<FlowValue> {
        self.find(key).map(|e| e.value)
    }

    /// Delete the flow read as `e` if its slot still holds it unchanged (a packet since
    /// then may have stamped or closed it: then it stays). Whether it was deleted.
    pub fn remove_if_unchanged(&self, e: &Entry) -> bool {
        self.read(e.index).as_ref() == Some(e) && self.free_slot(e.index, e.tag)
    }

    /// Delete `key`'s flow, whatever it holds. Whether there was one.
    pub fn remove(&self, key: &FlowKey) -> bool {
        self.find(key)
            .is_some_and(|e| self.free_slot(e.index, e.tag))
    }

    /// Insert a flow as the program does (the first deleted or empty slot of its probe,
    /// unless the key has one), for upgrades from an older table and tests.
    pub fn insert(&self, key: &FlowKey, value: &FlowValue) -> Inserted {
        let scan = self.scan(key);
        if scan.found.is_some() {
            return Inserted::Exists;
        }
        let Some((index, seen)) = scan.free else {
            return Inserted::Full;
        };
        if self
            .tag(index)
            .compare_exchange(seen, SLOT_BUSY, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Inserted::Full;
        }
        let s = self.slot(index);
        // SAFETY: the slot is `BUSY`, claimed by this compare-and-swap: nobody else writes
        // it until its tag is published.
        unsafe {
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*s).key), *key);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*s).value), *value);
        }
        self.tag(index).store(scan.tag, Ordering::Release);
        Inserted::Taken
    }

    /// Empty the table (tests and benchmarks; nothing may forward meanwhile).
    pub fn clear(&self) {
        for i in 0..self.slots() {
            self.tag(i).store(SLOT_EMPTY, Ordering::Release);
        }
    }

    /// Turn deleted slots back into empty ones where that cuts no flow off: a deleted
    /// slot may become empty unless a flow sits beyond it in the probe that reaches the
    /// flow (its hash's slot at or before it). Lookups that miss then stop sooner, and
    /// inserts find an empty slot sooner. Safe while the program runs: an insert takes the
    /// first deleted or empty slot of its probe, so no new flow lands beyond a slot that
    /// was deleted when it probed (see `lb_common::flow_table`). How many slots were
    /// emptied.
    pub fn tidy(&self) -> u64 {
        let n = self.slots() as usize;
        let mask = self.meta.mask;
        // Slots some flow's probe passes over on its way to the flow (or may: a slot being
        // written, whose key is not there yet, covers the whole probe before it).
        let mut covered = vec![false; n];
        for i in 0..self.slots() {
            let t = self.tag(i).load(Ordering::Acquire);
            let back = if t == SLOT_BUSY {
                FLOW_PROBES - 1
            } else if is_flow_tag(t) {
                (i.wrapping_sub(t as u32) & mask).min(FLOW_PROBES - 1)
            } else {
                continue;
            };
            for k in 1..=back {
                covered[(i.wrapping_sub(k) & mask) as usize] = true;
            }
        }
        let mut emptied = 0;
        for (i, _) in covered.iter().enumerate().filter(|(_, c)| !**c) {
            let ok = self
                .tag(i as u32)
                .compare_exchange(SLOT_FREE, SLOT_EMPTY, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            emptied += u64::from(ok);
        }
        emptied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table in plain memory (an anonymous mapping), as the program would see it.
    fn table(slots: u32) -> FlowTable {
        let mut r = [0u32; 11];
        for (i, w) in r.iter_mut().enumerate() {
            *w = (i as u32 + 7).wrapping_mul(0x9e37_79b9);
        }
        FlowTable {
            mem: Mapping::anonymous(slots as usize * size_of::<FlowSlot>()),
            meta: FlowTableMeta::new(slots, r),
        }
    }

    fn key(n: u32) -> FlowKey {
        let mut k = FlowKey {
            family: lb_common::FAMILY_V4,
            proto: lb_common::PROTO_TCP,
            ..FlowKey::default()
        };
        k.src[..4].copy_from_slice(&n.to_be_bytes());
        k.dst[..4].copy_from_slice(&[10, 0, 0, 1]);
        k.sport = 40000u16.to_be_bytes();
        k.dport = 443u16.to_be_bytes();
        k
    }

    fn value(id: u32) -> FlowValue {
        FlowValue {
            backend_id: id,
            generation: 1,
            last_seen: 5,
            state: 0,
        }
    }

    #[test]
    fn insert_find_remove() {
        let t = table(64);
        for n in 0..20 {
            assert_eq!(t.insert(&key(n), &value(n)), Inserted::Taken);
        }
        assert_eq!(t.insert(&key(3), &value(99)), Inserted::Exists);
        assert_eq!(t.count(), 20);
        for n in 0..20 {
            assert_eq!(t.get(&key(n)), Some(value(n)));
        }
        assert_eq!(t.get(&key(20)), None);
        assert!(t.remove(&key(3)));
        assert!(!t.remove(&key(3)));
        assert_eq!(t.get(&key(3)), None);
        // Every other flow is still found past the deleted slot.
        for n in (0..20).filter(|&n| n != 3) {
            assert_eq!(t.get(&key(n)), Some(value(n)), "flow {n}");
        }
        assert_eq!(t.iter().count(), 19);
    }

    #[test]
    fn a_full_probe_refuses_and_a_deleted_slot_is_reused() {
        let t = table(FLOW_PROBES);
        for n in 0..FLOW_PROBES {
            assert_eq!(t.insert(&key(n), &value(n)), Inserted::Taken);
        }
        assert_eq!(t.insert(&key(1000), &value(1)), Inserted::Full);
        assert!(t.remove(&key(5)));
        assert_eq!(t.insert(&key(1000), &value(1)), Inserted::Taken);
        assert_eq!(t.get(&key(1000)), Some(value(1)));
        // A table that was full has no empty slot left: tidying still frees the deleted
        // slots no flow's probe passes over.
        for n in 0..FLOW_PROBES {
            t.remove(&key(n));
        }
        assert!(t.tidy() > 0);
        assert_eq!(t.get(&key(1000)), Some(value(1)));
        assert_eq!(t.count(), 1);
    }

    #[test]
    fn tidying_keeps_every_flow_reachable() {
        let t = table(256);
        for n in 0..100 {
            t.insert(&key(n), &value(n));
        }
        for n in (0..100).step_by(3) {
            assert!(t.remove(&key(n)));
        }
        let emptied = t.tidy();
        assert!(emptied > 0);
        for n in 0..100 {
            let want = (n % 3 != 0).then(|| value(n));
            assert_eq!(t.get(&key(n)), want, "flow {n}");
        }
        // Inserts after tidying still find every flow and take no second slot.
        for n in 0..100 {
            let want = if n % 3 == 0 {
                Inserted::Taken
            } else {
                Inserted::Exists
            };
            assert_eq!(t.insert(&key(n), &value(n)), want, "flow {n}");
        }
        assert_eq!(t.count(), 100);
    }

    #[test]
    fn a_changed_flow_is_not_removed_as_read() {
        let t = table(64);
        t.insert(&key(1), &value(1));
        let e = t.find(&key(1)).unwrap();
        // A packet stamps it meanwhile.
        // SAFETY: the test's own mapping.
        unsafe { (*t.slot(e.index)).value.last_seen = 6 };
        assert!(!t.remove_if_unchanged(&e));
        assert!(t.get(&key(1)).is_some());
        let e = t.find(&key(1)).unwrap();
        assert!(t.remove_if_unchanged(&e));
        assert_eq!(t.count(), 0);
    }
}
