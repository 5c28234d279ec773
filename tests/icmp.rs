//! End-to-end: an ICMP error that a client's own kernel sends to a VIP (port unreachable,
//! for a datagram a backend sent it) reaches the backend that owns the flow, and no other
//! backend: DSR and IPIP, IPv4 and IPv6.
//!
//! The client sends one UDP datagram to the VIP from a raw socket (so no UDP socket holds
//! its source port); the backend's echo comes back from the VIP to that port, where the
//! client's kernel finds no socket and answers "port unreachable" to the VIP, through the
//! load balancer. Raw ICMP sockets in every backend see what reaches them. Each lab is
//! removed when it drops, also on failure; every wait is bounded.

use std::{
    net::IpAddr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use sluice_core::config::Forwarding;
use sluice_lab::lab::{self, Lab, LabSpec, Weights, daemon::Daemon};
use sluice_tests::{prefix, require_root, serial};

/// The client's source port of the first flow (one more for each next one).
const CLIENT_PORT: u16 = 40555;
const PAYLOAD: &[u8] = b"icmp-e2e";

fn setopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> anyhow::Result<()> {
    // SAFETY: `value` is valid for its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            core::ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    ensure!(
        rc == 0,
        "setsockopt {level}/{name}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// A raw socket of `family` for `proto`, reads timing out after 200 ms.
fn raw_socket(family: i32, proto: i32) -> anyhow::Result<OwnedFd> {
    // SAFETY: a plain syscall; the descriptor is owned below.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    setopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    if family == libc::AF_INET6 && proto == libc::IPPROTO_UDP {
        // The kernel fills the UDP checksum (mandatory over IPv6) at offset 6.
        setopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_CHECKSUM, &6i32)?;
    }
    Ok(fd)
}

/// One packet, or `None` after the receive timeout. Raw IPv4 sockets deliver the IP
/// header too, raw IPv6 sockets only the payload: this returns the L4 part either way.
fn recv_l4(fd: &OwnedFd, v6: bool) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let p = &buf[..usize::try_from(n).ok()?];
    Some(if v6 { p.to_vec() } else { l4(p).to_vec() })
}

/// Send a UDP datagram from `cport` to `to:port` on a raw socket (the kernel adds the IP
/// header; over IPv4 without a UDP checksum).
fn send_udp(fd: &OwnedFd, cport: u16, to: IpAddr, port: u16) -> anyhow::Result<()> {
    let mut pkt = Vec::new();
    pkt.extend_from_slice(&cport.to_be_bytes());
    pkt.extend_from_slice(&port.to_be_bytes());
    pkt.extend_from_slice(&(8 + PAYLOAD.len() as u16).to_be_bytes());
    pkt.extend_from_slice(&[0, 0]);
    pkt.extend_from_slice(PAYLOAD);
    let send = |sa: *const libc::sockaddr, len: usize| {
        // SAFETY: `pkt` and `sa` are valid for the lengths passed.
        unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                sa,
                len as libc::socklen_t,
            )
        }
    };
    let n = match to {
        IpAddr::V4(a) => {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.octets()),
                },
                sin_zero: [0; 8],
            };
            send((&raw const sa).cast(), size_of::<libc::sockaddr_in>())
        }
        IpAddr::V6(a) => {
            let sa = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                sin6_scope_id: 0,
            };
            send((&raw const sa).cast(), size_of::<libc::sockaddr_in6>())
        }
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

/// Whether `icmp` (an ICMP or ICMPv6 message) is a port unreachable about a datagram from
/// `vip:port` to `cport`.
fn is_our_error(icmp: &[u8], vip: IpAddr, port: u16, cport: u16) -> bool {
    let (kind, code) = if vip.is_ipv4() { (3, 3) } else { (1, 4) };
    if icmp.len() < 8 || icmp[0] != kind || icmp[1] != code {
        return false;
    }
    let quoted = &icmp[8..];
    let (src, ports) = match vip {
        IpAddr::V4(_) => (quoted.get(12..16), l4(quoted)),
        IpAddr::V6(_) => (quoted.get(8..24), quoted.get(40..).unwrap_or(&[])),
    };
    let want = match vip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    src == Some(&want[..])
        && ports.len() >= 4
        && ports[..2] == port.to_be_bytes()
        && ports[2..4] == cport.to_be_bytes()
}

/// Send from the client until the VIP echoes (bounded); returns the echoing backend's
/// index (`backend-k` → k).
fn echo_owner(client: &OwnedFd, cport: u16, vip: IpAddr, port: u16) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        send_udp(client, cport, vip, port)?;
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            let Some(u) = recv_l4(client, vip.is_ipv6()) else {
                continue;
            };
            if u.len() > 8 && u[..2] == port.to_be_bytes() && u[2..4] == cport.to_be_bytes() {
                let text = String::from_utf8_lossy(&u[8..]).into_owned();
                let (name, _) = text.split_once(':').context("echo format")?;
                return name
                    .strip_prefix("backend-")
                    .and_then(|n| n.parse().ok())
                    .with_context(|| format!("backend name {name}"));
            }
        }
    }
    anyhow::bail!("no echo from {vip}")
}

#[test]
fn port_unreachable_reaches_the_flows_backend() {
    require_root();
    let _serial = serial();
    let mut cport = CLIENT_PORT;
    let mut owners = std::collections::BTreeSet::new();
    for mode in [Forwarding::Dsr, Forwarding::Ipip] {
        let prefix = prefix("icmp", &mode.to_string());
        let lab = Lab::up(LabSpec::new(&prefix).backends(2).mode(mode)).expect("bring the lab up");
        let d = Daemon::start(
            &lab,
            lab.daemon_config(&Weights::Equal)
                .expect("the lab's daemon config"),
        )
        .expect("start the daemon");
        let port = lab::UDP_PORT;
        for vip in lab.vips() {
            // Flows from several ports, so that both backends own some.
            cport += 1;
            let (family, icmp) = if vip.is_ipv4() {
                (libc::AF_INET, libc::IPPROTO_ICMP)
            } else {
                (libc::AF_INET6, libc::IPPROTO_ICMPV6)
            };
            let watchers = (0..2)
                .map(|k| lab.backend(k).run(|| raw_socket(family, icmp))?)
                .collect::<anyhow::Result<Vec<_>>>()
                .expect("open the connections");
            let client = lab
                .client(0)
                .run(|| raw_socket(family, libc::IPPROTO_UDP))
                .expect("run in the namespace")
                .expect("open a raw socket");
            // The echo names the backend that holds the flow (`backend-k:payload`); the
            // raw UDP socket sees a copy of what the client's kernel then refuses.
            let k = echo_owner(&client, cport, vip, port)
                .unwrap_or_else(|e| panic!("{mode} {vip}: {e:#}"));
            assert!((1..=2).contains(&k), "{mode} {vip}: backend-{k}?");
            // What reached each backend within 2 s of the echo.
            let mut got = [false; 2];
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                for (i, w) in watchers.iter().enumerate() {
                    if let Some(p) = recv_l4(w, vip.is_ipv6())
                        && is_our_error(&p, vip, port, cport)
                    {
                        got[i] = true;
                    }
                }
            }
            println!(
                "{mode} {vip}: flow on backend-{k}; port unreachable seen by backends 1, 2: {got:?}"
            );
            assert!(
                got[k - 1],
                "{mode} {vip}: the port unreachable did not reach backend-{k}, the flow's backend"
            );
            assert!(
                !got[2 - k],
                "{mode} {vip}: the port unreachable reached the other backend too"
            );
            owners.insert(k);
        }
        drop(d);
        lab.down().expect("take the lab down");
    }
    println!("flows owned by backends {owners:?}");
}
