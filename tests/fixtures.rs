//! Packet fixtures: frames run through the real XDP programs with `BPF_PROG_TEST_RUN`,
//! each compared with the exact frame it must produce (built independently with
//! etherparse) and its verdict, and the reason counter it must bump (exactly one counter
//! moves per frame).
//!
//! The programs run inside a private network namespace whose interface, addresses,
//! routes and neighbour entries the harness creates, so `bpf_fib_lookup` answers
//! deterministically.

use std::{collections::HashMap, net::IpAddr};

use lb_common::{FlowKey, MODE_DSR, MODE_IPIP, PROTO_TCP, PROTO_UDP, hash::flow_hash, programs, reason};
use lb_userspace::dataplane::{Dataplane, Desired, DesiredBackend, DesiredVip, Global, Sizes, VipIdent};
use sluice_tests::{
    frames::{self, ACK, FIN, LB_MAC, RST, SYN, Spec},
    netns::{self, Private},
    require_root,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const SEED: u32 = 0x5eed;
const VIP4: &str = "10.99.0.10";
const VIP6: &str = "fd99::10";
const CLIENT4: &str = "192.0.2.7";
const CLIENT6: &str = "2001:db8::7";

/// Backend addresses of the fixture network and the MACs their neighbour entries hold.
const BACKENDS4: [&str; 4] = ["10.99.1.1", "10.99.1.2", "10.99.1.3", "10.99.1.4"];
const BACKENDS6: [&str; 4] = ["fd99::1:1", "fd99::1:2", "fd99::1:3", "fd99::1:4"];

fn mac_of(addr: IpAddr) -> [u8; 6] {
    let last = match addr {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    };
    let fam = if addr.is_ipv4() { 4 } else { 6 };
    [0x02, 0, 0, fam, 1, last]
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// The fixture namespace: `fx0` (the LB's interface, MAC `LB_MAC`, MTU 1500) with routes to
/// the backends and permanent neighbour entries for them.
fn network() -> anyhow::Result<(Private, u32)> {
    let ns = Private::enter()?;
    let mac = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    netns::sh(&format!(
        "ip link add fx0 address {} mtu 1500 type veth peer name fx1 && ip link set fx0 up && ip link set fx1 up \
         && ip addr add 10.99.0.1/16 dev fx0 && ip -6 addr add fd99::1/64 dev fx0 nodad \
         && sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.ipv6.conf.all.forwarding=1",
        mac(LB_MAC)
    ))?;
    for b in BACKENDS4.iter().chain(&BACKENDS6) {
        netns::sh(&format!("ip neigh replace {b} lladdr {} dev fx0 nud permanent", mac(mac_of(ip(b)))))?;
    }
    let ifindex = netns::ifindex("fx0")?;
    Ok((ns, ifindex))
}

fn vip(addr: &str, port: u16, proto: u8, mode: u8, backends: &[(&str, u32)]) -> DesiredVip {
    DesiredVip {
        ident: VipIdent { address: ip(addr), port, proto },
        mode,
        table_size: 1021,
        backends: backends
            .iter()
            .map(|(a, w)| DesiredBackend {
                address: ip(a),
                weight: *w,
                // DSR backends of the IPv4 VIPs carry their MAC; IPv6 ones are resolved by
                // the FIB, so both DSR paths run.
                mac: (mode == MODE_DSR && ip(a).is_ipv4()).then(|| mac_of(ip(a))),
                serving: true,
            })
            .collect(),
    }
}

fn state(vips: Vec<DesiredVip>) -> Desired {
    Desired { global: Global { hash_seed: SEED, ..Global::default() }, vips }
}

/// Which backend a forwarded frame must go to.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// The one the live Maglev table gives this flow.
    Table,
    /// The one an earlier step of this case gave this flow.
    Same,
    /// This address.
    Backend(&'static str),
}

#[derive(Clone, Debug)]
enum Expect {
    /// `XDP_PASS`, frame untouched.
    Pass,
    /// `XDP_DROP`.
    Drop,
    /// `XDP_TX`, rewritten for the target per the VIP's mode.
    Tx(Target),
    /// This verdict and exactly this frame.
    Exact(u32, Vec<u8>),
}

enum Input {
    Spec(Spec),
    Raw(Vec<u8>),
}

struct Step {
    /// Publish this state first (diffed against the current one).
    publish: Option<Desired>,
    program: &'static str,
    input: Input,
    expect: Expect,
    reason: u32,
}

struct Case {
    name: &'static str,
    steps: Vec<Step>,
}

fn lb(spec: Spec, expect: Expect, reason: u32) -> Step {
    Step { publish: None, program: programs::BALANCER, input: Input::Spec(spec), expect, reason }
}

fn raw(program: &'static str, frame: Vec<u8>, expect: Expect, reason: u32) -> Step {
    Step { publish: None, program, input: Input::Raw(frame), expect, reason }
}

fn with(state: Desired, step: Step) -> Step {
    Step { publish: Some(state), ..step }
}

struct World {
    dp: Dataplane,
    ifindex: u32,
    current: Desired,
}

impl World {
    fn vip_for(&self, key: &FlowKey) -> Option<&DesiredVip> {
        let dst = if key.family == lb_common::FAMILY_V4 {
            IpAddr::from([key.dst[0], key.dst[1], key.dst[2], key.dst[3]])
        } else {
            IpAddr::from(key.dst)
        };
        let port = u16::from_be_bytes(key.dport);
        let find = |p: u16| {
            self.current.vips.iter().find(|v| v.ident.address == dst && v.ident.port == p && v.ident.proto == key.proto)
        };
        find(port).or_else(|| find(0))
    }

    /// The backend the live table gives `key`.
    fn table_pick(&self, v: &DesiredVip, key: &FlowKey) -> anyhow::Result<IpAddr> {
        let table = self.dp.live_table(&v.ident).ok_or_else(|| anyhow::anyhow!("no table"))?;
        let id = table[(flow_hash(key, SEED) % v.table_size) as usize];
        let rec = self.dp.layout().vip(&v.ident).ok_or_else(|| anyhow::anyhow!("no record"))?;
        rec.backends
            .iter()
            .find(|(_, r)| r.id == id)
            .map(|(a, _)| *a)
            .ok_or_else(|| anyhow::anyhow!("table slot holds unknown id {id}"))
    }
}

/// The frame sluice must send for `spec` to `backend` of `v`.
fn forwarded(spec: &Spec, v: &DesiredVip, backend: IpAddr) -> Vec<u8> {
    let key = spec.key();
    let hash = flow_hash(&key, SEED);
    if v.mode == MODE_IPIP {
        let outer_src = match backend {
            IpAddr::V4(_) => {
                let h = hash.to_be_bytes();
                IpAddr::from([172, 16, h[2], h[3]])
            }
            IpAddr::V6(_) => {
                let mut a = Global::default().encap_v6.0.octets();
                a[12..].copy_from_slice(&hash.to_be_bytes());
                IpAddr::from(a)
            }
        };
        frames::ipip(LB_MAC, mac_of(backend), spec.vlan, outer_src, backend, spec.tos, hash, &spec.ip_packet())
    } else {
        spec.clone().macs(LB_MAC, mac_of(backend)).build()
    }
}

fn run_case(w: &mut World, case: &Case) -> anyhow::Result<usize> {
    w.dp.clear_flows()?;
    let mut assigned: HashMap<FlowKey, IpAddr> = HashMap::new();
    for (i, step) in case.steps.iter().enumerate() {
        let ctx = |m: String| anyhow::anyhow!("{} step {i}: {m}", case.name);
        if let Some(s) = &step.publish {
            w.dp.publish(s).map_err(|e| ctx(format!("publish: {e}")))?;
            w.current = s.clone();
        }
        let frame = match &step.input {
            Input::Spec(s) => s.build(),
            Input::Raw(f) => f.clone(),
        };
        let before = w.dp.reason_counts()?;
        let got = w.dp.run_frame(step.program, &frame, w.ifindex).map_err(|e| ctx(e.to_string()))?;
        let after = w.dp.reason_counts()?;

        let (action, out) = match (&step.expect, &step.input) {
            (Expect::Pass, _) => (XDP_PASS, frame.clone()),
            (Expect::Drop, _) => (XDP_DROP, got.frame.clone()),
            (Expect::Exact(a, f), _) => (*a, f.clone()),
            (Expect::Tx(target), Input::Spec(spec)) => {
                let key = spec.key();
                let v = w.vip_for(&key).ok_or_else(|| ctx("no VIP for this frame".into()))?.clone();
                let backend = match target {
                    Target::Table => w.table_pick(&v, &key)?,
                    Target::Same => *assigned.get(&key).ok_or_else(|| ctx("no earlier backend for this flow".into()))?,
                    Target::Backend(a) => ip(a),
                };
                assigned.insert(key, backend);
                (XDP_TX, forwarded(spec, &v, backend))
            }
            (Expect::Tx(_), Input::Raw(_)) => return Err(ctx("Tx needs a Spec input".into())),
        };
        if got.action != action {
            return Err(ctx(format!("verdict {} instead of {action}", got.action)));
        }
        if got.frame != out {
            return Err(ctx(format!("frame differs:\n  got  {}\n  want {}", hex(&got.frame), hex(&out))));
        }
        let moved: Vec<(usize, u64)> =
            after.iter().zip(&before).enumerate().filter(|(_, (a, b))| a != b).map(|(i, (a, b))| (i, a - b)).collect();
        if moved != [(step.reason as usize, 1)] {
            let names: Vec<String> = moved.iter().map(|(i, d)| format!("{}+{d}", reason::NAMES[*i])).collect();
            return Err(ctx(format!("counters moved {names:?}, want exactly {}+1", reason::NAMES[step.reason as usize])));
        }
    }
    Ok(case.steps.len())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn base() -> Desired {
    state(vec![
        vip(VIP4, 80, PROTO_TCP, MODE_DSR, &[(BACKENDS4[0], 1), (BACKENDS4[1], 1), (BACKENDS4[2], 1)]),
        vip(VIP4, 53, PROTO_UDP, MODE_DSR, &[(BACKENDS4[0], 1), (BACKENDS4[1], 1)]),
        vip(VIP4, 443, PROTO_TCP, MODE_IPIP, &[(BACKENDS4[0], 1), (BACKENDS4[1], 1), (BACKENDS4[2], 1)]),
        vip(VIP6, 80, PROTO_TCP, MODE_DSR, &[(BACKENDS6[0], 1), (BACKENDS6[1], 1)]),
        vip(VIP6, 443, PROTO_TCP, MODE_IPIP, &[(BACKENDS6[0], 1), (BACKENDS6[1], 1)]),
    ])
}

fn cases() -> Vec<Case> {
    let syn4 = |sport: u16, dport: u16| Spec::tcp(CLIENT4, sport, VIP4, dport, SYN);
    let syn6 = |sport: u16, dport: u16| Spec::tcp(CLIENT6, sport, VIP6, dport, SYN);
    vec![
        Case {
            name: "dsr v4 tcp syn then ack stay on one backend",
            steps: vec![
                with(base(), lb(syn4(40000, 80), Expect::Tx(Target::Table), reason::FWD_TX)),
                lb(Spec::tcp(CLIENT4, 40000, VIP4, 80, ACK), Expect::Tx(Target::Same), reason::FWD_TX),
                lb(Spec::tcp(CLIENT4, 40000, VIP4, 80, ACK | FIN), Expect::Tx(Target::Same), reason::FWD_TX),
            ],
        },
        Case {
            name: "dsr v6 tcp via fib lookup",
            steps: vec![
                lb(syn6(40001, 80), Expect::Tx(Target::Table), reason::FWD_TX),
                lb(Spec::tcp(CLIENT6, 40001, VIP6, 80, ACK), Expect::Tx(Target::Same), reason::FWD_TX),
            ],
        },
        Case {
            name: "ipip v4 tcp",
            steps: vec![
                lb(syn4(40002, 443).tos(0xb8), Expect::Tx(Target::Table), reason::FWD_TX),
                lb(Spec::tcp(CLIENT4, 40002, VIP4, 443, ACK).tos(0xb8), Expect::Tx(Target::Same), reason::FWD_TX),
            ],
        },
        Case {
            name: "ipip v6 tcp",
            steps: vec![lb(syn6(40003, 443).tos(0x28), Expect::Tx(Target::Table), reason::FWD_TX)],
        },
        Case {
            name: "udp v4 dsr",
            steps: vec![
                lb(Spec::udp(CLIENT4, 5353, VIP4, 53), Expect::Tx(Target::Table), reason::FWD_TX),
                lb(Spec::udp(CLIENT4, 5353, VIP4, 53), Expect::Tx(Target::Same), reason::FWD_TX),
            ],
        },
        Case {
            name: "not for a VIP",
            steps: vec![
                lb(Spec::tcp(CLIENT4, 1, "10.99.0.11", 80, SYN), Expect::Pass, reason::PASS_NOT_VIP),
                lb(syn4(40004, 81), Expect::Pass, reason::PASS_NOT_VIP),
                lb(Spec::udp(CLIENT4, 1, VIP4, 80), Expect::Pass, reason::PASS_NOT_VIP),
            ],
        },
        Case {
            // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header (as no NIC
            // delivers them), so truncation starts there: every cut inside the IPv4 and TCP
            // headers.
            name: "truncated v4 tcp",
            steps: (14..54).map(|n| raw(programs::BALANCER, syn4(1, 80).build()[..n].to_vec(), Expect::Pass, reason::PASS_TRUNCATED)).collect(),
        },
        Case {
            name: "rst opens no flow",
            steps: vec![
                lb(Spec::tcp(CLIENT4, 40005, VIP4, 80, RST), Expect::Tx(Target::Table), reason::FWD_TX),
            ],
        },
        Case {
            name: "backend added: established flow stays, removed backend's flow moves",
            steps: vec![
                with(base(), lb(syn4(40006, 80), Expect::Tx(Target::Table), reason::FWD_TX)),
                with(
                    {
                        let mut s = base();
                        s.vips[0] = vip(VIP4, 80, PROTO_TCP, MODE_DSR, &[(BACKENDS4[0], 1), (BACKENDS4[1], 1), (BACKENDS4[2], 1), (BACKENDS4[3], 5)]);
                        s
                    },
                    lb(Spec::tcp(CLIENT4, 40006, VIP4, 80, ACK), Expect::Tx(Target::Same), reason::FWD_TX),
                ),
            ],
        },
        Case {
            name: "vip without backends drops",
            steps: vec![with(
                state(vec![vip(VIP4, 80, PROTO_TCP, MODE_DSR, &[])]),
                lb(syn4(40007, 80), Expect::Drop, reason::DROP_NO_BACKEND),
            )],
        },
        Case {
            name: "decap restores the inner packet",
            steps: {
                let inner = syn4(40008, 443);
                let enc = frames::ipip([2, 0, 0, 0, 0, 9], LB_MAC, None, ip("172.16.1.2"), ip(BACKENDS4[0]), 0, 0, &inner.ip_packet());
                let want = inner.clone().macs([2, 0, 0, 0, 0, 9], LB_MAC).build();
                vec![
                    with(base(), raw(programs::DECAP, enc, Expect::Exact(XDP_PASS, want), reason::DECAP)),
                    raw(programs::DECAP, syn4(1, 80).build(), Expect::Pass, reason::PASS_NOT_ENCAP),
                ]
            },
        },
    ]
}

#[test]
fn fixture_table() -> anyhow::Result<()> {
    require_root();
    let (_ns, ifindex) = network()?;
    let dp = Dataplane::load(Sizes { flow_entries: 65536, table_slots: 1 << 20 })?;
    let mut w = World { dp, ifindex, current: Desired::default() };
    w.dp.publish(&base())?;
    w.current = base();
    let mut failures = Vec::new();
    let mut passed = 0;
    let all = cases();
    for case in &all {
        match run_case(&mut w, case) {
            Ok(n) => passed += n,
            Err(e) => failures.push(format!("{e:#}")),
        }
        // Every case starts from the base state.
        w.dp.publish(&base())?;
        w.current = base();
    }
    let total: usize = all.iter().map(|c| c.steps.len()).sum();
    println!("fixtures: {passed} of {total} vectors passed in {} cases", all.len());
    assert!(failures.is_empty(), "{} failing case(s):\n{}", failures.len(), failures.join("\n"));
    Ok(())
}
