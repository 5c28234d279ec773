//! Where the balancer pins its objects in bpffs: the defaults and the syntax a configured
//! pin directory must have (checked without touching the file system; the data plane
//! checks the mount when it prepares the directory).

use std::path::{Path, PathBuf};

/// Where sluice pins objects in bpffs.
pub const PIN_ROOT: &str = "/sys/fs/bpf/sluice";

/// The balancer's default pin directory on `interface`: `/sys/fs/bpf/sluice/<interface>`.
pub fn default_pin_dir(interface: &str) -> PathBuf {
    Path::new(PIN_ROOT).join(interface)
}

/// What a pin directory must look like, without touching the file system (config
/// validation): an absolute, normalised path (no `.`/`..`, no NUL) below a mount point.
/// The reason it is not, as the end of a sentence starting with the path.
pub fn check_pin_dir_syntax(dir: &Path) -> Result<(), String> {
    use std::path::Component;
    let s = dir.as_os_str().as_encoded_bytes();
    if !dir.is_absolute() || s.contains(&0) {
        return Err("is not an absolute path".to_owned());
    }
    if dir
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        return Err("must not contain '.' or '..'".to_owned());
    }
    if dir.components().count() < 3 {
        return Err(
            "must be a directory below a bpffs mount (e.g. /sys/fs/bpf/sluice/eth0)".to_owned(),
        );
    }
    Ok(())
}
