//! The lab's names and address plan: namespace names (`PREFIX-ROLE`), pin names, the
//! lab's files and pin directory, and each node's addresses and MACs.

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use super::{LabError, NET4, NET6, STATE_DIR};
use crate::{config, dataplane::pinned};

/// What a namespace is in a lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Switch,
    Lb,
    /// Client k (1-based, as in its name).
    Client(usize),
    /// Backend k (1-based, as in its name).
    Backend(usize),
    /// The router of a fleet lab (`sluice lab up --balancers N`).
    Router,
    /// Balancer k of a fleet lab (1-based, as in its name).
    Balancer(usize),
}

impl Role {
    /// The namespace suffix: `sw`, `lb`, `c1`, `b1`; in a fleet lab `r`, `lb1`.
    pub fn suffix(self) -> String {
        match self {
            Role::Switch => "sw".into(),
            Role::Lb => "lb".into(),
            Role::Client(k) => format!("c{k}"),
            Role::Backend(k) => format!("b{k}"),
            Role::Router => "r".into(),
            Role::Balancer(k) => format!("lb{k}"),
        }
    }

    /// The node's name: `switch`, `lb`, `client-1`, `backend-1` (a backend server answers
    /// with it).
    pub fn node_name(self) -> String {
        match self {
            Role::Switch => "switch".into(),
            Role::Lb => "lb".into(),
            Role::Client(k) => format!("client-{k}"),
            Role::Backend(k) => format!("backend-{k}"),
            Role::Router => "router".into(),
            Role::Balancer(k) => format!("lb-{k}"),
        }
    }

    fn parse_suffix(s: &str) -> Option<Self> {
        let num = |t: &str| {
            (!t.is_empty() && !t.starts_with('0') && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse().ok())
                .flatten()
        };
        match s {
            "sw" => Some(Role::Switch),
            "lb" => Some(Role::Lb),
            "r" => Some(Role::Router),
            _ => {
                if let Some(k) = s.strip_prefix("lb") {
                    num(k).map(Role::Balancer)
                } else if let Some(k) = s.strip_prefix('c') {
                    num(k).map(Role::Client)
                } else {
                    num(s.strip_prefix('b')?).map(Role::Backend)
                }
            }
        }
    }

    /// The last octet of the node's addresses.
    pub(super) fn host(self) -> Option<u8> {
        match self {
            Role::Switch | Role::Router | Role::Balancer(_) => None,
            Role::Lb => Some(1),
            Role::Client(k) => u8::try_from(1 + k).ok(),
            Role::Backend(k) => u8::try_from(10 + k).ok(),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.node_name())
    }
}

/// The namespace name of `role` in the lab `prefix`.
pub fn ns_name(prefix: &str, role: Role) -> String {
    format!("{prefix}-{}", role.suffix())
}

/// `(prefix, role)` of a lab namespace name.
pub fn parse_ns_name(name: &str) -> Option<(&str, Role)> {
    let (prefix, suffix) = name.rsplit_once('-')?;
    if prefix.is_empty() {
        return None;
    }
    Some((prefix, Role::parse_suffix(suffix)?))
}

/// The pin name of `program` on `iface` in namespace `ns`.
pub fn pin_name(program: &str, iface: &str, ns: &str) -> String {
    format!("{program}@{iface}@{ns}")
}

/// The daemon config `sluice lab up --prefix PREFIX` writes.
pub fn config_path(prefix: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{prefix}.toml"))
}

/// The lab's directory: the backend server processes' logs (`backend-k.log`) and the
/// daemon's `state_dir` (`status.json`, for `sluice backend list --state-dir`).
pub fn lab_dir(prefix: &str) -> PathBuf {
    Path::new(STATE_DIR).join(prefix)
}

/// The pin directory of lab `prefix`'s balancer (`daemon.pin_dir`): its own, since every
/// lab's load balancer attaches to an interface called eth0.
pub fn lab_pin_dir(prefix: &str) -> PathBuf {
    Path::new(pinned::PIN_ROOT).join("lab").join(prefix)
}

pub(super) fn addr4(host: u8) -> Ipv4Addr {
    let o = NET4.octets();
    Ipv4Addr::new(o[0], o[1], o[2], host)
}

pub(super) fn addr6(host: u8) -> Ipv6Addr {
    // The decimal digits read as hex: 11 -> ::11.
    let digits = u16::from(host / 100) << 8 | u16::from(host / 10 % 10) << 4 | u16::from(host % 10);
    let s = NET6.segments();
    Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, digits)
}

pub(super) fn mac(port: bool, host: u8) -> [u8; 6] {
    [0x02, 0x97, 0, 0, u8::from(port), host]
}

pub(super) fn fmt_mac(m: [u8; 6]) -> String {
    config::format_mac(&m)
}

/// Check a lab prefix: lowercase ASCII letters, digits and '-', 1..=32 bytes, no '-' at
/// either end.
pub fn validate_prefix(prefix: &str) -> Result<(), LabError> {
    let ok = (1..=32).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !prefix.starts_with('-')
        && !prefix.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(LabError::Invalid(format!(
            "prefix {prefix:?}: use 1 to 32 lowercase letters, digits and '-' (not at either end)"
        )))
    }
}
