//! Writing a file so that a reader (or a crash) sees the old content or the new, never a
//! mix: a temporary file next to it, fsync, rename over it. Every file the daemon keeps
//! (saved layout, runtime configuration, status, autoscaler state) is written this way.
//! The temporary file is `<name>.tmp.<pid>`; a crash can leave one behind, which the next
//! daemon removes at start ([`remove_leftovers`]).

use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
};

/// The temporary file `write` uses for `path` in process `pid`: `<name>.tmp.<pid>`.
fn temp_path(path: &Path, pid: u32) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".tmp.{pid}"));
    path.with_file_name(name)
}

/// The writer's pid if `name` is one of [`write`]'s temporary files (`*.tmp.<pid>`; also
/// the `<stem>.tmp.<pid>` of earlier builds, which replaced the extension).
fn temp_owner(name: &str) -> Option<u32> {
    let (head, pid) = name.rsplit_once('.')?;
    let stem = head.strip_suffix(".tmp")?;
    if stem.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` exists (on this host's pid namespace).
fn alive(pid: u32) -> bool {
    use nix::{errno::Errno, sys::signal::kill, unistd::Pid};
    let Ok(p) = i32::try_from(pid) else {
        return false;
    };
    // No signal (0) only checks that the process exists; EPERM: it does, as another user's.
    p > 0 && matches!(kill(Pid::from_raw(p), None), Ok(()) | Err(Errno::EPERM))
}

/// Remove the temporary files of [`write`] that a crashed writer left in `dir` (those of a
/// process that no longer exists, or of this one: nothing of it writes yet when the daemon
/// starts); the files removed. A missing `dir` has none.
pub fn remove_leftovers(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let me = std::process::id();
    let mut removed = Vec::new();
    for e in entries {
        let e = e?;
        let Some(pid) = e.file_name().to_str().and_then(temp_owner) else {
            continue;
        };
        if !e.file_type()?.is_file() || (pid != me && alive(pid)) {
            continue;
        }
        std::fs::remove_file(e.path())?;
        removed.push(e.path());
    }
    removed.sort();
    Ok(removed)
}

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
    write_inner(path, bytes, durability, None)
}

/// The mode of a file only root (0600), or root and the group `gid` (0640), may read.
pub fn private_mode(gid: Option<u32>) -> u32 {
    if gid.is_some() { 0o640 } else { 0o600 }
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
    let tmp = temp_path(path, std::process::id());
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
    fn temporary_files_are_recognised_by_name() {
        let t = temp_path(Path::new("/run/sluice/layout.json"), 42);
        assert_eq!(t, Path::new("/run/sluice/layout.json.tmp.42"));
        assert_eq!(temp_owner("layout.json.tmp.42"), Some(42));
        assert_eq!(
            temp_owner("layout.tmp.7"),
            Some(7),
            "earlier builds' naming"
        );
        for other in [
            "layout.json",
            "layout.json.tmp",
            "layout.json.tmp.",
            "layout.json.tmp.12a",
            ".tmp.12",
            "notes.tmp.x1",
            "layout.json.temp.12",
        ] {
            assert_eq!(temp_owner(other), None, "{other}");
        }
    }

    #[test]
    fn leftovers_of_dead_writers_are_removed_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("sluice-leftovers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A process that certainly exited (reaped just now), and one that is alive (pid 1).
        let dead = std::process::Command::new("true")
            .spawn()
            .and_then(|mut c| c.wait().map(|_| c.id()))
            .unwrap();
        let names = [
            format!("layout.json.tmp.{dead}"),
            format!("status.tmp.{dead}"),
            format!("runtime.toml.tmp.{}", std::process::id()),
            "autoscale.json.tmp.1".to_owned(),
            "layout.json".to_owned(),
            "notes.tmp".to_owned(),
        ];
        for n in &names {
            std::fs::write(dir.join(n), b"x").unwrap();
        }
        std::fs::create_dir(dir.join(format!("d.tmp.{dead}"))).unwrap();
        let removed = remove_leftovers(&dir).unwrap();
        let mut want: Vec<PathBuf> = names[..3].iter().map(|n| dir.join(n)).collect();
        want.sort();
        assert_eq!(removed, want);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "autoscale.json.tmp.1".to_owned(),
                format!("d.tmp.{dead}"),
                "layout.json".to_owned(),
                "notes.tmp".to_owned()
            ]
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
        write_private(&f, b"one", Durability::Snapshot, private_mode(None), None).unwrap();
        let mode = |f: &Path| std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&f), 0o600);
        let gid = nix::unistd::getegid().as_raw();
        write_private(
            &f,
            b"two",
            Durability::Snapshot,
            private_mode(Some(gid)),
            Some(gid),
        )
        .unwrap();
        assert_eq!(mode(&f), 0o640);
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
