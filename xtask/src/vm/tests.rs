use super::{Accel, Artifact, Row, artifact, bench_cell, json_string, summary};

fn row(results: &[(&str, &str)]) -> Row {
    Row {
        label: "6.12",
        release: "6.12.117+deb12-amd64".into(),
        seconds: 80.0,
        error: None,
        results: results
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        console: Vec::new(),
    }
}

/// A guest that passed everything, as guest.sh and helper.py write it.
const PASSED: &[(&str, &str)] = &[
    ("accel", "tcg"),
    ("accel_guest", "tcg"),
    ("modules", "ok"),
    ("fixtures", "ok"),
    ("smoke", "ok"),
    ("pktgen", "ok"),
    ("interop", "ok"),
    ("daemon_exit", "ok"),
    ("bench", "ok"),
    ("bench_generator", "pktgen"),
    (
        "bench_ratios",
        "1 flows 0.71x floor_tx (8.1 kpps), 1000 flows 0.65x floor_tx (7.2 kpps)",
    ),
    ("done", "1"),
];

#[test]
fn summary_rows() {
    let ok = row(PASSED);
    assert!(
        ok.failures(Accel::Tcg).is_empty(),
        "{:?}",
        ok.failures(Accel::Tcg)
    );
    assert_eq!(bench_cell(&ok), "pktgen, 1: 0.71x 1000: 0.65x");
    // Asked for KVM, the guest saw emulation.
    assert!(
        ok.failures(Accel::Kvm)
            .iter()
            .any(|f| f.contains("asked for kvm but the guest runs under tcg"))
    );
    // The benchmark fell back to (or was) another generator: a failure.
    let mut other: Vec<(&str, &str)> = PASSED.to_vec();
    other.retain(|(k, _)| !k.starts_with("bench"));
    other.push(("bench", "FAILED"));
    other.push(("bench_generator", "live-frames"));
    let bad = row(&other);
    assert_eq!(bench_cell(&bad), "FAILED");
    assert!(
        bad.failures(Accel::Tcg)
            .iter()
            .any(|f| f.starts_with("bench:"))
    );
    let text = summary(
        &[ok, bad],
        Accel::Tcg,
        "auto: test",
        1.0,
        Default::default(),
    );
    assert!(text.contains("pktgen, 1: 0.71x 1000: 0.65x"), "{text}");
    assert!(text.contains("correctness only"), "{text}");
}

#[test]
fn cargo_artifact_lines() {
    let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#sluice-tests@0.1.0","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"fixtures","src_path":"/w/tests/fixtures.rs","edition":"2024","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"0"},"features":[],"filenames":["/t/debug/deps/fixtures-9141742bfab4be52"],"executable":"/t/debug/deps/fixtures-9141742bfab4be52","fresh":true}"#;
    assert_eq!(
        artifact(line),
        Some(Artifact {
            name: "fixtures".into(),
            kind: "test".into(),
            executable: "/t/debug/deps/fixtures-9141742bfab4be52".into(),
        })
    );
    let lib = line.replace(
        r#""executable":"/t/debug/deps/fixtures-9141742bfab4be52""#,
        r#""executable":null"#,
    );
    assert_eq!(artifact(&lib), None);
    assert_eq!(
        artifact(r#"{"reason":"build-finished","success":true}"#),
        None
    );
}

#[test]
fn json_strings() {
    assert_eq!(
        json_string(r#"{"a":"x\"y\\z\u0041"}"#, r#""a":""#).as_deref(),
        Some(r#"x"y\zA"#)
    );
    assert_eq!(json_string(r#"{"a":"unterminated"#, r#""a":""#), None);
}
