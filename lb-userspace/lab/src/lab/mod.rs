//! The namespace lab: clients, a load balancer and backends as network namespaces on one
//! bridge, for tests, demos and trying sluice out (`sluice lab up|down|status`).
//!
//! Nothing touches the host's own interfaces, routes or firewall: every link is created
//! from inside the lab's switch namespace and lives in lab namespaces only, and every name
//! the lab creates starts with its prefix (default [`DEFAULT_PREFIX`]), so that
//! [`Lab::down_prefix`] finds and removes the leftovers of a crashed run.
//!
//! # Topology
//!
//! ```text
//!                 switch namespace PREFIX-sw: bridge br0 (no IP), ports p-lb, p-c1, p-b1...
//!                   │ XDP_PASS pinned on p-lb (veth only delivers frames the LB sends
//!                   │ with XDP_TX to a peer running XDP)
//!   PREFIX-lb  ─────┤  eth0 10.97.0.1    fd97::1     forwarding on; sluice runs here
//!   PREFIX-c1  ─────┤  eth0 10.97.0.2    fd97::2     VIP routes via the LB; `tx off`
//!   ...             │
//!   PREFIX-b1  ─────┤  eth0 10.97.0.11   fd97::11    VIPs on lo; backend-1's server
//!   PREFIX-b2  ─────┘  eth0 10.97.0.12   fd97::12    ...
//! ```
//!
//! # Address plan
//!
//! One test range a family, the same in every lab (labs are isolated from each other and
//! from the host):
//!
//! | | IPv4 `10.97.0.0/24` | IPv6 `fd97::/64` | MAC of eth0 |
//! |---|---|---|---|
//! | load balancer | `10.97.0.1` | `fd97::1` | `02:97:00:00:00:01` |
//! | client k (1..=9) | `10.97.0.(1+k)` | `fd97::(1+k)` | `02:97:00:00:00:(1+k)` |
//! | backend k (1..=89) | `10.97.0.(10+k)` | `fd97::(10+k)` | `02:97:00:00:00:(10+k)` |
//! | VIP ([`VIP4`], [`VIP6`]) | `10.97.0.100` | `fd97::100` | — |
//!
//! The IPv6 host part is the IPv4 one's decimal digits (backend 1: `10.97.0.11`,
//! `fd97::11`). MACs are hex (`:0b` for host 11); a node's switch-side port has
//! `02:97:00:00:01:xx`. Every node has both families.
//!
//! # Nodes
//!
//! - clients: routes `VIP/32` and `VIP/128` via the LB; TX checksum offload off on eth0
//!   (partial checksums do not survive `XDP_TX`); ICMP redirects ignored.
//! - load balancer: IPv4 and IPv6 forwarding on, sending redirects off. Run sluice with
//!   `sluice --netns PREFIX-lb run --config <Lab::write_daemon_config>` (native XDP on eth0).
//! - backends: both VIPs on `lo`, `arp_ignore=1`, `arp_announce=2`, `rp_filter=0`,
//!   non-local binds allowed (a server can bind the VIPs while they are missing); in
//!   [`Forwarding::Ipip`] mode also sluice's decap program pinned on eth0. Each backend
//!   runs a [`server::BackendServer`] named `backend-k` on its own addresses and the VIPs
//!   (TCP [`TCP_PORT`]: HTTP, `HOLD`, raw; UDP [`UDP_PORT`]: echo).
//!
//! Pins: `/sys/fs/bpf/sluice/links/PROGRAM@IFACE@NAMESPACE` (the namespace makes them
//! unique: every backend's interface is eth0), and the balancer's pin directory
//! [`lab_pin_dir`] (`/sys/fs/bpf/sluice/lab/PREFIX`).
//!
//! # Using it
//!
//! - Indices are 0-based, names 1-based: `lab.backend(0)` is `backend-1` in `PREFIX-b1`.
//! - Sockets: [`Node::run`] runs a closure with the thread inside the node's namespace
//!   (`lab.client(0).run(|| TcpStream::connect(...))`); the socket stays there.
//! - Commands: [`Node::exec`] / [`Node::command`] (setns in the child; the host's mounts,
//!   so `sluice` commands that pin work, but /sys/class/net is the host's: ask `ip`).
//! - sluice in-process: `lab.lb().run(|| dp.attach(programs::BALANCER, "eth0", mode))`; as
//!   a process: `sluice --netns PREFIX-lb run --config ...` (never `ip netns exec`, which
//!   remounts /sys and hides pins).
//! - Backend servers: threads of this process by default ([`Servers::InProcess`]);
//!   `sluice lab up` runs them as `sluice lab backend` processes ([`Servers::Process`]).
//!   [`Lab::kill_backend_server`], [`Lab::start_backend_server`], [`Lab::break_backend`],
//!   [`Lab::add_backend`] change the pool under a running daemon.
//! - Cleanup: [`Lab::down`] or drop; [`Lab::down_prefix`] for the leftovers of a run that
//!   crashed (tests: give every run its own prefix with the pid in it, and remove the labs of
//!   dead pids first, as `tests/lab.rs` does).
//!
//! # Example
//!
//! ```no_run
//! use std::{io::{Read as _, Write as _}, net::{Shutdown, TcpStream}};
//! use sluice_lab::lab::{Lab, LabSpec, Weights};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lab = Lab::up(LabSpec::new("sl-example"))?; // 3 backends, 1 client, DSR
//! let b = lab.backend(0); // backend-1, 10.97.0.11
//! let mut s = lab.client(0).run(|| TcpStream::connect(b.sock4(80)))??;
//! s.write_all(b"hi")?;
//! s.shutdown(Shutdown::Write)?;
//! let mut name = String::new();
//! s.read_to_string(&mut name)?; // "backend-1\n"
//! let config = lab.write_daemon_config(&Weights::Ascending)?;
//! // sluice --netns sl-example-lb run --config <config>, then connect to lab.vip4()...
//! lab.down()?; // or drop it
//! # Ok(()) }
//! ```

mod backends;
pub mod daemon;
mod daemon_config;
pub mod fleet;
mod names;
pub mod netns;
mod node;
pub mod server;
mod spec;
mod teardown;
mod topology;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    sync::Mutex,
    time::Duration,
};

use self::{
    backends::Running,
    names::{addr4, addr6, fmt_mac, mac},
    netns::Netns,
    teardown::lab_pins,
};
pub use self::{
    names::{
        Role, config_path, lab_dir, lab_pin_dir, ns_name, parse_ns_name, pin_name, validate_prefix,
    },
    netns::NETNS_DIR,
    node::Node,
    server::{TCP_PORT, UDP_PORT},
    spec::{LabSpec, Servers, Weights},
    teardown::{LabStatus, NsStatus, Removed},
};
use crate::{config::Forwarding, dataplane::DataplaneError};

/// The prefix of `sluice lab up` without `--prefix`.
pub const DEFAULT_PREFIX: &str = "sl-lab";
/// The lab's IPv4 network (`10.97.0.0/24`).
pub const NET4: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 0);
/// Prefix length of [`NET4`].
pub const NET4_LEN: u8 = 24;
/// The lab's IPv6 network (`fd97::/64`).
pub const NET6: Ipv6Addr = Ipv6Addr::new(0xfd97, 0, 0, 0, 0, 0, 0, 0);
/// Prefix length of [`NET6`].
pub const NET6_LEN: u8 = 64;
/// The IPv4 VIP.
pub const VIP4: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 100);
/// The IPv6 VIP.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd97, 0, 0, 0, 0, 0, 0, 0x100);
/// Most clients a lab can have.
pub const MAX_CLIENTS: usize = 9;
/// Most backends a lab can have.
pub const MAX_BACKENDS: usize = 89;
/// Where `sluice lab up` writes daemon configs (`PREFIX.toml`) and each lab's directory
/// (`PREFIX/`: server logs, the daemon's state).
pub const STATE_DIR: &str = "/run/sluice/lab";
/// `vip.table_size` of the generated daemon config.
pub const LAB_TABLE_SIZE: u32 = 65537;
/// `daemon.flow_table_size` of the generated daemon config.
pub const LAB_FLOW_TABLE_SIZE: u32 = 65536;

/// The interface of every node on the bridge.
const IFACE: &str = "eth0";
/// The bridge in the switch namespace.
const BRIDGE: &str = "br0";
/// How long a backend server (process) may take to listen.
const SERVER_READY: Duration = Duration::from_secs(5);
/// How long processes get to exit after SIGTERM (the daemon detaches), then SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// Why a lab operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} already exists")]
    Exists(String),
    #[error("lab {0} already exists: remove it with `sluice lab down --prefix {0}` first")]
    LabExists(String),
    #[error("invalid lab: {0}")]
    Invalid(String),
    #[error("no backend {0}")]
    NoBackend(usize),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("the generated daemon config: {0}")]
    Config(String),
    #[error("backend server {name}: {message}")]
    Server { name: String, message: String },
    #[error("cleaning up: {}", .0.join("; "))]
    Cleanup(Vec<String>),
}

impl LabError {
    fn in_ns(self, ns: &str) -> Self {
        match self {
            LabError::Command { command, message } => LabError::Command {
                command: format!("{command} (in {ns})"),
                message,
            },
            e => e,
        }
    }
}

/// A running lab. Dropping it (or [`Lab::down`]) removes everything it created, unless
/// [`Lab::keep`] was called. A `Lab` is `Sync`: tests may share `&Lab` between threads
/// (e.g. one holding a long-lived connection while another kills a backend server).
#[derive(Debug)]
pub struct Lab {
    spec: LabSpec,
    switch: Netns,
    lb: Node,
    clients: Vec<Node>,
    backends: Vec<Node>,
    /// One a backend (index = backend index).
    servers: Mutex<Vec<Option<Running>>>,
    keep: bool,
    done: bool,
}

impl Lab {
    fn servers_mut(&mut self) -> &mut Vec<Option<Running>> {
        self.servers.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    fn servers(&self) -> std::sync::MutexGuard<'_, Vec<Option<Running>>> {
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The spec it was built from (`backends` is the initial count).
    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }

    pub fn prefix(&self) -> &str {
        &self.spec.prefix
    }

    pub fn mode(&self) -> Forwarding {
        self.spec.mode
    }

    /// [`VIP4`].
    pub fn vip4(&self) -> Ipv4Addr {
        VIP4
    }

    /// [`VIP6`].
    pub fn vip6(&self) -> Ipv6Addr {
        VIP6
    }

    /// `[VIP4, VIP6]`.
    pub fn vips(&self) -> [IpAddr; 2] {
        [VIP4.into(), VIP6.into()]
    }

    /// The switch namespace (bridge `br0`; the switch-side veth ends).
    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// The load balancer.
    pub fn lb(&self) -> &Node {
        &self.lb
    }

    /// The load balancer's namespace name (`sluice --netns <this> run ...`).
    pub fn lb_ns(&self) -> &str {
        self.lb.ns()
    }

    /// Client `i` (0-based: `client(0)` is `client-1`). Panics if out of range.
    pub fn client(&self, i: usize) -> &Node {
        &self.clients[i]
    }

    pub fn clients(&self) -> &[Node] {
        &self.clients
    }

    /// Backend `i` (0-based: `backend(0)` is `backend-1`). Panics if out of range.
    pub fn backend(&self, i: usize) -> &Node {
        &self.backends[i]
    }

    pub fn backends(&self) -> &[Node] {
        &self.backends
    }

    /// Every node on the bridge: lb, clients, backends.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        std::iter::once(&self.lb)
            .chain(&self.clients)
            .chain(&self.backends)
    }

    fn backend_checked(&self, i: usize) -> Result<&Node, LabError> {
        self.backends.get(i).ok_or(LabError::NoBackend(i))
    }

    /// The pins this lab has now.
    pub fn pins(&self) -> Vec<PathBuf> {
        lab_pins(self.prefix())
    }
}

#[cfg(test)]
mod tests;
