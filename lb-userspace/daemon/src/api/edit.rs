//! Typed live edits (`Request::Edit`): what `sluice vip ...` and `sluice backend ...` ask,
//! carried as such instead of a whole configuration. The daemon makes the edit to a copy
//! of its running configuration, validates the result as a whole with the config file's
//! rules ([`crate::config::validate_model`], no TOML written or parsed), then plans and
//! commits it through the same code as an `Apply`. A refusal names the option the user
//! typed (`--weight 20000: ...`), then the configuration path.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::{
    self, BackendConfig, BackendState, Config, Forwarding, Named, Protocol, Scheduler, VipConfig,
};

/// One live edit, as the command line gives it (strings where the CLI takes names, so
/// that a wrong one is refused with the option's name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "edit", rename_all = "kebab-case")]
pub enum LiveEdit {
    /// `sluice vip add`.
    VipAdd(VipAdd),
    /// `sluice vip remove NAME`.
    VipRemove { name: String },
    /// `sluice vip set NAME`.
    VipSet(VipSet),
    /// `sluice backend add`.
    BackendAdd {
        vip: String,
        address: IpAddr,
        weight: u32,
        mac: Option<String>,
    },
    /// `sluice backend remove`.
    BackendRemove { vip: String, address: IpAddr },
    /// `sluice backend set-weight`.
    SetWeight {
        vip: String,
        address: IpAddr,
        weight: u32,
    },
    /// `sluice backend drain` (`remove`: once drained).
    Drain {
        vip: String,
        address: IpAddr,
        remove: bool,
    },
    /// `sluice backend undrain`.
    Undrain { vip: String, address: IpAddr },
}

/// `sluice vip add`'s options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipAdd {
    pub name: Option<String>,
    pub address: String,
    pub port: u16,
    pub protocol: String,
    pub forwarding: String,
    pub table_size: u32,
    pub scheduler: String,
    pub slow_start_ms: u32,
    pub drain_timeout_ms: u32,
    pub on_down: String,
}

/// `sluice vip set`'s options (each `None`: unchanged).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipSet {
    pub name: String,
    pub forwarding: Option<String>,
    pub table_size: Option<u32>,
    pub scheduler: Option<String>,
    pub slow_start_ms: Option<u32>,
    pub drain_timeout_ms: Option<u32>,
    pub on_down: Option<String>,
}

/// `value` of option `--FIELD`, spelled as in the configuration file.
pub fn parse_named<T: Named>(value: &str) -> Result<T, String> {
    T::ALL
        .iter()
        .find(|(n, _)| *n == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = T::ALL.iter().map(|(n, _)| *n).collect();
            format!(
                "--{} {value:?}: accepted values are {}",
                T::FIELD.replace('_', "-"),
                names.join(", ")
            )
        })
}

fn vip_mut<'c>(c: &'c mut Config, name: &str) -> Result<&'c mut VipConfig, String> {
    match c.vips.iter().position(|v| v.name == name) {
        Some(i) => Ok(&mut c.vips[i]),
        None => Err(no_such_vip(c, name, usize::MAX)),
    }
}

/// The answer to a `--vip NAME` that names no VIP of `c`: the VIPs there are (the first
/// `limit`, then `...`).
pub fn no_such_vip(c: &Config, name: &str, limit: usize) -> String {
    let names: Vec<&str> = c.vips.iter().map(|v| v.name.as_str()).collect();
    let more = if names.len() > limit { ", ..." } else { "" };
    format!(
        "--vip {name:?}: no such VIP (VIPs: {}{more})",
        names[..names.len().min(limit)].join(", ")
    )
}

fn backend_index(v: &VipConfig, a: IpAddr) -> Result<usize, String> {
    v.backends
        .iter()
        .position(|b| b.address == a)
        .ok_or_else(|| format!("--address {a}: not a backend of VIP {:?}", v.name))
}

impl LiveEdit {
    /// The edit made to `c`; a no-op when `c` already says so. An error (an unknown VIP
    /// or backend, a name not accepted, an add that would change an entry) leaves `c` as
    /// it was.
    pub fn apply_to(&self, c: &mut Config) -> Result<(), String> {
        match self {
            Self::VipAdd(a) => vip_add(c, a),
            Self::VipRemove { name } => {
                let i = c
                    .vips
                    .iter()
                    .position(|v| v.name == *name)
                    .ok_or_else(|| format!("no VIP named {name:?}"))?;
                c.vips.remove(i);
                Ok(())
            }
            Self::VipSet(s) => vip_set(c, s),
            Self::BackendAdd {
                vip,
                address,
                weight,
                mac,
            } => {
                let mac = mac
                    .as_deref()
                    .map(config::parse_mac)
                    .transpose()
                    .map_err(|e| format!("--mac: {e}"))?;
                let v = vip_mut(c, vip)?;
                if let Some(b) = v.backends.iter().find(|b| b.address == *address) {
                    // Repeating an add is fine; an add that would change it is a mistake.
                    if b.weight == *weight && (mac.is_none() || b.mac == mac) {
                        return Ok(());
                    }
                    return Err(format!(
                        "--address {address}: already a backend of VIP {vip:?} (weight {}); \
                         change it with `sluice backend set-weight`",
                        b.weight
                    ));
                }
                v.backends.push(BackendConfig {
                    address: *address,
                    weight: *weight,
                    mac,
                    state: BackendState::Active,
                    drain_remove: false,
                    health: None,
                });
                Ok(())
            }
            Self::BackendRemove { vip, address } => {
                let v = vip_mut(c, vip)?;
                let i = backend_index(v, *address)?;
                v.backends.remove(i);
                Ok(())
            }
            Self::SetWeight {
                vip,
                address,
                weight,
            } => {
                let v = vip_mut(c, vip)?;
                let i = backend_index(v, *address)?;
                v.backends[i].weight = *weight;
                Ok(())
            }
            Self::Drain {
                vip,
                address,
                remove,
            } => {
                let v = vip_mut(c, vip)?;
                let i = backend_index(v, *address)?;
                v.backends[i].state = BackendState::Draining;
                v.backends[i].drain_remove = *remove;
                Ok(())
            }
            Self::Undrain { vip, address } => {
                let v = vip_mut(c, vip)?;
                let i = backend_index(v, *address)?;
                // An active backend is already what undrain makes it: nothing changes.
                v.backends[i].state = BackendState::Active;
                v.backends[i].drain_remove = false;
                Ok(())
            }
        }
    }

    /// The options the user typed, by the field each sets (for [`Typed::name_options`]).
    pub fn typed(&self) -> Typed {
        match self {
            Self::VipAdd(a) => {
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
            Self::VipRemove { name } => Typed::new(name, None),
            Self::VipSet(s) => Typed::new(&s.name, None)
                .flag("forwarding", s.forwarding.as_ref())
                .flag("table_size", s.table_size)
                .flag("scheduler", s.scheduler.as_ref())
                .flag("slow_start_ms", s.slow_start_ms)
                .flag("drain_timeout_ms", s.drain_timeout_ms)
                .flag("on_down", s.on_down.as_ref()),
            Self::BackendAdd {
                vip,
                address,
                weight,
                mac,
            } => Typed::new(vip, Some(*address))
                .flag("address", Some(address))
                .flag("weight", Some(weight))
                .flag("mac", mac.as_ref()),
            Self::SetWeight {
                vip,
                address,
                weight,
            } => Typed::new(vip, Some(*address)).flag("weight", Some(weight)),
            Self::BackendRemove { vip, address }
            | Self::Drain { vip, address, .. }
            | Self::Undrain { vip, address } => Typed::new(vip, Some(*address)),
        }
    }
}

fn vip_add(c: &mut Config, a: &VipAdd) -> Result<(), String> {
    let address: IpAddr = a
        .address
        .parse()
        .map_err(|_| format!("--address {:?}: not an IP address", a.address))?;
    let protocol: Protocol = parse_named(&a.protocol)?;
    let forwarding: Forwarding = parse_named(&a.forwarding)?;
    let scheduler: Scheduler = parse_named(&a.scheduler)?;
    // Every other key as a config file with only these would get it (health defaults
    // depend on the protocol and port); the whole configuration is validated after.
    let template = format!(
        "[daemon]\ninterface = \"x\"\n[[vip]]\naddress = \"{address}\"\nport = {}\nprotocol = \"{}\"\nforwarding = \"{}\"\n",
        a.port, a.protocol, a.forwarding
    );
    let mut v = config::parse(&template, "vip add")
        .map(|l| l.config.vips[0].clone())
        .map_err(|e| e.to_string())?;
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
                && x.on_down == v.on_down =>
        {
            Ok(())
        }
        Some(_) => Err(format!(
            "--name {:?}: a VIP of that name exists with other settings (change it with \
             `sluice vip set`, or remove it first)",
            v.name
        )),
        None => {
            c.vips.push(v);
            Ok(())
        }
    }
}

fn vip_set(c: &mut Config, s: &VipSet) -> Result<(), String> {
    // Every name is checked before anything is changed.
    let forwarding = s.forwarding.as_deref().map(parse_named).transpose()?;
    let scheduler = s.scheduler.as_deref().map(parse_named).transpose()?;
    let on_down = s.on_down.as_deref().map(parse_named).transpose()?;
    let v = vip_mut(c, &s.name)?;
    if let Some(f) = forwarding {
        v.forwarding = f;
    }
    if let Some(t) = s.table_size {
        v.table_size = t;
    }
    if let Some(x) = scheduler {
        v.scheduler = x;
    }
    if let Some(x) = s.slow_start_ms {
        v.slow_start_ms = x;
    }
    if let Some(x) = s.drain_timeout_ms {
        v.drain_timeout_ms = x;
    }
    if let Some(x) = on_down {
        v.on_down = x;
    }
    Ok(())
}

/// What the user typed for an edit: the VIP (and backend) it is about, and each option
/// given with the configuration field it sets, so that a refusal (which names
/// configuration paths, `vip[0].backend[1].weight`) can name the option instead.
#[derive(Debug, Default)]
pub struct Typed {
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

    /// A refusal of `c` (the edited configuration) with each problem of a field this edit
    /// set named by its option first: `--weight 20000: 20000 is out of range (0..=10000)
    /// (vip[0].backend[1].weight)`; the other lines as they are.
    pub fn name_options(&self, c: &Config, message: &str) -> String {
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

#[cfg(test)]
mod tests;
