//! Prometheus exposition (OpenMetrics text) on `daemon.metrics_listen` (loopback by
//! default). The daemon takes a status snapshot every second from the same counters as
//! `sluice backend list`; a scrape renders the latest one (off the daemon's loop), so
//! figures are at most one second old.

use std::{net::SocketAddr, sync::Arc};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{net::TcpListener, sync::watch};

use sluice_core::announce::AnnounceStatus;

use crate::{
    health::Health,
    state::{BackendStatus, Status, VipStatus},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VipLabels {
    vip: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    vip: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    vip: String,
    backend: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FingerprintLabels {
    vip: String,
    fingerprint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfigFingerprintLabels {
    fingerprint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// The exposition text for a status snapshot.
pub fn render(
    status: &Status,
    edits: u64,
    tables_built: u64,
    scaled: &crate::autoscale::driver::AutoscaleStatus,
    announce: Option<&AnnounceStatus>,
) -> String {
    let mut r = Registry::with_prefix("sluice");
    let families = Families::default();
    for v in &status.vips {
        families.vip(v);
    }
    families.register(&mut r);
    let reasons = Family::<ReasonLabels, Counter>::default();
    for (name, n) in &status.reasons {
        reasons
            .get_or_create(&ReasonLabels {
                reason: name.clone(),
            })
            .inc_by(*n);
    }
    r.register(
        "packets",
        "Packets by outcome (forwarded, passed, dropped and why)",
        reasons,
    );
    totals(&mut r, status, edits, tables_built);
    autoscale(&mut r, scaled);
    if let Some(a) = announce {
        announced(&mut r, a);
    }
    let mut out = String::new();
    if encode(&mut out, &r).is_err() {
        out.clear();
    }
    out
}

/// The per-VIP and per-backend families of a snapshot.
#[derive(Default)]
struct Families {
    vip_packets: Family<VipLabels, Counter>,
    vip_bytes: Family<VipLabels, Counter>,
    vip_new: Family<VipLabels, Counter>,
    be_packets: Family<BackendLabels, Counter>,
    be_bytes: Family<BackendLabels, Counter>,
    be_new: Family<BackendLabels, Counter>,
    be_up: Family<BackendLabels, Gauge>,
    be_weight: Family<BackendLabels, Gauge>,
    be_transitions: Family<BackendLabels, Counter>,
    be_state: Family<StateLabels, Gauge>,
    vip_active: Family<VipLabels, Gauge>,
    vip_closes: Family<VipLabels, Counter>,
    be_active: Family<BackendLabels, Gauge>,
    be_closes: Family<BackendLabels, Counter>,
    be_eff: Family<BackendLabels, Gauge>,
    vip_fingerprint: Family<FingerprintLabels, Gauge>,
    load_waiting: Family<BackendLabels, FloatGauge>,
    load_running: Family<BackendLabels, FloatGauge>,
    load_kv: Family<BackendLabels, FloatGauge>,
    load_age: Family<BackendLabels, FloatGauge>,
    load_errors: Family<BackendLabels, Counter>,
}

/// A gauge of a fractional value.
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

impl Families {
    /// A VIP's figures and its backends'.
    fn vip(&self, v: &VipStatus) {
        let l = VipLabels {
            vip: v.vip.clone(),
            name: v.name.clone(),
        };
        self.vip_packets.get_or_create(&l).inc_by(v.packets);
        self.vip_bytes.get_or_create(&l).inc_by(v.bytes);
        self.vip_new.get_or_create(&l).inc_by(v.new_flows);
        self.vip_active
            .get_or_create(&l)
            .set(i64::try_from(v.active).unwrap_or(i64::MAX));
        self.vip_closes
            .get_or_create(&l)
            .inc_by(v.backends.iter().map(|b| b.closes).sum());
        if !v.fingerprint.is_empty() {
            self.vip_fingerprint
                .get_or_create(&FingerprintLabels {
                    vip: v.vip.clone(),
                    fingerprint: v.fingerprint.clone(),
                })
                .set(1);
        }
        for b in &v.backends {
            self.backend(v, b);
        }
    }

    /// A backend's figures, and its lifecycle state (one series per state, 1 for the
    /// current one).
    fn backend(&self, v: &VipStatus, b: &BackendStatus) {
        let l = BackendLabels {
            vip: v.vip.clone(),
            backend: b.address.to_string(),
        };
        self.be_packets.get_or_create(&l).inc_by(b.packets);
        self.be_bytes.get_or_create(&l).inc_by(b.bytes);
        self.be_new.get_or_create(&l).inc_by(b.new_flows);
        self.be_up
            .get_or_create(&l)
            .set(i64::from(b.health == Health::Up));
        self.be_weight.get_or_create(&l).set(i64::from(b.weight));
        self.be_transitions.get_or_create(&l).inc_by(b.transitions);
        self.be_active
            .get_or_create(&l)
            .set(i64::try_from(b.active).unwrap_or(i64::MAX));
        self.be_closes.get_or_create(&l).inc_by(b.closes);
        self.be_eff
            .get_or_create(&l)
            .set(i64::from(b.effective_weight));
        // The daemon's own state, as `backend list` shows it (old status files: "").
        let state = match b.lifecycle.as_str() {
            "" => "active",
            s => s,
        };
        for s in crate::state::LIFECYCLE_STATES {
            let l = StateLabels {
                vip: v.vip.clone(),
                backend: b.address.to_string(),
                state: s.to_owned(),
            };
            self.be_state.get_or_create(&l).set(i64::from(s == state));
        }
        if let Some(load) = &b.load {
            self.load(&l, load);
        }
    }

    /// A backend's load reading (`[vip.load]`): the figures its last report gave, how old
    /// it is, and the failed reads.
    fn load(&self, l: &BackendLabels, load: &crate::state::LoadStatus) {
        for (family, value) in [
            (&self.load_waiting, load.waiting),
            (&self.load_running, load.running),
            (&self.load_kv, load.kv_cache),
        ] {
            if let Some(v) = value {
                family.get_or_create(l).set(v);
            }
        }
        if let Some(ms) = load.age_ms {
            #[expect(clippy::cast_precision_loss, reason = "an age in seconds")]
            self.load_age.get_or_create(l).set(ms as f64 / 1000.0);
        }
        self.load_errors.get_or_create(l).inc_by(load.errors);
    }

    /// Register the families, in the order they are exposed.
    fn register(self, r: &mut Registry) {
        r.register(
            "vip_packets",
            "Packets forwarded for a VIP",
            self.vip_packets,
        );
        r.register("vip_bytes", "Bytes forwarded for a VIP", self.vip_bytes);
        r.register("vip_new_flows", "Flows opened to a VIP", self.vip_new);
        r.register(
            "backend_packets",
            "Packets forwarded to a backend",
            self.be_packets,
        );
        r.register(
            "backend_bytes",
            "Bytes forwarded to a backend",
            self.be_bytes,
        );
        r.register(
            "backend_new_flows",
            "Flows opened to a backend",
            self.be_new,
        );
        r.register(
            "backend_up",
            "1 when the backend passes its health checks",
            self.be_up,
        );
        r.register("backend_weight", "Configured weight", self.be_weight);
        r.register(
            "backend_effective_weight",
            "Weight in the table now (0 while draining, ramping in slow start)",
            self.be_eff,
        );
        r.register(
            "vip_active_flows",
            "Open connections to a VIP (kernel connection tracking)",
            self.vip_active,
        );
        r.register(
            "vip_closes",
            "Connections to a VIP closed (FIN/RST seen or moved)",
            self.vip_closes,
        );
        r.register(
            "backend_active_flows",
            "Open connections on a backend (kernel connection tracking)",
            self.be_active,
        );
        r.register(
            "backend_closes",
            "Connections on a backend closed (FIN/RST seen or moved)",
            self.be_closes,
        );
        r.register(
            "backend_health_transitions",
            "Up/down transitions",
            self.be_transitions,
        );
        r.register(
            "backend_state",
            "Lifecycle state (1 for the current one)",
            self.be_state,
        );
        r.register(
            "vip_table_fingerprint_info",
            "Fingerprint of the VIP's lookup table as backend addresses (equal on balancers \
             that send its new flows to the same backends)",
            self.vip_fingerprint,
        );
        r.register(
            "backend_load_waiting",
            "Requests waiting, as the backend's last load report said",
            self.load_waiting,
        );
        r.register(
            "backend_load_running",
            "Requests running, as the backend's last load report said",
            self.load_running,
        );
        r.register(
            "backend_load_kv_cache",
            "KV-cache use (0..1), as the backend's last load report said",
            self.load_kv,
        );
        r.register(
            "backend_load_age_seconds",
            "Age of the backend's last good load report",
            self.load_age,
        );
        r.register(
            "backend_load_errors",
            "Failed reads of the backend's load report",
            self.load_errors,
        );
    }
}

/// The daemon-wide counters: live edits, table builds, flows expired by the sweep.
fn totals(r: &mut Registry, status: &Status, edits: u64, tables_built: u64) {
    let edits_c = Counter::<u64>::default();
    edits_c.inc_by(edits);
    r.register("edits", "Live edits applied", edits_c);
    let tables = Counter::<u64>::default();
    tables.inc_by(tables_built);
    r.register(
        "table_rebuilds",
        "Lookup tables built and published (Maglev tables and scheduler sequences)",
        tables,
    );
    let fallbacks = Counter::<u64>::default();
    fallbacks.inc_by(status.fib_fallbacks);
    r.register(
        "fib_fallbacks",
        "Frames forwarded through the kernel's FIB (bpf_fib_lookup) because their backend's next hop was not resolved",
        fallbacks,
    );
    let unpinned = Counter::<u64>::default();
    unpinned.inc_by(status.unpinned_flows);
    r.register(
        "flows_unpinned",
        "New flows forwarded by their hash without a flow-table entry because the flood guard's rate (daemon.new_flow_limit_per_cpu) was exceeded",
        unpinned,
    );
    let unresolved = Gauge::<i64>::default();
    unresolved.set(
        status
            .vips
            .iter()
            .flat_map(|v| &v.backends)
            .filter(|b| b.next_hop.as_ref().is_some_and(|h| !h.resolved))
            .count() as i64,
    );
    r.register(
        "next_hops_unresolved",
        "Backends reached through a route whose next hop is not resolved",
        unresolved,
    );
    let expired = Counter::<u64>::default();
    expired.inc_by(status.conntrack.expired);
    r.register(
        "conntrack_expired",
        "Open flows expired for idleness by the conntrack sweep",
        expired,
    );
    if !status.config_fingerprint.is_empty() {
        let config = Family::<ConfigFingerprintLabels, Gauge>::default();
        config
            .get_or_create(&ConfigFingerprintLabels {
                fingerprint: status.config_fingerprint.clone(),
            })
            .set(1);
        r.register(
            "config_fingerprint_info",
            "Fingerprint of the running configuration (equal on balancers configured alike)",
            config,
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    vip: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    vip: String,
}

/// The autoscaler's decisions, counts and actions per scaled VIP (by VIP name).
fn autoscale(r: &mut Registry, scaled: &crate::autoscale::driver::AutoscaleStatus) {
    let decisions = Family::<DecisionLabels, Counter>::default();
    let desired = Family::<NameLabels, Gauge>::default();
    let serving = Family::<NameLabels, Gauge>::default();
    let added = Family::<NameLabels, Counter>::default();
    let removed = Family::<NameLabels, Counter>::default();
    let failures = Family::<NameLabels, Counter>::default();
    for v in &scaled.vips {
        for (d, n) in [
            ("up", v.decisions_up),
            ("down", v.decisions_down),
            ("hold", v.decisions_hold),
        ] {
            decisions
                .get_or_create(&DecisionLabels {
                    vip: v.name.clone(),
                    direction: d.to_owned(),
                })
                .inc_by(n);
        }
        let l = NameLabels {
            vip: v.name.clone(),
        };
        desired.get_or_create(&l).set(i64::from(v.desired));
        serving.get_or_create(&l).set(i64::from(v.serving));
        added.get_or_create(&l).inc_by(v.added);
        removed.get_or_create(&l).inc_by(v.removed);
        failures.get_or_create(&l).inc_by(v.failures);
    }
    r.register(
        "autoscale_decisions",
        "Autoscaler evaluations by outcome (up, down, hold)",
        decisions,
    );
    r.register(
        "autoscale_desired",
        "Backends the autoscaler wants serving",
        desired,
    );
    r.register(
        "autoscale_serving",
        "Backends serving (active and healthy)",
        serving,
    );
    r.register("autoscale_added", "Backends the autoscaler added", added);
    r.register(
        "autoscale_removed",
        "Backends the autoscaler drained, removed and released",
        removed,
    );
    r.register(
        "autoscale_failures",
        "Failed scale-outs (provider, health checks) and rejected autoscaler edits",
        failures,
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AddressLabels {
    vip: String,
}

/// `[daemon.announce]`: per VIP address whether its route is installed, and maintenance.
fn announced(r: &mut Registry, a: &AnnounceStatus) {
    let per = Family::<AddressLabels, Gauge>::default();
    for x in &a.addresses {
        per.get_or_create(&AddressLabels {
            vip: x.address.to_string(),
        })
        .set(i64::from(x.announced));
    }
    r.register(
        "vip_announced",
        "Whether the VIP address is announced (its route installed for the BGP speaker)",
        per,
    );
    let m = Gauge::<i64>::default();
    m.set(i64::from(a.maintenance));
    r.register(
        "announce_maintenance",
        "Whether every VIP address is withdrawn for maintenance (sluice announce withdraw --all)",
        m,
    );
}

/// Bind the metrics listener (`SO_REUSEADDR`, as tokio's own bind: a restart does not wait
/// for the previous daemon's closed connections): before the daemon loads or attaches
/// anything, so that a taken port stops the start early.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// What a scrape renders: the daemon's latest status snapshot and counts.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub status: Option<Arc<Status>>,
    pub edits: u64,
    pub tables_built: u64,
    pub scaled: crate::autoscale::driver::AutoscaleStatus,
    /// The announcer's status (`sluice announce status`).
    pub announce: Option<Arc<AnnounceStatus>>,
}

impl Snapshot {
    /// The exposition text (empty before the first status).
    pub fn render(&self) -> String {
        self.status.as_ref().map_or_else(String::new, |s| {
            render(
                s,
                self.edits,
                self.tables_built,
                &self.scaled,
                self.announce.as_deref(),
            )
        })
    }
}

/// What the endpoint answers a scrape with (the OpenMetrics text format, as
/// prometheus-client encodes it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The largest request head read (hyper's smallest buffer): a scrape is a few hundred
/// bytes; a larger head is answered 431 and the connection closed.
pub const MAX_REQUEST_BYTES: usize = 8192;
/// Time a client has to send its request head, from the connection on (a client that
/// sends nothing is disconnected).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Time a connection may last in all (a client that does not read its answer cannot hold
/// the connection).
pub const CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serve the latest snapshot on a [bound](bind) listener until the task is aborted: `GET`
/// (and `HEAD`) `/metrics` only, 404 for other paths, 405 for other methods; one request
/// per connection, bounded in size and time. Must run inside a tokio runtime. The text is
/// rendered when scraped, on a blocking thread: nothing is rendered when nobody scrapes,
/// and never on the daemon's loop.
pub fn serve(
    listener: std::net::TcpListener,
    latest: watch::Receiver<Snapshot>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::from_std(listener)?;
    // One scrape at a time: a burst of scrapers waits instead of rendering in parallel.
    let one = Arc::new(tokio::sync::Mutex::new(()));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BYTES)
        // One request per connection, as before (`Connection: close`): no idle
        // connections to bound.
        .keep_alive(false)
        // Header names as before (`Content-Type`, not `content-type`).
        .title_case_headers(true);
    Ok(tokio::spawn(async move {
        let mut backoff = crate::api::server::Backoff::default();
        loop {
            let Ok((s, _)) = listener.accept().await else {
                // Out of file descriptors: pause rather than spin.
                tokio::time::sleep(backoff.failed()).await;
                continue;
            };
            backoff.succeeded();
            let latest = latest.clone();
            let one = Arc::clone(&one);
            let service = hyper::service::service_fn(move |req| {
                let snapshot = latest.borrow().clone();
                let one = Arc::clone(&one);
                async move { Ok::<_, std::convert::Infallible>(answer(&req, snapshot, &one).await) }
            });
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(s), service);
            tokio::spawn(async move {
                // A client that is slow, silent or misbehaving only loses its connection.
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            });
        }
    }))
}

type Body = http_body_util::Full<hyper::body::Bytes>;

/// The answer to one request.
async fn answer<B>(
    req: &hyper::Request<B>,
    snapshot: Snapshot,
    one: &tokio::sync::Mutex<()>,
) -> hyper::Response<Body> {
    use hyper::{Method, StatusCode, header};
    let plain = |status: StatusCode, text: &'static str| {
        let mut r = hyper::Response::new(Body::from(text));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let _turn = one.lock().await;
    let Ok(body) = tokio::task::spawn_blocking(move || snapshot.render()).await else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n");
    };
    // hyper sends the length, and no body for HEAD.
    let mut r = hyper::Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{BackendStatus, VipStatus};

    #[test]
    fn renders_labelled_families() {
        let status = Status {
            written: 0,
            vips: vec![VipStatus {
                name: "web".into(),
                vip: "10.0.0.1:80/tcp".into(),
                forwarding: "dsr".into(),
                scheduler: "wlc".into(),
                check: "tcp".into(),
                packets: 10,
                bytes: 1000,
                new_flows: 2,
                active: 1,
                fingerprint: "00112233445566ff".into(),
                backends: vec![BackendStatus {
                    address: "10.0.1.1".parse().unwrap(),
                    weight: 3,
                    effective_weight: 0,
                    lifecycle: "down".into(),
                    active: 1,
                    closes: 1,
                    health: Health::Down,
                    since: 0,
                    reason: String::new(),
                    transitions: 1,
                    checks: 0,
                    failed_checks: 0,
                    packets: 10,
                    bytes: 1000,
                    new_flows: 2,
                    flows: None,
                    load: Some(crate::state::LoadStatus {
                        waiting: Some(7.0),
                        running: None,
                        kv_cache: Some(0.375),
                        agent: None,
                        age_ms: Some(250),
                        stale: false,
                        error: None,
                        errors: 2,
                    }),
                    next_hop: Some(crate::state::NextHopStatus {
                        resolved: false,
                        detail: "unresolved".into(),
                    }),
                }],
            }],
            reasons: [("fwd_tx".to_owned(), 10u64)].into_iter().collect(),
            conntrack: crate::state::ConntrackStatus::default(),
            config_fingerprint: "aabbccddeeff0011".into(),
            fib_fallbacks: 3,
            unpinned_flows: 5,
        };
        let text = render(&status, 4, 7, &Default::default(), None);
        for line in [
            r#"sluice_vip_packets_total{vip="10.0.0.1:80/tcp",name="web"} 10"#,
            r#"sluice_backend_up{vip="10.0.0.1:80/tcp",backend="10.0.1.1"} 0"#,
            r#"sluice_backend_state{vip="10.0.0.1:80/tcp",backend="10.0.1.1",state="down"} 1"#,
            r#"sluice_backend_state{vip="10.0.0.1:80/tcp",backend="10.0.1.1",state="draining"} 0"#,
            r#"sluice_backend_active_flows{vip="10.0.0.1:80/tcp",backend="10.0.1.1"} 1"#,
            r#"sluice_vip_active_flows{vip="10.0.0.1:80/tcp",name="web"} 1"#,
            r#"sluice_packets_total{reason="fwd_tx"} 10"#,
            "sluice_edits_total 4",
            "sluice_table_rebuilds_total 7",
            "sluice_fib_fallbacks_total 3",
            "sluice_flows_unpinned_total 5",
            "sluice_next_hops_unresolved 1",
            r#"sluice_vip_table_fingerprint_info{vip="10.0.0.1:80/tcp",fingerprint="00112233445566ff"} 1"#,
            r#"sluice_config_fingerprint_info{fingerprint="aabbccddeeff0011"} 1"#,
            r#"sluice_backend_load_waiting{vip="10.0.0.1:80/tcp",backend="10.0.1.1"} 7.0"#,
            r#"sluice_backend_load_kv_cache{vip="10.0.0.1:80/tcp",backend="10.0.1.1"} 0.375"#,
            r#"sluice_backend_load_age_seconds{vip="10.0.0.1:80/tcp",backend="10.0.1.1"} 0.25"#,
            r#"sluice_backend_load_errors_total{vip="10.0.0.1:80/tcp",backend="10.0.1.1"} 2"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    /// A running endpoint with a snapshot (no VIPs, 4 edits).
    async fn endpoint() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(Snapshot::default());
        tx.send_replace(Snapshot {
            status: Some(Arc::new(Status {
                written: 0,
                vips: Vec::new(),
                reasons: Default::default(),
                conntrack: crate::state::ConntrackStatus::default(),
                config_fingerprint: String::new(),
                fib_fallbacks: 0,
                unpinned_flows: 0,
            })),
            edits: 4,
            ..Snapshot::default()
        });
        // The sender may go: the receiver keeps the last value.
        drop(tx);
        (addr, serve(listener, rx).unwrap())
    }

    /// Send `request` and read until the server closes (bounded: 10 s).
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        // A server that closes early may make the write fail; the answer is what counts.
        let _ = c.write_all(request).await;
        let mut out = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let mut buf = [0u8; 4096];
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the server did not close the connection");
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn serves_metrics_only() {
        let (addr, task) = endpoint().await;
        // The scrape: 200, the content type, the text, one request per connection.
        let a = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
        assert!(
            a.contains(&format!("\r\nContent-Type: {CONTENT_TYPE}\r\n")),
            "{a}"
        );
        assert!(a.contains("\nsluice_edits_total 4\n"), "{a}");
        assert!(a.ends_with("# EOF\n"), "{a}");
        let (_, body) = a.split_once("\r\n\r\n").unwrap();
        assert!(
            a.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
            "{a}"
        );
        // HEAD: the head only.
        let a = exchange(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            a.starts_with("HTTP/1.1 200 OK\r\n") && a.ends_with("\r\n\r\n"),
            "{a}"
        );
        // Other paths: 404; other methods: 405 with Allow.
        let a = exchange(addr, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(a.starts_with("HTTP/1.1 404 "), "{a}");
        let a = exchange(
            addr,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(a.starts_with("HTTP/1.1 405 "), "{a}");
        assert!(a.contains("\r\nAllow: GET, HEAD\r\n"), "{a}");
        task.abort();
    }

    /// A request head over the bound is refused (431 or closed), never answered 200.
    #[tokio::test]
    async fn oversized_request_is_refused() {
        let (addr, task) = endpoint().await;
        let big = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST_BYTES * 2)
        );
        let a = exchange(addr, big.as_bytes()).await;
        assert!(a.is_empty() || a.starts_with("HTTP/1.1 431 "), "{a}");
        // The endpoint still serves.
        let a = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
        task.abort();
    }

    /// A client that sends nothing is disconnected once the request time is up.
    #[tokio::test]
    async fn silent_client_is_disconnected() {
        let (addr, task) = endpoint().await;
        let start = std::time::Instant::now();
        let a = exchange(addr, b"").await;
        let took = start.elapsed();
        assert!(!a.starts_with("HTTP/1.1 200"), "{a}");
        assert!(
            took >= REQUEST_TIMEOUT / 2 && took < REQUEST_TIMEOUT * 3,
            "closed after {took:?}"
        );
        task.abort();
    }

    #[test]
    fn renders_the_announce_families() {
        use sluice_core::announce::AddressStatus;
        let status = Status {
            written: 0,
            vips: Vec::new(),
            reasons: std::collections::BTreeMap::new(),
            conntrack: crate::state::ConntrackStatus::default(),
            config_fingerprint: String::new(),
            fib_fallbacks: 0,
            unpinned_flows: 0,
        };
        let address = |a: &str, announced| AddressStatus {
            address: a.parse().expect("an address"),
            announced,
            reason: String::new(),
            vips: Vec::new(),
        };
        let a = AnnounceStatus {
            enabled: true,
            maintenance: true,
            addresses: vec![address("10.0.0.1", true), address("2001:db8::1", false)],
            ..AnnounceStatus::default()
        };
        let text = render(&status, 0, 0, &Default::default(), Some(&a));
        for line in [
            "sluice_vip_announced{vip=\"10.0.0.1\"} 1",
            "sluice_vip_announced{vip=\"2001:db8::1\"} 0",
            "sluice_announce_maintenance 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        let none = render(&status, 0, 0, &Default::default(), None);
        assert!(!none.contains("announce"), "{none}");
    }
}
