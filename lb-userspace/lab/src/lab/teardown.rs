//! Finding and removing labs: [`Lab::status`], [`Lab::list`], [`Lab::down`] and
//! [`Lab::down_prefix`] (a crashed run's leftovers too), and [`Lab::keep`].

use std::{
    fmt,
    path::PathBuf,
    time::{Duration, Instant},
};

use super::{
    Lab, LabError, Role, TERM_GRACE,
    backends::{Running, stop},
    config_path, lab_dir, lab_pin_dir,
    netns::{self, Netns},
    parse_ns_name, validate_prefix,
};
use crate::dataplane::pinned;

/// What [`Lab::down_prefix`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    pub prefix: String,
    pub namespaces: Vec<String>,
    /// Processes killed (pid, command name).
    pub processes: Vec<(u32, String)>,
    pub pins: Vec<PathBuf>,
    pub files: Vec<PathBuf>,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.processes.is_empty()
            && self.pins.is_empty()
            && self.files.is_empty()
    }
}

impl fmt::Display for Removed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "lab {}: nothing to remove", self.prefix);
        }
        write!(
            f,
            "lab {}: removed {} namespaces, {} pins, {} files; killed {} processes",
            self.prefix,
            self.namespaces.len(),
            self.pins.len(),
            self.files.len(),
            self.processes.len()
        )
    }
}

/// One namespace of a lab, as found on the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsStatus {
    pub name: String,
    pub role: Role,
    /// (pid, command line).
    pub processes: Vec<(u32, String)>,
}

/// What exists of a lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabStatus {
    pub prefix: String,
    /// Ordered: switch, lb, clients, backends.
    pub namespaces: Vec<NsStatus>,
    pub pins: Vec<PathBuf>,
    /// The daemon config, if `lab up` wrote one.
    pub config: Option<PathBuf>,
}

impl Lab {
    /// Leave the lab up when this value is dropped (`sluice lab up`); remove it later with
    /// [`Lab::down_prefix`]. In-process servers still end with this process.
    pub fn keep(mut self) {
        self.keep = true;
        let servers = std::mem::take(self.servers_mut());
        for s in servers.into_iter().flatten() {
            match s {
                // Detached: it outlives us (and is reaped by whoever adopts it).
                Running::Process(child) => drop(child),
                s @ Running::InProcess(_) => stop(Some(s)),
            }
        }
    }

    /// Remove everything: stop the servers, kill every process in the lab's namespaces,
    /// unpin what the lab pinned, delete the namespaces and the lab's files.
    pub fn down(mut self) -> Result<Removed, LabError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<Removed, LabError> {
        self.done = true;
        let servers = std::mem::take(self.servers_mut());
        for s in servers {
            stop(s);
        }
        Self::down_prefix(&self.spec.prefix)
    }

    /// Remove whatever exists of lab `prefix` (a crashed run's leftovers too): kill the
    /// processes in its namespaces (SIGTERM, SIGKILL after 3 s), remove its pins, delete its
    /// namespaces, remove its config and logs. Succeeds when nothing exists. Only names of
    /// exactly this lab match (`PREFIX-sw`, `-lb`, `-cK`, `-bK`), not those of a lab
    /// whose prefix merely starts with it.
    pub fn down_prefix(prefix: &str) -> Result<Removed, LabError> {
        validate_prefix(prefix)?;
        let mut errors = Vec::new();
        let status = Self::status(prefix);
        let mut removed = Removed {
            prefix: prefix.to_owned(),
            ..Removed::default()
        };
        // Processes first: a daemon detaches on SIGTERM.
        let pids: Vec<u32> = status
            .namespaces
            .iter()
            .flat_map(|n| n.processes.iter().map(|p| p.0))
            .collect();
        removed.processes = status
            .namespaces
            .iter()
            .flat_map(|n| n.processes.iter().cloned())
            .collect();
        kill_all(&pids);
        for pin in &status.pins {
            if pin.is_dir() {
                // The balancer's pin directory (link first: that detaches it); a fleet
                // lab's has one directory per balancer in it.
                let subdirs = std::fs::read_dir(pin)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| Some(e.ok()?.path()))
                    .filter(|p| p.is_dir());
                for dir in subdirs.chain(std::iter::once(pin.clone())) {
                    match pinned::remove_pin_dir(&dir, crate::dataplane::LINK_PIN) {
                        Ok(r) => removed.pins.extend(r),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                continue;
            }
            match std::fs::remove_file(pin) {
                Ok(()) => removed.pins.push(pin.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("removing {}: {e}", pin.display())),
            }
        }
        if let Some(links) = pinned::pin_path("x").parent() {
            pinned::remove_empty_parents(&links.join("x"));
        }
        // Backends and clients first, the switch (with the bridge) last.
        for n in status.namespaces.iter().rev() {
            match Netns::named(&n.name).delete() {
                Ok(()) => removed.namespaces.push(n.name.clone()),
                Err(e) => errors.push(e.to_string()),
            }
        }
        let config = config_path(prefix);
        if config.exists() {
            match std::fs::remove_file(&config) {
                Ok(()) => removed.files.push(config),
                Err(e) => errors.push(format!("removing {}: {e}", config.display())),
            }
        }
        let logs = lab_dir(prefix);
        if logs.exists() {
            match std::fs::remove_dir_all(&logs) {
                Ok(()) => removed.files.push(logs),
                Err(e) => errors.push(format!("removing {}: {e}", logs.display())),
            }
        }
        if errors.is_empty() {
            Ok(removed)
        } else {
            Err(LabError::Cleanup(errors))
        }
    }

    /// What exists of lab `prefix` (namespaces with their processes, pins, config).
    pub fn status(prefix: &str) -> LabStatus {
        let mut namespaces: Vec<NsStatus> = netns::list()
            .into_iter()
            .filter_map(|name| {
                let (p, role) = parse_ns_name(&name)?;
                (p == prefix).then_some((name.clone(), role))
            })
            .map(|(name, role)| {
                let processes = Netns::named(&name)
                    .pids()
                    .into_iter()
                    .map(|pid| (pid, cmdline(pid)))
                    .collect();
                NsStatus {
                    name,
                    role,
                    processes,
                }
            })
            .collect();
        namespaces.sort_by_key(|n| n.role);
        let config = Some(config_path(prefix)).filter(|p| p.exists());
        LabStatus {
            prefix: prefix.to_owned(),
            namespaces,
            pins: lab_pins(prefix),
            config,
        }
    }

    /// The prefixes of every lab that has namespaces or pins on this machine.
    pub fn list() -> Vec<String> {
        let mut v: Vec<String> = netns::list()
            .iter()
            .filter_map(|n| parse_ns_name(n).map(|(p, _)| p.to_owned()))
            .chain(all_lab_pins().into_iter().map(|(p, _)| p))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep || self.done {
            return;
        }
        if let Err(e) = self.teardown() {
            eprintln!("lab {}: {e}", self.spec.prefix);
        }
    }
}

/// Every lab pin: (lab prefix, path).
fn all_lab_pins() -> Vec<(String, PathBuf)> {
    let link = pinned::pin_path("x");
    let entries = link
        .parent()
        .and_then(|dir| std::fs::read_dir(dir).ok())
        .into_iter()
        .flatten();
    let mut v: Vec<(String, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let (_, ns) = name.rsplit_once('@')?;
            // PROGRAM@IFACE@NAMESPACE: three parts.
            name.split('@').nth(2)?;
            let (prefix, _) = parse_ns_name(ns)?;
            Some((prefix.to_owned(), e.path()))
        })
        .collect();
    // The labs' balancer pin directories.
    if let Some(parent) = lab_pin_dir("x").parent()
        && let Ok(entries) = std::fs::read_dir(parent)
    {
        v.extend(entries.filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            validate_prefix(&name).ok()?;
            Some((name, e.path()))
        }));
    }
    v.sort();
    v
}

pub(super) fn lab_pins(prefix: &str) -> Vec<PathBuf> {
    all_lab_pins()
        .into_iter()
        .filter(|(p, _)| p == prefix)
        .map(|(_, path)| path)
        .collect()
}

/// A process's command line (spaces between arguments), or its name.
fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let s: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if s.is_empty() {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_owned())
            .unwrap_or_default()
    } else {
        s.join(" ")
    }
}

/// Gone or a zombie.
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
    }
}

/// SIGTERM, up to [`TERM_GRACE`] to exit, then SIGKILL (and up to a second more).
fn kill_all(pids: &[u32]) {
    use nix::{sys::signal::Signal, unistd::Pid};
    let signal = |sig: Signal| {
        for &pid in pids {
            if let Ok(p) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(Pid::from_raw(p), sig);
            }
        }
    };
    let wait = |limit: Duration| {
        let start = Instant::now();
        while start.elapsed() < limit {
            if pids.iter().all(|&p| dead(p)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    if pids.is_empty() {
        return;
    }
    signal(Signal::SIGTERM);
    if !wait(TERM_GRACE) {
        signal(Signal::SIGKILL);
        wait(Duration::from_secs(1));
    }
}
