//! Shared pieces of sluice's root-only tests: private network namespaces and frame
//! builders. Every namespace, link and pin a test creates is removed when its guard drops,
//! also when the test fails.

pub mod conn;
pub mod frames;
pub mod netns;

/// Fail loudly (not skip) when not root: CI runs as root, and a skipped test proves nothing.
pub fn require_root() {
    let uid = nix::unistd::geteuid().as_raw();
    assert_eq!(
        uid, 0,
        "these tests need root (BPF, network namespaces); run them as root, as CI does"
    );
}
