//! The load policy applied (`[vip.load]`): every lifecycle tick, each load-driven VIP's
//! policy (`sluice_core::load::policy`) looks at its backends' latest readings; when it
//! decides new weights (past its hysteresis and rebuild limit), they go into the state and
//! the tables are republished. Only new flows follow them: the flow table keeps every
//! connection on its backend.

use std::{collections::BTreeMap, net::IpAddr, time::Instant};

use sluice_core::{
    load::{
        Reading,
        explain::{BackendLoad, LoadExplain, VipLoad},
        policy::{self, Input, Policy, PolicyParams},
    },
    model::VipIdent,
};
use tracing::{debug, info};

use super::events::Daemon;
use crate::{
    config::{Config, InFlight, LoadConfig, LoadSource, VipConfig},
    health::Health,
    state::{State, ident},
};

/// The policy parameters of a VIP's `[vip.load]`.
pub(super) fn params(l: &LoadConfig) -> PolicyParams {
    PolicyParams {
        queue_limit: f64::from(l.queue_limit),
        kv_limit: f64::from(l.kv_limit_percent) / 100.0,
        stale_after: std::time::Duration::from_millis(u64::from(l.stale_after_ms)),
        ..PolicyParams::default()
    }
}

/// One policy per load-driven VIP, kept across commits while its `[vip.load]` is unchanged
/// (so its hysteresis and rebuild limit carry on).
#[derive(Default)]
pub(super) struct Policies {
    by_vip: BTreeMap<VipIdent, (LoadConfig, Policy)>,
}

impl Policies {
    /// Follow a new configuration: policies of VIPs whose `[vip.load]` went or changed go.
    pub(super) fn follow(&mut self, config: &Config) {
        let mut next = BTreeMap::new();
        for v in &config.vips {
            let Some(l) = &v.load else { continue };
            let id = ident(v);
            let kept = self.by_vip.remove(&id).filter(|(old, _)| old == l);
            let entry = kept.unwrap_or_else(|| (l.clone(), Policy::new(params(l))));
            next.insert(id, entry);
        }
        self.by_vip = next;
    }
}

/// What the policy is given for `v`'s backends: configured weight, health and reading.
fn inputs(
    state: &State,
    v: &VipConfig,
    readings: &BTreeMap<(VipIdent, IpAddr), Reading>,
) -> Vec<Input> {
    let id = ident(v);
    v.backends
        .iter()
        .map(|b| Input {
            address: b.address,
            weight: b.weight,
            serving: state
                .health_of(id, b.address)
                .is_none_or(|h| h.health != Health::Down),
            reading: readings.get(&(id, b.address)).cloned().unwrap_or_default(),
        })
        .collect()
}

/// Whether `v`'s least-connection plan counts the reported requests in flight: `lc`/`wlc`
/// with `in_flight = "reported"`.
fn counts_reported(v: &VipConfig, load: &LoadConfig) -> bool {
    v.scheduler.sched().least_conn() && load.in_flight == InFlight::Reported
}

/// Per backend, the requests in flight `v`'s plan counts instead of its connections
/// (`None`: its connections; always `None` unless [`counts_reported`]).
fn plan_in_flight(
    v: &VipConfig,
    load: &LoadConfig,
    params: &PolicyParams,
    inputs: &[Input],
) -> Vec<(IpAddr, Option<u64>)> {
    let reported = counts_reported(v, load);
    policy::in_flight(params, inputs)
        .into_iter()
        .map(|(a, n)| (a, n.filter(|_| reported)))
        .collect()
}

impl Daemon {
    /// Run every load-driven VIP's policy on the latest readings, and give `lc`/`wlc` plans
    /// the reported requests in flight; whether the state changed (the caller republishes).
    pub(super) fn apply_load_policies(&mut self) -> bool {
        if self.policies.by_vip.is_empty() {
            return false;
        }
        let readings = self.loads.readings();
        let now = Instant::now();
        let mut changed = false;
        let vips = self.state.config.vips.clone();
        for v in &vips {
            let id = ident(v);
            let Some((load, policy)) = self.policies.by_vip.get_mut(&id) else {
                continue;
            };
            let inputs = inputs(&self.state, v, &readings);
            let in_flight = plan_in_flight(v, load, policy.params(), &inputs);
            if self.state.set_load_in_flight(id, in_flight) {
                debug!(vip = %v.name, "load policy: new reported requests in flight for the least-connection plan");
                changed = true;
            }
            let Some(decision) = policy.update(now, &inputs) else {
                continue;
            };
            for w in &decision.backends {
                debug!(vip = %v.name, backend = %w.address, weight = w.weight, reason = %w.reason, "load policy");
            }
            let weights = decision.backends.iter().map(|w| (w.address, w.weight));
            if self.state.set_load_weights(id, weights) {
                let summary: Vec<String> = decision
                    .backends
                    .iter()
                    .map(|w| format!("{} {}", w.address, w.weight))
                    .collect();
                info!(vip = %v.name, fail_open = decision.fail_open, weights = %summary.join(", "), "load policy: new weights for new flows");
                changed = true;
            }
        }
        changed
    }

    /// `sluice plan load [VIP]`: what the policy makes of the current readings, for `vip`
    /// or every load-driven VIP. Changes nothing.
    pub(super) fn explain_load(&self, vip: Option<&str>) -> Result<LoadExplain, String> {
        let config = &self.state.config;
        if let Some(name) = vip {
            let Some(v) = config.vips.iter().find(|v| v.name == name) else {
                let names: Vec<&str> = config.vips.iter().map(|v| v.name.as_str()).collect();
                return Err(format!(
                    "no VIP named {name:?} (VIPs: {})",
                    names.join(", ")
                ));
            };
            if v.load.is_none() {
                return Err(format!(
                    "VIP {name:?} has no [vip.load] section: its weights come from the configuration alone"
                ));
            }
        }
        let readings = self.loads.readings();
        let dp = self
            .dp
            .lock()
            .map_err(|_| "data plane lock poisoned".to_owned())?;
        let mut out = LoadExplain::default();
        for v in &config.vips {
            if vip.is_some_and(|n| n != v.name) {
                continue;
            }
            let (Some(load), Some((_, policy))) = (&v.load, self.policies.by_vip.get(&ident(v)))
            else {
                continue;
            };
            let connections = |addr: IpAddr| {
                let id = dp.layout().backend_id(&ident(v), addr)?;
                dp.active(id).ok()
            };
            out.vips
                .push(self.explain_vip(v, load, policy, &readings, connections));
        }
        Ok(out)
    }

    fn explain_vip(
        &self,
        v: &VipConfig,
        load: &LoadConfig,
        policy: &Policy,
        readings: &BTreeMap<(VipIdent, IpAddr), Reading>,
        connections: impl Fn(IpAddr) -> Option<u64>,
    ) -> VipLoad {
        let id = ident(v);
        let params = policy.params();
        let inputs = inputs(&self.state, v, readings);
        let decision = policy::decide(params, &inputs);
        let lc = v.scheduler.sched().least_conn();
        let reported: BTreeMap<IpAddr, Option<u64>> =
            policy::in_flight(params, &inputs).into_iter().collect();
        let backends = decision
            .backends
            .iter()
            .map(|w| {
                let input = inputs.iter().find(|i| i.address == w.address);
                let in_flight = reported.get(&w.address).copied().flatten();
                let counted = (lc && in_flight.is_some() && counts_reported(v, load))
                    .then_some("reported")
                    .or(lc.then_some("connections"));
                BackendLoad {
                    address: w.address,
                    configured: w.configured,
                    weight: w.weight,
                    applied: self.state.load_weight(id, w.address),
                    saturated: w.saturated,
                    reason: w.reason.clone(),
                    serving: input.is_none_or(|i| i.serving),
                    load: self.loads.status_of(id, w.address, load),
                    reported_in_flight: in_flight.filter(|_| lc),
                    connections: if lc { connections(w.address) } else { None },
                    counted: counted.map(str::to_owned),
                }
            })
            .collect();
        VipLoad {
            name: v.name.clone(),
            vip: id.to_string(),
            scheduler: v.scheduler.to_string(),
            source: match load.source {
                LoadSource::Prometheus => format!("prometheus :{}{}", load.port, load.path),
                LoadSource::Agent => format!("agent :{}", load.port),
            },
            queue_limit: params.queue_limit,
            kv_limit: params.kv_limit,
            stale_after_ms: u64::try_from(params.stale_after.as_millis()).unwrap_or(u64::MAX),
            in_flight: lc.then(|| load.in_flight.to_string()),
            fail_open: decision.fail_open,
            held_back: policy.held_back(),
            backends,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(load: &str) -> Config {
        let text = format!(
            "[daemon]\ninterface = \"eth0\"\n\n[[vip]]\nname = \"llm\"\naddress = \"10.0.0.1\"\n\
             port = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n{load}\n\
             [[vip.backend]]\naddress = \"10.0.1.1\"\n"
        );
        crate::config::parse(&text, "test")
            .expect("a config")
            .config
    }

    #[test]
    fn the_load_section_sets_the_policy_parameters() {
        let c = config(
            "[vip.load]\nsource = \"prometheus\"\npreset = \"vllm\"\nqueue_limit = 3\nkv_limit_percent = 90\nstale_after_ms = 2000",
        );
        let p = params(c.vips[0].load.as_ref().expect("a load section"));
        assert_eq!((p.queue_limit, p.kv_limit), (3.0, 0.9));
        assert_eq!(p.stale_after, std::time::Duration::from_secs(2));
    }

    #[test]
    fn least_connection_plans_count_the_reported_requests_in_flight() {
        let with = |sched: &str, load: &str| {
            let mut c = config(&format!(
                "[vip.load]\nsource = \"prometheus\"\npreset = \"vllm\"\n{load}"
            ));
            c.vips[0].scheduler = crate::config::Named::ALL
                .iter()
                .find(|(n, _)| *n == sched)
                .map(|(_, s)| *s)
                .expect("a scheduler");
            c
        };
        let report = |waiting: f64, age_ms: u64| Reading::Report {
            report: sluice_core::load::Report {
                waiting: Some(waiting),
                running: Some(2.0),
                ..Default::default()
            },
            age: std::time::Duration::from_millis(age_ms),
            error: None,
        };
        let input = |reading| Input {
            address: "10.0.1.1".parse().expect("an address"),
            weight: 1,
            serving: true,
            reading,
        };
        let counted = |c: &Config, reading| {
            let v = &c.vips[0];
            let load = v.load.as_ref().expect("a load section");
            plan_in_flight(v, load, &params(load), &[input(reading)])[0].1
        };
        for sched in ["lc", "wlc"] {
            let c = with(sched, "");
            assert_eq!(
                counted(&c, report(3.0, 10)),
                Some(5),
                "{sched}: running + waiting"
            );
            assert_eq!(
                counted(&c, report(3.0, 60_000)),
                None,
                "{sched}: stale, so connections"
            );
            assert_eq!(
                counted(&c, Reading::Never),
                None,
                "{sched}: no report, so connections"
            );
            let c = with(sched, "in_flight = \"connections\"");
            assert_eq!(
                counted(&c, report(3.0, 10)),
                None,
                "{sched}: told to count connections"
            );
        }
        let c = with("maglev", "");
        assert_eq!(
            counted(&c, report(3.0, 10)),
            None,
            "maglev has no plan to feed"
        );
    }

    #[test]
    fn policies_follow_the_configuration() {
        let mut p = Policies::default();
        p.follow(&config(""));
        assert!(p.by_vip.is_empty(), "no [vip.load], no policy");
        let with = config("[vip.load]\nsource = \"prometheus\"\npreset = \"vllm\"");
        p.follow(&with);
        assert_eq!(p.by_vip.len(), 1);
        p.follow(&config(""));
        assert!(p.by_vip.is_empty(), "the section went, so did its policy");
    }
}
