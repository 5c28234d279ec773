//! Frame access shared by both objects: the one bounds check every packet access goes
//! through. The library (the balancer's object) has it as `parse::ptr_at`; the benchmarks'
//! object compiles this file as its own module instead of linking the library, whose maps
//! would all come with it.

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
