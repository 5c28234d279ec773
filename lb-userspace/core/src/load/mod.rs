//! Backend load reports (inference-aware balancing): what a model server says about its
//! own load, and how fresh that is. The daemon reads them (Prometheus text over HTTP, or an
//! HAProxy agent-check line over TCP) and a per-VIP policy turns them into the weights of
//! new flows. Only the types every part shares are here; parsing and the policy have their
//! own modules.

pub mod policy;

use std::time::Duration;

/// What one read of a backend's load found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Requests waiting to be scheduled (vLLM `num_requests_waiting`), summed over the
    /// series that matched (one per engine or rank). `None`: the report does not say.
    pub waiting: Option<f64>,
    /// Requests in the running batch (vLLM `num_requests_running`).
    pub running: Option<f64>,
    /// KV-cache use, 0.0..=1.0 (vLLM `kv_cache_usage_perc`, a fraction despite its name).
    pub kv_cache: Option<f64>,
    /// What an HAProxy agent-check answer said, if the source is an agent.
    pub agent: Option<Agent>,
}

/// An HAProxy agent-check answer (one line, comma- or space-separated words; the parts
/// sluice acts on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Agent {
    /// `75%` or `weight:75%`: that percentage of the configured weight.
    WeightPercent(u32),
    /// `weight:N`: that weight.
    Weight(u32),
    /// `drain`: no new flows, existing ones continue.
    Drain,
    /// `maint`: out of service (no new flows).
    Maint,
    /// `ready` / `up`: back to normal.
    Ready,
    /// `down` (with `#reason`, if given): out of service.
    Down(String),
}

/// The latest state of one backend's load reading.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Reading {
    /// Not read successfully yet: the backend keeps its configured weight.
    #[default]
    Never,
    /// The last good report and how old it is; `error` is the last read's failure if that
    /// read failed after this report.
    Report {
        report: Report,
        age: Duration,
        error: Option<String>,
    },
}

pub mod agent;
pub mod explain;
pub mod presets;
pub mod prom;
