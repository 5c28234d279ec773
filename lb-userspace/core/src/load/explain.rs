//! What the load policy would do with the current reports (`sluice plan load`): per VIP
//! with `[vip.load]` and per backend, the configured weight, the weight the policy gives it
//! now, whether it is saturated and why, the report behind it, and for `lc`/`wlc` what the
//! least-connection plan counts. The daemon fills it from its live readings; nothing here
//! changes anything.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::state::LoadStatus;

/// The answer for every VIP asked about.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadExplain {
    pub vips: Vec<VipLoad>,
}

/// One load-driven VIP.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VipLoad {
    pub name: String,
    pub vip: String,
    pub scheduler: String,
    /// Where the reports come from, e.g. `prometheus :8000/metrics` or `agent :9777`.
    pub source: String,
    pub queue_limit: f64,
    pub kv_limit: f64,
    pub stale_after_ms: u64,
    /// `lc`/`wlc`: what the plan counts as a backend's load (`reported` or `connections`,
    /// `vip.load.in_flight`); `None` for the other schedulers.
    pub in_flight: Option<String>,
    /// Every open candidate is saturated, so the saturated keep their weights.
    pub fail_open: bool,
    /// The rebuild limit holds a significant change back (applied on a later tick).
    pub held_back: bool,
    pub backends: Vec<BackendLoad>,
}

/// One backend of a load-driven VIP.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendLoad {
    pub address: IpAddr,
    /// The configured (or live-edited) weight.
    pub configured: u32,
    /// The weight the policy gives it on the current reports (0: no new flows).
    pub weight: u32,
    /// The weight new flows see now (what the policy last applied; it follows `weight`
    /// within a lifecycle tick unless the change is below the hysteresis or held back).
    /// `None`: the policy has set none, so the configured weight.
    pub applied: Option<u32>,
    /// Over a limit, or its report is stale (whether or not the policy failed open).
    pub saturated: bool,
    /// Why this weight, e.g. `saturated: 9 waiting > 5` or `score 0.62 (queue 0.50, kv 0.74)`.
    pub reason: String,
    /// Health: false when the checks have it down.
    pub serving: bool,
    /// Its latest reading: figures, age, staleness, the last read's error.
    pub load: LoadStatus,
    /// `lc`/`wlc`: the requests in flight it reports (`running + waiting`), when fresh.
    pub reported_in_flight: Option<u64>,
    /// `lc`/`wlc`: its open connections (kernel connection tracking), when known.
    pub connections: Option<u64>,
    /// `lc`/`wlc`: what the plan counts for it: `reported` or `connections`.
    pub counted: Option<String>,
}
