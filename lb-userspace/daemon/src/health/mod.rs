//! Health checks: one task per backend probes it every interval (the first probe delayed by
//! a random part of the interval, so backends are not probed in lock-step) and reports
//! *transitions* (up → down after `fall` consecutive failures, down → up after `rise`
//! consecutive successes), with every probe's outcome, to the daemon, which turns
//! transitions into edits of the desired state.
//!
//! A backend starts up: the daemon serves immediately on start, and a dead backend is found
//! within `fall × interval`.
//!
//! What a check proves: with a [`PathProber`] (the daemon always has one), that the backend
//! serves the VIP: `tcp` sends a SYN to the VIP through the forwarding path (DSR or IPIP,
//! as clients' packets go) and wants the SYN-ACK; `http` asks the backend's own address for
//! the page and also wants that SYN-ACK through the VIP; `udp` sends the datagram through the
//! VIP and wants the reply. Without a prober, only the backend's own address is checked.

mod path;
mod probe;

use std::{
    hash::{BuildHasher as _, Hasher as _},
    net::IpAddr,
    time::Duration,
};

use tokio::sync::mpsc;

use crate::config::CheckKind;

pub use path::PathProber;
pub use probe::{Answer, GetError, get, get_on, judge_status, probe};

use crate::{config::HealthConfig, dataplane::VipIdent};
pub use sluice_core::health::{Event, Health, Tracker};

/// A random delay in `[0, interval)` for the first probe of `backend`.
fn jitter(vip: &VipIdent, backend: IpAddr, interval: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(format!("{vip}{backend}").as_bytes());
    let ms = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(h.finish() % ms)
}

/// One check of `backend`: (success, what happened). See the module docs for what each kind
/// proves.
pub async fn check(
    prober: Option<&PathProber>,
    vip: VipIdent,
    backend: IpAddr,
    spec: &HealthConfig,
) -> (bool, String) {
    let Some(prober) = prober else {
        return probe(backend, spec).await;
    };
    match spec.check {
        CheckKind::None => (true, "no check".to_owned()),
        CheckKind::Tcp | CheckKind::Udp => match prober.probe(vip, backend, spec).await {
            Ok(what) => (true, what),
            Err(why) => (false, why),
        },
        CheckKind::Http => {
            let (ok, what) = probe(backend, spec).await;
            if !ok {
                return (false, what);
            }
            match prober.probe(vip, backend, spec).await {
                Ok(path) => (true, format!("{what}; {path}")),
                Err(why) => (false, format!("{what}, but {why}")),
            }
        }
    }
}

/// Spawn the checker of one backend (of a VIP); it stops when `events` is closed. Each
/// check's duration goes to `latency`.
pub fn spawn(
    prober: Option<std::sync::Arc<PathProber>>,
    (vip, backend): (VipIdent, IpAddr),
    spec: HealthConfig,
    initial: Health,
    latency: std::sync::Arc<crate::metrics::Latency>,
    events: mpsc::Sender<Event>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = Duration::from_millis(u64::from(spec.interval_ms));
        tokio::time::sleep(jitter(&vip, backend, interval)).await;
        let mut tracker = Tracker::new(spec.rise, spec.fall);
        tracker.start_at(initial);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = std::time::Instant::now();
            let (ok, reason) = check(prober.as_deref(), vip, backend, &spec).await;
            latency.observe(started.elapsed());
            // Every result is reported (the daemon shows the last one); only a changed
            // `health` changes the data plane.
            tracker.observe(ok);
            let e = Event {
                vip,
                backend,
                health: tracker.state(),
                reason,
                ok: Some(ok),
            };
            if events.send(e).await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_then_rise() {
        let mut t = Tracker::new(2, 3);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(
            t.observe(false),
            Some(Health::Down),
            "third failure in a row"
        );
        assert_eq!(t.observe(false), None, "already down");
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(Health::Up), "second success in a row");
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let mut t = Tracker::new(1, 2);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), None, "streak restarted");
        assert_eq!(t.observe(false), Some(Health::Down));
        assert_eq!(t.observe(true), Some(Health::Up), "rise 1");
    }

    #[test]
    fn jitter_stays_inside_the_interval() {
        let vip = VipIdent {
            address: "10.0.0.1".parse().unwrap(),
            port: 80,
            proto: 6,
        };
        for i in 0..50u8 {
            let d = jitter(
                &vip,
                IpAddr::from([10, 0, 1, i]),
                Duration::from_millis(700),
            );
            assert!(d < Duration::from_millis(700));
        }
    }
}
