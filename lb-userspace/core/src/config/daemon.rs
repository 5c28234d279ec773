//! `[daemon]`: the settings of the data plane as a whole.

use std::path::PathBuf;

use serde::{Serialize, Serializer};

use super::pins;
use super::prefix::{Ipv4Prefix, Ipv6Prefix};

fn serialize_listen<S: Serializer>(
    v: &Option<std::net::SocketAddr>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(a) => s.serialize_str(&a.to_string()),
        None => s.serialize_str("none"),
    }
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
    /// Most VIPs (VIP ids; the entries of the per-VIP maps).
    pub vip_capacity: u32,
    /// Backend slots over all VIPs (the entries of the per-backend maps); slot 0 is
    /// reserved, so `backend_capacity - 1` backends fit.
    pub backend_capacity: u32,
    /// Seed of the flow hash; the same on every LB instance.
    pub hash_seed: u32,
    /// Outer source prefix of IPIP-encapsulated IPv4 packets.
    pub encap_source_v4: Ipv4Prefix,
    /// Outer source prefix of IP6IP6-encapsulated IPv6 packets.
    pub encap_source_v6: Ipv6Prefix,
    /// ICMP too-big messages each CPU may send a second (0: none).
    pub icmp_too_big_per_sec: u32,
    /// New flows each CPU may pin in the flow table a second (the flood guard); beyond it,
    /// new flows are forwarded by their hash without a flow entry. 0: no limit.
    pub new_flow_limit_per_cpu: u32,
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
    /// `[daemon.announce]`: announcing VIPs by kernel routes a BGP speaker exports.
    pub announce: AnnounceConfig,
}

/// `[daemon.announce]`: a VIP address is announced by a host route (/32, /128) in a
/// routing table of its own, tagged with a route protocol of its own, which a BGP speaker
/// (BIRD's `kernel` protocol on that table) exports; withdrawn by removing the route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnnounceConfig {
    /// Whether the daemon installs routes at all.
    pub enabled: bool,
    /// The kernel routing table the routes go in (not local, main or default).
    pub table: u32,
    /// The rtnetlink route protocol tagging the routes as sluice's.
    pub protocol: u8,
    /// The interface the routes point at (it must exist at start).
    pub interface: String,
}

impl DaemonConfig {
    /// The pin directory: `daemon.pin_dir`, or `/sys/fs/bpf/sluice/<interface>`.
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_dir
            .clone()
            .unwrap_or_else(|| pins::default_pin_dir(&self.interface))
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
