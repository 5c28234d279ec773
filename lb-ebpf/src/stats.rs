//! Counters: per-CPU, so incrementing needs no atomics.

use lb_common::Counters;

use crate::maps::{BACKEND_STATS, REASONS, VIP_STATS};

/// Count one packet for `reason`.
#[inline(always)]
pub fn reason(code: u32) {
    if let Some(c) = REASONS.get_ptr_mut(code) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn add(c: Option<*mut Counters>, bytes: u64, new_flow: bool) {
    if let Some(c) = c {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            if new_flow {
                (*c).new_flows += 1;
            }
        }
    }
}

/// Count one forwarded packet for its VIP and backend.
#[inline(always)]
pub fn forwarded(vip_id: u32, backend_id: u32, bytes: u64, new_flow: bool) {
    add(VIP_STATS.get_ptr_mut(vip_id), bytes, new_flow);
    add(BACKEND_STATS.get_ptr_mut(backend_id), bytes, new_flow);
}
