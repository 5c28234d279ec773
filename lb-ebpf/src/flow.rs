//! The flow table: a connection keeps its backend for as long as that backend serves.

use lb_common::{BACKEND_F_SERVING, Backend, FlowKey, FlowValue};

use crate::maps::{BACKENDS, FLOWS};

/// The backend slot `id`, if it still serves `vip_id` under `generation`.
#[inline(always)]
pub fn serving_backend(id: u32, generation: u32, vip_id: u32) -> Option<&'static Backend> {
    let b = BACKENDS.get(id)?;
    (b.flags & BACKEND_F_SERVING != 0 && b.generation == generation && b.vip_id == vip_id)
        .then_some(b)
}

/// The backend this flow is pinned to, if that backend still serves. A flow whose backend
/// was removed, reused or marked down yields `None` and is reassigned by the caller.
#[inline(always)]
pub fn lookup(key: &FlowKey, vip_id: u32) -> Option<(u32, &'static Backend)> {
    // SAFETY: LRU hash values are only written by `insert` below (whole 8-byte value).
    let v = unsafe { FLOWS.get(key) }?;
    let (id, generation) = (v.backend_id, v.generation);
    serving_backend(id, generation, vip_id).map(|b| (id, b))
}

/// Pin the flow to `backend_id`. A full table evicts its least recently used entry.
#[inline(always)]
pub fn insert(key: &FlowKey, backend_id: u32, generation: u32) {
    let v = FlowValue {
        backend_id,
        generation,
    };
    // A failed insert (out of memory) only costs the flow its stickiness until the next
    // packet; there is nothing better to do with the error on the fast path.
    let _ = FLOWS.insert(key, v, 0);
}
