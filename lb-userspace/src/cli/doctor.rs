//! `sluice doctor` (on the balancer) and `sluice doctor backend` (on a backend host): the
//! checks are `sluice_daemon::doctor`'s; this prints them and sets the exit status.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use sluice_daemon::doctor::{Finding, Report, Severity, VipTarget, backend, balancer};

use super::FwdMode;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DoctorArgs {
    #[command(subcommand)]
    pub on: Option<DoctorCmd>,
    /// The daemon's config file.
    #[arg(long, short, default_value = super::DEFAULT_CONFIG)]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum DoctorCmd {
    /// Run on a backend host (in its network namespace): what keeps it from answering the
    /// VIP's traffic (the VIP's address, ARP settings, decapsulation, MTU, the listener).
    Backend {
        /// The VIP: ADDR, ADDR:PORT or [V6ADDR]:PORT, optionally /tcp or /udp (as `sluice
        /// backend list` shows it). Without a port the listener is not checked.
        #[arg(long)]
        vip: VipTarget,
        /// How the balancer forwards to this backend (`vip.forwarding`).
        #[arg(long, value_enum, default_value = "dsr")]
        mode: FwdMode,
        /// The MTU the balancer sends with (its egress interface's).
        #[arg(long, default_value_t = 1500)]
        mtu: u32,
        /// The interface the balancer's traffic arrives on (default: every interface that
        /// is up with an address of the VIP's family).
        #[arg(long, short)]
        interface: Option<String>,
    },
}

pub fn run(args: DoctorArgs, api_socket: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let report = match args.on {
        Some(DoctorCmd::Backend {
            vip,
            mode,
            mtu,
            interface,
        }) => {
            let a = backend::BackendArgs {
                vip,
                mode: mode.into(),
                mtu,
                interface,
            };
            backend::judge(&a, &backend::Facts::read()?)
        }
        None => balancer_report(&args.config, api_socket)?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    let fails = report
        .findings
        .iter()
        .filter(|f| f.status == Severity::Fail)
        .count();
    anyhow::ensure!(
        fails == 0,
        "doctor: {fails} problem{} block traffic (see the fixes above)",
        if fails == 1 { "" } else { "s" }
    );
    Ok(())
}

/// The balancer's report; a config that does not load is its only finding.
fn balancer_report(file: &Path, api_socket: Option<&Path>) -> anyhow::Result<Report> {
    let origin = file.display().to_string();
    let loaded = std::fs::read_to_string(file)
        .map_err(|e| format!("{origin}: cannot read: {e}"))
        .and_then(|text| crate::config::parse(&text, &origin).map_err(|e| format!("{e:#}")));
    let config = match loaded {
        Ok(l) => l.config,
        Err(message) => {
            return Ok(Report {
                findings: vec![Finding::fail(
                    "config",
                    message,
                    format!("fix the file (`sluice config check {origin}` names each problem)"),
                )],
            });
        }
    };
    let socket = api_socket.map_or_else(|| config.daemon.api_socket.clone(), Path::to_owned);
    let facts = balancer::Facts::read(file, config, &socket)?;
    Ok(balancer::judge(&facts))
}
