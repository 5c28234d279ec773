//! The balancer: parse → VIP filter → validity (invalid for a VIP: drop) → one probe of
//! the flow table → its entry (hit: forward; an ICMP error: its quoted flow's backend) →
//! VIP → select (miss) → forward → insert (into the slot the probe found) → count. A SYN
//! selects first and takes its slot before it forwards, following the entry only if it
//! has one.
//!
//! Branches that no common packet takes (a malformed or group-addressed frame, an ICMP
//! error, a packet that cannot be forwarded, a backend without a resolved next hop, the flow
//! table's region being resized) are marked `core::hint::cold_path()`, so LLVM lays the
//! established and new-flow paths out straight, the rare code out of their way: 10 ns less
//! per established or new-flow packet at the p50 (round eight in the README).

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_redirect, programs::XdpContext};
use lb_common::{
    BACKEND_F_IPIP, Backend, FlowKey, GlobalConfig, MODE_DSR, MODE_IPIP, SCHED_SEQUENCE, VipKey,
    VipMeta, hash::flow_hash, reason, vip_filter_bit,
};

use crate::{
    flood, flow,
    forward::{self, Verdict},
    maps::{CONFIG, VIPS},
    parse::{self, ETH_P_IP, Packet, TCP_ACK, TCP_RST, TCP_SYN},
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

/// A new flow's choice: its VIP, its backend, and whether it takes a flow entry (`pin`:
/// the flood guard's rate allows it, or the VIP's flows cannot be sent by their hash
/// alone).
#[derive(Clone, Copy)]
struct Pick {
    vip: &'static VipMeta,
    id: u32,
    backend: &'static Backend,
    pin: bool,
}

/// Choose a backend for a flow without an entry (spends a flood-guard token).
#[inline(always)]
fn pick(pkt: &Packet, cfg: &GlobalConfig) -> Result<Pick, u32> {
    let vip = vip_of(&pkt.key).ok_or(reason::PASS_NOT_VIP)?;
    let hash = flow_hash(&pkt.key, cfg.hash_seed);
    let pin = (vip.scheduler == SCHED_SEQUENCE && vip.hash_size == 0) || flood::admit();
    let (id, backend) = select::pick(vip, &pkt.key, pkt.tcp_flags, hash, cfg.hash_seed, !pin)
        .ok_or(reason::for_vip(vip.vip_id, reason::DROP_NO_BACKEND))?;
    Ok(Pick {
        vip,
        id,
        backend,
        pin,
    })
}

/// A sequence VIP's new flow that will have no entry after all: the backend its later
/// packets (each picked anew, by the flow hash) will go to, from the VIP's fallback table.
#[inline(always)]
fn repick_hashed(pkt: &Packet, cfg: &GlobalConfig, p: &Pick) -> Result<Pick, u32> {
    let hash = flow_hash(&pkt.key, cfg.hash_seed);
    let (id, backend) = select::pick(p.vip, &pkt.key, pkt.tcp_flags, hash, cfg.hash_seed, true)
        .ok_or(reason::for_vip(p.vip.vip_id, reason::DROP_NO_BACKEND))?;
    Ok(Pick {
        vip: p.vip,
        id,
        backend,
        pin: false,
    })
}

/// Where a packet goes: its VIP, forwarding mode and backend; `track`: what it does to its
/// connection if known already (an entry's packet, or a new flow `opened`: its entry taken
/// before the packet is sent), `None` for a new flow still to be inserted (if `pin`);
/// `full`: a new flow that found no room in the table (not `pin`).
struct Route {
    vip_id: u32,
    mode: u8,
    id: u32,
    backend: &'static Backend,
    track: Option<Track>,
    pin: bool,
    opened: bool,
    full: bool,
}

impl Route {
    /// A packet of a flow with an entry: the backend names its VIP and its mode.
    #[inline(always)]
    fn pinned(id: u32, backend: &'static Backend, track: Track) -> Self {
        let mode = if backend.flags & BACKEND_F_IPIP != 0 {
            MODE_IPIP
        } else {
            MODE_DSR
        };
        Self {
            vip_id: backend.vip_id,
            mode,
            id,
            backend,
            track: Some(track),
            pin: true,
            opened: false,
            full: false,
        }
    }

    /// A new flow; `opened`: the tracking of the entry `flow::open` took for it.
    #[inline(always)]
    fn new(p: Pick, opened: Option<Track>) -> Self {
        Self {
            vip_id: p.vip.vip_id,
            mode: p.vip.mode,
            id: p.id,
            backend: p.backend,
            track: opened,
            pin: p.pin,
            opened: opened.is_some(),
            full: false,
        }
    }
}

/// A connection's first packet (a SYN without ACK): a new flow almost always, so it picks
/// its backend first and takes the free slot the probe found. Only when the probe found
/// its entry (a retransmitted SYN, a 5-tuple reused after TIME_WAIT) is that followed;
/// such a SYN has then stepped a sequence VIP's cursor and spent a flood-guard token for
/// nothing. A SYN that
/// finds no backend still follows an entry it has (its backend may be draining).
#[inline(always)]
fn opening(pkt: &Packet, cfg: &GlobalConfig, slots: &flow::Slots) -> Result<Route, u32> {
    let p = pick(pkt, cfg);
    if let Ok(p) = &p
        && p.pin
    {
        match flow::open(slots, &pkt.key, p.id, p.backend.generation, pkt.tcp_flags) {
            flow::Open::Taken(track) => return Ok(Route::new(*p, Some(track))),
            flow::Open::Full => {
                let p = if p.vip.scheduler == SCHED_SEQUENCE && p.vip.hash_size != 0 {
                    repick_hashed(pkt, cfg, p)?
                } else {
                    Pick { pin: false, ..*p }
                };
                return Ok(Route {
                    full: true,
                    ..Route::new(p, None)
                });
            }
            flow::Open::Exists => {}
        }
    }
    match flow::lookup(slots, pkt.tcp_flags) {
        Some((id, b, track)) => Ok(Route::pinned(id, b, track)),
        None => Ok(Route::new(p?, None)),
    }
}

/// Zero, in a form the verifier cannot see through: a map value XORed with a copy of itself
/// passed through the stack (`black_box`, so that LLVM does not fold it either). XORed into
/// values that differ between paths only by constants, it makes those paths' states equal,
/// so the verifier walks the code after them once instead of once per combination:
/// measured on 6.18, 668k instructions verified for `sluice_lb` without it against 283k
/// with it (the 6.1 verifier stopped at its 1M limit). One load and an XOR at run time.
#[inline(always)]
fn opaque_zero(cfg: &GlobalConfig) -> u32 {
    core::hint::black_box(cfg.hash_seed) ^ cfg.hash_seed
}

/// The VIP this flow is addressed to: an exact (address, port, protocol) match, else the
/// address's all-ports VIP (port 0).
#[inline(always)]
pub fn vip_of(key: &FlowKey) -> Option<&'static VipMeta> {
    let k = VipKey::of_flow(key);
    // SAFETY: `VIPS` values are replaced whole by the daemon, never written in place.
    if let Some(v) = unsafe { VIPS.get(k) } {
        return Some(v);
    }
    // SAFETY: as above.
    unsafe { VIPS.get(k.any_port()) }
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
        core::hint::cold_path();
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
        core::hint::cold_path();
        return Err(match vip_of(&pkt.key) {
            Some(v) => reason::for_vip(v.vip_id, invalid),
            None => reason::PASS_MALFORMED,
        });
    }
    // An established flow is forwarded from its flow entry and backend alone (the backend
    // names its VIP and the VIP's forwarding mode): one hash lookup per packet. The flow
    // hash is only computed to choose a backend (IPIP's outer header has a cheaper one).
    // An ICMP error goes where the flow it quotes goes, without touching that flow.
    // A connection's first packet picks its backend before it looks for an entry
    // (`opening`).
    let slots = flow::scan(&pkt.key, opaque_zero(cfg));
    let route = if pkt.icmp != 0 {
        core::hint::cold_path();
        let Some((id, b)) = flow::peek(&slots) else {
            return Err(match vip_of(&pkt.key) {
                Some(v) => reason::for_vip(v.vip_id, reason::DROP_ICMP_NO_FLOW),
                None => reason::PASS_NOT_VIP,
            });
        };
        Route::pinned(id, b, Track::Same)
    } else if pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN {
        opening(&pkt, cfg, &slots)?
    } else {
        match flow::lookup(&slots, pkt.tcp_flags) {
            Some((id, b, track)) => Route::pinned(id, b, track),
            None => Route::new(pick(&pkt, cfg)?, None),
        }
    };
    let Route {
        vip_id,
        mode,
        id,
        backend,
        track,
        pin,
        opened,
        full,
    } = route;
    // What the paths here differ in only by constants (how the flow is tracked, the
    // probe's slots), made opaque to the verifier: it then walks the forwarding code once
    // for all of them, not once per combination.
    let z = opaque_zero(cfg);
    let bits =
        Track::code(track) | u32::from(pin) << 8 | u32::from(opened) << 9 | u32::from(full) << 10;
    // Computed here, not sunk by LLVM past the forwarding code to where it is used.
    let (bits, slots) = core::hint::black_box((bits ^ z, slots.opaque(z)));
    let track = Track::from_code(bits & 0xff);
    let (pin, opened, full) = (bits & 1 << 8 != 0, bits & 1 << 9 != 0, bits & 1 << 10 != 0);
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let (verdict, clamped) = match forward::forward(ctx, &pkt, mode, id, backend, cfg) {
        Ok(r) => r,
        Err(code) => {
            core::hint::cold_path();
            // A dropped first packet opens nothing.
            if opened {
                flow::forget(&slots);
            }
            if code == reason::ICMP_TOO_BIG {
                return Err(reason::for_vip(vip_id, forward::too_big(ctx, &pkt, cfg)));
            }
            return Err(reason::for_vip(vip_id, code));
        }
    };
    // Remember a new flow only once its packet is on its way (a dropped first packet opens
    // nothing), and never for a lone reset.
    let track = match track {
        Some(t) => t,
        None if !pin => {
            if full {
                flood::unpinned_full();
            } else {
                flood::unpinned();
            }
            Track::Same
        }
        None if pkt.tcp_flags & TCP_RST == 0 => {
            flow::insert(&slots, &pkt.key, id, backend.generation, pkt.tcp_flags)
        }
        None => Track::Same,
    };
    stats::forwarded(vip_id, id, bytes, track);
    // One reason per frame: a forwarded ICMP error, a SYN whose MSS was clamped, or how it
    // left; `fwd_tx` is not counted (`reason::FWD_TX`: the daemon derives it from the
    // VIP's forwarded packets, just counted).
    let code = if pkt.icmp != 0 {
        reason::FWD_ICMP
    } else if clamped {
        reason::FWD_MSS_CLAMPED
    } else if let Verdict::Redirect(_) = verdict {
        reason::FWD_REDIRECT
    } else {
        reason::FWD_TX
    };
    if code != reason::FWD_TX {
        stats::reason(reason::for_vip(vip_id, code));
    }
    match verdict {
        Verdict::Tx => Ok(xdp_action::XDP_TX),
        // SAFETY: a plain helper call; it only records the target interface.
        Verdict::Redirect(ifindex) => Ok(unsafe { bpf_redirect(ifindex, 0) } as u32),
    }
}
