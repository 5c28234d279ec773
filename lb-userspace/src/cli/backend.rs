//! `sluice backend list`: the daemon's view of every backend (health, counters), from the
//! status file it keeps in its state directory.

use std::path::Path;

use crate::state::read_status;

pub fn list(state_dir: &Path, json: bool) -> anyhow::Result<()> {
    let status = read_status(state_dir).map_err(|e| {
        anyhow::anyhow!(
            "no daemon status in {}: {e} (is `sluice run` running with daemon.state_dir = {}?)",
            state_dir.display(),
            state_dir.display()
        )
    })?;
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
            "{} {} ({}, check {}): {} packets, {} new flows",
            v.name, v.vip, v.forwarding, v.check, v.packets, v.new_flows
        );
        println!(
            "  {:<24} {:>6} {:>6} {:>8} {:>12} {:>10} {:>10}  last check",
            "backend", "weight", "health", "for", "packets", "bytes", "new flows"
        );
        for b in &v.backends {
            println!(
                "  {:<24} {:>6} {:>6} {:>7}s {:>12} {:>10} {:>10}  {}",
                b.address.to_string(),
                b.weight,
                format!("{:?}", b.health).to_lowercase(),
                now.saturating_sub(b.since),
                b.packets,
                b.bytes,
                b.new_flows,
                b.reason
            );
        }
    }
}
