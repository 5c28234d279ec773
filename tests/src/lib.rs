//! Shared pieces of sluice's root-only tests: private network namespaces and frame
//! builders. Every namespace, link and pin a test creates is removed when its guard drops,
//! also when the test fails.

pub mod agent;
pub mod api;
pub mod child;
pub mod conn;
pub mod frames;
pub mod fuzz;
pub mod netns;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Tests of one binary that build labs or daemons run one at a time: they share names
/// (prefixes), pin directories and the machine's few cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// Hold this for the whole test; a test that failed (panicked) while holding it does not
/// stop the next.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A name for a test's lab or namespaces, unique per test binary (`binary`) and process:
/// `sl-<binary>-<pid % 100000>-<name>` (short: interface names derive from it).
pub fn prefix(binary: &str, name: &str) -> String {
    format!("sl-{binary}-{}-{name}", std::process::id() % 100_000)
}

/// Fail loudly (not skip) when not root: CI runs as root, and a skipped test proves nothing.
pub fn require_root() {
    let uid = nix::unistd::geteuid().as_raw();
    assert_eq!(
        uid, 0,
        "these tests need root (BPF, network namespaces); run them as root, as CI does"
    );
}
