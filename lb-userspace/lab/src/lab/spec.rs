//! What to build ([`LabSpec`], [`Servers`]) and the generated daemon config's weights
//! ([`Weights`]).

use std::path::PathBuf;

use super::{DEFAULT_PREFIX, LabError};
use crate::config::Forwarding;

/// How the lab runs the backend servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Servers {
    /// Threads of this process ([`BackendServer`](super::server::BackendServer)); they end
    /// with it. The default: works from any program, tests included.
    InProcess,
    /// `EXE --netns PREFIX-bk lab backend --name backend-k --addr ...` processes, in their
    /// own process group, logging to `STATE_DIR/PREFIX/backend-k.log`
    /// ([`lab_dir`](super::lab_dir)); they outlive this process when the lab is
    /// [kept](super::Lab::keep). `EXE` is `sluice` (`std::env::current_exe()` in the CLI).
    Process(PathBuf),
    /// None: the test brings its own.
    None,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Every namespace is `PREFIX-ROLE` (`-sw`, `-lb`, `-c1`.., `-b1`..). Lowercase ASCII
    /// letters, digits and '-', at most 32 bytes, not starting or ending with '-'.
    pub prefix: String,
    /// Backend namespaces (1..=[`MAX_BACKENDS`](super::MAX_BACKENDS)).
    pub backends: usize,
    /// Client namespaces (1..=[`MAX_CLIENTS`](super::MAX_CLIENTS)).
    pub clients: usize,
    /// How the backends are set up (and the generated config's `vip.forwarding`).
    pub mode: Forwarding,
    /// Whether the generated daemon config has the IPv6 VIPs. Every node has IPv6
    /// addresses (and the backends the IPv6 VIP) either way.
    pub ipv6: bool,
    pub servers: Servers,
}

impl Default for LabSpec {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            backends: 3,
            clients: 1,
            mode: Forwarding::Dsr,
            ipv6: true,
            servers: Servers::InProcess,
        }
    }
}

impl LabSpec {
    /// The defaults (3 backends, 1 client, DSR, IPv6, in-process servers) with this prefix.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            ..Self::default()
        }
    }

    pub fn backends(mut self, n: usize) -> Self {
        self.backends = n;
        self
    }

    pub fn clients(mut self, n: usize) -> Self {
        self.clients = n;
        self
    }

    pub fn mode(mut self, mode: Forwarding) -> Self {
        self.mode = mode;
        self
    }

    pub fn ipv6(mut self, ipv6: bool) -> Self {
        self.ipv6 = ipv6;
        self
    }

    pub fn servers(mut self, servers: Servers) -> Self {
        self.servers = servers;
        self
    }
}

/// Daemon-config weights of the backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Weights {
    /// backend-k gets weight k (1:2:3...).
    Ascending,
    /// All 1.
    Equal,
    /// One a backend, in order.
    Explicit(Vec<u32>),
}

impl Weights {
    /// The weight of each of `n` backends.
    pub fn for_backends(&self, n: usize) -> Result<Vec<u32>, LabError> {
        match self {
            Weights::Ascending => Ok((1..=n).map(|k| k as u32).collect()),
            Weights::Equal => Ok(vec![1; n]),
            Weights::Explicit(w) if w.len() == n => Ok(w.clone()),
            Weights::Explicit(w) => Err(LabError::Invalid(format!(
                "{} weights for {n} backends",
                w.len()
            ))),
        }
    }
}
