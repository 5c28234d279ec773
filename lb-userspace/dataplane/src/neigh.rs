//! Keeping the kernel's neighbour table warm for backends reached through a route.
//!
//! Their next hops (`nexthop.rs`) and `bpf_fib_lookup` only read the neighbour table; XDP
//! cannot trigger ARP or neighbour discovery. A backend without a configured MAC therefore needs the kernel to have
//! resolved it, or its packets are dropped (`drop_no_neigh`). Sending one empty UDP
//! datagram to the backend's discard port (9) makes the kernel resolve it; repeating that
//! periodically keeps the entry from being garbage-collected while only XDP uses it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use super::Desired;

/// The addresses whose next hop the kernel must resolve: every backend reached through a
/// route (IPIP, DSR without a configured MAC; see [`crate::needs_hop`]).
pub fn fib_backends(desired: &Desired) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = desired
        .vips
        .iter()
        .flat_map(|vip| vip.backends.iter().filter(|b| crate::needs_hop(vip, b)))
        .map(|b| b.address)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Send one empty datagram to port 9 of each address, from the current network namespace.
/// Failures (no route, unreachable) are logged at debug level: the FIB lookup will count
/// the consequence.
pub fn prime(addrs: &[IpAddr]) {
    let v4 = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).ok();
    let v6 = UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))).ok();
    for a in addrs {
        let sock = if a.is_ipv4() { &v4 } else { &v6 };
        if let Some(s) = sock
            && let Err(e) = s.send_to(&[], (*a, 9))
        {
            tracing::debug!(backend = %a, error = %e, "neighbour priming");
        }
    }
}
