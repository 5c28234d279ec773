//! `sluice stats [--watch]`: per VIP and per backend rates (packets/s, bytes/s, new
//! flows/s) from two snapshots of the kernel counters one interval apart, the flow-table
//! entries per backend, health and state.

use std::{collections::HashMap, path::Path, time::Duration};

use anyhow::bail;

use crate::{
    api::{Request, Response, client},
    state::Status,
};

fn snapshot(socket: &Path) -> anyhow::Result<Status> {
    match client::request(socket, &Request::Status { flows: true })? {
        Response::Status { status } => Ok(status),
        _ => bail!("unexpected answer to a status request"),
    }
}

/// (packets, bytes, new flows) per key.
type Totals = HashMap<String, (u64, u64, u64)>;

fn totals(s: &Status) -> Totals {
    let mut t = HashMap::new();
    for v in &s.vips {
        t.insert(v.vip.clone(), (v.packets, v.bytes, v.new_flows));
        for b in &v.backends {
            t.insert(
                format!("{} {}", v.vip, b.address),
                (b.packets, b.bytes, b.new_flows),
            );
        }
    }
    t
}

fn rate(now: &Totals, before: &Totals, key: &str, secs: f64) -> (f64, f64, f64) {
    let (a, b) = (
        now.get(key).copied().unwrap_or_default(),
        before.get(key).copied().unwrap_or_default(),
    );
    let d = |x: u64, y: u64| x.saturating_sub(y) as f64 / secs;
    (d(a.0, b.0), d(a.1, b.1), d(a.2, b.2))
}

fn human(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.1}G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn print(s: &Status, now: &Totals, before: &Totals, secs: f64) {
    println!(
        "{:<34} {:>9} {:>10} {:>9} {:>8} {:>7} {:>10}",
        "vip / backend", "pkts/s", "bytes/s", "flows/s", "active", "health", "state"
    );
    for v in &s.vips {
        let (p, b, f) = rate(now, before, &v.vip, secs);
        println!(
            "{:<34} {:>9} {:>10} {:>9} {:>8}   {}",
            format!("{} {}", v.name, v.vip),
            human(p),
            human(b),
            human(f),
            v.active,
            v.scheduler
        );
        for be in &v.backends {
            let (p, b, f) = rate(now, before, &format!("{} {}", v.vip, be.address), secs);
            println!(
                "  {:<32} {:>9} {:>10} {:>9} {:>8} {:>7} {:>10}",
                be.address.to_string(),
                human(p),
                human(b),
                human(f),
                be.active,
                format!("{:?}", be.health).to_lowercase(),
                be.lifecycle
            );
        }
    }
}

pub fn run(socket: &Path, watch: bool, interval: Duration, json: bool) -> anyhow::Result<()> {
    let mut before = snapshot(socket)?;
    loop {
        std::thread::sleep(interval);
        let now = snapshot(socket)?;
        let secs = (now.written.saturating_sub(before.written) as f64).max(interval.as_secs_f64());
        let (a, b) = (totals(&now), totals(&before));
        if json {
            let rows: Vec<_> = a
                .keys()
                .map(|k| {
                    let (p, by, f) = rate(&a, &b, k, secs);
                    serde_json::json!({"key": k, "packets_per_s": p, "bytes_per_s": by, "new_flows_per_s": f})
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string(&serde_json::json!({"status": now, "rates": rows}))?
            );
        } else {
            if watch {
                // Clear the screen and go home: a refreshing table.
                print!("\x1b[2J\x1b[H");
            }
            print(&now, &a, &b, secs);
        }
        if !watch {
            return Ok(());
        }
        before = now;
    }
}
