//! `sluice bench` and `sluice gen`.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Args, Subcommand};

use crate::bench::{self, traffic};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Run one part only (default: all three).
    #[command(subcommand)]
    pub part: Option<BenchPart>,
    /// Per packet: how the calls are arranged. `block` (the method of the comparison with
    /// Katran): each round runs the floor's calls back to back, then each case's; a case's
    /// ratio is the median over rounds of (its p50 / that round's floor p50). `paired`:
    /// every call of the balancer paired with one of the floor on the same frame.
    #[arg(long, global = true, value_enum, default_value_t = bench::packet::Method::Block)]
    pub method: bench::packet::Method,
    /// Per packet: measured calls per case and round [default: block 200000, 20000 with
    /// --quick; paired 100000, 2000 with --quick].
    #[arg(long, global = true)]
    pub calls: Option<u32>,
    /// Per packet: rounds [default: block 5, 3 with --quick; paired 1].
    #[arg(long, global = true)]
    pub rounds: Option<u32>,
    /// Per packet: measure only this case (repeatable; the names are those of bench.json,
    /// e.g. `tcp_new`, `ipip_established`), e.g. to profile it.
    #[arg(long = "case", global = true, value_name = "NAME")]
    pub cases: Vec<String>,
    /// A short smoke run (fewer calls, flows and rounds; per packet, the 1M-flow case
    /// scaled down to 20k flows), e.g. for CI.
    #[arg(long, global = true)]
    pub quick: bool,
    /// Directory for bench.json, bench.txt and ratios.svg.
    #[arg(long, global = true, default_value = "results")]
    pub out: PathBuf,
    /// CPU to pin the measurements to [default: the last one available].
    #[arg(long, global = true)]
    pub cpu: Option<usize>,
    /// Traffic generator of the throughput benchmark: `auto` takes the kernel's pktgen
    /// where it has one (/proc/net/pktgen, or `modprobe pktgen` works), live frames
    /// otherwise; the report says which ran and why.
    #[arg(long, global = true, value_enum, default_value_t = bench::generator::Choice::Auto)]
    pub generator: bench::generator::Choice,
}

#[derive(Clone, Debug, Subcommand)]
pub enum BenchPart {
    /// Per-packet cost of the real program against the floor (BPF_PROG_TEST_RUN, repeat 1,
    /// pinned to one CPU): p10/p50/p90 and the ratio to the floor of each case, with its
    /// target.
    Packet,
    /// Maglev builds, edit latency, daemon and map memory, a million flows.
    Control,
    /// Packets per second through a veth against floor programs (live frames or pktgen).
    Throughput,
    /// The real daemon at scale (issue #17; not part of the default run): 4096 VIPs × 64
    /// backends by default, with the `[daemon]` capacities sized to fit. Start time, full
    /// publish, RSS, kernel map memory, `backend list` and edit latency; `scale.json` and
    /// `scale.txt` in --out.
    Scale {
        #[arg(long, default_value_t = 4096)]
        vips: usize,
        #[arg(long, default_value_t = 64)]
        backends: usize,
        /// Every VIP's table_size (a prime of at least 10 × backends).
        #[arg(long, default_value_t = 641)]
        table_size: u32,
    },
    /// Inference-aware balancing in the lab: LLM-like model servers behind the real
    /// daemon, the same conversations through static Maglev, least connections and the
    /// load-aware policies; TTFT p50/p95/p99 and throughput of each. Not part of the
    /// default run (240 conversations, about 2.5 minutes a policy; `--quick`: a smoke run
    /// of 30). `sluice simulate inference` runs the same scenario offline.
    Inference(super::simulate::ScenarioArgs),
}

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Transmit on this interface, as if the frames had arrived on it and an XDP program
    /// sent them back out (a veth peer only receives them if it runs an XDP program).
    #[arg(long, short)]
    pub interface: String,
    /// Destination: ADDR:PORT, or [ADDR]:PORT for IPv6.
    #[arg(long)]
    pub to: std::net::SocketAddr,
    /// UDP instead of TCP (ACKs).
    #[arg(long)]
    pub udp: bool,
    /// Destination MAC (the load balancer's interface).
    #[arg(long, value_parser = traffic::parse_mac)]
    pub dst_mac: [u8; 6],
    /// Source MAC [default: the interface's].
    #[arg(long, value_parser = traffic::parse_mac)]
    pub src_mac: Option<[u8; 6]>,
    /// First source address; flow i comes from port 1024 + i % 64000 of this address
    /// + i / 64000 [default: 100.64.0.0 or 2001:db8::1:0].
    #[arg(long)]
    pub from: Option<IpAddr>,
    /// Distinct flows, round robin.
    #[arg(long, default_value_t = 1)]
    pub flows: u32,
    /// The order the flows are sent in: `sequential` (0, 1, 2, ...; a flow table filled by
    /// this traffic then finds each entry prefetched) or `scattered` (every flow once per
    /// round, consecutive frames far apart, as interleaved real traffic).
    #[arg(long, value_enum, default_value_t = traffic::Order::Sequential)]
    pub order: traffic::Order,
    /// Frame length without FCS.
    #[arg(long, default_value_t = 60)]
    pub size: usize,
    /// Frames to send, at most.
    #[arg(long, default_value_t = 10_000_000)]
    pub count: u64,
    /// Seconds to send for, at most.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Frames per batch (1..=256).
    #[arg(long, default_value_t = traffic::DEFAULT_BATCH, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub batch: u32,
    /// Pin to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
}

/// `sluice bench [part]`: the table (or, with `--json`, the report as in `bench.json`)
/// on stdout; the files in `--out`.
pub fn run(a: BenchArgs, json: bool) -> anyhow::Result<()> {
    if let Some(BenchPart::Inference(args)) = &a.part {
        return inference(args, a.quick, &a.out);
    }
    if let Some(BenchPart::Scale {
        vips,
        backends,
        table_size,
    }) = a.part
    {
        return scale(
            &bench::daemon_scale::ScaleOptions {
                vips,
                backends,
                table_size,
                ..bench::daemon_scale::ScaleOptions::issue_17(a.quick)
            },
            &a.out,
            json,
        );
    }
    let mut o = bench::Options::all(&a.out);
    if let Some(part) = a.part {
        o.packet = matches!(part, BenchPart::Packet);
        o.control = matches!(part, BenchPart::Control);
        o.throughput = matches!(part, BenchPart::Throughput);
    }
    o.calls = a.calls;
    o.rounds = a.rounds;
    o.method = a.method;
    o.quick = a.quick;
    o.cpu = a.cpu;
    o.generator = a.generator;
    o.cases = a.cases.clone();
    let report = bench::run(&o)?;
    let written = format!(
        "written: {}/bench.json, bench.txt, ratios.svg",
        a.out.display()
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        eprintln!("{written}");
    } else {
        print!("{}", report.to_text());
        println!("\n{written}");
    }
    Ok(())
}

pub fn generate(a: GenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.duration > 0.0 && a.duration <= 3600.0,
        "--duration must be in (0, 3600] seconds"
    );
    let r = traffic::generate(&traffic::GenOptions {
        interface: a.interface.clone(),
        to: a.to,
        udp: a.udp,
        from: a.from,
        dst_mac: a.dst_mac,
        src_mac: a.src_mac,
        flows: a.flows,
        order: a.order,
        size: a.size,
        count: a.count,
        duration: Duration::from_secs_f64(a.duration),
        batch: a.batch,
        cpu: a.cpu,
    })?;
    println!(
        "{} frames in {:.2} s on {} ({:.2} Mpps, {} flows)",
        r.generated,
        r.seconds,
        a.interface,
        r.generated as f64 / r.seconds / 1e6,
        a.flows
    );
    Ok(())
}

/// `sluice bench scale`: the report on stdout, `scale.json` and `scale.txt` in `out`.
fn scale(
    o: &bench::daemon_scale::ScaleOptions,
    out: &std::path::Path,
    json: bool,
) -> anyhow::Result<()> {
    let r = bench::daemon_scale::scale(o)?;
    std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("--out {}: {e}", out.display()))?;
    let text = r.to_text();
    let put = |name: &str, data: &str| {
        let p = out.join(name);
        std::fs::write(&p, data).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    };
    put("scale.json", &(serde_json::to_string_pretty(&r)? + "\n"))?;
    put("scale.txt", &text)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{text}");
    }
    eprintln!("written: {}/scale.json, scale.txt", out.display());
    Ok(())
}

/// Conversations through the balancer in a lab run, unless `--sessions` says otherwise:
/// at the default 1.7 a second, about 2.5 minutes a policy.
const LAB_SESSIONS: usize = 240;

/// `sluice bench inference`: the scenario in a lab, policy after policy.
fn inference(
    args: &super::simulate::ScenarioArgs,
    quick: bool,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let (mut s, policies) = args.scenario()?;
    if args.sessions.is_none() {
        s.sessions.sessions = if quick { 30 } else { LAB_SESSIONS };
        let background = s.background.as_ref().map_or(0.0, |b| b.sessions.rate);
        s.set_background(background);
    }
    println!(
        "inference comparison in the lab (real time)\n{}\n",
        s.describe()
    );
    let prefix = format!("sl-inf-{}", std::process::id() % 100_000);
    let rows = sluice_lab::llm::bench::run(&prefix, &s, &policies, &mut |m| println!("{m}"))?;
    let table = sluice_lab::llm::scenario::table(&rows);
    println!("\n{table}");
    std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("--out {}: {e}", out.display()))?;
    let path = out.join("inference.txt");
    std::fs::write(&path, format!("{}\n\n{table}", s.describe()))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    println!("written: {}", path.display());
    Ok(())
}
