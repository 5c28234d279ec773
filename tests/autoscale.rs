//! The autoscaler end to end in the lab: a bounded ramp of real long-lived TCP connections
//! makes the daemon's own autoscaler add backends from its standby pool (each only after
//! its health probes pass), new connections reach them, and as clients close their
//! connections it drains the backend with the fewest, removes it once drained and gives it
//! back to the pool, down to `min`; then a second ramp takes a released backend again.
//! Zero resets (every held connection echoes after every scaling event and closes with a
//! clean EOF), no flapping (only scale-ups while the load rises, only scale-downs while it
//! falls), and a timeline of what happened (the README's lab run).
//!
//! The lab is `sl-as-<pid>-<n>`, removed when it drops, also on failure; every loop is
//! bounded in count and time.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail, ensure};
use sluice_core::config::{
    CheckKind, Config, Scheduler,
    autoscale::{AutoscaleConfig, MetricKind, Num, ProviderConfig, TargetConfig},
};
use sluice_daemon::{
    api::{Request, Response, client},
    autoscale::{Decision, driver::VipReport},
};
use sluice_lab::lab::{self, Lab, LabSpec, Weights, daemon::Daemon};
use sluice_tests::{
    api::running_config,
    api::status,
    conn::Held,
    conn::{echo_all, per_backend},
    prefix, require_root, serial,
};

const VIP: &str = "lab-tcp4";
/// Active connections per serving backend the target policy holds.
const TARGET: f64 = 10.0;
/// Connections opened (or closed) per step.
const STEP: usize = 10;
/// The most connections the test holds at once.
const MAX_HELD: usize = 50;
/// How long the scaler may take to reach a count it should reach.
const SETTLE: Duration = Duration::from_secs(20);

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn scaler(socket: &Path) -> anyhow::Result<Option<VipReport>> {
    match client::request(socket, &Request::AutoscaleStatus)? {
        Response::Autoscale { status } => Ok(status.vips.into_iter().find(|v| v.name == VIP)),
        r => bail!("unexpected answer {r:?}"),
    }
}

/// One backend of the VIP as the daemon reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    address: IpAddr,
    lifecycle: String,
    active: u64,
}

/// Everything observed, in order: the README's timeline.
struct Watch {
    socket: PathBuf,
    t0: Instant,
    wall0: u64,
    /// Address → short name (b1..).
    names: BTreeMap<IpAddr, String>,
    decisions: BTreeMap<u64, Decision>,
    events: Vec<String>,
    /// (seconds since the start, line).
    rows: Vec<(f64, String)>,
    last: Vec<Seen>,
    report: VipReport,
    /// Lifecycles each backend was seen in.
    lifecycles: BTreeMap<IpAddr, Vec<String>>,
    held: usize,
}

impl Watch {
    fn new(socket: PathBuf, lab: &Lab) -> Self {
        Self {
            socket,
            t0: Instant::now(),
            wall0: wall_ms(),
            names: (0..lab.backends().len())
                .map(|i| (IpAddr::from(lab.backend(i).addr4()), format!("b{}", i + 1)))
                .collect(),
            decisions: BTreeMap::new(),
            events: Vec::new(),
            rows: Vec::new(),
            last: Vec::new(),
            report: VipReport::default(),
            lifecycles: BTreeMap::new(),
            held: 0,
        }
    }

    fn t(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// Seconds since the start of an event's time (`2025-01-01T10:00:00.123Z`): the time of
    /// day against the start's (the test runs for minutes, not across midnight).
    fn since_start(&self, at: &str) -> Option<f64> {
        let tod = at.split_once('T')?.1.strip_suffix('Z')?;
        let mut parts = tod.split(':');
        let h: f64 = parts.next()?.parse().ok()?;
        let m: f64 = parts.next()?.parse().ok()?;
        let s: f64 = parts.next()?.parse().ok()?;
        let ms = (h * 3600.0 + m * 60.0 + s) * 1000.0;
        let start = (self.wall0 % 86_400_000) as f64;
        Some(((ms - start) / 1000.0).max(0.0))
    }

    fn backends(&self) -> String {
        let mut s = String::new();
        for b in &self.last {
            let tag = match b.lifecycle.as_str() {
                "active" => "",
                "slow-start" => "(slow-start)",
                "draining" => "(draining)",
                "drained" => "(drained)",
                other => other,
            };
            let _ = write!(s, "{}:{}{tag} ", self.names[&b.address], b.active);
        }
        s.trim_end().to_owned()
    }

    fn row(&mut self, t: f64, what: &str) {
        let serving = self
            .last
            .iter()
            .filter(|b| b.lifecycle != "draining" && b.lifecycle != "drained")
            .count();
        let line = format!(
            "{t:6.1}s  conns {:2}  serving {serving}  [{}]  {what}",
            self.held,
            self.backends()
        );
        println!("{line}");
        self.rows.push((t, line));
    }

    /// Poll the daemon once; record what changed.
    fn poll(&mut self) -> anyhow::Result<()> {
        let st = status(&self.socket)?;
        let v = st
            .vips
            .iter()
            .find(|v| v.name == VIP)
            .context("VIP in status")?;
        let now: Vec<Seen> = v
            .backends
            .iter()
            .map(|b| Seen {
                address: b.address,
                lifecycle: b.lifecycle.clone(),
                active: b.active,
            })
            .collect();
        for b in &now {
            let l = self.lifecycles.entry(b.address).or_default();
            if l.last() != Some(&b.lifecycle) {
                l.push(b.lifecycle.clone());
            }
        }
        let membership = |s: &[Seen]| -> Vec<(IpAddr, String)> {
            s.iter().map(|b| (b.address, b.lifecycle.clone())).collect()
        };
        let changed = membership(&now) != membership(&self.last);
        self.last = now;
        if let Some(r) = scaler(&self.socket)? {
            for d in &r.decisions {
                if self.decisions.contains_key(&d.at.0) {
                    continue;
                }
                self.decisions.insert(d.at.0, d.clone());
                let prev = self
                    .decisions
                    .range(..d.at.0)
                    .next_back()
                    .map(|(_, p)| p.desired);
                // A row for every decision that changes something, once per new count.
                if d.direction() != "hold" && prev != Some(d.desired) {
                    let t = d.at.0.saturating_sub(self.wall0) as f64 / 1000.0;
                    let what = format!(
                        "decision {} {}→{}: {}",
                        d.direction(),
                        d.current,
                        d.desired,
                        d.said
                            .iter()
                            .map(|s| s.reason.as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    );
                    self.row(t, &what);
                }
            }
            for e in &r.events {
                if !self.events.contains(e) {
                    self.events.push(e.clone());
                    // "<time> what", the time the scaler's own.
                    let (at, what) = e.split_once(' ').unwrap_or(("", e.as_str()));
                    let t = self.since_start(at).unwrap_or_else(|| self.t());
                    self.row(t, &format!("scaler: {what}"));
                }
            }
            self.report = r;
        }
        if changed {
            let t = self.t();
            self.row(t, "backends changed");
        }
        Ok(())
    }

    /// Serving backends (neither draining nor drained).
    fn serving(&self) -> Vec<IpAddr> {
        self.last
            .iter()
            .filter(|b| b.lifecycle != "draining" && b.lifecycle != "drained")
            .map(|b| b.address)
            .collect()
    }

    fn draining(&self) -> Vec<IpAddr> {
        self.last
            .iter()
            .filter(|b| b.lifecycle == "draining" || b.lifecycle == "drained")
            .map(|b| b.address)
            .collect()
    }

    /// Poll until `done` holds (at most `within`).
    fn until(
        &mut self,
        within: Duration,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<()> {
        let t = Instant::now();
        loop {
            self.poll()?;
            if done(self) {
                return Ok(());
            }
            if t.elapsed() > within {
                bail!(
                    "{what}: not within {within:?}; backends [{}], scaler {:?}",
                    self.backends(),
                    self.report
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Non-hold decisions taken between two wall-clock instants, as directions.
    fn directions(&self, from: u64, to: u64) -> Vec<&'static str> {
        self.decisions
            .range(from..to)
            .map(|(_, d)| d.direction())
            .filter(|d| *d != "hold")
            .collect()
    }
}

/// Every held connection still talks to the backend it started on.
/// `n` new held connections from the lab's client to `vip`.
fn open_batch(lab: &Lab, vip: SocketAddr, n: usize) -> anyhow::Result<Vec<Held>> {
    (0..n).map(|_| Held::open(lab.client(0), vip)).collect()
}

/// Open a batch of `STEP` connections, log it, and require that at least half reach
/// `backend` (just added: lc gives it the new flows); then every held connection echoes.
fn batch_reaches(
    lab: &Lab,
    vip: SocketAddr,
    w: &mut Watch,
    held: &mut Vec<Held>,
    backend: &str,
    label: &str,
) -> anyhow::Result<()> {
    let mut batch = open_batch(lab, vip, STEP)?;
    let got = per_backend(&batch);
    w.row(w.t(), &format!("{label}: clients opened {STEP}: {got:?}"));
    ensure!(
        got.get(backend).copied().unwrap_or(0) * 2 >= STEP,
        "{backend} (just added) takes too few new connections: {got:?}"
    );
    held.append(&mut batch);
    w.held = held.len();
    echo_all(held, label)
}

/// What target tracking should settle on for `conns` open connections (no change inside
/// the tolerance), within [1, 4].
fn expected(conns: usize, serving: usize) -> usize {
    let per = conns as f64 / serving as f64;
    let want = if (per / TARGET - 1.0).abs() <= 0.1 {
        serving
    } else {
        (conns as f64 / TARGET).ceil() as usize
    };
    want.clamp(1, 4)
}

/// The lab's `lab-tcp4` alone, with backend-1 only, scaled between 1 and `max` backends
/// from `provider` (target tracking: 10 open connections a backend; short windows).
fn scaled_config(lab: &Lab, max: u32, provider: ProviderConfig) -> anyhow::Result<Config> {
    let first = IpAddr::from(lab.backend(0).addr4());
    let mut config = lab.daemon_config(&Weights::Equal)?;
    config.daemon.conntrack_sweep_ms = 500;
    config.vips.retain(|v| v.name == VIP);
    {
        let v = &mut config.vips[0];
        v.backends.retain(|b| b.address == first);
        // Weights above 1 so that slow start shows (lc itself only skips weight 0).
        v.backends[0].weight = 10;
        v.scheduler = Scheduler::LeastConn;
        v.slow_start_ms = 2000;
        assert_eq!(v.health.check, CheckKind::Tcp);
        // Fast rise (candidates join quickly), but a loaded CI machine must not take a healthy
        // backend down: 280 ms to answer, 4 misses in a row (1.2 s) before it is down.
        v.health.interval_ms = 300;
        v.health.timeout_ms = 280;
        v.health.rise = 2;
        v.health.fall = 4;
        v.autoscale = Some(AutoscaleConfig {
            min: 1,
            max,
            interval_ms: 500,
            weight: 10,
            ready_timeout_ms: 10_000,
            up_backends: 4,
            up_percent: 100,
            up_period_ms: 15_000,
            down_backends: 0,
            down_percent: 100,
            down_period_ms: 15_000,
            target: Some(TargetConfig {
                metric: MetricKind::ActiveConnections,
                value: Num(TARGET),
                tolerance: Num(0.1),
                scale_down_stabilization_ms: 3000,
                scale_up_stabilization_ms: 0,
            }),
            steps: Vec::new(),
            crons: Vec::new(),
            backend_metric: None,
            provider,
        });
    }
    // Through the file's rules, as a config file would be.
    Ok(sluice_core::config::parse(&config.to_toml()?, "autoscale test")?.config)
}

#[test]
fn pool_scales_out_and_in_with_real_connections() {
    require_root();
    let _serial = serial();
    // backend-1 serves always; backend-2..4 run their servers on standby.
    let lab = Lab::up(LabSpec::new(&prefix("as", "pool")).backends(4).ipv6(false))
        .expect("bring the lab up");
    let addr = |i: usize| IpAddr::from(lab.backend(i).addr4());
    let config = scaled_config(
        &lab,
        4,
        ProviderConfig::Pool {
            standby: vec![addr(1), addr(2), addr(3)],
        },
    )
    .expect("the autoscaled config");
    let socket = config.daemon.api_socket.clone();
    let d = Daemon::start(&lab, config).expect("start the daemon");
    let vip = SocketAddr::new(lab.vip4().into(), lab::TCP_PORT);
    let name_of: BTreeMap<String, IpAddr> =
        (0..4).map(|i| (lab.backend(i).name(), addr(i))).collect();
    let mut w = Watch::new(socket, &lab);
    w.until(SETTLE, "the scaler managing the VIP", |w| {
        w.report.name == VIP && w.serving() == [addr(0)]
    })
    .expect("wait for the scaler");

    // Ramp: 10 connections a step; after each, the count target tracking asks for.
    let ramp_from = wall_ms();
    let mut held: Vec<Held> = Vec::new();
    let mut newest: Option<IpAddr> = None;
    while held.len() < MAX_HELD {
        let mut batch = open_batch(&lab, vip, STEP).expect("open a batch of connections");
        let got = per_backend(&batch);
        held.append(&mut batch);
        w.held = held.len();
        let t = w.t();
        w.row(t, &format!("clients opened {STEP}: {got:?}"));
        // The backend added last takes (nearly) the whole batch: lc, and it had none.
        if let Some(n) = newest.take() {
            let on_new = got
                .iter()
                .filter(|(k, _)| name_of[k.as_str()] == n)
                .map(|(_, c)| *c)
                .sum::<usize>();
            assert!(
                on_new * 2 >= STEP,
                "new connections did not reach the added backend {n}: {got:?}"
            );
        }
        let before = w.serving();
        let want = expected(held.len(), before.len());
        w.until(
            SETTLE,
            &format!("{want} serving for {} conns", held.len()),
            |w| w.serving().len() == want && w.report.provisioning == 0,
        )
        .expect("wait for the scaler");
        if want > before.len() {
            newest = w.serving().into_iter().find(|a| !before.contains(a));
        }
        let tag = format!("ramp{}", held.len());
        echo_all(&mut held, &tag).expect("echo on every held connection");
    }
    // At max with 50 connections (5 a backend would be wanted): it stays at 4.
    std::thread::sleep(Duration::from_millis(1500));
    w.poll().expect("poll the scaler");
    assert!(w.serving().len() == 4, "not at max: [{}]", w.backends());
    assert!(
        w.draining().is_empty(),
        "draining during the ramp: [{}]",
        w.backends()
    );
    let peak = wall_ms();

    // Fall: clients close 10 connections a step (on the busiest serving backends); when
    // the scaler drains a backend, that backend's clients finish their exchange and close.
    let mut last_step = Instant::now()
        .checked_sub(Duration::from_secs(60))
        .unwrap_or_else(Instant::now);
    let fall_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        w.poll().expect("poll the scaler");
        assert!(
            Instant::now() < fall_deadline,
            "the fall did not end within 120 s: [{}]",
            w.backends()
        );
        let draining: Vec<String> = w
            .draining()
            .iter()
            .filter_map(|a| {
                name_of
                    .iter()
                    .find(|(_, x)| *x == a)
                    .map(|(n, _)| n.clone())
            })
            .collect();
        let (finishing, rest): (Vec<Held>, Vec<Held>) = std::mem::take(&mut held)
            .into_iter()
            .partition(|h| draining.contains(&h.backend));
        held = rest;
        if !finishing.is_empty() {
            // The scaler drained the serving backend with the fewest connections.
            let serving_counts: Vec<usize> = w
                .serving()
                .iter()
                .map(|a| held.iter().filter(|h| name_of[&h.backend] == *a).count())
                .collect();
            for (b, n) in per_backend(&finishing) {
                assert!(
                    serving_counts.iter().all(|c| n <= *c),
                    "drained {b} with {n} connections, the serving ones have {serving_counts:?}"
                );
            }
            echo_all(&mut held, "drain").expect("echo on every held connection");
            let n = finishing.len();
            for (i, mut h) in finishing.into_iter().enumerate() {
                h.echo(&format!("last-{i}"))
                    .expect("echo on a held connection");
                h.close().expect("close a held connection");
            }
            w.held = held.len();
            let t = w.t();
            w.row(
                t,
                &format!("clients of the draining backend finished: {n} closed cleanly"),
            );
            continue;
        }
        if held.is_empty() && w.serving() == [addr(0)] && w.draining().is_empty() {
            break;
        }
        if !held.is_empty()
            && w.draining().is_empty()
            && last_step.elapsed() > Duration::from_secs(6)
        {
            let n = STEP.min(held.len());
            for _ in 0..n {
                let counts = per_backend(&held);
                let busiest = counts
                    .iter()
                    .max_by_key(|(_, c)| **c)
                    .map(|(b, _)| b.clone())
                    .expect("a backend");
                let i = held
                    .iter()
                    .position(|h| h.backend == busiest)
                    .expect("a connection");
                held.swap_remove(i)
                    .close()
                    .expect("close a held connection");
            }
            w.held = held.len();
            last_step = Instant::now();
            let t = w.t();
            w.poll().expect("poll the scaler");
            w.row(
                t,
                &format!("clients closed {n} (left: {:?})", per_backend(&held)),
            );
            let tag = format!("fall{}", held.len());
            echo_all(&mut held, &tag).expect("echo on every held connection");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Idle at min: nothing more happens.
    std::thread::sleep(Duration::from_millis(2000));
    w.poll().expect("poll the scaler");
    let fallen = wall_ms();
    let cfg = running_config(&w.socket)
        .expect("the daemon's running config")
        .0;
    let left: Vec<IpAddr> = cfg.vips[0].backends.iter().map(|b| b.address).collect();
    assert!(left == [addr(0)], "backends left: {left:?}");
    let r = w.report.clone();
    println!(
        "scaler after the fall: serving {} desired {} added {} removed {} failures {} \
         decisions up {} down {} hold {}",
        r.serving,
        r.desired,
        r.added,
        r.removed,
        r.failures,
        r.decisions_up,
        r.decisions_down,
        r.decisions_hold
    );
    assert!(
        (r.serving, r.desired, r.added, r.removed, r.failures) == (1, 1, 3, 3, 0),
        "{r:?}"
    );
    assert!(r.draining.is_empty() && r.provisioning == 0, "{r:?}");
    for i in 1..4 {
        let a = addr(i);
        assert!(
            w.events
                .iter()
                .any(|e| e.contains(&format!("{a} passed its checks"))),
            "{a} joined without passing its checks first: {:?}",
            w.events
        );
        assert!(
            w.events
                .iter()
                .any(|e| e.contains(&format!("{a} released to the provider"))),
            "{a} not released: {:?}",
            w.events
        );
        let l = &w.lifecycles[&a];
        assert!(
            l.last().is_some_and(|s| s == "draining" || s == "drained"),
            "{a}: lifecycles {l:?}"
        );
    }
    // No flapping: only ups while the load rose, only downs while it fell.
    let up = w.directions(ramp_from, peak);
    let down = w.directions(peak, fallen);
    assert!(
        !up.is_empty() && up.iter().all(|d| *d == "up"),
        "ramp decisions {up:?}"
    );
    assert!(
        !down.is_empty() && down.iter().all(|d| *d == "down"),
        "fall decisions {down:?}"
    );

    // The released backends are standby again: a second ramp takes one back (the first
    // free address), and new connections reach it.
    let again_from = wall_ms();
    let mut held: Vec<Held> = Vec::new();
    for _ in 0..2 {
        held.append(&mut open_batch(&lab, vip, STEP).expect("open a batch of connections"));
    }
    w.held = held.len();
    let t = w.t();
    w.row(
        t,
        &format!("again: clients opened 20: {:?}", per_backend(&held)),
    );
    w.until(SETTLE, "a pool backend taken again", |w| {
        w.serving().len() == 2
    })
    .expect("wait for the scaler");
    let back = w.serving();
    assert!(back == [addr(0), addr(1)], "taken again: {back:?}");
    batch_reaches(
        &lab,
        vip,
        &mut w,
        &mut held,
        &lab.backend(1).name(),
        "again",
    )
    .expect("a batch reaches the backends");
    for h in held {
        h.close().expect("close a held connection");
    }
    w.held = 0;
    w.row(w.t(), "again: clients closed all");
    w.until(SETTLE, "back to min, released again", |w| {
        w.serving() == [addr(0)] && w.draining().is_empty() && w.report.removed == 4
    })
    .expect("wait for the scaler");
    assert!(w.report.added == 4, "{:?}", w.report);
    let again = w.directions(again_from, wall_ms());
    assert!(
        again
            .iter()
            .skip_while(|d| **d == "up")
            .all(|d| *d == "down"),
        "second cycle decisions {again:?}"
    );
    assert!(w.report.failures == 0, "{:?}", w.report);

    // In time order (events carry the scaler's time, seen up to a poll later).
    w.rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!("\ntimeline ({} rows):", w.rows.len());
    for (_, r) in &w.rows {
        println!("{r}");
    }
    drop(d);
    lab.down().expect("take the lab down");
}

/// The environment variable that turns [`backend_server_as_child`] into a lab backend
/// server: `NAME ADDRESS...`.
const SERVE_AS: &str = "SLUICE_TEST_BACKEND_SERVER";

/// Not a test of its own: run by the `exec` provider's create script (this test binary
/// re-executed inside a backend's namespace) as a backend server that serves until killed.
/// Without the variable it does nothing.
#[test]
fn backend_server_as_child() {
    let Some(spec) = std::env::var_os(SERVE_AS) else {
        return;
    };
    let spec = spec.to_string_lossy().into_owned();
    let mut words = spec.split_whitespace();
    let name = words.next().expect("a name");
    let addrs: Vec<IpAddr> = words.map(|a| a.parse().expect("an address")).collect();
    let server =
        lab::server::BackendServer::start(name, &addrs).expect("the backend server starts");
    server.wait();
}

/// `exec` provider scripts for the lab: `create` starts the server of the first standby
/// backend (`standby`: index, address) that has none, as a process of its own in the
/// backend's namespace, and prints its address; `destroy ADDRESS` kills it and waits until
/// it is gone. State in `dir` (`run-K/pid`).
fn exec_scripts(lab: &Lab, dir: &Path, standby: &[usize]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe()?;
    let mut create = String::from("#!/bin/sh\nset -eu\n");
    let mut destroy = String::from("#!/bin/sh\nset -eu\ncase \"$1\" in\n");
    for &i in standby {
        let b = lab.backend(i);
        let run = dir.join(format!("run-{i}"));
        let _ = write!(
            create,
            "if mkdir {run} 2>/dev/null; then\n  \
             {SERVE_AS}='{name} {a} {vip}' setsid ip netns exec {ns} {exe} --exact \
             backend_server_as_child --nocapture --test-threads 1 \
             >{run}/log 2>&1 </dev/null &\n  \
             echo $! >{run}/pid\n  echo {a}\n  exit 0\nfi\n",
            run = run.display(),
            name = b.name(),
            a = b.addr4(),
            vip = lab.vip4(),
            ns = b.ns(),
            exe = exe.display(),
        );
        let _ = writeln!(
            destroy,
            "  {a}) run={run} ;;",
            a = b.addr4(),
            run = run.display()
        );
    }
    create.push_str("echo 'no standby backend left' >&2\nexit 1\n");
    destroy.push_str(
        "  *) echo \"unknown backend $1\" >&2; exit 1 ;;\nesac\n\
         pid=$(cat \"$run/pid\")\nkill \"$pid\"\n\
         i=0\nwhile kill -0 \"$pid\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.02; i=$((i+1)); done\n\
         if kill -0 \"$pid\" 2>/dev/null; then echo \"$pid still running\" >&2; exit 1; fi\n\
         rm -r \"$run\"\n",
    );
    std::fs::create_dir_all(dir)?;
    let (c, d) = (dir.join("create.sh"), dir.join("destroy.sh"));
    std::fs::write(&c, create)?;
    std::fs::write(&d, destroy)?;
    Ok((c, d))
}

/// Whether a TCP connection to `to` from `client` is accepted.
fn accepts(client: &lab::Node, to: SocketAddr) -> anyhow::Result<bool> {
    Ok(client
        .run(|| std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1)))?
        .is_ok())
}

#[test]
fn exec_provider_starts_and_stops_real_servers() {
    require_root();
    let _serial = serial();
    // backend-2 and backend-3 have no server: the provider's scripts start and stop them.
    let lab = Lab::up(LabSpec::new(&prefix("as", "exec")).backends(3).ipv6(false))
        .expect("bring the lab up");
    lab.kill_backend_server(1)
        .expect("kill the backend's server");
    lab.kill_backend_server(2)
        .expect("kill the backend's server");
    let addr = |i: usize| IpAddr::from(lab.backend(i).addr4());
    let dir = lab::lab_dir(lab.prefix()).join("exec");
    let (create, destroy) = exec_scripts(&lab, &dir, &[1, 2]).expect("the exec provider scripts");
    let sh = |p: &Path| vec!["/bin/sh".to_owned(), p.display().to_string()];
    let config = scaled_config(
        &lab,
        2,
        ProviderConfig::Exec {
            create: sh(&create),
            destroy: sh(&destroy),
            timeout_ms: 5000,
            retries: 0,
        },
    )
    .expect("the autoscaled config");
    let socket = config.daemon.api_socket.clone();
    let d = Daemon::start(&lab, config).expect("start the daemon");
    let vip = SocketAddr::new(lab.vip4().into(), lab::TCP_PORT);
    let b2 = SocketAddr::new(addr(1), lab::TCP_PORT);
    let mut w = Watch::new(socket, &lab);
    w.until(SETTLE, "the scaler managing the VIP", |w| {
        w.report.name == VIP && w.serving() == [addr(0)]
    })
    .expect("wait for the scaler");
    assert!(
        !accepts(lab.client(0), b2).expect("try a connection"),
        "backend-2 serves before any create"
    );

    // 20 connections: the scaler runs `create`, which starts backend-2's server; it joins
    // once its checks pass, and the next connections reach it.
    let mut held: Vec<Held> = (0..2 * STEP)
        .map(|_| Held::open(lab.client(0), vip))
        .collect::<anyhow::Result<_>>()
        .expect("open the connections");
    w.held = held.len();
    w.row(
        w.t(),
        &format!("clients opened 20: {:?}", per_backend(&held)),
    );
    w.until(SETTLE, "backend-2 created and added", |w| {
        w.serving().len() == 2 && w.report.provisioning == 0
    })
    .expect("wait for the scaler");
    assert!(w.serving() == [addr(0), addr(1)], "{:?}", w.serving());
    assert!(
        dir.join("run-1/pid").exists() && !dir.join("run-2").exists(),
        "create started the wrong servers"
    );
    batch_reaches(&lab, vip, &mut w, &mut held, &lab.backend(1).name(), "exec")
        .expect("a batch reaches the backends");

    // All close: backend-2 is drained, removed, and `destroy` stops its server.
    for h in held {
        h.close().expect("close a held connection");
    }
    w.held = 0;
    w.row(w.t(), "clients closed all");
    w.until(SETTLE, "backend-2 drained, removed and destroyed", |w| {
        w.serving() == [addr(0)] && w.draining().is_empty() && w.report.removed == 1
    })
    .expect("wait for the scaler");
    // `destroy` ran in the background of the release: wait for its outcome.
    let t = Instant::now();
    while dir.join("run-1").exists() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.join("run-1").exists(), "destroy did not run");
    assert!(
        !accepts(lab.client(0), b2).expect("try a connection"),
        "backend-2's server still runs"
    );
    let r = &w.report;
    assert!(
        (r.provider.as_str(), r.added, r.removed, r.failures) == ("exec", 1, 1, 0),
        "{r:?}"
    );
    assert!(
        w.events
            .iter()
            .any(|e| e.contains(&format!("{} passed its checks", addr(1)))),
        "{:?}",
        w.events
    );
    w.rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!("\ntimeline ({} rows):", w.rows.len());
    for (_, r) in &w.rows {
        println!("{r}");
    }
    drop(d);
    lab.down().expect("take the lab down");
}

/// The autoscaler's own state survives a daemon restart mid-drain: backend-2 (created by
/// `exec`) is draining with connections still open when the daemon stops; the next daemon
/// (same pinned program, the running configuration) reads `autoscale.json`, keeps it
/// draining, and once the connections close and the daemon removes it, runs `destroy`.
/// Without the persisted state the new daemon would remove it and never destroy it.
#[test]
fn exec_destroy_runs_after_a_restart_mid_drain() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("as", "exrs")).backends(2).ipv6(false))
        .expect("bring the lab up");
    lab.kill_backend_server(1)
        .expect("kill the backend's server");
    let addr = |i: usize| IpAddr::from(lab.backend(i).addr4());
    let dir = lab::lab_dir(lab.prefix()).join("exec");
    let (create, destroy) = exec_scripts(&lab, &dir, &[1]).expect("the exec provider scripts");
    let sh = |p: &Path| vec!["/bin/sh".to_owned(), p.display().to_string()];
    let mut config = scaled_config(
        &lab,
        2,
        ProviderConfig::Exec {
            create: sh(&create),
            destroy: sh(&destroy),
            timeout_ms: 5000,
            retries: 0,
        },
    )
    .expect("the autoscaled config");
    // No drain deadline: the drain lasts as long as the test holds a connection.
    config.vips[0].drain_timeout_ms = 0;
    let socket = config.daemon.api_socket.clone();
    let state_dir = config.daemon.state_dir.clone();
    let d = Daemon::start_keeping(&lab, config).expect("start the daemon keeping the pins");
    let vip = SocketAddr::new(lab.vip4().into(), lab::TCP_PORT);
    let mut w = Watch::new(socket.clone(), &lab);
    w.until(SETTLE, "the scaler managing the VIP", |w| {
        w.report.name == VIP && w.serving() == [addr(0)]
    })
    .expect("wait for the scaler");
    let mut held: Vec<Held> = (0..2 * STEP)
        .map(|_| Held::open(lab.client(0), vip))
        .collect::<anyhow::Result<_>>()
        .expect("open the connections");
    w.until(SETTLE, "backend-2 created and added", |w| {
        w.serving() == [addr(0), addr(1)] && w.report.provisioning == 0
    })
    .expect("wait for the scaler");
    held.extend(
        (0..STEP)
            .map(|_| Held::open(lab.client(0), vip))
            .collect::<anyhow::Result<Vec<_>>>()
            .expect("open the connections"),
    );
    // Keep 3 connections on backend-2, close every other: the target asks for 1 backend,
    // and backend-2 (the only one the provider created) is drained, slowly.
    let b2 = lab.backend(1).name();
    let (mut keep, close): (Vec<Held>, Vec<Held>) = held.into_iter().partition(|h| h.backend == b2);
    assert!(keep.len() >= 3, "backend-2 took {} connections", keep.len());
    for h in close.into_iter().chain(keep.split_off(3)) {
        h.close().expect("close a held connection");
    }
    w.until(SETTLE, "backend-2 draining", |w| {
        w.draining() == [addr(1)] && w.report.draining == [addr(1)]
    })
    .expect("wait for the scaler");
    let saved = sluice_daemon::autoscale::persist::read(&state_dir)
        .expect("read autoscale.json")
        .expect("no autoscale.json");
    let entry = saved.vips.get(VIP).expect("autoscale.json without the VIP");
    assert!(
        entry.draining.iter().map(|c| c.address).collect::<Vec<_>>() == [addr(1)]
            && entry.owned.iter().any(|c| c.address == addr(1)),
        "{saved:?}"
    );

    // Restart with the running configuration (backend-2 draining, drain_remove).
    let running = running_config(&socket)
        .expect("the daemon's running config")
        .0;
    drop(d);
    let d = Daemon::start_keeping(&lab, running).expect("start the daemon keeping the pins");
    w.until(SETTLE, "the new scaler restored the drain", |w| {
        w.report.draining == [addr(1)] && w.report.owned == [addr(1)]
    })
    .expect("wait for the scaler");
    assert!(
        dir.join("run-1").exists(),
        "backend-2 destroyed before its drain ended"
    );
    echo_all(&mut keep, "restarted").expect("echo on every held connection");
    for h in keep {
        h.close().expect("close a held connection");
    }
    w.until(SETTLE, "backend-2 drained, removed and released", |w| {
        w.serving() == [addr(0)]
            && w.draining().is_empty()
            && w.report.removed == 1
            && w.report.owned.is_empty()
    })
    .expect("wait for the scaler");
    assert!(!dir.join("run-1").exists(), "destroy did not run");
    assert!(
        !accepts(lab.client(0), SocketAddr::new(addr(1), lab::TCP_PORT)).expect("try a connection"),
        "backend-2's server still runs"
    );
    assert!(
        w.report.failures == 0 && w.report.release_failures == 0,
        "{:?}",
        w.report
    );
    assert!(
        w.events
            .iter()
            .any(|e| e.contains("released to the provider")),
        "{:?}",
        w.events
    );
    let after = sluice_daemon::autoscale::persist::read(&state_dir)
        .expect("read autoscale.json")
        .expect("no autoscale.json");
    assert!(after.vips.is_empty(), "{after:?}");
    drop(d);
    lab.down().expect("take the lab down");
}
