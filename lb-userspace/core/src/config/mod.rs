//! The daemon's configuration: the TOML schema, its validation, and the typed result.
//!
//! Loading goes in three steps, each with errors that point at the file, line and field:
//!
//! 1. TOML syntax (the `toml` parser; stops at the first error);
//! 2. shape: unknown keys (serde `deny_unknown_fields`) and wrong value types (stops at the
//!    first error too: serde cannot go on past one);
//! 3. semantics ([`validate`]): addresses, MACs, prefixes, ranges, duplicates, families and
//!    the kernel's capacity limits from `lb_common`. Every problem is collected, and
//!    non-fatal findings go to [`Loaded::warnings`].
//!
//! The typed [`Config`] serialises back to TOML ([`Config::to_toml`]) that loads to an equal
//! `Config`, for `config export`.
//!
//! Errors render as `origin:line: path: message`, one problem a line, e.g.
//! `config/x.toml:14: vip[0].backend[2].weight: 70000 is out of range (0..=10000)`.

pub mod autoscale;
mod cron;
mod daemon;
mod locate;
mod named;
pub mod pins;
mod prefix;
mod raw;
mod validate;
mod vip;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use self::daemon::{AnnounceConfig, DaemonConfig, XdpMode};
use self::locate::Locator;
pub use self::named::Named;
pub use self::prefix::{Ipv4Prefix, Ipv6Prefix};
pub use self::vip::{
    BackendConfig, BackendState, CheckKind, Forwarding, HealthConfig, InFlight, LoadConfig,
    LoadSource, OnDown, Protocol, Scheduler, VipConfig, format_mac, parse_mac,
};

/// Default `daemon.flow_table_size` (flow-table entries).
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = lb_common::DEFAULT_FLOW_ENTRIES;
/// Accepted `daemon.flow_table_size` values.
pub const FLOW_TABLE_SIZE_RANGE: std::ops::RangeInclusive<u32> = 1024..=67_108_864;
/// Default `daemon.table_capacity` (lookup-table slots for all VIPs together).
pub const DEFAULT_TABLE_CAPACITY: u32 = lb_common::DEFAULT_TABLE_SLOTS;
/// Accepted `daemon.table_capacity` values: at least one double-buffered minimal table, at
/// most 2^28 slots (1 GiB of kernel memory).
pub const TABLE_CAPACITY_RANGE: std::ops::RangeInclusive<u32> = 14..=(1 << 28);
/// Default `daemon.vip_capacity` (VIP ids).
pub const DEFAULT_VIP_CAPACITY: u32 = lb_common::DEFAULT_VIP_CAPACITY;
/// Accepted `daemon.vip_capacity` values.
pub const VIP_CAPACITY_RANGE: std::ops::RangeInclusive<u32> = 1..=(1 << 20);
/// Default `daemon.backend_capacity` (backend slots, slot 0 reserved).
pub const DEFAULT_BACKEND_CAPACITY: u32 = lb_common::DEFAULT_BACKEND_CAPACITY;
/// Accepted `daemon.backend_capacity` values: at least one backend, at most 2^24 slots
/// (the per-backend maps then take about 0.5 GiB + 0.5 GiB per 16 CPUs of kernel memory).
pub const BACKEND_CAPACITY_RANGE: std::ops::RangeInclusive<u32> = 2..=(1 << 24);
/// Default `vip.table_size`.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;
/// Accepted `vip.table_size` values (they must also be prime).
pub const TABLE_SIZE_RANGE: std::ops::RangeInclusive<u32> = 7..=16_777_213;
/// Default `vip.backend.weight`.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Connection-tracking timeouts (IPVS's defaults), in milliseconds, and their range.
pub const DEFAULT_TCP_IDLE_TIMEOUT_MS: u32 = 900_000;
pub const DEFAULT_TCP_FIN_TIMEOUT_MS: u32 = 120_000;
pub const DEFAULT_UDP_IDLE_TIMEOUT_MS: u32 = 300_000;
pub const TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 1_000..=86_400_000;
/// Default and range of `daemon.conntrack_sweep_ms`.
pub const DEFAULT_CONNTRACK_SWEEP_MS: u32 = 2_000;
pub const CONNTRACK_SWEEP_RANGE: std::ops::RangeInclusive<u32> = 100..=60_000;
/// Default and range of `daemon.least_conn_refresh_ms`.
pub const DEFAULT_LEAST_CONN_REFRESH_MS: u32 = 100;
pub const LEAST_CONN_REFRESH_RANGE: std::ops::RangeInclusive<u32> = 10..=10_000;
/// Range of `vip.slow_start_ms` (0: off).
pub const SLOW_START_RANGE: std::ops::RangeInclusive<u32> = 0..=3_600_000;
/// Default and range of `vip.drain_timeout_ms` (0: no deadline).
pub const DEFAULT_DRAIN_TIMEOUT_MS: u32 = 300_000;
pub const DRAIN_TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 0..=86_400_000;
/// `[vip.load]` defaults and ranges: a read every 250 ms (a model server's queue changes
/// within a second), at least every 50 ms; stale after 3 intervals by default.
pub const DEFAULT_LOAD_INTERVAL_MS: u32 = 250;
/// Default `vip.load.queue_limit`: the endpoint picker's default queue threshold.
pub const DEFAULT_LOAD_QUEUE_LIMIT: u32 = 5;
/// Default `vip.load.kv_limit_percent`: the endpoint picker's default KV-cache threshold.
pub const DEFAULT_LOAD_KV_LIMIT_PERCENT: u32 = 80;
pub const LOAD_INTERVAL_RANGE: std::ops::RangeInclusive<u32> = 50..=60_000;
pub const LOAD_STALE_RANGE: std::ops::RangeInclusive<u32> = 50..=3_600_000;
/// `[vip.load]` `port` of a `prometheus` source without a preset (vLLM's API port).
pub const DEFAULT_LOAD_PORT: u16 = 8000;
pub const DEFAULT_LOAD_PATH: &str = "/metrics";
/// Health-check defaults and ranges (`[vip.health]`). The interval and timeout follow GitHub
/// GLB's defaults halved: a dead backend is out within `fall × interval` ≈ 6 s.
pub const DEFAULT_HEALTH_INTERVAL_MS: u32 = 2000;
pub const HEALTH_INTERVAL_RANGE: std::ops::RangeInclusive<u32> = 100..=3_600_000;
pub const DEFAULT_HEALTH_TIMEOUT_MS: u32 = 1000;
pub const HEALTH_TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 10..=3_600_000;
pub const DEFAULT_HEALTH_RISE: u32 = 2;
pub const DEFAULT_HEALTH_FALL: u32 = 3;
pub const HEALTH_COUNT_RANGE: std::ops::RangeInclusive<u32> = 1..=100;
pub const DEFAULT_HEALTH_PATH: &str = "/";
pub const DEFAULT_HEALTH_SEND: &str = "sluice-health";
/// Accepted `vip.backend.weight` values; 0 quiesces the backend.
pub const WEIGHT_RANGE: std::ops::RangeInclusive<u32> = 0..=10_000;
/// `table_size` below `MIN_SLOTS_PER_BACKEND × backends` is an error.
pub const MIN_SLOTS_PER_BACKEND: u32 = 10;
/// `table_size` below `GOOD_SLOTS_PER_BACKEND × backends` is a warning (Maglev keeps the
/// imbalance under 1% from 100 slots per backend).
pub const GOOD_SLOTS_PER_BACKEND: u32 = 100;
/// Default `daemon.encap_source_v4`.
pub const DEFAULT_ENCAP_SOURCE_V4: &str = "172.16.0.0/16";
/// Default `daemon.metrics_listen`: loopback only.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9640";

/// Default `daemon.announce.table`: a table of sluice's own, not one the kernel uses.
pub const DEFAULT_ANNOUNCE_TABLE: u32 = 100;
/// The kernel's own routing tables (`local`, `main`, `default`), refused for
/// `daemon.announce.table`; 0 (`unspec`) is out of range.
pub const RESERVED_ROUTE_TABLES: [u32; 3] = [255, 254, 253];
/// Default `daemon.announce.protocol`: a route protocol number no well-known daemon uses
/// (see /etc/iproute2/rt_protos).
pub const DEFAULT_ANNOUNCE_PROTOCOL: u8 = 99;
/// `daemon.announce.protocol` values the kernel itself uses (unspec, redirect, kernel,
/// boot, static), refused: a route of ours must not look like one of these.
pub const RESERVED_ROUTE_PROTOCOLS: std::ops::RangeInclusive<u8> = 0..=4;
/// Default `daemon.announce.interface`.
pub const DEFAULT_ANNOUNCE_INTERFACE: &str = "lo";

/// Default `daemon.api_socket`.
pub const DEFAULT_API_SOCKET: &str = "/run/sluice/sluice.sock";
/// Default `daemon.state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/run/sluice";
/// Default `daemon.icmp_too_big_per_sec`.
pub const DEFAULT_ICMP_TOO_BIG_PER_SEC: u32 = 1000;
/// Default `daemon.new_flow_limit_per_cpu`: a flood of new flows on every CPU refills the
/// default flow table (1,048,576 entries) in no less than about 5 s on 2 CPUs.
pub const DEFAULT_NEW_FLOW_LIMIT_PER_CPU: u32 = 100_000;
/// Default `daemon.encap_source_v6`.
pub const DEFAULT_ENCAP_SOURCE_V6: &str = "fd00:5c::/96";
/// Accepted prefix lengths of `daemon.encap_source_v4`.
pub const ENCAP_V4_PREFIX_RANGE: std::ops::RangeInclusive<u8> = 8..=32;
/// Longest prefix of `daemon.encap_source_v6`: the last 32 bits carry the flow hash.
pub const ENCAP_V6_MAX_PREFIX: u8 = 96;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub daemon: DaemonConfig,
    #[serde(rename = "vip")]
    pub vips: Vec<VipConfig>,
}

impl Config {
    /// The configuration as TOML (every key explicit), which [`parse`] turns back into an
    /// equal `Config`.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// Lookup-table slots all VIPs need together (each double-buffered; a sequence
    /// scheduler's fallback Maglev table too, see [`crate::model::Sched::table_slots`]).
    pub fn table_slots_needed(&self) -> u64 {
        self.vips
            .iter()
            .map(|v| v.scheduler.sched().table_slots(v.table_size))
            .sum()
    }
}

/// [`Config::to_toml`] in parts: the `[daemon]` table (this), then each VIP's `[[vip]]`
/// ([`vip_toml`]), which concatenated are that text when there is at least one VIP.
pub fn daemon_toml(daemon: &DaemonConfig) -> Result<String, toml::ser::Error> {
    #[derive(Serialize)]
    struct DaemonOnly<'a> {
        daemon: &'a DaemonConfig,
    }
    toml::to_string(&DaemonOnly { daemon })
}

/// One VIP's part of [`Config::to_toml`] (see [`daemon_toml`]).
pub fn vip_toml(v: &VipConfig) -> Result<String, toml::ser::Error> {
    #[derive(Serialize)]
    struct VipOnly<'a> {
        vip: &'a [VipConfig],
    }
    // Tables are separated by a blank line in the whole text.
    toml::to_string(&VipOnly {
        vip: std::slice::from_ref(v),
    })
    .map(|t| format!("\n{t}"))
}

/// A configuration that passed validation, with its non-fatal findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub config: Config,
    /// `origin:line: path: message` lines, for `config check` to print; not errors.
    pub warnings: Vec<String>,
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// Field path like `vip[1].backend[0].weight`; empty for the file as a whole.
    pub path: String,
    pub message: String,
}

impl Problem {
    /// `origin:line: path: message` (the parts that are known).
    pub fn render(&self, origin: &str) -> String {
        self.render_at(origin, None)
    }

    fn render_at(&self, origin: &str, column: Option<usize>) -> String {
        let mut out = origin.to_owned();
        if let Some(line) = self.line {
            out.push_str(&format!(":{line}"));
            if let Some(column) = column {
                out.push_str(&format!(":{column}"));
            }
        }
        out.push_str(": ");
        if !self.path.is_empty() {
            out.push_str(&self.path);
            out.push_str(": ");
        }
        out.push_str(&self.message);
        out
    }
}

/// Why a configuration was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type (only the first is
    /// reported: parsing cannot go on past it).
    #[error("{}", problem.render_at(origin, *column))]
    Parse {
        origin: String,
        problem: Problem,
        /// 1-based column, for syntax errors.
        column: Option<usize>,
    },
    /// Well-formed, but wrong: every problem found.
    #[error("{}", render_all(origin, problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

fn render_all(origin: &str, problems: &[Problem]) -> String {
    let n = problems.len();
    let mut out = format!(
        "{origin}: {n} error{} in the configuration:",
        if n == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push('\n');
        out.push_str(&p.render(origin));
    }
    out
}

impl ConfigError {
    /// Every problem, whatever the kind of error (an I/O error gives one without a line).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Io { source, .. } => {
                vec![Problem {
                    line: None,
                    path: String::new(),
                    message: format!("cannot read: {source}"),
                }]
            }
            ConfigError::Parse { problem, .. } => vec![problem.clone()],
            ConfigError::Invalid { problems, .. } => problems.clone(),
        }
    }
}

/// The line of the field `path` (`daemon.api_group`) in configuration text, or of its
/// nearest enclosing table present (a defaulted key: its table's header); `None` if
/// neither is in the text.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    Locator::new(text).ok()?.line(path)
}

/// Reads, parses and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Validates a configuration model with exactly the rules of the config file, without
/// its text: the model goes through its serialised form (the keys [`Config::to_toml`]
/// writes) straight into the checks, with no TOML text written or parsed (a live edit of
/// 4096 VIPs × 64 backends spent about 2 s doing that). Problems name field paths
/// (`vip[0].backend[1].weight`) but no lines: there is no file.
pub fn validate_model(config: &Config, origin: &str) -> Result<Loaded, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        origin: origin.to_owned(),
        problems: vec![Problem {
            line: None,
            path: String::new(),
            message,
        }],
    };
    let value = toml::Table::try_from(config)
        .map_err(|e| invalid(format!("exporting the configuration: {e}")))?;
    let raw = <raw::RawFile as serde::Deserialize>::deserialize(value)
        .map_err(|e| invalid(format!("the configuration's shape: {e}")))?;
    validated(&raw, &Locator::empty(), origin)
}

/// The raw file through every rule: the configuration, or every problem found.
fn validated(raw: &raw::RawFile, locator: &Locator, origin: &str) -> Result<Loaded, ConfigError> {
    let (config, problems, warnings) = validate::validate(raw, locator);
    match config {
        Some(config) if problems.is_empty() => Ok(Loaded {
            config,
            warnings: warnings.iter().map(|w| w.render(origin)).collect(),
        }),
        _ => Err(ConfigError::Invalid {
            origin: origin.to_owned(),
            problems,
        }),
    }
}

/// `a` and `b` without the VIPs that are the same in both: the same `key` (a name, an
/// address) and the same settings. What an edit changed, as if nothing else were
/// configured.
pub fn without_same_vips<K: Eq + std::hash::Hash>(
    a: &Config,
    b: &Config,
    key: impl Fn(&VipConfig) -> K,
) -> (Config, Config) {
    let index = |c: &Config| -> std::collections::HashMap<K, usize> {
        c.vips
            .iter()
            .enumerate()
            .map(|(i, v)| (key(v), i))
            .collect()
    };
    let (in_a, in_b) = (index(a), index(b));
    let keep =
        |c: &Config, other: &Config, in_other: &std::collections::HashMap<K, usize>| Config {
            daemon: c.daemon.clone(),
            vips: c
                .vips
                .iter()
                .filter(|v| !in_other.get(&key(v)).is_some_and(|i| other.vips[*i] == **v))
                .cloned()
                .collect(),
        };
    (keep(a, b, &in_b), keep(b, a, &in_a))
}

/// Parses and validates configuration text; `origin` names it in messages (a file name).
pub fn parse(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
    let parse_error = |problem: Problem, column: Option<usize>| ConfigError::Parse {
        origin: origin.to_owned(),
        problem,
        column,
    };
    let locator = match Locator::new(text) {
        Ok(locator) => locator,
        Err(e) => {
            let (line, column) = match e.span() {
                Some(span) => {
                    let (l, c) = locate::line_col(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            let message = format!("invalid TOML: {}", e.message().trim_end());
            return Err(parse_error(
                Problem {
                    line,
                    path: String::new(),
                    message,
                },
                column,
            ));
        }
    };
    let raw: raw::RawFile =
        toml::from_str(text).map_err(|e| parse_error(locator.describe_serde_error(&e), None))?;
    validated(&raw, &locator, origin)
}
