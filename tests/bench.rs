//! The quick benchmark (`sluice bench --quick`), run programmatically: every part runs for
//! real (the balancer and the floor through `BPF_PROG_TEST_RUN`, publishes, a flow table
//! filled by the program, the live-frames generator into a veth), in the private network
//! namespace the benchmark makes for itself. It must write its three files, and every
//! figure must be a positive, finite number. No speed is asserted: CI machines vary.

use sluice_lab::bench::{Options, run};
use sluice_tests::require_root;

#[test]
fn quick_bench_writes_every_figure() {
    require_root();
    let out = std::env::temp_dir().join(format!("sluice-bench-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let opts = Options {
        quick: true,
        ..Options::all(&out)
    };
    let report = run(&opts).expect("run the quick bench");

    let figures = report.figures();
    assert!(figures.len() > 60, "only {} figures", figures.len());
    let bad: Vec<_> = figures
        .iter()
        .filter(|(_, v)| !(v.is_finite() && *v > 0.0))
        .collect();
    assert!(bad.is_empty(), "figures not positive and finite: {bad:?}");

    let packet = report.packet.as_ref().expect("packet part ran");
    assert_eq!(packet.method, sluice_lab::bench::packet::Method::Block);
    // Thirteen cases of the balancer and the memory floors of its two many-flow cases.
    assert_eq!(packet.cases.len(), 15);
    for name in ["memory_floor_mid", "memory_floor_big"] {
        assert!(
            packet.cases.iter().any(|c| c.name == name),
            "{name} missing"
        );
    }
    assert_eq!(packet.floor_round_p50_ns.len(), packet.rounds as usize);
    for c in &packet.cases {
        // Every new-flow call inserted a flow; every other call found its own.
        let expect = if c.fresh { c.calls } else { 0 };
        assert_eq!(
            c.new_flows, expect,
            "{}: flows opened while measuring",
            c.name
        );
        assert_eq!(
            c.calls,
            u64::from(packet.calls_per_case) * u64::from(c.rounds)
        );
        assert_eq!(c.sluice_ns.samples, c.calls);
        // The histogram holds every measured call, at the p50 among them.
        let hist = &c.sluice_ns.hist;
        assert_eq!(hist.iter().map(|&(_, n)| n).sum::<u64>(), c.calls);
        assert!(hist.iter().any(|&(v, _)| v == c.sluice_ns.p50));
        assert_eq!(c.round_ratios.len(), c.rounds as usize);
    }
    assert_eq!(
        packet.cases.iter().filter(|c| c.fresh).count(),
        4,
        "new flow: DSR, IPIP, IPv6, 1000 backends"
    );
    assert!(
        packet.notes.iter().any(|n| n.contains("scaled down")),
        "a quick run says it scaled the 1M-flow case down: {:?}",
        packet.notes
    );
    let control = report.control.as_ref().expect("control part ran");
    assert_eq!(
        control.publish_edit.verified_rounds, control.publish_edit.rounds,
        "every added backend served a new flow right after publish"
    );
    assert_eq!(control.flow_scale.held, control.flow_scale.flows_offered);
    let throughput = report.throughput.as_ref().expect("throughput part ran");
    for s in &throughput.summary {
        assert_eq!(
            s.new_flows_measured, 0,
            "{} flows: all hits once warm",
            s.flows
        );
    }

    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("bench.json")).expect("read the file"),
    )
    .expect("parse the JSON");
    assert_eq!(json["quick"], true);
    assert!(
        json["machine"]["kernel"]
            .as_str()
            .is_some_and(|k| !k.is_empty())
    );
    let text = std::fs::read_to_string(out.join("bench.txt")).expect("read the file");
    for c in &packet.cases {
        assert!(text.contains(&c.label), "bench.txt lacks {}", c.label);
    }
    let svg = std::fs::read_to_string(out.join("ratios.svg")).expect("read the file");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(
        svg.matches("<rect ").count(),
        1 + packet.cases.len(),
        "background + one bar a case"
    );

    std::fs::remove_dir_all(&out).expect("remove the directory");
}

/// `sluice_gen` (run once per frame, not live) turns the template into flow `counter %
/// flows`: source port `1024 + i % 64000`, source address `base + i / 64000`, and leaves
/// the IPv4 header and TCP/UDP checksums right (checked with etherparse, independently of
/// the program's incremental update and of the benchmark's own frame builder).
#[test]
fn generator_rewrites_flows_with_valid_checksums() {
    use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
    use lb_common::bench::programs;
    use sluice_dataplane::{BenchObject, VipIdent};
    use sluice_lab::bench::{frame::Frame, throughput::template, traffic};
    use std::net::IpAddr;

    require_root();
    let mut bo = BenchObject::load().expect("load the bench object");
    let cases: [(&str, &str, u8); 4] = [
        ("100.64.0.0", "10.0.0.1", lb_common::PROTO_TCP),
        ("100.64.255.255", "10.0.0.1", lb_common::PROTO_UDP),
        ("2001:db8::1:0", "fd00::1", lb_common::PROTO_TCP),
        ("2001:db8::ffff:ffff", "fd00::1", lb_common::PROTO_UDP),
    ];
    for (src, dst, proto) in cases {
        let src: IpAddr = src.parse().expect("an address");
        let to = VipIdent {
            address: dst.parse().expect("an address"),
            port: 8080,
            proto,
        };
        let t: Frame = template([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], src, to);
        let base = u128::from(match src {
            IpAddr::V4(a) => u32::from(a),
            IpAddr::V6(a) => u128::from(a) as u32,
        });
        traffic::configure(&mut bo, &t, 200_000, traffic::Order::Sequential)
            .expect("configure the generator");
        traffic::set_counter(&mut bo, 63_998).expect("set the generator's counter");
        for i in 63_998u32..64_003 {
            let r = bo
                .run_frame(programs::GEN, &t.bytes, 0)
                .expect("run the generator on a frame");
            assert_eq!(r.action, 3, "XDP_TX");
            let h = PacketHeaders::from_ethernet_slice(&r.frame).expect("parse the frame");
            let payload = h.payload.slice();
            let (sport, csum_ok, addr_low) = match (h.net, h.transport) {
                (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Tcp(tcp))) => (
                    tcp.source_port,
                    ip.header_checksum == ip.calc_header_checksum()
                        && tcp.checksum
                            == tcp
                                .calc_checksum_ipv4(&ip, payload)
                                .expect("compute the IPv4 checksum"),
                    u32::from_be_bytes(ip.source),
                ),
                (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Udp(udp))) => (
                    udp.source_port,
                    ip.header_checksum == ip.calc_header_checksum()
                        && udp.checksum
                            == udp
                                .calc_checksum_ipv4(&ip, payload)
                                .expect("compute the IPv4 checksum"),
                    u32::from_be_bytes(ip.source),
                ),
                (Some(NetHeaders::Ipv6(ip, _)), Some(TransportHeader::Tcp(tcp))) => (
                    tcp.source_port,
                    tcp.checksum
                        == tcp
                            .calc_checksum_ipv6(&ip, payload)
                            .expect("compute the IPv6 checksum"),
                    u32::from_be_bytes(ip.source[12..].try_into().expect("a 4-byte address")),
                ),
                (Some(NetHeaders::Ipv6(ip, _)), Some(TransportHeader::Udp(udp))) => (
                    udp.source_port,
                    udp.checksum
                        == udp
                            .calc_checksum_ipv6(&ip, payload)
                            .expect("compute the IPv6 checksum"),
                    u32::from_be_bytes(ip.source[12..].try_into().expect("a 4-byte address")),
                ),
                other => panic!("unexpected headers {other:?}"),
            };
            assert_eq!(sport, 1024 + (i % 64_000) as u16, "{src} flow {i}: port");
            assert_eq!(
                addr_low,
                (base as u32).wrapping_add(i / 64_000),
                "{src} flow {i}: address"
            );
            assert!(csum_ok, "{src} proto {proto} flow {i}: checksums");
        }
    }
}

/// The memory floor (`sluice_floor_miss`) answers as the floor does (MACs swapped,
/// `XDP_TX`, nothing else changed, its work done too) and steps through its flows' lines,
/// one a call, from the last back to the first.
#[test]
fn the_memory_floor_swaps_macs_and_reads_one_line_a_call() {
    use lb_common::bench::programs;
    use sluice_dataplane::BenchObject;
    use sluice_lab::bench::packet::{miss_state, set_miss_state};

    require_root();
    let lines = 1024u32;
    let mut bo = BenchObject::load_with_miss_lines(lines).expect("load the bench object");
    set_miss_state(&mut bo, lines, 7, 40).expect("set the memory floor's state");
    // Every call on one CPU, whose position is then known.
    let _restore = sluice_lab::bench::netns::Affinity::save();
    sluice_lab::bench::netns::pin_to_cpu(0).expect("pin to CPU 0");
    let frame = sluice_tests::frames::Spec::tcp("192.0.2.1", 4000, "10.0.0.1", 80, 0x10)
        .macs([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
        .build();
    let calls = 10u32;
    for _ in 0..calls {
        let r = bo
            .run_frame(programs::FLOOR_MISS, &frame, 0)
            .expect("run the memory floor");
        assert_eq!(r.action, 3, "XDP_TX");
        assert_eq!(&r.frame[..6], &frame[6..12]);
        assert_eq!(&r.frame[6..12], &frame[..6]);
        assert_eq!(&r.frame[12..], &frame[12..]);
    }
    let state = miss_state(&bo).expect("read the memory floor's state");
    assert!(
        state
            .iter()
            .all(|s| (s.mask, s.shift, s.flows, s.work) == (lines - 1, 5, 7, 40)),
        "{state:?}"
    );
    assert_eq!(state[0].next, calls % 7, "{state:?}");
    assert!(state[1..].iter().all(|s| s.next == 0), "{state:?}");
}
