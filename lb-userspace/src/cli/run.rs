//! `sluice run`.

use std::path::Path;

use tracing::warn;

use super::Mode;
use crate::{daemon, state::State};

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
    let state = State::new(loaded.config);
    let dp = daemon::start(&state)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // No control API yet: edits come from the config file at start.
    let (_edits, edit_rx) = tokio::sync::mpsc::channel(1);
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        daemon::serve(state, dp, edit_rx, shutdown).await
    })
}
