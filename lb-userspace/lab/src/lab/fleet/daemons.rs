//! The balancers' daemons: one configuration for the whole fleet (the same VIPs, backends,
//! weights and hash seed everywhere; only the host-local paths differ, since the lab's
//! balancers share one filesystem), run in-process ([`Fleet::start_daemon`]: tests, the
//! demo) or as `sluice run` processes ([`Fleet::spawn_daemon`]: `sluice lab up`).

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use super::{ANNOUNCE_PROTOCOL, ANNOUNCE_TABLE, FLEET_VIP4, Fleet};
use crate::{
    config::{self, Config},
    lab::{LAB_FLOW_TABLE_SIZE, LAB_TABLE_SIZE, LabError, TCP_PORT, UDP_PORT, daemon::Daemon},
};

/// The second VIP address of the fleet lab: the same backends under a least-connections
/// scheduler (`fleet-lc`), to show what a sequence scheduler does in a fleet.
pub const FLEET_VIP4_LC: Ipv4Addr = Ipv4Addr::new(10, 98, 100, 2);

/// A balancer's daemon as a `sluice run` process.
#[derive(Debug)]
pub struct DaemonRun {
    pub child: Child,
    pub log: PathBuf,
}

impl Fleet {
    /// The VIPs of the fleet's configuration: `fleet-tcp` (TCP [`TCP_PORT`], Maglev),
    /// `fleet-udp` (UDP [`UDP_PORT`], Maglev) on [`FLEET_VIP4`], and `fleet-lc` (TCP, least
    /// connections) on [`FLEET_VIP4_LC`]; every backend with `weights[k]` (1 when short).
    pub fn vips_toml(&self, weights: &[u32]) -> String {
        let mut t = String::new();
        for (name, addr, port, proto, sched) in [
            ("fleet-tcp", FLEET_VIP4, TCP_PORT, "tcp", "maglev"),
            ("fleet-udp", FLEET_VIP4, UDP_PORT, "udp", "maglev"),
            ("fleet-lc", FLEET_VIP4_LC, TCP_PORT, "tcp", "lc"),
        ] {
            let _ = writeln!(
                t,
                "\n[[vip]]\nname = \"{name}\"\naddress = \"{addr}\"\nport = {port}\n\
                 protocol = \"{proto}\"\nforwarding = \"{}\"\nscheduler = \"{sched}\"\n\
                 table_size = {LAB_TABLE_SIZE}",
                self.mode(),
            );
            for (k, b) in self.backends().iter().enumerate() {
                let w = weights.get(k).copied().unwrap_or(1);
                let _ = writeln!(
                    t,
                    "\n[[vip.backend]]\naddress = \"{}\"\nweight = {w}",
                    b.addr4()
                );
            }
        }
        t
    }

    /// Balancer `i`'s daemon config: sluice on its eth0 (native XDP), announcing the VIPs
    /// into table [`ANNOUNCE_TABLE`] (protocol [`ANNOUNCE_PROTOCOL`]), its state, API
    /// socket and pins in its own directories; the fleet's VIPs ([`Fleet::vips_toml`]).
    pub fn daemon_toml(&self, i: usize, weights: &[u32]) -> String {
        let dir = self.balancer_dir(i);
        format!(
            "# sluice on {name} of fleet lab {prefix}: the fleet's configuration; only the \
             paths of [daemon] differ between balancers.\n\
             [daemon]\ninterface = \"eth0\"\nxdp_mode = \"native\"\n\
             flow_table_size = {LAB_FLOW_TABLE_SIZE}\ntable_capacity = {cap}\n\
             state_dir = \"{dir}\"\napi_socket = \"{dir}/sluice.sock\"\npin_dir = \"{pins}\"\n\
             \n[daemon.announce]\nenabled = true\ntable = {ANNOUNCE_TABLE}\n\
             protocol = {ANNOUNCE_PROTOCOL}\ninterface = \"lo\"\n{vips}",
            name = self.balancer(i).name(),
            prefix = self.prefix(),
            cap = 2 * 2 * LAB_TABLE_SIZE * 6,
            dir = dir.display(),
            pins = self.balancer_pin_dir(i).display(),
            vips = self.vips_toml(weights),
        )
    }

    /// [`Fleet::daemon_toml`], parsed and validated.
    pub fn daemon_config(&self, i: usize, weights: &[u32]) -> Result<Config, LabError> {
        let origin = format!("fleet lab {} balancer {}", self.prefix(), i + 1);
        config::parse(&self.daemon_toml(i, weights), &origin)
            .map(|l| l.config)
            .map_err(|e| LabError::Config(e.to_string()))
    }

    /// Write balancer `i`'s config to its directory; its path.
    pub fn write_daemon_config(&self, i: usize, weights: &[u32]) -> Result<PathBuf, LabError> {
        self.daemon_config(i, weights)?;
        let dir = self.balancer_dir(i);
        let path = dir.join("sluice.toml");
        let io = |source| LabError::Io {
            what: format!("writing {}", path.display()),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::write(&path, self.daemon_toml(i, weights)).map_err(io)?;
        Ok(path)
    }

    /// Start balancer `i`'s daemon in this process (stopped, detached and unpinned when
    /// dropped).
    pub fn start_daemon(&self, i: usize, weights: &[u32]) -> Result<Daemon, LabError> {
        let config = self.daemon_config(i, weights)?;
        std::fs::create_dir_all(self.balancer_dir(i)).map_err(|source| LabError::Io {
            what: format!("creating {}", self.balancer_dir(i).display()),
            source,
        })?;
        Daemon::start_on(self.balancer(i).netns(), config)
    }

    /// Run balancer `i`'s daemon as `EXE --netns NS run --config FILE` in its own process
    /// group (it outlives this process; `sluice lab down` stops it), logging to
    /// `sluice.log` in its directory; returns once its API socket exists.
    pub fn spawn_daemon(
        &self,
        i: usize,
        exe: &std::path::Path,
        weights: &[u32],
    ) -> Result<DaemonRun, LabError> {
        use std::os::unix::process::CommandExt as _;
        let config = self.write_daemon_config(i, weights)?;
        let log = self.balancer_dir(i).join("sluice.log");
        let io = |what: String| move |source| LabError::Io { what, source };
        let out = std::fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io(format!("opening {}", log.display())))?;
        let mut child = std::process::Command::new(exe)
            .args(["--netns", self.balancer(i).ns(), "run", "--config"])
            .arg(&config)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io(format!("starting {}", exe.display())))?;
        let socket = self.api_socket(i);
        let t0 = Instant::now();
        while !socket.exists() {
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || t0.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(LabError::Invalid(format!(
                    "the daemon of {} did not start: {}",
                    self.balancer(i).name(),
                    text.trim()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(DaemonRun { child, log })
    }
}

/// `VIP:port` of the least-connections VIP.
pub fn lc_sock() -> SocketAddr {
    (FLEET_VIP4_LC, TCP_PORT).into()
}
