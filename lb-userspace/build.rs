//! Captures the git revision the binary is built from, for `sluice --version`:
//! `SLUICE_GIT_REVISION` = the commit's short hash, with `-dirty` when tracked files differ
//! from it; `unknown` outside a git work tree (a source tarball) or without git. A packager
//! building from a tarball can set `SLUICE_GIT_REVISION` in the environment to say which.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    println!("cargo::rerun-if-env-changed=SLUICE_GIT_REVISION");
    let revision = match std::env::var("SLUICE_GIT_REVISION") {
        Ok(r) if !r.trim().is_empty() => r.trim().to_owned(),
        _ => git_revision().unwrap_or_else(|| "unknown".to_owned()),
    };
    println!("cargo::rustc-env=SLUICE_GIT_REVISION={revision}");
}

fn git(args: &[&str], dir: &Path) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn git_revision() -> Option<String> {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let root = PathBuf::from(git(&["rev-parse", "--show-toplevel"], &manifest)?);
    // Run again when HEAD moves (a commit, a checkout: HEAD, the branch's ref, packed refs)
    // or the index changes, and when the sources the binary is made of change (the dirty
    // mark). Not the whole work tree: `target/` changes on every build.
    for what in ["HEAD", "index", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", what], &root) {
            println!("cargo::rerun-if-changed={}", root.join(p).display());
        }
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"], &root)
        && let Some(p) = git(&["rev-parse", "--git-path", &r], &root)
    {
        println!("cargo::rerun-if-changed={}", root.join(p).display());
    }
    for dir in [
        "Cargo.toml",
        "Cargo.lock",
        "lb-common",
        "lb-ebpf",
        "lb-userspace",
        "config",
    ] {
        println!("cargo::rerun-if-changed={}", root.join(dir).display());
    }
    let hash = git(&["rev-parse", "--short=12", "HEAD"], &root)?;
    // Tracked files only: an untracked scratch file does not make the build differ.
    // --no-optional-locks: status does not rewrite the index (which would run this again).
    let dirty = git(
        &[
            "--no-optional-locks",
            "status",
            "--porcelain",
            "--untracked-files=no",
        ],
        &root,
    )
    .is_none_or(|s| !s.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}
