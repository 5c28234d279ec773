//! What probes put on the wire and read from it: the raw sockets answers are read from,
//! and the frames of probes and their RSTs.

use std::{
    io,
    net::IpAddr,
    os::fd::{AsRawFd, OwnedFd, RawFd},
};

use etherparse::{IpHeaders, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder};
use lb_common::PROTO_UDP;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrStorage};

/// A raw socket, non-blocking.
pub(super) struct RawSocket(OwnedFd);

impl AsRawFd for RawSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

pub(super) fn raw_socket(domain: AddressFamily, proto: u8) -> io::Result<RawSocket> {
    let proto = if proto == PROTO_UDP {
        SockProtocol::Udp
    } else {
        SockProtocol::Tcp
    };
    let fd = socket::socket(
        domain,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        proto,
    )?;
    Ok(RawSocket(fd))
}

/// One datagram and its source address.
pub(super) fn recv_from(sock: &RawSocket, buf: &mut [u8]) -> io::Result<(usize, IpAddr)> {
    let (n, from) = socket::recvfrom::<SockaddrStorage>(sock.as_raw_fd(), buf)?;
    let from = from.as_ref();
    // These sockets receive only AF_INET or AF_INET6 datagrams.
    let addr = match (
        from.and_then(SockaddrStorage::as_sockaddr_in),
        from.and_then(SockaddrStorage::as_sockaddr_in6),
    ) {
        (Some(sin), _) => IpAddr::V4(sin.ip()),
        (None, Some(sin6)) => IpAddr::V6(sin6.ip()),
        (None, None) => return Err(io::Error::other("a datagram without a source address")),
    };
    Ok((n, addr))
}
/// The frame of a probe (or its RST): from the LB's address and `sport` to the VIP, as a
/// client would send it (the backend it goes to is not in the frame: `sluice_probe` reads
/// it from the XDP metadata the frame is run with, `Dataplane::inject_probe`).
pub fn probe_frame(
    mac: [u8; 6],
    src: IpAddr,
    vip: IpAddr,
    sport: u16,
    dport: u16,
    l4: ProbeL4<'_>,
) -> Result<Vec<u8>, String> {
    let eth = PacketBuilder::ethernet2(mac, mac);
    let proto = match l4 {
        ProbeL4::Udp(_) => IpNumber::UDP,
        _ => IpNumber::TCP,
    };
    let ip = match (src, vip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let h = Ipv4Header::new(0, 64, proto, s.octets(), d.octets())
                .map_err(|e| format!("building the probe: {e}"))?;
            eth.ip(IpHeaders::Ipv4(h, Default::default()))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let h = Ipv6Header {
                flow_label: Ipv6FlowLabel::ZERO,
                next_header: proto,
                hop_limit: 64,
                source: s.octets(),
                destination: d.octets(),
                ..Ipv6Header::default()
            };
            eth.ip(IpHeaders::Ipv6(h, Default::default()))
        }
        _ => return Err("address families differ".to_owned()),
    };
    let mut out = Vec::with_capacity(128);
    let written = match l4 {
        ProbeL4::Syn { seq } => ip.tcp(sport, dport, seq, 64240).syn().write(&mut out, &[]),
        ProbeL4::Rst { seq } => ip.tcp(sport, dport, seq, 0).rst().write(&mut out, &[]),
        ProbeL4::Udp(payload) => ip.udp(sport, dport).write(&mut out, payload),
    };
    written.map_err(|e| format!("building the probe: {e}"))?;
    Ok(out)
}

/// The L4 part of a probe frame.
#[derive(Clone, Copy, Debug)]
pub enum ProbeL4<'a> {
    Syn { seq: u32 },
    Rst { seq: u32 },
    Udp(&'a [u8]),
}
