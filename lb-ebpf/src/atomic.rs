//! The BPF atomic instructions the program needs (kernel 5.12+), written out: Rust exposes
//! no atomic read-modify-write for the BPF target. Each has a host twin (`std` atomics) so
//! host builds of the library (lints, unit tests) compile; they never run the program.

/// `*p += v`, atomically, returning the old value (`atomic_fetch_add`).
#[cfg(target_arch = "bpf")]
#[inline(always)]
pub fn fetch_add(p: *mut u64, v: u64) -> u64 {
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

/// If `*p == old`, `*p = new`; the value `*p` held, atomically (`cmpxchg_64`).
#[cfg(target_arch = "bpf")]
#[inline(always)]
pub fn compare_exchange(p: *mut u64, old: u64, new: u64) -> u64 {
    let prev: u64;
    // SAFETY: as above.
    unsafe {
        core::arch::asm!(
            "r0 = cmpxchg_64({p} + 0, r0, {new})",
            p = in(reg) p,
            new = in(reg) new,
            inout("r0") old => prev,
        );
    }
    prev
}

/// `*p = v`, atomically and ordered after every earlier write (`xchg_64`, a full barrier):
/// publishes what was written before it. The `asm!` block is a compiler barrier too (it may
/// touch memory), so the writes before it stay before it.
#[cfg(target_arch = "bpf")]
#[inline(always)]
pub fn publish(p: *mut u64, v: u64) {
    // SAFETY: as above.
    unsafe {
        core::arch::asm!(
            "{v} = xchg_64({p} + 0, {v})",
            p = in(reg) p,
            v = inout(reg) v => _,
        );
    }
}

#[cfg(not(target_arch = "bpf"))]
mod host {
    use core::sync::atomic::{AtomicU64, Ordering};

    /// SAFETY (callers): `p` points at a live, 8-byte aligned `u64`.
    fn at<'a>(p: *mut u64) -> &'a AtomicU64 {
        // SAFETY: see above.
        unsafe { AtomicU64::from_ptr(p) }
    }

    /// See the BPF version.
    #[inline(always)]
    pub fn fetch_add(p: *mut u64, v: u64) -> u64 {
        at(p).fetch_add(v, Ordering::Relaxed)
    }

    /// See the BPF version.
    #[inline(always)]
    pub fn compare_exchange(p: *mut u64, old: u64, new: u64) -> u64 {
        match at(p).compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(v) | Err(v) => v,
        }
    }

    /// See the BPF version.
    #[inline(always)]
    pub fn publish(p: *mut u64, v: u64) {
        at(p).swap(v, Ordering::AcqRel);
    }
}
#[cfg(not(target_arch = "bpf"))]
pub use host::*;
