//! Ethernet and one optional 802.1Q tag.

use aya_ebpf::programs::XdpContext;
use lb_common::reason;
use network_types::{eth::EthHdr, vlan::VlanHdr};

use super::ptr_at;

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// Returns the offset of the L3 header and its ethertype (IPv4 or IPv6 only).
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<(usize, u16), u32> {
    let eth: *const EthHdr = ptr_at(ctx, 0).ok_or(reason::PASS_TRUNCATED)?;
    // SAFETY: `ptr_at` checked the whole header is inside the frame.
    let mut proto = u16::from_be(unsafe { (*eth).ether_type });
    let mut off = ETH_HLEN;
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        let vlan: *const VlanHdr = ptr_at(ctx, off).ok_or(reason::PASS_TRUNCATED)?;
        // SAFETY: as above.
        proto = u16::from_be(unsafe { (*vlan).ether_type });
        off += VLAN_HLEN;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            return Err(reason::PASS_VLAN_STACKED);
        }
    }
    if proto != ETH_P_IP && proto != ETH_P_IPV6 {
        return Err(reason::PASS_NOT_IP);
    }
    Ok((off, proto))
}

/// Whether the frame is addressed to an Ethernet group (broadcast or multicast): the I/G bit
/// of its destination MAC. Such a frame is never ours to forward: the kernel would not
/// route it either, and DSR would send it on with that group address as its source MAC.
#[inline(always)]
pub fn to_group(ctx: &XdpContext) -> bool {
    // `parse` already checked the Ethernet header is inside the frame; a frame that is not
    // (never the case here) counts as addressed to a group. (The whole header is checked:
    // a one-byte check compiles to `data >= data_end`, which the verifier does not read as
    // a bound.)
    ptr_at::<EthHdr>(ctx, 0).is_none_or(|eth| {
        // SAFETY: `ptr_at` checked the header is inside the frame.
        let first = unsafe { (*eth).dst_addr[0] };
        first & 1 != 0
    })
}
