//! `sluice run`.

use std::path::Path;

use tracing::{info, warn};

use super::Mode;
use crate::daemon;

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
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    info!("signal received; detaching");
    dp.detach_all()?;
    Ok(())
}
