//! Live edits kept across restarts, the pure half: where a daemon saves them ([`Store`])
//! and how saved edits are merged onto a changed config file ([`merge`]). Reading and
//! writing the files is the daemon's (`sluice_daemon::persist`).

pub mod merge;

use std::path::PathBuf;

/// Where a daemon saves its live edits.
#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
    /// Group of the saved files (`daemon.api_group`), which then get mode 0640.
    pub gid: Option<u32>,
    /// The config file the daemon runs (what `sluice reload` reads again).
    pub config_file: PathBuf,
    /// The hash of the base file the running edits are made on.
    pub base_hash: u64,
}
