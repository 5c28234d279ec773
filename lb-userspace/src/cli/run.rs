//! `sluice run`.

use std::path::Path;

use tracing::{info, warn};

use super::Mode;
use crate::{daemon, dataplane::neigh};

/// How often the neighbour entries of FIB-resolved backends are refreshed (well inside the
/// kernel's default 60 s `gc_stale_time`).
const NEIGH_REFRESH: std::time::Duration = std::time::Duration::from_secs(20);

pub fn run(file: &Path, interface: Option<String>, mode: Option<Mode>) -> anyhow::Result<()> {
    let mut loaded = crate::config::load(file)?;
    for w in &loaded.warnings {
        warn!("{w}");
    }
    if let Some(i) = interface {
        loaded.config.daemon.interface = i;
    }
    if let Some(m) = mode {
        loaded.config.daemon.xdp_mode = m.into();
    }
    let mut dp = daemon::start(&loaded.config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let fib_backends = neigh::fib_backends(&daemon::desired_from(&loaded.config));
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut refresh = tokio::time::interval(NEIGH_REFRESH);
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => break r?,
                _ = term.recv() => break,
                _ = refresh.tick() => neigh::prime(&fib_backends),
            }
        }
        anyhow::Ok(())
    })?;
    info!("signal received; detaching");
    dp.detach_all()?;
    Ok(())
}
