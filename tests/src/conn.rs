//! Real TCP connections to a lab VIP: the lab's own (`sluice_lab::conn`: the `HOLD`
//! protocol), and what only the tests need.

use anyhow::Context as _;
pub use sluice_lab::conn::*;

/// The id of the XDP program on the lab load balancer's eth0, if any (`ip -j link`).
pub fn xdp_prog(lab: &sluice_lab::lab::Lab) -> anyhow::Result<Option<u64>> {
    let out = lab
        .lb()
        .exec(&["ip", "-j", "link", "show", "dev", "eth0"])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j link")?;
    Ok(v.get(0)
        .and_then(|l| l.get("xdp"))
        .and_then(|x| x.get("prog"))
        .and_then(|p| p.get("id"))
        .and_then(serde_json::Value::as_u64))
}
