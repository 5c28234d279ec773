//! `sluice backend list`: the daemon's view of every backend (health, counters), from the
//! status file it keeps in its state directory.

use std::path::Path;

use crate::{
    api::{Request, Response, client},
    state::read_status,
};

pub fn list(
    socket: &Path,
    state_dir: Option<&Path>,
    vip: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let mut status = match state_dir {
        Some(dir) => read_status(dir).map_err(|e| {
            anyhow::anyhow!(
                "no daemon status in {}: {e} (is `sluice run` running with daemon.state_dir = {}?)",
                dir.display(),
                dir.display()
            )
        })?,
        None => {
            let req = match vip {
                Some(vip) => Request::VipStatus {
                    vip: vip.to_owned(),
                },
                None => Request::Status { flows: false },
            };
            match client::request(socket, &req)? {
                Response::Status { status } => status,
                _ => anyhow::bail!("unexpected answer to a status request"),
            }
        }
    };
    if let Some(vip) = vip {
        status.vips.retain(|v| v.name == vip);
        anyhow::ensure!(!status.vips.is_empty(), "--vip {vip:?}: no such VIP");
    }
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
            if let Some(load) = &b.load {
                println!("    load: {}", load_line(load));
            }
            if let Some(h) = &b.next_hop {
                println!("    next hop: {}", h.detail);
            }
            if b.health == crate::health::Health::Down {
                println!(
                    "    down: run on {}: {}",
                    b.address,
                    sluice_daemon::doctor::balancer::backend_hint(&v.vip, &v.forwarding)
                );
            }
        }
    }
    if status.unpinned_flows > 0 {
        println!(
            "{} new flows were forwarded without a flow entry: the flood guard's rate (daemon.new_flow_limit_per_cpu) was exceeded",
            status.unpinned_flows
        );
    }
    if status.table_full_flows > 0 {
        println!(
            "{} new flows were forwarded without a flow entry: the flow table had no free slot for them (daemon.flow_table_size; past 90% the daemon evicts closing flows, then flows never seen again, then the least recently seen)",
            status.table_full_flows
        );
    }
    if status.fib_fallbacks > 0 {
        println!(
            "{} frames went through the kernel's FIB for want of a resolved next hop (see \"next hop\" above)",
            status.fib_fallbacks
        );
    }
}

/// A backend's load reading on one line: `waiting 7, running 3, kv 37.5%, 120 ms ago`,
/// then `stale` and the last read's error when there are.
pub fn load_line(l: &crate::state::LoadStatus) -> String {
    let mut parts = Vec::new();
    if let Some(w) = l.waiting {
        parts.push(format!("waiting {w}"));
    }
    if let Some(r) = l.running {
        parts.push(format!("running {r}"));
    }
    if let Some(kv) = l.kv_cache {
        parts.push(format!("kv {:.1}%", kv * 100.0));
    }
    if let Some(a) = &l.agent {
        parts.push(format!("agent {a:?}"));
    }
    match l.age_ms {
        Some(ms) => parts.push(format!("{ms} ms ago")),
        None => parts.push("no report yet".to_owned()),
    }
    if l.stale {
        parts.push("stale".to_owned());
    }
    if let Some(e) = &l.error {
        parts.push(format!("last read failed ({} failures): {e}", l.errors));
    }
    parts.join(", ")
}
