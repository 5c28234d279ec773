//! Benchmarks (`sluice bench`) and the live-frames traffic generator (`sluice gen`).
//!
//! - [`packet`]: the real balancer, one frame per `BPF_PROG_TEST_RUN` call, against the
//!   floor program on the same CPU (in blocks of calls of one program, or paired call by
//!   call); figures are ratios to the floor.
//! - [`control`]: Maglev builds, edit latency, memory, map memory, a million flows.
//! - [`throughput`]: packets per second through sluice attached to a veth, fed by a
//!   generator ([`generator`]: live frames, [`traffic`], or the kernel's [`pktgen`]), against
//!   the same generator into floor programs.
//!
//! Everything runs on a thread of its own inside a private network namespace
//! ([`netns::in_private_netns`]) that disappears with it: no host interface, address or
//! sysctl is touched. [`run`] writes `bench.json`, `bench.txt` and `ratios.svg`.

pub mod control;
pub mod daemon_scale;
pub mod frame;
pub mod generator;
pub mod netns;
mod output;
pub mod packet;
pub mod pktgen;
mod run;
pub mod throughput;
pub mod traffic;

use std::path::{Path, PathBuf};

use serde::Serialize;

/// What to run and how much of it.
#[derive(Clone, Debug)]
pub struct Options {
    pub packet: bool,
    pub control: bool,
    pub throughput: bool,
    /// Measured calls per per-packet case and round (block method: 200k, 20k with `quick`;
    /// paired: 100k, 2k with `quick`).
    pub calls: Option<u32>,
    /// Rounds of the per-packet cases (block method: 5, 3 with `quick`; paired: 1).
    pub rounds: Option<u32>,
    /// How the per-packet benchmark arranges its calls.
    pub method: packet::Method,
    /// A short smoke version of everything (CI).
    pub quick: bool,
    /// Where the results go.
    pub out: PathBuf,
    /// The CPU the measurements are pinned to (default: the last one this process may use).
    pub cpu: Option<usize>,
    /// The throughput benchmark's traffic generator.
    pub generator: generator::Choice,
    /// Per packet: only these cases (empty: all).
    pub cases: Vec<String>,
}

impl Options {
    /// Everything, full size, into `out`.
    pub fn all(out: impl Into<PathBuf>) -> Self {
        Self {
            packet: true,
            control: true,
            throughput: true,
            calls: None,
            rounds: None,
            method: packet::Method::Block,
            quick: false,
            out: out.into(),
            cpu: None,
            generator: generator::Choice::Auto,
            cases: Vec::new(),
        }
    }

    fn packet_options(&self, cpu: usize, cpus: &[usize]) -> packet::Options {
        let block = self.method == packet::Method::Block;
        let calls = self.calls.unwrap_or(match (block, self.quick) {
            (true, false) => 200_000,
            (true, true) => 20_000,
            (false, false) => 100_000,
            (false, true) => 2_000,
        });
        packet::Options {
            method: self.method,
            calls,
            rounds: self.rounds.unwrap_or(match (block, self.quick) {
                (true, false) => 5,
                (true, true) => 3,
                (false, _) => 1,
            }),
            warmup: (calls / 200).clamp(1, 1000),
            mid_flows: if self.quick { 5_000 } else { 50_000 },
            big_flows: if self.quick {
                20_000
            } else {
                packet::BIG_FLOWS
            },
            quick: self.quick,
            cpu,
            cpus: cpus.to_vec(),
            only: self.cases.clone(),
        }
    }

    fn control_options(&self, cpus: &[usize]) -> control::Options {
        control::Options {
            maglev_runs: if self.quick { 3 } else { 51 },
            edit_rounds: if self.quick { 3 } else { 21 },
            rss_vips: 100,
            rss_backends: 100,
            scale_flows: if self.quick { 20_000 } else { 1_000_000 },
            cpus: cpus.to_vec(),
            daemon_vips: 1000,
            daemon_backends: 10,
            daemon_rounds: if self.quick { 3 } else { 11 },
            daemon_idle: std::time::Duration::from_secs(if self.quick { 5 } else { 20 }),
        }
    }

    fn throughput_options(&self, cpu: usize, generator: generator::Chosen) -> throughput::Options {
        throughput::Options {
            flows: if self.quick {
                vec![1, 1000]
            } else {
                vec![1, 1000, 100_000, 1_000_000]
            },
            packets: if self.quick { 200_000 } else { 3_000_000 },
            max_seconds: if self.quick { 1.0 } else { 2.0 },
            rounds: if self.quick { 1 } else { 3 },
            cpu,
            generator,
        }
    }
}

/// The machine the figures come from.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub cpus: usize,
    pub cpus_possible: usize,
    pub memory_mib: u64,
    /// `/proc/loadavg` (1, 5, 15 minutes) when the run started: other work on the machine
    /// shows in the figures.
    pub load_average: [f64; 3],
}

impl Machine {
    pub fn probe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
        let memory_mib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024);
        Self {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu_model,
            cpus: netns::allowed_cpus().len(),
            cpus_possible: netns::possible_cpus(),
            memory_mib,
            load_average: {
                let l = read("/proc/loadavg");
                let mut it = l.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
                [(); 3].map(|()| it.next().unwrap_or(0.0))
            },
        }
    }
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub sluice_version: &'static str,
    /// `release` or `debug`: the control-plane figures (Maglev builds, publish) depend on it;
    /// the per-packet ones are the kernel's.
    pub build_profile: &'static str,
    /// Seconds since the Unix epoch, at the start.
    pub started_unix: u64,
    pub quick: bool,
    pub machine: Machine,
    /// The CPU the measuring thread was pinned to.
    pub cpu: usize,
    pub packet: Option<packet::Report>,
    pub control: Option<control::Report>,
    pub throughput: Option<throughput::Report>,
    pub duration_s: f64,
}

impl Report {
    /// Every headline figure, named (for checks: all must be finite and positive).
    pub fn figures(&self) -> Vec<(String, f64)> {
        output::figures(self)
    }

    /// The human-readable table.
    pub fn to_text(&self) -> String {
        output::text(self)
    }
}

/// Run what `opts` asks for in a private network namespace, write the results into
/// `opts.out`, and return them.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let started = std::time::Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cpus = netns::allowed_cpus();
    let cpu = match opts.cpu {
        Some(c) => {
            anyhow::ensure!(
                cpus.contains(&c),
                "CPU {c} is not available (have {cpus:?})"
            );
            c
        }
        None => *cpus.last().unwrap_or(&0),
    };
    let machine = Machine::probe();
    // Before entering the namespace: loading pktgen is the host's business, once.
    let generator = opts
        .throughput
        .then(|| generator::resolve(opts.generator))
        .transpose()?;
    let (packet, control, throughput) = netns::in_private_netns(|| {
        let ifindex = packet::network()?;
        let control = opts
            .control
            .then(|| control::run(&opts.control_options(&cpus), ifindex))
            .transpose()?;
        let packet = opts
            .packet
            .then(|| packet::run(&opts.packet_options(cpu, &cpus), ifindex))
            .transpose()?;
        let throughput = generator
            .map(|g| throughput::run(&opts.throughput_options(cpu, g)))
            .transpose()?;
        Ok((packet, control, throughput))
    })?;
    let report = Report {
        sluice_version: env!("CARGO_PKG_VERSION"),
        build_profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        started_unix,
        quick: opts.quick,
        machine,
        cpu,
        packet,
        control,
        throughput,
        duration_s: started.elapsed().as_secs_f64(),
    };
    write(&report, &opts.out)?;
    Ok(report)
}

/// The median of `v` (the lower one for an even count), for the control-plane and
/// throughput figures; sorts `v`.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

/// Write `bench.json`, `bench.txt` and `ratios.svg` into `dir` (created if needed).
pub fn write(report: &Report, dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let put = |name: &str, data: String| {
        let p = dir.join(name);
        std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))
    };
    put("bench.json", serde_json::to_string_pretty(report)? + "\n")?;
    put("bench.txt", report.to_text())?;
    put("ratios.svg", output::svg(report))?;
    Ok(())
}
