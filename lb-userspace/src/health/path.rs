//! Probes through the forwarding path: proof that a backend serves the VIP.
//!
//! A probe is a packet a client could have sent: from the LB's own address to the VIP's
//! check port (a TCP SYN, or the configured UDP datagram). The daemon runs the `sluice_probe`
//! XDP program on it in live-frames mode on the LB interface, which forwards it exactly as
//! the balancer would (DSR MAC rewrite, or IPIP encapsulation) but to the backend named by
//! the probe's source port (`PROBE_PORT_BASE + backend id`), whatever its health. The backend
//! answers the LB directly, from the VIP:
//!
//! - a SYN-ACK: the backend holds the VIP (on its loopback) and, for IPIP, decapsulates, and
//!   something listens on the port. The prober then resets the half-open connection through
//!   the same path, so the backend keeps no state.
//! - a RST: the VIP is there but nothing listens on the port.
//! - nothing: the VIP is missing, decapsulation is missing, or the backend is gone.
//!
//! Answers are read from raw sockets (the kernel's TCP stack, finding no socket for them,
//! answers a SYN-ACK with a RST of its own, which is dropped: the LB never resolves the VIP).

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, Hasher as _},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
    sync::{Arc, Mutex},
    time::Duration,
};

use etherparse::{PacketBuilder, TcpHeaderSlice, UdpHeaderSlice};
use lb_common::{PROBE_PORT_BASE, PROTO_TCP, PROTO_UDP, programs};
use tokio::{io::unix::AsyncFd, sync::oneshot};

use crate::{
    config::{CheckKind, HealthConfig},
    dataplane::{Dataplane, VipIdent, iface::Iface},
};

/// Who answered a probe, and how.
#[derive(Debug)]
enum Reply {
    SynAck { ack: u32 },
    Rst,
    Udp(Vec<u8>),
}

/// (VIP address, VIP port, probe source port, protocol).
type Key = (IpAddr, u16, u16, u8);

/// Sends probes through the data plane and matches the answers.
pub struct PathProber {
    dp: Arc<Mutex<Dataplane>>,
    iface: Iface,
    pending: Mutex<HashMap<Key, oneshot::Sender<Reply>>>,
}

impl std::fmt::Debug for PathProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathProber")
            .field("iface", &self.iface)
            .finish_non_exhaustive()
    }
}

/// A raw socket, non-blocking.
struct RawSocket(OwnedFd);

impl AsRawFd for RawSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

fn raw_socket(domain: i32, proto: u8) -> io::Result<RawSocket> {
    // SAFETY: plain socket(2) call; the result is checked and owned below.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(RawSocket(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// One datagram and its source address.
fn recv_from(sock: &RawSocket, buf: &mut [u8]) -> io::Result<(usize, IpAddr)> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: valid buffer and address storage of the sizes passed.
    let n = unsafe {
        libc::recvfrom(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&raw mut from).cast(),
            &raw mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let addr = match i32::from(from.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin = unsafe { &*(&raw const from).cast::<libc::sockaddr_in>() };
            IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
        }
        _ => {
            // SAFETY: otherwise AF_INET6 (the only other family these sockets receive).
            let sin6 = unsafe { &*(&raw const from).cast::<libc::sockaddr_in6>() };
            IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
        }
    };
    Ok((n as usize, addr))
}

fn random_u32() -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    h.finish() as u32
}

impl PathProber {
    /// Open the raw sockets (IPv4 and IPv6, TCP and UDP) and start matching answers.
    /// Must run inside a tokio runtime.
    pub fn start(dp: Arc<Mutex<Dataplane>>, iface: Iface) -> io::Result<Arc<Self>> {
        let prober = Arc::new(Self {
            dp,
            iface,
            pending: Mutex::new(HashMap::new()),
        });
        for (domain, proto) in [
            (libc::AF_INET, PROTO_TCP),
            (libc::AF_INET, PROTO_UDP),
            (libc::AF_INET6, PROTO_TCP),
            (libc::AF_INET6, PROTO_UDP),
        ] {
            // SAFETY: `RawSocket` owns its descriptor, keeps it open for its whole life and
            // always returns the same one.
            let sock = unsafe { AsyncFd::register(raw_socket(domain, proto)?) }
                .map_err(|e| io::Error::other(e.to_string()))?;
            let p = Arc::downgrade(&prober);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                loop {
                    let Ok(mut guard) = sock.readable().await else {
                        return;
                    };
                    if let Ok(Ok((n, from))) = guard.try_io(|s| recv_from(s.get_ref(), &mut buf)) {
                        let Some(p) = p.upgrade() else { return };
                        // IPv4 raw sockets see the IP header, IPv6 ones do not.
                        let l4 = if domain == libc::AF_INET {
                            let hl = usize::from(buf[0] & 0x0f) * 4;
                            buf.get(hl..n).unwrap_or(&[])
                        } else {
                            &buf[..n]
                        };
                        p.dispatch(from, proto, l4);
                    }
                }
            });
        }
        Ok(prober)
    }

    /// Hand an answer to the probe waiting for it, if any.
    fn dispatch(&self, from: IpAddr, proto: u8, l4: &[u8]) {
        let (sport, dport, reply) = if proto == PROTO_TCP {
            let Ok(t) = TcpHeaderSlice::from_slice(l4) else {
                return;
            };
            let reply = if t.rst() {
                Reply::Rst
            } else if t.syn() && t.ack() {
                Reply::SynAck {
                    ack: t.acknowledgment_number(),
                }
            } else {
                return;
            };
            (t.source_port(), t.destination_port(), reply)
        } else {
            let Ok(u) = UdpHeaderSlice::from_slice(l4) else {
                return;
            };
            (
                u.source_port(),
                u.destination_port(),
                Reply::Udp(l4[8..].to_vec()),
            )
        };
        if dport < PROBE_PORT_BASE {
            return;
        }
        let waiter = self
            .pending
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&(from, sport, dport, proto)));
        if let Some(w) = waiter {
            let _ = w.send(reply);
        }
    }

    /// A frame from the LB's address and `sport` to the VIP.
    fn frame(
        &self,
        src: IpAddr,
        vip: IpAddr,
        sport: u16,
        dport: u16,
        l4: L4<'_>,
    ) -> Result<Vec<u8>, String> {
        let mac = self.iface.mac.ok_or("the LB interface has no MAC")?;
        let eth = PacketBuilder::ethernet2(mac, mac);
        let mut out = Vec::with_capacity(128);
        let ip = match (src, vip) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
            _ => return Err("address families differ".to_owned()),
        };
        let written = match l4 {
            L4::Syn { seq } => ip.tcp(sport, dport, seq, 64240).syn().write(&mut out, &[]),
            L4::Rst { seq } => ip.tcp(sport, dport, seq, 0).rst().write(&mut out, &[]),
            L4::Udp(payload) => ip.udp(sport, dport).write(&mut out, payload),
        };
        written.map_err(|e| format!("building the probe: {e}"))?;
        Ok(out)
    }

    fn inject(&self, frame: &[u8]) -> Result<(), String> {
        let mut dp = self
            .dp
            .lock()
            .map_err(|_| "data plane lock poisoned".to_owned())?;
        dp.inject(programs::PROBE, frame, self.iface.ifindex)
            .map_err(|e| format!("injecting the probe: {e}"))
    }

    /// Probe `backend` of `vip` through the forwarding path; what happened.
    pub async fn probe(
        &self,
        vip: VipIdent,
        backend: IpAddr,
        spec: &HealthConfig,
    ) -> Result<String, String> {
        let id = {
            let dp = self
                .dp
                .lock()
                .map_err(|_| "data plane lock poisoned".to_owned())?;
            dp.layout()
                .backend_id(&vip, backend)
                .ok_or("backend not published")?
        };
        let sport = PROBE_PORT_BASE + u16::try_from(id).map_err(|_| "backend id out of range")?;
        let src = self.iface.source_for(vip.address).ok_or_else(|| {
            format!(
                "the LB interface has no {} address to probe from",
                if vip.address.is_ipv4() {
                    "IPv4"
                } else {
                    "IPv6"
                }
            )
        })?;
        let port = spec.port;
        let udp = spec.check == CheckKind::Udp;
        let proto = if udp { PROTO_UDP } else { PROTO_TCP };
        let key = (vip.address, port, sport, proto);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| "lock poisoned".to_owned())?
            .insert(key, tx);
        let seq = random_u32();
        let l4 = if udp {
            L4::Udp(spec.send.as_bytes())
        } else {
            L4::Syn { seq }
        };
        let sent = self
            .frame(src, vip.address, sport, port, l4)
            .and_then(|f| self.inject(&f));
        let limit = Duration::from_millis(u64::from(spec.timeout_ms));
        let outcome = match sent {
            Err(e) => Err(e),
            Ok(()) => match tokio::time::timeout(limit, rx).await {
                Ok(Ok(Reply::SynAck { ack })) => {
                    // Close the backend's half-open connection through the same path.
                    if let Ok(f) = self.frame(src, vip.address, sport, port, L4::Rst { seq: ack }) {
                        let _ = self.inject(&f);
                    }
                    Ok("VIP answered (SYN-ACK through the forwarding path)".to_owned())
                }
                Ok(Ok(Reply::Rst)) => {
                    Err("VIP port closed (RST through the forwarding path)".to_owned())
                }
                Ok(Ok(Reply::Udp(payload))) => {
                    let text = String::from_utf8_lossy(&payload);
                    match &spec.expect {
                        Some(want) if !text.contains(want.as_str()) => {
                            Err(format!("reply through the VIP {text:?} lacks {want:?}"))
                        }
                        _ => Ok(format!(
                            "VIP answered ({}-byte reply through the forwarding path)",
                            payload.len()
                        )),
                    }
                }
                Ok(Err(_)) => Err("probe abandoned".to_owned()),
                Err(_) => Err(format!(
                    "no answer from the VIP within {} ms: VIP not on the backend, no decapsulation, or backend gone",
                    spec.timeout_ms
                )),
            },
        };
        if let Ok(mut m) = self.pending.lock() {
            m.remove(&key);
        }
        outcome
    }
}

enum L4<'a> {
    Syn { seq: u32 },
    Rst { seq: u32 },
    Udp(&'a [u8]),
}
