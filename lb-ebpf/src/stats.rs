//! Counters: per-CPU, so incrementing needs no atomics.

use lb_common::{Counters, reason};

use crate::{
    maps::{BACKEND_STATS, REASONS, VIP_REASONS, VIP_STATS},
    track::Track,
};

/// Count one packet for a reason, [tagged](reason::for_vip) with its VIP when known: in
/// that VIP's row of `VIP_REASONS`, else in `REASONS` (one increment either way).
#[inline(always)]
pub fn reason(tagged: u32) {
    let slot = match reason::vip_of(tagged) {
        None => REASONS.get_ptr_mut(tagged),
        Some(vip_id) => VIP_REASONS.get_ptr_mut(vip_id * reason::COUNT + reason::code_of(tagged)),
    };
    if let Some(c) = slot {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn add(c: Option<*mut Counters>, bytes: u64, track: Track) {
    if let Some(c) = c {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            match track {
                Track::Same => {}
                Track::Opened => (*c).new_flows += 1,
                Track::Closed => (*c).closes += 1,
                Track::OpenedClosed => {
                    (*c).new_flows += 1;
                    (*c).closes += 1;
                }
            }
        }
    }
}

/// Count one forwarded packet, and what it did to its connection, for its VIP and
/// backend.
#[inline(always)]
pub fn forwarded(vip_id: u32, backend_id: u32, bytes: u64, track: Track) {
    add(VIP_STATS.get_ptr_mut(vip_id), bytes, track);
    add(BACKEND_STATS.get_ptr_mut(backend_id), bytes, track);
}

/// A flow left its backend without a FIN/RST (the backend went away): one close for the
/// old backend and the VIP, no packet.
#[inline(always)]
pub fn closed(vip_id: u32, backend_id: u32) {
    for c in [
        VIP_STATS.get_ptr_mut(vip_id),
        BACKEND_STATS.get_ptr_mut(backend_id),
    ]
    .into_iter()
    .flatten()
    {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { (*c).closes += 1 };
    }
}
