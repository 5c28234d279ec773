//! Where the benchmarks run: a private network namespace of the benchmark thread
//! (`unshare(CLONE_NEWNET)`), which the kernel removes with everything in it when the
//! thread ends, so the benchmarks never touch the host's interfaces, addresses or
//! sysctls. Commands spawned from that thread (`ip`, `sysctl`) run inside it.

use std::process::Command;

use anyhow::{Context as _, bail};
use nix::{
    sched::{CpuSet, sched_getaffinity, sched_setaffinity},
    unistd::Pid,
};

use crate::config::format_mac;

/// Run `f` on a new thread inside a fresh private network namespace (with `lo` up); the
/// namespace and everything created in it disappear when `f` returns.
pub fn in_private_netns<T: Send>(
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // Affects only this thread.
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                bail!(
                    "unshare(CLONE_NEWNET): {} (the benchmarks need root)",
                    std::io::Error::from(e)
                );
            }
            run(&["ip", "link", "set", "lo", "up"])?;
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Run `argv` (program and arguments, no shell) in the calling thread's namespace; its
/// stdout, or an error with its stderr.
pub fn run(argv: &[&str]) -> anyhow::Result<String> {
    run_stdin(argv, None)
}

/// [`run`] with `input` on the command's standard input.
pub fn run_stdin(argv: &[&str], input: Option<&str>) -> anyhow::Result<String> {
    use std::{io::Write as _, process::Stdio};
    let (program, args) = argv.split_first().context("an empty command")?;
    let shown = argv.join(" ");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning `{shown}`"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The ifindex of `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> anyhow::Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(|_| anyhow::anyhow!("no interface {name}"))
}

/// The per-packet benchmark's network (inside the private namespace): the LB interface
/// `IFACE` (a veth whose peer only exists so it is up) with `10.98.0.1/16` and
/// `fd98::1/64`, forwarding on, and a permanent neighbour entry for each `(address, MAC)`,
/// so `bpf_fib_lookup` resolves backends deterministically.
pub const IFACE: &str = "sb0";

pub fn packet_network(
    lb_mac: [u8; 6],
    neighbours: &[(std::net::IpAddr, [u8; 6])],
) -> anyhow::Result<u32> {
    let lb_mac = format_mac(&lb_mac);
    for argv in [
        &[
            "ip", "link", "add", IFACE, "address", &lb_mac, "mtu", "1500", "type", "veth", "peer",
            "name", "sb1",
        ][..],
        &["ip", "link", "set", IFACE, "up"],
        &["ip", "link", "set", "sb1", "up"],
        &["ip", "addr", "add", "10.98.0.1/16", "dev", IFACE],
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "fd98::1/64",
            "dev",
            IFACE,
            "nodad",
        ],
        &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
    ] {
        run(argv)?;
    }
    // One `ip -batch` for all entries: a thousand `ip` processes would take seconds. Its
    // lines are built from typed addresses and MACs only (no shell involved).
    let batch: String = neighbours
        .iter()
        .map(|(a, m)| {
            format!(
                "neigh replace {a} lladdr {} dev {IFACE} nud permanent\n",
                format_mac(m)
            )
        })
        .collect();
    if !batch.is_empty() {
        run_stdin(&["ip", "-batch", "-"], Some(&batch))?;
    }
    ifindex(IFACE)
}

/// Pin the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)
        .map_err(|e| anyhow::anyhow!("cpu {cpu}: {}", std::io::Error::from(e)))?;
    // Pid 0: the calling thread.
    sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(|e| anyhow::anyhow!("sched_setaffinity(cpu {cpu}): {}", std::io::Error::from(e)))
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
        return vec![0];
    };
    (0..CpuSet::count())
        .filter(|c| set.is_set(*c).unwrap_or(false))
        .collect()
}

/// The calling thread's current affinity, to restore after pinning.
pub struct Affinity(CpuSet);

impl Affinity {
    pub fn save() -> Self {
        // An empty set if it cannot be read (as before): restoring it then fails, harmlessly.
        Self(sched_getaffinity(Pid::from_raw(0)).unwrap_or_else(|_| CpuSet::new()))
    }
}

impl Drop for Affinity {
    fn drop(&mut self) {
        let _ = sched_setaffinity(Pid::from_raw(0), &self.0);
    }
}

/// Number of possible CPUs (see [`crate::dataplane::possible_cpus`]).
pub fn possible_cpus() -> usize {
    crate::dataplane::possible_cpus()
}

#[cfg(test)]
mod tests {
    /// Pinning moves the calling thread to one CPU; the saved affinity comes back.
    #[test]
    fn a_thread_is_pinned_and_its_affinity_restored() {
        std::thread::spawn(|| {
            let before = super::allowed_cpus();
            let cpu = *before.last().unwrap();
            {
                let _saved = super::Affinity::save();
                super::pin_to_cpu(cpu).unwrap();
                assert_eq!(super::allowed_cpus(), [cpu]);
            }
            assert_eq!(super::allowed_cpus(), before);
            assert!(super::pin_to_cpu(usize::MAX).is_err());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(crate::dataplane::parse_cpu_list("0-1"), Some(2));
        assert_eq!(crate::dataplane::parse_cpu_list("0"), Some(1));
        assert_eq!(crate::dataplane::parse_cpu_list("0-3,5,7-8"), Some(7));
    }
}
