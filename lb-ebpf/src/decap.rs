//! Backend-side decapsulation of sluice's IPIP / IP6IP6 (and 6in4 / 4in6) packets, for
//! hosts whose kernel lacks the ipip module. The inner packet comes out exactly as the
//! client sent it; the kernel then delivers it to the VIP on the backend's loopback.

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::reason;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{
    parse::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, ptr_at, vlan_l3},
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

/// The outer header's length and the inner packet's ethertype.
#[inline(always)]
fn outer(ctx: &XdpContext, l3_off: usize, eth_proto: u16) -> Result<(usize, u16), u32> {
    let (hlen, next) = if eth_proto == ETH_P_IP {
        let ip: *const Ipv4Hdr = ptr_at(ctx, l3_off).map_err(|()| reason::PASS_TRUNCATED)?;
        // SAFETY: `ptr_at` checked the fixed header is inside the frame.
        let ip = unsafe { &*ip };
        let hlen = usize::from(ip.vihl & 0x0f) * 4;
        if ip.vihl >> 4 != 4 || hlen < 20 {
            return Err(reason::PASS_MALFORMED);
        }
        if u16::from_be_bytes(ip.frags) & 0x3fff != 0 {
            return Err(reason::PASS_FRAGMENT);
        }
        (hlen, ip.proto)
    } else {
        let ip: *const Ipv6Hdr = ptr_at(ctx, l3_off).map_err(|()| reason::PASS_TRUNCATED)?;
        // SAFETY: as above.
        (40, unsafe { (*ip).next_hdr })
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
    let _: *const u8 = ptr_at(ctx, l3_off + hlen + 20).map_err(|()| reason::PASS_TRUNCATED)?;

    // Move the L2 header (and VLAN tag) forward over the outer IP header, then drop the
    // bytes in front of it. The two regions never overlap: hlen ≥ 20 ≥ the L2 length.
    let old: *const EthHdr = ptr_at(ctx, 0).map_err(|()| reason::DROP_INTERNAL)?;
    let new: *mut EthHdr = ptr_at(ctx, hlen).map_err(|()| reason::DROP_INTERNAL)?;
    // SAFETY: both headers are inside the frame (checked above) and do not overlap.
    unsafe {
        (*new).dst_addr = (*old).dst_addr;
        (*new).src_addr = (*old).src_addr;
        (*new).ether_type = (*old).ether_type;
    }
    if l3_off > ETH_HLEN {
        let old: *const [u8; 2] = ptr_at(ctx, ETH_HLEN).map_err(|()| reason::DROP_INTERNAL)?;
        let new: *mut [u8; 4] = ptr_at(ctx, hlen + ETH_HLEN).map_err(|()| reason::DROP_INTERNAL)?;
        let p = inner_proto.to_be_bytes();
        // SAFETY: as above.
        unsafe { new.write([(*old)[0], (*old)[1], p[0], p[1]]) };
    } else {
        // SAFETY: as above.
        unsafe { (*new).ether_type = inner_proto.to_be() };
    }
    // SAFETY: the helper only moves `data`; no packet pointer is used afterwards.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, hlen as i32) } != 0 {
        return Err(reason::DROP_INTERNAL);
    }
    Ok(reason::DECAP)
}
