//! IPv4 (any valid IHL) and the fixed IPv6 header.

use aya_ebpf::programs::XdpContext;
use lb_common::{FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP, PROTO_UDP, reason};

use super::icmp::{PROTO_ICMP, PROTO_ICMPV6};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use super::{Packet, ptr_at, word_at};

const IPV6_HLEN: usize = 40;

/// Bytes of the frame from `off` to its end.
#[inline(always)]
fn remaining(ctx: &XdpContext, off: usize) -> usize {
    (ctx.data_end() - ctx.data()).saturating_sub(off)
}

/// Fills addresses and protocol; returns the L4 offset.
#[inline(always)]
pub(super) fn parse_v4(ctx: &XdpContext, pkt: &mut Packet) -> Result<usize, u32> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, pkt.l3_off).ok_or(reason::PASS_TRUNCATED)?;
    // SAFETY: `ptr_at` checked the fixed header is inside the frame.
    let ip = unsafe { &*ip };
    let vihl = ip.vihl;
    if vihl >> 4 != 4 {
        core::hint::cold_path();
        return Err(reason::PASS_MALFORMED);
    }
    let hlen = usize::from(vihl & 0x0f) * 4;
    if hlen < 20 {
        core::hint::cold_path();
        return Err(reason::PASS_MALFORMED);
    }
    let tot_len = u16::from_be_bytes(ip.tot_len);
    if usize::from(tot_len) < hlen {
        core::hint::cold_path();
        return Err(reason::PASS_MALFORMED);
    }
    if usize::from(tot_len) > remaining(ctx, pkt.l3_off) {
        core::hint::cold_path();
        return Err(reason::PASS_TRUNCATED);
    }
    // More-fragments flag or a fragment offset: no ports to balance on.
    if u16::from_be_bytes(ip.frags) & 0x3fff != 0 {
        core::hint::cold_path();
        return Err(reason::PASS_FRAGMENT);
    }
    if ip.proto != PROTO_TCP && ip.proto != PROTO_UDP && ip.proto != PROTO_ICMP {
        return Err(reason::PASS_OTHER_L4);
    }
    let w = pkt.key.words_mut();
    // SAFETY: both addresses are inside the fixed header `ptr_at` checked, at even offsets.
    unsafe {
        w[FlowKey::W_SRC] = word_at(ip.src_addr.as_ptr());
        w[FlowKey::W_DST] = word_at(ip.dst_addr.as_ptr());
    }
    w[FlowKey::W_TAIL] = u32::from(ip.proto) | (u32::from(FAMILY_V4) << 8);
    pkt.l3_len = tot_len;
    pkt.tos = ip.tos;
    pkt.ipv4_id = ip.id;
    pkt.ipv4_frags = ip.frags;
    Ok(pkt.l3_off + hlen)
}

/// Fills addresses and protocol; returns the L4 offset. Extension headers are not walked.
#[inline(always)]
pub(super) fn parse_v6(ctx: &XdpContext, pkt: &mut Packet) -> Result<usize, u32> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, pkt.l3_off).ok_or(reason::PASS_TRUNCATED)?;
    // SAFETY: `ptr_at` checked the fixed header is inside the frame.
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> 4 != 6 {
        return Err(reason::PASS_MALFORMED);
    }
    let payload = u16::from_be_bytes(ip.payload_len);
    let total = usize::from(payload) + IPV6_HLEN;
    if total > remaining(ctx, pkt.l3_off) {
        return Err(reason::PASS_TRUNCATED);
    }
    match ip.next_hdr {
        PROTO_TCP | PROTO_UDP | PROTO_ICMPV6 => {}
        // Hop-by-hop, routing, fragment, ESP, AH, destination options, mobility, HIP,
        // shim6, experimental.
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254 => {
            return Err(reason::PASS_IPV6_EXT);
        }
        _ => return Err(reason::PASS_OTHER_L4),
    }
    let w = pkt.key.words_mut();
    let (s, d) = (ip.src_addr.as_ptr(), ip.dst_addr.as_ptr());
    for i in 0..4 {
        // SAFETY: both addresses are inside the fixed header `ptr_at` checked, at even
        // offsets.
        unsafe {
            w[FlowKey::W_SRC + i] = word_at(s.add(4 * i));
            w[FlowKey::W_DST + i] = word_at(d.add(4 * i));
        }
    }
    w[FlowKey::W_TAIL] = u32::from(ip.next_hdr) | (u32::from(FAMILY_V6) << 8);
    // `total` fits: payload ≤ 65535 and the frame holds it all, so total < 65536 + 40 is
    // bounded by the frame, which is far below u16::MAX for any real MTU; clamp anyway.
    pkt.l3_len = if total > usize::from(u16::MAX) {
        u16::MAX
    } else {
        total as u16
    };
    pkt.tos = (ip.vcf[0] << 4) | (ip.vcf[1] >> 4);
    Ok(pkt.l3_off + IPV6_HLEN)
}

/// Whether the IPv4 header at `l3_off` (already parsed: IHL 5..15, inside the frame) has a
/// valid checksum: its one's-complement sum, options included, is all ones. Ten 16-bit
/// loads and adds for a plain header, two more per option word (at most ten words, a
/// bounded loop). The sum is byte-order independent, so words are added as they lie.
#[inline(always)]
pub fn ipv4_checksum_ok(ctx: &XdpContext, l3_off: usize) -> bool {
    let Some(h) = ptr_at::<[u16; 10]>(ctx, l3_off) else {
        return false;
    };
    // SAFETY: `ptr_at` checked the 20 bytes are inside the frame. The IP header is at an
    // even offset (14 or 18) of the frame, whose start is 2-byte aligned (as the Ethernet
    // header's 16-bit fields already assume), so these are aligned 16-bit loads, not the
    // byte-by-byte ones an unaligned read would compile to.
    let h = unsafe { h.read() };
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < 10 {
        sum += u32::from(h[i]);
        i += 1;
    }
    let words = usize::from(u16::from_be(h[0]) >> 8 & 0x0f).saturating_sub(5);
    let mut w = 0;
    while w < 10 {
        if w >= words {
            break;
        }
        let Some(o) = ptr_at::<[u16; 2]>(ctx, l3_off + 20 + w * 4) else {
            return false;
        };
        // SAFETY: as above, for these 4 bytes (at an even offset too).
        let o = unsafe { o.read() };
        sum += u32::from(o[0]) + u32::from(o[1]);
        w += 1;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum == 0xffff
}
