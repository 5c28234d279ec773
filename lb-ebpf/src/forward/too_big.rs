//! The answer to a packet too big to forward once encapsulated: the frame is turned into
//! an ICMP "fragmentation needed" (IPv4, type 3 code 4) or ICMPv6 "packet too big" (type 2)
//! message to the client, from the VIP, carrying the MTU the client must use (the egress
//! MTU less the outer header) and the start of the packet, and sent back out with `XDP_TX`
//! (MACs swapped, VLAN tag kept). The client's path MTU discovery then resends smaller.
//!
//! Only packets with DF set are answered (IPv6 packets always are): the kernel would
//! fragment an IPv4 packet without DF, which XDP cannot; sluice drops it
//! (`drop_too_big`). Messages are rate-limited per CPU (`icmp_too_big_per_sec`, a token
//! bucket holding at most one second of messages); beyond the limit the packet is only
//! dropped.

use aya_ebpf::{
    helpers::generated::{
        bpf_csum_diff, bpf_ktime_get_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
        bpf_xdp_get_buff_len,
    },
    programs::XdpContext,
};
use lb_common::{FAMILY_V6, FlowKey, GlobalConfig, reason};

use super::csum;
use crate::{
    maps::ICMP_LIMIT,
    parse::{Packet, frame_macs, halves, ptr_at, vlan_tag, write_l2},
};

/// Bytes of the client's packet quoted: an ICMPv4 error of 576 bytes (RFC 1812 4.3.2.3),
/// an ICMPv6 error of 1280 bytes (RFC 4443 2.4).
const QUOTE4: usize = 548;
const QUOTE6: usize = 1232;
const IPV6_MIN_MTU: u32 = 1280;

/// Answer the too-big packet `pkt` (`mtu`: the egress MTU, `outer`: the encapsulation
/// header's length). Returns the reason to count: `ICMP_TOO_BIG` when the frame now holds
/// the ICMP message (send it with `XDP_TX`), else `DROP_TOO_BIG`.
#[inline(always)]
pub(super) fn reply(
    ctx: &XdpContext,
    pkt: &Packet,
    cfg: &GlobalConfig,
    mtu: u32,
    outer: u32,
) -> u32 {
    match try_reply(ctx, pkt, cfg, mtu, outer) {
        Ok(()) => reason::ICMP_TOO_BIG,
        Err(code) => code,
    }
}

#[inline(always)]
fn try_reply(
    ctx: &XdpContext,
    pkt: &Packet,
    cfg: &GlobalConfig,
    mtu: u32,
    outer: u32,
) -> Result<(), u32> {
    let v6 = pkt.key.family == FAMILY_V6;
    // No MTU from the kernel (before 5.12), or one too small to quote the packet (an
    // IPv4 egress MTU under 568 bytes): nothing sensible to announce.
    let quote = if v6 { QUOTE6 } else { QUOTE4 };
    if mtu <= outer || usize::from(pkt.l3_len) < quote {
        return Err(reason::DROP_TOO_BIG);
    }
    if !v6 && pkt.ipv4_frags[0] & 0x40 == 0 {
        return Err(reason::DROP_TOO_BIG);
    }
    if !allow(cfg.icmp_too_big_per_sec) {
        return Err(reason::DROP_TOO_BIG);
    }
    let (own, client) = frame_macs(ctx)?;
    let vlan = vlan_tag(ctx, pkt.l3_off)?;
    let head = if v6 { 48 } else { 28 };
    // SAFETY: the helpers only move `data` / `data_end`; every pointer is re-derived
    // afterwards.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -head) } != 0 {
        return Err(reason::DROP_INTERNAL);
    }
    let want = pkt.l3_off + head as usize + quote;
    // (The helper: the verifier allows no arithmetic on the end pointer.)
    // SAFETY: a plain helper call on this program's context.
    let have = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    // The frame holds the whole packet (`l3_len` ≥ `quote`), so this only shrinks it.
    // SAFETY: as above.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, want as i32 - have as i32) } != 0 {
        return Err(reason::DROP_INTERNAL);
    }
    write_l2(ctx, client, own, vlan, pkt.eth_proto)?;
    if v6 {
        write6(ctx, pkt, mtu - outer)
    } else {
        write4(ctx, pkt, mtu - outer)
    }
}

/// Take one message's worth of this CPU's bucket, if it has it.
#[inline(always)]
fn allow(per_sec: u32) -> bool {
    if per_sec == 0 {
        return false;
    }
    let Some(b) = ICMP_LIMIT.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's slot; nothing else writes it while this program runs.
    let b = unsafe { &mut *b };
    crate::bucket::take(
        &mut b.credit_ns,
        &mut b.last_ns,
        &mut b.per_sec,
        per_sec,
        now,
    )
}

/// The frame's checksum (RFC 1071) of `N` bytes at `off`, added to `seed` (the kernel's
/// `csum_partial`: a 32-bit sum of native-order words).
#[inline(always)]
fn sum<const N: usize>(ctx: &XdpContext, off: usize, seed: u32) -> Result<u32, u32> {
    let p: *mut [u8; N] = ptr_at(ctx, off).ok_or(reason::DROP_INTERNAL)?;
    // SAFETY: `ptr_at` checked the `N` bytes are inside the frame; the helper only reads.
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p.cast(), N as u32, seed) };
    if r < 0 {
        return Err(reason::DROP_INTERNAL);
    }
    Ok(r as u32)
}

/// Fold a native-order sum to the checksum to store (native order).
#[inline(always)]
fn fold(s: u64) -> [u8; 2] {
    let mut s = s;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    (!(s as u16)).to_ne_bytes()
}

/// Store `b` at `i` of the frame's bytes from `p` (volatile: merged stores of stack
/// arrays become `memcpy` calls and stack use).
#[inline(always)]
fn put(p: *mut u8, i: usize, b: u8) {
    // SAFETY: callers pass `i` inside the area their `ptr_at` checked.
    unsafe { core::ptr::write_volatile(p.add(i), b) };
}

#[inline(always)]
fn write4(ctx: &XdpContext, pkt: &Packet, mtu: u32) -> Result<(), u32> {
    // The reply goes from the VIP (the key's destination) back to the client.
    let k = pkt.key.words();
    let ([s0, s1], [d0, d1]) = (halves(k[FlowKey::W_DST]), halves(k[FlowKey::W_SRC]));
    let len = (20 + 8 + QUOTE4 as u16).to_be_bytes();
    // TOS: internetwork control (as the kernel's own ICMP errors); no DF; TTL 64.
    let w = u16::from_ne_bytes;
    let mut ip: [u16; 10] = [w([0x45, 0xc0]), w(len), 0, 0, w([64, 1]), 0, s0, s1, d0, d1];
    ip[5] = csum::ipv4_header(&ip);
    let m = (mtu as u16).to_be_bytes();
    let l3 = pkt.l3_off;
    let out: *mut [u8; 28] = ptr_at(ctx, l3).ok_or(reason::DROP_INTERNAL)?;
    let o = out.cast::<u8>();
    for (i, word) in ip.iter().enumerate() {
        // SAFETY: inside the 28 bytes `ptr_at` checked, at an even offset of a 2-byte
        // aligned frame; volatile as `put`.
        unsafe { core::ptr::write_volatile(o.cast::<u16>().add(i), *word) };
    }
    // Type 3 (destination unreachable), code 4 (fragmentation needed), checksum (below),
    // unused, next-hop MTU.
    for (i, b) in [3, 4, 0, 0, 0, 0, m[0], m[1]].iter().enumerate() {
        put(o, 20 + i, *b);
    }
    // ICMP header and quote: 8 + 548 = 512 + 44 bytes.
    let x = sum::<512>(ctx, l3 + 20, 0)?;
    let x = sum::<44>(ctx, l3 + 20 + 512, x)?;
    let c: *mut [u8; 2] = ptr_at(ctx, l3 + 22).ok_or(reason::DROP_INTERNAL)?;
    // SAFETY: `ptr_at` checked the checksum field is inside the frame.
    unsafe { c.write(fold(u64::from(x))) };
    Ok(())
}

#[inline(always)]
fn write6(ctx: &XdpContext, pkt: &Packet, mtu: u32) -> Result<(), u32> {
    // A PMTU below the IPv6 minimum is not taken by hosts (RFC 8200 5): announce 1280.
    let mtu = if mtu < IPV6_MIN_MTU {
        IPV6_MIN_MTU
    } else {
        mtu
    };
    let plen = (8 + QUOTE6 as u16).to_be_bytes();
    let m = mtu.to_be_bytes();
    let l3 = pkt.l3_off;
    let out: *mut [u8; 48] = ptr_at(ctx, l3).ok_or(reason::DROP_INTERNAL)?;
    let o = out.cast::<u8>();
    // Version 6, traffic class and flow label 0, payload length, ICMPv6, hop limit 64.
    for (i, b) in [0x60, 0, 0, 0, plen[0], plen[1], 58, 64].iter().enumerate() {
        put(o, i, *b);
    }
    let mut i = 0;
    while i < 16 {
        put(o, 8 + i, pkt.key.dst[i]);
        put(o, 24 + i, pkt.key.src[i]);
        i += 1;
    }
    // Type 2 (packet too big), code 0, checksum (below), MTU.
    for (i, b) in [2, 0, 0, 0, m[0], m[1], m[2], m[3]].iter().enumerate() {
        put(o, 40 + i, *b);
    }
    // Pseudo-header: the addresses, the length and the next header (as native-order
    // words, like the sums), then the ICMPv6 message: 8 + 1232 = 512 + 512 + 216 bytes.
    let x = sum::<32>(ctx, l3 + 8, 0)?;
    let x = sum::<512>(ctx, l3 + 40, x)?;
    let x = sum::<512>(ctx, l3 + 40 + 512, x)?;
    let x = sum::<216>(ctx, l3 + 40 + 1024, x)?;
    let extra = u64::from(u16::from_ne_bytes(plen)) + u64::from(u16::from_ne_bytes([0, 58]));
    let c: *mut [u8; 2] = ptr_at(ctx, l3 + 42).ok_or(reason::DROP_INTERNAL)?;
    // SAFETY: `ptr_at` checked the checksum field is inside the frame.
    unsafe { c.write(fold(u64::from(x) + extra)) };
    Ok(())
}
