//! `sluice announce status|withdraw|restore`: the running daemon's VIP routes
//! (`[daemon.announce]`) and maintenance.

use std::path::Path;

use clap::Subcommand;

use crate::api::{Request, Response, client};

#[derive(Debug, Subcommand)]
pub enum AnnounceCmd {
    /// Per VIP address: announced or not, and why (announced, maintenance, no serving
    /// backend, not attached, announce disabled, netlink error: ...); the maintenance flag
    /// and since when; warnings about sequence schedulers in a fleet.
    Status,
    /// Maintenance: withdraw every VIP address (the balancer keeps forwarding the flows
    /// that still arrive); kept across daemon restarts until `sluice announce restore`.
    Withdraw {
        /// Every VIP address (required: the only scope there is).
        #[arg(long, required = true)]
        all: bool,
    },
    /// End maintenance: announce again every VIP address with a serving backend.
    Restore,
}

pub fn run(socket: &Path, cmd: AnnounceCmd, json: bool) -> anyhow::Result<()> {
    let req = match cmd {
        AnnounceCmd::Status => Request::AnnounceStatus,
        AnnounceCmd::Withdraw { all } => Request::AnnounceWithdraw { all },
        AnnounceCmd::Restore => Request::AnnounceRestore,
    };
    let Response::Announce { status, message } = client::request(socket, &req)? else {
        anyhow::bail!("unexpected answer to an announce request");
    };
    if json {
        let out = if message.is_empty() {
            serde_json::to_value(&status)?
        } else {
            serde_json::json!({"message": message, "status": status})
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if !message.is_empty() {
        println!("{message}");
    }
    print_status(&status);
    Ok(())
}

fn print_status(s: &sluice_core::announce::AnnounceStatus) {
    if !s.enabled {
        println!("announcing is disabled (daemon.announce.enabled = false): no route is touched");
    } else {
        println!(
            "routes: table {}, proto {}, dev {}",
            s.table, s.protocol, s.interface
        );
    }
    match (s.maintenance, s.maintenance_since) {
        (true, Some(t)) => println!("maintenance: yes, since {} (unix {t})", when(t)),
        (true, None) => println!("maintenance: yes"),
        (false, _) => println!("maintenance: no"),
    }
    println!("{:<40} {:<10} {:<28} vips", "address", "announced", "why");
    for a in &s.addresses {
        println!(
            "{:<40} {:<10} {:<28} {}",
            a.address,
            if a.announced { "yes" } else { "no" },
            a.reason,
            a.vips.join(", ")
        );
    }
    for w in &s.warnings {
        println!("warning: {w}");
    }
}

/// Unix seconds as "2026-12-03 21:05:09 UTC".
fn when(t: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(t).unwrap_or(0), 0)
        .map_or_else(String::new, |t| {
            t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
        })
}
