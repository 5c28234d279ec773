//! Load reports (`[vip.load]`, inference-aware balancing) end to end through the lab: each
//! backend serves a vLLM-like `/metrics` page (or an HAProxy agent-check line) from its own
//! namespace, the daemon reads it and shows the figures and their age in the status (what
//! `sluice backend list --json` prints), and the load policy turns them into the weights of
//! new flows (`sluice plan load` explains them): a saturated, drained or silent backend
//! takes no new flows while its open connections continue. The autoscaler targets the
//! reported queue: a backend reporting more requests waiting than the target makes it add
//! a standby backend.
//!
//! The lab (prefix `sl-ld-<pid>-<n>`) is removed when it drops, also on failure; the loops
//! are bounded in time.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, TcpListener},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use clap::Parser as _;
use lb_userspace::cli::{Cli, dispatch};
use sluice_core::config::{
    Config, InFlight, LoadConfig, LoadSource, Scheduler,
    autoscale::{AutoscaleConfig, MetricKind, Num, ProviderConfig, TargetConfig},
};
use sluice_core::load::{explain::LoadExplain, presets::Preset};
use sluice_daemon::{
    api::{Request, Response, client},
    autoscale::driver::VipReport,
    state::LoadStatus,
};
use sluice_lab::lab::{Lab, LabSpec, Weights, daemon::Daemon};
use sluice_tests::{
    agent::Agent,
    api::status,
    conn::{self, echo_all, per_backend},
    prefix, require_root, serial,
};

const METRICS_PORT: u16 = 18000;
const AGENT_PORT: u16 = 18001;

/// A `/metrics` server on `backend`'s address inside its namespace (the thread serving it
/// only holds the socket), answering `page(i)` until `stop` is set, then closing each
/// connection unanswered.
fn serve_metrics(lab: &Lab, i: usize, waiting: Arc<AtomicU32>, stop: Arc<AtomicBool>) {
    let addr = lab.backend(i).addr4();
    let listener = lab
        .backend(i)
        .run(|| TcpListener::bind((addr, METRICS_PORT)))
        .expect("enter the backend's namespace")
        .expect("bind the metrics port");
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            if stop.load(Ordering::Relaxed) {
                continue;
            }
            let waiting = waiting.load(Ordering::Relaxed);
            let body = format!(
                "# HELP vllm:num_requests_waiting Number of requests waiting.\n\
             # TYPE vllm:num_requests_waiting gauge\n\
             vllm:num_requests_waiting{{engine=\"0\",model_name=\"m\"}} {waiting}\n\
             vllm:num_requests_waiting{{engine=\"1\",model_name=\"m\"}} 1\n\
             vllm:num_requests_running{{engine=\"0\",model_name=\"m\"}} 2\n\
             vllm:kv_cache_usage_perc{{engine=\"0\",model_name=\"m\"}} 0.25\n\
             vllm:kv_cache_usage_perc{{engine=\"1\",model_name=\"m\"}} 0.5\n"
            );
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut req = [0u8; 2048];
            let _ = s.read(&mut req);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

/// `[vip.load]` reading the vLLM preset from [`METRICS_PORT`] every 100 ms, stale after
/// `stale_after_ms`; the policy's defaults.
fn vllm_load(stale_after_ms: u32) -> LoadConfig {
    LoadConfig {
        source: LoadSource::Prometheus,
        port: METRICS_PORT,
        path: "/metrics".to_owned(),
        interval_ms: 100,
        timeout_ms: 100,
        stale_after_ms,
        preset: Some(Preset::Vllm),
        waiting: None,
        running: None,
        kv_cache: None,
        queue_limit: 5,
        kv_limit_percent: 80,
        in_flight: InFlight::Reported,
    }
}

/// The load of each lab backend of VIP `lab-tcp4`, as the status shows it.
fn loads(socket: &Path, lab: &Lab) -> Vec<Option<LoadStatus>> {
    let s = status(socket).expect("the daemon's status");
    let v = s
        .vips
        .iter()
        .find(|v| v.name == "lab-tcp4")
        .expect("the lab VIP");
    (0..lab.backends().len())
        .map(|i| {
            let a = IpAddr::from(lab.backend(i).addr4());
            v.backends
                .iter()
                .find(|b| b.address == a)
                .and_then(|b| b.load.clone())
        })
        .collect()
}

/// The lab's daemon config with `load` on VIP `lab-tcp4`, scheduled by `scheduler`.
fn load_config(lab: &Lab, load: LoadConfig, scheduler: Scheduler) -> Config {
    let mut config = lab
        .daemon_config(&Weights::Equal)
        .expect("the lab's daemon config");
    let vip = config
        .vips
        .iter_mut()
        .find(|v| v.name == "lab-tcp4")
        .expect("the lab VIP");
    vip.load = Some(load);
    vip.scheduler = scheduler;
    config
}

/// The weight new flows of `lab-tcp4` see for lab backend `i` (the status's).
fn weight(socket: &Path, lab: &Lab, i: usize) -> u32 {
    let s = status(socket).expect("status");
    let a = IpAddr::from(lab.backend(i).addr4());
    s.vips
        .iter()
        .find(|v| v.name == "lab-tcp4")
        .and_then(|v| v.backends.iter().find(|b| b.address == a))
        .map_or(0, |b| b.effective_weight)
}

/// What the daemon's load policy makes of the current reports (`sluice plan load`).
fn explain(socket: &Path) -> LoadExplain {
    match client::request(socket, &Request::LoadExplain { vip: None }) {
        Ok(Response::LoadExplain { explain }) => explain,
        other => panic!("sluice plan load: {other:?}"),
    }
}

/// `sluice plan load` through the CLI (it prints), and its text as the CLI renders it.
fn plan_load(socket: &Path) -> String {
    let argv = [
        "sluice",
        "--api-socket",
        socket.to_str().expect("a UTF-8 socket path"),
        "plan",
        "load",
        "lab-tcp4",
    ];
    dispatch(Cli::try_parse_from(argv).expect("sluice plan load")).expect("sluice plan load");
    lb_userspace::cli::load::render(&explain(socket))
}

/// The line of `text` about lab backend `i`.
fn line_of(text: &str, lab: &Lab, i: usize) -> String {
    let a = format!("{} ", lab.backend(i).addr4());
    text.lines()
        .find(|l| l.trim_start().starts_with(&a))
        .unwrap_or_else(|| panic!("no line for {a} in:\n{text}"))
        .to_owned()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn load_reports_are_read_and_shown_with_their_age_and_errors() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("ld", "prom")).backends(2)).expect("bring the lab up");
    let stops: Vec<Arc<AtomicBool>> = (0..2).map(|_| Arc::new(AtomicBool::new(false))).collect();
    serve_metrics(&lab, 0, Arc::new(AtomicU32::new(6)), Arc::clone(&stops[0]));
    serve_metrics(&lab, 1, Arc::new(AtomicU32::new(2)), Arc::clone(&stops[1]));
    let mut config = lab
        .daemon_config(&Weights::Equal)
        .expect("the lab's daemon config");
    let vip = config
        .vips
        .iter_mut()
        .find(|v| v.name == "lab-tcp4")
        .expect("the lab VIP");
    vip.load = Some(vllm_load(300));
    let socket = config.daemon.api_socket.clone();
    let d = Daemon::start(&lab, config).expect("start the daemon");

    // Both read: engines summed, KV use summed over engines (clamped to 1), fresh.
    wait_for("both backends' reports", || {
        loads(&socket, &lab).iter().all(|l| {
            l.as_ref()
                .is_some_and(|l| l.waiting.is_some() && !l.stale && l.error.is_none())
        })
    });
    let l = loads(&socket, &lab);
    let (a, b) = (l[0].clone().unwrap(), l[1].clone().unwrap());
    assert_eq!(
        (a.waiting, a.running, a.kv_cache),
        (Some(7.0), Some(2.0), Some(0.75))
    );
    assert_eq!(b.waiting, Some(3.0));
    assert!(a.age_ms.is_some_and(|ms| ms < 1000), "{a:?}");
    // The CLI's table renders it (and --json is the same status, serialised).
    let argv = [
        "sluice",
        "--api-socket",
        socket.to_str().unwrap(),
        "backend",
        "list",
    ];
    dispatch(Cli::try_parse_from(argv).unwrap()).expect("sluice backend list");
    let json = serde_json::to_value(status(&socket).unwrap()).unwrap();
    assert!(
        json["vips"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|v| v["backends"].as_array().unwrap())
            .any(|b| b["load"]["waiting"] == 7.0),
        "{json:#}"
    );

    // Backend 2's page stops answering: its reading shows the error and goes stale; the
    // other stays fresh.
    stops[1].store(true, Ordering::Relaxed);
    wait_for("the silent backend's error", || {
        let l = loads(&socket, &lab);
        l[1].as_ref()
            .is_some_and(|l| l.error.is_some() && l.stale && l.errors > 0)
            && l[0].as_ref().is_some_and(|l| !l.stale && l.error.is_none())
    });
    let l = loads(&socket, &lab);
    let b = l[1].clone().unwrap();
    assert_eq!(b.waiting, Some(3.0), "the last good report is kept");
    assert!(b.error.as_deref().unwrap().contains("/metrics"), "{b:?}");
    drop(d);
}

/// The policy: a backend whose reported queue grows past `queue_limit` takes no new flows
/// while its open connections continue, and takes new flows again once its queue drains.
#[test]
fn a_backend_whose_queue_grows_takes_no_new_flows_until_it_drains() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("ld", "queue")).backends(2)).expect("bring the lab up");
    let stop = Arc::new(AtomicBool::new(false));
    let waiting: Vec<Arc<AtomicU32>> = (0..2).map(|_| Arc::new(AtomicU32::new(0))).collect();
    for (i, w) in waiting.iter().enumerate() {
        serve_metrics(&lab, i, Arc::clone(w), Arc::clone(&stop));
    }
    let config = load_config(&lab, vllm_load(1000), Scheduler::Maglev);
    let socket = config.daemon.api_socket.clone();
    let d = Daemon::start(&lab, config).expect("start the daemon");
    let to = std::net::SocketAddr::new(lab.vip4().into(), sluice_lab::lab::TCP_PORT);
    let weight = |i: usize| weight(&socket, &lab, i);
    wait_for("both backends' reports", || {
        loads(&socket, &lab)
            .iter()
            .all(|l| l.as_ref().is_some_and(|l| l.waiting.is_some()))
    });
    let mut held = conn::connections_held(lab.client(0), to, 20).expect("hold 20 connections");
    let before = per_backend(&held);
    assert_eq!(
        before.len(),
        2,
        "20 connections over 2 equal backends: {before:?}"
    );

    // backend-1's queue grows: 8 + 1 waiting > 5.
    waiting[0].store(8, Ordering::Relaxed);
    wait_for("backend-1's weight to drop to 0", || weight(0) == 0);
    // `sluice plan load` names it saturated, and why.
    let text = plan_load(&socket);
    let line = line_of(&text, &lab, 0);
    assert!(
        line.contains("weight    0")
            && line.contains("SATURATED")
            && line.contains("9 waiting > 5"),
        "{text}"
    );
    assert!(!line_of(&text, &lab, 1).contains("SATURATED"), "{text}");
    let fresh = conn::connections(lab.client(0), to, 30).expect("new connections");
    assert_eq!(
        fresh.get("backend-1"),
        None,
        "a saturated backend took new flows: {fresh:?}"
    );
    echo_all(&mut held, "saturated").expect("open connections continue on both backends");
    assert_eq!(per_backend(&held), before, "no open connection moved");

    // Its queue drains: it takes new flows again.
    waiting[0].store(0, Ordering::Relaxed);
    wait_for("backend-1's weight to come back", || weight(0) > 0);
    let fresh = conn::connections(lab.client(0), to, 30).expect("new connections");
    assert!(
        fresh.get("backend-1").copied().unwrap_or(0) > 0,
        "backend-1 takes no new flows after its queue drained: {fresh:?}"
    );
    for c in held {
        c.close().expect("a clean close");
    }
    stop.store(true, Ordering::Relaxed);
    drop(d);
}

/// The autoscaler's report of VIP `lab-tcp4`.
fn scaler(socket: &Path) -> Option<VipReport> {
    match client::request(socket, &Request::AutoscaleStatus).expect("autoscale status") {
        Response::Autoscale { status } => status.vips.into_iter().find(|v| v.name == "lab-tcp4"),
        r => panic!("unexpected answer {r:?}"),
    }
}

/// `[vip.autoscale]` targeting 5 requests waiting per backend (the usual HPA setting for
/// vLLM), evaluated every 500 ms, never scaling down within the test, with a pool.
fn waiting_autoscale(standby: IpAddr) -> AutoscaleConfig {
    AutoscaleConfig {
        min: 1,
        max: 2,
        interval_ms: 500,
        weight: 1,
        ready_timeout_ms: 10_000,
        up_backends: 4,
        up_percent: 100,
        up_period_ms: 15_000,
        down_backends: 0,
        down_percent: 100,
        down_period_ms: 15_000,
        target: Some(TargetConfig {
            metric: MetricKind::LoadWaiting,
            value: Num(5.0),
            tolerance: Num(0.1),
            scale_down_stabilization_ms: 300_000,
            scale_up_stabilization_ms: 0,
        }),
        steps: Vec::new(),
        crons: Vec::new(),
        backend_metric: None,
        provider: ProviderConfig::Pool {
            standby: vec![standby],
        },
    }
}

/// The autoscaler on the backends' load reports: one backend reporting 1 request waiting
/// holds (target 5); once it reports 20 the autoscaler adds the standby backend, and the
/// decision shows the reported figures it was taken on.
#[test]
fn a_queue_above_the_target_adds_a_standby_backend() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("ld", "scale")).backends(2).ipv6(false))
        .expect("bring the lab up");
    let stop = Arc::new(AtomicBool::new(false));
    let waiting: Vec<Arc<AtomicU32>> = (0..2).map(|_| Arc::new(AtomicU32::new(0))).collect();
    for (i, w) in waiting.iter().enumerate() {
        serve_metrics(&lab, i, Arc::clone(w), Arc::clone(&stop));
    }
    let (first, standby) = (
        IpAddr::from(lab.backend(0).addr4()),
        IpAddr::from(lab.backend(1).addr4()),
    );
    let mut config = lab
        .daemon_config(&Weights::Equal)
        .expect("the lab's daemon config");
    config.vips.retain(|v| v.name == "lab-tcp4");
    let v = &mut config.vips[0];
    v.backends.retain(|b| b.address == first);
    v.health.interval_ms = 300;
    v.health.timeout_ms = 280;
    v.health.rise = 2;
    v.health.fall = 4;
    v.load = Some(vllm_load(1000));
    v.autoscale = Some(waiting_autoscale(standby));
    // Through the file's rules (the load metric needs the VIP's [vip.load]).
    let text = config.to_toml().expect("export the config");
    let config = sluice_core::config::parse(&text, "load autoscale test")
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .config;
    let socket = config.daemon.api_socket.clone();
    let d = Daemon::start(&lab, config).expect("start the daemon");

    // 0 + 1 (the second engine's) waiting: below the target, the count holds at 1.
    let deadline = Instant::now() + Duration::from_secs(20);
    let decided = |r: &Option<VipReport>| {
        r.as_ref().and_then(|r| {
            r.decisions
                .iter()
                .rev()
                .find(|d| d.metrics.load_waiting.iter().any(Option::is_some))
                .cloned()
        })
    };
    let hold = loop {
        if let Some(d) = decided(&scaler(&socket)) {
            break d;
        }
        assert!(Instant::now() < deadline, "no decision on a load report");
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(hold.metrics.load_waiting, vec![Some(1.0)], "{hold:?}");
    assert_eq!(hold.metrics.load_kv_cache_percent, vec![Some(75.0)]);
    assert_eq!((hold.current, hold.desired), (1, 1), "{}", hold.reason);

    // The queue grows to 20: ratio 4, the autoscaler asks for 4 (max 2) and adds the
    // standby backend once its health checks pass.
    waiting[0].store(19, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(&socket).expect("status");
        let added = s
            .vips
            .iter()
            .any(|v| v.name == "lab-tcp4" && v.backends.iter().any(|b| b.address == standby));
        if added {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby backend was not added: {:?}",
            scaler(&socket)
        );
        thread::sleep(Duration::from_millis(100));
    }
    let r = scaler(&socket).expect("the scaler's report");
    let up = r
        .decisions
        .iter()
        .find(|d| d.direction() == "up")
        .unwrap_or_else(|| panic!("no scale-up decision: {r:?}"));
    assert_eq!(up.metrics.load_waiting, vec![Some(20.0)], "{up:?}");
    assert!(
        up.said
            .iter()
            .any(|s| s.reason.contains("load_waiting 20.0/backend vs 5")),
        "{up:?}"
    );
    assert_eq!(up.desired, 2, "{}", up.reason);
    assert_eq!(r.added, 1, "{r:?}");
    stop.store(true, Ordering::Relaxed);
    drop(d);
}

/// An HAProxy agent-check backend (`source = "agent"`) of an `lc` VIP answering `drain`
/// takes no new flows (the policy's weight 0 reaches the least-connection plan) while its
/// open connections continue; answering `ready` again, it takes new flows again.
#[test]
fn an_agent_answering_drain_takes_no_new_flows_until_it_is_ready_again() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("ld", "agent")).backends(2)).expect("bring the lab up");
    let agents: Vec<Agent> = (0..2)
        .map(|i| Agent::start(lab.backend(i), AGENT_PORT, "ready").expect("an agent"))
        .collect();
    let load = LoadConfig {
        source: LoadSource::Agent,
        port: AGENT_PORT,
        preset: None,
        ..vllm_load(1000)
    };
    let config = load_config(&lab, load, Scheduler::LeastConn);
    let socket = config.daemon.api_socket.clone();
    let d = Daemon::start(&lab, config).expect("start the daemon");
    let to = std::net::SocketAddr::new(lab.vip4().into(), sluice_lab::lab::TCP_PORT);
    wait_for("both agents' answers", || {
        loads(&socket, &lab).iter().all(|l| {
            l.as_ref()
                .is_some_and(|l| l.agent.as_deref() == Some("ready") && !l.stale)
        })
    });
    let mut held = conn::connections_held(lab.client(0), to, 10).expect("hold 10 connections");
    let before = per_backend(&held);
    assert_eq!(
        before.len(),
        2,
        "lc spreads 10 connections over both: {before:?}"
    );

    agents[0].say("drain");
    wait_for("backend-1's weight to drop to 0", || {
        weight(&socket, &lab, 0) == 0
    });
    let text = plan_load(&socket);
    assert!(line_of(&text, &lab, 0).contains("agent: drain"), "{text}");
    let fresh = conn::connections(lab.client(0), to, 20).expect("new connections");
    assert_eq!(
        fresh.get("backend-1"),
        None,
        "a drained backend took new flows: {fresh:?}"
    );
    echo_all(&mut held, "drained").expect("open connections continue on both backends");
    assert_eq!(per_backend(&held), before, "no open connection moved");

    agents[0].say("ready");
    wait_for("backend-1's weight to come back", || {
        weight(&socket, &lab, 0) > 0
    });
    let fresh = conn::connections(lab.client(0), to, 20).expect("new connections");
    assert!(
        fresh.get("backend-1").copied().unwrap_or(0) > 0,
        "backend-1 takes no new flows after its agent said ready: {fresh:?}"
    );
    for c in held {
        c.close().expect("a clean close");
    }
    drop(d);
    drop(agents);
}

/// A backend whose `/metrics` stops answering is treated as the policy documents: once
/// its last report is older than `stale_after_ms` it counts as saturated, so it takes no
/// new flows while the other is open (its open connections continue), and `sluice backend
/// list` shows the read error and the report's age. The VIP is `wlc`: the fresh backend's
/// plan counts its reported requests in flight, the silent one's its connections. Once
/// its page answers again, it takes new flows again.
#[test]
fn a_backend_whose_metrics_stop_answering_takes_no_new_flows_once_stale() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("ld", "stale")).backends(2)).expect("bring the lab up");
    let stops: Vec<Arc<AtomicBool>> = (0..2).map(|_| Arc::new(AtomicBool::new(false))).collect();
    for (i, stop) in stops.iter().enumerate() {
        serve_metrics(&lab, i, Arc::new(AtomicU32::new(0)), Arc::clone(stop));
    }
    let config = load_config(&lab, vllm_load(500), Scheduler::WeightedLeastConn);
    let socket = config.daemon.api_socket.clone();
    let d = Daemon::start(&lab, config).expect("start the daemon");
    let to = std::net::SocketAddr::new(lab.vip4().into(), sluice_lab::lab::TCP_PORT);
    wait_for("both backends' reports", || {
        loads(&socket, &lab)
            .iter()
            .all(|l| l.as_ref().is_some_and(|l| !l.stale && l.error.is_none()))
    });
    let mut held = conn::connections_held(lab.client(0), to, 10).expect("hold 10 connections");
    let before = per_backend(&held);
    assert_eq!(
        before.len(),
        2,
        "10 connections over 2 equal backends: {before:?}"
    );

    stops[0].store(true, Ordering::Relaxed);
    wait_for("backend-1's weight to drop to 0", || {
        weight(&socket, &lab, 0) == 0
    });
    let l = loads(&socket, &lab);
    let silent = l[0].clone().expect("backend-1's reading");
    assert!(
        silent.stale && silent.errors > 0 && silent.age_ms.is_some_and(|ms| ms > 500),
        "{silent:?}"
    );
    assert!(
        silent
            .error
            .as_deref()
            .is_some_and(|e| e.contains("/metrics")),
        "{silent:?}"
    );
    assert!(l[1].as_ref().is_some_and(|l| !l.stale), "{l:?}");
    let argv = [
        "sluice",
        "--api-socket",
        socket.to_str().unwrap(),
        "backend",
        "list",
    ];
    dispatch(Cli::try_parse_from(argv).unwrap()).expect("sluice backend list");
    let e = explain(&socket);
    let b = &e.vips[0].backends;
    assert!(
        b[0].saturated && b[0].reason.contains("stale report"),
        "{e:?}"
    );
    assert!(!e.vips[0].fail_open, "the other backend is open: {e:?}");
    assert_eq!(
        (b[0].counted.as_deref(), b[1].counted.as_deref()),
        (Some("connections"), Some("reported")),
        "{e:?}"
    );
    assert_eq!(
        b[1].reported_in_flight,
        Some(3),
        "running 2 + waiting 0 + 1: {e:?}"
    );
    let fresh = conn::connections(lab.client(0), to, 20).expect("new connections");
    assert_eq!(
        fresh.get("backend-1"),
        None,
        "a backend with a stale report took new flows: {fresh:?}"
    );
    echo_all(&mut held, "stale").expect("open connections continue on both backends");
    assert_eq!(per_backend(&held), before, "no open connection moved");

    stops[0].store(false, Ordering::Relaxed);
    wait_for("backend-1's weight to come back", || {
        weight(&socket, &lab, 0) > 0
    });
    let fresh = conn::connections(lab.client(0), to, 20).expect("new connections");
    assert!(
        fresh.get("backend-1").copied().unwrap_or(0) > 0,
        "backend-1 takes no new flows after its page answered again: {fresh:?}"
    );
    for c in held {
        c.close().expect("a clean close");
    }
    for s in &stops {
        s.store(true, Ordering::Relaxed);
    }
    drop(d);
}
