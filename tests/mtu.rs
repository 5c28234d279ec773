//! Full-size packets over IPIP in the lab, MTU 1500 everywhere: a client's full-size
//! segments grow past the LB's egress MTU once encapsulated. sluice answers them with ICMP
//! "fragmentation needed" / ICMPv6 "packet too big", the client's path MTU discovery
//! resends smaller, and 8 KB requests and responses go through (before, they were dropped
//! silently and the exchange hung: every read here is bounded by a timeout).
//!
//! The lab is removed when it drops, also on failure (prefix `sl-mtu-<pid>`).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use sluice_core::config::Forwarding;
use sluice_lab::lab::{self, Lab, LabSpec, Node, Weights, daemon::Daemon};
use sluice_tests::require_root;

/// A connect or a read: generous for a loaded machine, finite for a hang.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Request and response size (the response is the request line with the backend's name).
const SIZE: usize = 8192;

/// The MTU of a lab node's `eth0`.
fn mtu(node: &Node) -> anyhow::Result<u32> {
    // (Not /sys/class/net: a node's commands see the host's /sys.)
    let link = node.exec(&["ip", "-o", "link", "show", "eth0"])?;
    let n = link
        .split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .context("no mtu in `ip link`")?;
    Ok(n.parse()?)
}

/// `rounds` exchanges of an 8 KB line and its 8 KB echo over one connection to `vip`.
fn exchange(client: &Node, vip: SocketAddr, rounds: usize) -> anyhow::Result<String> {
    let mut s = client
        .run(|| TcpStream::connect_timeout(&vip, TIMEOUT))?
        .with_context(|| format!("connecting to {vip}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    s.write_all(b"HOLD\n")?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut name = String::new();
    r.read_line(&mut name)
        .with_context(|| format!("{vip}: no name"))?;
    let name = name.trim().to_owned();
    ensure!(!name.is_empty(), "{vip}: empty name");
    for i in 0..rounds {
        let line: String = (0..SIZE)
            .map(|k| char::from(b'a' + ((k * 7 + i) % 26) as u8))
            .collect();
        s.write_all(format!("{line}\n").as_bytes())
            .with_context(|| format!("{vip}: sending request {i}"))?;
        let mut back = String::new();
        r.read_line(&mut back)
            .with_context(|| format!("{vip}: 8 KB response {i} (request {i} lost?)"))?;
        ensure!(
            back == format!("{name}:{line}\n"),
            "{vip}: response {i} differs ({} bytes)",
            back.len()
        );
    }
    Ok(name)
}

#[test]
fn ipip_8k_requests_and_responses_with_mtu_1500() {
    require_root();
    let prefix = format!("sl-mtu-{}", std::process::id() % 100_000);
    let lab = Lab::up(LabSpec::new(&prefix).backends(2).mode(Forwarding::Ipip))
        .expect("bring the lab up");
    for node in [lab.lb(), lab.client(0), lab.backend(0), lab.backend(1)] {
        let m = mtu(node).expect("the link's MTU");
        assert!(m == 1500, "{}: eth0 MTU {m}, want 1500", node.name());
    }
    let d = Daemon::start(
        &lab,
        lab.daemon_config(&Weights::Equal)
            .expect("the lab's daemon config"),
    )
    .expect("start the daemon");
    for vip in lab.vips() {
        let to = SocketAddr::new(vip, lab::TCP_PORT);
        // Several connections: each new one learns the path MTU again or reuses it.
        for c in 0..3 {
            let name = exchange(lab.client(0), to, 4)
                .unwrap_or_else(|e| panic!("connection {c} to {to}: {e:#}"));
            println!("{to}: connection {c}: 4 × 8 KB each way with {name}");
        }
    }
    // The reasons of what happened: full-size packets answered, SYNs clamped.
    let mut reasons = Default::default();
    for _ in 0..30 {
        if let Some(s) = d.status() {
            reasons = s.reasons;
            if reasons.get("icmp_too_big").copied().unwrap_or(0) > 0 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("reasons: {reasons:?}");
    for r in ["icmp_too_big", "fwd_mss_clamped"] {
        assert!(
            reasons.get(r).copied().unwrap_or(0) > 0,
            "no {r} counted: {reasons:?}"
        );
    }
    drop(d);
    lab.down().expect("take the lab down");
}
