//! Frame parsing: Ethernet (+ one 802.1Q tag), IPv4 (options allowed), IPv6 (fixed header),
//! TCP and UDP, and ICMP errors about a VIP's flows, into one small [`Packet`] view.
//! [`ptr_at`] is the only bounds check every packet access goes through.

mod icmp;
mod l2;
mod l3;
mod l4;

use aya_ebpf::programs::XdpContext;
use lb_common::FlowKey;

pub use l2::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, VLAN_HLEN, parse as vlan_l3, to_group};
pub use l3::ipv4_checksum_ok;

pub use crate::frame::ptr_at;

/// A MAC address as the three 16-bit words it is in memory. Frames and map values keep
/// their MACs 2-byte aligned (a frame starts 2-byte aligned; every MAC field of a map value
/// sits at an even offset of an 8-byte aligned value), so MACs are moved as words: LLVM
/// moves a `[u8; 6]` one byte at a time.
pub type Mac = [u16; 3];

/// The MAC at `m`, as words.
///
/// # Safety
/// `m` points at 6 readable bytes (in the frame: bounds-checked), 2-byte aligned.
#[inline(always)]
pub unsafe fn mac_at(m: *const [u8; 6]) -> Mac {
    // SAFETY: the caller's promise.
    unsafe { m.cast::<Mac>().read() }
}

/// The frame's destination and source MACs.
#[inline(always)]
pub fn frame_macs(ctx: &XdpContext) -> Result<(Mac, Mac), u32> {
    let h: *const [Mac; 2] = ptr_at(ctx, 0).ok_or(lb_common::reason::DROP_INTERNAL)?;
    // SAFETY: `ptr_at` checked the 12 bytes are inside the frame, which starts 2-byte
    // aligned.
    let [dst, src] = unsafe { h.read() };
    Ok((dst, src))
}

/// Rewrite the frame's destination and source MACs (the rest of the frame untouched), as
/// 16-bit stores: the frame starts 2-byte aligned.
#[inline(always)]
pub fn write_macs(ctx: &XdpContext, dst: Mac, src: Mac) -> Result<(), u32> {
    let h: *mut [Mac; 2] = ptr_at(ctx, 0).ok_or(lb_common::reason::DROP_INTERNAL)?;
    // SAFETY: `ptr_at` checked the 12 bytes are inside the frame.
    unsafe { h.write([dst, src]) };
    Ok(())
}

/// Write an Ethernet header (and, with `vlan`, a VLAN tag: its TPID and TCI as found in the
/// frame, so 802.1Q and 802.1ad tags both survive) at the start of the frame, announcing
/// `proto` (host order) as the next protocol.
#[inline(always)]
pub fn write_l2(
    ctx: &XdpContext,
    dst: Mac,
    src: Mac,
    vlan: Option<[u8; 4]>,
    proto: u16,
) -> Result<(), u32> {
    let p = proto.to_be_bytes();
    let w = u16::from_ne_bytes;
    let ([m0, m1, m2], [m3, m4, m5]) = (dst, src);
    if let Some(t) = vlan {
        let h: *mut [u16; 9] = ptr_at(ctx, 0).ok_or(lb_common::reason::DROP_INTERNAL)?;
        // SAFETY: `ptr_at` checked the 18 bytes are inside the frame.
        unsafe {
            h.write([
                m0,
                m1,
                m2,
                m3,
                m4,
                m5,
                w([t[0], t[1]]),
                w([t[2], t[3]]),
                w(p),
            ])
        };
    } else {
        let h: *mut [u16; 7] = ptr_at(ctx, 0).ok_or(lb_common::reason::DROP_INTERNAL)?;
        // SAFETY: `ptr_at` checked the 14 bytes are inside the frame.
        unsafe { h.write([m0, m1, m2, m3, m4, m5, w(p)]) };
    }
    Ok(())
}

/// The VLAN tag (TPID and TCI) of a frame whose L3 header is at `l3_off`, if it has one.
#[inline(always)]
pub fn vlan_tag(ctx: &XdpContext, l3_off: usize) -> Result<Option<[u8; 4]>, u32> {
    if l3_off <= ETH_HLEN {
        return Ok(None);
    }
    // The TPID is the outer ethertype field, right before the TCI.
    let t: *const [u8; 4] = ptr_at(ctx, ETH_HLEN - 2).ok_or(lb_common::reason::DROP_INTERNAL)?;
    // SAFETY: `ptr_at` checked the 4 bytes are inside the frame.
    Ok(Some(unsafe { [(*t)[0], (*t)[1], (*t)[2], (*t)[3]] }))
}

/// The 4 bytes at `p` as the native word a [`FlowKey`] holds them in ([`FlowKey::words`]),
/// read as two aligned 16-bit loads: header fields sit at even offsets of a 2-byte aligned
/// frame, but an IPv4 address behind a 14-byte Ethernet header is not 4-byte aligned.
///
/// # Safety
/// `p` points at 4 readable bytes (in the frame: bounds-checked), 2-byte aligned.
#[inline(always)]
unsafe fn word_at(p: *const u8) -> u32 {
    // SAFETY: the caller's promise.
    let [lo, hi] = unsafe { p.cast::<[u16; 2]>().read() };
    // Little-endian: the first two bytes are the low half.
    (u32::from(hi) << 16) | u32::from(lo)
}

/// A native word (as [`word_at`] reads it, or [`FlowKey::words`] holds it) as the two
/// 16-bit words it is in memory, first then second: the inverse of `word_at`, for headers
/// built as 16-bit words.
#[inline(always)]
pub const fn halves(w: u32) -> [u16; 2] {
    [w as u16, (w >> 16) as u16]
}

// `word_at`, `halves` and the key's words assume a little-endian machine, as BPF (bpfel) and the
// hosts that build this crate are.
const _: () = assert!(cfg!(target_endian = "little"));

/// What the balancer needs to know about a frame.
pub struct Packet {
    /// Offset of the IP header (14, or 18 behind a VLAN tag).
    pub l3_off: usize,
    /// Offset of the TCP/UDP header (the MSS clamp reads a SYN's options from there).
    pub l4_off: usize,
    /// The ethertype of the IP header (`ETH_P_IP` or `ETH_P_IPV6`), host order.
    pub eth_proto: u16,
    /// The 5-tuple.
    pub key: FlowKey,
    /// TCP flags byte (FIN=0x01, SYN=0x02, RST=0x04, ACK=0x10); 0 for UDP.
    pub tcp_flags: u8,
    /// Length of the IP packet (header included) as its header says.
    pub l3_len: u16,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// IPv4 identification and flags/fragment-offset field, network order (IPIP copies
    /// them to the outer header).
    pub ipv4_id: [u8; 2],
    pub ipv4_frags: [u8; 2],
    /// 0, or the drop reason of an L4 header the kernel would discard
    /// (`reason::DROP_TCP_DOFF`, `reason::DROP_UDP_LEN`).
    pub invalid: u8,
    /// 0, or the type of the ICMP error this frame is; `key` is then the flow it quotes,
    /// reversed (client → VIP), and `tcp_flags` 0.
    pub icmp: u8,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Parse a frame. `Err` carries the `lb_common::reason` code to pass the frame with.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet, u32> {
    let (l3_off, eth_proto) = l2::parse(ctx)?;
    let mut pkt = Packet {
        l3_off,
        l4_off: 0,
        eth_proto,
        key: FlowKey::from_words([0; 10]),
        tcp_flags: 0,
        l3_len: 0,
        tos: 0,
        ipv4_id: [0; 2],
        ipv4_frags: [0; 2],
        invalid: 0,
        icmp: 0,
    };
    let l4_off = if eth_proto == ETH_P_IP {
        l3::parse_v4(ctx, &mut pkt)?
    } else {
        l3::parse_v6(ctx, &mut pkt)?
    };
    if pkt.key.proto == icmp::PROTO_ICMP || pkt.key.proto == icmp::PROTO_ICMPV6 {
        icmp::parse(ctx, &mut pkt, l4_off)?;
    } else {
        l4::parse(ctx, &mut pkt, l4_off)?;
    }
    pkt.l4_off = l4_off;
    Ok(pkt)
}
