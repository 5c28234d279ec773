//! End-to-end: an ICMP error that a client's own kernel sends to a VIP (port unreachable,
//! for a datagram a backend sent it) reaches the backend that owns the flow, in both
//! forwarding modes, and no other backend.
//!
//! The client sends one UDP datagram to the VIP from a raw socket (so no UDP socket holds
//! its source port); the backend's echo comes back from the VIP to that port, where the
//! client's kernel finds no socket and answers "port unreachable" to the VIP, through the
//! load balancer. Raw ICMP sockets in every backend see what reaches them. Each lab is
//! removed when it drops, also on failure; every wait is bounded.

use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use lb_userspace::{
    config::Forwarding,
    lab::{self, Lab, LabSpec, Weights, daemon::Daemon},
};
use sluice_tests::require_root;

static SERIAL: Mutex<()> = Mutex::new(());

const CLIENT_PORT: u16 = 40555;
const PAYLOAD: &[u8] = b"icmp-e2e";

fn raw_socket(proto: i32) -> anyhow::Result<OwnedFd> {
    // SAFETY: a plain syscall; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: `tv` is a valid timeval of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    ensure!(rc == 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
    Ok(fd)
}

/// One packet (with its IPv4 header, as raw IPv4 sockets deliver them), or `None` after the
/// receive timeout.
fn recv(fd: &OwnedFd) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(n).ok().map(|n| buf[..n].to_vec())
}

/// Send a UDP datagram from `CLIENT_PORT` to `to:port` on a raw socket (the kernel adds the
/// IPv4 header; UDP checksum 0: none).
fn send_udp(fd: &OwnedFd, to: Ipv4Addr, port: u16) -> anyhow::Result<()> {
    let mut pkt = Vec::new();
    pkt.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    pkt.extend_from_slice(&port.to_be_bytes());
    pkt.extend_from_slice(&(8 + PAYLOAD.len() as u16).to_be_bytes());
    pkt.extend_from_slice(&[0, 0]);
    pkt.extend_from_slice(PAYLOAD);
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(to.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `pkt` and `sa` are valid for the lengths passed.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    ensure!(
        usize::try_from(n).ok() == Some(pkt.len()),
        "sendto {to}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// The IPv4 payload of `p` (skipping its header's options).
fn l4(p: &[u8]) -> &[u8] {
    let hlen = usize::from(p.first().map_or(0, |b| b & 0x0f)) * 4;
    p.get(hlen..).unwrap_or(&[])
}

/// Whether `p` (IPv4, ICMP) is a port unreachable about a datagram from `vip:port` to
/// `CLIENT_PORT`.
fn is_our_error(p: &[u8], vip: Ipv4Addr, port: u16) -> bool {
    let icmp = l4(p);
    if icmp.len() < 8 + 20 + 8 || icmp[0] != 3 || icmp[1] != 3 {
        return false;
    }
    let quoted = &icmp[8..];
    let ports = l4(quoted);
    quoted[12..16] == vip.octets()
        && ports.len() >= 4
        && ports[..2] == port.to_be_bytes()
        && ports[2..4] == CLIENT_PORT.to_be_bytes()
}

#[test]
fn port_unreachable_reaches_the_flows_backend_in_both_modes() -> anyhow::Result<()> {
    require_root();
    let _serial = SERIAL.lock();
    for mode in [Forwarding::Dsr, Forwarding::Ipip] {
        let prefix = format!("sl-icmp-{}-{mode}", std::process::id() % 100_000);
        let lab = Lab::up(LabSpec::new(&prefix).backends(2).mode(mode))?;
        let d = Daemon::start(&lab, lab.daemon_config(&Weights::Equal)?)?;
        let vip = lab.vip4();
        let port = lab::UDP_PORT;
        let watchers = (0..2)
            .map(|k| lab.backend(k).run(|| raw_socket(libc::IPPROTO_ICMP))?)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let client = lab.client(0).run(|| raw_socket(libc::IPPROTO_UDP))??;
        // The echo names the backend that holds the flow (`backend-k:payload`); the raw
        // UDP socket sees it as a copy of what the kernel then refuses.
        let deadline = Instant::now() + Duration::from_secs(10);
        let owner = 'found: loop {
            ensure!(Instant::now() < deadline, "{mode}: no echo from the VIP");
            send_udp(&client, vip, port)?;
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until {
                let Some(p) = recv(&client) else { continue };
                let u = l4(&p);
                if p.get(12..16) == Some(&vip.octets()[..])
                    && u.len() > 8
                    && u[2..4] == CLIENT_PORT.to_be_bytes()
                {
                    let text = String::from_utf8_lossy(&u[8..]).into_owned();
                    let (name, _) = text.split_once(':').context("echo format")?;
                    break 'found name.to_owned();
                }
            }
        };
        let k: usize = owner
            .strip_prefix("backend-")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("backend name {owner}"))?;
        ensure!((1..=2).contains(&k), "{owner}");
        // What reached each backend within 2 s of the echo.
        let mut got = [false; 2];
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            for (i, w) in watchers.iter().enumerate() {
                if let Some(p) = recv(w)
                    && is_our_error(&p, vip, port)
                {
                    got[i] = true;
                }
            }
        }
        println!("{mode}: flow on {owner}; port unreachable seen by backends 1, 2: {got:?}");
        ensure!(
            got[k - 1],
            "{mode}: the port unreachable did not reach {owner}, the flow's backend"
        );
        ensure!(
            !got[2 - k],
            "{mode}: the port unreachable reached the other backend too"
        );
        drop(d);
        lab.down()?;
    }
    Ok(())
}
