//! ICMP errors about a VIP's flows: the quoted packet (a packet that a backend sent to a
//! client with the VIP as source) names the flow, reversed.
//!
//! Steered: IPv4 destination unreachable (fragmentation needed, port unreachable, ...) and
//! time exceeded; ICMPv6 destination unreachable, packet too big and time exceeded. The
//! quote must hold the inner IP header and the first 8 bytes of its TCP/UDP header (RFC 792
//! and RFC 4443 guarantee them; the ports are in the first 4), inside the outer IP packet.
//! Anything else (echo, neighbour discovery, a quote of another protocol, of a later
//! fragment, from another source, cut short) is passed as before.

use aya_ebpf::programs::XdpContext;
use lb_common::{FAMILY_V6, PROTO_TCP, PROTO_UDP, reason};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use super::{Packet, ptr_at};

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMPV6_TIME_EXCEEDED: u8 = 3;

/// The ICMP header: type, code, checksum, 4 bytes that depend on the type (the MTU for
/// "fragmentation needed" and "packet too big").
const ICMP_HLEN: usize = 8;
/// What the quote must hold of the inner TCP/UDP header.
const QUOTED_L4: usize = 8;

/// Parse the ICMP message at `off`: for an error we steer, the flow key becomes the quoted
/// packet's 5-tuple reversed (client → VIP, as the client's own packets have it) and
/// `pkt.icmp` its type. `Err` is the reason to pass anything else with.
#[inline(always)]
pub(super) fn parse(ctx: &XdpContext, pkt: &mut Packet, off: usize) -> Result<(), u32> {
    let ip_end = pkt.l3_off + usize::from(pkt.l3_len);
    if off + ICMP_HLEN > ip_end {
        return Err(reason::PASS_TRUNCATED);
    }
    let h: *const [u8; ICMP_HLEN] = ptr_at(ctx, off).ok_or(reason::PASS_TRUNCATED)?;
    // SAFETY: `ptr_at` checked the 8 bytes are inside the frame.
    let kind = unsafe { (*h)[0] };
    let v6 = pkt.key.family == FAMILY_V6;
    let steered = if v6 {
        kind == ICMPV6_DEST_UNREACH || kind == ICMPV6_PACKET_TOO_BIG || kind == ICMPV6_TIME_EXCEEDED
    } else {
        kind == ICMP_DEST_UNREACH || kind == ICMP_TIME_EXCEEDED
    };
    if !steered {
        return Err(reason::PASS_OTHER_L4);
    }
    let inner = off + ICMP_HLEN;
    let l4 = if v6 {
        quoted_v6(ctx, pkt, inner, ip_end)?
    } else {
        quoted_v4(ctx, pkt, inner, ip_end)?
    };
    if l4 + QUOTED_L4 > ip_end {
        return Err(reason::PASS_TRUNCATED);
    }
    let ports: *const [u8; 4] = ptr_at(ctx, l4).ok_or(reason::PASS_TRUNCATED)?;
    // SAFETY: `ptr_at` checked the 4 bytes are inside the frame.
    let p = unsafe { &*ports };
    // The quoted packet went VIP:sport → client:dport; the flow is client:dport → VIP:sport.
    pkt.key.sport = [p[2], p[3]];
    pkt.key.dport = [p[0], p[1]];
    pkt.icmp = kind;
    Ok(())
}

/// The quoted IPv4 header at `off`: checks it and sets the key's source (the client) and
/// protocol; returns the offset of the quoted L4 header.
#[inline(always)]
fn quoted_v4(ctx: &XdpContext, pkt: &mut Packet, off: usize, ip_end: usize) -> Result<usize, u32> {
    if off + size_of::<Ipv4Hdr>() > ip_end {
        return Err(reason::PASS_TRUNCATED);
    }
    let ip: *const Ipv4Hdr = ptr_at(ctx, off).ok_or(reason::PASS_TRUNCATED)?;
    // SAFETY: `ptr_at` checked the fixed header is inside the frame.
    let ip = unsafe { &*ip };
    let vihl = ip.vihl;
    if vihl >> 4 != 4 || vihl & 0x0f < 5 {
        return Err(reason::PASS_MALFORMED);
    }
    // A quote of a later fragment has no ports.
    if u16::from_be_bytes(ip.frags) & 0x1fff != 0 {
        return Err(reason::PASS_FRAGMENT);
    }
    if ip.proto != PROTO_TCP && ip.proto != PROTO_UDP {
        return Err(reason::PASS_OTHER_L4);
    }
    // About a packet the VIP sent: its source is the address the error is sent to.
    let (s, d) = (ip.src_addr, &pkt.key.dst);
    if u32::from_ne_bytes(s) != u32::from_ne_bytes([d[0], d[1], d[2], d[3]]) {
        return Err(reason::PASS_OTHER_L4);
    }
    // The key's other 12 source bytes are still zero (IPv4).
    pkt.key.src[..4].copy_from_slice(&ip.dst_addr);
    pkt.key.proto = ip.proto;
    Ok(off + usize::from(vihl & 0x0f) * 4)
}

/// The quoted IPv6 header at `off` (no extension headers): as [`quoted_v4`].
#[inline(always)]
fn quoted_v6(ctx: &XdpContext, pkt: &mut Packet, off: usize, ip_end: usize) -> Result<usize, u32> {
    if off + size_of::<Ipv6Hdr>() > ip_end {
        return Err(reason::PASS_TRUNCATED);
    }
    let ip: *const Ipv6Hdr = ptr_at(ctx, off).ok_or(reason::PASS_TRUNCATED)?;
    // SAFETY: `ptr_at` checked the fixed header is inside the frame.
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> 4 != 6 {
        return Err(reason::PASS_MALFORMED);
    }
    if ip.next_hdr != PROTO_TCP && ip.next_hdr != PROTO_UDP {
        return Err(reason::PASS_OTHER_L4);
    }
    // Compared word by word, XORs folded with OR: a chain of equality tests could be merged
    // into a `memcmp` call.
    let (s, d) = (&ip.src_addr, &pkt.key.dst);
    let mut diff = 0u32;
    let mut i = 0;
    while i < 16 {
        diff |= u32::from_ne_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]])
            ^ u32::from_ne_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        i += 4;
    }
    if diff != 0 {
        return Err(reason::PASS_OTHER_L4);
    }
    pkt.key.src = ip.dst_addr;
    pkt.key.proto = ip.next_hdr;
    Ok(off + size_of::<Ipv6Hdr>())
}
