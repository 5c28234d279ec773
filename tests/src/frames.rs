//! Frames for the fixtures, built with etherparse (checksums computed by it, independently
//! of the code under test), and the helpers to predict what sluice must make of them.

use std::net::IpAddr;

use etherparse::{
    EtherType, Ethernet2Header, IpDscp, IpEcn, IpNumber, Ipv4Header, Ipv4Options, Ipv6FlowLabel,
    Ipv6Header, SingleVlanHeader, TcpHeader, UdpHeader, VlanId,
};
use lb_common::{FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP, PROTO_UDP};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The MAC of the LB's interface in the fixture namespace.
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

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
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    pub payload: Vec<u8>,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// IPv4 options (a multiple of 4 bytes, at most 40).
    pub ipv4_options: Vec<u8>,
    pub ttl: u8,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("bad address {s}: {e}"))
}

impl Spec {
    pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Self {
        Self::new(src, dst, L4::Tcp { sport, dport, flags })
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
        }
    }

    pub fn vlan(mut self, id: u16) -> Self {
        self.vlan = Some(id);
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
                    L4::Tcp { .. } => 20,
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
                h.dont_fragment = true;
                h.identification = 0x1234;
                h.options = Ipv4Options::try_from(&self.ipv4_options[..]).expect("options");
                h.total_len = (h.header_len() + l4_len) as u16;
                h.write(&mut out).expect("write ipv4");
                match self.l4 {
                    L4::Tcp { flags, .. } => {
                        let mut t = tcp_header(sport, dport, flags);
                        t.checksum = t.calc_checksum_ipv4(&h, &self.payload).expect("tcp csum");
                        t.write(&mut out).expect("write tcp");
                    }
                    L4::Udp { .. } => {
                        let u = UdpHeader::with_ipv4_checksum(sport, dport, &h, &self.payload).expect("udp");
                        u.write(&mut out).expect("write udp");
                    }
                }
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let l4_len = match self.l4 {
                    L4::Tcp { .. } => 20,
                    L4::Udp { .. } => 8,
                } + self.payload.len();
                let h = Ipv6Header {
                    traffic_class: self.tos,
                    flow_label: Ipv6FlowLabel::try_new(0x12345).expect("flow label"),
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
                        t.checksum = t.calc_checksum_ipv6(&h, &self.payload).expect("tcp csum");
                        t.write(&mut out).expect("write tcp");
                    }
                    L4::Udp { .. } => {
                        let u = UdpHeader::with_ipv6_checksum(sport, dport, &h, &self.payload).expect("udp");
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
        if self.src.is_ipv4() { EtherType::IPV4 } else { EtherType::IPV6 }
    }

    /// The whole frame.
    pub fn build(&self) -> Vec<u8> {
        l2(self.src_mac, self.dst_mac, self.vlan, self.ether_type(), &self.ip_packet())
    }

    /// The flow key the XDP program derives from this frame.
    pub fn key(&self) -> FlowKey {
        let (sport, dport) = self.ports();
        let mut k = FlowKey { sport: sport.to_be_bytes(), dport: dport.to_be_bytes(), proto: self.proto(), ..FlowKey::default() };
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

/// An Ethernet (+ optional VLAN) header in front of `payload`.
pub fn l2(src: [u8; 6], dst: [u8; 6], vlan: Option<u16>, ether_type: EtherType, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match vlan {
        Some(id) => {
            Ethernet2Header { source: src, destination: dst, ether_type: EtherType::VLAN_TAGGED_FRAME }
                .write(&mut out)
                .expect("eth");
            SingleVlanHeader {
                pcp: etherparse::VlanPcp::ZERO,
                drop_eligible_indicator: false,
                vlan_id: VlanId::try_new(id).expect("vlan id"),
                ether_type,
            }
            .write(&mut out)
            .expect("vlan");
        }
        None => Ethernet2Header { source: src, destination: dst, ether_type }.write(&mut out).expect("eth"),
    }
    out.extend_from_slice(payload);
    out
}

/// What sluice's IPIP must produce for `inner` (an IP packet): an outer IPv4 header (TTL
/// 64, the inner TOS, id 0, no flags, protocol 4) or IPv6 header (hop limit 64, the inner
/// traffic class, flow label from the hash, next header 41), built by etherparse.
pub fn ipip(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlan: Option<u16>,
    outer_src: IpAddr,
    outer_dst: IpAddr,
    tos: u8,
    flow_label: u32,
    inner: &[u8],
) -> Vec<u8> {
    let mut ip = Vec::new();
    let ether_type = match (outer_src, outer_dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = Ipv4Header::new(inner.len() as u16, 64, IpNumber::IPV4, s.octets(), d.octets()).expect("outer");
            h.dscp = IpDscp::try_new(tos >> 2).expect("dscp");
            h.ecn = IpEcn::try_new(tos & 3).expect("ecn");
            h.dont_fragment = false;
            h.identification = 0;
            h.write(&mut ip).expect("outer v4");
            EtherType::IPV4
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            Ipv6Header {
                traffic_class: tos,
                flow_label: Ipv6FlowLabel::try_new(flow_label & 0xfffff).expect("label"),
                payload_length: inner.len() as u16,
                next_header: IpNumber::IPV6,
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
    l2(src_mac, dst_mac, vlan, ether_type, &ip)
}
