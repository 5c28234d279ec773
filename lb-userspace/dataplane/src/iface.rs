//! The addresses and MAC of an interface in the current network namespace, over rtnetlink
//! ([`super::netlink`]; /sys would show the namespace it was mounted in).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// Look `name` up; `None` if no such interface. The kernel also finds an interface by an
/// alternative name (as if_nametoindex(3), and so the attach, does).
pub fn lookup(name: &str) -> std::io::Result<Option<Iface>> {
    let Some(link) = super::netlink::link(name)? else {
        return Ok(None);
    };
    let addresses = super::netlink::addresses()?;
    let (v4, v6) = super::netlink::addresses_of(&addresses, link.index, &link.name);
    Ok(Some(Iface {
        ifindex: link.index,
        mac: link.mac,
        v4,
        v6,
    }))
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
