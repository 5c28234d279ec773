//! The fleet lab: N sluice balancers behind a router that spreads a VIP over them by ECMP,
//! each balancer announcing the VIP over BGP from its own BIRD (`sluice lab up
//! --balancers N`, the fleet demo and the fleet tests).
//!
//! # Topology
//!
//! ```text
//!  clients ── br1 client network 10.98.1.0/24 ──┐
//!   c1 10.98.1.11 (default via .254)            │ eth1 .254
//!                                          ┌────┴─────┐  BIRD: BGP (AS 65000) + BFD to every
//!                                          │  router  │  balancer, ECMP (merge paths), L4
//!                                          └────┬─────┘  multipath hash
//!        br0 balancer network 10.98.0.0/24 ─────┤ eth0 .254
//!   lb1 10.98.0.1 … lbN 10.98.0.N: sluice (XDP on eth0) + BIRD (AS 65001, BGP + BFD)
//!   DSR backends b1 10.98.0.11 …: VIP on lo, default route via the router
//!        br2 backend network 10.98.2.0/24 ──────┘ eth2 .254   (IPIP mode)
//!   IPIP backends b1 10.98.2.11 …: sluice's decap program, VIP on lo
//! ```
//!
//! - A balancer announces [`FLEET_VIP4`] by the route sluice installs in kernel table
//!   [`ANNOUNCE_TABLE`] (`[daemon.announce]`); its BIRD learns that table and exports it to
//!   the router, whose BIRD installs one ECMP route over every balancer that announces it.
//! - The router hashes flows to balancers (`fib_multipath_hash_policy=1`; in a namespace
//!   lab the client socket's hash decides, which is per connection too). Clients have
//!   `net.core.txrehash=0`, so that a retransmission does not move a connection to another
//!   balancer by itself: a connection moves only when the set of balancers changes.
//! - Backends answer clients directly (DSR: the VIP on their `lo`) through the router.
//! - Every BIRD has its own config, control socket, pid file and log in
//!   `STATE_DIR/PREFIX/bird/`; every process runs inside the lab's namespaces, so
//!   [`Lab::down_prefix`] kills them and removes everything, also after a crash.

mod bird;
mod daemons;
mod topology;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::Mutex,
    time::Duration,
};

pub use self::daemons::{DaemonRun, FLEET_VIP4_LC, lc_sock};
use super::{
    Lab, LabError, Node, Removed, Servers, backends::Running, lab_dir, lab_pin_dir, netns::Netns,
};
use crate::config::Forwarding;

/// The fleet lab's VIP.
pub const FLEET_VIP4: Ipv4Addr = Ipv4Addr::new(10, 98, 100, 1);
/// Most balancers a fleet lab can have (the router's BIRD has a session for each).
pub const MAX_BALANCERS: usize = 4;
/// Most backends of a fleet lab.
pub const MAX_FLEET_BACKENDS: usize = 16;
/// Most clients of a fleet lab.
pub const MAX_FLEET_CLIENTS: usize = 4;
/// The kernel table and route protocol of the balancers' announcements.
pub const ANNOUNCE_TABLE: u32 = 100;
pub const ANNOUNCE_PROTOCOL: u8 = 99;
/// The router's AS and the balancers' (one AS for the whole fleet: equal AS paths, so the
/// router installs one ECMP route).
pub const ROUTER_AS: u32 = 65000;
pub const FLEET_AS: u32 = 65001;
/// The router's host number on every network.
const ROUTER_HOST: u8 = 254;

/// The three networks of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// Router, balancers, DSR backends (bridge `br0`).
    Balancers = 0,
    /// Router and clients (`br1`).
    Clients = 1,
    /// Router and IPIP backends (`br2`).
    Backends = 2,
}

impl Net {
    fn bridge(self) -> String {
        format!("br{}", self as u8)
    }

    /// `10.98.NET.host`.
    pub fn addr4(self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 98, self as u8, host)
    }

    /// `fd98:NET::host` (the host's decimal digits read as hex, as in the single lab).
    pub fn addr6(self, host: u8) -> Ipv6Addr {
        let digits =
            u16::from(host / 100) << 8 | u16::from(host / 10 % 10) << 4 | u16::from(host % 10);
        Ipv6Addr::new(0xfd98, self as u16, 0, 0, 0, 0, 0, digits)
    }

    fn mac(self, port: bool, host: u8) -> [u8; 6] {
        [0x02, 0x98, self as u8, 0, u8::from(port), host]
    }

    /// The router's address on this network.
    pub fn gateway(self) -> Ipv4Addr {
        self.addr4(ROUTER_HOST)
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Every namespace is `PREFIX-ROLE` (`-sw`, `-r`, `-lb1`.., `-c1`.., `-b1`..).
    pub prefix: String,
    /// Balancers (1..=[`MAX_BALANCERS`]).
    pub balancers: usize,
    pub backends: usize,
    pub clients: usize,
    /// DSR: the backends on the balancers' network; IPIP: on a network behind the router.
    pub mode: Forwarding,
    pub servers: Servers,
    /// BFD's transmit/receive interval; a peer is down after 3 missed (default 100 ms).
    pub bfd_interval_ms: u32,
}

impl FleetSpec {
    /// 2 balancers, 3 backends, 1 client, DSR, in-process servers.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            balancers: 2,
            backends: 3,
            clients: 1,
            mode: Forwarding::Dsr,
            servers: Servers::InProcess,
            bfd_interval_ms: 100,
        }
    }

    pub fn balancers(mut self, n: usize) -> Self {
        self.balancers = n;
        self
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

    pub fn servers(mut self, servers: Servers) -> Self {
        self.servers = servers;
        self
    }
}

/// A running fleet lab. Dropping it (or [`Fleet::down`]) removes everything, unless
/// [`Fleet::keep`] was called.
#[derive(Debug)]
pub struct Fleet {
    spec: FleetSpec,
    switch: Netns,
    router: Node,
    balancers: Vec<Node>,
    clients: Vec<Node>,
    backends: Vec<Node>,
    servers: Mutex<Vec<Option<Running>>>,
    keep: bool,
    done: bool,
}

impl Fleet {
    pub fn spec(&self) -> &FleetSpec {
        &self.spec
    }

    pub fn prefix(&self) -> &str {
        &self.spec.prefix
    }

    pub fn mode(&self) -> Forwarding {
        self.spec.mode
    }

    pub fn vip(&self) -> Ipv4Addr {
        FLEET_VIP4
    }

    /// `VIP:port`.
    pub fn vip_sock(&self, port: u16) -> SocketAddr {
        (FLEET_VIP4, port).into()
    }

    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    pub fn router(&self) -> &Node {
        &self.router
    }

    /// Balancer `i` (0-based: `balancer(0)` is `lb-1` in `PREFIX-lb1`).
    pub fn balancer(&self, i: usize) -> &Node {
        &self.balancers[i]
    }

    pub fn balancers(&self) -> &[Node] {
        &self.balancers
    }

    pub fn client(&self, i: usize) -> &Node {
        &self.clients[i]
    }

    pub fn clients(&self) -> &[Node] {
        &self.clients
    }

    pub fn backend(&self, i: usize) -> &Node {
        &self.backends[i]
    }

    pub fn backends(&self) -> &[Node] {
        &self.backends
    }

    /// Every address the backends' servers answer on: their own and the VIP.
    fn server_addrs(b: &Node) -> [IpAddr; 4] {
        [
            b.addr4().into(),
            b.addr6().into(),
            FLEET_VIP4.into(),
            FLEET_VIP4_LC.into(),
        ]
    }

    /// Balancer `i`'s directory: its daemon's state and API socket, its config.
    pub fn balancer_dir(&self, i: usize) -> PathBuf {
        lab_dir(self.prefix()).join(self.balancers[i].role().suffix())
    }

    /// Balancer `i`'s pin directory (inside the lab's, so `down` removes it).
    pub fn balancer_pin_dir(&self, i: usize) -> PathBuf {
        lab_pin_dir(self.prefix()).join(self.balancers[i].role().suffix())
    }

    /// Balancer `i`'s API socket (`sluice --api-socket ...`).
    pub fn api_socket(&self, i: usize) -> PathBuf {
        self.balancer_dir(i).join("sluice.sock")
    }

    /// Leave the lab up when dropped (`sluice lab up`); `sluice lab down` removes it.
    pub fn keep(mut self) {
        self.keep = true;
        let servers = std::mem::take(self.servers.get_mut().unwrap_or_else(|p| p.into_inner()));
        for s in servers.into_iter().flatten() {
            match s {
                Running::Process(child) => drop(child),
                s @ Running::InProcess(_) => super::backends::stop(Some(s)),
            }
        }
    }

    /// Remove everything: servers, BIRDs, daemons, pins, namespaces, files.
    pub fn down(mut self) -> Result<Removed, LabError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<Removed, LabError> {
        self.done = true;
        let servers = std::mem::take(self.servers.get_mut().unwrap_or_else(|p| p.into_inner()));
        for s in servers {
            super::backends::stop(s);
        }
        Lab::down_prefix(&self.spec.prefix)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if self.keep || self.done {
            return;
        }
        if let Err(e) = self.teardown() {
            eprintln!("fleet lab {}: {e}", self.spec.prefix);
        }
    }
}

/// How long the router may take to install a route over every balancer after start.
pub const CONVERGE: Duration = Duration::from_secs(30);
