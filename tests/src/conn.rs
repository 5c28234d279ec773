//! Real TCP connections to a lab VIP: the lab's own (`sluice_lab::conn`: the `HOLD`
//! protocol), and what only the tests need.

use anyhow::Context as _;
pub use sluice_lab::conn::*;

/// The id of the XDP program on the lab load balancer's eth0, if any (`ip -j link`).
pub fn xdp_prog(lab: &sluice_lab::lab::Lab) -> anyhow::Result<Option<u64>> {
    let out = lab
        .lb()
        .exec(&["ip", "-j", "link", "show", "dev", "eth0"])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j link")?;
    Ok(v.get(0)
        .and_then(|l| l.get("xdp"))
        .and_then(|x| x.get("prog"))
        .and_then(|p| p.get("id"))
        .and_then(serde_json::Value::as_u64))
}

/// What a churn of short exchanges counted: connections and datagrams answered.
#[derive(Debug, Default)]
pub struct ChurnCounts {
    pub connections: std::sync::atomic::AtomicU64,
    pub datagrams: std::sync::atomic::AtomicU64,
}

/// One step of a churn from `node` to `vip`: a short TCP exchange with its TCP port (the
/// answer must name a backend) and, when `with_udp`, a datagram from a new port to its UDP
/// port (echoed). Each success is counted in `counts`, each failure handed to `error`.
pub fn churn_step(
    node: &sluice_lab::lab::Node,
    vip: std::net::IpAddr,
    with_udp: bool,
    counts: &ChurnCounts,
    error: impl Fn(String),
) {
    use std::{net::SocketAddr, sync::atomic::Ordering};
    let tally = |r: anyhow::Result<()>, n: &std::sync::atomic::AtomicU64, what: String| match r {
        Ok(()) => {
            n.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => error(format!("{what}: {e:#}")),
    };
    let tcp = SocketAddr::new(vip, sluice_lab::lab::TCP_PORT);
    let r = ask(node, tcp, b"hello").and_then(|name| {
        anyhow::ensure!(name.starts_with("backend-"), "answer {name:?}");
        Ok(())
    });
    tally(r, &counts.connections, format!("tcp {tcp}"));
    if with_udp {
        let to = SocketAddr::new(vip, sluice_lab::lab::UDP_PORT);
        let r = udp(node, to, b"soak").and_then(|reply| {
            anyhow::ensure!(reply.ends_with(":soak"), "reply {reply:?}");
            Ok(())
        });
        tally(r, &counts.datagrams, format!("udp {to}"));
    }
}
