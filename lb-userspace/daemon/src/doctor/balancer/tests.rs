use lb_common::NextHop;

use super::*;
use crate::doctor::Severity;

const CONFIG: &str = r#"
[daemon]
interface = "eth0"

[[vip]]
name = "web"
address = "10.0.0.10"
port = 80
protocol = "tcp"
forwarding = "ipip"
scheduler = "maglev"

[[vip.backend]]
address = "10.1.0.2"
"#;

fn facts() -> Facts {
    let config = sluice_core::config::parse(CONFIG, "t.toml").unwrap().config;
    let eth0 = Link {
        index: 2,
        name: "eth0".into(),
        ether: true,
        mtu: Some(1500),
        up: true,
        xdp: vec![(XdpSlot::Driver, 9)],
        ..Link::default()
    };
    let hop = NextHop {
        dmac: [2, 0, 0, 0, 0, 1],
        smac: [2, 0, 0, 0, 0, 2],
        ifindex: 2,
        mtu: 1500,
        _pad: [0; 2],
    };
    Facts {
        path: "t.toml".into(),
        config,
        preflight: Vec::new(),
        links: vec![eth0],
        programs: BTreeMap::from([(9, "sluice_lb".to_owned())]),
        bpffs: true,
        sysctls: BTreeMap::from([("net/ipv4/conf/eth0/forwarding".to_owned(), 1)]),
        hops: BTreeMap::from([("10.1.0.2".parse().unwrap(), Ok(hop))]),
        socket: SocketFacts::default(),
        daemon: Err("not running".into()),
        clock_synchronised: Some(true),
        btf: true,
    }
}

#[test]
fn balancer_findings() {
    let f = facts();
    let r = judge(&f);
    assert!(!r.failed(), "{}", r.table());
    // Full-size packets need 20 more bytes than eth0's MTU once encapsulated.
    assert!(
        r.of("mtu-headroom").any(|x| x.status == Severity::Warn),
        "{}",
        r.table()
    );

    let mut off = facts();
    off.sysctls
        .insert("net/ipv4/conf/eth0/forwarding".into(), 0);
    let r = judge(&off);
    assert!(fails(&r, "ip-forward"), "{}", r.table());
    let fix = r.of("ip-forward").find_map(|x| x.fix.clone()).unwrap();
    assert_eq!(fix, "sysctl -w net.ipv4.ip_forward=1");

    let mut other = facts();
    other.programs.insert(9, "xdp_fw".into());
    let r = judge(&other);
    assert!(fails(&r, "xdp"), "{}", r.table());
    assert!(
        r.of("xdp")
            .any(|x| x.fix.as_deref() == Some("ip link set dev eth0 xdp off"))
    );

    let mut unnamed = facts();
    unnamed.programs.clear();
    let r = judge(&unnamed);
    assert!(!fails(&r, "xdp"), "{}", r.table());
    assert!(r.of("xdp").any(|x| x.status == Severity::Warn));

    let mut generic = facts();
    generic.links[0].xdp = vec![(XdpSlot::Generic, 9)];
    let r = judge(&generic);
    assert!(
        r.of("xdp")
            .any(|x| x.status == Severity::Warn && x.detail.contains("fell back"))
    );

    let mut unrouted = facts();
    unrouted.hops.insert(
        "10.1.0.2".parse().unwrap(),
        Err(Unresolved::NoRoute("Network is unreachable".into())),
    );
    assert!(fails(&judge(&unrouted), "next-hop"));
}

/// Whether `report` has a failure of `check`.
fn fails(report: &Report, check: &str) -> bool {
    report.of(check).any(|f| f.status == Severity::Fail)
}
