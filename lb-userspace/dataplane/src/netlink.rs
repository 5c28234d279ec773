//! Links, addresses and neighbours of the current network namespace, asked of the kernel
//! over rtnetlink (what `ip` and getifaddrs(3) ask it, without parsing their output).
//!
//! Blocking and short: one request on a fresh socket, then the replies. The socket is
//! opened by the calling thread, so it sees that thread's network namespace (a lab's
//! `Netns::run`, a benchmark's private namespace). Callers run both on plain threads and
//! inside the tokio runtime (the daemon's loop), which is why this is not the async
//! `rtnetlink` crate: a dump takes microseconds, as getifaddrs(3) did in the same places.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
/// A neighbour entry's state and flags, as the kernel reports them.
pub use netlink_packet_route::neighbour::{NeighbourFlags, NeighbourState};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage, LinkXdp},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// A network interface (`RTM_NEWLINK`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The hardware address, when it is a 6-byte one (`lo` has 00:00:00:00:00:00).
    pub mac: Option<[u8; 6]>,
    /// Whether the link layer is Ethernet (ARPHRD_ETHER: `link/ether` in `ip link`).
    pub ether: bool,
    pub mtu: Option<u32>,
    /// The driver kind (`veth`, `bridge`, …); `None` for physical devices and `lo`.
    pub kind: Option<String>,
    /// `IFLA_LINK`: the peer's index for a veth, the lower device for a VLAN.
    pub link: Option<u32>,
    /// Administratively up (`IFF_UP`: `ip link set dev IF up`).
    pub up: bool,
    /// The XDP programs attached to it: where, and the program's id (`IFLA_XDP`; both a
    /// driver-mode and a generic-mode program can be attached at once).
    pub xdp: Vec<(XdpSlot, u32)>,
}

/// Where an XDP program is attached to an interface (`ip link` shows `xdp`, `xdpgeneric`,
/// `xdpoffload`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpSlot {
    /// Native mode, in the driver.
    Driver,
    /// Generic (SKB) mode, after the kernel built a socket buffer.
    Generic,
    /// Offloaded to the NIC.
    Offload,
}

/// An interface address (`RTM_NEWADDR`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    /// The local address: `IFA_LOCAL` if present (point-to-point links, where
    /// `IFA_ADDRESS` is the peer), else `IFA_ADDRESS`, as getifaddrs(3) reports it.
    pub address: IpAddr,
    pub prefix_len: u8,
    /// `IFA_LABEL` (IPv4 only; an alias such as `eth0:1`).
    pub label: Option<String>,
}

/// A neighbour table entry (`RTM_NEWNEIGH`) of IPv4 (ARP) or IPv6 (NDP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub index: u32,
    pub address: IpAddr,
    /// The link-layer address; the kernel reports one only for valid states
    /// (permanent, noarp, reachable, stale, delay, probe).
    pub lladdr: Option<Vec<u8>>,
    pub state: NeighbourState,
    pub flags: NeighbourFlags,
}

impl Neighbour {
    /// Whether `ip neigh show` lists this entry: any state but NOARP and NONE (unless
    /// proxy or externally learned). With [`Neighbour::mac`], the entries sluice maps a
    /// MAC back through; FAILED and INCOMPLETE entries have no MAC.
    pub fn listed(&self) -> bool {
        // iproute2's default filter: NUD states 0xff without NUD_NOARP (0x40).
        const SHOWN: u16 = 0xff & !0x40;
        u16::from(self.state) & SHOWN != 0
            || self
                .flags
                .intersects(NeighbourFlags::Proxy | NeighbourFlags::ExtLearned)
    }

    /// The 6-byte MAC, if the entry has one.
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.lladdr
            .as_deref()
            .and_then(|m| <[u8; 6]>::try_from(m).ok())
    }
}

/// The interface called `name` (or with that alternative name); `None` if there is none.
pub fn link(name: &str) -> io::Result<Option<Link>> {
    // IFNAMSIZ with its NUL: the kernel rejects a longer name as invalid, not as absent.
    if name.is_empty() || name.len() >= 16 {
        return Ok(None);
    }
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    match request(RouteNetlinkMessage::GetLink(msg), false) {
        Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
            _ => None,
        })),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every interface.
pub fn links() -> io::Result<Vec<Link>> {
    Ok(
        request(RouteNetlinkMessage::GetLink(LinkMessage::default()), true)?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })
            .collect(),
    )
}

/// Every IPv4 and IPv6 address, IPv4 first, each family in the kernel's order (primary
/// before secondary), as getifaddrs(3) lists them.
pub fn addresses() -> io::Result<Vec<Address>> {
    Ok(request(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        true,
    )?
    .into_iter()
    .filter_map(|m| match m {
        RouteNetlinkMessage::NewAddress(a) => parse_address(a),
        _ => None,
    })
    .collect())
}

/// The neighbour entries of IPv4, then of IPv6 (what `ip -4 neigh show` and
/// `ip -6 neigh show` ask for), unfiltered: see [`Neighbour::listed`].
pub fn neighbours() -> io::Result<Vec<Neighbour>> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family;
        for m in request(RouteNetlinkMessage::GetNeighbour(msg), true)? {
            if let RouteNetlinkMessage::NewNeighbour(n) = m
                && let Some(n) = parse_neighbour(n)
            {
                out.push(n);
            }
        }
    }
    Ok(out)
}

/// The entries `ip neigh show` lists that have a 6-byte MAC: (MAC, address), IPv4 first.
/// FAILED and INCOMPLETE entries have no MAC, so are never among them.
pub fn neighbour_macs() -> io::Result<Vec<([u8; 6], IpAddr)>> {
    Ok(neighbours()?
        .into_iter()
        .filter(Neighbour::listed)
        .filter_map(|n| Some((n.mac()?, n.address)))
        .collect())
}

fn parse_link(l: LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        ether: l.header.link_layer_type == LinkLayerType::Ether,
        up: l.header.flags.contains(LinkFlags::Up),
        ..Link::default()
    };
    for a in l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Address(m) => link.mac = <[u8; 6]>::try_from(m.as_slice()).ok(),
            LinkAttribute::Mtu(m) => link.mtu = Some(m),
            LinkAttribute::Link(i) => link.link = Some(i),
            LinkAttribute::Xdp(xdp) => {
                // The per-mode ids come for every attached program (`IFLA_XDP_PROG_ID`
                // only repeats the one of a single attachment).
                link.xdp = xdp
                    .into_iter()
                    .filter_map(|x| match x {
                        LinkXdp::DrvProgId(id) => Some((XdpSlot::Driver, id)),
                        LinkXdp::SkbProgId(id) => Some((XdpSlot::Generic, id)),
                        LinkXdp::HwProgId(id) => Some((XdpSlot::Offload, id)),
                        _ => None,
                    })
                    .collect();
            }
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.into_iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    link
}

fn parse_address(a: AddressMessage) -> Option<Address> {
    let (mut address, mut local, mut label) = (None, None, None);
    for attr in a.attributes {
        match attr {
            AddressAttribute::Address(x) => address = Some(x),
            AddressAttribute::Local(x) => local = Some(x),
            AddressAttribute::Label(l) => label = Some(l),
            _ => {}
        }
    }
    Some(Address {
        index: a.header.index,
        address: local.or(address)?,
        prefix_len: a.header.prefix_len,
        label,
    })
}

fn parse_neighbour(n: NeighbourMessage) -> Option<Neighbour> {
    let (mut address, mut lladdr) = (None, None);
    for attr in n.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                address = Some(IpAddr::V4(a));
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                address = Some(IpAddr::V6(a));
            }
            NeighbourAttribute::LinkLayerAddress(m) => lladdr = Some(m),
            _ => {}
        }
    }
    Some(Neighbour {
        index: n.header.ifindex,
        address: address?,
        lladdr,
        state: n.header.state,
        flags: n.header.flags,
    })
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("rtnetlink: {what}"))
}

/// Send one request and collect the replies: up to `NLMSG_DONE` for a dump, the one
/// answer otherwise. A kernel error comes back as its errno.
fn request(msg: RouteNetlinkMessage, dump: bool) -> io::Result<Vec<RouteNetlinkMessage>> {
    transact(msg, if dump { NLM_F_DUMP } else { 0 }, false)
}

/// Send one request with `flags` (besides `NLM_F_REQUEST`) and collect the replies: up to
/// `NLMSG_DONE` for a dump (`NLM_F_DUMP`), up to the acknowledgement with `NLM_F_ACK`, the
/// one answer otherwise. `strict`: `NETLINK_GET_STRICT_CHK`, so that the kernel filters a
/// dump by the header's fields (a route dump by table and protocol).
pub(crate) fn transact(
    msg: RouteNetlinkMessage,
    flags: u16,
    strict: bool,
) -> io::Result<Vec<RouteNetlinkMessage>> {
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    if strict {
        socket.set_netlink_get_strict_chk(true)?;
    }
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = 1;
    let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut out = Vec::new();
    loop {
        let (data, _) = socket.recv_from_full()?;
        if data.is_empty() {
            return Err(invalid("the socket closed before the answer ended"));
        }
        let mut rest = data.as_slice();
        while !rest.is_empty() {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                .map_err(|e| invalid(format!("decoding a reply: {e}")))?;
            let len = usize::try_from(m.header.length).map_err(invalid)?;
            // Messages in one datagram are 4-byte aligned (NLMSG_ALIGN).
            let step = len.next_multiple_of(4).min(rest.len());
            if len == 0 {
                return Err(invalid("a reply of length 0"));
            }
            rest = &rest[step..];
            match m.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                // The acknowledgement (`NLM_F_ACK`): an error message without an error.
                NetlinkPayload::Error(_) => return Ok(out),
                NetlinkPayload::InnerMessage(inner) => {
                    out.push(inner);
                    if !dump {
                        return Ok(out);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The IPv4 and (non-link-local) IPv6 addresses of `index` named `name`, in the kernel's
/// order; IPv4 addresses labelled with an alias (`eth0:1`) are the alias's, as in
/// getifaddrs(3).
pub(super) fn addresses_of(
    addrs: &[Address],
    index: u32,
    name: &str,
) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for a in addrs.iter().filter(|a| a.index == index) {
        if a.label.as_deref().is_some_and(|l| l != name) {
            continue;
        }
        match a.address {
            IpAddr::V4(x) => v4.push(x),
            IpAddr::V6(x) if !x.is_unicast_link_local() => v6.push(x),
            IpAddr::V6(_) => {}
        }
    }
    (v4, v6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback() {
        let lo = link("lo").unwrap().expect("lo exists");
        assert!(lo.index > 0);
        assert_eq!(lo.name, "lo");
        assert_eq!(lo.mac, Some([0; 6]));
        assert_eq!(lo.kind, None);
        assert!(!lo.ether);
        assert!(lo.xdp.is_empty(), "{:?}", lo.xdp);
        assert!(links().unwrap().iter().any(|l| l.index == lo.index));
        let a = addresses().unwrap();
        assert!(a.iter().any(|a| a.index == lo.index
            && a.address == IpAddr::V4(Ipv4Addr::LOCALHOST)
            && a.prefix_len == 8));
        assert_eq!(link("no-such-if0").unwrap(), None);
        // The dump works without root; what it holds depends on the host.
        neighbours().unwrap();
    }

    fn n(state: NeighbourState, flags: NeighbourFlags) -> Neighbour {
        Neighbour {
            index: 1,
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            lladdr: None,
            state,
            flags,
        }
    }

    #[test]
    fn listed_like_ip_neigh_show() {
        let none = NeighbourFlags::empty();
        for s in [
            NeighbourState::Reachable,
            NeighbourState::Stale,
            NeighbourState::Permanent,
            NeighbourState::Failed,
            NeighbourState::Incomplete,
        ] {
            assert!(n(s, none).listed(), "{s:?}");
        }
        assert!(!n(NeighbourState::Noarp, none).listed());
        assert!(!n(NeighbourState::None, none).listed());
        assert!(n(NeighbourState::Noarp, NeighbourFlags::ExtLearned).listed());
        assert!(n(NeighbourState::None, NeighbourFlags::Proxy).listed());
    }
}
