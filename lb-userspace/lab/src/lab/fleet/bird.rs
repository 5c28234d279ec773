//! The fleet lab's BIRD instances: one on the router, one on each balancer, each with its
//! own config, control socket, pid file and log in `STATE_DIR/PREFIX/bird/`. The configs
//! are those shipped in `config/bird/` with the lab's addresses.

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use super::{ANNOUNCE_TABLE, FLEET_AS, Fleet, MAX_BALANCERS, Net, ROUTER_AS};
use crate::lab::{LabError, Node, lab_dir};

/// How long a BIRD may take to start (its control socket to appear).
const START: Duration = Duration::from_secs(10);

/// The directory of the lab's BIRD files.
pub fn dir(prefix: &str) -> PathBuf {
    lab_dir(prefix).join("bird")
}

/// `(config, control socket, pid file, log)` of the BIRD of `node`.
fn files(prefix: &str, node: &Node) -> [PathBuf; 4] {
    let d = dir(prefix);
    let s = node.role().suffix();
    ["conf", "ctl", "pid", "log"].map(|ext| d.join(format!("{s}.{ext}")))
}

impl Fleet {
    /// The control socket of `node`'s BIRD (`birdc -s PATH`).
    pub fn bird_socket(&self, node: &Node) -> PathBuf {
        let [_, ctl, _, _] = files(self.prefix(), node);
        ctl
    }
}

/// The shipped configurations (`config/bird/`), which the lab runs with its own addresses,
/// log file and BFD interval: what the tests exercise is what users are given.
const ROUTER_CONF: &str = include_str!("../../../../../config/bird/router.conf");
const BALANCER_CONF: &str = include_str!("../../../../../config/bird/balancer.conf");
/// The example addresses in the shipped files.
const EXAMPLE_ROUTER: &str = "10.1.0.1";
const EXAMPLE_BALANCER: &str = "10.1.0.11";
/// Where the shipped router config lists its balancers (one session each), to the end.
const ROUTER_SESSIONS: &str = "# One per balancer.";

/// `text` with every `from` replaced, or an error naming what the shipped file lacks.
fn replace(text: &str, file: &str, from: &str, to: &str) -> Result<String, LabError> {
    if text.contains(from) {
        Ok(text.replace(from, to))
    } else {
        Err(LabError::Config(format!(
            "config/bird/{file} no longer contains {from:?}, which the fleet lab replaces"
        )))
    }
}

/// The log and BFD lines of the lab: `log` to `log`, BFD every `interval_ms`.
fn lab_lines(text: &str, file: &str, log: &str, interval_ms: u32) -> Result<String, LabError> {
    let t = replace(
        text,
        file,
        "log syslog all;",
        &format!("log \"{log}\" all;"),
    )?;
    let t = replace(
        &t,
        file,
        "min rx interval 100 ms",
        &format!("min rx interval {interval_ms} ms"),
    )?;
    replace(
        &t,
        file,
        "min tx interval 100 ms",
        &format!("min tx interval {interval_ms} ms"),
    )
}

/// The router's config: `config/bird/router.conf` with a BGP session (with BFD) to every
/// balancer address the lab can have, so that balancers added later are picked up.
pub fn router_config(log: &str, bfd_interval_ms: u32) -> Result<String, LabError> {
    let file = "router.conf";
    let head = ROUTER_CONF
        .split_once(ROUTER_SESSIONS)
        .map(|(head, _)| head)
        .ok_or_else(|| {
            LabError::Config(format!(
                "config/bird/{file} has no {ROUTER_SESSIONS:?} line"
            ))
        })?;
    let gateway = Net::Balancers.gateway().to_string();
    let mut t = replace(
        head,
        file,
        &format!("router id {EXAMPLE_ROUTER};"),
        &format!("router id {gateway};"),
    )?;
    t = lab_lines(&t, file, log, bfd_interval_ms)?;
    let _ = writeln!(
        t,
        "{ROUTER_SESSIONS} (the fleet lab: every address it may use)"
    );
    for k in 1..=MAX_BALANCERS {
        let _ = writeln!(
            t,
            "protocol bgp lb{k} from balancer {{ neighbor {} as {FLEET_AS}; }}",
            Net::Balancers.addr4(k as u8)
        );
    }
    Ok(t)
}

/// Balancer `node`'s config: `config/bird/balancer.conf` with its address and the
/// router's: it learns the VIP routes sluice installs in table [`ANNOUNCE_TABLE`] and
/// exports them to the router over BGP with BFD.
pub fn balancer_config(node: &Node, log: &str, bfd_interval_ms: u32) -> Result<String, LabError> {
    let file = "balancer.conf";
    // The balancer's example address first: the router's is a prefix of it.
    let t = replace(
        BALANCER_CONF,
        file,
        EXAMPLE_BALANCER,
        &node.addr4().to_string(),
    )?;
    let t = replace(
        &t,
        file,
        &format!("neighbor {EXAMPLE_ROUTER} as {ROUTER_AS};"),
        &format!("neighbor {} as {ROUTER_AS};", Net::Balancers.gateway()),
    )?;
    let t = replace(
        &t,
        file,
        &format!("kernel table {ANNOUNCE_TABLE};"),
        &format!("kernel table {ANNOUNCE_TABLE};"),
    )?;
    lab_lines(&t, file, log, bfd_interval_ms)
}

fn start(
    fleet: &Fleet,
    node: &Node,
    config: impl FnOnce(&str) -> Result<String, LabError>,
) -> Result<(), LabError> {
    let [conf, ctl, pid, log] = files(fleet.prefix(), node);
    let io = |what: String| move |source| LabError::Io { what, source };
    let d = dir(fleet.prefix());
    std::fs::create_dir_all(&d).map_err(io(format!("creating {}", d.display())))?;
    std::fs::write(&conf, config(&log.to_string_lossy())?)
        .map_err(io(format!("writing {}", conf.display())))?;
    // A socket left by an earlier run (usually none); BIRD reports one it cannot replace.
    let _ = std::fs::remove_file(&ctl);
    // BIRD forks into the background once its config is loaded; it stays in the namespace.
    node.exec(&[
        "bird",
        "-c",
        &conf.to_string_lossy(),
        "-s",
        &ctl.to_string_lossy(),
        "-P",
        &pid.to_string_lossy(),
    ])
    .map_err(|e| e.in_ns(node.ns()))?;
    let t0 = Instant::now();
    while !ctl.exists() {
        if t0.elapsed() > START {
            return Err(LabError::Invalid(format!(
                "BIRD in {} did not start within {START:?} (log {})",
                node.ns(),
                log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub(super) fn start_router(fleet: &Fleet) -> Result<(), LabError> {
    let interval = fleet.spec.bfd_interval_ms;
    start(fleet, fleet.router(), |log| router_config(log, interval))
}

pub(super) fn start_balancer(fleet: &Fleet, i: usize) -> Result<(), LabError> {
    let interval = fleet.spec.bfd_interval_ms;
    let lb = fleet.balancer(i);
    start(fleet, lb, |log| balancer_config(lb, log, interval))
}

/// SIGKILL `node`'s BIRD (no goodbye to its peers).
pub(super) fn kill(fleet: &Fleet, node: &Node) -> Result<(), LabError> {
    let [_, _, pid, _] = files(fleet.prefix(), node);
    let text = std::fs::read_to_string(&pid).map_err(|source| LabError::Io {
        what: format!("reading {}", pid.display()),
        source,
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| LabError::Invalid(format!("{}: not a pid: {text:?}", pid.display())))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| LabError::Invalid(format!("killing BIRD {pid}: {e}")))
}
