//! The per-packet benchmark's cases: what each sends, what it must answer, its target.

use super::{
    NOT_VIP, Options, TARGET_50K, TARGET_ESTABLISHED, TARGET_NEW, TARGET_NOT_VIP, VIPS,
    client_frame, short,
};
use crate::{
    bench::{
        frame::{Frame, TCP_ACK, TCP_SYN},
        run::{XDP_PASS, XDP_TX},
    },
    dataplane::VipIdent,
};

/// Which flow each call sends.
#[derive(Clone, Copy, Debug)]
pub(super) enum Vary {
    /// The same frame every call (one flow).
    Fixed,
    /// A flow never seen before every call.
    Fresh,
    /// Flows `0..n`, round and round (all in the table beforehand).
    Cycle(u64),
}

/// A case: what it sends, what it must answer, its target.
pub(super) struct Def {
    pub(super) name: &'static str,
    pub(super) label: String,
    pub(super) template: Frame,
    pub(super) vary: Vary,
    pub(super) expect: u32,
    pub(super) vip: Option<VipIdent>,
    pub(super) target: Option<f64>,
}

/// A TCP frame from the benchmark's client range to `to`, with `flags`.
pub(super) fn tcp(to: VipIdent, flags: u8) -> Frame {
    client_frame(to.address, to.port, false, flags)
}

/// The cases, in the order they are measured (the many-flow ones last: they share one
/// growing flow table).
pub(super) fn case_defs(opts: &Options) -> Vec<Def> {
    let mut defs = vec![
        Def {
            name: "not_vip",
            label: "not a VIP: XDP_PASS".into(),
            template: client_frame(NOT_VIP, 80, false, TCP_ACK),
            vary: Vary::Fixed,
            expect: XDP_PASS,
            vip: None,
            target: Some(TARGET_NOT_VIP),
        },
        Def {
            name: "tcp_established",
            label: "established TCP flow, 1 flow in table".into(),
            template: tcp(VIPS.tcp, TCP_ACK),
            vary: Vary::Fixed,
            expect: XDP_TX,
            vip: Some(VIPS.tcp),
            target: Some(TARGET_ESTABLISHED),
        },
        Def {
            name: "udp_established",
            label: "UDP, established".into(),
            template: client_frame(VIPS.udp.address, VIPS.udp.port, true, 0),
            vary: Vary::Fixed,
            expect: XDP_TX,
            vip: Some(VIPS.udp),
            target: None,
        },
        Def {
            name: "ipv6_established",
            label: "IPv6 TCP, established".into(),
            template: tcp(VIPS.v6, TCP_ACK),
            vary: Vary::Fixed,
            expect: XDP_TX,
            vip: Some(VIPS.v6),
            target: None,
        },
        Def {
            name: "dsr_fib_established",
            label: "DSR, MAC from bpf_fib_lookup, established".into(),
            template: tcp(VIPS.fib, TCP_ACK),
            vary: Vary::Fixed,
            expect: XDP_TX,
            vip: Some(VIPS.fib),
            target: None,
        },
        Def {
            name: "ipip_established",
            label: "IPIP encap + FIB, established".into(),
            template: tcp(VIPS.ipip, TCP_ACK),
            vary: Vary::Fixed,
            expect: XDP_TX,
            vip: Some(VIPS.ipip),
            target: None,
        },
        Def {
            name: "ip6ip6_established",
            label: "IP6IP6 encap + FIB, established".into(),
            template: tcp(VIPS.ip6ip6, TCP_ACK),
            vary: Vary::Fixed,
            expect: XDP_TX,
            vip: Some(VIPS.ip6ip6),
            target: None,
        },
        Def {
            name: "tcp_new",
            label: "new TCP flow (hash, Maglev, flow insert)".into(),
            template: tcp(VIPS.tcp, TCP_SYN),
            vary: Vary::Fresh,
            expect: XDP_TX,
            vip: Some(VIPS.tcp),
            target: Some(TARGET_NEW),
        },
        Def {
            name: "tcp_new_1000_backends",
            label: "new TCP flow, VIP with 1000 backends".into(),
            template: tcp(VIPS.big, TCP_SYN),
            vary: Vary::Fresh,
            expect: XDP_TX,
            vip: Some(VIPS.big),
            target: None,
        },
    ];
    for (name, n) in [
        ("tcp_established_mid", opts.mid_flows),
        ("tcp_established_big", opts.big_flows),
    ] {
        defs.push(Def {
            name,
            label: format!("established TCP, {} flows in table", short(n)),
            template: tcp(VIPS.tcp, TCP_ACK),
            vary: Vary::Cycle(n),
            expect: XDP_TX,
            vip: Some(VIPS.tcp),
            target: (n == 50_000).then_some(TARGET_50K),
        });
    }
    defs
}
