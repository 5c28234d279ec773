//! `[[vip]]`, `[vip.health]` and `[[vip.backend]]`: the virtual services, their health
//! checks and their backends, with the enums their keys take.

use std::net::IpAddr;

use serde::{Serialize, Serializer};

use super::autoscale;
use crate::load::presets::{Preset, Selector, Selectors};

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
    /// Where the backends' load reports are read (inference-aware balancing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadConfig>,
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

/// `[vip.load]`: how the daemon reads each backend's load report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadConfig {
    pub source: LoadSource,
    /// The backend's port serving the report.
    pub port: u16,
    /// `prometheus`: the page requested.
    pub path: String,
    pub interval_ms: u32,
    /// A read taking longer fails.
    pub timeout_ms: u32,
    /// A report older than this is stale (the load policy counts a stale report as
    /// saturated).
    pub stale_after_ms: u32,
    /// `prometheus`: the server whose metric names are used.
    pub preset: Option<Preset>,
    /// `prometheus`: explicit selectors, overriding the preset's.
    pub waiting: Option<Selector>,
    pub running: Option<Selector>,
    pub kv_cache: Option<Selector>,
    /// The load policy: a backend with more waiting requests than this is saturated (no new
    /// flows while another backend is not).
    pub queue_limit: u32,
    /// The load policy: a backend whose KV-cache use exceeds this percentage is saturated.
    pub kv_limit_percent: u32,
    /// `lc`/`wlc`: what counts as a backend's load in the least-connection plan.
    pub in_flight: InFlight,
}

impl LoadConfig {
    /// The selectors to read: the explicit ones, else the preset's.
    pub fn selectors(&self) -> Selectors {
        let mut s = self.preset.map(Preset::selectors).unwrap_or_default();
        for (explicit, list) in [
            (&self.waiting, &mut s.waiting),
            (&self.running, &mut s.running),
            (&self.kv_cache, &mut s.kv_cache),
        ] {
            if let Some(sel) = explicit {
                *list = vec![sel.clone()];
            }
        }
        s
    }
}

/// Exported as written: the prometheus keys only for that source, selectors as strings.
impl Serialize for LoadConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            source: LoadSource,
            port: u16,
            #[serde(skip_serializing_if = "Option::is_none")]
            path: Option<&'a str>,
            interval_ms: u32,
            timeout_ms: u32,
            stale_after_ms: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            preset: Option<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            waiting: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            running: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            kv_cache: Option<String>,
            queue_limit: u32,
            kv_limit_percent: u32,
            in_flight: InFlight,
        }
        let prom = self.source == LoadSource::Prometheus;
        Out {
            source: self.source,
            port: self.port,
            path: prom.then_some(self.path.as_str()),
            interval_ms: self.interval_ms,
            timeout_ms: self.timeout_ms,
            stale_after_ms: self.stale_after_ms,
            preset: self.preset.map(super::Named::name),
            waiting: self.waiting.as_ref().map(ToString::to_string),
            running: self.running.as_ref().map(ToString::to_string),
            kv_cache: self.kv_cache.as_ref().map(ToString::to_string),
            queue_limit: self.queue_limit,
            kv_limit_percent: self.kv_limit_percent,
            in_flight: self.in_flight,
        }
        .serialize(s)
    }
}

/// Where load reports come from (`vip.load.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadSource {
    /// `GET path` on the backend: the Prometheus text format (vLLM, TGI, SGLang, Triton).
    Prometheus,
    /// An HAProxy agent-check: connect, read one line.
    Agent,
}

/// What a `lc`/`wlc` plan counts as a backend's load (`vip.load.in_flight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InFlight {
    /// The requests in flight the backend reports (`running + waiting`) when its report is
    /// fresh and has them; its connection count otherwise.
    #[default]
    Reported,
    /// Always its connection count (the kernel's connection tracking).
    Connections,
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
