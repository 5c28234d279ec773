//! The metrics (issue 16): the exposition parses with an OpenMetrics parser other than our
//! encoder (`openmetrics-parser`), from a synthetic snapshot and from a real scrape of a
//! running daemon with traffic, health checks and API requests; and every query of the
//! Grafana dashboard (`config/grafana/sluice.json`) parses as PromQL (`promql-parser`) and
//! names only series the daemon exports (`sluice_daemon::metrics::text::FAMILIES`, the
//! list the exposition itself is checked against).
//!
//! The daemon test builds its own lab (prefix `sl-met-<pid>-<n>`), removed when it drops,
//! also on failure; every wait is bounded.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue, openmetrics};
use promql_parser::{
    parser::{self, Expr},
    util::{ExprVisitor, walk_expr},
};
use sluice_core::config::CheckKind;
use sluice_daemon::{
    api::{Request, client},
    metrics::text::{FAMILIES, exported_names},
};
use sluice_lab::{
    conn,
    lab::{Lab, LabSpec, TCP_PORT, Weights, daemon::Daemon},
};
use sluice_tests::{prefix, require_root, serial};

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// Parse `text` as OpenMetrics, or fail with the parser's error and the text.
fn parse(text: &str) -> Exposition {
    match openmetrics::parse_openmetrics(text) {
        Ok(e) => e,
        Err(e) => panic!("the exposition does not parse as OpenMetrics: {e:?}\n{text}"),
    }
}

/// Every family of an exposition is one the daemon lists, with the listed type.
fn check_listed(e: &Exposition) {
    for (name, f) in &e.families {
        let spec = FAMILIES
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} is exposed but not in FAMILIES"));
        let want = match spec.kind {
            sluice_daemon::metrics::text::Kind::Counter => OpenMetricsType::Counter,
            sluice_daemon::metrics::text::Kind::Gauge => OpenMetricsType::Gauge,
            sluice_daemon::metrics::text::Kind::Histogram => OpenMetricsType::Histogram,
            sluice_daemon::metrics::text::Kind::Info => OpenMetricsType::Info,
        };
        assert_eq!(f.family_type, want, "{name}");
    }
}

/// The samples of family `name` as (labels, value).
fn samples(e: &Exposition, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let Some(f) = e.families.get(name) else {
        return Vec::new();
    };
    f.iter_samples()
        .filter_map(|s| {
            let labels = s
                .get_labelset()
                .ok()?
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let v = match &s.value {
                OpenMetricsValue::Counter(c) => c.value.as_f64(),
                OpenMetricsValue::Gauge(g) => g.as_f64(),
                OpenMetricsValue::Unknown(g) => g.as_f64(),
                OpenMetricsValue::Histogram(h) => h.count.unwrap_or(0) as f64,
                _ => 1.0,
            };
            Some((labels, v))
        })
        .collect()
}

/// The daemon's `GET /metrics` body, in the lab's load-balancer namespace.
fn scrape(lab: &Lab) -> anyhow::Result<String> {
    let (head, body) = sluice_tests::api::scrape(lab, Duration::from_secs(5))?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body)
}

#[test]
fn a_real_scrape_parses_and_has_every_kind_of_family() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("met", "scrape")).backends(2)).expect("the lab");
    let mut config = lab.daemon_config(&Weights::Equal).expect("its config");
    // Checks every 200 ms, so that a few seconds give durations and transitions.
    for v in &mut config.vips {
        v.health.check = CheckKind::Tcp;
        v.health.interval_ms = 200;
        v.health.rise = 1;
        v.health.fall = 1;
    }
    let socket = config.daemon.api_socket.clone();
    let d = Daemon::start(&lab, config).expect("the daemon");
    let to = SocketAddr::new(lab.vip4().into(), TCP_PORT);
    let per = conn::connections(lab.client(0), to, 6).expect("connections through the VIP");
    assert_eq!(per.values().sum::<usize>(), 6, "{per:?}");
    client::request(&socket, &Request::Status { flows: false }).expect("an API request");
    // A backend's server stops: its checks fail, it goes down (a transition with its
    // direction).
    let down = lab.backend(1).addr4();
    lab.kill_backend_server(1).expect("stop backend 1's server");
    // The snapshot is taken every second: wait for one with everything in it.
    let t0 = Instant::now();
    let (text, e) = loop {
        let text = scrape(&lab).expect("a scrape");
        let e = parse(&text);
        let transitioned = samples(&e, "sluice_health_transitions")
            .iter()
            .any(|(l, v)| l["direction"] == "down" && *v >= 1.0);
        let checked = !samples(&e, "sluice_health_check_duration_seconds").is_empty();
        if (transitioned && checked) || t0.elapsed() > Duration::from_secs(20) {
            break (text, e);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    check_listed(&e);
    println!(
        "scrape: {} families, {} lines, {} bytes, after {:?}",
        e.families.len(),
        text.lines().count(),
        text.len(),
        t0.elapsed()
    );
    for want in [
        "sluice_vip_packets",
        "sluice_vip_bytes",
        "sluice_vip_reason_packets",
        "sluice_packets",
        "sluice_backend_up",
        "sluice_backend_state",
        "sluice_health_transitions",
        "sluice_backend_health_checks",
        "sluice_health_check_duration_seconds",
        "sluice_api_requests",
        "sluice_api_errors",
        "sluice_build",
        "sluice_flow_table_cpu_capacity",
        "sluice_config_fingerprint",
        "sluice_vip_table_fingerprint",
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(e.families.contains_key(want), "{want} missing from\n{text}");
    }
    // The VIP's series carry its name and its address split; its forwarded packets are
    // counted in its own reason row, and the global figure holds them.
    let fwd = |name: &str| -> f64 {
        samples(&e, name)
            .iter()
            .filter(|(l, _)| {
                l.get("reason").map(String::as_str) == Some("fwd_tx")
                    && l.get("vip").is_none_or(|v| v == "lab-tcp4")
            })
            .map(|(_, v)| v)
            .sum()
    };
    let vip_fwd = fwd("sluice_vip_reason_packets");
    assert!(vip_fwd >= 12.0, "fwd_tx of lab-tcp4: {vip_fwd}\n{text}");
    assert!(fwd("sluice_packets") >= vip_fwd, "{text}");
    let vip = samples(&e, "sluice_vip_packets");
    let (l, n) = vip
        .iter()
        .find(|(l, _)| l["vip"] == "lab-tcp4")
        .expect("lab-tcp4's packets");
    assert_eq!(
        (
            l["address"].as_str(),
            l["port"].as_str(),
            l["protocol"].as_str()
        ),
        (
            lab.vip4().to_string().as_str(),
            TCP_PORT.to_string().as_str(),
            "tcp"
        )
    );
    assert!(*n >= 12.0, "{n}");
    // Backend series by VIP name; the stopped backend went down.
    assert!(
        samples(&e, "sluice_health_transitions")
            .iter()
            .any(|(l, v)| {
                l["vip"] == "lab-tcp4"
                    && l["backend"] == down.to_string()
                    && l["direction"] == "down"
                    && *v >= 1.0
            }),
        "{text}"
    );
    assert!(
        samples(&e, "sluice_api_requests")
            .iter()
            .any(|(l, v)| l["request"] == "status" && *v >= 1.0),
        "{text}"
    );
    let build = samples(&e, "sluice_build");
    assert_eq!(build.len(), 1, "{text}");
    assert_eq!(build[0].0["abi_epoch"], lb_common::ABI_EPOCH.to_string());
    // Stable order: two scrapes list the same families and series in the same order.
    let shape = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit_once(' ').map_or(l, |(k, _)| k).to_owned())
            .collect()
    };
    let again = scrape(&lab).expect("a second scrape");
    let (a, b) = (shape(&text), shape(&again));
    let common: BTreeSet<&String> = a.iter().collect::<BTreeSet<_>>();
    let b_in_a: Vec<&String> = b.iter().filter(|s| common.contains(s)).collect();
    let a_in_b: Vec<&String> = {
        let bs: BTreeSet<&String> = b.iter().collect();
        a.iter().filter(|s| bs.contains(s)).collect()
    };
    assert_eq!(a_in_b, b_in_a, "series order changed between scrapes");
    d.stop().expect("stop the daemon");
}

/// The families a VIP and the daemon-wide counters give, from a synthetic snapshot (no
/// root needed): every line parses.
#[test]
fn a_synthetic_exposition_parses() {
    use sluice_daemon::{health::Health, metrics, state};
    let status = state::Status {
        written: 0,
        vips: vec![state::VipStatus {
            name: "web \"quoted\"\\".into(),
            vip: "[2001:db8::1]:443/tcp".into(),
            forwarding: "dsr".into(),
            scheduler: "maglev".into(),
            check: "tcp".into(),
            packets: 10,
            bytes: 1000,
            new_flows: 2,
            active: 1,
            fingerprint: "00112233445566ff".into(),
            reasons: [("fwd_tx".to_owned(), 10u64)].into_iter().collect(),
            backends: Vec::new(),
        }],
        reasons: [("fwd_tx".to_owned(), 12u64)].into_iter().collect(),
        conntrack: state::ConntrackStatus {
            last_sweep_flows: Some(10),
            region_slots: 1 << 17,
            ..Default::default()
        },
        config_fingerprint: "aa".into(),
        fib_fallbacks: 0,
        unpinned_flows: 0,
        table_full_flows: 0,
    };
    let _ = Health::Up;
    metrics::live().api_request("status", false);
    metrics::live()
        .check_latency("web", "tcp")
        .observe(Duration::from_millis(3));
    let snap = metrics::Snapshot {
        status: Some(std::sync::Arc::new(status)),
        flow_capacity: 1024,
        flows_one_cpu: 1024,
        ..Default::default()
    };
    let text = snap.render();
    let e = parse(&text);
    check_listed(&e);
    assert!(
        e.families
            .contains_key("sluice_health_check_duration_seconds"),
        "{text}"
    );
    let fill = samples(&e, "sluice_flow_table_fill_ratio");
    assert_eq!(fill.len(), 1, "{text}");
    assert!((fill[0].1 - 10.0 / 1024.0).abs() < 1e-9, "{text}");
    let region = samples(&e, "sluice_flow_table_region_slots");
    assert_eq!(region.len(), 1, "{text}");
    assert!((region[0].1 - f64::from(1 << 17)).abs() < 0.5, "{text}");
}

/// Metric names a PromQL expression's selectors use.
#[derive(Default)]
struct Names(BTreeSet<String>, Vec<String>);

impl ExprVisitor for Names {
    type Error = String;
    fn pre_visit(&mut self, e: &Expr) -> Result<bool, String> {
        let vs = match e {
            Expr::VectorSelector(vs) => Some(vs),
            Expr::MatrixSelector(m) => Some(&m.vs),
            _ => None,
        };
        if let Some(vs) = vs {
            match &vs.name {
                Some(n) => {
                    self.0.insert(n.clone());
                }
                None => self.1.push(format!("{vs}")),
            }
        }
        Ok(true)
    }
}

/// Grafana's interval variables as a duration, so that the query is PromQL.
fn promql_of(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
}

/// Every `expr` of the dashboard, and every `label_values(SELECTOR, label)` variable
/// query's selector.
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("definition", serde_json::Value::String(s)) => {
                        let inner = s
                            .strip_prefix("label_values(")
                            .and_then(|r| r.strip_suffix(')'))
                            .and_then(|r| r.rsplit_once(','))
                            .map(|(sel, _)| sel.to_owned())
                            .unwrap_or_else(|| panic!("variable query {s:?}: not label_values"));
                        out.push(inner);
                    }
                    _ => queries(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| queries(x, out)),
        _ => {}
    }
}

#[test]
fn every_dashboard_query_parses_and_names_exported_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/grafana/sluice.json");
    let text = std::fs::read_to_string(path).expect("the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut all = Vec::new();
    queries(&dash, &mut all);
    assert!(all.len() >= 30, "only {} queries found", all.len());
    let exported: BTreeSet<String> = exported_names().into_iter().collect();
    let mut used = BTreeSet::new();
    for q in &all {
        let expr = parser::parse(&promql_of(q)).unwrap_or_else(|e| panic!("{q:?}: {e}"));
        let mut names = Names::default();
        walk_expr(&mut names, &expr).expect("a walk");
        assert!(
            names.1.is_empty(),
            "{q:?}: selectors without a name {:?}",
            names.1
        );
        assert!(!names.0.is_empty(), "{q:?} selects nothing");
        for n in &names.0 {
            assert!(
                exported.contains(n),
                "{q:?} uses {n}, which sluice does not export"
            );
        }
        used.extend(names.0);
    }
    // The four parts of the dashboard are there, and use their families.
    let titles: Vec<&str> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert_eq!(
        titles,
        [
            "Fleet overview",
            "Per-VIP traffic and drops",
            "Backend health and lifecycle",
            "Autoscaler decisions"
        ]
    );
    for want in [
        "sluice_vip_reason_packets_total",
        "sluice_health_transitions_total",
        "sluice_health_check_duration_seconds_bucket",
        "sluice_autoscale_decisions_total",
        "sluice_build_info",
    ] {
        assert!(used.contains(want), "the dashboard does not use {want}");
    }
    // Every panel queries through the datasource variable.
    for p in dash["panels"].as_array().expect("panels") {
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
}

/// Pins of a test, removed when dropped (also on failure).
struct PinDir(std::path::PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = sluice_dataplane::pinned::remove_pin_dir(&self.0, sluice_dataplane::LINK_PIN);
        let _ = std::fs::remove_dir(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("layout.json"));
    }
}

impl PinDir {
    /// A pin directory for this test process, `tag` telling the tests apart.
    fn new(tag: &str) -> Self {
        Self(std::path::PathBuf::from(format!(
            "/sys/fs/bpf/sl-{tag}-{}",
            std::process::id()
        )))
    }

    /// How a daemon on `lo` pins in it.
    fn config(&self) -> sluice_dataplane::PinConfig {
        sluice_dataplane::PinConfig {
            dir: self.0.clone(),
            interface: "lo".to_owned(),
            layout_file: self.0.with_extension("layout.json"),
            keep: true,
        }
    }
}

/// Small tables for the adoption tests.
const PIN_SIZES: sluice_dataplane::Sizes = sluice_dataplane::Sizes {
    flow_entries: 4096,
    table_slots: 4096,
    vips: lb_common::DEFAULT_VIP_CAPACITY,
    backend_slots: lb_common::DEFAULT_BACKEND_CAPACITY,
};

/// A daemon upgraded from a build without per-VIP reason counters adopts every pinned
/// map and creates `VIP_REASONS` anew (its counters start at zero), pinned for the next.
#[test]
fn the_per_vip_reason_map_is_created_when_adopting_older_pins() {
    use sluice_dataplane::Dataplane;
    require_root();
    let _serial = serial();
    let dir = PinDir::new("met");
    let cfg = || dir.config();
    let sizes = PIN_SIZES;
    let (mut dp, first) = Dataplane::load_pinned(sizes, cfg()).expect("a first load");
    assert!(first.maps.is_empty(), "{first:?}");
    dp.stop().expect("stop, keeping the pins");
    drop(dp);
    // The previous layout: every map but the per-VIP reasons.
    std::fs::remove_file(dir.0.join(lb_common::names::VIP_REASONS)).expect("unpin it");
    let (mut dp, second) = Dataplane::load_pinned(sizes, cfg()).expect("the upgrade");
    assert_eq!(second.new, [lb_common::names::VIP_REASONS], "{second:?}");
    assert!(
        second.maps.iter().any(|m| m == lb_common::names::REASONS),
        "{second:?}"
    );
    assert!(dir.0.join(lb_common::names::VIP_REASONS).exists());
    let (global, per_vip) = dp.reason_counts_split().expect("the counters read");
    assert_eq!(global.len(), lb_common::reason::COUNT as usize);
    assert!(per_vip.iter().flatten().all(|&n| n == 0));
    dp.stop_removing().expect("remove the pins");
}

/// `bpf(cmd, attr)` with a zeroed 128-byte attribute block whose leading words are `words`
/// (the layouts of `union bpf_attr` this test needs are all leading `u32`/`u64` fields).
fn bpf_raw(cmd: libc::c_long, words: &[u32]) -> std::io::Result<i64> {
    let mut attr = [0u32; 32];
    attr[..words.len()].copy_from_slice(words);
    // SAFETY: the kernel reads at most `size_of_val(&attr)` bytes of a live, zero-padded
    // buffer; every pointer in it points at memory that outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size_of_val(&attr)) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A pointer as the two `u32` words of a `__aligned_u64` field.
fn ptr_words<T>(p: *const T) -> [u32; 2] {
    let v = p as u64;
    [v as u32, (v >> 32) as u32]
}

/// A daemon upgraded from a build whose flow table was a kernel hash map (a plain hash, or
/// an LRU hash with one common LRU or per-CPU lists) moves that table's flows into its own
/// table of slots: every flow keeps its backend, and the new table takes the pin.
#[test]
fn an_older_hash_flow_table_moves_its_flows_into_the_new_table() {
    use sluice_dataplane::Dataplane;
    require_root();
    let _serial = serial();
    let dir = PinDir::new("lru");
    let cfg = || dir.config();
    let sizes = PIN_SIZES;
    let (mut dp, _) = Dataplane::load_pinned(sizes, cfg()).expect("a first load");
    assert_eq!(dp.flows_one_cpu_holds(), 4096, "one table for all CPUs");
    dp.stop().expect("stop, keeping the pins");
    drop(dp);
    const BPF_MAP_TYPE_HASH: u32 = 1;
    const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
    const BPF_F_NO_COMMON_LRU: u32 = 2;
    for (map_type, flags, crashed) in [
        (BPF_MAP_TYPE_HASH, 0, false),
        (BPF_MAP_TYPE_LRU_HASH, BPF_F_NO_COMMON_LRU, false),
        (BPF_MAP_TYPE_LRU_HASH, 0, true),
    ] {
        older_flows_moved(&dir, map_type, flags, crashed);
    }
    let (mut dp, _) = Dataplane::load_pinned(sizes, cfg()).expect("a last load");
    dp.stop_removing().expect("remove the pins");
}

/// Pins of round six (no `FLOW_REGION`: its flows spread over the whole table) are adopted
/// with the whole table as the region; a region a daemon left changing size is settled by
/// the next one at start. Every flow is found throughout.
#[test]
fn the_flow_region_is_adopted_from_older_pins_and_settled_after_a_stop() {
    use lb_common::{FlowRegion, names};
    use sluice_dataplane::Dataplane;
    require_root();
    let _serial = serial();
    let dir = PinDir::new("region");
    let cfg = || dir.config();
    let (mut dp, _) = Dataplane::load_pinned(PIN_SIZES, cfg()).expect("a first load");
    let slots = dp.flow_table().slots();
    let flow = |n: u32| {
        let key = sluice_tests::frames::Spec::tcp(
            &format!("192.0.2.{}", 1 + n % 200),
            20_000 + n as u16,
            "10.0.0.10",
            80,
            0x10,
        )
        .key();
        let value = lb_common::FlowValue {
            backend_id: 1 + n % 5,
            generation: 1,
            last_seen: 5,
            state: lb_common::FLOW_OPEN,
        };
        (key, value)
    };
    for n in 0..1000 {
        let (k, v) = flow(n);
        assert_eq!(
            dp.flow_table().insert(&k, &v),
            sluice_dataplane::Inserted::Taken
        );
    }
    let check = |dp: &Dataplane, when: &str| {
        assert_eq!(dp.flow_count(), 1000, "{when}");
        for n in 0..1000 {
            let (k, v) = flow(n);
            assert_eq!(dp.flow(&k), Some(v), "{when}: flow {n}");
        }
    };
    check(&dp, "before the stop");
    dp.stop().expect("stop, keeping the pins");
    drop(dp);
    std::fs::remove_file(dir.0.join(names::FLOW_REGION)).expect("unpin the region");
    let (mut dp, second) = Dataplane::load_pinned(PIN_SIZES, cfg()).expect("the upgrade");
    assert_eq!(second.new, [names::FLOW_REGION], "{second:?}");
    assert_eq!(dp.flow_table().region(), FlowRegion::of(slots));
    check(&dp, "after adopting round six's pins");
    // A daemon stopped in the middle of halving the region.
    dp.flow_table().start_resize(slots / 2);
    dp.stop().expect("stop, keeping the pins");
    drop(dp);
    let (mut dp, _) = Dataplane::load_pinned(PIN_SIZES, cfg()).expect("a restart");
    assert_eq!(dp.flow_table().region(), FlowRegion::of(slots / 2));
    check(&dp, "after the change was settled");
    dp.stop_removing().expect("remove the pins");
}

/// Replace the flow table pinned in `dir` by an older build's: a hash map of `map_type`
/// with `flags`, holding 300 flows; the next load moves them all into its own table.
/// `crashed`: as a daemon that stopped in the middle of the upgrade leaves it (the older
/// table moved aside, no table of its own pinned yet).
fn older_flows_moved(dir: &PinDir, map_type: u32, flags: u32, crashed: bool) {
    use lb_common::{FAMILY_V4, FlowKey, FlowValue, PROTO_TCP, names};
    use sluice_dataplane::Dataplane;
    let flows = dir.0.join(names::FLOWS);
    std::fs::remove_file(&flows).expect("unpin the flow table");
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_OBJ_PIN: libc::c_long = 6;
    let fd = bpf_raw(
        BPF_MAP_CREATE,
        &[
            map_type,
            size_of::<FlowKey>() as u32,
            size_of::<FlowValue>() as u32,
            4096,
            flags,
        ],
    )
    .expect("create a hash map") as u32;
    let flow = |n: u16| {
        let mut key = FlowKey {
            sport: (40000 + n).to_be_bytes(),
            dport: 80u16.to_be_bytes(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            ..FlowKey::default()
        };
        key.src[..4].copy_from_slice(&[192, 0, 2, 7]);
        key.dst[..4].copy_from_slice(&[10, 0, 0, 10]);
        let value = FlowValue {
            backend_id: 1 + u32::from(n % 7),
            generation: 1,
            last_seen: 5,
            state: lb_common::FLOW_OPEN,
        };
        (key, value)
    };
    for n in 0..300 {
        let (key, value) = flow(n);
        let [k0, k1] = ptr_words(&raw const key);
        let [v0, v1] = ptr_words(&raw const value);
        bpf_raw(BPF_MAP_UPDATE_ELEM, &[fd, 0, k0, k1, v0, v1, 0, 0]).expect("insert a flow");
    }
    let path = std::ffi::CString::new(flows.as_os_str().as_encoded_bytes()).expect("a path");
    let [p0, p1] = ptr_words(path.as_ptr());
    bpf_raw(BPF_OBJ_PIN, &[p0, p1, fd, 0]).expect("pin it");
    // SAFETY: `fd` is the descriptor BPF_MAP_CREATE returned, owned here and closed once.
    unsafe { libc::close(fd as i32) };
    let aside = dir.0.join("FLOWS_OLD");
    if crashed {
        std::fs::rename(&flows, &aside).expect("move it aside");
    }
    let (mut dp, second) =
        Dataplane::load_pinned(PIN_SIZES, dir.config()).expect("the upgrade moves its flows");
    assert!(!aside.exists(), "the older table's pin is removed");
    assert!(
        second.notes.iter().any(|n| n.contains("300 flows copied")),
        "type {map_type} flags {flags}: {second:?}"
    );
    assert_eq!(dp.flow_count(), 300, "type {map_type} flags {flags}");
    for n in 0..300 {
        let (key, value) = flow(n);
        assert_eq!(dp.flow(&key), Some(value), "flow {n} survives the upgrade");
    }
    dp.stop().expect("stop, keeping the pins");
    drop(dp);
    // The next daemon adopts the new table as it is, flows included.
    let (mut dp, third) = Dataplane::load_pinned(PIN_SIZES, dir.config()).expect("a restart");
    assert!(third.maps.iter().any(|m| m == names::FLOWS), "{third:?}");
    let (key, value) = flow(299);
    assert_eq!(dp.flow(&key), Some(value), "the flows survive the restart");
    dp.stop().expect("stop, keeping the pins");
}
