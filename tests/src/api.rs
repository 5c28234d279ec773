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

/// One `GET /metrics` of the lab daemon's metrics endpoint (`127.0.0.1:9640`, in the load
/// balancer's namespace, as Prometheus would scrape it), waiting at most `timeout` for each
/// step: the response's head and body.
pub fn scrape(
    lab: &sluice_lab::lab::Lab,
    timeout: std::time::Duration,
) -> anyhow::Result<(String, String)> {
    use std::io::{Read as _, Write as _};
    let out = lab.lb().run(|| -> anyhow::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], 9640).into(), timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })??;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP head in {out:?}"))?;
    Ok((head.to_owned(), body.to_owned()))
}
