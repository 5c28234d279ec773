//! Running commands: echo them, and turn failures into errors that name the command.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

use anyhow::{Context as _, bail};

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `cargo` (the rustup proxy on `PATH`, so `+toolchain` works), run in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root());
    cmd
}

/// A command that needs root: run directly as root, through `sudo` otherwise.
pub fn privileged(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut cmd = Command::new("sudo");
        cmd.arg(program);
        cmd
    }
}

fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
    })
}

/// A header line that makes a task's stages easy to find in a CI log.
pub fn section(title: &str) {
    println!("\n==> {title}");
}

/// The command line as one string, with the environment it sets (for messages).
pub fn show(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(key, value)| value.map(|value| format!("{}={}", key.display(), quote(value))))
        .collect();
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=+./:,@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` with inherited stdio, echoing it first; fails if it does not exit with 0.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = show(cmd);
    println!("+ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its output, whatever its exit status; fails only if it
/// cannot be started.
pub fn output(cmd: &mut Command) -> anyhow::Result<Output> {
    cmd.output()
        .with_context(|| format!("could not start `{}`", show(cmd)))
}

/// Runs `cmd` quietly and returns its stdout; fails (with its stderr) if it does not exit
/// with 0.
pub fn stdout(cmd: &mut Command) -> anyhow::Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        let sep = if stderr.is_empty() { "" } else { ": " };
        bail!("`{}` failed ({}){sep}{stderr}", show(cmd), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the Debian package `package` is installed, by `dpkg-query`; `needs` names what
/// requires Debian, for the error when there is no `dpkg-query`.
pub fn deb_installed(package: &str, needs: &str) -> anyhow::Result<bool> {
    let out = output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .with_context(|| format!("dpkg-query not found: {needs} needs Debian (or a derivative)"))?;
    // `${Status}` is "<want> <flag> <status>", e.g. "install ok installed"; dpkg-query exits
    // non-zero for a package it has never heard of.
    let status = String::from_utf8_lossy(&out.stdout);
    Ok(out.status.success() && status.split_whitespace().nth(2) == Some("installed"))
}
