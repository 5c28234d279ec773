//! Drains: when a draining backend is drained, and what follows. A producer of edits like
//! the health checks: it only decides; the daemon applies the outcome through the same
//! path as every other edit (validate, publish, persist).
//!
//! A draining backend is **drained** when its active connections (kernel connection
//! tracking, see `dataplane::conntrack`) have been zero for `SETTLE` (so the last ACKs of a
//! close still reach it), or when the VIP's `drain_timeout_ms` has passed (the connections
//! left will then move or be reset when the backend goes: the log says how many). A drained
//! backend with `drain_remove` is removed from the configuration.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{
    config::{BackendState, Config},
    model::VipIdent,
    state::{State, ident},
};

/// How long a draining backend must have had no active connection before it is drained.
pub const SETTLE: Duration = Duration::from_secs(1);

/// A drain that just finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drained {
    pub vip: VipIdent,
    pub vip_name: String,
    pub backend: IpAddr,
    /// The deadline passed with this many connections still open (0: drained cleanly).
    pub left: u64,
    pub took: Duration,
    /// Remove it now (`drain_remove`).
    pub remove: bool,
}

/// Find the drains that finished. `active` gives a backend's open connections (`None`
/// when the data plane does not know the backend yet). Marks them drained in `state`.
pub fn check(
    state: &mut State,
    now: Instant,
    active: impl Fn(VipIdent, IpAddr) -> Option<u64>,
) -> Vec<Drained> {
    let mut done = Vec::new();
    let draining: Vec<(VipIdent, String, IpAddr, bool, u32)> = state
        .config
        .vips
        .iter()
        .flat_map(|v| {
            v.backends
                .iter()
                .filter(|b| b.state == BackendState::Draining)
                .map(|b| {
                    (
                        ident(v),
                        v.name.clone(),
                        b.address,
                        b.drain_remove,
                        v.drain_timeout_ms,
                    )
                })
        })
        .collect();
    for (vip, vip_name, backend, remove, timeout_ms) in draining {
        let Some(n) = active(vip, backend) else {
            continue;
        };
        let Some(life) = state.life_mut(vip, backend) else {
            continue;
        };
        if life.drained.is_some() {
            continue;
        }
        let started = *life.drain_started.get_or_insert(now);
        let took = now.saturating_duration_since(started);
        if n == 0 {
            let since = *life.zero_since.get_or_insert(now);
            if now.saturating_duration_since(since) < SETTLE {
                continue;
            }
        } else {
            life.zero_since = None;
            if timeout_ms == 0 || took < Duration::from_millis(u64::from(timeout_ms)) {
                continue;
            }
        }
        life.drained = Some((now, n > 0));
        done.push(Drained {
            vip,
            vip_name,
            backend,
            left: n,
            took,
            remove,
        });
    }
    done
}

/// `config` without the drained backends that asked to be removed.
pub fn without_removed(config: &Config, done: &[Drained]) -> Option<Config> {
    let mut next = config.clone();
    let mut changed = false;
    for d in done.iter().filter(|d| d.remove) {
        for v in next.vips.iter_mut().filter(|v| ident(v) == d.vip) {
            let before = v.backends.len();
            v.backends.retain(|b| b.address != d.backend);
            changed |= v.backends.len() != before;
        }
    }
    changed.then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(drain_timeout_ms: u32) -> Config {
        let text = format!(
            "[daemon]\ninterface = \"x\"\n[[vip]]\nname = \"web\"\naddress = \"10.0.0.1\"\nport = 80\n\
             protocol = \"tcp\"\nforwarding = \"dsr\"\ndrain_timeout_ms = {drain_timeout_ms}\n\
             [[vip.backend]]\naddress = \"10.0.0.2\"\nstate = \"draining\"\ndrain_remove = true\n\
             [[vip.backend]]\naddress = \"10.0.0.3\"\n"
        );
        crate::config::parse(&text, "test").unwrap().config
    }

    #[test]
    fn drained_after_settling_at_zero_then_removed() {
        let mut s = State::new(config(0));
        let t0 = Instant::now();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        // Connections open: not drained, however long (no deadline).
        assert!(check(&mut s, t0, |_, _| Some(3)).is_empty());
        assert!(check(&mut s, t0 + Duration::from_secs(3600), |_, _| Some(3)).is_empty());
        // Zero, but not for SETTLE yet.
        let t1 = t0 + Duration::from_secs(3601);
        assert!(check(&mut s, t1, |_, _| Some(0)).is_empty());
        let done = check(&mut s, t1 + SETTLE, |_, _| Some(0));
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].backend, done[0].left, done[0].remove),
            (b, 0, true)
        );
        assert_eq!(
            s.lifecycle(&s.config.vips[0], &s.config.vips[0].backends[0]),
            "drained"
        );
        // Reported once.
        assert!(check(&mut s, t1 + SETTLE * 2, |_, _| Some(0)).is_empty());
        let next = without_removed(&s.config, &done).unwrap();
        assert_eq!(next.vips[0].backends.len(), 1);
        assert_eq!(next.vips[0].backends[0].address.to_string(), "10.0.0.3");
    }

    #[test]
    fn a_connection_during_settling_restarts_it() {
        let mut s = State::new(config(0));
        let t0 = Instant::now();
        assert!(check(&mut s, t0, |_, _| Some(0)).is_empty());
        assert!(check(&mut s, t0 + SETTLE / 2, |_, _| Some(1)).is_empty());
        assert!(check(&mut s, t0 + SETTLE, |_, _| Some(0)).is_empty());
        assert_eq!(check(&mut s, t0 + SETTLE * 2, |_, _| Some(0)).len(), 1);
    }

    #[test]
    fn deadline_ends_a_drain_with_connections_left() {
        let mut s = State::new(config(5_000));
        let t0 = Instant::now();
        assert!(check(&mut s, t0, |_, _| Some(2)).is_empty());
        assert!(check(&mut s, t0 + Duration::from_millis(4_999), |_, _| Some(2)).is_empty());
        let done = check(&mut s, t0 + Duration::from_secs(5), |_, _| Some(2));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].left, 2);
    }
}
