//! The real daemon (`daemon::start` + `daemon::serve`, as `sluice run` runs it) with many
//! VIPs × backends on the benchmark's veth: the latency of `sluice backend list` (the CLI
//! binary, answered through the API), of a metrics scrape and of a live edit, and the CPU
//! share of the idle daemon (no traffic, no health checks: the status file, metrics,
//! lifecycle and conntrack work it does on its own).
//!
//! [`scale`] (`sluice bench scale`): the same daemon at the size of issue #17, 4096 VIPs ×
//! 64 backends with `daemon.vip_capacity`, `backend_capacity` and `table_capacity` sized to
//! fit: its start time, the publish of the full configuration, its resident memory and the
//! kernel memory of its maps, besides `backend list` and an edit.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::netns::IFACE;
use crate::{
    api::{Request, Response, client},
    daemon::{self, OnExit},
    state::State,
};

pub const TARGET_LIST_MS: f64 = 200.0;
pub const TARGET_IDLE_CPU_PERCENT: f64 = 5.0;

#[derive(Clone, Debug, Serialize)]
pub struct DaemonScale {
    pub vips: usize,
    pub backends_per_vip: usize,
    /// `sluice backend list` (a process of this binary) against the daemon's API.
    pub list_runs: usize,
    pub list_median_ms: f64,
    pub list_max_ms: f64,
    /// A `GET /metrics` of the daemon's listener.
    pub metrics_median_ms: f64,
    pub metrics_bytes: usize,
    /// An applied API edit (one backend's weight changed), answered.
    pub edit_median_ms: f64,
    /// Process CPU time over the idle window, as a share of one core.
    pub idle_window_s: f64,
    pub idle_cpu_percent: f64,
    pub target_list_ms: f64,
    pub target_idle_cpu_percent: f64,
    pub met: bool,
}

/// The configuration: `vips` × `backends` on the benchmark's interface, no health checks;
/// `sized`: with `table_size` and the `[daemon]` capacities to fit (else the defaults and
/// tables of 1009 slots).
fn config_text(dir: &Path, vips: usize, backends: usize, sized: Option<&ScaleOptions>) -> String {
    let mut s = format!(
        "[daemon]\ninterface = \"{IFACE}\"\nstate_dir = \"{d}\"\napi_socket = \"{d}/api.sock\"\n\
         pin_dir = \"/sys/fs/bpf/sluice-bench-{pid}\"\nmetrics_listen = \"127.0.0.1:9640\"\n",
        d = dir.display(),
        pid = std::process::id()
    );
    let table_size = sized.map_or(1009, |o| o.table_size);
    if let Some(o) = sized {
        s.push_str(&format!(
            "vip_capacity = {}\nbackend_capacity = {}\ntable_capacity = {}\n",
            o.vip_capacity(),
            o.backend_capacity(),
            o.table_capacity()
        ));
    }
    for v in 0..vips {
        s.push_str(&format!(
            "\n[[vip]]\nname = \"v{v}\"\naddress = \"10.97.{}.{}\"\nport = 80\nprotocol = \"tcp\"\n\
             forwarding = \"dsr\"\ntable_size = {table_size}\n[vip.health]\ncheck = \"none\"\n",
            v / 250,
            v % 250 + 1
        ));
        for b in 0..backends {
            s.push_str(&format!(
                "[[vip.backend]]\naddress = \"10.98.{}.{}\"\nmac = \"02:00:00:00:{:02x}:{:02x}\"\n",
                1 + b / 250,
                b % 250 + 1,
                b / 256,
                b % 256
            ));
        }
    }
    s
}

/// This process's CPU time (user + system).
fn cpu_time() -> Duration {
    use nix::sys::{
        resource::{UsageWho, getrusage},
        time::{TimeVal, TimeValLike as _},
    };
    let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) else {
        return Duration::ZERO;
    };
    let tv = |t: TimeVal| Duration::from_micros(t.num_microseconds() as u64);
    tv(u.user_time()) + tv(u.system_time())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn scrape() -> anyhow::Result<usize> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect("127.0.0.1:9640")?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    ensure!(body.starts_with(b"HTTP/1.1 200"), "metrics answer");
    Ok(body.len())
}

/// Run the daemon with `vips` × `backends` and measure; `rounds` of each latency.
pub fn run(
    vips: usize,
    backends: usize,
    rounds: usize,
    idle: Duration,
) -> anyhow::Result<DaemonScale> {
    let dir = bench_dir()?;
    let text = config_text(&dir, vips, backends, None);
    let config = crate::config::parse(&text, "bench")
        .map_err(|e| anyhow::anyhow!("the benchmark's configuration: {e}"))?
        .config;
    let result = with_daemon(config, |socket, _| {
        measure(socket, vips, backends, rounds, idle)
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A fresh directory for the daemon's state and API socket.
fn bench_dir() -> anyhow::Result<PathBuf> {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("sluice-bench-daemon-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Start the real daemon on `config` in a thread of its own (`daemon::start`, then
/// `daemon::serve`), run `f` with its API socket and the time `daemon::start` took (load
/// and verify, publish, attach), then stop it.
fn with_daemon<T>(
    config: crate::config::Config,
    f: impl FnOnce(&Path, Duration) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let socket = config.daemon.api_socket.clone();
    let (_edits, edit_rx) = mpsc::channel(1);
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let daemon = std::thread::spawn(move || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let mut state = State::new(config);
        let t = Instant::now();
        let dp = match daemon::start(&mut state, OnExit::Remove) {
            Ok(dp) => dp,
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return Err(e.into());
            }
        };
        let _ = ready_tx.send(Ok(t.elapsed()));
        rt.block_on(daemon::serve(state, dp, edit_rx, async {
            let _ = stop_rx.await;
        }))
        .map_err(anyhow::Error::from)
    });
    let result = wait_for_daemon(&ready_rx, &socket).and_then(|start| f(&socket, start));
    let _ = stop.send(());
    let stopped = daemon
        .join()
        .map_err(|_| anyhow::anyhow!("the daemon thread panicked"))?;
    let r = result?;
    stopped.context("the benchmark daemon")?;
    Ok(r)
}

/// Wait until the daemon started (or failed to) and its API socket exists; how long
/// `daemon::start` took.
fn wait_for_daemon(
    ready: &std::sync::mpsc::Receiver<Result<Duration, String>>,
    socket: &Path,
) -> anyhow::Result<Duration> {
    let start = ready
        .recv_timeout(Duration::from_secs(120))
        .context("the daemon did not start within 120 s")?
        .map_err(|e| anyhow::anyhow!("the daemon did not start: {e}"))?;
    let t0 = Instant::now();
    while !socket.exists() {
        ensure!(t0.elapsed() < Duration::from_secs(30), "no API socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(start)
}

/// Measure the running daemon: its idle CPU, then `rounds` of each latency.
fn measure(
    socket: &Path,
    vips: usize,
    backends: usize,
    rounds: usize,
    idle: Duration,
) -> anyhow::Result<DaemonScale> {
    let (idle_cpu_percent, wall) = idle_cpu(idle, Duration::from_secs(3));
    let mut list = time_backend_list(socket, rounds)?;
    let (mut metrics, metrics_bytes) = time_scrapes(rounds)?;
    let mut edits = time_edits(socket, vips, rounds)?;
    let list_median_ms = super::median(&mut list);
    let list_max_ms = list.iter().copied().fold(0.0, f64::max);
    Ok(DaemonScale {
        vips,
        backends_per_vip: backends,
        list_runs: rounds,
        list_median_ms,
        list_max_ms,
        metrics_median_ms: super::median(&mut metrics),
        metrics_bytes,
        edit_median_ms: super::median(&mut edits),
        idle_window_s: wall.as_secs_f64(),
        idle_cpu_percent,
        target_list_ms: TARGET_LIST_MS,
        target_idle_cpu_percent: TARGET_IDLE_CPU_PERCENT,
        met: list_max_ms <= TARGET_LIST_MS && idle_cpu_percent <= TARGET_IDLE_CPU_PERCENT,
    })
}

/// The daemon's CPU share (% of a core) over `idle`, and the window's length. Settles
/// first (first status file, first sweep); this thread only sleeps, so the process's CPU
/// time is the daemon's.
fn idle_cpu(idle: Duration, settle: Duration) -> (f64, Duration) {
    std::thread::sleep(settle);
    let (c0, w0) = (cpu_time(), Instant::now());
    std::thread::sleep(idle);
    let (cpu, wall) = (cpu_time() - c0, w0.elapsed());
    (100.0 * cpu.as_secs_f64() / wall.as_secs_f64(), wall)
}

/// `rounds` runs of `sluice backend list` (the CLI binary, through the API), in ms.
fn time_backend_list(socket: &Path, rounds: usize) -> anyhow::Result<Vec<f64>> {
    time_list(socket, rounds, &[])
}

/// `rounds` runs of `sluice backend list EXTRA...`, in ms.
fn time_list(socket: &Path, rounds: usize, extra: &[&str]) -> anyhow::Result<Vec<f64>> {
    let exe = sluice_exe()?;
    let mut list = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let st = Command::new(&exe)
            .arg("--api-socket")
            .arg(socket)
            .args(["backend", "list"])
            .args(extra)
            .stdout(Stdio::null())
            .status()?;
        list.push(ms(t.elapsed()));
        ensure!(st.success(), "sluice backend list failed: {st}");
    }
    Ok(list)
}

/// `rounds` metrics scrapes, in ms, and the size of the last one.
fn time_scrapes(rounds: usize) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut metrics = Vec::new();
    let mut metrics_bytes = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        metrics_bytes = scrape()?;
        metrics.push(ms(t.elapsed()));
    }
    Ok((metrics, metrics_bytes))
}

/// `rounds` live edits through the API (one backend's weight changed, VIP after VIP): the
/// typed `Edit` requests (sent, validated, planned, published, saved, answered), in ms.
fn time_edits(socket: &Path, vips: usize, rounds: usize) -> anyhow::Result<Vec<f64>> {
    // Backend 0 of every VIP of `config_text`.
    let address: std::net::IpAddr = "10.98.1.1".parse()?;
    let mut edits = Vec::new();
    for i in 0..rounds {
        let req = Request::Edit {
            edit: crate::api::edit::LiveEdit::SetWeight {
                vip: format!("v{}", i % vips),
                address,
                weight: 2 + (i as u32 % 5),
            },
            dry_run: false,
            base_version: None,
        };
        let t = Instant::now();
        let answer = client::request(socket, &req)?;
        edits.push(ms(t.elapsed()));
        ensure!(
            matches!(answer, Response::Plan { applied: true, .. }),
            "the edit was not applied: {answer:?}"
        );
    }
    Ok(edits)
}

/// `rounds` runs of `sluice backend set-weight` (a process of this binary: the whole round
/// trip a user waits for), VIP after VIP, in ms.
fn time_set_weight(socket: &Path, vips: usize, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let exe = sluice_exe()?;
    let mut trips = Vec::new();
    for i in 0..rounds {
        let t = Instant::now();
        let st = Command::new(&exe)
            .arg("--api-socket")
            .arg(socket)
            .args(["backend", "set-weight", "--vip"])
            .arg(format!("v{}", (i + 1) % vips))
            .args(["--address", "10.98.1.1", "--weight"])
            .arg(format!("{}", 7 + (i % 5)))
            .stdout(Stdio::null())
            .status()?;
        trips.push(ms(t.elapsed()));
        ensure!(st.success(), "sluice backend set-weight failed: {st}");
    }
    Ok(trips)
}

/// The `sluice` binary that `backend list` is timed with: this process when it is `sluice`
/// (`sluice bench`), else the one cargo built next to it (a test harness in `deps/`).
fn sluice_exe() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    if exe.file_stem().is_some_and(|s| s == "sluice") {
        return Ok(exe);
    }
    let dir = exe.parent().unwrap_or(Path::new("."));
    [dir.join("sluice"), dir.join("../sluice")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no sluice binary next to {} to time `backend list` with (build it: cargo build -p lb-userspace)",
                exe.display()
            )
        })
}

/// The start and edit target of `sluice bench scale` (issue #17).
pub const TARGET_SCALE_MS: f64 = 1000.0;

/// `sluice bench scale`: how big.
#[derive(Clone, Debug)]
pub struct ScaleOptions {
    pub vips: usize,
    pub backends: usize,
    /// Every VIP's `table_size`: a prime of at least 10 × `backends` (the config's floor).
    pub table_size: u32,
    /// Runs of `backend list` and edits.
    pub rounds: usize,
    /// The idle-CPU window.
    pub idle: Duration,
}

impl ScaleOptions {
    /// Issue #17: 4096 VIPs × 64 backends, 641-slot tables (the smallest prime of at
    /// least 10 × 64).
    pub fn issue_17(quick: bool) -> Self {
        Self {
            vips: 4096,
            backends: 64,
            table_size: 641,
            rounds: if quick { 3 } else { 5 },
            idle: Duration::from_secs(if quick { 3 } else { 10 }),
        }
    }

    /// `daemon.vip_capacity`: the VIPs.
    pub fn vip_capacity(&self) -> usize {
        self.vips
    }

    /// `daemon.backend_capacity`: every backend, the reserved slot 0, and a VIP's worth of
    /// spare slots (an edit that replaces backends takes new slots before it frees the old).
    pub fn backend_capacity(&self) -> usize {
        self.vips * self.backends + 1 + self.backends
    }

    /// `daemon.table_capacity`: every VIP's two table halves (Maglev).
    pub fn table_capacity(&self) -> u64 {
        2 * self.vips as u64 * u64::from(self.table_size)
    }
}

/// What `sluice bench scale` measured.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleReport {
    pub vips: usize,
    pub backends_per_vip: usize,
    pub table_size: u32,
    pub vip_capacity: usize,
    pub backend_capacity: usize,
    pub table_capacity: u64,
    /// The configuration file's size, and parsing and validating it.
    pub config_bytes: usize,
    pub parse_ms: f64,
    /// A data plane of these sizes loaded alone, unpinned (maps created, every program
    /// verified), then the full configuration published into it (every table built, every
    /// slot written), and published again unchanged.
    pub load_ms: f64,
    pub publish_ms: f64,
    pub republish_ms: f64,
    /// The daemon's `daemon::start` (preflight, maps created and pinned, programs
    /// verified, the configuration published, the balancer attached), and until its API
    /// socket was there.
    pub start_ms: f64,
    pub ready_ms: f64,
    /// `VmRSS` of this process before the daemon started (the configuration parsed, and
    /// its desired state: the daemon's own input) and with it running (settled): the
    /// daemon runs in a thread of the benchmark.
    pub rss_before_kib: u64,
    pub rss_kib: u64,
    /// The daemon's maps (`memlock`, counted once per map).
    pub maps: Vec<super::control::MapMem>,
    pub map_total_bytes: u64,
    pub idle_window_s: f64,
    pub idle_cpu_percent: f64,
    pub list_runs: usize,
    pub list_median_ms: f64,
    pub list_max_ms: f64,
    /// `sluice backend list --vip v0` (one VIP's backends).
    pub list_vip_median_ms: f64,
    /// A typed edit of one weight (validated, planned, published, saved, answered), and
    /// the whole round trip of `sluice backend set-weight`; `None` when refused.
    pub edit_median_ms: Option<f64>,
    pub edit_max_ms: Option<f64>,
    pub edit_trip_median_ms: Option<f64>,
    /// Why the edit was refused.
    pub edit_refused: Option<String>,
    pub target_ms: f64,
    /// Start and edit within the target.
    pub met: bool,
}

/// `sluice bench scale`: the real daemon with `o.vips` × `o.backends` on a veth of a private
/// network namespace; see [`ScaleReport`].
pub fn scale(o: &ScaleOptions) -> anyhow::Result<ScaleReport> {
    super::netns::in_private_netns(|| {
        super::packet::network()?;
        scale_here(o)
    })
}

fn scale_here(o: &ScaleOptions) -> anyhow::Result<ScaleReport> {
    use super::control::{map_fds, maps_since, rss};
    let dir = bench_dir()?;
    let text = config_text(&dir, o.vips, o.backends, Some(o));
    let t = Instant::now();
    let config = crate::config::parse(&text, "bench")
        .map_err(|e| anyhow::anyhow!("the benchmark's configuration: {e}"))?
        .config;
    let parse_ms = ms(t.elapsed());
    tracing::info!(parse_ms, bytes = text.len(), "configuration parsed");
    let sizes = crate::dataplane::Sizes::of(&config.daemon);
    let desired = State::new(config.clone()).desired();
    let old_fds = map_fds()?;
    let rss_before_kib = rss()?[0];
    let t_ready = Instant::now();
    let result = with_daemon(config, |socket, start| {
        let ready_ms = ms(t_ready.elapsed());
        tracing::info!(start_ms = ms(start), ready_ms, "the daemon is up");
        let (maps, map_total_bytes) = maps_since(&old_fds)?;
        let (idle_cpu_percent, wall) = idle_cpu(o.idle, Duration::from_secs(2));
        let rss_kib = rss()?[0];
        let mut list = time_backend_list(socket, o.rounds)?;
        let mut list_vip = time_list(socket, o.rounds, &["--vip", "v0"])?;
        let timed = time_edits(socket, o.vips, o.rounds)
            .and_then(|e| Ok((e, time_set_weight(socket, o.vips, o.rounds)?)));
        let (edits, edit_refused) = match timed {
            Ok(e) => (Some(e), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        let list_max_ms = list.iter().copied().fold(0.0, f64::max);
        let start_ms = ms(start);
        let (edit_median_ms, edit_max_ms, edit_trip_median_ms) = match edits {
            Some((mut edits, mut trips)) => (
                Some(super::median(&mut edits)),
                Some(edits.iter().copied().fold(0.0, f64::max)),
                Some(super::median(&mut trips)),
            ),
            None => (None, None, None),
        };
        Ok(ScaleReport {
            vips: o.vips,
            backends_per_vip: o.backends,
            table_size: o.table_size,
            vip_capacity: o.vip_capacity(),
            backend_capacity: o.backend_capacity(),
            table_capacity: o.table_capacity(),
            config_bytes: text.len(),
            parse_ms,
            load_ms: 0.0,
            publish_ms: 0.0,
            republish_ms: 0.0,
            start_ms,
            ready_ms,
            rss_before_kib,
            rss_kib,
            maps,
            map_total_bytes,
            idle_window_s: wall.as_secs_f64(),
            idle_cpu_percent,
            list_runs: o.rounds,
            list_median_ms: super::median(&mut list),
            list_max_ms,
            list_vip_median_ms: super::median(&mut list_vip),
            edit_median_ms,
            edit_max_ms,
            edit_trip_median_ms,
            edit_refused,
            target_ms: TARGET_SCALE_MS,
            met: start_ms <= TARGET_SCALE_MS && edit_max_ms.is_some_and(|m| m <= TARGET_SCALE_MS),
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
    let mut report = result?;
    // After the daemon (whose RSS is measured first): a data plane alone.
    let t = Instant::now();
    let mut dp = crate::dataplane::Dataplane::load(sizes)?;
    report.load_ms = ms(t.elapsed());
    let t = Instant::now();
    dp.publish(&desired)?;
    report.publish_ms = ms(t.elapsed());
    let t = Instant::now();
    dp.publish(&desired)?;
    report.republish_ms = ms(t.elapsed());
    tracing::info!(
        load_ms = report.load_ms,
        publish_ms = report.publish_ms,
        republish_ms = report.republish_ms,
        "a data plane alone"
    );
    Ok(report)
}

impl ScaleReport {
    /// The human-readable table.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mib = |kib: u64| kib as f64 / 1024.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Scale: the daemon with {} VIPs × {} backends (table_size {}; vip_capacity {}, \
             backend_capacity {}, table_capacity {})",
            self.vips,
            self.backends_per_vip,
            self.table_size,
            self.vip_capacity,
            self.backend_capacity,
            self.table_capacity
        );
        let mark = |ok: bool| if ok { "ok" } else { "OVER" };
        let _ = writeln!(
            s,
            "  configuration {:.1} MiB, parsed and validated in {:.0} ms",
            self.config_bytes as f64 / 1048576.0,
            self.parse_ms
        );
        let _ = writeln!(
            s,
            "  a data plane alone: load {:.0} ms, full publish {:.0} ms, unchanged publish {:.0} ms",
            self.load_ms, self.publish_ms, self.republish_ms
        );
        let _ = writeln!(
            s,
            "  daemon start {:.0} ms (API up after {:.0} ms)  target ≤ {} ms {}",
            self.start_ms,
            self.ready_ms,
            self.target_ms,
            mark(self.start_ms <= self.target_ms)
        );
        let _ = writeln!(
            s,
            "  RSS {:.1} MiB (the process before the daemon: {:.1} MiB); kernel map memory {:.1} MiB",
            mib(self.rss_kib),
            mib(self.rss_before_kib),
            self.map_total_bytes as f64 / 1048576.0
        );
        for m in self.maps.iter().take(8) {
            let _ = writeln!(
                s,
                "    {:<14} {:>9} entries {:>8.1} MiB",
                m.name,
                m.max_entries,
                m.memlock_bytes as f64 / 1048576.0
            );
        }
        let _ = writeln!(
            s,
            "  idle CPU {:.2}% of a core over {:.0} s",
            self.idle_cpu_percent, self.idle_window_s
        );
        let _ = writeln!(
            s,
            "  `sluice backend list` median {:.0} ms, max {:.0} ms ({} runs)",
            self.list_median_ms, self.list_max_ms, self.list_runs
        );
        let _ = writeln!(
            s,
            "  `sluice backend list --vip v0` median {:.0} ms",
            self.list_vip_median_ms
        );
        match (
            self.edit_median_ms,
            self.edit_max_ms,
            self.edit_trip_median_ms,
        ) {
            (Some(median), Some(max), Some(trip)) => {
                let _ = writeln!(
                    s,
                    "  edit (one weight): apply median {median:.0} ms, max {max:.0} ms  \
                     target ≤ {} ms {}; `sluice backend set-weight` {trip:.0} ms",
                    self.target_ms,
                    mark(max <= self.target_ms),
                );
            }
            _ => {
                let _ = writeln!(
                    s,
                    "  edit (one weight): refused: {}  target ≤ {} ms OVER",
                    self.edit_refused.as_deref().unwrap_or("?"),
                    self.target_ms
                );
            }
        }
        s
    }
}
