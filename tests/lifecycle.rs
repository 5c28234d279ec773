//! The control plane an operator touches every day, end to end through the lab with real
//! TCP connections: least-connection schedulers equalising active connections, the
//! active-connection figures matching the truth, drains that reset nothing and remove the
//! backend when done, and the API refusing users outside its group.
//!
//! Each test builds its own lab (prefix `sl-lc-<pid>-<n>`), removed when it drops, also on
//! failure; tests run one at a time; every loop is bounded in count and time.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use sluice_core::config::{BackendState, Config, Scheduler, VipConfig};
use sluice_daemon::{
    api::{Request, Response, client},
    daemon::Edit,
    state::Status,
};
use sluice_lab::lab::{self, Lab, LabSpec, Weights, daemon::Daemon};
use sluice_tests::{
    api::running_config,
    api::status,
    conn::per_backend,
    conn::{Held, connections},
    prefix, require_root, serial,
};

fn vip_mut<'c>(c: &'c mut Config, name: &str) -> &'c mut VipConfig {
    c.vips
        .iter_mut()
        .find(|v| v.name == name)
        .expect("a lab VIP")
}

/// Change the running configuration through the API, as the CLI does.
fn apply(socket: &Path, change: impl FnOnce(&mut Config)) -> anyhow::Result<()> {
    let (mut c, version) = running_config(socket)?;
    change(&mut c);
    match client::request(
        socket,
        &Request::Apply {
            config: c.to_toml()?,
            dry_run: false,
            base_version: Some(version),
            force: false,
        },
    )? {
        Response::Plan { applied: true, .. } => Ok(()),
        r => bail!("edit not applied: {r:?}"),
    }
}

/// The lab's backends: name → address.
fn backends(lab: &Lab) -> BTreeMap<String, IpAddr> {
    (0..lab.backends().len())
        .map(|i| (lab.backend(i).name(), IpAddr::from(lab.backend(i).addr4())))
        .collect()
}

/// Open connections per backend address, as the clients know them (every backend listed).
fn truth(lab: &Lab, held: &[Held]) -> BTreeMap<IpAddr, u64> {
    let names = backends(lab);
    let mut t: BTreeMap<IpAddr, u64> = names.values().map(|a| (*a, 0)).collect();
    for h in held {
        *t.entry(names[&h.backend]).or_insert(0) += 1;
    }
    t
}

/// The daemon's active-connection figure per backend of `vip`.
fn reported(socket: &Path, vip: &str) -> anyhow::Result<BTreeMap<IpAddr, u64>> {
    let s = status(socket)?;
    let v = s
        .vips
        .iter()
        .find(|v| v.name == vip)
        .context("VIP in status")?;
    Ok(v.backends.iter().map(|b| (b.address, b.active)).collect())
}

/// Wait (at most 2 s: the counters move with the packets) until the daemon reports exactly
/// `want` active connections per backend.
fn wait_active(socket: &Path, vip: &str, want: &BTreeMap<IpAddr, u64>) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        let got = reported(socket, vip)?;
        let relevant: BTreeMap<IpAddr, u64> = want
            .keys()
            .map(|a| (*a, got.get(a).copied().unwrap_or(0)))
            .collect();
        if &relevant == want {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(2) {
            bail!("active connections reported {relevant:?}, true {want:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn least_connection_schedulers_equalise_and_count_exactly() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("lc", "lc")).backends(3)).expect("bring the lab up");
    let mut config = lab
        .daemon_config(&Weights::Explicit(vec![1, 0, 0]))
        .expect("the lab's daemon config");
    config.daemon.conntrack_sweep_ms = 500;
    vip_mut(&mut config, "lab-tcp4").scheduler = Scheduler::LeastConn;
    let socket = config.daemon.api_socket.clone();
    let d = Daemon::start(&lab, config.clone()).expect("start the daemon");
    let vip = SocketAddr::new(lab.vip4().into(), lab::TCP_PORT);

    // 30 long-lived connections, all on backend-1: the others take no new flows yet.
    let mut held: Vec<Held> = (0..30)
        .map(|_| Held::open(lab.client(0), vip))
        .collect::<anyhow::Result<_>>()
        .expect("open the connections");
    assert!(per_backend(&held).get("backend-1") == Some(&30));
    wait_active(&socket, "lab-tcp4", &truth(&lab, &held))
        .expect("wait for the active connection counts");

    // All three take new flows now: the next 30 go to the two empty ones.
    for b in &mut vip_mut(&mut config, "lab-tcp4").backends {
        b.weight = 1;
    }
    d.edit(Edit::Replace(Box::new(config.clone())))
        .expect("edit the daemon's config");
    let mut fresh: Vec<Held> = (0..30)
        .map(|_| Held::open(lab.client(0), vip))
        .collect::<anyhow::Result<_>>()
        .expect("open the connections");
    let got = per_backend(&fresh);
    println!("lc: 30 held on backend-1, then 30 new connections went {got:?}");
    let n = |m: &BTreeMap<String, usize>, k: &str| m.get(k).copied().unwrap_or(0);
    assert!(
        n(&got, "backend-1") <= 1,
        "lc sent new flows to the loaded backend: {got:?}"
    );
    assert!(
        n(&got, "backend-2").abs_diff(n(&got, "backend-3")) <= 2,
        "lc did not equalise the empty backends: {got:?}"
    );
    held.append(&mut fresh);
    wait_active(&socket, "lab-tcp4", &truth(&lab, &held))
        .expect("wait for the active connection counts");

    // Clients close 10 connections of backend-1 and 5 of backend-2: the figures follow
    // (the FIN counts the close).
    let mut closed = (0, 0);
    let mut kept = Vec::new();
    for h in held {
        if h.backend == "backend-1" && closed.0 < 10 {
            closed.0 += 1;
            h.close().expect("close a held connection");
        } else if h.backend == "backend-2" && closed.1 < 5 {
            closed.1 += 1;
            h.close().expect("close a held connection");
        } else {
            kept.push(h);
        }
    }
    let mut held = kept;
    wait_active(&socket, "lab-tcp4", &truth(&lab, &held))
        .expect("wait for the active connection counts");
    // Still exact after the flow-table sweep recounted.
    std::thread::sleep(Duration::from_millis(1200));
    wait_active(&socket, "lab-tcp4", &truth(&lab, &held))
        .expect("wait for the active connection counts");

    // wlc with weights 1:1:2: new flows fill each backend up to the same load per weight.
    {
        let v = vip_mut(&mut config, "lab-tcp4");
        v.scheduler = Scheduler::WeightedLeastConn;
        v.backends[2].weight = 2;
    }
    d.edit(Edit::Replace(Box::new(config.clone())))
        .expect("edit the daemon's config");
    for _ in 0..40 {
        held.push(Held::open(lab.client(0), vip).expect("open a held connection"));
    }
    let t = truth(&lab, &held);
    let names = backends(&lab);
    let total: u64 = t.values().sum();
    let level = total as f64 / 4.0;
    println!("wlc 1:1:2: active now {t:?} (level {level:.1} per weight unit)");
    for (i, w) in [(1, 1.0), (2, 1.0), (3, 2.0)] {
        let a = t[&names[&format!("backend-{i}")]] as f64;
        assert!(
            (a / w - level).abs() <= 2.5,
            "backend-{i}: {a} active for weight {w}, level {level:.1}: {t:?}"
        );
    }
    wait_active(&socket, "lab-tcp4", &t).expect("wait for the active connection counts");
    for h in held {
        h.close().expect("close a held connection");
    }
    drop(d);
    lab.down().expect("take the lab down");
}

#[test]
fn draining_resets_nothing_and_removes_the_backend_when_done() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("lc", "drain")).backends(3)).expect("bring the lab up");
    let mut config = lab
        .daemon_config(&Weights::Equal)
        .expect("the lab's daemon config");
    config.daemon.conntrack_sweep_ms = 500;
    let socket = config.daemon.api_socket.clone();
    let d = Daemon::start(&lab, config).expect("start the daemon");
    let vip = SocketAddr::new(lab.vip4().into(), lab::TCP_PORT);
    let names = backends(&lab);
    let b2 = names["backend-2"];

    let mut held: Vec<Held> = (0..45)
        .map(|_| Held::open(lab.client(0), vip))
        .collect::<anyhow::Result<_>>()
        .expect("open the connections");
    for (i, h) in held.iter_mut().enumerate() {
        h.echo(&format!("before{i}"))
            .expect("echo on a held connection");
    }
    let on_b2 = per_backend(&held).get("backend-2").copied().unwrap_or(0);
    assert!(
        on_b2 >= 3,
        "too few connections on backend-2 to drain: {on_b2}"
    );

    // `sluice backend drain --vip lab-tcp4 --address <b2> --remove`, through the API.
    let t0 = Instant::now();
    apply(&socket, |c| {
        let b = vip_mut(c, "lab-tcp4")
            .backends
            .iter_mut()
            .find(|b| b.address == b2)
            .expect("backend-2");
        b.state = BackendState::Draining;
        b.drain_remove = true;
    })
    .expect("apply the config");
    let lifecycle = |s: &Status| {
        s.vips
            .iter()
            .find(|v| v.name == "lab-tcp4")
            .and_then(|v| v.backends.iter().find(|b| b.address == b2))
            .map(|b| (b.lifecycle.clone(), b.active))
    };
    let st = lifecycle(&status(&socket).expect("the daemon's status"));
    println!("drain started: backend-2 {st:?} ({on_b2} held connections)");
    assert!(st == Some(("draining".to_owned(), on_b2 as u64)), "{st:?}");

    // No new flow reaches it; every held connection (its own included) carries on.
    let counts = connections(lab.client(0), vip, 60).expect("connections through the VIP");
    assert!(
        !counts.contains_key("backend-2"),
        "a draining backend got new flows: {counts:?}"
    );
    for (i, h) in held.iter_mut().enumerate() {
        h.echo(&format!("draining{i}"))
            .expect("echo on a held connection");
    }

    // Its clients finish one by one; the daemon's progress follows each close.
    let (mine, mut others): (Vec<Held>, Vec<Held>) =
        held.into_iter().partition(|h| h.backend == "backend-2");
    let mut left = mine.len() as u64;
    for h in mine {
        h.close().expect("close a held connection");
        left -= 1;
        let t = Instant::now();
        loop {
            let s = lifecycle(&status(&socket).expect("the daemon's status"));
            if s.as_ref().is_some_and(|(_, a)| *a == left) || s.is_none() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "progress stuck: {s:?}, {left} left"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Drained (no connection for 1 s) and removed from the configuration.
    let removed = loop {
        let (c, _) = running_config(&socket).expect("the daemon's running config");
        if !vip_mut(&mut c.clone(), "lab-tcp4")
            .backends
            .iter()
            .any(|b| b.address == b2)
        {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "backend-2 not removed after its drain"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "backend-2 drained and removed {} ms after the drain began",
        removed.as_millis()
    );
    // Zero resets: everything else still talks, then closes cleanly.
    for (i, h) in others.iter_mut().enumerate() {
        h.echo(&format!("after{i}"))
            .expect("echo on a held connection");
    }
    for h in others {
        h.close().expect("close a held connection");
    }

    // Drain without removal, then undrain: it takes new flows again.
    let b3 = names["backend-3"];
    let set = |state: BackendState| {
        apply(&socket, |c| {
            if let Some(b) = vip_mut(c, "lab-tcp4")
                .backends
                .iter_mut()
                .find(|b| b.address == b3)
            {
                b.state = state;
            }
        })
    };
    set(BackendState::Draining).expect("set backend-3's state");
    let counts = connections(lab.client(0), vip, 30).expect("connections through the VIP");
    assert!(!counts.contains_key("backend-3"), "{counts:?}");
    set(BackendState::Active).expect("set backend-3's state");
    let counts = connections(lab.client(0), vip, 60).expect("connections through the VIP");
    assert!(
        counts.get("backend-3").copied().unwrap_or(0) >= 10,
        "undrained backend-3 takes too few: {counts:?}"
    );
    drop(d);
    lab.down().expect("take the lab down");
}

/// Every commit primes the neighbour entries of the FIB-resolved backends it keeps (one
/// empty datagram to their discard port, 9), the removal of a drained backend included:
/// the backends left hear from the daemon at once, not only at the periodic refresh (every
/// 20 s from the start).
#[test]
fn removing_a_drained_backend_primes_the_backends_left() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("lc", "prime")).backends(2)).expect("bring the lab up");
    let config = lab
        .daemon_config(&Weights::Equal)
        .expect("the lab's daemon config");
    let socket = config.daemon.api_socket.clone();
    let t0 = Instant::now();
    let d = Daemon::start(&lab, config).expect("start the daemon");
    let b2 = backends(&lab)["backend-2"];
    // Backend-1's discard port, as the daemon's primings reach it.
    let discard = lab
        .backend(0)
        .netns()
        .run(|| std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 9)))
        .expect("run in the namespace")
        .expect("bind the discard port");
    // Wait for nothing: just collect what is there.
    let quiet = |s: &std::net::UdpSocket| -> anyhow::Result<usize> {
        s.set_read_timeout(Some(Duration::from_millis(300)))?;
        let mut n = 0;
        while s.recv_from(&mut [0u8; 64]).is_ok() {
            n += 1;
        }
        Ok(n)
    };

    // `sluice backend drain --vip lab-tcp4 --address <b2> --remove`: nothing to drain, so it
    // goes after `lifecycle::SETTLE` (1 s).
    apply(&socket, |c| {
        let b = vip_mut(c, "lab-tcp4")
            .backends
            .iter_mut()
            .find(|b| b.address == b2)
            .expect("backend-2");
        b.state = BackendState::Draining;
        b.drain_remove = true;
    })
    .expect("apply the config");
    // The apply primed too: forget that.
    let before = quiet(&discard).expect("the discard counters");
    println!("{before} priming datagram(s) after the apply");
    let removed = loop {
        let (mut c, _) = running_config(&socket).expect("the daemon's running config");
        if !vip_mut(&mut c, "lab-tcp4")
            .backends
            .iter()
            .any(|b| b.address == b2)
        {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "backend-2 not removed after its drain"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    discard
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("set the read timeout");
    let primed = discard.recv_from(&mut [0u8; 64]);
    println!(
        "backend-2 removed {} ms after the start; backend-1 primed: {primed:?}",
        removed.as_millis()
    );
    assert!(
        removed < Duration::from_secs(17),
        "removed too late to tell its priming from the periodic one"
    );
    assert!(
        primed.is_ok(),
        "the removal of a drained backend did not prime the neighbours of those left"
    );
    drop(d);
    lab.down().expect("take the lab down");
}

/// `sluice lookup` on a DSR VIP whose backends have no configured MAC: the program runs
/// under the data plane's lock, the backend is named from the kernel's neighbour table
/// after it (`lookup::run`, then `lookup::resolve`).
#[test]
fn lookup_names_a_fib_resolved_backend() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("lc", "lookup")).backends(3)).expect("bring the lab up");
    let config = lab
        .daemon_config(&Weights::Equal)
        .expect("the lab's daemon config");
    let socket = config.daemon.api_socket.clone();
    let d = Daemon::start(&lab, config).expect("start the daemon");
    let addrs: Vec<IpAddr> = backends(&lab).into_values().collect();
    let client = IpAddr::from(lab.client(0).addr4());
    let mut seen = std::collections::BTreeSet::new();
    for port in 40_000..40_030 {
        let answer = client::request(
            &socket,
            &Request::Lookup {
                vip: "lab-tcp4".to_owned(),
                src: SocketAddr::new(client, port),
                dport: None,
            },
        )
        .expect("an API request");
        let Response::Lookup {
            verdict, backend, ..
        } = answer
        else {
            panic!("unexpected answer {answer:?}");
        };
        assert!(verdict == "forwarded", "port {port}: {verdict}");
        let b = backend.unwrap_or_else(|| panic!("port {port}: no backend named"));
        assert!(addrs.contains(&b), "port {port}: {b} is not a lab backend");
        seen.insert(b);
    }
    assert!(seen.len() > 1, "30 flows, one backend: {seen:?}");
    drop(d);
    lab.down().expect("take the lab down");
}

/// The environment variable that turns [`api_client_as_child`] into a client of this
/// socket (it does nothing in a normal test run).
const CLIENT_SOCKET: &str = "SLUICE_TEST_API_CLIENT";

/// Not a test of its own: the client half of `api_serves_root_and_its_group_only`, run in a
/// child process (this test binary, re-executed with other credentials), so the check does
/// not depend on any other binary having been built.
#[test]
fn api_client_as_child() {
    let Some(socket) = std::env::var_os(CLIENT_SOCKET) else {
        return;
    };
    match client::request(Path::new(&socket), &Request::Status { flows: false }) {
        Ok(Response::Status { status }) => {
            let names: Vec<&str> = status.vips.iter().map(|v| v.name.as_str()).collect();
            println!("SERVED {}", names.join(","));
        }
        Ok(r) => println!("REFUSED {r:?}"),
        Err(e) => println!("REFUSED {e:#}"),
    }
}

/// A status request as uid `nobody` with the given primary group and supplementary
/// groups; what the child printed.
/// A copy of this test binary that `nobody` can execute: where it was built may be out of
/// its reach (a checkout under a 0700 directory, like `mktemp -d`). Removed on drop.
struct ClientCopy {
    dir: std::path::PathBuf,
    exe: std::path::PathBuf,
}

impl ClientCopy {
    fn new() -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("sluice-acl-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let copy = Self {
            exe: dir.join("client"),
            dir,
        };
        std::fs::set_permissions(&copy.dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::copy(std::env::current_exe()?, &copy.exe)?;
        std::fs::set_permissions(&copy.exe, std::fs::Permissions::from_mode(0o755))?;
        Ok(copy)
    }
}

impl Drop for ClientCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn api_as_nobody(
    client: &ClientCopy,
    socket: &Path,
    gid: u32,
    groups: &[u32],
) -> anyhow::Result<String> {
    use std::os::unix::process::CommandExt as _;
    let groups = groups.to_vec();
    let mut cmd = std::process::Command::new(&client.exe);
    cmd.args([
        "--exact",
        "api_client_as_child",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CLIENT_SOCKET, socket);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // libtest prints "test api_client_as_child ... " before the child's own line.
    text.lines()
        .find_map(|l| {
            l.find("SERVED ")
                .or_else(|| l.find("REFUSED "))
                .map(|i| l[i..].to_owned())
        })
        .with_context(|| format!("the client child said nothing useful: {text}"))
}

#[test]
fn api_serves_root_and_its_group_only() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("lc", "acl")).backends(1)).expect("bring the lab up");
    let mut config = lab
        .daemon_config(&Weights::Equal)
        .expect("the lab's daemon config");
    // Debian's `nogroup` (65534) exists on every machine this runs on.
    config.daemon.api_group = Some("nogroup".to_owned());
    let socket = config.daemon.api_socket.clone();
    let d = Daemon::start(&lab, config).expect("start the daemon");
    let client = ClientCopy::new().expect("a copy of the test binary");
    // A member of the group (primary group): served.
    let out = api_as_nobody(&client, &socket, 65534, &[]).expect("the API as an unprivileged user");
    assert!(
        out.starts_with("SERVED") && out.contains("lab-tcp4"),
        "group member refused: {out}"
    );
    // Reaches the socket through a supplementary group but is neither root nor in the group
    // by its credentials: refused by the daemon.
    let out =
        api_as_nobody(&client, &socket, 65533, &[65534]).expect("the API as an unprivileged user");
    assert!(
        out.starts_with("REFUSED") && out.contains("permission denied: the sluice API"),
        "outsider served: {out}"
    );
    // No access to the socket at all: refused by the kernel.
    let out = api_as_nobody(&client, &socket, 65533, &[]).expect("the API as an unprivileged user");
    assert!(
        out.starts_with("REFUSED") && out.to_lowercase().contains("permission denied"),
        "outsider served: {out}"
    );
    drop(d);
    lab.down().expect("take the lab down");
}
