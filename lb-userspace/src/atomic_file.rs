//! Writing a file so that a reader (or a crash) sees the old content or the new, never a
//! mix: a temporary file next to it, fsync, rename over it. Every file the daemon keeps
//! (saved layout, runtime configuration, status, autoscaler state) is written this way.

use std::{fs::File, io::Write as _, path::Path};

/// How durable a write must be once it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The directory is fsynced too, so the rename itself survives a crash (state a
    /// restart relies on).
    Persistent,
    /// Nothing is fsynced: a snapshot rewritten every second (the status file), for which
    /// losing the last one to a crash does not matter (readers still never see a mix).
    Snapshot,
}

/// Replace `path` with `bytes` atomically (creating its directory if needed).
pub fn write(path: &Path, bytes: &[u8], durability: Durability) -> std::io::Result<()> {
    write_as(path, bytes, durability, None)
}

/// [`write`], the file readable by its owner only (mode 0600), or also by `group`
/// (a gid: mode 0640, group-owned by it).
pub fn write_private(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
    group: Option<u32>,
) -> std::io::Result<()> {
    write_as(path, bytes, durability, Some(group))
}

fn write_as(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
    private: Option<Option<u32>>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let _ = std::fs::remove_file(&tmp);
        let mut f = match private {
            None => File::create(&tmp)?,
            Some(group) => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                if let Some(gid) = group {
                    std::os::unix::fs::fchown(&f, None, Some(gid))?;
                    // Exactly 0640, whatever the umask.
                    f.set_permissions(std::fs::Permissions::from_mode(0o640))?;
                }
                f
            }
        };
        f.write_all(bytes)?;
        if durability == Durability::Persistent {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if durability == Durability::Persistent {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_whole_files() {
        let dir = std::env::temp_dir().join(format!("sluice-atomic-{}", std::process::id()));
        let f = dir.join("layout.json");
        write(&f, b"one", Durability::Persistent).unwrap();
        write(&f, b"two", Durability::Snapshot).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn private_files_are_not_world_readable() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("sluice-private-{}", std::process::id()));
        let f = dir.join("status.json");
        // Replacing a world-readable file (as older daemons wrote it).
        write(&f, b"old", Durability::Snapshot).unwrap();
        write_private(&f, b"one", Durability::Snapshot, None).unwrap();
        let mode = |f: &Path| std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&f), 0o600);
        // SAFETY: getegid has no preconditions.
        let gid = unsafe { libc::getegid() };
        write_private(&f, b"two", Durability::Snapshot, Some(gid)).unwrap();
        assert_eq!(mode(&f), 0o640);
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
