//! Health checks under stress, with real TCP through the lab (the real daemon, its probes
//! through the forwarding path):
//!
//! - half-open connections left on a backend on the probes' source ports (the old fixed
//!   port `49152 + id`, and the ports the probes are about to take) fail no check: a
//!   challenge ACK counts as alive, the stale connection is reset, and the probes
//!   themselves leave no half-open connection;
//! - `vip.on_down`: with `keep`, connections on a backend whose check fails stay on it
//!   and new ones avoid it; with `reassign` they move (and break);
//! - the soak: connections opening and closing, long-lived ones, bursts of live edits, probes
//!   every 200 ms on IPv4 and IPv6 backends in DSR and IPIP: no false transition.
//!   `SLUICE_SOAK_SECS` sets its length (default 75 s; 600 for the long run).
//!
//! Every test builds its own labs (prefix `sl-hs-<pid>-<name>`), removed when they drop,
//! also on failure; tests run one at a time. Every loop is bounded in count and time.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use sluice_core::config::{CheckKind, Config, Forwarding, OnDown};
use sluice_daemon::{daemon::Edit, health::Health};
use sluice_lab::lab::{self, Lab, LabSpec, Node, Weights, daemon::Daemon, server::BackendServer};
use sluice_tests::{
    conn::{ChurnCounts, Held, churn_step, connections},
    require_root, serial,
};

fn prefix(n: &str) -> String {
    let p = format!("sl-hs-{}-{n}", std::process::id() % 100_000);
    // A crashed run of the same pid (unlikely) would block `Lab::up`.
    let _ = Lab::down_prefix(&p);
    p
}

/// Probes every 200 ms (the setting) on every tcp and udp VIP.
fn fast_checks(mut c: Config) -> Config {
    for v in &mut c.vips {
        if v.port == lab::UDP_PORT {
            v.health.check = CheckKind::Udp;
            v.health.port = lab::UDP_PORT;
            v.health.send = "health".to_owned();
        }
        v.health.interval_ms = 200;
        v.health.timeout_ms = 200;
        v.health.rise = 2;
        v.health.fall = 3;
    }
    c
}

/// A raw Ethernet frame sent from `node`'s eth0 (an `AF_PACKET` socket in its namespace).
fn send_frame(node: &Node, frame: &[u8]) -> anyhow::Result<()> {
    node.run(|| -> anyhow::Result<()> {
        // SAFETY: plain calls with valid arguments; the descriptor is closed below.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            ensure!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
            let ifindex = libc::if_nametoindex(c"eth0".as_ptr());
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&frame[..6]);
            let n = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            ensure!(n == frame.len() as isize, "sending a frame: {err}");
        }
        Ok(())
    })?
}

/// A SYN from the LB's address and `sport` to `vip`:80, sent straight to `backend`'s MAC
/// (as DSR forwards it): the backend answers with a SYN-ACK to the LB and, as nobody resets
/// it, keeps a half-open connection (SYN-RECV) for about a minute.
fn leave_half_open(lab: &Lab, backend: &Node, vip: IpAddr, sport: u16) -> anyhow::Result<()> {
    let b = PacketBuilder::ethernet2(lab.lb().mac(), backend.mac());
    let b = match vip {
        IpAddr::V4(v) => b.ipv4(lab.lb().addr4().octets(), v.octets(), 64),
        IpAddr::V6(v) => b.ipv6(lab.lb().addr6().octets(), v.octets(), 64),
    };
    let mut frame = Vec::new();
    b.tcp(sport, lab::TCP_PORT, 0x1000_0000 + u32::from(sport), 64240)
        .syn()
        .write(&mut frame, &[])?;
    send_frame(lab.lb(), &frame)
}

/// The source port of the next probe SYN (from the LB to `vip`:80) that reaches `backend`,
/// seen with an `AF_PACKET` socket in its namespace.
fn next_probe_port(lab: &Lab, backend: &Node, vip: IpAddr) -> anyhow::Result<u16> {
    let lb_addr: IpAddr = if vip.is_ipv4() {
        lab.lb().addr4().into()
    } else {
        lab.lb().addr6().into()
    };
    backend.run(|| -> anyhow::Result<u16> {
        // SAFETY: plain calls with valid arguments; the descriptor is closed below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            )
        };
        ensure!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: valid option of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as u32,
            );
        }
        let t0 = Instant::now();
        let mut buf = [0u8; 2048];
        let mut found = None;
        while found.is_none() && t0.elapsed() < Duration::from_secs(10) {
            // SAFETY: valid buffer of the size passed.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                continue;
            }
            let Ok(p) = SlicedPacket::from_ethernet(&buf[..n as usize]) else {
                continue;
            };
            let (src, dst) = match &p.net {
                Some(NetSlice::Ipv4(ip)) => (
                    IpAddr::from(ip.header().source()),
                    IpAddr::from(ip.header().destination()),
                ),
                Some(NetSlice::Ipv6(ip)) => (
                    IpAddr::from(ip.header().source()),
                    IpAddr::from(ip.header().destination()),
                ),
                _ => continue,
            };
            if let Some(TransportSlice::Tcp(t)) = &p.transport
                && src == lb_addr
                && dst == vip
                && t.destination_port() == lab::TCP_PORT
                && t.syn()
                && !t.ack()
            {
                found = Some(t.source_port());
            }
        }
        // SAFETY: our descriptor.
        unsafe { libc::close(fd) };
        found.context("no probe SYN seen within 10 s")
    })?
}

/// The peer ports of the half-open (SYN-RECV) connections from `peer` on `node`.
fn syn_recv_ports(node: &Node, peer: IpAddr) -> anyhow::Result<BTreeSet<u16>> {
    let out = node.exec(&["ss", "-Htn", "state", "syn-recv"])?;
    let mut ports = BTreeSet::new();
    for line in out.lines() {
        let Some(remote) = line.split_whitespace().last() else {
            continue;
        };
        let Some((addr, port)) = remote.rsplit_once(':') else {
            continue;
        };
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        if addr.parse::<IpAddr>().ok() == Some(peer) {
            ports.insert(port.parse()?);
        }
    }
    Ok(ports)
}

/// (checks, failed checks, transitions) of every backend of every VIP, by "VIP backend".
fn figures(d: &Daemon) -> anyhow::Result<BTreeMap<String, (u64, u64, u64)>> {
    let s = d.status().context("no status")?;
    Ok(s.vips
        .iter()
        .flat_map(|v| {
            v.backends.iter().map(|b| {
                (
                    format!("{} {}", v.name, b.address),
                    (b.checks, b.failed_checks, b.transitions),
                )
            })
        })
        .collect())
}

fn ensure_no_transition(d: &Daemon, what: &str) -> anyhow::Result<(u64, u64)> {
    let f = figures(d)?;
    let moved: Vec<_> = f.iter().filter(|(_, (_, _, t))| *t > 0).collect();
    ensure!(moved.is_empty(), "{what}: false transitions: {moved:?}");
    let checks = f.values().map(|x| x.0).sum();
    let failed = f.values().map(|x| x.1).sum();
    Ok((checks, failed))
}

#[test]
fn half_open_connections_on_probe_ports_fail_no_check() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("half")).backends(2)).expect("bring the lab up");
    let d = Daemon::start(
        &lab,
        fast_checks(
            lab.daemon_config(&Weights::Equal)
                .expect("the lab's daemon config"),
        ),
    )
    .expect("start the daemon");
    let victim = lab.backend(0);
    thread::sleep(Duration::from_millis(600));
    let lb_addrs: [IpAddr; 2] = [lab.lb().addr4().into(), lab.lb().addr6().into()];
    let mut ahead = BTreeMap::new();
    for (vip, lb_addr) in lab.vips().into_iter().zip(lb_addrs) {
        // The ports the probes of the first backends always used (49152 + id): a half-open
        // connection there made every later probe of that backend time out for a minute.
        for sport in 49152..49152 + 24 {
            leave_half_open(&lab, victim, vip, sport).expect("leave a half-open connection");
        }
        // The ports the next probes of this VIP check will take (one after the other),
        // so that some probes meet a half-open connection and get a challenge ACK.
        let p = next_probe_port(&lab, victim, vip).expect("the next probe port");
        let ports: BTreeSet<u16> = (3..43)
            .map(|i| 49152 + ((u32::from(p - 49152) + i) % 16384) as u16)
            .collect();
        for &sport in &ports {
            leave_half_open(&lab, victim, vip, sport).expect("leave a half-open connection");
        }
        let held = syn_recv_ports(victim, lb_addr).expect("the SYN-RECV ports");
        assert!(
            ports.iter().filter(|p| held.contains(p)).count() >= 30,
            "{vip}: the half-open connections were not made: {held:?}"
        );
        println!(
            "{vip}: probe port {p}; half-open connections left on {victim:?} ports 49152..49176 and {ports:?}",
            victim = victim.name()
        );
        ahead.insert(vip, (lb_addr, ports));
    }
    // Long enough for the probes to pass every one of those ports (two backends × 5 probes
    // a second take 10 ports a second) and for `fall` (3) failures in a row many times over.
    thread::sleep(Duration::from_secs(8));
    let (checks, failed) =
        ensure_no_transition(&d, "half-open connections").expect("no health transition");
    for vip in ["lab-tcp4", "lab-tcp6"] {
        for b in lab.backends() {
            let addr = if vip.ends_with('4') {
                b.addr4().into()
            } else {
                b.addr6().into()
            };
            assert!(
                d.health(vip, addr).is_some_and(|(h, _)| h == Health::Up),
                "{vip} {addr}: {:?}",
                d.health(vip, addr)
            );
        }
    }
    // The probes that met them reset them (a challenge ACK, then a RST with its
    // acknowledgment number), long before the backend would have given up (~60 s).
    for (vip, (lb_addr, ports)) in &ahead {
        let left = syn_recv_ports(victim, *lb_addr).expect("the SYN-RECV ports");
        let reset = ports.iter().filter(|p| !left.contains(p)).count();
        println!(
            "{vip}: {reset} of the {} half-open connections ahead of the probes were reset by them",
            ports.len()
        );
        assert!(reset >= 1, "{vip}: no probe met a half-open connection");
    }
    // The probes themselves leave nothing: a half-open connection from a probe port that is
    // not ours, seen twice 500 ms apart, would be a probe's.
    for (vip, (lb_addr, ports)) in &ahead {
        let ours = |p: &u16| ports.contains(p) || (49152..49152 + 24).contains(p);
        let first: BTreeSet<u16> = syn_recv_ports(victim, *lb_addr)
            .expect("the SYN-RECV ports")
            .into_iter()
            .filter(|p| !ours(p))
            .collect();
        thread::sleep(Duration::from_millis(500));
        let second = syn_recv_ports(victim, *lb_addr).expect("the SYN-RECV ports");
        let leaked: Vec<_> = first.intersection(&second).collect();
        assert!(
            leaked.is_empty(),
            "{vip}: probes left half-open connections on ports {leaked:?}"
        );
    }
    println!("{checks} checks, {failed} failed, 0 transitions");
    drop(d);
    lab.down().expect("take the lab down");
}

/// The lab config with backend-2's check of `lab-tcp4` on port `CHECK_PORT` (a server the
/// test can stop while backend-2 keeps serving port 80), and `on_down`.
const CHECK_PORT: u16 = 8080;

fn on_down_config(lab: &Lab, on_down: OnDown) -> anyhow::Result<Config> {
    let mut c = lab.daemon_config(&Weights::Equal)?;
    let v = c
        .vips
        .iter_mut()
        .find(|v| v.name == "lab-tcp4")
        .context("lab-tcp4")?;
    v.on_down = on_down;
    v.health.interval_ms = 200;
    v.health.timeout_ms = 200;
    v.health.fall = 2;
    v.health.rise = 2;
    let mut h = v.health.clone();
    h.port = CHECK_PORT;
    v.backends[1].health = Some(h);
    Ok(c)
}

#[test]
fn on_down_keep_holds_connections_and_reassign_moves_them() {
    require_root();
    let _serial = serial();
    let lab =
        Lab::up(LabSpec::new(&prefix("ondown")).backends(3).ipv6(false)).expect("bring the lab up");
    let victim = lab.backend(1);
    let victim_addr: IpAddr = victim.addr4().into();
    let vip = SocketAddr::new(lab.vip4().into(), lab::TCP_PORT);
    for on_down in [OnDown::Keep, OnDown::Reassign] {
        let check = victim
            .run(|| {
                BackendServer::start_on(
                    "backend-2-check",
                    &[victim_addr, lab.vip4().into()],
                    CHECK_PORT,
                    0,
                )
            })
            .expect("run in the namespace")
            .expect("start the check server");
        let d = Daemon::start(
            &lab,
            on_down_config(&lab, on_down).expect("the on-down config"),
        )
        .expect("start the daemon");
        // Up, and checked (a check passed since the start).
        let t0 = Instant::now();
        while d
            .health("lab-tcp4", victim_addr)
            .is_none_or(|(h, why)| h != Health::Up || !why.contains("VIP answered"))
        {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "backend-2 not checked up: {:?}",
                d.health("lab-tcp4", victim_addr)
            );
            thread::sleep(Duration::from_millis(50));
        }
        let mut held: Vec<Held> = (0..30)
            .map(|_| Held::open(lab.client(0), vip))
            .collect::<anyhow::Result<_>>()
            .expect("open the connections");
        let on_victim = held.iter().filter(|c| c.backend == "backend-2").count();
        assert!(
            on_victim >= 2,
            "too few connections on backend-2: {on_victim}"
        );
        for (i, c) in held.iter_mut().enumerate() {
            c.echo(&format!("before{i}"))
                .expect("echo on a held connection");
        }
        // Its check fails; port 80 still works.
        check.stop();
        d.wait_health(
            "lab-tcp4",
            victim_addr,
            Health::Down,
            Duration::from_secs(5),
        )
        .expect("wait for the health state");
        let mut broken = Vec::new();
        for (i, c) in held.iter_mut().enumerate() {
            if let Err(e) = c.echo(&format!("after{i}")) {
                broken.push((c.backend.clone(), format!("{e:#}")));
            }
        }
        let counts = connections(lab.client(0), vip, 60).expect("connections through the VIP");
        println!(
            "{on_down:?}: {on_victim} of 30 held connections on backend-2; after it went down: {} broken {broken:?}; 60 new connections: {counts:?}",
            broken.len()
        );
        assert!(
            !counts.contains_key("backend-2"),
            "{on_down:?}: a down backend got new connections: {counts:?}"
        );
        match on_down {
            OnDown::Keep => assert!(broken.is_empty(), "keep: connections broke: {broken:?}"),
            OnDown::Reassign => {
                assert!(
                    broken.len() == on_victim && broken.iter().all(|(b, _)| b == "backend-2"),
                    "reassign: backend-2's {on_victim} connections should have moved (and broken), \
                     the others not: {broken:?}"
                );
            }
        }
        drop(held);
        drop(d);
    }
    lab.down().expect("take the lab down");
}

#[test]
fn a_down_backend_under_keep_stays_down_across_a_restart() {
    use sluice_dataplane::{self as dataplane, LAYOUT_FILE};
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("keeprestart")).backends(3).ipv6(false))
        .expect("bring the lab up");
    let pin_dir = lab::lab_pin_dir(lab.prefix());
    let layout = lab::lab_dir(lab.prefix()).join(LAYOUT_FILE);
    let victim: IpAddr = lab.backend(1).addr4().into();
    let vip = SocketAddr::new(lab.vip4().into(), lab::TCP_PORT);
    let mut config = lab
        .daemon_config(&Weights::Equal)
        .expect("the lab's daemon config");
    for v in &mut config.vips {
        v.on_down = OnDown::Keep;
        if v.health.check != CheckKind::None {
            (v.health.interval_ms, v.health.timeout_ms) = (300, 250);
            (v.health.rise, v.health.fall) = (2, 2);
        }
    }
    let d = Daemon::start_keeping(&lab, config.clone()).expect("start the daemon keeping the pins");
    lab.kill_backend_server(1)
        .expect("kill the backend's server");
    d.wait_health("lab-tcp4", victim, Health::Down, Duration::from_secs(10))
        .expect("wait for the health state");
    thread::sleep(Duration::from_millis(1200)); // the status file is rewritten every second
    d.stop().expect("stop the daemon");
    let status_file = lab::lab_dir(lab.prefix()).join("status.json");
    let modified = || {
        std::fs::metadata(&status_file)
            .and_then(|m| m.modified())
            .ok()
    };
    let old_status = modified();
    let result = (|| -> anyhow::Result<()> {
        // In the maps it still serves (keep): only the status file knew it was down. The next
        // daemon starts with it down, and sends it no new flow before any check ran.
        let d = Daemon::start_keeping(&lab, config)?;
        let t = Instant::now();
        // The new daemon's first status (written as it starts serving).
        let (health, reason) = loop {
            if modified() != old_status
                && let Some(h) = d.health("lab-tcp4", victim)
            {
                break h;
            }
            ensure!(
                t.elapsed() < Duration::from_secs(3),
                "no status from the new daemon"
            );
            thread::sleep(Duration::from_millis(10));
        };
        println!("after the restart: backend-2 {health:?} ({reason})");
        ensure!(
            health == Health::Down,
            "backend-2 came back up with the restart: {reason}"
        );
        let counts = connections(lab.client(0), vip, 40)?;
        ensure!(
            !counts.contains_key("backend-2"),
            "a backend down before the restart got new flows: {counts:?}"
        );
        d.stop()?;
        Ok(())
    })();
    dataplane::detach(&pin_dir, Some(&layout)).expect("detach the dataplane");
    result.unwrap_or_else(|e| panic!("{e:#}"));
    lab.down().expect("take the lab down");
}

/// What the soak's traffic saw.
#[derive(Default)]
struct Traffic {
    counts: ChurnCounts,
    errors: Mutex<Vec<String>>,
}

impl Traffic {
    fn error(&self, e: String) {
        if let Ok(mut v) = self.errors.lock()
            && v.len() < 20
        {
            v.push(e);
        }
    }
}

/// Short connections (raw protocol: send, read the name to EOF) and UDP datagrams to every
/// VIP of `lab`, round robin, until `stop`.
fn churn(lab: &Lab, client: usize, stop: &AtomicBool, t: &Traffic) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let vip = lab.vips()[(i % 2) as usize];
        churn_step(
            lab.client(client),
            vip,
            i.is_multiple_of(4),
            &t.counts,
            |e| t.error(e),
        );
        i += 1;
        thread::sleep(Duration::from_millis(10));
    }
}

/// One lab of the soak: its daemon, traffic and edits for `secs`; the figures.
fn soak_lab(mode: Forwarding, secs: u64) -> anyhow::Result<String> {
    let lab = Lab::up(
        LabSpec::new(&prefix(&format!("soak{mode}")))
            .backends(3)
            .clients(2)
            .mode(mode),
    )?;
    let base = fast_checks(lab.daemon_config(&Weights::Equal)?);
    let d = Daemon::start(&lab, base.clone())?;
    thread::sleep(Duration::from_millis(500));
    // Long-lived connections, 4 per VIP.
    let mut held = Vec::new();
    for vip in lab.vips() {
        for _ in 0..4 {
            held.push(Held::open(
                lab.client(1),
                SocketAddr::new(vip, lab::TCP_PORT),
            )?);
        }
    }
    let stop = AtomicBool::new(false);
    let traffic = Traffic::default();
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(secs);
    let mut edits = 0u64;
    let mut echoes = 0u64;
    let result = thread::scope(|s| -> anyhow::Result<()> {
        let churner = s.spawn(|| churn(&lab, 0, &stop, &traffic));
        let run = (|| -> anyhow::Result<()> {
            let mut burst = 0u64;
            while Instant::now() < end {
                // A burst of 10 live edits, 100 ms apart: weights change (the tables are
                // rebuilt; every checker restarts, cancelling the probes in flight).
                for k in 0..10u64 {
                    let mut c = base.clone();
                    for v in &mut c.vips {
                        for (j, b) in v.backends.iter_mut().enumerate() {
                            b.weight = 1 + ((burst + k + j as u64) % 4) as u32;
                        }
                    }
                    d.edit(Edit::Replace(Box::new(c)))
                        .with_context(|| format!("edit {edits}"))?;
                    edits += 1;
                    thread::sleep(Duration::from_millis(100));
                }
                burst += 1;
                // Then calm (a few seconds), the long-lived connections echoing.
                let calm = Instant::now() + Duration::from_secs(4);
                while Instant::now() < calm.min(end) {
                    for (i, c) in held.iter_mut().enumerate() {
                        c.echo(&format!("e{echoes}"))
                            .with_context(|| format!("long-lived connection {i}"))?;
                        echoes += 1;
                    }
                    thread::sleep(Duration::from_millis(500));
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let _ = churner.join();
        run
    });
    result?;
    for c in held {
        c.close()?;
    }
    let f = figures(&d)?;
    let checks: u64 = f.values().map(|x| x.0).sum();
    let failed: u64 = f.values().map(|x| x.1).sum();
    let transitions: u64 = f.values().map(|x| x.2).sum();
    let errors = traffic.errors.lock().map(|e| e.clone()).unwrap_or_default();
    let line = format!(
        "{mode}: {secs} s, {checks} checks ({} backends × 4 VIPs), {failed} failed, {transitions} transitions; \
         {} short connections, {} datagrams, {} errors; 16 long-lived connections, {echoes} echoes; {edits} edits",
        lab.backends().len(),
        traffic.counts.connections.load(Ordering::Relaxed),
        traffic.counts.datagrams.load(Ordering::Relaxed),
        errors.len(),
    );
    println!("{line}");
    let moved: Vec<_> = f.iter().filter(|(_, x)| x.2 > 0).collect();
    ensure!(moved.is_empty(), "{mode}: false transitions: {moved:?}");
    if !errors.is_empty() {
        bail!("{mode}: traffic errors: {errors:?}");
    }
    ensure!(
        checks >= 4 * 3 * secs * 3,
        "{mode}: too few checks: {checks}"
    );
    drop(d);
    lab.down()?;
    Ok(line)
}

#[test]
fn soak_traffic_edits_and_fast_probes_without_false_transitions() {
    require_root();
    let _serial = serial();
    let secs: u64 = match std::env::var("SLUICE_SOAK_SECS") {
        Ok(s) => s.parse().expect("SLUICE_SOAK_SECS"),
        Err(_) => 75,
    };
    assert!((10..=7200).contains(&secs), "SLUICE_SOAK_SECS: 10..=7200");
    // Both labs at once: twice the load, as in production two services share a machine.
    let (dsr, ipip) = thread::scope(|s| {
        let a = s.spawn(|| soak_lab(Forwarding::Dsr, secs));
        let b = s.spawn(|| soak_lab(Forwarding::Ipip, secs));
        (a.join(), b.join())
    });
    let dsr = dsr.unwrap_or_else(|_| panic!("the DSR soak panicked"));
    let ipip = ipip.unwrap_or_else(|_| panic!("the IPIP soak panicked"));
    let (dsr, ipip) = (
        dsr.unwrap_or_else(|e| panic!("the DSR soak: {e:#}")),
        ipip.unwrap_or_else(|e| panic!("the IPIP soak: {e:#}")),
    );
    println!("soak:\n  {dsr}\n  {ipip}");
}
