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
        edit::{LiveEdit, no_such_vip},
        server::{Call, Peer, REJECTED},
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
        Request::VipStatus { vip } => {
            if !state.config.vips.iter().any(|v| v.name == vip) {
                return error(no_such_vip(&state.config, &vip, 20));
            }
            let Ok(dp) = dp.lock() else {
                return poisoned();
            };
            let status = state.status_of(&dp, |v| v.name == vip);
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
        Request::Edit {
            edit,
            dry_run,
            base_version,
        } => {
            let (resp, changed, summary) = live_edit(state, dp, &edit, dry_run, base_version);
            log_apply(&resp, changed, dry_run, peer, &summary);
            (resp, changed)
        }
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

/// A typed live edit: made to a copy of the running configuration, validated as a whole
/// (the model, with the config file's rules), then applied as an `Apply` made on the
/// running version. (answer, whether the state changed, the change for the log line.)
fn live_edit(
    state: &mut State,
    dp: &Mutex<Dataplane>,
    edit: &LiveEdit,
    dry_run: bool,
    base_version: Option<u64>,
) -> (Response, bool, String) {
    let t = std::time::Instant::now();
    let (config, summary) = match prepare_edit(state, edit, base_version) {
        Ok(Some(next)) => next,
        Ok(None) => {
            // Already so: repeating an edit succeeds and changes nothing (not the version).
            let resp = Response::Plan {
                plan: plan::Plan::default(),
                applied: false,
                version: state.version,
            };
            return (resp, false, "nothing".to_owned());
        }
        Err((message, summary)) => return (Response::Error { message }, false, summary),
    };
    let validate_ms = t.elapsed().as_millis() as u64;
    let base = Some(state.version);
    let (resp, changed) = apply(state, dp, config, dry_run, base, false);
    debug!(
        validate_ms,
        total_ms = t.elapsed().as_millis() as u64,
        "typed edit"
    );
    (resp, changed, summary)
}

/// The configuration `edit` makes of the running one, validated as a whole, and the change
/// for the log line; `None` when the running configuration already says so. Refused (the
/// answer, and the change) when the state changed since `base_version`, the edit does not
/// apply (no such VIP or backend, a name not accepted) or the result breaks a rule of the
/// config file (each problem of an option typed named by the option). Changes nothing.
pub(super) fn prepare_edit(
    state: &State,
    edit: &LiveEdit,
    base_version: Option<u64>,
) -> Result<Option<(Config, String)>, (String, String)> {
    if let Some(v) = base_version
        && v != state.version
    {
        return Err((
            format!(
                "{REJECTED}: the configuration changed since version {v} (now {}); try again",
                state.version
            ),
            String::new(),
        ));
    }
    let mut config = state.config.clone();
    edit.apply_to(&mut config).map_err(|e| (e, String::new()))?;
    if config == state.config {
        return Ok(None);
    }
    let summary = persist::merge::summary(&state.config, &config, SUMMARY_CHANGES);
    match api::server::validate_model(&config) {
        Ok(valid) => Ok(Some((valid, summary))),
        Err(m) => Err((edit.typed().name_options(&config, &m), summary)),
    }
}

/// The changes an edit's log line lists (then how many more).
pub(super) const SUMMARY_CHANGES: usize = 8;

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
        return error(no_such_vip(&state.config, vip, usize::MAX));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::edit::LiveEdit;

    fn state() -> State {
        let c = crate::config::parse(
            "[daemon]\ninterface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"10.0.0.10\"\n\
             port = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n[[vip.backend]]\naddress = \"10.0.1.1\"\nweight = 2\n",
            "test",
        )
        .expect("valid")
        .config;
        let mut s = State::new(c);
        s.version = 4;
        s
    }

    fn weight(w: u32) -> LiveEdit {
        LiveEdit::SetWeight {
            vip: "web".to_owned(),
            address: "10.0.1.1".parse().expect("address"),
            weight: w,
        }
    }

    /// A typed edit on the running version is made and validated; on another version, or
    /// breaking a rule, it is refused and the state is untouched; one already made is none.
    #[test]
    fn typed_edits_are_prepared_or_refused_without_touching_the_state() {
        let s = state();
        let before = s.config.clone();
        let (next, summary) = prepare_edit(&s, &weight(5), Some(4))
            .expect("valid")
            .expect("a change");
        assert_eq!(next.vips[0].backends[0].weight, 5);
        assert!(summary.contains("weight"), "{summary}");
        // Without a base version: applied to whatever runs.
        assert!(matches!(prepare_edit(&s, &weight(5), None), Ok(Some(_))));
        // Already so.
        assert!(matches!(prepare_edit(&s, &weight(2), Some(4)), Ok(None)));
        // Made on another version.
        let (e, _) = prepare_edit(&s, &weight(5), Some(3)).expect_err("conflict");
        assert!(
            e.starts_with(REJECTED) && e.contains("changed since version 3 (now 4)"),
            "{e}"
        );
        // Against the config file's rules: the option is named.
        let (e, _) = prepare_edit(&s, &weight(20_000), Some(4)).expect_err("out of range");
        assert!(
            e.contains(
                "--weight 20000: 20000 is out of range (0..=10000) (vip[0].backend[0].weight)"
            ),
            "{e}"
        );
        assert_eq!(s.config, before);
        assert_eq!(s.version, 4);
    }
}
