//! The control API's requests, answered by the daemon's loop ([`super::events`]). Each
//! takes the data plane's lock only for what needs the maps (counters, the test run of a
//! lookup, the plan, the publish); the neighbour table of a lookup and the files of a
//! commit are read and written without it.

use std::sync::Mutex;

use tracing::{debug, info, warn};

use super::{commit, daemon_unchanged, reload};
use crate::{
    api::{
        self, Request, Response,
        server::{Call, Peer},
    },
    config::Config,
    dataplane::{Dataplane, iface},
    lookup, persist, plan,
    state::{self, Snapshot as _, State},
};

fn error(message: String) -> (Response, bool) {
    (Response::Error { message }, false)
}

fn poisoned() -> (Response, bool) {
    error("data plane lock poisoned".to_owned())
}

/// Answer one API request; whether the state changed.
pub(super) fn handle_api(
    state: &mut State,
    dp: &Mutex<Dataplane>,
    call: Call,
    peer: Peer,
) -> (Response, bool) {
    // An apply's configuration was parsed and validated by the API server, off the loop.
    let (req, parsed) = match call {
        Call::Apply {
            config,
            dry_run,
            base_version,
            force,
        } => (
            Request::Apply {
                config: String::new(),
                dry_run,
                base_version,
                force,
            },
            Some(*config),
        ),
        Call::Other(req) => (req, None),
    };
    match req {
        Request::Status { flows } => {
            let Ok(dp) = dp.lock() else {
                return poisoned();
            };
            let status = state.status(&dp);
            let status = if flows {
                state::with_flows(status, &dp, state)
            } else {
                status
            };
            (Response::Status { status }, false)
        }
        Request::Lookup { vip, src, dport } => (lookup_flow(state, dp, &vip, src, dport), false),
        // Answered by the loop from the autoscaler's report.
        Request::AutoscaleStatus => error("the autoscaler's status is not available".to_owned()),
        // Answered by the loop's announcer.
        Request::AnnounceStatus | Request::AnnounceWithdraw { .. } | Request::AnnounceRestore => {
            error("the announcer is not available".to_owned())
        }
        // Answered by the loop, which has the load readings.
        Request::LoadExplain { .. } => error("the load readings are not available".to_owned()),
        Request::Config => match state.config.to_toml() {
            Ok(toml) => (
                Response::Config {
                    toml,
                    version: state.version,
                },
                false,
            ),
            Err(e) => error(format!("exporting the configuration: {e}")),
        },
        Request::Reload => match reload(state, dp) {
            Ok((plan, what)) => {
                info!(peer_uid = peer.uid, peer_pid = peer.pid, change = %what, version = state.version, "config file reloaded through the API");
                (
                    Response::Plan {
                        plan,
                        applied: true,
                        version: state.version,
                    },
                    true,
                )
            }
            Err(e) => {
                warn!(peer_uid = peer.uid, peer_pid = peer.pid, reason = %e.replace('\n', "; "), "reload through the API refused; nothing changed");
                error(e)
            }
        },
        Request::Apply {
            config,
            dry_run,
            base_version,
            force,
        } => {
            let config = match parsed.map_or_else(|| api::server::parse_apply(&config), Ok) {
                Ok(c) => c,
                Err(e) => return error(e),
            };
            let summary = persist::merge::summary(&state.config, &config, SUMMARY_CHANGES);
            let (resp, changed) = apply(state, dp, config, dry_run, base_version, force);
            log_apply(&resp, changed, dry_run, peer, &summary);
            (resp, changed)
        }
    }
}

/// The changes an edit's log line lists (then how many more).
const SUMMARY_CHANGES: usize = 8;

/// The log line of an `Apply` through the API: applied or refused (info), with who sent it
/// and what it changes; a plan (dry run) or an edit that changed nothing at debug.
fn log_apply(resp: &Response, changed: bool, dry_run: bool, peer: Peer, change: &str) {
    match resp {
        Response::Error { message } => info!(
            peer_uid = peer.uid,
            peer_pid = peer.pid,
            change,
            reason = %message.replace('\n', "; "),
            "edit refused through the API; nothing changed"
        ),
        Response::Plan { version, .. } if changed => info!(
            peer_uid = peer.uid,
            peer_pid = peer.pid,
            change,
            version,
            "edit applied through the API"
        ),
        _ => debug!(
            peer_uid = peer.uid,
            peer_pid = peer.pid,
            change,
            dry_run,
            "edit planned through the API (nothing changed)"
        ),
    }
}

/// `sluice lookup`: the balancer runs on the flow's packet under the lock; the backend is
/// named (from the neighbour table, for DSR without a configured MAC) after it is released.
fn lookup_flow(
    state: &State,
    dp: &Mutex<Dataplane>,
    vip: &str,
    src: std::net::SocketAddr,
    dport: Option<u16>,
) -> Response {
    let error = |message: String| Response::Error { message };
    let Some(v) = state.config.vips.iter().find(|v| v.name == vip) else {
        let names: Vec<&str> = state.config.vips.iter().map(|v| v.name.as_str()).collect();
        return error(format!(
            "--vip {vip:?}: no such VIP (VIPs: {})",
            names.join(", ")
        ));
    };
    let iface = match iface::lookup(&state.config.daemon.interface) {
        Ok(Some(i)) => i,
        _ => {
            return error(format!(
                "interface {} not found",
                state.config.daemon.interface
            ));
        }
    };
    let ran = match dp.lock() {
        Ok(mut dp) => lookup::run(&mut dp, &iface, v, src, dport),
        Err(_) => Err("data plane lock poisoned".to_owned()),
    };
    match ran {
        Ok(ran) => {
            let (verdict, backend, detail) = lookup::resolve(&ran, v);
            Response::Lookup {
                verdict,
                backend,
                detail,
            }
        }
        Err(e) => error(e),
    }
}

/// An `Apply` of `config` (parsed and validated): checked against the version it was made
/// on, planned, and unless a dry run (or nothing changed) committed.
fn apply(
    state: &mut State,
    dp: &Mutex<Dataplane>,
    config: Config,
    dry_run: bool,
    base_version: Option<u64>,
    force: bool,
) -> (Response, bool) {
    // Last-writer-wins only when asked for: an edit made on a configuration that
    // changed since would silently undo the other change.
    if base_version.is_none() && !force && !dry_run {
        return error(format!(
            "rejected, nothing changed: base_version is required (the version of the \
             configuration the edit was made on, from a config request; now {}), or \
             force to apply it whatever changed since",
            state.version
        ));
    }
    if let Some(v) = base_version
        && v != state.version
        && !force
    {
        return error(format!(
            "rejected, nothing changed: the configuration changed since version {v} (now {}); try again",
            state.version
        ));
    }
    if let Err(e) = daemon_unchanged(state, &config) {
        return error(format!("rejected, nothing changed: {e}"));
    }
    // A configuration that is already running changes nothing: no new version,
    // nothing applied, and no error (repeated edits are idempotent).
    let unchanged = config == state.config;
    let t = std::time::Instant::now();
    let next = state.with_config(config);
    let plan = match dp.lock() {
        Ok(dp) => plan::compute(state, &next, &*dp),
        Err(_) => return poisoned(),
    };
    let plan_ms = t.elapsed().as_millis() as u64;
    if dry_run || unchanged {
        return (
            Response::Plan {
                plan,
                applied: false,
                version: state.version,
            },
            false,
        );
    }
    let t = std::time::Instant::now();
    if let Err(e) = commit(state, dp, next) {
        return error(format!("rejected, nothing changed: {e}"));
    }
    let commit_ms = t.elapsed().as_millis() as u64;
    debug!(
        version = state.version,
        plan_ms, commit_ms, "edit committed (the loop logs what changed and who asked)"
    );
    (
        Response::Plan {
            plan,
            applied: true,
            version: state.version,
        },
        true,
    )
}
