//! The autoscaler's own state across daemon restarts: per VIP, the backends its provider
//! created (`owned`, with what the provider said about them, e.g. the MAC an `exec`
//! create command printed) and the backends it set draining to scale in. Both exist only
//! here: the configuration says a backend is draining, not that the autoscaler must give
//! it back afterwards, and an `exec`-created backend looks like any fixed one.
//!
//! The file is `<daemon.state_dir>/autoscale.json`, versioned ([`VERSION`]), rewritten
//! atomically (temporary file, fsync, rename, fsync of the directory) whenever the state
//! changes. At start, [`restore`] decides per VIP, against the running configuration:
//!
//! - draining and still in the configuration → still draining (released once removed);
//! - draining and gone (the daemon removed it while we were down) → release now;
//! - owned, not draining, in the configuration → owned again (may be scaled in);
//! - owned and not in the configuration (a candidate created but never added, or a
//!   release that failed) → release now.
//!
//! A file that cannot be read or is of an unknown version is logged, moved aside
//! (`autoscale.json.unreadable`, so the next write does not destroy the evidence) and
//! ignored; the daemon runs on.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::provider::Candidate;
use crate::config::{BackendState, VipConfig};

/// The file's name in `daemon.state_dir`.
pub const FILE: &str = "autoscale.json";
/// The format this code writes and reads.
pub const VERSION: u32 = 1;

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub version: u32,
    /// By VIP name.
    pub vips: BTreeMap<String, VipSaved>,
}

/// One VIP's facts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipSaved {
    /// Backends the provider created for this VIP and not yet released (added, being
    /// probed, or whose release failed).
    #[serde(default)]
    pub owned: Vec<Candidate>,
    /// Backends the autoscaler set draining with `drain_remove`, to release once removed.
    #[serde(default)]
    pub draining: Vec<Candidate>,
}

impl VipSaved {
    pub fn is_empty(&self) -> bool {
        self.owned.is_empty() && self.draining.is_empty()
    }
}

/// Why the file was not used.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not autoscaler state: {why}")]
    Parse { path: PathBuf, why: String },
    #[error("{path} has format version {found}; this sluice reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
}

/// The file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Read the state; `Ok(None)` when there is no file (first start).
pub fn read(dir: &Path) -> Result<Option<Saved>, PersistError> {
    let path = path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PersistError::Read { path, source }),
    };
    parse(&text).map(Some).map_err(|e| match e {
        ParseError::Json(why) => PersistError::Parse { path, why },
        ParseError::Version(found) => PersistError::Version { path, found },
    })
}

enum ParseError {
    Json(String),
    Version(u32),
}

fn parse(text: &str) -> Result<Saved, ParseError> {
    #[derive(Deserialize)]
    struct Head {
        version: u32,
    }
    let head: Head = serde_json::from_str(text).map_err(|e| ParseError::Json(e.to_string()))?;
    if head.version != VERSION {
        return Err(ParseError::Version(head.version));
    }
    serde_json::from_str(text).map_err(|e| ParseError::Json(e.to_string()))
}

/// Move an unusable file aside (returns where), so a later write does not overwrite it.
pub fn set_aside(dir: &Path) -> std::io::Result<PathBuf> {
    let to = dir.join(format!("{FILE}.unreadable"));
    std::fs::rename(path(dir), &to)?;
    Ok(to)
}

/// Write atomically: a reader (or a crash) sees the old file or the new one, never a mix.
pub fn write(dir: &Path, saved: &Saved) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(saved).map_err(std::io::Error::other)?;
    text.push('\n');
    crate::atomic_file::write(
        &path(dir),
        text.as_bytes(),
        crate::atomic_file::Durability::Persistent,
    )
}

/// What [`restore`] decided for one VIP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Owned again (keyed by address).
    pub owned: BTreeMap<IpAddr, Candidate>,
    /// Still draining.
    pub draining: BTreeMap<IpAddr, Candidate>,
    /// Release now; they stay owned until the release succeeds.
    pub release: Vec<Candidate>,
    /// What changed on the way, in words, for the log.
    pub notes: Vec<String>,
}

/// Reconcile a VIP's saved state with its running configuration (see the module's doc).
pub fn restore(saved: &VipSaved, v: &VipConfig) -> Restored {
    let mut r = Restored::default();
    let find = |a: IpAddr| v.backends.iter().find(|b| b.address == a);
    for c in &saved.owned {
        r.owned.insert(c.address, c.clone());
    }
    for d in &saved.draining {
        match find(d.address) {
            Some(b) if b.state == BackendState::Draining => {
                r.draining.insert(d.address, d.clone());
            }
            Some(_) => r.notes.push(format!(
                "{} was being drained but is active in the configuration: kept, no longer draining",
                d.address
            )),
            None => {
                r.notes.push(format!(
                    "{} was drained and removed while the daemon was down: releasing it",
                    d.address
                ));
                // Its owned entry (with the provider's facts) is the better record.
                r.release.push(
                    r.owned
                        .get(&d.address)
                        .cloned()
                        .unwrap_or_else(|| d.clone()),
                );
            }
        }
    }
    for c in r.owned.values() {
        if find(c.address).is_none() && !r.release.iter().any(|x| x.address == c.address) {
            r.notes.push(format!(
                "{} was created by the provider but is not in the configuration: releasing it",
                c.address
            ));
            r.release.push(c.clone());
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip() -> VipConfig {
        let text = "[daemon]\ninterface = \"x\"\n[[vip]]\nname = \"web\"\naddress = \"10.0.0.1\"\n\
                    port = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n\
                    [[vip.backend]]\naddress = \"10.0.0.2\"\n\
                    [[vip.backend]]\naddress = \"10.0.0.3\"\n\
                    [[vip.backend]]\naddress = \"10.0.0.4\"\nstate = \"draining\"\ndrain_remove = true\n";
        crate::config::parse(text, "test")
            .unwrap()
            .config
            .vips
            .remove(0)
    }

    fn c(n: u8) -> Candidate {
        Candidate {
            address: IpAddr::from([10, 0, 0, n]),
            mac: Some([2, 0, 0, 0, 0, n]),
        }
    }

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = std::env::temp_dir().join(format!("sluice-persist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(read(&dir).unwrap().is_none(), "no file: first start");
        let mut saved = Saved {
            version: VERSION,
            vips: BTreeMap::new(),
        };
        saved.vips.insert(
            "web".to_owned(),
            VipSaved {
                owned: vec![c(3), c(4)],
                draining: vec![c(4)],
            },
        );
        write(&dir, &saved).unwrap();
        assert_eq!(read(&dir).unwrap(), Some(saved.clone()));
        saved.vips.clear();
        write(&dir, &saved).unwrap();
        assert_eq!(read(&dir).unwrap(), Some(saved));
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE], "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_and_unknown_versions_are_refused_and_set_aside() {
        let dir = std::env::temp_dir().join(format!("sluice-persist-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            path(&dir),
            "{\"version\": 1, \"vips\": {\"web\": {\"owned\": 3}}}",
        )
        .unwrap();
        let e = read(&dir).unwrap_err().to_string();
        assert!(e.contains("autoscale.json is not autoscaler state"), "{e}");
        std::fs::write(path(&dir), "{\"version\": 7, \"vips\": {}}").unwrap();
        let e = read(&dir).unwrap_err().to_string();
        assert!(
            e.contains("format version 7") && e.contains("version 1"),
            "{e}"
        );
        std::fs::write(path(&dir), "garbage").unwrap();
        assert!(read(&dir).is_err());
        let aside = set_aside(&dir).unwrap();
        assert_eq!(std::fs::read_to_string(aside).unwrap(), "garbage");
        assert!(read(&dir).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every rule of the module's doc, on one VIP: .2 fixed (not in the file), .3 draining
    /// in the file but active again in the configuration (owned, no longer draining), .4
    /// owned and still draining, .5 draining and gone (release), .6 created and never
    /// added (release).
    #[test]
    fn restore_decides_per_backend() {
        let saved = VipSaved {
            owned: vec![c(3), c(4), c(5), c(6)],
            draining: vec![c(3), c(4), c(5)],
        };
        let r = restore(&saved, &vip());
        assert_eq!(
            r.owned.keys().copied().collect::<Vec<_>>(),
            [c(3).address, c(4).address, c(5).address, c(6).address]
        );
        assert_eq!(
            r.draining.keys().copied().collect::<Vec<_>>(),
            [c(4).address]
        );
        assert_eq!(r.release, [c(5), c(6)]);
        assert_eq!(r.notes.len(), 3, "{:?}", r.notes);
        assert!(r.notes[0].contains("10.0.0.3") && r.notes[0].contains("active"));
        // A draining backend the scaler did not own (a pool's standby listed as fixed):
        // released with what the draining record knows.
        let r = restore(
            &VipSaved {
                owned: Vec::new(),
                draining: vec![c(9)],
            },
            &vip(),
        );
        assert_eq!(r.release, [c(9)]);
        assert!(r.owned.is_empty() && r.draining.is_empty());
        // Nothing saved: nothing to do.
        assert_eq!(restore(&VipSaved::default(), &vip()), Restored::default());
    }
}
