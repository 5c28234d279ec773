//! Weighted Maglev: the daemon builds each VIP's table (lb-userspace `maglev.rs`); the
//! kernel only indexes it with the flow hash.

use lb_common::{BACKEND_F_SERVING, Backend, NO_BACKEND, VipMeta};

use crate::maps::{BACKENDS, TABLES};

/// The table slot's backend, or `None` when the VIP has no table, the slot is empty (id 0)
/// or the backend no longer serves this VIP.
#[inline(always)]
pub fn maglev(vip: &VipMeta, hash: u32) -> Option<(u32, &'static Backend)> {
    let size = vip.table_size;
    if size == 0 {
        return None;
    }
    let id = *TABLES.get(vip.table_base.wrapping_add(hash % size))?;
    if id == NO_BACKEND {
        return None;
    }
    let b = BACKENDS.get(id)?;
    (b.flags & BACKEND_F_SERVING != 0 && b.vip_id == vip.vip_id).then_some((id, b))
}
