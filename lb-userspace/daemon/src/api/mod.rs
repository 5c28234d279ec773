//! The daemon's control API: one JSON request and one JSON response per connection on a
//! Unix socket (mode 0660, owner root, optionally a group; other users are refused by their
//! peer credentials). The CLI (`sluice vip|backend|plan|stats`) is its client.
//!
//! Every change is a new configuration, validated as a whole with exactly the rules of the
//! config file, planned, and applied only if it is valid and not a dry run; an edit is
//! acknowledged only once it is saved (`persist`). It comes in one of two forms:
//!
//! - `Edit`: one typed live edit ([`edit::LiveEdit`], what `sluice vip|backend ...` send),
//!   made by the daemon to its running configuration: a few hundred bytes whatever the
//!   size of the configuration, with no TOML written or parsed;
//! - `Apply`: a whole configuration (TOML), made on the version `base_version` (required
//!   unless `force`; refused if anything changed the state since), for `config apply` and
//!   tools that edit the configuration themselves.

pub mod client;
pub mod denied;
pub mod edit;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::{plan::Plan, state::Status};

/// A request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Health, counters, per VIP and backend; with `flows`, also each backend's flow-table
    /// entries (walks the table).
    Status {
        #[serde(default)]
        flows: bool,
    },
    /// [`Request::Status`] of the one VIP named `vip` (`sluice backend list --vip`): at
    /// thousands of VIPs, a fraction of the work and of the answer. Answered with
    /// `Status`.
    VipStatus { vip: String },
    /// The effective configuration (defaults filled in) and its version.
    Config,
    /// Which backend a flow from `src` to the VIP named `vip` goes to now, found by running
    /// the real XDP program on a synthetic packet of that flow.
    Lookup {
        vip: String,
        src: std::net::SocketAddr,
        /// The destination port, for an all-ports VIP.
        dport: Option<u16>,
    },
    /// The autoscaler: per scaled VIP, its bounds, counts, last decisions and actions.
    AutoscaleStatus,
    /// Replace the configuration (TOML text). With `dry_run`, only the plan.
    Apply {
        config: String,
        dry_run: bool,
        /// The version the edit was made on (from `Config`): refused if the state changed
        /// since. Required unless `force` (or `dry_run`).
        base_version: Option<u64>,
        /// Apply whatever changed since `base_version` (last writer wins).
        #[serde(default)]
        force: bool,
    },
    /// One typed live edit, made to the running configuration (see the module's
    /// documentation). With `dry_run`, only the plan. With `base_version`, refused if the
    /// state changed since (without, the edit applies to whatever is running: it changes
    /// only what it names).
    Edit {
        edit: edit::LiveEdit,
        #[serde(default)]
        dry_run: bool,
        #[serde(default)]
        base_version: Option<u64>,
    },
    /// Read the config file again, merged with the live edits (as SIGHUP does).
    Reload,
    /// Per VIP address: announced or not, and why; the maintenance flag
    /// (`[daemon.announce]`). Answered with `Announce`.
    AnnounceStatus,
    /// Maintenance: withdraw every VIP address (the balancer keeps forwarding); kept
    /// across restarts. `all` must be true (the only scope there is). Answered with
    /// `Announce` (after the routes were reconciled).
    AnnounceWithdraw { all: bool },
    /// End maintenance: announce again what has a serving backend. Answered with
    /// `Announce`.
    AnnounceRestore,
    /// What the load policy makes of the current load reports, for the VIP named `vip` or
    /// every VIP with `[vip.load]` (`sluice plan load`). Changes nothing. Answered with
    /// `LoadExplain`.
    LoadExplain {
        #[serde(default)]
        vip: Option<String>,
    },
}

/// A response.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Status {
        status: Status,
    },
    Config {
        toml: String,
        version: u64,
    },
    Plan {
        plan: Plan,
        applied: bool,
        /// The state's version after the request.
        version: u64,
    },
    Lookup {
        /// What the program did: "forwarded" (then `backend`), "passed" or "dropped".
        verdict: String,
        backend: Option<std::net::IpAddr>,
        /// The destination MAC (DSR) or outer destination (IPIP) the program wrote.
        detail: String,
    },
    Autoscale {
        status: crate::autoscale::driver::AutoscaleStatus,
    },
    Announce {
        status: sluice_core::announce::AnnounceStatus,
        /// What a withdraw or restore did (empty for a status request).
        #[serde(default)]
        message: String,
    },
    LoadExplain {
        explain: sluice_core::load::explain::LoadExplain,
    },
    Error {
        message: String,
    },
}
