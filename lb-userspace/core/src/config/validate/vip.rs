//! `[[vip]]` and `[[vip.backend]]`: each VIP's keys, its backends, the duplicates across
//! them, and the kernel's limits on VIPs, backends and table slots.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;

use super::{Cx, is_prime};
use crate::config::autoscale::{AutoscaleConfig, LoadContext, VipContext};
use crate::config::raw::{RawBackend, RawHealth, RawVip};
use crate::config::{
    BackendConfig, BackendState, DEFAULT_BACKEND_CAPACITY, DEFAULT_VIP_CAPACITY, DaemonConfig,
    Forwarding, HealthConfig, OnDown, Protocol, Scheduler, VipConfig,
};
use crate::config::{
    DEFAULT_DRAIN_TIMEOUT_MS, DEFAULT_TABLE_SIZE, DEFAULT_WEIGHT, DRAIN_TIMEOUT_RANGE,
    GOOD_SLOTS_PER_BACKEND, MIN_SLOTS_PER_BACKEND, SLOW_START_RANGE, TABLE_SIZE_RANGE,
    WEIGHT_RANGE,
};

impl Cx<'_> {
    /// The VIPs, checked against the daemon's capacities (`None`: the daemon section is
    /// invalid; its defaults are checked against then, but not the table capacity).
    pub(super) fn vips(
        &mut self,
        raw: &[RawVip],
        daemon: Option<&DaemonConfig>,
    ) -> Option<Vec<VipConfig>> {
        let table_capacity = daemon.map(|d| d.table_capacity);
        let max_vips = daemon.map_or(DEFAULT_VIP_CAPACITY, |d| d.vip_capacity) as usize;
        if raw.len() > max_vips {
            self.error(
                &format!("vip[{max_vips}]"),
                format!(
                    "too many VIPs: {} configured, at most {max_vips} (daemon.vip_capacity)",
                    raw.len()
                ),
            );
        }
        let max_backends =
            daemon.map_or(DEFAULT_BACKEND_CAPACITY, |d| d.backend_capacity) as usize - 1;
        let total_backends: usize = raw.iter().map(|v| v.backend.len()).sum();
        if total_backends > max_backends {
            let (i, j) = nth_backend(raw, max_backends);
            self.error(
                &format!("vip[{i}].backend[{j}]"),
                format!(
                    "too many backends: {total_backends} configured over all VIPs, at most {max_backends} \
                     (daemon.backend_capacity - 1; backend slot 0 is reserved)"
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
                // An unknown scheduler (already an error) counts as the smallest need.
                let sched = vip
                    .scheduler
                    .map_or(crate::model::Sched::Maglev, Scheduler::sched);
                slots_needed += sched.table_slots(size);
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
                         (2 × table_size for each maglev or source-hash VIP, 4 × table_size \
                         for each rr, wrr, lc or wlc VIP: tables are double-buffered, and a \
                         sequence scheduler also keeps a fallback Maglev table); raise \
                         table_capacity to at least {slots_needed} or use smaller tables"
                ),
            );
        }
        ok.then_some(vips)
    }

    fn vip(&mut self, v: &RawVip, path: &str) -> PartialVip {
        let raw_health = v.health.clone().unwrap_or_default();
        let mut vip = self.vip_settings(v, path, &raw_health);
        vip.backends = self.vip_backends(v, path, &vip, &raw_health);
        vip.load = match &v.load {
            None => Some(None),
            Some(l) => self.load(&format!("{path}.load"), l).map(Some),
        };
        let load = LoadContext::of(v.load.is_some(), vip.load.as_ref().and_then(Option::as_ref));
        vip.autoscale = self.vip_autoscale(v, path, vip.address, vip.backends.as_deref(), load);
        self.warn_if_no_new_flows(v, path);
        vip
    }

    /// The VIP's own keys, its health checks and its name; `backends` and `autoscale` are
    /// left `None` for the next steps.
    fn vip_settings(&mut self, v: &RawVip, path: &str, raw_health: &RawHealth) -> PartialVip {
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
        let health = self.health(&at("health"), raw_health, port, protocol);
        let name = self.vip_name(&at("name"), v.name.as_ref(), address, port, protocol);
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
            autoscale: None,
            load: None,
            backends: None,
        }
    }

    /// `name`, or `<address>:<port>/<protocol>` when the file gives none.
    fn vip_name(
        &mut self,
        path: &str,
        value: Option<&String>,
        address: Option<IpAddr>,
        port: Option<u16>,
        protocol: Option<Protocol>,
    ) -> Option<String> {
        match value {
            Some(name) => match vip_name_problem(name) {
                None => Some(name.clone()),
                Some(why) => {
                    self.error(path, format!("{name:?} is not a valid VIP name: {why}"));
                    None
                }
            },
            None => match (address, port, protocol) {
                (Some(a), Some(p), Some(proto)) => Some(VipConfig::default_name(a, p, proto)),
                _ => None,
            },
        }
    }

    /// The VIP's backends, each with its own checks when it overrides the VIP's, and no
    /// address twice.
    fn vip_backends(
        &mut self,
        v: &RawVip,
        path: &str,
        vip: &PartialVip,
        raw_health: &RawHealth,
    ) -> Option<Vec<BackendConfig>> {
        let mut backends = Some(Vec::with_capacity(v.backend.len()));
        let mut seen: HashMap<IpAddr, usize> = HashMap::new();
        for (j, b) in v.backend.iter().enumerate() {
            let bpath = format!("{path}.backend[{j}]");
            let mut backend = self.backend(b, &bpath, vip.address, vip.forwarding);
            if let Some(over) = &b.health {
                let merged = raw_health.overridden_by(over);
                let h = self.health(&format!("{bpath}.health"), &merged, vip.port, vip.protocol);
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
        backends
    }

    /// `[vip.autoscale]`, checked against the VIP's address and valid backends; absent:
    /// `Some(None)`.
    fn vip_autoscale(
        &mut self,
        v: &RawVip,
        path: &str,
        address: Option<IpAddr>,
        backends: Option<&[BackendConfig]>,
        load: LoadContext,
    ) -> Option<Option<AutoscaleConfig>> {
        match &v.autoscale {
            None => Some(None),
            Some(a) => {
                let addrs: Vec<IpAddr> = backends
                    .into_iter()
                    .flatten()
                    .map(|b: &BackendConfig| b.address)
                    .collect();
                let cx = VipContext {
                    address,
                    backends: &addrs,
                    simulated: false,
                    load,
                };
                self.autoscale(a, &format!("{path}.autoscale"), &cx)
                    .map(Some)
            }
        }
    }

    /// Warns when new flows to the VIP would be dropped: no backends (and no autoscaler to
    /// add some), or all of weight 0.
    fn warn_if_no_new_flows(&mut self, v: &RawVip, path: &str) {
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
            Some(s) => match crate::config::parse_mac(s) {
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
    autoscale: Option<Option<AutoscaleConfig>>,
    load: Option<Option<crate::config::LoadConfig>>,
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
            load: self.load?,
            backends: self.backends?,
        })
    }
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
