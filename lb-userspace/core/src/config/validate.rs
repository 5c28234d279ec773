//! Semantic validation: from the file's shape (`raw`) to a typed [`Config`], collecting
//! every problem rather than stopping at the first.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt::Display;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use super::locate::Locator;
use super::raw::{RawBackend, RawDaemon, RawFile, RawHealth, RawVip};
use super::{
    BackendConfig, BackendState, CheckKind, Config, DaemonConfig, Forwarding, HealthConfig,
    Ipv4Prefix, Ipv6Prefix, Named, OnDown, Problem, Protocol, Scheduler, VipConfig, XdpMode,
};
use super::{
    CONNTRACK_SWEEP_RANGE, DEFAULT_CONNTRACK_SWEEP_MS, DEFAULT_DRAIN_TIMEOUT_MS,
    DEFAULT_LEAST_CONN_REFRESH_MS, DEFAULT_TCP_FIN_TIMEOUT_MS, DEFAULT_TCP_IDLE_TIMEOUT_MS,
    DEFAULT_UDP_IDLE_TIMEOUT_MS, DRAIN_TIMEOUT_RANGE, LEAST_CONN_REFRESH_RANGE, SLOW_START_RANGE,
    TIMEOUT_RANGE,
};
use super::{
    DEFAULT_ENCAP_SOURCE_V4, DEFAULT_ENCAP_SOURCE_V6, DEFAULT_FLOW_TABLE_SIZE,
    DEFAULT_TABLE_CAPACITY, DEFAULT_TABLE_SIZE, DEFAULT_WEIGHT, ENCAP_V4_PREFIX_RANGE,
    ENCAP_V6_MAX_PREFIX, FLOW_TABLE_SIZE_RANGE, GOOD_SLOTS_PER_BACKEND, MIN_SLOTS_PER_BACKEND,
    TABLE_CAPACITY_RANGE, TABLE_SIZE_RANGE, WEIGHT_RANGE,
};
use super::{
    DEFAULT_HEALTH_FALL, DEFAULT_HEALTH_INTERVAL_MS, DEFAULT_HEALTH_PATH, DEFAULT_HEALTH_RISE,
    DEFAULT_HEALTH_SEND, DEFAULT_HEALTH_TIMEOUT_MS, HEALTH_COUNT_RANGE, HEALTH_INTERVAL_RANGE,
    HEALTH_TIMEOUT_RANGE,
};
/// The Maglev builder's primality test: a table size the config accepts is one it builds.
pub(super) use crate::maglev::is_prime;

/// Validates `raw`; the config is `Some` exactly when there are no problems. Returns
/// (config, problems, warnings).
pub(super) fn validate(
    raw: &RawFile,
    loc: &Locator,
) -> (Option<Config>, Vec<Problem>, Vec<Problem>) {
    let mut cx = Cx {
        loc,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let daemon = match &raw.daemon {
        Some(d) => cx.daemon(d),
        None => {
            cx.error(
                "daemon",
                "missing required table [daemon] (it must set at least `interface`)",
            );
            None
        }
    };
    let vips = cx.vips(&raw.vip, daemon.as_ref().map(|d| d.table_capacity));
    // Report in file order; problems without a line (a missing [daemon]) come first.
    cx.problems.sort_by_key(|p| p.line.unwrap_or(0));
    cx.warnings.sort_by_key(|p| p.line.unwrap_or(0));
    let config = match (daemon, vips) {
        (Some(daemon), Some(vips)) if cx.problems.is_empty() => Some(Config { daemon, vips }),
        _ => None,
    };
    (config, cx.problems, cx.warnings)
}

/// Run `f` with a validation context over `loc`; (its result, problems, warnings), each
/// list in file order. For files other than the main configuration (simulator policies).
pub(super) fn with_cx<T>(
    loc: &Locator,
    f: impl FnOnce(&mut Cx<'_>) -> T,
) -> (T, Vec<Problem>, Vec<Problem>) {
    let mut cx = Cx {
        loc,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let out = f(&mut cx);
    cx.problems.sort_by_key(|p| p.line.unwrap_or(0));
    cx.warnings.sort_by_key(|p| p.line.unwrap_or(0));
    (out, cx.problems, cx.warnings)
}

pub(super) struct Cx<'a> {
    loc: &'a Locator,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Cx<'_> {
    fn problem(&self, path: &str, message: impl Display) -> Problem {
        Problem {
            line: self.loc.line(path),
            path: path.to_owned(),
            message: message.to_string(),
        }
    }

    pub(super) fn error(&mut self, path: &str, message: impl Display) {
        let p = self.problem(path, message);
        self.problems.push(p);
    }

    pub(super) fn warn(&mut self, path: &str, message: impl Display) {
        let p = self.problem(path, message);
        self.warnings.push(p);
    }

    /// `vip[0] (line 3)`: another place in the file, for "also at" messages.
    pub(super) fn where_is(&self, path: &str) -> String {
        match self.loc.line(path) {
            Some(line) => format!("{path} (line {line})"),
            None => path.to_owned(),
        }
    }

    pub(super) fn missing(&mut self, path: &str) {
        let key = path.rsplit('.').next().unwrap_or(path);
        let table = super::locate::parent(path).unwrap_or("");
        self.error(path, format!("missing required key `{key}` in [{table}]"));
    }

    pub(super) fn required<'v, T: ?Sized>(
        &mut self,
        path: &str,
        value: Option<&'v T>,
    ) -> Option<&'v T> {
        if value.is_none() {
            self.missing(path);
        }
        value
    }

    /// An integer in `range`, or `default` when absent (`None` default: required).
    pub(super) fn int<T>(
        &mut self,
        path: &str,
        value: Option<i64>,
        default: Option<T>,
        range: RangeInclusive<T>,
    ) -> Option<T>
    where
        T: TryFrom<i64> + PartialOrd + Copy + Display,
    {
        let Some(v) = value else {
            if default.is_none() {
                self.missing(path);
            }
            return default;
        };
        match T::try_from(v) {
            Ok(t) if range.contains(&t) => Some(t),
            _ => {
                self.error(
                    path,
                    format!("{v} is out of range ({}..={})", range.start(), range.end()),
                );
                None
            }
        }
    }

    /// One of the names in `T::ALL`, or `default` when absent (`None` default: required).
    pub(super) fn named<T: Named>(
        &mut self,
        path: &str,
        value: Option<&String>,
        default: Option<T>,
    ) -> Option<T> {
        let Some(s) = value else {
            if default.is_none() {
                self.missing(path);
            }
            return default;
        };
        if let Some((_, v)) = T::ALL.iter().find(|(n, _)| n == s) {
            return Some(*v);
        }
        let accepted: Vec<String> = T::ALL.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        let message = if T::RESERVED.contains(&s.as_str()) {
            format!(
                "{} \"{s}\" is not supported yet (only {})",
                T::FIELD,
                accepted.join(", ")
            )
        } else {
            format!(
                "unknown {} \"{s}\"; accepted values: {}",
                T::FIELD,
                accepted.join(", ")
            )
        };
        self.error(path, message);
        None
    }

    pub(super) fn ip(&mut self, path: &str, value: Option<&String>, what: &str) -> Option<IpAddr> {
        let s = self.required(path, value)?;
        let Ok(ip) = s.parse::<IpAddr>() else {
            self.error(path, format!("\"{s}\" is not an IP address"));
            return None;
        };
        let bad = if ip.is_unspecified() {
            Some("the unspecified address")
        } else if ip.is_multicast() {
            Some("a multicast address")
        } else if ip == IpAddr::from([255, 255, 255, 255]) {
            Some("the broadcast address")
        } else {
            None
        };
        if let Some(bad) = bad {
            self.error(
                path,
                format!("{ip} is {bad}; {what} must be a unicast address"),
            );
            return None;
        }
        Some(ip)
    }

    fn daemon(&mut self, d: &RawDaemon) -> Option<DaemonConfig> {
        let interface = self
            .required("daemon.interface", d.interface.as_ref())
            .and_then(|name| match interface_name_problem(name) {
                None => Some(name.clone()),
                Some(why) => {
                    self.error(
                        "daemon.interface",
                        format!("{name:?} is not a valid interface name: {why}"),
                    );
                    None
                }
            });
        let xdp_mode = self.named("daemon.xdp_mode", d.xdp_mode.as_ref(), Some(XdpMode::Auto));
        let flow_table_size = self.int(
            "daemon.flow_table_size",
            d.flow_table_size,
            Some(DEFAULT_FLOW_TABLE_SIZE),
            FLOW_TABLE_SIZE_RANGE,
        );
        let table_capacity = self.int(
            "daemon.table_capacity",
            d.table_capacity,
            Some(DEFAULT_TABLE_CAPACITY),
            TABLE_CAPACITY_RANGE,
        );
        let hash_seed = self.int("daemon.hash_seed", d.hash_seed, Some(0), 0..=u32::MAX);
        let icmp_too_big_per_sec = self.int(
            "daemon.icmp_too_big_per_sec",
            d.icmp_too_big_per_sec,
            Some(super::DEFAULT_ICMP_TOO_BIG_PER_SEC),
            0..=1_000_000,
        );
        let encap_source_v4 = self.encap_v4(
            d.encap_source_v4
                .as_deref()
                .unwrap_or(DEFAULT_ENCAP_SOURCE_V4),
        );
        let encap_source_v6 = self.encap_v6(
            d.encap_source_v6
                .as_deref()
                .unwrap_or(DEFAULT_ENCAP_SOURCE_V6),
        );
        let state_dir = match d.state_dir.as_deref() {
            None => Some(std::path::PathBuf::from(super::DEFAULT_STATE_DIR)),
            Some(p) if p.starts_with('/') && !p.contains('\0') => Some(std::path::PathBuf::from(p)),
            Some(p) => {
                self.error("daemon.state_dir", format!("{p:?} is not an absolute path"));
                None
            }
        };
        let api_socket = match d.api_socket.as_deref() {
            None => Some(std::path::PathBuf::from(super::DEFAULT_API_SOCKET)),
            Some(p) if p.starts_with('/') && !p.contains('\0') && p.len() < 108 => {
                Some(std::path::PathBuf::from(p))
            }
            Some(p) => {
                self.error(
                    "daemon.api_socket",
                    format!(
                        "{p:?} is not an absolute path shorter than 108 bytes (a Unix socket path)"
                    ),
                );
                None
            }
        };
        let api_group = match d.api_group.as_deref() {
            None => Some(None),
            Some(g)
                if !g.is_empty()
                    && g.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) =>
            {
                Some(Some(g.to_owned()))
            }
            Some(g) => {
                self.error("daemon.api_group", format!("{g:?} is not a group name"));
                None
            }
        };
        let metrics_listen = match d
            .metrics_listen
            .as_deref()
            .unwrap_or(super::DEFAULT_METRICS_LISTEN)
        {
            "none" => Some(None),
            a => match a.parse::<std::net::SocketAddr>() {
                Ok(addr) => Some(Some(addr)),
                Err(_) => {
                    self.error(
                        "daemon.metrics_listen",
                        format!("{a:?} is not an address:port (e.g. \"127.0.0.1:9640\" or \"[::1]:9640\") nor \"none\""),
                    );
                    None
                }
            },
        };
        let ms = |this: &mut Self, key: &str, v: Option<i64>, default: u32, range| {
            this.int(&format!("daemon.{key}"), v, Some(default), range)
        };
        let tcp_idle_timeout_ms = ms(
            self,
            "tcp_idle_timeout_ms",
            d.tcp_idle_timeout_ms,
            DEFAULT_TCP_IDLE_TIMEOUT_MS,
            TIMEOUT_RANGE,
        );
        let tcp_fin_timeout_ms = ms(
            self,
            "tcp_fin_timeout_ms",
            d.tcp_fin_timeout_ms,
            DEFAULT_TCP_FIN_TIMEOUT_MS,
            TIMEOUT_RANGE,
        );
        let udp_idle_timeout_ms = ms(
            self,
            "udp_idle_timeout_ms",
            d.udp_idle_timeout_ms,
            DEFAULT_UDP_IDLE_TIMEOUT_MS,
            TIMEOUT_RANGE,
        );
        let conntrack_sweep_ms = ms(
            self,
            "conntrack_sweep_ms",
            d.conntrack_sweep_ms,
            DEFAULT_CONNTRACK_SWEEP_MS,
            CONNTRACK_SWEEP_RANGE,
        );
        let least_conn_refresh_ms = ms(
            self,
            "least_conn_refresh_ms",
            d.least_conn_refresh_ms,
            DEFAULT_LEAST_CONN_REFRESH_MS,
            LEAST_CONN_REFRESH_RANGE,
        );
        let pin_dir = match d.pin_dir.as_deref() {
            None => Some(None),
            Some(p) => match super::pins::check_pin_dir_syntax(std::path::Path::new(p)) {
                Ok(()) => Some(Some(std::path::PathBuf::from(p))),
                Err(why) => {
                    self.error("daemon.pin_dir", format!("{p:?} {why}"));
                    None
                }
            },
        };
        Some(DaemonConfig {
            tcp_idle_timeout_ms: tcp_idle_timeout_ms?,
            tcp_fin_timeout_ms: tcp_fin_timeout_ms?,
            udp_idle_timeout_ms: udp_idle_timeout_ms?,
            conntrack_sweep_ms: conntrack_sweep_ms?,
            least_conn_refresh_ms: least_conn_refresh_ms?,
            pin_dir: pin_dir?,
            metrics_listen: metrics_listen?,
            api_socket: api_socket?,
            api_group: api_group?,
            state_dir: state_dir?,
            interface: interface?,
            xdp_mode: xdp_mode?,
            flow_table_size: flow_table_size?,
            table_capacity: table_capacity?,
            hash_seed: hash_seed?,
            encap_source_v4: encap_source_v4?,
            encap_source_v6: encap_source_v6?,
            icmp_too_big_per_sec: icmp_too_big_per_sec?,
        })
    }

    fn encap_v4(&mut self, s: &str) -> Option<Ipv4Prefix> {
        const PATH: &str = "daemon.encap_source_v4";
        match s.parse::<Ipv4Prefix>() {
            Err(e) => self.error(PATH, e),
            Ok(p) if !ENCAP_V4_PREFIX_RANGE.contains(&p.prefix_len()) => self.error(
                PATH,
                format!(
                    "prefix length /{} of {s} is out of range ({}..={})",
                    p.prefix_len(),
                    ENCAP_V4_PREFIX_RANGE.start(),
                    ENCAP_V4_PREFIX_RANGE.end()
                ),
            ),
            Ok(p) => return Some(p),
        }
        None
    }

    fn encap_v6(&mut self, s: &str) -> Option<Ipv6Prefix> {
        const PATH: &str = "daemon.encap_source_v6";
        match s.parse::<Ipv6Prefix>() {
            Err(e) => self.error(PATH, e),
            Ok(p) if p.prefix_len() > ENCAP_V6_MAX_PREFIX => self.error(
                PATH,
                format!(
                    "prefix length /{} of {s} is too long: at most /{ENCAP_V6_MAX_PREFIX} (the last 32 bits carry the flow hash)",
                    p.prefix_len()
                ),
            ),
            Ok(p) => return Some(p),
        }
        None
    }

    fn vips(&mut self, raw: &[RawVip], table_capacity: Option<u32>) -> Option<Vec<VipConfig>> {
        let max_vips = lb_common::MAX_VIPS as usize;
        if raw.len() > max_vips {
            self.error(
                &format!("vip[{max_vips}]"),
                format!(
                    "too many VIPs: {} configured, at most {max_vips} (lb_common::MAX_VIPS)",
                    raw.len()
                ),
            );
        }
        let max_backends = (lb_common::MAX_BACKENDS - 1) as usize;
        let total_backends: usize = raw.iter().map(|v| v.backend.len()).sum();
        if total_backends > max_backends {
            let (i, j) = nth_backend(raw, max_backends);
            self.error(
                &format!("vip[{i}].backend[{j}]"),
                format!(
                    "too many backends: {total_backends} configured over all VIPs, at most {max_backends} \
                     (lb_common::MAX_BACKENDS - 1; backend slot 0 is reserved)"
                ),
            );
        }
        if raw.is_empty() {
            self.warn("", "no [[vip]] configured: nothing will be load-balanced");
        }

        let mut ok = true;
        let mut vips = Vec::with_capacity(raw.len());
        let mut keys: HashMap<(IpAddr, u16, Protocol), usize> = HashMap::new();
        // Name → (vip index, whether it was written rather than defaulted).
        let mut names: HashMap<String, (usize, bool)> = HashMap::new();
        let mut slots_needed: u64 = 0;
        for (i, v) in raw.iter().enumerate() {
            let path = format!("vip[{i}]");
            let vip = self.vip(v, &path);
            if let Some(size) = vip.table_size {
                slots_needed += 2 * u64::from(size);
            }
            if let (Some(address), Some(port), Some(protocol)) =
                (vip.address, vip.port, vip.protocol)
            {
                match keys.entry((address, port, protocol)) {
                    Entry::Occupied(first) => {
                        let other = self.where_is(&format!("vip[{}]", first.get()));
                        let name = VipConfig::default_name(address, port, protocol);
                        self.error(
                            &path,
                            format!("duplicate VIP {name}: {other} has the same address, port and protocol"),
                        );
                    }
                    Entry::Vacant(e) => {
                        e.insert(i);
                    }
                }
            }
            if let Some(name) = &vip.name {
                let explicit = v.name.is_some();
                match names.entry(name.clone()) {
                    // Two defaulted names collide only for duplicate VIPs, reported above.
                    Entry::Occupied(first) if explicit || first.get().1 => {
                        let other = self.where_is(&format!("vip[{}]", first.get().0));
                        let at = if explicit {
                            format!("{path}.name")
                        } else {
                            path.clone()
                        };
                        let defaulted = if explicit {
                            ""
                        } else {
                            " (the default name of this VIP)"
                        };
                        self.error(
                            &at,
                            format!("duplicate VIP name \"{name}\"{defaulted}: {other} has it too"),
                        );
                    }
                    Entry::Occupied(_) => {}
                    Entry::Vacant(e) => {
                        e.insert((i, explicit));
                    }
                }
            }
            match vip.finish() {
                Some(vip) => vips.push(vip),
                None => ok = false,
            }
        }
        if let Some(capacity) = table_capacity
            && slots_needed > u64::from(capacity)
        {
            self.error(
                "daemon.table_capacity",
                format!(
                    "{capacity} lookup-table slots are too few: the VIPs need {slots_needed} \
                         (2 × the sum of their table_size, tables are double-buffered); \
                         raise table_capacity to at least {slots_needed} or use smaller tables"
                ),
            );
        }
        ok.then_some(vips)
    }

    fn vip(&mut self, v: &RawVip, path: &str) -> PartialVip {
        let at = |key: &str| format!("{path}.{key}");
        let address = self.ip(&at("address"), v.address.as_ref(), "a VIP");
        let port = self.int(&at("port"), v.port, None, 0..=u16::MAX);
        let protocol = self.named::<Protocol>(&at("protocol"), v.protocol.as_ref(), None);
        let forwarding = self.named::<Forwarding>(&at("forwarding"), v.forwarding.as_ref(), None);
        let scheduler = self.named(
            &at("scheduler"),
            v.scheduler.as_ref(),
            Some(Scheduler::Maglev),
        );
        let table_size = self.table_size(&at("table_size"), v.table_size, v.backend.len());
        let slow_start_ms = self.int(
            &at("slow_start_ms"),
            v.slow_start_ms,
            Some(0),
            SLOW_START_RANGE,
        );
        let drain_timeout_ms = self.int(
            &at("drain_timeout_ms"),
            v.drain_timeout_ms,
            Some(DEFAULT_DRAIN_TIMEOUT_MS),
            DRAIN_TIMEOUT_RANGE,
        );
        let on_down = self.named(&at("on_down"), v.on_down.as_ref(), Some(OnDown::Reassign));
        let raw_health = v.health.clone().unwrap_or_default();
        let health = self.health(&at("health"), &raw_health, port, protocol);
        let name = match &v.name {
            Some(name) => match vip_name_problem(name) {
                None => Some(name.clone()),
                Some(why) => {
                    self.error(
                        &at("name"),
                        format!("{name:?} is not a valid VIP name: {why}"),
                    );
                    None
                }
            },
            None => match (address, port, protocol) {
                (Some(a), Some(p), Some(proto)) => Some(VipConfig::default_name(a, p, proto)),
                _ => None,
            },
        };

        let mut backends = Some(Vec::with_capacity(v.backend.len()));
        let mut seen: HashMap<IpAddr, usize> = HashMap::new();
        for (j, b) in v.backend.iter().enumerate() {
            let bpath = format!("{path}.backend[{j}]");
            let mut backend = self.backend(b, &bpath, address, forwarding);
            if let Some(over) = &b.health {
                let merged = raw_health.overridden_by(over);
                let h = self.health(&format!("{bpath}.health"), &merged, port, protocol);
                backend = match (backend, h) {
                    (Some(mut b), Some(h)) => {
                        b.health = Some(h);
                        Some(b)
                    }
                    _ => None,
                };
            }
            if let Some(addr) = b.address.as_ref().and_then(|s| s.parse::<IpAddr>().ok()) {
                match seen.entry(addr) {
                    Entry::Occupied(first) => {
                        let other = self.where_is(&format!("{path}.backend[{}]", first.get()));
                        self.error(
                            &format!("{bpath}.address"),
                            format!("duplicate backend {addr}: {other} has the same address"),
                        );
                    }
                    Entry::Vacant(e) => {
                        e.insert(j);
                    }
                }
            }
            match (backend, &mut backends) {
                (Some(b), Some(list)) => list.push(b),
                _ => backends = None,
            }
        }
        let autoscale = match &v.autoscale {
            None => Some(None),
            Some(a) => {
                let addrs: Vec<IpAddr> = backends
                    .iter()
                    .flatten()
                    .map(|b: &BackendConfig| b.address)
                    .collect();
                let cx = super::autoscale::VipContext {
                    address,
                    backends: &addrs,
                    simulated: false,
                };
                self.autoscale(a, &at("autoscale"), &cx).map(Some)
            }
        };
        if v.backend.is_empty() {
            if v.autoscale.is_none() {
                self.warn(path, "no backends: new flows to this VIP are dropped");
            }
        } else if v.backend.iter().all(|b| b.weight == Some(0)) {
            self.warn(
                path,
                "every backend has weight 0: new flows to this VIP are dropped",
            );
        }
        PartialVip {
            name,
            address,
            port,
            protocol,
            forwarding,
            scheduler,
            table_size,
            slow_start_ms,
            drain_timeout_ms,
            on_down,
            health,
            autoscale,
            backends,
        }
    }

    /// A health-check section (already merged with the VIP's for a backend override).
    fn health(
        &mut self,
        path: &str,
        h: &RawHealth,
        vip_port: Option<u16>,
        protocol: Option<Protocol>,
    ) -> Option<HealthConfig> {
        let at = |key: &str| format!("{path}.{key}");
        // tcp VIPs are checked with a TCP connect on their port by default; udp VIPs (no
        // protocol-agnostic probe exists) and all-ports VIPs (no port to pick) only when
        // configured.
        let default_kind = match (protocol, vip_port) {
            (Some(Protocol::Udp), _) | (_, Some(0)) => CheckKind::None,
            _ => CheckKind::Tcp,
        };
        let check = self.named(&at("check"), h.check.as_ref(), Some(default_kind))?;
        let port = match (h.port, vip_port) {
            (Some(_), _) => self.int(&at("port"), h.port, None, 1..=u16::MAX)?,
            (None, Some(0)) if check != CheckKind::None => {
                self.error(
                    &at("port"),
                    "the VIP serves every port (port = 0): say which port to check",
                );
                return None;
            }
            (None, p) => p.unwrap_or(0),
        };
        if check == CheckKind::None
            && h.check.is_none()
            && vip_port == Some(0)
            && protocol == Some(Protocol::Tcp)
        {
            self.warn(
                path,
                "no health checks for an all-ports VIP unless [vip.health] sets check and port",
            );
        }
        let interval_ms = self.int(
            &at("interval_ms"),
            h.interval_ms,
            Some(DEFAULT_HEALTH_INTERVAL_MS),
            HEALTH_INTERVAL_RANGE,
        )?;
        // Default: 1000 ms, or half the interval when that is shorter (so `interval_ms`
        // alone is always valid); an explicit value must fit in the interval.
        let timeout_ms = self.int(
            &at("timeout_ms"),
            h.timeout_ms,
            Some(DEFAULT_HEALTH_TIMEOUT_MS.min(interval_ms / 2)),
            HEALTH_TIMEOUT_RANGE,
        )?;
        if timeout_ms > interval_ms {
            self.error(
                &at("timeout_ms"),
                format!("{timeout_ms} ms is longer than interval_ms ({interval_ms} ms): checks would overlap"),
            );
            return None;
        }
        let rise = self.int(
            &at("rise"),
            h.rise,
            Some(DEFAULT_HEALTH_RISE),
            HEALTH_COUNT_RANGE,
        )?;
        let fall = self.int(
            &at("fall"),
            h.fall,
            Some(DEFAULT_HEALTH_FALL),
            HEALTH_COUNT_RANGE,
        )?;
        let only = |cx: &mut Self, key: &str, set: bool, kind: CheckKind| {
            if set && check != kind {
                cx.error(
                    &at(key),
                    format!("`{key}` only applies to check = \"{kind}\" (this is \"{check}\")"),
                );
                false
            } else {
                true
            }
        };
        let ok = only(self, "path", h.path.is_some(), CheckKind::Http)
            & only(
                self,
                "expect_status",
                h.expect_status.is_some(),
                CheckKind::Http,
            )
            & only(self, "send", h.send.is_some(), CheckKind::Udp)
            & only(self, "expect", h.expect.is_some(), CheckKind::Udp);
        let path_value = h
            .path
            .clone()
            .unwrap_or_else(|| DEFAULT_HEALTH_PATH.to_owned());
        if !path_value.starts_with('/')
            || path_value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            self.error(
                &at("path"),
                format!(
                    "{path_value:?} is not an HTTP path (it must start with '/' and have no spaces)"
                ),
            );
            return None;
        }
        let expect_status = match h.expect_status.as_deref() {
            None => (200, 399),
            Some(s) => {
                match parse_status_range(s) {
                    Some(r) => r,
                    None => {
                        self.error(&at("expect_status"), format!("{s:?} is not a status or range like \"200\" or \"200-399\" (100..=599)"));
                        return None;
                    }
                }
            }
        };
        if check == CheckKind::Udp && protocol == Some(Protocol::Tcp) {
            self.warn(
                &at("check"),
                "a udp check on a tcp VIP checks another service than the one balanced",
            );
        }
        ok.then(|| HealthConfig {
            check,
            port,
            interval_ms,
            timeout_ms,
            rise,
            fall,
            path: path_value,
            expect_status,
            send: h
                .send
                .clone()
                .unwrap_or_else(|| DEFAULT_HEALTH_SEND.to_owned()),
            expect: h.expect.clone(),
        })
    }

    /// A prime in range, with at least `MIN_SLOTS_PER_BACKEND` slots per backend.
    fn table_size(&mut self, path: &str, value: Option<i64>, backends: usize) -> Option<u32> {
        let size = self.int(path, value, Some(DEFAULT_TABLE_SIZE), TABLE_SIZE_RANGE)?;
        if !is_prime(size) {
            let below = (2..size).rev().find(|&n| is_prime(n));
            let above = (size..).find(|&n| is_prime(n));
            let near = match below {
                Some(b) => format!(" (nearest primes: {b} and {})", above.unwrap_or(size)),
                None => String::new(),
            };
            self.error(
                path,
                format!("{size} is not prime; Maglev needs a prime table size{near}"),
            );
            return None;
        }
        let backends = u64::try_from(backends).unwrap_or(u64::MAX);
        let min = backends.saturating_mul(u64::from(MIN_SLOTS_PER_BACKEND));
        let good = backends.saturating_mul(u64::from(GOOD_SLOTS_PER_BACKEND));
        let suggestion = u32::try_from(good)
            .ok()
            .and_then(|g| (g..=*TABLE_SIZE_RANGE.end()).find(|&n| is_prime(n)))
            .map_or(String::new(), |p| format!(" (e.g. {p})"));
        if u64::from(size) < min {
            self.error(
                path,
                format!(
                    "{size} is too small for {backends} backends: it must be at least \
                     {MIN_SLOTS_PER_BACKEND} × backends = {min}; a prime ≥ {good}{suggestion} \
                     keeps Maglev's imbalance under 1%"
                ),
            );
            return None;
        }
        if u64::from(size) < good {
            self.warn(
                path,
                format!(
                    "{size} is less than {GOOD_SLOTS_PER_BACKEND} × {backends} backends = {good}: \
                     Maglev's imbalance may exceed 1%; a prime ≥ {good}{suggestion} keeps it under 1%"
                ),
            );
        }
        Some(size)
    }

    fn backend(
        &mut self,
        b: &RawBackend,
        path: &str,
        vip: Option<IpAddr>,
        forwarding: Option<Forwarding>,
    ) -> Option<BackendConfig> {
        let at = |key: &str| format!("{path}.{key}");
        let mut address = self.ip(&at("address"), b.address.as_ref(), "a backend");
        if let (Some(a), Some(vip)) = (address, vip)
            && a.is_ipv4() != vip.is_ipv4()
        {
            self.error(
                    &at("address"),
                    format!(
                        "backend {a} is {} but the VIP {vip} is {}; a VIP and its backends must be the same family",
                        family(a),
                        family(vip)
                    ),
                );
            address = None;
        }
        let weight = self.int(&at("weight"), b.weight, Some(DEFAULT_WEIGHT), WEIGHT_RANGE);
        let mac = match &b.mac {
            None => Some(None),
            Some(s) => match super::parse_mac(s) {
                Err(e) => {
                    self.error(&at("mac"), e);
                    None
                }
                Ok(_) if forwarding == Some(Forwarding::Ipip) => {
                    self.error(
                        &at("mac"),
                        "`mac` is only used with forwarding = \"dsr\"; this VIP uses \"ipip\" \
                         (the outer packet is routed), remove it",
                    );
                    None
                }
                Ok(mac) => Some(Some(mac)),
            },
        };
        let state = self.named(&at("state"), b.state.as_ref(), Some(BackendState::Active));
        let drain_remove = b.drain_remove.unwrap_or(false);
        if drain_remove && state == Some(BackendState::Active) {
            self.warn(
                &at("drain_remove"),
                "only used while state = \"draining\"; ignored for an active backend",
            );
        }
        Some(BackendConfig {
            address: address?,
            weight: weight?,
            mac: mac?,
            state: state?,
            drain_remove,
            health: None,
        })
    }
}

/// A VIP whose fields may have failed validation.
struct PartialVip {
    name: Option<String>,
    address: Option<IpAddr>,
    port: Option<u16>,
    protocol: Option<Protocol>,
    forwarding: Option<Forwarding>,
    scheduler: Option<Scheduler>,
    table_size: Option<u32>,
    slow_start_ms: Option<u32>,
    drain_timeout_ms: Option<u32>,
    on_down: Option<OnDown>,
    health: Option<HealthConfig>,
    autoscale: Option<Option<super::autoscale::AutoscaleConfig>>,
    backends: Option<Vec<BackendConfig>>,
}

impl PartialVip {
    fn finish(self) -> Option<VipConfig> {
        Some(VipConfig {
            name: self.name?,
            address: self.address?,
            port: self.port?,
            protocol: self.protocol?,
            forwarding: self.forwarding?,
            scheduler: self.scheduler?,
            table_size: self.table_size?,
            slow_start_ms: self.slow_start_ms?,
            drain_timeout_ms: self.drain_timeout_ms?,
            on_down: self.on_down?,
            health: self.health?,
            autoscale: self.autoscale?,
            backends: self.backends?,
        })
    }
}

/// "200" or "200-399", each in 100..=599, low ≤ high.
fn parse_status_range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let v: u16 = s.trim().parse().ok()?;
            (v, v)
        }
    };
    ((100..=599).contains(&lo) && (100..=599).contains(&hi) && lo <= hi).then_some((lo, hi))
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// (vip index, backend index) of the `n`th backend (0-based) over all VIPs.
fn nth_backend(raw: &[RawVip], mut n: usize) -> (usize, usize) {
    for (i, v) in raw.iter().enumerate() {
        if n < v.backend.len() {
            return (i, n);
        }
        n -= v.backend.len();
    }
    (raw.len(), 0)
}

/// Why `name` cannot be a Linux interface name (`dev_valid_name`), if it cannot.
fn interface_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 15 {
        Some("longer than 15 bytes (IFNAMSIZ - 1)")
    } else if name == "." || name == ".." {
        Some("reserved")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("it contains '/', ':' or whitespace")
    } else {
        None
    }
}

/// Why `name` cannot name a VIP, if it cannot.
fn vip_name_problem(name: &str) -> Option<&'static str> {
    if name.trim().is_empty() {
        Some("it is empty")
    } else if name.chars().any(char::is_control) {
        Some("it contains control characters")
    } else {
        None
    }
}
