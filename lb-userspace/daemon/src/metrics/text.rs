//! The OpenMetrics text encoder and the list of every family the daemon exports
//! ([`FAMILIES`]): the exposition refuses a family that is not listed, and the dashboard's
//! test checks its queries against the same list, so neither can drift.
//!
//! The order is stable: families sorted by name, series by their label values (in the
//! order the family's labels are given). Counters are exposed with `_total`, histograms
//! with `_bucket`/`_sum`/`_count`, infos with `_info`; a family with a unit carries it as
//! its name's last word and in a `# UNIT` line.

use std::{collections::BTreeMap, fmt::Write as _};

/// What a family is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// A constant 1 whose labels are the information (`…_info`).
    Info,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Info => "info",
        }
    }

    /// The suffixes of its samples' names.
    pub fn suffixes(self) -> &'static [&'static str] {
        match self {
            Self::Counter => &["_total"],
            Self::Gauge => &[""],
            Self::Histogram => &["_bucket", "_sum", "_count"],
            Self::Info => &["_info"],
        }
    }
}

/// One family: its name (without the sample suffix), kind, unit (the name's last word)
/// and help.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: &'static str,
    pub help: &'static str,
}

const fn spec(name: &'static str, kind: Kind, unit: &'static str, help: &'static str) -> Spec {
    Spec {
        name,
        kind,
        unit,
        help,
    }
}

use Kind::{Counter as C, Gauge as G, Histogram as H, Info as I};

/// Every family the daemon exports, sorted by name (one line each: a table).
#[rustfmt::skip]
pub const FAMILIES: &[Spec] = &[
    spec("process_cpu_seconds", C, "seconds", "User and system CPU time spent"),
    spec("process_max_fds", G, "", "Most open file descriptors allowed"),
    spec("process_open_fds", G, "", "Open file descriptors"),
    spec("process_resident_memory_bytes", G, "bytes", "Resident memory size"),
    spec("process_start_time_seconds", G, "seconds", "Start time of the process since the Unix epoch"),
    spec("process_threads", G, "", "Threads of the process"),
    spec("process_virtual_memory_bytes", G, "bytes", "Virtual memory size"),
    spec("sluice_announce_maintenance", G, "", "Whether every VIP address is withdrawn for maintenance (sluice announce withdraw --all)"),
    spec("sluice_api_errors", C, "", "API requests answered with an error, by request kind"),
    spec("sluice_api_requests", C, "", "API requests answered, by request kind (invalid: undecodable; refused: not allowed or too large)"),
    spec("sluice_autoscale_added", C, "", "Backends the autoscaler added"),
    spec("sluice_autoscale_decisions", C, "", "Autoscaler evaluations by outcome (up, down, hold)"),
    spec("sluice_autoscale_desired", G, "", "Backends the autoscaler wants serving"),
    spec("sluice_autoscale_failures", C, "", "Failed scale-outs (provider, health checks) and rejected autoscaler edits"),
    spec("sluice_autoscale_max", G, "", "Most backends the autoscaler may have serving (autoscale.max)"),
    spec("sluice_autoscale_min", G, "", "Fewest backends the autoscaler keeps serving (autoscale.min)"),
    spec("sluice_autoscale_provisioning", G, "", "Candidate backends being created or probed"),
    spec("sluice_autoscale_removed", C, "", "Backends the autoscaler drained, removed and released"),
    spec("sluice_autoscale_serving", G, "", "Backends serving (active and healthy)"),
    spec("sluice_backend_active_flows", G, "", "Open connections on a backend (kernel connection tracking)"),
    spec("sluice_backend_bytes", C, "bytes", "Bytes forwarded to a backend"),
    spec("sluice_backend_closes", C, "", "Connections on a backend closed (FIN/RST seen or moved)"),
    spec("sluice_backend_effective_weight", G, "", "Weight in the table now (0 while draining, ramping in slow start)"),
    spec("sluice_backend_health_checks", C, "", "Health checks run, by result (ok, failed)"),
    spec("sluice_backend_load_age_seconds", G, "seconds", "Age of the backend's last good load report"),
    spec("sluice_backend_load_errors", C, "", "Failed reads of the backend's load report"),
    spec("sluice_backend_load_kv_cache", G, "", "KV-cache use (0..1), as the backend's last load report said"),
    spec("sluice_backend_load_running", G, "", "Requests running, as the backend's last load report said"),
    spec("sluice_backend_load_waiting", G, "", "Requests waiting, as the backend's last load report said"),
    spec("sluice_backend_new_flows", C, "", "Flows opened to a backend"),
    spec("sluice_backend_packets", C, "", "Packets forwarded to a backend"),
    spec("sluice_backend_state", G, "", "Lifecycle state (1 for the current one)"),
    spec("sluice_backend_up", G, "", "1 when the backend passes its health checks"),
    spec("sluice_backend_weight", G, "", "Configured weight"),
    spec("sluice_build", I, "", "The running daemon's version, git revision and eBPF ABI epoch"),
    spec("sluice_config_fingerprint", I, "", "Fingerprint of the running configuration (equal on balancers configured alike)"),
    spec("sluice_conntrack_evicted", C, "", "Flows evicted by the conntrack sweep (closing flows, then flows never seen after their first packet, then the least recently seen) because the flow table was past 90% of daemon.flow_table_size"),
    spec("sluice_conntrack_expired", C, "", "Open flows expired for idleness by the conntrack sweep"),
    spec("sluice_cpu_new_flows", C, "", "Flows opened on each CPU (how RSS spreads new flows)"),
    spec("sluice_edits", C, "", "Live edits applied"),
    spec("sluice_fib_fallbacks", C, "", "Frames forwarded through the kernel's FIB (bpf_fib_lookup) because their backend's next hop was not resolved"),
    spec("sluice_flow_table_cpu_capacity", G, "", "Flows arriving on one CPU that the flow table holds: its capacity (one table for all CPUs)"),
    spec("sluice_flow_table_entries", G, "", "Flow-table entries found by the last conntrack sweep"),
    spec("sluice_flow_table_fill_ratio", G, "ratio", "Flow-table entries over its capacity (daemon.flow_table_size), at the last conntrack sweep"),
    spec("sluice_flow_table_region_slots", G, "", "Slots of the flow table's region in use: flows are hashed into it, and the daemon grows it (past 3/8 used) and shrinks it (under 1/16) so that packets touch memory in proportion to the flows, not to daemon.flow_table_size"),
    spec("sluice_flows_table_full", C, "", "New flows forwarded by their hash without a flow-table entry because their probe of the flow table found no free slot (daemon.flow_table_size)"),
    spec("sluice_flows_unpinned", C, "", "New flows forwarded by their hash without a flow-table entry because the flood guard's rate (daemon.new_flow_limit_per_cpu) was exceeded"),
    spec("sluice_health_check_duration_seconds", H, "seconds", "Time a health check took, per VIP and check kind"),
    spec("sluice_health_transitions", C, "", "Health transitions of a backend, by direction (up, down)"),
    spec("sluice_next_hops_unresolved", G, "", "Backends reached through a route whose next hop is not resolved"),
    spec("sluice_packets", C, "", "Packets by outcome (forwarded, passed, dropped and why), over all VIPs and the traffic for none"),
    spec("sluice_table_rebuilds", C, "", "Lookup tables built and published (Maglev tables and scheduler sequences)"),
    spec("sluice_vip_active_flows", G, "", "Open connections to a VIP (kernel connection tracking)"),
    spec("sluice_vip_announced", G, "", "Whether the VIP address is announced (its route installed for the BGP speaker)"),
    spec("sluice_vip_bytes", C, "bytes", "Bytes forwarded for a VIP"),
    spec("sluice_vip_closes", C, "", "Connections to a VIP closed (FIN/RST seen or moved)"),
    spec("sluice_vip_new_flows", C, "", "Flows opened to a VIP"),
    spec("sluice_vip_packets", C, "", "Packets forwarded for a VIP"),
    spec("sluice_vip_reason_packets", C, "", "Packets addressed to a VIP by outcome (forwarded, dropped and why)"),
    spec("sluice_vip_table_fingerprint", I, "", "Fingerprint of the VIP's lookup table as backend addresses (equal on balancers that send its new flows to the same backends)"),
];

/// The sample names a family exposes (`sluice_vip_packets` → `sluice_vip_packets_total`).
pub fn sample_names(s: &Spec) -> impl Iterator<Item = String> + '_ {
    s.kind.suffixes().iter().map(|x| format!("{}{x}", s.name))
}

/// Every sample name the daemon exports (what a PromQL selector may name).
pub fn exported_names() -> Vec<String> {
    FAMILIES.iter().flat_map(sample_names).collect()
}

/// The listed family `name`: one not listed is a bug, a panic in tests (the unit tests
/// render every family), skipped in a release build rather than failing the scrape.
fn find(name: &str) -> Option<&'static Spec> {
    let found = FAMILIES
        .binary_search_by(|s| s.name.cmp(name))
        .ok()
        .map(|i| &FAMILIES[i]);
    debug_assert!(
        found.is_some(),
        "metric family {name} is not in metrics::text::FAMILIES"
    );
    found
}

/// Label names and values of one series, in the family's order.
pub type Labels = Vec<(&'static str, String)>;

/// A histogram's figures: cumulative counts per upper bound (`+Inf` last, implied), sum,
/// count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramValue {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

#[derive(Clone, Debug)]
enum Value {
    Int(u64),
    Signed(i64),
    Float(f64),
    Histogram(HistogramValue),
}

/// The families of one scrape, built in any order and written sorted.
#[derive(Debug, Default)]
pub struct Exposition {
    families: BTreeMap<&'static str, BTreeMap<Labels, Value>>,
}

impl Exposition {
    fn put(&mut self, name: &str, labels: Labels, v: Value) {
        if let Some(s) = find(name) {
            self.families.entry(s.name).or_default().insert(labels, v);
        }
    }

    /// A counter's value (added to what the series has).
    pub fn counter(&mut self, name: &str, labels: Labels, n: u64) {
        let Some(s) = find(name) else { return };
        debug_assert_eq!(s.kind, Kind::Counter, "{name}");
        let e = self.families.entry(s.name).or_default();
        match e.entry(labels).or_insert(Value::Int(0)) {
            Value::Int(v) => *v += n,
            other => *other = Value::Int(n),
        }
    }

    /// A counter of a fractional value (CPU seconds).
    pub fn counter_f64(&mut self, name: &str, labels: Labels, v: f64) {
        self.put(name, labels, Value::Float(v));
    }

    pub fn gauge(&mut self, name: &str, labels: Labels, v: i64) {
        self.put(name, labels, Value::Signed(v));
    }

    pub fn gauge_f64(&mut self, name: &str, labels: Labels, v: f64) {
        self.put(name, labels, Value::Float(v));
    }

    /// An info: one series of value 1.
    pub fn info(&mut self, name: &str, labels: Labels) {
        self.put(name, labels, Value::Int(1));
    }

    pub fn histogram(&mut self, name: &str, labels: Labels, h: HistogramValue) {
        self.put(name, labels, Value::Histogram(h));
    }

    /// The OpenMetrics text: families sorted by name, series by label values, `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (name, series) in &self.families {
            let Some(s) = find(name) else { continue };
            let _ = writeln!(out, "# HELP {name} {}", escape_help(s.help));
            let _ = writeln!(out, "# TYPE {name} {}", s.kind.as_str());
            // `# UNIT` for counters and gauges only: the unit is the name's last word in
            // every case, and a histogram's `# UNIT` line, valid OpenMetrics, is refused by
            // some parsers (openmetrics-parser, the one our test uses).
            if !s.unit.is_empty() && matches!(s.kind, Kind::Counter | Kind::Gauge) {
                let _ = writeln!(out, "# UNIT {name} {}", s.unit);
            }
            for (labels, v) in series {
                sample(&mut out, s, labels, v);
            }
        }
        out.push_str("# EOF\n");
        out
    }
}

fn sample(out: &mut String, s: &Spec, labels: &Labels, v: &Value) {
    let name = s.name;
    let suffix = s.kind.suffixes()[0];
    match v {
        Value::Int(n) => line(out, name, suffix, labels, None, &n.to_string()),
        Value::Signed(n) => line(out, name, suffix, labels, None, &n.to_string()),
        Value::Float(f) => line(out, name, suffix, labels, None, &float(*f)),
        Value::Histogram(h) => {
            for (le, n) in &h.buckets {
                line(
                    out,
                    name,
                    "_bucket",
                    labels,
                    Some(&float(*le)),
                    &n.to_string(),
                );
            }
            line(
                out,
                name,
                "_bucket",
                labels,
                Some("+Inf"),
                &h.count.to_string(),
            );
            line(out, name, "_sum", labels, None, &float(h.sum));
            line(out, name, "_count", labels, None, &h.count.to_string());
        }
    }
}

fn line(out: &mut String, name: &str, suffix: &str, labels: &Labels, le: Option<&str>, v: &str) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        let le = le.map(|l| ("le", l.to_owned()));
        for (k, val) in labels.iter().chain(le.iter()) {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{k}=\"{}\"", escape_label(val));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(v);
    out.push('\n');
}

/// A float as OpenMetrics writes it (`1.0`, `0.25`, `+Inf`, `NaN`).
fn float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_unique_and_follows_the_naming_rules() {
        for w in FAMILIES.windows(2) {
            assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
        }
        for s in FAMILIES {
            assert!(
                s.name.starts_with("sluice_") || s.name.starts_with("process_"),
                "{}",
                s.name
            );
            assert!(
                !s.name.ends_with("_total"),
                "{}: the suffix is added",
                s.name
            );
            assert!(
                s.unit.is_empty() || s.name.ends_with(&format!("_{}", s.unit)),
                "{}: the unit is the name's last word",
                s.name
            );
            // Base units only, and the unit declared where the name says one.
            for (word, unit) in [("_seconds", "seconds"), ("_bytes", "bytes")] {
                if s.name.ends_with(word) {
                    assert_eq!(s.unit, unit, "{}", s.name);
                }
            }
            for bad in ["_ms", "_millis", "_kb", "_mb", "_percent"] {
                assert!(!s.name.ends_with(bad), "{}: not a base unit", s.name);
            }
            assert!(!s.help.is_empty(), "{}", s.name);
        }
    }

    #[test]
    fn series_come_out_sorted_and_escaped() {
        let mut e = Exposition::default();
        e.counter("sluice_edits", Vec::new(), 2);
        e.counter("sluice_packets", vec![("reason", "b".into())], 1);
        e.counter("sluice_packets", vec![("reason", "a\"\\".into())], 3);
        e.histogram(
            "sluice_health_check_duration_seconds",
            vec![("vip", "web".into())],
            HistogramValue {
                buckets: vec![(0.5, 1)],
                sum: 0.25,
                count: 2,
            },
        );
        let text = e.encode();
        let want = "\
# HELP sluice_edits Live edits applied
# TYPE sluice_edits counter
sluice_edits_total 2
# HELP sluice_health_check_duration_seconds Time a health check took, per VIP and check kind
# TYPE sluice_health_check_duration_seconds histogram
sluice_health_check_duration_seconds_bucket{vip=\"web\",le=\"0.5\"} 1
sluice_health_check_duration_seconds_bucket{vip=\"web\",le=\"+Inf\"} 2
sluice_health_check_duration_seconds_sum{vip=\"web\"} 0.25
sluice_health_check_duration_seconds_count{vip=\"web\"} 2
";
        assert!(text.starts_with(want), "{text}");
        let a = text.find(r#"reason="a\"\\""#).unwrap();
        let b = text.find(r#"reason="b""#).unwrap();
        assert!(a < b, "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    #[should_panic(expected = "not in metrics::text::FAMILIES")]
    fn an_unlisted_family_is_refused() {
        Exposition::default().gauge("sluice_nothing", Vec::new(), 1);
    }
}
