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
    pub hash_seed: Option<i64>,
    pub encap_source_v4: Option<String>,
    pub encap_source_v6: Option<String>,
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
    #[serde(default)]
    pub backend: Vec<RawBackend>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub address: Option<String>,
    pub weight: Option<i64>,
    pub mac: Option<String>,
}
