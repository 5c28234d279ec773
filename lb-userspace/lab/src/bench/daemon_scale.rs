//! The real daemon (`daemon::start` + `daemon::serve`, as `sluice run` runs it) with many
//! VIPs × backends on the benchmark's veth: the latency of `sluice backend list` (the CLI
//! binary, answered through the API), of a metrics scrape and of a live edit, and the CPU
//! share of the idle daemon (no traffic, no health checks: the status file, metrics,
//! lifecycle and conntrack work it does on its own).

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

/// The configuration: `vips` × `backends` on the benchmark's interface, no health checks.
fn config_text(dir: &Path, vips: usize, backends: usize) -> String {
    let mut s = format!(
        "[daemon]\ninterface = \"{IFACE}\"\nstate_dir = \"{d}\"\napi_socket = \"{d}/api.sock\"\n\
         pin_dir = \"/sys/fs/bpf/sluice-bench-{pid}\"\nmetrics_listen = \"127.0.0.1:9640\"\n",
        d = dir.display(),
        pid = std::process::id()
    );
    for v in 0..vips {
        s.push_str(&format!(
            "\n[[vip]]\nname = \"v{v}\"\naddress = \"10.97.{}.{}\"\nport = 80\nprotocol = \"tcp\"\n\
             forwarding = \"dsr\"\ntable_size = 1009\n[vip.health]\ncheck = \"none\"\n",
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
    let dir: PathBuf =
        std::env::temp_dir().join(format!("sluice-bench-daemon-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let text = config_text(&dir, vips, backends);
    let config = crate::config::parse(&text, "bench")
        .map_err(|e| anyhow::anyhow!("the benchmark's configuration: {e}"))?
        .config;
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
        let dp = match daemon::start(&mut state, OnExit::Remove) {
            Ok(dp) => dp,
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return Err(e.into());
            }
        };
        let _ = ready_tx.send(Ok(()));
        rt.block_on(daemon::serve(state, dp, edit_rx, async {
            let _ = stop_rx.await;
        }))
        .map_err(anyhow::Error::from)
    });
    let result = wait_for_daemon(&ready_rx, &socket)
        .and_then(|()| measure(&socket, vips, backends, rounds, idle));
    let _ = stop.send(());
    let stopped = daemon
        .join()
        .map_err(|_| anyhow::anyhow!("the daemon thread panicked"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let r = result?;
    stopped.context("the benchmark daemon")?;
    Ok(r)
}

/// Wait until the daemon started (or failed to) and its API socket exists.
fn wait_for_daemon(
    ready: &std::sync::mpsc::Receiver<Result<(), String>>,
    socket: &Path,
) -> anyhow::Result<()> {
    ready
        .recv_timeout(Duration::from_secs(120))
        .context("the daemon did not start within 120 s")?
        .map_err(|e| anyhow::anyhow!("the daemon did not start: {e}"))?;
    let t0 = Instant::now();
    while !socket.exists() {
        ensure!(t0.elapsed() < Duration::from_secs(30), "no API socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Measure the running daemon: its idle CPU, then `rounds` of each latency.
fn measure(
    socket: &Path,
    vips: usize,
    backends: usize,
    rounds: usize,
    idle: Duration,
) -> anyhow::Result<DaemonScale> {
    let (idle_cpu_percent, wall) = idle_cpu(idle);
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
fn idle_cpu(idle: Duration) -> (f64, Duration) {
    std::thread::sleep(Duration::from_secs(3));
    let (c0, w0) = (cpu_time(), Instant::now());
    std::thread::sleep(idle);
    let (cpu, wall) = (cpu_time() - c0, w0.elapsed());
    (100.0 * cpu.as_secs_f64() / wall.as_secs_f64(), wall)
}

/// `rounds` runs of `sluice backend list` (the CLI binary, through the API), in ms.
fn time_backend_list(socket: &Path, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let exe = sluice_exe()?;
    let mut list = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let st = Command::new(&exe)
            .arg("--api-socket")
            .arg(socket)
            .args(["backend", "list"])
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

/// `rounds` live edits through the API (a weight changed, VIP after VIP), in ms.
fn time_edits(socket: &Path, vips: usize, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let mut edits = Vec::new();
    for i in 0..rounds {
        let Response::Config { toml, version } = client::request(socket, &Request::Config)? else {
            anyhow::bail!("unexpected answer to a config request");
        };
        let mut c = crate::config::parse(&toml, "bench edit")
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .config;
        c.vips[i % vips].backends[0].weight = 2 + (i as u32 % 5);
        let req = Request::Apply {
            config: c.to_toml()?,
            dry_run: false,
            base_version: Some(version),
            force: false,
        };
        let t = Instant::now();
        client::request(socket, &req)?;
        edits.push(ms(t.elapsed()));
    }
    Ok(edits)
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
