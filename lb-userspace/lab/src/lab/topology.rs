//! Building the topology: the switch namespace with its bridge, the load balancer, the
//! clients and the backends, each plugged into the bridge and configured for its role.

use std::{path::PathBuf, sync::Mutex};

use lb_common::programs;

use super::{
    BRIDGE, IFACE, Lab, LabError, LabSpec, MAX_BACKENDS, MAX_CLIENTS, NET4_LEN, NET6_LEN, Node,
    Role, VIP4, VIP6, fmt_mac, mac, netns::Netns, ns_name, pin_name, validate_prefix,
};
use crate::{
    config::Forwarding,
    dataplane::{AttachMode, pinned},
};

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

    fn pin(&self, ns: &Netns, program: &'static str, iface: &str) -> Result<PathBuf, LabError> {
        pin(ns, program, iface)
    }

    /// Let client `i` (from 0) transmit with XDP, as the live-frames generator does: its
    /// switch-side veth end gets an `XDP_PASS` program (a veth only receives the frames XDP
    /// sends into it when its peer runs one). Removed with the lab.
    pub fn allow_xdp_tx_from_client(&self, i: usize) -> Result<(), LabError> {
        let c = self
            .clients
            .get(i)
            .ok_or_else(|| LabError::Invalid(format!("no client {i}")))?;
        self.pin(&self.switch, programs::PASS, c.peer()).map(|_| ())
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
}

/// Pin `program` on `iface` inside `ns` (the thread enters the namespace: the pin lands
/// in the host's bpffs).
pub(super) fn pin(ns: &Netns, program: &'static str, iface: &str) -> Result<PathBuf, LabError> {
    let name = pin_name(program, iface, ns.name());
    let (_, path) =
        ns.run(|| pinned::attach_pinned_as(program, iface, AttachMode::Native, &name))??;
    Ok(path)
}
