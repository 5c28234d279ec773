//! Restarting and upgrading the daemon keeps forwarding and keeps every flow: long-lived
//! TCP connections through the lab's daemon (DSR and IPIP) keep exchanging data, on the
//! same backend, while no daemon runs, across a restart with the same config, across one
//! with a backend added, and across a refused start (an incompatible flow-table size);
//! `sluice detach` (its library half, `dataplane::detach`) then leaves no pin and no XDP
//! program on the interface.
//!
//! Every test builds its own lab (prefix `sl-rst-<pid>-<n>`), removed when it drops (the
//! lab's pin directory included), also on failure. Every loop is bounded in count and time.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use sluice_core::config::Forwarding;
use sluice_dataplane::{self as dataplane, LAYOUT_FILE, LINK_PIN};
use sluice_lab::lab::{self, Lab, LabSpec, Node, Weights, daemon::Daemon};
use sluice_tests::{
    conn::{Held, echo_all, xdp_prog},
    prefix, require_root, serial,
};

/// New connections: each must answer; answers per backend.
fn fresh(
    client: &Node,
    to: SocketAddr,
    n: usize,
) -> anyhow::Result<std::collections::BTreeMap<String, usize>> {
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..n {
        let mut c = Held::open(client, to).with_context(|| format!("new connection {i}"))?;
        c.echo(&format!("new{i}"))?;
        *counts.entry(c.backend.clone()).or_insert(0) += 1;
    }
    Ok(counts)
}

fn pins_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|e| {
            e.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn saved(path: &Path) -> anyhow::Result<dataplane::SavedLayout> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

fn restart_keeps_flows(mode: Forwarding, tag: &str) -> anyhow::Result<()> {
    require_root();
    let _serial = serial();
    let mut lab = Lab::up(LabSpec::new(&prefix("rst", tag)).backends(3).mode(mode))?;
    let pin_dir = lab::lab_pin_dir(lab.prefix());
    let layout = lab::lab_dir(lab.prefix()).join(LAYOUT_FILE);
    let vip = SocketAddr::new(lab.vip4().into(), lab::TCP_PORT);
    let config = lab.daemon_config(&Weights::Equal)?;

    let d = Daemon::start_keeping(&lab, config.clone())?;
    let first = xdp_prog(&lab)?.context("no XDP program after the first start")?;
    let mut held: Vec<Held> = (0..30)
        .map(|_| Held::open(lab.client(0), vip))
        .collect::<anyhow::Result<_>>()?;
    let backends: Vec<String> = held.iter().map(|h| h.backend.clone()).collect();
    echo_all(&mut held, "first")?;
    d.stop()?;

    // No daemon: the program stays, pinned, and forwards old and new connections.
    let pins = pins_in(&pin_dir);
    println!("{tag}: pinned after stop: {pins:?}");
    ensure!(pins.iter().any(|p| p == LINK_PIN), "no link pin: {pins:?}");
    for m in ["BACKENDS", "FLOWS", "TABLES", "VIPS"] {
        ensure!(pins.iter().any(|p| p == m), "{m} not pinned: {pins:?}");
    }
    ensure!(layout.exists(), "no saved layout at {}", layout.display());
    ensure!(
        xdp_prog(&lab)? == Some(first),
        "the program changed without a daemon"
    );
    echo_all(&mut held, "no-daemon")?;
    let counts = fresh(lab.client(0), vip, 20)?;
    println!("{tag}: 20 new connections with no daemon: {counts:?}");

    // Same config (backends listed in the reverse order, so that a daemon allocating
    // slots afresh would give them other slot ids): the new program replaces the old one
    // inside the link, every backend keeps its slot and generation, flows stay.
    let before = saved(&layout)?;
    let mut reversed = config.clone();
    for v in &mut reversed.vips {
        v.backends.reverse();
    }
    let d = Daemon::start_keeping(&lab, reversed)?;
    let second = xdp_prog(&lab)?.context("no XDP program after the restart")?;
    ensure!(
        second != first,
        "the restart did not load a new program ({first})"
    );
    echo_all(&mut held, "restarted")?;
    // (Every publish writes the inactive half and flips to it: `live` alternates.)
    let slots = |s: dataplane::SavedLayout| -> Vec<_> {
        s.vips
            .into_iter()
            .map(|v| (v.address, v.port, v.proto, v.vip_id, v.halves, v.backends))
            .collect()
    };
    let (was, is) = (slots(before), slots(saved(&layout)?));
    ensure!(
        was == is,
        "the restart changed the layout: {was:?} → {is:?}"
    );

    // A start that cannot adopt (another flow-table size) is refused and changes nothing.
    d.stop()?;
    let mut bigger = config.clone();
    bigger.daemon.flow_table_size *= 2;
    let refused = Daemon::start_keeping(&lab, bigger)
        .err()
        .context("a daemon with another flow_table_size adopted the pinned flow table")?;
    let why = refused.to_string();
    println!("{tag}: incompatible start refused: {why}");
    ensure!(
        why.contains("FLOWS")
            && why.contains("daemon.flow_table_size")
            && why.contains("sluice detach"),
        "the refusal does not say what differs and what to do: {why}"
    );
    // So is one with another VIP or backend capacity: their maps are sized at creation.
    let (mut more_vips, mut more_backends) = (config.clone(), config.clone());
    more_vips.daemon.vip_capacity *= 2;
    more_backends.daemon.backend_capacity *= 2;
    for (key, other) in [
        ("daemon.vip_capacity", more_vips),
        ("daemon.backend_capacity", more_backends),
    ] {
        let why = Daemon::start_keeping(&lab, other)
            .err()
            .with_context(|| format!("a daemon with another {key} adopted the pinned maps"))?
            .to_string();
        ensure!(
            why.contains(key) && why.contains("sluice detach"),
            "the refusal does not name {key}: {why}"
        );
    }
    ensure!(
        xdp_prog(&lab)? == Some(second),
        "a refused start changed the program"
    );
    echo_all(&mut held, "refused")?;

    // One more backend: old connections stay on their backends, new ones use it too.
    let added = lab.add_backend()?.name();
    let d = Daemon::start_keeping(&lab, lab.daemon_config(&Weights::Equal)?)?;
    ensure!(
        xdp_prog(&lab)? != Some(second),
        "no new program after the upgrade"
    );
    echo_all(&mut held, "grown")?;
    let now: Vec<String> = held.iter().map(|h| h.backend.clone()).collect();
    ensure!(now == backends, "connections changed backends");
    let counts = fresh(lab.client(0), vip, 200)?;
    println!("{tag}: 200 new connections after adding {added}: {counts:?}");
    // 1/4 of 200 expected; ≥ 20 is more than 4 standard deviations below.
    ensure!(
        counts.get(&added).copied().unwrap_or(0) >= 20,
        "{added} got too few new connections: {counts:?}"
    );
    d.stop()?;
    echo_all(&mut held, "last")?;

    // The explicit removal: no pins, no program.
    let removed = dataplane::detach(&pin_dir, Some(&layout))?;
    println!("{tag}: detach removed {} entries", removed.len());
    ensure!(!pin_dir.exists(), "{} still exists", pin_dir.display());
    ensure!(!layout.exists(), "{} still exists", layout.display());
    ensure!(
        xdp_prog(&lab)?.is_none(),
        "an XDP program is still attached after detach"
    );
    drop(held);
    lab.down()?;
    Ok(())
}

#[test]
fn dsr_connections_survive_restarts() {
    restart_keeps_flows(Forwarding::Dsr, "dsr")
        .unwrap_or_else(|e| panic!("DSR flows across restarts: {e:#}"));
}

#[test]
fn ipip_connections_survive_restarts() {
    restart_keeps_flows(Forwarding::Ipip, "ipip")
        .unwrap_or_else(|e| panic!("IPIP flows across restarts: {e:#}"));
}

#[test]
fn a_down_backend_stays_down_across_a_restart() {
    use sluice_core::config::CheckKind;
    use sluice_daemon::health::Health;
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("rst", "down")).backends(3)).expect("bring the lab up");
    let pin_dir = lab::lab_pin_dir(lab.prefix());
    let layout = lab::lab_dir(lab.prefix()).join(LAYOUT_FILE);
    let vip = SocketAddr::new(lab.vip4().into(), lab::TCP_PORT);
    let mut config = lab
        .daemon_config(&Weights::Equal)
        .expect("the lab's daemon config");
    for v in &mut config.vips {
        if v.health.check != CheckKind::None {
            (v.health.interval_ms, v.health.timeout_ms) = (300, 250);
            (v.health.rise, v.health.fall) = (2, 2);
        }
    }
    let victim = lab.backend(1).addr4().into();
    let d = Daemon::start_keeping(&lab, config.clone()).expect("start the daemon keeping the pins");
    d.wait_health("lab-tcp4", victim, Health::Up, Duration::from_secs(5))
        .expect("wait for the health state");
    lab.kill_backend_server(1)
        .expect("kill the backend's server");
    d.wait_health("lab-tcp4", victim, Health::Down, Duration::from_secs(10))
        .expect("wait for the health state");
    d.stop().expect("stop the daemon");

    // The next daemon starts with it down (before any check has run) and sends it no new
    // flow; it comes back after `rise` checks once its server is back.
    let d = Daemon::start_keeping(&lab, config).expect("start the daemon keeping the pins");
    let t = Instant::now();
    let (health, reason) = loop {
        if let Some(h) = d.health("lab-tcp4", victim) {
            break h;
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "no status after the restart"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    println!("after the restart: backend-2 {health:?} ({reason})");
    assert!(
        health == Health::Down,
        "backend-2 came back up with the restart"
    );
    let counts = fresh(lab.client(0), vip, 60).expect("fresh connections");
    assert!(
        !counts.contains_key("backend-2"),
        "a backend down before the restart got new flows: {counts:?}"
    );
    lab.start_backend_server(1)
        .expect("start the backend's server");
    let back = d
        .wait_health("lab-tcp4", victim, Health::Up, Duration::from_secs(10))
        .expect("wait for the health state");
    println!("backend-2 up again {back:?} after its server restarted");
    d.stop().expect("stop the daemon");
    dataplane::detach(&pin_dir, Some(&layout)).expect("detach the dataplane");
    lab.down().expect("take the lab down");
}

#[test]
fn an_ephemeral_daemon_leaves_nothing() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("rst", "eph")).backends(1)).expect("bring the lab up");
    let pin_dir = lab::lab_pin_dir(lab.prefix());
    let d = Daemon::start(
        &lab,
        lab.daemon_config(&Weights::Equal)
            .expect("the lab's daemon config"),
    )
    .expect("start the daemon");
    assert!(pin_dir.join(LINK_PIN).exists(), "the lab daemon pins too");
    assert!(
        xdp_prog(&lab)
            .expect("look up the attached XDP program")
            .is_some()
    );
    d.stop().expect("stop the daemon");
    assert!(!pin_dir.exists(), "{} left behind", pin_dir.display());
    assert!(
        xdp_prog(&lab)
            .expect("look up the attached XDP program")
            .is_none(),
        "program left attached"
    );
    lab.down().expect("take the lab down");
}
