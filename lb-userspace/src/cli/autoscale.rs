//! `sluice autoscale status`: the running daemon's autoscaler, per scaled VIP.

use std::path::Path;

use crate::api::{Request, Response, client};

pub fn status(socket: &Path, json: bool) -> anyhow::Result<()> {
    let Response::Autoscale { status } = client::request(socket, &Request::AutoscaleStatus)? else {
        anyhow::bail!("unexpected answer to an autoscale status request");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    if status.vips.is_empty() {
        println!("no VIP has [vip.autoscale]");
        return Ok(());
    }
    for v in &status.vips {
        println!(
            "{} ({}): serving {}, desired {} in [{}, {}], provisioning {}, draining {}",
            v.name,
            v.provider,
            v.serving,
            v.desired,
            v.min,
            v.max,
            v.provisioning,
            if v.draining.is_empty() {
                "none".to_owned()
            } else {
                v.draining
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        println!(
            "  decisions: {} up, {} down, {} hold; backends added {}, removed {}; failures {} ({} releases)",
            v.decisions_up,
            v.decisions_down,
            v.decisions_hold,
            v.added,
            v.removed,
            v.failures,
            v.release_failures
        );
        if !v.owned.is_empty() {
            let owned: Vec<String> = v.owned.iter().map(ToString::to_string).collect();
            println!("  created by the provider: {}", owned.join(", "));
        }
        println!(
            "  {:<24} {:>7} {:>7} {:>10} {:>8}  reason",
            "decided at", "serving", "desired", "open conns", "new/s"
        );
        for d in v.decisions.iter().rev().take(10).rev() {
            println!(
                "  {:<24} {:>7} {:>7} {:>10.0} {:>8.1}  {}",
                d.at.to_string(),
                d.current,
                d.desired,
                d.metrics.active_connections,
                d.metrics.new_connections_per_s,
                d.reason
            );
            for s in &d.said {
                println!("  {:<24} {:>26} {}", "", s.policy, s.reason);
            }
        }
        if !v.events.is_empty() {
            println!("  actions:");
            for e in &v.events {
                println!("    {e}");
            }
        }
    }
    Ok(())
}
