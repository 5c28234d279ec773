//! The load policy applied (`[vip.load]`): every lifecycle tick, each load-driven VIP's
//! policy (`sluice_core::load::policy`) looks at its backends' latest readings; when it
//! decides new weights (past its hysteresis and rebuild limit), they go into the state and
//! the tables are republished. Only new flows follow them: the flow table keeps every
//! connection on its backend.

use std::{collections::BTreeMap, time::Instant};

use sluice_core::{
    load::policy::{Input, Policy, PolicyParams},
    model::VipIdent,
};
use tracing::{debug, info};

use super::events::Daemon;
use crate::{
    config::{Config, LoadConfig},
    health::Health,
    state::ident,
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

impl Daemon {
    /// Run every load-driven VIP's policy on the latest readings; whether the state's
    /// weights changed (the caller republishes).
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
            let Some((_, policy)) = self.policies.by_vip.get_mut(&id) else {
                continue;
            };
            let inputs: Vec<Input> = v
                .backends
                .iter()
                .map(|b| Input {
                    address: b.address,
                    weight: b.weight,
                    serving: self
                        .state
                        .health_of(id, b.address)
                        .is_none_or(|h| h.health != Health::Down),
                    reading: readings.get(&(id, b.address)).cloned().unwrap_or_default(),
                })
                .collect();
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
