//! `sluice run`.

use std::path::Path;

use anyhow::Context as _;
use tracing::{info, warn};

use super::Mode;
use crate::{
    daemon, notify,
    persist::{self, Store, StoreFiles as _},
    state::State,
};

pub fn run(file: &Path, interface: Option<String>, mode: Option<Mode>) -> anyhow::Result<()> {
    crate::metrics::set_build(env!("CARGO_PKG_VERSION"), super::dist::GIT_REVISION);
    let text = std::fs::read_to_string(file).with_context(|| {
        if file == Path::new(super::DEFAULT_CONFIG) {
            format!(
                "{}: cannot read (the default config file; --config FILE names another)",
                file.display()
            )
        } else {
            format!("{}: cannot read", file.display())
        }
    })?;
    let mut loaded = crate::config::parse(&text, &file.display().to_string())?;
    for w in &loaded.warnings {
        warn!(file = %file.display(), "{w}");
    }
    let dir = loaded.config.daemon.state_dir.clone();
    let gid = match &loaded.config.daemon.api_group {
        Some(g) => {
            Some(persist::group_gid(g).with_context(|| format!("daemon.api_group = {g:?}"))?)
        }
        None => None,
    };
    // Live edits survive restarts: merged onto the file when it changed, or the start is
    // refused with the conflicts. Nothing saved is removed here (another daemon may be
    // running on this state directory: `daemon::start` finds out).
    let mut version = 0;
    if let Some(saved) = persist::read(&dir)? {
        let base = saved.base_config(&text);
        let m = persist::merge::merge(base.as_ref(), &saved.config, &loaded.config);
        let Some(merged) = m.clean() else {
            anyhow::bail!(
                "{}",
                persist::conflict_report(file, &dir, &m, persist::Refused::Start)
            );
        };
        if m.file_changes.is_empty() {
            info!(path = %dir.join(persist::RUNTIME_FILE).display(), file = %file.display(), edits = m.live_changes.len(), version = saved.version, "resuming the live edits made on top of the config file");
        } else {
            info!(path = %dir.join(persist::RUNTIME_FILE).display(), file = %file.display(), edits = m.live_changes.len(), file_changes = m.file_changes.len(), version = saved.version, "the config file changed since the live edits were made: merged (no conflict)");
        }
        for c in &m.live_changes {
            info!(change = %c, "live edit kept");
        }
        for c in &m.file_changes {
            info!(change = %c, "file change taken");
        }
        loaded.config = merged.clone();
        version = saved.version;
    }
    if let Some(i) = interface {
        loaded.config.daemon.interface = i;
    }
    if let Some(m) = mode {
        loaded.config.daemon.xdp_mode = m.into();
    }
    let mut store = Store {
        dir,
        gid,
        config_file: file.to_owned(),
        base_hash: persist::file_hash(text.as_bytes()),
    };
    let mut state = State::new(loaded.config);
    state.version = version;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // SIGHUP reloads; its handler is in place before anything is attached.
    let mut hangup = {
        let _rt = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?
    };
    let dp = daemon::start(&mut state, daemon::OnExit::Keep)?;
    // This daemon owns the state directory now: from here on, its edits are made on this
    // file. Until both are saved, edits are refused (each save is checked again).
    match store
        .save_base(&text)
        .and_then(|()| store.save(&state.config, state.version))
    {
        Ok(()) => {}
        Err(e) => {
            warn!(error = %e, "saving the configuration at start failed: live edits will be refused until the state directory is writable")
        }
    }
    state.persist = Some(store);
    let (edits, edit_rx) = tokio::sync::mpsc::channel(4);
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shown = file.display().to_string();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                info!(file = %shown, "SIGHUP: reloading the config file");
                // systemd shows the unit reloading until READY=1, whatever the outcome (a
                // refused reload leaves the running configuration serving).
                notify::notify_or_warn(&notify::reloading_message());
                let (tx, rx) = tokio::sync::oneshot::channel();
                if edits.send((daemon::Edit::Reload, tx)).await.is_err() {
                    break;
                }
                let _ = rx.await;
                notify::notify_or_warn("READY=1");
            }
        });
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            notify::notify_or_warn("STOPPING=1");
        };
        // Attached (`daemon::start`) and the API served: ready for systemd's Type=notify.
        let ready = || notify::notify_or_warn("READY=1");
        Ok(daemon::serve_ready(state, dp, edit_rx, shutdown, ready).await?)
    })
}
