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
mod locate;
pub mod pins;
mod raw;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Serialize, Serializer};

use self::locate::Locator;

/// Default `daemon.flow_table_size` (flow-table entries).
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = lb_common::DEFAULT_FLOW_ENTRIES;
/// Accepted `daemon.flow_table_size` values.
pub const FLOW_TABLE_SIZE_RANGE: std::ops::RangeInclusive<u32> = 1024..=67_108_864;
/// Default `daemon.table_capacity` (lookup-table slots for all VIPs together).
pub const DEFAULT_TABLE_CAPACITY: u32 = lb_common::DEFAULT_TABLE_SLOTS;
/// Accepted `daemon.table_capacity` values: at least one double-buffered minimal table, at
/// most 2^28 slots (1 GiB of kernel memory).
pub const TABLE_CAPACITY_RANGE: std::ops::RangeInclusive<u32> = 14..=(1 << 28);
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

fn serialize_listen<S: Serializer>(
    v: &Option<std::net::SocketAddr>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(a) => s.serialize_str(&a.to_string()),
        None => s.serialize_str("none"),
    }
}

/// Default `daemon.api_socket`.
pub const DEFAULT_API_SOCKET: &str = "/run/sluice/sluice.sock";
/// Default `daemon.state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/run/sluice";
/// Default `daemon.icmp_too_big_per_sec`.
pub const DEFAULT_ICMP_TOO_BIG_PER_SEC: u32 = 1000;
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

/// `[daemon]`: settings of the data plane as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaemonConfig {
    /// The interface the XDP program attaches to.
    pub interface: String,
    pub xdp_mode: XdpMode,
    /// Capacity of the flow table (entries).
    pub flow_table_size: u32,
    /// Lookup-table slots in the kernel for all VIPs; each VIP takes `2 × table_size`.
    pub table_capacity: u32,
    /// Seed of the flow hash; the same on every LB instance.
    pub hash_seed: u32,
    /// Outer source prefix of IPIP-encapsulated IPv4 packets.
    pub encap_source_v4: Ipv4Prefix,
    /// Outer source prefix of IP6IP6-encapsulated IPv6 packets.
    pub encap_source_v6: Ipv6Prefix,
    /// ICMP too-big messages each CPU may send a second (0: none).
    pub icmp_too_big_per_sec: u32,
    /// Where the daemon keeps its runtime files (status for `sluice backend list`).
    pub state_dir: PathBuf,
    /// The control API's Unix socket (mode 0660, owner root).
    pub api_socket: PathBuf,
    /// Where Prometheus scrapes the metrics (`None`: no metrics endpoint).
    #[serde(serialize_with = "serialize_listen")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// A group whose members may use the API too (root always may).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// Connection tracking: an open TCP connection idle this long is closed.
    pub tcp_idle_timeout_ms: u32,
    /// A TCP connection whose close was seen keeps its backend this long.
    pub tcp_fin_timeout_ms: u32,
    /// A UDP flow idle this long is closed.
    pub udp_idle_timeout_ms: u32,
    /// How often the flow table is walked (idle expiry, exact active counts).
    pub conntrack_sweep_ms: u32,
    /// How often least-connection VIPs' plans are recomputed from the counters.
    pub least_conn_refresh_ms: u32,
    /// Where the balancer's maps and XDP link are pinned in bpffs (`None`: the default,
    /// [`DaemonConfig::pin_dir`], which follows the interface, also when `sluice run
    /// --interface` overrides it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_dir: Option<PathBuf>,
}

impl DaemonConfig {
    /// The pin directory: `daemon.pin_dir`, or `/sys/fs/bpf/sluice/<interface>`.
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_dir
            .clone()
            .unwrap_or_else(|| pins::default_pin_dir(&self.interface))
    }
}

/// `[[vip]]`: one virtual service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VipConfig {
    /// Unique; defaults to `<address>:<port>/<protocol>` (IPv6 in brackets).
    pub name: String,
    pub address: IpAddr,
    /// 0 means every port of this address and protocol.
    pub port: u16,
    pub protocol: Protocol,
    pub forwarding: Forwarding,
    pub scheduler: Scheduler,
    /// A new or recovered backend's weight ramps up linearly over this window (0: off).
    pub slow_start_ms: u32,
    /// A draining backend counts as drained after this long even with connections left
    /// (0: no deadline).
    pub drain_timeout_ms: u32,
    /// What a backend marked down by its health checks does to its existing flows.
    pub on_down: OnDown,
    /// Maglev lookup-table size, a prime.
    pub table_size: u32,
    /// How the daemon checks this VIP's backends.
    pub health: HealthConfig,
    /// The autoscaler's settings, when it manages this VIP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<autoscale::AutoscaleConfig>,
    #[serde(rename = "backend")]
    pub backends: Vec<BackendConfig>,
}

/// `[vip.health]` (and per backend `[vip.backend.health]`): the daemon's health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub check: CheckKind,
    /// Port checked on the backend.
    pub port: u16,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    /// Consecutive successes that bring a down backend back.
    pub rise: u32,
    /// Consecutive failures that take a backend down.
    pub fall: u32,
    /// `http`: the path requested.
    pub path: String,
    /// `http`: accepted status codes, inclusive.
    pub expect_status: (u16, u16),
    /// `udp`: the datagram sent.
    pub send: String,
    /// `udp`: a reply must contain this (any reply when absent).
    pub expect: Option<String>,
}

/// Exported as written: the keys of the other check kinds are left out (they would be
/// rejected on the way back in).
impl Serialize for HealthConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            check: CheckKind,
            #[serde(skip_serializing_if = "Option::is_none")]
            port: Option<u16>,
            interval_ms: u32,
            timeout_ms: u32,
            rise: u32,
            fall: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            path: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            expect_status: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            send: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            expect: Option<&'a str>,
        }
        let http = self.check == CheckKind::Http;
        let udp = self.check == CheckKind::Udp;
        let (lo, hi) = self.expect_status;
        Out {
            check: self.check,
            port: (self.port != 0).then_some(self.port),
            interval_ms: self.interval_ms,
            timeout_ms: self.timeout_ms,
            rise: self.rise,
            fall: self.fall,
            path: http.then_some(self.path.as_str()),
            expect_status: http.then(|| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            }),
            send: udp.then_some(self.send.as_str()),
            expect: if udp { self.expect.as_deref() } else { None },
        }
        .serialize(s)
    }
}

/// The kind of health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connection is accepted.
    Tcp,
    /// An HTTP GET answers with an expected status.
    Http,
    /// A UDP datagram is answered.
    Udp,
    /// No checks: the backend is always up.
    None,
}

/// `[[vip.backend]]`: one real server of a VIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendConfig {
    /// Same family as the VIP.
    pub address: IpAddr,
    /// 0 takes no new flows (quiesced).
    pub weight: u32,
    /// Next-hop MAC for DSR; `None` lets the kernel resolve it (`bpf_fib_lookup`).
    #[serde(
        serialize_with = "serialize_mac",
        skip_serializing_if = "Option::is_none"
    )]
    pub mac: Option<[u8; 6]>,
    /// `active`, or `draining` (no new flows; existing ones continue until they end).
    pub state: BackendState,
    /// Draining: remove the backend from the configuration once drained.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub drain_remove: bool,
    /// This backend's own checks, when it overrides the VIP's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthConfig>,
}

impl VipConfig {
    /// The checks that apply to backend `i`.
    pub fn health_of(&self, i: usize) -> &HealthConfig {
        self.backends
            .get(i)
            .and_then(|b| b.health.as_ref())
            .unwrap_or(&self.health)
    }
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver.
    Native,
    /// In the generic (skb) path; slow, works everywhere.
    Generic,
    /// Native when the driver supports it, else generic.
    Auto,
}

/// The transport protocol of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// How packets reach the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// Direct server return: rewrite the destination MAC, same L2 segment.
    Dsr,
    /// IP-in-IP (IPv4) or IP6-in-IP6 encapsulation.
    Ipip,
}

/// How a backend is chosen for a new flow (see `crate::sched` and the data path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Scheduler {
    /// Maglev consistent hashing of the 5-tuple.
    #[serde(rename = "maglev")]
    Maglev,
    /// Round robin.
    #[serde(rename = "rr")]
    RoundRobin,
    /// Smooth weighted round robin.
    #[serde(rename = "wrr")]
    WeightedRoundRobin,
    /// Fewest active connections.
    #[serde(rename = "lc")]
    LeastConn,
    /// Fewest active connections per unit of weight.
    #[serde(rename = "wlc")]
    WeightedLeastConn,
    /// Consistent hashing of the client address: a client's flows share a backend.
    #[serde(rename = "source-hash")]
    SourceHash,
}

/// A backend's administrative state (`vip.backend.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Takes new flows (subject to health and weight).
    #[default]
    Active,
    /// Takes no new flows; its connections continue until they end (or the VIP's
    /// `drain_timeout_ms`), then it is drained (and removed, with `drain_remove`).
    Draining,
}

/// What a backend marked down does to its existing flows (`vip.on_down`). Either way new
/// flows avoid it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnDown {
    /// It stops serving: its flows move to other backends on their next packet (TCP
    /// connections on it break). For stateless or short requests, and when "down" means
    /// dead: clients reconnect at once instead of waiting for a timeout.
    #[default]
    Reassign,
    /// It stays serving its existing flows (as when draining: out of the table, flows
    /// continue) until they end or time out. For long-lived streams, which a false or
    /// partial "down" (the check fails, the service still works) would otherwise break.
    Keep,
}

/// Accepted spellings, for error messages and parsing (the config file's and the CLI's).
pub trait Named: Sized + Copy + PartialEq + 'static {
    /// The key that holds this value.
    const FIELD: &'static str;
    /// Every accepted spelling and its value.
    const ALL: &'static [(&'static str, Self)];
    /// Names that are planned but not implemented: rejected as "not supported yet" rather
    /// than "unknown".
    const RESERVED: &'static [&'static str];
    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(n, _)| n)
    }
}

macro_rules! named {
    ($t:ty, $field:literal, [$($s:literal => $v:expr),* $(,)?] $(, reserved: $reserved:expr)?) => {
        impl Named for $t {
            const FIELD: &'static str = $field;
            const ALL: &'static [(&'static str, Self)] = &[$(($s, $v)),*];
            const RESERVED: &'static [&'static str] = named!(@reserved $($reserved)?);
        }
        impl $t {
            /// The name used in the configuration file.
            pub fn as_str(self) -> &'static str {
                self.name()
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
    (@reserved $reserved:expr) => { $reserved };
    (@reserved) => { &[] };
}

named!(XdpMode, "xdp_mode", ["native" => XdpMode::Native, "generic" => XdpMode::Generic, "auto" => XdpMode::Auto]);
named!(Protocol, "protocol", ["tcp" => Protocol::Tcp, "udp" => Protocol::Udp]);
named!(Forwarding, "forwarding", ["dsr" => Forwarding::Dsr, "ipip" => Forwarding::Ipip]);
named!(Scheduler, "scheduler", [
    "maglev" => Scheduler::Maglev,
    "rr" => Scheduler::RoundRobin,
    "wrr" => Scheduler::WeightedRoundRobin,
    "lc" => Scheduler::LeastConn,
    "wlc" => Scheduler::WeightedLeastConn,
    "source-hash" => Scheduler::SourceHash,
]);
named!(BackendState, "state", ["active" => BackendState::Active, "draining" => BackendState::Draining]);
named!(OnDown, "on_down", ["reassign" => OnDown::Reassign, "keep" => OnDown::Keep]);
named!(CheckKind, "check", ["tcp" => CheckKind::Tcp, "http" => CheckKind::Http, "udp" => CheckKind::Udp, "none" => CheckKind::None]);

impl Protocol {
    /// The IP protocol number (`lb_common::PROTO_*`).
    pub fn ip_proto(self) -> u8 {
        match self {
            Protocol::Tcp => lb_common::PROTO_TCP,
            Protocol::Udp => lb_common::PROTO_UDP,
        }
    }
}

impl Forwarding {
    /// `VipMeta::mode` (`lb_common::MODE_*`).
    pub fn mode(self) -> u8 {
        match self {
            Forwarding::Dsr => lb_common::MODE_DSR,
            Forwarding::Ipip => lb_common::MODE_IPIP,
        }
    }
}

impl Scheduler {
    /// The data plane's scheduler.
    pub fn sched(self) -> crate::model::Sched {
        use crate::model::Sched;
        match self {
            Scheduler::Maglev => Sched::Maglev,
            Scheduler::RoundRobin => Sched::RoundRobin,
            Scheduler::WeightedRoundRobin => Sched::WeightedRoundRobin,
            Scheduler::LeastConn => Sched::LeastConn,
            Scheduler::WeightedLeastConn => Sched::WeightedLeastConn,
            Scheduler::SourceHash => Sched::SourceHash,
        }
    }
}

impl VipConfig {
    /// The name a VIP gets when the file gives none: `10.0.0.1:80/tcp`, `[2001:db8::1]:443/udp`.
    pub fn default_name(address: IpAddr, port: u16, protocol: Protocol) -> String {
        format!("{}/{protocol}", std::net::SocketAddr::new(address, port))
    }
}

impl Config {
    /// The configuration as TOML (every key explicit), which [`parse`] turns back into an
    /// equal `Config`.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// Lookup-table slots all VIPs need together (each double-buffered).
    pub fn table_slots_needed(&self) -> u64 {
        self.vips.iter().map(|v| 2 * u64::from(v.table_size)).sum()
    }
}

/// An IPv4 prefix with its host bits clear (`172.16.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Prefix {
    addr: Ipv4Addr,
    len: u8,
}

/// An IPv6 prefix with its host bits clear (`fd00:5c::/96`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Prefix {
    addr: Ipv6Addr,
    len: u8,
}

impl Ipv4Prefix {
    /// `addr/len`; `None` when `len > 32` or `addr` has bits set past `len`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        let p = Self { addr, len };
        (len <= 32 && addr.to_bits() & !p.mask_bits() == 0).then_some(p)
    }
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
    /// The netmask (`255.255.0.0` for a /16).
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.mask_bits())
    }
    fn mask_bits(&self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0)
    }
}

impl Ipv6Prefix {
    /// `addr/len`; `None` when `len > 128` or `addr` has bits set past `len`.
    pub fn new(addr: Ipv6Addr, len: u8) -> Option<Self> {
        let p = Self { addr, len };
        (len <= 128 && addr.to_bits() & !p.mask_bits() == 0).then_some(p)
    }
    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }
    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
    /// The netmask (`ffff:ffff::` for a /32).
    pub fn mask(&self) -> Ipv6Addr {
        Ipv6Addr::from_bits(self.mask_bits())
    }
    fn mask_bits(&self) -> u128 {
        u128::MAX
            .checked_shl(128 - u32::from(self.len))
            .unwrap_or(0)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Splits `addr/len` and parses both halves; the message says what is wrong.
fn split_prefix<A: FromStr>(s: &str, family: &str, max: u8) -> Result<(A, u8), String> {
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| format!("\"{s}\" is not a prefix: expected <{family} address>/<length>"))?;
    let addr = a
        .parse::<A>()
        .map_err(|_| format!("\"{s}\": \"{a}\" is not an {family} address"))?;
    let len =
        l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(|| {
            format!("\"{s}\": prefix length \"{l}\" is not a number in 0..={max}")
        })?;
    Ok((addr, len))
}

impl FromStr for Ipv4Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = split_prefix::<Ipv4Addr>(s, "IPv4", 32)?;
        Self::new(addr, len).ok_or_else(|| {
            let canonical = Ipv4Addr::from_bits(addr.to_bits() & Self { addr, len }.mask_bits());
            format!("\"{s}\" has host bits set (did you mean {canonical}/{len}?)")
        })
    }
}

impl FromStr for Ipv6Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = split_prefix::<Ipv6Addr>(s, "IPv6", 128)?;
        Self::new(addr, len).ok_or_else(|| {
            let canonical = Ipv6Addr::from_bits(addr.to_bits() & Self { addr, len }.mask_bits());
            format!("\"{s}\" has host bits set (did you mean {canonical}/{len}?)")
        })
    }
}

impl Serialize for Ipv4Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for Ipv6Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `02:00:00:00:00:01`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Parses a unicast MAC written as six hex pairs separated by ':'; the error says why not.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bad =
        || format!("\"{s}\" is not a MAC address (expected six hex pairs like 02:00:00:00:00:01)");
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if mac == [0xff; 6] {
        Err(format!(
            "{s} is the broadcast MAC address; a backend needs a unicast MAC"
        ))
    } else if mac[0] & 1 != 0 {
        Err(format!(
            "{s} is a multicast MAC address (lowest bit of the first byte set); a backend needs a unicast MAC"
        ))
    } else if mac == [0; 6] {
        Err(format!(
            "{s} is the all-zero MAC address; leave `mac` out to have the kernel resolve it"
        ))
    } else {
        Ok(mac)
    }
}

fn serialize_mac<S: Serializer>(mac: &Option<[u8; 6]>, s: S) -> Result<S::Ok, S::Error> {
    match mac {
        Some(mac) => s.serialize_str(&format_mac(mac)),
        None => s.serialize_none(),
    }
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
    let (config, problems, warnings) = validate::validate(&raw, &locator);
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
