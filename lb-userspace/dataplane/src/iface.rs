//! The addresses and MAC of an interface in the current network namespace (getifaddrs(3),
//! which asks the kernel over netlink; /sys would show the namespace it was mounted in).

use std::{
    ffi::CStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// What an interface has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Iface {
    pub ifindex: u32,
    pub mac: Option<[u8; 6]>,
    pub v4: Vec<Ipv4Addr>,
    /// Global (not link-local) IPv6 addresses.
    pub v6: Vec<Ipv6Addr>,
}

impl Iface {
    /// A source address of the family of `to`.
    pub fn source_for(&self, to: IpAddr) -> Option<IpAddr> {
        match to {
            IpAddr::V4(_) => self.v4.first().map(|a| IpAddr::V4(*a)),
            IpAddr::V6(_) => self.v6.first().map(|a| IpAddr::V6(*a)),
        }
    }
}

/// Look `name` up; `None` if no such interface.
pub fn lookup(name: &str) -> std::io::Result<Option<Iface>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut found = Iface::default();
    let mut seen = false;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let ifname = unsafe { CStr::from_ptr(ifa.ifa_name) };
        if ifname.to_bytes() != name.as_bytes() || ifa.ifa_addr.is_null() {
            continue;
        }
        seen = true;
        // SAFETY: ifa_addr points at a sockaddr whose family says its real type.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        match family {
            libc::AF_INET => {
                // SAFETY: AF_INET: a sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                found
                    .v4
                    .push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
            libc::AF_INET6 => {
                // SAFETY: AF_INET6: a sockaddr_in6.
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                let a = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                if !a.is_unicast_link_local() {
                    found.v6.push(a);
                }
            }
            libc::AF_PACKET => {
                // SAFETY: AF_PACKET: a sockaddr_ll.
                let ll = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_ll>() };
                found.ifindex = u32::try_from(ll.sll_ifindex).unwrap_or(0);
                if ll.sll_halen == 6 {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(&ll.sll_addr[..6]);
                    found.mac = Some(mac);
                }
            }
            _ => {}
        }
    }
    // SAFETY: freeing the list getifaddrs allocated, once.
    unsafe { libc::freeifaddrs(head) };
    Ok(seen.then_some(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_127_0_0_1() {
        let lo = lookup("lo").unwrap().expect("lo exists");
        assert!(lo.v4.contains(&Ipv4Addr::LOCALHOST), "{lo:?}");
        assert!(lo.ifindex > 0);
        assert_eq!(lookup("no-such-if0").unwrap(), None);
    }
}
