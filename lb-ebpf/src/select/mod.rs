//! Choosing a backend for a new flow. Every scheduler indexes the VIP's live table (written
//! by the daemon); they differ only in the index: the flow hash (Maglev), the client
//! address hash (source hash) or the VIP's shared cursor (rr, wrr, lc, wlc). A sequence
//! VIP's TCP packet that is not a SYN (a connection that began on another balancer) takes
//! the flow hash into the VIP's fallback Maglev table instead of the cursor's next slot.

use lb_common::{
    BACKEND_F_SERVING, Backend, FlowKey, NO_BACKEND, PROTO_TCP, SCHED_SEQUENCE, SCHED_SOURCE_HASH,
    VipMeta, hash::source_hash,
};

use crate::{
    atomic::fetch_add,
    maps::{BACKENDS, CURSORS, TABLES},
    parse::{TCP_ACK, TCP_SYN},
};

/// The next step of the VIP's cursor (shared by all CPUs, stepped atomically so that
/// successive new flows take successive sequence slots whichever CPU they arrive on).
#[inline(always)]
fn cursor_step(vip_id: u32) -> Option<u32> {
    let c = CURSORS.get_ptr_mut(vip_id)?;
    Some(fetch_add(c, 1) as u32)
}

/// Whether a packet without a flow entry belongs to a connection that began elsewhere: TCP,
/// and not a connection's first packet (a SYN without ACK).
#[inline(always)]
fn begun_elsewhere(key: &FlowKey, tcp_flags: u8) -> bool {
    key.proto == PROTO_TCP && tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN
}

/// The backend for a new flow of `vip`, or `None` when the VIP has no table, the slot is
/// empty (id 0) or the backend no longer serves this VIP. `hashed`: the flow will get no
/// flow entry (the flood guard), so a sequence VIP must send it by its hash too (each of its
/// packets is picked anew and must land on the same backend).
#[inline(always)]
pub fn pick(
    vip: &VipMeta,
    key: &FlowKey,
    tcp_flags: u8,
    hash: u32,
    seed: u32,
    hashed: bool,
) -> Option<(u32, &'static Backend)> {
    // Sequence VIPs: a connection moved here from another balancer goes where every
    // balancer's fallback Maglev table sends it, not where this one's cursor stands.
    let fallback = vip.scheduler == SCHED_SEQUENCE
        && vip.hash_size != 0
        && (hashed || begun_elsewhere(key, tcp_flags));
    let (base, size) = if fallback {
        (vip.hash_base, vip.hash_size)
    } else {
        (vip.table_base, vip.table_size)
    };
    if size == 0 {
        return None;
    }
    let index = match vip.scheduler {
        _ if fallback => hash,
        SCHED_SEQUENCE => cursor_step(vip.vip_id)?,
        SCHED_SOURCE_HASH => source_hash(key, seed),
        _ => hash,
    };
    let id = *TABLES.get(base.wrapping_add(index % size))?;
    if id == NO_BACKEND {
        return None;
    }
    let b = BACKENDS.get(id)?;
    (b.flags & BACKEND_F_SERVING != 0 && b.vip_id == vip.vip_id).then_some((id, b))
}
