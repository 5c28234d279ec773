//! `sluice autoscale status`: the running daemon's autoscaler, per scaled VIP.

use std::path::Path;

use crate::api::{Request, Response, client};
use crate::autoscale::policy::Metrics;

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
            if let Some(line) = load_line(&d.metrics) {
                println!("  {:<24} {:>26} {line}", "", "load reports");
            }
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

/// The load-report figures of a decision's inputs, one value per serving backend in order
/// (`-`: missing), e.g. `waiting 3 7 -; running 12 10 -; kv_cache 85% 90% -`; `None` when
/// the VIP has no `[vip.load]`.
fn load_line(m: &Metrics) -> Option<String> {
    let list = |values: &[Option<f64>], unit: &str| {
        values
            .iter()
            .map(|v| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}{unit}")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let parts: Vec<String> = [
        ("waiting", &m.load_waiting, ""),
        ("running", &m.load_running, ""),
        ("kv_cache", &m.load_kv_cache_percent, "%"),
    ]
    .into_iter()
    .filter(|(_, v, _)| !v.is_empty())
    .map(|(name, v, unit)| format!("{name} {}", list(v, unit)))
    .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_figures_of_a_decision() {
        assert_eq!(load_line(&Metrics::default()), None);
        let m = Metrics {
            load_waiting: vec![Some(3.0), Some(7.0), None],
            load_running: vec![Some(12.0), Some(10.0), None],
            load_kv_cache_percent: vec![Some(85.2), None, None],
            ..Metrics::default()
        };
        assert_eq!(
            load_line(&m).as_deref(),
            Some("waiting 3 7 -; running 12 10 -; kv_cache 85% - -")
        );
    }
}
