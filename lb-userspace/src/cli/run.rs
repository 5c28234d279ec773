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
    rt.block_on(daemon::serve(state, dp))
}
