//! TCP and UDP: ports and TCP flags.

use aya_ebpf::programs::XdpContext;
use lb_common::{FlowKey, PROTO_TCP, reason};
use network_types::{tcp::TcpHdr, udp::UdpHdr};

use super::{Packet, ptr_at, word_at};

/// Fills ports and TCP flags. The L4 header must lie inside the IP packet, not only inside
/// the frame (Ethernet padding after a short IP packet is not a header). A header the
/// kernel would discard (TCP data offset below 5 or beyond the segment, UDP length below 8
/// or beyond the IP payload) is parsed all the same and marked in `pkt.invalid`: whether
/// it is passed or dropped depends on whether it is for a VIP (`balancer`).
#[inline(always)]
pub(super) fn parse(ctx: &XdpContext, pkt: &mut Packet, off: usize) -> Result<(), u32> {
    let ip_end = pkt.l3_off + usize::from(pkt.l3_len);
    let need = if pkt.key.proto == PROTO_TCP {
        size_of::<TcpHdr>()
    } else {
        size_of::<UdpHdr>()
    };
    if off + need > ip_end {
        return Err(reason::PASS_TRUNCATED);
    }
    if pkt.key.proto == PROTO_TCP {
        let tcp: *const TcpHdr = ptr_at(ctx, off).ok_or(reason::PASS_TRUNCATED)?;
        // SAFETY: `ptr_at` checked the fixed TCP header is inside the frame.
        let tcp = unsafe { &*tcp };
        let hlen = usize::from(tcp.doff()) * 4;
        if hlen < size_of::<TcpHdr>() || off + hlen > ip_end {
            pkt.invalid = reason::DROP_TCP_DOFF as u8;
        }
        // SAFETY: the ports are the header's first 4 bytes, at an even offset.
        pkt.key.words_mut()[FlowKey::W_PORTS] = unsafe { word_at(tcp.source.as_ptr()) };
        // SAFETY: byte 13 of the header checked above: the flags.
        pkt.tcp_flags = unsafe { *(core::ptr::from_ref(tcp).cast::<u8>().add(13)) };
    } else {
        let udp: *const UdpHdr = ptr_at(ctx, off).ok_or(reason::PASS_TRUNCATED)?;
        // SAFETY: `ptr_at` checked the UDP header is inside the frame.
        let udp = unsafe { &*udp };
        let len = usize::from(u16::from_be_bytes(udp.len));
        if len < size_of::<UdpHdr>() || off + len > ip_end {
            pkt.invalid = reason::DROP_UDP_LEN as u8;
        }
        // SAFETY: as for TCP.
        pkt.key.words_mut()[FlowKey::W_PORTS] = unsafe { word_at(udp.src.as_ptr()) };
    }
    Ok(())
}
