//! The flow table's layout, shared by the program (which looks flows up and inserts them)
//! and the daemon (which sweeps, counts, evicts and migrates them through a shared
//! mapping of the same array).
//!
//! `FLOWS` is an array of [`FlowSlot`]s, a power of two of them, at least twice the flows
//! the table is sized to hold ([`flow_slots_for`]), each slot one 64-byte cache line. A
//! flow lives in the first usable slot at or after `table_hash(key) & mask`, looking at
//! most [`FLOW_PROBES`] slots on (linear probing, wrapping at the end). A packet of an
//! established flow costs one hash computed inline and, almost always, one line read:
//! measured against the kernel's hash map (a helper call that hashes the 40-byte key with
//! jhash, walks a bucket list and compares with `memcmp`), about 30 ns less per packet.
//!
//! Each slot's [`FlowSlot::tag`] says what it holds:
//! - [`SLOT_EMPTY`]: never used since the table was made (or cleaned): a lookup stops here;
//! - [`SLOT_FREE`]: a deleted flow (a tombstone): lookups go on past it, inserts reuse it;
//! - [`SLOT_BUSY`]: an insert is writing the key and value: not yet a flow;
//! - [`slot_tag`]`(hash)`: a flow (the hash's 32 bits spare most key comparisons).
//!
//! Writers claim a slot by compare-and-swap of its tag (`EMPTY` or `FREE` → `BUSY`), write
//! the key and value, then publish the tag with an atomic exchange; the daemon deletes
//! with a compare-and-swap from the tag it read to `FREE`, and turns `FREE` slots back into
//! `EMPTY` only where no flow's probe passes over them on its way to the flow: an insert
//! takes the first `FREE` or `EMPTY` slot of its probe, so no flow sits beyond an `EMPTY`
//! slot in its probe.
//!
//! **The region in use.** Flows are hashed into the first `region` slots only (a power of
//! two, `FLOW_REGION`), not the whole array: the memory a packet may touch grows with the
//! flows the table holds, not with its capacity. 50,000 flows spread over a million-flow
//! table's 128 MiB cost a cache and TLB miss per packet (230 ns in `sluice bench packet`);
//! in a 16 MiB region, about 110 ns. The daemon sizes the region to about four times the
//! flows ([`region_for`]): it grows it when more than 3/8 of it is used and shrinks it
//! when less than 1/16 is. A change of size moves flows: while it lasts, `FLOW_REGION`
//! holds both masks, and a probe looks in the new region's window first (where inserts go)
//! and then in the old one's, so every flow is found wherever it is. The daemon moves the
//! flows that are out of place, then drops the old mask ([`FlowRegion`]).

use crate::{FAMILY_V6, FlowKey, FlowValue};

/// One slot of `FLOWS`: a 64-byte line holding a flow's key and value and the tag that
/// says whether it is a flow (see the module documentation).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowSlot {
    pub tag: u64,
    pub key: FlowKey,
    pub value: FlowValue,
}

/// A slot never used since the table was made or cleaned: probes stop at it.
pub const SLOT_EMPTY: u64 = 0;
/// A deleted flow's slot: probes go on past it, inserts reuse it.
pub const SLOT_FREE: u64 = 1;
/// A slot an insert has claimed and is writing.
pub const SLOT_BUSY: u64 = 2;

/// The tag of a slot holding a flow whose [`table_hash`] is `hash` (never one of the
/// three states above).
#[inline(always)]
pub const fn slot_tag(hash: u32) -> u64 {
    (1 << 32) | hash as u64
}

/// Whether a tag is a flow's.
#[inline(always)]
pub const fn is_flow_tag(tag: u64) -> bool {
    tag >> 32 != 0
}

/// How many slots a lookup or insert looks at, at most, from the slot its hash names.
/// The daemon keeps the table at most 45% used (its sweep evicts from 90% of the
/// capacity, and the slots are at least twice the capacity); at that load a run of 32
/// used slots is about a one-in-a-million event, and an insert that finds none free in its
/// 32 goes without an entry (counted as the table being full).
pub const FLOW_PROBES: u32 = 32;

/// The slots of a table sized to hold `capacity` flows: the power of two at or above
/// twice the capacity (and at least [`FLOW_PROBES`]).
pub const fn flow_slots_for(capacity: u32) -> u32 {
    let want = (capacity as u64) * 2;
    let want = if want < FLOW_PROBES as u64 {
        FLOW_PROBES as u64
    } else {
        want
    };
    let p = want.next_power_of_two();
    if p > 1 << 31 { 1 << 31 } else { p as u32 }
}

/// The smallest region the daemon shrinks to (8 MiB of slots), unless the table is smaller:
/// room for a burst of about 45,000 new flows between two checks of the daemon.
pub const MIN_REGION_SLOTS: u32 = 1 << 17;

/// The region a table of `slots` slots starts with, and never goes below: all of it if it
/// is small, else [`MIN_REGION_SLOTS`].
pub const fn min_region(slots: u32) -> u32 {
    if slots < MIN_REGION_SLOTS {
        slots
    } else {
        MIN_REGION_SLOTS
    }
}

/// The region for `flows` flows in a table of `slots` slots: the power of two at or above
/// four times the flows (a quarter used: room for the flows to grow 50% before the daemon
/// must grow it, and short probes), within `min_region(slots)..=slots`.
pub const fn region_for(flows: u64, slots: u32) -> u32 {
    let min = min_region(slots);
    let want = (flows.saturating_mul(4)).next_power_of_two();
    if want <= min as u64 {
        min
    } else if want >= slots as u64 {
        slots
    } else {
        want as u32
    }
}

/// Whether `used` of `slots` slots is past the load at which a region grows: more than
/// 3/8 (the sweep's exact count and the daemon's samples between sweeps alike).
pub const fn region_overfull(used: u64, slots: u64) -> bool {
    used * 8 > slots * 3
}

/// Whether a region of `region` slots should change size for `flows` flows: grown when
/// it is [overfull](region_overfull), shrunk when less than 1/16 is used (hysteresis: a
/// region just resized to [`region_for`] is a quarter used), to [`region_for`]'s size.
/// `None`: keep it.
pub const fn region_change(flows: u64, region: u32, slots: u32) -> Option<u32> {
    let r = region as u64;
    let want = region_for(flows, slots);
    if (region_overfull(flows, r) && want > region) || (flows * 16 < r && want < region) {
        Some(want)
    } else {
        None
    }
}

/// Value of the `FLOW_REGION` array (one entry, one `u64` so that it changes atomically):
/// the mask of the region in use (low half; slots − 1) and, while the region changes size,
/// the old region's mask (high half; 0 otherwise). 0 altogether: no table yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRegion {
    pub mask: u32,
    pub old_mask: u32,
}

impl FlowRegion {
    /// A region of `slots` slots (a power of two), not changing.
    pub const fn of(slots: u32) -> Self {
        Self {
            mask: slots.wrapping_sub(1),
            old_mask: 0,
        }
    }

    /// The region of `slots` slots, moving from one of `old` slots.
    pub const fn moving(slots: u32, old: u32) -> Self {
        Self {
            mask: slots.wrapping_sub(1),
            old_mask: old.wrapping_sub(1),
        }
    }

    /// Its slots.
    pub const fn slots(self) -> u32 {
        self.mask.wrapping_add(1)
    }

    /// As stored in `FLOW_REGION`.
    pub const fn pack(self) -> u64 {
        self.mask as u64 | (self.old_mask as u64) << 32
    }

    /// From `FLOW_REGION`'s value.
    pub const fn unpack(v: u64) -> Self {
        Self {
            mask: v as u32,
            old_mask: (v >> 32) as u32,
        }
    }
}

/// Value of the `FLOW_TABLE` array (one entry): the table's shape and its hash secret,
/// written once by the daemon that makes the table and kept with it (pinned beside it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowTableMeta {
    /// Slots − 1 (the slots are a power of two); 0: no table yet (every lookup misses,
    /// every insert fails).
    pub mask: u32,
    /// Added to the hash before its final mix (secret).
    pub add: u32,
    /// One odd multiplier per key word (secret, drawn at random for each table).
    pub mul: [u32; 10],
}

impl FlowTableMeta {
    /// The shape of a table of `slots` slots (a power of two) with the hash secret drawn
    /// from `random` (eleven words; the multipliers are made odd).
    pub const fn new(slots: u32, random: [u32; 11]) -> Self {
        let mut mul = [0u32; 10];
        let mut i = 0;
        while i < 10 {
            mul[i] = random[i + 1] | 1;
            i += 1;
        }
        Self {
            mask: slots.wrapping_sub(1),
            add: random[0],
            mul,
        }
    }
}

/// The slot a flow's probe starts at, and its tag: a sum of the key's words each multiplied
/// by its own secret odd multiplier (independent multiplies, not a dependent chain like the
/// flow hash's), then MurmurHash3's finalizer. Keyed with a secret drawn for each table, so
/// a client cannot choose 5-tuples that pile up in one run of slots (the multipliers are
/// invertible: flows that differ in one word never collide before the finalizer). An IPv4
/// key's zero words are skipped.
#[inline(always)]
pub fn table_hash(key: &FlowKey, meta: &FlowTableMeta) -> u32 {
    let w = key.words();
    let m = &meta.mul;
    let mut s = meta.add;
    if key.family == FAMILY_V6 {
        let mut i = 0;
        while i < 10 {
            s = s.wrapping_add(u32::from_le(w[i]).wrapping_mul(m[i]));
            i += 1;
        }
    } else {
        let (a, d, p, t) = (
            FlowKey::W_SRC,
            FlowKey::W_DST,
            FlowKey::W_PORTS,
            FlowKey::W_TAIL,
        );
        s = s
            .wrapping_add(u32::from_le(w[a]).wrapping_mul(m[a]))
            .wrapping_add(u32::from_le(w[d]).wrapping_mul(m[d]))
            .wrapping_add(u32::from_le(w[p]).wrapping_mul(m[p]))
            .wrapping_add(u32::from_le(w[t]).wrapping_mul(m[t]));
    }
    crate::hash::fmix32(s)
}

/// Whether two keys are the same flow (word by word; an IPv4 key's other words are zero
/// in both).
#[inline(always)]
pub fn same_key(a: &FlowKey, b: &FlowKey) -> bool {
    let (x, y) = (a.words(), b.words());
    let v4 = (x[FlowKey::W_SRC] ^ y[FlowKey::W_SRC])
        | (x[FlowKey::W_DST] ^ y[FlowKey::W_DST])
        | (x[FlowKey::W_PORTS] ^ y[FlowKey::W_PORTS])
        | (x[FlowKey::W_TAIL] ^ y[FlowKey::W_TAIL]);
    v4 == 0
        && (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) == 0
        && (x[5] ^ y[5]) | (x[6] ^ y[6]) | (x[7] ^ y[7]) == 0
}

const _: () = assert!(size_of::<FlowSlot>() == 64 && align_of::<FlowSlot>() == 8);
const _: () = assert!(core::mem::offset_of!(FlowSlot, tag) == 0);
const _: () = assert!(size_of::<FlowTableMeta>() == 48);
const _: () = assert!(FLOW_PROBES.is_power_of_two());

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: [u8; 4], sport: u16) -> FlowKey {
        crate::test_key(src, sport, 443)
    }

    fn meta(seed: u32) -> FlowTableMeta {
        let mut r = [0u32; 11];
        let mut x = seed;
        for w in &mut r {
            x = x.wrapping_mul(0x9e37_79b9).wrapping_add(0x7f4a_7c15);
            *w = x ^ (x >> 15);
        }
        FlowTableMeta::new(1 << 16, r)
    }

    #[test]
    fn slots_are_a_power_of_two_at_twice_the_capacity() {
        assert_eq!(flow_slots_for(0), FLOW_PROBES);
        assert_eq!(flow_slots_for(64), 128);
        assert_eq!(flow_slots_for(65), 256);
        assert_eq!(flow_slots_for(1 << 20), 1 << 21);
        assert_eq!(flow_slots_for(u32::MAX), 1 << 31);
        let m = meta(1);
        assert_eq!(m.mask, (1 << 16) - 1);
        assert!(m.mul.iter().all(|x| x & 1 == 1));
    }

    #[test]
    fn the_region_is_four_times_the_flows_within_its_bounds() {
        let (slots, min) = (1 << 21, min_region(1 << 21));
        assert_eq!(min, MIN_REGION_SLOTS);
        assert_eq!(min_region(1 << 12), 1 << 12);
        assert_eq!(region_for(0, slots), min);
        assert_eq!(region_for(50_000, slots), 1 << 18);
        assert_eq!(region_for(1 << 20, slots), slots);
        // Grown past 3/8 used, shrunk under 1/16, kept between.
        assert_eq!(region_change(49_152, 1 << 17, slots), None);
        assert_eq!(region_change(49_153, 1 << 17, slots), Some(1 << 18));
        assert_eq!(region_change(400_000, 1 << 17, slots), Some(1 << 21));
        assert_eq!(region_change(100_000, 1 << 19, slots), None);
        assert_eq!(region_change(30_000, 1 << 19, slots), Some(1 << 17));
        assert_eq!(region_change(10, min, slots), None);
        assert_eq!(region_change(u64::from(slots), slots, slots), None);
        let r = FlowRegion::moving(1 << 18, 1 << 17);
        assert_eq!(FlowRegion::unpack(r.pack()), r);
        assert_eq!(r.slots(), 1 << 18);
        assert_eq!(FlowRegion::unpack(FlowRegion::of(64).pack()).old_mask, 0);
    }

    #[test]
    fn tags_never_look_like_states() {
        for h in [0, 1, 2, u32::MAX] {
            let t = slot_tag(h);
            assert!(is_flow_tag(t));
            assert!(![SLOT_EMPTY, SLOT_FREE, SLOT_BUSY].contains(&t));
        }
        assert!(!is_flow_tag(SLOT_BUSY));
    }

    #[test]
    fn the_hash_is_keyed_and_spreads_one_clients_flows() {
        let (a, b) = (meta(1), meta(2));
        let k = key([192, 0, 2, 1], 40000);
        assert_eq!(table_hash(&k, &a), table_hash(&k, &a));
        assert_ne!(table_hash(&k, &a), table_hash(&k, &b));
        // 4096 ports of one client over 64 runs of 1024 slots: every run gets some, none
        // more than twice its share.
        let mut runs = [0u32; 64];
        for p in 0..4096u16 {
            runs[(table_hash(&key([192, 0, 2, 1], 30000 + p), &a) & a.mask) as usize >> 10] += 1;
        }
        assert!(runs.iter().all(|&n| n > 0 && n <= 128), "{runs:?}");
    }

    #[test]
    fn keys_compare_word_by_word() {
        let k = key([192, 0, 2, 1], 40000);
        assert!(same_key(&k, &k));
        assert!(!same_key(&k, &key([192, 0, 2, 1], 40001)));
        let mut v6 = k;
        v6.src[15] = 1;
        assert!(!same_key(&k, &v6));
    }
}
