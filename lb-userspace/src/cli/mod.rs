//! The `sluice` command line: argument parsing only; each family's work is in its module.

mod announce;
mod autoscale;
mod backend;
mod bench;
mod config;
mod decap;
mod demo;
pub mod detach;
pub mod dist;
mod doctor;
mod edit;
mod examples;
pub mod fleet;
mod fleet_lab;
mod lab;
pub mod load;
mod run;
mod simulate;
mod stats;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version = dist::version(),
    about = "An XDP layer-4 load balancer"
)]
pub struct Cli {
    /// Run in this named network namespace (`ip netns`), entered with setns(2) before
    /// anything else. Unlike `ip netns exec`, this keeps the host's mount namespace, so
    /// pins in /sys/fs/bpf stay visible and outlive the command.
    #[arg(long, global = true, value_name = "NAME")]
    pub netns: Option<String>,
    /// The daemon's control socket (`daemon.api_socket`). Default: $SLUICE_API_SOCKET,
    /// else the one the --config file names, else /run/sluice/sluice.sock.
    #[arg(long, global = true, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// The daemon's config file, to find its API socket (`daemon.api_socket`) when it is
    /// not the default: `sluice --config lab.toml backend list`.
    #[arg(long = "config", value_name = "FILE", conflicts_with = "api_socket")]
    pub daemon_config: Option<PathBuf>,
    /// Print JSON instead of tables (list, stats, edit and bench commands).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: attach the balancer and serve the configured VIPs until SIGINT/SIGTERM.
    /// Under systemd (`$NOTIFY_SOCKET`, `Type=notify`) it reports READY=1 once attached and
    /// serving its API, RELOADING=1 around a SIGHUP reload, and STOPPING=1.
    Run {
        /// The config file (the Debian package installs /etc/sluice/sluice.toml).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Override `daemon.interface`.
        #[arg(long)]
        interface: Option<String>,
        /// Override `daemon.xdp_mode`.
        #[arg(long, value_enum)]
        xdp_mode: Option<Mode>,
        /// The log's format on standard error. Its level: $SLUICE_LOG (else $RUST_LOG),
        /// e.g. `debug` or `info,sluice_daemon=debug`; default `info`.
        #[arg(long, value_enum, default_value = "text")]
        log_format: crate::logging::LogFormat,
    },
    /// Remove the balancer: detach its pinned XDP link and remove its pinned maps (every
    /// flow), pin directory and saved layout. A stopped `sluice run` leaves the balancer
    /// attached and forwarding, for the next one to adopt; this is the explicit removal.
    Detach {
        /// The daemon's config: its `daemon.pin_dir` (or the default for its interface) and
        /// `daemon.state_dir`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The interface (pin directory /sys/fs/bpf/sluice/IF unless --pin-dir says).
        #[arg(long, short)]
        interface: Option<String>,
        /// The pin directory (`daemon.pin_dir`).
        #[arg(long)]
        pin_dir: Option<PathBuf>,
        /// Without --config: the `daemon.state_dir` holding the saved layout to remove
        /// (default /run/sluice); a layout saved for another pin directory is left alone.
        #[arg(long, conflicts_with = "config")]
        state_dir: Option<PathBuf>,
    },
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Make the running daemon read its config file again (as SIGHUP does), merged with the
    /// live edits made since; conflicts refuse it with their report.
    #[command(
        after_help = "Reloads this balancer only; in a fleet, distribute the config \
                            file and reload every balancer (`sluice fleet check` shows whether \
                            they agree)."
    )]
    Reload,
    /// VIPs of the running daemon: list, add, remove, set.
    #[command(subcommand, after_help = edit::ONE_BALANCER)]
    Vip(edit::VipCmd),
    /// Balancers together: `fleet check --peer SOCKET...` compares this balancer's VIP
    /// table and configuration fingerprints with its peers'. Live CLI edits apply to one
    /// balancer only.
    #[command(subcommand)]
    Fleet(fleet::FleetCmd),
    /// Backends of the running daemon: list (health, counters), add, remove, set-weight,
    /// drain, undrain.
    #[command(subcommand, after_help = edit::ONE_BALANCER)]
    Backend(BackendCmd),
    /// Which backend a flow goes to now, answered by the XDP program itself (run on a
    /// synthetic packet of the flow).
    Lookup {
        /// The VIP's name (`sluice vip list`).
        #[arg(long)]
        vip: String,
        /// The client's address and port, e.g. 192.0.2.7:40000 or [2001:db8::7]:40000.
        #[arg(long)]
        src: std::net::SocketAddr,
        /// The destination port, for an all-ports VIP.
        #[arg(long)]
        dport: Option<u16>,
    },
    /// Per-VIP and per-backend rates (packets/s, bytes/s, new flows/s), flows, health and
    /// state, from the running daemon; `--watch` refreshes it.
    Stats {
        #[arg(long, short)]
        watch: bool,
        /// Seconds between samples.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// What an edit would do, without doing it: table slots that move, live flows on
    /// backends that would be removed, the new weight shares; and (`plan load`) what the
    /// load policy makes of the current load reports.
    #[command(subcommand)]
    Plan(edit::PlanCmd),
    /// The demo: a namespace lab, the daemon on config/demo.toml, real TCP connections
    /// through the XDP balancer (who answered), a backend killed to show failover, and
    /// everything removed at the end. Needs root.
    Demo {
        /// Use this config instead of the built-in config/demo.toml (it must match the lab:
        /// VIP "demo-web" on 10.97.0.100:80, backends 10.97.0.11..).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Connections per burst.
        #[arg(long, default_value_t = 600)]
        connections: usize,
        /// The fleet demo instead: N balancers (2..=4) behind a router running BIRD with
        /// ECMP, each announcing the VIP over BGP; traffic spread over them, one taken out
        /// for maintenance, one lost; a table of connections and resets.
        #[arg(long, value_name = "N", conflicts_with = "config")]
        balancers: Option<usize>,
    },
    /// What on this host keeps traffic from flowing, each finding with the command that
    /// fixes it; exits 1 if something blocks traffic. On the balancer: `sluice doctor
    /// [--config FILE]`; on a backend host: `sluice doctor backend --vip ADDR:PORT --mode
    /// dsr|ipip`.
    Doctor(doctor::DoctorArgs),
    /// Backend-side decapsulation of sluice's IPIP traffic.
    #[command(subcommand)]
    Decap(DecapCmd),
    /// The XDP_PASS program a veth peer needs to receive frames sluice sends with XDP_TX.
    #[command(subcommand)]
    Peer(PeerCmd),
    /// Benchmarks (in a private network namespace): per packet, control plane, throughput.
    Bench(bench::BenchArgs),
    /// Traffic generator: XDP live frames transmitted on an interface.
    Gen(bench::GenArgs),
    /// A namespace lab (clients, load balancer, backends) for trying sluice out and tests.
    #[command(subcommand)]
    Lab(lab::LabCmd),
    /// The autoscaler of the running daemon: per scaled VIP, its counts, last decisions
    /// (reason and inputs) and actions.
    #[command(subcommand)]
    Autoscale(AutoscaleCmd),
    /// The VIP routes a BGP speaker exports (`[daemon.announce]`): status (announced or
    /// not, and why), maintenance (withdraw --all, restore).
    #[command(subcommand)]
    Announce(announce::AnnounceCmd),
    /// Replay a load trace through the autoscaler's policies (offline, no root): backends
    /// over time, utilisation, time over target, backend-seconds; compared with the plain
    /// Kubernetes HPA defaults on the same trace.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Simulate {
        /// Simulate something else than the autoscaler.
        #[command(subcommand)]
        what: Option<SimulateCmd>,
        /// CSV: time_s,conns_per_s,mean_duration_s (see config/traces/).
        #[arg(long, required = true)]
        trace: Option<PathBuf>,
        /// TOML: [autoscale] as in [vip.autoscale], and [sim] (the capacity model).
        #[arg(long, required = true)]
        policy: Option<PathBuf>,
        /// Write the time series (one row per step) here.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Seconds between the lines of the printed timeline.
        #[arg(long, default_value_t = 300.0)]
        every: f64,
    },
    /// Print the shell completion script for `sluice` (bash, zsh, fish, ...) on stdout. The
    /// Debian package installs them: bash-completion, zsh's and fish's vendor directories.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages into a directory: sluice.1 and one per subcommand, all levels
    /// (sluice-backend-add.1, ...). The Debian package installs them gzipped.
    Man {
        /// The directory (created if missing); existing pages of the same names are replaced.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SimulateCmd {
    /// Inference-aware balancing offline: LLM-like model servers (the lab's engine) under
    /// a heavy-tailed request trace, through static Maglev, least connections and the
    /// load-aware policies; TTFT p50/p95/p99 and throughput of each (simulated time, no
    /// root). `sluice bench inference` runs the same scenario in the lab.
    Inference(simulate::ScenarioArgs),
}

#[derive(Debug, Subcommand)]
pub enum AutoscaleCmd {
    /// Bounds, serving and desired counts, the last decisions with their reasons and
    /// inputs, and the last actions.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum PeerCmd {
    /// Attach XDP_PASS to the peer of the veth sluice runs on (pinned: it stays after this
    /// command exits). Only veth needs this; real NICs do not.
    Attach {
        #[arg(long, short)]
        interface: String,
    },
    /// Detach it.
    Detach {
        #[arg(long, short)]
        interface: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackendCmd {
    /// Every backend of every VIP: weight, health (since when, the last check), counters.
    List {
        /// Read the status file in this `daemon.state_dir` instead of asking the daemon.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Only the backends of this VIP (at thousands of VIPs, much faster).
        #[arg(long)]
        vip: Option<String>,
    },
    #[command(flatten)]
    Edit(edit::EditBackend),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate a config file exactly as `run` would, without touching the kernel; then
    /// what of this host would stop `run` (the API group, writable directories).
    Check {
        file: PathBuf,
        /// Check the file alone, not this host (a config meant for another machine).
        #[arg(long)]
        file_only: bool,
    },
    /// Print the effective configuration (every default filled in) as TOML.
    Export { file: PathBuf },
    /// The live edits saved for this config file (`daemon.state_dir`), the file's changes
    /// since they were made, and the conflicts, field by field.
    Diff { file: PathBuf },
    /// Write the running configuration (live edits included) into the config file; the
    /// old file is kept as FILE.bak.
    Save { file: PathBuf },
    /// Drop the saved live edits (a copy is kept): the next `sluice run` starts from the
    /// file as it is.
    Discard { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum DecapCmd {
    /// Attach the decap program to an interface (pinned: it stays after this command exits).
    Attach {
        #[arg(long, short)]
        interface: String,
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: Mode,
    },
    /// Detach it.
    Detach {
        #[arg(long, short)]
        interface: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    Native,
    Generic,
    Auto,
}

/// `--mode dsr|ipip`: a VIP's forwarding mode (`sluice lab`, `sluice doctor backend`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FwdMode {
    Dsr,
    Ipip,
}

impl From<FwdMode> for crate::config::Forwarding {
    fn from(m: FwdMode) -> Self {
        match m {
            FwdMode::Dsr => Self::Dsr,
            FwdMode::Ipip => Self::Ipip,
        }
    }
}

impl From<Mode> for crate::config::XdpMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Native => Self::Native,
            Mode::Generic => Self::Generic,
            Mode::Auto => Self::Auto,
        }
    }
}

impl Command {
    /// A command that only reports (or edits through the API, or changes one pin) and can
    /// simply end when its reader goes away (`sluice backend list | head`). The others own
    /// kernel state they must clean up (the daemon, the demo, a lab being built or its
    /// servers, benchmarks).
    pub fn is_report(&self) -> bool {
        !matches!(
            self,
            Self::Run { .. }
                | Self::Demo { .. }
                | Self::Lab(lab::LabCmd::Up { .. } | lab::LabCmd::Backend { .. })
                | Self::Bench(_)
                | Self::Gen(_)
        )
    }

    /// The log's format: `run --log-format`, text for every other command.
    pub fn log_format(&self) -> crate::logging::LogFormat {
        match self {
            Self::Run { log_format, .. } => *log_format,
            _ => crate::logging::LogFormat::Text,
        }
    }

    /// A command that talks to a running daemon through its API socket.
    pub fn uses_api(&self) -> bool {
        matches!(
            self,
            Self::Vip(_)
                | Self::Fleet(_)
                | Self::Backend(_)
                | Self::Lookup { .. }
                | Self::Stats { .. }
                | Self::Plan(_)
                | Self::Autoscale(_)
                | Self::Announce(_)
        )
    }
}

/// The command tree with every command's `Examples:` ([`examples`]): what `main` parses
/// with, and what the completions and man pages are made from.
pub fn command() -> clap::Command {
    examples::add(<Cli as clap::CommandFactory>::command(), "")
}

/// `sluice ARGS...` from start to end, as the binary's `main` runs it (and the tests'
/// child processes): parse (clap's own message and status for help, versions and errors),
/// logging, SIGPIPE for report commands, the command, and its last error; the exit status.
pub fn main_with<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::FromArgMatches as _;
    let args = match command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    let format = args.command.log_format();
    crate::logging::init(format);
    if args.command.is_report() {
        // `sluice backend list | head`: a reader that stops early ends a report command
        // quietly, as it does `ls` or `cat` (SIGPIPE), instead of `println!` panicking on
        // EPIPE. Commands that own kernel state (run, demo, lab, bench) keep ignoring it, so
        // they always clean up.
        use nix::sys::signal::{SigHandler, Signal, signal};
        // SAFETY: called before any other thread exists; SIG_DFL installs no handler (nix's
        // `signal` is unsafe only for handlers, which must be async-signal-safe).
        let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    }
    match dispatch(args) {
        Ok(()) => 0,
        Err(e) => {
            if format == crate::logging::LogFormat::Json {
                // `sluice run --log-format json`: the last word is a log line like the others.
                tracing::error!(error = %format!("{e:#}"), "sluice run failed");
            } else {
                eprintln!("error: {e:#}");
            }
            exit_code(&e)
        }
    }
}

/// The config file `sluice run` reads without `--config` (where the Debian package installs
/// it; an absolute path, so that the daemon finds it whatever its working directory).
pub const DEFAULT_CONFIG: &str = "/etc/sluice/sluice.toml";

/// The environment variable naming the daemon's API socket.
pub const API_SOCKET_ENV: &str = "SLUICE_API_SOCKET";

/// The daemon's API socket: `--api-socket`, else the `daemon.api_socket` of the
/// `--config` file (the default if it sets none), else `$SLUICE_API_SOCKET` (if not empty),
/// else the default. What the command line says wins over the environment.
pub fn api_socket(
    flag: Option<&Path>,
    config: Option<&Path>,
    env: Option<std::ffi::OsString>,
) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_owned());
    }
    let Some(file) = config else {
        return Ok(env
            .filter(|e| !e.is_empty())
            .map_or_else(|| crate::config::DEFAULT_API_SOCKET.into(), PathBuf::from));
    };
    // Only this one key: a file the daemon took at its start need not validate against
    // this build, and its other settings are none of this command's business.
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--config {}: cannot read it", file.display()))?;
    let doc: toml::Table = toml::from_str(&text)
        .with_context(|| format!("--config {}: not a TOML file", file.display()))?;
    match doc.get("daemon").and_then(|d| d.get("api_socket")) {
        None => Ok(crate::config::DEFAULT_API_SOCKET.into()),
        Some(toml::Value::String(s)) if !s.is_empty() => Ok(s.into()),
        Some(v) => anyhow::bail!(
            "--config {}: daemon.api_socket = {v} is not a path",
            file.display()
        ),
    }
}

/// The exit status for an error [`dispatch`] returned: [`fleet::DISAGREE_EXIT`] when
/// `sluice fleet check` found the balancers disagreeing, 1 for anything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<fleet::Disagreement>().is_some() {
        fleet::DISAGREE_EXIT
    } else {
        1
    }
}

/// Run the parsed command.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    if let Some(ns) = &cli.netns {
        enter_netns(ns)?;
    }
    if let Some(file) = &cli.daemon_config
        && !cli.command.uses_api()
    {
        anyhow::bail!(
            "--config {} before the command only tells commands that talk to the daemon where \
             its socket is; this command takes its own: `sluice <command> --config {}`",
            file.display(),
            file.display()
        );
    }
    let api_socket = api_socket(
        cli.api_socket.as_deref(),
        cli.daemon_config.as_deref(),
        std::env::var_os(API_SOCKET_ENV),
    )?;
    match cli.command {
        Command::Run {
            config,
            interface,
            xdp_mode,
            ..
        } => run::run(&config, interface, xdp_mode),
        Command::Detach {
            config,
            interface,
            pin_dir,
            state_dir,
        } => detach::run(config.as_deref(), interface, pin_dir, state_dir),
        Command::Config(ConfigCmd::Check { file, file_only }) => config::check(&file, file_only),
        Command::Demo {
            balancers: Some(n),
            connections,
            ..
        } => sluice_lab::fleet_demo::run(n, connections),
        Command::Demo {
            config,
            connections,
            balancers: None,
        } => demo::run(config.as_deref(), connections),
        Command::Backend(BackendCmd::List { state_dir, vip }) => {
            backend::list(&api_socket, state_dir.as_deref(), vip.as_deref(), cli.json)
        }
        Command::Backend(BackendCmd::Edit(e)) => edit::backend(&api_socket, e, false, cli.json),
        Command::Vip(v) => edit::vip(&api_socket, v, cli.json),
        Command::Fleet(f) => fleet::run(&api_socket, f, cli.json),
        Command::Plan(p) => edit::plan(&api_socket, p, cli.json),
        Command::Lookup { vip, src, dport } => {
            match crate::api::client::request(
                &api_socket,
                &crate::api::Request::Lookup { vip, src, dport },
            )? {
                crate::api::Response::Lookup {
                    verdict,
                    backend,
                    detail,
                } if cli.json => {
                    println!(
                        "{}",
                        serde_json::json!({"verdict": verdict, "backend": backend, "detail": detail})
                    );
                    Ok(())
                }
                crate::api::Response::Lookup {
                    verdict,
                    backend,
                    detail,
                } => {
                    match backend {
                        Some(b) => println!("{src} → backend {b} ({verdict}; {detail})"),
                        None => println!("{src} → {verdict} {detail}"),
                    }
                    Ok(())
                }
                _ => anyhow::bail!("unexpected answer to a lookup"),
            }
        }
        Command::Stats { watch, interval } => stats::run(
            &api_socket,
            watch,
            std::time::Duration::from_secs_f64(interval.clamp(0.1, 3600.0)),
            cli.json,
        ),
        Command::Config(ConfigCmd::Export { file }) => config::export(&file),
        Command::Config(ConfigCmd::Diff { file }) => config::diff(&file),
        Command::Config(ConfigCmd::Save { file }) => config::save(&file),
        Command::Config(ConfigCmd::Discard { file }) => config::discard(&file),
        Command::Reload => config::reload(&api_socket, cli.json),
        Command::Doctor(args) => doctor::run(args, cli.api_socket.as_deref(), cli.json),
        Command::Decap(DecapCmd::Attach {
            interface,
            xdp_mode,
        }) => decap::attach(&interface, xdp_mode),
        Command::Decap(DecapCmd::Detach { interface }) => decap::detach(&interface),
        Command::Peer(PeerCmd::Attach { interface }) => decap::peer_attach(&interface),
        Command::Peer(PeerCmd::Detach { interface }) => decap::peer_detach(&interface),
        Command::Bench(args) => bench::run(args, cli.json),
        Command::Gen(args) => bench::generate(args),
        Command::Lab(cmd) => lab::run(cmd),
        Command::Autoscale(AutoscaleCmd::Status) => autoscale::status(&api_socket, cli.json),
        Command::Announce(cmd) => announce::run(&api_socket, cmd, cli.json),
        Command::Simulate {
            what: Some(SimulateCmd::Inference(args)),
            ..
        } => simulate::inference(&args),
        Command::Simulate {
            what: None,
            trace,
            policy,
            csv,
            every,
        } => {
            let (Some(trace), Some(policy)) = (trace, policy) else {
                anyhow::bail!("sluice simulate: --trace and --policy are required");
            };
            simulate::run(&trace, &policy, csv.as_deref(), every.max(1.0))
        }
        Command::Completions { shell } => {
            dist::completions(shell, &mut std::io::stdout().lock());
            Ok(())
        }
        Command::Man { out } => {
            for page in dist::man_pages(&out)? {
                println!("{}", page.display());
            }
            Ok(())
        }
    }
}

/// Move the (still single-threaded) process into the named network namespace.
fn enter_netns(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty() && !name.contains('/'),
        "--netns {name:?}: not a namespace name (as `ip netns list` shows them)"
    );
    let path = Path::new("/run/netns").join(name);
    let f = std::fs::File::open(&path)
        .map_err(|e| anyhow::anyhow!("--netns {name}: cannot open {}: {e}", path.display()))?;
    // No other thread exists yet: the whole process moves.
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| anyhow::anyhow!("--netns {name}: setns: {}", std::io::Error::from(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sluice").chain(args.iter().copied()))
    }

    #[test]
    fn vip_set_needs_something_to_set() {
        let e = parse(&["vip", "set", "web"]).expect_err("nothing to set");
        assert_eq!(
            e.kind(),
            clap::error::ErrorKind::MissingRequiredArgument,
            "{e}"
        );
        assert!(e.to_string().contains("--scheduler"), "{e}");
        parse(&["vip", "set", "web", "--scheduler", "wlc"]).expect("one option");
        parse(&["plan", "vip", "set", "web"]).expect_err("plan: nothing to set either");
    }

    fn inference_args(args: &[&str]) -> simulate::ScenarioArgs {
        match parse(args).expect("parses").command {
            Command::Simulate {
                what: Some(SimulateCmd::Inference(a)),
                ..
            } => a,
            other => panic!("not simulate inference: {other:?}"),
        }
    }

    #[test]
    fn simulate_keeps_the_autoscaler_form_and_takes_inference() {
        parse(&["simulate", "--trace", "t.csv", "--policy", "p.toml"])
            .expect("the autoscaler's form");
        parse(&["simulate"]).expect_err("the autoscaler's form needs --trace and --policy");
        let a = inference_args(&["simulate", "inference"]);
        let (s, policies) = a.scenario().expect("the default scenario");
        assert_eq!(policies.len(), 4);
        assert_eq!(s.backends.len(), 4);
        assert!(s.background.is_some(), "the default has background load");
        // Eight backends: every fourth slow, rate and background scaled.
        let a = inference_args(&[
            "simulate",
            "inference",
            "--backends",
            "8",
            "--background",
            "0",
        ]);
        let (s, _) = a.scenario().expect("eight backends");
        let slow = s.backends.iter().filter(|p| p.speed < 1.0).count();
        assert_eq!(slow, 2);
        assert!((s.sessions.rate - 2.0 * sluice_lab::llm::scenario::DEFAULT_RATE).abs() < 1e-9);
        assert!(s.background.is_none());
    }

    #[test]
    fn simulate_inference_names_the_bad_argument() {
        for (args, want) in [
            (&["--policies", "lc,fastest"][..], "--policies"),
            (&["--backends", "0"], "--backends"),
            (&["--rate", "0"], "--rate"),
            (&["--slow-speed=-1"], "--slow-speed"),
            (&["--background=-2"], "--background"),
        ] {
            let all: Vec<&str> = ["simulate", "inference"]
                .into_iter()
                .chain(args.iter().copied())
                .collect();
            let e = inference_args(&all).scenario().expect_err("a bad argument");
            assert!(e.to_string().contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn reports_end_on_a_closed_stdout_daemons_do_not() {
        for args in [
            &["backend", "list"][..],
            &["stats", "--watch"],
            &["vip", "list"],
            &["lab", "status"],
            &["config", "export", "f.toml"],
        ] {
            assert!(parse(args).expect("parses").command.is_report(), "{args:?}");
        }
        for args in [&["run"][..], &["demo"], &["lab", "up"]] {
            assert!(
                !parse(args).expect("parses").command.is_report(),
                "{args:?}"
            );
        }
    }

    /// As `main` prints errors (`{:#}`): a missing socket is named with its reason once,
    /// and with where the socket can be set.
    #[test]
    fn connect_error_says_its_reason_once() {
        let missing = Path::new("/nonexistent/sluice-test.sock");
        let e = crate::api::client::request(missing, &crate::api::Request::Config)
            .expect_err("no daemon there");
        let text = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(
            text.matches("No such file or directory").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("/nonexistent/sluice-test.sock") && text.contains("SLUICE_API_SOCKET"),
            "{text}"
        );
    }

    /// `cd /; sluice run` finds the packaged config: the default is absolute.
    #[test]
    fn run_defaults_to_the_packaged_config() {
        match parse(&["run"]).expect("parses").command {
            Command::Run { config, .. } => {
                assert_eq!(config, PathBuf::from("/etc/sluice/sluice.toml"));
                assert!(config.is_absolute());
            }
            other => panic!("not run: {other:?}"),
        }
        match parse(&["run", "--config", "lab.toml"])
            .expect("parses")
            .command
        {
            Command::Run { config, .. } => assert_eq!(config, PathBuf::from("lab.toml")),
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn doctor_runs_on_the_balancer_or_a_backend() {
        match parse(&["doctor"]).expect("parses").command {
            Command::Doctor(a) => {
                assert!(a.on.is_none());
                assert_eq!(a.config, PathBuf::from(DEFAULT_CONFIG));
            }
            other => panic!("not doctor: {other:?}"),
        }
        let cli = parse(&[
            "doctor",
            "backend",
            "--vip",
            "10.0.0.1:80/tcp",
            "--mode",
            "ipip",
            "--json",
        ])
        .expect("the backend's doctor");
        assert!(cli.json && cli.command.is_report() && !cli.command.uses_api());
        parse(&["doctor", "backend"]).expect_err("--vip is required");
        parse(&["doctor", "backend", "--vip", "web"]).expect_err("not an address");
    }

    #[test]
    fn announce_withdraw_needs_all() {
        let e = parse(&["announce", "withdraw"]).expect_err("no scope");
        assert_eq!(
            e.kind(),
            clap::error::ErrorKind::MissingRequiredArgument,
            "{e}"
        );
        for args in [
            &["announce", "withdraw", "--all"][..],
            &["announce", "restore"],
            &["announce", "status", "--json"],
        ] {
            let cli = parse(args).expect("parses");
            assert!(
                cli.command.uses_api() && cli.command.is_report(),
                "{args:?}"
            );
        }
    }

    #[test]
    fn plan_offers_edits_only() {
        parse(&["plan", "vip", "list"]).expect_err("`plan vip list` is no plan");
        parse(&["vip", "list"]).expect("vip list");
        parse(&["plan", "vip", "remove", "web"]).expect("plan an edit");
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let plan_vip = cmd
            .find_subcommand_mut("plan")
            .and_then(|p| p.find_subcommand_mut("vip"))
            .expect("plan vip");
        let offered: Vec<&str> = plan_vip.get_subcommands().map(|c| c.get_name()).collect();
        assert!(!offered.contains(&"list"), "{offered:?}");
    }

    #[test]
    fn api_socket_lookup() {
        let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let with = dir.join("with.toml");
        std::fs::write(
            &with,
            "[daemon]\ninterface = \"eth0\"\napi_socket = \"/run/lab/sluice.sock\"\n",
        )
        .expect("write");
        let without = dir.join("without.toml");
        std::fs::write(&without, "[daemon]\ninterface = \"eth0\"\n").expect("write");
        let env = || Some(std::ffi::OsString::from("/tmp/env.sock"));
        let p = |x: &str| PathBuf::from(x);
        let flag = p("/tmp/flag.sock");
        // The flag wins, then --config, then the environment, then the default.
        assert_eq!(
            api_socket(Some(&flag), Some(&with), env()).expect("flag"),
            flag
        );
        assert_eq!(
            api_socket(None, Some(&with), env()).expect("config"),
            p("/run/lab/sluice.sock")
        );
        assert_eq!(
            api_socket(None, Some(&without), env()).expect("config's default"),
            p(crate::config::DEFAULT_API_SOCKET)
        );
        assert_eq!(
            api_socket(None, None, env()).expect("env"),
            p("/tmp/env.sock")
        );
        assert_eq!(
            api_socket(None, None, Some("".into())).expect("empty env"),
            p(crate::config::DEFAULT_API_SOCKET)
        );
        let e = api_socket(None, Some(&dir.join("missing.toml")), None).expect_err("missing");
        assert!(format!("{e:#}").contains("missing.toml"), "{e:#}");
        // Parsed from the command line: a top-level --config, and the two are exclusive.
        let cli = parse(&["--config", "lab.toml", "backend", "list"]).expect("--config");
        assert_eq!(cli.daemon_config, Some(p("lab.toml")));
        parse(&["--config", "a.toml", "--api-socket", "/x", "stats"]).expect_err("both");
        // `run` keeps its own --config; a top-level one is refused, not ignored.
        let cli = parse(&["--config", "lab.toml", "run"]).expect("parses");
        assert!(dispatch(cli).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
