//! A fleet of balancers through real BIRD and real ECMP (issue 13): the fleet lab
//! (`sluice_lab::lab::fleet`) runs a router namespace with BIRD (BGP + BFD, ECMP with the
//! L4 hash) in front of N balancer namespaces, each running BIRD and the real daemon
//! (in this process), announcing the VIPs by the routes sluice installs.
//!
//! - spread: with 2 and 3 balancers every balancer gets new connections, and each
//!   backend's share over the fleet follows its weight;
//! - maintenance: `sluice announce withdraw --all` on one balancer moves its 40 open
//!   connections to the others with zero resets, new connections stop reaching it, and it
//!   can then be stopped with nothing in flight;
//! - failure: losing a balancer (its link cut, its BIRD killed) keeps all 40 connections on
//!   their backends (Maglev), zero resets; the blackout is measured;
//! - adding a balancer: flows ECMP moves to it keep their backends;
//! - a VIP with no serving backend on one balancer is withdrawn there only;
//! - fingerprints agree across the fleet; a live edit on one balancer shows in
//!   `sluice fleet check`;
//! - least connections (a sequence scheduler) when a balancer is lost: measured.
//!
//! Every test builds its own fleet (prefix `sl-fl-<pid>-<name>`), removed when it drops,
//! also on failure; tests run one at a time.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use clap::Parser as _;
use lb_userspace::cli::{Cli, dispatch};
use sluice_core::config::Forwarding;
use sluice_lab::lab::{
    TCP_PORT,
    daemon::Daemon,
    fleet::{CONVERGE, FLEET_VIP4, FLEET_VIP4_LC, Fleet, FleetSpec, lc_sock},
};
use sluice_tests::{
    api,
    conn::{Held, connections_held, echo_all, echo_parallel, per_backend},
    prefix, require_root, serial,
};

/// Weights of backend-1..3 in every test: shares 1/6, 2/6, 3/6.
const WEIGHTS: [u32; 3] = [1, 2, 3];
/// How long the router may take to follow a withdrawal or a failure.
const REROUTE: Duration = Duration::from_secs(5);

/// A fleet of `n` balancers (DSR) with their daemons running and the VIP announced by all.
fn fleet(name: &str, n: usize) -> (Fleet, Vec<Daemon>) {
    fleet_in(name, n, Forwarding::Dsr)
}

/// [`fleet`] in forwarding mode `mode` (IPIP: the backends behind the router).
fn fleet_in(name: &str, n: usize, mode: Forwarding) -> (Fleet, Vec<Daemon>) {
    let fleet = Fleet::up(FleetSpec::new(&prefix("fl", name)).balancers(n).mode(mode))
        .expect("bring the fleet lab up");
    let daemons = (0..n)
        .map(|i| {
            fleet
                .start_daemon(i, &WEIGHTS)
                .unwrap_or_else(|e| panic!("start balancer {}'s daemon: {e}", i + 1))
        })
        .collect();
    let all: Vec<usize> = (0..n).collect();
    let took = fleet
        .wait_next_hops(FLEET_VIP4, &all, CONVERGE)
        .expect("the router forwards the VIP to every balancer");
    eprintln!("{n} balancers announced the VIP; the router had ECMP over all after {took:?}");
    (fleet, daemons)
}

/// `sluice --api-socket SOCKET ARGS...`, in process.
fn sluice(socket: &Path, args: &[&str]) -> anyhow::Result<()> {
    let socket = socket.to_string_lossy();
    let argv = ["sluice", "--api-socket", &socket]
        .into_iter()
        .chain(args.iter().copied());
    dispatch(Cli::try_parse_from(argv)?)
}

/// The new flows (and packets) balancer `i` counted for the VIP named `vip`.
fn counters(fleet: &Fleet, i: usize, vip: &str) -> (u64, u64) {
    let s = api::status(&fleet.api_socket(i)).expect("a balancer's status");
    let v = s
        .vips
        .iter()
        .find(|v| v.name == vip)
        .unwrap_or_else(|| panic!("balancer {} has no VIP {vip}", i + 1));
    (v.new_flows, v.packets)
}

fn open(fleet: &Fleet, to: SocketAddr, n: usize) -> Vec<Held> {
    connections_held(fleet.client(0), to, n)
        .unwrap_or_else(|e| panic!("open {n} connections to {to}: {e:#}"))
}

/// Lose balancer `i` and at once send an echo on every held connection; the echoes'
/// outcomes and when the router stopped forwarding to `i` (measured from the kill, in
/// parallel with the echoes).
fn kill_and_echo(
    fleet: &Fleet,
    i: usize,
    held: &mut [Held],
) -> (Vec<Result<Duration, String>>, Duration) {
    let rest: Vec<usize> = (0..fleet.balancers().len()).filter(|&k| k != i).collect();
    let t0 = Instant::now();
    fleet.kill_balancer(i).expect("kill a balancer");
    std::thread::scope(|s| {
        let route = s.spawn(|| {
            fleet
                .wait_next_hops(FLEET_VIP4, &rest, REROUTE)
                .expect("the router drops the lost balancer");
            t0.elapsed()
        });
        let results = echo_parallel(held, "after-kill");
        (results, route.join().expect("the route watcher"))
    })
}

fn failures(results: &[Result<Duration, String>]) -> Vec<String> {
    results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| format!("connection {i}: {e}")))
        .collect()
}

fn slowest(results: &[Result<Duration, String>]) -> Duration {
    results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .max()
        .copied()
        .unwrap_or_default()
}

fn spread(n: usize) {
    require_root();
    let _serial = serial();
    let (fleet, _daemons) = fleet(&format!("spread{n}"), n);
    const CONNECTIONS: usize = 300;
    let before: Vec<u64> = (0..n).map(|i| counters(&fleet, i, "fleet-tcp").0).collect();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..CONNECTIONS {
        let c = Held::open(fleet.client(0), fleet.vip_sock(TCP_PORT))
            .unwrap_or_else(|e| panic!("connection {i}: {e:#}"));
        *answers.entry(c.backend.clone()).or_default() += 1;
        c.close()
            .unwrap_or_else(|e| panic!("closing connection {i}: {e:#}"));
    }
    let per_balancer: Vec<u64> = (0..n)
        .map(|i| counters(&fleet, i, "fleet-tcp").0 - before[i])
        .collect();
    eprintln!("{CONNECTIONS} connections: per balancer {per_balancer:?}, per backend {answers:?}");
    assert_eq!(
        per_balancer.iter().sum::<u64>(),
        CONNECTIONS as u64,
        "every connection is one new flow on exactly one balancer"
    );
    for (i, got) in per_balancer.iter().enumerate() {
        assert!(
            *got as usize >= CONNECTIONS / n / 3,
            "balancer {} got {got} of {CONNECTIONS} new connections: ECMP does not spread",
            i + 1
        );
    }
    let total: u32 = WEIGHTS.iter().sum();
    for (k, w) in WEIGHTS.iter().enumerate() {
        let share =
            *answers.get(&format!("backend-{}", k + 1)).unwrap_or(&0) as f64 / CONNECTIONS as f64;
        let want = f64::from(*w) / f64::from(total);
        assert!(
            (share - want).abs() < 0.09,
            "backend-{} had {share:.3} of the fleet's connections, its weight says {want:.3}",
            k + 1
        );
    }
}

#[test]
fn new_connections_spread_over_two_balancers_and_follow_the_weights() {
    spread(2);
}

#[test]
fn new_connections_spread_over_three_balancers_and_follow_the_weights() {
    spread(3);
}

#[test]
fn maintenance_moves_every_connection_off_a_balancer_without_a_reset() {
    require_root();
    let _serial = serial();
    let (fleet, mut daemons) = fleet("maint", 2);
    let mut held = open(&fleet, fleet.vip_sock(TCP_PORT), 40);
    echo_all(&mut held, "before").expect("every connection answers");
    let backends = per_backend(&held);
    let (via0, _) = counters(&fleet, 0, "fleet-tcp");
    assert!(via0 > 0, "no connection went through balancer 1");

    let t0 = Instant::now();
    sluice(&fleet.api_socket(0), &["announce", "withdraw", "--all"]).expect("withdraw");
    let moved = fleet
        .wait_next_hops(FLEET_VIP4, &[1], REROUTE)
        .expect("the router stops forwarding to the withdrawn balancer");
    eprintln!(
        "withdrawn: the router forwards only to balancer 2 {:?} after the command",
        t0.elapsed().max(moved)
    );
    let results = echo_parallel(&mut held, "moved");
    assert_eq!(
        failures(&results),
        Vec::<String>::new(),
        "connections broke"
    );
    assert_eq!(per_backend(&held), backends, "a connection changed backend");

    // Nothing reaches balancer 1 any more: neither new connections nor old ones.
    let (new0, packets0) = counters(&fleet, 0, "fleet-tcp");
    let extra = open(&fleet, fleet.vip_sock(TCP_PORT), 20);
    echo_all(&mut held, "after").expect("every connection answers");
    assert_eq!(
        counters(&fleet, 0, "fleet-tcp"),
        (new0, packets0),
        "the withdrawn balancer still sees traffic"
    );
    // So it can stop with nothing in flight.
    daemons.remove(0).stop().expect("stop balancer 1's daemon");
    echo_all(&mut held, "stopped").expect("every connection answers after the stop");
    for c in held.into_iter().chain(extra) {
        c.close().expect("a clean close");
    }
}

#[test]
fn losing_a_balancer_keeps_every_connection_on_its_backend() {
    losing_a_balancer(Forwarding::Dsr);
}

/// The same with IPIP: the balancers encapsulate to backends on a network behind the router
/// (a routed hop), whose decapsulation program hands the packet to their stack.
#[test]
fn losing_a_balancer_keeps_every_connection_on_its_backend_with_ipip() {
    losing_a_balancer(Forwarding::Ipip);
}

fn losing_a_balancer(mode: Forwarding) {
    require_root();
    let _serial = serial();
    let (fleet, _daemons) = fleet_in(&format!("fail-{mode}"), 3, mode);
    let mut held = open(&fleet, fleet.vip_sock(TCP_PORT), 40);
    echo_all(&mut held, "before").expect("every connection answers");
    let backends = per_backend(&held);
    let (via, _) = counters(&fleet, 2, "fleet-tcp");
    assert!(via > 0, "no connection went through balancer 3");

    let (results, rerouted) = kill_and_echo(&fleet, 2, &mut held);
    let blackout = slowest(&results);
    eprintln!(
        "{mode}: balancer 3 lost with {via} of 40 connections: the router dropped it {rerouted:?} after \
         the kill (BFD 100 ms x 3); the slowest connection's echo took {blackout:?} (its blackout)"
    );
    assert!(
        blackout < Duration::from_secs(2),
        "a connection stalled {blackout:?}: failover should take BFD's detection plus one \
         retransmission"
    );
    assert_eq!(
        failures(&results),
        Vec::<String>::new(),
        "connections broke"
    );
    assert_eq!(per_backend(&held), backends, "a connection changed backend");
    echo_all(&mut held, "later").expect("every connection answers");
    for c in held {
        c.close().expect("a clean close");
    }
}

#[test]
fn a_new_balancer_takes_flows_that_keep_their_backends() {
    require_root();
    let _serial = serial();
    let (mut fleet, mut daemons) = fleet("add", 2);
    let mut held = open(&fleet, fleet.vip_sock(TCP_PORT), 40);
    echo_all(&mut held, "before").expect("every connection answers");
    let backends = per_backend(&held);

    let i = fleet.add_balancer().expect("add balancer 3");
    daemons.push(fleet.start_daemon(i, &WEIGHTS).expect("start its daemon"));
    fleet
        .wait_next_hops(FLEET_VIP4, &[0, 1, 2], CONVERGE)
        .expect("the router forwards to the new balancer too");
    let results = echo_parallel(&mut held, "grown");
    assert_eq!(
        failures(&results),
        Vec::<String>::new(),
        "connections broke"
    );
    assert_eq!(per_backend(&held), backends, "a connection changed backend");
    let (moved, _) = counters(&fleet, 2, "fleet-tcp");
    eprintln!("balancer 3 added: {moved} of 40 open connections moved to it, none broke");
    assert!(
        moved > 0,
        "ECMP moved no open connection to the new balancer"
    );
    for c in held {
        c.close().expect("a clean close");
    }
}

#[test]
fn a_vip_without_serving_backends_on_one_balancer_is_withdrawn_there_only() {
    require_root();
    let _serial = serial();
    let (fleet, _daemons) = fleet("nobe", 2);
    fleet
        .wait_next_hops(FLEET_VIP4_LC, &[0, 1], CONVERGE)
        .expect("both balancers announce the lc VIP");
    // Balancer 1 drains every backend of fleet-lc (the only VIP on its address).
    for b in fleet.backends() {
        sluice(
            &fleet.api_socket(0),
            &[
                "backend",
                "drain",
                "--vip",
                "fleet-lc",
                "--address",
                &b.addr4().to_string(),
            ],
        )
        .expect("drain a backend on balancer 1");
    }
    fleet
        .wait_next_hops(FLEET_VIP4_LC, &[1], REROUTE)
        .expect("balancer 1 withdraws the lc VIP");
    assert_eq!(
        fleet
            .router_next_hops(FLEET_VIP4)
            .expect("the router's route"),
        vec![fleet.balancer(0).addr4(), fleet.balancer(1).addr4()],
        "the other VIP address stays announced by both"
    );
    for c in open(&fleet, lc_sock(), 10) {
        c.close().expect("the lc VIP is served by balancer 2");
    }
}

#[test]
fn fingerprints_agree_until_a_live_edit_on_one_balancer() {
    require_root();
    let _serial = serial();
    let (fleet, _daemons) = fleet("fp", 2);
    let peer = fleet.api_socket(1).to_string_lossy().into_owned();
    sluice(&fleet.api_socket(0), &["fleet", "check", "--peer", &peer])
        .expect("the balancers agree");
    let fps = |i: usize| -> Vec<(String, String)> {
        let s = api::status(&fleet.api_socket(i)).expect("status");
        s.vips
            .iter()
            .map(|v| (v.name.clone(), v.fingerprint.clone()))
            .collect()
    };
    assert_eq!(fps(0), fps(1), "table fingerprints");
    assert!(fps(0).iter().all(|(_, f)| !f.is_empty()));

    sluice(
        &fleet.api_socket(1),
        &[
            "backend",
            "set-weight",
            "--vip",
            "fleet-tcp",
            "--address",
            &fleet.backend(0).addr4().to_string(),
            "--weight",
            "5",
        ],
    )
    .expect("a live edit on balancer 2");
    let err = sluice(&fleet.api_socket(0), &["fleet", "check", "--peer", &peer])
        .expect_err("the balancers disagree now");
    eprintln!("fleet check after the edit: {err:#}");
    let (a, b) = (fps(0), fps(1));
    let differ: Vec<&str> = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.1 != y.1)
        .map(|(x, _)| x.0.as_str())
        .collect();
    assert_eq!(differ, vec!["fleet-tcp"], "only the edited VIP differs");
}

/// What a sequence scheduler (lc) does in a fleet, measured next to Maglev: the same 40
/// connections to each VIP, one balancer lost. ECMP (hash-threshold) moves the lost
/// balancer's flows and some of the others' too; a moved Maglev flow finds its backend on
/// any balancer, a moved lc flow finds the consistent hash's backend there (the fallback for
/// a non-SYN packet without a flow entry), which is its lc backend only by chance.
#[test]
fn least_connections_when_a_balancer_is_lost() {
    require_root();
    let _serial = serial();
    let (fleet, _daemons) = fleet("lc", 3);
    let mut maglev = open(&fleet, fleet.vip_sock(TCP_PORT), 40);
    let mut lc = open(&fleet, lc_sock(), 40);
    echo_all(&mut maglev, "before").expect("every maglev connection answers");
    echo_all(&mut lc, "before").expect("every lc connection answers");
    let lc_backends = per_backend(&lc);
    let (via, _) = counters(&fleet, 2, "fleet-lc");
    let (results, _) = kill_and_echo(&fleet, 2, &mut maglev);
    assert_eq!(
        failures(&results),
        Vec::<String>::new(),
        "maglev connections broke"
    );
    let lc_results = echo_parallel(&mut lc, "after-kill");
    let broken = failures(&lc_results).len();
    eprintln!(
        "lc: balancer 3 lost while it carried {via} of 40 lc connections; {broken} of 40 lc \
         connections broke (maglev: 0 of 40); lc backends before {lc_backends:?}"
    );
    assert!(
        broken < 40,
        "every lc connection broke: the surviving balancers' flows should not move"
    );
    for c in open(&fleet, lc_sock(), 10) {
        c.close().expect("new lc connections work after the loss");
    }
}

/// `sluice demo --balancers 2` runs through (spread, maintenance, a balancer lost) with no
/// reset, and removes its lab.
#[test]
fn the_fleet_demo_runs() {
    require_root();
    let _serial = serial();
    sluice_lab::fleet_demo::run(2, 30).expect("the fleet demo");
    assert!(
        sluice_lab::lab::Lab::status("sl-fleet-demo")
            .namespaces
            .is_empty(),
        "the demo left namespaces behind"
    );
}
