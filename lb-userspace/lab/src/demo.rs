//! The demo (`sluice demo`, `cargo xtask demo`): the lab, the daemon on `config/demo.toml`,
//! real TCP connections through the XDP balancer, a table of who answered, a backend killed
//! to show failover, and everything removed at the end (also on failure).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    config::{self, Config},
    health::Health,
    lab::{self, Lab, LabSpec, daemon::Daemon},
    state::Status,
};

/// The demo's configuration, built in (the file is the one in the repository).
const DEMO_TOML: &str = include_str!("../../../config/demo.toml");
const PREFIX: &str = "sl-demo";
const VIP_NAME: &str = "demo-web";

/// Run the demo with `config_file` (else the built-in `config/demo.toml`), `connections`
/// per burst; `show_status` prints the daemon's backend table after the failover (the CLI
/// passes its `sluice backend list` printer).
pub fn run(
    config_file: Option<&Path>,
    connections: usize,
    show_status: impl Fn(&Status),
) -> anyhow::Result<()> {
    let config = match config_file {
        Some(f) => config::load(f)?.config,
        None => config::parse(DEMO_TOML, "config/demo.toml")?.config,
    };
    let weights: Vec<(IpAddr, u32)> = config
        .vips
        .iter()
        .find(|v| v.name == VIP_NAME)
        .with_context(|| format!("the demo config has no VIP named {VIP_NAME}"))?
        .backends
        .iter()
        .map(|b| (b.address, b.weight))
        .collect();
    // Leftovers of an interrupted earlier demo.
    let _ = Lab::down_prefix(PREFIX);

    section("building the lab: a client, the load balancer and 3 backends on one bridge");
    let lab = Lab::up(LabSpec::new(PREFIX).backends(weights.len()))?;
    for b in lab.backends() {
        println!(
            "   {} {} (namespace {}): TCP server answering with its name",
            b.name(),
            b.addr4(),
            b.ns()
        );
    }
    println!(
        "   VIP {} on every backend's loopback (direct server return)",
        lab.vip4()
    );
    let result = demo(&lab, config, &weights, connections, &show_status);
    section("tearing the lab down");
    let removed = lab.down()?;
    println!(
        "   removed {} namespaces and {} pins",
        removed.namespaces.len(),
        removed.pins.len()
    );
    result
}

fn section(title: &str) {
    println!("\n== {title}");
}

fn demo(
    lab: &Lab,
    config: Config,
    weights: &[(IpAddr, u32)],
    connections: usize,
    show_status: &dyn Fn(&Status),
) -> anyhow::Result<()> {
    let check = config
        .vips
        .iter()
        .find(|v| v.name == VIP_NAME)
        .map(|v| v.health.clone());
    section("starting sluice on the load balancer's eth0 (native XDP) with config/demo.toml");
    let daemon = Daemon::start(lab, config)?;
    for (a, _) in weights {
        daemon.wait_health(VIP_NAME, *a, Health::Up, Duration::from_secs(5))?;
    }
    println!("   attached; every backend passed its health check through the VIP");

    let vip = SocketAddr::new(lab.vip4().into(), lab::TCP_PORT);
    section(&format!(
        "{connections} TCP connections from the client to {vip}"
    ));
    burst(lab, vip, connections, weights, None)?;

    let (victim, _) = weights
        .get(1)
        .context("the demo needs at least 2 backends")?;
    if let Some(h) = check {
        section(&format!(
            "failover: stopping backend-2's server; health checks ({}, every {} ms, fall {}) take it out",
            h.check, h.interval_ms, h.fall
        ));
    }
    let t0 = Instant::now();
    lab.kill_backend_server(1)?;
    daemon.wait_health(VIP_NAME, *victim, Health::Down, Duration::from_secs(10))?;
    println!(
        "   backend-2 detected down after {} ms\n",
        t0.elapsed().as_millis()
    );
    if let Some(s) = daemon.status() {
        show_status(&s);
    }

    section(&format!(
        "{connections} more connections: none may fail, none may reach backend-2"
    ));
    burst(lab, vip, connections, weights, Some(*victim))?;
    daemon.stop()?;
    Ok(())
}

/// Connections from the client; prints who answered against the expected shares.
fn burst(
    lab: &Lab,
    vip: SocketAddr,
    n: usize,
    weights: &[(IpAddr, u32)],
    down: Option<IpAddr>,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    for _ in 0..n {
        match ask(lab, vip) {
            Ok(name) => *counts.entry(name).or_insert(0) += 1,
            Err(_) => failed += 1,
        }
    }
    let live: u32 = weights
        .iter()
        .filter(|(a, _)| Some(*a) != down)
        .map(|(_, w)| w)
        .sum();
    println!(
        "\n   {:<12}{:>7}{:>10}{:>9}{:>10}",
        "backend", "weight", "answered", "share", "expected"
    );
    for (i, (a, w)) in weights.iter().enumerate() {
        let name = format!("backend-{}", i + 1);
        let c = counts.get(&name).copied().unwrap_or(0);
        let expected = if Some(*a) == down {
            0.0
        } else {
            f64::from(*w) / f64::from(live.max(1))
        };
        println!(
            "   {name:<12}{w:>7}{c:>10}{:>8.1}%{:>9.1}%",
            100.0 * c as f64 / n as f64,
            100.0 * expected
        );
    }
    println!(
        "\n   {} of {n} connections answered in {:.1} s, {failed} failed",
        n - failed,
        t0.elapsed().as_secs_f64()
    );
    if let Some(d) = down {
        let idx = weights.iter().position(|(a, _)| *a == d).unwrap_or(0);
        anyhow::ensure!(
            !counts.contains_key(&format!("backend-{}", idx + 1)),
            "a down backend answered"
        );
    }
    anyhow::ensure!(failed == 0, "{failed} connections failed");
    Ok(())
}

fn ask(lab: &Lab, vip: SocketAddr) -> anyhow::Result<String> {
    Ok(crate::conn::ask(lab.client(0), vip, b"demo")?
        .trim()
        .to_owned())
}
