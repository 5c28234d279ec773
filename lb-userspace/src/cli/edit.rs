//! `sluice vip ...`, `sluice backend ...` and `sluice plan ...`: live edits through the
//! daemon's API. Each edit is sent as such (`Request::Edit`, a few hundred bytes); the
//! daemon makes it to its running configuration, validates the result exactly like the
//! config file, computes the plan, and applies it (or, for `plan` / `--dry-run`, only
//! reports it).

use std::{net::IpAddr, path::Path};

use anyhow::bail;
use clap::{Args, Subcommand};

use crate::{
    api::{
        Request, Response, client,
        edit::{self as live, LiveEdit},
    },
    config,
};

/// Said in the help of every live edit: the API changes one daemon.
pub const ONE_BALANCER: &str = "Applies to this balancer only; in a fleet, make the same edit on \
     every balancer or distribute the config file and reload (`sluice fleet check` shows \
     whether they agree).";

#[derive(Debug, Subcommand)]
pub enum VipCmd {
    /// Every VIP: scheduler, backends (up/all), counters and table fingerprint (equal on
    /// balancers that send its new flows to the same backends; see `sluice fleet check`).
    List,
    #[command(flatten)]
    Edit(VipEdit),
}

/// The VIP commands that change something (and so can be planned).
#[derive(Debug, Subcommand)]
pub enum VipEdit {
    /// Add a VIP (no backends yet; add them with `sluice backend add`).
    #[command(after_help = ONE_BALANCER)]
    Add(VipAdd),
    /// Remove a VIP and its backends.
    #[command(after_help = ONE_BALANCER)]
    Remove {
        /// The VIP's name.
        name: String,
    },
    /// Change a VIP's forwarding mode or table size.
    #[command(after_help = ONE_BALANCER)]
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
#[command(group(
    clap::ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["forwarding", "table_size", "scheduler", "slow_start_ms", "drain_timeout_ms"])
))]
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
    #[command(after_help = ONE_BALANCER)]
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
    #[command(after_help = ONE_BALANCER)]
    Remove {
        #[command(flatten)]
        at: BackendRef,
    },
    /// Change a backend's weight (0: no new flows, existing ones stay).
    #[command(after_help = ONE_BALANCER)]
    SetWeight {
        #[command(flatten)]
        at: BackendRef,
        #[arg(long)]
        weight: u32,
    },
    /// Drain a backend: no new flows; its open connections continue until they end (or
    /// the VIP's drain_timeout_ms). `sluice backend list` shows the progress.
    #[command(after_help = ONE_BALANCER)]
    Drain {
        #[command(flatten)]
        at: BackendRef,
        /// Remove the backend from the configuration once drained.
        #[arg(long)]
        remove: bool,
    },
    /// Take a draining (or drained) backend back into service.
    #[command(after_help = ONE_BALANCER)]
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
    Vip(VipEdit),
    /// A backend edit.
    #[command(subcommand)]
    Backend(EditBackend),
    /// What the load policy makes of the backends' current load reports ([vip.load]): per
    /// backend the configured weight, the weight the policy gives it now, saturated or
    /// not and why, the report and its age, what an lc/wlc plan counts, and whether the
    /// policy failed open. Computed by the daemon from its live readings; changes nothing.
    Load {
        /// The VIP's name (default: every VIP with a [vip.load] section).
        vip: Option<String>,
    },
}

/// Send the edit; print the plan.
fn edit(socket: &Path, dry_run: bool, json: bool, edit: LiveEdit) -> anyhow::Result<()> {
    let resp = client::request(
        socket,
        &Request::Edit {
            edit,
            dry_run,
            base_version: None,
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
    // An edit the running configuration already has: no plan, nothing applied.
    let noop = !applied && plan.vips.is_empty();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&if noop {
                serde_json::json!({"plan": "", "applied": false, "changed": false, "version": version})
            } else {
                serde_json::json!({"plan": plan, "applied": applied, "changed": applied, "version": version})
            })?
        );
    } else if noop || (!applied && !dry_run) {
        println!("no change: the running configuration (version {version}) already says so");
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

pub fn vip(socket: &Path, cmd: VipCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        VipCmd::List => list(socket, json),
        VipCmd::Edit(e) => vip_edit(socket, e, false, json),
    }
}

/// `sluice vip list`.
fn list(socket: &Path, json: bool) -> anyhow::Result<()> {
    let Response::Status { status } = client::request(socket, &Request::Status { flows: false })?
    else {
        bail!("unexpected answer to a status request");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status.vips)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<28} {:<5} {:<7} {:<7} {:>8} {:>12} {:>10}  fingerprint",
        "name", "vip", "mode", "sched", "check", "backends", "packets", "new flows"
    );
    for v in &status.vips {
        let up = v
            .backends
            .iter()
            .filter(|b| b.health == crate::health::Health::Up)
            .count();
        println!(
            "{:<20} {:<28} {:<5} {:<7} {:<7} {:>8} {:>12} {:>10}  {}",
            v.name,
            v.vip,
            v.forwarding,
            v.scheduler,
            v.check,
            format!("{up}/{}", v.backends.len()),
            v.packets,
            v.new_flows,
            if v.fingerprint.is_empty() {
                "-"
            } else {
                v.fingerprint.as_str()
            }
        );
    }
    Ok(())
}

fn vip_edit(socket: &Path, cmd: VipEdit, dry_run: bool, json: bool) -> anyhow::Result<()> {
    edit(socket, dry_run, json, vip_live(cmd))
}

/// A VIP command as the API's edit.
fn vip_live(cmd: VipEdit) -> LiveEdit {
    match cmd {
        VipEdit::Add(a) => LiveEdit::VipAdd(live::VipAdd {
            name: a.name,
            address: a.address,
            port: a.port,
            protocol: a.protocol,
            forwarding: a.forwarding,
            table_size: a.table_size,
            scheduler: a.scheduler,
            slow_start_ms: a.slow_start_ms,
            drain_timeout_ms: a.drain_timeout_ms,
            on_down: a.on_down,
        }),
        VipEdit::Remove { name } => LiveEdit::VipRemove { name },
        VipEdit::Set(s) => LiveEdit::VipSet(live::VipSet {
            name: s.name,
            forwarding: s.forwarding,
            table_size: s.table_size,
            scheduler: s.scheduler,
            slow_start_ms: s.slow_start_ms,
            drain_timeout_ms: s.drain_timeout_ms,
            on_down: s.on_down,
        }),
    }
}

/// A backend command as the API's edit.
fn backend_live(cmd: EditBackend) -> LiveEdit {
    match cmd {
        EditBackend::Add { at, weight, mac } => LiveEdit::BackendAdd {
            vip: at.vip,
            address: at.address,
            weight,
            mac,
        },
        EditBackend::Remove { at } => LiveEdit::BackendRemove {
            vip: at.vip,
            address: at.address,
        },
        EditBackend::SetWeight { at, weight } => LiveEdit::SetWeight {
            vip: at.vip,
            address: at.address,
            weight,
        },
        EditBackend::Drain { at, remove } => LiveEdit::Drain {
            vip: at.vip,
            address: at.address,
            remove,
        },
        EditBackend::Undrain { at } => LiveEdit::Undrain {
            vip: at.vip,
            address: at.address,
        },
    }
}

pub fn backend(socket: &Path, cmd: EditBackend, dry_run: bool, json: bool) -> anyhow::Result<()> {
    edit(socket, dry_run, json, backend_live(cmd))
}

pub fn plan(socket: &Path, cmd: PlanCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        PlanCmd::Vip(v) => vip_edit(socket, v, true, json),
        PlanCmd::Backend(b) => backend(socket, b, true, json),
        PlanCmd::Load { vip } => super::load::explain(socket, vip, json),
    }
}
