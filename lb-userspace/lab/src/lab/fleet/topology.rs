//! Building the fleet lab: the switch with its three bridges, the router, the balancers,
//! the clients and the backends; adding a balancer; losing one as a host failure would.

use std::{
    net::Ipv4Addr,
    sync::Mutex,
    time::{Duration, Instant},
};

use lb_common::programs;

use super::{
    FLEET_VIP4, FLEET_VIP4_LC, Fleet, FleetSpec, MAX_BALANCERS, MAX_FLEET_BACKENDS,
    MAX_FLEET_CLIENTS, Net, ROUTER_HOST, bird,
};
use crate::{
    config::Forwarding,
    lab::{
        Lab, LabError, Node, Role, backends::spawn_server, fmt_mac, netns::Netns, ns_name,
        topology::pin, validate_prefix,
    },
};

/// One end of a link: the node's interface on a network.
struct Port<'a> {
    node: &'a Node,
    iface: &'a str,
    net: Net,
    host: u8,
    /// The switch-side end's name.
    peer: String,
}

impl Fleet {
    /// Build the fleet lab, start the backend servers and every BIRD. Fails if anything of
    /// a lab with this prefix exists; removes what it created if it fails half-way. The
    /// daemons are the caller's ([`Fleet::start_daemons`], [`Fleet::spawn_daemons`]).
    pub fn up(spec: FleetSpec) -> Result<Self, LabError> {
        validate_prefix(&spec.prefix)?;
        for (what, n, max) in [
            ("balancers", spec.balancers, MAX_BALANCERS),
            ("backends", spec.backends, MAX_FLEET_BACKENDS),
            ("clients", spec.clients, MAX_FLEET_CLIENTS),
        ] {
            if !(1..=max).contains(&n) {
                return Err(LabError::Invalid(format!("{n} {what} (1..={max})")));
            }
        }
        if !(10..=1000).contains(&spec.bfd_interval_ms) {
            return Err(LabError::Invalid(format!(
                "BFD interval {} ms (10..=1000)",
                spec.bfd_interval_ms
            )));
        }
        let existing = Lab::status(&spec.prefix);
        if !existing.namespaces.is_empty() || !existing.pins.is_empty() {
            return Err(LabError::LabExists(spec.prefix));
        }
        let p = spec.prefix.clone();
        let router = Node::with_addrs(
            &p,
            Role::Router,
            "p-r0".into(),
            Net::Balancers.addr4(ROUTER_HOST),
            Net::Balancers.addr6(ROUTER_HOST),
            Net::Balancers.mac(false, ROUTER_HOST),
        );
        let mut fleet = Self {
            switch: Netns::named(&ns_name(&p, Role::Switch)),
            router,
            balancers: Vec::new(),
            clients: Vec::new(),
            backends: Vec::new(),
            servers: Mutex::new(Vec::new()),
            keep: false,
            done: false,
            spec,
        };
        // From here on, an error drops `fleet`, which removes everything with its prefix.
        fleet.build()?;
        Ok(fleet)
    }

    fn build(&mut self) -> Result<(), LabError> {
        let sw = Netns::create(self.switch.name())?;
        sw.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        sw.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        for net in [Net::Balancers, Net::Clients, Net::Backends] {
            let br = net.bridge();
            sw.ip(&[
                &["link", "add", &br, "type", "bridge", "mcast_snooping", "0"],
                &["link", "set", &br, "up"],
            ])?;
        }
        self.build_router()?;
        for _ in 0..self.spec.balancers {
            self.plug_balancer()?;
        }
        for k in 1..=self.spec.clients {
            self.plug_client(k)?;
        }
        for k in 1..=self.spec.backends {
            self.plug_backend(k)?;
        }
        bird::start_router(self)?;
        for i in 0..self.balancers.len() {
            bird::start_balancer(self, i)?;
        }
        Ok(())
    }

    /// Create `port.node`'s interface on `port.net` (a veth whose other end is plugged
    /// into that network's bridge) with its addresses.
    fn plug(&self, port: &Port<'_>) -> Result<(), LabError> {
        let Port {
            node,
            iface,
            net,
            host,
            peer,
        } = port;
        self.switch.ip(&[
            &[
                "link",
                "add",
                iface,
                "netns",
                node.ns(),
                "address",
                &fmt_mac(net.mac(false, *host)),
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "address",
                &fmt_mac(net.mac(true, *host)),
            ],
            &["link", "set", peer, "master", &net.bridge(), "up"],
        ])?;
        node.netns().ip(&[
            &[
                "addr",
                "add",
                &format!("{}/24", net.addr4(*host)),
                "dev",
                iface,
            ],
            &[
                "addr",
                "add",
                &format!("{}/64", net.addr6(*host)),
                "dev",
                iface,
                "nodad",
            ],
            &["link", "set", iface, "up"],
            &["link", "set", "lo", "up"],
        ])
    }

    fn build_router(&mut self) -> Result<(), LabError> {
        let r = self.router.clone();
        let ns = Netns::create(r.ns())?;
        for (i, net) in [Net::Balancers, Net::Clients, Net::Backends]
            .into_iter()
            .enumerate()
        {
            self.plug(&Port {
                node: &r,
                iface: &format!("eth{i}"),
                net,
                host: ROUTER_HOST,
                peer: format!("p-r{i}"),
            })?;
        }
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            // ECMP by the flow (the L4 hash), not by addresses only.
            ("net.ipv4.fib_multipath_hash_policy", "1"),
            ("net.ipv6.fib_multipath_hash_policy", "1"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            ns.sysctl(key, value)?;
        }
        Ok(())
    }

    /// A node with host number `host` on `net`: its namespace, its eth0 plugged into that
    /// network with its addresses, a default route via the router.
    fn node_on(&self, role: Role, net: Net, host: usize) -> Result<(Node, Netns), LabError> {
        let host =
            u8::try_from(host).map_err(|_| LabError::Invalid(format!("no room for {role}")))?;
        let node = Node::with_addrs(
            self.prefix(),
            role,
            format!("p-{}", role.suffix()),
            net.addr4(host),
            net.addr6(host),
            net.mac(false, host),
        );
        let ns = Netns::create(node.ns())?;
        self.plug(&Port {
            node: &node,
            iface: "eth0",
            net,
            host,
            peer: node.peer().to_owned(),
        })?;
        ns.ip(&[&["route", "add", "default", "via", &net.gateway().to_string()]])?;
        Ok((node, ns))
    }

    /// Plug the next balancer into the balancer network (its BIRD is the caller's).
    fn plug_balancer(&mut self) -> Result<&Node, LabError> {
        let k = self.balancers.len() + 1;
        let (lb, ns) = self.node_on(Role::Balancer(k), Net::Balancers, k)?;
        // Forwarding on: the balancer's FIB lookups (bpf_fib_lookup) need it.
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.eth0.send_redirects", "0"),
        ] {
            ns.sysctl(key, value)?;
        }
        // veth delivers what the balancer sends with XDP_TX only to a peer running XDP.
        pin(&self.switch, programs::PASS, lb.peer())?;
        // No unknown-unicast flooding to a balancer: XDP sees every frame a veth gets, also
        // those for another MAC, so a flooded frame (for a balancer whose port went down, or
        // before the bridge learned it) would be forwarded by a balancer it was not sent to,
        // and a lost balancer would look alive. A NIC filters foreign unicast in hardware.
        self.switch
            .exec(&["bridge", "link", "set", "dev", lb.peer(), "flood", "off"])?;
        self.balancers.push(lb);
        Ok(&self.balancers[k - 1])
    }

    fn plug_client(&mut self, k: usize) -> Result<(), LabError> {
        let (c, ns) = self.node_on(Role::Client(k), Net::Clients, 10 + k)?;
        // Partial checksums do not survive XDP_TX; a retransmission must not move a
        // connection to another balancer by itself.
        c.exec(&["ethtool", "-K", "eth0", "tx", "off"])?;
        ns.sysctl("net.core.txrehash", "0")?;
        self.clients.push(c);
        Ok(())
    }

    fn plug_backend(&mut self, k: usize) -> Result<(), LabError> {
        let net = match self.spec.mode {
            Forwarding::Dsr => Net::Balancers,
            Forwarding::Ipip => Net::Backends,
        };
        let (b, ns) = self.node_on(Role::Backend(k), net, 10 + k)?;
        ns.ip(&[
            &["addr", "add", &format!("{FLEET_VIP4}/32"), "dev", "lo"],
            &["addr", "add", &format!("{FLEET_VIP4_LC}/32"), "dev", "lo"],
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
            ns.sysctl(key, value)?;
        }
        if self.spec.mode == Forwarding::Ipip {
            pin(&ns, programs::DECAP, "eth0")?;
        }
        let server = spawn_server(
            &self.spec.servers,
            &b,
            &Self::server_addrs(&b),
            self.prefix(),
        )?;
        self.backends.push(b);
        self.servers
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .push(server);
        Ok(())
    }

    /// Add a balancer (the next number, at most [`MAX_BALANCERS`]: the router has a
    /// session configured for each) with its BIRD; its daemon is the caller's.
    pub fn add_balancer(&mut self) -> Result<usize, LabError> {
        if self.balancers.len() >= MAX_BALANCERS {
            return Err(LabError::Invalid(format!(
                "at most {MAX_BALANCERS} balancers"
            )));
        }
        self.plug_balancer()?;
        let i = self.balancers.len() - 1;
        bird::start_balancer(self, i)?;
        Ok(i)
    }

    /// Lose balancer `i` as a host failure would: its link goes dead first (nothing it
    /// sends leaves: no BGP notification, no TCP FIN of the session), then its BIRD is
    /// killed. The router notices by BFD (or the hold timer). Its daemon is left running,
    /// cut off.
    pub fn kill_balancer(&self, i: usize) -> Result<(), LabError> {
        let lb = self
            .balancers
            .get(i)
            .ok_or_else(|| LabError::Invalid(format!("no balancer {i}")))?;
        self.switch.ip(&[&["link", "set", lb.peer(), "down"]])?;
        bird::kill(self, lb)
    }

    /// The balancers the router's kernel forwards `vip` to now (its ECMP next hops).
    pub fn router_next_hops(&self, vip: Ipv4Addr) -> Result<Vec<Ipv4Addr>, LabError> {
        let out =
            self.router
                .exec(&["ip", "-4", "route", "show", "exact", &format!("{vip}/32")])?;
        let mut hops: Vec<Ipv4Addr> = out
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect();
        hops.sort_unstable();
        Ok(hops)
    }

    /// Wait (at most `within`) until the router forwards `vip` to exactly the balancers
    /// `want` (indices); how long it took.
    pub fn wait_next_hops(
        &self,
        vip: Ipv4Addr,
        want: &[usize],
        within: Duration,
    ) -> Result<Duration, LabError> {
        let mut want: Vec<Ipv4Addr> = want.iter().map(|&i| self.balancers[i].addr4()).collect();
        want.sort_unstable();
        let t0 = Instant::now();
        loop {
            let now = self.router_next_hops(vip)?;
            if now == want {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > within {
                return Err(LabError::Invalid(format!(
                    "the router forwards {vip} via {now:?}, not {want:?}, after {within:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
