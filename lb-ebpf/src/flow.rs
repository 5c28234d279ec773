//! The flow table and connection tracking: a connection keeps its backend for as long as
//! that backend serves; the kernel counts opens (insert, or a SYN on a closing flow) and
//! closes (the client's first FIN or RST), and stamps the last time a flow was seen so
//! the daemon can expire idle ones. The table (`FLOWS`, slots of `lb_common::flow_table`,
//! probed from the flow's keyed hash) never evicts: a new flow that finds no free slot
//! goes without an entry, counted ([`flood::unpinned_full`]).

use core::ptr::{addr_of, addr_of_mut};

use lb_common::{
    BACKEND_F_SERVING, Backend, FAMILY_V6, FLOW_CLOSING, FLOW_NEW, FLOW_OPEN, FLOW_PROBES, FlowKey,
    FlowRegion, FlowSlot, FlowValue, SLOT_BUSY, SLOT_EMPTY, SLOT_FREE, flow_is_open, slot_tag,
    table_hash,
};

use crate::{
    atomic, flood,
    maps::{BACKENDS, CLOCK, FLOW_REGION, FLOW_TABLE, FLOWS},
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    stats,
    track::Track,
};

/// No slot (an index past every table's end).
const NONE: u32 = u32::MAX;

/// Where a flow's entry is, or would go: what the one probe each packet makes found
/// ([`scan`]). Every use of the flow table after it (follow the entry, take a slot, drop
/// it again) starts from here instead of probing again: one loop in the program, so the
/// verifier walks it once per path into it rather than once per use.
#[derive(Clone, Copy)]
pub struct Slots {
    /// The slot holding the flow; [`NONE`]: none.
    found: u32,
    /// The first deleted or empty slot of the probe (where the flow would go); [`NONE`]:
    /// none (or the flow has a slot).
    free: u32,
    /// The tag of a slot holding this flow.
    tag: u64,
}

impl Slots {
    /// The same slots, XORed with `zero` (0, in a form the verifier cannot see through):
    /// whether the probe found the flow or room is then unknown to it (see the balancer's
    /// `opaque_zero`).
    #[inline(always)]
    pub fn opaque(self, zero: u32) -> Self {
        Self {
            found: self.found ^ zero,
            free: self.free ^ zero,
            tag: self.tag,
        }
    }
}

/// The slot at `index`, if within the table.
#[inline(always)]
fn slot(index: u32) -> Option<*mut FlowSlot> {
    FLOWS.get_ptr_mut(index)
}

/// A slot's tag, read once (other CPUs and the daemon change it).
#[inline(always)]
fn tag_of(s: *mut FlowSlot) -> u64 {
    // SAFETY: a pointer to a live `FLOWS` slot.
    unsafe { core::ptr::read_volatile(addr_of!((*s).tag)) }
}

/// Whether slot `s` (tag `t`) holds the flow of `key` (tag `tag`). The key's words are read
/// where they are compared (volatile reads): hoisted out of the unrolled probe, they would
/// be kept in registers and spilled, tens of stack bytes past the 512 the kernel allows.
#[inline(always)]
fn holds(s: *mut FlowSlot, t: u64, tag: u64, key: &FlowKey) -> bool {
    if t != tag {
        return false;
    }
    // SAFETY: a live slot's key, read only once its tag says a flow with this hash; `key`
    // is a reference, its words readable.
    let (a, b) = unsafe { (&*addr_of!((*s).key), key) };
    let (x, y) = (a.words(), b.words());
    let word = |i: usize| {
        // SAFETY: every index below is under 10, within both arrays.
        x[i] ^ unsafe { core::ptr::read_volatile(y.as_ptr().add(i)) }
    };
    // The words an IPv4 key can hold (the others are zero in every IPv4 key, and the tail
    // word holds the family).
    let mut diff = word(FlowKey::W_SRC)
        | word(FlowKey::W_DST)
        | word(FlowKey::W_PORTS)
        | word(FlowKey::W_TAIL);
    if diff == 0 && key.family == FAMILY_V6 {
        let mut i = 1;
        while i < 4 {
            diff |= word(FlowKey::W_SRC + i) | word(FlowKey::W_DST + i);
            i += 1;
        }
    }
    diff == 0
}

/// Probe the flow table for `key`: its keyed hash names the first slot of the region in
/// use; the slots from there are read in turn (at most `FLOW_PROBES`) until the one holding
/// the flow, or the first empty one (deleted ones are passed over), noting the first
/// deleted or empty slot on the way (where the flow would go). While the daemon resizes the
/// region, a flow not in the new region's probe is looked for in the old region's probe
/// too (no slot is taken there: it is moving out). Before the daemon described the table,
/// nothing is found and there is no room: it publishes `FLOW_REGION` only after
/// `FLOW_TABLE`, so a region says both are there (one check a packet). `zero`: 0, in a
/// form the verifier cannot see through (the balancer's `opaque_zero`): the first probe's
/// results are XORed with it before the second, so the verifier walks the second once,
/// not once per outcome of the first.
#[inline(always)]
pub fn scan(key: &FlowKey, zero: u32) -> Slots {
    let mut out = Slots {
        found: NONE,
        free: NONE,
        tag: 0,
    };
    let (Some(m), Some(r)) = (FLOW_TABLE.get(0), FLOW_REGION.get_ptr(0)) else {
        return out;
    };
    // SAFETY: a live array value; read once, whole (the daemon swaps it atomically).
    let region = FlowRegion::unpack(unsafe { core::ptr::read_volatile(r) });
    if region.mask == 0 {
        return out;
    }
    let h = table_hash(key, m);
    out.tag = slot_tag(h);
    let mut i = 0;
    while i < FLOW_PROBES {
        let index = h.wrapping_add(i) & region.mask;
        let Some(s) = slot(index) else {
            break;
        };
        let t = tag_of(s);
        if holds(s, t, out.tag, key) {
            out.found = index;
            out.free = NONE;
            return out;
        }
        if (t == SLOT_EMPTY || t == SLOT_FREE) && out.free == NONE {
            out.free = index;
        }
        if t == SLOT_EMPTY {
            break;
        }
        i += 1;
    }
    if region.old_mask != 0 {
        core::hint::cold_path();
        let free = out.free ^ zero;
        let found = find_in(key, h, out.tag, region.old_mask) ^ zero;
        out.found = found;
        out.free = if found == NONE { free } else { NONE };
    }
    out
}

/// The slot holding the flow of `key` (hash `h`, tag `tag`) in the probe of the region of
/// mask `mask`; [`NONE`]: none.
#[inline(always)]
fn find_in(key: &FlowKey, h: u32, tag: u64, mask: u32) -> u32 {
    let mut i = 0;
    while i < FLOW_PROBES {
        let index = h.wrapping_add(i) & mask;
        let Some(s) = slot(index) else {
            break;
        };
        let t = tag_of(s);
        if holds(s, t, tag, key) {
            return index;
        }
        if t == SLOT_EMPTY {
            break;
        }
        i += 1;
    }
    NONE
}

/// What [`claim`] did.
enum Claim {
    /// The flow has a slot: this one.
    Exists(*mut FlowSlot),
    /// The flow took the free slot the probe found: its key and value written, its tag
    /// published.
    Taken,
    /// No free slot in the flow's probe, or another CPU took it since the probe.
    Full,
}

/// Give the flow of `key` a slot holding `value`, unless it has one: the free slot its
/// probe found, claimed by compare-and-swap (`BUSY` while the key and value are written,
/// then the tag published).
#[inline(always)]
fn claim(slots: &Slots, key: &FlowKey, value: FlowValue) -> Claim {
    if let Some(s) = slot(slots.found) {
        return Claim::Exists(s);
    }
    let Some(s) = slot(slots.free) else {
        return Claim::Full;
    };
    // Taken meanwhile by another CPU: let it have it.
    let seen = tag_of(s);
    if seen != SLOT_EMPTY && seen != SLOT_FREE {
        return Claim::Full;
    }
    // SAFETY: a live slot; once the compare-and-swap made it `BUSY`, this CPU alone writes
    // it until the tag is published.
    unsafe {
        if atomic::compare_exchange(addr_of_mut!((*s).tag), seen, SLOT_BUSY) != seen {
            return Claim::Full;
        }
        (*s).key = *key;
        (*s).value = value;
        atomic::publish(addr_of_mut!((*s).tag), slots.tag);
    }
    Claim::Taken
}

/// Now, in `FLOW_TIME_SHIFT` ticks of the coarse monotonic clock, as the daemon last wrote
/// it into `CLOCK` (an array lookup the verifier inlines, where the clock helper is a call).
#[inline(always)]
pub fn now_ticks() -> u32 {
    CLOCK.get(0).copied().unwrap_or(0)
}

/// The backend this flow is pinned to, if that backend still serves, and the tracking
/// update of this packet (applied to the entry in place). A flow whose backend was
/// removed, reused or marked down yields `None` and is reassigned (and reopened) by the
/// caller.
#[inline(always)]
pub fn lookup(slots: &Slots, tcp_flags: u8) -> Option<(u32, &'static Backend, Track)> {
    // SAFETY: a live slot's value.
    let v = unsafe { addr_of_mut!((*slot(slots.found)?).value) };
    // SAFETY: a pointer to a live flow-table value. Only this program writes values in place
    // (one 32-bit field at a time, each write whole), the daemon only reads or deletes them.
    let (id, generation, state, seen) =
        unsafe { ((*v).backend_id, (*v).generation, (*v).state, (*v).last_seen) };
    // The slot still holds this flow's backend if its generation is unchanged. (The slot
    // names its VIP; the flow key, which includes the VIP's address, port and protocol, can
    // only have been pinned to a backend of that VIP, and a slot never changes VIP without
    // a new generation.) One `BACKENDS` lookup serves both the check and the close below.
    let same = BACKENDS.get(id).filter(|b| b.generation == generation);
    let Some(b) = same.filter(|b| b.flags & BACKEND_F_SERVING != 0) else {
        // The flow moves: its connection ends on the old backend (and opens on the new
        // one when the caller inserts it again). A reused slot's counters are not touched.
        if flow_is_open(state)
            && let Some(old) = same
        {
            stats::closed(old.vip_id, id);
        }
        return None;
    };
    let now = now_ticks();
    let mut track = Track::Same;
    if flow_is_open(state) && tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        track = Track::Closed;
        // SAFETY: as above.
        unsafe { (*v).state = FLOW_CLOSING };
    } else if state == FLOW_CLOSING && tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN {
        // The client reuses the 5-tuple for a new connection (after TIME_WAIT).
        track = Track::Opened;
        // SAFETY: as above.
        unsafe { (*v).state = FLOW_NEW };
    } else if state == FLOW_NEW && tcp_flags & TCP_SYN == 0 {
        // Seen again, by a packet other than a retransmitted SYN (once per flow): no longer
        // among the first the daemon evicts.
        // SAFETY: as above.
        unsafe { (*v).state = FLOW_OPEN };
    }
    if seen != now {
        // SAFETY: as above. Written at most once a tick, so established flows do not
        // dirty their entry on every packet.
        unsafe { (*v).last_seen = now };
    }
    Some((id, b, track))
}

/// The entry a new flow pinned to `backend_id` takes: open, or closing when its first
/// packet is a FIN.
#[inline(always)]
fn value(backend_id: u32, generation: u32, tcp_flags: u8) -> (FlowValue, Track) {
    let closing = tcp_flags & TCP_FIN != 0;
    let v = FlowValue {
        backend_id,
        generation,
        last_seen: now_ticks(),
        // Even a connection under way (moved, begun on another balancer) starts `FLOW_NEW`:
        // a flood of ACKs must not rank with the connections seen twice.
        state: if closing { FLOW_CLOSING } else { FLOW_NEW },
    };
    (
        v,
        if closing {
            Track::OpenedClosed
        } else {
            Track::Opened
        },
    )
}

/// Pin a new flow to `backend_id` (replacing the entry of its 5-tuple, whose backend no
/// longer serves it, if it has one); what it means for the active count. Without room
/// (no free slot in its probe) the flow goes without an entry, counted.
#[inline(always)]
pub fn insert(
    slots: &Slots,
    key: &FlowKey,
    backend_id: u32,
    generation: u32,
    tcp_flags: u8,
) -> Track {
    let (v, track) = value(backend_id, generation, tcp_flags);
    match claim(slots, key, v) {
        Claim::Taken => track,
        Claim::Exists(s) => {
            // SAFETY: a live slot's value, written field by field, each write whole (a
            // reader that sees the new backend with the old generation takes the flow for
            // moved and writes it again, the same way).
            unsafe {
                (*s).value.backend_id = v.backend_id;
                (*s).value.generation = v.generation;
                (*s).value.last_seen = v.last_seen;
                (*s).value.state = v.state;
            }
            track
        }
        Claim::Full => {
            flood::unpinned_full();
            Track::Same
        }
    }
}

/// What [`open`] did.
pub enum Open {
    /// The entry was taken: what it means for the active count.
    Taken(Track),
    /// The 5-tuple has an entry already (untouched: the caller looks it up).
    Exists,
    /// No room: no free slot in the flow's probe (and the 5-tuple has no entry).
    Full,
}

/// Pin a connection's first packet (a SYN) to `backend_id` unless its 5-tuple has an
/// entry already (a retransmitted SYN, or a reused 5-tuple): `Full` means the 5-tuple has
/// no entry.
#[inline(always)]
pub fn open(slots: &Slots, key: &FlowKey, backend_id: u32, generation: u32, tcp_flags: u8) -> Open {
    let (v, track) = value(backend_id, generation, tcp_flags);
    match claim(slots, key, v) {
        Claim::Taken => Open::Taken(track),
        Claim::Exists(_) => Open::Exists,
        Claim::Full => Open::Full,
    }
}

/// Take back the entry [`open`] made (in the probe's free slot) for a flow whose first
/// packet was then not sent.
#[inline(always)]
pub fn forget(slots: &Slots) {
    if let Some(s) = slot(slots.free) {
        // SAFETY: a live slot; only if it still holds this flow (not deleted and reused
        // meanwhile); a deleted slot's tag is `FREE`, whoever deletes it.
        unsafe {
            atomic::compare_exchange(addr_of_mut!((*s).tag), slots.tag, SLOT_FREE);
        }
    }
}

/// The backend a flow is pinned to, if that backend still serves, without touching the
/// entry (no tracking, no last-seen stamp): for ICMP errors about the flow, which neither
/// keep it alive nor move it.
#[inline(always)]
pub fn peek(slots: &Slots) -> Option<(u32, &'static Backend)> {
    let s = slot(slots.found)?;
    // SAFETY: a live slot's value, read field by field (see `lookup`).
    let (id, generation) = unsafe { ((*s).value.backend_id, (*s).value.generation) };
    let b = BACKENDS.get(id)?;
    if b.generation != generation || b.flags & BACKEND_F_SERVING == 0 {
        return None;
    }
    Some((id, b))
}
