//! Simulator policy files (`sluice simulate`): `[autoscale]`, validated as
//! `[vip.autoscale]` is, and `[sim]`, the capacity model.

use serde::Deserialize;

use super::AUTOSCALE_COUNT_RANGE;
use super::AutoscaleConfig;
use super::raw::{RawAutoscale, RawNum};
use super::validate::VipContext;
use crate::config::validate::Cx;

/// `[sim]` of a simulator policy file: the capacity model.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSettings {
    /// Concurrent connections one backend serves at 100 % utilisation.
    pub capacity: f64,
    /// Backends at the start (default: `min`).
    pub initial: Option<u32>,
    /// From the decision to a serving backend: provisioning plus health checks.
    pub startup_ms: u32,
    /// Wall-clock time of the trace's 0 (for cron), as an RFC 3339 time.
    pub start: String,
    /// Simulation step.
    pub step_ms: u32,
    /// A draining backend leaves at the latest this long after its drain began (the VIP's
    /// `drain_timeout_ms` in the daemon).
    pub drain_timeout_ms: u32,
    /// Packets per second each open connection sends, and bytes per packet (for the
    /// packets/bytes metrics).
    pub packets_per_connection: f64,
    pub bytes_per_packet: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicyFile {
    autoscale: Option<RawAutoscale>,
    sim: Option<RawSim>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSim {
    capacity: Option<RawNum>,
    initial: Option<i64>,
    startup_ms: Option<i64>,
    start: Option<String>,
    step_ms: Option<i64>,
    drain_timeout_ms: Option<i64>,
    packets_per_connection: Option<RawNum>,
    bytes_per_packet: Option<RawNum>,
}

/// Default `sim.start`: a Monday, midnight UTC.
pub const DEFAULT_SIM_START: &str = "2025-01-06T00:00:00Z";

/// Parse and validate a simulator policy file: `[autoscale]` with exactly the keys and
/// rules of `[vip.autoscale]` (the provider may be left out), and `[sim]`.
pub fn parse_policy(
    text: &str,
    origin: &str,
) -> Result<(AutoscaleConfig, SimSettings), crate::config::ConfigError> {
    let loc = crate::config::locate::Locator::new(text).map_err(|e| {
        crate::config::ConfigError::Parse {
            origin: origin.to_owned(),
            problem: crate::config::Problem {
                line: e
                    .span()
                    .map(|s| crate::config::locate::line_col(text, s.start).0),
                path: String::new(),
                message: format!("invalid TOML: {}", e.message().trim_end()),
            },
            column: None,
        }
    })?;
    let raw: RawPolicyFile =
        toml::from_str(text).map_err(|e| crate::config::ConfigError::Parse {
            origin: origin.to_owned(),
            problem: loc.describe_serde_error(&e),
            column: None,
        })?;
    let ((a, sim), problems, _) = crate::config::validate::with_cx(&loc, |cx| {
        let vip = VipContext {
            address: None,
            backends: &[],
            simulated: true,
            load: super::LoadContext::Simulated,
        };
        let a = match &raw.autoscale {
            Some(a) => cx.autoscale(a, "autoscale", &vip),
            None => {
                cx.error("autoscale", "missing required table [autoscale]");
                None
            }
        };
        let sim = match &raw.sim {
            Some(s) => cx.sim(s),
            None => {
                cx.error(
                    "sim",
                    "missing required table [sim] (it must set at least `capacity`)",
                );
                None
            }
        };
        (a, sim)
    });
    match (a, sim) {
        (Some(a), Some(s)) if problems.is_empty() => Ok((a, s)),
        _ => Err(crate::config::ConfigError::Invalid {
            origin: origin.to_owned(),
            problems,
        }),
    }
}

impl Cx<'_> {
    fn sim(&mut self, s: &RawSim) -> Option<SimSettings> {
        let mut capacity = self.num("sim.capacity", s.capacity, None, 0.0..=1e12);
        if capacity.is_some_and(|c| c.0 < 1.0) {
            self.error("sim.capacity", "a backend must serve at least 1 connection");
            capacity = None;
        }
        let initial = match s.initial {
            None => Some(None),
            Some(_) => self
                .int("sim.initial", s.initial, None, AUTOSCALE_COUNT_RANGE)
                .map(Some),
        };
        let startup_ms = self.int("sim.startup_ms", s.startup_ms, Some(30_000), 0..=3_600_000);
        let step_ms = self.int("sim.step_ms", s.step_ms, Some(1000), 10..=60_000);
        let drain_timeout_ms = self.int(
            "sim.drain_timeout_ms",
            s.drain_timeout_ms,
            Some(crate::config::DEFAULT_DRAIN_TIMEOUT_MS),
            crate::config::DRAIN_TIMEOUT_RANGE,
        );
        let start = s
            .start
            .clone()
            .unwrap_or_else(|| DEFAULT_SIM_START.to_owned());
        let start = match chrono::DateTime::parse_from_rfc3339(&start) {
            Ok(_) => Some(start),
            Err(e) => {
                self.error(
                    "sim.start",
                    format!("{start:?} is not an RFC 3339 time like \"{DEFAULT_SIM_START}\": {e}"),
                );
                None
            }
        };
        let ppc = self.num(
            "sim.packets_per_connection",
            s.packets_per_connection,
            Some(10.0),
            0.0..=1e9,
        );
        let bpp = self.num(
            "sim.bytes_per_packet",
            s.bytes_per_packet,
            Some(800.0),
            0.0..=1e6,
        );
        Some(SimSettings {
            capacity: capacity?.0,
            initial: initial?,
            startup_ms: startup_ms?,
            start: start?,
            step_ms: step_ms?,
            drain_timeout_ms: drain_timeout_ms?,
            packets_per_connection: ppc?.0,
            bytes_per_packet: bpp?.0,
        })
    }
}
