//! A node of the lab: its namespace, its interface on the bridge, its addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{IFACE, LabError, Role, addr4, addr6, mac, netns::Netns, ns_name};

/// A node of the lab (load balancer, client or backend): its namespace, its eth0 and
/// addresses.
#[derive(Debug, Clone)]
pub struct Node {
    role: Role,
    pub(super) ns: Netns,
    pub(super) peer: String,
    pub(super) addr4: Ipv4Addr,
    pub(super) addr6: Ipv6Addr,
    pub(super) mac: [u8; 6],
}

impl Node {
    pub(super) fn new(prefix: &str, role: Role) -> Result<Self, LabError> {
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

    /// A node with addresses of its own (the fleet lab's plan), its switch-side port named
    /// `peer`.
    pub(super) fn with_addrs(
        prefix: &str,
        role: Role,
        peer: String,
        addr4: Ipv4Addr,
        addr6: Ipv6Addr,
        mac: [u8; 6],
    ) -> Self {
        Self {
            role,
            ns: Netns::named(&ns_name(prefix, role)),
            peer,
            addr4,
            addr6,
            mac,
        }
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
