//! Why a packet was passed to the kernel, dropped, or forwarded: one per-CPU counter each.
//!
//! The rule: a packet we cannot parse as far as the VIP lookup needs (not IP, truncated,
//! malformed, fragmented, IPv6 extension headers, stacked VLANs, other L4 protocols) is
//! never forwarded; it is passed to the kernel untouched, whose own stack validates it and
//! keeps its own counters. A packet that matches a VIP but cannot be forwarded (no usable
//! backend, no route or neighbour, too big after encapsulation) is dropped; one too big
//! with DF set (or IPv6) is answered with ICMP instead, within a rate limit.
//!
//! Invalid packets for a VIP: a packet that parses but that the kernel would itself discard
//! (IPv4 header checksum wrong, TCP data offset below 5 or beyond the segment, UDP length
//! below 8 or beyond the IP payload) is never forwarded (a backend would discard it, after
//! it opened a flow). Addressed to a VIP it is dropped with its own counter: passed, the
//! kernel would not validate a packet it does not hold the address of, but route it on
//! (back toward the router). Not addressed to a VIP it is passed (`pass_malformed`), as any
//! traffic that is not ours; the IPv4 checksum is only computed for VIP traffic.
//!
//! ICMP errors (IPv4 destination unreachable and time exceeded, ICMPv6 destination
//! unreachable, packet too big and time exceeded) addressed to a VIP and quoting a packet
//! that VIP sent (inner source = outer destination) go to the backend of the flow they
//! quote (looked up reversed), forwarded like that flow (`fwd_icmp`); without such a
//! flow on a live VIP they are dropped (`drop_icmp_no_flow`). Other ICMP is passed.

pub const PASS_NOT_IP: u32 = 0;
/// Not addressed to a VIP: its destination address is none, or its destination MAC is a
/// group (broadcast, multicast), which the balancer never forwards.
pub const PASS_NOT_VIP: u32 = 1;
pub const PASS_TRUNCATED: u32 = 2;
pub const PASS_MALFORMED: u32 = 3;
pub const PASS_FRAGMENT: u32 = 4;
pub const PASS_IPV6_EXT: u32 = 5;
pub const PASS_OTHER_L4: u32 = 6;
pub const PASS_VLAN_STACKED: u32 = 7;
pub const DROP_NO_BACKEND: u32 = 8;
pub const DROP_NO_ROUTE: u32 = 9;
pub const DROP_TOO_BIG: u32 = 10;
pub const DROP_INTERNAL: u32 = 11;
/// Forwarded out of the interface it came in on (`XDP_TX`), with no other forward reason.
/// The program does not count it: it is each VIP's forwarded packets (`VIP_STATS`) less
/// its other forward reasons ([`FORWARDS_COUNTED`]), which the daemon derives when it reads
/// the counters. One per-CPU increment less for the commonest packet: 0–10 ns at the p50
/// of an established or new flow (README, round nine).
pub const FWD_TX: u32 = 12;
pub const FWD_REDIRECT: u32 = 13;
pub const DECAP: u32 = 14;
pub const PASS_NOT_ENCAP: u32 = 15;
pub const DROP_NO_NEIGH: u32 = 16;
/// A TCP SYN forwarded (`XDP_TX` or redirect) with its MSS option lowered to what fits the
/// egress MTU after encapsulation (the SYN's one reason: not also `fwd_tx`/`fwd_redirect`).
pub const FWD_MSS_CLAMPED: u32 = 17;
/// A packet too big once encapsulated, with DF set (IPv6: always), answered toward the
/// client with ICMP "fragmentation needed" / ICMPv6 "packet too big" (`XDP_TX`).
pub const ICMP_TOO_BIG: u32 = 18;
pub const DROP_IPV4_CSUM: u32 = 19;
pub const DROP_TCP_DOFF: u32 = 20;
pub const DROP_UDP_LEN: u32 = 21;
pub const FWD_ICMP: u32 = 22;
pub const DROP_ICMP_NO_FLOW: u32 = 23;

/// The forward reasons the program counts; with [`FWD_TX`], which it does not, one of them
/// per forwarded packet, so that `VIP_STATS` packets = `FWD_TX` + these, per VIP.
pub const FORWARDS_COUNTED: [u32; 3] = [FWD_REDIRECT, FWD_MSS_CLAMPED, FWD_ICMP];

/// Number of reasons (size of the `REASONS` map).
pub const COUNT: u32 = 24;

/// Entries of the per-VIP reason counters (`VIP_REASONS`, index `vip_id * COUNT + code`):
/// one row of reasons per VIP id. A packet whose VIP is known counts its reason there
/// only; the global `REASONS` counts only the packets without a VIP (one increment per
/// packet either way). The global figure is `REASONS` plus the sum over VIPs.
/// With the default VIP capacity; the daemon sizes it from `daemon.vip_capacity` at load.
pub const VIP_ENTRIES: u32 = crate::DEFAULT_VIP_CAPACITY * COUNT;

/// Bits of a [tagged](for_vip) reason that hold the code.
const CODE_BITS: u32 = 8;
const _: () = assert!(COUNT <= 1 << CODE_BITS);

/// A reason tagged with the VIP id it happened for, as the balancer passes it to its
/// counting (`code` alone, below `1 << 8`, means no VIP).
#[inline(always)]
pub const fn for_vip(vip_id: u32, code: u32) -> u32 {
    ((vip_id + 1) << CODE_BITS) | code
}

/// The reason code of a [tagged](for_vip) reason (or of a plain code).
#[inline(always)]
pub const fn code_of(tagged: u32) -> u32 {
    tagged & ((1 << CODE_BITS) - 1)
}

/// The VIP id of a [tagged](for_vip) reason: `None` for a plain code.
#[inline(always)]
pub const fn vip_of(tagged: u32) -> Option<u32> {
    match tagged >> CODE_BITS {
        0 => None,
        v => Some(v - 1),
    }
}

/// Names, indexed by reason code (for stats and metrics).
pub const NAMES: [&str; COUNT as usize] = [
    "pass_not_ip",
    "pass_not_vip",
    "pass_truncated",
    "pass_malformed",
    "pass_fragment",
    "pass_ipv6_ext",
    "pass_other_l4",
    "pass_vlan_stacked",
    "drop_no_backend",
    "drop_no_route",
    "drop_too_big",
    "drop_internal",
    "fwd_tx",
    "fwd_redirect",
    "decap",
    "pass_not_encap",
    "drop_no_neigh",
    "fwd_mss_clamped",
    "icmp_too_big",
    "drop_ipv4_csum",
    "drop_tcp_doff",
    "drop_udp_len",
    "fwd_icmp",
    "drop_icmp_no_flow",
];

/// Reasons whose packets are dropped (the rest of the non-forward reasons pass).
pub const fn is_drop(code: u32) -> bool {
    matches!(
        code,
        DROP_NO_BACKEND
            | DROP_NO_ROUTE
            | DROP_NO_NEIGH
            | DROP_TOO_BIG
            | DROP_INTERNAL
            | DROP_IPV4_CSUM
            | DROP_TCP_DOFF
            | DROP_UDP_LEN
            | DROP_ICMP_NO_FLOW
    )
}
