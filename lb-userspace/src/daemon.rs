//! `sluice run`: load, publish the configured state, attach, then serve: health checks turn
//! into republished states, the status file is refreshed, and FIB-resolved backends' neighbour
//! entries are kept warm, until SIGINT/SIGTERM; then detach.

use std::time::Duration;

use lb_common::programs;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    config::{CheckKind, XdpMode},
    dataplane::{AttachMode, Dataplane, DataplaneError, Sizes, neigh},
    health::{self, Health},
    state::{self, State},
};

/// How often the neighbour entries of FIB-resolved backends are refreshed (well inside the
/// kernel's default 60 s `gc_stale_time`).
const NEIGH_REFRESH: Duration = Duration::from_secs(20);
/// How often the status file (with counters) is rewritten.
const STATUS_REFRESH: Duration = Duration::from_secs(1);

pub fn attach_mode(m: XdpMode) -> AttachMode {
    match m {
        XdpMode::Native => AttachMode::Native,
        XdpMode::Generic => AttachMode::Generic,
        XdpMode::Auto => AttachMode::Auto,
    }
}

/// Load the data plane for `state`, publish it and attach the balancer.
pub fn start(state: &State) -> Result<Dataplane, DataplaneError> {
    let d = &state.config.daemon;
    let mut dp = Dataplane::load(Sizes {
        flow_entries: d.flow_table_size,
        table_slots: d.table_capacity,
    })?;
    let desired = state.desired();
    let report = dp.publish(&desired)?;
    neigh::prime(&neigh::fib_backends(&desired));
    info!(
        vips = report.vips_added,
        backends = report.backends_added,
        tables = report.tables_built,
        build_us = report.build_us,
        "published"
    );
    let mode = dp.attach(programs::BALANCER, &d.interface, attach_mode(d.xdp_mode))?;
    info!(interface = %d.interface, ?mode, "balancer attached");
    Ok(dp)
}

/// Serve until a signal: the daemon's main loop. Must run inside a tokio runtime.
pub async fn serve(mut state: State, mut dp: Dataplane) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel(256);
    let mut checkers = Vec::new();
    for v in &state.config.vips {
        for (i, b) in v.backends.iter().enumerate() {
            let spec = v.health_of(i).clone();
            if spec.check != CheckKind::None {
                checkers.push(health::spawn(state::ident(v), b.address, spec, tx.clone()));
            }
        }
    }
    drop(tx);
    let dir = state.config.daemon.state_dir.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut neigh_tick = tokio::time::interval(NEIGH_REFRESH);
    let mut status_tick = tokio::time::interval(STATUS_REFRESH);
    let mut fib_backends = neigh::fib_backends(&state.desired());
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r?; break }
            _ = term.recv() => break,
            Some(e) = rx.recv() => {
                if !state.apply(&e) {
                    continue;
                }
                match e.health {
                    Health::Down => warn!(vip = %e.vip, backend = %e.backend, reason = %e.reason, "backend down: no new flows, its flows move"),
                    Health::Up => info!(vip = %e.vip, backend = %e.backend, reason = %e.reason, "backend up"),
                }
                let desired = state.desired();
                if let Err(err) = dp.publish(&desired) {
                    warn!(error = %err, "publishing the health change failed; the data plane keeps the previous state");
                }
                fib_backends = neigh::fib_backends(&desired);
                if let Err(err) = state::write_status(&dir, &state.status(&dp)) {
                    warn!(error = %err, dir = %dir.display(), "writing the status file");
                }
            }
            _ = neigh_tick.tick() => neigh::prime(&fib_backends),
            _ = status_tick.tick() => {
                if let Err(err) = state::write_status(&dir, &state.status(&dp)) {
                    warn!(error = %err, dir = %dir.display(), "writing the status file");
                }
            }
        }
    }
    for c in checkers {
        c.abort();
    }
    info!("signal received; detaching");
    dp.detach_all()?;
    let _ = std::fs::remove_file(dir.join("status.json"));
    Ok(())
}
