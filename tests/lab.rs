//! The namespace lab (`sluice_lab::lab`): it builds what it promises (nodes, addresses,
//! backend configuration, pins, servers), and removes everything it created: on `down`,
//! on drop, and, for the leftovers of a crashed run, by prefix.
//!
//! Every lab here has a prefix unique to this run (`sl-lt-<pid>-<test>`); labs of earlier
//! runs whose process is gone are removed first. Every socket operation has a timeout.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpStream,
    path::Path,
    time::Duration,
};

use anyhow::ensure;
use lb_common::programs;
use sluice_core::config::{self, Forwarding};
use sluice_dataplane::pinned;
use sluice_lab::{
    conn::{ask, udp},
    lab::{self, Lab, LabSpec, Node, Role, Servers, Weights},
};
use sluice_tests::require_root;

const TIMEOUT: Duration = Duration::from_secs(3);
const TEST_PREFIX: &str = "sl-lt-";

/// A prefix for this run and test.
fn prefix(test: &str) -> String {
    format!("{TEST_PREFIX}{}-{test}", std::process::id())
}

/// Remove the labs of earlier test runs whose process is gone (a crash or a kill).
fn reap_crashed_runs() {
    for p in Lab::list() {
        let Some(pid) = p
            .strip_prefix(TEST_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Lab::down_prefix(&p);
        }
    }
}

/// Every client reaches every backend's own addresses (both families) on TCP 80, and UDP 53
/// on its IPv4 address, and gets the backend's name.
fn check_reachable(lab: &Lab) -> anyhow::Result<()> {
    for c in lab.clients() {
        for b in lab.backends() {
            let want = format!("{}\n", b.name());
            for to in [b.sock4(lab::TCP_PORT), b.sock6(lab::TCP_PORT)] {
                let got = ask(c, to, b"hi")?;
                ensure!(got == want, "{} -> {to}: {got:?}, want {want:?}", c.name());
            }
            let got = udp(c, b.sock4(lab::UDP_PORT), b"q")?;
            ensure!(got == format!("{}:q", b.name()), "udp {got:?}");
        }
    }
    Ok(())
}

/// `ip -d link show DEV` in `ns` names the attached XDP program.
fn xdp_program(ns: &lab::netns::Netns, dev: &str) -> anyhow::Result<String> {
    let out = ns.exec(&["ip", "-d", "link", "show", "dev", dev])?;
    Ok(out
        .split_whitespace()
        .skip_while(|w| *w != "xdp")
        .skip_while(|w| *w != "name")
        .nth(1)
        .unwrap_or("")
        .to_owned())
}

fn assert_gone(prefix: &str) -> anyhow::Result<()> {
    let s = Lab::status(prefix);
    ensure!(
        s.namespaces.is_empty(),
        "namespaces left: {:?}",
        s.namespaces
    );
    ensure!(s.pins.is_empty(), "pins left: {:?}", s.pins);
    ensure!(s.config.is_none(), "config left");
    ensure!(
        !lab::netns::list()
            .iter()
            .any(|n| n.starts_with(&format!("{prefix}-"))),
        "a namespace of {prefix} is left"
    );
    ensure!(!Lab::list().contains(&prefix.to_owned()));
    Ok(())
}

#[test]
fn dsr_lab_builds_serves_grows_and_goes_down() {
    require_root();
    reap_crashed_runs();
    let p = prefix("dsr");
    let mut lab = Lab::up(LabSpec::new(&p).backends(3).clients(2)).expect("bring the lab up");
    assert!(
        matches!(Lab::up(LabSpec::new(&p)), Err(lab::LabError::LabExists(_))),
        "a second lab with the same prefix must be refused"
    );

    // The nodes, as documented.
    assert_eq!(lab.lb_ns(), format!("{p}-lb"));
    assert_eq!(lab.backend(2).ns(), format!("{p}-b3"));
    assert_eq!(lab.backend(2).name(), "backend-3");
    assert_eq!(lab.backend(0).addr4().to_string(), "10.97.0.11");
    assert_eq!(lab.backend(0).addr6().to_string(), "fd97::11");
    assert_eq!(lab.client(1).addr4().to_string(), "10.97.0.3");
    assert_eq!(lab.vip4().to_string(), "10.97.0.100");
    assert_eq!(lab.vip6().to_string(), "fd97::100");
    let mac = lab
        .backend(1)
        .exec(&["ip", "-br", "link", "show", "dev", "eth0"])
        .expect("run a command in the namespace");
    assert!(mac.contains("02:97:00:00:00:0c"), "{mac}");

    check_reachable(&lab).expect("every node reachable");

    // HTTP, on a backend's own address.
    let b = lab.backend(1);
    let http = ask(
        lab.client(0),
        b.sock4(80),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .expect("a TCP request");
    assert!(http.starts_with("HTTP/1.1 200 OK\r\n"), "{http}");
    assert!(http.ends_with("\r\n\r\nbackend-2\n"), "{http}");
    let health =
        ask(lab.client(0), b.sock6(80), b"GET /health HTTP/1.1\r\n\r\n").expect("a TCP request");
    assert!(health.ends_with("\r\n\r\nok\n"), "{health}");

    // The configuration of each role.
    let lo = lab
        .backend(0)
        .exec(&["ip", "addr", "show", "dev", "lo"])
        .expect("run a command in the namespace");
    assert!(
        lo.contains("10.97.0.100/32") && lo.contains("fd97::100/128"),
        "{lo}"
    );
    let sysctl = |n: &Node, key: &str| -> anyhow::Result<String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        Ok(n.run(|| std::fs::read_to_string(&path))??.trim().to_owned())
    };
    assert_eq!(
        sysctl(lab.backend(0), "net.ipv4.conf.all.arp_ignore").expect("read the sysctl"),
        "1"
    );
    assert_eq!(
        sysctl(lab.backend(0), "net.ipv4.conf.all.arp_announce").expect("read the sysctl"),
        "2"
    );
    assert_eq!(
        sysctl(lab.lb(), "net.ipv4.ip_forward").expect("read the sysctl"),
        "1"
    );
    assert_eq!(
        sysctl(lab.lb(), "net.ipv6.conf.all.forwarding").expect("read the sysctl"),
        "1"
    );
    let routes = lab
        .client(0)
        .exec(&["ip", "route"])
        .expect("run a command in the namespace");
    assert!(routes.contains("10.97.0.100 via 10.97.0.1"), "{routes}");
    let routes6 = lab
        .client(0)
        .exec(&["ip", "-6", "route"])
        .expect("run a command in the namespace");
    assert!(routes6.contains("fd97::100 via fd97::1"), "{routes6}");
    let offload = lab
        .client(0)
        .exec(&["ethtool", "-k", "eth0"])
        .expect("run a command in the namespace");
    assert!(offload.contains("tx-checksumming: off"), "{offload}");
    // Only the LB's switch port has a program in DSR mode.
    assert_eq!(
        xdp_program(lab.switch(), lab.lb().peer()).expect("look up the attached XDP program"),
        programs::PASS
    );
    assert_eq!(
        xdp_program(lab.backend(0).netns(), "eth0").expect("look up the attached XDP program"),
        ""
    );
    assert_eq!(
        lab.pins(),
        vec![pinned::pin_path(&lab::pin_name(
            programs::PASS,
            "p-lb",
            lab.switch().name()
        ))]
    );

    // A long-lived connection ends when its server is killed; a new server answers again.
    let b0 = lab.backend(0).sock4(80);
    let mut hold = lab
        .client(0)
        .run(|| TcpStream::connect_timeout(&b0, TIMEOUT))
        .expect("run in the namespace")
        .expect("connect to backend-1");
    hold.set_read_timeout(Some(TIMEOUT))
        .expect("set the read timeout");
    hold.write_all(b"HOLD\n").expect("write to the socket");
    let mut r = BufReader::new(hold.try_clone().expect("clone the socket"));
    let mut line = String::new();
    r.read_line(&mut line).expect("read a line");
    assert_eq!(line, "backend-1\n");
    for i in 0..3 {
        hold.write_all(format!("ping {i}\n").as_bytes())
            .expect("write to the socket");
        line.clear();
        r.read_line(&mut line).expect("read a line");
        assert_eq!(line, format!("backend-1:ping {i}\n"));
    }
    lab.kill_backend_server(0)
        .expect("kill the backend's server");
    line.clear();
    assert_eq!(
        r.read_line(&mut line).expect("read a line"),
        0,
        "held connection not closed: {line:?}"
    );
    assert!(
        ask(lab.client(0), b0, b"hi").is_err(),
        "backend-1 answers without a server"
    );
    lab.start_backend_server(0)
        .expect("start the backend's server");
    assert_eq!(
        ask(lab.client(0), b0, b"hi").expect("a TCP request"),
        "backend-1\n"
    );

    // break/repair: the VIPs leave lo and come back.
    lab.break_backend(1).expect("break the backend");
    let lo = lab
        .backend(1)
        .exec(&["ip", "addr", "show", "dev", "lo"])
        .expect("run a command in the namespace");
    assert!(
        !lo.contains("10.97.0.100") && !lo.contains("fd97::100"),
        "{lo}"
    );
    lab.repair_backend(1).expect("repair the backend");
    let lo = lab
        .backend(1)
        .exec(&["ip", "addr", "show", "dev", "lo"])
        .expect("run a command in the namespace");
    assert!(
        lo.contains("10.97.0.100/32") && lo.contains("fd97::100/128"),
        "{lo}"
    );

    // A fourth backend joins the bridge and answers.
    let b4 = lab.add_backend().expect("add a backend").clone();
    assert_eq!(b4.name(), "backend-4");
    assert_eq!(b4.addr4().to_string(), "10.97.0.14");
    check_reachable(&lab).expect("every node reachable");

    // The daemon config: 4 VIPs (tcp/udp × v4/v6), every backend, weights 1..4, valid.
    let config = lab
        .daemon_config(&Weights::Ascending)
        .expect("the lab's daemon config");
    assert_eq!(config.daemon.interface, "eth0");
    assert_eq!(config.vips.len(), 4);
    for v in &config.vips {
        assert_eq!(v.forwarding, Forwarding::Dsr);
        let w: Vec<u32> = v.backends.iter().map(|b| b.weight).collect();
        assert_eq!(w, [1, 2, 3, 4], "{}", v.name);
        assert!(
            v.backends
                .iter()
                .all(|b| b.address.is_ipv4() == v.address.is_ipv4())
        );
    }
    let path = lab
        .write_daemon_config(&Weights::Equal)
        .expect("write the daemon's config");
    let loaded = config::load(&path).expect("load the config");
    assert!(
        loaded
            .config
            .vips
            .iter()
            .all(|v| v.backends.iter().all(|b| b.weight == 1))
    );

    let removed = lab.down().expect("take the lab down");
    assert_eq!(removed.namespaces.len(), 8, "{removed:?}");
    assert_eq!(removed.pins.len(), 1, "{removed:?}");
    assert!(!path.exists());
    assert_gone(&p).expect("nothing left of the lab");
    // Idempotent.
    assert!(
        Lab::down_prefix(&p)
            .expect("remove the labs by prefix")
            .is_empty()
    );
}

/// Removes a lab by prefix on drop, for the test whose lab "crashes".
struct DownOnDrop(String);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = Lab::down_prefix(&self.0);
    }
}

#[test]
fn ipip_lab_pins_decap_and_a_crashed_lab_is_removed_by_prefix() {
    require_root();
    reap_crashed_runs();
    let p = prefix("ipip");
    let _guard = DownOnDrop(p.clone());
    let mut lab = Lab::up(
        LabSpec::new(&p)
            .backends(2)
            .mode(Forwarding::Ipip)
            .servers(Servers::InProcess),
    )
    .expect("bring the lab up");
    lab.add_backend().expect("add a backend");
    check_reachable(&lab).expect("every node reachable");

    // The decap program is pinned on every backend's eth0, under a name unique to its
    // namespace, and attached.
    for b in lab.backends() {
        let pin = pinned::pin_path(&lab::pin_name(programs::DECAP, "eth0", b.ns()));
        assert!(pin.exists(), "{} missing", pin.display());
        assert_eq!(
            xdp_program(b.netns(), "eth0").expect("look up the attached XDP program"),
            programs::DECAP,
            "{}",
            b.ns()
        );
    }
    assert_eq!(lab.pins().len(), 4); // 3 decap + the LB port's pass
    let rp = lab
        .backend(0)
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter"))
        .expect("run in the namespace")
        .expect("read rp_filter");
    assert_eq!(rp.trim(), "0");
    let config = lab
        .daemon_config(&Weights::Equal)
        .expect("the lab's daemon config");
    assert!(config.vips.iter().all(|v| v.forwarding == Forwarding::Ipip));

    // A process in the lab (a daemon, a server...) that the crash leaves behind.
    let mut straggler = lab
        .backend(1)
        .command("sleep")
        .expect("a command in the lab")
        .arg("600")
        .spawn()
        .expect("spawning a process in the lab");

    // "Crash": the Lab value is never dropped.
    std::mem::forget(lab);
    let left = Lab::status(&p);
    assert_eq!(left.namespaces.len(), 6, "{left:?}"); // sw, lb, c1, b1..b3
    assert_eq!(left.namespaces[0].role, Role::Switch);
    assert_eq!(left.pins.len(), 4);
    let b2 = left
        .namespaces
        .iter()
        .find(|n| n.role == Role::Backend(2))
        .expect("b2");
    assert!(
        b2.processes.iter().any(|(pid, _)| *pid == straggler.id()),
        "{b2:?}"
    );
    assert!(Lab::list().contains(&p));

    let removed = Lab::down_prefix(&p).expect("remove the labs by prefix");
    assert_eq!(removed.namespaces.len(), 6, "{removed:?}");
    assert_eq!(removed.pins.len(), 4, "{removed:?}");
    assert!(
        removed
            .processes
            .iter()
            .any(|(pid, _)| *pid == straggler.id())
    );
    // It was killed (SIGTERM); reap it.
    let status = straggler.wait().expect("wait for the process");
    assert!(!status.success());
    assert_gone(&p).expect("nothing left of the lab");
    assert!(
        Lab::down_prefix(&p)
            .expect("remove the labs by prefix")
            .is_empty()
    );
}

#[test]
fn a_failed_up_leaves_nothing_and_prefixes_do_not_overlap() {
    require_root();
    reap_crashed_runs();
    // Invalid specs are refused before anything is created.
    assert!(Lab::up(LabSpec::new("Bad Prefix")).is_err());
    assert!(Lab::up(LabSpec::new(&prefix("zero")).backends(0)).is_err());
    assert!(Lab::up(LabSpec::new(&prefix("many")).backends(lab::MAX_BACKENDS + 1)).is_err());

    // A lab whose prefix extends another's is not touched by removing the other.
    let outer = prefix("o");
    let inner = format!("{outer}-x");
    let a =
        Lab::up(LabSpec::new(&outer).backends(1).servers(Servers::None)).expect("bring the lab up");
    let b =
        Lab::up(LabSpec::new(&inner).backends(1).servers(Servers::None)).expect("bring the lab up");
    let removed = Lab::down_prefix(&outer).expect("remove the labs by prefix");
    assert_eq!(removed.namespaces.len(), 4, "{removed:?}");
    assert_eq!(Lab::status(&inner).namespaces.len(), 4);
    assert!(b.backend(0).exec(&["ip", "link", "show", "eth0"]).is_ok());
    drop(b);
    assert_gone(&inner).expect("nothing left of the lab");
    drop(a); // nothing left to remove
    assert_gone(&outer).expect("nothing left of the lab");
}
