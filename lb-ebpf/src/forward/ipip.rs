//! IPv4-in-IPv4 and IPv6-in-IPv6 encapsulation to the backend's address. The outer source
//! (and the IPv6 flow label) carry the flow's [`encap_hash`](lb_common::hash::encap_hash)
//! so that the backends' NICs spread flows over their queues (RSS).

use aya_ebpf::{helpers::generated::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{Backend, FAMILY_V6, GlobalConfig, reason};

use super::{Verdict, csum, fib, mss};
use crate::parse::{Packet, TCP_SYN, halves, ptr_at, vlan_tag, write_l2};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
const TTL: u8 = 64;

#[inline(always)]
pub(super) fn encap(
    ctx: &XdpContext,
    pkt: &Packet,
    id: u32,
    backend: &Backend,
    cfg: &GlobalConfig,
) -> Result<(Verdict, bool), u32> {
    if backend.family != pkt.key.family {
        return Err(reason::DROP_INTERNAL);
    }
    let hash = lb_common::hash::encap_hash(&pkt.key, cfg.hash_seed);
    // One route (and MSS) step for both families keeps the program small.
    let v6 = pkt.key.family == FAMILY_V6;
    let (outer, hdrs) = if v6 { (40, 60) } else { (20, 40) };
    let tot_len = u32::from(pkt.l3_len) + outer;
    if tot_len > u32::from(u16::MAX) {
        return Err(reason::DROP_TOO_BIG);
    }
    // The outer source, as native words (the hash's bytes in network order).
    let mut src = [0u32; 4];
    if v6 {
        src = *cfg.encap_v6_words();
        src[3] = hash.to_be();
    } else {
        let (prefix, mask) = cfg.encap_v4_words();
        src[0] = prefix | (hash.to_be() & !mask);
    }
    let dst = backend.addr_words();
    let (hop, clamped) = route(ctx, pkt, id, &src, dst, tot_len as u16, outer, hdrs)?;
    if v6 {
        encap6(ctx, pkt, &src, dst, hash, &hop)?;
    } else {
        encap4(ctx, pkt, src[0], dst[0], tot_len as u16, &hop)?;
    }
    Ok((hop.verdict(ctx), clamped))
}

/// The next hop for the encapsulated packet of `tot_len` bytes (`outer`: the outer
/// header's length, `hdrs`: the inner IP and TCP fixed headers). A SYN's MSS option is
/// checked against the egress MTU (the next hop's slot, or the FIB): the route is looked up for a full-size
/// segment of that MSS, and if that is too big the MSS is lowered to fit (the bool says
/// so) and the packet itself looked up. A packet too big itself gives `Err(ICMP_TOO_BIG)`:
/// the caller answers it (`too_big`, once for both families, to keep the program small)
/// with the MTU `fib::mtu` reports.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "inlined; a struct would cost stack"
)]
fn route(
    ctx: &XdpContext,
    pkt: &Packet,
    id: u32,
    src: &[u32; 4],
    dst: &[u32; 4],
    tot_len: u16,
    outer: u32,
    hdrs: u32,
) -> Result<(fib::NextHop, bool), u32> {
    let family = pkt.key.family;
    let mss = if pkt.tcp_flags & TCP_SYN != 0 {
        mss::find(ctx, pkt)
    } else {
        None
    };
    let full = mss.map_or(0, |(_, m)| outer + hdrs + u32::from(m));
    let probe = if full > u32::from(tot_len) {
        if full > u32::from(u16::MAX) {
            u16::MAX
        } else {
            full as u16
        }
    } else {
        tot_len
    };
    match fib::next_hop(ctx, id, family, src, dst, probe) {
        Ok(hop) => Ok((hop, false)),
        Err(reason::DROP_TOO_BIG) => {
            let mtu = u32::from(fib::mtu());
            if u32::from(tot_len) > mtu {
                return Err(reason::ICMP_TOO_BIG);
            }
            let mut clamped = false;
            if let Some((off, m)) = mss {
                let fit = mtu.saturating_sub(outer + hdrs);
                // `tot_len` fits, so the route works; an MSS that does not is lowered
                // (never below a sane floor, whatever a route's MTU says).
                if fit < u32::from(m) && fit >= 256 {
                    mss::set(ctx, pkt, off, m, fit as u16)?;
                    clamped = true;
                }
            }
            Ok((fib::next_hop(ctx, id, family, src, dst, tot_len)?, clamped))
        }
        Err(code) => Err(code),
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
    write_l2(ctx, hop.dmac, hop.smac, vlan, pkt.eth_proto)
}

#[inline(always)]
fn encap4(
    ctx: &XdpContext,
    pkt: &Packet,
    src: u32,
    dst: u32,
    tot_len: u16,
    hop: &fib::NextHop,
) -> Result<(), u32> {
    push_l2(ctx, pkt, 20, hop)?;

    let len = tot_len.to_be_bytes();
    // The inner packet's identification and DF flag (never a fragment: those are passed
    // before this point), so a fragmenting hop keeps distinct ids (RFC 6864) and path MTU
    // discovery behaves as the client asked.
    let (id, df) = (pkt.ipv4_id, pkt.ipv4_frags[0] & 0x40);
    // Ten 16-bit words as they lie in the frame: ten stores and ten adds for the checksum,
    // where a byte array costs twenty stores and byte-pair assembly.
    let w = u16::from_ne_bytes;
    let ([s0, s1], [d0, d1]) = (halves(src), halves(dst));
    let mut ip: [u16; 10] = [
        w([0x45, pkt.tos]),
        w(len),
        w(id),
        w([df, 0]),
        w([TTL, IPPROTO_IPIP]),
        0,
        s0,
        s1,
        d0,
        d1,
    ];
    ip[5] = csum::ipv4_header(&ip);
    let out: *mut [u16; 10] = ptr_at(ctx, pkt.l3_off).ok_or(reason::DROP_INTERNAL)?;
    // SAFETY: `ptr_at` checked the 20 bytes are inside the frame; the IP header sits at an
    // even offset of a 2-byte aligned frame (as `parse::ipv4_checksum_ok` reads it).
    unsafe { out.write(ip) };
    Ok(())
}

#[inline(always)]
fn encap6(
    ctx: &XdpContext,
    pkt: &Packet,
    src: &[u32; 4],
    dst: &[u32; 4],
    hash: u32,
    hop: &fib::NextHop,
) -> Result<(), u32> {
    push_l2(ctx, pkt, 40, hop)?;

    let h = hash.to_be_bytes();
    let len = pkt.l3_len.to_be_bytes();
    let tc = pkt.tos;
    let w = u16::from_ne_bytes;
    // Version 6, the inner traffic class, and 20 bits of the hash as flow label; 16-bit
    // words as in `encap4`.
    let mut ip = [0u16; 20];
    ip[0] = w([0x60 | (tc >> 4), (tc << 4) | (h[1] & 0x0f)]);
    ip[1] = w([h[2], h[3]]);
    ip[2] = w(len);
    ip[3] = w([IPPROTO_IPV6, TTL]);
    let mut i = 0;
    while i < 4 {
        [ip[4 + 2 * i], ip[5 + 2 * i]] = halves(src[i]);
        [ip[12 + 2 * i], ip[13 + 2 * i]] = halves(dst[i]);
        i += 1;
    }
    let out: *mut [u16; 20] = ptr_at(ctx, pkt.l3_off).ok_or(reason::DROP_INTERNAL)?;
    // SAFETY: as in `encap4`.
    unsafe { out.write(ip) };
    Ok(())
}
