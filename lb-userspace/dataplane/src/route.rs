//! Host routes of VIP addresses in a routing table of sluice's own, the way a VIP is
//! announced: a BGP speaker (BIRD's `kernel` protocol on that table) exports what is there,
//! so installing the route announces the address and removing it withdraws it.
//!
//! The routes are `unicast`, scope `link`, through one interface (`lo` by default), in
//! table `table` and tagged with route protocol `protocol`: a kernel routing table that no
//! `ip rule` looks up, so the routes never steer the host's own traffic (the XDP program
//! answers for the VIPs before the stack sees them); they are only a list for the speaker.
//! Not `local`: a local route would make the host itself the VIP's owner for every
//! lookup of that table. On `lo`, some kernels store an IPv6 unicast route as
//! `unreachable` (they refuse to loop through loopback), which changes nothing for an
//! exported list; [`routes`] reports it like any other.
//!
//! Over rtnetlink, blocking and short (see [`crate::netlink`]): in the calling thread's
//! network namespace.

use std::{io, net::IpAddr};

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
};

use crate::netlink::transact;

/// Where sluice's routes go and how they are told from others'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteTable {
    /// The kernel routing table (`ip route show table N`).
    pub table: u32,
    /// The route protocol tagging them (`proto N`).
    pub protocol: u8,
}

/// One host route of [`routes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoute {
    pub address: IpAddr,
    /// The interface index it points at, if it has one.
    pub oif: Option<u32>,
    /// `unicast`, or `unreachable` for IPv6 through `lo` (see the module's doc).
    pub kind: RouteType,
}

fn host_len(address: IpAddr) -> u8 {
    if address.is_ipv4() { 32 } else { 128 }
}

fn family(address: IpAddr) -> AddressFamily {
    if address.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// The message for `address`'s host route in `t` (add and delete share it).
fn message(t: RouteTable, address: IpAddr) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(address);
    m.header.destination_prefix_length = host_len(address);
    // Tables past 255 only fit the attribute; the header then says "unspec" (as `ip` does).
    m.header.table = u8::try_from(t.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    m.header.protocol = RouteProtocol::from(t.protocol);
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(address)));
    m.attributes.push(RouteAttribute::Table(t.table));
    m
}

/// Installs the host route of `address` through interface `oif` in `t`. Never replaces a
/// route: if the table has one to `address` already (another protocol's, or ours through
/// another interface: [`delete`] it first), the kernel refuses with `EEXIST`.
pub fn add(t: RouteTable, address: IpAddr, oif: u32) -> io::Result<()> {
    let mut m = message(t, address);
    m.header.scope = RouteScope::Link;
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Oif(oif));
    transact(
        RouteNetlinkMessage::NewRoute(m),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        false,
    )
    .map(drop)
}

/// Removes the host route of `address` from `t` (only one with `t`'s protocol); `false` if
/// there was none.
pub fn delete(t: RouteTable, address: IpAddr) -> io::Result<bool> {
    let mut m = message(t, address);
    m.header.scope = RouteScope::NoWhere;
    match transact(RouteNetlinkMessage::DelRoute(m), NLM_F_ACK, false) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The host routes (/32, /128) of `t`'s protocol in `t`'s table, IPv4 then IPv6.
pub fn routes(t: RouteTable) -> io::Result<Vec<HostRoute>> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        // A strict dump: the kernel filters by table and protocol itself, so a host with
        // a full routing table in `main` is not walked.
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        m.header.table = u8::try_from(t.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        m.header.protocol = RouteProtocol::from(t.protocol);
        m.attributes.push(RouteAttribute::Table(t.table));
        let replies = match transact(RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP, true) {
            Ok(r) => r,
            // No such table (yet): nothing in it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        out.extend(replies.into_iter().filter_map(|r| match r {
            RouteNetlinkMessage::NewRoute(r) => parse(t, r),
            _ => None,
        }));
    }
    Ok(out)
}

/// `r` as a [`HostRoute`] if it is a host route of `t` (checked again here: an old
/// kernel without strict dumps sends every route).
fn parse(t: RouteTable, r: RouteMessage) -> Option<HostRoute> {
    if u8::from(r.header.protocol) != t.protocol {
        return None;
    }
    let (mut address, mut oif, mut table) = (None, None, u32::from(r.header.table));
    for a in r.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => address = Some(IpAddr::V4(a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => address = Some(IpAddr::V6(a)),
            RouteAttribute::Oif(i) => oif = Some(i),
            RouteAttribute::Table(n) => table = n,
            _ => {}
        }
    }
    let address = address?;
    (table == t.table && r.header.destination_prefix_length == host_len(address)).then_some(
        HostRoute {
            address,
            oif,
            kind: r.header.kind,
        },
    )
}
