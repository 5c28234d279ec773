//! Frame access shared by both objects: the one bounds check every packet access goes
//! through, and a verifier-friendly MAC copy. The library (the balancer's object) has it as
//! `parse::{ptr_at, copy_mac}`; the benchmarks' object compiles this file as its own module
//! instead of linking the library, whose maps would all come with it.

use aya_ebpf::programs::XdpContext;

/// A bounds-checked pointer to a `T` at `offset` bytes into the frame, or `None` if the
/// frame is shorter than `offset + size_of::<T>()`.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// A MAC address copied byte by byte: a plain array copy out of packet memory can become
/// a `memcpy` call whose packet bounds the verifier does not follow.
#[inline(always)]
pub fn copy_mac(m: &[u8; 6]) -> [u8; 6] {
    [m[0], m[1], m[2], m[3], m[4], m[5]]
}
