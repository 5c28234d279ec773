use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

mod announce;
mod invalid;
mod model;

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/sluice.toml");
const INVALID_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/invalid");

/// A `[daemon]` table that validates, to prepend to VIP-only snippets.
const DAEMON: &str = "[daemon]\ninterface = \"eth0\"\n";

fn ok(text: &str) -> Loaded {
    parse(text, "test.toml").unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}"))
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text, "test.toml") {
        Ok(loaded) => panic!("expected an error, got {loaded:#?}"),
        Err(e) => e.problems(),
    }
}

#[test]
fn reference_config_validates_without_warnings() {
    let loaded = load(Path::new(REFERENCE)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.warnings, Vec::<String>::new());
    let c = &loaded.config;
    assert_eq!(c.daemon.interface, "eth0");
    assert_eq!(c.daemon.xdp_mode, XdpMode::Auto);
    assert_eq!(c.daemon.table_capacity, lb_common::DEFAULT_TABLE_SLOTS);
    assert_eq!(c.daemon.encap_source_v4.to_string(), "172.16.0.0/16");
    assert_eq!(c.daemon.encap_source_v6.to_string(), "fd00:5c::/96");
    assert_eq!(c.vips.len(), 2);

    let web = &c.vips[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.address, IpAddr::V4(Ipv4Addr::new(10, 100, 0, 10)));
    assert_eq!(
        (web.port, web.protocol, web.forwarding),
        (80, Protocol::Tcp, Forwarding::Dsr)
    );
    assert_eq!(web.backends.len(), 3);
    assert_eq!(web.backends[0].mac, Some([2, 0, 0, 0, 0, 1]));
    assert_eq!(web.backends[1].weight, 2);
    assert_eq!(web.backends[2].state, BackendState::Draining);
    assert!(web.backends[2].drain_remove);
    assert_eq!((web.slow_start_ms, web.drain_timeout_ms), (30_000, 300_000));

    let dns = &c.vips[1];
    assert!(dns.address.is_ipv6());
    assert_eq!(
        (dns.protocol, dns.forwarding, dns.table_size),
        (Protocol::Udp, Forwarding::Ipip, 997)
    );
    assert!(
        dns.backends
            .iter()
            .all(|b| b.mac.is_none() && b.address.is_ipv6())
    );
}

/// Every key the schema has (as `config export` writes it) appears in the reference file.
#[test]
fn reference_config_sets_every_key() {
    let text = std::fs::read_to_string(REFERENCE).unwrap();
    let exported = load(Path::new(REFERENCE))
        .unwrap()
        .config
        .to_toml()
        .unwrap();
    let keys = |t: &str| -> std::collections::BTreeSet<String> {
        let loc = Locator::new(t).unwrap();
        loc.paths().map(strip_indices).collect()
    };
    let in_reference = keys(&text);
    let missing: Vec<_> = keys(&exported).difference(&in_reference).cloned().collect();
    assert!(
        missing.is_empty(),
        "keys missing from config/sluice.toml: {missing:?}"
    );
    assert!(in_reference.contains("vip.backend.mac"));
}

fn strip_indices(path: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for c in path.chars() {
        match c {
            '[' => skip = true,
            ']' => skip = false,
            c if !skip => out.push(c),
            _ => {}
        }
    }
    out
}

#[test]
fn export_round_trips() {
    let reference = load(Path::new(REFERENCE)).unwrap().config;
    let minimal = ok(&format!(
        "{DAEMON}[[vip]]\naddress = \"2001:db8::1\"\nport = 0\nprotocol = \"udp\"\nforwarding = \"ipip\"\n\
         [[vip.backend]]\naddress = \"2001:db8::2\"\n\
         [[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n"
    ))
    .config;
    let no_vips = ok(DAEMON).config;
    for config in [reference, minimal, no_vips] {
        let text = config.to_toml().unwrap();
        let again = parse(&text, "export").unwrap_or_else(|e| panic!("{e}\n--- exported:\n{text}"));
        assert_eq!(again.config, config, "exported:\n{text}");
    }
}

#[test]
fn icmp_too_big_per_sec_range() {
    let vip =
        "[[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"ipip\"\n";
    let c = ok(&format!("{DAEMON}icmp_too_big_per_sec = 0\n{vip}")).config;
    assert_eq!(c.daemon.icmp_too_big_per_sec, 0);
    let p = problems(&format!("{DAEMON}icmp_too_big_per_sec = 1000001\n{vip}"));
    let shown: Vec<String> = p.iter().map(|p| p.render("test.toml")).collect();
    assert!(
        shown.iter().any(|s| s.contains("test.toml:3")
            && s.contains("daemon.icmp_too_big_per_sec")
            && s.contains("1000001 is out of range (0..=1000000)")),
        "{shown:?}"
    );
}

#[test]
fn defaults() {
    let c = ok(&format!(
        "{DAEMON}[[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n\
         [[vip.backend]]\naddress = \"10.0.1.1\"\n\
         [[vip]]\naddress = \"2001:db8::1\"\nport = 0\nprotocol = \"udp\"\nforwarding = \"ipip\"\n"
    ))
    .config;
    let d = &c.daemon;
    assert_eq!(d.xdp_mode, XdpMode::Auto);
    assert_eq!(d.flow_table_size, 1_048_576);
    assert_eq!(d.table_capacity, lb_common::DEFAULT_TABLE_SLOTS);
    assert_eq!(d.vip_capacity, 1024);
    assert_eq!(d.backend_capacity, 16384);
    assert_eq!(d.hash_seed, 0);
    assert_eq!(d.icmp_too_big_per_sec, 1000);
    assert_eq!(
        d.encap_source_v4,
        Ipv4Prefix::new(Ipv4Addr::new(172, 16, 0, 0), 16).unwrap()
    );
    assert_eq!(
        d.encap_source_v6,
        Ipv6Prefix::new("fd00:5c::".parse().unwrap(), 96).unwrap()
    );
    assert_eq!(c.vips[0].name, "10.0.0.1:80/tcp");
    assert_eq!(c.vips[1].name, "[2001:db8::1]:0/udp");
    assert_eq!(c.vips[0].scheduler, Scheduler::Maglev);
    assert_eq!(c.vips[0].table_size, 65537);
    assert_eq!(
        c.vips[0].backends[0],
        BackendConfig {
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)),
            weight: 1,
            mac: None,
            state: BackendState::Active,
            drain_remove: false,
            health: None,
        }
    );
    // Health-check defaults: tcp on the VIP's port for a tcp VIP, none for a udp VIP.
    let h = &c.vips[0].health;
    assert_eq!(
        (h.check, h.port, h.interval_ms, h.timeout_ms, h.rise, h.fall),
        (CheckKind::Tcp, 80, 2000, 1000, 2, 3)
    );
    assert_eq!(c.vips[1].health.check, CheckKind::None);
}

#[test]
fn health_sections_validate_and_override_per_backend() {
    let text = r#"
[daemon]
interface = "eth0"

[[vip]]
address = "10.0.0.1"
port = 0
protocol = "tcp"
forwarding = "dsr"
table_size = 251
[vip.health]
check = "http"
port = 8080
path = "/healthz"
expect_status = "200-299"
rise = 1

[[vip.backend]]
address = "10.0.1.1"
[vip.backend.health]
interval_ms = 500
timeout_ms = 200

[[vip.backend]]
address = "10.0.1.2"
"#;
    let c = parse(text, "t.toml").unwrap().config;
    let v = &c.vips[0];
    assert_eq!(
        (
            v.health.check,
            v.health.port,
            v.health.path.as_str(),
            v.health.expect_status
        ),
        (CheckKind::Http, 8080, "/healthz", (200, 299))
    );
    let b0 = v.health_of(0);
    assert_eq!(
        (b0.check, b0.port, b0.interval_ms, b0.timeout_ms, b0.rise),
        (CheckKind::Http, 8080, 500, 200, 1)
    );
    assert_eq!(v.health_of(1), &v.health);
    // Round trip through export.
    let again = parse(&c.to_toml().unwrap(), "export").unwrap().config;
    assert_eq!(again, c);

    let bad = |extra: &str, path: &str, fragment: &str| {
        let t = format!(
            "[daemon]\ninterface = \"eth0\"\n[[vip]]\naddress = \"10.0.0.1\"\nport = 0\nprotocol = \"tcp\"\nforwarding = \"dsr\"\ntable_size = 251\n[vip.health]\n{extra}\n[[vip.backend]]\naddress = \"10.0.1.1\"\n"
        );
        let err = parse(&t, "t.toml").unwrap_err();
        let problems = err.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.path == path && p.message.contains(fragment)),
            "{extra}: want {path}: {fragment}; got {problems:?}"
        );
    };
    bad("check = \"tcp\"", "vip[0].health.port", "say which port");
    bad(
        "check = \"ping\"\nport = 1",
        "vip[0].health.check",
        "accepted values",
    );
    bad(
        "port = 80\ninterval_ms = 100\ntimeout_ms = 500",
        "vip[0].health.timeout_ms",
        "longer than interval_ms",
    );
    bad(
        "port = 80\npath = \"/x\"",
        "vip[0].health.path",
        "only applies to check = \"http\"",
    );
    bad(
        "check = \"http\"\nport = 80\nexpect_status = \"700\"",
        "vip[0].health.expect_status",
        "not a status",
    );
    bad("port = 80\nfall = 0", "vip[0].health.fall", "out of range");
    bad("port = 80\nbogus = 1", "vip[0].health.bogus", "unknown key");
}

/// One row per file in `config/invalid/`: the problems expected, in order, as
/// (line, path, fragment of the message).
type Expected = &'static [(Option<usize>, &'static str, &'static str)];

fn check(name: &str, got: &[Problem], expected: Expected) -> Result<(), String> {
    let show = || {
        got.iter()
            .map(|p| p.render(name))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if got.len() != expected.len() {
        return Err(format!(
            "{name}: expected {} problems, got {}:\n{}",
            expected.len(),
            got.len(),
            show()
        ));
    }
    for (p, (line, path, fragment)) in got.iter().zip(expected) {
        if p.line != *line || p.path != *path || !p.message.contains(fragment) {
            return Err(format!(
                "{name}: expected line {line:?}, path {path:?}, message containing {fragment:?}; got:\n{}",
                show()
            ));
        }
    }
    Ok(())
}

#[test]
fn error_display_lists_every_problem_on_its_own_line() {
    let text = std::fs::read_to_string(Path::new(INVALID_DIR).join("weight_range.toml")).unwrap();
    let e = parse(&text, "config/invalid/weight_range.toml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "config/invalid/weight_range.toml: 2 errors in the configuration:\n\
         config/invalid/weight_range.toml:13: vip[0].backend[0].weight: -1 is out of range (0..=10000)\n\
         config/invalid/weight_range.toml:20: vip[0].backend[2].weight: 70000 is out of range (0..=10000)"
    );

    let e = parse("[daemon]\ninterface = \"eth0\nx = 1\n", "s.toml").unwrap_err();
    assert!(matches!(e, ConfigError::Parse { .. }));
    assert!(
        e.to_string()
            .starts_with("s.toml:2:18: invalid TOML: invalid basic string"),
        "{e}"
    );

    let e = load(Path::new("/nonexistent/sluice.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/sluice.toml: cannot read: "),
        "{e}"
    );
}

#[test]
fn warnings_are_not_errors() {
    let loaded = ok(&format!(
        "{DAEMON}\
         [[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n\
         [[vip]]\naddress = \"10.0.0.2\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\ntable_size = 101\n\
         [[vip.backend]]\naddress = \"10.0.1.1\"\n[[vip.backend]]\naddress = \"10.0.1.2\"\n\
         [[vip]]\naddress = \"10.0.0.3\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n\
         [[vip.backend]]\naddress = \"10.0.1.1\"\nweight = 0\n"
    ));
    assert_eq!(
        loaded.warnings,
        [
            "test.toml:3: vip[0]: no backends: new flows to this VIP are dropped",
            "test.toml:13: vip[1].table_size: 101 is less than 100 × 2 backends = 200: Maglev's imbalance \
         may exceed 1%; a prime ≥ 200 (e.g. 211) keeps it under 1%",
            "test.toml:18: vip[2]: every backend has weight 0: new flows to this VIP are dropped",
        ]
    );
    assert_eq!(
        ok(DAEMON).warnings.len(),
        1,
        "a config without VIPs is valid, with a warning"
    );
}

#[test]
fn duplicate_unnamed_vips_are_reported_once() {
    let vip =
        "[[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n";
    let got = problems(&format!("{DAEMON}{vip}{vip}"));
    let expected: Expected = &[(
        Some(8),
        "vip[1]",
        "duplicate VIP 10.0.0.1:80/tcp: vip[0] (line 3)",
    )];
    assert_eq!(check("t", &got, expected), Ok(()));
}

#[test]
fn a_name_may_not_take_another_vips_default_name() {
    let got = problems(&format!(
        "{DAEMON}[[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n\
         [[vip]]\nname = \"10.0.0.1:80/tcp\"\naddress = \"10.0.0.2\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n"
    ));
    let expected: Expected = &[(
        Some(9),
        "vip[1].name",
        "duplicate VIP name \"10.0.0.1:80/tcp\": vip[0] (line 3)",
    )];
    assert_eq!(check("t", &got, expected), Ok(()));
}

#[test]
fn problems_from_all_tables_are_collected_at_once() {
    let got = problems(
        "[daemon]\ninterface = \"this-name-is-far-too-long\"\nxdp_mode = \"Native\"\n\
         [[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"ipip\"\n\
         [[vip.backend]]\naddress = \"::1\"\nweight = 20000\nmac = \"02:00:00:00:00:01\"\n",
    );
    let expected: Expected = &[
        (
            Some(2),
            "daemon.interface",
            "is not a valid interface name: longer than 15 bytes",
        ),
        (Some(3), "daemon.xdp_mode", "unknown xdp_mode \"Native\""),
        (
            Some(10),
            "vip[0].backend[0].address",
            "backend ::1 is IPv6 but the VIP 10.0.0.1 is IPv4",
        ),
        (
            Some(11),
            "vip[0].backend[0].weight",
            "20000 is out of range",
        ),
        (
            Some(12),
            "vip[0].backend[0].mac",
            "only used with forwarding = \"dsr\"",
        ),
    ];
    assert_eq!(check("t", &got, expected), Ok(()));
}

#[test]
fn missing_daemon_table() {
    let got = problems(
        "[[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n",
    );
    let expected: Expected = &[(None, "daemon", "missing required table [daemon]")];
    assert_eq!(check("t", &got, expected), Ok(()));
}

#[test]
fn vip_array_written_as_a_table() {
    let got = problems(&format!("{DAEMON}[vip]\naddress = \"10.0.0.1\"\n"));
    let expected: Expected = &[(
        Some(3),
        "vip",
        "wrong type: expected an array of tables (write [[vip]] sections, or vip = [ ... ])",
    )];
    assert_eq!(check("t", &got, expected), Ok(()));
    let got = problems(&format!(
        "{DAEMON}[[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\nbackend = \"10.0.1.1\"\n"
    ));
    let expected: Expected = &[(
        Some(8),
        "vip[0].backend",
        "expected an array of tables (write [[vip.backend]] sections",
    )];
    assert_eq!(check("t", &got, expected), Ok(()));
}

#[test]
fn inline_tables_are_located_too() {
    let got = problems(&format!(
        "vip = [\n  {{ address = \"10.0.0.1\", port = 80, protocol = \"tcp\", forwarding = \"dsr\",\n    \
         backend = [{{ address = \"10.0.1.1\", weight = 99999 }}] }},\n]\n{DAEMON}"
    ));
    let expected: Expected = &[(Some(3), "vip[0].backend[0].weight", "99999 is out of range")];
    assert_eq!(check("t", &got, expected), Ok(()));
}

/// `daemon.vip_capacity` (default 1024) VIPs fit; one more is an error at the first VIP
/// too many.
#[test]
fn too_many_vips() {
    let vips = |n: usize| {
        let mut text = format!(
            "[daemon]\ninterface = \"eth0\"\ntable_capacity = {}\n",
            14 * n
        );
        for i in 0..n {
            let port = i + 1;
            text.push_str(&format!(
                "[[vip]]\naddress = \"10.0.0.1\"\nport = {port}\nprotocol = \"tcp\"\nforwarding = \"dsr\"\ntable_size = 7\n"
            ));
        }
        text
    };
    let max = lb_common::DEFAULT_VIP_CAPACITY as usize;
    assert_eq!(ok(&vips(max)).config.vips.len(), max);
    let got = problems(&vips(max + 1));
    assert_eq!(got.len(), 1, "{got:#?}");
    // 3 daemon lines, then 6 lines a VIP: vip[max]'s header is on line 4 + 6 × max.
    assert_eq!(
        (got[0].line, got[0].path.as_str()),
        (Some(4 + 6 * max), format!("vip[{max}]").as_str())
    );
    let fragment = format!("too many VIPs: {} configured, at most {max}", max + 1);
    assert!(got[0].message.contains(&fragment), "{}", got[0].message);
}

/// `daemon.backend_capacity - 1` (default 16383) backends (slot 0 is reserved) over all
/// VIPs fit; one more is an error at the first backend too many.
#[test]
fn too_many_backends() {
    let per_vip = 8192;
    let table = (per_vip as u32 * 10..)
        .find(|&n| validate::is_prime(n))
        .unwrap();
    let text = |last_vip_backends: usize| {
        let mut text = String::from(DAEMON);
        for (i, n) in [per_vip, last_vip_backends].into_iter().enumerate() {
            text.push_str(&format!(
                "[[vip]]\naddress = \"10.0.0.1\"\nport = {i}\nprotocol = \"tcp\"\nforwarding = \"dsr\"\ntable_size = {table}\n"
            ));
            for j in 0..n {
                text.push_str(&format!(
                    "[[vip.backend]]\naddress = \"10.{i}.{}.{}\"\n",
                    j / 256,
                    j % 256
                ));
            }
        }
        text
    };
    let max = lb_common::DEFAULT_BACKEND_CAPACITY as usize - 1;
    let fits = ok(&text(max - per_vip)).config;
    assert_eq!(
        fits.vips.iter().map(|v| v.backends.len()).sum::<usize>(),
        max
    );
    let got = problems(&text(max - per_vip + 1));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].path, format!("vip[1].backend[{}]", max - per_vip));
    assert!(
        got[0]
            .message
            .contains(&format!("too many backends: {} configured", max + 1)),
        "{}",
        got[0].message
    );
    assert!(got[0].line.is_some());
}

/// `daemon.vip_capacity` and `daemon.backend_capacity` size the per-VIP and per-backend
/// maps: the VIPs and backends must fit them, and each is range-checked under its name.
#[test]
fn vip_and_backend_capacities() {
    let text = |vip_capacity: i64, backend_capacity: i64, vips: usize| {
        let mut text = format!(
            "[daemon]\ninterface = \"eth0\"\nvip_capacity = {vip_capacity}\n\
             backend_capacity = {backend_capacity}\n"
        );
        for i in 0..vips {
            text.push_str(&format!(
                "[[vip]]\naddress = \"10.0.0.1\"\nport = {}\nprotocol = \"tcp\"\n\
                 forwarding = \"dsr\"\ntable_size = 1021\n\
                 [[vip.backend]]\naddress = \"10.0.1.{i}\"\n\
                 [[vip.backend]]\naddress = \"10.0.2.{i}\"\n",
                i + 1
            ));
        }
        text
    };
    // 4 VIPs × 2 backends: 4 VIP ids and 8 + 1 backend slots.
    let d = ok(&text(4, 9, 4)).config.daemon;
    assert_eq!((d.vip_capacity, d.backend_capacity), (4, 9));
    let big = ok(&text(4096, 1 << 20, 1)).config.daemon;
    assert_eq!((big.vip_capacity, big.backend_capacity), (4096, 1 << 20));

    let got = problems(&text(3, 9, 4));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].path, "vip[3]");
    assert!(
        got[0].message.contains("at most 3 (daemon.vip_capacity)"),
        "{}",
        got[0].message
    );
    let got = problems(&text(4, 8, 4));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].path, "vip[3].backend[1]");
    assert!(
        got[0]
            .message
            .contains("at most 7 (daemon.backend_capacity - 1;"),
        "{}",
        got[0].message
    );
    for (v, b, path) in [
        (0, 9, "daemon.vip_capacity"),
        ((1 << 20) + 1, 9, "daemon.vip_capacity"),
        (4, 1, "daemon.backend_capacity"),
        (4, (1 << 24) + 1, "daemon.backend_capacity"),
    ] {
        let got = problems(&text(v, b, 1));
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0].path, path);
        assert!(
            got[0].message.contains("is out of range"),
            "{}",
            got[0].message
        );
    }
}

#[test]
fn macs() {
    assert_eq!(
        parse_mac("02:00:5E:aa:bb:0c"),
        Ok([2, 0, 0x5e, 0xaa, 0xbb, 0x0c])
    );
    assert_eq!(
        format_mac(&[2, 0, 0x5e, 0xaa, 0xbb, 0x0c]),
        "02:00:5e:aa:bb:0c"
    );
    for bad in [
        "",
        "02:00:00:00:00",
        "02:00:00:00:00:01:02",
        "2:0:0:0:0:1",
        "02:00:00:00:00:0g",
        "0200.0000.0001",
        "02:00:00:00:00:+1",
    ] {
        assert!(parse_mac(bad).is_err(), "{bad:?} accepted");
    }
    assert!(
        parse_mac("03:00:00:00:00:01")
            .unwrap_err()
            .contains("multicast")
    );
}

#[test]
fn prefixes() {
    let p: Ipv4Prefix = "10.0.0.0/8".parse().unwrap();
    assert_eq!(
        (p.addr(), p.prefix_len(), p.mask()),
        (Ipv4Addr::new(10, 0, 0, 0), 8, Ipv4Addr::new(255, 0, 0, 0))
    );
    assert_eq!(
        "0.0.0.0/0".parse::<Ipv4Prefix>().unwrap().mask(),
        Ipv4Addr::UNSPECIFIED
    );
    assert_eq!(
        "1.2.3.4/32".parse::<Ipv4Prefix>().unwrap().mask(),
        Ipv4Addr::BROADCAST
    );
    let p: Ipv6Prefix = "fd00:5c::/96".parse().unwrap();
    assert_eq!(
        p.mask(),
        "ffff:ffff:ffff:ffff:ffff:ffff::"
            .parse::<Ipv6Addr>()
            .unwrap()
    );
    for bad in [
        "10.0.0.0",
        "10.0.0.0/33",
        "10.0.0.1/8",
        "10.0.0/8",
        "10.0.0.0/x",
        "::/8",
    ] {
        assert!(bad.parse::<Ipv4Prefix>().is_err(), "{bad:?} accepted");
    }
    for bad in ["fd00::", "fd00::/129", "fd00::1/96", "10.0.0.0/8"] {
        assert!(bad.parse::<Ipv6Prefix>().is_err(), "{bad:?} accepted");
    }
}

#[test]
fn primes() {
    let small: Vec<u32> = (0..40).filter(|&n| validate::is_prime(n)).collect();
    assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]);
    assert!(validate::is_prime(65537));
    assert!(validate::is_prime(16_777_213));
    assert!(!validate::is_prime(65536));
    assert!(!validate::is_prime(16_777_215));
    assert!(!validate::is_prime(4_294_967_295));
    assert!(validate::is_prime(4_294_967_291));
}

#[test]
fn autoscale_section_reference_and_defaults() {
    use super::autoscale::*;
    let loaded = load(Path::new(REFERENCE)).unwrap();
    let a = loaded.config.vips[0].autoscale.as_ref().unwrap();
    assert_eq!((a.min, a.max, a.interval_ms), (2, 6, 15_000));
    assert_eq!(
        a.target.as_ref().unwrap().metric,
        MetricKind::ActiveConnections
    );
    assert_eq!(a.steps.len(), 3);
    assert_eq!(a.steps[1].direction, StepDirection::Below);
    assert_eq!(a.steps[2].metric, MetricKind::LoadKvCachePercent);
    assert_eq!(a.crons[0].timezone, "Europe/Paris");
    assert_eq!(a.backend_metric.as_ref().unwrap().port, 9100);
    assert!(matches!(&a.provider, ProviderConfig::Pool { standby } if standby.len() == 3));
    let e = loaded.config.vips[1].autoscale.as_ref().unwrap();
    assert!(matches!(
        &e.provider,
        ProviderConfig::Exec { retries: 2, .. }
    ));

    // Defaults: min 1, the Kubernetes rate limits, tolerance 0.1, 300 s down window.
    let c = ok(&format!(
        "{DAEMON}[[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n\
         [vip.autoscale]\nmax = 4\n[vip.autoscale.target]\nmetric = \"new_connections\"\nvalue = 2.5\n\
         [vip.autoscale.provider]\nkind = \"pool\"\nstandby = [\"10.0.0.2\", \"10.0.0.3\"]\n"
    ));
    let a = c.config.vips[0].autoscale.as_ref().unwrap();
    assert_eq!(
        (a.min, a.up_backends, a.up_percent, a.down_percent),
        (1, 4, 100, 100)
    );
    let t = a.target.as_ref().unwrap();
    assert_eq!(
        (t.value, t.tolerance, t.scale_down_stabilization_ms),
        (Num(2.5), Num(0.1), 300_000)
    );
    // max 4 with 0 fixed + 2 standby can never be reached: a warning, not an error.
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].contains("vip[0].autoscale.max: 4 can never be reached"),
        "{:?}",
        c.warnings
    );
}

#[test]
fn health_timeout_default_follows_the_interval() {
    let with = |health: &str| {
        format!(
            "{DAEMON}[[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\n\
             forwarding = \"dsr\"\n[vip.health]\n{health}\n\
             [[vip.backend]]\naddress = \"10.0.1.1\"\n[vip.backend.health]\ninterval_ms = 100\n"
        )
    };
    // A short interval alone is valid: the default timeout is half of it (at most 1000).
    let c = ok(&with("interval_ms = 500")).config;
    assert_eq!(
        (c.vips[0].health.interval_ms, c.vips[0].health.timeout_ms),
        (500, 250)
    );
    // Per backend too, from the backend's own interval.
    assert_eq!(c.vips[0].health_of(0).timeout_ms, 50);
    let c = ok(&with("interval_ms = 10000")).config;
    assert_eq!(c.vips[0].health.timeout_ms, DEFAULT_HEALTH_TIMEOUT_MS);
    // An explicit timeout is checked against the interval as before.
    let p = problems(&with("interval_ms = 500\ntimeout_ms = 600"));
    assert!(
        p.iter()
            .any(|p| p.path == "vip[0].health.timeout_ms" && p.message.contains("longer")),
        "{p:?}"
    );
}

/// Cron schedules and zones are parsed once, by validation; the export writes them back as
/// written (not in a normalised form of the parsed value).
#[test]
fn cron_entries_exported_as_written() {
    let loaded = load(Path::new(REFERENCE)).unwrap();
    let a = loaded.config.vips[0].autoscale.as_ref().unwrap();
    assert_eq!(a.crons[0].schedule.as_str(), "0 8 * * MON-FRI");
    assert_eq!(a.crons[0].timezone.tz(), chrono_tz::Tz::Europe__Paris);
    let text = loaded.config.to_toml().unwrap();
    assert!(text.contains("schedule = \"0 8 * * MON-FRI\""), "{text}");
    assert!(text.contains("timezone = \"Europe/Paris\""), "{text}");
    let again = parse(&text, "export").unwrap().config;
    assert_eq!(again, loaded.config);
}

/// An rr/wrr/lc/wlc VIP takes 4 × its table_size (its fallback Maglev table is
/// double-buffered too), a maglev or source-hash VIP 2 ×: the capacity check counts both.
#[test]
fn sequence_vips_need_twice_the_table_slots() {
    let text = |scheduler: &str, capacity: u32| {
        format!(
            "[daemon]\ninterface = \"eth0\"\ntable_capacity = {capacity}\n\
             [[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n\
             scheduler = \"{scheduler}\"\ntable_size = 1021\n"
        )
    };
    for s in ["maglev", "source-hash"] {
        assert_eq!(ok(&text(s, 2 * 1021)).config.table_slots_needed(), 2 * 1021);
    }
    for s in ["rr", "wrr", "lc", "wlc"] {
        assert_eq!(ok(&text(s, 4 * 1021)).config.table_slots_needed(), 4 * 1021);
        let got = problems(&text(s, 4 * 1021 - 1));
        assert_eq!(got.len(), 1, "{s}: {got:#?}");
        assert_eq!(got[0].path, "daemon.table_capacity", "{s}");
        assert!(
            got[0].message.contains("the VIPs need 4084")
                && got[0].message.contains("4 × table_size"),
            "{s}: {}",
            got[0].message
        );
    }
}

const LOAD_VIP: &str =
    "[[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n";

#[test]
fn load_section_defaults() {
    let with = |load: &str| {
        ok(&format!(
            "{DAEMON}{LOAD_VIP}[vip.load]\n{load}\n[[vip.backend]]\naddress = \"10.0.1.1\"\n"
        ))
        .config
        .vips[0]
            .load
            .clone()
            .expect("a load section")
    };
    let l = with("source = \"prometheus\"\npreset = \"vllm\"");
    assert_eq!(
        (
            l.port,
            l.path.as_str(),
            l.interval_ms,
            l.timeout_ms,
            l.stale_after_ms
        ),
        (8000, "/metrics", 250, 250, 750)
    );
    assert_eq!(
        (l.queue_limit, l.kv_limit_percent),
        (5, 80),
        "the policy's defaults"
    );
    let l =
        with("source = \"prometheus\"\npreset = \"vllm\"\nqueue_limit = 0\nkv_limit_percent = 95");
    assert_eq!((l.queue_limit, l.kv_limit_percent), (0, 95));
    assert_eq!(
        l.in_flight,
        InFlight::Reported,
        "lc/wlc use reports by default"
    );
    let l = with("source = \"prometheus\"\npreset = \"vllm\"\nin_flight = \"connections\"");
    assert_eq!(l.in_flight, InFlight::Connections);
    let s = l.selectors();
    assert_eq!(s.kv_cache.len(), 2, "vLLM's KV metric has a fallback");
    let l = with(
        "source = \"prometheus\"\npreset = \"triton\"\ninterval_ms = 1000\nkv_cache = \"my:kv\"",
    );
    assert_eq!((l.port, l.timeout_ms, l.stale_after_ms), (8002, 1000, 3000));
    let s = l.selectors();
    assert_eq!(s.kv_cache.len(), 1);
    assert_eq!(
        s.kv_cache[0].name, "my:kv",
        "explicit selectors override the preset's"
    );
    assert_eq!(
        s.waiting[0].to_string(),
        "nv_trt_llm_request_metrics{request_type=\"waiting\"}"
    );
    let l = with("source = \"prometheus\"\nwaiting = \"q\"");
    assert_eq!((l.port, l.preset, l.running), (8000, None, None));
    let l = with("source = \"agent\"\nport = 9999");
    assert_eq!((l.source, l.port), (LoadSource::Agent, 9999));
    // Export round-trips (also covered by the reference file).
    let config = ok(&format!(
        "{DAEMON}{LOAD_VIP}[vip.load]\nsource = \"agent\"\nport = 9999\n"
    ))
    .config;
    let again = parse(&config.to_toml().unwrap(), "export").unwrap().config;
    assert_eq!(again, config);
}

#[test]
fn load_section_errors() {
    let bad = |load: &str, path: &str, message: &str| {
        let p = problems(&format!("{DAEMON}{LOAD_VIP}[vip.load]\n{load}\n"));
        assert!(
            p.iter()
                .any(|p| p.path == path && p.message.contains(message)),
            "{load:?}: expected {path}: {message}, got {p:#?}"
        );
    };
    bad(
        "preset = \"vllm\"",
        "vip[0].load.source",
        "missing required key",
    );
    bad(
        "source = \"http\"",
        "vip[0].load.source",
        "accepted values: \"prometheus\", \"agent\"",
    );
    bad("source = \"prometheus\"", "vip[0].load", "needs `preset`");
    bad(
        "source = \"prometheus\"\npreset = \"ollama\"",
        "vip[0].load.preset",
        "unknown preset",
    );
    bad(
        "source = \"agent\"",
        "vip[0].load.port",
        "for source = \"agent\"",
    );
    bad(
        "source = \"agent\"\nport = 1\npreset = \"vllm\"",
        "vip[0].load.preset",
        "only applies",
    );
    bad(
        "source = \"prometheus\"\npreset = \"vllm\"\ninterval_ms = 49",
        "vip[0].load.interval_ms",
        "out of range (50..=60000)",
    );
    bad(
        "source = \"prometheus\"\npreset = \"vllm\"\ntimeout_ms = 300",
        "vip[0].load.timeout_ms",
        "longer than interval_ms",
    );
    bad(
        "source = \"prometheus\"\npreset = \"vllm\"\nkv_limit_percent = 0",
        "vip[0].load.kv_limit_percent",
        "out of range (1..=100)",
    );
    bad(
        "source = \"prometheus\"\npreset = \"vllm\"\nin_flight = \"requests\"",
        "vip[0].load.in_flight",
        "accepted values: \"reported\", \"connections\"",
    );
    bad(
        "source = \"prometheus\"\npreset = \"vllm\"\nqueue_limit = -1",
        "vip[0].load.queue_limit",
        "out of range",
    );
    bad(
        "source = \"prometheus\"\npreset = \"vllm\"\nstale_after_ms = 100",
        "vip[0].load.stale_after_ms",
        "shorter than interval_ms",
    );
    bad(
        "source = \"prometheus\"\nwaiting = \"a b\"",
        "vip[0].load.waiting",
        "not a metric selector",
    );
    bad(
        "source = \"prometheus\"\nkv_cache = \"kv{a=1}\"",
        "vip[0].load.kv_cache",
        "quoted",
    );
    bad(
        "source = \"prometheus\"\npreset = \"vllm\"\npath = \"metrics\"",
        "vip[0].load.path",
        "not an HTTP path",
    );
    bad(
        "source = \"prometheus\"\npreset = \"vllm\"\nport = 0",
        "vip[0].load.port",
        "out of range",
    );
    bad(
        "source = \"prometheus\"\nbogus = 1",
        "vip[0].load.bogus",
        "unknown key",
    );
}

/// The `load_*` autoscale metrics read the VIP's `[vip.load]`: valid with a prometheus
/// source that reads the figure, an error naming the VIP's field otherwise.
#[test]
fn autoscale_on_load_reports() {
    use super::autoscale::MetricKind;
    let with = |load: &str, target: &str, step: &str| {
        format!(
            "{DAEMON}{LOAD_VIP}{load}[vip.autoscale]\nmax = 2\n\
             [vip.autoscale.target]\nmetric = \"{target}\"\nvalue = 5\n\
             [[vip.autoscale.step]]\nmetric = \"{step}\"\nabove = 80\nadd = 1\n\
             [vip.autoscale.provider]\nkind = \"pool\"\nstandby = [\"10.0.1.2\"]\n\
             [[vip.backend]]\naddress = \"10.0.1.1\"\n"
        )
    };
    let vllm = "[vip.load]\nsource = \"prometheus\"\npreset = \"vllm\"\n";
    let c = ok(&with(vllm, "load_waiting", "load_kv_cache_percent")).config;
    let a = c.vips[0].autoscale.as_ref().unwrap();
    assert_eq!(a.target.as_ref().unwrap().metric, MetricKind::LoadWaiting);
    assert_eq!(a.steps[0].metric, MetricKind::LoadKvCachePercent);
    let again = parse(&c.to_toml().unwrap(), "export").unwrap().config;
    assert_eq!(again, c, "the metric names export as written");
    ok(&with(vllm, "load_running", "active_connections"));

    let only = |text: &str, path: &str, message: &str| {
        let p = problems(text);
        assert!(
            p.len() == 1 && p[0].path == path && p[0].message.contains(message),
            "expected only {path}: {message}, got {p:#?}"
        );
        assert!(p[0].line.is_some(), "{p:#?}");
    };
    // No [vip.load].
    only(
        &with("", "load_waiting", "active_connections"),
        "vip[0].autoscale.target.metric",
        "metric \"load_waiting\" needs [vip.load] on this VIP",
    );
    // An agent reports no figures.
    only(
        &with(
            "[vip.load]\nsource = \"agent\"\nport = 9999\n",
            "active_connections",
            "load_kv_cache_percent",
        ),
        "vip[0].autoscale.step[0].metric",
        "source = \"agent\" reports no KV-cache use",
    );
    // TGI's preset has no KV-cache metric; an explicit selector gives one.
    let tgi = "[vip.load]\nsource = \"prometheus\"\npreset = \"tgi\"\n";
    only(
        &with(tgi, "load_waiting", "load_kv_cache_percent"),
        "vip[0].autoscale.step[0].metric",
        "does not read: set vip.load.kv_cache",
    );
    ok(&with(
        "[vip.load]\nsource = \"prometheus\"\npreset = \"tgi\"\nkv_cache = \"my:kv\"\n",
        "load_waiting",
        "load_kv_cache_percent",
    ));
    // Explicit selectors only: what is not selected is not read.
    only(
        &with(
            "[vip.load]\nsource = \"prometheus\"\nwaiting = \"q\"\n",
            "load_running",
            "load_waiting",
        ),
        "vip[0].autoscale.target.metric",
        "needs running requests",
    );
    // An invalid load section is its own error, not the metric's too.
    only(
        &with(
            "[vip.load]\nsource = \"prometheus\"\npreset = \"llama\"\n",
            "load_waiting",
            "load_waiting",
        ),
        "vip[0].load.preset",
        "unknown preset",
    );
}
