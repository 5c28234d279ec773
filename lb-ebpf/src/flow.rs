//! The flow table and connection tracking: a connection keeps its backend for as long as
//! that backend serves; the kernel counts opens (insert, or a SYN on a closing flow) and
//! closes (the client's first FIN or RST), and stamps the last time a flow was seen so
//! the daemon can expire idle ones.

use lb_common::{BACKEND_F_SERVING, Backend, FLOW_CLOSING, FLOW_OPEN, FlowKey, FlowValue};

use crate::{
    maps::{BACKENDS, CLOCK, FLOWS},
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    stats,
    track::Track,
};

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
pub fn lookup(key: &FlowKey, tcp_flags: u8) -> Option<(u32, &'static Backend, Track)> {
    let v = FLOWS.get_ptr_mut(key)?;
    // SAFETY: a pointer to a live LRU value. Only this program writes values in place (one
    // 32-bit field at a time, each write whole), the daemon only reads or deletes them.
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
        if state == FLOW_OPEN
            && let Some(old) = same
        {
            stats::closed(old.vip_id, id);
        }
        return None;
    };
    let now = now_ticks();
    let mut track = Track::Same;
    if state == FLOW_OPEN && tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        track = Track::Closed;
        // SAFETY: as above.
        unsafe { (*v).state = FLOW_CLOSING };
    } else if state == FLOW_CLOSING && tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN {
        // The client reuses the 5-tuple for a new connection (after TIME_WAIT).
        track = Track::Opened;
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

/// `BPF_NOEXIST`: an update that only inserts.
const BPF_NOEXIST: u64 = 1;
/// `-EEXIST`, what an update with `BPF_NOEXIST` returns for a key already present.
const EEXIST: i32 = -17;

/// The entry a new flow pinned to `backend_id` takes: open, or closing when its first
/// packet is a FIN.
#[inline(always)]
fn value(backend_id: u32, generation: u32, tcp_flags: u8) -> (FlowValue, Track) {
    let closing = tcp_flags & TCP_FIN != 0;
    let v = FlowValue {
        backend_id,
        generation,
        last_seen: now_ticks(),
        state: if closing { FLOW_CLOSING } else { FLOW_OPEN },
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

/// Pin a new flow to `backend_id` (replacing any entry of its 5-tuple); what it means for
/// the active count. A full table evicts its least recently used entry.
#[inline(always)]
pub fn insert(key: &FlowKey, backend_id: u32, generation: u32, tcp_flags: u8) -> Track {
    let (v, track) = value(backend_id, generation, tcp_flags);
    // A failed insert (out of memory) only costs the flow its stickiness until the next
    // packet; there is nothing better to do with the error on the fast path.
    let _ = FLOWS.insert(key, v, 0);
    track
}

/// Pin a connection's first packet (a SYN) to `backend_id` unless its 5-tuple has an
/// entry already (a retransmitted SYN, or a reused 5-tuple), in one update and without a
/// lookup first: `None` if the entry exists (untouched: the caller looks it up), else what
/// the insert means for the active count. An insert that fails otherwise (out of memory)
/// counts as done, as in [`insert`].
#[inline(always)]
pub fn open(key: &FlowKey, backend_id: u32, generation: u32, tcp_flags: u8) -> Option<Track> {
    let (v, track) = value(backend_id, generation, tcp_flags);
    match FLOWS.insert(key, v, BPF_NOEXIST) {
        Err(EEXIST) => None,
        _ => Some(track),
    }
}

/// Take back the entry [`open`] made for a flow whose first packet was then not sent.
#[inline(always)]
pub fn forget(key: &FlowKey) {
    // Nothing to do if it is gone already (evicted by a full table).
    let _ = FLOWS.remove(key);
}

/// The backend a flow is pinned to, if that backend still serves, without touching the
/// entry (no tracking, no last-seen stamp): for ICMP errors about the flow, which neither
/// keep it alive nor move it.
#[inline(always)]
pub fn peek(key: &FlowKey) -> Option<(u32, &'static Backend)> {
    // SAFETY: a live LRU value, read field by field (see `lookup`).
    let v = unsafe { FLOWS.get(key) }?;
    let (id, generation) = (v.backend_id, v.generation);
    let b = BACKENDS.get(id)?;
    if b.generation != generation || b.flags & BACKEND_F_SERVING == 0 {
        return None;
    }
    Some((id, b))
}
