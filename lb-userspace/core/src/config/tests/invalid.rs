//! The files of `config/invalid/`, each with the problems it must give.

use super::*;

const INVALID: &[(&str, Expected)] = &[
    (
        "load.toml",
        &[
            (
                Some(12),
                "vip[0].load.interval_ms",
                "10 is out of range (50..=60000)",
            ),
            (
                Some(13),
                "vip[0].load.preset",
                "unknown preset \"llama\"; accepted values: \"vllm\", \"tgi\", \"sglang\", \"triton\"",
            ),
            (
                Some(14),
                "vip[0].load.waiting",
                "\"queue{model=unquoted}\" is not a metric selector like name{label=\"value\"}: the value of label model must be quoted (\"...\")",
            ),
            (
                Some(24),
                "vip[1].load.port",
                "missing required key `port` for source = \"agent\" (the agent's TCP port)",
            ),
            (
                Some(26),
                "vip[1].load.path",
                "`path` only applies to source = \"prometheus\" (this is \"agent\")",
            ),
        ],
    ),
    (
        "autoscale.toml",
        &[
            (Some(13), "vip[0].autoscale.min", "5 is more than max (3)"),
            (
                Some(17),
                "vip[0].autoscale.target.metric",
                "metric \"backend\" needs [vip.autoscale.backend_metric]",
            ),
            (
                Some(18),
                "vip[0].autoscale.target.value",
                "the target must be more than 0",
            ),
            (
                Some(21),
                "vip[0].autoscale.step[0].metric",
                "unknown metric \"queue_depth\"; accepted values: \"active_connections\", \"new_connections\", \"packets\", \"bytes\", \"backend\"",
            ),
            (
                Some(23),
                "vip[0].autoscale.step[0].below",
                "either `above` or `below`, not both",
            ),
            (
                Some(28),
                "vip[0].autoscale.step[1].add",
                "a `below` rule removes backends: use `remove`",
            ),
            (
                Some(30),
                "vip[0].autoscale.cron[0]",
                "the entry sets nothing",
            ),
            (
                Some(31),
                "vip[0].autoscale.cron[0].schedule",
                "\"0 25 * * *\" is not a cron expression",
            ),
            (
                Some(32),
                "vip[0].autoscale.cron[0].timezone",
                "\"Europe/Pariss\" is not an IANA time zone",
            ),
            (
                Some(34),
                "vip[0].autoscale.cron[1]",
                "the entry sets nothing",
            ),
            (
                Some(39),
                "vip[0].autoscale.provider.standby[1]",
                "2001:db8::2 is not the same family as the VIP 10.0.0.1",
            ),
            (
                Some(39),
                "vip[0].autoscale.provider.standby[2]",
                "duplicate standby address 10.0.0.2: standby[0] has it too",
            ),
            (
                Some(40),
                "vip[0].autoscale.provider.retries",
                "`retries` does not apply to kind = \"pool\"",
            ),
        ],
    ),
    (
        "autoscale_provider.toml",
        &[
            (
                Some(18),
                "vip[0].autoscale.provider.destroy",
                "missing required key `destroy`",
            ),
            (
                Some(20),
                "vip[0].autoscale.provider.create",
                "expected a command as a list",
            ),
            (
                Some(21),
                "vip[0].autoscale.provider.standby",
                "`standby` does not apply to kind = \"exec\"",
            ),
            (
                Some(29),
                "vip[1].autoscale",
                "no policy: set [vip.autoscale.target]",
            ),
            (
                Some(33),
                "vip[1].autoscale.provider.kind",
                "kind \"kubernetes\" is not supported yet (only \"pool\", \"exec\")",
            ),
        ],
    ),
    ("syntax.toml", &[(Some(3), "", "invalid TOML")]),
    (
        "unknown_key.toml",
        &[(
            Some(13),
            "vip[0].backend[0].wieght",
            "unknown key `wieght` in [vip[0].backend[0]] (did you mean `weight`?); accepted keys: address, weight, mac",
        )],
    ),
    (
        "unknown_table.toml",
        &[(
            Some(2),
            "deamon",
            "unknown key `deamon` in the top level (did you mean `daemon`?)",
        )],
    ),
    (
        "wrong_type.toml",
        &[(
            Some(7),
            "vip[0].port",
            "wrong type: expected an integer, found string \"80\"",
        )],
    ),
    (
        "missing_required.toml",
        &[
            (
                Some(2),
                "daemon.interface",
                "missing required key `interface` in [daemon]",
            ),
            (
                Some(5),
                "vip[0].port",
                "missing required key `port` in [vip[0]]",
            ),
            (
                Some(5),
                "vip[0].forwarding",
                "missing required key `forwarding` in [vip[0]]",
            ),
        ],
    ),
    (
        "bad_ip.toml",
        &[
            (
                Some(6),
                "vip[0].address",
                "\"10.0.0.300\" is not an IP address",
            ),
            (
                Some(12),
                "vip[0].backend[0].address",
                "\"backend-1\" is not an IP address",
            ),
            (
                Some(15),
                "vip[0].backend[1].address",
                "224.0.0.5 is a multicast address; a backend must be a unicast address",
            ),
        ],
    ),
    (
        "bad_mac.toml",
        &[
            (
                Some(14),
                "vip[0].backend[0].mac",
                "\"02-00-00-00-00-01\" is not a MAC address",
            ),
            (
                Some(18),
                "vip[0].backend[1].mac",
                "01:00:5e:00:00:01 is a multicast MAC address",
            ),
            (
                Some(22),
                "vip[0].backend[2].mac",
                "ff:ff:ff:ff:ff:ff is the broadcast MAC address",
            ),
            (
                Some(26),
                "vip[0].backend[3].mac",
                "00:00:00:00:00:00 is the all-zero MAC address",
            ),
        ],
    ),
    (
        "bad_prefix.toml",
        &[
            (
                Some(4),
                "daemon.encap_source_v4",
                "\"172.16.1.0/16\" has host bits set (did you mean 172.16.0.0/16?)",
            ),
            (
                Some(5),
                "daemon.encap_source_v6",
                "prefix length /112 of fd00:5c::/112 is too long: at most /96",
            ),
        ],
    ),
    (
        "bad_prefix_length.toml",
        &[
            (
                Some(4),
                "daemon.encap_source_v4",
                "prefix length /4 of 0.0.0.0/4 is out of range (8..=32)",
            ),
            (
                Some(5),
                "daemon.encap_source_v6",
                "\"fd00:5c::\" is not a prefix",
            ),
        ],
    ),
    (
        "mixed_family.toml",
        &[(
            Some(15),
            "vip[0].backend[1].address",
            "backend 2001:db8::2 is IPv6 but the VIP 10.0.0.1 is IPv4; a VIP and its backends must be the same family",
        )],
    ),
    (
        "duplicate_vip.toml",
        &[(
            Some(12),
            "vip[1]",
            "duplicate VIP 10.0.0.1:80/tcp: vip[0] (line 5) has the same address, port and protocol",
        )],
    ),
    (
        "duplicate_name.toml",
        &[(
            Some(13),
            "vip[1].name",
            "duplicate VIP name \"web\": vip[0] (line 5) has it too",
        )],
    ),
    (
        "duplicate_backend.toml",
        &[(
            Some(18),
            "vip[0].backend[2].address",
            "duplicate backend 10.0.1.2: vip[0].backend[0] (line 11) has the same address",
        )],
    ),
    (
        "weight_range.toml",
        &[
            (
                Some(13),
                "vip[0].backend[0].weight",
                "-1 is out of range (0..=10000)",
            ),
            (
                Some(20),
                "vip[0].backend[2].weight",
                "70000 is out of range (0..=10000)",
            ),
        ],
    ),
    (
        "table_not_prime.toml",
        &[(
            Some(10),
            "vip[0].table_size",
            "65536 is not prime; Maglev needs a prime table size (nearest primes: 65521 and 65537)",
        )],
    ),
    (
        "table_range.toml",
        &[
            (
                Some(10),
                "vip[0].table_size",
                "5 is out of range (7..=16777213)",
            ),
            (
                Some(17),
                "vip[1].table_size",
                "16777259 is out of range (7..=16777213)",
            ),
        ],
    ),
    (
        "table_too_small.toml",
        &[(
            Some(10),
            "vip[0].table_size",
            "23 is too small for 3 backends: it must be at least 10 × backends = 30; a prime ≥ 300 (e.g. 307)",
        )],
    ),
    (
        "table_capacity.toml",
        &[(
            Some(4),
            "daemon.table_capacity",
            "200000 lookup-table slots are too few: the VIPs need 262148",
        )],
    ),
    (
        "bad_enums.toml",
        &[
            (
                Some(4),
                "daemon.xdp_mode",
                "unknown xdp_mode \"fast\"; accepted values: \"native\", \"generic\", \"auto\"",
            ),
            (
                Some(9),
                "vip[0].protocol",
                "unknown protocol \"sctp\"; accepted values: \"tcp\", \"udp\"",
            ),
            (
                Some(10),
                "vip[0].forwarding",
                "unknown forwarding \"nat\"; accepted values: \"dsr\", \"ipip\"",
            ),
            (
                Some(11),
                "vip[0].scheduler",
                "unknown scheduler \"random\"; accepted values: \"maglev\", \"rr\", \"wrr\", \"lc\", \"wlc\", \"source-hash\"",
            ),
        ],
    ),
    (
        "bad_lifecycle.toml",
        &[
            (
                Some(4),
                "daemon.tcp_idle_timeout_ms",
                "10 is out of range (1000..=86400000)",
            ),
            (
                Some(12),
                "vip[0].slow_start_ms",
                "-1 is out of range (0..=3600000)",
            ),
            (
                Some(13),
                "vip[0].drain_timeout_ms",
                "100000000 is out of range (0..=86400000)",
            ),
            (
                Some(14),
                "vip[0].on_down",
                "unknown on_down \"drop\"; accepted values: \"reassign\", \"keep\"",
            ),
            (
                Some(18),
                "vip[0].backend[0].state",
                "unknown state \"retired\"; accepted values: \"active\", \"draining\"",
            ),
        ],
    ),
    (
        "ipip_mac.toml",
        &[(
            Some(13),
            "vip[0].backend[0].mac",
            "`mac` is only used with forwarding = \"dsr\"; this VIP uses \"ipip\"",
        )],
    ),
    (
        "ranges.toml",
        &[
            (
                Some(4),
                "daemon.flow_table_size",
                "512 is out of range (1024..=67108864)",
            ),
            (
                Some(5),
                "daemon.table_capacity",
                "0 is out of range (14..=268435456)",
            ),
            (
                Some(6),
                "daemon.hash_seed",
                "4294967296 is out of range (0..=4294967295)",
            ),
            (Some(10), "vip[0].port", "65536 is out of range (0..=65535)"),
        ],
    ),
];

#[test]
fn invalid_configs_are_rejected_with_precise_problems() {
    let mut failures = Vec::new();
    for (file, expected) in INVALID {
        let path = Path::new(INVALID_DIR).join(file);
        match load(&path) {
            Ok(loaded) => failures.push(format!("{file}: accepted: {loaded:?}")),
            Err(ConfigError::Io { source, .. }) => failures.push(format!("{file}: {source}")),
            Err(e) => {
                // Every rendered line names the file.
                let origin = path.display().to_string();
                let text = e.to_string();
                if !text.lines().all(|l| l.starts_with(&origin)) {
                    failures.push(format!("{file}: a line without the origin in:\n{text}"));
                }
                if let Err(f) = check(file, &e.problems(), expected) {
                    failures.push(f);
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// A file in `config/invalid/` without a row in `INVALID` would go untested.
#[test]
fn every_invalid_file_has_a_row() {
    let mut files: Vec<String> = std::fs::read_dir(INVALID_DIR)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    files.sort();
    let mut rows: Vec<String> = INVALID.iter().map(|(f, _)| (*f).to_owned()).collect();
    rows.sort();
    assert_eq!(files, rows);
}

/// The checker itself rejects a wrong expectation (so the table can fail).
#[test]
fn checker_rejects_wrong_expectations() {
    let got = problems(&format!(
        "{DAEMON}[[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n\
         [[vip.backend]]\naddress = \"10.0.1.1\"\nweight = 70000\n"
    ));
    let right: Expected = &[(
        Some(10),
        "vip[0].backend[0].weight",
        "70000 is out of range (0..=10000)",
    )];
    assert_eq!(check("t", &got, right), Ok(()));
    let wrongs: [Expected; 4] = [
        &[(Some(9), "vip[0].backend[0].weight", "70000 is out of range")],
        &[(
            Some(10),
            "vip[0].backend[1].weight",
            "70000 is out of range",
        )],
        &[(Some(10), "vip[0].backend[0].weight", "is too large")],
        &[],
    ];
    for wrong in wrongs {
        assert!(check("t", &got, wrong).is_err(), "{wrong:?} passed");
    }
}
