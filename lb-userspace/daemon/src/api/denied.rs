//! What to tell a user the kernel refused the API socket to (EACCES/EPERM on connect):
//! which socket, who may use it (root and `daemon.api_group`), and how to get in.

use std::{os::unix::fs::MetadataExt as _, path::Path};

/// The name of group `gid`, if it has one.
fn group_name(gid: u32) -> Option<String> {
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)).ok()??;
    Some(group.name).filter(|n| !n.is_empty())
}

/// The advice for a refused connect to `socket`, from its owner group and mode (when this
/// user can see them).
pub fn advice(socket: &Path) -> String {
    let shown = socket.display();
    match std::fs::metadata(socket) {
        Ok(m) => advice_for(
            &shown.to_string(),
            m.gid(),
            group_name(m.gid()).as_deref(),
            m.mode() & 0o777,
        ),
        Err(_) => format!(
            "permission denied on {shown} (or a directory on its way): the sluice API is for \
             root and the members of the daemon's `daemon.api_group`; ask for that group \
             (`sudo usermod -aG GROUP $USER`, then log in again) or run as root"
        ),
    }
}

/// [`advice`] from the socket's group id, group name and permission bits.
pub fn advice_for(socket: &str, gid: u32, group: Option<&str>, mode: u32) -> String {
    let owner = format!(
        "{socket} (group {}, mode {mode:03o})",
        group.map_or_else(|| gid.to_string(), str::to_owned)
    );
    match group {
        // No api_group: root only.
        _ if gid == 0 => format!(
            "permission denied on {owner}: only root may use the API, as the daemon's config \
             sets no `daemon.api_group`. Set `api_group = \"GROUP\"` in its [daemon] section and \
             restart it, then join that group (`sudo usermod -aG GROUP $USER`, then log in \
             again), or run as root"
        ),
        Some(g) => format!(
            "permission denied on {owner}: the API is for root and the members of \
             `daemon.api_group` (\"{g}\"). Join it with `sudo usermod -aG {g} $USER` and log \
             in again (or `newgrp {g}`), or run as root"
        ),
        None => format!(
            "permission denied on {owner}: the API is for root and the members of \
             `daemon.api_group` (group id {gid}, which has no name here). Join that group, \
             or run as root"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_socket_the_setting_and_the_way_in() {
        let m = advice_for("/run/sluice/sluice.sock", 998, Some("sluice"), 0o660);
        for part in [
            "/run/sluice/sluice.sock",
            "mode 660",
            "daemon.api_group",
            "\"sluice\"",
            "usermod -aG sluice",
        ] {
            assert!(m.contains(part), "{part} missing: {m}");
        }
        let m = advice_for("/run/sluice/sluice.sock", 0, Some("root"), 0o660);
        assert!(
            m.contains("sets no `daemon.api_group`") && m.contains("api_group = \"GROUP\""),
            "{m}"
        );
    }

    #[test]
    fn group_names_resolve() {
        assert_eq!(group_name(0).as_deref(), Some("root"));
    }
}
