//! What the dataplane is asked to make true: the input of [`super::Dataplane::publish`].
//! Independent of the config file format, so every source of edits feeds the same type.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{FAMILY_V4, FAMILY_V6, VipKey};

/// A VIP's identity: (address, port, protocol). Port 0 = all ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VipIdent {
    pub address: IpAddr,
    pub port: u16,
    /// `lb_common::PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
}

impl VipIdent {
    pub fn key(&self) -> VipKey {
        let (addr, family) = addr_bytes(self.address);
        VipKey {
            addr,
            port: self.port.to_be_bytes(),
            proto: self.proto,
            family,
        }
    }
}

impl std::fmt::Display for VipIdent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = if self.proto == lb_common::PROTO_UDP {
            "udp"
        } else {
            "tcp"
        };
        match self.address {
            IpAddr::V4(a) => write!(f, "{a}:{}/{proto}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{proto}", self.port),
        }
    }
}

/// An address as the maps store it: 16 bytes (IPv4 in the first 4) and its family.
pub fn addr_bytes(a: IpAddr) -> ([u8; 16], u8) {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(v4) => {
            out[..4].copy_from_slice(&v4.octets());
            (out, FAMILY_V4)
        }
        IpAddr::V6(v6) => (v6.octets(), FAMILY_V6),
    }
}

/// Settings for the whole data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Global {
    pub hash_seed: u32,
    /// Outer source prefix for IPv4 IPIP: the host bits carry the flow hash.
    pub encap_v4: (Ipv4Addr, u8),
    /// Outer source prefix for IP6IP6 (length ≤ 96): the last 32 bits carry the flow hash.
    pub encap_v6: (Ipv6Addr, u8),
    /// ICMP too-big messages each CPU may send a second (0: none).
    pub icmp_too_big_per_sec: u32,
    /// New flows each CPU may pin in the flow table a second (0: no limit).
    pub new_flow_limit_per_cpu: u32,
}

impl Default for Global {
    fn default() -> Self {
        Self {
            hash_seed: 0,
            encap_v4: (Ipv4Addr::new(172, 16, 0, 0), 16),
            encap_v6: (Ipv6Addr::new(0xfd00, 0x5c, 0, 0, 0, 0, 0, 0), 96),
            icmp_too_big_per_sec: crate::config::DEFAULT_ICMP_TOO_BIG_PER_SEC,
            new_flow_limit_per_cpu: crate::config::DEFAULT_NEW_FLOW_LIMIT_PER_CPU,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredBackend {
    pub address: IpAddr,
    /// Share of new flows; 0 = none (existing flows continue while `serving`).
    pub weight: u32,
    pub mac: Option<[u8; 6]>,
    /// False when the backend is down (`on_down = "reassign"`): its flows move on their next
    /// packet.
    pub serving: bool,
    /// `lc`/`wlc`: the requests in flight the backend reports (`[vip.load]`), counted in the
    /// least-connection plan instead of its connections; `None`: its connection count.
    pub in_flight: Option<u64>,
}

/// How new flows of a VIP choose their backend (see `crate::sched` and
/// `lb_common::SCHED_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Sched {
    /// Maglev table indexed by the flow hash.
    #[default]
    Maglev,
    /// Maglev table indexed by a hash of the client address.
    SourceHash,
    RoundRobin,
    WeightedRoundRobin,
    LeastConn,
    WeightedLeastConn,
}

impl Sched {
    /// The sequence order, for the schedulers the kernel runs as a sequence.
    pub fn order(self) -> Option<crate::sched::Order> {
        use crate::sched::Order;
        match self {
            Self::Maglev | Self::SourceHash => None,
            Self::RoundRobin => Some(Order::RoundRobin),
            Self::WeightedRoundRobin => Some(Order::WeightedRoundRobin),
            Self::LeastConn => Some(Order::LeastConn),
            Self::WeightedLeastConn => Some(Order::WeightedLeastConn),
        }
    }

    /// How many tables of `table_size` slots a VIP of this scheduler takes in `TABLES`:
    /// its table, double-buffered (2), and for the sequence schedulers their fallback
    /// Maglev table, double-buffered too (4; see `lb_common::SCHED_SEQUENCE`).
    pub fn table_copies(self) -> u32 {
        if self.order().is_some() { 4 } else { 2 }
    }

    /// `TABLES` slots a VIP of this scheduler and `table_size` takes.
    pub fn table_slots(self, table_size: u32) -> u64 {
        u64::from(self.table_copies()) * u64::from(table_size)
    }

    /// Whether the table depends on the live connection counts.
    pub fn least_conn(self) -> bool {
        matches!(self, Self::LeastConn | Self::WeightedLeastConn)
    }

    /// The kernel mechanism (`VipMeta::scheduler`).
    pub fn kernel(self) -> u8 {
        match self {
            Self::Maglev => lb_common::SCHED_MAGLEV,
            Self::SourceHash => lb_common::SCHED_SOURCE_HASH,
            _ => lb_common::SCHED_SEQUENCE,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredVip {
    pub ident: VipIdent,
    /// `lb_common::MODE_DSR` or `MODE_IPIP`.
    pub mode: u8,
    pub scheduler: Sched,
    /// Table slots (a prime, for Maglev); for the sequence schedulers, the longest
    /// sequence.
    pub table_size: u32,
    pub backends: Vec<DesiredBackend>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub global: Global,
    pub vips: Vec<DesiredVip>,
}
