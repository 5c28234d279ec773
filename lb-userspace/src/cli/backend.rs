//! `sluice backend list`: the daemon's view of every backend (health, counters), from the
//! status file it keeps in its state directory.

use std::path::Path;

use crate::{
    api::{Request, Response, client},
    state::read_status,
};

pub fn list(socket: &Path, state_dir: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let status = match state_dir {
        Some(dir) => read_status(dir).map_err(|e| {
            anyhow::anyhow!(
                "no daemon status in {}: {e} (is `sluice run` running with daemon.state_dir = {}?)",
                dir.display(),
                dir.display()
            )
        })?,
        None => match client::request(socket, &Request::Status { flows: false })? {
            Response::Status { status } => status,
            _ => anyhow::bail!("unexpected answer to a status request"),
        },
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    print(&status);
    Ok(())
}

/// The human-readable table of a status.
pub fn print(status: &crate::state::Status) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for v in &status.vips {
        println!(
            "{} {} ({}, {}, check {}): {} packets, {} new flows, {} active",
            v.name, v.vip, v.forwarding, v.scheduler, v.check, v.packets, v.new_flows, v.active
        );
        println!(
            "  {:<24} {:>9} {:>10} {:>6} {:>8} {:>12} {:>10} {:>9} {:>7}  last check",
            "backend",
            "weight",
            "state",
            "health",
            "for",
            "packets",
            "bytes",
            "new flows",
            "active"
        );
        for b in &v.backends {
            let weight = if b.effective_weight == b.weight {
                b.weight.to_string()
            } else {
                format!("{}/{}", b.effective_weight, b.weight)
            };
            println!(
                "  {:<24} {:>9} {:>10} {:>6} {:>7}s {:>12} {:>10} {:>9} {:>7}  {}",
                b.address.to_string(),
                weight,
                b.lifecycle,
                format!("{:?}", b.health).to_lowercase(),
                now.saturating_sub(b.since),
                b.packets,
                b.bytes,
                b.new_flows,
                b.active,
                b.reason
            );
        }
    }
}
