//! The file as written: the shape serde checks (known keys, value types), nothing more.
//! Every field is optional and every number an `i64`, so that missing keys, bad values and
//! out-of-range numbers are all found by `validate`, which reports every problem at once.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub daemon: Option<RawDaemon>,
    #[serde(default)]
    pub vip: Vec<RawVip>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub interface: Option<String>,
    pub xdp_mode: Option<String>,
    pub flow_table_size: Option<i64>,
    pub table_capacity: Option<i64>,
    pub vip_capacity: Option<i64>,
    pub backend_capacity: Option<i64>,
    pub hash_seed: Option<i64>,
    pub encap_source_v4: Option<String>,
    pub encap_source_v6: Option<String>,
    pub icmp_too_big_per_sec: Option<i64>,
    pub new_flow_limit_per_cpu: Option<i64>,
    pub state_dir: Option<String>,
    pub api_socket: Option<String>,
    pub api_group: Option<String>,
    pub metrics_listen: Option<String>,
    pub tcp_idle_timeout_ms: Option<i64>,
    pub tcp_fin_timeout_ms: Option<i64>,
    pub udp_idle_timeout_ms: Option<i64>,
    pub conntrack_sweep_ms: Option<i64>,
    pub least_conn_refresh_ms: Option<i64>,
    pub pin_dir: Option<String>,
    pub announce: Option<RawAnnounce>,
}

/// `[daemon.announce]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAnnounce {
    pub enabled: Option<bool>,
    pub table: Option<i64>,
    pub protocol: Option<i64>,
    pub interface: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVip {
    pub name: Option<String>,
    pub address: Option<String>,
    pub port: Option<i64>,
    pub protocol: Option<String>,
    pub forwarding: Option<String>,
    pub scheduler: Option<String>,
    pub table_size: Option<i64>,
    pub slow_start_ms: Option<i64>,
    pub drain_timeout_ms: Option<i64>,
    pub on_down: Option<String>,
    pub health: Option<RawHealth>,
    pub autoscale: Option<super::autoscale::RawAutoscale>,
    pub load: Option<RawLoad>,
    #[serde(default)]
    pub backend: Vec<RawBackend>,
}

/// `[vip.load]`: where the backends' load reports are read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLoad {
    pub source: Option<String>,
    pub port: Option<i64>,
    pub path: Option<String>,
    pub interval_ms: Option<i64>,
    pub timeout_ms: Option<i64>,
    pub stale_after_ms: Option<i64>,
    pub preset: Option<String>,
    pub waiting: Option<String>,
    pub running: Option<String>,
    pub kv_cache: Option<String>,
    pub queue_limit: Option<i64>,
    pub kv_limit_percent: Option<i64>,
    pub in_flight: Option<String>,
}

/// `[vip.health]` and `[vip.backend.health]` (whose keys override the VIP's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub check: Option<String>,
    pub port: Option<i64>,
    pub interval_ms: Option<i64>,
    pub timeout_ms: Option<i64>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub path: Option<String>,
    pub expect_status: Option<String>,
    pub send: Option<String>,
    pub expect: Option<String>,
}

impl RawHealth {
    /// `self` with every key `over` sets replaced.
    pub fn overridden_by(&self, over: &Self) -> Self {
        Self {
            check: over.check.clone().or_else(|| self.check.clone()),
            port: over.port.or(self.port),
            interval_ms: over.interval_ms.or(self.interval_ms),
            timeout_ms: over.timeout_ms.or(self.timeout_ms),
            rise: over.rise.or(self.rise),
            fall: over.fall.or(self.fall),
            path: over.path.clone().or_else(|| self.path.clone()),
            expect_status: over
                .expect_status
                .clone()
                .or_else(|| self.expect_status.clone()),
            send: over.send.clone().or_else(|| self.send.clone()),
            expect: over.expect.clone().or_else(|| self.expect.clone()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub address: Option<String>,
    pub weight: Option<i64>,
    pub mac: Option<String>,
    pub state: Option<String>,
    pub drain_remove: Option<bool>,
    pub health: Option<RawHealth>,
}
