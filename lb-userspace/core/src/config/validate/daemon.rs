//! `[daemon]`: the interface, table sizes, encapsulation sources, paths, the API and
//! metrics endpoints, and the connection-tracking timings.

use std::path::{Path, PathBuf};

use super::Cx;
use crate::config::pins::check_pin_dir_syntax;
use crate::config::raw::RawDaemon;
use crate::config::{
    BACKEND_CAPACITY_RANGE, CONNTRACK_SWEEP_RANGE, DEFAULT_API_SOCKET, DEFAULT_BACKEND_CAPACITY,
    DEFAULT_CONNTRACK_SWEEP_MS, DEFAULT_ENCAP_SOURCE_V4, DEFAULT_ENCAP_SOURCE_V6,
    DEFAULT_FLOW_TABLE_SIZE, DEFAULT_ICMP_TOO_BIG_PER_SEC, DEFAULT_LEAST_CONN_REFRESH_MS,
    DEFAULT_METRICS_LISTEN, DEFAULT_NEW_FLOW_LIMIT_PER_CPU, DEFAULT_STATE_DIR,
    DEFAULT_TABLE_CAPACITY, DEFAULT_TCP_FIN_TIMEOUT_MS, DEFAULT_TCP_IDLE_TIMEOUT_MS,
    DEFAULT_UDP_IDLE_TIMEOUT_MS, DEFAULT_VIP_CAPACITY, ENCAP_V4_PREFIX_RANGE, ENCAP_V6_MAX_PREFIX,
    FLOW_TABLE_SIZE_RANGE, LEAST_CONN_REFRESH_RANGE, TABLE_CAPACITY_RANGE, TIMEOUT_RANGE,
    VIP_CAPACITY_RANGE,
};
use crate::config::{DaemonConfig, Ipv4Prefix, Ipv6Prefix, XdpMode};

impl Cx<'_> {
    pub(super) fn daemon(&mut self, d: &RawDaemon) -> Option<DaemonConfig> {
        let interface = self.interface(d.interface.as_ref());
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
        let vip_capacity = self.int(
            "daemon.vip_capacity",
            d.vip_capacity,
            Some(DEFAULT_VIP_CAPACITY),
            VIP_CAPACITY_RANGE,
        );
        let backend_capacity = self.int(
            "daemon.backend_capacity",
            d.backend_capacity,
            Some(DEFAULT_BACKEND_CAPACITY),
            BACKEND_CAPACITY_RANGE,
        );
        let hash_seed = self.int("daemon.hash_seed", d.hash_seed, Some(0), 0..=u32::MAX);
        let icmp_too_big_per_sec = self.int(
            "daemon.icmp_too_big_per_sec",
            d.icmp_too_big_per_sec,
            Some(DEFAULT_ICMP_TOO_BIG_PER_SEC),
            0..=1_000_000,
        );
        let new_flow_limit_per_cpu = self.int(
            "daemon.new_flow_limit_per_cpu",
            d.new_flow_limit_per_cpu,
            Some(DEFAULT_NEW_FLOW_LIMIT_PER_CPU),
            0..=100_000_000,
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
        let state_dir = self.state_dir(d.state_dir.as_deref());
        let api_socket = self.api_socket(d.api_socket.as_deref());
        let api_group = self.api_group(d.api_group.as_deref());
        let metrics_listen = self.metrics_listen(d.metrics_listen.as_deref());
        let conntrack = self.conntrack_timings(d);
        let pin_dir = self.pin_dir(d.pin_dir.as_deref());
        let announce = self.announce(d.announce.as_ref().unwrap_or(&Default::default()));
        Some(DaemonConfig {
            announce: announce?,
            tcp_idle_timeout_ms: conntrack.tcp_idle_timeout_ms?,
            tcp_fin_timeout_ms: conntrack.tcp_fin_timeout_ms?,
            udp_idle_timeout_ms: conntrack.udp_idle_timeout_ms?,
            conntrack_sweep_ms: conntrack.conntrack_sweep_ms?,
            least_conn_refresh_ms: conntrack.least_conn_refresh_ms?,
            pin_dir: pin_dir?,
            metrics_listen: metrics_listen?,
            api_socket: api_socket?,
            api_group: api_group?,
            state_dir: state_dir?,
            interface: interface?,
            xdp_mode: xdp_mode?,
            flow_table_size: flow_table_size?,
            table_capacity: table_capacity?,
            vip_capacity: vip_capacity?,
            backend_capacity: backend_capacity?,
            hash_seed: hash_seed?,
            encap_source_v4: encap_source_v4?,
            encap_source_v6: encap_source_v6?,
            icmp_too_big_per_sec: icmp_too_big_per_sec?,
            new_flow_limit_per_cpu: new_flow_limit_per_cpu?,
        })
    }

    /// `daemon.interface`: required, and a name Linux accepts.
    fn interface(&mut self, value: Option<&String>) -> Option<String> {
        self.required("daemon.interface", value).and_then(|name| {
            match interface_name_problem(name) {
                None => Some(name.clone()),
                Some(why) => {
                    self.error(
                        "daemon.interface",
                        format!("{name:?} is not a valid interface name: {why}"),
                    );
                    None
                }
            }
        })
    }

    /// `daemon.state_dir`: an absolute path.
    fn state_dir(&mut self, value: Option<&str>) -> Option<PathBuf> {
        match value {
            None => Some(PathBuf::from(DEFAULT_STATE_DIR)),
            Some(p) if p.starts_with('/') && !p.contains('\0') => Some(PathBuf::from(p)),
            Some(p) => {
                self.error("daemon.state_dir", format!("{p:?} is not an absolute path"));
                None
            }
        }
    }

    /// `daemon.api_socket`: an absolute path that fits in a Unix socket address.
    fn api_socket(&mut self, value: Option<&str>) -> Option<PathBuf> {
        match value {
            None => Some(PathBuf::from(DEFAULT_API_SOCKET)),
            Some(p) if p.starts_with('/') && !p.contains('\0') && p.len() < 108 => {
                Some(PathBuf::from(p))
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
        }
    }

    /// `daemon.api_group`: absent (`Some(None)`), or a plausible group name.
    fn api_group(&mut self, value: Option<&str>) -> Option<Option<String>> {
        match value {
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
        }
    }

    /// `daemon.metrics_listen`: an address:port, or "none" (`Some(None)`).
    fn metrics_listen(&mut self, value: Option<&str>) -> Option<Option<std::net::SocketAddr>> {
        match value.unwrap_or(DEFAULT_METRICS_LISTEN) {
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
        }
    }

    /// The connection-tracking timeouts and the sweep and least-connection refresh periods.
    fn conntrack_timings(&mut self, d: &RawDaemon) -> ConntrackTimings {
        ConntrackTimings {
            tcp_idle_timeout_ms: self.daemon_ms(
                "tcp_idle_timeout_ms",
                d.tcp_idle_timeout_ms,
                DEFAULT_TCP_IDLE_TIMEOUT_MS,
                TIMEOUT_RANGE,
            ),
            tcp_fin_timeout_ms: self.daemon_ms(
                "tcp_fin_timeout_ms",
                d.tcp_fin_timeout_ms,
                DEFAULT_TCP_FIN_TIMEOUT_MS,
                TIMEOUT_RANGE,
            ),
            udp_idle_timeout_ms: self.daemon_ms(
                "udp_idle_timeout_ms",
                d.udp_idle_timeout_ms,
                DEFAULT_UDP_IDLE_TIMEOUT_MS,
                TIMEOUT_RANGE,
            ),
            conntrack_sweep_ms: self.daemon_ms(
                "conntrack_sweep_ms",
                d.conntrack_sweep_ms,
                DEFAULT_CONNTRACK_SWEEP_MS,
                CONNTRACK_SWEEP_RANGE,
            ),
            least_conn_refresh_ms: self.daemon_ms(
                "least_conn_refresh_ms",
                d.least_conn_refresh_ms,
                DEFAULT_LEAST_CONN_REFRESH_MS,
                LEAST_CONN_REFRESH_RANGE,
            ),
        }
    }

    /// A `daemon.<key>` duration in milliseconds, `default` when absent.
    fn daemon_ms(
        &mut self,
        key: &str,
        value: Option<i64>,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Option<u32> {
        self.int(&format!("daemon.{key}"), value, Some(default), range)
    }

    /// `daemon.pin_dir`: absent (`Some(None)`: the default), or a directory under bpffs.
    fn pin_dir(&mut self, value: Option<&str>) -> Option<Option<PathBuf>> {
        match value {
            None => Some(None),
            Some(p) => match check_pin_dir_syntax(Path::new(p)) {
                Ok(()) => Some(Some(PathBuf::from(p))),
                Err(why) => {
                    self.error("daemon.pin_dir", format!("{p:?} {why}"));
                    None
                }
            },
        }
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
}

/// Why `name` cannot be a Linux interface name (`dev_valid_name`), if it cannot.
pub(super) fn interface_name_problem(name: &str) -> Option<&'static str> {
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

/// The connection-tracking settings of `[daemon]`, each `None` when invalid.
struct ConntrackTimings {
    tcp_idle_timeout_ms: Option<u32>,
    tcp_fin_timeout_ms: Option<u32>,
    udp_idle_timeout_ms: Option<u32>,
    conntrack_sweep_ms: Option<u32>,
    least_conn_refresh_ms: Option<u32>,
}
