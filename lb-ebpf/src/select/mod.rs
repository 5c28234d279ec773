//! Choosing a backend for a new flow. Every scheduler indexes the VIP's live table (written
//! by the daemon); they differ only in the index: the flow hash (Maglev), the client
//! address hash (source hash) or the VIP's shared cursor (rr, wrr, lc, wlc).

use lb_common::{
    BACKEND_F_SERVING, Backend, FlowKey, NO_BACKEND, SCHED_SEQUENCE, SCHED_SOURCE_HASH, VipMeta,
    hash::source_hash,
};

use crate::maps::{BACKENDS, CURSORS, TABLES};

/// The next step of the VIP's cursor (shared by all CPUs, stepped atomically so that
/// successive new flows take successive sequence slots whichever CPU they arrive on).
#[inline(always)]
fn cursor_step(vip_id: u32) -> Option<u32> {
    let c = CURSORS.get_ptr_mut(vip_id)?;
    Some(fetch_add(c, 1) as u32)
}

/// `*p += v`, atomically, returning the old value: the BPF `atomic_fetch_add` instruction
/// (kernel 5.12+). Rust exposes no atomic read-modify-write for the BPF target, so it is
/// written out.
#[cfg(target_arch = "bpf")]
#[inline(always)]
fn fetch_add(p: *mut u64, v: u64) -> u64 {
    let mut v = v;
    // SAFETY: `p` points at a live, 8-byte aligned map value; the instruction reads and
    // writes only those 8 bytes.
    unsafe {
        core::arch::asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            p = in(reg) p,
            v = inout(reg) v,
        );
    }
    v
}

/// Host builds (lints, unit tests of the library) never run the program.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
fn fetch_add(p: *mut u64, v: u64) -> u64 {
    // SAFETY: as above.
    let c = unsafe { core::sync::atomic::AtomicU64::from_ptr(p) };
    c.fetch_add(v, core::sync::atomic::Ordering::Relaxed)
}

/// The backend for a new flow of `vip`, or `None` when the VIP has no table, the slot is
/// empty (id 0) or the backend no longer serves this VIP.
#[inline(always)]
pub fn pick(vip: &VipMeta, key: &FlowKey, hash: u32, seed: u32) -> Option<(u32, &'static Backend)> {
    let size = vip.table_size;
    if size == 0 {
        return None;
    }
    let index = match vip.scheduler {
        SCHED_SEQUENCE => cursor_step(vip.vip_id)?,
        SCHED_SOURCE_HASH => source_hash(key, seed),
        _ => hash,
    };
    let id = *TABLES.get(vip.table_base.wrapping_add(index % size))?;
    if id == NO_BACKEND {
        return None;
    }
    let b = BACKENDS.get(id)?;
    (b.flags & BACKEND_F_SERVING != 0 && b.vip_id == vip.vip_id).then_some((id, b))
}
