//! The `Examples:` section of every command's help (`--help`, `-h` and the man pages), by
//! command path. [`command`] adds them to the parsed command tree; a command missing here
//! fails `every_command_has_examples`, so that a new command cannot forget them.

/// (path below `sluice`, empty for `sluice` itself; the examples, one a line, `# what` after).
const EXAMPLES: &[(&str, &str)] = &[
    (
        "",
        "sluice run --config /etc/sluice/sluice.toml   # the daemon (systemd runs this)
sluice backend list                            # health and counters of every backend
sluice backend add --vip web --address 10.0.0.3 --weight 2
sluice stats --watch                           # rates, refreshed every second
sluice lab up && sluice demo                   # try it in a namespace lab (root)",
    ),
    (
        "run",
        "sluice run                                    # /etc/sluice/sluice.toml
sluice run --config lab.toml --interface eth1 --xdp-mode generic
SLUICE_LOG=debug sluice run --log-format json  # JSON lines on stderr, debug level",
    ),
    (
        "doctor",
        "sluice doctor                                 # on the balancer: what blocks traffic
sluice doctor --config /etc/sluice/sluice.toml --json
sluice doctor backend --vip 10.0.0.100:80/tcp --mode ipip   # on a backend host",
    ),
    (
        "doctor backend",
        "sluice doctor backend --vip 10.0.0.100:80/tcp            # DSR backend
sluice doctor backend --vip [2001:db8::100]:443/tcp --mode ipip --mtu 9000",
    ),
    (
        "detach",
        "sluice detach --config /etc/sluice/sluice.toml
sluice detach --interface eth0 --pin-dir /sys/fs/bpf/sluice/eth0",
    ),
    (
        "config",
        "sluice config check /etc/sluice/sluice.toml
sluice config diff /etc/sluice/sluice.toml",
    ),
    (
        "config check",
        "sluice config check /etc/sluice/sluice.toml
sluice config check --file-only other-host.toml   # not this host's groups and directories",
    ),
    (
        "config export",
        "sluice config export /etc/sluice/sluice.toml > effective.toml",
    ),
    ("config diff", "sluice config diff /etc/sluice/sluice.toml"),
    (
        "config save",
        "sluice config save /etc/sluice/sluice.toml   # the old file stays as sluice.toml.bak",
    ),
    (
        "config discard",
        "sluice config discard /etc/sluice/sluice.toml && systemctl restart sluice",
    ),
    (
        "reload",
        "sluice reload
sluice --config lab.toml reload --json",
    ),
    (
        "vip",
        "sluice vip list
sluice vip add --name web --address 192.0.2.10 --port 80
sluice vip set web --scheduler wlc",
    ),
    ("vip list", "sluice vip list\nsluice vip list --json"),
    (
        "vip add",
        "sluice vip add --name web --address 192.0.2.10 --port 80
sluice vip add --name dns6 --address 2001:db8::53 --port 53 --protocol udp --forwarding ipip",
    ),
    ("vip remove", "sluice vip remove web"),
    (
        "vip set",
        "sluice vip set web --scheduler wlc
sluice vip set web --slow-start-ms 30000 --drain-timeout-ms 60000",
    ),
    (
        "fleet",
        "sluice fleet check --peer /run/sluice-b/sluice.sock",
    ),
    (
        "fleet check",
        "sluice fleet check --peer /run/sluice-b/sluice.sock --peer /run/sluice-c/sluice.sock
sluice --netns lb1 fleet check --peer /run/lb2.sock --json   # exit status 3: they disagree",
    ),
    (
        "backend",
        "sluice backend list
sluice backend add --vip web --address 10.0.0.3 --weight 2
sluice backend drain --vip web --address 10.0.0.3 --remove",
    ),
    (
        "backend list",
        "sluice backend list
sluice backend list --vip web                  # one VIP's backends (fast with thousands)
sluice backend list --state-dir /run/sluice   # from the status file, without the API",
    ),
    (
        "backend add",
        "sluice backend add --vip web --address 10.0.0.3
sluice backend add --vip web --address 10.0.0.4 --weight 2 --mac 02:00:00:00:00:04",
    ),
    (
        "backend remove",
        "sluice backend remove --vip web --address 10.0.0.3",
    ),
    (
        "backend set-weight",
        "sluice backend set-weight --vip web --address 10.0.0.3 --weight 5
sluice backend set-weight --vip web --address 10.0.0.3 --weight 0   # no new flows",
    ),
    (
        "backend drain",
        "sluice backend drain --vip web --address 10.0.0.3
sluice backend drain --vip web --address 10.0.0.3 --remove   # removed once drained",
    ),
    (
        "backend undrain",
        "sluice backend undrain --vip web --address 10.0.0.3",
    ),
    (
        "lookup",
        "sluice lookup --vip web --src 192.0.2.7:40000
sluice lookup --vip all-ports --src [2001:db8::7]:40000 --dport 8443",
    ),
    (
        "stats",
        "sluice stats                    # rates over one second
sluice stats --watch --interval 5
sluice stats --json | jq '.rates[]'",
    ),
    (
        "plan",
        "sluice plan backend remove --vip web --address 10.0.0.3
sluice plan vip set web --table-size 131071
sluice plan load web",
    ),
    ("plan vip", "sluice plan vip set web --scheduler wlc"),
    (
        "plan vip add",
        "sluice plan vip add --name api --address 192.0.2.11 --port 443",
    ),
    ("plan vip remove", "sluice plan vip remove web"),
    (
        "plan vip set",
        "sluice plan vip set web --table-size 131071",
    ),
    (
        "plan backend",
        "sluice plan backend remove --vip web --address 10.0.0.3",
    ),
    (
        "plan backend add",
        "sluice plan backend add --vip web --address 10.0.0.5 --weight 3",
    ),
    (
        "plan backend remove",
        "sluice plan backend remove --vip web --address 10.0.0.3",
    ),
    (
        "plan backend set-weight",
        "sluice plan backend set-weight --vip web --address 10.0.0.3 --weight 10",
    ),
    (
        "plan backend drain",
        "sluice plan backend drain --vip web --address 10.0.0.3",
    ),
    (
        "plan backend undrain",
        "sluice plan backend undrain --vip web --address 10.0.0.3",
    ),
    ("plan load", "sluice plan load\nsluice plan load llm --json"),
    (
        "demo",
        "sluice demo
sluice demo --connections 2000
sluice demo --balancers 3   # the fleet demo: BGP, ECMP, maintenance",
    ),
    ("decap", "sluice decap attach --interface eth0"),
    (
        "decap attach",
        "sluice decap attach --interface eth0
sluice --netns backend1 decap attach --interface eth0 --xdp-mode generic",
    ),
    ("decap detach", "sluice decap detach --interface eth0"),
    ("peer", "sluice peer attach --interface veth-lb-peer"),
    ("peer attach", "sluice peer attach --interface veth-lb-peer"),
    ("peer detach", "sluice peer detach --interface veth-lb-peer"),
    (
        "bench",
        "sluice bench --quick --out results/
sluice bench packet --method paired",
    ),
    (
        "bench packet",
        "sluice bench packet
sluice bench packet --method paired --rounds 5 --json",
    ),
    ("bench control", "sluice bench control --quick"),
    (
        "bench scale",
        "sluice bench scale                              # 4096 VIPs x 64 backends
sluice bench scale --vips 2048 --backends 64 --table-size 641 --quick",
    ),
    (
        "bench throughput",
        "sluice bench throughput --generator live-frames --cpu 1",
    ),
    (
        "bench inference",
        "sluice bench inference --quick
sluice bench inference --policies maglev,lc --seed 1",
    ),
    (
        "gen",
        "sluice gen --interface veth0 --to 10.97.0.100:80 --dst-mac 02:00:00:00:00:01
sluice gen -i veth0 --to [2001:db8::100]:53 --udp --dst-mac 02:00:00:00:00:01 --flows 1000",
    ),
    (
        "lab",
        "sluice lab up && sluice --netns sl-lab-lb run --config LAB.toml
sluice lab status
sluice lab down",
    ),
    (
        "lab up",
        "sluice lab up
sluice lab up --backends 4 --mode ipip --no-ipv6
sluice lab up --balancers 3   # a routed fleet: BIRD and ECMP",
    ),
    (
        "lab down",
        "sluice lab down\nsluice lab down --prefix my-lab",
    ),
    ("lab status", "sluice lab status --json"),
    (
        "lab backend",
        "sluice --netns sl-lab-b1 lab backend --name b1 --addr 10.97.0.11",
    ),
    (
        "lab llm-backend",
        "sluice lab llm-backend --name b1 --addr 10.97.0.11 --speed 0.5",
    ),
    ("autoscale", "sluice autoscale status"),
    (
        "autoscale status",
        "sluice autoscale status\nsluice autoscale status --json",
    ),
    (
        "announce",
        "sluice announce status
sluice announce withdraw --all   # maintenance: traffic leaves this balancer
sluice announce restore",
    ),
    ("announce status", "sluice announce status --json"),
    ("announce withdraw", "sluice announce withdraw --all"),
    ("announce restore", "sluice announce restore"),
    (
        "simulate",
        "sluice simulate --trace config/traces/TRACE.csv --policy config/traces/policy.toml
sluice simulate --trace T.csv --policy P.toml --csv steps.csv --every 60",
    ),
    (
        "simulate inference",
        "sluice simulate inference --seed 1
sluice simulate inference --backends 8 --policies maglev,lc --json",
    ),
    (
        "completions",
        "sluice completions bash > /etc/bash_completion.d/sluice
sluice completions zsh > \"${fpath[1]}/_sluice\"",
    ),
    ("man", "sluice man --out /usr/local/share/man/man1"),
];

/// The examples of the command at `path` (`backend add`; empty for `sluice`).
pub fn of(path: &str) -> Option<&'static str> {
    EXAMPLES.iter().find(|(p, _)| *p == path).map(|(_, e)| *e)
}

/// `cmd` (at `path`) and its subcommands with their examples after the rest of their help.
pub fn add(mut cmd: clap::Command, path: &str) -> clap::Command {
    if let Some(e) = of(path) {
        let lines: Vec<String> = e.lines().map(|l| format!("  {l}")).collect();
        let section = format!("Examples:\n{}", lines.join("\n"));
        let after = match cmd.get_after_help() {
            Some(a) => format!("{a}\n\n{section}"),
            None => section,
        };
        cmd = cmd.after_help(after);
    }
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for n in names {
        let sub = sub_path(path, &n);
        cmd = cmd.mut_subcommand(&n, |s| add(s, &sub));
    }
    cmd
}

/// The path of subcommand `name` of the command at `path` (`""`: `sluice` itself), as
/// `EXAMPLES` keys them.
fn sub_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path} {name}")
    }
}

#[cfg(test)]
mod tests {
    /// Every command (all levels) shows an `Examples:` section in `--help`, whose
    /// examples start with `sluice` and parse.
    #[test]
    fn every_command_has_examples() {
        fn walk(cmd: &mut clap::Command, path: &str, missing: &mut Vec<String>) {
            let help = cmd.render_long_help().to_string();
            if !help.contains("Examples:\n  sluice") {
                missing.push(if path.is_empty() {
                    "sluice".to_owned()
                } else {
                    path.to_owned()
                });
            }
            // `help` is clap's own (not in the man pages).
            let names: Vec<String> = cmd
                .get_subcommands()
                .map(|s| s.get_name().to_owned())
                .filter(|n| n != "help")
                .collect();
            for n in names {
                let sub = super::sub_path(path, &n);
                if let Some(s) = cmd.find_subcommand_mut(&n) {
                    walk(s, &sub, missing);
                }
            }
        }
        let mut cmd = super::super::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&mut cmd, "", &mut missing);
        assert!(
            missing.is_empty(),
            "no examples (add them to cli/examples.rs): {missing:?}"
        );
        // Every example is a command line this parser accepts (placeholders aside).
        for (path, examples) in super::EXAMPLES {
            for line in examples.lines() {
                let line = line.split("  #").next().unwrap_or(line);
                for part in line.split("&&") {
                    let part = part.split(['>', '|']).next().unwrap_or(part);
                    let args: Vec<&str> = part
                        .split_whitespace()
                        .skip_while(|w| w.contains('='))
                        .collect();
                    if args.first() != Some(&"sluice") {
                        continue;
                    }
                    if let Err(e) = super::super::command().try_get_matches_from(&args) {
                        panic!("`{path}` example {part:?} does not parse: {e}");
                    }
                }
            }
        }
    }
}
