//! The daemon config the lab generates for its load balancer.

use std::{net::IpAddr, path::PathBuf};

use super::{
    IFACE, LAB_FLOW_TABLE_SIZE, LAB_TABLE_SIZE, Lab, LabError, STATE_DIR, TCP_PORT, UDP_PORT, VIP4,
    VIP6, Weights, config_path, lab_dir, lab_pin_dir,
};
use crate::config::{self, Config, Protocol};

impl Lab {
    /// A daemon config for this lab: sluice on the LB's eth0 (native XDP); VIPs
    /// [`VIP4`] (and [`VIP6`] if [`LabSpec::ipv6`](super::LabSpec::ipv6)) on TCP
    /// [`TCP_PORT`] and UDP [`UDP_PORT`] (named `lab-tcp4`, `lab-udp4`, `lab-tcp6`,
    /// `lab-udp6`), the lab's mode, every backend (MACs resolved by the kernel), table size
    /// [`LAB_TABLE_SIZE`], `state_dir` [`lab_dir`]; every other key (health checks
    /// included) at its default.
    /// Written as TOML and loaded with [`config::parse`], so it is validated and complete.
    pub fn daemon_config(&self, weights: &Weights) -> Result<Config, LabError> {
        use std::fmt::Write as _;
        let weights = weights.for_backends(self.backends.len())?;
        let families: &[IpAddr] = if self.spec.ipv6 {
            &[IpAddr::V4(VIP4), IpAddr::V6(VIP6)]
        } else {
            &[IpAddr::V4(VIP4)]
        };
        let vips = 2 * families.len() as u32;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "[daemon]\ninterface = \"{IFACE}\"\nxdp_mode = \"native\"\n\
             flow_table_size = {LAB_FLOW_TABLE_SIZE}\n\
             # room for as many VIPs again, for tests that add some, each of them a \
             sequence scheduler (4 × table_size)\n\
             table_capacity = {}\nstate_dir = \"{}\"\napi_socket = \"{}/sluice.sock\"\n\
             pin_dir = \"{}\"",
            2 * 4 * LAB_TABLE_SIZE * vips,
            lab_dir(self.prefix()).display(),
            lab_dir(self.prefix()).display(),
            lab_pin_dir(self.prefix()).display(),
        );
        for &vip in families {
            let family = if vip.is_ipv4() { 4 } else { 6 };
            for (proto, port) in [(Protocol::Tcp, TCP_PORT), (Protocol::Udp, UDP_PORT)] {
                let _ = writeln!(
                    t,
                    "\n[[vip]]\nname = \"lab-{proto}{family}\"\naddress = \"{vip}\"\n\
                     port = {port}\nprotocol = \"{proto}\"\nforwarding = \"{}\"\n\
                     table_size = {LAB_TABLE_SIZE}",
                    self.spec.mode,
                );
                for (b, w) in self.backends.iter().zip(&weights) {
                    let addr: IpAddr = if vip.is_ipv4() {
                        b.addr4.into()
                    } else {
                        b.addr6.into()
                    };
                    let _ = writeln!(t, "\n[[vip.backend]]\naddress = \"{addr}\"\nweight = {w}");
                }
            }
        }
        let loaded = config::parse(&t, &format!("lab {}", self.prefix()))
            .map_err(|e| LabError::Config(e.to_string()))?;
        Ok(loaded.config)
    }

    /// Write [`Lab::daemon_config`] to [`config_path`] (removed by `down`); its path.
    pub fn write_daemon_config(&self, weights: &Weights) -> Result<PathBuf, LabError> {
        let config = self.daemon_config(weights)?;
        let text = config
            .to_toml()
            .map_err(|e| LabError::Config(e.to_string()))?;
        let weights = weights.for_backends(self.backends.len())?;
        let header = format!(
            "# sluice daemon config for lab {p} ({mode}, weights {w:?}), written by \
             `sluice lab up`.\n# Run: sluice --netns {lb} run --config {path}\n\n",
            p = self.prefix(),
            mode = self.spec.mode,
            w = weights,
            lb = self.lb_ns(),
            path = config_path(self.prefix()).display(),
        );
        let path = config_path(self.prefix());
        let io = |source| LabError::Io {
            what: format!("writing {}", path.display()),
            source,
        };
        std::fs::create_dir_all(STATE_DIR).map_err(io)?;
        std::fs::write(&path, header + &text).map_err(io)?;
        Ok(path)
    }
}
