//! Frames for the fixtures, built with etherparse (checksums computed by it, independently
//! of the code under test), and the helpers to predict what sluice must make of them.

use std::net::IpAddr;

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, IcmpEchoHeader, Icmpv4Header,
    Icmpv4Type, Icmpv6Header, Icmpv6Type, IpDscp, IpEcn, IpFragOffset, IpNumber, Ipv4Header,
    Ipv4Options, Ipv6FlowLabel, Ipv6Header, SingleVlanHeader, TcpHeader, UdpHeader, VlanId,
    VlanPcp,
};
use lb_common::{FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP, PROTO_UDP};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The MAC of the LB's interface in the fixture namespace.
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// A VLAN tag: its TPID (0x8100 for 802.1Q, 0x88a8 for 802.1ad) and its TCI (PCP, DEI,
/// VLAN id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub tpid: u16,
    pub tci: u16,
}

impl Tag {
    /// An 802.1Q (customer) tag.
    pub const fn c(tci: u16) -> Self {
        Self { tpid: 0x8100, tci }
    }

    /// An 802.1ad (service) tag.
    pub const fn s(tci: u16) -> Self {
        Self { tpid: 0x88a8, tci }
    }
}

#[derive(Clone, Debug)]
pub enum L4 {
    Tcp { sport: u16, dport: u16, flags: u8 },
    Udp { sport: u16, dport: u16 },
}

/// One frame, described.
#[derive(Clone, Debug)]
pub struct Spec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan: Option<Tag>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    pub payload: Vec<u8>,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// IPv4 options (a multiple of 4 bytes, at most 40).
    pub ipv4_options: Vec<u8>,
    pub ttl: u8,
    /// IPv4 more-fragments flag and fragment offset (in 8-byte units).
    pub fragment: (bool, u16),
    /// Zero bytes after the IP packet (Ethernet padding of short frames).
    pub trailer: usize,
    /// The IPv4 identification / IPv6 flow label (what carries a health probe's backend
    /// id); default 0x1234 / 0x12345.
    pub ip_id: Option<u32>,
    /// TCP options (a multiple of 4 bytes, at most 40).
    pub tcp_options: Vec<u8>,
    /// IPv4: DF clear on an unfragmented packet.
    pub no_df: bool,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("bad address {s}: {e}"))
}

impl Spec {
    pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Self {
        Self::new(
            src,
            dst,
            L4::Tcp {
                sport,
                dport,
                flags,
            },
        )
    }

    pub fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Self {
        Self::new(src, dst, L4::Udp { sport, dport })
    }

    fn new(src: &str, dst: &str, l4: L4) -> Self {
        Self {
            src_mac: CLIENT_MAC,
            dst_mac: LB_MAC,
            vlan: None,
            src: ip(src),
            dst: ip(dst),
            l4,
            payload: b"sluice fixture payload".to_vec(),
            tos: 0,
            ipv4_options: Vec::new(),
            ttl: 61,
            fragment: (false, 0),
            trailer: 0,
            ip_id: None,
            tcp_options: Vec::new(),
            no_df: false,
        }
    }

    /// The same flow with other TCP flags (e.g. a SYN's ACK); a UDP spec is left as it is.
    pub fn tcp_flags(mut self, to: u8) -> Self {
        if let L4::Tcp { flags, .. } = &mut self.l4 {
            *flags = to;
        }
        self
    }

    /// TCP options (raw, a multiple of 4 bytes).
    pub fn tcp_options(mut self, opts: &[u8]) -> Self {
        self.tcp_options = opts.to_vec();
        self
    }

    /// A TCP MSS option (kind 2) of `mss` as the only option.
    pub fn mss(self, mss: u16) -> Self {
        let m = mss.to_be_bytes();
        self.tcp_options(&[2, 4, m[0], m[1]])
    }

    /// IPv4 without DF.
    pub fn no_df(mut self) -> Self {
        self.no_df = true;
        self
    }

    /// One 802.1Q tag with this TCI.
    pub fn vlan(self, tci: u16) -> Self {
        self.tag(Tag::c(tci))
    }

    /// One tag of any TPID.
    pub fn tag(mut self, tag: Tag) -> Self {
        self.vlan = Some(tag);
        self
    }

    /// IPv4 fragmentation fields: more-fragments and the offset in 8-byte units.
    pub fn fragment(mut self, more: bool, offset: u16) -> Self {
        self.fragment = (more, offset);
        self
    }

    /// The IPv4 identification / IPv6 flow label: a health probe's backend id.
    pub fn ip_id(mut self, id: u32) -> Self {
        self.ip_id = Some(id);
        self
    }

    pub fn tos(mut self, tos: u8) -> Self {
        self.tos = tos;
        self
    }

    pub fn options(mut self, opts: &[u8]) -> Self {
        self.ipv4_options = opts.to_vec();
        self
    }

    pub fn payload(mut self, p: Vec<u8>) -> Self {
        self.payload = p;
        self
    }

    /// Pad the frame with zeros to `len` bytes, as a NIC pads frames below the Ethernet
    /// minimum (60 bytes without the FCS).
    pub fn pad_to(mut self, len: usize) -> Self {
        self.trailer = 0;
        self.trailer = len.saturating_sub(self.build().len());
        self
    }

    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => PROTO_TCP,
            L4::Udp { .. } => PROTO_UDP,
        }
    }

    fn ports(&self) -> (u16, u16) {
        match self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (sport, dport),
        }
    }

    /// The IP packet (header, L4 header, payload): what IPIP carries.
    pub fn ip_packet(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let (sport, dport) = self.ports();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let l4_len = match self.l4 {
                    L4::Tcp { .. } => 20 + self.tcp_options.len(),
                    L4::Udp { .. } => 8,
                } + self.payload.len();
                let mut h = Ipv4Header::new(
                    l4_len as u16,
                    self.ttl,
                    IpNumber(self.proto()),
                    s.octets(),
                    d.octets(),
                )
                .expect("ipv4 header");
                h.dscp = IpDscp::try_new(self.tos >> 2).expect("dscp");
                h.ecn = IpEcn::try_new(self.tos & 3).expect("ecn");
                h.dont_fragment = self.fragment == (false, 0) && !self.no_df;
                h.more_fragments = self.fragment.0;
                h.fragment_offset =
                    IpFragOffset::try_new(self.fragment.1).expect("fragment offset");
                h.identification = self.ip_id.map_or(0x1234, |i| i as u16);
                h.options = Ipv4Options::try_from(&self.ipv4_options[..]).expect("options");
                h.total_len = (h.header_len() + l4_len) as u16;
                h.write(&mut out).expect("write ipv4");
                match self.l4 {
                    L4::Tcp { flags, .. } => {
                        let mut t = tcp_header(sport, dport, flags);
                        t.set_options_raw(&self.tcp_options).expect("tcp options");
                        t.checksum = t.calc_checksum_ipv4(&h, &self.payload).expect("tcp csum");
                        t.write(&mut out).expect("write tcp");
                    }
                    L4::Udp { .. } => {
                        let u = UdpHeader::with_ipv4_checksum(sport, dport, &h, &self.payload)
                            .expect("udp");
                        u.write(&mut out).expect("write udp");
                    }
                }
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let l4_len = match self.l4 {
                    L4::Tcp { .. } => 20 + self.tcp_options.len(),
                    L4::Udp { .. } => 8,
                } + self.payload.len();
                let h = Ipv6Header {
                    traffic_class: self.tos,
                    flow_label: Ipv6FlowLabel::try_new(self.ip_id.unwrap_or(0x12345))
                        .expect("flow label"),
                    payload_length: l4_len as u16,
                    next_header: IpNumber(self.proto()),
                    hop_limit: self.ttl,
                    source: s.octets(),
                    destination: d.octets(),
                };
                h.write(&mut out).expect("write ipv6");
                match self.l4 {
                    L4::Tcp { flags, .. } => {
                        let mut t = tcp_header(sport, dport, flags);
                        t.set_options_raw(&self.tcp_options).expect("tcp options");
                        t.checksum = t.calc_checksum_ipv6(&h, &self.payload).expect("tcp csum");
                        t.write(&mut out).expect("write tcp");
                    }
                    L4::Udp { .. } => {
                        let u = UdpHeader::with_ipv6_checksum(sport, dport, &h, &self.payload)
                            .expect("udp");
                        u.write(&mut out).expect("write udp");
                    }
                }
            }
            _ => panic!("mixed address families in a fixture frame"),
        }
        out.extend_from_slice(&self.payload);
        out
    }

    fn ether_type(&self) -> EtherType {
        if self.src.is_ipv4() {
            EtherType::IPV4
        } else {
            EtherType::IPV6
        }
    }

    /// The whole frame.
    pub fn build(&self) -> Vec<u8> {
        let mut f = l2(
            self.src_mac,
            self.dst_mac,
            self.vlan.as_slice(),
            self.ether_type(),
            &self.ip_packet(),
        );
        f.resize(f.len() + self.trailer, 0);
        f
    }

    /// The L4 segment (header and payload) of [`Spec::ip_packet`].
    pub fn l4_segment(&self) -> Vec<u8> {
        let p = self.ip_packet();
        let hlen = if self.src.is_ipv4() {
            usize::from(p[0] & 0x0f) * 4
        } else {
            40
        };
        p[hlen..].to_vec()
    }

    /// The flow key the XDP program derives from this frame.
    pub fn key(&self) -> FlowKey {
        let (sport, dport) = self.ports();
        let mut k = FlowKey {
            sport: sport.to_be_bytes(),
            dport: dport.to_be_bytes(),
            proto: self.proto(),
            ..FlowKey::default()
        };
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                k.family = FAMILY_V4;
                k.src[..4].copy_from_slice(&s.octets());
                k.dst[..4].copy_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                k.family = FAMILY_V6;
                k.src = s.octets();
                k.dst = d.octets();
            }
            _ => panic!("mixed address families"),
        }
        k
    }
}

fn tcp_header(sport: u16, dport: u16, flags: u8) -> TcpHeader {
    let mut t = TcpHeader::new(sport, dport, 1000, 64240);
    t.fin = flags & FIN != 0;
    t.syn = flags & SYN != 0;
    t.rst = flags & RST != 0;
    t.ack = flags & ACK != 0;
    if t.ack {
        t.acknowledgment_number = 5000;
    }
    t
}

/// An Ethernet header and any number of VLAN tags (outermost first) in front of
/// `payload`.
pub fn l2(
    src: [u8; 6],
    dst: [u8; 6],
    tags: &[Tag],
    ether_type: EtherType,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    let first = tags.first().map_or(ether_type, |t| EtherType(t.tpid));
    Ethernet2Header {
        source: src,
        destination: dst,
        ether_type: first,
    }
    .write(&mut out)
    .expect("eth");
    for (i, t) in tags.iter().enumerate() {
        SingleVlanHeader {
            pcp: VlanPcp::try_new((t.tci >> 13) as u8).expect("pcp"),
            drop_eligible_indicator: t.tci & 0x1000 != 0,
            vlan_id: VlanId::try_new(t.tci & 0x0fff).expect("vlan id"),
            ether_type: tags.get(i + 1).map_or(ether_type, |n| EtherType(n.tpid)),
        }
        .write(&mut out)
        .expect("vlan");
    }
    out.extend_from_slice(payload);
    out
}

/// An outer header for IPIP / IP6IP6, and the L2 header in front of it.
#[derive(Clone, Copy, Debug)]
pub struct Encap {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan: Option<Tag>,
    /// Outer source and destination (both IPv4 or both IPv6).
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Outer TOS / traffic class.
    pub tos: u8,
    /// Outer IPv6 flow label (its low 20 bits); unused for IPv4.
    pub flow_label: u32,
}

impl Encap {
    /// What sluice's IPIP must produce for `inner` (an IP packet): an outer IPv4 header
    /// (TTL 64, the inner IPv4 packet's id and DF flag) or IPv6 header (hop limit 64),
    /// built by etherparse. The
    /// outer protocol / next header follows the inner packet's version: 4 (IPIP) for IPv4,
    /// 41 for IPv6 (so 6in4 and 4in6 frames for the decap program come from here too).
    pub fn wrap(&self, inner: &[u8]) -> Vec<u8> {
        let mut ip = Vec::new();
        let next = if inner.first().is_some_and(|b| b >> 4 == 6) {
            IpNumber::IPV6
        } else {
            IpNumber::IPV4
        };
        let ether_type = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = Ipv4Header::new(inner.len() as u16, 64, next, s.octets(), d.octets())
                    .expect("outer");
                h.dscp = IpDscp::try_new(self.tos >> 2).expect("dscp");
                h.ecn = IpEcn::try_new(self.tos & 3).expect("ecn");
                // sluice copies an IPv4 inner packet's identification and DF flag.
                let (id, df) = if next == IpNumber::IPV4 && inner.len() >= 7 {
                    (
                        u16::from_be_bytes([inner[4], inner[5]]),
                        inner[6] & 0x40 != 0,
                    )
                } else {
                    (0, false)
                };
                h.dont_fragment = df;
                h.identification = id;
                h.write(&mut ip).expect("outer v4");
                EtherType::IPV4
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                Ipv6Header {
                    traffic_class: self.tos,
                    flow_label: Ipv6FlowLabel::try_new(self.flow_label & 0xfffff).expect("label"),
                    payload_length: inner.len() as u16,
                    next_header: next,
                    hop_limit: 64,
                    source: s.octets(),
                    destination: d.octets(),
                }
                .write(&mut ip)
                .expect("outer v6");
                EtherType::IPV6
            }
            _ => panic!("mixed families"),
        };
        ip.extend_from_slice(inner);
        l2(
            self.src_mac,
            self.dst_mac,
            self.vlan.as_slice(),
            ether_type,
            &ip,
        )
    }
}

/// Rewrite the (valid) IPv4 header at `l3_off` of `frame` through etherparse: `edit`
/// changes fields, the checksum is recomputed. The header length must not change.
pub fn edit_ipv4(frame: &mut [u8], l3_off: usize, edit: impl FnOnce(&mut Ipv4Header)) {
    let (mut h, _) = Ipv4Header::from_slice(&frame[l3_off..]).expect("an IPv4 header");
    let len = h.header_len();
    edit(&mut h);
    let mut out = Vec::new();
    h.write(&mut out).expect("write ipv4");
    assert_eq!(
        out.len(),
        len,
        "edit_ipv4 must not change the header length"
    );
    frame[l3_off..l3_off + len].copy_from_slice(&out);
}

/// An IPv4 packet (no options, TTL 64) carrying `proto` with `payload`.
pub fn ipv4_packet(src: &str, dst: &str, proto: IpNumber, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (ip(src), ip(dst)) else {
        panic!("IPv4 addresses expected")
    };
    let mut out = Vec::new();
    Ipv4Header::new(payload.len() as u16, 64, proto, s.octets(), d.octets())
        .expect("ipv4")
        .write(&mut out)
        .expect("write");
    out.extend_from_slice(payload);
    out
}

/// An IPv6 packet (hop limit 64) whose fixed header announces `next` in front of `payload`.
pub fn ipv6_packet(src: &str, dst: &str, next: IpNumber, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (ip(src), ip(dst)) else {
        panic!("IPv6 addresses expected")
    };
    let mut out = Vec::new();
    Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: payload.len() as u16,
        next_header: next,
        hop_limit: 64,
        source: s.octets(),
        destination: d.octets(),
    }
    .write(&mut out)
    .expect("write ipv6");
    out.extend_from_slice(payload);
    out
}

/// A client frame (no tag) around an IP packet.
pub fn frame(ip_packet: &[u8]) -> Vec<u8> {
    let ether_type = if ip_packet.first().is_some_and(|b| b >> 4 == 6) {
        EtherType::IPV6
    } else {
        EtherType::IPV4
    };
    l2(CLIENT_MAC, LB_MAC, &[], ether_type, ip_packet)
}

/// A broadcast ARP request from the client: who has `target`?
pub fn arp_request(sender: &str, target: &str, tags: &[Tag]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(t)) = (ip(sender), ip(target)) else {
        panic!("IPv4 addresses expected")
    };
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: CLIENT_MAC,
        sender_ipv4: s.octets(),
        target_mac: [0; 6],
        target_ipv4: t.octets(),
    };
    l2(CLIENT_MAC, [0xff; 6], tags, EtherType::ARP, &arp.to_bytes())
}

/// An ICMP echo request (id 7, sequence 1) in an IPv4 packet.
pub fn icmp4_echo(src: &str, dst: &str) -> Vec<u8> {
    let payload = b"ping";
    let mut icmp = Vec::new();
    Icmpv4Header::with_checksum(
        Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 7, seq: 1 }),
        payload,
    )
    .write(&mut icmp)
    .expect("icmp");
    icmp.extend_from_slice(payload);
    frame(&ipv4_packet(src, dst, IpNumber::ICMP, &icmp))
}

/// An ICMPv6 message of `kind` with `payload` in an IPv6 packet.
pub fn icmp6(src: &str, dst: &str, kind: Icmpv6Type, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (ip(src), ip(dst)) else {
        panic!("IPv6 addresses expected")
    };
    let mut icmp = Vec::new();
    Icmpv6Header::with_checksum(kind, s.octets(), d.octets(), payload)
        .expect("icmpv6")
        .write(&mut icmp)
        .expect("icmpv6");
    icmp.extend_from_slice(payload);
    frame(&ipv6_packet(src, dst, IpNumber::IPV6_ICMP, &icmp))
}

/// What sluice answers to `spec` (a client frame with DF set, or IPv6) when it is too big
/// for an egress MTU `mtu` once encapsulated: ICMP "fragmentation needed" (next-hop MTU
/// `mtu - 20`, the first 548 bytes of the packet quoted, 576 bytes in all) or ICMPv6
/// "packet too big" (MTU `mtu - 40`, 1232 bytes quoted, 1280 in all), from the VIP to the
/// client (TOS 0xc0 for IPv4, TTL 64), back to the client's MAC with any VLAN tag kept.
pub fn icmp_too_big(spec: &Spec, mtu: u32) -> Vec<u8> {
    let pkt = spec.ip_packet();
    let mut out = Vec::new();
    let ether_type = match (spec.src, spec.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let quote = &pkt[..548];
            let icmp = Icmpv4Header::with_checksum(
                Icmpv4Type::DestinationUnreachable(
                    etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                        next_hop_mtu: (mtu - 20) as u16,
                    },
                ),
                quote,
            );
            let mut h = Ipv4Header::new(
                (icmp.header_len() + quote.len()) as u16,
                64,
                IpNumber::ICMP,
                d.octets(),
                s.octets(),
            )
            .expect("ipv4");
            h.dscp = IpDscp::try_new(0xc0 >> 2).expect("dscp");
            h.dont_fragment = false;
            h.identification = 0;
            h.header_checksum = h.calc_header_checksum();
            h.write(&mut out).expect("ipv4");
            icmp.write(&mut out).expect("icmp");
            out.extend_from_slice(quote);
            EtherType::IPV4
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let quote = &pkt[..1232];
            let icmp = Icmpv6Header::with_checksum(
                Icmpv6Type::PacketTooBig { mtu: mtu - 40 },
                d.octets(),
                s.octets(),
                quote,
            )
            .expect("icmpv6");
            Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: (icmp.header_len() + quote.len()) as u16,
                next_header: IpNumber::IPV6_ICMP,
                hop_limit: 64,
                source: d.octets(),
                destination: s.octets(),
            }
            .write(&mut out)
            .expect("ipv6");
            icmp.write(&mut out).expect("icmpv6");
            out.extend_from_slice(quote);
            EtherType::IPV6
        }
        _ => panic!("mixed families"),
    };
    l2(
        spec.dst_mac,
        spec.src_mac,
        spec.vlan.as_slice(),
        ether_type,
        &out,
    )
}

/// An ICMPv4 message of `kind` with `payload` (for errors: the quoted packet) in an IPv4
/// packet.
pub fn icmp4(src: &str, dst: &str, kind: Icmpv4Type, payload: &[u8]) -> Vec<u8> {
    let mut icmp = Vec::new();
    Icmpv4Header::with_checksum(kind, payload)
        .write(&mut icmp)
        .expect("icmp");
    icmp.extend_from_slice(payload);
    frame(&ipv4_packet(src, dst, IpNumber::ICMP, &icmp))
}
