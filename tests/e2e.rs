//! End-to-end: real TCP connections and UDP datagrams from lab clients through the sluice
//! daemon (the real `daemon::start` + `daemon::serve`, health checks included, running in
//! the lab's load-balancer namespace) to the lab's backends.
//!
//! Every test builds its own lab (prefix `sl-e2e-<pid>-<n>`), which is removed when it
//! drops, also on failure; tests run one at a time (a lock) so that failover timings are
//! not distorted by another test's load. Every loop is bounded in count and time.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use sluice_core::config::{CheckKind, Config, Forwarding};
use sluice_daemon::{daemon::Edit, health::Health};
use sluice_lab::lab::{self, Lab, LabSpec, Weights, daemon::Daemon};
use sluice_tests::{
    conn::{Held, TIMEOUT, connections},
    prefix, require_root, serial,
};

fn with_fast_checks(mut c: Config) -> Config {
    for v in &mut c.vips {
        if v.health.check != CheckKind::None {
            v.health.interval_ms = 300;
            v.health.timeout_ms = 200;
            v.health.rise = 2;
            v.health.fall = 2;
        }
    }
    c
}

#[test]
fn weights_1_2_3_over_1000_connections() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("e2e", "w")).backends(3)).expect("bring the lab up");
    let d = Daemon::start(
        &lab,
        lab.daemon_config(&Weights::Ascending)
            .expect("the lab's daemon config"),
    )
    .expect("start the daemon");
    let n = 1000;
    let counts = connections(
        lab.client(0),
        SocketAddr::new(lab.vip4().into(), lab::TCP_PORT),
        n,
    )
    .expect("connections through the VIP");
    println!("1000 connections over weights 1:2:3: {counts:?}");
    // Each connection has a fresh source port, so it lands on backend k with probability
    // k/6 (the table's shares are exact to 0.002%): a count is Binomial(1000, k/6). Allow
    // 4.5 standard deviations (a false failure about once in 150 000 runs per backend).
    for k in 1..=3usize {
        let p = k as f64 / 6.0;
        let mean = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        let got = *counts.get(&format!("backend-{k}")).unwrap_or(&0) as f64;
        assert!(
            (got - mean).abs() <= 4.5 * sd,
            "backend-{k}: {got} connections, expected {mean:.0} ± {:.0}",
            4.5 * sd
        );
    }
    drop(d);
    lab.down().expect("take the lab down");
}

#[test]
fn adding_a_backend_keeps_open_connections() {
    require_root();
    let _serial = serial();
    let mut lab =
        Lab::up(LabSpec::new(&prefix("e2e", "add")).backends(3)).expect("bring the lab up");
    let d = Daemon::start(
        &lab,
        lab.daemon_config(&Weights::Equal)
            .expect("the lab's daemon config"),
    )
    .expect("start the daemon");
    let vip = SocketAddr::new(lab.vip4().into(), lab::TCP_PORT);
    let mut held: Vec<Held> = (0..40)
        .map(|_| Held::open(lab.client(0), vip))
        .collect::<anyhow::Result<_>>()
        .expect("open the connections");
    for (i, c) in held.iter_mut().enumerate() {
        c.echo(&format!("before{i}"))
            .expect("echo on a held connection");
    }
    let added = lab.add_backend().expect("add a backend").name();
    let what = d
        .edit(Edit::Replace(Box::new(
            lab.daemon_config(&Weights::Equal)
                .expect("the lab's daemon config"),
        )))
        .expect("edit the daemon's config");
    println!("edit: {what}");
    // Every open connection still talks to the backend it started with.
    for (i, c) in held.iter_mut().enumerate() {
        c.echo(&format!("after{i}"))
            .unwrap_or_else(|e| panic!("held connection {i} after adding {added}: {e:#}"));
    }
    // New connections use the new backend too (1/4 of 300 expected; ≥ 30 is 5 sd below).
    let counts = connections(lab.client(0), vip, 300).expect("connections through the VIP");
    println!("after adding {added}: {counts:?}");
    assert!(
        counts.get(&added).copied().unwrap_or(0) >= 30,
        "{added} got too few: {counts:?}"
    );
    drop(held);
    drop(d);
    lab.down().expect("take the lab down");
}

#[test]
fn a_killed_backend_fails_over_and_comes_back() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("e2e", "kill")).backends(3)).expect("bring the lab up");
    let config = with_fast_checks(
        lab.daemon_config(&Weights::Equal)
            .expect("the lab's daemon config"),
    );
    let h = config
        .vips
        .iter()
        .find(|v| v.name == "lab-tcp4")
        .expect("lab-tcp4")
        .health
        .clone();
    let d = Daemon::start(&lab, config).expect("start the daemon");
    let vip = SocketAddr::new(lab.vip4().into(), lab::TCP_PORT);
    let victim = lab.backend(1).addr4().into();
    d.wait_health("lab-tcp4", victim, Health::Up, Duration::from_secs(5))
        .expect("wait for the health state");

    lab.kill_backend_server(1)
        .expect("kill the backend's server");
    let took = d
        .wait_health("lab-tcp4", victim, Health::Down, Duration::from_secs(10))
        .expect("wait for the health state");
    // The bound: fall × interval, plus one interval (the probe phase), plus a probe's
    // timeout; 150 ms for scheduling on a loaded 2-core machine.
    let bound = Duration::from_millis(u64::from((h.fall + 1) * h.interval_ms + h.timeout_ms + 150));
    println!(
        "backend-2 killed: down after {took:?} (bound {bound:?}); reason {:?}",
        d.health("lab-tcp4", victim)
    );
    assert!(took <= bound, "failover took {took:?}, more than {bound:?}");
    let counts = connections(lab.client(0), vip, 150).expect("connections through the VIP");
    assert!(
        !counts.contains_key("backend-2"),
        "a down backend got connections: {counts:?}"
    );
    assert!(counts.values().sum::<usize>() == 150);

    lab.start_backend_server(1)
        .expect("start the backend's server");
    let back = d
        .wait_health("lab-tcp4", victim, Health::Up, Duration::from_secs(10))
        .expect("wait for the health state");
    println!("backend-2 restarted: up after {back:?}");
    let counts = connections(lab.client(0), vip, 150).expect("connections through the VIP");
    assert!(
        counts.get("backend-2").copied().unwrap_or(0) > 0,
        "backend-2 not used again: {counts:?}"
    );
    drop(d);
    lab.down().expect("take the lab down");
}

#[test]
fn a_backend_without_the_vip_is_reported_down() {
    require_root();
    let _serial = serial();
    for mode in [Forwarding::Dsr, Forwarding::Ipip] {
        let lab = Lab::up(
            LabSpec::new(&prefix("e2e", &format!("bad{mode}")))
                .backends(2)
                .mode(mode),
        )
        .expect("bring the lab up");
        // Backend 1 answers on its own address but has no VIP on its loopback.
        lab.break_backend(0).expect("break the backend");
        let d = Daemon::start(
            &lab,
            with_fast_checks(
                lab.daemon_config(&Weights::Equal)
                    .expect("the lab's daemon config"),
            ),
        )
        .expect("start the daemon");
        let broken: IpAddr = lab.backend(0).addr4().into();
        d.wait_health("lab-tcp4", broken, Health::Down, Duration::from_secs(5))
            .expect("wait for the health state");
        let (_, why) = d.health("lab-tcp4", broken).expect("status");
        println!("{mode}: misconfigured backend down: {why}");
        assert!(why.contains("no answer from the VIP"), "{why}");
        assert!(
            d.health("lab-tcp4", lab.backend(1).addr4().into())
                .is_some_and(|(h, _)| h == Health::Up)
        );
        // Nothing is black-holed: every connection reaches the healthy backend.
        let counts = connections(
            lab.client(0),
            SocketAddr::new(lab.vip4().into(), lab::TCP_PORT),
            40,
        )
        .expect("connections through the VIP");
        assert!(counts.get("backend-2") == Some(&40), "{counts:?}");
        drop(d);
        lab.down().expect("take the lab down");
    }
}

#[test]
fn both_modes_both_families_tcp_and_udp() {
    require_root();
    let _serial = serial();
    for mode in [Forwarding::Dsr, Forwarding::Ipip] {
        let lab = Lab::up(
            LabSpec::new(&prefix("e2e", &format!("m{mode}")))
                .backends(3)
                .mode(mode),
        )
        .expect("bring the lab up");
        let d = Daemon::start(
            &lab,
            lab.daemon_config(&Weights::Equal)
                .expect("the lab's daemon config"),
        )
        .expect("start the daemon");
        for vip in lab.vips() {
            let counts = connections(lab.client(0), SocketAddr::new(vip, lab::TCP_PORT), 90)
                .unwrap_or_else(|e| panic!("{mode} tcp {vip}: {e:#}"));
            println!("{mode} {vip} tcp: {counts:?}");
            assert!(
                counts.len() == 3,
                "{mode} {vip}: not every backend used: {counts:?}"
            );
            // UDP: every datagram of one flow (one socket) goes to one backend; flows spread.
            let mut owners = BTreeMap::new();
            for f in 0..8 {
                let local: SocketAddr = if vip.is_ipv4() {
                    "0.0.0.0:0".parse().expect("an address")
                } else {
                    "[::]:0".parse().expect("an address")
                };
                let sock = lab
                    .client(0)
                    .run(|| UdpSocket::bind(local))
                    .expect("run in the namespace")
                    .expect("bind a UDP socket");
                sock.set_read_timeout(Some(TIMEOUT))
                    .expect("set the read timeout");
                sock.connect(SocketAddr::new(vip, lab::UDP_PORT))
                    .expect("connect the socket");
                let mut names = std::collections::BTreeSet::new();
                for i in 0..10 {
                    sock.send(format!("f{f}d{i}").as_bytes())
                        .expect("send a datagram");
                    let mut buf = [0u8; 128];
                    let n = sock.recv(&mut buf).unwrap_or_else(|e| {
                        panic!("{mode} udp {vip} flow {f} datagram {i}: {e:#}")
                    });
                    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let (name, echo) = reply.split_once(':').expect("reply format");
                    assert!(echo == format!("f{f}d{i}"), "{reply}");
                    names.insert(name.to_owned());
                }
                assert!(
                    names.len() == 1,
                    "{mode} {vip}: one UDP flow reached {names:?}"
                );
                *owners
                    .entry(names.into_iter().next().unwrap_or_default())
                    .or_insert(0) += 1;
            }
            println!("{mode} {vip} udp flows per backend: {owners:?}");
            assert!(
                owners.len() >= 2,
                "8 UDP flows all on one backend: {owners:?}"
            );
        }
        drop(d);
        lab.down().expect("take the lab down");
    }
}

#[test]
fn api_plans_applies_and_rejects_edits() {
    use sluice_daemon::api::{Request, Response, client};
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("e2e", "api")).backends(3)).expect("bring the lab up");
    let config = lab
        .daemon_config(&Weights::Equal)
        .expect("the lab's daemon config");
    let socket = config.daemon.api_socket.clone();
    let d = Daemon::start(&lab, config).expect("start the daemon");
    let get = || -> anyhow::Result<(String, u64)> {
        match client::request(&socket, &Request::Config)? {
            Response::Config { toml, version } => Ok((toml, version)),
            r => anyhow::bail!("{r:?}"),
        }
    };
    let (toml, v0) = get().expect("get the running config");
    // Remove backend-3 from lab-tcp4: a third of the slots move.
    let mut c = sluice_core::config::parse(&toml, "t")
        .expect("parse the config")
        .config;
    let vip = c
        .vips
        .iter_mut()
        .find(|v| v.name == "lab-tcp4")
        .expect("vip");
    vip.backends
        .retain(|b| b.address != IpAddr::from(lab.backend(2).addr4()));
    let text = c.to_toml().expect("the config as TOML");
    let Response::Plan {
        plan,
        applied,
        version,
    } = client::request(
        &socket,
        &Request::Apply {
            config: text.clone(),
            dry_run: true,
            base_version: Some(v0),
            force: false,
        },
    )
    .expect("an API request")
    else {
        panic!("no plan")
    };
    let p = plan
        .vips
        .iter()
        .find(|p| p.name == "lab-tcp4")
        .expect("plan");
    println!("plan: {p:?}");
    assert!(!applied && version == v0, "a dry run changed the version");
    assert!(
        (p.slots_moved - 1.0 / 3.0).abs() < 0.02,
        "slots moved {}",
        p.slots_moved
    );
    assert!(p.removed == vec![IpAddr::from(lab.backend(2).addr4())]);
    // An invalid edit is rejected with the field, and nothing changes.
    let bad = text.replace("weight = 1", "weight = 70000");
    let err = client::request(
        &socket,
        &Request::Apply {
            config: bad,
            dry_run: false,
            base_version: Some(v0),
            force: false,
        },
    )
    .expect_err("weight 70000 must be rejected");
    assert!(
        err.to_string().contains("weight: 70000 is out of range"),
        "{err}"
    );
    assert!(
        get().expect("get the running config").1 == v0,
        "a rejected edit changed the version"
    );
    // Apply for real; then the same base version is stale.
    let Response::Plan {
        applied, version, ..
    } = client::request(
        &socket,
        &Request::Apply {
            config: text.clone(),
            dry_run: false,
            base_version: Some(v0),
            force: false,
        },
    )
    .expect("an API request")
    else {
        panic!("no plan")
    };
    assert!(applied && version == v0 + 1);
    let stale = client::request(
        &socket,
        &Request::Apply {
            config: text,
            dry_run: false,
            base_version: Some(v0),
            force: false,
        },
    );
    assert!(stale.is_err_and(|e| e.to_string().contains("changed since version")));
    let counts = connections(
        lab.client(0),
        SocketAddr::new(lab.vip4().into(), lab::TCP_PORT),
        60,
    )
    .expect("connections through the VIP");
    assert!(
        !counts.contains_key("backend-3"),
        "removed backend still used: {counts:?}"
    );
    drop(d);
    lab.down().expect("take the lab down");
}
