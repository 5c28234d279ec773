//! Which VIP addresses a balancer announces (`[daemon.announce]`), and why: the pure part
//! of the daemon's announcer (no netlink here; the daemon installs and removes the routes).
//!
//! An address is announced while announcing is enabled, the balancer is not in
//! maintenance, and at least one VIP on that address is published in the attached
//! program and has a serving backend: up (or not checked) and taking new flows (weight
//! above 0, not draining). A down backend does not count, even under `on_down = "keep"`
//! (it serves its existing flows only); neither does a draining or quiesced one.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::{
    config::{BackendConfig, Config, Scheduler, VipConfig},
    health::Health,
    model::VipIdent,
    state::{State, ident},
};

/// Why an address is, or is not, announced (the first that applies, in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// `daemon.announce.enabled = false`: nothing is touched.
    Disabled,
    /// `sluice announce withdraw --all`: every address withdrawn.
    Maintenance,
    /// No VIP on the address is published in an attached program.
    NotAttached,
    /// No VIP on the address has a backend that is up and takes new flows.
    NoServingBackend,
    Announced,
}

impl Why {
    /// As `sluice announce status` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "announce disabled",
            Self::Maintenance => "maintenance",
            Self::NotAttached => "not attached",
            Self::NoServingBackend => "no serving backend",
            Self::Announced => "announced",
        }
    }

    pub fn announced(self) -> bool {
        self == Self::Announced
    }
}

/// One address's decision, and the VIPs (by name) on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub why: Why,
    pub vips: Vec<String>,
}

/// Whether backend `b` of `v` can take new flows now: up (or not checked), and a weight
/// above 0 in the table (not draining, not quiesced).
pub fn serving(state: &State, v: &VipConfig, b: &BackendConfig) -> bool {
    let up = state
        .health_of(ident(v), b.address)
        .is_none_or(|h| h.health == Health::Up);
    up && state.table_weight(v, b) > 0
}

/// Per VIP address of `state`'s configuration: announced or not, and why. `attached`
/// tells whether a VIP is published in the attached balancer; `maintenance`, whether
/// every address is withdrawn.
pub fn decide(
    state: &State,
    attached: impl Fn(VipIdent) -> bool,
    maintenance: bool,
) -> BTreeMap<IpAddr, Decision> {
    let enabled = state.config.daemon.announce.enabled;
    // Per address: its VIPs, whether one is attached, whether an attached one serves.
    let mut per: BTreeMap<IpAddr, (Vec<String>, bool, bool)> = BTreeMap::new();
    for v in &state.config.vips {
        let e = per.entry(v.address).or_default();
        e.0.push(v.name.clone());
        if attached(ident(v)) {
            e.1 = true;
            e.2 |= v.backends.iter().any(|b| serving(state, v, b));
        }
    }
    per.into_iter()
        .map(|(address, (vips, attached, serves))| {
            let why = if !enabled {
                Why::Disabled
            } else if maintenance {
                Why::Maintenance
            } else if !attached {
                Why::NotAttached
            } else if !serves {
                Why::NoServingBackend
            } else {
                Why::Announced
            };
            (address, Decision { why, vips })
        })
        .collect()
}

/// Whether `s` picks backends in a sequence (rr, wrr, lc, wlc) rather than by a hash of
/// the flow: a flow that ECMP moves to another balancer of a fleet may then change backend.
pub fn is_sequence(s: Scheduler) -> bool {
    matches!(
        s,
        Scheduler::RoundRobin
            | Scheduler::WeightedRoundRobin
            | Scheduler::LeastConn
            | Scheduler::WeightedLeastConn
    )
}

/// The warning for a VIP with a sequence scheduler on an announcing balancer (a fleet).
pub fn sequence_warning(v: &VipConfig) -> String {
    format!(
        "VIP {} uses scheduler {}: a flow that ECMP moves to another balancer may change \
         backend; use maglev for fleets",
        v.name,
        v.scheduler.as_str()
    )
}

/// The VIPs of `config` that [`sequence_warning`] is about: none unless announcing is
/// enabled.
pub fn sequence_vips(config: &Config) -> impl Iterator<Item = &VipConfig> {
    let enabled = config.daemon.announce.enabled;
    config
        .vips
        .iter()
        .filter(move |v| enabled && is_sequence(v.scheduler))
}

/// What `sluice announce status` shows (the `announce-status` API request's answer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceStatus {
    /// `daemon.announce.enabled`.
    pub enabled: bool,
    pub table: u32,
    pub protocol: u8,
    pub interface: String,
    /// Every address withdrawn (`sluice announce withdraw --all`), and since when (Unix
    /// seconds).
    pub maintenance: bool,
    pub maintenance_since: Option<u64>,
    /// Per VIP address, in address order.
    pub addresses: Vec<AddressStatus>,
    /// VIPs with sequence schedulers ([`sequence_warning`]).
    pub warnings: Vec<String>,
    /// Unix seconds of the last reconciliation of the routes with the kernel.
    pub reconciled: Option<u64>,
}

/// One VIP address in [`AnnounceStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressStatus {
    pub address: IpAddr,
    /// Whether its route is installed (as the last reconciliation left it).
    pub announced: bool,
    /// "announced", "maintenance", "no serving backend", "not attached", "announce
    /// disabled" or "netlink error: ...".
    pub reason: String,
    /// The names of the VIPs on it.
    pub vips: Vec<String>,
}

#[cfg(test)]
mod tests;
