//! The fleet lab's BIRD instances: one on the router, one on each balancer, each with its
//! own config, control socket, pid file and log in `STATE_DIR/PREFIX/bird/`. The configs
//! are those shipped in `config/bird/` with the lab's addresses.

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use super::{ANNOUNCE_TABLE, FLEET_AS, Fleet, MAX_BALANCERS, Net, ROUTER_AS, ROUTER_HOST};
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

fn bfd(t: &mut String, interval_ms: u32) {
    let _ = writeln!(
        t,
        "protocol bfd {{\n    interface \"*\" {{\n        min rx interval {interval_ms} ms;\n        \
         min tx interval {interval_ms} ms;\n        multiplier 3;\n    }};\n}}\n"
    );
}

/// The router's config: a BGP session (with BFD) to every balancer address the lab can
/// have, so that balancers added later are picked up; ECMP into the kernel.
pub fn router_config(log: &str, bfd_interval_ms: u32) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# The fleet lab's router (config/bird/router.conf with the lab's addresses).\n\
         router id {};\nlog \"{log}\" all;\n\nprotocol device {{\n}}\n\n\
         protocol kernel {{\n    merge paths on limit 16;\n    \
         ipv4 {{ import none; export where source = RTS_BGP; }};\n}}\n",
        Net::Balancers.gateway()
    );
    bfd(&mut t, bfd_interval_ms);
    let _ = writeln!(
        t,
        "template bgp balancer {{\n    local as {ROUTER_AS};\n    bfd on;\n    hold time 9;\n    \
         connect retry time 1;\n    error wait time 1, 5;\n    \
         ipv4 {{ import all; export none; }};\n}}\n"
    );
    for k in 1..=MAX_BALANCERS {
        let _ = writeln!(
            t,
            "protocol bgp lb{k} from balancer {{ neighbor {} as {FLEET_AS}; }}",
            Net::Balancers.addr4(k as u8)
        );
    }
    t
}

/// Balancer `node`'s config: learn the VIP routes sluice installs in table
/// [`ANNOUNCE_TABLE`], export them to the router over BGP with BFD.
pub fn balancer_config(node: &Node, log: &str, bfd_interval_ms: u32) -> String {
    let me = node.addr4();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Balancer {name} (config/bird/balancer.conf with the lab's addresses).\n\
         router id {me};\nlog \"{log}\" all;\n\nipv4 table vips4;\n\nprotocol device {{\n}}\n\n\
         protocol kernel sluice_vips4 {{\n    kernel table {ANNOUNCE_TABLE};\n    learn;\n    \
         scan time 10;\n    ipv4 {{ table vips4; import all; export none; }};\n}}\n",
        name = node.name(),
    );
    bfd(&mut t, bfd_interval_ms);
    let _ = writeln!(
        t,
        "protocol bgp uplink {{\n    local {me} as {FLEET_AS};\n    neighbor {} as {ROUTER_AS};\n    \
         bfd on;\n    hold time 9;\n    connect retry time 1;\n    error wait time 1, 5;\n    \
         ipv4 {{\n        table vips4;\n        import none;\n        \
         export where source = RTS_INHERIT;\n        next hop self;\n    }};\n}}",
        Net::Balancers.addr4(ROUTER_HOST)
    );
    t
}

fn start(fleet: &Fleet, node: &Node, config: impl FnOnce(&str) -> String) -> Result<(), LabError> {
    let [conf, ctl, pid, log] = files(fleet.prefix(), node);
    let io = |what: String| move |source| LabError::Io { what, source };
    let d = dir(fleet.prefix());
    std::fs::create_dir_all(&d).map_err(io(format!("creating {}", d.display())))?;
    std::fs::write(&conf, config(&log.to_string_lossy()))
        .map_err(io(format!("writing {}", conf.display())))?;
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
