//! Prometheus exposition (OpenMetrics text) on `daemon.metrics_listen` (loopback by
//! default). The daemon takes a status snapshot every second from the same counters as
//! `sluice backend list`; a scrape renders the latest one (off the daemon's loop), so
//! figures are at most one second old. Health-check durations and API requests are counted
//! as they happen (`live`), the `process_*` figures read from `/proc/self` at the scrape.
//! Every family is listed in [`text::FAMILIES`], which the dashboard's test reads too.

mod live;
mod process;
mod render;
pub mod text;

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use tokio::{net::TcpListener, sync::watch};

use sluice_core::announce::AnnounceStatus;

pub use live::{Latency, live};

use crate::state::Status;

/// The exposition text for a status snapshot (without the live, process and build
/// families: see [`Snapshot::render`]): for tests of the status's families.
#[cfg(test)]
pub fn render(
    status: &Status,
    edits: u64,
    tables_built: u64,
    scaled: &crate::autoscale::driver::AutoscaleStatus,
    announce: Option<&AnnounceStatus>,
) -> String {
    render::build(status, edits, tables_built, scaled, announce).encode()
}

/// The version and git revision `sluice_build_info` shows (set once by the binary).
static BUILD: OnceLock<(String, String)> = OnceLock::new();

/// Say which build this is (`sluice --version`'s version and revision); the first call
/// wins. Without it: the daemon crate's version, revision `unknown`.
pub fn set_build(version: &str, revision: &str) {
    let _ = BUILD.set((version.to_owned(), revision.to_owned()));
}

fn build() -> (&'static str, &'static str) {
    BUILD
        .get()
        .map_or((env!("CARGO_PKG_VERSION"), "unknown"), |(v, r)| {
            (v.as_str(), r.as_str())
        })
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
    /// The flow table's capacity (`daemon.flow_table_size`; 0: unknown).
    pub flow_capacity: u64,
    /// How many flows arriving on one CPU the flow table holds (its capacity, one table for
    /// all CPUs; a CPU's share with per-CPU LRU lists, as older builds pinned it).
    pub flows_one_cpu: u64,
    /// Flows opened on each CPU, indexed by CPU.
    pub new_flows_per_cpu: Vec<u64>,
}

impl Snapshot {
    /// The exposition text (empty before the first status): the snapshot's families, the
    /// live ones, the process's and the build's.
    pub fn render(&self) -> String {
        self.status.as_ref().map_or_else(String::new, |s| {
            let mut e = render::build(
                s,
                self.edits,
                self.tables_built,
                &self.scaled,
                self.announce.as_deref(),
            );
            render::flow_table(&mut e, s, self.flow_capacity, self.flows_one_cpu);
            render::per_cpu(&mut e, &self.new_flows_per_cpu);
            live().expose(&mut e);
            process::expose(&mut e);
            let (version, revision) = build();
            render::build_info(&mut e, version, revision);
            e.encode()
        })
    }
}

/// What the endpoint answers a scrape with (the OpenMetrics text format, `text.rs`).
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
    use crate::{
        health::Health,
        state::{BackendStatus, VipStatus},
    };

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
                reasons: [
                    ("fwd_tx".to_owned(), 9u64),
                    ("drop_no_backend".to_owned(), 1),
                ]
                .into_iter()
                .collect(),
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
                    transitions: 3,
                    transitions_down: 2,
                    checks: 5,
                    failed_checks: 2,
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
            table_full_flows: 6,
        };
        let text = render(&status, 4, 7, &Default::default(), None);
        let vip = r#"vip="web",address="10.0.0.1",port="80",protocol="tcp""#;
        let be = r#"vip="web",backend="10.0.1.1""#;
        for line in [
            format!("sluice_vip_packets_total{{{vip}}} 10"),
            format!("sluice_vip_bytes_total{{{vip}}} 1000"),
            format!(r#"sluice_vip_reason_packets_total{{{vip},reason="drop_no_backend"}} 1"#),
            format!(r#"sluice_vip_reason_packets_total{{{vip},reason="fwd_tx"}} 9"#),
            format!("sluice_vip_active_flows{{{vip}}} 1"),
            format!("sluice_backend_up{{{be}}} 0"),
            format!(r#"sluice_backend_state{{{be},state="down"}} 1"#),
            format!(r#"sluice_backend_state{{{be},state="draining"}} 0"#),
            format!("sluice_backend_active_flows{{{be}}} 1"),
            format!(r#"sluice_health_transitions_total{{{be},direction="down"}} 2"#),
            format!(r#"sluice_health_transitions_total{{{be},direction="up"}} 1"#),
            format!(r#"sluice_backend_health_checks_total{{{be},result="failed"}} 2"#),
            format!(r#"sluice_backend_health_checks_total{{{be},result="ok"}} 3"#),
            r#"sluice_packets_total{reason="fwd_tx"} 10"#.to_owned(),
            "sluice_edits_total 4".to_owned(),
            "sluice_table_rebuilds_total 7".to_owned(),
            "sluice_fib_fallbacks_total 3".to_owned(),
            "sluice_flows_unpinned_total 5".to_owned(),
            "sluice_flows_table_full_total 6".to_owned(),
            "sluice_next_hops_unresolved 1".to_owned(),
            format!(
                r#"sluice_vip_table_fingerprint_info{{{vip},fingerprint="00112233445566ff"}} 1"#
            ),
            r#"sluice_config_fingerprint_info{fingerprint="aabbccddeeff0011"} 1"#.to_owned(),
            format!("sluice_backend_load_waiting{{{be}}} 7.0"),
            format!("sluice_backend_load_kv_cache{{{be}}} 0.375"),
            format!("sluice_backend_load_age_seconds{{{be}}} 0.25"),
            format!("sluice_backend_load_errors_total{{{be}}} 2"),
            "# TYPE sluice_vip_bytes counter".to_owned(),
            "# UNIT sluice_vip_bytes bytes".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        // Stable order: families by name, series by label values.
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap_or_default())
            .collect();
        let mut sorted = families.clone();
        sorted.sort_unstable();
        assert_eq!(families, sorted);
        assert_eq!(text, render(&status, 4, 7, &Default::default(), None));
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
                table_full_flows: 0,
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
            table_full_flows: 0,
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
            "sluice_vip_announced{address=\"10.0.0.1\"} 1",
            "sluice_vip_announced{address=\"2001:db8::1\"} 0",
            "sluice_announce_maintenance 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        let none = render(&status, 0, 0, &Default::default(), None);
        assert!(!none.contains("announce"), "{none}");
    }
}
