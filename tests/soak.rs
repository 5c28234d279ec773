//! The soak (issue #17): one lab, a real `sluice run` process (this test binary re-executed
//! as the `sluice` command line, as in `persist.rs`) with its log in a file, and for
//! `SLUICE_SOAK_SECS` (default 100; the long run: 1800) everything at once:
//!
//! - short TCP connections opening and closing without pause, and UDP datagrams from a new
//!   source port each (every one a flow that goes idle and expires: `udp_idle_timeout_ms`
//!   2 s); long-lived TCP connections echoing every second (a keeper thread);
//! - per cycle (phases in an order drawn from the seed): a backend added (`sluice backend
//!   add`), live weight edits (`set-weight`), another backend added, quiesced and removed,
//!   health flapping (backend-3's server killed until its check is down, started again until
//!   it is up), the autoscaler scaling a VIP out from its standby pool (25 long-lived
//!   connections) and back in (they close), and the added backend drained with `--remove`
//!   while its connections still echo (then they close and it is removed);
//! - a daemon restart in the middle (SIGTERM, a new `sluice run` adopting the pins), the
//!   long-lived connections echoing throughout.
//!
//! Long-lived connections never break, except those on backend-3, which its server's kill
//! legitimately ends (a crash resets them; `on_down = "reassign"`). Short connections may
//! fail only while backend-3 is dead and not yet detected down.
//!
//! Then the proof that nothing leaks, as a before/after table: each daemon's RSS and open
//! descriptors after a warm-up cycle against after its last cycle (RSS within 8 MiB or
//! 20 %, its anonymous part within 2 MiB or 25 %, descriptors within 2); the flow table
//! empty and every active count 0 once the traffic stopped and the timeouts passed; after
//! `sluice detach` and the lab's removal no pin, namespace or link left; every WARN/ERROR
//! line of the daemons' logs explained by an allow-list (the health transitions the test
//! caused, one a flap).
//!
//! Seed: `SLUICE_SOAK_SEED` (default 17). The lab is `sl-soak-<pid>-s`, removed when it
//! drops, also on failure. Every loop is bounded in count and time.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use sluice_core::{
    config::{
        CheckKind, Config, Scheduler,
        autoscale::{AutoscaleConfig, MetricKind, Num, ProviderConfig, TargetConfig},
    },
    health::Health,
    state::Status,
};
use sluice_daemon::{
    api::{Request, Response, client},
    autoscale::driver::VipReport,
};
use sluice_lab::{
    lab::{self, Lab, LabSpec, Weights},
    llm::loadgen::SplitMix64,
};
use sluice_tests::{
    child::{self, Daemon},
    conn::{ChurnCounts, Held, TIMEOUT, churn_step},
    prefix, require_root, serial,
};

const TCP4: &str = "lab-tcp4";
const UDP4: &str = "lab-udp4";
/// The autoscaled VIP.
const TCP6: &str = "lab-tcp6";
/// Backend indices: 0 and 1 always serve; 2 flaps; 3 and 4 are the autoscaler's standby
/// pool on `TCP6` (and 3's IPv4 address is added to `TCP4` and removed); 5 is added to
/// `TCP4` and drained.
const FLAPPER: usize = 2;
const ADDED: usize = 5;
const ADDED_REMOVED: usize = 3;
/// Long-lived connections on the autoscaled VIP: target 10 a backend, so 3 backends.
const SCALED_CONNS: usize = 25;
/// How long one wait for the daemon may take.
const SETTLE: Duration = Duration::from_secs(30);
/// The leak bounds, end against after the warm-up cycle, each daemon (see the README).
/// RSS (about 50 MiB for this debug test binary: 26 MiB of its code and 16 MiB of
/// memory-mapped BPF maps, which do not grow): 8 MiB or 20 %, whichever is larger.
const RSS_SLACK_KIB: u64 = 8 * 1024;
const RSS_SLACK_PERCENT: u64 = 20;
/// Anonymous memory (the heap, about 8 MiB): 2 MiB or 25 %. The allocator settles by about
/// 0.6 MiB over the first 20 cycles, then by a few KiB a cycle.
const ANON_SLACK_KIB: u64 = 2 * 1024;
const ANON_SLACK_PERCENT: u64 = 25;
const FD_SLACK: usize = 2;

/// Not a test of its own: the `sluice` command line, run by the soak in a child process
/// (this binary re-executed), so that it needs no other binary built.
#[test]
fn sluice_as_child() {
    child::run_if_child();
}

/// Resident memory (KiB: all, and its anonymous part: the heap, stacks) and open
/// descriptors. Descriptors: the fewest of 5 reads 50 ms apart (a probe's socket or an
/// API connection may be open at one instant).
fn sample(d: &Daemon, what: String) -> anyhow::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid()))?;
    let kib = |key: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{key} in /proc/{}/status", d.pid()))
    };
    let (rss_kib, anon_kib) = (kib("VmRSS:")?, kib("RssAnon:")?);
    let mut fds = usize::MAX;
    for _ in 0..5 {
        fds = fds.min(std::fs::read_dir(format!("/proc/{}/fd", d.pid()))?.count());
        thread::sleep(Duration::from_millis(50));
    }
    Ok(Sample {
        what,
        rss_kib,
        anon_kib,
        fds,
    })
}

/// `sluice run` serving once its API answers.
fn start_daemon(ns: &str, config: &Path, socket: &Path, log: PathBuf) -> anyhow::Result<Daemon> {
    Daemon::start(ns, config, log, || {
        client::request(socket, &Request::Status { flows: false }).is_ok()
    })
}

/// SIGTERM: the daemon must exit cleanly; its log.
fn stop_daemon(d: Daemon) -> anyhow::Result<String> {
    let (status, log) = d.stop()?;
    ensure!(status.success(), "sluice run exited {status}:\n{log}");
    Ok(log)
}

/// Which long-lived connections may break.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    /// Opened at the start, on backend-1 or -2: must echo until the end.
    Steady,
    /// On backend-3: a kill of its server ends them.
    OnFlapper,
    /// Opened in a cycle on `TCP4` (some on the added backend): closed cleanly when it drains.
    Cycle,
    /// On the autoscaled VIP: closed cleanly to scale in.
    Scaled,
}

/// The long-lived connections, each echoed every second by the keeper thread.
#[derive(Default)]
struct Keeper {
    conns: Mutex<Vec<(Group, Held)>>,
    /// (group, backend, error) of every connection that broke.
    broken: Mutex<Vec<(Group, String, String)>>,
    echoes: AtomicU64,
    opened: AtomicU64,
}

impl Keeper {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Group, Held)>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Open `n` connections to `vip` from `client`; those landing on backend-3 go in
    /// [`Group::OnFlapper`]. Per backend, how many.
    fn open(
        &self,
        lab: &Lab,
        client: usize,
        vip: SocketAddr,
        n: usize,
        group: Group,
    ) -> anyhow::Result<BTreeMap<String, usize>> {
        let flapper = lab.backend(FLAPPER).name();
        let mut per = BTreeMap::new();
        for i in 0..n {
            let h = Held::open(lab.client(client), vip)
                .with_context(|| format!("long-lived connection {i} to {vip}"))?;
            *per.entry(h.backend.clone()).or_insert(0) += 1;
            let g = if h.backend == flapper && vip.is_ipv4() {
                Group::OnFlapper
            } else {
                group
            };
            self.lock().push((g, h));
            self.opened.fetch_add(1, Ordering::Relaxed);
        }
        Ok(per)
    }

    /// Close every connection of `group` cleanly (the server's FIN must come, no reset).
    fn close(&self, group: Group) -> anyhow::Result<usize> {
        let mine: Vec<Held> = {
            let mut conns = self.lock();
            let (mine, rest) = std::mem::take(&mut *conns)
                .into_iter()
                .partition(|(g, _)| *g == group);
            *conns = rest;
            mine.into_iter().map(|(_, h)| h).collect()
        };
        let n = mine.len();
        for h in mine {
            h.close()
                .with_context(|| format!("closing a {group:?} connection"))?;
        }
        Ok(n)
    }

    fn count(&self, group: Group) -> usize {
        self.lock().iter().filter(|(g, _)| *g == group).count()
    }

    /// Echo on every connection every second until `stop`; a connection that fails is
    /// recorded and dropped.
    fn run(&self, stop: &AtomicBool) {
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) {
            {
                let mut conns = self.lock();
                let mut i = 0;
                while i < conns.len() {
                    let (g, h) = &mut conns[i];
                    match h.echo(&format!("k{round}-{i}")) {
                        Ok(()) => {
                            self.echoes.fetch_add(1, Ordering::Relaxed);
                            i += 1;
                        }
                        Err(e) => {
                            let (g, b) = (*g, h.backend.clone());
                            conns.swap_remove(i);
                            if let Ok(mut v) = self.broken.lock() {
                                v.push((g, b, format!("{e:#}")));
                            }
                        }
                    }
                }
            }
            round += 1;
            for _ in 0..10 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The short connections and datagrams, and their failures with when they happened.
#[derive(Default)]
struct Churn {
    counts: ChurnCounts,
    errors: Mutex<Vec<(Instant, String)>>,
    /// While backend-3 is dead: (killed, detected down), for explaining failures.
    flaps: Mutex<Vec<(Instant, Instant)>>,
}

impl Churn {
    /// Every failure is kept (each must be explained): a few a flap.
    fn error(&self, e: String) {
        if let Ok(mut v) = self.errors.lock() {
            v.push((Instant::now(), e));
        }
    }

    /// Short TCP connections (send, read the name to EOF) to `TCP4` and, every fourth, a UDP
    /// datagram to `UDP4` from a new port, until `stop`.
    fn run(&self, lab: &Lab, stop: &AtomicBool) {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            churn_step(
                lab.client(0),
                lab.vip4().into(),
                i.is_multiple_of(4),
                &self.counts,
                |e| self.error(e),
            );
            i += 1;
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Failures outside every flap window (with 1 s of slack after detection).
    fn unexplained(&self) -> Vec<String> {
        let flaps = self.flaps.lock().map(|f| f.clone()).unwrap_or_default();
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        errors
            .into_iter()
            .filter(|(t, e)| {
                !(e.starts_with("tcp ")
                    && flaps
                        .iter()
                        .any(|(a, b)| *a <= *t && *t <= *b + Duration::from_secs(1)))
            })
            .map(|(_, e)| e)
            .collect()
    }
}

/// The lab's config for the soak: `TCP4` on backends 1-3, `UDP4` on 1-2 (backend-3's
/// server dies in the flaps), `TCP6` on backend-1 scaled out to backends 4-5 (least
/// connections, target 10 connections a backend); fast checks and short timeouts.
fn soak_config(lab: &Lab) -> anyhow::Result<Config> {
    let mut c = lab.daemon_config(&Weights::Equal)?;
    // Long-lived connections echo every second, so 10 s idle never ends one; it does end
    // the flows of connections backend-3's kill reset (in DSR the balancer never sees the
    // reset), and a drain holding such a flow (moved to the drained backend by `reassign`)
    // waits for it.
    c.daemon.tcp_idle_timeout_ms = 10_000;
    c.daemon.tcp_fin_timeout_ms = 2000;
    c.daemon.udp_idle_timeout_ms = 2000;
    c.daemon.conntrack_sweep_ms = 500;
    c.vips.retain(|v| v.name != "lab-udp6");
    let a4 = |i: usize| IpAddr::from(lab.backend(i).addr4());
    let a6 = |i: usize| IpAddr::from(lab.backend(i).addr6());
    for v in &mut c.vips {
        let keep: Vec<IpAddr> = match v.name.as_str() {
            TCP4 => vec![a4(0), a4(1), a4(FLAPPER)],
            UDP4 => vec![a4(0), a4(1)],
            _ => vec![a6(0)],
        };
        v.backends.retain(|b| keep.contains(&b.address));
        if v.port == lab::UDP_PORT {
            v.health.check = CheckKind::Udp;
            v.health.port = lab::UDP_PORT;
            v.health.send = "health".to_owned();
        }
        // Fast, but a loaded CI machine must not take a healthy backend down.
        (v.health.interval_ms, v.health.timeout_ms) = (300, 280);
        (v.health.rise, v.health.fall) = (2, 3);
    }
    let v = c
        .vips
        .iter_mut()
        .find(|v| v.name == TCP6)
        .context("lab-tcp6")?;
    v.backends[0].weight = 10;
    v.scheduler = Scheduler::LeastConn;
    v.slow_start_ms = 1000;
    v.autoscale = Some(AutoscaleConfig {
        min: 1,
        max: 3,
        interval_ms: 500,
        weight: 10,
        ready_timeout_ms: 10_000,
        up_backends: 4,
        up_percent: 100,
        up_period_ms: 5000,
        down_backends: 0,
        down_percent: 100,
        down_period_ms: 5000,
        target: Some(TargetConfig {
            metric: MetricKind::ActiveConnections,
            value: Num(10.0),
            tolerance: Num(0.1),
            scale_down_stabilization_ms: 2000,
            scale_up_stabilization_ms: 0,
        }),
        steps: Vec::new(),
        crons: Vec::new(),
        backend_metric: None,
        provider: ProviderConfig::Pool {
            standby: vec![a6(3), a6(4)],
        },
    });
    // Through the file's rules, as the file will be read.
    Ok(sluice_core::config::parse(&c.to_toml()?, "soak")?.config)
}

/// One row of the resource table.
struct Sample {
    what: String,
    rss_kib: u64,
    anon_kib: u64,
    fds: usize,
}

/// The soak's shared state and its helpers.
struct Soak<'a> {
    lab: &'a Lab,
    socket: PathBuf,
    keeper: &'a Keeper,
    churn: &'a Churn,
    rng: SplitMix64,
    t0: Instant,
    edits: u64,
    flaps: u64,
    scale_outs: u64,
    /// What happened, for the report (at most a line a phase).
    timeline: Vec<String>,
}

impl Soak<'_> {
    fn note(&mut self, what: String) {
        let line = format!("{:7.1}s  {what}", self.t0.elapsed().as_secs_f64());
        println!("{line}");
        self.timeline.push(line);
    }

    fn pick(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.rng.next_u64() % u64::from(hi - lo + 1)) as u32
    }

    /// `sluice --api-socket S ARGS...`, which must succeed; its stdout.
    fn cli(&mut self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["--api-socket", self.socket.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        let out = child::command(&all)?.stdin(Stdio::null()).output()?;
        ensure!(
            out.status.success(),
            "sluice {}: {}\n{}",
            all.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if args.first() == Some(&"backend") && args.get(1) != Some(&"list") {
            self.edits += 1;
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn status(&self, flows: bool) -> anyhow::Result<Status> {
        match client::request(&self.socket, &Request::Status { flows })? {
            Response::Status { status } => Ok(status),
            r => bail!("unexpected answer {r:?}"),
        }
    }

    fn scaler(&self) -> anyhow::Result<VipReport> {
        match client::request(&self.socket, &Request::AutoscaleStatus)? {
            Response::Autoscale { status } => status
                .vips
                .into_iter()
                .find(|v| v.name == TCP6)
                .context("no autoscaler report for lab-tcp6"),
            r => bail!("unexpected answer {r:?}"),
        }
    }

    /// Poll the status until `done` holds (at most `SETTLE`); how long it took.
    fn until(&self, what: &str, done: impl Fn(&Status) -> bool) -> anyhow::Result<Duration> {
        let t = Instant::now();
        loop {
            let s = self.status(false)?;
            if done(&s) {
                return Ok(t.elapsed());
            }
            ensure!(t.elapsed() < SETTLE, "{what}: not within {SETTLE:?}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn a4(&self, i: usize) -> IpAddr {
        self.lab.backend(i).addr4().into()
    }

    fn tcp4(&self) -> SocketAddr {
        SocketAddr::new(self.lab.vip4().into(), lab::TCP_PORT)
    }

    /// The metrics endpoint answers (in the LB's namespace, as Prometheus would scrape it).
    fn scrape(&self) -> anyhow::Result<usize> {
        let (head, body) = sluice_tests::api::scrape(self.lab, TIMEOUT)?;
        ensure!(
            head.starts_with("HTTP/1.1 200") && body.contains("sluice_"),
            "metrics: {}",
            head.lines().next().unwrap_or_default()
        );
        Ok(head.len() + 4 + body.len())
    }
}

fn backend<'s>(
    s: &'s Status,
    vip: &str,
    a: IpAddr,
) -> Option<&'s sluice_core::state::BackendStatus> {
    s.vips
        .iter()
        .find(|v| v.name == vip)?
        .backends
        .iter()
        .find(|b| b.address == a)
}

/// Backend `ADDED` joins `TCP4` and takes new connections; 12 long-lived ones opened.
fn phase_add(s: &mut Soak) -> anyhow::Result<()> {
    let a = s.a4(ADDED).to_string();
    let w = s.pick(1, 4).to_string();
    s.cli(&[
        "backend",
        "add",
        "--vip",
        TCP4,
        "--address",
        &a,
        "--weight",
        &w,
    ])?;
    let per = s.keeper.open(s.lab, 1, s.tcp4(), 12, Group::Cycle)?;
    s.note(format!(
        "added {a} weight {w} to {TCP4}; 12 long-lived connections: {per:?}"
    ));
    Ok(())
}

/// Weight edits on the serving backends; another backend added, quiesced and removed.
fn phase_weights(s: &mut Soak) -> anyhow::Result<()> {
    let mut ws = Vec::new();
    for round in 0..3 {
        for i in [0, 1, ADDED] {
            let w = s.pick(1, 5);
            let a = s.a4(i).to_string();
            s.cli(&[
                "backend",
                "set-weight",
                "--vip",
                TCP4,
                "--address",
                &a,
                "--weight",
                &w.to_string(),
            ])?;
            if round == 2 {
                ws.push(w);
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    let a = s.a4(ADDED_REMOVED).to_string();
    s.cli(&["backend", "add", "--vip", TCP4, "--address", &a])?;
    thread::sleep(Duration::from_millis(500));
    // As an operator would: no new flows first, then out (no short connection in flight).
    s.cli(&[
        "backend",
        "set-weight",
        "--vip",
        TCP4,
        "--address",
        &a,
        "--weight",
        "0",
    ])?;
    thread::sleep(Duration::from_millis(300));
    s.cli(&["backend", "remove", "--vip", TCP4, "--address", &a])?;
    s.note(format!(
        "9 weight edits (last {ws:?}); {a} added, quiesced, removed"
    ));
    Ok(())
}

/// Backend-3's server killed until its check says down, then started until up.
fn phase_flap(s: &mut Soak) -> anyhow::Result<()> {
    let a = s.a4(FLAPPER);
    let killed = Instant::now();
    s.lab.kill_backend_server(FLAPPER)?;
    let down = s.until("backend-3 down", |st| {
        backend(st, TCP4, a).is_some_and(|b| b.health == Health::Down)
    });
    if let Ok(mut f) = s.churn.flaps.lock() {
        f.push((killed, Instant::now()));
    }
    let down = down?;
    s.lab.start_backend_server(FLAPPER)?;
    let up = s.until("backend-3 up", |st| {
        backend(st, TCP4, a).is_some_and(|b| b.health == Health::Up)
    })?;
    s.flaps += 1;
    s.note(format!(
        "backend-3's server killed: down after {} ms; started: up after {} ms",
        down.as_millis(),
        up.as_millis()
    ));
    Ok(())
}

/// `SCALED_CONNS` connections to `TCP6`: out to 3 backends; closed: back in to 1.
fn phase_autoscale(s: &mut Soak) -> anyhow::Result<()> {
    let vip = SocketAddr::new(s.lab.vip6().into(), lab::TCP_PORT);
    let serving = |st: &Status| -> usize {
        st.vips.iter().find(|v| v.name == TCP6).map_or(0, |v| {
            v.backends
                .iter()
                .filter(|b| b.lifecycle != "draining" && b.lifecycle != "drained")
                .count()
        })
    };
    s.keeper.open(s.lab, 1, vip, SCALED_CONNS, Group::Scaled)?;
    let out = s.until("scaled out to 3", |st| serving(st) == 3)?;
    // Ready once probed: wait until nothing is being provisioned.
    let t = Instant::now();
    while s.scaler()?.provisioning > 0 {
        ensure!(t.elapsed() < SETTLE, "still provisioning");
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(1500)); // every connection echoed once more
    let closed = s.keeper.close(Group::Scaled)?;
    let into = s.until("scaled in to 1", |st| {
        st.vips
            .iter()
            .find(|v| v.name == TCP6)
            .is_some_and(|v| v.backends.len() == 1)
    })?;
    // The scaler's own report follows at its next tick.
    let t = Instant::now();
    let r = loop {
        let r = s.scaler()?;
        if r.draining.is_empty() && r.serving == 1 {
            break r;
        }
        ensure!(
            t.elapsed() < SETTLE,
            "the scaler still reports draining: {:?}",
            r.draining
        );
        thread::sleep(Duration::from_millis(100));
    };
    s.scale_outs += 1;
    s.note(format!(
        "{TCP6}: {SCALED_CONNS} connections: 3 serving after {} ms; {closed} closed: 1 after {} ms \
         (scaler: {} added, {} removed, {} failures)",
        out.as_millis(),
        into.as_millis(),
        r.added,
        r.removed,
        r.failures
    ));
    Ok(())
}

/// The added backend drained with `--remove`: its connections still echo, then close;
/// it is removed.
fn phase_drain(s: &mut Soak) -> anyhow::Result<()> {
    let a = s.a4(ADDED);
    let name = s.lab.backend(ADDED).name();
    s.cli(&[
        "backend",
        "drain",
        "--vip",
        TCP4,
        "--address",
        &a.to_string(),
        "--remove",
    ])?;
    // The keeper echoes on the draining backend's connections meanwhile.
    thread::sleep(Duration::from_millis(1500));
    let on_it = s
        .keeper
        .lock()
        .iter()
        .filter(|(g, h)| *g == Group::Cycle && h.backend == name)
        .count();
    let closed = s.keeper.close(Group::Cycle)?;
    let gone = s.until("the drained backend removed", |st| {
        backend(st, TCP4, a).is_none()
    })?;
    s.note(format!(
        "{a} drained with --remove: its {on_it} connections echoed while draining; {closed} cycle \
         connections closed; removed {} ms later",
        gone.as_millis()
    ));
    Ok(())
}

/// One cycle: add, then the middle phases in an order drawn from the seed, then drain.
fn cycle(s: &mut Soak) -> anyhow::Result<()> {
    phase_add(s)?;
    let mut middle: Vec<fn(&mut Soak) -> anyhow::Result<()>> =
        vec![phase_weights, phase_flap, phase_autoscale];
    for i in (1..middle.len()).rev() {
        let j = (s.rng.next_u64() % (i as u64 + 1)) as usize;
        middle.swap(i, j);
    }
    for p in middle {
        p(s)?;
    }
    phase_drain(s)?;
    s.cli(&["backend", "list"])?;
    s.scrape()?;
    Ok(())
}

/// Every WARN or ERROR line a daemon may log in the soak (a part of it), and why it is
/// expected. Anything else fails the soak.
fn explained(lab: &Lab) -> Vec<(String, &'static str)> {
    vec![(
        format!(
            "WARN sluice_daemon::daemon::events: backend down: no new flows, its flows move \
             (on_down = reassign) vip={}:{}/tcp backend={} reason=\"VIP port closed",
            lab.vip4(),
            lab::TCP_PORT,
            lab.backend(FLAPPER).addr4()
        ),
        "backend-3's server killed by the flap phase (one line a flap)",
    )]
}

/// The log lines at WARN or ERROR that no entry of `allowed` explains; per entry, how
/// many lines it explained.
fn unexplained(
    log: &str,
    allowed: &[(String, &str)],
    seen: &mut BTreeMap<String, usize>,
) -> Vec<String> {
    let mut bad = Vec::new();
    for line in log.lines() {
        if !(line.contains(" WARN ") || line.contains(" ERROR ") || line.starts_with("error")) {
            continue;
        }
        match allowed.iter().find(|(m, _)| line.contains(m.as_str())) {
            Some((m, _)) => *seen.entry(m.clone()).or_insert(0) += 1,
            None => bad.push(line.to_owned()),
        }
    }
    bad
}

/// The host's interfaces (names), to see that the lab left none.
fn host_links() -> anyhow::Result<Vec<String>> {
    let out = Command::new("ip").args(["-o", "link", "show"]).output()?;
    ensure!(out.status.success(), "ip link: {}", out.status);
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect())
}

/// Flow-table entries and active connections over every backend, and the last sweep's walk.
fn flows(st: &Status) -> (u64, u64, u64) {
    let entries = st
        .vips
        .iter()
        .flat_map(|v| &v.backends)
        .map(|b| b.flows.unwrap_or(0))
        .sum();
    let active = st.vips.iter().map(|v| v.active).sum();
    (entries, active, st.conntrack.last_sweep_flows.unwrap_or(0))
}

/// Cycles on one daemon until `until` (at least one after the warm-up); a sample after
/// the warm-up and after every cycle, and the flow table's size.
fn cycles(
    s: &mut Soak,
    d: &Daemon,
    name: &str,
    until: Instant,
    f: &mut Figures,
) -> anyhow::Result<()> {
    s.note(format!("{name}: warm-up cycle"));
    cycle(s)?;
    f.samples.push(sample(d, format!("{name} after warm-up"))?);
    let mut n = 0;
    while n == 0 || Instant::now() < until {
        n += 1;
        s.note(format!("{name}: cycle {n}"));
        cycle(s)?;
        let sample = sample(d, format!("{name} after cycle {n}"))?;
        let fl = flows(&s.status(true)?);
        if fl.0 > f.flows_during.0 {
            f.flows_during = fl;
        }
        s.note(format!(
            "{name}: RSS {} KiB (anonymous {}), {} descriptors; flow table (entries, active, \
             swept) {fl:?}",
            sample.rss_kib, sample.anon_kib, sample.fds
        ));
        f.samples.push(sample);
        ensure!(n < 10_000, "too many cycles");
    }
    Ok(())
}

/// What the soak measured.
#[derive(Default)]
struct Figures {
    samples: Vec<Sample>,
    logs: Vec<String>,
    /// (seconds after the traffic stopped, entries, active, swept) when the table was empty.
    drained: Option<(f64, (u64, u64, u64))>,
    /// The flow table during the traffic (the largest seen at a cycle's end).
    flows_during: (u64, u64, u64),
    timeline: Vec<String>,
    edits: u64,
    flaps: u64,
    scale_outs: u64,
}

/// The soak on `lab`: two daemons, one after the other (a restart in the middle); the
/// traffic stops (`stop_churn`), every flow must expire; the second daemon stops and the
/// balancer is detached.
fn soak(
    lab: &Lab,
    secs: u64,
    seed: u64,
    keeper: &Keeper,
    churn: &Churn,
    stop_churn: &AtomicBool,
    f: &mut Figures,
) -> anyhow::Result<()> {
    let dir = lab::lab_dir(lab.prefix());
    std::fs::create_dir_all(&dir)?;
    let config = soak_config(lab)?;
    let file = dir.join("soak.toml");
    std::fs::write(&file, format!("# the soak's config\n{}", config.to_toml()?))?;
    let socket = config.daemon.api_socket.clone();
    let t0 = Instant::now();
    let mut s = Soak {
        lab,
        socket: socket.clone(),
        keeper,
        churn,
        rng: SplitMix64::new(seed),
        t0,
        edits: 0,
        flaps: 0,
        scale_outs: 0,
        timeline: Vec::new(),
    };
    let result = (|| -> anyhow::Result<()> {
        let d = start_daemon(lab.lb_ns(), &file, &socket, dir.join("daemon-1.log"))?;
        s.note(format!("daemon 1 (pid {}) serving", d.pid()));
        let steady = keeper.open(lab, 1, s.tcp4(), 12, Group::Steady)?;
        s.note(format!("12 long-lived connections to {TCP4}: {steady:?}"));
        let half = t0 + Duration::from_secs(secs / 2);
        cycles(&mut s, &d, "daemon 1", half, f)?;
        let steady_before = keeper.count(Group::Steady);
        f.logs.push(stop_daemon(d)?);
        s.note("daemon 1 stopped (SIGTERM); the traffic goes on without a daemon".into());
        thread::sleep(Duration::from_secs(2));
        let d = start_daemon(lab.lb_ns(), &file, &socket, dir.join("daemon-2.log"))?;
        s.note(format!("daemon 2 (pid {}) adopted the pins", d.pid()));
        thread::sleep(Duration::from_millis(1500));
        ensure!(
            keeper.count(Group::Steady) == steady_before,
            "long-lived connections broke across the restart"
        );
        let end = t0 + Duration::from_secs(secs);
        cycles(&mut s, &d, "daemon 2", end, f)?;

        // The traffic stops; the long-lived connections close; every flow must expire
        // (the longest timeout: tcp_idle 10 s, for connections a backend's crash reset).
        stop_churn.store(true, Ordering::Relaxed);
        let closed = keeper.close(Group::Steady)? + keeper.close(Group::OnFlapper)?;
        let stopped = Instant::now();
        s.note(format!(
            "traffic stopped; {closed} long-lived connections closed"
        ));
        let bound = Duration::from_secs(10 + 10);
        loop {
            let st = s.status(true)?;
            let fl = flows(&st);
            if fl == (0, 0, 0) && st.conntrack.last_sweep_ms_ago.is_some() {
                f.drained = Some((stopped.elapsed().as_secs_f64(), fl));
                break;
            }
            ensure!(
                stopped.elapsed() < bound,
                "flows left {bound:?} after the traffic stopped (entries, active, swept): {fl:?}; \
                 per backend: {:?}",
                st.vips
                    .iter()
                    .flat_map(|v| v
                        .backends
                        .iter()
                        .map(move |b| (&v.name, b.address, b.flows, b.active)))
                    .filter(|x| x.2.unwrap_or(0) > 0 || x.3 > 0)
                    .collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(500));
        }
        s.note(format!(
            "flow table empty, every active count 0, {:.1} s after the traffic stopped",
            stopped.elapsed().as_secs_f64()
        ));
        f.samples
            .push(sample(&d, "daemon 2, traffic stopped".into())?);
        f.logs.push(stop_daemon(d)?);
        let c = file.to_str().context("config path")?;
        s.cli(&["detach", "--config", c])?;
        s.note("daemon 2 stopped; sluice detach".into());
        Ok(())
    })();
    f.timeline = std::mem::take(&mut s.timeline);
    (f.edits, f.flaps, f.scale_outs) = (s.edits, s.flaps, s.scale_outs);
    result
}

/// The end of a log, for a failure's message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn soak_leaves_no_leak() {
    require_root();
    let _serial = serial();
    let secs: u64 = std::env::var("SLUICE_SOAK_SECS")
        .map_or(100, |s| s.parse().expect("SLUICE_SOAK_SECS: seconds"));
    assert!(
        (20..=86_400).contains(&secs),
        "SLUICE_SOAK_SECS: 20..=86400"
    );
    let seed: u64 = std::env::var("SLUICE_SOAK_SEED")
        .map_or(17, |s| s.parse().expect("SLUICE_SOAK_SEED: a number"));
    let links_before = host_links().expect("the host's links");
    let p = prefix("soak", "s");
    let _ = Lab::down_prefix(&p);
    let lab = Lab::up(LabSpec::new(&p).backends(6).clients(2)).expect("bring the lab up");
    let keeper = Keeper::default();
    let churn = Churn::default();
    let (stop_churn, stop_keeper) = (AtomicBool::new(false), AtomicBool::new(false));
    let mut f = Figures::default();
    let started = Instant::now();
    let result = thread::scope(|sc| {
        let c = sc.spawn(|| churn.run(&lab, &stop_churn));
        let k = sc.spawn(|| keeper.run(&stop_keeper));
        let r = soak(&lab, secs, seed, &keeper, &churn, &stop_churn, &mut f);
        stop_churn.store(true, Ordering::Relaxed);
        stop_keeper.store(true, Ordering::Relaxed);
        let _ = c.join();
        let _ = k.join();
        r
    });
    let took = started.elapsed();
    if let Err(e) = result {
        for i in 1..=2 {
            let log = lab::lab_dir(lab.prefix()).join(format!("daemon-{i}.log"));
            if let Ok(l) = std::fs::read_to_string(&log) {
                println!("--- {} (end)\n{}", log.display(), tail(&l));
            }
        }
        panic!("the soak: {e:#}");
    }
    // Nothing of the balancer is left after `sluice detach`; no process in the lab.
    // The lab's own pins (the XDP_PASS programs on its switch-side veths) stay until its
    // removal; the daemon's are under its pin directory.
    let pin_dir = lab::lab_pin_dir(lab.prefix());
    let pins: Vec<PathBuf> = lab
        .pins()
        .into_iter()
        .filter(|p| p.starts_with(&pin_dir))
        .collect();
    let status = Lab::status(lab.prefix());
    let processes: Vec<_> = status
        .namespaces
        .iter()
        .flat_map(|n| n.processes.clone())
        .collect();
    let allowed = explained(&lab);
    let removed = lab.down().expect("take the lab down");
    let left = Lab::status(&p);
    let links_after = host_links().expect("the host's links");
    let new_links: Vec<_> = links_after
        .iter()
        .filter(|l| !links_before.contains(l))
        .collect();

    // The report.
    let mut r = String::new();
    let _ = writeln!(
        r,
        "soak: {secs} s (seed {seed}), {:.0} s in all",
        took.as_secs_f64()
    );
    for line in &f.timeline {
        let _ = writeln!(r, "  {line}");
    }
    let _ = writeln!(
        r,
        "traffic: {} short connections, {} datagrams (a new UDP flow each), {} long-lived \
         connections opened, {} echoes on them; {} live edits, {} health flaps, {} scale-outs \
         and -ins, 1 restart",
        churn.counts.connections.load(Ordering::Relaxed),
        churn.counts.datagrams.load(Ordering::Relaxed),
        keeper.opened.load(Ordering::Relaxed),
        keeper.echoes.load(Ordering::Relaxed),
        f.edits,
        f.flaps,
        f.scale_outs,
    );
    let _ = writeln!(
        r,
        "\n  {:<28} {:>10} {:>14} {:>5}",
        "daemon", "RSS KiB", "anonymous KiB", "fds"
    );
    for s in &f.samples {
        let _ = writeln!(
            r,
            "  {:<28} {:>10} {:>14} {:>5}",
            s.what, s.rss_kib, s.anon_kib, s.fds
        );
    }
    let _ = writeln!(
        r,
        "\n  flow table (entries, active, swept): {:?} at the end of the busiest cycle; {} \
         after the traffic stopped",
        f.flows_during,
        f.drained
            .map_or("-".into(), |(t, fl)| format!("{fl:?} {t:.1} s")),
    );
    let broken = keeper.broken.lock().map(|b| b.clone()).unwrap_or_default();
    let mut per_group: BTreeMap<Group, usize> = BTreeMap::new();
    for (g, _, _) in &broken {
        *per_group.entry(*g).or_insert(0) += 1;
    }
    let _ = writeln!(
        r,
        "  long-lived connections broken: {per_group:?} (only OnFlapper may: backend-3's server \
         was killed under them)"
    );
    let errors = churn.errors.lock().map(|e| e.len()).unwrap_or(0);
    let unexplained_traffic = churn.unexplained();
    let _ = writeln!(
        r,
        "  short connection failures: {errors}, {} outside backend-3's dead windows",
        unexplained_traffic.len()
    );
    let mut seen = BTreeMap::new();
    let bad_lines: Vec<String> = f
        .logs
        .iter()
        .flat_map(|l| unexplained(l, &allowed, &mut seen))
        .collect();
    let _ = writeln!(
        r,
        "  daemon logs: {} lines; WARN/ERROR lines explained: {}; unexplained: {}",
        f.logs.iter().map(|l| l.lines().count()).sum::<usize>(),
        allowed
            .iter()
            .map(|(m, why)| format!("{} ({why})", seen.get(m).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", "),
        bad_lines.len()
    );
    let _ = writeln!(
        r,
        "  left: the daemon's pins after detach {pins:?} (pin dir exists: {}), processes in the \
         lab {processes:?}; the lab's removal removed {} namespaces and its own {} pins; after \
         it: namespaces {:?}, pins {:?}, new host links {new_links:?}",
        pin_dir.exists(),
        removed.namespaces.len(),
        removed.pins.len(),
        left.namespaces.iter().map(|n| &n.name).collect::<Vec<_>>(),
        left.pins,
    );
    println!("{r}");

    // The verdicts.
    let wrongly_broken: Vec<_> = broken
        .iter()
        .filter(|(g, _, _)| *g != Group::OnFlapper)
        .collect();
    assert!(
        wrongly_broken.is_empty(),
        "long-lived connections broke: {wrongly_broken:?}"
    );
    assert!(
        unexplained_traffic.is_empty(),
        "{} short connections or datagrams failed outside backend-3's dead windows (the first \
         20): {:?}",
        unexplained_traffic.len(),
        &unexplained_traffic[..unexplained_traffic.len().min(20)]
    );
    assert!(
        bad_lines.is_empty(),
        "unexplained WARN/ERROR lines in the daemon logs:\n{}",
        bad_lines.join("\n")
    );
    let flap_lines = seen.get(&allowed[0].0).copied().unwrap_or(0);
    assert!(
        flap_lines as u64 == f.flaps,
        "{flap_lines} backend-down warnings for {} flaps",
        f.flaps
    );
    for daemon in ["daemon 1", "daemon 2"] {
        let of: Vec<&Sample> = f
            .samples
            .iter()
            .filter(|s| s.what.starts_with(daemon))
            .collect();
        let (Some(first), Some(last)) = (of.first(), of.last()) else {
            panic!("no samples of {daemon}");
        };
        let allowed = first.rss_kib + RSS_SLACK_KIB.max(first.rss_kib * RSS_SLACK_PERCENT / 100);
        assert!(
            last.rss_kib <= allowed,
            "{daemon}: RSS grew from {} KiB ({}) to {} KiB ({}), over {allowed} KiB",
            first.rss_kib,
            first.what,
            last.rss_kib,
            last.what
        );
        let allowed =
            first.anon_kib + ANON_SLACK_KIB.max(first.anon_kib * ANON_SLACK_PERCENT / 100);
        assert!(
            last.anon_kib <= allowed,
            "{daemon}: anonymous memory grew from {} KiB ({}) to {} KiB ({}), over {allowed} KiB",
            first.anon_kib,
            first.what,
            last.anon_kib,
            last.what
        );
        assert!(
            last.fds <= first.fds + FD_SLACK,
            "{daemon}: descriptors grew from {} ({}) to {} ({})",
            first.fds,
            first.what,
            last.fds,
            last.what
        );
    }
    assert!(f.drained.is_some(), "the flow table did not empty");
    assert!(
        pins.is_empty() && !pin_dir.exists(),
        "pins left after sluice detach: {pins:?}"
    );
    assert!(
        processes.is_empty(),
        "processes left in the lab: {processes:?}"
    );
    assert!(
        removed.pins.iter().all(|p| !p.starts_with(&pin_dir)),
        "the lab's removal found the daemon's pins: {:?}",
        removed.pins
    );
    assert!(
        left.namespaces.is_empty() && left.pins.is_empty(),
        "lab left: {left:?}"
    );
    assert!(
        new_links.is_empty(),
        "links left on the host: {new_links:?}"
    );
}
