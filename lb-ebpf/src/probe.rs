//! Health probes through the real forwarding path. The daemon crafts a frame as a client
//! would send it (source: the LB's own address, destination: the VIP) and runs this program
//! on it with `BPF_PROG_TEST_RUN` in live-frames mode on the LB interface. The program sends
//! it to one chosen backend with the VIP's own forwarding (DSR MAC rewrite or IPIP, the same
//! `forward` code as the balancer), whatever that backend's health, so a down backend can be
//! probed back up. The backend is chosen by the probe's source port:
//! `PROBE_PORT_BASE + backend id` (the 16384 ports 49152..=65535 cover every backend id).
//!
//! The backend's answer (a SYN-ACK, or a UDP reply, from the VIP) proves what a probe of its
//! own address cannot: that it holds the VIP and, for IPIP, decapsulates.

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_redirect, programs::XdpContext};
use lb_common::{PROBE_PORT_BASE, hash::flow_hash, reason};

use crate::{
    balancer::vip_of,
    forward::{self, Verdict},
    maps::{BACKENDS, CONFIG},
    parse,
};

/// Entry point: forward to the backend the source port names, or drop.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    try_probe(ctx).unwrap_or(xdp_action::XDP_DROP)
}

#[inline(always)]
fn try_probe(ctx: &XdpContext) -> Result<u32, u32> {
    let pkt = parse::parse(ctx)?;
    // The daemon crafts plain, valid TCP/UDP probes; nothing else is sent on.
    if pkt.icmp != 0 || pkt.invalid != 0 {
        return Err(reason::PASS_OTHER_L4);
    }
    let vip = vip_of(&pkt.key).ok_or(reason::PASS_NOT_VIP)?;
    let sport = u16::from_be_bytes(pkt.key.sport);
    let id = u32::from(
        sport
            .checked_sub(PROBE_PORT_BASE)
            .ok_or(reason::DROP_NO_BACKEND)?,
    );
    let backend = BACKENDS.get(id).ok_or(reason::DROP_NO_BACKEND)?;
    if id == 0 || backend.vip_id != vip.vip_id || backend.family != pkt.key.family {
        return Err(reason::DROP_NO_BACKEND);
    }
    // An `Array` entry within `max_entries` always exists: this never fails.
    let cfg = CONFIG.get(0).ok_or(reason::DROP_INTERNAL)?;
    let hash = flow_hash(&pkt.key, cfg.hash_seed);
    match forward::forward(ctx, &pkt, vip.mode, backend, cfg, Some(hash))? {
        Verdict::Tx => Ok(xdp_action::XDP_TX),
        // SAFETY: a plain helper call; it only records the target interface.
        Verdict::Redirect(ifindex) => Ok(unsafe { bpf_redirect(ifindex, 0) } as u32),
    }
}
