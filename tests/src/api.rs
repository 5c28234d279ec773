//! The daemon's control API as the tests read it.

use std::path::Path;

use anyhow::bail;
use sluice_core::config::Config;
use sluice_daemon::{
    api::{Request, Response, client},
    state::Status,
};

/// The daemon's status (without flows).
pub fn status(socket: &Path) -> anyhow::Result<Status> {
    match client::request(socket, &Request::Status { flows: false })? {
        Response::Status { status } => Ok(status),
        r => bail!("unexpected answer {r:?}"),
    }
}

/// The running configuration and its version.
pub fn running_config(socket: &Path) -> anyhow::Result<(Config, u64)> {
    match client::request(socket, &Request::Config)? {
        Response::Config { toml, version } => Ok((
            sluice_core::config::parse(&toml, "running")?.config,
            version,
        )),
        r => bail!("unexpected answer {r:?}"),
    }
}
