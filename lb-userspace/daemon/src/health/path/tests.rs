use super::*;

fn seg(flags: &str, ack_no: u32) -> Segment {
    Segment {
        syn: flags.contains('S'),
        ack: flags.contains('A'),
        rst: flags.contains('R'),
        fin: flags.contains('F'),
        ack_no,
    }
}

#[test]
fn answers_are_classified_by_flags_and_acknowledged_sequence() {
    let isn = u32::MAX; // wraps: isn + 1 = 0
    assert_eq!(classify(seg("SA", 0), Some(isn)), TcpAnswer::SynAck);
    assert_eq!(classify(seg("RA", 0), Some(isn)), TcpAnswer::Refused);
    // A half-open connection from an earlier SYN on this 4-tuple: the backend acks
    // that SYN, not ours.
    assert_eq!(classify(seg("A", 77), Some(isn)), TcpAnswer::ChallengeAck);
    assert_eq!(classify(seg("A", 77), None), TcpAnswer::ChallengeAck);
    // A SYN-ACK for another SYN (late, or retransmitted): reset, not an answer.
    assert_eq!(classify(seg("SA", 5), Some(isn)), TcpAnswer::StaleSynAck);
    assert_eq!(classify(seg("SA", 0), None), TcpAnswer::StaleSynAck);
    // A RST for something else is no answer to this probe.
    assert_eq!(classify(seg("RA", 5), Some(isn)), TcpAnswer::Ignore);
    assert_eq!(classify(seg("R", 0), Some(isn)), TcpAnswer::Ignore);
    assert_eq!(classify(seg("FA", 5), Some(isn)), TcpAnswer::Ignore);
    assert_eq!(classify(seg("S", 0), Some(isn)), TcpAnswer::Ignore);
}

#[test]
fn each_probe_takes_the_next_port_and_a_backend_never_meets_its_unsettled_probes() {
    let mut inner = Inner::default();
    let vip: IpAddr = "10.0.0.100".parse().unwrap();
    let check = (vip, 80, PROTO_TCP);
    let sent = |id| Sent {
        id,
        src: "10.0.0.1".parse().unwrap(),
        isn: 1,
        until: Instant::now() + LINGER,
        settled: false,
    };
    let take = |inner: &mut Inner, id| {
        let (tx, _rx) = oneshot::channel();
        inner.take_port(check, sent(id), tx).map(|k| k.2)
    };
    let first = take(&mut inner, 1).unwrap();
    let next =
        |p: u16, n: u32| PROBE_PORT_BASE + ((u32::from(p - PROBE_PORT_BASE) + n) % PORTS) as u16;
    assert_eq!(take(&mut inner, 1), Some(next(first, 1)));
    assert_eq!(take(&mut inner, 2), Some(next(first, 2)));
    // Once every port was used: backend 1 finds all of them held (by waiting probes
    // or its own unsettled ones)...
    inner.waiting.clear();
    for _ in 3..PORTS {
        take(&mut inner, 2).unwrap();
    }
    inner.waiting.clear();
    assert_eq!(
        take(&mut inner, 1),
        Some(next(first, 2)),
        "skips its own two"
    );
    // ...and another backend may reuse them (its connections are elsewhere).
    inner.waiting.clear();
    assert_eq!(take(&mut inner, 3), Some(next(first, 3)));
    // A settled probe frees its port for its own backend too.
    for v in inner.sent.values_mut() {
        for s in v {
            s.settled = true;
        }
    }
    inner.waiting.clear();
    assert_eq!(take(&mut inner, 1), Some(next(first, 4)));
    // Every port waited on: none left.
    let mut inner = Inner::default();
    let mut keep = Vec::new();
    for _ in 0..PORTS {
        let (tx, rx) = oneshot::channel();
        keep.push(rx);
        inner.take_port(check, sent(5), tx).unwrap();
    }
    let (tx, _rx) = oneshot::channel();
    assert!(inner.take_port(check, sent(6), tx).is_none());
}

/// A probe's frame is what a client would send: the backend it goes to travels beside it
/// (`Dataplane::inject_probe`'s XDP metadata), so any backend slot id can be probed.
#[test]
fn probe_frames_are_plain_client_frames() {
    let mac = [2, 0, 0, 0, 0, 1];
    let f = probe_frame(
        mac,
        "10.0.0.1".parse().unwrap(),
        "10.0.0.100".parse().unwrap(),
        50000,
        80,
        ProbeL4::Syn { seq: 7 },
    )
    .unwrap();
    let v4 = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = v4.net else {
        panic!("not IPv4")
    };
    assert_eq!(ip.header().header_checksum(), {
        ip.header().to_header().calc_header_checksum()
    });
    assert_eq!(ip.header().destination(), [10, 0, 0, 100]);
    let f = probe_frame(
        mac,
        "fd00::1".parse().unwrap(),
        "fd00::100".parse().unwrap(),
        50000,
        80,
        ProbeL4::Rst { seq: 7 },
    )
    .unwrap();
    let v6 = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
    assert!(matches!(v6.net, Some(etherparse::NetSlice::Ipv6(_))));
    assert!(
        probe_frame(
            mac,
            "10.0.0.1".parse().unwrap(),
            "fd00::100".parse().unwrap(),
            50000,
            80,
            ProbeL4::Syn { seq: 7 },
        )
        .is_err(),
        "address families differ"
    );
}
