//! `sluice run`.

use std::path::Path;

use tracing::{info, warn};

use super::Mode;
use crate::{
    daemon,
    state::{self, State},
};

pub fn run(file: &Path, interface: Option<String>, mode: Option<Mode>) -> anyhow::Result<()> {
    let mut loaded = crate::config::load(file)?;
    for w in &loaded.warnings {
        warn!("{w}");
    }
    // Live edits made on top of this very file survive restarts; a changed file wins.
    let bytes = std::fs::read(file)?;
    let hash = state::file_hash(&bytes);
    let runtime = state::runtime_path(&loaded.config.daemon.state_dir);
    if let Some(text) = state::read_runtime(&runtime, hash) {
        match crate::config::parse(&text, &runtime.display().to_string()) {
            Ok(l) => {
                info!(path = %runtime.display(), "resuming the live edits made on top of {}", file.display());
                loaded = l;
            }
            Err(e) => {
                warn!(error = %e, "the saved runtime configuration is invalid; starting from the config file")
            }
        }
    } else if runtime.exists() {
        warn!(path = %runtime.display(), "{} changed since the live edits were saved: the file wins, the saved edits are discarded", file.display());
        let _ = std::fs::remove_file(&runtime);
    }
    if let Some(i) = interface {
        loaded.config.daemon.interface = i;
    }
    if let Some(m) = mode {
        loaded.config.daemon.xdp_mode = m.into();
    }
    let mut state = State::new(loaded.config);
    state.persist = Some((runtime, hash));
    let dp = daemon::start(&mut state, daemon::OnExit::Keep)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Edits arrive through the control API; this channel is for in-process owners.
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
