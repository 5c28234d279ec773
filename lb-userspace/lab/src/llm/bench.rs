//! The inference comparison in the lab (`sluice bench inference`): the [`Scenario`]'s
//! model servers ([`LlmServer`], one per lab backend, each with its own speed), the real
//! daemon and XDP program in front of them (DSR), and the conversations sent from a lab
//! client through the VIP by [`loadgen::run_sessions`]. The same servers and the same
//! conversations go through each policy in turn; only the VIP's scheduler and its
//! `[vip.load]` change between runs. The servers are idle between runs (every request of
//! a run has ended). The scenario's background conversations go from a second lab client
//! straight to their backend's own address, past the balancer, during each run.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use super::{
    LlmError, LlmServer,
    loadgen::{self, Sessions},
    scenario::{Balancer, Row, Scenario},
};
use crate::{
    config::{InFlight, LoadConfig, LoadSource, Scheduler},
    lab::{Lab, LabError, LabSpec, Servers, TCP_PORT, VIP4, Weights, daemon::Daemon},
};
use sluice_core::{health::Health, load::presets::Preset};

/// The lab VIP the comparison uses.
const VIP: &str = "lab-tcp4";

/// Why the comparison could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error("policy {policy}: {message}")]
    Policy { policy: Balancer, message: String },
}

/// The `[vip.load]` of the load-aware policies: the vLLM preset on the model servers' own
/// port, at the scenario's read interval and policy limits.
fn load_config(s: &Scenario) -> LoadConfig {
    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    LoadConfig {
        source: LoadSource::Prometheus,
        port: TCP_PORT,
        path: "/metrics".to_owned(),
        interval_ms: ms(s.read_interval),
        timeout_ms: ms(s.read_interval).min(200),
        stale_after_ms: ms(s.policy.stale_after),
        preset: Some(Preset::Vllm),
        waiting: None,
        running: None,
        kv_cache: None,
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "small, non-negative policy limits"
        )]
        queue_limit: s.policy.queue_limit.round() as u32,
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a fraction of 1 as a percentage"
        )]
        kv_limit_percent: (s.policy.kv_limit * 100.0).round() as u32,
        in_flight: InFlight::Reported,
    }
}

/// Run `scenario` through each of `policies` on a lab of prefix `prefix`; `progress` is
/// told what happens.
pub fn run(
    prefix: &str,
    scenario: &Scenario,
    policies: &[Balancer],
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row>, BenchError> {
    let n = scenario.backends.len();
    let lab = Lab::up(
        LabSpec::new(prefix)
            .backends(n)
            .clients(2)
            .ipv6(false)
            .servers(Servers::None),
    )?;
    let mut servers = Vec::with_capacity(n);
    for (i, params) in scenario.backends.iter().enumerate() {
        servers.push(LlmServer::start_in(
            lab.backend(i),
            TCP_PORT,
            params.clone(),
        )?);
    }
    let sessions = Sessions::generate(&scenario.sessions);
    let background = scenario
        .background
        .as_ref()
        .map(|b| (Sessions::generate(&b.sessions), b.backend.min(n - 1)));
    progress(&format!(
        "lab {prefix}: {n} model servers up; {} conversations ({} requests) a run through \
         the balancer, {} in the background",
        sessions.sessions.len(),
        sessions.requests(),
        background.as_ref().map_or(0, |(b, _)| b.sessions.len()),
    ));
    let mut rows = Vec::new();
    for &policy in policies {
        let summary = run_one(&lab, scenario, &sessions, background.as_ref(), policy)?;
        progress(&format!("{policy}:\n{summary}"));
        rows.push(Row {
            balancer: policy,
            summary,
        });
    }
    for s in servers {
        s.stop();
    }
    Ok(rows)
}

/// One policy: start the daemon with it, wait until every backend is up, send the
/// conversations, stop the daemon.
fn run_one(
    lab: &Lab,
    scenario: &Scenario,
    sessions: &Sessions,
    background: Option<&(Sessions, usize)>,
    policy: Balancer,
) -> Result<loadgen::Summary, BenchError> {
    let mut config = lab.daemon_config(&Weights::Equal)?;
    config.daemon.least_conn_refresh_ms =
        u32::try_from(scenario.lc_refresh.as_millis()).unwrap_or(u32::MAX);
    let vip = config
        .vips
        .iter_mut()
        .find(|v| v.name == VIP)
        .ok_or_else(|| BenchError::Policy {
            policy,
            message: format!("the lab has no VIP {VIP}"),
        })?;
    vip.scheduler = if policy.least_conn() {
        Scheduler::LeastConn
    } else {
        Scheduler::Maglev
    };
    for b in &mut vip.backends {
        b.weight = scenario.weight;
    }
    vip.load = policy.reads_load().then(|| load_config(scenario));
    let addresses: Vec<IpAddr> = vip.backends.iter().map(|b| b.address).collect();
    let daemon = Daemon::start(lab, config)?;
    for a in addresses {
        daemon.wait_health(VIP, a, Health::Up, Duration::from_secs(30))?;
    }
    let target = SocketAddr::from((VIP4, TCP_PORT));
    let think = scenario.sessions.think;
    let report = std::thread::scope(|s| {
        let bg = background.map(|(b, i)| {
            let to = lab.backend(*i).sock4(TCP_PORT);
            s.spawn(move || {
                loadgen::run_sessions(Some(lab.client(1)), to, b, scenario.timeout, think)
            })
        });
        let report = loadgen::run_sessions(
            Some(lab.client(0)),
            target,
            sessions,
            scenario.timeout,
            think,
        );
        // The background's own figures are not the comparison's; its requests only load
        // the server.
        let _background = bg.map(std::thread::ScopedJoinHandle::join);
        report
    });
    daemon.stop()?;
    Ok(report.summary())
}
