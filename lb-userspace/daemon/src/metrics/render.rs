//! A status snapshot as metric families. VIP series carry `vip` (its name), `address`,
//! `port` and `protocol`; backend series carry their VIP's name (`vip`) and `backend`
//! (its address).

use sluice_core::announce::AnnounceStatus;

use super::text::{Exposition, Labels};
use crate::{
    autoscale::driver::AutoscaleStatus,
    health::Health,
    state::{BackendStatus, Status, VipStatus},
};

/// `10.0.0.1:80/tcp` or `[2001:db8::1]:443/udp` as (address, port, protocol).
pub fn split_vip(vip: &str) -> (String, String, String) {
    let (rest, proto) = vip.rsplit_once('/').unwrap_or((vip, ""));
    let (addr, port) = rest.rsplit_once(':').unwrap_or((rest, ""));
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    (addr.to_owned(), port.to_owned(), proto.to_owned())
}

fn vip_labels(v: &VipStatus) -> Labels {
    let (address, port, protocol) = split_vip(&v.vip);
    vec![
        ("vip", v.name.clone()),
        ("address", address),
        ("port", port),
        ("protocol", protocol),
    ]
}

fn with(mut l: Labels, k: &'static str, v: impl Into<String>) -> Labels {
    l.push((k, v.into()));
    l
}

pub(super) fn gauge_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The families of a status snapshot and the daemon's counts.
pub fn build(
    status: &Status,
    edits: u64,
    tables_built: u64,
    scaled: &AutoscaleStatus,
    announce: Option<&AnnounceStatus>,
) -> Exposition {
    let mut e = Exposition::default();
    for v in &status.vips {
        vip(&mut e, v);
    }
    for (name, n) in &status.reasons {
        e.counter("sluice_packets", vec![("reason", name.clone())], *n);
    }
    totals(&mut e, status, edits, tables_built);
    autoscale(&mut e, scaled);
    if let Some(a) = announce {
        announced(&mut e, a);
    }
    e
}

/// A VIP's figures and its backends'.
fn vip(e: &mut Exposition, v: &VipStatus) {
    let l = vip_labels(v);
    e.counter("sluice_vip_packets", l.clone(), v.packets);
    e.counter("sluice_vip_bytes", l.clone(), v.bytes);
    e.counter("sluice_vip_new_flows", l.clone(), v.new_flows);
    e.gauge("sluice_vip_active_flows", l.clone(), gauge_u64(v.active));
    e.counter(
        "sluice_vip_closes",
        l.clone(),
        v.backends.iter().map(|b| b.closes).sum(),
    );
    for (reason, n) in &v.reasons {
        e.counter(
            "sluice_vip_reason_packets",
            with(l.clone(), "reason", reason.clone()),
            *n,
        );
    }
    if !v.fingerprint.is_empty() {
        e.info(
            "sluice_vip_table_fingerprint",
            with(l, "fingerprint", v.fingerprint.clone()),
        );
    }
    for b in &v.backends {
        backend(e, v, b);
    }
}

/// A backend's figures, and its lifecycle state (one series per state, 1 for the
/// current one).
fn backend(e: &mut Exposition, v: &VipStatus, b: &BackendStatus) {
    let l: Labels = vec![("vip", v.name.clone()), ("backend", b.address.to_string())];
    e.counter("sluice_backend_packets", l.clone(), b.packets);
    e.counter("sluice_backend_bytes", l.clone(), b.bytes);
    e.counter("sluice_backend_new_flows", l.clone(), b.new_flows);
    e.gauge(
        "sluice_backend_up",
        l.clone(),
        i64::from(b.health == Health::Up),
    );
    e.gauge("sluice_backend_weight", l.clone(), i64::from(b.weight));
    e.gauge(
        "sluice_backend_effective_weight",
        l.clone(),
        i64::from(b.effective_weight),
    );
    e.gauge(
        "sluice_backend_active_flows",
        l.clone(),
        gauge_u64(b.active),
    );
    e.counter("sluice_backend_closes", l.clone(), b.closes);
    let down = b.transitions_down.min(b.transitions);
    for (direction, n) in [("up", b.transitions - down), ("down", down)] {
        e.counter(
            "sluice_health_transitions",
            with(l.clone(), "direction", direction),
            n,
        );
    }
    let failed = b.failed_checks.min(b.checks);
    for (result, n) in [("ok", b.checks - failed), ("failed", failed)] {
        e.counter(
            "sluice_backend_health_checks",
            with(l.clone(), "result", result),
            n,
        );
    }
    // The daemon's own state, as `backend list` shows it (old status files: "").
    let state = match b.lifecycle.as_str() {
        "" => "active",
        s => s,
    };
    for s in crate::state::LIFECYCLE_STATES {
        e.gauge(
            "sluice_backend_state",
            with(l.clone(), "state", s),
            i64::from(s == state),
        );
    }
    if let Some(load) = &b.load {
        for (name, value) in [
            ("sluice_backend_load_waiting", load.waiting),
            ("sluice_backend_load_running", load.running),
            ("sluice_backend_load_kv_cache", load.kv_cache),
        ] {
            if let Some(x) = value {
                e.gauge_f64(name, l.clone(), x);
            }
        }
        if let Some(ms) = load.age_ms {
            #[expect(clippy::cast_precision_loss, reason = "an age in seconds")]
            e.gauge_f64(
                "sluice_backend_load_age_seconds",
                l.clone(),
                ms as f64 / 1000.0,
            );
        }
        e.counter("sluice_backend_load_errors", l, load.errors);
    }
}

/// The daemon-wide counters: live edits, table builds, FIB fallbacks, unpinned flows (flood
/// guard, full table), unresolved next hops, flows expired and evicted by the sweep, the
/// configuration's fingerprint.
fn totals(e: &mut Exposition, status: &Status, edits: u64, tables_built: u64) {
    e.counter("sluice_edits", Vec::new(), edits);
    e.counter("sluice_table_rebuilds", Vec::new(), tables_built);
    e.counter("sluice_fib_fallbacks", Vec::new(), status.fib_fallbacks);
    e.counter("sluice_flows_unpinned", Vec::new(), status.unpinned_flows);
    e.counter(
        "sluice_flows_table_full",
        Vec::new(),
        status.table_full_flows,
    );
    let unresolved = status
        .vips
        .iter()
        .flat_map(|v| &v.backends)
        .filter(|b| b.next_hop.as_ref().is_some_and(|h| !h.resolved))
        .count();
    e.gauge(
        "sluice_next_hops_unresolved",
        Vec::new(),
        gauge_u64(unresolved as u64),
    );
    e.counter(
        "sluice_conntrack_expired",
        Vec::new(),
        status.conntrack.expired,
    );
    e.counter(
        "sluice_conntrack_evicted",
        Vec::new(),
        status.conntrack.evicted,
    );
    if !status.config_fingerprint.is_empty() {
        e.info(
            "sluice_config_fingerprint",
            vec![("fingerprint", status.config_fingerprint.clone())],
        );
    }
}

/// The autoscaler's decisions, counts and actions per scaled VIP (by VIP name).
fn autoscale(e: &mut Exposition, scaled: &AutoscaleStatus) {
    for v in &scaled.vips {
        let l: Labels = vec![("vip", v.name.clone())];
        for (d, n) in [
            ("up", v.decisions_up),
            ("down", v.decisions_down),
            ("hold", v.decisions_hold),
        ] {
            e.counter(
                "sluice_autoscale_decisions",
                with(l.clone(), "direction", d),
                n,
            );
        }
        e.gauge("sluice_autoscale_desired", l.clone(), i64::from(v.desired));
        e.gauge("sluice_autoscale_serving", l.clone(), i64::from(v.serving));
        e.counter("sluice_autoscale_added", l.clone(), v.added);
        e.counter("sluice_autoscale_removed", l.clone(), v.removed);
        e.counter("sluice_autoscale_failures", l, v.failures);
    }
}

/// `[daemon.announce]`: per VIP address whether its route is installed, and maintenance.
fn announced(e: &mut Exposition, a: &AnnounceStatus) {
    for x in &a.addresses {
        e.gauge(
            "sluice_vip_announced",
            vec![("address", x.address.to_string())],
            i64::from(x.announced),
        );
    }
    e.gauge(
        "sluice_announce_maintenance",
        Vec::new(),
        i64::from(a.maintenance),
    );
}

/// The flow table at the last sweep: entries, fill, and how many flows arriving on one CPU
/// it holds (`one_cpu`).
pub fn flow_table(e: &mut Exposition, status: &Status, capacity: u64, one_cpu: u64) {
    if capacity == 0 {
        return;
    }
    e.gauge(
        "sluice_flow_table_cpu_capacity",
        Vec::new(),
        gauge_u64(one_cpu),
    );
    if let Some(n) = status.conntrack.last_sweep_flows {
        e.gauge("sluice_flow_table_entries", Vec::new(), gauge_u64(n));
        #[expect(clippy::cast_precision_loss, reason = "a ratio")]
        e.gauge_f64(
            "sluice_flow_table_fill_ratio",
            Vec::new(),
            n as f64 / capacity as f64,
        );
    }
    if status.conntrack.region_slots != 0 {
        e.gauge(
            "sluice_flow_table_region_slots",
            Vec::new(),
            gauge_u64(status.conntrack.region_slots),
        );
    }
}

/// Flows opened on each CPU: how RSS spreads new flows.
pub fn per_cpu(e: &mut Exposition, new_flows: &[u64]) {
    for (cpu, n) in new_flows.iter().enumerate() {
        e.counter("sluice_cpu_new_flows", vec![("cpu", cpu.to_string())], *n);
    }
}

/// `sluice_build_info`.
pub fn build_info(e: &mut Exposition, version: &str, revision: &str) {
    e.info(
        "sluice_build",
        vec![
            ("version", version.to_owned()),
            ("revision", revision.to_owned()),
            ("abi_epoch", lb_common::ABI_EPOCH.to_string()),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_strings_split() {
        let s = |a: &str, p: &str, q: &str| (a.to_owned(), p.to_owned(), q.to_owned());
        assert_eq!(split_vip("10.0.0.1:80/tcp"), s("10.0.0.1", "80", "tcp"));
        assert_eq!(
            split_vip("[2001:db8::1]:0/udp"),
            s("2001:db8::1", "0", "udp")
        );
    }
}
