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
    /// The rename is not fsynced: a snapshot rewritten every second (the status file), for
    /// which losing the last one to a crash does not matter.
    Snapshot,
}

/// Replace `path` with `bytes` atomically (creating its directory if needed).
pub fn write(path: &Path, bytes: &[u8], durability: Durability) -> std::io::Result<()> {
    write_inner(path, bytes, durability, None)
}

/// [`write`], the file getting exactly `mode` (whatever the umask) and, with `group`, that
/// group, from the moment it appears: for files that must not be world-readable.
pub fn write_private(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
    mode: u32,
    group: Option<u32>,
) -> std::io::Result<()> {
    write_inner(path, bytes, durability, Some((mode, group)))
}

fn write_inner(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
    private: Option<(u32, Option<u32>)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(private.map_or(0o666, |(m, _)| m))
            .open(&tmp)?;
        if let Some((mode, group)) = private {
            if let Some(gid) = group {
                std::os::unix::fs::fchown(&f, None, Some(gid))?;
            }
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
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
}
