//! IPv4-in-IPv4 and IPv6-in-IPv6 encapsulation to the backend's address. The outer source
//! carries the flow hash so that the backends' NICs spread flows over their queues (RSS).

use aya_ebpf::{helpers::generated::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{Backend, FAMILY_V6, GlobalConfig, reason};

use super::{Verdict, csum, fib};
use crate::parse::{Packet, ptr_at, vlan_tag, write_l2};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
const TTL: u8 = 64;

#[inline(always)]
pub(super) fn encap(
    ctx: &XdpContext,
    pkt: &Packet,
    backend: &Backend,
    cfg: &GlobalConfig,
    hash: Option<u32>,
) -> Result<Verdict, u32> {
    if backend.family != pkt.key.family {
        return Err(reason::DROP_INTERNAL);
    }
    let hash = hash.unwrap_or_else(|| lb_common::hash::flow_hash(&pkt.key, cfg.hash_seed));
    if pkt.key.family == FAMILY_V6 {
        encap6(ctx, pkt, backend, cfg, hash)
    } else {
        encap4(ctx, pkt, backend, cfg, hash)
    }
}

/// Grow the frame by `room` bytes at the front and rewrite its L2 header (keeping a VLAN
/// tag) for `hop`. The new outer IP header goes at `pkt.l3_off`.
#[inline(always)]
fn push_l2(ctx: &XdpContext, pkt: &Packet, room: i32, hop: &fib::NextHop) -> Result<(), u32> {
    // Save the tag before the move overwrites it.
    let vlan = vlan_tag(ctx, pkt.l3_off)?;
    // SAFETY: the helper only moves `data`; every pointer is re-derived afterwards.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -room) } != 0 {
        return Err(reason::DROP_INTERNAL);
    }
    write_l2(ctx, &hop.dmac, &hop.smac, vlan, pkt.eth_proto)
}

#[inline(always)]
fn encap4(
    ctx: &XdpContext,
    pkt: &Packet,
    backend: &Backend,
    cfg: &GlobalConfig,
    hash: u32,
) -> Result<Verdict, u32> {
    let tot_len = u32::from(pkt.l3_len) + 20;
    if tot_len > u32::from(u16::MAX) {
        return Err(reason::DROP_TOO_BIG);
    }
    let tot_len = tot_len as u16;
    let h = hash.to_be_bytes();
    let mut src = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        src[i] = cfg.encap_v4_prefix[i] | (h[i] & !cfg.encap_v4_mask[i]);
        i += 1;
    }
    let hop = fib::lookup(ctx, backend.family, &src, &backend.addr, tot_len)?;
    push_l2(ctx, pkt, 20, &hop)?;

    let len = tot_len.to_be_bytes();
    let d = &backend.addr;
    // The inner packet's identification and DF flag (never a fragment: those are passed
    // before this point), so a fragmenting hop keeps distinct ids (RFC 6864) and path MTU
    // discovery behaves as the client asked.
    let (id, df) = (pkt.ipv4_id, pkt.ipv4_frags[0] & 0x40);
    let mut ip: [u8; 20] = [
        0x45,
        pkt.tos,
        len[0],
        len[1],
        id[0],
        id[1],
        df,
        0,
        TTL,
        IPPROTO_IPIP,
        0,
        0,
        src[0],
        src[1],
        src[2],
        src[3],
        d[0],
        d[1],
        d[2],
        d[3],
    ];
    let c = csum::ipv4_header(&ip);
    ip[10] = c[0];
    ip[11] = c[1];
    let out: *mut [u8; 20] = ptr_at(ctx, pkt.l3_off).ok_or(reason::DROP_INTERNAL)?;
    // SAFETY: `ptr_at` checked the 20 bytes are inside the frame; byte arrays need no
    // alignment.
    unsafe { out.write(ip) };
    Ok(hop.verdict(ctx))
}

#[inline(always)]
fn encap6(
    ctx: &XdpContext,
    pkt: &Packet,
    backend: &Backend,
    cfg: &GlobalConfig,
    hash: u32,
) -> Result<Verdict, u32> {
    let payload = pkt.l3_len;
    let tot_len = u32::from(payload) + 40;
    if tot_len > u32::from(u16::MAX) {
        return Err(reason::DROP_TOO_BIG);
    }
    let h = hash.to_be_bytes();
    let mut src = cfg.encap_v6_prefix;
    src[12] = h[0];
    src[13] = h[1];
    src[14] = h[2];
    src[15] = h[3];
    let hop = fib::lookup(ctx, backend.family, &src, &backend.addr, tot_len as u16)?;
    push_l2(ctx, pkt, 40, &hop)?;

    let len = payload.to_be_bytes();
    let tc = pkt.tos;
    // Version 6, the inner traffic class, and 20 bits of the flow hash as flow label.
    let mut ip = [0u8; 40];
    ip[0] = 0x60 | (tc >> 4);
    ip[1] = (tc << 4) | (h[1] & 0x0f);
    ip[2] = h[2];
    ip[3] = h[3];
    ip[4] = len[0];
    ip[5] = len[1];
    ip[6] = IPPROTO_IPV6;
    ip[7] = TTL;
    let mut i = 0;
    while i < 16 {
        ip[8 + i] = src[i];
        ip[24 + i] = backend.addr[i];
        i += 1;
    }
    let out: *mut [u8; 40] = ptr_at(ctx, pkt.l3_off).ok_or(reason::DROP_INTERNAL)?;
    // SAFETY: as in `encap4`.
    unsafe { out.write(ip) };
    Ok(hop.verdict(ctx))
}
