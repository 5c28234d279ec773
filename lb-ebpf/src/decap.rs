//! Backend-side decapsulation of sluice's IPIP / IP6IP6 (and 6in4 / 4in6) packets, for
//! hosts whose kernel lacks the ipip module. The inner packet comes out exactly as the
//! client sent it; the kernel then delivers it to the VIP on the backend's loopback.

use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_xdp_adjust_head, programs::XdpContext,
};
use lb_common::reason;
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use crate::{
    parse::{ETH_P_IP, ETH_P_IPV6, frame_macs, ptr_at, vlan_l3, vlan_tag, write_l2},
    stats,
};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;

/// Entry point: decapsulate, or pass untouched.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let code = try_decap(ctx).unwrap_or_else(|code| code);
    stats::reason(code);
    xdp_action::XDP_PASS
}

/// Bytes of the frame from `off` to its end.
#[inline(always)]
fn remaining(ctx: &XdpContext, off: usize) -> usize {
    (ctx.data_end() - ctx.data()).saturating_sub(off)
}

/// The outer header's length and the inner packet's ethertype.
#[inline(always)]
fn outer(ctx: &XdpContext, l3_off: usize, eth_proto: u16) -> Result<(usize, u16), u32> {
    let (hlen, next) = if eth_proto == ETH_P_IP {
        let ip: *const Ipv4Hdr = ptr_at(ctx, l3_off).ok_or(reason::PASS_TRUNCATED)?;
        // SAFETY: `ptr_at` checked the fixed header is inside the frame.
        let ip = unsafe { &*ip };
        let hlen = usize::from(ip.vihl & 0x0f) * 4;
        if ip.vihl >> 4 != 4 || hlen < 20 {
            return Err(reason::PASS_MALFORMED);
        }
        let tot_len = usize::from(u16::from_be_bytes(ip.tot_len));
        if tot_len < hlen {
            return Err(reason::PASS_MALFORMED);
        }
        if tot_len > remaining(ctx, l3_off) {
            return Err(reason::PASS_TRUNCATED);
        }
        if u16::from_be_bytes(ip.frags) & 0x3fff != 0 {
            return Err(reason::PASS_FRAGMENT);
        }
        (hlen, ip.proto)
    } else {
        let ip: *const Ipv6Hdr = ptr_at(ctx, l3_off).ok_or(reason::PASS_TRUNCATED)?;
        // SAFETY: as above.
        let ip = unsafe { &*ip };
        if ip.vcf[0] >> 4 != 6 {
            return Err(reason::PASS_MALFORMED);
        }
        if usize::from(u16::from_be_bytes(ip.payload_len)) + 40 > remaining(ctx, l3_off) {
            return Err(reason::PASS_TRUNCATED);
        }
        (40, ip.next_hdr)
    };
    match next {
        IPPROTO_IPIP => Ok((hlen, ETH_P_IP)),
        IPPROTO_IPV6 => Ok((hlen, ETH_P_IPV6)),
        _ => Err(reason::PASS_NOT_ENCAP),
    }
}

#[inline(always)]
fn try_decap(ctx: &XdpContext) -> Result<u32, u32> {
    let (l3_off, eth_proto) = vlan_l3(ctx)?;
    let (hlen, inner_proto) = outer(ctx, l3_off, eth_proto)?;
    // The inner header must be there too, or this is not ours to unwrap.
    if inner_proto == ETH_P_IPV6 {
        let _: *const [u8; 40] = ptr_at(ctx, l3_off + hlen).ok_or(reason::PASS_TRUNCATED)?;
    } else {
        let _: *const [u8; 20] = ptr_at(ctx, l3_off + hlen).ok_or(reason::PASS_TRUNCATED)?;
    }

    // Keep the L2 header (and VLAN tag), drop everything up to the inner packet, and write
    // the L2 header back in front of it with the inner ethertype.
    let (dst, src) = frame_macs(ctx)?;
    let vlan = vlan_tag(ctx, l3_off)?;
    // SAFETY: the helper only moves `data`; every pointer is re-derived afterwards.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, hlen as i32) } != 0 {
        return Err(reason::DROP_INTERNAL);
    }
    write_l2(ctx, dst, src, vlan, inner_proto)?;
    Ok(reason::DECAP)
}
