//! The balancer: parse → VIP filter → validity (invalid for a VIP: drop) → flow table
//! (hit: forward; an ICMP error: its quoted flow's backend) → VIP → select (miss) →
//! insert → forward → count.

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_redirect, programs::XdpContext};
use lb_common::{
    BACKEND_F_IPIP, FlowKey, MODE_DSR, MODE_IPIP, SCHED_SEQUENCE, VipKey, VipMeta, hash::flow_hash,
    reason, vip_filter_bit,
};

use crate::{
    flood, flow,
    forward::{self, Verdict},
    maps::{CONFIG, VIPS},
    parse::{self, ETH_P_IP, TCP_RST},
    select, stats,
    track::Track,
};

/// Entry point: one verdict per frame, every outcome counted once (for its VIP when
/// known: the error is a reason [tagged](reason::for_vip) with the VIP id).
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    match try_balance(ctx) {
        Ok(action) => action,
        Err(tagged) => {
            stats::reason(tagged);
            let code = reason::code_of(tagged);
            // The frame now holds an ICMP too-big message for the client.
            if code == reason::ICMP_TOO_BIG {
                xdp_action::XDP_TX
            } else if reason::is_drop(code) {
                xdp_action::XDP_DROP
            } else {
                xdp_action::XDP_PASS
            }
        }
    }
}

/// The VIP this flow is addressed to: an exact (address, port, protocol) match, else the
/// address's all-ports VIP (port 0).
#[inline(always)]
pub fn vip_of(key: &FlowKey) -> Option<&'static VipMeta> {
    let mut k = VipKey {
        addr: key.dst,
        port: key.dport,
        proto: key.proto,
        family: key.family,
    };
    // SAFETY: `VIPS` values are replaced whole by the daemon, never written in place.
    if let Some(v) = unsafe { VIPS.get(k) } {
        return Some(v);
    }
    k.port = [0, 0];
    // SAFETY: as above.
    unsafe { VIPS.get(k) }
}

#[inline(always)]
fn try_balance(ctx: &XdpContext) -> Result<u32, u32> {
    let pkt = parse::parse(ctx)?;
    let cfg = CONFIG.get(0).ok_or(reason::DROP_INTERNAL)?;
    // Most traffic that is not for a VIP stops here, without a hash-map lookup.
    let bit = vip_filter_bit(&pkt.key.dst);
    if cfg.vip_filter[(bit >> 6) as usize & 3] & (1 << (bit & 63)) == 0 {
        return Err(if pkt.invalid != 0 {
            reason::PASS_MALFORMED
        } else {
            reason::PASS_NOT_VIP
        });
    }
    // Not addressed to this host at L2 (broadcast, multicast): not ours either.
    if parse::to_group(ctx) {
        return Err(reason::PASS_NOT_VIP);
    }
    // A packet the kernel would discard is never forwarded: for a VIP it is dropped (the
    // kernel, not holding the VIP, would route it on rather than validate it), otherwise
    // passed like all traffic that is not ours. The IPv4 header checksum is only summed
    // here, for VIP traffic.
    let invalid = if pkt.invalid != 0 {
        u32::from(pkt.invalid)
    } else if pkt.eth_proto == ETH_P_IP && !parse::ipv4_checksum_ok(ctx, pkt.l3_off) {
        reason::DROP_IPV4_CSUM
    } else {
        0
    };
    if invalid != 0 {
        return Err(match vip_of(&pkt.key) {
            Some(v) => reason::for_vip(v.vip_id, invalid),
            None => reason::PASS_MALFORMED,
        });
    }
    // An established flow is forwarded from its flow entry and backend alone (the backend
    // names its VIP and the VIP's forwarding mode): one hash lookup per packet. The flow
    // hash is only computed to choose a backend (IPIP's outer header has a cheaper one).
    // An ICMP error goes where the flow it quotes goes, without touching that flow.
    let found = if pkt.icmp != 0 {
        let Some((id, b)) = flow::peek(&pkt.key) else {
            return Err(match vip_of(&pkt.key) {
                Some(v) => reason::for_vip(v.vip_id, reason::DROP_ICMP_NO_FLOW),
                None => reason::PASS_NOT_VIP,
            });
        };
        Some((id, b, Track::Same))
    } else {
        flow::lookup(&pkt.key, pkt.tcp_flags)
    };
    // `pin`: whether a new flow takes a flow entry (the flood guard's rate allows it; a
    // VIP whose flows cannot be sent by their hash alone always pins).
    let (vip_id, mode, id, backend, track, pin) = match found {
        Some((id, b, track)) => {
            let mode = if b.flags & BACKEND_F_IPIP != 0 {
                MODE_IPIP
            } else {
                MODE_DSR
            };
            (b.vip_id, mode, id, b, Some(track), true)
        }
        None => {
            let vip = vip_of(&pkt.key).ok_or(reason::PASS_NOT_VIP)?;
            let hash = flow_hash(&pkt.key, cfg.hash_seed);
            let pin = (vip.scheduler == SCHED_SEQUENCE && vip.hash_size == 0) || flood::admit();
            let (id, b) = select::pick(vip, &pkt.key, pkt.tcp_flags, hash, cfg.hash_seed, !pin)
                .ok_or(reason::for_vip(vip.vip_id, reason::DROP_NO_BACKEND))?;
            (vip.vip_id, vip.mode, id, b, None, pin)
        }
    };
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let (verdict, clamped) = match forward::forward(ctx, &pkt, mode, id, backend, cfg) {
        Ok(r) => r,
        Err(reason::ICMP_TOO_BIG) => {
            return Err(reason::for_vip(vip_id, forward::too_big(ctx, &pkt, cfg)));
        }
        Err(code) => return Err(reason::for_vip(vip_id, code)),
    };
    // Remember a new flow only once its packet is on its way (a dropped first packet opens
    // nothing), and never for a lone reset.
    let track = match track {
        Some(t) => t,
        None if !pin => {
            flood::unpinned();
            Track::Same
        }
        None if pkt.tcp_flags & TCP_RST == 0 => {
            flow::insert(&pkt.key, id, backend.generation, pkt.tcp_flags)
        }
        None => Track::Same,
    };
    stats::forwarded(vip_id, id, bytes, track);
    // One reason per frame: a forwarded ICMP error, a SYN whose MSS was clamped, or how it
    // left.
    let fwd = |plain: u32| {
        reason::for_vip(
            vip_id,
            if pkt.icmp != 0 {
                reason::FWD_ICMP
            } else if clamped {
                reason::FWD_MSS_CLAMPED
            } else {
                plain
            },
        )
    };
    match verdict {
        Verdict::Tx => {
            stats::reason(fwd(reason::FWD_TX));
            Ok(xdp_action::XDP_TX)
        }
        Verdict::Redirect(ifindex) => {
            stats::reason(fwd(reason::FWD_REDIRECT));
            // SAFETY: a plain helper call; it only records the target interface.
            Ok(unsafe { bpf_redirect(ifindex, 0) } as u32)
        }
    }
}
