//! Each backend's next hop, resolved in userspace so that the program never asks the FIB
//! on the fast path: the route to the backend's address (`ip route get`: policy rules,
//! multipath and nexthop objects as the kernel itself resolves them), the egress
//! interface's MAC and MTU (the route's MTU if it sets one), and the MAC of the next hop
//! (the gateway, or the backend on a connected network) from the neighbour table. The
//! result goes into the backend's `NEXT_HOPS` slot ([`crate::Dataplane`] owns it); a
//! backend that cannot be resolved gets an empty slot, and the program falls back to
//! `bpf_fib_lookup` for it (counted in `FIB_FALLBACKS`).
//!
//! [`Watcher`] subscribes to the kernel's link, neighbour and route notifications, so a
//! neighbour's new MAC or a route moving to another interface reaches the slots as soon as
//! the daemon's loop handles the wake-up (not at the next poll).
//!
//! Over rtnetlink, blocking and short, in the calling thread's network namespace (see
//! [`crate::netlink`]).

use std::{
    collections::BTreeMap,
    io,
    net::IpAddr,
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use lb_common::NextHop;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::NeighbourState,
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteType, RouteVia},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::netlink::{self, Link, Neighbour, transact};

/// Why a backend has no next hop (its packets go through `bpf_fib_lookup`, which then
/// drops them with the same reason unless the kernel knows better).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// No route to the address (or an `unreachable`/`blackhole`/`prohibit` one).
    NoRoute(String),
    /// The address is this host's own.
    Local,
    /// The route leaves through an interface without Ethernet addresses (`lo`, a tunnel).
    NotEthernet { interface: String },
    /// The next hop's MAC is not in the neighbour table (yet: the daemon primes it).
    NoNeighbour { next_hop: IpAddr, interface: String },
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoRoute(why) => write!(f, "no route ({why})"),
            Self::Local => f.write_str("the address is local to this host"),
            Self::NotEthernet { interface } => {
                write!(
                    f,
                    "the route leaves through {interface}, not an Ethernet interface"
                )
            }
            Self::NoNeighbour {
                next_hop,
                interface,
            } => write!(
                f,
                "next hop {next_hop} on {interface} is not resolved (no MAC)"
            ),
        }
    }
}

/// The next hop of one address, or why there is none.
pub type Resolution = Result<NextHop, Unresolved>;

/// What the route lookup says: egress interface, next-hop address, MTU if the route sets
/// one.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Route {
    oif: u32,
    via: IpAddr,
    mtu: Option<u32>,
}

/// Resolve every address in `addrs`: one route lookup each, one dump of links and of
/// neighbours for all. An `Err` is a failure to talk to the kernel, not an unresolved
/// address.
pub fn resolve(addrs: &[IpAddr]) -> io::Result<BTreeMap<IpAddr, Resolution>> {
    let mut out = BTreeMap::new();
    if addrs.is_empty() {
        return Ok(out);
    }
    let links = netlink::links()?;
    let neighbours = netlink::neighbours()?;
    for &a in addrs {
        let r = match route_get(a)? {
            Ok(route) => hop(&route, &links, &neighbours),
            Err(u) => Err(u),
        };
        out.insert(a, r);
    }
    Ok(out)
}

/// The next hop of `route` from the link and neighbour tables.
fn hop(route: &Route, links: &[Link], neighbours: &[Neighbour]) -> Resolution {
    let link = links.iter().find(|l| l.index == route.oif);
    let interface = link.map_or_else(|| format!("ifindex {}", route.oif), |l| l.name.clone());
    let Some((link, smac)) = link.and_then(|l| Some((l, l.mac.filter(|_| l.ether)?))) else {
        return Err(Unresolved::NotEthernet { interface });
    };
    let dmac = neighbours
        .iter()
        .filter(|n| n.index == route.oif && n.address == route.via && usable(n.state))
        .find_map(Neighbour::mac)
        .ok_or(Unresolved::NoNeighbour {
            next_hop: route.via,
            interface,
        })?;
    let mtu = route.mtu.filter(|m| *m > 0).or(link.mtu).unwrap_or(1500);
    Ok(NextHop {
        dmac,
        smac,
        ifindex: route.oif,
        mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
        _pad: [0; 2],
    })
}

/// The neighbour states whose MAC the kernel itself would send to (`NUD_VALID`): what
/// `bpf_fib_lookup` accepts. STALE, DELAY and PROBE are still used while the kernel
/// re-confirms them.
fn usable(s: NeighbourState) -> bool {
    matches!(
        s,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    )
}

/// `ip route get ADDR`: the route the kernel would use for a packet to `a`.
fn route_get(a: IpAddr) -> io::Result<Result<Route, Unresolved>> {
    let mut msg = RouteMessage::default();
    let (family, len, dst) = match a {
        IpAddr::V4(x) => (AddressFamily::Inet, 32, RouteAddress::Inet(x)),
        IpAddr::V6(x) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(x)),
    };
    msg.header.address_family = family;
    msg.header.destination_prefix_length = len;
    msg.attributes.push(RouteAttribute::Destination(dst));
    let replies = match transact(RouteNetlinkMessage::GetRoute(msg), 0, false) {
        Ok(r) => r,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES | libc::EINVAL)
            ) =>
        {
            return Ok(Err(Unresolved::NoRoute(e.to_string())));
        }
        Err(e) => return Err(e),
    };
    let Some(r) = replies.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewRoute(r) => Some(r),
        _ => None,
    }) else {
        return Ok(Err(Unresolved::NoRoute("no answer".into())));
    };
    Ok(parse_route(a, &r))
}

fn parse_route(a: IpAddr, r: &RouteMessage) -> Result<Route, Unresolved> {
    match r.header.kind {
        RouteType::Unicast => {}
        RouteType::Local => return Err(Unresolved::Local),
        k => return Err(Unresolved::NoRoute(format!("{k:?} route").to_lowercase())),
    }
    let (mut oif, mut via, mut mtu) = (None, None, None);
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => via = Some(IpAddr::V4(*g)),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => via = Some(IpAddr::V6(*g)),
            RouteAttribute::Via(RouteVia::Inet(g)) => via = Some(IpAddr::V4(*g)),
            RouteAttribute::Via(RouteVia::Inet6(g)) => via = Some(IpAddr::V6(*g)),
            RouteAttribute::Metrics(ms) => {
                for m in ms {
                    if let RouteMetric::Mtu(x) = m {
                        mtu = Some(*x);
                    }
                }
            }
            _ => {}
        }
    }
    let oif = oif.ok_or_else(|| Unresolved::NoRoute("the route names no interface".into()))?;
    Ok(Route {
        oif,
        via: via.unwrap_or(a),
        mtu,
    })
}

/// `RTMGRP_LINK`, `RTMGRP_NEIGH`, `RTMGRP_IPV4_ROUTE`, `RTMGRP_IPV6_ROUTE`.
const GROUPS: u32 = 0x1 | 0x4 | 0x40 | 0x400;

/// A thread that calls `on_change` after every link, neighbour or route notification of
/// the network namespace it was opened in (several notifications read at once make one
/// call). It stops when dropped.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// Subscribe now, in the calling thread's network namespace (the socket keeps it),
    /// and watch on a thread of its own.
    pub fn spawn(on_change: impl Fn() + Send + 'static) -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, GROUPS))?;
        // Wake up every 200 ms to notice `stop`.
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: a valid socket and a `timeval` of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sluice-nexthop".into())
            .spawn(move || watch(&socket, &flag, &on_change))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(socket: &Socket, stop: &AtomicBool, on_change: &dyn Fn()) {
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv(&mut &mut buf[..], 0) {
            Ok(n) if relevant(&buf[..n]) => on_change(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // ENOBUFS: notifications were lost; re-resolve everything to be sure.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => on_change(),
            Err(e) => {
                tracing::warn!(error = %e, "next-hop watcher stopped: route and neighbour changes now reach backends only at the next publish");
                return;
            }
        }
    }
}

/// Whether a datagram of notifications holds one that can change a next hop (a new or
/// deleted link, neighbour or route). An undecodable one counts, to be safe.
fn relevant(mut data: &[u8]) -> bool {
    while data.len() >= 16 {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < 16 || len > data.len() {
            return true;
        }
        let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[..len]) else {
            return true;
        };
        if let NetlinkPayload::InnerMessage(
            RouteNetlinkMessage::NewLink(_)
            | RouteNetlinkMessage::DelLink(_)
            | RouteNetlinkMessage::NewNeighbour(_)
            | RouteNetlinkMessage::DelNeighbour(_)
            | RouteNetlinkMessage::NewRoute(_)
            | RouteNetlinkMessage::DelRoute(_),
        ) = m.payload
        {
            return true;
        }
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    false
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use netlink_packet_route::neighbour::NeighbourFlags;

    use super::*;

    fn link(index: u32, name: &str, mac: Option<[u8; 6]>, mtu: u32) -> Link {
        Link {
            index,
            name: name.into(),
            mac,
            ether: mac.is_some(),
            mtu: Some(mtu),
            ..Link::default()
        }
    }

    fn neigh(index: u32, a: [u8; 4], mac: [u8; 6], state: NeighbourState) -> Neighbour {
        Neighbour {
            index,
            address: IpAddr::V4(Ipv4Addr::from(a)),
            lladdr: Some(mac.to_vec()),
            state,
            flags: NeighbourFlags::empty(),
        }
    }

    const ETH: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const GW: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];

    #[test]
    fn the_gateway_s_mac_on_the_egress_interface() {
        let links = [link(1, "lo", None, 65536), link(7, "eth0", Some(ETH), 9000)];
        let ns = [
            // Same address on another interface, and a failed entry: neither is used.
            neigh(3, [10, 0, 0, 1], [9; 6], NeighbourState::Reachable),
            neigh(7, [10, 0, 0, 1], [8; 6], NeighbourState::Failed),
            neigh(7, [10, 0, 0, 1], GW, NeighbourState::Stale),
        ];
        let r = Route {
            oif: 7,
            via: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            mtu: None,
        };
        assert_eq!(
            hop(&r, &links, &ns),
            Ok(NextHop {
                dmac: GW,
                smac: ETH,
                ifindex: 7,
                mtu: 9000,
                _pad: [0; 2]
            })
        );
        // A route MTU wins over the interface's.
        let r = Route {
            mtu: Some(1400),
            ..r
        };
        assert_eq!(hop(&r, &links, &ns).unwrap().mtu, 1400);
    }

    #[test]
    fn unresolved_says_why() {
        let links = [link(1, "lo", None, 65536), link(7, "eth0", Some(ETH), 1500)];
        let via = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let r = Route {
            oif: 7,
            via,
            mtu: None,
        };
        let incomplete = [neigh(7, [10, 0, 0, 2], [0; 6], NeighbourState::Incomplete)];
        let e = hop(&r, &links, &incomplete).unwrap_err();
        assert_eq!(
            e,
            Unresolved::NoNeighbour {
                next_hop: via,
                interface: "eth0".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "next hop 10.0.0.2 on eth0 is not resolved (no MAC)"
        );
        let r = Route { oif: 1, ..r };
        assert_eq!(
            hop(&r, &links, &[]),
            Err(Unresolved::NotEthernet {
                interface: "lo".into()
            })
        );
    }

    #[test]
    fn route_messages() {
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
        let mut m = RouteMessage::default();
        m.header.kind = RouteType::Unicast;
        m.attributes.push(RouteAttribute::Oif(4));
        assert_eq!(
            parse_route(a, &m),
            Ok(Route {
                oif: 4,
                via: a,
                mtu: None
            })
        );
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(
                192, 0, 2, 1,
            ))));
        m.attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(1280)]));
        assert_eq!(
            parse_route(a, &m),
            Ok(Route {
                oif: 4,
                via: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                mtu: Some(1280)
            })
        );
        m.header.kind = RouteType::Local;
        assert_eq!(parse_route(a, &m), Err(Unresolved::Local));
        m.header.kind = RouteType::Unreachable;
        assert_eq!(
            parse_route(a, &m),
            Err(Unresolved::NoRoute("unreachable route".into()))
        );
    }

    #[test]
    fn loopback_addresses_are_local() {
        let got = resolve(&[IpAddr::V4(Ipv4Addr::LOCALHOST)]).unwrap();
        assert_eq!(
            got[&IpAddr::V4(Ipv4Addr::LOCALHOST)],
            Err(Unresolved::Local)
        );
    }

    #[test]
    fn only_link_neighbour_and_route_notifications_wake_the_loop() {
        assert!(!relevant(&[]));
        let mut msg = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(Default::default()));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        assert!(relevant(&buf));
        let mut msg = NetlinkMessage::from(RouteNetlinkMessage::NewAddress(Default::default()));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        assert!(!relevant(&buf));
    }
}
