//! The flood guard: at most `FLOOD_LIMIT` new flows a second per CPU take a flow-table
//! entry (a token bucket holding one second of them, like Katran's new-connection rate
//! limit). Beyond it a new flow is still forwarded, by its flow hash into a consistent table
//! (the caller picks the hash path), but not inserted, so a flood of new flows cannot evict
//! the entries of established connections; it is counted (`FloodGuard::unpinned`).
//!
//! The same per-CPU value counts the new flows that found no room in the flow table (it
//! never evicts by itself): they go without an entry the same way
//! (`FloodGuard::table_full`); the daemon's sweep frees room past the table's high-water
//! mark.

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;

use crate::maps::{FLOOD_GUARD, FLOOD_LIMIT};

/// Whether a new flow may take a flow-table entry now (spends a token). Without a limit,
/// always.
#[inline(always)]
pub fn admit() -> bool {
    let per_sec = match FLOOD_LIMIT.get(0) {
        Some(l) if l.per_cpu_per_sec != 0 => l.per_cpu_per_sec,
        _ => return true,
    };
    let Some(g) = FLOOD_GUARD.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: this CPU's slot; nothing else writes it while this program runs.
    let g = unsafe { &mut *g };
    crate::bucket::take_lazily(
        &mut g.credit_ns,
        &mut g.last_ns,
        &mut g.per_sec,
        &mut g.untimed,
        per_sec,
        // SAFETY: a plain helper call.
        || unsafe { bpf_ktime_get_ns() },
    )
}

/// Count a new flow forwarded without a flow entry.
#[inline(always)]
pub fn unpinned() {
    if let Some(g) = FLOOD_GUARD.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, as above.
        unsafe { (*g).unpinned += 1 };
    }
}

/// Count a new flow forwarded without an entry because its probe found no free slot.
#[inline(always)]
pub fn unpinned_full() {
    if let Some(g) = FLOOD_GUARD.get_ptr_mut(0) {
        // SAFETY: as above.
        unsafe { (*g).table_full += 1 };
    }
}
