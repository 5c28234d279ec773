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

pub mod daemon;
pub mod netns;
pub mod server;

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use lb_common::programs;

pub use self::{
    netns::NETNS_DIR,
    server::{TCP_PORT, UDP_PORT},
};
use self::{netns::Netns, server::BackendServer};
use crate::{
    config::{self, Config, Forwarding, Protocol},
    dataplane::{AttachMode, DataplaneError, pinned},
};

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

/// How the lab runs the backend servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Servers {
    /// Threads of this process ([`BackendServer`]); they end with it. The default: works
    /// from any program, tests included.
    InProcess,
    /// `EXE --netns PREFIX-bk lab backend --name backend-k --addr ...` processes, in their
    /// own process group, logging to `STATE_DIR/PREFIX/backend-k.log` ([`lab_dir`]); they outlive this
    /// process when the lab is [kept](Lab::keep). `EXE` is `sluice`
    /// (`std::env::current_exe()` in the CLI).
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
    /// Backend namespaces (1..=[`MAX_BACKENDS`]).
    pub backends: usize,
    /// Client namespaces (1..=[`MAX_CLIENTS`]).
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

/// What a namespace is in a lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Switch,
    Lb,
    /// Client k (1-based, as in its name).
    Client(usize),
    /// Backend k (1-based, as in its name).
    Backend(usize),
}

impl Role {
    /// The namespace suffix: `sw`, `lb`, `c1`, `b1`.
    pub fn suffix(self) -> String {
        match self {
            Role::Switch => "sw".into(),
            Role::Lb => "lb".into(),
            Role::Client(k) => format!("c{k}"),
            Role::Backend(k) => format!("b{k}"),
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
            _ => {
                if let Some(k) = s.strip_prefix('c') {
                    num(k).map(Role::Client)
                } else {
                    num(s.strip_prefix('b')?).map(Role::Backend)
                }
            }
        }
    }

    /// The last octet of the node's addresses.
    fn host(self) -> Option<u8> {
        match self {
            Role::Switch => None,
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

fn addr4(host: u8) -> Ipv4Addr {
    let o = NET4.octets();
    Ipv4Addr::new(o[0], o[1], o[2], host)
}

fn addr6(host: u8) -> Ipv6Addr {
    // The decimal digits read as hex: 11 -> ::11.
    let digits = u16::from(host / 100) << 8 | u16::from(host / 10 % 10) << 4 | u16::from(host % 10);
    let s = NET6.segments();
    Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, digits)
}

fn mac(port: bool, host: u8) -> [u8; 6] {
    [0x02, 0x97, 0, 0, u8::from(port), host]
}

fn fmt_mac(m: [u8; 6]) -> String {
    config::format_mac(&m)
}

/// A node of the lab (load balancer, client or backend): its namespace, its eth0 and
/// addresses.
#[derive(Debug, Clone)]
pub struct Node {
    role: Role,
    ns: Netns,
    peer: String,
    addr4: Ipv4Addr,
    addr6: Ipv6Addr,
    mac: [u8; 6],
}

impl Node {
    fn new(prefix: &str, role: Role) -> Result<Self, LabError> {
        let host = role
            .host()
            .ok_or_else(|| LabError::Invalid(format!("{role} has no address")))?;
        Ok(Self {
            role,
            ns: Netns::named(&ns_name(prefix, role)),
            peer: format!("p-{}", role.suffix()),
            addr4: addr4(host),
            addr6: addr6(host),
            mac: mac(false, host),
        })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// `lb`, `client-1`, `backend-1` (what a backend's server answers).
    pub fn name(&self) -> String {
        self.role.node_name()
    }

    /// Its network namespace's name (`sl-lab-b1`).
    pub fn ns(&self) -> &str {
        self.ns.name()
    }

    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Its interface on the bridge (`eth0`).
    pub fn iface(&self) -> &str {
        IFACE
    }

    /// The switch-side end of its veth (`p-b1`, in the switch namespace).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn addr4(&self) -> Ipv4Addr {
        self.addr4
    }

    pub fn addr6(&self) -> Ipv6Addr {
        self.addr6
    }

    /// `[addr4, addr6]`.
    pub fn addrs(&self) -> [IpAddr; 2] {
        [self.addr4.into(), self.addr6.into()]
    }

    /// `addr4:port`.
    pub fn sock4(&self, port: u16) -> SocketAddr {
        (self.addr4, port).into()
    }

    /// `[addr6]:port`.
    pub fn sock6(&self, port: u16) -> SocketAddr {
        (self.addr6, port).into()
    }

    /// The MAC of its eth0.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Run `f` with the calling thread inside the node's namespace ([`Netns::run`]).
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, LabError> {
        self.ns.run(f)
    }

    /// A command that runs inside the node's namespace ([`Netns::command`]).
    pub fn command(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Result<std::process::Command, LabError> {
        self.ns.command(program)
    }

    /// Run `argv` inside the node's namespace; its stdout ([`Netns::exec`]).
    pub fn exec(&self, argv: &[&str]) -> Result<String, LabError> {
        self.ns.exec(argv)
    }
}

/// A backend server the lab runs.
#[derive(Debug)]
enum Running {
    InProcess(BackendServer),
    Process(Child),
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

/// What [`Lab::down_prefix`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    pub prefix: String,
    pub namespaces: Vec<String>,
    /// Processes killed (pid, command name).
    pub processes: Vec<(u32, String)>,
    pub pins: Vec<PathBuf>,
    pub files: Vec<PathBuf>,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.processes.is_empty()
            && self.pins.is_empty()
            && self.files.is_empty()
    }
}

impl fmt::Display for Removed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "lab {}: nothing to remove", self.prefix);
        }
        write!(
            f,
            "lab {}: removed {} namespaces, {} pins, {} files; killed {} processes",
            self.prefix,
            self.namespaces.len(),
            self.pins.len(),
            self.files.len(),
            self.processes.len()
        )
    }
}

/// One namespace of a lab, as found on the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsStatus {
    pub name: String,
    pub role: Role,
    /// (pid, command line).
    pub processes: Vec<(u32, String)>,
}

/// What exists of a lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabStatus {
    pub prefix: String,
    /// Ordered: switch, lb, clients, backends.
    pub namespaces: Vec<NsStatus>,
    pub pins: Vec<PathBuf>,
    /// The daemon config, if `lab up` wrote one.
    pub config: Option<PathBuf>,
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
    /// Build the lab and start the backend servers. Fails if anything of a lab with this
    /// prefix exists; removes what it created if it fails half-way.
    pub fn up(spec: LabSpec) -> Result<Self, LabError> {
        validate_prefix(&spec.prefix)?;
        if !(1..=MAX_BACKENDS).contains(&spec.backends) {
            return Err(LabError::Invalid(format!(
                "{} backends (1..={MAX_BACKENDS})",
                spec.backends
            )));
        }
        if !(1..=MAX_CLIENTS).contains(&spec.clients) {
            return Err(LabError::Invalid(format!(
                "{} clients (1..={MAX_CLIENTS})",
                spec.clients
            )));
        }
        let existing = Self::status(&spec.prefix);
        if !existing.namespaces.is_empty() || !existing.pins.is_empty() {
            return Err(LabError::LabExists(spec.prefix));
        }
        let prefix = spec.prefix.clone();
        let mut lab = Self {
            switch: Netns::named(&ns_name(&prefix, Role::Switch)),
            lb: Node::new(&prefix, Role::Lb)?,
            clients: Vec::new(),
            backends: Vec::new(),
            servers: Mutex::new(Vec::new()),
            keep: false,
            done: false,
            spec,
        };
        // From here on, an error drops `lab`, which removes everything with its prefix.
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), LabError> {
        let prefix = self.spec.prefix.clone();
        let sw = Netns::create(self.switch.name())?;
        // The switch only bridges: no IPv6 on its ports (no DAD, no router solicitations).
        sw.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        sw.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        sw.ip(&[
            &[
                "link",
                "add",
                BRIDGE,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
            &["link", "set", BRIDGE, "up"],
        ])?;

        let lb = self.lb.clone();
        self.plug(&lb)?;
        for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
            lb.ns.sysctl(key, "1")?;
        }
        for key in [
            "net.ipv4.conf.all.send_redirects",
            "net.ipv4.conf.eth0.send_redirects",
        ] {
            lb.ns.sysctl(key, "0")?;
        }
        self.pin(&self.switch, programs::PASS, lb.peer())?;

        for k in 1..=self.spec.clients {
            let c = Node::new(&prefix, Role::Client(k))?;
            self.plug(&c)?;
            c.ns.ip(&[
                &[
                    "route",
                    "add",
                    &format!("{VIP4}/32"),
                    "via",
                    &lb.addr4.to_string(),
                ],
                &[
                    "route",
                    "add",
                    &format!("{VIP6}/128"),
                    "via",
                    &lb.addr6.to_string(),
                ],
            ])?;
            c.exec(&["ethtool", "-K", IFACE, "tx", "off"])?;
            for key in [
                "net.ipv4.conf.all.accept_redirects",
                "net.ipv4.conf.eth0.accept_redirects",
                "net.ipv6.conf.all.accept_redirects",
                "net.ipv6.conf.eth0.accept_redirects",
            ] {
                c.ns.sysctl(key, "0")?;
            }
            self.clients.push(c);
        }
        for _ in 0..self.spec.backends {
            self.add_backend()?;
        }
        Ok(())
    }

    /// Create the node's namespace and veth pair (from inside the switch namespace), plug
    /// the switch end into the bridge, configure addresses.
    fn plug(&self, node: &Node) -> Result<(), LabError> {
        let ns = Netns::create(node.ns())?;
        self.switch.ip(&[
            &[
                "link",
                "add",
                IFACE,
                "netns",
                node.ns(),
                "address",
                &fmt_mac(node.mac),
                "type",
                "veth",
                "peer",
                "name",
                &node.peer,
                "address",
                &fmt_mac(mac(true, node.mac[5])),
            ],
            &["link", "set", &node.peer, "master", BRIDGE, "up"],
        ])?;
        ns.ip(&[
            &[
                "addr",
                "add",
                &format!("{}/{NET4_LEN}", node.addr4),
                "dev",
                IFACE,
            ],
            &[
                "addr",
                "add",
                &format!("{}/{NET6_LEN}", node.addr6),
                "dev",
                IFACE,
                "nodad",
            ],
            &["link", "set", IFACE, "up"],
        ])
    }

    /// Pin `program` on `iface` inside `ns` (the thread enters the namespace: the pin lands
    /// in the host's bpffs).
    fn pin(&self, ns: &Netns, program: &'static str, iface: &str) -> Result<PathBuf, LabError> {
        let name = pin_name(program, iface, ns.name());
        let (_, path) =
            ns.run(|| pinned::attach_pinned_as(program, iface, AttachMode::Native, &name))??;
        Ok(path)
    }

    /// Add a backend namespace (the next number) on the bridge, configured for the lab's
    /// mode, with its server started; for tests that grow the pool. The generated daemon
    /// config ([`Lab::daemon_config`]) includes it from now on.
    pub fn add_backend(&mut self) -> Result<&Node, LabError> {
        let k = self.backends.len() + 1;
        if k > MAX_BACKENDS {
            return Err(LabError::Invalid(format!(
                "at most {MAX_BACKENDS} backends"
            )));
        }
        let b = Node::new(&self.spec.prefix, Role::Backend(k))?;
        let result = self.configure_backend(&b).and_then(|()| {
            self.backends.push(b.clone());
            self.servers_mut().push(None);
            self.start_backend_server(k - 1).inspect_err(|_| {
                self.backends.pop();
                self.servers_mut().pop();
            })
        });
        if let Err(e) = result {
            // Leave no half-built backend behind: the next one may take its number.
            let _ =
                std::fs::remove_file(pinned::pin_path(&pin_name(programs::DECAP, IFACE, b.ns())));
            let _ = b.ns.delete();
            return Err(e);
        }
        Ok(&self.backends[k - 1])
    }

    fn configure_backend(&self, b: &Node) -> Result<(), LabError> {
        self.plug(b)?;
        b.ns.ip(&[
            &["addr", "add", &format!("{VIP4}/32"), "dev", "lo"],
            &["addr", "add", &format!("{VIP6}/128"), "dev", "lo"],
        ])?;
        for (key, value) in [
            ("net.ipv4.conf.all.arp_ignore", "1"),
            ("net.ipv4.conf.all.arp_announce", "2"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv4.conf.eth0.rp_filter", "0"),
            ("net.ipv4.conf.lo.rp_filter", "0"),
            ("net.ipv4.ip_nonlocal_bind", "1"),
            ("net.ipv6.ip_nonlocal_bind", "1"),
        ] {
            b.ns.sysctl(key, value)?;
        }
        if self.spec.mode == Forwarding::Ipip {
            self.pin(&b.ns, programs::DECAP, IFACE)?;
        }
        Ok(())
    }

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

    /// Start backend `i`'s server (per [`LabSpec::servers`]; nothing for
    /// [`Servers::None`]) and wait until it listens. Fails if it runs already.
    pub fn start_backend_server(&self, i: usize) -> Result<(), LabError> {
        let b = self.backend_checked(i)?;
        let mut servers = self.servers();
        if servers[i].is_some() {
            return Err(LabError::Server {
                name: b.name(),
                message: "already running".into(),
            });
        }
        let addrs = [b.addr4.into(), b.addr6.into(), VIP4.into(), VIP6.into()];
        let server_err = |message: String| LabError::Server {
            name: b.name(),
            message,
        };
        servers[i] = match &self.spec.servers {
            Servers::None => None,
            Servers::InProcess => Some(Running::InProcess(
                b.run(|| BackendServer::start(&b.name(), &addrs))?
                    .map_err(|e| server_err(e.to_string()))?,
            )),
            Servers::Process(exe) => {
                let dir = lab_dir(self.prefix());
                let io = |what: String| move |source| LabError::Io { what, source };
                std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
                let log_path = dir.join(format!("{}.log", b.name()));
                let log = std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                    .map_err(io(format!("opening {}", log_path.display())))?;
                let log2 = log
                    .try_clone()
                    .map_err(io(format!("opening {}", log_path.display())))?;
                let mut cmd = std::process::Command::new(exe);
                cmd.args(["--netns", b.ns(), "lab", "backend", "--name", &b.name()]);
                for a in addrs {
                    cmd.arg("--addr").arg(a.to_string());
                }
                use std::os::unix::process::CommandExt as _;
                cmd.process_group(0)
                    .stdin(Stdio::null())
                    .stdout(log)
                    .stderr(log2);
                let mut child = cmd
                    .spawn()
                    .map_err(|e| server_err(format!("starting {}: {e}", exe.display())))?;
                if let Err(e) = wait_listening(b, &mut child) {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    return Err(server_err(format!("{e}; its log: {}", log.trim())));
                }
                Some(Running::Process(child))
            }
        };
        Ok(())
    }

    /// The pid of backend `i`'s server process ([`Servers::Process`] only).
    pub fn backend_server_pid(&self, i: usize) -> Option<u32> {
        match self.servers().get(i)? {
            Some(Running::Process(c)) => Some(c.id()),
            _ => None,
        }
    }

    /// Stop backend `i`'s server as a crash would: listeners and open connections closed
    /// (a process gets SIGKILL). Nothing to do if it is not running.
    pub fn kill_backend_server(&self, i: usize) -> Result<(), LabError> {
        self.backend_checked(i)?;
        let running = self.servers()[i].take();
        stop(running);
        Ok(())
    }

    /// Misconfigure backend `i`: remove the VIPs from its `lo`, so it drops VIP traffic
    /// (its own addresses still answer, e.g. health checks).
    pub fn break_backend(&self, i: usize) -> Result<(), LabError> {
        let b = self.backend_checked(i)?;
        b.ns.ip(&[
            &["addr", "del", &format!("{VIP4}/32"), "dev", "lo"],
            &["addr", "del", &format!("{VIP6}/128"), "dev", "lo"],
        ])
    }

    /// Undo [`Lab::break_backend`].
    pub fn repair_backend(&self, i: usize) -> Result<(), LabError> {
        let b = self.backend_checked(i)?;
        b.ns.ip(&[
            &["addr", "replace", &format!("{VIP4}/32"), "dev", "lo"],
            &["addr", "replace", &format!("{VIP6}/128"), "dev", "lo"],
        ])
    }

    /// The pins this lab has now.
    pub fn pins(&self) -> Vec<PathBuf> {
        lab_pins(self.prefix())
    }

    /// A daemon config for this lab: sluice on the LB's eth0 (native XDP); VIPs
    /// [`VIP4`] (and [`VIP6`] if [`LabSpec::ipv6`]) on TCP [`TCP_PORT`] and UDP
    /// [`UDP_PORT`] (named `lab-tcp4`, `lab-udp4`, `lab-tcp6`, `lab-udp6`), the lab's mode,
    /// every backend (MACs resolved by the kernel), table size [`LAB_TABLE_SIZE`],
    /// `state_dir` [`lab_dir`]; every other key (health checks included) at its default.
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
             # room for as many VIPs again, for tests that add some\n\
             table_capacity = {}\nstate_dir = \"{}\"\napi_socket = \"{}/sluice.sock\"\n\
             pin_dir = \"{}\"",
            2 * 2 * LAB_TABLE_SIZE * vips,
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

    /// Leave the lab up when this value is dropped (`sluice lab up`); remove it later with
    /// [`Lab::down_prefix`]. In-process servers still end with this process.
    pub fn keep(mut self) {
        self.keep = true;
        let servers = std::mem::take(self.servers_mut());
        for s in servers.into_iter().flatten() {
            match s {
                // Detached: it outlives us (and is reaped by whoever adopts it).
                Running::Process(child) => drop(child),
                s @ Running::InProcess(_) => stop(Some(s)),
            }
        }
    }

    /// Remove everything: stop the servers, kill every process in the lab's namespaces,
    /// unpin what the lab pinned, delete the namespaces and the lab's files.
    pub fn down(mut self) -> Result<Removed, LabError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<Removed, LabError> {
        self.done = true;
        let servers = std::mem::take(self.servers_mut());
        for s in servers {
            stop(s);
        }
        Self::down_prefix(&self.spec.prefix)
    }

    /// Remove whatever exists of lab `prefix` (a crashed run's leftovers too): kill the
    /// processes in its namespaces (SIGTERM, SIGKILL after 3 s), remove its pins, delete its
    /// namespaces, remove its config and logs. Succeeds when nothing exists. Only names of
    /// exactly this lab match (`PREFIX-sw`, `-lb`, `-cK`, `-bK`), not those of a lab
    /// whose prefix merely starts with it.
    pub fn down_prefix(prefix: &str) -> Result<Removed, LabError> {
        validate_prefix(prefix)?;
        let mut errors = Vec::new();
        let status = Self::status(prefix);
        let mut removed = Removed {
            prefix: prefix.to_owned(),
            ..Removed::default()
        };
        // Processes first: a daemon detaches on SIGTERM.
        let pids: Vec<u32> = status
            .namespaces
            .iter()
            .flat_map(|n| n.processes.iter().map(|p| p.0))
            .collect();
        removed.processes = status
            .namespaces
            .iter()
            .flat_map(|n| n.processes.iter().cloned())
            .collect();
        kill_all(&pids);
        for pin in &status.pins {
            if pin.is_dir() {
                // The balancer's pin directory (link first: that detaches it).
                match pinned::remove_pin_dir(pin, crate::dataplane::LINK_PIN) {
                    Ok(r) => removed.pins.extend(r),
                    Err(e) => errors.push(e.to_string()),
                }
                continue;
            }
            match std::fs::remove_file(pin) {
                Ok(()) => removed.pins.push(pin.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("removing {}: {e}", pin.display())),
            }
        }
        if let Some(links) = pinned::pin_path("x").parent() {
            pinned::remove_empty_parents(&links.join("x"));
        }
        // Backends and clients first, the switch (with the bridge) last.
        for n in status.namespaces.iter().rev() {
            match Netns::named(&n.name).delete() {
                Ok(()) => removed.namespaces.push(n.name.clone()),
                Err(e) => errors.push(e.to_string()),
            }
        }
        let config = config_path(prefix);
        if config.exists() {
            match std::fs::remove_file(&config) {
                Ok(()) => removed.files.push(config),
                Err(e) => errors.push(format!("removing {}: {e}", config.display())),
            }
        }
        let logs = lab_dir(prefix);
        if logs.exists() {
            match std::fs::remove_dir_all(&logs) {
                Ok(()) => removed.files.push(logs),
                Err(e) => errors.push(format!("removing {}: {e}", logs.display())),
            }
        }
        if errors.is_empty() {
            Ok(removed)
        } else {
            Err(LabError::Cleanup(errors))
        }
    }

    /// What exists of lab `prefix` (namespaces with their processes, pins, config).
    pub fn status(prefix: &str) -> LabStatus {
        let mut namespaces: Vec<NsStatus> = netns::list()
            .into_iter()
            .filter_map(|name| {
                let (p, role) = parse_ns_name(&name)?;
                (p == prefix).then_some((name.clone(), role))
            })
            .map(|(name, role)| {
                let processes = Netns::named(&name)
                    .pids()
                    .into_iter()
                    .map(|pid| (pid, cmdline(pid)))
                    .collect();
                NsStatus {
                    name,
                    role,
                    processes,
                }
            })
            .collect();
        namespaces.sort_by_key(|n| n.role);
        let config = Some(config_path(prefix)).filter(|p| p.exists());
        LabStatus {
            prefix: prefix.to_owned(),
            namespaces,
            pins: lab_pins(prefix),
            config,
        }
    }

    /// The prefixes of every lab that has namespaces or pins on this machine.
    pub fn list() -> Vec<String> {
        let mut v: Vec<String> = netns::list()
            .iter()
            .filter_map(|n| parse_ns_name(n).map(|(p, _)| p.to_owned()))
            .chain(all_lab_pins().into_iter().map(|(p, _)| p))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep || self.done {
            return;
        }
        if let Err(e) = self.teardown() {
            eprintln!("lab {}: {e}", self.spec.prefix);
        }
    }
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

/// Every lab pin: (lab prefix, path).
fn all_lab_pins() -> Vec<(String, PathBuf)> {
    let link = pinned::pin_path("x");
    let entries = link
        .parent()
        .and_then(|dir| std::fs::read_dir(dir).ok())
        .into_iter()
        .flatten();
    let mut v: Vec<(String, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let (_, ns) = name.rsplit_once('@')?;
            // PROGRAM@IFACE@NAMESPACE: three parts.
            name.split('@').nth(2)?;
            let (prefix, _) = parse_ns_name(ns)?;
            Some((prefix.to_owned(), e.path()))
        })
        .collect();
    // The labs' balancer pin directories.
    if let Some(parent) = lab_pin_dir("x").parent()
        && let Ok(entries) = std::fs::read_dir(parent)
    {
        v.extend(entries.filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            validate_prefix(&name).ok()?;
            Some((name, e.path()))
        }));
    }
    v.sort();
    v
}

fn lab_pins(prefix: &str) -> Vec<PathBuf> {
    all_lab_pins()
        .into_iter()
        .filter(|(p, _)| p == prefix)
        .map(|(_, path)| path)
        .collect()
}

/// A process's command line (spaces between arguments), or its name.
fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let s: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if s.is_empty() {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_owned())
            .unwrap_or_default()
    } else {
        s.join(" ")
    }
}

/// Gone or a zombie.
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
    }
}

/// SIGTERM, up to [`TERM_GRACE`] to exit, then SIGKILL (and up to a second more).
fn kill_all(pids: &[u32]) {
    use nix::{sys::signal::Signal, unistd::Pid};
    let signal = |sig: Signal| {
        for &pid in pids {
            if let Ok(p) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(Pid::from_raw(p), sig);
            }
        }
    };
    let wait = |limit: Duration| {
        let start = Instant::now();
        while start.elapsed() < limit {
            if pids.iter().all(|&p| dead(p)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    if pids.is_empty() {
        return;
    }
    signal(Signal::SIGTERM);
    if !wait(TERM_GRACE) {
        signal(Signal::SIGKILL);
        wait(Duration::from_secs(1));
    }
}

fn stop(running: Option<Running>) {
    match running {
        None => {}
        Some(Running::InProcess(s)) => s.stop(),
        Some(Running::Process(mut c)) => {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Wait (bounded) until the server process listens on all of the backend's TCP addresses.
fn wait_listening(b: &Node, child: &mut Child) -> Result<(), String> {
    let start = Instant::now();
    let targets = [
        SocketAddr::from((b.addr4, TCP_PORT)),
        SocketAddr::from((b.addr6, TCP_PORT)),
        SocketAddr::from((VIP4, TCP_PORT)),
        SocketAddr::from((VIP6, TCP_PORT)),
    ];
    let mut pending: &[SocketAddr] = &targets;
    while let Some(t) = pending.first() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited ({status})"));
        }
        let up = b
            .run(|| TcpStream::connect_timeout(t, Duration::from_millis(200)))
            .map_err(|e| e.to_string())?
            .is_ok();
        if up {
            pending = &pending[1..];
            continue;
        }
        if start.elapsed() > SERVER_READY {
            return Err(format!("not listening on {t} after {SERVER_READY:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Lab>();
    }

    #[test]
    fn names_round_trip() {
        for role in [Role::Switch, Role::Lb, Role::Client(3), Role::Backend(12)] {
            let n = ns_name("sl-lab", role);
            assert_eq!(parse_ns_name(&n), Some(("sl-lab", role)));
        }
        // Only exact lab names match.
        assert_eq!(
            parse_ns_name("sl-lab-x-sw"),
            Some(("sl-lab-x", Role::Switch))
        );
        assert_eq!(parse_ns_name("sl-lab-b01"), None);
        assert_eq!(parse_ns_name("sl-lab-b"), None);
        assert_eq!(parse_ns_name("-sw"), None);
        assert_eq!(parse_ns_name("host"), None);
    }

    #[test]
    fn address_plan() {
        let b1 = Node::new("p", Role::Backend(1)).expect("node");
        assert_eq!(b1.addr4(), Ipv4Addr::new(10, 97, 0, 11));
        assert_eq!(b1.addr6(), "fd97::11".parse::<Ipv6Addr>().expect("v6"));
        assert_eq!(fmt_mac(b1.mac()), "02:97:00:00:00:0b");
        let b89 = Node::new("p", Role::Backend(89)).expect("node");
        assert_eq!(b89.addr6(), "fd97::99".parse::<Ipv6Addr>().expect("v6"));
        let c1 = Node::new("p", Role::Client(1)).expect("node");
        assert_eq!(c1.addr4(), Ipv4Addr::new(10, 97, 0, 2));
        let lb = Node::new("p", Role::Lb).expect("node");
        assert_eq!(lb.addr6(), "fd97::1".parse::<Ipv6Addr>().expect("v6"));
        assert_eq!(VIP6, "fd97::100".parse::<Ipv6Addr>().expect("v6"));
    }

    #[test]
    fn prefixes() {
        assert!(validate_prefix("sl-lab").is_ok());
        assert!(validate_prefix("sl-lt-123-a").is_ok());
        for bad in ["", "-x", "x-", "Sl", "a/b", "a b", &"x".repeat(33)] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn weights() {
        assert_eq!(Weights::Ascending.for_backends(3).expect("w"), [1, 2, 3]);
        assert_eq!(Weights::Equal.for_backends(2).expect("w"), [1, 1]);
        assert!(Weights::Explicit(vec![1]).for_backends(2).is_err());
    }
}
