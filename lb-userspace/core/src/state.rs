//! The daemon's state: the configuration plus what the health checks found and where each
//! backend is in its lifecycle. Every change (edits, health transitions, slow-start steps,
//! drains finishing) is applied here and republished as one desired state, so the data
//! plane only ever receives whole, consistent states.
//!
//! Backend lifecycle, as `sluice backend list`, `stats` and the metrics show it:
//!
//! ```text
//!   (added) ─→ slow-start ─→ active ─→ draining ─→ drained ─→ (removed, with drain_remove)
//!                  ↑            │  ↖ undrain ↙
//!                  └── up ── down (health checks; any state)
//! ```
//!
//! - `slow-start`: a backend added while running, or back up after being down, gets
//!   `weight × elapsed / vip.slow_start_ms` (in 1/100 steps, `WEIGHT_SCALE`) until the
//!   window ends;
//! - `quiesced`: weight 0 (`set-weight 0`): no new flows, its existing ones stay;
//! - `draining` (`state = "draining"` in the configuration): weight 0 in the table, so no
//!   new flows, but still serving its existing flows;
//! - `drained`: draining and no active connections left (kernel connection tracking), or
//!   `vip.drain_timeout_ms` passed; with `drain_remove` the daemon then removes it.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{
    config::{BackendConfig, BackendState, CheckKind, Config, OnDown},
    health::{Event, Health},
    model::{Desired, DesiredBackend, DesiredVip, Global, VipIdent},
};

/// What the health checks know of one backend.
#[derive(Clone, Debug)]
pub struct BackendHealth {
    pub health: Health,
    pub since: SystemTime,
    pub reason: String,
    pub transitions: u64,
    /// Of `transitions`, those from up to down.
    pub transitions_down: u64,
    /// Checks run, and how many of them failed, since the daemon started.
    pub checks: u64,
    pub failed_checks: u64,
}

/// The health reason of a backend with `check = "none"`: up, and never checked.
pub const NOT_CHECKED: &str = "not checked (check = none)";

/// The backends of `config` with `check = "none"`.
fn unchecked(config: &Config) -> std::collections::BTreeSet<(VipIdent, IpAddr)> {
    config
        .vips
        .iter()
        .flat_map(|v| {
            v.backends
                .iter()
                .enumerate()
                .filter(|(i, _)| v.health_of(*i).check == CheckKind::None)
                .map(|(_, b)| (ident(v), b.address))
        })
        .collect()
}

/// Every lifecycle state a backend can be in ([`State::lifecycle`]).
pub const LIFECYCLE_STATES: [&str; 6] = [
    "active",
    "slow-start",
    "quiesced",
    "draining",
    "drained",
    "down",
];

/// Configured weights are multiplied by this in the data plane (see `State::table_weight`).
pub const WEIGHT_SCALE: u32 = 100;

/// Where a backend is in its lifecycle (runtime only: a restarted daemon starts drains and
/// slow starts afresh).
#[derive(Clone, Copy, Debug, Default)]
pub struct Life {
    /// Since when the backend ramps up (slow start); `None`: full weight.
    pub ramp_from: Option<Instant>,
    /// When its current drain began.
    pub drain_started: Option<Instant>,
    /// Since when a draining backend has had no active connection.
    pub zero_since: Option<Instant>,
    /// When it was found drained, and why (`true`: the deadline passed with connections
    /// left).
    pub drained: Option<(Instant, bool)>,
}

#[derive(Debug)]
pub struct State {
    pub config: Config,
    /// Edits applied since the daemon started (the API's optimistic-concurrency token).
    pub version: u64,
    /// Where applied edits are persisted before they are acknowledged (`sluice run`;
    /// `None` for in-process daemons).
    pub persist: Option<crate::persist::Store>,
    health: BTreeMap<(VipIdent, IpAddr), BackendHealth>,
    life: BTreeMap<(VipIdent, IpAddr), Life>,
    /// The weights the load policy set (`[vip.load]`), in configured units: they replace a
    /// backend's configured weight for new flows (0: none) until the policy changes them.
    load_weights: BTreeMap<(VipIdent, IpAddr), u32>,
    /// The requests in flight the backends of `lc`/`wlc` VIPs report (`[vip.load]`,
    /// `in_flight = "reported"`), set by the load policy step: the least-connection plan
    /// counts them instead of the backend's connections ([`DesiredBackend::in_flight`]).
    /// A backend without an entry (no fresh report) is counted by its connections.
    load_in_flight: BTreeMap<(VipIdent, IpAddr), u64>,
    /// [`crate::fingerprint::config`] of `config` (`None`: it could not be exported).
    /// Computed with the VIPs' texts by [`State::new`] and [`State::with_config`]: every
    /// commit (API edit, reload, autoscaler, drained-backend removal) makes its next state
    /// one of those ways, so this always describes the running configuration.
    config_fingerprint: Option<crate::fingerprint::Fingerprint>,
    /// The TOML of each VIP of `config`, in order ([`crate::config::vip_toml`]; empty if
    /// one could not be written): the fingerprint and the saved configuration are made of
    /// them, and an edit writes out again only the VIPs it changed.
    vip_texts: Vec<std::sync::Arc<str>>,
}

mod next;

/// The dataplane identity of a configured VIP.
pub fn ident(v: &crate::config::VipConfig) -> VipIdent {
    VipIdent {
        address: v.address,
        port: v.port,
        proto: v.protocol.ip_proto(),
    }
}

impl State {
    /// Every backend starts up, at full weight (it may have been serving before a
    /// restart); draining ones start their drain now.
    pub fn new(config: Config) -> Self {
        let mut s = Self::new_unprinted(config);
        s.set_texts(|_| None);
        s
    }

    /// Each VIP's TOML (`reuse`'s text where it has one, else printed) and the
    /// configuration's fingerprint made of them.
    fn set_texts(
        &mut self,
        reuse: impl Fn(&crate::config::VipConfig) -> Option<std::sync::Arc<str>>,
    ) {
        self.vip_texts = self
            .config
            .vips
            .iter()
            .map(|v| match reuse(v) {
                Some(t) => Ok(t),
                None => crate::config::vip_toml(v).map(Into::into),
            })
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        self.config_fingerprint =
            crate::fingerprint::config_from_parts(&self.config, &self.vip_texts).ok();
    }

    /// [`Config::to_toml`] of the configuration, made of the VIPs' texts kept.
    pub fn config_toml(&self) -> Result<String, toml::ser::Error> {
        if self.config.vips.is_empty() || self.vip_texts.len() != self.config.vips.len() {
            return self.config.to_toml();
        }
        let mut text = crate::config::daemon_toml(&self.config.daemon)?;
        text.reserve(self.vip_texts.iter().map(|t| t.len()).sum());
        for t in &self.vip_texts {
            text.push_str(t);
        }
        Ok(text)
    }

    /// [`State::new`] without the configuration's fingerprint.
    fn new_unprinted(config: Config) -> Self {
        let now = SystemTime::now();
        let mut health = BTreeMap::new();
        let mut life = BTreeMap::new();
        for v in &config.vips {
            for (i, b) in v.backends.iter().enumerate() {
                life.insert(
                    (ident(v), b.address),
                    Life {
                        drain_started: (b.state == BackendState::Draining).then(Instant::now),
                        ..Life::default()
                    },
                );
                health.insert(
                    (ident(v), b.address),
                    BackendHealth {
                        health: Health::Up,
                        since: now,
                        reason: if v.health_of(i).check == CheckKind::None {
                            NOT_CHECKED
                        } else {
                            "not checked yet"
                        }
                        .to_owned(),
                        transitions: 0,
                        transitions_down: 0,
                        checks: 0,
                        failed_checks: 0,
                    },
                );
            }
        }
        Self {
            config_fingerprint: None,
            vip_texts: Vec::new(),
            config,
            version: 0,
            persist: None,
            health,
            life,
            load_weights: BTreeMap::new(),
            load_in_flight: BTreeMap::new(),
        }
    }

    /// Apply a health transition; whether the desired state changed.
    pub fn apply(&mut self, e: &Event) -> bool {
        let Some(h) = self.health.get_mut(&(e.vip, e.backend)) else {
            return false;
        };
        h.reason.clone_from(&e.reason);
        if let Some(ok) = e.ok {
            h.checks += 1;
            h.failed_checks += u64::from(!ok);
        }
        if h.health == e.health {
            return false;
        }
        h.health = e.health;
        h.since = SystemTime::now();
        h.transitions += 1;
        h.transitions_down += u64::from(e.health == Health::Down);
        // Back up: ramp up again.
        if e.health == Health::Up
            && let Some(l) = self.life.get_mut(&(e.vip, e.backend))
        {
            l.ramp_from = Some(Instant::now());
        }
        true
    }

    /// The fingerprint of the running configuration (`None`: it could not be exported);
    /// a new configuration comes with a new state ([`State::with_config`]) and so a
    /// fingerprint computed again.
    pub fn config_fingerprint(&self) -> Option<crate::fingerprint::Fingerprint> {
        self.config_fingerprint
    }

    pub fn life_of(&self, vip: VipIdent, backend: IpAddr) -> Option<&Life> {
        self.life.get(&(vip, backend))
    }

    pub fn life_mut(&mut self, vip: VipIdent, backend: IpAddr) -> Option<&mut Life> {
        self.life.get_mut(&(vip, backend))
    }

    /// The weight backend `b` of `v` has in the table now, in configured units rounded up
    /// (what `sluice backend list` shows): 0 while draining, ramping during slow start.
    pub fn effective_weight(&self, v: &crate::config::VipConfig, b: &BackendConfig) -> u32 {
        self.table_weight(v, b).div_ceil(WEIGHT_SCALE)
    }

    /// The weight published to the data plane: the configured weight × `WEIGHT_SCALE`,
    /// 0 while draining, and during slow start `weight × WEIGHT_SCALE × elapsed / window`
    /// (at least 1). Every scheduler only uses weight ratios (Maglev and wrr) or whether a
    /// weight is 0 (rr, lc), so the scale changes nothing but lets a backend of weight 1
    /// ramp in 100 steps.
    pub fn table_weight(&self, v: &crate::config::VipConfig, b: &BackendConfig) -> u32 {
        let weight = self
            .load_weights
            .get(&(ident(v), b.address))
            .copied()
            .unwrap_or(b.weight);
        if b.state == BackendState::Draining || b.weight == 0 || weight == 0 {
            return 0;
        }
        let full = weight.saturating_mul(WEIGHT_SCALE);
        let Some(from) = self.life_of(ident(v), b.address).and_then(|l| l.ramp_from) else {
            return full;
        };
        let window = Duration::from_millis(u64::from(v.slow_start_ms));
        let elapsed = from.elapsed();
        if window.is_zero() || elapsed >= window {
            return full;
        }
        let w = (f64::from(full) * elapsed.as_secs_f64() / window.as_secs_f64()).ceil();
        (w as u32).clamp(1, full)
    }

    /// Set the load policy's weights of `vip`'s backends (configured units); whether any
    /// changed. Backends not named keep theirs.
    pub fn set_load_weights(
        &mut self,
        vip: VipIdent,
        weights: impl IntoIterator<Item = (IpAddr, u32)>,
    ) -> bool {
        let mut changed = false;
        for (addr, w) in weights {
            if !self.life.contains_key(&(vip, addr)) {
                continue;
            }
            changed |= self.load_weights.insert((vip, addr), w) != Some(w);
        }
        changed
    }

    /// The load policy's weight of a backend, if it set one.
    pub fn load_weight(&self, vip: VipIdent, addr: IpAddr) -> Option<u32> {
        self.load_weights.get(&(vip, addr)).copied()
    }

    /// Set the reported requests in flight of `vip`'s backends (`None`: not known, so the
    /// plan counts its connections); whether any changed. Backends not named keep theirs.
    pub fn set_load_in_flight(
        &mut self,
        vip: VipIdent,
        in_flight: impl IntoIterator<Item = (IpAddr, Option<u64>)>,
    ) -> bool {
        let mut changed = false;
        for (addr, n) in in_flight {
            if !self.life.contains_key(&(vip, addr)) {
                continue;
            }
            let before = match n {
                Some(n) => self.load_in_flight.insert((vip, addr), n),
                None => self.load_in_flight.remove(&(vip, addr)),
            };
            changed |= before != n;
        }
        changed
    }

    /// The reported requests in flight a least-connection plan counts for a backend, if
    /// the load policy step set them.
    pub fn load_in_flight(&self, vip: VipIdent, addr: IpAddr) -> Option<u64> {
        self.load_in_flight.get(&(vip, addr)).copied()
    }

    /// Whether some backend is still ramping up (the daemon republishes as it goes).
    pub fn ramping(&self) -> bool {
        // Checked five times a second: first a plain scan (no lookups), which is all it
        // takes when nothing ramps, however many backends there are.
        let longest = self.config.vips.iter().map(|v| v.slow_start_ms).max();
        let longest = Duration::from_millis(u64::from(longest.unwrap_or(0)));
        if longest.is_zero() {
            return false;
        }
        if !self
            .life
            .values()
            .any(|l| l.ramp_from.is_some_and(|t| t.elapsed() < longest))
        {
            return false;
        }
        self.config.vips.iter().any(|v| {
            let window = Duration::from_millis(u64::from(v.slow_start_ms));
            v.backends.iter().any(|b| {
                self.life_of(ident(v), b.address)
                    .and_then(|l| l.ramp_from)
                    .is_some_and(|t| t.elapsed() < window)
            })
        })
    }

    /// The lifecycle state of a backend, as shown to users: one of [`LIFECYCLE_STATES`],
    /// the same everywhere (`backend list`, `stats`, the metrics).
    pub fn lifecycle(&self, v: &crate::config::VipConfig, b: &BackendConfig) -> &'static str {
        let id = ident(v);
        lifecycle_of(
            b,
            self.health_of(id, b.address),
            self.life_of(id, b.address),
            self.table_weight(v, b),
        )
    }

    pub fn health_of(&self, vip: VipIdent, backend: IpAddr) -> Option<&BackendHealth> {
        self.health.get(&(vip, backend))
    }

    /// The backends the health checks have down.
    pub fn down(&self) -> impl Iterator<Item = (VipIdent, IpAddr)> + '_ {
        self.health
            .iter()
            .filter(|(_, h)| h.health == Health::Down)
            .map(|((v, b), _)| (*v, *b))
    }

    /// The data plane's desired state: the config, with down backends not serving
    /// (`vip.on_down = "reassign"`) or serving only their existing flows (`"keep"`).
    pub fn desired(&self) -> Desired {
        let d = &self.config.daemon;
        Desired {
            global: Global {
                hash_seed: d.hash_seed,
                encap_v4: (d.encap_source_v4.addr(), d.encap_source_v4.prefix_len()),
                encap_v6: (d.encap_source_v6.addr(), d.encap_source_v6.prefix_len()),
                icmp_too_big_per_sec: d.icmp_too_big_per_sec,
                new_flow_limit_per_cpu: d.new_flow_limit_per_cpu,
            },
            vips: self
                .config
                .vips
                .iter()
                .map(|v| self.desired_vip(v))
                .collect(),
        }
    }

    /// The desired state of VIP `v` (one entry of [`Self::desired`]).
    pub fn desired_vip(&self, v: &crate::config::VipConfig) -> DesiredVip {
        let id = ident(v);
        DesiredVip {
            ident: id,
            mode: v.forwarding.mode(),
            scheduler: v.scheduler.sched(),
            table_size: v.table_size,
            backends: v
                .backends
                .iter()
                .map(|b| {
                    let up = self
                        .health_of(id, b.address)
                        .is_none_or(|h| h.health == Health::Up);
                    // Down: out of the table either way; with `keep` its flows
                    // stay (as when draining), with `reassign` they move.
                    let keep = !up && v.on_down == OnDown::Keep;
                    DesiredBackend {
                        address: b.address,
                        weight: if keep { 0 } else { self.table_weight(v, b) },
                        mac: b.mac,
                        serving: up || keep,
                        in_flight: if v.scheduler.sched().least_conn() {
                            self.load_in_flight(id, b.address)
                        } else {
                            None
                        },
                    }
                })
                .collect(),
        }
    }
}

/// [`State::lifecycle`] from what is known of the backend (looked up once by the caller).
pub fn lifecycle_of(
    b: &BackendConfig,
    health: Option<&BackendHealth>,
    life: Option<&Life>,
    table_weight: u32,
) -> &'static str {
    if health.is_some_and(|h| h.health == Health::Down) {
        return "down";
    }
    if b.state == BackendState::Draining {
        return if life.is_some_and(|l| l.drained.is_some()) {
            "drained"
        } else {
            "draining"
        };
    }
    // Weight 0 configured, or set by the load policy (a saturated or drained backend).
    if b.weight == 0 || table_weight == 0 {
        return "quiesced";
    }
    if table_weight < b.weight.saturating_mul(WEIGHT_SCALE) {
        return "slow-start";
    }
    "active"
}

/// How fresh the active-connection figures are (see `dataplane::conntrack`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConntrackStatus {
    /// Since the last flow-table sweep (the exact recount); `None`: none yet.
    pub last_sweep_ms_ago: Option<u64>,
    pub last_sweep_took_us: Option<u64>,
    /// Flows the last sweep walked.
    pub last_sweep_flows: Option<u64>,
    /// Open flows expired for idleness, and closing flows reaped, since the daemon started.
    pub expired: u64,
    pub reaped: u64,
    /// Flows evicted because the table was past its high-water mark (closing flows first,
    /// then those never seen again, then the least recently seen), since the daemon started.
    #[serde(default)]
    pub evicted: u64,
    /// The slots of the flow table's region in use (it grows and shrinks with the flows;
    /// 0: a daemon too old to say).
    #[serde(default)]
    pub region_slots: u64,
}

/// What `sluice backend list` shows; written by the daemon to `<state_dir>/status.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// Unix time of the snapshot.
    pub written: u64,
    pub vips: Vec<VipStatus>,
    pub reasons: BTreeMap<String, u64>,
    #[serde(default)]
    pub conntrack: ConntrackStatus,
    /// The configuration fingerprint (`crate::fingerprint::config`): equal on balancers
    /// running the same configuration.
    #[serde(default)]
    pub config_fingerprint: String,
    /// Frames forwarded through `bpf_fib_lookup` because their backend's next hop was not
    /// resolved, since the program was loaded.
    #[serde(default)]
    pub fib_fallbacks: u64,
    /// New flows forwarded by their hash without a flow entry (the flood guard's rate,
    /// `daemon.new_flow_limit_per_cpu`, exceeded), since the program was loaded.
    #[serde(default)]
    pub unpinned_flows: u64,
    /// New flows forwarded by their hash without a flow entry because the flow table was
    /// full (`daemon.flow_table_size`), since the program was loaded.
    #[serde(default)]
    pub table_full_flows: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipStatus {
    pub name: String,
    pub vip: String,
    pub forwarding: String,
    #[serde(default)]
    pub scheduler: String,
    pub check: String,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    /// Active connections over all its backends.
    #[serde(default)]
    pub active: u64,
    /// The table fingerprint (`crate::fingerprint::vip`) of its published table: equal on
    /// balancers that send its new flows to the same backends. Empty: not published yet.
    #[serde(default)]
    pub fingerprint: String,
    /// Its packets by outcome (`lb_common::reason` names; those counted at least once).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reasons: BTreeMap<String, u64>,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub address: IpAddr,
    /// Configured weight.
    pub weight: u32,
    /// Weight in the table now (0 while draining; ramping in slow start).
    #[serde(default)]
    pub effective_weight: u32,
    /// active, slow-start, draining, drained or down.
    #[serde(default)]
    pub lifecycle: String,
    /// Open connections (kernel connection tracking; see `ConntrackStatus` for freshness).
    #[serde(default)]
    pub active: u64,
    /// Connections closed (FIN/RST seen, or moved away), since the slot was created.
    #[serde(default)]
    pub closes: u64,
    pub health: Health,
    /// Unix time of the last transition (or of the daemon's start).
    pub since: u64,
    /// The last probe's outcome.
    pub reason: String,
    pub transitions: u64,
    /// Of `transitions`, those from up to down (the rest went up).
    #[serde(default)]
    pub transitions_down: u64,
    /// Checks run and failed since the daemon started.
    #[serde(default)]
    pub checks: u64,
    #[serde(default)]
    pub failed_checks: u64,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    /// Flow-table entries pinned to this backend (asked for with `Status { flows: true }`:
    /// it walks the flow table). Idle entries count until the sweep expires or evicts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows: Option<u64>,
    /// The backend's last load report, when its VIP has `[vip.load]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadStatus>,
    /// Where its packets leave when it is reached through a route (IPIP, DSR without a
    /// configured MAC): `10.0.0.1 on eth0 (02:00:00:00:00:01), mtu 1500`, or why it is not
    /// resolved (its packets then go through the kernel's FIB on every packet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<NextHopStatus>,
}

/// A backend's resolved next hop (see [`BackendStatus::next_hop`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NextHopStatus {
    /// Whether the program forwards from it (else through `bpf_fib_lookup`).
    pub resolved: bool,
    /// The next hop, or why there is none.
    pub detail: String,
}

/// A backend's load reading as `sluice backend list` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadStatus {
    /// The figures of the last good report (`None`: it did not say, or none yet).
    pub waiting: Option<f64>,
    pub running: Option<f64>,
    pub kv_cache: Option<f64>,
    /// An agent's answer, as it read (e.g. `75%`, `drain`, `down#disk full`).
    pub agent: Option<String>,
    /// Since the last good report (`None`: none yet).
    pub age_ms: Option<u64>,
    /// No report, or older than `stale_after_ms`.
    pub stale: bool,
    /// The last read's failure, if it failed.
    pub error: Option<String>,
    /// Reads that failed since the reader started.
    pub errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = "[daemon]\ninterface = \"x\"\n[[vip]]\nname = \"web\"\naddress = \"10.0.0.1\"\n\
                    port = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\nslow_start_ms = 10000\n\
                    [[vip.backend]]\naddress = \"10.0.0.2\"\nweight = 10\n";
        crate::config::parse(text, "test").unwrap().config
    }

    #[test]
    fn reported_in_flight_reaches_least_connection_plans_only() {
        let lc = |sched: &str| {
            let text = format!(
                "[daemon]\ninterface = \"x\"\n[[vip]]\nname = \"llm\"\naddress = \"10.0.0.1\"\n\
                 port = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\nscheduler = \"{sched}\"\n\
                 [vip.load]\nsource = \"prometheus\"\npreset = \"vllm\"\n\
                 [[vip.backend]]\naddress = \"10.0.0.2\"\n[[vip.backend]]\naddress = \"10.0.0.3\"\n"
            );
            crate::config::parse(&text, "test").unwrap().config
        };
        let mut s = State::new(lc("lc"));
        let id = ident(&s.config.vips[0]);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        let unknown: IpAddr = "10.9.9.9".parse().unwrap();
        assert!(s.set_load_weights(id, [(b, 0)]));
        let (v, vb) = (&s.config.vips[0], &s.config.vips[0].backends[1]);
        assert_eq!(s.lifecycle(v, vb), "quiesced", "the load policy's weight 0");
        assert!(s.set_load_in_flight(id, [(a, Some(7)), (b, None), (unknown, Some(1))]));
        assert!(
            !s.set_load_in_flight(id, [(a, Some(7)), (b, None)]),
            "no change"
        );
        let d = s.desired();
        let got: Vec<Option<u64>> = d.vips[0].backends.iter().map(|x| x.in_flight).collect();
        assert_eq!(got, [Some(7), None], "unknown: counted by its connections");
        // Kept across a commit of the same VIP; cleared when a report goes.
        let mut s = s.with_config(lc("lc"));
        assert_eq!(s.load_in_flight(id, a), Some(7));
        assert!(s.set_load_in_flight(id, [(a, None)]));
        assert_eq!(s.desired().vips[0].backends[0].in_flight, None);
        // A hashing scheduler has no plan to feed.
        s.set_load_in_flight(id, [(a, Some(3))]);
        let s = s.with_config(lc("maglev"));
        assert_eq!(s.desired().vips[0].backends[0].in_flight, None);
    }

    #[test]
    fn slow_start_ramps_added_and_recovered_backends_only() {
        let s = State::new(config());
        let (v, b) = (&s.config.vips[0], &s.config.vips[0].backends[0]);
        // At start (maybe serving before a restart): full weight at once.
        assert_eq!(s.effective_weight(v, b), 10);
        assert_eq!(s.lifecycle(v, b), "active");

        // Added while running: ramps from 1.
        let mut c = config();
        let added = BackendConfig {
            address: "10.0.0.3".parse().unwrap(),
            ..c.vips[0].backends[0].clone()
        };
        c.vips[0].backends.push(added);
        let mut s = s.with_config(c);
        let (v, new) = (&s.config.vips[0], &s.config.vips[0].backends[1]);
        assert_eq!(s.effective_weight(v, new), 1);
        assert!(s.table_weight(v, new) < 10, "{}", s.table_weight(v, new));
        assert_eq!(s.lifecycle(v, new), "slow-start");
        assert!(s.ramping());
        // Just under half-way through the window: half the weight (rounded up).
        let key = (ident(v), new.address);
        s.life.get_mut(&key).unwrap().ramp_from =
            Some(Instant::now() - Duration::from_millis(4_500));
        let (v, new) = (&s.config.vips[0], &s.config.vips[0].backends[1]);
        assert_eq!(s.effective_weight(v, new), 5);
        assert!((449..=452).contains(&s.table_weight(v, new)));
        s.life.get_mut(&key).unwrap().ramp_from = Some(Instant::now() - Duration::from_secs(11));
        let (v, new) = (&s.config.vips[0], &s.config.vips[0].backends[1]);
        assert_eq!(s.effective_weight(v, new), 10);
        assert!(!s.ramping());

        // Back up after being down: ramps again.
        let e = |health| Event {
            vip: key.0,
            backend: key.1,
            health,
            reason: String::new(),
            ok: None,
        };
        assert!(s.apply(&e(Health::Down)));
        assert!(s.apply(&e(Health::Up)));
        let (v, new) = (&s.config.vips[0], &s.config.vips[0].backends[1]);
        assert_eq!(s.effective_weight(v, new), 1);
    }

    #[test]
    fn the_config_fingerprint_follows_every_new_configuration() {
        let s = State::new(config());
        let first = s.config_fingerprint().expect("a fingerprint");
        let mut c = config();
        c.vips[0].backends[0].weight = 11;
        let s = s.with_config(c);
        let second = s.config_fingerprint().expect("a fingerprint");
        assert_ne!(first, second);
        assert_eq!(s.with_config(config()).config_fingerprint(), Some(first));
    }

    #[test]
    fn a_weight_1_backend_ramps_in_fine_steps() {
        let mut c = config();
        c.vips[0].backends[0].weight = 1;
        let mut s = State::new(c.clone());
        let key = (
            ident(&s.config.vips[0]),
            s.config.vips[0].backends[0].address,
        );
        s.life.get_mut(&key).unwrap().ramp_from =
            Some(Instant::now() - Duration::from_millis(2_500));
        let (v, b) = (&s.config.vips[0], &s.config.vips[0].backends[0]);
        // A quarter of the way: a quarter of the scaled weight, though the configured
        // weight is 1.
        assert!(
            (25..=27).contains(&s.table_weight(v, b)),
            "{}",
            s.table_weight(v, b)
        );
        assert_eq!(s.lifecycle(v, b), "slow-start");
        assert_eq!(s.desired().vips[0].backends[0].weight, s.table_weight(v, b));
    }

    #[test]
    fn weight_0_is_quiesced_everywhere() {
        let mut c = config();
        c.vips[0].backends[0].weight = 0;
        let s = State::new(c);
        let (v, b) = (&s.config.vips[0], &s.config.vips[0].backends[0]);
        assert_eq!(s.lifecycle(v, b), "quiesced");
        assert!(LIFECYCLE_STATES.contains(&s.lifecycle(v, b)));
    }

    #[test]
    fn check_none_says_not_checked() {
        let mut c = config();
        c.vips[0].health.check = CheckKind::None;
        let s = State::new(c.clone());
        let v = &s.config.vips[0];
        let h = s.health_of(ident(v), v.backends[0].address).unwrap();
        assert_eq!((h.health, h.reason.as_str()), (Health::Up, NOT_CHECKED));

        // Checked and down, then its checks are switched off: up, unchecked (no checker
        // runs that could ever bring it back).
        let s = State::new(config());
        let key = (
            ident(&s.config.vips[0]),
            s.config.vips[0].backends[0].address,
        );
        let mut s = s;
        assert!(s.apply(&Event {
            vip: key.0,
            backend: key.1,
            health: Health::Down,
            reason: "connect refused".to_owned(),
            ok: Some(false),
        }));
        let s = s.with_config(c);
        let h = s.health_of(key.0, key.1).unwrap();
        assert_eq!((h.health, h.reason.as_str()), (Health::Up, NOT_CHECKED));
        // And checked again: waiting for its first check.
        let s = s.with_config(config());
        assert_eq!(s.health_of(key.0, key.1).unwrap().reason, "not checked yet");
    }

    #[test]
    fn draining_takes_weight_zero_and_undrain_restores_it() {
        let mut c = config();
        c.vips[0].backends[0].state = BackendState::Draining;
        let s = State::new(c);
        let (v, b) = (&s.config.vips[0], &s.config.vips[0].backends[0]);
        assert_eq!(s.effective_weight(v, b), 0);
        assert_eq!(s.lifecycle(v, b), "draining");
        assert!(
            s.desired().vips[0].backends[0].serving,
            "existing flows continue"
        );
        let s = s.with_config(config());
        let (v, b) = (&s.config.vips[0], &s.config.vips[0].backends[0]);
        assert_eq!(
            (s.effective_weight(v, b), s.lifecycle(v, b)),
            (10, "active")
        );
    }

    #[test]
    fn down_backends_move_their_flows_or_keep_them_as_on_down_says() {
        for (on_down, serving) in [(OnDown::Reassign, false), (OnDown::Keep, true)] {
            let mut c = config();
            c.vips[0].slow_start_ms = 0;
            c.vips[0].on_down = on_down;
            let mut s = State::new(c);
            let key = (
                ident(&s.config.vips[0]),
                s.config.vips[0].backends[0].address,
            );
            let e = |health| Event {
                vip: key.0,
                backend: key.1,
                health,
                reason: String::new(),
                ok: None,
            };
            let live = DesiredBackend {
                address: key.1,
                weight: 10 * WEIGHT_SCALE,
                mac: None,
                serving: true,
                in_flight: None,
            };
            assert_eq!(s.desired().vips[0].backends[0], live);
            assert!(s.apply(&e(Health::Down)));
            let down = s.desired().vips[0].backends[0].clone();
            assert_eq!(down.serving, serving, "{on_down:?}: existing flows");
            if on_down == OnDown::Keep {
                assert_eq!(down.weight, 0, "keep: no new flows");
            }
            assert_eq!(
                s.lifecycle(&s.config.vips[0], &s.config.vips[0].backends[0]),
                "down"
            );
            assert!(s.apply(&e(Health::Up)));
            assert!(s.desired().vips[0].backends[0].serving);
        }
    }
}
