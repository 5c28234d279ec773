//! Packet fixtures: frames run through the real XDP programs with `BPF_PROG_TEST_RUN`,
//! each compared with the exact frame it must produce (built independently with
//! etherparse) and its verdict, and the reason counter it must bump (exactly one counter
//! moves per frame). Some steps also check state the frame must have left behind (the
//! flow table, the live Maglev table), and one case checks the per-VIP and per-backend
//! traffic counters.
//!
//! The programs run inside a private network namespace whose interface, addresses,
//! routes and neighbour entries the harness creates, so `bpf_fib_lookup` answers
//! deterministically.
//!
//! Frames shorter than an Ethernet header (14 bytes) cannot be test-run: the kernel
//! refuses them (as no NIC delivers them), so every truncation sweep starts at 14.

use std::{collections::HashMap, net::IpAddr};

use etherparse::{
    EtherType, IcmpEchoHeader, Icmpv6Type, IpAuthHeader, IpFragOffset, IpNumber, Ipv4Header,
    Ipv4Options, Ipv6FragmentHeader, Ipv6RawExtHeader,
};
use lb_common::{
    Counters, FlowKey, MODE_DSR, MODE_IPIP, PROTO_TCP, PROTO_UDP, hash::flow_hash, programs, reason,
};
use lb_userspace::dataplane::{
    Dataplane, Desired, DesiredBackend, DesiredVip, Global, Sizes, VipIdent,
};
use sluice_tests::{
    frames::{self, ACK, Encap, FIN, LB_MAC, RST, SYN, Spec, Tag},
    netns::{self, Private},
    require_root,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const SEED: u32 = 0x5eed;
const VIP4: &str = "10.99.0.10";
const VIP6: &str = "fd99::10";
/// The address of the all-ports (port 0) VIPs.
const ANY4: &str = "10.99.0.20";
const ANY6: &str = "fd99::20";
/// The address of the counters case's VIPs.
const CNT4: &str = "10.99.0.30";
const CNT6: &str = "fd99::30";
const CLIENT4: &str = "192.0.2.7";
const CLIENT6: &str = "2001:db8::7";

/// Backend addresses of the fixture network and the MACs their neighbour entries hold.
const BACKENDS4: [&str; 4] = ["10.99.1.1", "10.99.1.2", "10.99.1.3", "10.99.1.4"];
const BACKENDS6: [&str; 4] = ["fd99::1:1", "fd99::1:2", "fd99::1:3", "fd99::1:4"];
/// Outside every route of the namespace.
const UNROUTED4: &str = "198.51.100.9";
const UNROUTED6: &str = "2001:db8:ffff::9";
/// On-link (inside fx0's prefixes) but without a neighbour entry.
const NO_NEIGH4: &str = "10.99.2.9";
const NO_NEIGH6: &str = "fd99::2:9";

/// The MAC of the host that sends encapsulated frames to a backend, in the decap cases.
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x09];

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
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    netns::sh(&format!(
        "ip link add fx0 address {} mtu 1500 type veth peer name fx1 && ip link set fx0 up && ip link set fx1 up \
         && ip addr add 10.99.0.1/16 dev fx0 && ip -6 addr add fd99::1/64 dev fx0 nodad \
         && sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.ipv6.conf.all.forwarding=1",
        mac(LB_MAC)
    ))?;
    for b in BACKENDS4.iter().chain(&BACKENDS6) {
        netns::sh(&format!(
            "ip neigh replace {b} lladdr {} dev fx0 nud permanent",
            mac(mac_of(ip(b)))
        ))?;
    }
    let ifindex = netns::ifindex("fx0")?;
    Ok((ns, ifindex))
}

fn vip(addr: &str, port: u16, proto: u8, mode: u8, backends: &[(&str, u32)]) -> DesiredVip {
    DesiredVip {
        ident: VipIdent {
            address: ip(addr),
            port,
            proto,
        },
        mode,
        scheduler: lb_userspace::dataplane::Sched::Maglev,
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

/// Backends weighted 1 each.
fn even<'a>(addrs: &[&'a str]) -> Vec<(&'a str, u32)> {
    addrs.iter().map(|a| (*a, 1)).collect()
}

/// `v` with every backend's MAC set to `mac` (`None`: resolved by the FIB).
fn with_mac(mut v: DesiredVip, mac: Option<[u8; 6]>) -> DesiredVip {
    for b in &mut v.backends {
        b.mac = mac;
    }
    v
}

fn state(vips: Vec<DesiredVip>) -> Desired {
    Desired {
        global: Global {
            hash_seed: SEED,
            ..Global::default()
        },
        vips,
    }
}

/// The base state plus `extra` VIPs.
fn base_plus(extra: Vec<DesiredVip>) -> Desired {
    let mut s = base();
    s.vips.extend(extra);
    s
}

/// The base state with its VIP of the same identity as `v` replaced by `v`.
fn base_with(v: DesiredVip) -> Desired {
    let mut s = base();
    let i = s
        .vips
        .iter()
        .position(|x| x.ident == v.ident)
        .expect("a base VIP");
    s.vips[i] = v;
    s
}

/// Which backend a forwarded frame must go to.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// The one the live Maglev table gives this flow.
    Table,
    /// The one an earlier step of this case gave this flow.
    Same,
    /// The one the live table gives, which must differ from the one an earlier step gave
    /// this flow (its backend was removed or went down).
    Moved,
    /// This address.
    Backend(&'static str),
    /// The one the live table gives the flow's source address (`source-hash`).
    SourceTable,
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
    /// `XDP_PASS` and this client frame as it arrives at the backend an earlier step sent
    /// its flow to: the decapsulated form of that step's IPIP output.
    Restored(Spec),
    /// Like `Tx`, but the frame sent is this one's (the input rewritten, e.g. its MSS
    /// clamped), forwarded for the target.
    TxAs(Target, Spec),
    /// `XDP_TX`, the (raw) input frame sent as this flow's packets are: to the backend an
    /// earlier step gave it, per its VIP's mode (ICMP errors about the flow).
    Along(Spec),
}

enum Input {
    Spec(Spec),
    Raw(Vec<u8>),
    /// A health probe for `sluice_probe`: the frame with the slot id of backend `.2` of the
    /// VIP (address, port) `.1` in its IPv4 identification / IPv6 flow label.
    Probe(Spec, (&'static str, u16), &'static str),
    /// The frame the previous step produced.
    Previous,
}

/// A change to one backend of the current state: the one an earlier step gave a flow.
#[derive(Clone, Copy, Debug)]
enum Edit {
    Remove,
    /// `serving: false`.
    Down,
    Weight(u32),
}

enum Publish {
    State(Desired),
    /// Republish the current state with the backend of this flow edited.
    Edit(FlowKey, Edit),
}

/// State a step must leave behind (checked after its frame; about the step's own flow).
#[derive(Clone, Copy, Debug)]
enum Check {
    /// The flow table pins this flow to the backend it was just sent to (id and
    /// generation of that backend's slot).
    Pinned,
    /// The flow table has no entry for this flow.
    Unpinned,
    /// The live table now gives this flow another backend than the one it was sent to:
    /// only the flow table kept it there.
    TableMoved,
    /// The backend the last `Publish::Edit` changed holds no slot of its VIP's live table
    /// (no new flow can pick it).
    EditedOutOfTable,
    /// This flow was not sent to the backend the last `Publish::Edit` changed.
    AvoidsEdited,
    /// The flow's connection-tracking state (`lb_common::FLOW_OPEN` / `FLOW_CLOSING`).
    Tracked(u32),
    /// The flow table has no entry for this flow (for raw frames).
    NoFlow(FlowKey),
}

struct Step {
    /// Publish this first (diffed against the current state).
    publish: Option<Publish>,
    program: &'static str,
    input: Input,
    expect: Expect,
    reason: u32,
    checks: Vec<Check>,
}

impl Step {
    fn check(mut self, c: Check) -> Self {
        self.checks.push(c);
        self
    }
}

/// Traffic counters a case must have moved, for one single-backend VIP: the VIP's and its
/// backend's (which must be equal).
struct Counted {
    vip: VipIdent,
    backend: &'static str,
    packets: u64,
    bytes: u64,
    new_flows: u64,
    closes: u64,
}

struct Case {
    name: &'static str,
    steps: Vec<Step>,
    counters: Vec<Counted>,
}

fn case(name: &'static str, steps: Vec<Step>) -> Case {
    Case {
        name,
        steps,
        counters: Vec::new(),
    }
}

fn lb(spec: Spec, expect: Expect, reason: u32) -> Step {
    Step {
        publish: None,
        program: programs::BALANCER,
        input: Input::Spec(spec),
        expect,
        reason,
        checks: Vec::new(),
    }
}

/// No reason counter moves (the probe program counts nothing).
const NO_REASON: u32 = u32::MAX;

/// A health probe of `backend` of the VIP `vip` (whose port may differ from the frame's:
/// a check override); `Expect::Tx(Target::Backend(..))` is the frame forwarded there as
/// the VIP's mode says.
fn probe(spec: Spec, vip: (&'static str, u16), backend: &'static str, expect: Expect) -> Step {
    Step {
        publish: None,
        program: programs::PROBE,
        input: Input::Probe(spec, vip, backend),
        expect,
        reason: NO_REASON,
        checks: Vec::new(),
    }
}

fn raw(program: &'static str, frame: Vec<u8>, expect: Expect, reason: u32) -> Step {
    Step {
        publish: None,
        program,
        input: Input::Raw(frame),
        expect,
        reason,
        checks: Vec::new(),
    }
}

/// A balancer frame passed untouched for `reason`.
fn pass(frame: Vec<u8>, reason: u32) -> Step {
    raw(programs::BALANCER, frame, Expect::Pass, reason)
}

/// The decap program on the previous step's output.
fn decap_previous(original: Spec) -> Step {
    Step {
        publish: None,
        program: programs::DECAP,
        input: Input::Previous,
        expect: Expect::Restored(original),
        reason: reason::DECAP,
        checks: Vec::new(),
    }
}

fn with(state: Desired, step: Step) -> Step {
    Step {
        publish: Some(Publish::State(state)),
        ..step
    }
}

fn edit(flow: &Spec, e: Edit, step: Step) -> Step {
    Step {
        publish: Some(Publish::Edit(flow.key(), e)),
        ..step
    }
}

/// `frame` with the bytes at the given offsets replaced.
fn patched(mut frame: Vec<u8>, bytes: &[(usize, u8)]) -> Vec<u8> {
    for &(i, b) in bytes {
        frame[i] = b;
    }
    frame
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
            self.current
                .vips
                .iter()
                .find(|v| v.ident.address == dst && v.ident.port == p && v.ident.proto == key.proto)
        };
        find(port).or_else(|| find(0))
    }

    /// The backend the live table gives `key` (by its flow hash).
    fn table_pick(&self, v: &DesiredVip, key: &FlowKey) -> anyhow::Result<IpAddr> {
        self.slot_owner(v, flow_hash(key, SEED))
    }

    /// The backend the live table gives `key`'s source address (`source-hash`).
    fn source_pick(&self, v: &DesiredVip, key: &FlowKey) -> anyhow::Result<IpAddr> {
        self.slot_owner(v, lb_common::hash::source_hash(key, SEED))
    }

    /// The backend of the live table's slot `hash % table_size`.
    fn slot_owner(&self, v: &DesiredVip, hash: u32) -> anyhow::Result<IpAddr> {
        let table = self
            .dp
            .live_table(&v.ident)
            .ok_or_else(|| anyhow::anyhow!("no table"))?;
        let id = table[(hash % v.table_size) as usize];
        let rec = self
            .dp
            .layout()
            .vip(&v.ident)
            .ok_or_else(|| anyhow::anyhow!("no record"))?;
        rec.backends
            .iter()
            .find(|(_, r)| r.id == id)
            .map(|(a, _)| *a)
            .ok_or_else(|| anyhow::anyhow!("table slot holds unknown id {id}"))
    }

    /// The VIP and backend counters of a single-backend VIP.
    fn counters(&self, c: &Counted) -> anyhow::Result<(Counters, Counters)> {
        let rec = self
            .dp
            .layout()
            .vip(&c.vip)
            .ok_or_else(|| anyhow::anyhow!("VIP {} not published", c.vip))?;
        let b = rec
            .backends
            .get(&ip(c.backend))
            .ok_or_else(|| anyhow::anyhow!("no backend {}", c.backend))?;
        Ok((
            self.dp.vip_counters(rec.vip_id)?,
            self.dp.backend_counters(b.id)?,
        ))
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
        let outer = Encap {
            src_mac: LB_MAC,
            dst_mac: mac_of(backend),
            vlan: spec.vlan,
            src: outer_src,
            dst: backend,
            tos: spec.tos,
            flow_label: hash,
        };
        let mut f = outer.wrap(&spec.ip_packet());
        // The Ethernet padding stays behind the packet.
        f.resize(f.len() + spec.trailer, 0);
        f
    } else {
        let mac = v
            .backends
            .iter()
            .find(|b| b.address == backend)
            .and_then(|b| b.mac)
            .unwrap_or(mac_of(backend));
        spec.clone().macs(LB_MAC, mac).build()
    }
}

/// What a case ran: frames, and state checks on top.
#[derive(Default)]
struct Ran {
    frames: usize,
    checks: usize,
}

/// Run one case, counting into `ran` every frame and check that passed (also those of a
/// case that fails later).
fn run_case(w: &mut World, case: &Case, ran: &mut Ran) -> anyhow::Result<()> {
    w.dp.clear_flows()?;
    let mut assigned: HashMap<FlowKey, IpAddr> = HashMap::new();
    let mut edited: Option<(VipIdent, IpAddr)> = None;
    let mut previous: Option<Vec<u8>> = None;
    let mut counters_before = Vec::new();
    for (i, step) in case.steps.iter().enumerate() {
        let ctx = |m: String| anyhow::anyhow!("{} step {i}: {m}", case.name);
        match &step.publish {
            None => {}
            Some(Publish::State(s)) => {
                w.dp.publish(s).map_err(|e| ctx(format!("publish: {e}")))?;
                w.current = s.clone();
            }
            Some(Publish::Edit(key, e)) => {
                let ident = w
                    .vip_for(key)
                    .ok_or_else(|| ctx("edit: no VIP for this flow".into()))?
                    .ident;
                let addr = *assigned
                    .get(key)
                    .ok_or_else(|| ctx("edit: no earlier backend for this flow".into()))?;
                let mut s = w.current.clone();
                let v = s
                    .vips
                    .iter_mut()
                    .find(|v| v.ident == ident)
                    .expect("VIP of the current state");
                let at = v
                    .backends
                    .iter()
                    .position(|b| b.address == addr)
                    .ok_or_else(|| ctx("edit: not a backend".into()))?;
                match e {
                    Edit::Remove => {
                        v.backends.remove(at);
                    }
                    Edit::Down => v.backends[at].serving = false,
                    Edit::Weight(n) => v.backends[at].weight = *n,
                }
                w.dp.publish(&s).map_err(|e| ctx(format!("publish: {e}")))?;
                w.current = s;
                edited = Some((ident, addr));
            }
        }
        if i == 0 {
            counters_before = case
                .counters
                .iter()
                .map(|c| w.counters(c))
                .collect::<anyhow::Result<_>>()?;
        }
        // A probe's frame, with its backend's slot id, and the VIP it probes.
        let probe = match &step.input {
            Input::Probe(spec, (addr, port), backend) => {
                let key = spec.key();
                let v = w
                    .current
                    .vips
                    .iter()
                    .find(|v| {
                        v.ident.address == ip(addr)
                            && v.ident.port == *port
                            && v.ident.proto == key.proto
                    })
                    .ok_or_else(|| ctx(format!("no VIP {addr}:{port}")))?
                    .clone();
                let id =
                    w.dp.layout()
                        .backend_id(&v.ident, ip(backend))
                        .ok_or_else(|| ctx(format!("{backend} has no slot")))?;
                Some((spec.clone().ip_id(id), v))
            }
            _ => None,
        };
        let frame = match &step.input {
            Input::Spec(s) => s.build(),
            Input::Probe(..) => probe.as_ref().map(|(s, _)| s.build()).unwrap_or_default(),
            Input::Raw(f) => f.clone(),
            Input::Previous => previous
                .clone()
                .ok_or_else(|| ctx("no previous frame".into()))?,
        };
        let before = w.dp.reason_counts()?;
        let got =
            w.dp.run_frame(step.program, &frame, w.ifindex)
                .map_err(|e| ctx(e.to_string()))?;
        let after = w.dp.reason_counts()?;

        let spec = match &step.input {
            Input::Spec(s) => Some(s),
            _ => None,
        };
        let (action, out) = match (&step.expect, spec) {
            (Expect::Tx(Target::Backend(a)), None) if probe.is_some() => {
                let (spec, v) = probe.as_ref().expect("a probe");
                (XDP_TX, forwarded(spec, v, ip(a)))
            }
            (Expect::Pass, _) => (XDP_PASS, frame.clone()),
            (Expect::Drop, _) => (XDP_DROP, got.frame.clone()),
            (Expect::Exact(a, f), _) => (*a, f.clone()),
            (Expect::Restored(original), _) => {
                let backend = *assigned
                    .get(&original.key())
                    .ok_or_else(|| ctx("no earlier backend for this flow".into()))?;
                (
                    XDP_PASS,
                    original.clone().macs(LB_MAC, mac_of(backend)).build(),
                )
            }
            (Expect::Tx(target) | Expect::TxAs(target, _), Some(spec)) => {
                let key = spec.key();
                let v = w
                    .vip_for(&key)
                    .ok_or_else(|| ctx("no VIP for this frame".into()))?
                    .clone();
                let earlier = assigned.get(&key).copied();
                let backend = match target {
                    Target::Table => w.table_pick(&v, &key)?,
                    Target::Same => {
                        earlier.ok_or_else(|| ctx("no earlier backend for this flow".into()))?
                    }
                    Target::Moved => {
                        let now = w.table_pick(&v, &key)?;
                        let was = earlier
                            .ok_or_else(|| ctx("no earlier backend for this flow".into()))?;
                        if now == was {
                            return Err(ctx(format!(
                                "the live table still gives {was}: nothing to move"
                            )));
                        }
                        now
                    }
                    Target::Backend(a) => ip(a),
                    Target::SourceTable => w.source_pick(&v, &key)?,
                };
                assigned.insert(key, backend);
                let sent = match &step.expect {
                    Expect::TxAs(_, s) => s,
                    _ => spec,
                };
                (XDP_TX, forwarded(sent, &v, backend))
            }
            (Expect::Tx(_) | Expect::TxAs(..), None) => {
                return Err(ctx("Tx needs a Spec input".into()));
            }
            (Expect::Along(flow), _) => {
                let key = flow.key();
                let backend = *assigned
                    .get(&key)
                    .ok_or_else(|| ctx("no earlier backend for this flow".into()))?;
                let v = w
                    .vip_for(&key)
                    .ok_or_else(|| ctx("no VIP for this flow".into()))?;
                (XDP_TX, along(&frame, v, &key, backend))
            }
        };
        if got.action != action {
            return Err(ctx(format!("verdict {} instead of {action}", got.action)));
        }
        if got.frame != out {
            return Err(ctx(format!(
                "frame differs:\n  got  {}\n  want {}",
                hex(&got.frame),
                hex(&out)
            )));
        }
        let moved: Vec<(usize, u64)> = after
            .iter()
            .zip(&before)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| (i, a - b))
            .collect();
        let want: &[(usize, u64)] = if step.reason == NO_REASON {
            &[]
        } else {
            &[(step.reason as usize, 1)]
        };
        if moved != want {
            let names: Vec<String> = moved
                .iter()
                .map(|(i, d)| format!("{}+{d}", reason::NAMES[*i]))
                .collect();
            let want = reason::NAMES
                .get(step.reason as usize)
                .map_or("none".to_owned(), |n| format!("exactly {n}+1"));
            return Err(ctx(format!("counters moved {names:?}, want {want}")));
        }
        for c in &step.checks {
            check(w, spec, &assigned, edited, *c).map_err(|e| ctx(format!("{c:?}: {e}")))?;
        }
        ran.frames += 1;
        ran.checks += step.checks.len();
        previous = Some(got.frame);
    }
    for (c, (vip0, be0)) in case.counters.iter().zip(&counters_before) {
        let (vip1, be1) = w.counters(c)?;
        let want = (c.packets, c.bytes, c.new_flows, c.closes);
        for (what, a, b) in [("VIP", vip1, vip0), ("backend", be1, be0)] {
            let got = (
                a.packets - b.packets,
                a.bytes - b.bytes,
                a.new_flows - b.new_flows,
                a.closes - b.closes,
            );
            if got != want {
                anyhow::bail!(
                    "{}: {what} counters of {} / {} moved (packets, bytes, opens, closes) {got:?}, want {want:?}",
                    case.name,
                    c.vip,
                    c.backend
                );
            }
        }
        ran.checks += 2;
    }
    Ok(())
}

fn check(
    w: &World,
    spec: Option<&Spec>,
    assigned: &HashMap<FlowKey, IpAddr>,
    edited: Option<(VipIdent, IpAddr)>,
    c: Check,
) -> anyhow::Result<()> {
    if let Check::NoFlow(key) = c {
        let entry = w.dp.flow(&key);
        anyhow::ensure!(entry.is_none(), "flow entry {entry:?}, want none");
        return Ok(());
    }
    let key = spec
        .ok_or_else(|| anyhow::anyhow!("checks need a Spec input"))?
        .key();
    let v = w
        .vip_for(&key)
        .ok_or_else(|| anyhow::anyhow!("no VIP for this flow"))?;
    let entry = w.dp.flow(&key);
    match c {
        Check::Pinned => {
            let b = assigned
                .get(&key)
                .ok_or_else(|| anyhow::anyhow!("the flow was not forwarded"))?;
            let rec =
                w.dp.layout()
                    .vip(&v.ident)
                    .and_then(|r| r.backends.get(b))
                    .ok_or_else(|| anyhow::anyhow!("no slot"))?;
            let want = (rec.id, rec.generation);
            anyhow::ensure!(
                entry.map(|e| (e.backend_id, e.generation)) == Some(want),
                "flow entry {entry:?}, want (id, generation) {want:?} ({b})"
            );
        }
        Check::Tracked(state) => {
            let got = entry.map(|e| e.state);
            anyhow::ensure!(
                got == Some(state),
                "flow tracking state {got:?}, want {state} (0 open, 1 closing)"
            );
        }
        Check::Unpinned | Check::NoFlow(_) => {
            anyhow::ensure!(entry.is_none(), "flow entry {entry:?}, want none")
        }
        Check::TableMoved => {
            let b = assigned
                .get(&key)
                .ok_or_else(|| anyhow::anyhow!("the flow was not forwarded"))?;
            let now = w.table_pick(v, &key)?;
            anyhow::ensure!(
                now != *b,
                "the live table gives {now} too: the check proves nothing, pick another flow"
            );
        }
        Check::AvoidsEdited => {
            let (_, addr) = edited.ok_or_else(|| anyhow::anyhow!("no backend was edited"))?;
            let b = assigned
                .get(&key)
                .ok_or_else(|| anyhow::anyhow!("the flow was not forwarded"))?;
            anyhow::ensure!(*b != addr, "sent to {addr}");
        }
        Check::EditedOutOfTable => {
            let (ident, addr) = edited.ok_or_else(|| anyhow::anyhow!("no backend was edited"))?;
            let id =
                w.dp.layout()
                    .backend_id(&ident, addr)
                    .ok_or_else(|| anyhow::anyhow!("{addr} has no slot"))?;
            let table =
                w.dp.live_table(&ident)
                    .ok_or_else(|| anyhow::anyhow!("no table"))?;
            let n = table.iter().filter(|x| **x == id).count();
            anyhow::ensure!(
                n == 0,
                "{addr} (id {id}) still holds {n} slots of the live table"
            );
        }
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn base() -> Desired {
    let [a, b, c, d] = BACKENDS4;
    let [a6, b6, c6, d6] = BACKENDS6;
    state(vec![
        vip(VIP4, 80, PROTO_TCP, MODE_DSR, &even(&[a, b, c])),
        vip(VIP4, 53, PROTO_UDP, MODE_DSR, &even(&[a, b])),
        vip(VIP4, 443, PROTO_TCP, MODE_IPIP, &even(&[a, b, c])),
        vip(VIP4, 4789, PROTO_UDP, MODE_IPIP, &even(&[b, c, d])),
        vip(VIP6, 80, PROTO_TCP, MODE_DSR, &even(&[a6, b6])),
        vip(VIP6, 443, PROTO_TCP, MODE_IPIP, &even(&[a6, b6])),
        vip(VIP6, 53, PROTO_UDP, MODE_DSR, &even(&[a6, b6, c6])),
        vip(VIP6, 4789, PROTO_UDP, MODE_IPIP, &even(&[b6, c6, d6])),
    ])
}

fn syn4(sport: u16, dport: u16) -> Spec {
    Spec::tcp(CLIENT4, sport, VIP4, dport, SYN)
}

fn ack4(sport: u16, dport: u16) -> Spec {
    Spec::tcp(CLIENT4, sport, VIP4, dport, ACK)
}

fn syn6(sport: u16, dport: u16) -> Spec {
    Spec::tcp(CLIENT6, sport, VIP6, dport, SYN)
}

fn ack6(sport: u16, dport: u16) -> Spec {
    Spec::tcp(CLIENT6, sport, VIP6, dport, ACK)
}

/// Forwarded to the live table's pick, counted `FWD_TX`.
fn to_table(spec: Spec) -> Step {
    lb(spec, Expect::Tx(Target::Table), reason::FWD_TX)
}

/// Forwarded to the backend an earlier step gave the flow.
fn to_same(spec: Spec) -> Step {
    lb(spec, Expect::Tx(Target::Same), reason::FWD_TX)
}

/// A TCP SYN to `VIP4` whose IP packet is exactly `len` bytes.
fn syn4_sized(sport: u16, dport: u16, len: usize) -> Spec {
    syn4(sport, dport).payload(vec![0x5a; len - 40])
}

/// A TCP SYN to `VIP6` whose IP packet (fixed header included) is exactly `len` bytes.
fn syn6_sized(sport: u16, dport: u16, len: usize) -> Spec {
    syn6(sport, dport).payload(vec![0x5a; len - 60])
}

/// IPv4 options of `words` 32-bit words: NOPs closed by an end-of-list.
fn nops(words: usize) -> Vec<u8> {
    let mut o = vec![1u8; words * 4];
    if let Some(last) = o.last_mut() {
        *last = 0;
    }
    o
}

fn cases() -> Vec<Case> {
    [
        forwarding(),
        any_port(),
        vlans(),
        ipv4_options(),
        not_for_us(),
        truncation(),
        malformed(),
        flows(),
        reachability(),
        decap(),
        counters(),
        tracking(),
        schedulers(),
        probes(),
        mtu(),
        icmp_errors(),
        validity(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// TCP and UDP, both families, both modes.
fn forwarding() -> Vec<Case> {
    vec![
        case(
            "dsr v4 tcp: syn, ack and fin stay on one backend (configured MAC)",
            vec![
                with(base(), to_table(syn4(40000, 80))),
                to_same(ack4(40000, 80)),
                to_same(Spec::tcp(CLIENT4, 40000, VIP4, 80, ACK | FIN)),
            ],
        ),
        case(
            "dsr v6 tcp: syn and ack via the fib",
            vec![to_table(syn6(40001, 80)), to_same(ack6(40001, 80))],
        ),
        case(
            "ipip v4 tcp: syn and ack, tos copied outside",
            vec![
                to_table(syn4(40002, 443).tos(0xb8)),
                to_same(ack4(40002, 443).tos(0xb8)),
            ],
        ),
        case(
            "ipip v6 tcp: syn and ack, traffic class copied outside",
            vec![
                to_table(syn6(40003, 443).tos(0x28)),
                to_same(ack6(40003, 443).tos(0x28)),
            ],
        ),
        case(
            "udp v4 dsr: a datagram flow sticks",
            vec![
                to_table(Spec::udp(CLIENT4, 5353, VIP4, 53)),
                to_same(Spec::udp(CLIENT4, 5353, VIP4, 53)),
            ],
        ),
        case(
            "udp v6 dsr via the fib",
            vec![
                to_table(Spec::udp(CLIENT6, 5353, VIP6, 53)),
                to_same(Spec::udp(CLIENT6, 5353, VIP6, 53)),
            ],
        ),
        case(
            "udp v4 ipip",
            vec![
                to_table(Spec::udp(CLIENT4, 40010, VIP4, 4789).tos(0x02)),
                to_same(Spec::udp(CLIENT4, 40010, VIP4, 4789).tos(0x02)),
            ],
        ),
        case(
            "udp v6 ipip",
            vec![
                to_table(Spec::udp(CLIENT6, 40011, VIP6, 4789)),
                to_same(Spec::udp(CLIENT6, 40011, VIP6, 4789)),
            ],
        ),
        case(
            "dsr v4 via the fib when no MAC is configured",
            vec![with(
                base_with(with_mac(
                    vip(VIP4, 80, PROTO_TCP, MODE_DSR, &even(&BACKENDS4[..3])),
                    None,
                )),
                to_table(syn4(40012, 80)),
            )],
        ),
        case(
            "dsr v4 with a configured MAC uses it, not the neighbour table",
            {
                let mac = [0x02, 0xee, 0, 0, 0, 0x01];
                let one = |b: &str| {
                    base_with(with_mac(
                        vip(VIP4, 80, PROTO_TCP, MODE_DSR, &[(b, 1)]),
                        Some(mac),
                    ))
                };
                vec![
                    with(
                        one(BACKENDS4[0]),
                        lb(
                            syn4(40013, 80),
                            Expect::Exact(XDP_TX, syn4(40013, 80).macs(LB_MAC, mac).build()),
                            reason::FWD_TX,
                        ),
                    ),
                    // Not even a route is needed.
                    with(
                        one(UNROUTED4),
                        lb(
                            syn4(40014, 80),
                            Expect::Exact(XDP_TX, syn4(40014, 80).macs(LB_MAC, mac).build()),
                            reason::FWD_TX,
                        ),
                    ),
                ]
            },
        ),
        case(
            "short frames: ethernet padding behind the ip packet is carried along",
            vec![
                to_table(syn4(45002, 80).payload(Vec::new()).pad_to(60)),
                to_table(syn4(45003, 443).payload(Vec::new()).pad_to(60)),
                to_table(
                    Spec::udp(CLIENT4, 45004, VIP4, 53)
                        .payload(Vec::new())
                        .pad_to(60),
                ),
                to_table(
                    Spec::udp(CLIENT4, 45005, VIP4, 4789)
                        .payload(b"x".to_vec())
                        .pad_to(60),
                ),
            ],
        ),
        case(
            "vip without backends drops",
            vec![with(
                state(vec![vip(VIP4, 80, PROTO_TCP, MODE_DSR, &[])]),
                lb(syn4(40007, 80), Expect::Drop, reason::DROP_NO_BACKEND),
            )],
        ),
    ]
}

/// Port-0 VIPs take every port of their address; an exact-port VIP on the same address
/// wins for its port.
fn any_port() -> Vec<Case> {
    let [a, b, c, d] = BACKENDS4;
    let all = || {
        base_plus(vec![
            vip(ANY4, 0, PROTO_TCP, MODE_DSR, &even(&[a, b, c])),
            vip(ANY4, 8080, PROTO_TCP, MODE_IPIP, &[(d, 1)]),
            vip(ANY6, 0, PROTO_TCP, MODE_IPIP, &even(&BACKENDS6[..2])),
        ])
    };
    let to = |port: u16| Spec::tcp(CLIENT4, 41000 + port % 1000, ANY4, port, SYN);
    vec![case(
        "port-0 vip takes every port; an exact port wins",
        vec![
            with(all(), to_table(to(1))),
            to_table(to(22)),
            to_table(to(8081)),
            to_table(to(65535)),
            // The exact VIP (IPIP, one backend) wins over the all-ports one (DSR).
            lb(to(8080), Expect::Tx(Target::Backend(d)), reason::FWD_TX),
            // The all-ports VIP is TCP only.
            lb(
                Spec::udp(CLIENT4, 41001, ANY4, 8080),
                Expect::Pass,
                reason::PASS_NOT_VIP,
            ),
            to_table(Spec::tcp(CLIENT6, 41002, ANY6, 9999, SYN)),
            // Without the exact VIP, its port falls back to the all-ports one.
            with(
                {
                    let mut s = all();
                    s.vips.retain(|v| v.ident.port != 8080);
                    s
                },
                to_table(Spec::tcp(CLIENT4, 41003, ANY4, 8080, SYN)),
            ),
        ],
    )]
}

/// 802.1Q: one tag is kept (DSR: only the MACs change; IPIP: in front of the outer header);
/// stacked tags are passed.
fn vlans() -> Vec<Case> {
    let stacked = |outer: Tag, inner: Tag| {
        frames::l2(
            frames::CLIENT_MAC,
            LB_MAC,
            &[outer, inner],
            EtherType::IPV4,
            &syn4(42000, 80).ip_packet(),
        )
    };
    vec![
        case(
            "vlan: dsr v4 keeps the tag",
            vec![
                to_table(syn4(42001, 80).vlan(0xa00c)),
                to_same(ack4(42001, 80).vlan(0xa00c)),
            ],
        ),
        case(
            "vlan: dsr v6 (fib) keeps the tag",
            vec![to_table(syn6(42002, 80).vlan(12))],
        ),
        case(
            "vlan: ipip v4 puts the tag in front of the outer header",
            vec![
                to_table(syn4(42003, 443).vlan(0xa00c)),
                to_same(ack4(42003, 443).vlan(0xa00c)),
            ],
        ),
        case(
            "vlan: ipip v6 puts the tag in front of the outer header",
            vec![to_table(syn6(42004, 443).vlan(4094))],
        ),
        case(
            "vlan: udp v4 ipip tagged",
            vec![to_table(Spec::udp(CLIENT4, 42005, VIP4, 4789).vlan(7))],
        ),
        case(
            "vlan: a single 802.1ad tag is kept as it is",
            vec![
                to_table(syn4(42006, 80).tag(Tag::s(100))),
                // Regression: IPIP once rewrote the tag's TPID to 0x8100; the 802.1ad tag
                // must come out as it went in (DSR, above, only touches MACs).
                to_table(syn4(42007, 443).tag(Tag::s(100))),
            ],
        ),
        case(
            "vlan: stacked tags are passed",
            vec![
                pass(stacked(Tag::s(100), Tag::c(200)), reason::PASS_VLAN_STACKED),
                pass(stacked(Tag::c(100), Tag::c(200)), reason::PASS_VLAN_STACKED),
                pass(stacked(Tag::s(100), Tag::s(200)), reason::PASS_VLAN_STACKED),
                pass(stacked(Tag::c(100), Tag::s(200)), reason::PASS_VLAN_STACKED),
            ],
        ),
        case(
            "vlan: a tagged arp is not ip",
            vec![pass(
                frames::arp_request(CLIENT4, VIP4, &[Tag::c(12)]),
                reason::PASS_NOT_IP,
            )],
        ),
    ]
}

/// IPv4 options (IHL 6..15): carried, never stripped.
fn ipv4_options() -> Vec<Case> {
    let cut = |n: usize| {
        pass(
            syn4(43000, 80).options(&nops(10)).build()[..n].to_vec(),
            reason::PASS_TRUNCATED,
        )
    };
    vec![
        case(
            "ipv4 options: dsr forwards them unchanged",
            vec![
                to_table(syn4(43001, 80).options(&nops(1))),
                to_table(syn4(43002, 80).options(&nops(5))),
                to_table(syn4(43003, 80).options(&nops(10))),
                // A real option: record route with room for 2 addresses.
                to_table(syn4(43004, 80).options(&[7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            ],
        ),
        case(
            "ipv4 options: ipip carries them inside",
            vec![
                to_table(syn4(43005, 443).options(&nops(1))),
                to_table(syn4(43006, 443).options(&nops(10))),
            ],
        ),
        // IHL 15 (60-byte header) cut inside its options, and right after them.
        case(
            "ipv4 options truncated",
            vec![cut(14 + 21), cut(14 + 40), cut(14 + 59), cut(14 + 60)],
        ),
    ]
}

/// Traffic that is not for a VIP, or not TCP/UDP: passed untouched.
fn not_for_us() -> Vec<Case> {
    let ext = |next: IpNumber, header: &[u8]| {
        let mut payload = header.to_vec();
        payload.extend(syn6(44000, 80).l4_segment());
        pass(
            frames::frame(&frames::ipv6_packet(CLIENT6, VIP6, next, &payload)),
            reason::PASS_IPV6_EXT,
        )
    };
    let opts = |next: IpNumber| {
        Ipv6RawExtHeader::new_raw(next, &[1, 4, 0, 0, 0, 0])
            .expect("ext")
            .to_bytes()
            .to_vec()
    };
    vec![
        case(
            "not for a VIP",
            vec![
                lb(
                    Spec::tcp(CLIENT4, 1, "10.99.0.11", 80, SYN),
                    Expect::Pass,
                    reason::PASS_NOT_VIP,
                ),
                lb(syn4(40004, 81), Expect::Pass, reason::PASS_NOT_VIP),
                lb(
                    Spec::udp(CLIENT4, 1, VIP4, 80),
                    Expect::Pass,
                    reason::PASS_NOT_VIP,
                ),
                lb(
                    Spec::tcp(CLIENT6, 1, "fd99::11", 80, SYN),
                    Expect::Pass,
                    reason::PASS_NOT_VIP,
                ),
                lb(syn6(40004, 81), Expect::Pass, reason::PASS_NOT_VIP),
                lb(
                    Spec::udp(CLIENT6, 1, VIP6, 80),
                    Expect::Pass,
                    reason::PASS_NOT_VIP,
                ),
                // TCP to a UDP-only port.
                lb(
                    Spec::tcp(CLIENT4, 1, VIP4, 53, SYN),
                    Expect::Pass,
                    reason::PASS_NOT_VIP,
                ),
            ],
        ),
        case(
            "not ip",
            vec![
                pass(frames::arp_request(CLIENT4, VIP4, &[]), reason::PASS_NOT_IP),
                // LLDP.
                pass(
                    frames::l2(
                        frames::CLIENT_MAC,
                        [0x01, 0x80, 0xc2, 0, 0, 0x0e],
                        &[],
                        EtherType(0x88cc),
                        &[0; 46],
                    ),
                    reason::PASS_NOT_IP,
                ),
            ],
        ),
        case(
            "other l4 protocols",
            vec![
                pass(frames::icmp4_echo(CLIENT4, VIP4), reason::PASS_OTHER_L4),
                pass(
                    frames::icmp6(
                        CLIENT6,
                        VIP6,
                        Icmpv6Type::EchoRequest(IcmpEchoHeader { id: 7, seq: 1 }),
                        b"ping",
                    ),
                    reason::PASS_OTHER_L4,
                ),
                // Neighbour solicitation for the VIP, to its solicited-node group.
                pass(
                    frames::icmp6(
                        CLIENT6,
                        "ff02::1:ff00:10",
                        Icmpv6Type::NeighborSolicitation,
                        &"fd99::10"
                            .parse::<std::net::Ipv6Addr>()
                            .expect("v6")
                            .octets(),
                    ),
                    reason::PASS_OTHER_L4,
                ),
                pass(
                    frames::frame(&frames::ipv4_packet(CLIENT4, VIP4, IpNumber::GRE, &[0; 8])),
                    reason::PASS_OTHER_L4,
                ),
                pass(
                    frames::frame(&frames::ipv6_packet(
                        CLIENT6,
                        VIP6,
                        IpNumber::SCTP,
                        &[0; 16],
                    )),
                    reason::PASS_OTHER_L4,
                ),
                pass(
                    frames::frame(&frames::ipv6_packet(
                        CLIENT6,
                        VIP6,
                        IpNumber::IPV6_NO_NEXT_HEADER,
                        &[],
                    )),
                    reason::PASS_OTHER_L4,
                ),
            ],
        ),
        case(
            "ipv4 fragments",
            vec![
                lb(
                    syn4(44001, 80).fragment(true, 0),
                    Expect::Pass,
                    reason::PASS_FRAGMENT,
                ),
                lb(
                    syn4(44002, 80).fragment(false, 185),
                    Expect::Pass,
                    reason::PASS_FRAGMENT,
                ),
                lb(
                    syn4(44003, 80).fragment(true, 185),
                    Expect::Pass,
                    reason::PASS_FRAGMENT,
                ),
                lb(
                    Spec::udp(CLIENT4, 44004, VIP4, 53).fragment(true, 0),
                    Expect::Pass,
                    reason::PASS_FRAGMENT,
                ),
            ],
        ),
        case(
            "ipv6 extension headers",
            vec![
                ext(IpNumber::IPV6_HEADER_HOP_BY_HOP, &opts(IpNumber::TCP)),
                ext(
                    IpNumber::IPV6_ROUTE_HEADER,
                    &Ipv6RawExtHeader::new_raw(IpNumber::TCP, &[0; 6])
                        .expect("ext")
                        .to_bytes(),
                ),
                ext(
                    IpNumber::IPV6_FRAGMENTATION_HEADER,
                    &Ipv6FragmentHeader::new(IpNumber::TCP, IpFragOffset::ZERO, false, 0x1234)
                        .to_bytes(),
                ),
                ext(IpNumber::IPV6_DESTINATION_OPTIONS, &opts(IpNumber::TCP)),
                ext(
                    IpNumber::AUTHENTICATION_HEADER,
                    &IpAuthHeader::new(IpNumber::TCP, 0x100, 1, &[0; 4])
                        .expect("ah")
                        .to_bytes(),
                ),
                ext(
                    IpNumber::ENCAPSULATING_SECURITY_PAYLOAD,
                    &[0, 0, 1, 0, 0, 0, 0, 1],
                ),
            ],
        ),
    ]
}

/// Cut at every byte from the end of the Ethernet header to the end of the L4 header.
fn sweep(frame: Vec<u8>, to: usize) -> Vec<Step> {
    (14..to)
        .map(|n| pass(frame[..n].to_vec(), reason::PASS_TRUNCATED))
        .collect()
}

fn truncation() -> Vec<Case> {
    vec![
        case("truncated v4 tcp", sweep(syn4(1, 80).build(), 14 + 20 + 20)),
        case("truncated v6 tcp", sweep(syn6(1, 80).build(), 14 + 40 + 20)),
        case(
            "truncated v4 udp",
            sweep(Spec::udp(CLIENT4, 1, VIP4, 53).build(), 14 + 20 + 8),
        ),
        case(
            "truncated vlan v4 tcp",
            sweep(syn4(1, 80).vlan(12).build(), 18 + 20 + 20),
        ),
    ]
}

fn malformed() -> Vec<Case> {
    let v4 = || syn4(45000, 80).build();
    let v6 = || syn6(45000, 80).build();
    let bad = |f: Vec<u8>| pass(f, reason::PASS_MALFORMED);
    let tot_len = |f: Vec<u8>, n: u16| patched(f, &[(16, (n >> 8) as u8), (17, n as u8)]);
    let mut ihl: Vec<Step> = (0..5)
        .map(|n| bad(patched(v4(), &[(14, 0x40 | n)])))
        .collect();
    ihl.insert(0, bad(patched(v4(), &[(14, 0x65)])));
    ihl.insert(1, bad(patched(v4(), &[(14, 0x05)])));
    vec![
        case("malformed ipv4: version other than 4, ihl below 5", ihl),
        case(
            "malformed ipv4: total length",
            vec![
                bad(tot_len(v4(), 19)),
                // IHL 6: 24-byte header, total length 20.
                bad(tot_len(syn4(45001, 80).options(&nops(1)).build(), 20)),
                {
                    let f = v4();
                    let n = (f.len() - 14 + 1) as u16;
                    pass(tot_len(f, n), reason::PASS_TRUNCATED)
                },
            ],
        ),
        // For a VIP: dropped, as every header the kernel would discard (see `validity`).
        case(
            "malformed tcp: data offset below 5",
            (0..5u8)
                .map(|d| {
                    drop_invalid(
                        patched(v4(), &[(14 + 20 + 12, d << 4)]),
                        reason::DROP_TCP_DOFF,
                    )
                })
                .chain([drop_invalid(
                    patched(v6(), &[(14 + 40 + 12, 4 << 4)]),
                    reason::DROP_TCP_DOFF,
                )])
                .collect(),
        ),
        // Regression: the TCP/UDP header must lie inside the IP packet (IPv4 total length,
        // IPv6 payload length), not merely inside the frame. Here the IP packet ends 1 byte
        // before the end of its L4 header and Ethernet padding supplies the rest: taking
        // ports from the padding would pin a flow on garbage.
        case(
            "l4 header beyond the ip packet's length (inside the padding)",
            {
                let short4 = |s: Spec, l4: u16| {
                    pass(
                        tot_len(s.payload(Vec::new()).pad_to(60).build(), 20 + l4),
                        reason::PASS_TRUNCATED,
                    )
                };
                vec![
                    short4(syn4(45006, 80), 19),
                    short4(Spec::udp(CLIENT4, 45007, VIP4, 53), 7),
                    pass(
                        patched(
                            syn6(45008, 80).payload(Vec::new()).build(),
                            &[(18, 0), (19, 19)],
                        ),
                        reason::PASS_TRUNCATED,
                    ),
                ]
            },
        ),
        case(
            "malformed ipv6: version other than 6",
            vec![
                bad(patched(v6(), &[(14, 0x40)])),
                bad(patched(v6(), &[(14, 0x00)])),
                // An IPv4 packet behind the IPv6 ethertype.
                bad(patched(v4(), &[(12, 0x86), (13, 0xdd)])),
            ],
        ),
    ]
}

/// The flow table: a flow keeps its backend while that backend serves.
fn flows() -> Vec<Case> {
    let [a, b, c, d] = BACKENDS4;
    let [a6, b6, c6, _] = BACKENDS6;
    vec![
        case(
            "backend added: an established dsr v4 flow stays",
            vec![
                with(base(), to_table(syn4(40006, 80))),
                with(
                    base_with(vip(
                        VIP4,
                        80,
                        PROTO_TCP,
                        MODE_DSR,
                        &[(a, 1), (b, 1), (c, 1), (d, 100)],
                    )),
                    to_same(ack4(40006, 80)),
                )
                .check(Check::TableMoved)
                .check(Check::Pinned),
            ],
        ),
        case(
            "backend added: an established ipip v4 flow stays",
            vec![
                to_table(syn4(46000, 443)),
                with(
                    base_with(vip(
                        VIP4,
                        443,
                        PROTO_TCP,
                        MODE_IPIP,
                        &[(a, 1), (b, 1), (c, 1), (d, 100)],
                    )),
                    to_same(ack4(46000, 443)),
                )
                .check(Check::TableMoved),
            ],
        ),
        case(
            "backend added: an established ipip v6 flow stays",
            vec![
                to_table(syn6(46001, 443)),
                with(
                    base_with(vip(
                        VIP6,
                        443,
                        PROTO_TCP,
                        MODE_IPIP,
                        &[(a6, 1), (b6, 1), (c6, 100)],
                    )),
                    to_same(ack6(46001, 443)),
                )
                .check(Check::TableMoved),
            ],
        ),
        case(
            "backend removed: its flow moves to the new table's pick and sticks there",
            vec![
                to_table(syn4(46002, 80)).check(Check::Pinned),
                edit(
                    &syn4(46002, 80),
                    Edit::Remove,
                    lb(ack4(46002, 80), Expect::Tx(Target::Moved), reason::FWD_TX),
                ),
                to_same(ack4(46002, 80)).check(Check::Pinned),
            ],
        ),
        case(
            "backend removed: ipip v6 flow moves",
            vec![
                to_table(syn6(46003, 443)),
                edit(
                    &syn6(46003, 443),
                    Edit::Remove,
                    lb(ack6(46003, 443), Expect::Tx(Target::Moved), reason::FWD_TX),
                ),
            ],
        ),
        case(
            "backend down: its flow moves, no new flow picks it",
            vec![
                to_table(syn4(46004, 80)),
                edit(
                    &syn4(46004, 80),
                    Edit::Down,
                    lb(ack4(46004, 80), Expect::Tx(Target::Moved), reason::FWD_TX),
                )
                .check(Check::EditedOutOfTable)
                .check(Check::Pinned),
                to_same(ack4(46004, 80)),
            ],
        ),
        case(
            "backend weight 0: its flow continues, no new flow picks it",
            {
                let mut steps = vec![
                    to_table(syn4(46005, 80)),
                    edit(&syn4(46005, 80), Edit::Weight(0), to_same(ack4(46005, 80)))
                        .check(Check::EditedOutOfTable)
                        .check(Check::Pinned),
                ];
                steps.extend(
                    (0..10).map(|i| to_table(syn4(46100 + i, 80)).check(Check::AvoidsEdited)),
                );
                steps
            },
        ),
        case("every backend down: new and established flows drop", {
            let down = {
                let mut v = vip(VIP4, 80, PROTO_TCP, MODE_DSR, &even(&[a, b, c]));
                v.backends.iter_mut().for_each(|b| b.serving = false);
                base_with(v)
            };
            vec![
                to_table(syn4(46006, 80)),
                with(
                    down,
                    lb(ack4(46006, 80), Expect::Drop, reason::DROP_NO_BACKEND),
                ),
                lb(syn4(46007, 80), Expect::Drop, reason::DROP_NO_BACKEND),
            ]
        }),
        case(
            "rst opens no flow; a syn does; an rst on a flow follows it",
            vec![
                lb(
                    Spec::tcp(CLIENT4, 40005, VIP4, 80, RST),
                    Expect::Tx(Target::Table),
                    reason::FWD_TX,
                )
                .check(Check::Unpinned),
                lb(
                    Spec::tcp(CLIENT6, 40005, VIP6, 443, RST | ACK),
                    Expect::Tx(Target::Table),
                    reason::FWD_TX,
                )
                .check(Check::Unpinned),
                to_table(syn4(40005, 80)).check(Check::Pinned),
                to_same(Spec::tcp(CLIENT4, 40005, VIP4, 80, RST)).check(Check::Pinned),
            ],
        ),
    ]
}

/// Where IPIP and the FIB cannot deliver: dropped, with the reason.
fn reachability() -> Vec<Case> {
    // The base state with the TCP VIP `addr:port` sending to `backend` only.
    let only = |addr: &str, port: u16, mode: u8, backend: &str| {
        base_with(vip(addr, port, PROTO_TCP, mode, &[(backend, 1)]))
    };
    vec![
        case(
            "ipip to a backend without a route drops",
            vec![
                with(
                    only(VIP4, 443, MODE_IPIP, UNROUTED4),
                    lb(syn4(47000, 443), Expect::Drop, reason::DROP_NO_ROUTE),
                ),
                with(
                    only(VIP6, 443, MODE_IPIP, UNROUTED6),
                    lb(syn6(47000, 443), Expect::Drop, reason::DROP_NO_ROUTE),
                ),
            ],
        ),
        case(
            "dsr via the fib to a backend without a route drops",
            vec![with(
                only(VIP6, 80, MODE_DSR, UNROUTED6),
                lb(syn6(47001, 80), Expect::Drop, reason::DROP_NO_ROUTE),
            )],
        ),
        case(
            "a backend without a neighbour entry drops (ipip, dsr via the fib)",
            vec![
                with(
                    only(VIP4, 443, MODE_IPIP, NO_NEIGH4),
                    lb(syn4(47002, 443), Expect::Drop, reason::DROP_NO_NEIGH),
                ),
                with(
                    only(VIP6, 443, MODE_IPIP, NO_NEIGH6),
                    lb(syn6(47002, 443), Expect::Drop, reason::DROP_NO_NEIGH),
                ),
                with(
                    only(VIP6, 80, MODE_DSR, NO_NEIGH6),
                    lb(syn6(47003, 80), Expect::Drop, reason::DROP_NO_NEIGH),
                ),
            ],
        ),
        case(
            "ipip above the mtu answers icmp too-big; exactly the mtu forwards",
            vec![
                // An answered first packet opens no flow.
                too_big(syn4_sized(47004, 443, 1490)).check(Check::Unpinned),
                to_table(syn4_sized(47005, 443, 1480)),
                too_big(syn6_sized(47006, 443, 1461)).check(Check::Unpinned),
                to_table(syn6_sized(47007, 443, 1460)),
            ],
        ),
    ]
}

/// The backend-side decap program.
fn decap() -> Vec<Case> {
    let v4 = syn4(48000, 443);
    let v6 = syn6(48000, 443);
    let (src4, src6) = (ip("172.16.1.2"), ip("fd00:5c::1:2"));
    let (dst4, dst6) = (ip(BACKENDS4[0]), ip(BACKENDS6[0]));
    let enc = |vlan: Option<Tag>, src: IpAddr, dst: IpAddr, inner: &[u8]| {
        let outer = Encap {
            src_mac: PEER_MAC,
            dst_mac: LB_MAC,
            vlan,
            src,
            dst,
            tos: 0,
            flow_label: 0x12345,
        };
        outer.wrap(inner)
    };
    let restored = |s: &Spec| s.clone().macs(PEER_MAC, LB_MAC).build();
    let ok = |frame: Vec<u8>, want: Vec<u8>| {
        raw(
            programs::DECAP,
            frame,
            Expect::Exact(XDP_PASS, want),
            reason::DECAP,
        )
    };
    let untouched = |frame: Vec<u8>, reason: u32| raw(programs::DECAP, frame, Expect::Pass, reason);
    let outer_opts = {
        // An outer IPv4 header with options (IHL 7).
        let inner = v4.ip_packet();
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src4, dst4) else {
            unreachable!()
        };
        let mut h = Ipv4Header::new(
            inner.len() as u16,
            64,
            IpNumber::IPV4,
            s.octets(),
            d.octets(),
        )
        .expect("outer");
        h.options = Ipv4Options::try_from(&nops(2)[..]).expect("options");
        h.total_len = (h.header_len() + inner.len()) as u16;
        let mut p = Vec::new();
        h.write(&mut p).expect("outer");
        p.extend(inner);
        frames::l2(PEER_MAC, LB_MAC, &[], EtherType::IPV4, &p)
    };
    let outer_frag = |more: bool, offset: u16| {
        let mut f = enc(None, src4, dst4, &v4.ip_packet());
        frames::edit_ipv4(&mut f, 14, |h| {
            h.more_fragments = more;
            h.fragment_offset = IpFragOffset::try_new(offset).expect("offset");
        });
        untouched(f, reason::PASS_FRAGMENT)
    };
    vec![
        case(
            "decap restores the inner packet",
            vec![
                with(
                    base(),
                    ok(enc(None, src4, dst4, &v4.ip_packet()), restored(&v4)),
                ),
                ok(enc(None, src6, dst6, &v6.ip_packet()), restored(&v6)),
                ok(enc(None, src4, dst4, &v6.ip_packet()), restored(&v6)),
                ok(enc(None, src6, dst6, &v4.ip_packet()), restored(&v4)),
                ok(outer_opts, restored(&v4)),
                ok(
                    enc(None, src4, dst4, &v4.clone().options(&nops(3)).ip_packet()),
                    restored(&v4.clone().options(&nops(3))),
                ),
            ],
        ),
        case(
            "decap keeps the vlan tag",
            vec![
                ok(
                    enc(Some(Tag::c(0xa00c)), src4, dst4, &v4.ip_packet()),
                    restored(&v4.clone().vlan(0xa00c)),
                ),
                ok(
                    enc(Some(Tag::c(12)), src6, dst6, &v6.ip_packet()),
                    restored(&v6.clone().vlan(12)),
                ),
                // Regression: the 802.1ad TPID 0x88a8 once came back as 0x8100.
                ok(
                    enc(Some(Tag::s(12)), src4, dst4, &v4.ip_packet()),
                    restored(&v4.clone().tag(Tag::s(12))),
                ),
            ],
        ),
        case(
            "decap passes what it cannot unwrap, untouched",
            vec![
                untouched(syn4(1, 80).build(), reason::PASS_NOT_ENCAP),
                untouched(syn6(1, 80).build(), reason::PASS_NOT_ENCAP),
                untouched(frames::arp_request(CLIENT4, VIP4, &[]), reason::PASS_NOT_IP),
                untouched(
                    enc(None, src4, dst4, &v4.ip_packet()[..19]),
                    reason::PASS_TRUNCATED,
                ),
                untouched(
                    enc(None, src6, dst6, &v4.ip_packet()[..19]),
                    reason::PASS_TRUNCATED,
                ),
                untouched(
                    enc(None, src4, dst4, &v4.ip_packet())[..14 + 10].to_vec(),
                    reason::PASS_TRUNCATED,
                ),
                outer_frag(true, 0),
                outer_frag(false, 10),
                raw(
                    programs::DECAP,
                    patched(enc(None, src4, dst4, &v4.ip_packet()), &[(14, 0x44)]),
                    Expect::Pass,
                    reason::PASS_MALFORMED,
                ),
                raw(
                    programs::DECAP,
                    patched(enc(None, src4, dst4, &v4.ip_packet()), &[(14, 0x65)]),
                    Expect::Pass,
                    reason::PASS_MALFORMED,
                ),
            ],
        ),
        // Regression: the inner header must be whole for its own family; an inner IPv6
        // header cut short (30 of its 40 bytes under IPv6, 39 under IPv4) is not ours to
        // unwrap and passes untouched.
        case(
            "decap passes an inner ipv6 header cut short",
            vec![
                untouched(
                    enc(None, src6, dst6, &v6.ip_packet()[..30]),
                    reason::PASS_TRUNCATED,
                ),
                untouched(
                    enc(None, src4, dst4, &v6.ip_packet()[..39]),
                    reason::PASS_TRUNCATED,
                ),
            ],
        ),
        case(
            "balancer ipip output through decap gives the client's packet back",
            vec![
                to_table(syn4(48001, 443).tos(0x10)),
                decap_previous(syn4(48001, 443).tos(0x10)),
                to_table(syn6(48002, 443)),
                decap_previous(syn6(48002, 443)),
                to_table(syn4(48003, 443).vlan(12).options(&nops(2))),
                decap_previous(syn4(48003, 443).vlan(12).options(&nops(2))),
                to_table(Spec::udp(CLIENT6, 48004, VIP6, 4789).vlan(13)),
                decap_previous(Spec::udp(CLIENT6, 48004, VIP6, 4789).vlan(13)),
            ],
        ),
    ]
}

/// Per-VIP and per-backend counters: forwarded packets, their bytes (whole frames as
/// received), new flows; nothing for packets passed or dropped.
fn counters() -> Vec<Case> {
    let tcp4 = VipIdent {
        address: ip(CNT4),
        port: 80,
        proto: PROTO_TCP,
    };
    let udp4 = VipIdent {
        address: ip(CNT4),
        port: 53,
        proto: PROTO_UDP,
    };
    let tcp6 = VipIdent {
        address: ip(CNT6),
        port: 443,
        proto: PROTO_TCP,
    };
    let s = state(vec![
        vip(CNT4, 80, PROTO_TCP, MODE_DSR, &[(BACKENDS4[0], 1)]),
        vip(CNT4, 53, PROTO_UDP, MODE_IPIP, &[(BACKENDS4[1], 1)]),
        vip(CNT6, 443, PROTO_TCP, MODE_IPIP, &[(BACKENDS6[2], 1)]),
    ]);
    let syn = Spec::tcp(CLIENT4, 49000, CNT4, 80, SYN);
    let data = Spec::tcp(CLIENT4, 49000, CNT4, 80, ACK).payload(vec![7; 300]);
    let rst = Spec::tcp(CLIENT4, 49001, CNT4, 80, RST);
    let dns = Spec::udp(CLIENT4, 49002, CNT4, 53).vlan(5);
    let syn6 = Spec::tcp(CLIENT6, 49003, CNT6, 443, SYN);
    let big6 = Spec::tcp(CLIENT6, 49004, CNT6, 443, SYN).payload(vec![0; 1500]);
    let len = |s: &Spec| s.build().len() as u64;
    let one = |b: &'static str| {
        move |s: &Spec| lb(s.clone(), Expect::Tx(Target::Backend(b)), reason::FWD_TX)
    };
    let (to_a, to_b, to_c6) = (one(BACKENDS4[0]), one(BACKENDS4[1]), one(BACKENDS6[2]));
    vec![Case {
        name: "counters: per vip and per backend, forwarded packets only",
        steps: vec![
            with(s, to_a(&syn)),
            to_a(&data),
            to_a(&rst),
            to_b(&dns),
            to_b(&dns),
            to_c6(&syn6),
            too_big(big6),
            lb(
                Spec::tcp(CLIENT4, 49000, CNT4, 81, SYN),
                Expect::Pass,
                reason::PASS_NOT_VIP,
            ),
            pass(syn.build()[..40].to_vec(), reason::PASS_TRUNCATED),
        ],
        counters: vec![
            Counted {
                vip: tcp4,
                backend: BACKENDS4[0],
                packets: 3,
                bytes: len(&syn) + len(&data) + len(&rst),
                new_flows: 1,
                closes: 0,
            },
            Counted {
                vip: udp4,
                backend: BACKENDS4[1],
                packets: 2,
                bytes: 2 * len(&dns),
                new_flows: 1,
                closes: 0,
            },
            Counted {
                vip: tcp6,
                backend: BACKENDS6[2],
                packets: 1,
                bytes: len(&syn6),
                new_flows: 1,
                closes: 0,
            },
        ],
    }]
}

/// Connection tracking: opens and closes counted once per connection, the flow kept
/// through its close, a reused 5-tuple reopened.
fn tracking() -> Vec<Case> {
    let [a, ..] = BACKENDS4;
    let vip_a = VipIdent {
        address: ip(VIP4),
        port: 7000,
        proto: PROTO_TCP,
    };
    let s = base_plus(vec![vip(VIP4, 7000, PROTO_TCP, MODE_DSR, &even(&[a]))]);
    let f = |flags| Spec::tcp(CLIENT4, 43000, VIP4, 7000, flags);
    let to_a = |spec: Spec| lb(spec, Expect::Tx(Target::Backend(a)), reason::FWD_TX);
    let (syn, ack, fin, rst) = (f(SYN), f(ACK), f(FIN | ACK), f(RST | ACK));
    let len = |s: &Spec| s.build().len() as u64;
    let fin_first = Spec::tcp(CLIENT4, 43001, VIP4, 7000, FIN | ACK);
    vec![Case {
        name: "tracking: FIN/RST close once, the flow keeps its backend, SYN reopens",
        steps: vec![
            with(s, to_a(syn.clone())).check(Check::Tracked(lb_common::FLOW_OPEN)),
            to_a(ack.clone()).check(Check::Tracked(lb_common::FLOW_OPEN)),
            to_a(fin.clone()).check(Check::Tracked(lb_common::FLOW_CLOSING)),
            // A retransmitted FIN and the last ACK: still its backend, no second close.
            to_a(fin.clone()).check(Check::Tracked(lb_common::FLOW_CLOSING)),
            to_a(ack.clone()).check(Check::Pinned),
            // The client reuses the 5-tuple: a new connection.
            to_a(syn.clone()).check(Check::Tracked(lb_common::FLOW_OPEN)),
            to_a(rst.clone()).check(Check::Tracked(lb_common::FLOW_CLOSING)),
            // A flow first seen closing (the LB restarted mid-close) opens and closes.
            to_a(fin_first.clone()).check(Check::Tracked(lb_common::FLOW_CLOSING)),
        ],
        counters: vec![Counted {
            vip: vip_a,
            backend: a,
            packets: 8,
            bytes: 2 * len(&syn) + 2 * len(&ack) + 2 * len(&fin) + len(&rst) + len(&fin_first),
            new_flows: 3,
            closes: 3,
        }],
    }]
}

/// rr, wrr and lc follow their sequences (one step per new flow, never per packet);
/// source-hash keeps a client on one backend.
fn schedulers() -> Vec<Case> {
    use lb_userspace::dataplane::Sched;
    let [a, b, c, _] = BACKENDS4;
    let sched = |port: u16, s: Sched, backends: &[(&str, u32)]| {
        let mut v = vip(VIP4, port, PROTO_TCP, MODE_DSR, backends);
        v.scheduler = s;
        v
    };
    let syn = |sport: u16, port: u16| Spec::tcp(CLIENT4, sport, VIP4, port, SYN);
    let to = |x: &'static str, spec: Spec| lb(spec, Expect::Tx(Target::Backend(x)), reason::FWD_TX);
    let same = |spec: Spec| lb(spec, Expect::Tx(Target::Same), reason::FWD_TX);

    let rr = base_plus(vec![sched(7100, Sched::RoundRobin, &even(&[a, b, c]))]);
    let wrr = base_plus(vec![sched(
        7200,
        Sched::WeightedRoundRobin,
        &[(a, 5), (b, 1), (c, 1)],
    )]);
    let lc = base_plus(vec![sched(7300, Sched::LeastConn, &even(&[a, b]))]);
    let sh = base_plus(vec![sched(7400, Sched::SourceHash, &even(&[a, b, c]))]);
    let mut cases = vec![
        case(
            "rr: new flows rotate over the backends, packets of a flow stay",
            vec![
                with(rr, to(a, syn(44001, 7100))),
                to(b, syn(44002, 7100)),
                same(Spec::tcp(CLIENT4, 44001, VIP4, 7100, ACK)),
                to(c, syn(44003, 7100)),
                to(a, syn(44004, 7100)),
                same(Spec::tcp(CLIENT4, 44002, VIP4, 7100, ACK)),
                to(b, syn(44005, 7100)),
            ],
        ),
        // nginx's order for 5:1:1.
        case(
            "wrr: smooth weighted order a a b a c a a",
            [a, a, b, a, c, a, a, a]
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    let step = to(x, syn(45000 + i as u16, 7200));
                    if i == 0 {
                        with(wrr.clone(), step)
                    } else {
                        step
                    }
                })
                .collect(),
        ),
        // Three flows a, b, a; the plan is then recomputed from the kernel's counts
        // (a: 2, b: 1): the next new flow goes to b, then they alternate.
        case(
            "lc: the plan follows the active connections",
            vec![
                with(lc.clone(), to(a, syn(46001, 7300))),
                to(b, syn(46002, 7300)),
                to(a, syn(46003, 7300)),
                with(lc.clone(), to(b, syn(46004, 7300))),
                to(a, syn(46005, 7300)),
                // b's connection closes: b has fewest now.
                to(b, Spec::tcp(CLIENT4, 46002, VIP4, 7300, FIN | ACK)),
                with(lc, to(b, syn(46006, 7300))),
            ],
        ),
    ];
    cases.push(case(
        "source-hash: every flow of a client on the backend its address hashes to",
        (0..6)
            .map(|i| {
                let step = lb(
                    syn(47000 + i, 7400),
                    Expect::Tx(Target::SourceTable),
                    reason::FWD_TX,
                );
                if i == 0 { with(sh.clone(), step) } else { step }
            })
            .collect(),
    ));
    cases
}

/// Health probes (`sluice_probe`): the backend comes from the IPv4 identification / IPv6 flow
/// label, whatever the source port; the VIP's mode; any destination port (check overrides).
fn probes() -> Vec<Case> {
    let [a, b, ..] = BACKENDS4;
    let [a6, b6, ..] = BACKENDS6;
    let to = |x: &'static str| Expect::Tx(Target::Backend(x));
    vec![
        case(
            "probe: dsr v4, any source port, the id names the backend",
            vec![
                probe(syn4(49152, 80), (VIP4, 80), b, to(b)),
                probe(syn4(65535, 80), (VIP4, 80), b, to(b)),
                probe(syn4(50000, 80), (VIP4, 80), a, to(a)),
                // RSTs (closing a probe's half-open connection) and UDP go the same way.
                probe(
                    Spec::tcp(CLIENT4, 50000, VIP4, 80, RST),
                    (VIP4, 80),
                    a,
                    to(a),
                ),
                probe(Spec::udp(CLIENT4, 50001, VIP4, 53), (VIP4, 53), b, to(b)),
                // A check override on another port than the VIP's.
                probe(syn4(50002, 8080), (VIP4, 80), b, to(b)),
            ],
        ),
        case(
            "probe: ipip v4 and v6, dsr v6 (flow label)",
            vec![
                probe(syn4(51000, 443), (VIP4, 443), a, to(a)),
                probe(syn6(51000, 443), (VIP6, 443), b6, to(b6)),
                probe(syn6(60000, 80), (VIP6, 80), a6, to(a6)),
                probe(syn6(60001, 80), (VIP6, 80), b6, to(b6)),
            ],
        ),
        case(
            "probe: no backend 0, none of the other family",
            vec![
                raw(
                    programs::PROBE,
                    syn4(50000, 80).ip_id(0).build(),
                    Expect::Drop,
                    NO_REASON,
                ),
                // The frame is IPv4, the id an IPv6 backend's.
                probe(syn4(50000, 80), (VIP6, 80), a6, Expect::Drop),
            ],
        ),
    ]
}

/// A too-big frame answered with ICMP toward the client (fx0's MTU is 1500).
fn too_big(spec: Spec) -> Step {
    let icmp = frames::icmp_too_big(&spec, 1500);
    lb(spec, Expect::Exact(XDP_TX, icmp), reason::ICMP_TOO_BIG)
}

/// The base state with `icmp_too_big_per_sec` set.
fn icmp_rate(per_sec: u32) -> Desired {
    let mut s = base();
    s.global.icmp_too_big_per_sec = per_sec;
    s
}

/// MSS clamping and ICMP too-big (fx0's MTU is 1500: IPIP leaves 1480 bytes for the
/// client's IPv4 packet, IP6IP6 1460 for its IPv6 packet).
fn mtu() -> Vec<Case> {
    let clamped = |s: Spec, mss: u16| {
        let out = s.clone().mss(mss);
        lb(s, Expect::TxAs(Target::Table, out), reason::FWD_MSS_CLAMPED).check(Check::Pinned)
    };
    // NOP, MSS 1460, NOP, NOP, NOP: the MSS value at an odd offset of the segment.
    let odd = |mss: u16| {
        let m = mss.to_be_bytes();
        vec![1, 2, 4, m[0], m[1], 1, 1, 1]
    };
    // MSS after window scale and SACK-permitted, as some stacks order them.
    let late = |mss: u16| {
        let m = mss.to_be_bytes();
        vec![1, 3, 3, 7, 4, 2, 2, 4, m[0], m[1], 1, 1]
    };
    vec![
        case(
            "mss: ipip syn clamped to the egress mtu (v4 1460 to 1440, v6 1440 to 1400)",
            vec![
                clamped(syn4(51000, 443).mss(1460), 1440),
                to_same(ack4(51000, 443)),
                clamped(syn6(51000, 443).mss(1440), 1400),
                to_same(ack6(51000, 443)),
                // A SYN-ACK-flagged SYN is clamped the same way.
                clamped(
                    Spec::tcp(CLIENT4, 51001, VIP4, 443, SYN | ACK).mss(9000),
                    1440,
                ),
            ],
        ),
        case(
            "mss: odd offset and later options, checksum fixed incrementally",
            vec![
                lb(
                    syn4(51010, 443).tcp_options(&odd(1460)),
                    Expect::TxAs(Target::Table, syn4(51010, 443).tcp_options(&odd(1440))),
                    reason::FWD_MSS_CLAMPED,
                ),
                lb(
                    syn6(51010, 443).tcp_options(&late(8960)),
                    Expect::TxAs(Target::Table, syn6(51010, 443).tcp_options(&late(1400))),
                    reason::FWD_MSS_CLAMPED,
                ),
                lb(
                    syn4(51011, 443).vlan(7).mss(1460),
                    Expect::TxAs(Target::Table, syn4(51011, 443).vlan(7).mss(1440)),
                    reason::FWD_MSS_CLAMPED,
                ),
            ],
        ),
        case(
            "mss: small enough, absent, not a syn, or dsr: untouched",
            vec![
                to_table(syn4(51020, 443).mss(1440)),
                to_table(syn6(51020, 443).mss(1400)),
                to_table(syn4(51021, 443).mss(536)),
                // No MSS option: nothing inserted (the peer assumes 536 / 1220).
                to_table(syn4(51022, 443).tcp_options(&[1, 1, 4, 2])),
                to_table(syn6(51022, 443)),
                // Not a SYN: an MSS option (invalid there) is left alone.
                to_table(ack4(51023, 443).mss(1460)),
                // DSR adds no header.
                to_table(syn4(51024, 80).mss(1460)),
                to_table(syn6(51024, 80).mss(1460)),
            ],
        ),
        case(
            "icmp too-big: v4 and v6 answered, tagged too, flows not opened",
            vec![
                too_big(ack4(51030, 443).payload(vec![0x11; 1460])).check(Check::Unpinned),
                too_big(ack6(51030, 443).payload(vec![0x22; 1440])).check(Check::Unpinned),
                too_big(syn4_sized(51031, 443, 1481).vlan(9)),
                too_big(syn6_sized(51031, 443, 1461).vlan(9)),
                // UDP too.
                too_big(Spec::udp(CLIENT4, 51032, VIP4, 4789).payload(vec![3; 1500])),
                // Exactly the MTU still forwards.
                to_table(ack4(51033, 443).payload(vec![0x11; 1440])),
            ],
        ),
        case(
            "icmp too-big: no DF on v4 is dropped (sluice does not fragment)",
            vec![
                lb(
                    ack4(51040, 443).payload(vec![0; 1460]).no_df(),
                    Expect::Drop,
                    reason::DROP_TOO_BIG,
                )
                .check(Check::Unpinned),
            ],
        ),
        case(
            "icmp too-big: rate-limited per cpu, off at 0",
            vec![
                // A new rate starts a full bucket: one message a second.
                with(
                    icmp_rate(1),
                    too_big(ack4(51050, 443).payload(vec![0; 1460])),
                ),
                lb(
                    ack4(51051, 443).payload(vec![0; 1460]),
                    Expect::Drop,
                    reason::DROP_TOO_BIG,
                ),
                lb(
                    ack6(51051, 443).payload(vec![0; 1440]),
                    Expect::Drop,
                    reason::DROP_TOO_BIG,
                ),
                with(icmp_rate(0), {
                    lb(
                        ack6(51052, 443).payload(vec![0; 1440]),
                        Expect::Drop,
                        reason::DROP_TOO_BIG,
                    )
                }),
                // Back to the default: a full bucket again.
                with(base(), too_big(ack6(51053, 443).payload(vec![0; 1440]))),
            ],
        ),
    ]
}

/// Keep this thread on the CPU it runs on: the ICMP rate limit's bucket is per CPU, and the
/// rate-limit case needs its frames to meet the same one.
fn stay_on_this_cpu() -> anyhow::Result<()> {
    // SAFETY: plain libc calls on this thread, with a zero-initialised `cpu_set_t` (a
    // bitmask: zero is a valid value) that outlives them.
    unsafe {
        let cpu = libc::sched_getcpu();
        anyhow::ensure!(
            cpu >= 0,
            "sched_getcpu: {}",
            std::io::Error::last_os_error()
        );
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        anyhow::ensure!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) == 0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

#[test]
fn fixture_table() -> anyhow::Result<()> {
    require_root();
    stay_on_this_cpu()?;
    let (_ns, ifindex) = network()?;
    let dp = Dataplane::load(Sizes {
        flow_entries: 65536,
        table_slots: 1 << 20,
    })?;
    let mut w = World {
        dp,
        ifindex,
        current: Desired::default(),
    };
    w.dp.publish(&base())?;
    w.current = base();
    let mut failures = Vec::new();
    let mut ran = Ran::default();
    let all = cases();
    for case in &all {
        if let Err(e) = run_case(&mut w, case, &mut ran) {
            failures.push(format!("{e:#}"));
        }
        // Every case starts from the base state.
        w.dp.publish(&base())?;
        w.current = base();
    }
    let total: usize = all.iter().map(|c| c.steps.len()).sum();
    println!(
        "fixtures: {} of {total} vectors passed in {} cases (+{} state checks)",
        ran.frames,
        all.len(),
        ran.checks
    );
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

/// The benchmarks' own object loads on this kernel (its verifier accepts the floor, the
/// generator and the sink; `fixture_table` loads the balancer's): so the VM matrix, which
/// runs this file on every kernel, still meets every program of both objects. The floor
/// swaps the MACs and transmits, the sink drops.
#[test]
fn bench_object_loads() -> anyhow::Result<()> {
    use lb_common::bench::programs as bench;
    require_root();
    let mut bo = lb_userspace::dataplane::BenchObject::load()?;
    let mut frame = vec![0u8; 60];
    frame[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xaa]);
    frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xbb]);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let r = bo.run_frame(bench::FLOOR_TX, &frame, 0)?;
    assert_eq!(r.action, XDP_TX, "floor: XDP_TX");
    assert_eq!(r.frame[..6], frame[6..12], "floor: MACs swapped");
    assert_eq!(r.frame[6..12], frame[..6], "floor: MACs swapped");
    assert_eq!(
        bo.run_frame(bench::SINK, &frame, 0)?.action,
        XDP_DROP,
        "sink"
    );
    Ok(())
}

/// The frame sluice must send for a raw, untagged `frame` (an ICMP error) that goes along
/// the flow `key` to `backend` of `v`: DSR rewrites the MACs; IPIP wraps the IP packet as
/// the flow's own packets are wrapped (outer source and flow label from the flow's hash;
/// the packet's own TOS, IPv4 id and DF flag).
fn along(frame: &[u8], v: &DesiredVip, key: &FlowKey, backend: IpAddr) -> Vec<u8> {
    let ip = &frame[14..];
    if v.mode == MODE_IPIP {
        let hash = flow_hash(key, SEED);
        let h = hash.to_be_bytes();
        let src = match backend {
            IpAddr::V4(_) => IpAddr::from([172, 16, h[2], h[3]]),
            IpAddr::V6(_) => {
                let mut a = Global::default().encap_v6.0.octets();
                a[12..].copy_from_slice(&h);
                IpAddr::from(a)
            }
        };
        let tos = if ip[0] >> 4 == 6 {
            (ip[0] << 4) | (ip[1] >> 4)
        } else {
            ip[1]
        };
        Encap {
            src_mac: LB_MAC,
            dst_mac: mac_of(backend),
            vlan: None,
            src,
            dst: backend,
            tos,
            flow_label: hash,
        }
        .wrap(ip)
    } else {
        let mac = v
            .backends
            .iter()
            .find(|b| b.address == backend)
            .and_then(|b| b.mac)
            .unwrap_or(mac_of(backend));
        let mut f = frame.to_vec();
        f[..6].copy_from_slice(&mac);
        f[6..12].copy_from_slice(&LB_MAC);
        f
    }
}

/// A frame dropped for `reason` (a header the kernel would discard, for a VIP).
fn drop_invalid(frame: Vec<u8>, reason: u32) -> Step {
    raw(programs::BALANCER, frame, Expect::Drop, reason)
}

/// A router on the path to the clients (the source of ICMP errors).
const ROUTER4: &str = "203.0.113.1";
const ROUTER6: &str = "2001:db8:1::1";

/// What a backend sends the client of `flow` (client → VIP): the reverse direction, from
/// the VIP (DSR and IPIP backends answer directly).
fn reply(flow: &Spec) -> Spec {
    let mut r = flow.clone();
    std::mem::swap(&mut r.src, &mut r.dst);
    r.l4 = match flow.l4 {
        frames::L4::Tcp { sport, dport, .. } => frames::L4::Tcp {
            sport: dport,
            dport: sport,
            flags: SYN | ACK,
        },
        frames::L4::Udp { sport, dport } => frames::L4::Udp {
            sport: dport,
            dport: sport,
        },
    };
    r
}

/// The first `n` bytes (at most all) of what the backend sent for `flow`: the quote of an
/// ICMP error.
fn quote(flow: &Spec, n: usize) -> Vec<u8> {
    let p = reply(flow).ip_packet();
    p[..n.min(p.len())].to_vec()
}

/// Whole quotes.
const ALL: usize = usize::MAX;

/// ICMP errors addressed to a VIP about a flow (the quoted packet, VIP → client, looked
/// up reversed) go to the flow's backend, as the flow's packets do, counted `fwd_icmp`.
fn icmp_errors() -> Vec<Case> {
    use etherparse::{
        Icmpv4Type, icmpv4::DestUnreachableHeader as Un4, icmpv4::TimeExceededCode as Te4,
        icmpv6::DestUnreachableCode as Un6, icmpv6::TimeExceededCode as Te6,
    };
    let frag_needed =
        Icmpv4Type::DestinationUnreachable(Un4::FragmentationNeeded { next_hop_mtu: 1400 });
    let port4 = Icmpv4Type::DestinationUnreachable(Un4::Port);
    let ttl4 = Icmpv4Type::TimeExceeded(Te4::TtlExceededInTransit);
    let too_big = Icmpv6Type::PacketTooBig { mtu: 1280 };
    let port6 = Icmpv6Type::DestinationUnreachable(Un6::Port);
    let hop6 = Icmpv6Type::TimeExceeded(Te6::HopLimitExceeded);
    // An error from `from` to the VIP of `flow`, quoting `q`.
    let e4 = |from: &str, flow: &Spec, kind: Icmpv4Type, q: &[u8]| {
        frames::icmp4(from, &flow.dst.to_string(), kind, q)
    };
    let e6 = |from: &str, flow: &Spec, kind: Icmpv6Type, q: &[u8]| {
        frames::icmp6(from, &flow.dst.to_string(), kind, q)
    };
    let fwd = |frame: Vec<u8>, flow: &Spec| {
        raw(
            programs::BALANCER,
            frame,
            Expect::Along(flow.clone()),
            reason::FWD_ICMP,
        )
    };
    let no_flow = |frame: Vec<u8>| drop_invalid(frame, reason::DROP_ICMP_NO_FLOW);

    let (t4, u4) = (syn4(40100, 80), Spec::udp(CLIENT4, 40101, VIP4, 53));
    let (t4i, u4i) = (syn4(40102, 443), Spec::udp(CLIENT4, 40103, VIP4, 4789));
    let (t6, u6) = (syn6(40104, 80), Spec::udp(CLIENT6, 40105, VIP6, 53));
    let (t6i, u6i) = (syn6(40106, 443), Spec::udp(CLIENT6, 40107, VIP6, 4789));
    let (c4, c4o, c6) = (syn4(40108, 80), syn4(40109, 443), syn6(40110, 80));
    let reply_opts = reply(&c4o).options(&nops(2)).ip_packet();
    vec![
        case(
            "icmp v4 dsr: frag needed, ttl exceeded, port unreachable go to the flow's backend",
            vec![
                with(base(), to_table(t4.clone())),
                fwd(e4(ROUTER4, &t4, frag_needed.clone(), &quote(&t4, ALL)), &t4),
                fwd(e4(ROUTER4, &t4, ttl4.clone(), &quote(&t4, ALL)), &t4),
                to_table(u4.clone()),
                fwd(e4(CLIENT4, &u4, port4.clone(), &quote(&u4, ALL)), &u4),
                // The errors neither closed nor moved the flow.
                to_same(ack4(40100, 80)).check(Check::Tracked(lb_common::FLOW_OPEN)),
            ],
        ),
        case(
            "icmp v4 ipip: errors are encapsulated to the flow's backend",
            vec![
                to_table(t4i.clone()),
                fwd(
                    e4(ROUTER4, &t4i, frag_needed.clone(), &quote(&t4i, ALL)),
                    &t4i,
                ),
                to_table(u4i.clone()),
                fwd(e4(CLIENT4, &u4i, port4.clone(), &quote(&u4i, ALL)), &u4i),
            ],
        ),
        case(
            "icmp v6 dsr (fib): packet too big, hop limit, port unreachable",
            vec![
                to_table(t6.clone()),
                fwd(e6(ROUTER6, &t6, too_big, &quote(&t6, ALL)), &t6),
                fwd(e6(ROUTER6, &t6, hop6, &quote(&t6, ALL)), &t6),
                to_table(u6.clone()),
                fwd(e6(CLIENT6, &u6, port6, &quote(&u6, ALL)), &u6),
                to_same(ack6(40104, 80)).check(Check::Tracked(lb_common::FLOW_OPEN)),
            ],
        ),
        case(
            "icmp v6 ipip: errors are encapsulated to the flow's backend",
            vec![
                to_table(t6i.clone()),
                fwd(e6(ROUTER6, &t6i, too_big, &quote(&t6i, ALL)), &t6i),
                to_table(u6i.clone()),
                fwd(e6(CLIENT6, &u6i, port6, &quote(&u6i, ALL)), &u6i),
            ],
        ),
        case(
            "icmp: a quote needs its ip header and 8 bytes of l4 header",
            vec![
                to_table(c4.clone()),
                fwd(
                    e4(ROUTER4, &c4, frag_needed.clone(), &quote(&c4, 20 + 8)),
                    &c4,
                ),
                pass(
                    e4(ROUTER4, &c4, frag_needed.clone(), &quote(&c4, 20 + 7)),
                    reason::PASS_TRUNCATED,
                ),
                pass(
                    e4(ROUTER4, &c4, frag_needed.clone(), &quote(&c4, 20)),
                    reason::PASS_TRUNCATED,
                ),
                pass(
                    e4(ROUTER4, &c4, frag_needed.clone(), &quote(&c4, 12)),
                    reason::PASS_TRUNCATED,
                ),
                // A quoted header with options: its ports are after them.
                to_table(c4o.clone()),
                fwd(
                    e4(ROUTER4, &c4o, frag_needed.clone(), &reply_opts[..28 + 8]),
                    &c4o,
                ),
                pass(
                    e4(ROUTER4, &c4o, frag_needed.clone(), &reply_opts[..28 + 7]),
                    reason::PASS_TRUNCATED,
                ),
                to_table(c6.clone()),
                fwd(e6(ROUTER6, &c6, too_big, &quote(&c6, 40 + 8)), &c6),
                pass(
                    e6(ROUTER6, &c6, too_big, &quote(&c6, 40 + 7)),
                    reason::PASS_TRUNCATED,
                ),
                pass(
                    e6(ROUTER6, &c6, too_big, &quote(&c6, 30)),
                    reason::PASS_TRUNCATED,
                ),
                // The ICMP header itself cut short.
                pass(
                    frames::frame(&frames::ipv4_packet(
                        ROUTER4,
                        VIP4,
                        IpNumber::ICMP,
                        &[3, 4, 0, 0],
                    )),
                    reason::PASS_TRUNCATED,
                ),
            ],
        ),
        case(
            "icmp: an error about a vip flow the table does not hold is dropped",
            vec![
                no_flow(e4(
                    ROUTER4,
                    &syn4(40111, 80),
                    frag_needed.clone(),
                    &quote(&syn4(40111, 80), ALL),
                ))
                .check(Check::NoFlow(syn4(40111, 80).key())),
                no_flow(e6(
                    ROUTER6,
                    &syn6(40111, 443),
                    too_big,
                    &quote(&syn6(40111, 443), ALL),
                ))
                .check(Check::NoFlow(syn6(40111, 443).key())),
                // The flow's backend no longer serves: its owner is gone.
                to_table(syn4(40115, 80)),
                edit(
                    &syn4(40115, 80),
                    Edit::Down,
                    no_flow(e4(
                        ROUTER4,
                        &syn4(40115, 80),
                        frag_needed.clone(),
                        &quote(&syn4(40115, 80), ALL),
                    )),
                ),
                // The client's other connection does not count.
                to_table(syn4(40112, 80)),
                no_flow(e4(
                    ROUTER4,
                    &syn4(40113, 80),
                    port4.clone(),
                    &quote(&syn4(40113, 80), ALL),
                )),
            ],
        ),
        case(
            "icmp: what is not an error about a vip flow is passed untouched",
            {
                let other = Spec::tcp(CLIENT4, 40114, "10.99.0.11", 80, SYN);
                let stranger = Spec::tcp("10.99.0.11", 80, CLIENT4, 40114, SYN | ACK).ip_packet();
                let mut ext = Ipv6RawExtHeader::new_raw(IpNumber::TCP, &[1, 4, 0, 0, 0, 0])
                    .expect("ext")
                    .to_bytes()
                    .to_vec();
                ext.extend(reply(&c6).l4_segment());
                let quoted_ext =
                    frames::ipv6_packet(VIP6, CLIENT6, IpNumber::IPV6_HEADER_HOP_BY_HOP, &ext);
                vec![
                    // Not to a VIP address; to a VIP address but no VIP port.
                    pass(
                        e4(ROUTER4, &other, frag_needed.clone(), &quote(&other, ALL)),
                        reason::PASS_NOT_VIP,
                    ),
                    pass(
                        e4(
                            ROUTER4,
                            &syn4(40114, 81),
                            frag_needed.clone(),
                            &quote(&syn4(40114, 81), ALL),
                        ),
                        reason::PASS_NOT_VIP,
                    ),
                    pass(
                        e6(
                            ROUTER6,
                            &syn6(40114, 81),
                            too_big,
                            &quote(&syn6(40114, 81), ALL),
                        ),
                        reason::PASS_NOT_VIP,
                    ),
                    // To the VIP, about a packet another address sent.
                    pass(
                        frames::icmp4(ROUTER4, VIP4, frag_needed.clone(), &stranger),
                        reason::PASS_OTHER_L4,
                    ),
                    // About an ICMP packet; about a later fragment (no ports).
                    pass(
                        frames::icmp4(
                            ROUTER4,
                            VIP4,
                            port4.clone(),
                            &frames::icmp4_echo(VIP4, CLIENT4)[14..],
                        ),
                        reason::PASS_OTHER_L4,
                    ),
                    pass(
                        frames::icmp4(
                            ROUTER4,
                            VIP4,
                            frag_needed.clone(),
                            &reply(&c4).fragment(false, 10).ip_packet(),
                        ),
                        reason::PASS_FRAGMENT,
                    ),
                    // About an IPv6 packet with an extension header.
                    pass(
                        frames::icmp6(ROUTER6, VIP6, too_big, &quoted_ext),
                        reason::PASS_OTHER_L4,
                    ),
                    // Other ICMP types: parameter problem (v4 and v6), redirect.
                    pass(
                        frames::icmp4(
                            ROUTER4,
                            VIP4,
                            Icmpv4Type::Unknown {
                                type_u8: 12,
                                code_u8: 0,
                                bytes5to8: [0; 4],
                            },
                            &quote(&c4, ALL),
                        ),
                        reason::PASS_OTHER_L4,
                    ),
                    pass(
                        frames::icmp4(
                            ROUTER4,
                            VIP4,
                            Icmpv4Type::Unknown {
                                type_u8: 5,
                                code_u8: 1,
                                bytes5to8: [10, 99, 0, 1],
                            },
                            &quote(&c4, ALL),
                        ),
                        reason::PASS_OTHER_L4,
                    ),
                    pass(
                        frames::icmp6(
                            ROUTER6,
                            VIP6,
                            Icmpv6Type::Unknown {
                                type_u8: 4,
                                code_u8: 0,
                                bytes5to8: [0; 4],
                            },
                            &quote(&c6, ALL),
                        ),
                        reason::PASS_OTHER_L4,
                    ),
                ]
            },
        ),
    ]
}

/// `frame` (an IPv4 packet at `l3`) with its header checksum broken.
fn bad_csum(mut frame: Vec<u8>, l3: usize) -> Vec<u8> {
    frame[l3 + 10] ^= 0x5a;
    frame
}

/// Headers the kernel would discard (found by fuzzing): for a VIP they are dropped, with
/// their own counter, and open no flow; for anything else they are passed.
fn validity() -> Vec<Case> {
    // TCP data offset (the high nibble of byte 12 of the TCP header) at l4 offset `l4`.
    let doff = |s: &Spec, l4: usize, d: u8| patched(s.build(), &[(l4 + 12, d << 4)]);
    let bare4 = syn4(45100, 80).payload(Vec::new());
    let bare6 = syn6(45101, 80).payload(Vec::new());
    let bare4i = syn4(45102, 443).payload(Vec::new());
    // Payload of 22 bytes: a 42-byte segment.
    let full4 = syn4(45103, 80);
    let doff_bad = |f: Vec<u8>| drop_invalid(f, reason::DROP_TCP_DOFF);
    // UDP length (bytes 4-5 of the UDP header) at l4 offset `l4`.
    let ulen = |s: &Spec, l4: usize, n: u16| {
        let b = n.to_be_bytes();
        patched(s.build(), &[(l4 + 4, b[0]), (l4 + 5, b[1])])
    };
    let u4 = Spec::udp(CLIENT4, 45200, VIP4, 53);
    let u6 = Spec::udp(CLIENT6, 45201, VIP6, 53);
    let u4i = Spec::udp(CLIENT4, 45202, VIP4, 4789);
    let u4ok = Spec::udp(CLIENT4, 45203, VIP4, 53);
    let len_bad = |f: Vec<u8>| drop_invalid(f, reason::DROP_UDP_LEN);
    let csum_bad = |f: Vec<u8>| drop_invalid(f, reason::DROP_IPV4_CSUM);
    let opts10 = syn4(45301, 80).options(&nops(10));
    let icmp_flow = syn4(45307, 80);
    vec![
        case(
            "tcp data offset beyond the segment: dropped for a vip, passed otherwise",
            vec![
                doff_bad(doff(&bare4, 34, 6)).check(Check::NoFlow(bare4.key())),
                doff_bad(doff(&bare4, 34, 15)).check(Check::NoFlow(bare4.key())),
                doff_bad(doff(&bare6, 54, 6)).check(Check::NoFlow(bare6.key())),
                doff_bad(doff(&bare4i, 34, 8)).check(Check::NoFlow(bare4i.key())),
                doff_bad(doff(&full4, 34, 11)).check(Check::NoFlow(full4.key())),
                // Up to the segment's end is valid (the payload read as options).
                to_table(full4.clone()),
                raw(
                    programs::BALANCER,
                    doff(&full4, 34, 10),
                    Expect::Along(full4.clone()),
                    reason::FWD_TX,
                ),
                // Not for a VIP: a VIP address on another port, another address.
                pass(
                    doff(&syn4(45104, 81).payload(Vec::new()), 34, 6),
                    reason::PASS_MALFORMED,
                ),
                pass(
                    doff(&Spec::tcp(CLIENT4, 45104, "10.99.0.11", 80, SYN), 34, 2),
                    reason::PASS_MALFORMED,
                ),
            ],
        ),
        case(
            "udp length below 8 or beyond the ip payload: dropped for a vip, passed otherwise",
            vec![
                len_bad(ulen(&u4, 34, 7)).check(Check::NoFlow(u4.key())),
                len_bad(ulen(&u4, 34, 0)).check(Check::NoFlow(u4.key())),
                len_bad(ulen(&u4, 34, 8 + 22 + 1)).check(Check::NoFlow(u4.key())),
                len_bad(ulen(&u4, 34, 0xffff)).check(Check::NoFlow(u4.key())),
                len_bad(ulen(&u6, 54, 0)).check(Check::NoFlow(u6.key())),
                len_bad(ulen(&u6, 54, 7)).check(Check::NoFlow(u6.key())),
                len_bad(ulen(&u6, 54, 8 + 22 + 1)).check(Check::NoFlow(u6.key())),
                len_bad(ulen(&u4i, 34, 7)).check(Check::NoFlow(u4i.key())),
                // Shorter than the IP payload is valid (the rest is trailing bytes).
                to_table(u4ok.clone()),
                raw(
                    programs::BALANCER,
                    ulen(&u4ok, 34, 8),
                    Expect::Along(u4ok.clone()),
                    reason::FWD_TX,
                ),
                pass(
                    ulen(&Spec::udp(CLIENT4, 45204, VIP4, 54), 34, 7),
                    reason::PASS_MALFORMED,
                ),
            ],
        ),
        case(
            "ipv4 header checksum: a bad one is dropped for a vip, options included",
            vec![
                csum_bad(bad_csum(syn4(45300, 80).build(), 14))
                    .check(Check::NoFlow(syn4(45300, 80).key())),
                csum_bad(bad_csum(opts10.build(), 14)).check(Check::NoFlow(opts10.key())),
                // Only an option byte changed: the first option word, and the last.
                csum_bad(patched(opts10.build(), &[(14 + 20, 0x94)]))
                    .check(Check::NoFlow(opts10.key())),
                csum_bad(patched(opts10.build(), &[(14 + 59, 0x01)]))
                    .check(Check::NoFlow(opts10.key())),
                csum_bad(bad_csum(syn4(45302, 443).build(), 14)),
                csum_bad(bad_csum(Spec::udp(CLIENT4, 45302, VIP4, 53).build(), 14)),
                csum_bad(bad_csum(syn4(45303, 80).vlan(12).build(), 18)),
                // Good checksums, with options.
                to_table(opts10.clone()),
                to_table(syn4(45304, 80).options(&nops(1))),
                // An established flow's packet with a bad checksum is not forwarded either.
                to_table(syn4(45305, 80)),
                csum_bad(bad_csum(ack4(45305, 80).build(), 14)),
                // An ICMP error about a flow, with a bad outer checksum.
                to_table(icmp_flow.clone()),
                csum_bad(bad_csum(
                    frames::icmp4(
                        ROUTER4,
                        VIP4,
                        etherparse::Icmpv4Type::DestinationUnreachable(
                            etherparse::icmpv4::DestUnreachableHeader::Port,
                        ),
                        &quote(&icmp_flow, ALL),
                    ),
                    14,
                )),
                // Not a VIP: another port is passed; another address is not even summed.
                pass(
                    bad_csum(syn4(45306, 81).build(), 14),
                    reason::PASS_MALFORMED,
                ),
                pass(
                    bad_csum(Spec::tcp(CLIENT4, 45306, "10.99.0.11", 80, SYN).build(), 14),
                    reason::PASS_NOT_VIP,
                ),
            ],
        ),
    ]
}
