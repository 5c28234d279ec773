//! Announcing VIPs (`[daemon.announce]`), end to end with a real `sluice run` (this test
//! binary re-executed as the `sluice` command line: `sluice_as_child`) in the lab's
//! load-balancer namespace: the VIP's host route appears in table 100 with proto 99, a
//! stale route of proto 99 is removed at start and another protocol's is left alone; the
//! route follows the backends (servers killed, drained) and is repaired when deleted by
//! hand; `sluice announce withdraw --all` withdraws it while forwarding goes on, a restart
//! keeps the maintenance, `restore` ends it; a stopped daemon leaves its route.
//!
//! The lab (prefix `sl-ann-<pid>-<n>`) is removed when it drops, its namespace with the
//! routes; the daemon is stopped (SIGTERM, then SIGKILL), also on failure. Every wait is
//! bounded.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use sluice_core::{
    announce::AnnounceStatus,
    config::{BackendState, CheckKind, Config, Scheduler},
};
use sluice_daemon::api::{Request, Response, client};
use sluice_lab::lab::{self, Lab, LabSpec, Weights, lab_dir};
use sluice_tests::{
    api::running_config,
    child::{self, Daemon},
    conn::Held,
    prefix, require_root, serial,
};

const STALE: &str = "10.99.0.7";
const FOREIGN: &str = "10.99.0.8";

/// Not a test of its own: the `sluice` command line, run by the test below in a child
/// process (this binary re-executed), so that it needs no other binary built.
#[test]
fn sluice_as_child() {
    child::run_if_child();
}

/// The files of the test (config file, state directory, API socket) and its lab.
struct Files {
    dir: PathBuf,
    file: PathBuf,
    socket: PathBuf,
    ns: String,
}

impl Files {
    fn new(lab: &Lab) -> anyhow::Result<(Self, Config)> {
        let dir = lab_dir(lab.prefix()).join("announce");
        std::fs::create_dir_all(&dir)?;
        let f = Self {
            file: dir.join("sluice.toml"),
            socket: dir.join("sluice.sock"),
            ns: lab.lb().ns().to_owned(),
            dir,
        };
        let mut config = lab.daemon_config(&Weights::Equal)?;
        config.daemon.state_dir = f.dir.join("state");
        config.daemon.api_socket.clone_from(&f.socket);
        config.daemon.announce.enabled = true;
        // One VIP on the address, checked fast: its backends' servers decide.
        config.vips.retain(|v| v.name == "lab-tcp4");
        for v in &mut config.vips {
            assert_eq!(
                v.health.check,
                CheckKind::Tcp,
                "the lab's TCP VIP is checked"
            );
            v.health.interval_ms = 300;
            v.health.timeout_ms = 200;
            v.health.rise = 2;
            v.health.fall = 2;
        }
        std::fs::write(&f.file, config.to_toml()?)?;
        Ok((f, config))
    }

    /// `sluice --api-socket S ARGS...` to its end: stdout (a failure is an error).
    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["--api-socket", self.socket.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        let out = child::command(&all)?.stdin(Stdio::null()).output()?;
        ensure!(
            out.status.success(),
            "sluice {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `sluice announce status --json`.
    fn status(&self) -> anyhow::Result<AnnounceStatus> {
        let out = self.cli(&["announce", "status", "--json"])?;
        // The test harness of the child prints its own lines around the command's.
        let json = out
            .find('{')
            .zip(out.rfind('}'))
            .map(|(a, b)| &out[a..=b])
            .with_context(|| format!("no JSON in {out}"))?;
        serde_json::from_str(json).with_context(|| format!("status JSON: {out}"))
    }

    /// `sluice run` in the lab's load-balancer namespace, once its API answers.
    fn start(&self) -> anyhow::Result<Daemon> {
        let n = std::fs::read_dir(&self.dir)?.count();
        let log = self.dir.join(format!("daemon-{n}.log"));
        Daemon::start(&self.ns, &self.file, log, || {
            client::request(&self.socket, &Request::AnnounceStatus).is_ok()
        })
    }

    /// `sluice run` that must refuse to start: its log.
    fn refused(&self) -> anyhow::Result<String> {
        let out = child::command(&[
            "--netns",
            &self.ns,
            "run",
            "--config",
            self.file.to_str().unwrap_or_default(),
        ])?
        .stdin(Stdio::null())
        .output()?;
        ensure!(!out.status.success(), "sluice run started");
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// `ip route` in the LB namespace, table 100, with `args`.
    fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("ip")
            .args(["-n", &self.ns, "route"])
            .args(args)
            .output()?;
        ensure!(
            out.status.success(),
            "ip route {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The destinations of table 100's routes of protocol `proto`.
    fn routes(&self, proto: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .ip(&["show", "table", "100", "proto", proto])?
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect())
    }

    /// Wait (at most `within`) until `address` is (`true`) or is not in table 100 proto 99.
    fn wait_route(&self, address: &str, present: bool, within: Duration) -> anyhow::Result<()> {
        let t0 = Instant::now();
        loop {
            let routes = self.routes("99")?;
            if routes.iter().any(|r| r == address) == present {
                return Ok(());
            }
            if t0.elapsed() > within {
                bail!(
                    "route {address} {} after {within:?}: table 100 proto 99 has {routes:?}; status {:?}",
                    if present { "missing" } else { "still there" },
                    self.status()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Change the running configuration through the API.
    fn apply(&self, change: impl FnOnce(&mut Config)) -> anyhow::Result<()> {
        let (mut c, version) = running_config(&self.socket)?;
        change(&mut c);
        match client::request(
            &self.socket,
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

    /// The daemon's metrics (`daemon.metrics_listen`, in the LB namespace).
    fn metrics(&self, lab: &Lab) -> anyhow::Result<String> {
        Ok(sluice_tests::api::scrape(lab, Duration::from_secs(2))?.1)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn only(s: &AnnounceStatus) -> (bool, &str) {
    assert_eq!(s.addresses.len(), 1, "{s:?}");
    (s.addresses[0].announced, s.addresses[0].reason.as_str())
}

fn set_state(c: &mut Config, state: BackendState) {
    for b in &mut c.vips[0].backends {
        b.state = state;
    }
}

/// A connection to the VIP from the client goes through the balancer to a backend.
fn forwards(lab: &Lab) {
    let vip = SocketAddr::new(lab.vip4().into(), lab::TCP_PORT);
    let mut c = Held::open(lab.client(0), vip).expect("a connection to the VIP");
    c.echo("through").expect("echoed through the balancer");
}

#[test]
fn routes_follow_the_backends_and_maintenance_survives_a_restart() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("ann", "a")).backends(2)).expect("bring the lab up");
    let (f, config) = Files::new(&lab).expect("the test's files");
    let vip = lab.vip4().to_string();
    let wait = Duration::from_secs(5);
    // Left by a crashed daemon (ours), and another routing daemon's (not ours).
    f.ip(&[
        "add",
        &format!("{STALE}/32"),
        "dev",
        "lo",
        "table",
        "100",
        "proto",
        "99",
    ])
    .expect("add the stale route");
    f.ip(&[
        "add",
        &format!("{FOREIGN}/32"),
        "dev",
        "lo",
        "table",
        "100",
        "proto",
        "98",
    ])
    .expect("add the foreign route");

    // The routes' interface must exist: named when it does not.
    let mut missing = config.clone();
    missing.daemon.announce.interface = "sl-nosuch0".to_owned();
    std::fs::write(&f.file, missing.to_toml().expect("TOML")).expect("write the config");
    let log = f.refused().expect("a refused start");
    assert!(
        log.contains("daemon.announce.interface \"sl-nosuch0\": no such interface"),
        "{log}"
    );
    std::fs::write(&f.file, config.to_toml().expect("TOML")).expect("write the config");

    let d = f.start().expect("start the daemon");
    f.wait_route(&vip, true, wait).expect("the VIP announced");
    f.wait_route(STALE, false, wait)
        .expect("the stale route removed at start");
    assert_eq!(
        f.routes("98").expect("routes"),
        [FOREIGN],
        "another protocol's route stays"
    );
    let s = f.status().expect("status");
    assert_eq!(only(&s), (true, "announced"), "{s:?}");
    assert!(
        s.enabled && !s.maintenance && s.warnings.is_empty(),
        "{s:?}"
    );
    assert_eq!((s.table, s.protocol, s.interface.as_str()), (100, 99, "lo"));
    let t0 = Instant::now();
    loop {
        let m = f.metrics(&lab).expect("metrics");
        if m.contains(&format!("sluice_vip_announced{{address=\"{vip}\"}} 1"))
            && m.contains("sluice_announce_maintenance 0")
        {
            break;
        }
        assert!(
            t0.elapsed() < wait,
            "metrics without the announce families:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Deleted by hand: put back by the periodic reconciliation.
    f.ip(&["del", &format!("{vip}/32"), "table", "100", "proto", "99"])
        .expect("delete the route");
    f.wait_route(&vip, true, wait).expect("the route repaired");

    // Every backend's server killed: health down, withdrawn; back up, announced.
    for i in 0..2 {
        lab.kill_backend_server(i).expect("kill a backend's server");
    }
    f.wait_route(&vip, false, wait)
        .expect("withdrawn with no backend up");
    assert_eq!(
        only(&f.status().expect("status")),
        (false, "no serving backend")
    );
    for i in 0..2 {
        lab.start_backend_server(i)
            .expect("start a backend's server");
    }
    f.wait_route(&vip, true, wait)
        .expect("announced with backends up");

    // Every backend drained: withdrawn; undrained: announced.
    f.apply(|c| set_state(c, BackendState::Draining))
        .expect("drain");
    f.wait_route(&vip, false, wait)
        .expect("withdrawn when drained");
    f.apply(|c| set_state(c, BackendState::Active))
        .expect("undrain");
    f.wait_route(&vip, true, wait)
        .expect("announced when undrained");

    // Maintenance: withdrawn, forwarding goes on.
    let out = f
        .cli(&["announce", "withdraw", "--all"])
        .expect("withdraw --all");
    assert!(out.contains("maintenance"), "{out}");
    f.wait_route(&vip, false, Duration::from_secs(1))
        .expect("withdrawn in maintenance");
    forwards(&lab);
    let s = f.status().expect("status");
    assert_eq!(only(&s), (false, "maintenance"));
    assert!(s.maintenance && s.maintenance_since.is_some(), "{s:?}");

    // Kept across a restart.
    d.stop().expect("stop the daemon");
    let d = f.start().expect("start the daemon again");
    std::thread::sleep(Duration::from_secs(4));
    f.wait_route(&vip, false, Duration::ZERO)
        .expect("still withdrawn after the restart");
    assert!(f.status().expect("status").maintenance);
    forwards(&lab);
    let text = f.cli(&["announce", "status"]).expect("announce status");
    assert!(
        text.contains("maintenance: yes") && text.contains(&vip),
        "{text}"
    );

    f.cli(&["announce", "restore"]).expect("restore");
    f.wait_route(&vip, true, Duration::from_secs(1))
        .expect("announced after restore");

    // A sequence scheduler on an announcing balancer is warned about.
    f.apply(|c| c.vips[0].scheduler = Scheduler::RoundRobin)
        .expect("switch to rr");
    let s = f.status().expect("status");
    assert!(
        s.warnings.len() == 1 && s.warnings[0].contains("use maglev for fleets"),
        "{s:?}"
    );

    // A stopped daemon leaves its route: the pinned balancer keeps forwarding.
    let (_, log) = d.stop().expect("stop the daemon");
    for l in log
        .lines()
        .filter(|l| l.contains("VIP address") || l.contains("fleet"))
    {
        println!("daemon: {l}");
    }
    assert!(
        log.contains("use maglev for fleets"),
        "the warning is logged:\n{log}"
    );
    f.wait_route(&vip, true, Duration::ZERO)
        .expect("the route stays after a stop");
    forwards(&lab);
    assert!(Path::new(&f.dir).join("state/announce.json").exists());
}
