//! Live edits kept across restarts. In `daemon.state_dir`, `sluice run` keeps:
//!
//! - `runtime.toml`: the running configuration after the live edits, with the version it
//!   has and the hash of the file it was made on (its base); written (and fsynced) before
//!   an edit is acknowledged;
//! - `runtime.base.toml`: that base file, byte for byte, so that a changed config file can
//!   be merged with the edits field by field ([`merge`]).
//!
//! Both are private: mode 0600, or 0640 with group `daemon.api_group` when set.
//!
//! At start, and on `sluice reload` / SIGHUP, the edits are merged onto the file: edits
//! and file changes that touch different VIPs, backends or fields both apply; the same
//! field changed differently on both sides refuses the start (or the reload) with a
//! report of each conflict and the commands that keep one side. Nothing is deleted
//! behind the user's back: a saved file that cannot be read is reported and left alone.

pub use sluice_core::persist::{Store, merge};

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use crate::{
    atomic_file::{self, Durability},
    config::{self, Config},
};

/// The running configuration after the live edits.
pub const RUNTIME_FILE: &str = "runtime.toml";
/// The config file those edits were made on.
pub const BASE_FILE: &str = "runtime.base.toml";
const HASH_MARK: &str = "# config-file-hash = ";
const VERSION_MARK: &str = "# version = ";

/// FNV-1a, 64 bits: a hash of the config file that stays the same across sluice versions
/// (std's hasher does not promise that).
pub fn file_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{}: cannot read the saved live edits: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is there but is not a configuration sluice saved; it is left in place.
    #[error(
        "{}: the saved live edits cannot be used: {why}. The file was left as it is: move it \
         away (or `sluice config discard`) to start from the config file",
        path.display()
    )]
    Unusable { path: PathBuf, why: String },
    #[error("{}: saving the live edits failed: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("exporting the configuration: {0}")]
    Export(#[from] toml::ser::Error),
}

/// Live edits saved by a daemon.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The configuration after the edits.
    pub config: Config,
    /// Its version (edits so far).
    pub version: u64,
    /// The hash of the file the edits were made on.
    pub base_hash: u64,
    /// That file's text, if it was kept (older sluice versions did not).
    pub base: Option<String>,
}

/// The gid of group `name` (the API server's lookup, without the members).
pub fn group_gid(name: &str) -> std::io::Result<u32> {
    crate::api::server::group_gid(name).map(|(gid, _)| gid)
}

/// Read the saved live edits in `dir`: `None` if there are none. A file that is there but
/// empty, not text, or not a valid configuration is an error (and stays where it is).
pub fn read(dir: &Path) -> Result<Option<Saved>, PersistError> {
    let path = dir.join(RUNTIME_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PersistError::Read { path, source }),
    };
    let unusable = |why: String| PersistError::Unusable {
        path: path.clone(),
        why,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(unusable("it is empty".to_owned()));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        unusable(format!(
            "it is not text (invalid UTF-8 at byte {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    if text.contains('\0') {
        return Err(unusable("it is not text (binary data)".to_owned()));
    }
    let header = |mark: &str| {
        text.lines()
            .take_while(|l| l.starts_with('#'))
            .find_map(|l| l.strip_prefix(mark).map(str::trim).map(str::to_owned))
    };
    let base_hash = header(HASH_MARK)
        .and_then(|h| u64::from_str_radix(&h, 16).ok())
        .ok_or_else(|| {
            unusable(format!(
                "it has no `{}` line: it was not written by sluice",
                HASH_MARK.trim()
            ))
        })?;
    let version = header(VERSION_MARK)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let config = config::parse(&text, &path.display().to_string())
        .map_err(|e| unusable(format!("it is not a valid configuration:\n{e}")))?
        .config;
    let base = std::fs::read(dir.join(BASE_FILE))
        .ok()
        .filter(|b| file_hash(b) == base_hash)
        .and_then(|b| String::from_utf8(b).ok());
    Ok(Some(Saved {
        config,
        version,
        base_hash,
        base,
    }))
}

impl Saved {
    /// The base configuration, if the base file is known: kept, or (older sluice) the
    /// config file itself when its hash matches.
    pub fn base_config(&self, file_text: &str) -> Option<Config> {
        let text = match &self.base {
            Some(b) => b.as_str(),
            None if file_hash(file_text.as_bytes()) == self.base_hash => file_text,
            None => return None,
        };
        config::parse(text, BASE_FILE).ok().map(|l| l.config)
    }
}

/// Reading and writing the files of a [`Store`].
pub trait StoreFiles {
    /// Save `config` (version `version`, made on the base file with hash
    /// `self.base_hash`); only once this returns is it safe to acknowledge the edit.
    fn save(&self, config: &Config, version: u64) -> Result<(), PersistError>;
    /// [`StoreFiles::save`] of a configuration already written out (`Config::to_toml`).
    fn save_text(&self, text: &str, version: u64) -> Result<(), PersistError>;
    /// Keep `text` as the base file of the edits from now on.
    fn save_base(&mut self, text: &str) -> Result<(), PersistError>;
    /// The base file's text, if it is there and is the one the edits are made on.
    fn base_text(&self) -> Option<String>;
}

fn write_file(store: &Store, name: &str, bytes: &[u8]) -> Result<(), PersistError> {
    let path = store.dir.join(name);
    atomic_file::write_private(
        &path,
        bytes,
        Durability::Persistent,
        atomic_file::private_mode(store.gid),
        store.gid,
    )
    .map_err(|source| PersistError::Write { path, source })
}

impl StoreFiles for Store {
    fn save(&self, config: &Config, version: u64) -> Result<(), PersistError> {
        self.save_text(&config.to_toml()?, version)
    }

    fn save_text(&self, text: &str, version: u64) -> Result<(), PersistError> {
        let mut out = String::new();
        let _ = write!(
            out,
            "# sluice: the running configuration after live edits (`sluice config diff` shows\n\
             # them, `sluice config save` writes them to the config file). Do not edit.\n\
             {HASH_MARK}{:016x}\n{VERSION_MARK}{version}\n{text}",
            self.base_hash
        );
        write_file(self, RUNTIME_FILE, out.as_bytes())
    }

    fn save_base(&mut self, text: &str) -> Result<(), PersistError> {
        write_file(self, BASE_FILE, text.as_bytes())?;
        self.base_hash = file_hash(text.as_bytes());
        Ok(())
    }

    fn base_text(&self) -> Option<String> {
        std::fs::read(self.dir.join(BASE_FILE))
            .ok()
            .filter(|b| file_hash(b) == self.base_hash)
            .and_then(|b| String::from_utf8(b).ok())
    }
}

/// Who refuses a merge: a start (no daemon runs) or a running daemon's reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Start,
    Reload,
}

/// A refused merge, ready to print: each conflict with both values, and how to resolve.
pub fn conflict_report(
    file: &Path,
    state_dir: &Path,
    m: &merge::Merged,
    refused: Refused,
) -> String {
    let mut out = String::new();
    let f = file.display();
    if m.conflicts.is_empty() {
        if let Err(e) = &m.config {
            let _ = writeln!(
                out,
                "the live edits saved in {} merge with {f} without conflict, but the result \
                 is not a valid configuration:\n{e}",
                state_dir.join(RUNTIME_FILE).display()
            );
        }
    } else {
        let _ = writeln!(
            out,
            "{f} changed since the live edits saved in {} were made, and {} field(s) were \
             changed differently on both sides:",
            state_dir.join(RUNTIME_FILE).display(),
            m.conflicts.len()
        );
        for c in &m.conflicts {
            let _ = writeln!(out, "  - {c}");
        }
    }
    let _ = match refused {
        Refused::Start => write!(
            out,
            "Nothing was changed. To resolve, keep one side:\n\
             \x20 sluice config diff {f}      # the live edits and the file's changes, side by side\n\
             \x20 sluice config save {f}      # write the live edits into the file (they win the conflicts; the old file is kept as {f}.bak)\n\
             \x20 sluice config discard {f}   # drop the saved live edits: the file wins\n\
             or edit {f} so that it agrees with the live edits, and start again."
        ),
        Refused::Reload => write!(
            out,
            "The daemon keeps running unchanged. To resolve, keep one side:\n\
             \x20 sluice config save {f}      # write the running configuration into the file (the live edits win)\n\
             or edit {f} (or the live state, with `sluice backend|vip ...`) so that they agree, and reload again."
        ),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sluice-persist-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const FILE: &str = "[daemon]\ninterface = \"eth0\"\n[[vip]]\nname = \"web\"\n\
                        address = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n[[vip.backend]]\naddress = \"10.0.0.2\"\n";

    #[test]
    fn unusable_saved_edits_are_reported_for_what_they_are_and_kept() {
        let d = dir("bad");
        let path = d.join(RUNTIME_FILE);
        for (bytes, says) in [
            (&b""[..], "it is empty"),
            (&b"\n  \n"[..], "it is empty"),
            (&b"\x7fELF\x02\x01\x01\x00\xff\xfe"[..], "it is not text"),
            (&b"abc\0def"[..], "it is not text"),
            (
                &b"[daemon]\ninterface = \"x\"\n"[..],
                "no `# config-file-hash =` line",
            ),
            (
                &b"# config-file-hash = 0000000000000001\n[daemon]\nbogus = 1\n"[..],
                "not a valid configuration",
            ),
        ] {
            std::fs::write(&path, bytes).unwrap();
            let e = read(&d).unwrap_err().to_string();
            assert!(e.contains(says), "{bytes:?}: {e}");
            assert!(!e.contains("changed since"), "{e}");
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it was");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn saved_edits_round_trip_privately_with_their_base() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = dir("rt");
        assert!(read(&d).unwrap().is_none());
        let mut store = Store {
            dir: d.clone(),
            gid: None,
            config_file: d.join("sluice.toml"),
            base_hash: 0,
        };
        store.save_base(FILE).unwrap();
        let mut c = config::parse(FILE, "t").unwrap().config;
        c.vips[0].backends[0].weight = 9;
        store.save(&c, 4).unwrap();
        let s = read(&d).unwrap().unwrap();
        assert_eq!((s.config, s.version), (c, 4));
        assert_eq!(s.base.as_deref(), Some(FILE));
        for f in [RUNTIME_FILE, BASE_FILE] {
            let m = std::fs::metadata(d.join(f)).unwrap().permissions().mode();
            assert_eq!(m & 0o777, 0o600, "{f}");
        }
        // The base of other edits (another hash) is not theirs.
        store.base_hash = 1;
        assert!(store.base_text().is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
