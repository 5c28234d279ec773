//! Health probes through the real forwarding path. The daemon crafts a frame as a client
//! would send it (source: the LB's own address, destination: the VIP) and runs this program
//! on it with `BPF_PROG_TEST_RUN` in live-frames mode on the LB interface. The program sends
//! it to one chosen backend with the VIP's own forwarding (DSR MAC rewrite or IPIP, the same
//! `forward` code as the balancer), whatever that backend's health, so a down backend can be
//! probed back up.
//!
//! The backend is named by the XDP metadata the daemon runs the probe with
//! (`lb_common::ProbeMeta`, in front of the frame: `data_meta..data`), not by the frame:
//! any backend slot id fits there (`daemon.backend_capacity` is not bounded by a 16-bit
//! header field), the frame stays exactly what a client would send, and the source port is
//! free for the daemon to vary from probe to probe (`PROBE_PORT_BASE..=65535`), so a
//! half-open connection an earlier probe left on a backend never meets the next probe's
//! SYN. A frame without that metadata is dropped.
//!
//! The program trusts its caller (it is never attached, only run by the daemon): the frame's
//! destination is the backend's VIP, its destination port the checked port, which may differ
//! from the VIP's port, so the VIP is not looked up.
//!
//! The backend's answer (a SYN-ACK, or a UDP reply, from the VIP) proves what a probe of its
//! own address cannot: that it holds the VIP and, for IPIP, decapsulates.

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_redirect, programs::XdpContext};
use lb_common::{BACKEND_F_IPIP, MODE_DSR, MODE_IPIP, ProbeMeta, reason};

use crate::{
    forward::{self, Verdict},
    maps::{BACKENDS, CONFIG},
    parse,
};

/// Entry point: forward to the backend the metadata names, or drop.
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
    let id = probe_target(ctx).ok_or(reason::DROP_NO_BACKEND)?;
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
    match forward::forward(ctx, &pkt, mode, id, backend, cfg)?.0 {
        Verdict::Tx => Ok(xdp_action::XDP_TX),
        // SAFETY: a plain helper call; it only records the target interface.
        Verdict::Redirect(ifindex) => Ok(unsafe { bpf_redirect(ifindex, 0) } as u32),
    }
}

/// The backend id in the frame's XDP metadata (`ProbeMeta`), if the daemon gave one.
#[inline(always)]
fn probe_target(ctx: &XdpContext) -> Option<u32> {
    let meta = ctx.metadata();
    if meta + size_of::<ProbeMeta>() > ctx.metadata_end() {
        return None;
    }
    // SAFETY: the metadata area holds at least a `ProbeMeta` (checked just above, as the
    // verifier requires); `read_unaligned` asks nothing of its alignment.
    Some(unsafe { core::ptr::read_unaligned(meta as *const ProbeMeta) }.backend_id)
}
