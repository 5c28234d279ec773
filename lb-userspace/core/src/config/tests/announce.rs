//! `[daemon.announce]`: defaults, and bad values named by their field.

use super::*;

fn announce(keys: &str) -> String {
    format!("{DAEMON}[daemon.announce]\n{keys}")
}

fn only_problem(text: &str) -> (String, String) {
    let p = problems(text);
    assert_eq!(p.len(), 1, "{p:#?}");
    (p[0].path.clone(), p[0].message.clone())
}

#[test]
fn defaults_when_absent() {
    let a = ok(DAEMON).config.daemon.announce;
    assert_eq!(
        a,
        AnnounceConfig {
            enabled: false,
            table: DEFAULT_ANNOUNCE_TABLE,
            protocol: DEFAULT_ANNOUNCE_PROTOCOL,
            interface: "lo".into(),
        }
    );
}

#[test]
fn every_key_read() {
    let text =
        announce("enabled = true\ntable = 4294967295\nprotocol = 5\ninterface = \"dummy0\"\n");
    let a = ok(&text).config.daemon.announce;
    assert_eq!(
        (a.enabled, a.table, a.protocol, a.interface.as_str()),
        (true, u32::MAX, 5, "dummy0")
    );
}

#[test]
fn kernel_tables_refused() {
    for (table, name) in [(253, "default"), (254, "main"), (255, "local")] {
        let (path, message) = only_problem(&announce(&format!("table = {table}\n")));
        assert_eq!(path, "daemon.announce.table");
        assert!(
            message.starts_with(&format!("{table} is the kernel's `{name}` table")),
            "{message}"
        );
    }
}

#[test]
fn table_out_of_range() {
    for table in ["0", "4294967296", "-1"] {
        let p = problems(&announce(&format!("table = {table}\n")));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].path, "daemon.announce.table");
        assert_eq!(p[0].line, Some(4));
        assert_eq!(
            p[0].message,
            format!("{table} is out of range (1..=4294967295)")
        );
    }
}

#[test]
fn kernel_protocols_refused() {
    for protocol in 0..=4 {
        let (path, message) = only_problem(&announce(&format!("protocol = {protocol}\n")));
        assert_eq!(path, "daemon.announce.protocol");
        assert!(
            message.starts_with(&format!(
                "{protocol} is one of the kernel's own route protocols"
            )),
            "{message}"
        );
        assert!(message.ends_with("use 5..=255"), "{message}");
    }
    let (path, message) = only_problem(&announce("protocol = 256\n"));
    assert_eq!(path, "daemon.announce.protocol");
    assert_eq!(message, "256 is out of range (0..=255)");
}

#[test]
fn bad_interface_and_unknown_key() {
    let (path, message) = only_problem(&announce("interface = \"a/b\"\n"));
    assert_eq!(path, "daemon.announce.interface");
    assert!(message.contains("not a valid interface name"), "{message}");
    let e = parse(&announce("tabel = 100\n"), "test.toml").unwrap_err();
    assert!(e.to_string().contains("tabel"), "{e}");
}

#[test]
fn announce_exports_and_round_trips() {
    let text = announce("enabled = true\ntable = 200\nprotocol = 42\n");
    let config = ok(&text).config;
    let exported = config.to_toml().unwrap();
    assert!(exported.contains("[daemon.announce]"), "{exported}");
    assert_eq!(parse(&exported, "export").unwrap().config, config);
}
