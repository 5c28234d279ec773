//! The flow table and connection tracking: a connection keeps its backend for as long as
//! that backend serves; the kernel counts opens (insert, or a SYN on a closing flow) and
//! closes (the client's first FIN or RST), and stamps the last time a flow was seen so
//! the daemon can expire idle ones. The table never evicts: a new flow that finds it full
//! goes without an entry, and so do the new flows after it on that CPU until the flow
//! clock's next tick ([`flood::found_full`]).

use lb_common::{
    BACKEND_F_SERVING, Backend, FLOW_CLOSING, FLOW_NEW, FLOW_OPEN, FlowKey, FlowValue, flow_is_open,
};

use crate::{
    flood,
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

/// Pin a new flow to `backend_id` (replacing any entry of its 5-tuple); what it means for
/// the active count. Without room (the table is full) the flow goes without an entry,
/// counted, and so do the next new flows on this CPU until the clock ticks.
#[inline(always)]
pub fn insert(key: &FlowKey, backend_id: u32, generation: u32, tcp_flags: u8) -> Track {
    let (v, track) = value(backend_id, generation, tcp_flags);
    if FLOWS.insert(key, v, 0).is_ok() {
        return track;
    }
    flood::found_full();
    flood::unpinned_full();
    Track::Same
}

/// What [`open`] did.
pub enum Open {
    /// The entry was taken: what it means for the active count.
    Taken(Track),
    /// The 5-tuple has an entry already (untouched: the caller looks it up).
    Exists,
    /// No room: the table is full (and the 5-tuple has no entry).
    Full,
}

/// Pin a connection's first packet (a SYN) to `backend_id` unless its 5-tuple has an
/// entry already (a retransmitted SYN, or a reused 5-tuple), in one update and without a
/// lookup first. The kernel checks for the key before it takes a free entry, so `Full`
/// means the 5-tuple has none.
#[inline(always)]
pub fn open(key: &FlowKey, backend_id: u32, generation: u32, tcp_flags: u8) -> Open {
    let (v, track) = value(backend_id, generation, tcp_flags);
    match FLOWS.insert(key, v, BPF_NOEXIST) {
        Ok(()) => Open::Taken(track),
        Err(EEXIST) => Open::Exists,
        Err(_) => Open::Full,
    }
}

/// Take back the entry [`open`] made for a flow whose first packet was then not sent.
#[inline(always)]
pub fn forget(key: &FlowKey) {
    // Nothing to do if it is gone already (expired by the daemon meanwhile).
    let _ = FLOWS.remove(key);
}

/// The backend a flow is pinned to, if that backend still serves, without touching the
/// entry (no tracking, no last-seen stamp): for ICMP errors about the flow, which neither
/// keep it alive nor move it.
#[inline(always)]
pub fn peek(key: &FlowKey) -> Option<(u32, &'static Backend)> {
    // SAFETY: a live flow-table value, read field by field (see `lookup`).
    let v = unsafe { FLOWS.get(key) }?;
    let (id, generation) = (v.backend_id, v.generation);
    let b = BACKENDS.get(id)?;
    if b.generation != generation || b.flags & BACKEND_F_SERVING == 0 {
        return None;
    }
    Some((id, b))
}
