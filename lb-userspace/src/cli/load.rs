//! `sluice plan load [VIP]`: what the load policy makes of the current load reports
//! (`[vip.load]`), answered by the daemon from its live readings. Changes nothing.

use std::{fmt::Write as _, path::Path};

use anyhow::bail;
use sluice_core::load::explain::{BackendLoad, LoadExplain, VipLoad};

use super::backend::load_line;
use crate::api::{Request, Response, client};

pub fn explain(socket: &Path, vip: Option<String>, json: bool) -> anyhow::Result<()> {
    let explain = match client::request(socket, &Request::LoadExplain { vip })? {
        Response::LoadExplain { explain } => explain,
        Response::Error { message } => bail!("{message}"),
        _ => bail!("unexpected answer to a load explain request"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&explain)?);
    } else {
        print!("{}", render(&explain));
    }
    Ok(())
}

/// The text form: per VIP a header line, then per backend its weights, why, its report
/// and (lc/wlc) what the plan counts.
pub fn render(e: &LoadExplain) -> String {
    if e.vips.is_empty() {
        return "no VIP has a [vip.load] section: no load reports are read\n".to_owned();
    }
    let mut out = String::new();
    for v in &e.vips {
        vip(&mut out, v);
    }
    out
}

fn vip(out: &mut String, v: &VipLoad) {
    let _ = writeln!(
        out,
        "{} {} (scheduler {}, reports from {}; saturated above {} waiting or KV {:.0}%, or a report older than {} ms)",
        v.name,
        v.vip,
        v.scheduler,
        v.source,
        v.queue_limit,
        v.kv_limit * 100.0,
        v.stale_after_ms
    );
    if v.fail_open {
        let _ = writeln!(
            out,
            "  policy FAILED OPEN: every backend is saturated, so all keep taking new flows"
        );
    }
    if v.held_back {
        let _ = writeln!(
            out,
            "  a change is held back by the rebuild limit (applied on a later tick)"
        );
    }
    if let Some(src) = &v.in_flight {
        let _ = writeln!(
            out,
            "  {} plan counts: {src} (in_flight = \"{src}\"; a backend without a fresh report: its connections)",
            v.scheduler
        );
    }
    let width = v
        .backends
        .iter()
        .map(|b| b.address.to_string().len())
        .max()
        .unwrap_or(0);
    for b in &v.backends {
        backend(out, b, width);
    }
}

fn backend(out: &mut String, b: &BackendLoad, width: usize) {
    let applied = match b.applied {
        Some(a) if a != b.weight => format!(" (new flows see {a} now)"),
        _ => String::new(),
    };
    let mut flags = Vec::new();
    if b.saturated {
        flags.push("SATURATED");
    }
    if !b.serving {
        flags.push("DOWN");
    }
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!("{}  ", flags.join(" "))
    };
    let _ = writeln!(
        out,
        "  {:<width$}  weight {:>4} of {:>4}{applied}  {flags}{}",
        b.address.to_string(),
        b.weight,
        b.configured,
        b.reason
    );
    let pad = " ".repeat(width + 4);
    let _ = writeln!(out, "{pad}report: {}", load_line(&b.load));
    if let Some(counted) = &b.counted {
        let conns = b
            .connections
            .map_or_else(|| "unknown".to_owned(), |n| n.to_string());
        let line = match (counted.as_str(), b.reported_in_flight) {
            ("reported", Some(n)) => {
                format!("plan counts {n} requests in flight (reported; {conns} connections)")
            }
            (_, Some(n)) => {
                format!(
                    "plan counts {conns} connections (in_flight = \"connections\"; {n} reported)"
                )
            }
            (_, None) => {
                format!("plan counts {conns} connections (no fresh in-flight report)")
            }
        };
        let _ = writeln!(out, "{pad}{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::LoadStatus;

    fn backend(address: &str, weight: u32, saturated: bool, reason: &str) -> BackendLoad {
        BackendLoad {
            address: address.parse().expect("an address"),
            configured: 10,
            weight,
            applied: Some(weight),
            saturated,
            reason: reason.to_owned(),
            serving: true,
            load: LoadStatus {
                waiting: Some(if saturated { 9.0 } else { 1.0 }),
                running: Some(2.0),
                age_ms: Some(120),
                ..LoadStatus::default()
            },
            reported_in_flight: Some(if saturated { 11 } else { 3 }),
            connections: Some(4),
            counted: Some("reported".to_owned()),
        }
    }

    #[test]
    fn names_the_saturated_backend_its_reason_and_what_lc_counts() {
        let e = LoadExplain {
            vips: vec![VipLoad {
                name: "llm".to_owned(),
                vip: "10.0.0.1:80/tcp".to_owned(),
                scheduler: "lc".to_owned(),
                source: "prometheus :8000/metrics".to_owned(),
                queue_limit: 5.0,
                kv_limit: 0.8,
                stale_after_ms: 750,
                in_flight: Some("reported".to_owned()),
                fail_open: false,
                held_back: false,
                backends: vec![
                    backend("10.0.1.1", 0, true, "saturated: 9 waiting > 5"),
                    backend("10.0.1.2", 10, false, "score 1.00 (queue 1.00)"),
                ],
            }],
        };
        let text = render(&e);
        let line = text
            .lines()
            .find(|l| l.contains("10.0.1.1"))
            .expect("the saturated backend's line");
        assert!(
            line.contains("weight    0 of   10") && line.contains("SATURATED"),
            "{text}"
        );
        assert!(line.contains("9 waiting > 5"), "{text}");
        assert!(text.contains("waiting 9, running 2, 120 ms ago"), "{text}");
        assert!(
            text.contains("plan counts 11 requests in flight (reported; 4 connections)"),
            "{text}"
        );
        assert!(!text.contains("FAILED OPEN"), "{text}");
        let mut open = e.clone();
        open.vips[0].fail_open = true;
        assert!(render(&open).contains("FAILED OPEN"));
        assert!(render(&LoadExplain::default()).contains("no VIP has a [vip.load]"));
        // The JSON form is the same data, serialised.
        let json = serde_json::to_value(&e).expect("json");
        assert_eq!(json["vips"][0]["backends"][0]["saturated"], true);
    }
}
