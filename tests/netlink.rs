//! The daemon's rtnetlink queries (`dataplane::netlink`, `dataplane::iface`) against what
//! `ip` configures and reports, in a private network namespace of the test's thread (gone
//! with the thread): links (index, MAC, MTU, kind, veth peer), addresses (order, aliases,
//! link-local IPv6 left out) and neighbours (MAC and state as `ip neigh show` gives them;
//! FAILED and INCOMPLETE entries never used).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use serde_json::Value;
use sluice_core::config::{format_mac, parse_mac};
use sluice_dataplane::{
    iface, neigh,
    netlink::{self, NeighbourState as S},
};
use sluice_tests::{netns::Private, require_root};

const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

/// `ip ARGS…` in the calling thread's namespace; its stdout.
fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("ip").args(args).output()?;
    ensure!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json(args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut argv = vec!["-j"];
    argv.extend_from_slice(args);
    let out = ip(&argv)?;
    // `ip -j` prints nothing at all for an empty list on some versions.
    if out.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&out).with_context(|| format!("ip {argv:?}: {out}"))
}

fn setup() -> anyhow::Result<()> {
    ip(&[
        "link",
        "add",
        "nl0",
        "address",
        &format_mac(&MAC),
        "mtu",
        "1400",
        "type",
        "veth",
        "peer",
        "name",
        "nl1",
    ])?;
    ip(&["link", "set", "nl0", "up"])?;
    ip(&["link", "set", "nl1", "up"])?;
    ip(&["addr", "add", "10.77.0.1/24", "dev", "nl0"])?;
    ip(&["addr", "add", "10.77.0.2/24", "dev", "nl0"])?;
    ip(&[
        "addr",
        "add",
        "10.78.0.1/24",
        "dev",
        "nl0",
        "label",
        "nl0:1",
    ])?;
    ip(&["addr", "add", "fd77::1/64", "dev", "nl0", "nodad"])?;
    ip(&["addr", "add", "fd77::2/64", "dev", "nl0", "nodad"])?;
    Ok(())
}

#[test]
fn links_and_addresses_match_ip() {
    require_root();
    let _ns = Private::enter().expect("a private network namespace");
    setup().expect("set the links up");

    let nl0 = netlink::link("nl0")
        .expect("look the link up")
        .expect("nl0");
    let nl1 = netlink::link("nl1")
        .expect("look the link up")
        .expect("nl1");
    let shown = json(&["-d", "link", "show", "dev", "nl0"]).expect("ip -j");
    let shown = shown.first().expect("ip link show nl0");
    assert!(
        Some(u64::from(nl0.index)) == shown["ifindex"].as_u64(),
        "{nl0:?} {shown}"
    );
    assert!(nl0.name == "nl0" && nl0.ether, "{nl0:?}");
    assert!(nl0.mac == Some(MAC), "{nl0:?}");
    assert!(
        shown["address"].as_str().map(parse_mac) == Some(Ok(MAC)),
        "{shown}"
    );
    assert!(
        nl0.mtu == Some(1400) && shown["mtu"].as_u64() == Some(1400),
        "{nl0:?}"
    );
    assert!(nl0.kind.as_deref() == Some("veth"), "{nl0:?}");
    assert!(
        shown["linkinfo"]["info_kind"].as_str() == Some("veth"),
        "{shown}"
    );
    assert!(
        nl0.link == Some(nl1.index) && nl1.link == Some(nl0.index),
        "{nl0:?} {nl1:?}"
    );
    assert!(
        netlink::link("lo")
            .expect("look the link up")
            .is_some_and(|l| l.kind.is_none())
    );
    assert!(netlink::link("nl9").expect("look the link up").is_none());
    assert!(
        netlink::link("a-name-far-too-long-for-ifnamsiz")
            .expect("look the link up")
            .is_none()
    );
    let all = netlink::links().expect("list the links");
    assert!(
        all.contains(&nl0) && all.contains(&nl1) && all.len() == 3,
        "{all:?}"
    );

    // What the daemon uses: the alias's address is the alias's, link-local IPv6 left out,
    // each family in the kernel's order (the first is the probes' source).
    let i = iface::lookup("nl0")
        .expect("look the interface up")
        .expect("iface nl0");
    assert!(i.ifindex == nl0.index && i.mac == Some(MAC), "{i:?}");
    let v4: Vec<Ipv4Addr> = ["10.77.0.1", "10.77.0.2"]
        .map(|a| a.parse::<Ipv4Addr>().unwrap())
        .into();
    assert!(i.v4 == v4, "{i:?}");
    let mut v6: Vec<Ipv6Addr> = i.v6.clone();
    v6.sort();
    assert!(
        v6 == ["fd77::1", "fd77::2"].map(|a| a.parse::<Ipv6Addr>().unwrap()),
        "{i:?}"
    );
    assert!(
        iface::lookup("nl9")
            .expect("look the interface up")
            .is_none()
    );
    // Against `ip addr`: the same addresses, in the same order.
    let mut from_ip4 = Vec::new();
    let mut from_ip6 = Vec::new();
    for link in json(&["addr", "show", "dev", "nl0"]).expect("ip -j") {
        for a in link["addr_info"].as_array().expect("addr_info") {
            let local: IpAddr = a["local"]
                .as_str()
                .expect("local")
                .parse()
                .expect("an address");
            if a["label"].as_str().is_some_and(|l| l != "nl0") {
                continue;
            }
            match local {
                IpAddr::V4(x) => from_ip4.push(x),
                IpAddr::V6(x) if !x.is_unicast_link_local() => from_ip6.push(x),
                IpAddr::V6(_) => {}
            }
        }
    }
    assert!(
        i.v4 == from_ip4 && i.v6 == from_ip6,
        "{i:?} vs {from_ip4:?} {from_ip6:?}"
    );
    let addrs = netlink::addresses().expect("list the addresses");
    assert!(
        addrs.iter().any(|a| a.index == nl0.index
            && a.address == IpAddr::from([10, 78, 0, 1])
            && a.prefix_len == 24
            && a.label.as_deref() == Some("nl0:1")),
        "{addrs:?}"
    );
}

#[test]
fn neighbours_match_ip_neigh_show() {
    require_root();
    let _ns = Private::enter().expect("a private network namespace");
    setup().expect("set the links up");
    let perm4: IpAddr = "10.77.0.9".parse().expect("an address");
    let perm6: IpAddr = "fd77::9".parse().expect("an address");
    let stale: IpAddr = "10.77.0.10".parse().expect("an address");
    let failed: IpAddr = "10.77.0.11".parse().expect("an address");
    let unresolved: IpAddr = "10.77.0.12".parse().expect("an address");
    let (m4, m6, m_stale, m_failed) = (
        [2, 0xaa, 0, 0, 0, 9],
        [2, 0xaa, 0, 0, 0, 0x69],
        [2, 0xaa, 0, 0, 0, 10],
        [2, 0xaa, 0, 0, 0, 11],
    );
    for (a, m, nud) in [
        (perm4, m4, "permanent"),
        (perm6, m6, "permanent"),
        (stale, m_stale, "stale"),
        (failed, m_failed, "stale"),
    ] {
        ip(&[
            "neigh",
            "replace",
            &a.to_string(),
            "lladdr",
            &format_mac(&m),
            "dev",
            "nl0",
            "nud",
            nud,
        ])
        .expect("run ip");
    }
    // An entry that had a MAC and failed: the kernel keeps the old address, but it is not
    // the neighbour's any more.
    ip(&[
        "neigh",
        "change",
        &failed.to_string(),
        "dev",
        "nl0",
        "nud",
        "failed",
    ])
    .expect("run ip");
    // An address nobody answers for (nl1 has none): priming leaves it INCOMPLETE, then
    // FAILED.
    neigh::prime(&[unresolved]);

    let all = netlink::neighbours().expect("list the neighbours");
    let state = |a: IpAddr| all.iter().find(|n| n.address == a).map(|n| n.state);
    assert!(state(perm4) == Some(S::Permanent), "{all:?}");
    assert!(state(failed) == Some(S::Failed), "{all:?}");
    assert!(
        matches!(state(unresolved), Some(S::Incomplete | S::Failed)),
        "{all:?}"
    );

    let macs = netlink::neighbour_macs().expect("the neighbours' MACs");
    assert!(macs.contains(&(m4, perm4)), "{macs:?}");
    assert!(macs.contains(&(m6, perm6)), "{macs:?}");
    assert!(macs.contains(&(m_stale, stale)), "{macs:?}");
    assert!(
        !macs.iter().any(|(_, a)| *a == failed || *a == unresolved),
        "{macs:?}"
    );
    assert!(!macs.iter().any(|(m, _)| *m == m_failed), "{macs:?}");

    // Exactly what the old parse of `ip -4/-6 neigh show` gave: every line with an lladdr.
    let mut from_ip = Vec::new();
    for family in ["-4", "-6"] {
        for line in ip(&[family, "neigh", "show"]).expect("run ip").lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let (Some(a), Some(i)) = (
                f.first().and_then(|a| a.parse::<IpAddr>().ok()),
                f.iter().position(|w| *w == "lladdr"),
            ) && let Some(Ok(m)) = f.get(i + 1).map(|m| parse_mac(m))
            {
                from_ip.push((m, a));
            }
        }
    }
    assert!(macs == from_ip, "{macs:?} vs `ip neigh show` {from_ip:?}");

    // Once the unresolved entry has failed (a few seconds), it still has no MAC.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = netlink::neighbours().expect("list the neighbours");
        if now
            .iter()
            .any(|n| n.address == unresolved && n.state == S::Failed)
        {
            let macs = netlink::neighbour_macs().expect("the neighbours' MACs");
            assert!(!macs.iter().any(|(_, a)| *a == unresolved), "{macs:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unresolved} never failed: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `dataplane::route`: host routes added, listed and deleted as `ip route` sees them, in
/// a table past 255 (attribute only) and one below, IPv4 and IPv6; another protocol's
/// route in the same table is neither listed nor deleted.
#[test]
fn announce_routes_match_ip_route() {
    use sluice_dataplane::route::{self, RouteTable};
    require_root();
    let _ns = Private::enter().expect("a private network namespace");
    setup().expect("set the links up");
    let lo = iface::lookup("lo").expect("lo").expect("lo").ifindex;
    let (v4, v6): (IpAddr, IpAddr) = (
        "10.97.0.100".parse().expect("an address"),
        "fd97::100".parse().expect("an address"),
    );
    for table in [100, 1000] {
        let t = RouteTable {
            table,
            protocol: 99,
        };
        let tbl = table.to_string();
        assert!(route::routes(t).expect("dump an empty table").is_empty());
        ip(&[
            "route",
            "add",
            "10.99.0.8/32",
            "dev",
            "lo",
            "table",
            &tbl,
            "proto",
            "98",
        ])
        .expect("a foreign route");
        for a in [v4, v6] {
            route::add(t, a, lo).expect("add");
            let e = route::add(t, a, lo).expect_err("added twice");
            assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
        }
        // Another protocol's route to an address is never replaced.
        let foreign: IpAddr = "10.99.0.8".parse().expect("an address");
        let e = route::add(t, foreign, lo).expect_err("a foreign route there");
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
        let got: Vec<IpAddr> = route::routes(t)
            .expect("dump")
            .iter()
            .map(|r| r.address)
            .collect();
        assert_eq!(got, [v4, v6], "table {table}");
        let shown = ip(&["route", "show", "table", &tbl, "proto", "99"]).expect("ip route");
        assert!(shown.contains("10.97.0.100 dev lo"), "{shown}");
        let shown6 = ip(&["-6", "route", "show", "table", &tbl, "proto", "99"]).expect("ip route");
        assert!(shown6.contains("fd97::100 dev lo"), "{shown6}");
        assert!(route::delete(t, v4).expect("delete"));
        assert!(!route::delete(t, v4).expect("delete again"), "gone already");
        // Not ours: another protocol's route is not deleted by our delete.
        assert!(!route::delete(t, foreign).expect("delete a foreign route"));
        assert!(route::delete(t, v6).expect("delete"));
        assert!(route::routes(t).expect("dump").is_empty());
        let left = ip(&["route", "show", "table", &tbl]).expect("ip route");
        assert!(left.contains("10.99.0.8 dev lo proto 98"), "{left}");
    }
}
