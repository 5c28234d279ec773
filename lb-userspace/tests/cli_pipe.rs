//! The `sluice` binary with a reader that goes away early (`sluice ... | head`): it ends
//! quietly, as Unix tools do, instead of panicking on EPIPE. No root, no daemon.

use std::{
    os::unix::process::ExitStatusExt as _,
    process::{Command, Stdio},
};

#[test]
fn closed_stdout_ends_quietly() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sluice.toml");
    for args in [
        vec!["config", "export", config],
        vec!["--json", "config", "export", config],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&args)
            .env("SLUICE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice");
        // The reader is gone before the first line is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("sluice ends");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "sluice {args:?} complained about its closed stdout: {stderr}"
        );
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "sluice {args:?}: {:?}, {stderr}",
            out.status
        );
    }
}
