//! `sluice lab up|down|status|backend|llm-backend`: the namespace lab (`crate::lab`) from the command
//! line.

use std::{net::IpAddr, path::Path};

use clap::Subcommand;

use super::{API_SOCKET_ENV, FwdMode};
use crate::{
    config,
    lab::{self, DEFAULT_PREFIX, Lab, LabSpec, Role, Servers, Weights, server::BackendServer},
};
use sluice_lab::llm;

#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Build a lab (switch, load balancer, clients and backends as network namespaces on one
    /// bridge), start a server on each backend, and write a daemon config for it. The lab
    /// stays up until `sluice lab down`.
    Up {
        /// Prefix of every namespace (PREFIX-sw, -lb, -c1.., -b1..).
        #[arg(long, default_value = DEFAULT_PREFIX)]
        prefix: String,
        #[arg(long, default_value_t = 3)]
        backends: usize,
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// How the backends are set up, and the config's forwarding mode.
        #[arg(long, value_enum, default_value = "dsr")]
        mode: FwdMode,
        /// Weight 1 for every backend in the config (default: backend-k gets weight k).
        #[arg(long)]
        equal_weights: bool,
        /// Leave the IPv6 VIPs out of the config.
        #[arg(long)]
        no_ipv6: bool,
        /// Build a routed fleet lab instead: N balancers (1..=4), each running BIRD and
        /// sluice (started by this command), behind a router running BIRD with ECMP; the
        /// clients on their own network behind the router. IPv4 only.
        #[arg(long, value_name = "N")]
        balancers: Option<usize>,
    },
    /// Remove a lab: kill the processes in its namespaces, unpin its programs, delete its
    /// namespaces and files. Succeeds when nothing is left to remove.
    Down {
        #[arg(long, default_value = DEFAULT_PREFIX)]
        prefix: String,
    },
    /// Show what exists of a lab (every lab without --prefix).
    Status {
        #[arg(long)]
        prefix: Option<String>,
    },
    /// The lab's backend server: TCP 80 (HTTP: 200 with NAME; `HOLD\n`: long-lived echo;
    /// anything else: NAME) and UDP 53 (echo as NAME:payload) on every --addr, until killed.
    /// Run it in a backend's namespace: `sluice --netns NS lab backend ...`.
    Backend {
        #[arg(long)]
        name: String,
        #[arg(long = "addr", required = true, num_args = 1..)]
        addrs: Vec<IpAddr>,
    },
    /// A simulated LLM inference server (not a model): OpenAI-style `POST /v1/completions`
    /// (streamed SSE tokens), continuous batching, vLLM-named gauges on `GET /metrics`, on
    /// --port of every --addr, until killed. Run it in a backend's namespace:
    /// `sluice --netns NS lab llm-backend ...`.
    LlmBackend {
        #[arg(long)]
        name: String,
        #[arg(long = "addr", required = true, num_args = 1..)]
        addrs: Vec<IpAddr>,
        #[arg(long, default_value_t = llm::LLM_PORT)]
        port: u16,
        /// This GPU's speed factor (0.5: every engine step takes twice as long).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Most sequences decoding at once.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// One decode step with a batch of one, ms.
        #[arg(long, default_value_t = 20.0)]
        decode_ms: f64,
        /// KV-cache capacity, tokens.
        #[arg(long, default_value_t = 32768)]
        kv_tokens: u64,
    },
}

pub fn run(cmd: LabCmd) -> anyhow::Result<()> {
    match cmd {
        LabCmd::Up {
            prefix,
            backends,
            clients,
            mode,
            equal_weights,
            no_ipv6: _,
            balancers: Some(n),
        } => super::fleet_lab::up(
            lab::fleet::FleetSpec::new(&prefix)
                .balancers(n)
                .backends(backends)
                .clients(clients)
                .mode(mode.into())
                .servers(Servers::Process(std::env::current_exe()?)),
            equal_weights,
        ),
        LabCmd::Up {
            prefix,
            backends,
            clients,
            mode,
            equal_weights,
            no_ipv6,
            balancers: None,
        } => up(
            LabSpec {
                prefix,
                backends,
                clients,
                mode: mode.into(),
                ipv6: !no_ipv6,
                servers: Servers::Process(std::env::current_exe()?),
            },
            if equal_weights {
                Weights::Equal
            } else {
                Weights::Ascending
            },
        ),
        LabCmd::Down { prefix } => {
            println!("{}", Lab::down_prefix(&prefix)?);
            Ok(())
        }
        LabCmd::Status { prefix } => status(prefix.as_deref()),
        LabCmd::Backend { name, addrs } => {
            let server = BackendServer::start(&name, &addrs)?;
            let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            eprintln!(
                "backend {name}: tcp {} and udp {} on {}",
                lab::TCP_PORT,
                lab::UDP_PORT,
                addrs.join(" ")
            );
            server.wait()
        }
        LabCmd::LlmBackend {
            name,
            addrs,
            port,
            speed,
            batch,
            decode_ms,
            kv_tokens,
        } => {
            let params = llm::ModelParams {
                speed,
                batch,
                decode_base_ms: decode_ms,
                kv_capacity_tokens: kv_tokens,
                ..llm::ModelParams::default()
            };
            let server = llm::LlmServer::start(&name, &addrs, port, params)?;
            let addrs: Vec<String> = server.addrs().iter().map(ToString::to_string).collect();
            eprintln!("llm backend {name}: {}", addrs.join(" "));
            server.wait()
        }
    }
}

fn up(spec: LabSpec, weights: Weights) -> anyhow::Result<()> {
    let lab = Lab::up(spec)?;
    let path = lab.write_daemon_config(&weights)?;
    let w = weights.for_backends(lab.backends().len())?;
    let p = lab.prefix();
    println!(
        "lab {p} is up ({} mode): switch {} (bridge br0)",
        lab.mode(),
        lab.switch().name()
    );
    println!(
        "  VIPs {} and {}: tcp {} (HTTP, answers with the backend's name), udp {} (echo)",
        lab.vip4(),
        lab.vip6(),
        lab::TCP_PORT,
        lab::UDP_PORT
    );
    let width = lab.nodes().map(|n| n.ns().len()).max().unwrap_or(0) + 2;
    let row = |cells: [&str; 6]| {
        let [ns, node, v4, v6, mac, extra] = cells;
        let line = format!("  {ns:<width$}{node:<11}{v4:<13}{v6:<10}{mac:<19}{extra}");
        println!("{}", line.trim_end());
    };
    println!();
    row(["namespace", "node", "ipv4", "ipv6", "mac", ""]);
    for n in lab.nodes() {
        let extra = match n.role() {
            Role::Backend(k) => {
                let pid = lab
                    .backend_server_pid(k - 1)
                    .map_or(String::new(), |p| format!(", server pid {p}"));
                format!("weight {}{pid}", w[k - 1])
            }
            Role::Lb => "run sluice here".into(),
            Role::Client(_) => "VIPs routed via the lb".into(),
            Role::Switch | Role::Router | Role::Balancer(_) => String::new(),
        };
        row([
            n.ns(),
            &n.name(),
            &n.addr4().to_string(),
            &n.addr6().to_string(),
            &config::format_mac(&n.mac()),
            &extra,
        ]);
    }
    println!("\n  pins:");
    for pin in lab.pins() {
        println!("    {}", pin.display());
    }
    println!("\nDaemon config: {}", path.display());
    let socket = lab.daemon_config(&weights)?.daemon.api_socket;
    for line in hints(lab.lb_ns(), &path, &socket) {
        println!("{line}");
    }
    println!(
        "  try it:      ip netns exec {} curl -s http://{}/",
        lab.client(0).ns(),
        lab.vip4()
    );
    println!("  remove it:   sluice lab down --prefix {p}");
    lab.keep();
    Ok(())
}

/// The exact commands to run the lab's daemon and to talk to it (its API socket is the
/// lab's, not the default one).
fn hints(lb_ns: &str, config: &Path, socket: &Path) -> [String; 4] {
    let (config, socket) = (config.display(), socket.display());
    [
        format!("  run sluice:  sluice --netns {lb_ns} run --config {config}"),
        format!("  talk to it:  sluice --config {config} backend list"),
        format!("          or:  export {API_SOCKET_ENV}={socket}; sluice backend list"),
        format!("          or:  sluice --api-socket {socket} stats --watch"),
    ]
}

fn status(prefix: Option<&str>) -> anyhow::Result<()> {
    let prefixes = match prefix {
        Some(p) => {
            lab::validate_prefix(p)?;
            vec![p.to_owned()]
        }
        None => Lab::list(),
    };
    if prefixes.is_empty() {
        println!("no labs");
        return Ok(());
    }
    for p in prefixes {
        let s = Lab::status(&p);
        if s.namespaces.is_empty() && s.pins.is_empty() && s.config.is_none() {
            println!("lab {p}: nothing exists");
            continue;
        }
        println!("lab {p}:");
        let width = s.namespaces.iter().map(|n| n.name.len()).max().unwrap_or(0) + 2;
        for n in &s.namespaces {
            let addrs = if n.role == Role::Switch {
                // br0; a fleet lab's switch also has br1 (clients) and br2 (IPIP backends).
                let ns = lab::netns::Netns::named(&n.name);
                let bridges: Vec<String> = ["br0", "br1", "br2"]
                    .into_iter()
                    .filter_map(|br| {
                        let ports = ns.exec(&["ip", "-br", "link", "show", "master", br]).ok()?;
                        Some(format!("bridge {br}, {} ports", ports.lines().count()))
                    })
                    .collect();
                bridges.join("; ")
            } else {
                lab::netns::Netns::named(&n.name)
                    .exec(&["ip", "-br", "addr", "show", "dev", "eth0"])
                    .map(|o| o.split_whitespace().skip(2).collect::<Vec<_>>().join(" "))
                    .unwrap_or_else(|_| "no eth0".into())
            };
            println!("  {:<width$}{:<11}{addrs}", n.name, n.role.to_string());
            for (pid, cmd) in &n.processes {
                println!("  {:<width$}{:<11}pid {pid}: {cmd}", "", "");
            }
        }
        for pin in &s.pins {
            println!("  pin    {}", pin.display());
        }
        if let Some(c) = &s.config {
            println!("  config {}", c.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every printed command reaches the lab's daemon: the socket the lab config names.
    #[test]
    fn hints_name_the_labs_socket() {
        let config = Path::new("/var/lib/sluice-lab/sl-lab.toml");
        let socket = Path::new("/var/lib/sluice-lab/sl-lab/sluice.sock");
        let h = hints("sl-lab-lb", config, socket);
        assert!(
            h[0].ends_with("sluice --netns sl-lab-lb run --config /var/lib/sluice-lab/sl-lab.toml")
        );
        assert!(h[1].contains("sluice --config /var/lib/sluice-lab/sl-lab.toml backend list"));
        assert!(h[2].contains("SLUICE_API_SOCKET=/var/lib/sluice-lab/sl-lab/sluice.sock"));
        assert!(h[3].contains("--api-socket /var/lib/sluice-lab/sl-lab/sluice.sock"));
        // And the commands parse as printed.
        for line in &h[1..] {
            let cmd = line.rsplit(':').next().unwrap_or_default();
            let cmd = cmd.rsplit("; ").next().unwrap_or_default();
            let args: Vec<&str> = cmd.split_whitespace().collect();
            <super::super::Cli as clap::Parser>::try_parse_from(&args)
                .unwrap_or_else(|e| panic!("{cmd}: {e}"));
        }
    }
}
