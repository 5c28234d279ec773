//! One scaled VIP, one tick ([`step`]): release what the daemon removed, let ready
//! candidates join, then (every `interval_ms`) sample, decide, and provision or drain.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Call, Change, Done, KEEP, Scaler, fetch_all, modify, ready, release};
use crate::{
    autoscale::{
        BackendView, Phase,
        clock::Time,
        policy::{Metrics, Sample},
        provider::Candidate,
        reconcile,
    },
    config::{BackendConfig, BackendState, Config, VipConfig},
    health::Health,
    state::VipStatus,
};

/// One VIP, one tick.
pub(super) async fn step(
    name: &str,
    s: &mut Scaler,
    v: &VipConfig,
    vs: &VipStatus,
    now: Time,
    calls: &mpsc::Sender<Call>,
    done: &mpsc::Sender<Done>,
) {
    release_removed(name, s, v, now, done);
    let views = views(s, v, vs);
    let serving = crate::autoscale::serving(&views);
    s.report.serving = serving;

    // Candidates that passed their checks join if still wanted, else go back.
    if join_ready(name, s, serving, now, calls, done).await {
        return;
    }

    if now < s.next_eval {
        return;
    }
    s.next_eval = now.plus_ms(u64::from(s.spec.interval_ms));
    decide(name, s, v, &views, vs, now, serving).await;

    let plan = reconcile(s.desired, &views, s.pending);
    provision(name, s, v, plan.provision, done);
    if !plan.drain.is_empty() {
        drain(name, s, v, &plan.drain, now, calls).await;
    }
}

/// Drained backends the daemon removed go back to the provider.
fn release_removed(
    name: &str,
    s: &mut Scaler,
    v: &VipConfig,
    now: Time,
    done: &mpsc::Sender<Done>,
) {
    let gone: Vec<Candidate> = s
        .draining
        .values()
        .filter(|c| !v.backends.iter().any(|b| b.address == c.address))
        .cloned()
        .collect();
    for c in gone {
        s.draining.remove(&c.address);
        s.report.removed += 1;
        s.event(now, format!("{} drained and removed; releasing", c.address));
        // The provider's record (e.g. the MAC `create` printed) is the better one.
        let c = s.owned.get(&c.address).cloned().unwrap_or(c);
        release(name, Arc::clone(&s.provider), c, done);
    }
}

/// The VIP's backends as the policies see them (phase, health, connections, ownership).
fn views(s: &Scaler, v: &VipConfig, vs: &VipStatus) -> Vec<BackendView> {
    v.backends
        .iter()
        .map(|b| {
            let st = vs.backends.iter().find(|x| x.address == b.address);
            BackendView {
                address: b.address,
                phase: if b.state == BackendState::Draining {
                    Phase::Draining
                } else {
                    Phase::Active
                },
                healthy: st.is_none_or(|x| x.health == Health::Up),
                active_connections: st.map_or(0, |x| x.active),
                owned: s.owned.contains_key(&b.address) || s.provider.owns(b.address),
            }
        })
        .collect()
}

/// Add the ready candidates still wanted (one edit), release the others. True when an
/// edit was asked for: the tick ends there.
async fn join_ready(
    name: &str,
    s: &mut Scaler,
    serving: u32,
    now: Time,
    calls: &mpsc::Sender<Call>,
    done: &mpsc::Sender<Done>,
) -> bool {
    if s.ready.is_empty() {
        return false;
    }
    let want = s.desired.saturating_sub(serving) as usize;
    let ready = std::mem::take(&mut s.ready);
    let (join, back) = ready.split_at(want.min(ready.len()));
    for c in back {
        s.event(now, format!("{} no longer needed; releasing", c.address));
        release(name, Arc::clone(&s.provider), c.clone(), done);
    }
    if join.is_empty() {
        return false;
    }
    let list: Vec<String> = join.iter().map(|c| c.address.to_string()).collect();
    let change = add_backends(name, join.to_vec(), s.spec.weight);
    match modify(
        calls,
        format!("autoscaler: add {}", list.join(", ")),
        change,
    )
    .await
    {
        Ok(what) => {
            s.report.added += join.len() as u64;
            info!(vip = name, backends = %list.join(", "), change = %what, "autoscaler: backends added");
            s.event(now, format!("added {}", list.join(", ")));
        }
        Err(why) => {
            s.report.failures += 1;
            warn!(vip = name, error = %why, "autoscaler: adding backends rejected");
            s.event(now, format!("adding {} rejected: {why}", list.join(", ")));
            for c in join {
                release(name, Arc::clone(&s.provider), c.clone(), done);
            }
        }
    }
    true
}

/// The edit that adds `add` to the VIP `vip_name` (active, `weight`; their MAC under DSR).
fn add_backends(vip_name: &str, add: Vec<Candidate>, weight: u32) -> Change {
    let vip_name = vip_name.to_owned();
    Box::new(move |c: &mut Config| {
        let v = c
            .vips
            .iter_mut()
            .find(|v| v.name == vip_name)
            .ok_or("the VIP is gone")?;
        for cand in &add {
            v.backends.push(BackendConfig {
                address: cand.address,
                weight,
                mac: if v.forwarding == crate::config::Forwarding::Dsr {
                    cand.mac
                } else {
                    None
                },
                state: BackendState::Active,
                drain_remove: false,
                health: None,
            });
        }
        Ok(())
    })
}

/// Sample the VIP's metrics, let the controller decide, and record the decision (report,
/// log, history).
async fn decide(
    name: &str,
    s: &mut Scaler,
    v: &VipConfig,
    views: &[BackendView],
    vs: &VipStatus,
    now: Time,
    serving: u32,
) {
    let metrics = sample(s, v, views, vs, now).await;
    let d = s.controller.decide(&Sample {
        now,
        current: serving,
        metrics,
    });
    s.desired = d.desired;
    s.report.desired = d.desired;
    s.report.min = d.min;
    s.report.max = d.max;
    match d.direction() {
        "up" => s.report.decisions_up += 1,
        "down" => s.report.decisions_down += 1,
        _ => s.report.decisions_hold += 1,
    }
    if d.desired != d.current {
        let said: Vec<String> = d
            .said
            .iter()
            .map(|p| match p.desired {
                Some(n) => format!("{} {n} ({})", p.policy, p.reason),
                None => format!("{} - ({})", p.policy, p.reason),
            })
            .collect();
        let m = &d.metrics;
        info!(
            vip = name,
            current = d.current,
            desired = d.desired,
            reason = %d.reason,
            active_connections = m.active_connections,
            new_connections_per_s = m.new_connections_per_s,
            packets_per_s = m.packets_per_s,
            bytes_per_s = m.bytes_per_s,
            said = %said.join("; "),
            "autoscaler: decision"
        );
    }
    if s.decisions.len() == KEEP {
        s.decisions.pop_front();
    }
    s.decisions.push_back(d);
}

/// The policies' inputs now: active connections of the serving backends, rates since the
/// previous evaluation, the backends' own metric if configured, and the figures of their
/// load reports if the VIP has `[vip.load]` (the daemon's snapshot carries them).
async fn sample(
    s: &mut Scaler,
    v: &VipConfig,
    views: &[BackendView],
    vs: &VipStatus,
    now: Time,
) -> Metrics {
    let mut metrics = Metrics {
        active_connections: views
            .iter()
            .filter(|b| b.phase == Phase::Active && b.healthy)
            .map(|b| b.active_connections as f64)
            .sum(),
        ..Metrics::default()
    };
    if let Some((t, nf, p, by)) = s.prev {
        let secs = now.since(t) as f64 / 1000.0;
        if secs > 0.0 {
            metrics.new_connections_per_s = vs.new_flows.saturating_sub(nf) as f64 / secs;
            metrics.packets_per_s = vs.packets.saturating_sub(p) as f64 / secs;
            metrics.bytes_per_s = vs.bytes.saturating_sub(by) as f64 / secs;
        }
    }
    s.prev = Some((now, vs.new_flows, vs.packets, vs.bytes));
    let serving_addrs: Vec<IpAddr> = views
        .iter()
        .filter(|b| b.phase == Phase::Active && b.healthy)
        .map(|b| b.address)
        .collect();
    if v.load.is_some() {
        metrics.fill_load(serving_addrs.iter().map(|a| {
            vs.backends
                .iter()
                .find(|b| b.address == *a)
                .and_then(|b| b.load.as_ref())
        }));
    }
    if let Some(m) = &s.spec.backend_metric {
        metrics.backend = fetch_all(&serving_addrs, m).await;
    }
    metrics
}

/// Start `count` scale-outs in the background: each asks the provider for a candidate,
/// reports it [`Done::Created`], probes it, and ends [`Done::Ready`] or [`Done::Failed`].
fn provision(name: &str, s: &mut Scaler, v: &VipConfig, count: u32, done: &mpsc::Sender<Done>) {
    let in_use: Vec<IpAddr> = v.backends.iter().map(|b| b.address).collect();
    for _ in 0..count {
        s.pending += 1;
        let (p, vip, health, timeout) = (
            Arc::clone(&s.provider),
            name.to_owned(),
            v.health.clone(),
            Duration::from_millis(u64::from(s.spec.ready_timeout_ms)),
        );
        let (in_use, done) = (in_use.clone(), done.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let outcome = match p.acquire(&in_use).await {
                Err(e) => Done::Failed {
                    vip,
                    candidate: None,
                    why: e.to_string(),
                },
                Ok(c) => match done
                    .send(Done::Created {
                        vip: vip.clone(),
                        candidate: c.clone(),
                    })
                    .await
                {
                    Err(_) => return,
                    Ok(()) => match ready(c.address, &health, timeout).await {
                        Ok(()) => Done::Ready {
                            vip,
                            candidate: c,
                            took: start.elapsed(),
                        },
                        Err(why) => Done::Failed {
                            vip,
                            why: format!("{}: {why}", c.address),
                            candidate: Some(c),
                        },
                    },
                },
            };
            let _ = done.send(outcome).await;
        });
    }
}

/// Set the chosen backends draining with `drain_remove` (one edit); once the daemon has
/// removed them, [`release_removed`] gives them back.
async fn drain(
    name: &str,
    s: &mut Scaler,
    v: &VipConfig,
    chosen: &[IpAddr],
    now: Time,
    calls: &mpsc::Sender<Call>,
) {
    let drain = chosen.to_vec();
    let vip_name = name.to_owned();
    let list: Vec<String> = drain.iter().map(ToString::to_string).collect();
    let change: Change = Box::new(move |c: &mut Config| {
        let v = c
            .vips
            .iter_mut()
            .find(|v| v.name == vip_name)
            .ok_or("the VIP is gone")?;
        for b in &mut v.backends {
            if drain.contains(&b.address) {
                b.state = BackendState::Draining;
                b.drain_remove = true;
            }
        }
        Ok(())
    });
    match modify(
        calls,
        format!("autoscaler: drain {}", list.join(", ")),
        change,
    )
    .await
    {
        Ok(_) => {
            for a in chosen {
                let mac = v
                    .backends
                    .iter()
                    .find(|b| b.address == *a)
                    .and_then(|b| b.mac);
                s.draining.insert(*a, Candidate { address: *a, mac });
            }
            info!(vip = name, backends = %list.join(", "), "autoscaler: draining (fewest active connections)");
            s.event(now, format!("draining {}", list.join(", ")));
        }
        Err(why) => {
            s.report.failures += 1;
            warn!(vip = name, error = %why, "autoscaler: draining rejected");
            s.event(now, format!("draining {} rejected: {why}", list.join(", ")));
        }
    }
}
