//! Network namespaces for tests.
//!
//! [`Private`]: the calling thread moves into a fresh, anonymous namespace
//! (`unshare(CLONE_NEWNET)`), which disappears with the thread: nothing to clean up, nothing
//! visible to other tests. Commands spawned from that thread run inside it.
//!
//! [`Named`]: `ip netns add` namespaces for multi-host topologies, deleted on drop.

use anyhow::bail;
use sluice_lab::lab::netns::Netns;

pub use sluice_lab::bench::netns::{ifindex, run, run_stdin};

/// The calling thread's own fresh network namespace (with `lo` up).
pub struct Private(());

impl Private {
    pub fn enter() -> anyhow::Result<Self> {
        // Affects only the calling thread.
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
            bail!("unshare(CLONE_NEWNET): {}", std::io::Error::from(e));
        }
        run(&["ip", "link", "set", "lo", "up"])?;
        Ok(Self(()))
    }
}

/// A named namespace, deleted (with everything in it) on drop: the lab's
/// [`Netns`] with a test's lifetime.
pub struct Named {
    ns: Netns,
}

impl Named {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let ns = Netns::named(name);
        // A crashed earlier run may have left it behind.
        let _ = ns.delete();
        Ok(Self {
            ns: Netns::create(name)?,
        })
    }

    pub fn name(&self) -> &str {
        self.ns.name()
    }

    /// Run `argv` (no shell) inside the namespace; its stdout.
    pub fn exec(&self, argv: &[&str]) -> anyhow::Result<String> {
        Ok(self.ns.exec(argv)?)
    }

    /// Run `f` with the calling thread inside this namespace, then move it back. Sockets
    /// created by `f` stay in this namespace.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> anyhow::Result<T> {
        Ok(self.ns.run(f)?)
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.ns.delete();
    }
}
