use std::net::Ipv4Addr;

use super::*;
use crate::doctor::Severity;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 100);

fn link(index: u32, name: &str, kind: Option<&str>) -> Link {
    Link {
        index,
        name: name.into(),
        mac: Some([2, 0, 0, 0, 0, index as u8]),
        ether: name != "lo" && name != "tunl0",
        mtu: Some(1500),
        kind: kind.map(str::to_owned),
        up: true,
        ..Link::default()
    }
}

fn addr(index: u32, a: Ipv4Addr) -> Address {
    Address {
        index,
        address: a.into(),
        prefix_len: 32,
        label: None,
    }
}

/// A backend as the lab builds one: VIP on lo, ARP settings, a listener, decap on eth0.
fn healthy() -> Facts {
    let mut eth0 = link(2, "eth0", Some("veth"));
    eth0.xdp = vec![(XdpSlot::Driver, 7)];
    let mut sysctls = BTreeMap::new();
    for (k, v) in [
        ("net/ipv4/conf/all/arp_ignore", 1),
        ("net/ipv4/conf/all/arp_announce", 2),
        ("net/ipv4/conf/all/rp_filter", 0),
        ("net/ipv4/conf/eth0/rp_filter", 0),
    ] {
        sysctls.insert(k.to_owned(), v);
    }
    Facts {
        links: vec![link(1, "lo", None), eth0],
        addresses: vec![
            addr(1, Ipv4Addr::LOCALHOST),
            addr(1, VIP),
            addr(2, Ipv4Addr::new(10, 97, 0, 11)),
        ],
        sysctls,
        sockets: vec![BoundSocket {
            local: SocketAddr::new(VIP.into(), 80),
            tcp: true,
        }],
        programs: BTreeMap::from([(7, "sluice_decap".to_owned())]),
    }
}

fn args(mode: Forwarding) -> BackendArgs {
    BackendArgs {
        vip: "10.97.0.100:80/tcp".parse().unwrap(),
        mode,
        mtu: 1500,
        interface: None,
    }
}

fn failing(r: &Report) -> Vec<&str> {
    r.findings
        .iter()
        .filter(|f| f.status == Severity::Fail)
        .map(|f| f.check.as_str())
        .collect()
}

#[test]
fn a_healthy_backend_passes_in_both_modes() {
    for mode in [Forwarding::Dsr, Forwarding::Ipip] {
        let r = judge(&args(mode), &healthy());
        assert!(!r.failed(), "{mode:?}: {}", r.table());
        assert!(
            r.findings.iter().all(|f| f.status == Severity::Ok),
            "{}",
            r.table()
        );
    }
    let r = judge(&args(Forwarding::Ipip), &healthy());
    assert_eq!(r.of("decap").count(), 1);
    assert_eq!(r.of("rp-filter").count(), 1);
}

#[test]
fn each_breakage_is_named_with_its_fix() {
    let dsr = args(Forwarding::Dsr);
    let fix = |r: &Report, check: &str| {
        r.of(check)
            .find(|f| f.status == Severity::Fail)
            .and_then(|f| f.fix.clone())
            .unwrap_or_else(|| panic!("no failing {check}: {}", r.table()))
    };

    let mut f = healthy();
    f.addresses.retain(|a| a.address != IpAddr::V4(VIP));
    let r = judge(&dsr, &f);
    assert_eq!(failing(&r), ["vip-address"]);
    assert_eq!(fix(&r, "vip-address"), "ip addr add 10.97.0.100/32 dev lo");

    let mut f = healthy();
    f.sysctls.insert("net/ipv4/conf/all/arp_ignore".into(), 0);
    let r = judge(&dsr, &f);
    assert_eq!(failing(&r), ["arp-ignore"]);
    assert_eq!(
        fix(&r, "arp-ignore"),
        "sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.eth0.arp_ignore=1"
    );
    // The larger of `all` and the interface's counts.
    let mut f = healthy();
    f.sysctls.insert("net/ipv4/conf/eth0/arp_ignore".into(), 3);
    assert_eq!(failing(&judge(&dsr, &f)), ["arp-ignore"]);

    let mut f = healthy();
    f.links[1].xdp.clear();
    let r = judge(&args(Forwarding::Ipip), &f);
    assert_eq!(failing(&r), ["decap"]);
    assert_eq!(fix(&r, "decap"), "sluice decap attach --interface eth0");
    assert!(!judge(&dsr, &f).failed(), "DSR needs no decap");

    let mut f = healthy();
    f.links[1].mtu = Some(1400);
    let r = judge(&dsr, &f);
    assert_eq!(failing(&r), ["mtu"]);
    assert_eq!(fix(&r, "mtu"), "ip link set dev eth0 mtu 1500");

    let mut f = healthy();
    f.sockets.clear();
    let r = judge(&dsr, &f);
    assert_eq!(failing(&r), ["listener"]);
    assert!(r.of("listener").any(|f| f.detail.contains("port 80")));
    // A wildcard listener serves the VIP too.
    f.sockets.push(BoundSocket {
        local: "0.0.0.0:80".parse().unwrap(),
        tcp: true,
    });
    assert!(!judge(&dsr, &f).failed());
}

#[test]
fn a_vip_on_the_wire_interface_or_a_downed_tunnel_fails() {
    let mut f = healthy();
    for a in &mut f.addresses {
        if a.address == IpAddr::V4(VIP) {
            a.index = 2;
        }
    }
    let r = judge(&args(Forwarding::Dsr), &f);
    assert_eq!(failing(&r), ["vip-address"]);

    // The kernel's tunnel instead of sluice's decap: up is fine, strict rp_filter is not.
    let mut f = healthy();
    f.links[1].xdp.clear();
    let mut tunl = link(3, "tunl0", Some("ipip"));
    tunl.up = false;
    f.links.push(tunl);
    let ipip = args(Forwarding::Ipip);
    assert_eq!(failing(&judge(&ipip, &f)), ["decap"]);
    f.links[2].up = true;
    f.sysctls.insert("net/ipv4/conf/tunl0/rp_filter".into(), 1);
    assert_eq!(failing(&judge(&ipip, &f)), ["rp-filter"]);
    f.sysctls.insert("net/ipv4/conf/tunl0/rp_filter".into(), 2);
    assert!(!judge(&ipip, &f).failed());
}

#[test]
fn unreadable_program_names_are_a_warning_not_a_verdict() {
    let mut f = healthy();
    f.programs.clear();
    let r = judge(&args(Forwarding::Ipip), &f);
    assert!(!r.failed(), "{}", r.table());
    assert!(
        r.of("decap")
            .any(|x| x.status == Severity::Warn && x.detail.contains("id 7"))
    );
}
