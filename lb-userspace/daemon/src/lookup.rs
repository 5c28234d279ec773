//! `sluice lookup`: which backend a flow goes to now, answered by the XDP program itself.
//!
//! The daemon builds a packet of the flow (a TCP RST, which the program forwards without
//! opening a flow; for UDP a datagram, which pins the flow to the backend it would get
//! anyway) and runs the balancer on it with `BPF_PROG_TEST_RUN` as if it arrived on the LB
//! interface. The backend is read from what the program wrote: the outer destination (IPIP)
//! or the destination MAC (DSR), mapped back through the configured MACs and the kernel's
//! neighbour table. The one packet is counted like any other.
//!
//! Two steps, so that the daemon holds the data plane's lock only for the first: [`run`]
//! runs the program (under the lock), [`resolve`] names the backend (reading the neighbour
//! table, which is slow, after the lock is released).

use std::net::{IpAddr, SocketAddr};

use etherparse::PacketBuilder;
use lb_common::programs;

use crate::{
    config::{Forwarding, Protocol, VipConfig, format_mac},
    dataplane::{Dataplane, RunResult, iface::Iface, netlink},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// The neighbour entries of the current namespace with a MAC: MAC → address (see
/// [`netlink::neighbour_macs`]); none if the kernel cannot be asked.
fn neighbours() -> Vec<([u8; 6], IpAddr)> {
    netlink::neighbour_macs().unwrap_or_else(|e| {
        tracing::debug!(error = %e, "listing neighbours");
        Vec::new()
    })
}

/// What the balancer did with the packet of a lookup ([`run`]), to be [`resolve`]d.
#[derive(Debug)]
pub struct Ran(RunResult);

/// Run the balancer on a packet of the flow `src` → `vip` (needs the data plane: under its
/// lock; nothing slow).
pub fn run(
    dp: &mut Dataplane,
    iface: &Iface,
    vip: &VipConfig,
    src: SocketAddr,
    dport: Option<u16>,
) -> Result<Ran, String> {
    if src.is_ipv4() != vip.address.is_ipv4() {
        return Err(format!(
            "--src {src} and the VIP {} are not the same address family",
            vip.address
        ));
    }
    let port = match (vip.port, dport) {
        (0, Some(p)) | (_, Some(p)) => p,
        (0, None) => {
            return Err(format!(
                "VIP {:?} serves every port: say which with --dport",
                vip.name
            ));
        }
        (p, None) => p,
    };
    let mac = iface.mac.unwrap_or([2, 0, 0, 0, 0, 1]);
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xfe], mac);
    let ip = match (src.ip(), vip.address) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => unreachable!("families checked above"),
    };
    let mut frame = Vec::new();
    let built = match vip.protocol {
        Protocol::Tcp => ip.tcp(src.port(), port, 1, 0).rst().write(&mut frame, &[]),
        Protocol::Udp => ip.udp(src.port(), port).write(&mut frame, b"sluice lookup"),
    };
    built.map_err(|e| format!("building the packet: {e}"))?;
    dp.run_frame(programs::BALANCER, &frame, iface.ifindex)
        .map(Ran)
        .map_err(|e| e.to_string())
}

/// The verdict, backend and detail of a lookup the balancer [`run`]: reads the kernel's
/// neighbour table (DSR to a backend without a configured MAC), so without the data
/// plane's lock.
pub fn resolve(Ran(r): &Ran, vip: &VipConfig) -> (String, Option<IpAddr>, String) {
    match r.action {
        XDP_PASS => {
            return (
                "passed (not for this VIP as the program sees it)".to_owned(),
                None,
                String::new(),
            );
        }
        XDP_DROP => {
            return (
                "dropped (no serving backend, or no route to it)".to_owned(),
                None,
                String::new(),
            );
        }
        _ => {}
    }
    let out = &r.frame;
    if vip.forwarding == Forwarding::Ipip {
        let backend = match vip.address {
            IpAddr::V4(_) => out
                .get(30..34)
                .map(|b| IpAddr::from([b[0], b[1], b[2], b[3]])),
            IpAddr::V6(_) => out
                .get(38..54)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(IpAddr::from),
        };
        let detail = backend
            .map(|b| format!("outer destination {b}"))
            .unwrap_or_default();
        return ("forwarded".to_owned(), backend, detail);
    }
    let dmac = out.get(0..6).and_then(|b| <[u8; 6]>::try_from(b).ok());
    let configured = vip
        .backends
        .iter()
        .find(|b| b.mac.is_some_and(|m| Some(m) == dmac))
        .map(|b| b.address);
    let backend = configured.or_else(|| {
        let dmac = dmac?;
        neighbours()
            .into_iter()
            .filter(|(m, a)| *m == dmac && vip.backends.iter().any(|b| b.address == *a))
            .map(|(_, a)| a)
            .next()
    });
    (
        "forwarded".to_owned(),
        backend,
        format!(
            "destination MAC {}",
            dmac.map(|m| format_mac(&m)).unwrap_or_default()
        ),
    )
}
