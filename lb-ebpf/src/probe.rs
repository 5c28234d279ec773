//! Health probes through the real forwarding path. The daemon crafts a frame as a client
//! would send it (source: the LB's own address, destination: the VIP) and runs this program
//! on it with `BPF_PROG_TEST_RUN` in live-frames mode on the LB interface. The program sends
//! it to one chosen backend with the VIP's own forwarding (DSR MAC rewrite or IPIP, the same
//! `forward` code as the balancer), whatever that backend's health, so a down backend can be
//! probed back up.
//!
//! The backend is named by the probe's IP header, not by its ports: the IPv4
//! identification field or the IPv6 flow label holds the backend id (16 and 20 bits; ids are
//! below `MAX_BACKENDS` = 16384). The source port is then free for the daemon to vary from
//! probe to probe (`PROBE_PORT_BASE..=65535`), so a half-open connection an earlier probe
//! left on a backend never meets the next probe's SYN. Both fields reach the backend
//! unchanged (IPIP copies the inner IPv4 id to the outer header; neither has a meaning for
//! an unfragmented packet that the backend acts on).
//!
//! The program trusts its caller (it is never attached, only run by the daemon): the frame's
//! destination is the backend's VIP, its destination port the checked port, which may differ
//! from the VIP's port, so the VIP is not looked up.
//!
//! The backend's answer (a SYN-ACK, or a UDP reply, from the VIP) proves what a probe of its
//! own address cannot: that it holds the VIP and, for IPIP, decapsulates.

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_redirect, programs::XdpContext};
use lb_common::{BACKEND_F_IPIP, FAMILY_V4, MODE_DSR, MODE_IPIP, hash::flow_hash, reason};

use crate::{
    forward::{self, Verdict},
    maps::{BACKENDS, CONFIG},
    parse::{self, ptr_at},
};

/// Entry point: forward to the backend the IP header names, or drop.
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
    let id = if pkt.key.family == FAMILY_V4 {
        u32::from(u16::from_be_bytes(pkt.ipv4_id))
    } else {
        // Version, traffic class and flow label: the label is the low 20 bits.
        let h: *const [u8; 4] = ptr_at(ctx, pkt.l3_off).ok_or(reason::DROP_INTERNAL)?;
        // SAFETY: `ptr_at` checked the 4 bytes are inside the frame.
        let b = unsafe { *h };
        u32::from(b[1] & 0x0f) << 16 | u32::from(b[2]) << 8 | u32::from(b[3])
    };
    let backend = BACKENDS.get(id).ok_or(reason::DROP_NO_BACKEND)?;
    if id == 0 || backend.family != pkt.key.family {
        return Err(reason::DROP_NO_BACKEND);
    }
    // The slot names its VIP's forwarding mode; the VIP itself is not looked up, as the
    // checked port may differ from the VIP's (a backend's check override).
    let mode = if backend.flags & BACKEND_F_IPIP != 0 {
        MODE_IPIP
    } else {
        MODE_DSR
    };
    // An `Array` entry within `max_entries` always exists: this never fails.
    let cfg = CONFIG.get(0).ok_or(reason::DROP_INTERNAL)?;
    let hash = flow_hash(&pkt.key, cfg.hash_seed);
    match forward::forward(ctx, &pkt, mode, id, backend, cfg, Some(hash))?.0 {
        Verdict::Tx => Ok(xdp_action::XDP_TX),
        // SAFETY: a plain helper call; it only records the target interface.
        Verdict::Redirect(ifindex) => Ok(unsafe { bpf_redirect(ifindex, 0) } as u32),
    }
}
