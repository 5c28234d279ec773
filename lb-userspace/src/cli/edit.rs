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

/// What the user typed for an edit: the VIP (and backend) it is about, and each option
/// given with the configuration field it sets, so that the daemon's refusal (which names
/// configuration paths, `vip[0].backend[1].weight`) can name the option instead.
#[derive(Debug, Default)]
struct Typed {
    vip: String,
    backend: Option<IpAddr>,
    /// (field, `--option VALUE`).
    flags: Vec<(&'static str, String)>,
}

impl Typed {
    fn new(vip: &str, backend: Option<IpAddr>) -> Self {
        Self {
            vip: vip.to_owned(),
            backend,
            flags: Vec::new(),
        }
    }

    /// `--option VALUE` sets `field` (when given).
    fn flag(mut self, field: &'static str, value: Option<impl std::fmt::Display>) -> Self {
        if let Some(v) = value {
            self.flags
                .push((field, format!("--{} {v}", field.replace('_', "-"))));
        }
        self
    }

    /// The path of the edited entry in `c` (`vip[0]`, `vip[0].backend[1]`).
    fn path(&self, c: &Config) -> Option<String> {
        let i = c.vips.iter().position(|v| v.name == self.vip)?;
        match self.backend {
            None => Some(format!("vip[{i}]")),
            Some(a) => {
                let j = c.vips[i].backends.iter().position(|b| b.address == a)?;
                Some(format!("vip[{i}].backend[{j}]"))
            }
        }
    }

    /// The daemon's refusal with each problem of a field this edit set named by its
    /// option first: `--weight 20000: 20000 is out of range (0..=10000)
    /// (vip[0].backend[1].weight)`; the other lines as they are.
    fn name_options(&self, c: &Config, message: &str) -> String {
        let Some(at) = self.path(c) else {
            return message.to_owned();
        };
        let lines: Vec<String> = message
            .lines()
            .map(|l| {
                let Some((path, problem)) = l.split_once(": ") else {
                    return l.to_owned();
                };
                let field = path.strip_prefix(&at).and_then(|f| f.strip_prefix('.'));
                match self.flags.iter().find(|(f, _)| Some(*f) == field) {
                    Some((_, typed)) => format!("{typed}: {problem} ({path})"),
                    None => l.to_owned(),
                }
            })
            .collect();
        lines.join("\n")
    }
}

/// Fetch, change, send back; print the plan.
fn edit(
    socket: &Path,
    dry_run: bool,
    json: bool,
    typed: &Typed,
    change: impl FnOnce(&mut Config) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Response::Config { toml, version } = client::request(socket, &Request::Config)? else {
        bail!("unexpected answer to a config request");
    };
    let running = config::parse(&toml, "the running configuration")?.config;
    let mut c = running.clone();
    change(&mut c)?;
    if c == running {
        // Already so: repeating an edit succeeds and changes nothing (not even the version).
        if json {
            println!(
                "{}",
                serde_json::json!({"plan": "", "applied": false, "changed": false, "version": version})
            );
        } else {
            println!("no change: the running configuration (version {version}) already says so");
        }
        return Ok(());
    }
    let text = c.to_toml()?;
    let resp = client::request(
        socket,
        &Request::Apply {
            config: text,
            dry_run,
            base_version: Some(version),
            force: false,
        },
    )
    .map_err(|e| match e {
        client::ClientError::Daemon(m) => anyhow::anyhow!("{}", typed.name_options(&c, &m)),
        e => e.into(),
    })?;
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
                &serde_json::json!({"plan": plan, "applied": applied, "changed": applied, "version": version})
            )?
        );
    } else {
        print!("{plan}");
        if applied {
            println!("applied (configuration version {version})");
        } else if !dry_run {
            // The daemon found nothing to change (the configuration changed to this
            // meanwhile).
            println!("no change: the running configuration (version {version}) already says so");
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
    let typed = vip_typed(&cmd);
    edit(socket, dry_run, json, &typed, |c| change_vip(c, cmd))
}

/// The options of a VIP edit, by the field each sets.
fn vip_typed(cmd: &VipEdit) -> Typed {
    match cmd {
        VipEdit::Add(a) => {
            let name = a.name.clone().unwrap_or_else(|| {
                match (a.address.parse(), parse_named::<Protocol>(&a.protocol)) {
                    (Ok(ip), Ok(p)) => VipConfig::default_name(ip, a.port, p),
                    _ => String::new(),
                }
            });
            Typed::new(&name, None)
                .flag("name", a.name.as_ref())
                .flag("address", Some(&a.address))
                .flag("port", Some(a.port))
                .flag("protocol", Some(&a.protocol))
                .flag("forwarding", Some(&a.forwarding))
                .flag("table_size", Some(a.table_size))
                .flag("scheduler", Some(&a.scheduler))
                .flag("slow_start_ms", Some(a.slow_start_ms))
                .flag("drain_timeout_ms", Some(a.drain_timeout_ms))
                .flag("on_down", Some(&a.on_down))
        }
        VipEdit::Remove { name } => Typed::new(name, None),
        VipEdit::Set(s) => Typed::new(&s.name, None)
            .flag("forwarding", s.forwarding.as_ref())
            .flag("table_size", s.table_size)
            .flag("scheduler", s.scheduler.as_ref())
            .flag("slow_start_ms", s.slow_start_ms)
            .flag("drain_timeout_ms", s.drain_timeout_ms)
            .flag("on_down", s.on_down.as_ref()),
    }
}

/// The options of a backend edit, by the field each sets.
fn backend_typed(cmd: &EditBackend) -> Typed {
    let at = |r: &BackendRef| Typed::new(&r.vip, Some(r.address));
    match cmd {
        EditBackend::Add { at: r, weight, mac } => at(r)
            .flag("address", Some(r.address))
            .flag("weight", Some(weight))
            .flag("mac", mac.as_ref()),
        EditBackend::SetWeight { at: r, weight } => at(r).flag("weight", Some(weight)),
        EditBackend::Remove { at: r }
        | EditBackend::Drain { at: r, .. }
        | EditBackend::Undrain { at: r } => at(r),
    }
}

/// `cmd` made to `c`; a no-op when `c` already says so.
fn change_vip(c: &mut Config, cmd: VipEdit) -> anyhow::Result<()> {
    match cmd {
        VipEdit::Add(a) => {
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
            match c.vips.iter().find(|x| x.name == v.name) {
                // Added before, exactly so: nothing to do.
                Some(x)
                    if x.address == v.address
                        && x.port == v.port
                        && x.protocol == v.protocol
                        && x.forwarding == v.forwarding
                        && x.scheduler == v.scheduler
                        && x.table_size == v.table_size
                        && x.slow_start_ms == v.slow_start_ms
                        && x.drain_timeout_ms == v.drain_timeout_ms
                        && x.on_down == v.on_down => {}
                Some(_) => bail!(
                    "--name {:?}: a VIP of that name exists with other settings (change it with \
                     `sluice vip set`, or remove it first)",
                    v.name
                ),
                None => c.vips.push(v),
            }
            Ok(())
        }
        VipEdit::Remove { name } => {
            let i = c
                .vips
                .iter()
                .position(|v| v.name == name)
                .with_context(|| format!("no VIP named {name:?}"))?;
            c.vips.remove(i);
            Ok(())
        }
        VipEdit::Set(s) => {
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
        }
    }
}

pub fn backend(socket: &Path, cmd: EditBackend, dry_run: bool, json: bool) -> anyhow::Result<()> {
    let typed = backend_typed(&cmd);
    edit(socket, dry_run, json, &typed, |c| change_backend(c, cmd))
}

/// `cmd` made to `c`; a no-op when `c` already says so.
fn change_backend(c: &mut Config, cmd: EditBackend) -> anyhow::Result<()> {
    match cmd {
        EditBackend::Add { at, weight, mac } => {
            let v = vip_mut(c, &at.vip)?;
            let mac = mac
                .as_deref()
                .map(config::parse_mac)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--mac: {e}"))?;
            if let Some(b) = v.backends.iter().find(|b| b.address == at.address) {
                // Repeating an add is fine; an add that would change it is a mistake.
                if b.weight == weight && (mac.is_none() || b.mac == mac) {
                    return Ok(());
                }
                bail!(
                    "--address {}: already a backend of VIP {:?} (weight {}); change it with \
                     `sluice backend set-weight`",
                    at.address,
                    at.vip,
                    b.weight
                );
            }
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
            // An active backend is already what undrain makes it: nothing changes.
            v.backends[i].state = config::BackendState::Active;
            v.backends[i].drain_remove = false;
            Ok(())
        }
    }
}

pub fn plan(socket: &Path, cmd: PlanCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        PlanCmd::Vip(v) => vip_edit(socket, v, true, json),
        PlanCmd::Backend(b) => backend(socket, b, true, json),
        PlanCmd::Load { vip } => super::load::explain(socket, vip, json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> Config {
        config::parse(
            "[daemon]\ninterface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"10.0.0.10\"\n\
             port = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n\
             [[vip.backend]]\naddress = \"10.0.1.1\"\nweight = 2\n\
             [[vip.backend]]\naddress = \"10.0.1.2\"\nstate = \"draining\"\n",
            "test",
        )
        .expect("valid")
        .config
    }

    fn at(a: &str) -> BackendRef {
        BackendRef {
            vip: "web".to_owned(),
            address: a.parse().expect("address"),
        }
    }

    /// Every edit, made twice: the second succeeds and changes nothing.
    #[test]
    fn repeated_edits_are_noops() {
        let edits = || {
            vec![
                EditBackend::Undrain { at: at("10.0.1.1") },
                EditBackend::Undrain { at: at("10.0.1.2") },
                EditBackend::Drain {
                    at: at("10.0.1.2"),
                    remove: false,
                },
                EditBackend::SetWeight {
                    at: at("10.0.1.1"),
                    weight: 2,
                },
                EditBackend::Add {
                    at: at("10.0.1.1"),
                    weight: 2,
                    mac: None,
                },
                EditBackend::Add {
                    at: at("10.0.1.3"),
                    weight: 1,
                    mac: None,
                },
            ]
        };
        for (first, again) in edits().into_iter().zip(edits()) {
            let what = format!("{first:?}");
            let mut c = running();
            change_backend(&mut c, first).unwrap_or_else(|e| panic!("{what}: {e}"));
            let once = c.clone();
            change_backend(&mut c, again).unwrap_or_else(|e| panic!("{what} again: {e}"));
            assert_eq!(c, once, "{what} again changed the configuration");
        }
        // Undrain of an active backend is already done: no error, no change.
        let mut c = running();
        change_backend(&mut c, EditBackend::Undrain { at: at("10.0.1.1") }).expect("undrain");
        assert_eq!(c, running());
    }

    #[test]
    fn conflicting_add_is_refused() {
        let mut c = running();
        let e = change_backend(
            &mut c,
            EditBackend::Add {
                at: at("10.0.1.1"),
                weight: 5,
                mac: None,
            },
        )
        .expect_err("an add that would change the weight");
        assert!(e.to_string().contains("set-weight"), "{e}");
        assert_eq!(c, running());
    }

    /// The daemon's refusal of a live edit, as its API answers it.
    fn refusal(c: &Config) -> String {
        crate::api::server::parse_apply(&c.to_toml().expect("TOML")).expect_err("refused")
    }

    /// A refused edit names the option the user typed, then the configuration path.
    #[test]
    fn refusals_name_the_option_typed() {
        let cmd = EditBackend::SetWeight {
            at: at("10.0.1.2"),
            weight: 20_000,
        };
        let typed = backend_typed(&cmd);
        let mut c = running();
        change_backend(&mut c, cmd).expect("the CLI makes the change");
        let said = typed.name_options(&c, &refusal(&c));
        assert!(said.starts_with(crate::api::server::REJECTED), "{said}");
        assert!(
            said.contains(
                "\n--weight 20000: 20000 is out of range (0..=10000) (vip[0].backend[1].weight)"
            ),
            "{said}"
        );
        // A VIP option.
        let cmd = VipEdit::Set(VipSet {
            name: "web".to_owned(),
            forwarding: None,
            table_size: Some(1000),
            scheduler: None,
            slow_start_ms: None,
            drain_timeout_ms: None,
            on_down: None,
        });
        let typed = vip_typed(&cmd);
        let mut c = running();
        change_vip(&mut c, cmd).expect("the CLI makes the change");
        let said = typed.name_options(&c, &refusal(&c));
        assert!(said.contains("\n--table-size 1000: "), "{said}");
        assert!(said.ends_with("(vip[0].table_size)"), "{said}");
        // A problem elsewhere keeps its path only.
        let other = "rejected, nothing changed:\nvip[0].backend[0].weight: out of range";
        assert_eq!(typed.name_options(&c, other), other);
    }

    #[test]
    fn repeated_vip_add_is_a_noop() {
        let add = || {
            VipEdit::Add(VipAdd {
                name: Some("api".to_owned()),
                address: "10.0.0.11".to_owned(),
                port: 443,
                protocol: "tcp".to_owned(),
                forwarding: "ipip".to_owned(),
                table_size: config::DEFAULT_TABLE_SIZE,
                scheduler: "maglev".to_owned(),
                slow_start_ms: 0,
                drain_timeout_ms: config::DEFAULT_DRAIN_TIMEOUT_MS,
                on_down: "reassign".to_owned(),
            })
        };
        let mut c = running();
        change_vip(&mut c, add()).expect("add");
        let once = c.clone();
        change_vip(&mut c, add()).expect("add again");
        assert_eq!(c, once);
    }
}
