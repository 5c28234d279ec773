//! `sluice vip ...`, `sluice backend ...` and `sluice plan ...`: live edits through the
//! daemon's API. Each edit fetches the running configuration, changes it, and sends it back
//! whole with the version it started from; the daemon validates it exactly like the config
//! file, computes the plan, and applies it (or, for `plan` / `--dry-run`, only reports it).

use std::{net::IpAddr, path::Path};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use crate::{
    api::{Request, Response, client},
    config::{self, BackendConfig, Config, Forwarding, Named, Protocol, VipConfig},
};

#[derive(Debug, Subcommand)]
pub enum VipCmd {
    /// Every VIP with its counters.
    List,
    /// Add a VIP (no backends yet; add them with `sluice backend add`).
    Add(VipAdd),
    /// Remove a VIP and its backends.
    Remove {
        /// The VIP's name.
        name: String,
    },
    /// Change a VIP's forwarding mode or table size.
    Set(VipSet),
}

#[derive(Debug, Args)]
pub struct VipAdd {
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub address: String,
    /// 0 = every port.
    #[arg(long)]
    pub port: u16,
    #[arg(long, default_value = "tcp")]
    pub protocol: String,
    #[arg(long, default_value = "dsr")]
    pub forwarding: String,
    #[arg(long, default_value_t = config::DEFAULT_TABLE_SIZE)]
    pub table_size: u32,
    /// maglev, rr, wrr, lc, wlc or source-hash.
    #[arg(long, default_value = "maglev")]
    pub scheduler: String,
    /// New and recovered backends ramp up their weight over this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub slow_start_ms: u32,
    /// A drain ends after this many milliseconds even with connections left (0: never).
    #[arg(long, default_value_t = config::DEFAULT_DRAIN_TIMEOUT_MS)]
    pub drain_timeout_ms: u32,
    /// What a backend marked down does to its flows: reassign (they move) or keep (they
    /// stay until they end; only new flows avoid it).
    #[arg(long, default_value = "reassign")]
    pub on_down: String,
}

#[derive(Debug, Args)]
pub struct VipSet {
    pub name: String,
    #[arg(long)]
    pub forwarding: Option<String>,
    #[arg(long)]
    pub table_size: Option<u32>,
    /// maglev, rr, wrr, lc, wlc or source-hash (existing flows keep their backend).
    #[arg(long)]
    pub scheduler: Option<String>,
    #[arg(long)]
    pub slow_start_ms: Option<u32>,
    #[arg(long)]
    pub drain_timeout_ms: Option<u32>,
    /// reassign or keep (see `vip.on_down`).
    #[arg(long)]
    pub on_down: Option<String>,
}

#[derive(Debug, Args)]
pub struct BackendRef {
    /// The VIP's name (`sluice vip list`).
    #[arg(long)]
    pub vip: String,
    #[arg(long)]
    pub address: IpAddr,
}

#[derive(Debug, Subcommand)]
pub enum EditBackend {
    /// Add a backend to a VIP.
    Add {
        #[command(flatten)]
        at: BackendRef,
        #[arg(long, default_value_t = config::DEFAULT_WEIGHT)]
        weight: u32,
        /// DSR only: the backend's MAC (otherwise resolved by the kernel).
        #[arg(long)]
        mac: Option<String>,
    },
    /// Remove a backend (its live flows move to other backends).
    Remove {
        #[command(flatten)]
        at: BackendRef,
    },
    /// Change a backend's weight (0: no new flows, existing ones stay).
    SetWeight {
        #[command(flatten)]
        at: BackendRef,
        #[arg(long)]
        weight: u32,
    },
    /// Drain a backend: no new flows; its open connections continue until they end (or
    /// the VIP's drain_timeout_ms). `sluice backend list` shows the progress.
    Drain {
        #[command(flatten)]
        at: BackendRef,
        /// Remove the backend from the configuration once drained.
        #[arg(long)]
        remove: bool,
    },
    /// Take a draining (or drained) backend back into service.
    Undrain {
        #[command(flatten)]
        at: BackendRef,
    },
}

/// What `sluice plan` can preview.
#[derive(Debug, Subcommand)]
pub enum PlanCmd {
    /// A VIP edit.
    #[command(subcommand)]
    Vip(VipCmd),
    /// A backend edit.
    #[command(subcommand)]
    Backend(EditBackend),
}

fn vip_mut<'c>(c: &'c mut Config, name: &str) -> anyhow::Result<&'c mut VipConfig> {
    let names: Vec<String> = c.vips.iter().map(|v| v.name.clone()).collect();
    c.vips
        .iter_mut()
        .find(|v| v.name == name)
        .with_context(|| format!("--vip {name:?}: no such VIP (VIPs: {})", names.join(", ")))
}

fn backend_index(v: &VipConfig, a: IpAddr) -> anyhow::Result<usize> {
    v.backends
        .iter()
        .position(|b| b.address == a)
        .with_context(|| format!("--address {a}: not a backend of VIP {:?}", v.name))
}

/// Fetch, change, send back; print the plan.
fn edit(
    socket: &Path,
    dry_run: bool,
    json: bool,
    change: impl FnOnce(&mut Config) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Response::Config { toml, version } = client::request(socket, &Request::Config)? else {
        bail!("unexpected answer to a config request");
    };
    let mut c = config::parse(&toml, "the running configuration")?.config;
    change(&mut c)?;
    let text = c.to_toml()?;
    let resp = client::request(
        socket,
        &Request::Apply {
            config: text,
            dry_run,
            base_version: Some(version),
        },
    )?;
    let Response::Plan {
        plan,
        applied,
        version,
    } = resp
    else {
        bail!("unexpected answer to an edit")
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"plan": plan, "applied": applied, "version": version})
            )?
        );
    } else {
        print!("{plan}");
        if applied {
            println!("applied (configuration version {version})");
        } else {
            println!("plan only: nothing changed");
        }
    }
    Ok(())
}

/// `value` of option `--FIELD`, spelled as in the configuration file.
fn parse_named<T: Named>(value: &str) -> anyhow::Result<T> {
    T::ALL
        .iter()
        .find(|(n, _)| *n == value)
        .map(|(_, v)| *v)
        .with_context(|| {
            let names: Vec<&str> = T::ALL.iter().map(|(n, _)| *n).collect();
            format!(
                "--{} {value:?}: accepted values are {}",
                T::FIELD.replace('_', "-"),
                names.join(", ")
            )
        })
}

pub fn vip(socket: &Path, cmd: VipCmd, dry_run: bool, json: bool) -> anyhow::Result<()> {
    match cmd {
        VipCmd::List => {
            let Response::Status { status } =
                client::request(socket, &Request::Status { flows: false })?
            else {
                bail!("unexpected answer to a status request");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&status.vips)?);
                return Ok(());
            }
            println!(
                "{:<20} {:<28} {:<5} {:<7} {:>8} {:>12} {:>10}",
                "name", "vip", "mode", "check", "backends", "packets", "new flows"
            );
            for v in &status.vips {
                let up = v
                    .backends
                    .iter()
                    .filter(|b| b.health == crate::health::Health::Up)
                    .count();
                println!(
                    "{:<20} {:<28} {:<5} {:<7} {:>8} {:>12} {:>10}",
                    v.name,
                    v.vip,
                    v.forwarding,
                    v.check,
                    format!("{up}/{}", v.backends.len()),
                    v.packets,
                    v.new_flows
                );
            }
            Ok(())
        }
        VipCmd::Add(a) => edit(socket, dry_run, json, |c| {
            let address: IpAddr = a
                .address
                .parse()
                .with_context(|| format!("--address {:?}: not an IP address", a.address))?;
            let protocol: Protocol = parse_named(&a.protocol)?;
            let forwarding: Forwarding = parse_named(&a.forwarding)?;
            let scheduler: config::Scheduler = parse_named(&a.scheduler)?;
            // Every other key as a config file with only these would get it (health
            // defaults depend on the protocol and port); the daemon validates it again.
            let template = format!(
                "[daemon]\ninterface = \"x\"\n[[vip]]\naddress = \"{address}\"\nport = {}\nprotocol = \"{}\"\nforwarding = \"{}\"\n",
                a.port, a.protocol, a.forwarding
            );
            let mut v = config::parse(&template, "vip add")
                .map(|l| l.config.vips[0].clone())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            v.name = a
                .name
                .clone()
                .unwrap_or_else(|| VipConfig::default_name(address, a.port, protocol));
            v.forwarding = forwarding;
            v.scheduler = scheduler;
            v.table_size = a.table_size;
            v.slow_start_ms = a.slow_start_ms;
            v.drain_timeout_ms = a.drain_timeout_ms;
            v.on_down = parse_named(&a.on_down)?;
            c.vips.push(v);
            Ok(())
        }),
        VipCmd::Remove { name } => edit(socket, dry_run, json, |c| {
            let i = c
                .vips
                .iter()
                .position(|v| v.name == name)
                .with_context(|| format!("no VIP named {name:?}"))?;
            c.vips.remove(i);
            Ok(())
        }),
        VipCmd::Set(s) => edit(socket, dry_run, json, |c| {
            let v = vip_mut(c, &s.name)?;
            if let Some(f) = &s.forwarding {
                v.forwarding = parse_named(f)?;
            }
            if let Some(t) = s.table_size {
                v.table_size = t;
            }
            if let Some(x) = &s.scheduler {
                v.scheduler = parse_named(x)?;
            }
            if let Some(x) = s.slow_start_ms {
                v.slow_start_ms = x;
            }
            if let Some(x) = s.drain_timeout_ms {
                v.drain_timeout_ms = x;
            }
            if let Some(x) = &s.on_down {
                v.on_down = parse_named(x)?;
            }
            Ok(())
        }),
    }
}

pub fn backend(socket: &Path, cmd: EditBackend, dry_run: bool, json: bool) -> anyhow::Result<()> {
    edit(socket, dry_run, json, |c| match cmd {
        EditBackend::Add { at, weight, mac } => {
            let v = vip_mut(c, &at.vip)?;
            let mac = mac
                .as_deref()
                .map(config::parse_mac)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--mac: {e}"))?;
            v.backends.push(BackendConfig {
                address: at.address,
                weight,
                mac,
                state: config::BackendState::Active,
                drain_remove: false,
                health: None,
            });
            Ok(())
        }
        EditBackend::Remove { at } => {
            let v = vip_mut(c, &at.vip)?;
            let i = backend_index(v, at.address)?;
            v.backends.remove(i);
            Ok(())
        }
        EditBackend::SetWeight { at, weight } => {
            let v = vip_mut(c, &at.vip)?;
            let i = backend_index(v, at.address)?;
            v.backends[i].weight = weight;
            Ok(())
        }
        EditBackend::Drain { at, remove } => {
            let v = vip_mut(c, &at.vip)?;
            let i = backend_index(v, at.address)?;
            v.backends[i].state = config::BackendState::Draining;
            v.backends[i].drain_remove = remove;
            Ok(())
        }
        EditBackend::Undrain { at } => {
            let v = vip_mut(c, &at.vip)?;
            let i = backend_index(v, at.address)?;
            if v.backends[i].state != config::BackendState::Draining {
                bail!("--address {}: not draining", at.address);
            }
            v.backends[i].state = config::BackendState::Active;
            v.backends[i].drain_remove = false;
            Ok(())
        }
    })
}

pub fn plan(socket: &Path, cmd: PlanCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        PlanCmd::Vip(VipCmd::List) => bail!("`vip list` changes nothing; there is nothing to plan"),
        PlanCmd::Vip(v) => vip(socket, v, true, json),
        PlanCmd::Backend(b) => backend(socket, b, true, json),
    }
}
