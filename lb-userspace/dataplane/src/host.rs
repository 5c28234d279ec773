//! Read-only facts of this host and of the calling thread's network namespace, for
//! `sluice doctor` to judge (the daemon's `doctor` module): sysctls, sockets bound or
//! listening, the names of attached XDP programs, bpffs, kernel BTF, clock
//! synchronisation. Nothing here changes anything.
//!
//! `/proc/sys/net` shows the network namespace of the thread reading it, and
//! `/proc/thread-self/net` that thread's (`/proc/net` is the main thread's: a caller that
//! entered a namespace on another thread would read the wrong one); neither is the one
//! /sys was mounted in.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

/// The value of a sysctl given as its path under `/proc/sys`
/// (`net/ipv4/conf/eth0/arp_ignore`: slashes, so that interface names with dots work).
pub fn sysctl(path: &str) -> io::Result<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(path)).map(|s| s.trim().to_owned())
}

/// [`sysctl`] as a number.
pub fn sysctl_u32(path: &str) -> io::Result<u32> {
    let s = sysctl(path)?;
    s.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/sys/{path}: {s:?} is not a number"),
        )
    })
}

/// A socket of this network namespace: its local address, and whether it listens (TCP)
/// or is bound (UDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundSocket {
    pub local: SocketAddr,
    pub tcp: bool,
}

/// TCP sockets in LISTEN and every bound UDP socket of the calling thread's network
/// namespace (`/proc/thread-self/net/{tcp,tcp6,udp,udp6}`; a table that cannot be read,
/// e.g. without IPv6, is skipped).
pub fn bound_sockets() -> Vec<BoundSocket> {
    /// `TCP_LISTEN` in the `st` column.
    const LISTEN: &str = "0A";
    let mut out = Vec::new();
    for (file, tcp) in [
        ("tcp", true),
        ("tcp6", true),
        ("udp", false),
        ("udp6", false),
    ] {
        let Ok(text) = std::fs::read_to_string(Path::new("/proc/thread-self/net").join(file))
        else {
            continue;
        };
        for line in text.lines().skip(1) {
            let mut f = line.split_whitespace();
            let (Some(local), Some(_remote), Some(state)) = (f.nth(1), f.next(), f.next()) else {
                continue;
            };
            if tcp && state != LISTEN {
                continue;
            }
            if let Some(local) = parse_proc_addr(local) {
                out.push(BoundSocket { local, tcp });
            }
        }
    }
    out
}

/// `0100007F:0050` (IPv4) or 32 hex digits and a port (IPv6), as `/proc/net/tcp` prints
/// them: each 32-bit word of the address is the network-order bytes read as a native
/// integer; the port is in host order.
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| {
        u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16)
            .ok()
            .map(u32::to_ne_bytes)
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The name of the loaded BPF program with id `id` (as the kernel keeps it: at most 15
/// characters), if there is one.
pub fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
}

/// Whether `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    crate::pinned::is_bpffs(path)
}

/// Whether the kernel describes its own types (BTF, `/sys/kernel/btf/vmlinux`).
pub fn kernel_btf() -> bool {
    Path::new("/sys/kernel/btf/vmlinux").exists()
}

/// Whether the kernel considers the system clock synchronised (NTP, PTP, chrony: the
/// `STA_UNSYNC` status `adjtimex` reports); `None` if it cannot be asked.
pub fn clock_synchronised() -> Option<bool> {
    // SAFETY: a zeroed `timex` with `modes == 0` only reads the kernel's clock state into it.
    let state = unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        libc::adjtimex(&raw mut tx)
    };
    match state {
        -1 => None,
        libc::TIME_ERROR => Some(false),
        _ => Some(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses() {
        let lo = u32::from_ne_bytes([127, 0, 0, 1]);
        assert_eq!(
            parse_proc_addr(&format!("{lo:08X}:0050")),
            Some("127.0.0.1:80".parse().unwrap())
        );
        let v6: Ipv6Addr = "fd97::100".parse().unwrap();
        let hex: String = v6
            .octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        assert_eq!(
            parse_proc_addr(&format!("{hex}:1F90")),
            Some(SocketAddr::new(v6.into(), 8080))
        );
        assert_eq!(parse_proc_addr("0100007F"), None);
        assert_eq!(parse_proc_addr("01007F:0050"), None);
    }

    #[test]
    fn host_facts_can_be_read() {
        assert!(sysctl_u32("net/ipv4/ip_forward").unwrap() <= 1);
        assert!(sysctl("net/ipv4/no/such").is_err());
        // A listener of this test is among the bound sockets.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        assert!(
            bound_sockets().iter().any(|s| s.tcp && s.local == at),
            "{at}"
        );
        let _ = clock_synchronised();
    }
}
