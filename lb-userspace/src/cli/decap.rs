//! `sluice decap attach|detach`.

use lb_common::programs;

use super::Mode;
use crate::{dataplane::pinned, daemon::attach_mode};

pub fn attach(interface: &str, mode: Mode) -> anyhow::Result<()> {
    let (got, pin) = pinned::attach_pinned(programs::DECAP, interface, attach_mode(mode.into()))?;
    println!("decap attached to {interface} ({got:?} mode), pinned at {}", pin.display());
    Ok(())
}

pub fn detach(interface: &str) -> anyhow::Result<()> {
    pinned::detach_pinned(programs::DECAP, interface)?;
    println!("decap detached from {interface}");
    Ok(())
}
