//! `sluice doctor backend --vip ADDR[:PORT][/tcp|/udp] [--mode dsr|ipip]`, run on a
//! backend host (in its network namespace): what keeps the VIP's traffic from being
//! answered there. See the README's findings table.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use sluice_core::config::Forwarding;
use sluice_dataplane::{
    host::{self, BoundSocket},
    netlink::{self, Address, Link, XdpSlot},
};

use super::{Finding, Report, VipTarget, conf_key, host_prefix};

/// What to check.
#[derive(Clone, Debug)]
pub struct BackendArgs {
    pub vip: VipTarget,
    pub mode: Forwarding,
    /// The MTU the balancer sends with (its egress interface's); the receiving interfaces
    /// need at least this.
    pub mtu: u32,
    /// The interface the VIP's traffic arrives on; default: every interface that is up,
    /// has Ethernet addresses and an address of the VIP's family.
    pub interface: Option<String>,
}

/// What the judgement needs of the host.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub links: Vec<Link>,
    pub addresses: Vec<Address>,
    /// `/proc/sys` paths (`net/ipv4/conf/all/arp_ignore`) and their values.
    pub sysctls: BTreeMap<String, u32>,
    pub sockets: Vec<BoundSocket>,
    /// The names of the attached XDP programs, by id.
    pub programs: BTreeMap<u32, String>,
}

const CONF: [&str; 3] = ["arp_ignore", "arp_announce", "rp_filter"];

impl Facts {
    /// Read them from this host (the calling thread's network namespace).
    pub fn read() -> std::io::Result<Self> {
        let links = netlink::links()?;
        let addresses = netlink::addresses()?;
        let mut sysctls = BTreeMap::new();
        let names = links.iter().map(|l| l.name.as_str()).chain(["all"]);
        for name in names {
            for setting in CONF {
                let (_, path) = conf_key(name, setting);
                if let Ok(v) = host::sysctl_u32(&path) {
                    sysctls.insert(path, v);
                }
            }
        }
        let programs = super::xdp_programs(&links);
        Ok(Self {
            links,
            addresses,
            sysctls,
            sockets: host::bound_sockets(),
            programs,
        })
    }

    fn link(&self, name: &str) -> Option<&Link> {
        super::link_named(&self.links, name)
    }

    /// The effective value of a per-interface IPv4 setting: the larger of `all`'s and the
    /// interface's (as the kernel takes it for `arp_ignore`, `arp_announce` and
    /// `rp_filter`).
    fn conf(&self, iface: &str, setting: &str) -> u32 {
        let get = |i: &str| self.sysctls.get(&conf_key(i, setting).1).copied();
        get("all").unwrap_or(0).max(get(iface).unwrap_or(0))
    }
}

/// Check `args` against `facts`.
pub fn judge(args: &BackendArgs, facts: &Facts) -> Report {
    let mut out = Vec::new();
    let vip = args.vip.address;
    let receiving = match receiving(args, facts) {
        Ok(r) => r,
        Err(f) => {
            out.push(f);
            Vec::new()
        }
    };
    out.push(vip_address(args, facts));
    if vip.is_ipv4() {
        out.extend(receiving.iter().flat_map(|l| arp(args, facts, l)));
    }
    if args.mode == Forwarding::Ipip {
        let (decap, via) = decap(args, facts, &receiving);
        out.push(decap);
        if vip.is_ipv4() {
            out.extend(via.iter().map(|iface| rp_filter(facts, iface)));
        }
    }
    out.extend(receiving.iter().map(|l| mtu(args, l)));
    out.push(listener(args, facts));
    Report { findings: out }
}

/// The interfaces the VIP's traffic arrives on.
fn receiving<'a>(args: &BackendArgs, facts: &'a Facts) -> Result<Vec<&'a Link>, Finding> {
    if let Some(name) = &args.interface {
        return facts.link(name).map(|l| vec![l]).ok_or_else(|| {
            Finding::fail(
                "interface",
                format!("no interface {name:?} in this network namespace"),
                "name the interface the balancer's traffic arrives on: --interface IF (`ip -br link`)",
            )
        });
    }
    let v4 = args.vip.address.is_ipv4();
    let found: Vec<&Link> = facts
        .links
        .iter()
        .filter(|l| l.up && l.ether && l.kind.as_deref() != Some("dummy"))
        .filter(|l| {
            facts.addresses.iter().any(|a| {
                a.index == l.index
                    && a.address != args.vip.address
                    && a.address.is_ipv4() == v4
                    && !matches!(a.address, IpAddr::V6(x) if x.is_unicast_link_local())
            })
        })
        .collect();
    if found.is_empty() {
        return Err(Finding::fail(
            "interface",
            format!(
                "no interface is up with an {} address: nothing can receive the VIP's traffic",
                if v4 { "IPv4" } else { "IPv6" }
            ),
            "bring the interface up and address it (`ip link set dev IF up; ip addr add ADDR/LEN dev IF`), or name it with --interface IF",
        ));
    }
    Ok(found)
}

/// The VIP is a local address, on a loopback or dummy interface (or `tunl0`/`ip6tnl0`
/// for the kernel's IPIP tunnel).
fn vip_address(args: &BackendArgs, facts: &Facts) -> Finding {
    const CHECK: &str = "vip-address";
    let vip = args.vip.address;
    let add = format!("ip addr add {} dev lo", host_prefix(vip));
    let on: Vec<&Link> = facts
        .addresses
        .iter()
        .filter(|a| a.address == vip)
        .filter_map(|a| facts.links.iter().find(|l| l.index == a.index))
        .collect();
    let quiet = |l: &&&Link| {
        l.name == "lo"
            || l.kind.as_deref() == Some("dummy")
            || (args.mode == Forwarding::Ipip && matches!(l.name.as_str(), "tunl0" | "ip6tnl0"))
    };
    if let Some(l) = on.iter().find(quiet) {
        return Finding::ok(CHECK, format!("{vip} is on {}", l.name));
    }
    match on.first() {
        None => Finding::fail(
            CHECK,
            format!(
                "{vip} is not an address of this host: the kernel drops the VIP's packets \
                 (the health check's \"no answer from the VIP\")"
            ),
            add,
        ),
        Some(l) => Finding::fail(
            CHECK,
            format!(
                "{vip} is on {}, not on a loopback or dummy interface: the backend answers \
                 ARP/ND for it and takes the VIP's traffic from the balancer",
                l.name
            ),
            format!("ip addr del {} dev {} && {add}", host_prefix(vip), l.name),
        ),
    }
}

/// `arp_ignore` and `arp_announce` on a receiving interface (IPv4).
fn arp(args: &BackendArgs, facts: &Facts, l: &Link) -> Vec<Finding> {
    let dsr = args.mode == Forwarding::Dsr;
    let iface = l.name.as_str();
    let set = |setting: &str, value: u32| {
        format!(
            "sysctl -w {}={value} {}={value}",
            conf_key("all", setting).0,
            conf_key(iface, setting).0
        )
    };
    let mut out = Vec::new();
    let ignore = facts.conf(iface, "arp_ignore");
    let vip = args.vip.address;
    if matches!(ignore, 1 | 2 | 8) {
        out.push(Finding::ok(
            "arp-ignore",
            format!("{iface}: arp_ignore={ignore}: no ARP answers for the VIP"),
        ));
    } else {
        let detail = format!(
            "{iface}: arp_ignore={ignore}: the host answers ARP for {vip} on {iface}, and \
             the clients' router may send the VIP's traffic here instead of to the balancer"
        );
        out.push(if dsr {
            Finding::fail("arp-ignore", detail, set("arp_ignore", 1))
        } else {
            Finding::warn("arp-ignore", detail, Some(set("arp_ignore", 1)))
        });
    }
    let announce = facts.conf(iface, "arp_announce");
    if announce == 2 {
        out.push(Finding::ok(
            "arp-announce",
            format!("{iface}: arp_announce=2: the VIP is never an ARP source"),
        ));
    } else {
        let detail = format!(
            "{iface}: arp_announce={announce}: ARP requests may carry {vip} as their \
             source, and neighbours then send the VIP's traffic to this host"
        );
        out.push(if dsr && announce == 0 {
            Finding::fail("arp-announce", detail, set("arp_announce", 2))
        } else {
            Finding::warn("arp-announce", detail, Some(set("arp_announce", 2)))
        });
    }
    out
}

/// Decapsulation for IPIP: sluice's decap XDP program on an interface, or the kernel's
/// tunnel device up. Also the interfaces the decapsulated packets count as arriving on
/// (for `rp_filter`).
fn decap(args: &BackendArgs, facts: &Facts, receiving: &[&Link]) -> (Finding, Vec<String>) {
    const CHECK: &str = "decap";
    let name = lb_common::programs::DECAP;
    let with_decap: Vec<(&Link, XdpSlot)> = facts
        .links
        .iter()
        .flat_map(|l| l.xdp.iter().map(move |&(slot, id)| (l, slot, id)))
        .filter(|(_, _, id)| facts.programs.get(id).is_some_and(|n| n == name))
        .map(|(l, slot, _)| (l, slot))
        .collect();
    if !with_decap.is_empty() {
        let on: Vec<String> = with_decap
            .iter()
            .map(|(l, slot)| format!("{} ({})", l.name, slot_name(*slot)))
            .collect();
        let missing: Vec<&str> = receiving
            .iter()
            .filter(|r| with_decap.iter().all(|(l, _)| l.index != r.index))
            .map(|r| r.name.as_str())
            .collect();
        let ifaces = with_decap.iter().map(|(l, _)| l.name.clone()).collect();
        if let Some(m) = missing.first() {
            return (
                Finding::warn(
                    CHECK,
                    format!(
                        "sluice's decap is on {} but not on {}: encapsulated packets \
                         arriving there are not decapsulated",
                        on.join(", "),
                        missing.join(", ")
                    ),
                    Some(format!("sluice decap attach --interface {m}")),
                ),
                ifaces,
            );
        }
        return (
            Finding::ok(CHECK, format!("sluice's decap on {}", on.join(", "))),
            ifaces,
        );
    }
    let tunnel = if args.vip.address.is_ipv4() {
        "tunl0"
    } else {
        "ip6tnl0"
    };
    if let Some(t) = facts.link(tunnel) {
        return if t.up {
            (
                Finding::ok(CHECK, format!("the kernel's {tunnel} is up")),
                vec![tunnel.to_owned()],
            )
        } else {
            (
                Finding::fail(
                    CHECK,
                    format!("the kernel's {tunnel} is down: IPIP packets are dropped"),
                    format!("ip link set dev {tunnel} up"),
                ),
                Vec::new(),
            )
        };
    }
    let unnamed: Vec<String> = receiving
        .iter()
        .flat_map(|l| l.xdp.iter().map(move |(_, id)| (l, *id)))
        .filter(|(_, id)| !facts.programs.contains_key(id))
        .map(|(l, id)| format!("id {id} on {}", l.name))
        .collect();
    if !unnamed.is_empty() {
        // Reading a program's name takes CAP_SYS_ADMIN (or CAP_BPF).
        return (
            Finding::warn(
                CHECK,
                format!(
                    "no {tunnel}, and the names of the XDP programs here ({}) cannot be read: is one of them sluice's decap?",
                    unnamed.join(", ")
                ),
                Some("run sluice doctor as root".to_owned()),
            ),
            Vec::new(),
        );
    }
    let iface = receiving.first().map_or("IF", |l| l.name.as_str());
    let mut detail = format!(
        "nothing decapsulates IPIP here (no sluice decap program, no {tunnel}): the \
         balancer's encapsulated packets are dropped"
    );
    if let Some(l) = receiving.iter().find(|l| !l.xdp.is_empty()) {
        let other: Vec<String> = l
            .xdp
            .iter()
            .map(|(_, id)| {
                facts
                    .programs
                    .get(id)
                    .cloned()
                    .unwrap_or(format!("id {id}"))
            })
            .collect();
        detail.push_str(&format!(
            "; {} already runs XDP program {} (detach it first: `ip link set dev {} xdp off`)",
            l.name,
            other.join(", "),
            l.name
        ));
    }
    (
        Finding::fail(
            CHECK,
            detail,
            format!("sluice decap attach --interface {iface}"),
        ),
        Vec::new(),
    )
}

fn slot_name(s: XdpSlot) -> &'static str {
    match s {
        XdpSlot::Driver => "native",
        XdpSlot::Generic => "generic",
        XdpSlot::Offload => "offload",
    }
}

/// `rp_filter` where decapsulated packets arrive (IPv4 IPIP): strict mode drops them when
/// the route back to the client leaves elsewhere (always, for a tunnel device).
fn rp_filter(facts: &Facts, iface: &str) -> Finding {
    const CHECK: &str = "rp-filter";
    let v = facts.conf(iface, "rp_filter");
    if v != 1 {
        return Finding::ok(
            CHECK,
            format!(
                "{iface}: rp_filter={v} ({})",
                if v == 0 { "off" } else { "loose" }
            ),
        );
    }
    let fix = format!(
        "sysctl -w {}=2 {}=2",
        conf_key("all", "rp_filter").0,
        conf_key(iface, "rp_filter").0
    );
    let tunnel = matches!(iface, "tunl0" | "ip6tnl0");
    let detail = format!(
        "{iface}: rp_filter=1 (strict): decapsulated packets from clients are dropped {}",
        if tunnel {
            "(the route back to a client never leaves through the tunnel)"
        } else {
            "unless the route back to each client leaves through this interface"
        }
    );
    if tunnel {
        Finding::fail(CHECK, detail, fix)
    } else {
        Finding::warn(CHECK, detail, Some(fix))
    }
}

/// The receiving interface's MTU is at least what the balancer sends.
fn mtu(args: &BackendArgs, l: &Link) -> Finding {
    const CHECK: &str = "mtu";
    let Some(m) = l.mtu else {
        return Finding::warn(CHECK, format!("{}: MTU unknown", l.name), None);
    };
    if m >= args.mtu {
        return Finding::ok(CHECK, format!("{}: MTU {m} (>= {})", l.name, args.mtu));
    }
    Finding::fail(
        CHECK,
        format!(
            "{}: MTU {m}, below the {} the balancer sends with: larger frames are dropped \
             on arrival (UDP, and TCP whenever the MSS is not negotiated down)",
            l.name, args.mtu
        ),
        format!("ip link set dev {} mtu {}", l.name, args.mtu),
    )
}

/// A socket listening (TCP) or bound (UDP) on the VIP's port, at the VIP or a wildcard.
fn listener(args: &BackendArgs, facts: &Facts) -> Finding {
    const CHECK: &str = "listener";
    let vip = args.vip.address;
    let proto = if args.vip.udp { "udp" } else { "tcp" };
    let Some(port) = args.vip.port else {
        return Finding::warn(
            CHECK,
            "no port given: whether a service listens is not checked",
            Some(format!("sluice doctor backend --vip {vip}:PORT/{proto}")),
        );
    };
    let want = SocketAddr::new(vip, port);
    let found = facts.sockets.iter().find(|s| {
        s.tcp != args.vip.udp
            && s.local.port() == port
            && (s.local.ip() == vip
                || s.local.ip().is_unspecified() && s.local.is_ipv4() == vip.is_ipv4()
                // `[::]` takes IPv4 too unless the socket is IPV6_V6ONLY.
                || s.local.ip() == IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
    });
    match found {
        Some(s) => Finding::ok(
            CHECK,
            format!(
                "{} {} on {}",
                proto,
                if args.vip.udp {
                    "socket bound"
                } else {
                    "listening"
                },
                s.local
            ),
        ),
        None => Finding::fail(
            CHECK,
            format!(
                "nothing {} {proto} port {port} at {vip} or a wildcard address: the \
                 backend resets or ignores the VIP's connections",
                if args.vip.udp {
                    "bound to"
                } else {
                    "listens on"
                }
            ),
            format!(
                "start the service so that it listens on {want} (or port {port} of every \
                 address), e.g. `systemctl start SERVICE`"
            ),
        ),
    }
}

#[cfg(test)]
mod tests;
