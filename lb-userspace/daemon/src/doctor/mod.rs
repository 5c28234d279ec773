//! `sluice doctor`: what on this host keeps traffic from flowing, each finding with the
//! exact command that fixes it.
//!
//! - [`balancer`]: on the load balancer, from its config file (and the running daemon,
//!   asked through its API when it answers): the XDP program on the interface and its
//!   mode, bpffs, IP forwarding, the MTU headroom of IPIP, each backend's next hop, the
//!   API socket's group and modes, the clock and BTF; plus what `sluice config check`
//!   reports of this host ([`crate::preflight::offline`], shared, not repeated).
//! - [`backend`]: on a backend host, for one VIP: the VIP on a loopback or dummy
//!   interface, `arp_ignore`/`arp_announce`, `rp_filter` and decapsulation for IPIP, the
//!   MTU, a socket listening on the VIP's port.
//!
//! Each side reads the host into a facts structure (through `sluice_dataplane::host` and
//! `netlink`, which alone reach the kernel) and judges it with pure functions, so that the
//! judgements are unit-tested without a host to break.

pub mod backend;
pub mod balancer;

use std::{fmt::Write as _, net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// As it should be.
    Ok,
    /// Works, but slower, fragile, or not checked.
    Warn,
    /// Blocks (some) traffic: `sluice doctor` exits non-zero.
    Fail,
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The check, a short stable name (`vip-address`, `arp-ignore`, ...).
    pub check: String,
    pub status: Severity,
    /// What is wrong (or, when ok, what was found).
    pub detail: String,
    /// The command that fixes it (for a warning or a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(check: &str, detail: impl Into<String>) -> Self {
        Self {
            check: check.to_owned(),
            status: Severity::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warn(check: &str, detail: impl Into<String>, fix: Option<String>) -> Self {
        Self {
            check: check.to_owned(),
            status: Severity::Warn,
            detail: detail.into(),
            fix,
        }
    }

    pub fn fail(check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check: check.to_owned(),
            status: Severity::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Every finding of one run, in the order checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether something blocks traffic (the exit status is then 1).
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.status == Severity::Fail)
    }

    /// The findings of `check`.
    pub fn of<'a>(&'a self, check: &'a str) -> impl Iterator<Item = &'a Finding> + 'a {
        self.findings.iter().filter(move |f| f.check == check)
    }

    /// The human table: one line per finding (status, check, detail), the fix indented
    /// below it, then a summary line.
    pub fn table(&self) -> String {
        let width = self
            .findings
            .iter()
            .map(|f| f.check.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = String::new();
        let _ = writeln!(out, "{:<6} {:<width$}  detail", "status", "check");
        for f in &self.findings {
            let status = match f.status {
                Severity::Ok => "ok",
                Severity::Warn => "warn",
                Severity::Fail => "FAIL",
            };
            let _ = writeln!(out, "{status:<6} {:<width$}  {}", f.check, f.detail);
            if let Some(fix) = f.fix.as_ref().filter(|_| f.status != Severity::Ok) {
                let _ = writeln!(out, "{:<6} {:<width$}  fix: {fix}", "", "");
            }
        }
        let count = |s| self.findings.iter().filter(|f| f.status == s).count();
        let (fails, warns) = (count(Severity::Fail), count(Severity::Warn));
        let _ = if fails > 0 {
            writeln!(
                out,
                "{fails} problem{} blocking traffic, {warns} warning{}",
                plural(fails),
                plural(warns)
            )
        } else {
            writeln!(
                out,
                "nothing blocks traffic ({warns} warning{})",
                plural(warns)
            )
        };
        out
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The VIP a backend serves, as `--vip` takes it: `ADDR`, `ADDR:PORT`, `[V6]:PORT`, each
/// optionally followed by `/tcp` or `/udp` (what `sluice backend list` shows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipTarget {
    pub address: IpAddr,
    pub port: Option<u16>,
    pub udp: bool,
}

impl FromStr for VipTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?}: not ADDR, ADDR:PORT or [V6ADDR]:PORT (optionally /tcp or /udp)");
        let (rest, udp) = match s.rsplit_once('/') {
            Some((r, "udp")) => (r, true),
            Some((r, "tcp")) => (r, false),
            Some(_) => return Err(bad()),
            None => (s, false),
        };
        if let Ok(address) = rest.parse::<IpAddr>() {
            return Ok(Self {
                address,
                port: None,
                udp,
            });
        }
        let sa: std::net::SocketAddr = rest.parse().map_err(|_| bad())?;
        Ok(Self {
            address: sa.ip(),
            port: Some(sa.port()),
            udp,
        })
    }
}

/// A host prefix for an address: `10.0.0.1/32`, `fd00::1/128`.
pub(crate) fn host_prefix(a: IpAddr) -> String {
    format!("{a}/{}", if a.is_ipv4() { 32 } else { 128 })
}

/// The `sysctl` key of a per-interface setting (`net.ipv4.conf.eth0.arp_ignore`; a dot in
/// an interface name is written as a slash, as sysctl(8) reads it), and its path under
/// `/proc/sys`.
pub(crate) fn conf_key(iface: &str, setting: &str) -> (String, String) {
    (
        format!("net.ipv4.conf.{}.{setting}", iface.replace('.', "/")),
        format!("net/ipv4/conf/{iface}/{setting}"),
    )
}

/// The names of the XDP programs attached to `links`, by program id (those the kernel
/// names to us).
fn xdp_programs(
    links: &[sluice_dataplane::netlink::Link],
) -> std::collections::BTreeMap<u32, String> {
    links
        .iter()
        .flat_map(|l| l.xdp.iter().map(|&(_, id)| id))
        .filter_map(|id| Some((id, sluice_dataplane::host::program_name(id)?)))
        .collect()
}

/// The link called `name`.
fn link_named<'l>(
    links: &'l [sluice_dataplane::netlink::Link],
    name: &str,
) -> Option<&'l sluice_dataplane::netlink::Link> {
    links.iter().find(|l| l.name == name)
}

/// The name of interface `ifindex` (`ifindex N` when it is gone).
fn link_name(links: &[sluice_dataplane::netlink::Link], ifindex: u32) -> String {
    links
        .iter()
        .find(|l| l.index == ifindex)
        .map_or(format!("ifindex {ifindex}"), |l| l.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_targets_parse_as_backend_list_shows_them() {
        let t: VipTarget = "10.97.0.100:80/tcp".parse().unwrap();
        assert_eq!(
            t,
            VipTarget {
                address: "10.97.0.100".parse().unwrap(),
                port: Some(80),
                udp: false
            }
        );
        let t: VipTarget = "[fd97::100]:53/udp".parse().unwrap();
        assert_eq!((t.port, t.udp), (Some(53), true));
        let t: VipTarget = "fd97::100".parse().unwrap();
        assert_eq!(t.port, None);
        assert!("10.0.0.1:80/sctp".parse::<VipTarget>().is_err());
        assert!("web".parse::<VipTarget>().is_err());
    }

    #[test]
    fn the_table_shows_fixes_of_problems_only() {
        let r = Report {
            findings: vec![
                Finding::ok("vip-address", "10.0.0.1 on lo"),
                Finding::fail("arp-ignore", "answers ARP", "sysctl -w x=1"),
            ],
        };
        assert!(r.failed());
        let t = r.table();
        assert!(t.contains("FAIL   arp-ignore"), "{t}");
        assert!(t.contains("fix: sysctl -w x=1"), "{t}");
        assert!(t.contains("1 problem blocking traffic, 0 warnings"), "{t}");
        assert_eq!(
            conf_key("eth0.100", "rp_filter").0,
            "net.ipv4.conf.eth0/100.rp_filter"
        );
    }
}
