//! Probes through the forwarding path: proof that a backend serves the VIP.
//!
//! A probe is a packet a client could have sent: from the LB's own address to the VIP's
//! check port (a TCP SYN, or the configured UDP datagram). The daemon runs the `sluice_probe`
//! XDP program on it in live-frames mode on the LB interface, which forwards it exactly as
//! the balancer would (DSR MAC rewrite, or IPIP encapsulation) but to the backend slot named
//! by the XDP metadata the frame is run with (`lb_common::ProbeMeta`), whatever its health. The backend answers the LB directly, from the VIP:
//!
//! - a SYN-ACK: the backend holds the VIP (on its loopback) and, for IPIP, decapsulates, and
//!   something listens on the port;
//! - a RST: the VIP is there but nothing listens on the port;
//! - a bare ACK (a *challenge ACK*): the backend already has a connection on this 4-tuple,
//!   typically a half-open one (SYN-RECV) an earlier probe left behind. Its TCP stack, the
//!   VIP and the listener are there: the probe resets that connection and tries again from
//!   another port, and the backend counts as alive even if the retry gets no answer;
//! - nothing: the VIP is missing, decapsulation is missing, or the backend is gone.
//!
//! **No probe leaves state on a backend.** Every SYN-ACK and challenge ACK that reaches a
//! probe port is answered with a RST through the same path by the receiving task, not by the
//! probe that is waiting: answers that arrive after the probe's timeout, or after its checker
//! was cancelled (every edit restarts the checkers), or a SYN-ACK retransmitted because a RST
//! was lost, are reset too. To route such a RST, every probe is remembered (port, sequence
//! number, backend) for [`LINGER`], longer than Linux retransmits a SYN-ACK (63 s). A RST
//! that cannot be injected is counted and logged, and retried when the backend retransmits.
//!
//! **Source ports.** Each probe of a VIP's check (address, port, protocol) takes the next
//! port of `PROBE_PORT_BASE..=65535` in turn (from a random start), skipping ports a probe
//! waits on and ports where the same backend's probe is not known to be closed: a port comes
//! back only after 16384 probes of that check, so a backend never meets its own recent
//! probes.
//! (The backend id cannot live in the port: 16384 backend slots would leave one port
//! each.) Answers are matched by (VIP, VIP port, probe port, protocol) and, for TCP,
//! by the acknowledged sequence number.
//!
//! Answers are read from raw sockets (the kernel's TCP stack, finding no socket for them,
//! answers a SYN-ACK with a RST of its own, which is dropped: the LB never resolves the VIP).

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, Hasher as _},
    io,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use etherparse::{TcpHeaderSlice, UdpHeaderSlice};
use lb_common::{PROBE_PORT_BASE, PROTO_TCP, PROTO_UDP};
use nix::sys::socket::AddressFamily;
use tokio::{io::unix::AsyncFd, sync::oneshot};
use tracing::warn;

pub use self::wire::{ProbeL4, probe_frame};
use self::wire::{raw_socket, recv_from};
use crate::{
    config::{CheckKind, HealthConfig},
    dataplane::{Dataplane, VipIdent, iface::Iface},
};

mod wire;

/// How long a probe is remembered, to reset its late answers: longer than Linux keeps
/// retransmitting a SYN-ACK (`tcp_synack_retries` = 5: 1 + 2 + 4 + 8 + 16 + 32 = 63 s).
pub const LINGER: Duration = Duration::from_secs(75);
/// How long a probe whose SYN-ACK was reset is remembered: a few SYN-ACK retransmissions,
/// in case our RST was lost.
const SETTLED_LINGER: Duration = Duration::from_secs(10);
/// Probe source ports: `PROBE_PORT_BASE..=65535`.
const PORTS: u32 = 65536 - PROBE_PORT_BASE as u32;
/// Expired probe records are swept at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The fields of a TCP segment that tell what it answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub syn: bool,
    pub ack: bool,
    pub rst: bool,
    pub fin: bool,
    /// The acknowledgment number (meaningful with `ack`).
    pub ack_no: u32,
}

/// What a TCP segment from the VIP to a probe port means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpAnswer {
    /// A SYN-ACK for the waiting probe's SYN: the backend listens. Reset it.
    SynAck,
    /// A RST for the waiting probe's SYN: nothing listens on the port.
    Refused,
    /// A bare ACK: the backend has a connection on this 4-tuple (typically half-open, left
    /// by an earlier probe) and challenged the SYN. Alive; reset it (a RST with the ACK's
    /// acknowledgment number is in its window) and retry from another port.
    ChallengeAck,
    /// A SYN-ACK for another SYN than the waiting probe's (none waits, or it has another
    /// sequence number): an answer that came late or a retransmission. Reset it.
    StaleSynAck,
    /// Anything else (a RST for something else, a FIN, a SYN): ignored.
    Ignore,
}

/// Classify a segment from the VIP to a probe port; `isn` is the initial sequence number of
/// the probe waiting on that port, if one waits.
pub fn classify(seg: Segment, isn: Option<u32>) -> TcpAnswer {
    let acks_ours = seg.ack && isn.is_some_and(|i| seg.ack_no == i.wrapping_add(1));
    if seg.rst {
        return if acks_ours {
            TcpAnswer::Refused
        } else {
            TcpAnswer::Ignore
        };
    }
    match (seg.syn, seg.ack) {
        (true, true) if acks_ours => TcpAnswer::SynAck,
        (true, true) => TcpAnswer::StaleSynAck,
        (false, true) if !seg.fin => TcpAnswer::ChallengeAck,
        _ => TcpAnswer::Ignore,
    }
}

/// What the probe waiting on a port was told.
#[derive(Debug)]
enum Reply {
    SynAck,
    Refused,
    Challenged,
    Udp(Vec<u8>),
}

/// (VIP address, VIP port, probe source port, protocol).
type Key = (IpAddr, u16, u16, u8);

/// A probe sent: where to send the RST that closes what it opened.
#[derive(Clone, Copy, Debug)]
struct Sent {
    /// The backend's slot (the probe program's target).
    id: u32,
    /// The LB's address it was sent from.
    src: IpAddr,
    isn: u32,
    /// Forgotten after this.
    until: Instant,
    /// Its SYN-ACK (or challenge) was reset: the backend keeps nothing.
    settled: bool,
}

/// The probe waiting on a port.
struct Waiter {
    sent: Sent,
    tx: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct Inner {
    waiting: HashMap<Key, Waiter>,
    /// Every probe of the last [`LINGER`], by port (several only after the port came back).
    sent: HashMap<Key, Vec<Sent>>,
    /// Per VIP check (address, port, protocol): the last port used, as an offset.
    cursors: HashMap<(IpAddr, u16, u8), u32>,
    swept: Option<Instant>,
}

/// Counts since the prober started (`sluice` logs; tests and the soak report them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Probes injected (retries after a challenge ACK included).
    pub sent: u64,
    pub syn_acks: u64,
    pub refused: u64,
    pub udp_replies: u64,
    /// Challenge ACKs met (each one reset, and retried).
    pub challenged: u64,
    /// Answers after their probe stopped waiting (late or retransmitted SYN-ACKs), reset.
    pub late: u64,
    /// RSTs injected to close a backend's half-open connection.
    pub resets: u64,
    /// RSTs that could not be injected (retried on the backend's next retransmission).
    pub reset_failures: u64,
    /// Probes that got no answer in time.
    pub timeouts: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    syn_acks: AtomicU64,
    refused: AtomicU64,
    udp_replies: AtomicU64,
    challenged: AtomicU64,
    late: AtomicU64,
    resets: AtomicU64,
    reset_failures: AtomicU64,
    timeouts: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Sends probes through the data plane and matches the answers.
pub struct PathProber {
    dp: Arc<Mutex<Dataplane>>,
    iface: Iface,
    inner: Mutex<Inner>,
    counters: Counters,
}

impl std::fmt::Debug for PathProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathProber")
            .field("iface", &self.iface)
            .finish_non_exhaustive()
    }
}

fn random_u32() -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    h.finish() as u32
}

/// The outcome of one SYN or datagram.
enum Attempt {
    Answer(Reply),
    TimedOut,
}

/// Removes a probe's waiter when the probe ends, also when its future is dropped (a
/// cancelled checker): its record stays, so that a late answer is still reset.
struct WaitGuard<'a> {
    prober: &'a PathProber,
    key: Key,
    isn: u32,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.prober.inner.lock()
            && inner
                .waiting
                .get(&self.key)
                .is_some_and(|w| w.sent.isn == self.isn)
        {
            inner.waiting.remove(&self.key);
        }
    }
}

impl PathProber {
    /// Open the raw sockets (IPv4 and IPv6, TCP and UDP) and start matching answers.
    /// Must run inside a tokio runtime.
    pub fn start(dp: Arc<Mutex<Dataplane>>, iface: Iface) -> io::Result<Arc<Self>> {
        let prober = Arc::new(Self {
            dp,
            iface,
            inner: Mutex::new(Inner::default()),
            counters: Counters::default(),
        });
        for (domain, proto) in [
            (AddressFamily::Inet, PROTO_TCP),
            (AddressFamily::Inet, PROTO_UDP),
            (AddressFamily::Inet6, PROTO_TCP),
            (AddressFamily::Inet6, PROTO_UDP),
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
                        let l4 = if domain == AddressFamily::Inet {
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

    /// The counts so far.
    pub fn stats(&self) -> ProbeStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProbeStats {
            sent: get(&c.sent),
            syn_acks: get(&c.syn_acks),
            refused: get(&c.refused),
            udp_replies: get(&c.udp_replies),
            challenged: get(&c.challenged),
            late: get(&c.late),
            resets: get(&c.resets),
            reset_failures: get(&c.reset_failures),
            timeouts: get(&c.timeouts),
        }
    }

    /// Handle an answer: reset what a probe opened, and tell the probe waiting, if any.
    fn dispatch(&self, from: IpAddr, proto: u8, l4: &[u8]) {
        if proto == PROTO_UDP {
            let Ok(u) = UdpHeaderSlice::from_slice(l4) else {
                return;
            };
            if u.destination_port() < PROBE_PORT_BASE {
                return;
            }
            let key = (from, u.source_port(), u.destination_port(), proto);
            let waiter = self
                .inner
                .lock()
                .ok()
                .and_then(|mut m| m.waiting.remove(&key));
            if let Some(w) = waiter {
                let _ = w.tx.send(Reply::Udp(l4[8..].to_vec()));
            }
            return;
        }
        let Ok(t) = TcpHeaderSlice::from_slice(l4) else {
            return;
        };
        if t.destination_port() < PROBE_PORT_BASE {
            return;
        }
        let key = (from, t.source_port(), t.destination_port(), proto);
        let seg = Segment {
            syn: t.syn(),
            ack: t.ack(),
            rst: t.rst(),
            fin: t.fin(),
            ack_no: t.acknowledgment_number(),
        };
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let isn = inner.waiting.get(&key).map(|w| w.sent.isn);
        let answer = classify(seg, isn);
        // Which probe's connection to reset (through its backend), and what to tell the
        // waiting probe.
        let (reset, tell) = match answer {
            TcpAnswer::SynAck => (inner.waiting.get(&key).map(|w| w.sent), Some(Reply::SynAck)),
            TcpAnswer::Refused => (None, Some(Reply::Refused)),
            // The challenge answers the last SYN sent from this port: the waiting probe's,
            // or (none waiting any more) the last one remembered.
            TcpAnswer::ChallengeAck => (
                inner
                    .waiting
                    .get(&key)
                    .map(|w| w.sent)
                    .or_else(|| inner.sent.get(&key).and_then(|v| v.last().copied())),
                isn.map(|_| Reply::Challenged),
            ),
            TcpAnswer::StaleSynAck => {
                let found = inner.sent.get(&key).and_then(|v| {
                    v.iter()
                        .rev()
                        .find(|s| s.isn.wrapping_add(1) == seg.ack_no)
                        .copied()
                });
                if found.is_some() {
                    bump(&self.counters.late);
                }
                (found, None)
            }
            TcpAnswer::Ignore => (None, None),
        };
        if let Some(reply) = tell
            && let Some(w) = inner.waiting.remove(&key)
        {
            let _ = w.tx.send(reply);
        }
        drop(inner);
        if let Some(s) = reset {
            let ok = self.reset(key, s, seg.ack_no);
            if let Ok(mut inner) = self.inner.lock()
                && let Some(rec) = inner
                    .sent
                    .get_mut(&key)
                    .and_then(|v| v.iter_mut().find(|r| r.isn == s.isn))
            {
                // A failed RST keeps the record (and the port) until the backend gives up
                // or retransmits, when the RST is tried again.
                if ok {
                    rec.settled = true;
                    rec.until = rec.until.min(Instant::now() + SETTLED_LINGER);
                } else {
                    rec.until = Instant::now() + LINGER;
                }
            }
        }
    }

    /// Send a RST with sequence number `seq` from the probe port of `key` through the path
    /// of probe `s`; whether it was injected.
    fn reset(&self, key: Key, s: Sent, seq: u32) -> bool {
        let (vip, vport, sport, _) = key;
        let result = self
            .frame(s.src, vip, sport, vport, ProbeL4::Rst { seq })
            .and_then(|f| self.inject(&f, s.id));
        match result {
            Ok(()) => {
                bump(&self.counters.resets);
                true
            }
            Err(e) => {
                bump(&self.counters.reset_failures);
                warn!(vip = %vip, port = sport, error = %e, "could not reset a health probe's half-open connection; retried when the backend retransmits");
                false
            }
        }
    }

    fn frame(
        &self,
        src: IpAddr,
        vip: IpAddr,
        sport: u16,
        dport: u16,
        l4: ProbeL4<'_>,
    ) -> Result<Vec<u8>, String> {
        let mac = self.iface.mac.ok_or("the LB interface has no MAC")?;
        probe_frame(mac, src, vip, sport, dport, l4)
    }

    /// Send `frame` to backend slot `id` through the probe program.
    fn inject(&self, frame: &[u8], id: u32) -> Result<(), String> {
        let mut dp = self
            .dp
            .lock()
            .map_err(|_| "data plane lock poisoned".to_owned())?;
        dp.inject_probe(frame, id, self.iface.ifindex)
            .map_err(|e| format!("injecting the probe: {e}"))
    }
}

impl Inner {
    /// The next source port for a probe of (VIP, port, protocol), with its waiter and
    /// record registered; `None` if every port is busy.
    fn take_port(
        &mut self,
        check: (IpAddr, u16, u8),
        sent: Sent,
        tx: oneshot::Sender<Reply>,
    ) -> Option<Key> {
        let inner = self;
        let now = Instant::now();
        if inner
            .swept
            .is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY)
        {
            inner.sent.retain(|_, v| {
                v.retain(|s| s.until > now);
                !v.is_empty()
            });
            inner.swept = Some(now);
        }
        let (vip, vport, proto) = check;
        let cursor = inner
            .cursors
            .entry(check)
            .or_insert_with(|| random_u32() % PORTS);
        let mut chosen = None;
        for _ in 0..PORTS {
            *cursor = (*cursor + 1) % PORTS;
            let port = PROBE_PORT_BASE + *cursor as u16;
            let key = (vip, vport, port, proto);
            // Another backend may take a port whose last probe is unsettled: its
            // connection is on the other backend, and answers are told apart by sequence
            // number. So a dead backend's unanswered probes only hold ports for itself.
            let busy = inner.waiting.contains_key(&key)
                || inner.sent.get(&key).is_some_and(|v| {
                    v.iter()
                        .any(|s| s.id == sent.id && !s.settled && s.until > now)
                });
            if !busy {
                chosen = Some(key);
                break;
            }
        }
        let key = chosen?;
        inner.waiting.insert(key, Waiter { sent, tx });
        inner.sent.entry(key).or_default().push(sent);
        Some(key)
    }
}

impl PathProber {
    /// One SYN (or datagram) to backend slot `id` from a fresh port, and its answer.
    async fn attempt(
        &self,
        vip: VipIdent,
        id: u32,
        src: IpAddr,
        spec: &HealthConfig,
        deadline: tokio::time::Instant,
    ) -> Result<Attempt, String> {
        let udp = spec.check == CheckKind::Udp;
        let proto = if udp { PROTO_UDP } else { PROTO_TCP };
        let isn = random_u32();
        let sent = Sent {
            id,
            src,
            isn,
            until: Instant::now() + LINGER,
            settled: false,
        };
        let (tx, rx) = oneshot::channel();
        let key = {
            let mut inner = self.inner.lock().map_err(|_| "lock poisoned".to_owned())?;
            inner
                .take_port((vip.address, spec.port, proto), sent, tx)
                .ok_or("every probe source port is busy")?
        };
        let _guard = WaitGuard {
            prober: self,
            key,
            isn,
        };
        let l4 = if udp {
            ProbeL4::Udp(spec.send.as_bytes())
        } else {
            ProbeL4::Syn { seq: isn }
        };
        self.frame(src, vip.address, key.2, spec.port, l4)
            .and_then(|f| self.inject(&f, id))?;
        bump(&self.counters.sent);
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => Ok(Attempt::Answer(reply)),
            Ok(Err(_)) => Err("probe abandoned".to_owned()),
            Err(_) => {
                bump(&self.counters.timeouts);
                Ok(Attempt::TimedOut)
            }
        }
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
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(u64::from(spec.timeout_ms));
        let mut challenged = false;
        // At most one retry: after a challenge ACK, from another port.
        for _ in 0..2 {
            let attempt = self.attempt(vip, id, src, spec, deadline).await?;
            let reply = match attempt {
                Attempt::Answer(Reply::Challenged) if !challenged => {
                    bump(&self.counters.challenged);
                    challenged = true;
                    continue;
                }
                Attempt::Answer(r) => r,
                Attempt::TimedOut => break,
            };
            return self.outcome(reply, spec, challenged);
        }
        if challenged {
            return Ok(
                "VIP answered (challenge ACK through the forwarding path: a stale connection on the backend, reset)"
                    .to_owned(),
            );
        }
        Err(format!(
            "no answer from the VIP within {} ms: VIP not on the backend, no decapsulation, or backend gone (`sluice doctor backend` on it names which)",
            spec.timeout_ms
        ))
    }

    fn outcome(
        &self,
        reply: Reply,
        spec: &HealthConfig,
        challenged: bool,
    ) -> Result<String, String> {
        let after = if challenged {
            ", after a challenge ACK (a stale connection on the backend, reset)"
        } else {
            ""
        };
        match reply {
            Reply::SynAck => {
                bump(&self.counters.syn_acks);
                Ok(format!(
                    "VIP answered (SYN-ACK through the forwarding path{after})"
                ))
            }
            Reply::Refused => {
                bump(&self.counters.refused);
                Err(format!(
                    "VIP port closed (RST through the forwarding path{after})"
                ))
            }
            Reply::Challenged => {
                bump(&self.counters.challenged);
                Ok("VIP answered (challenge ACK through the forwarding path: a stale connection on the backend, reset)".to_owned())
            }
            Reply::Udp(payload) => {
                bump(&self.counters.udp_replies);
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
        }
    }
}

#[cfg(test)]
mod tests;
