//! `sluice doctor [--config PATH]`, run on the load balancer (in its network namespace):
//! from the config file, this host, and the running daemon when it answers. See the
//! README's findings table.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use sluice_core::config::{Config, Forwarding, XdpMode};
use sluice_dataplane::{
    host,
    netlink::{self, Link, XdpSlot},
    nexthop::{self, Resolution, Unresolved},
};

use super::{Finding, Report};
use crate::{
    api::{Request, Response, client},
    preflight,
    state::Status,
};

/// The API socket as doctor found it.
#[derive(Clone, Debug, Default)]
pub struct SocketFacts {
    /// Mode bits and group of the socket file, if it exists.
    pub meta: Option<(u32, u32)>,
    /// `daemon.api_group`'s gid, if it exists.
    pub group_gid: Option<u32>,
}

/// What the judgement needs.
#[derive(Clone, Debug)]
pub struct Facts {
    /// The config file, for the fix commands.
    pub path: PathBuf,
    pub config: Config,
    pub preflight: Vec<preflight::Finding>,
    pub links: Vec<Link>,
    /// Attached XDP programs' names, by id.
    pub programs: BTreeMap<u32, String>,
    /// Whether /sys/fs/bpf is a bpffs.
    pub bpffs: bool,
    /// `/proc/sys` paths and values (forwarding).
    pub sysctls: BTreeMap<String, u32>,
    /// The next hop of every backend reached through a route.
    pub hops: BTreeMap<IpAddr, Resolution>,
    pub socket: SocketFacts,
    /// The daemon's status, or why it did not answer.
    pub daemon: Result<Status, String>,
    pub clock_synchronised: Option<bool>,
    pub btf: bool,
}

/// Whether a backend is reached through a route (the daemon resolves its next hop), as
/// `sluice_dataplane::needs_hop` decides from the desired state.
fn routed(mode: Forwarding, mac: Option<[u8; 6]>) -> bool {
    mode == Forwarding::Ipip || mac.is_none()
}

fn forwarding_paths(iface: &str) -> [String; 2] {
    [
        format!("net/ipv4/conf/{iface}/forwarding"),
        format!("net/ipv6/conf/{iface}/forwarding"),
    ]
}

impl Facts {
    /// Read them: `config` (read from `path`), this host, and the daemon at `socket`.
    pub fn read(path: &Path, config: Config, socket: &Path) -> std::io::Result<Self> {
        let d = &config.daemon;
        let links = netlink::links()?;
        let programs = super::xdp_programs(&links);
        let sysctls = forwarding_paths(&d.interface)
            .into_iter()
            .filter_map(|p| Some((p.clone(), host::sysctl_u32(&p).ok()?)))
            .collect();
        let mut routed_backends: Vec<IpAddr> = config
            .vips
            .iter()
            .flat_map(|v| {
                v.backends
                    .iter()
                    .filter(|b| routed(v.forwarding, b.mac))
                    .map(|b| b.address)
            })
            .collect();
        routed_backends.sort();
        routed_backends.dedup();
        let hops = nexthop::resolve(&routed_backends)?;
        let socket_facts = SocketFacts {
            meta: std::fs::metadata(socket).ok().map(|m| {
                use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
                (m.permissions().mode() & 0o7777, m.gid())
            }),
            group_gid: d
                .api_group
                .as_deref()
                .and_then(|g| crate::api::server::group_gid(g).ok().map(|(gid, _)| gid)),
        };
        let daemon = match client::request(socket, &Request::Status { flows: false }) {
            Ok(Response::Status { status }) => Ok(status),
            Ok(Response::Error { message }) => Err(message),
            Ok(_) => Err("unexpected answer to a status request".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        Ok(Self {
            path: path.to_owned(),
            preflight: preflight::offline(d),
            links,
            programs,
            bpffs: host::is_bpffs(Path::new("/sys/fs/bpf")),
            sysctls,
            hops,
            socket: socket_facts,
            daemon,
            clock_synchronised: host::clock_synchronised(),
            btf: host::kernel_btf(),
            config,
        })
    }

    fn link(&self, name: &str) -> Option<&Link> {
        super::link_named(&self.links, name)
    }
}

/// Check the balancer's `facts`.
pub fn judge(f: &Facts) -> Report {
    let mut out: Vec<Finding> = f
        .preflight
        .iter()
        .map(|p| shared(p, &f.config.daemon))
        .collect();
    out.push(xdp(f));
    out.push(bpffs(f));
    out.extend(forwarding(f));
    out.extend(hops(f));
    out.extend(headroom(f));
    out.extend(socket(f));
    out.extend(daemon(f));
    out.push(match f.clock_synchronised {
        Some(true) => Finding::ok("clock", "synchronised"),
        Some(false) => Finding::warn(
            "clock",
            "the system clock is not synchronised: the times in `backend list`, the status \
             file and a fleet's reports drift from other hosts'",
            Some("timedatectl set-ntp true".to_owned()),
        ),
        None => Finding::warn("clock", "adjtimex failed: synchronisation unknown", None),
    });
    out.push(if f.btf {
        Finding::ok("btf", "/sys/kernel/btf/vmlinux present")
    } else {
        Finding::warn(
            "btf",
            "no kernel BTF (/sys/kernel/btf/vmlinux): sluice works without it, but \
             bpftool and tracing tools cannot show its programs' types",
            Some("a kernel built with CONFIG_DEBUG_INFO_BTF=y".to_owned()),
        )
    });
    Report { findings: out }
}

/// A finding of `preflight::offline` (what `sluice config check` reports of this host),
/// with its fix.
fn shared(p: &preflight::Finding, d: &sluice_core::config::DaemonConfig) -> Finding {
    let fix = match p.field {
        "daemon.api_group" => format!(
            "groupadd {} (or remove daemon.api_group)",
            d.api_group.as_deref().unwrap_or("GROUP")
        ),
        "daemon.api_socket" | "daemon.state_dir" => {
            "make the directory writable by root, or name another in the config".to_owned()
        }
        _ => "create the interface, or name one of `ip -br link` in the config".to_owned(),
    };
    let check = p.field.strip_prefix("daemon.").unwrap_or(p.field);
    let check = check.replace(['_', '.'], "-");
    // On the balancer a missing interface blocks everything (config check only warns: it
    // may run elsewhere).
    if p.error || p.field == "daemon.interface" {
        Finding::fail(&check, p.message.clone(), fix)
    } else {
        Finding::warn(&check, p.message.clone(), Some(fix))
    }
}

fn slot_cmd(slot: XdpSlot) -> &'static str {
    match slot {
        XdpSlot::Driver => "xdp",
        XdpSlot::Generic => "xdpgeneric",
        XdpSlot::Offload => "xdpoffload",
    }
}

/// The XDP program on `daemon.interface`: sluice's balancer, in which mode and why.
fn xdp(f: &Facts) -> Finding {
    const CHECK: &str = "xdp";
    let d = &f.config.daemon;
    let iface = d.interface.as_str();
    let Some(link) = f.link(iface) else {
        return Finding::fail(
            CHECK,
            format!("no interface {iface} here: nothing to attach to"),
            "run doctor in the balancer's network namespace (`sluice --netns NAME doctor`), or fix daemon.interface",
        );
    };
    let name = |id: u32| f.programs.get(&id).cloned().unwrap_or(format!("id {id}"));
    let ours = lb_common::programs::BALANCER;
    let mine: Vec<XdpSlot> = link
        .xdp
        .iter()
        .filter(|(_, id)| f.programs.get(id).is_some_and(|n| n == ours))
        .map(|(s, _)| *s)
        .collect();
    if let Some((slot, id)) = link.xdp.iter().find(|(_, id)| !f.programs.contains_key(id)) {
        // Reading a program's name takes CAP_SYS_ADMIN (or CAP_BPF).
        return Finding::warn(
            CHECK,
            format!(
                "XDP program id {id} ({}) is attached to {iface}, but its name cannot be read here: is it sluice's?",
                slot_cmd(*slot)
            ),
            Some("run sluice doctor as root".to_owned()),
        );
    }
    if let Some((slot, id)) = link
        .xdp
        .iter()
        .find(|(_, id)| f.programs.get(id).is_some_and(|n| n != ours))
    {
        return Finding::fail(
            CHECK,
            format!(
                "another XDP program, {} ({}), is attached to {iface}{}",
                name(*id),
                slot_cmd(*slot),
                if mine.is_empty() {
                    ": sluice cannot attach"
                } else {
                    ", besides sluice's: it sees the packets first or instead"
                }
            ),
            format!("ip link set dev {iface} {} off", slot_cmd(*slot)),
        );
    }
    let start = format!(
        "systemctl start sluice (or sluice run --config {})",
        f.path.display()
    );
    match mine.first() {
        None => Finding::fail(
            CHECK,
            format!(
                "sluice's balancer is not attached to {iface}: VIP traffic reaches the \
                 kernel, which drops it"
            ),
            start,
        ),
        Some(XdpSlot::Driver) => Finding::ok(CHECK, format!("{ours} on {iface}, native mode")),
        Some(XdpSlot::Offload) => Finding::ok(CHECK, format!("{ours} on {iface}, offloaded")),
        Some(XdpSlot::Generic) => {
            let driver = link.kind.as_deref().unwrap_or("its driver");
            let (why, fix) = match d.xdp_mode {
                XdpMode::Generic => (
                    "as configured (daemon.xdp_mode = \"generic\")".to_owned(),
                    "set daemon.xdp_mode = \"auto\" and restart: native when the driver supports it"
                        .to_owned(),
                ),
                _ => (
                    format!(
                        "{driver} has no native XDP support (`ethtool -i {iface}`), so sluice \
                         fell back"
                    ),
                    format!(
                        "use a NIC whose driver supports native XDP, or set \
                         daemon.xdp_mode = \"generic\" in {} to make it explicit",
                        f.path.display()
                    ),
                ),
            };
            Finding::warn(
                CHECK,
                format!(
                    "{ours} on {iface} in generic (SKB) mode, {why}: every packet costs a \
                     socket buffer, several times slower than native"
                ),
                Some(fix),
            )
        }
    }
}

fn bpffs(f: &Facts) -> Finding {
    if f.bpffs {
        Finding::ok("bpffs", "/sys/fs/bpf is a bpffs")
    } else {
        Finding::warn(
            "bpffs",
            "/sys/fs/bpf is not a bpffs: `sluice run` mounts one, but pins made in another \
             mount namespace are not seen here",
            Some("mount -t bpf bpf /sys/fs/bpf".to_owned()),
        )
    }
}

/// IP forwarding on the interface, per family, where backends are reached through a
/// route: the program's `bpf_fib_lookup` fallback refuses to forward without it.
fn forwarding(f: &Facts) -> Vec<Finding> {
    let iface = f.config.daemon.interface.as_str();
    let [p4, p6] = forwarding_paths(iface);
    let mut out = Vec::new();
    for (v4, path, key) in [
        (true, p4, "net.ipv4.ip_forward"),
        (false, p6, "net.ipv6.conf.all.forwarding"),
    ] {
        let family = |v: &&sluice_core::config::VipConfig| v.address.is_ipv4() == v4;
        let ipip = f
            .config
            .vips
            .iter()
            .filter(family)
            .any(|v| v.forwarding == Forwarding::Ipip);
        let routed_dsr =
            f.config.vips.iter().filter(family).any(|v| {
                v.forwarding == Forwarding::Dsr && v.backends.iter().any(|b| b.mac.is_none())
            });
        if !ipip && !routed_dsr {
            continue;
        }
        let fam = if v4 { "IPv4" } else { "IPv6" };
        match f.sysctls.get(&path) {
            Some(1) => out.push(Finding::ok(
                "ip-forward",
                format!("{fam} forwarding on {iface}"),
            )),
            other => {
                let detail = format!(
                    "{fam} forwarding is off on {iface} ({}): the program's FIB lookup \
                     refuses to forward, so backends without a resolved next hop get nothing{}",
                    other.map_or("unknown".to_owned(), |v| format!("{path} = {v}")),
                    if ipip { " (IPIP needs it)" } else { "" }
                );
                let fix = format!("sysctl -w {key}=1");
                out.push(if ipip {
                    Finding::fail("ip-forward", detail, fix)
                } else {
                    Finding::warn("ip-forward", detail, Some(fix))
                });
            }
        }
    }
    out
}

/// Each routed backend's next hop.
fn hops(f: &Facts) -> Vec<Finding> {
    const CHECK: &str = "next-hop";
    let name = |i: u32| super::link_name(&f.links, i);
    f.hops
        .iter()
        .map(|(a, r)| match r {
            Ok(h) => Finding::ok(
                CHECK,
                format!(
                    "{a}: via {} ({}), mtu {}",
                    name(h.ifindex),
                    sluice_core::config::format_mac(&h.dmac),
                    h.mtu
                ),
            ),
            Err(Unresolved::NoNeighbour {
                next_hop,
                interface,
            }) => Finding::warn(
                CHECK,
                format!(
                    "{a}: next hop {next_hop} on {interface} has no MAC yet: the daemon \
                     asks for it; if it stays so, {next_hop} does not answer ARP/ND (down?)"
                ),
                Some(format!("ping -c 1 {next_hop}")),
            ),
            Err(u @ Unresolved::NoRoute(_)) => Finding::fail(
                CHECK,
                format!("{a}: {u}: its packets are dropped"),
                format!("ip route add {} via GATEWAY dev IF", super::host_prefix(*a)),
            ),
            Err(u) => Finding::fail(
                CHECK,
                format!("{a}: {u}: its packets are dropped"),
                format!(
                    "route {a} through an Ethernet interface (`ip route get {a}` shows where it goes now)"
                ),
            ),
        })
        .collect()
}

/// IPIP: encapsulation adds 20 (IPv4) or 40 (IPv6) bytes; the egress interfaces should
/// carry a full-size packet of the interface clients come in on plus that.
fn headroom(f: &Facts) -> Vec<Finding> {
    const CHECK: &str = "mtu-headroom";
    let d = &f.config.daemon;
    let Some(inbound) = f.link(&d.interface).and_then(|l| l.mtu) else {
        return Vec::new();
    };
    let mut egress: BTreeMap<(u32, u32), u32> = BTreeMap::new();
    for v in f
        .config
        .vips
        .iter()
        .filter(|v| v.forwarding == Forwarding::Ipip)
    {
        let outer = if v.address.is_ipv4() { 20 } else { 40 };
        for b in &v.backends {
            if let Some(Ok(h)) = f.hops.get(&b.address) {
                egress.insert((h.ifindex, outer), u32::from(h.mtu));
            }
        }
    }
    egress
        .into_iter()
        .map(|((ifindex, outer), mtu)| {
            let name = super::link_name(&f.links, ifindex);
            let need = inbound + outer;
            if mtu >= need {
                Finding::ok(
                    CHECK,
                    format!("{name}: MTU {mtu} carries {inbound} + {outer} bytes of IPIP"),
                )
            } else {
                Finding::warn(
                    CHECK,
                    format!(
                        "{name}: MTU {mtu} < {inbound} + {outer}: full-size client packets \
                         do not fit once encapsulated; sluice answers them with ICMP \
                         \"too big\" (clients that filter ICMP stall)"
                    ),
                    Some(format!("ip link set dev {name} mtu {need} (if the network toward the backends carries it)")),
                )
            }
        })
        .collect()
}

/// The API socket's mode and group (`daemon.api_group`).
fn socket(f: &Facts) -> Vec<Finding> {
    const CHECK: &str = "api-socket";
    let d = &f.config.daemon;
    let path = d.api_socket.display();
    let Some((mode, gid)) = f.socket.meta else {
        return Vec::new(); // the daemon check says it is not there
    };
    let mut out = Vec::new();
    if mode & 0o007 != 0 {
        out.push(Finding::warn(
            CHECK,
            format!("{path} has mode {mode:04o}: other users may connect (the daemon still refuses them by their credentials)"),
            Some(format!("chmod 0660 {path}")),
        ));
    }
    match (&d.api_group, f.socket.group_gid) {
        (Some(g), Some(want)) if gid != want => out.push(Finding::warn(
            CHECK,
            format!(
                "{path} belongs to group {gid}, not {g} ({want}): members of {g} cannot use the API"
            ),
            Some(format!("chgrp {g} {path} (or restart the daemon)")),
        )),
        _ => {}
    }
    if out.is_empty() {
        out.push(Finding::ok(
            CHECK,
            format!(
                "{path}: mode {mode:04o}{}",
                d.api_group
                    .as_deref()
                    .map_or(String::new(), |g| format!(", group {g}"))
            ),
        ));
    }
    out
}

/// The daemon answers; its backends that are down, each with the doctor to run there.
fn daemon(f: &Facts) -> Vec<Finding> {
    let status = match &f.daemon {
        Err(e) => {
            return vec![Finding::warn(
                "daemon",
                format!("no answer on {}: {e}", f.config.daemon.api_socket.display()),
                Some(format!(
                    "systemctl start sluice (or sluice run --config {})",
                    f.path.display()
                )),
            )];
        }
        Ok(s) => s,
    };
    let backends: usize = status.vips.iter().map(|v| v.backends.len()).sum();
    let mut out = vec![Finding::ok(
        "daemon",
        format!("answers: {} VIPs, {backends} backends", status.vips.len()),
    )];
    for v in &status.vips {
        for b in v.backends.iter().filter(|b| b.lifecycle == "down") {
            out.push(Finding::warn(
                "backend-health",
                format!(
                    "{} of {} ({}) is down: {}",
                    b.address, v.name, v.vip, b.reason
                ),
                Some(format!(
                    "on {}: {}",
                    b.address,
                    backend_hint(&v.vip, &v.forwarding)
                )),
            ));
        }
    }
    out
}

/// The command to run on a backend host of `vip` (as `backend list` shows it) whose
/// health is down.
pub fn backend_hint(vip: &str, forwarding: &str) -> String {
    format!("sluice doctor backend --vip {vip} --mode {forwarding}")
}

#[cfg(test)]
mod tests;
