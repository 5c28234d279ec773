//! `sluice decap attach|detach` and `sluice peer attach|detach`: pinned attachments that
//! outlive the command.

use lb_common::programs;

use super::Mode;
use crate::{
    daemon::attach_mode,
    dataplane::{AttachMode, pinned},
};

pub fn attach(interface: &str, mode: Mode) -> anyhow::Result<()> {
    let (got, pin) = pinned::attach_pinned(programs::DECAP, interface, attach_mode(mode.into()))?;
    println!(
        "decap attached to {interface} ({got:?} mode), pinned at {}",
        pin.display()
    );
    Ok(())
}

pub fn detach(interface: &str) -> anyhow::Result<()> {
    pinned::detach_pinned(programs::DECAP, interface)?;
    println!("decap detached from {interface}");
    Ok(())
}

pub fn peer_attach(interface: &str) -> anyhow::Result<()> {
    let (got, pin) = pinned::attach_pinned(programs::PASS, interface, AttachMode::Native)?;
    println!(
        "XDP_PASS attached to {interface} ({got:?} mode), pinned at {}",
        pin.display()
    );
    Ok(())
}

pub fn peer_detach(interface: &str) -> anyhow::Result<()> {
    pinned::detach_pinned(programs::PASS, interface)?;
    println!("XDP_PASS detached from {interface}");
    Ok(())
}
