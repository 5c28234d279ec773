//! The `sluice` command line: argument parsing only; each family's work is in its module.

mod config;
mod decap;
mod run;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = "An XDP layer-4 load balancer")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: attach the balancer and serve the configured VIPs until SIGINT/SIGTERM.
    Run {
        #[arg(long, short, default_value = "config/sluice.toml")]
        config: PathBuf,
        /// Override `daemon.interface`.
        #[arg(long)]
        interface: Option<String>,
        /// Override `daemon.xdp_mode`.
        #[arg(long, value_enum)]
        xdp_mode: Option<Mode>,
    },
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Backend-side decapsulation of sluice's IPIP traffic.
    #[command(subcommand)]
    Decap(DecapCmd),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate a config file exactly as `run` would, without touching the kernel.
    Check { file: PathBuf },
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

impl From<Mode> for crate::config::XdpMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Native => Self::Native,
            Mode::Generic => Self::Generic,
            Mode::Auto => Self::Auto,
        }
    }
}

/// Run the parsed command.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config, interface, xdp_mode } => run::run(&config, interface, xdp_mode),
        Command::Config(ConfigCmd::Check { file }) => config::check(&file),
        Command::Decap(DecapCmd::Attach { interface, xdp_mode }) => decap::attach(&interface, xdp_mode),
        Command::Decap(DecapCmd::Detach { interface }) => decap::detach(&interface),
    }
}
