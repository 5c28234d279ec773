//! End-to-end smoke test: real TCP connections and UDP datagrams from a client namespace
//! through sluice (attached in native mode to a veth in its own namespace) to a backend
//! namespace, in DSR and in IPIP mode (the backend running sluice's decap program).
//!
//! Topology (all namespaces and links created here, removed on drop, also on failure):
//!
//! ```text
//!   client 10.98.0.2 ─┐
//!   lb     10.98.0.1 ─┼─ br0 (switch namespace)
//!   backend 10.98.0.3 ┘   VIP 10.98.0.100 on the backend's loopback
//! ```

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::Context as _;
use lb_common::{MODE_DSR, MODE_IPIP, PROTO_TCP, PROTO_UDP, programs, reason};
use sluice_dataplane::{
    AttachMode, Dataplane, Desired, DesiredBackend, DesiredVip, Global, Sizes, VipIdent, neigh,
    pinned,
};
use sluice_tests::{netns::Named, require_root};

const VIP: &str = "10.98.0.100";
const LB: &str = "10.98.0.1";
const BACKEND: &str = "10.98.0.3";
const TIMEOUT: Duration = Duration::from_secs(3);

struct Lab {
    client: Named,
    lb: Named,
    backend: Named,
    switch: Named,
}

impl Lab {
    fn up() -> anyhow::Result<Self> {
        let tag = format!("{}", std::process::id() % 100_000);
        let switch = Named::new(&format!("sl-smoke-{tag}-sw"))?;
        let client = Named::new(&format!("sl-smoke-{tag}-cl"))?;
        let lb = Named::new(&format!("sl-smoke-{tag}-lb"))?;
        let backend = Named::new(&format!("sl-smoke-{tag}-be"))?;
        switch.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
        switch.exec(&["ip", "link", "set", "br0", "up"])?;
        for (ns, addr) in [(&client, "10.98.0.2"), (&lb, LB), (&backend, BACKEND)] {
            // Host side of the pair is created in the switch namespace, so nothing ever
            // appears in the host's own namespace.
            let port = format!("p-{}", &ns.name()[ns.name().len() - 2..]);
            switch.exec(&[
                "ip",
                "link",
                "add",
                "eth0",
                "netns",
                ns.name(),
                "type",
                "veth",
                "peer",
                "name",
                &port,
            ])?;
            switch.exec(&["ip", "link", "set", &port, "master", "br0"])?;
            switch.exec(&["ip", "link", "set", &port, "up"])?;
            ns.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ns.exec(&["ip", "link", "set", "eth0", "up"])?;
        }
        // Frames the LB sends with XDP_TX are only received by a veth peer that runs an
        // XDP program; local sockets' partial checksums do not survive XDP_TX.
        client.exec(&["ip", "route", "add", &format!("{VIP}/32"), "via", LB])?;
        client.exec(&["ethtool", "-K", "eth0", "tx", "off"])?;
        lb.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        backend.exec(&["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
        for key in [
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.eth0.rp_filter=0",
        ] {
            backend.exec(&["sysctl", "-qw", key])?;
        }
        Ok(Self {
            client,
            lb,
            backend,
            switch,
        })
    }

    fn backend_mac(&self) -> anyhow::Result<[u8; 6]> {
        // `eth0@ifN  UP  MAC  <FLAGS>` (not /sys/class/net: the namespace's commands see
        // the host's sysfs).
        let s = self
            .backend
            .exec(&["ip", "-br", "link", "show", "dev", "eth0"])?;
        let s = s
            .split_whitespace()
            .nth(2)
            .context("no MAC in `ip -br link`")?;
        let mut mac = [0u8; 6];
        for (i, p) in s.trim().split(':').enumerate() {
            mac[i] = u8::from_str_radix(p, 16)?;
        }
        Ok(mac)
    }
}

/// Detaches the backend's pinned decap program on drop.
struct DecapGuard<'a>(&'a Named);

impl Drop for DecapGuard<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .run(|| pinned::detach_pinned(programs::DECAP, "eth0"));
    }
}

fn desired(mode: u8, mac: Option<[u8; 6]>) -> Desired {
    let backend = |proto| DesiredVip {
        ident: VipIdent {
            address: VIP.parse().expect("vip"),
            port: 0,
            proto,
        },
        mode,
        scheduler: sluice_dataplane::Sched::Maglev,
        table_size: 251,
        backends: vec![DesiredBackend {
            address: BACKEND.parse().expect("be"),
            weight: 1,
            mac,
            serving: true,
            in_flight: None,
        }],
    };
    Desired {
        global: Global::default(),
        vips: vec![backend(PROTO_TCP), backend(PROTO_UDP)],
    }
}

/// Serve `n` TCP connections (echo with a prefix) and UDP datagrams on the backend.
fn serve(lab: &Lab, tcp_port: u16, udp_port: u16) -> anyhow::Result<()> {
    let listener = lab.backend.run(|| TcpListener::bind((VIP, tcp_port)))??;
    let udp = lab.backend.run(|| UdpSocket::bind((VIP, udp_port)))??;
    listener.set_nonblocking(false)?;
    std::thread::spawn(move || {
        for conn in listener.incoming().take(3) {
            let Ok(mut c) = conn else { break };
            let _ = c.set_read_timeout(Some(TIMEOUT));
            let mut buf = [0u8; 64];
            if let Ok(n) = c.read(&mut buf) {
                let _ = c.write_all(&[b"backend:".as_slice(), &buf[..n]].concat());
            }
        }
    });
    udp.set_read_timeout(Some(TIMEOUT))?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            let Ok((n, from)) = udp.recv_from(&mut buf) else {
                break;
            };
            let _ = udp.send_to(&[b"backend:".as_slice(), &buf[..n]].concat(), from);
        }
    });
    Ok(())
}

/// Three TCP connections and three UDP exchanges from the client, all answered.
fn exercise(lab: &Lab, tcp_port: u16, udp_port: u16) -> anyhow::Result<()> {
    for i in 0..3 {
        let addr: SocketAddr = format!("{VIP}:{tcp_port}").parse()?;
        let mut s = lab
            .client
            .run(|| TcpStream::connect_timeout(&addr, TIMEOUT))?
            .with_context(|| format!("tcp connect {i} to {addr}"))?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.write_all(format!("hello {i}").as_bytes())?;
        let mut got = String::new();
        s.read_to_string(&mut got)
            .with_context(|| format!("tcp read {i}"))?;
        assert_eq!(got, format!("backend:hello {i}"));
    }
    let udp = lab.client.run(|| UdpSocket::bind("10.98.0.2:0"))??;
    udp.set_read_timeout(Some(TIMEOUT))?;
    udp.connect((VIP, udp_port))?;
    for i in 0..3 {
        udp.send(format!("dgram {i}").as_bytes())?;
        let mut buf = [0u8; 64];
        let n = udp
            .recv(&mut buf)
            .with_context(|| format!("udp reply {i}"))?;
        assert_eq!(&buf[..n], format!("backend:dgram {i}").as_bytes());
    }
    Ok(())
}

#[test]
fn dsr_and_ipip_carry_real_tcp_and_udp() {
    require_root();
    let lab = Lab::up().expect("bring the lab up");
    let mut dp = Dataplane::load(Sizes {
        flow_entries: 4096,
        table_slots: 4096,
        ..Sizes::default()
    })
    .expect("load the object");

    // DSR, with the backend's MAC configured.
    dp.publish(&desired(
        MODE_DSR,
        Some(lab.backend_mac().expect("the backend's MAC")),
    ))
    .expect("publish the tables");
    let mode = lab
        .lb
        .run(|| dp.attach(programs::BALANCER, "eth0", AttachMode::Native))
        .expect("run in the namespace")
        .expect("attach the program");
    assert_eq!(mode, AttachMode::Native);
    lab.switch
        .run(|| pinned::attach_pinned(programs::PASS, "p-lb", AttachMode::Native))
        .expect("run in the namespace")
        .expect("attach the pinned program");
    let _pass = PassGuard(&lab.switch);
    serve(&lab, 8080, 5353).expect("serve on the backends");
    exercise(&lab, 8080, 5353).expect("dsr");
    let counts = dp.reason_counts().expect("the reason counts");
    assert!(
        counts[reason::FWD_TX as usize] >= 12,
        "forwarded {}",
        counts[reason::FWD_TX as usize]
    );

    // IPIP: the LB resolves the backend's MAC itself (FIB + neighbour table); the backend
    // decapsulates with sluice's decap program.
    lab.backend
        .run(|| pinned::attach_pinned(programs::DECAP, "eth0", AttachMode::Native))
        .expect("run in the namespace")
        .expect("attach the pinned program");
    let _decap = DecapGuard(&lab.backend);
    let ipip = desired(MODE_IPIP, None);
    dp.publish(&ipip).expect("publish the tables");
    // The daemon's own priming, from the LB's namespace; then wait (bounded) for the kernel
    // to have resolved the backend.
    lab.lb
        .run(|| neigh::prime(&neigh::fib_backends(&ipip)))
        .expect("run in the namespace");
    let resolved = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        lab.lb
            .exec(&["ip", "neigh", "show", BACKEND])
            .is_ok_and(|s| s.contains("lladdr"))
    });
    assert!(resolved, "priming did not resolve the backend's MAC");
    serve(&lab, 8081, 5354).expect("serve on the backends");
    exercise(&lab, 8081, 5354).expect("ipip");
    dp.detach_all().expect("detach everything");
}

/// Detaches the XDP_PASS program on the LB's switch-side veth on drop.
struct PassGuard<'a>(&'a Named);

impl Drop for PassGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(|| pinned::detach_pinned(programs::PASS, "p-lb"));
    }
}
