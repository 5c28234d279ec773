//! The flow table (`FLOWS`) as the daemon sees it: the program's array of slots
//! (`lb_common::flow_table`), mapped into this process and read and written in place, by
//! the same rules as the program (tags changed by compare-and-swap, a flow's key and value
//! read between two reads of its tag). The sweep walks it as memory, without a system
//! call per flow.
//!
//! Flows are hashed into the region in use (`FLOW_REGION`, see `lb_common::flow_table`),
//! which the daemon grows and shrinks with the flows ([`FlowTable::resize`]): it publishes
//! the new region with the old one beside it (the program then probes both), waits until
//! no program run can still be using the old region alone (an RCU grace period), moves
//! every flow that is out of place for the new region, waits again, and drops the old one.

use std::{
    os::fd::BorrowedFd,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use lb_common::{
    FLOW_PROBES, FlowKey, FlowRegion, FlowSlot, FlowTableMeta, FlowValue, SLOT_BUSY, SLOT_EMPTY,
    SLOT_FREE, is_flow_tag, min_region, same_key, slot_tag, table_hash,
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

/// What a change of the region's size did ([`FlowTable::resize`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resized {
    /// The region's slots before and after.
    pub from: u32,
    pub to: u32,
    /// Flows moved to their place in the new region.
    pub moved: u64,
    /// Flows that found no free slot in the new region's probe: the region stays as it was
    /// (a shrink is undone), every flow where it was.
    pub unplaced: u64,
    pub took: std::time::Duration,
}

impl Resized {
    /// Say in the log what the change did (a change that found no room for some flows, as
    /// a warning; none at all, nothing).
    pub fn log(&self) {
        if self.unplaced != 0 {
            tracing::warn!(
                from = self.from,
                to = self.to,
                unplaced = self.unplaced,
                "flow table region: some flows found no room in the new size; kept the old one"
            );
        } else if self.from != self.to {
            tracing::info!(
                from_slots = self.from,
                to_slots = self.to,
                moved = self.moved,
                took_us = self.took.as_micros() as u64,
                "flow table region resized for the flows it holds"
            );
        }
    }
}

/// Where [`FlowTable::place`] left a flow.
enum Place {
    Stays,
    Moved,
    NoRoom,
}

/// A mapping of `FLOWS` and of `FLOW_REGION` (shared with the program), and the table's
/// shape and hash secret.
pub struct FlowTable {
    mem: Mapping,
    meta: FlowTableMeta,
    region: Mapping,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("slots", &self.slots())
            .finish_non_exhaustive()
    }
}

impl FlowTable {
    /// Map the `FLOWS` array of `fd` (`meta.mask + 1` slots) and the `FLOW_REGION` array of
    /// `region_fd`. Every access to a slot goes through atomic tag operations, or volatile
    /// reads validated by them: the program writes concurrently.
    pub fn map(
        fd: BorrowedFd<'_>,
        region_fd: BorrowedFd<'_>,
        meta: FlowTableMeta,
    ) -> Result<Self, DataplaneError> {
        let bytes = (meta.mask as usize + 1) * size_of::<FlowSlot>();
        Ok(Self {
            mem: Mapping::new(fd, bytes, "FLOWS")?,
            meta,
            region: Mapping::new(region_fd, size_of::<u64>(), "FLOW_REGION")?,
        })
    }

    fn region_word(&self) -> &AtomicU64 {
        // SAFETY: the first 8 bytes of the page-aligned `FLOW_REGION` mapping, only ever
        // accessed atomically here and read whole by the program.
        unsafe { AtomicU64::from_ptr(self.region.as_ptr().cast::<u64>()) }
    }

    /// The region in use (and the old one, while it changes size).
    pub fn region(&self) -> FlowRegion {
        FlowRegion::unpack(self.region_word().load(Ordering::Acquire))
    }

    fn set_region(&self, r: FlowRegion) {
        self.region_word().store(r.pack(), Ordering::Release);
    }

    /// Describe a new table's region (the smallest, [`min_region`]), or, if `FLOW_REGION`
    /// says nothing yet of a table that holds flows (made by a build without regions, its
    /// flows spread over all of it), the whole table. A region left changing size by a
    /// daemon that stopped meanwhile is settled ([`FlowTable::resize`]).
    pub fn init_region(&self, fresh: bool) -> Result<(), DataplaneError> {
        let r = self.region();
        if r.mask == 0 {
            self.set_region(FlowRegion::of(if fresh {
                min_region(self.slots())
            } else {
                self.slots()
            }));
        } else if r.old_mask != 0 {
            let done = self.resize(r.slots());
            if done.unplaced != 0 {
                return Err(DataplaneError::FlowTable(format!(
                    "{} flows have no room in the flow table's region of {} slots",
                    done.unplaced,
                    r.slots()
                )));
            }
        }
        Ok(())
    }

    /// Slots that may hold flows: the region, or the larger of the two while it changes.
    fn span(&self) -> u32 {
        let r = self.region();
        r.mask.max(r.old_mask).wrapping_add(1).min(self.slots())
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
        (0..self.span()).filter_map(|i| self.read(i))
    }

    /// Number of flows (walks the region).
    pub fn count(&self) -> usize {
        (0..self.span())
            .filter(|&i| is_flow_tag(self.tag(i).load(Ordering::Acquire)))
            .count()
    }

    /// The slot of `key`'s flow, as the program finds it.
    pub fn find(&self, key: &FlowKey) -> Option<Entry> {
        self.scan(key).found
    }

    /// The probe of `key`, as the program makes it (`lb-ebpf`'s `flow::scan`): the slot
    /// holding its flow, else the first deleted or empty slot of the region's probe (with
    /// the tag it had) before the first empty one; while the region changes size, the old
    /// region's probe is searched too.
    fn scan(&self, key: &FlowKey) -> Scan {
        let r = self.region();
        let mut out = self.scan_in(key, r.mask);
        if out.found.is_none() && r.old_mask != 0 {
            out.found = self.scan_in(key, r.old_mask).found;
            if out.found.is_some() {
                out.free = None;
            }
        }
        out
    }

    /// The probe of `key` in the region of mask `mask` alone.
    fn scan_in(&self, key: &FlowKey, mask: u32) -> Scan {
        let h = table_hash(key, &self.meta);
        let mut out = Scan {
            found: None,
            free: None,
            tag: slot_tag(h),
        };
        for i in 0..FLOW_PROBES {
            let index = h.wrapping_add(i) & mask;
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
        self.claim(&self.scan(key), key, value)
    }

    /// Give `key` the free slot `scan` found (unless it found the flow).
    fn claim(&self, scan: &Scan, key: &FlowKey, value: &FlowValue) -> Inserted {
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

    /// Grow or shrink the region to `to` slots (a power of two, at most the table's),
    /// moving the flows that are out of place, while the program runs:
    /// 1. publish the new region with the old one beside it: from then on new flows go into
    ///    the new region, and a flow is looked for in both;
    /// 2. wait until no program run that read the old region alone can still be running
    ///    (an RCU grace period: `membarrier(MEMBARRIER_CMD_GLOBAL)`), so that no insert
    ///    lands where the new region's probe would not look;
    /// 3. copy every flow the new region's probe does not reach into its place, wait again,
    ///    then delete the old slots by compare-and-swap (a packet finds one or the other);
    /// 4. drop the old region, wait again, and clean the slots past a shrunk region (so
    ///    that a later growth starts from empty slots).
    ///
    /// A flow that finds no room in the new region (a shrink into a crowded one) keeps its
    /// slot; the region then goes back to its old size the same way (nothing is lost). A
    /// packet that found a flow in its old slot before the copy was made, and updated it
    /// after (a stamp, a FIN, a move to another backend), has that update carried over to
    /// the copy before the old slot goes ([`FlowTable::carry_over`]). Also settles a region
    /// a daemon left changing size (`to`: that region's size).
    pub fn resize(&self, to: u32) -> Resized {
        let started = std::time::Instant::now();
        let to = to.min(self.slots()).max(FLOW_PROBES.min(self.slots()));
        let now = self.region();
        let from = if now.old_mask != 0 {
            now.old_mask.wrapping_add(1)
        } else {
            now.slots()
        };
        let mut out = if now.old_mask == 0 && from == to {
            Resized {
                from,
                to,
                ..Resized::default()
            }
        } else if now.old_mask != 0 && now.slots() != to {
            // Settle the change under way first: flows may be in either of its regions.
            let first = self.change(now.slots(), from);
            if first.unplaced != 0 || first.to == to {
                return first;
            }
            let then = self.change(to, first.to);
            Resized {
                from,
                moved: first.moved + then.moved,
                ..then
            }
        } else {
            self.change(to, from)
        };
        out.took = started.elapsed();
        out
    }

    /// [`FlowTable::resize`]'s steps, from a region of `from` slots to one of `to`; a
    /// shrink that leaves flows without room goes back the same way (a growth).
    fn change(&self, to: u32, from: u32) -> Resized {
        let mut out = Resized {
            from,
            to,
            ..Resized::default()
        };
        self.set_region(FlowRegion::moving(to, from));
        grace_period();
        let mut stale = Vec::new();
        for i in 0..self.span() {
            if let Some(e) = self.read(i) {
                match self.place(&e, to - 1) {
                    Place::Stays => {}
                    Place::Moved => {
                        out.moved += 1;
                        stale.push(e);
                    }
                    Place::NoRoom => out.unplaced += 1,
                }
            }
        }
        // The old slots go only once no packet that missed a copy in the new region (its
        // probe ran before the copy) can still be about to look in the old one: deleted
        // at once, such a packet would find neither and take the flow for new.
        grace_period();
        for e in stale {
            self.carry_over(&e, to - 1);
            self.free_slot(e.index, e.tag);
        }
        if out.unplaced != 0 {
            if to < from {
                // Back to the old size: every flow fits there, as it did before.
                let back = self.change(from, to);
                out.moved += back.moved;
                out.unplaced += back.unplaced;
                out.to = back.to;
            }
            // Else (a growth without room, not seen in practice) the change stays under
            // way, both regions searched, until the next sweep settles it.
            return out;
        }
        let span = self.span();
        self.set_region(FlowRegion::of(to));
        grace_period();
        // Past a shrunk region, every slot is deleted or empty now: all empty again (by
        // compare-and-swap, so that nothing but a deleted slot is ever overwritten; one
        // that is not deleted is empty already).
        for i in to..span {
            let t = self.tag(i);
            let _ = t.compare_exchange(SLOT_FREE, SLOT_EMPTY, Ordering::AcqRel, Ordering::Acquire);
        }
        self.tidy();
        out
    }

    /// Put the flow read as `e` where the probe of the region of mask `target` reaches it:
    /// leave it if it is there, else copy it into the probe's free slot (or find a copy
    /// there already, from an interrupted resize); `Moved`: its slot here is now stale, for
    /// the caller to delete.
    fn place(&self, e: &Entry, target: u32) -> Place {
        for _ in 0..3 {
            let placed = self.scan_in(&e.key, target);
            match placed.found {
                Some(at) if at.index == e.index => return Place::Stays,
                Some(_) => return Place::Moved,
                None => match self.claim(&placed, &e.key, &e.value) {
                    Inserted::Taken | Inserted::Exists => return Place::Moved,
                    // Taken by a packet meanwhile: probe again.
                    Inserted::Full if placed.free.is_some() => {}
                    Inserted::Full => return Place::NoRoom,
                },
            }
        }
        Place::NoRoom
    }

    /// Carry over to a moved flow's copy (in the region of mask `target`) what packets wrote
    /// to its old slot after the copy was read as `copied`, once no program run can still
    /// write the old slot: a packet that probed the new region before the copy was there
    /// found the flow in the old one. Field by field, each only if the copy still holds what
    /// was copied there (a packet that found the copy since wrote newer news): the backend
    /// and generation (the flow moved off a backend that stopped serving), written in the
    /// program's order; the state (a FIN, a reopening SYN, a flow seen again), by
    /// compare-and-swap; the last-seen stamp, if later.
    fn carry_over(&self, copied: &Entry, target: u32) {
        let Some(old) = self.read(copied.index) else {
            return;
        };
        let (was, now) = (copied.value, old.value);
        if old.tag != copied.tag || now == was {
            return;
        }
        let Some(copy) = self.scan_in(&copied.key, target).found else {
            return;
        };
        let [backend_id, generation, last_seen, state] = self.value_words(copy.index);
        if (now.backend_id, now.generation) != (was.backend_id, was.generation)
            && backend_id
                .compare_exchange(
                    was.backend_id,
                    now.backend_id,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            generation.store(now.generation, Ordering::Release);
        }
        if now.state != was.state {
            let _ =
                state.compare_exchange(was.state, now.state, Ordering::AcqRel, Ordering::Acquire);
        }
        if now.last_seen != was.last_seen {
            // Wrapping tick arithmetic: later by less than half the range.
            let _ = last_seen.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (now.last_seen.wrapping_sub(t).wrapping_sub(1) < u32::MAX / 2)
                    .then_some(now.last_seen)
            });
        }
    }

    /// The four 32-bit words of slot `i`'s value (`FlowValue`: backend id, generation, last
    /// seen, state), for updates in place while the program runs.
    fn value_words(&self, i: u32) -> [&AtomicU32; 4] {
        // SAFETY: a slot within the mapping (`slot` masks the index).
        let v = unsafe { std::ptr::addr_of_mut!((*self.slot(i)).value) }.cast::<u32>();
        // SAFETY: `FlowValue` is four `u32`s (`repr(C)`, 16 bytes, 4-aligned) within the
        // mapping; the program reads and writes them whole, as 32-bit words.
        [0, 1, 2, 3].map(|k| unsafe { AtomicU32::from_ptr(v.add(k)) })
    }

    /// Publish a change of the region to `to` slots without moving a flow: what a daemon
    /// that stopped in the middle of [`FlowTable::resize`] leaves (tests of the program's
    /// probe of both regions). Only with the `test-helpers` feature.
    #[cfg(any(test, feature = "test-helpers"))]
    pub fn start_resize(&self, to: u32) {
        self.set_region(FlowRegion::moving(to, self.region().slots()));
    }

    /// How many of the region's slots are in use among those of `runs` runs of 256 slots
    /// spread over it, and how many were read: an estimate of its load, cheap enough to
    /// check every few tens of milliseconds.
    pub fn sample_load(&self, runs: u32, seed: u64) -> (u64, u64) {
        let r = self.region();
        let slots = r.slots();
        let (runs, run) = (runs.max(1), 256.min(slots));
        let stretch = (u64::from(slots) / u64::from(runs)).max(1);
        let mut x = seed | 1;
        let (mut used, mut seen) = (0u64, 0u64);
        for k in 0..runs {
            // xorshift: where in the k-th stretch of the region this run starts.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let start = (u64::from(k) * stretch + x % stretch) as u32 & r.mask;
            for i in 0..run {
                let t = self
                    .tag(start.wrapping_add(i) & r.mask)
                    .load(Ordering::Relaxed);
                used += u64::from(is_flow_tag(t) || t == SLOT_BUSY);
                seen += 1;
            }
        }
        (used, seen)
    }

    /// Empty the table (tests and benchmarks; nothing may forward meanwhile).
    pub fn clear(&self) {
        for i in 0..self.span() {
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
        let r = self.region();
        if r.old_mask != 0 {
            // Changing size: the flows' probes are not all in this region's.
            return 0;
        }
        let n = r.slots() as usize;
        let mask = r.mask;
        // Slots some flow's probe passes over on its way to the flow (or may: a slot being
        // written, whose key is not there yet, covers the whole probe before it).
        let mut covered = vec![false; n];
        for i in 0..r.slots() {
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

/// Wait until every program run that started before now has ended: an RCU grace period
/// (`membarrier(MEMBARRIER_CMD_GLOBAL)` is `synchronize_rcu()`; XDP and test runs are RCU
/// read-side sections). Where the kernel refuses it (`nohz_full`), a pause far longer than
/// any program run.
fn grace_period() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
    // SAFETY: a system call with integer arguments only.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        std::thread::sleep(std::time::Duration::from_millis(50));
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
        let t = FlowTable {
            mem: Mapping::anonymous(slots as usize * size_of::<FlowSlot>()),
            meta: FlowTableMeta::new(slots, r),
            region: Mapping::anonymous(size_of::<u64>()),
        };
        t.set_region(FlowRegion::of(slots));
        t
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

    /// A table of `slots` slots whose region is `region` slots.
    fn table_in(slots: u32, region: u32) -> FlowTable {
        let t = table(slots);
        t.set_region(FlowRegion::of(region));
        t
    }

    /// What a packet wrote to a flow's old slot after the flow was copied into the new
    /// region (the packet found it there, the copy not yet made) reaches the copy before the
    /// old slot goes; what a packet wrote to the copy since is not replaced by older news.
    #[test]
    fn a_resize_carries_over_what_packets_wrote_to_the_old_slot_after_the_copy() {
        use lb_common::{FLOW_CLOSING, FLOW_NEW, FLOW_OPEN};
        let t = table_in(4096, 256);
        for n in 0..90 {
            t.insert(&key(n), &value(n));
        }
        t.set_region(FlowRegion::moving(1024, 256));
        let moved: Vec<Entry> = t
            .iter()
            .filter(|e| e.index < 256 && matches!(t.place(e, 1023), Place::Moved))
            .collect();
        assert!(moved.len() >= 4, "{}", moved.len());
        let write = |index, v: FlowValue| {
            for (w, x) in
                t.value_words(index)
                    .iter()
                    .zip([v.backend_id, v.generation, v.last_seen, v.state])
            {
                w.store(x, Ordering::Release);
            }
        };
        let copy_of = |e: &Entry| t.scan_in(&e.key, 1023).found.unwrap();
        let (fin, moves, both, quiet) = (moved[0], moved[1], moved[2], moved[3]);
        // Packets on the old slots after the copies were read: a FIN stamped a tick later;
        // a move to backend 77 (its backend stopped serving); and a flow seen again...
        let fin_v = FlowValue {
            state: FLOW_CLOSING,
            last_seen: 6,
            ..fin.value
        };
        write(fin.index, fin_v);
        let moves_v = FlowValue {
            backend_id: 77,
            generation: 3,
            last_seen: 6,
            state: FLOW_NEW,
        };
        write(moves.index, moves_v);
        write(
            both.index,
            FlowValue {
                state: FLOW_OPEN,
                last_seen: 6,
                ..both.value
            },
        );
        // ... whose copy a later packet has closed and stamped later still.
        let both_later = FlowValue {
            state: FLOW_CLOSING,
            last_seen: 7,
            ..both.value
        };
        write(copy_of(&both).index, both_later);
        for e in &moved {
            t.carry_over(e, 1023);
            assert!(t.free_slot(e.index, e.tag));
        }
        t.set_region(FlowRegion::of(1024));
        let get = |e: &Entry| t.get(&e.key).unwrap();
        assert_eq!(get(&fin), fin_v);
        assert_eq!(get(&moves), moves_v);
        assert_eq!(get(&both), both_later);
        assert_eq!(get(&quiet), quiet.value);
        assert_eq!(t.count(), 90);
    }

    #[test]
    fn growing_and_shrinking_the_region_keeps_every_flow() {
        let t = table_in(4096, 256);
        for n in 0..90 {
            assert_eq!(t.insert(&key(n), &value(n)), Inserted::Taken);
        }
        assert!(t.iter().all(|e| e.index < 256));
        let grown = t.resize(1024);
        assert_eq!((grown.from, grown.to, grown.unplaced), (256, 1024, 0));
        assert!(grown.moved > 0 && grown.moved < 90, "{grown:?}");
        assert_eq!(t.region(), FlowRegion::of(1024));
        assert!(t.iter().any(|e| e.index >= 256));
        for n in 0..90 {
            assert_eq!(t.get(&key(n)), Some(value(n)), "flow {n} after growing");
        }
        assert_eq!(t.count(), 90);
        let shrunk = t.resize(256);
        assert_eq!((shrunk.to, shrunk.unplaced), (256, 0));
        assert_eq!(t.region(), FlowRegion::of(256));
        for n in 0..90 {
            assert_eq!(t.get(&key(n)), Some(value(n)), "flow {n} after shrinking");
        }
        assert_eq!(t.count(), 90);
        // Past the shrunk region every slot is empty again, ready for the next growth.
        assert!((256..4096).all(|i| t.tag(i).load(Ordering::Relaxed) == SLOT_EMPTY));
    }

    #[test]
    fn while_the_region_moves_flows_are_found_in_either_and_new_ones_go_to_the_new() {
        let t = table_in(4096, 256);
        for n in 0..80 {
            t.insert(&key(n), &value(n));
        }
        // A daemon stopped after publishing the change: no flow moved yet.
        t.start_resize(2048);
        for n in 0..80 {
            assert_eq!(t.get(&key(n)), Some(value(n)), "flow {n} in the old region");
        }
        for n in 80..120 {
            assert_eq!(t.insert(&key(n), &value(n)), Inserted::Taken);
        }
        assert_eq!(t.insert(&key(3), &value(3)), Inserted::Exists);
        // The next daemon settles it.
        let done = t.resize(2048);
        assert_eq!((done.to, done.unplaced), (2048, 0));
        assert_eq!(t.region(), FlowRegion::of(2048));
        for n in 0..120 {
            assert_eq!(t.get(&key(n)), Some(value(n)), "flow {n} after settling");
        }
        assert_eq!(t.count(), 120);
    }

    #[test]
    fn a_shrink_into_too_small_a_region_is_undone() {
        let t = table_in(1024, 256);
        for n in 0..100 {
            t.insert(&key(n), &value(n));
        }
        let r = t.resize(64);
        assert!(r.unplaced > 0, "{r:?}");
        assert_eq!(r.to, 256);
        assert_eq!(t.region(), FlowRegion::of(256));
        for n in 0..100 {
            assert_eq!(t.get(&key(n)), Some(value(n)), "flow {n}");
        }
        assert_eq!(t.count(), 100);
    }

    #[test]
    fn a_sample_estimates_the_regions_load() {
        let t = table_in(1 << 16, 1 << 14);
        let load = |t: &FlowTable| {
            let (used, seen) = t.sample_load(16, 7);
            used as f64 / seen as f64
        };
        assert!(load(&t) < 0.01);
        for n in 0..6000 {
            t.insert(&key(n), &value(n));
        }
        let estimate = load(&t);
        assert!((estimate - 6000.0 / 16384.0).abs() < 0.05, "{estimate}");
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
