//! Network namespaces for tests.
//!
//! [`Private`]: the calling thread moves into a fresh, anonymous namespace
//! (`unshare(CLONE_NEWNET)`), which disappears with the thread: nothing to clean up, nothing
//! visible to other tests. Commands spawned from that thread run inside it.
//!
//! [`Named`]: `ip netns add` namespaces for multi-host topologies, deleted on drop.

use std::{fs::File, os::fd::AsRawFd as _};

use anyhow::{Context as _, bail};

pub use lb_userspace::bench::netns::{ifindex, sh};

/// The calling thread's own fresh network namespace (with `lo` up).
pub struct Private(());

impl Private {
    pub fn enter() -> anyhow::Result<Self> {
        // SAFETY: unshare with a plain flag; affects only the calling thread.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        }
        sh("ip link set lo up")?;
        Ok(Self(()))
    }
}

/// A named namespace, deleted (with everything in it) on drop.
pub struct Named {
    pub name: String,
}

impl Named {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        // A crashed earlier run may have left it behind.
        let _ = sh(&format!("ip netns del {name} 2>/dev/null"));
        sh(&format!("ip netns add {name}"))?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.exec("ip link set lo up")?;
        Ok(ns)
    }

    /// Run a shell command inside the namespace.
    pub fn exec(&self, cmd: &str) -> anyhow::Result<String> {
        sh(&format!(
            "ip netns exec {} sh -c '{}'",
            self.name,
            cmd.replace('\'', "'\\''")
        ))
    }

    /// Run `f` with the calling thread inside this namespace, then move it back. Sockets
    /// created by `f` stay in this namespace.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> anyhow::Result<T> {
        let home = File::open("/proc/thread-self/ns/net").context("opening own netns")?;
        let target = File::open(format!("/var/run/netns/{}", self.name))
            .with_context(|| format!("opening netns {}", self.name))?;
        // SAFETY: setns on valid namespace fds; affects only the calling thread.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {}: {}", self.name, std::io::Error::last_os_error());
        }
        let out = f();
        // SAFETY: as above.
        if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns back: {}", std::io::Error::last_os_error());
        }
        Ok(out)
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns del {}", self.name));
    }
}
