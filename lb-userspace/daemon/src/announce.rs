//! The announcer: the daemon's owner of the VIP routes (`[daemon.announce]`). It makes the
//! kernel's routes of `daemon.announce.protocol` in `daemon.announce.table` exactly the
//! host routes of the addresses [`sluice_core::announce::decide`] announces: after every
//! commit, every health transition, at start (removing what a crashed daemon left) and
//! every [`RECONCILE_EVERY`] (repairing a route someone deleted). A BGP speaker exports
//! that table.
//!
//! Maintenance (`sluice announce withdraw --all`, `restore`) withdraws every address while
//! the balancer keeps forwarding; it is kept in `<state_dir>/announce.json`, so a restart
//! keeps it. A daemon that stops leaving the balancer attached (`sluice run`) leaves its
//! routes too: the pinned program forwards across the restart. One that detaches (demo,
//! the lab's in-process daemon) withdraws them: nothing forwards after it.
//!
//! Netlink failures are logged and shown in the status (`netlink error: ...`); they never
//! stop the daemon. Disabled, the announcer touches nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use sluice_core::announce::{self, AddressStatus, AnnounceStatus, Decision};
use tracing::{info, warn};

use crate::{
    atomic_file::{self, Durability},
    config::{AnnounceConfig, Config},
    dataplane::{
        Dataplane,
        route::{self, RouteTable},
    },
    state::State,
};

/// How often the routes are checked against the kernel's (one strict dump per family).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(3);

/// `<state_dir>/announce.json`: the maintenance flag, kept across restarts.
pub const MAINTENANCE_FILE: &str = "announce.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct MaintenanceFile {
    maintenance: bool,
    /// Unix seconds.
    since: Option<u64>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The daemon's announcer (see the module documentation).
#[derive(Debug)]
pub struct Announcer {
    cfg: AnnounceConfig,
    dir: PathBuf,
    /// Since when (Unix seconds) every address is withdrawn.
    maintenance: Option<u64>,
    status: AnnounceStatus,
    /// VIPs already warned about ([`announce::sequence_warning`]).
    warned: BTreeSet<String>,
}

impl Announcer {
    /// For `config`'s `[daemon.announce]`, with the maintenance flag of its state
    /// directory (an unreadable file is reported and taken as maintenance: withdrawing
    /// is the safe side).
    pub fn new(config: &Config) -> Self {
        let dir = config.daemon.state_dir.clone();
        let maintenance = read_maintenance(&dir);
        let cfg = config.daemon.announce.clone();
        let status = AnnounceStatus {
            enabled: cfg.enabled,
            table: cfg.table,
            protocol: cfg.protocol,
            interface: cfg.interface.clone(),
            ..AnnounceStatus::default()
        };
        Self {
            cfg,
            dir,
            maintenance,
            status,
            warned: BTreeSet::new(),
        }
    }

    fn table(&self) -> RouteTable {
        RouteTable {
            table: self.cfg.table,
            protocol: self.cfg.protocol,
        }
    }

    /// What `sluice announce status` shows.
    pub fn status(&self) -> &AnnounceStatus {
        &self.status
    }

    /// Log a warning for each VIP with a sequence scheduler not warned about before (at
    /// start, then the VIPs a commit adds or switches).
    pub fn warn_sequence(&mut self, config: &Config) {
        let now: BTreeSet<String> = announce::sequence_vips(config)
            .map(|v| v.name.clone())
            .collect();
        for v in announce::sequence_vips(config) {
            if !self.warned.contains(&v.name) {
                warn!(vip = %v.name, "{}", announce::sequence_warning(v));
            }
        }
        self.status.warnings = announce::sequence_vips(config)
            .map(announce::sequence_warning)
            .collect();
        self.warned = now;
    }

    /// Enter (`true`) or leave maintenance, kept in the state directory first; then the
    /// routes follow ([`Announcer::reconcile`]).
    pub fn set_maintenance(&mut self, on: bool) -> Result<String, String> {
        if !self.cfg.enabled {
            return Err(
                "announcing is disabled (daemon.announce.enabled = false): there is nothing to withdraw or restore"
                    .to_owned(),
            );
        }
        if on == self.maintenance.is_some() {
            return Ok(if on {
                "already in maintenance: every VIP address is withdrawn"
            } else {
                "not in maintenance: nothing to restore"
            }
            .to_owned());
        }
        let since = on.then(unix_now);
        write_maintenance(&self.dir, since).map_err(|e| {
            format!(
                "saving the maintenance flag in {}: {e}; nothing changed",
                self.dir.join(MAINTENANCE_FILE).display()
            )
        })?;
        self.maintenance = since;
        if on {
            warn!(
                "maintenance: every VIP address withdrawn (the balancer keeps forwarding); `sluice announce restore` ends it"
            );
            Ok(
                "maintenance: every VIP address withdrawn; the balancer keeps forwarding"
                    .to_owned(),
            )
        } else {
            info!("maintenance ended: VIP addresses announced again");
            Ok(
                "maintenance ended: VIP addresses with a serving backend are announced again"
                    .to_owned(),
            )
        }
    }

    /// Make the routes what `state` asks for (see the module documentation); the status
    /// follows.
    pub fn reconcile(&mut self, state: &State, dp: &Dataplane) {
        let attached = dp
            .attached()
            .iter()
            .any(|a| a.program == lb_common::programs::BALANCER);
        let decisions = announce::decide(
            state,
            |id| attached && dp.layout().vip(&id).is_some(),
            self.maintenance.is_some(),
        );
        let errors = if self.cfg.enabled {
            self.apply(&decisions)
        } else {
            Ok(BTreeMap::new())
        };
        self.update_status(decisions, errors);
    }

    /// Install the routes `decisions` announce and remove the other routes of ours: the
    /// error of each address that failed (or of all, if the routes could not be listed).
    fn apply(
        &self,
        decisions: &BTreeMap<IpAddr, Decision>,
    ) -> Result<BTreeMap<IpAddr, String>, String> {
        let t = self.table();
        let ifindex = nix::net::if_::if_nametoindex(self.cfg.interface.as_str()).map_err(|e| {
            format!(
                "daemon.announce.interface {}: {}",
                self.cfg.interface,
                std::io::Error::from(e)
            )
        })?;
        let have = route::routes(t).map_err(|e| format!("listing the routes: {e}"))?;
        let want = |a: &IpAddr| decisions.get(a).is_some_and(|d| d.why.announced());
        let mut errors = BTreeMap::new();
        for r in have.iter().filter(|r| !want(&r.address)) {
            match route::delete(t, r.address) {
                Ok(_) => {
                    info!(address = %r.address, table = t.table, "VIP address withdrawn (route removed)")
                }
                Err(e) => {
                    errors.insert(r.address, format!("removing its route: {e}"));
                }
            }
        }
        for (a, _) in decisions.iter().filter(|(a, _)| want(a)) {
            match have.iter().find(|r| r.address == *a) {
                Some(r) if r.oif.is_none_or(|o| o == ifindex) => continue,
                // Ours through another interface: put right.
                Some(_) => {
                    if let Err(e) = route::delete(t, *a) {
                        errors.insert(*a, format!("replacing its route: {e}"));
                        continue;
                    }
                }
                None => {}
            }
            match route::add(t, *a, ifindex) {
                Ok(()) => {
                    info!(address = %a, table = t.table, "VIP address announced (route installed)")
                }
                Err(e) => {
                    errors.insert(*a, format!("installing its route: {e}"));
                }
            }
        }
        Ok(errors)
    }

    fn update_status(
        &mut self,
        decisions: BTreeMap<IpAddr, Decision>,
        errors: Result<BTreeMap<IpAddr, String>, String>,
    ) {
        let previous: BTreeMap<IpAddr, String> = self
            .status
            .addresses
            .iter()
            .map(|a| (a.address, a.reason.clone()))
            .collect();
        let addresses: Vec<AddressStatus> = decisions
            .into_iter()
            .map(|(address, d)| {
                let error = match &errors {
                    Ok(per) => per.get(&address).cloned(),
                    Err(all) => Some(all.clone()),
                };
                let (announced, reason) = match error {
                    Some(e) => (false, format!("netlink error: {e}")),
                    None => (d.why.announced(), d.why.as_str().to_owned()),
                };
                AddressStatus {
                    address,
                    announced,
                    reason,
                    vips: d.vips,
                }
            })
            .collect();
        for a in &addresses {
            if a.reason.starts_with("netlink error") && previous.get(&a.address) != Some(&a.reason)
            {
                warn!(address = %a.address, reason = %a.reason, "announcing a VIP address failed (tried again every few seconds)");
            }
        }
        self.status.addresses = addresses;
        self.status.maintenance = self.maintenance.is_some();
        self.status.maintenance_since = self.maintenance;
        self.status.reconciled = Some(unix_now());
    }

    /// Remove every route of ours (a daemon that detaches: nothing forwards after it).
    pub fn withdraw_all(&mut self) {
        if !self.cfg.enabled {
            return;
        }
        let t = self.table();
        match route::routes(t) {
            Ok(have) => {
                for r in have {
                    if let Err(e) = route::delete(t, r.address) {
                        warn!(address = %r.address, error = %e, "withdrawing a VIP address at stop failed");
                    }
                }
                info!("every VIP address withdrawn (the balancer is detached)");
            }
            Err(e) => warn!(error = %e, "listing the VIP routes at stop failed; they stay"),
        }
        let _ = std::fs::remove_file(self.dir.join(MAINTENANCE_FILE));
    }
}

/// Since when the state directory says the balancer is in maintenance.
fn read_maintenance(dir: &Path) -> Option<u64> {
    let path = dir.join(MAINTENANCE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "reading the maintenance flag failed: staying in maintenance (`sluice announce restore` ends it)");
            return Some(unix_now());
        }
    };
    match serde_json::from_slice::<MaintenanceFile>(&bytes) {
        Ok(f) if f.maintenance => {
            let since = f.since.unwrap_or_else(unix_now);
            warn!(
                since,
                "in maintenance (kept from before the restart): every VIP address stays withdrawn until `sluice announce restore`"
            );
            Some(since)
        }
        Ok(_) => None,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "the maintenance flag is unreadable: staying in maintenance (`sluice announce restore` ends it)");
            Some(unix_now())
        }
    }
}

fn write_maintenance(dir: &Path, since: Option<u64>) -> std::io::Result<()> {
    let f = MaintenanceFile {
        maintenance: since.is_some(),
        since,
    };
    let bytes = serde_json::to_vec_pretty(&f).map_err(std::io::Error::other)?;
    atomic_file::write(&dir.join(MAINTENANCE_FILE), &bytes, Durability::Persistent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_survives_in_the_state_dir() {
        let dir = std::env::temp_dir().join(format!("sluice-announce-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        assert_eq!(read_maintenance(&dir), None, "no file: not in maintenance");
        write_maintenance(&dir, Some(1234)).expect("write");
        assert_eq!(read_maintenance(&dir), Some(1234));
        write_maintenance(&dir, None).expect("write");
        assert_eq!(read_maintenance(&dir), None);
        std::fs::write(dir.join(MAINTENANCE_FILE), b"{not json").expect("write");
        assert!(
            read_maintenance(&dir).is_some(),
            "unreadable: the safe side"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
