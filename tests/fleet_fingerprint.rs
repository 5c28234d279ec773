//! Two balancers of one fleet (issue 13): two labs, each with its own load balancer and
//! daemon, configured alike (the labs use the same addresses in their own namespaces).
//! `sluice fleet check` finds them agreeing (though their backend slots differ); a live edit on one makes it name the VIP that
//! differs and exit with its own status; the same edit on the other makes them agree
//! again; a restart that adopts the pinned maps reports the same fingerprints.
//!
//! The labs (prefixes `sl-fp-<pid>-a`, `-b`) are removed when they drop, also on failure;
//! tests run one at a time.

use std::path::Path;

use clap::Parser as _;
use lb_userspace::cli::{Cli, dispatch};
use sluice_daemon::state::Status;
use sluice_lab::lab::{Lab, LabSpec, Weights, daemon::Daemon};
use sluice_tests::{api::status, child, prefix, require_root, serial};

/// Not a test of its own: the body of `sluice` run in a child process (this binary
/// re-executed), so that its exit status and output are the real ones.
#[test]
fn sluice_as_child() {
    child::run_if_child();
}

/// `sluice ARGS...` in a child process: exit status, stdout, stderr.
fn sluice(args: &[&str]) -> (i32, String, String) {
    let out = child::command(args)
        .expect("the test binary")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the child");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// `sluice --api-socket LOCAL fleet check --peer PEER [--json]`.
fn check(local: &Path, peer: &Path, json: bool) -> (i32, String, String) {
    let (local, peer) = (local.to_string_lossy(), peer.to_string_lossy());
    let mut args = vec!["--api-socket", &local];
    if json {
        args.push("--json");
    }
    args.extend(["fleet", "check", "--peer", &peer]);
    sluice(&args)
}

/// An edit through the CLI, in process.
fn edit(socket: &Path, args: &[&str]) {
    let socket = socket.to_string_lossy();
    let argv = ["sluice", "--api-socket", &socket]
        .into_iter()
        .chain(args.iter().copied());
    dispatch(Cli::try_parse_from(argv).expect("a command line"))
        .unwrap_or_else(|e| panic!("sluice {args:?}: {e:#}"));
}

/// The table fingerprint per VIP name, each present.
fn fingerprints(s: &Status) -> Vec<(String, String)> {
    s.vips
        .iter()
        .map(|v| {
            assert!(!v.fingerprint.is_empty(), "{} has no fingerprint", v.vip);
            (v.name.clone(), v.fingerprint.clone())
        })
        .collect()
}

/// A lab and its daemon; with `extra`, a VIP `extra` published before the lab's VIPs (so
/// that theirs get other backend slots and VIP ids than in a lab without it).
fn up(name: &str, extra: bool) -> (Lab, Daemon, std::path::PathBuf) {
    let lab = Lab::up(LabSpec::new(&prefix("fp", name)).backends(2)).expect("bring the lab up");
    let mut config = lab
        .daemon_config(&Weights::Equal)
        .expect("the lab's daemon config");
    if extra {
        let mut v = config.vips[0].clone();
        v.name = "extra".to_owned();
        v.port += 1;
        config.vips.insert(0, v);
    }
    let socket = config.daemon.api_socket.clone();
    let d = Daemon::start_keeping(&lab, config).expect("start the daemon");
    (lab, d, socket)
}

#[test]
fn fleet_check_finds_a_live_edit_on_one_balancer() {
    require_root();
    let _serial = serial();
    // The daemons' logs (the configuration fingerprint at start and after each commit,
    // the adoption at the restart) in the test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_test_writer()
        .try_init();
    let (lab_a, d_a, a) = up("a", false);
    let (_lab_b, _d_b, b) = up("b", true);
    // B's VIPs have other slot ids than A's (its extra VIP took the first ones); without
    // the extra VIP its configuration is A's.
    edit(&b, &["vip", "remove", "extra"]);

    // Alike: every VIP the same, the configurations the same (their paths differ).
    let (sa, sb) = (status(&a).expect("status"), status(&b).expect("status"));
    assert_eq!(fingerprints(&sa), fingerprints(&sb));
    assert!(!sa.config_fingerprint.is_empty());
    assert_eq!(sa.config_fingerprint, sb.config_fingerprint);
    let (code, out, err) = check(&a, &b, false);
    println!("{out}{err}");
    assert_eq!(code, 0, "balancers configured alike disagree:\n{out}{err}");
    assert!(out.contains(" same") && out.contains("apply to one balancer only"));
    let (code, out, err) = sluice(&["--api-socket", &a.to_string_lossy(), "vip", "list"]);
    let first = &fingerprints(&sa)[0];
    assert!(
        code == 0
            && out
                .lines()
                .any(|l| l.starts_with(&first.0) && l.ends_with(&first.1)),
        "`sluice vip list` does not show {first:?}:\n{out}{err}"
    );

    // A live edit on A only.
    let victim = lab_a.backend(1).addr4().to_string();
    let set = [
        "backend",
        "set-weight",
        "--vip",
        "lab-tcp4",
        "--address",
        &victim,
        "--weight",
        "7",
    ];
    edit(&a, &set);
    let edited = status(&a).expect("status");
    assert_ne!(
        edited.config_fingerprint, sa.config_fingerprint,
        "the configuration fingerprint did not follow the edit"
    );
    let (code, out, err) = check(&a, &b, false);
    println!("{out}{err}");
    assert_eq!(
        code, 3,
        "an edited balancer was not told apart:\n{out}{err}"
    );
    assert!(out.contains("VIPs that differ: lab-tcp4\n"), "{out}");
    assert!(out.contains("configuration: DIFFERS"), "{out}");
    let (code, out, _) = check(&a, &b, true);
    assert_eq!(code, 3);
    // The child's stdout begins with the test harness's own lines.
    let json = out
        .find('{')
        .zip(out.rfind('}'))
        .map_or("", |(from, to)| &out[from..=to]);
    let report: serde_json::Value = serde_json::from_str(json).expect("a JSON report");
    assert_eq!(report["agree"], false);
    let verdicts: Vec<(String, String)> = report["vips"]
        .as_array()
        .expect("VIPs")
        .iter()
        .map(|v| (v["name"].to_string(), v["verdict"].to_string()))
        .collect();
    assert!(
        verdicts.contains(&("\"lab-tcp4\"".into(), "\"differs\"".into()))
            && verdicts.contains(&("\"lab-udp4\"".into(), "\"same\"".into())),
        "{verdicts:?}"
    );

    // The same edit on B: they agree again.
    edit(&b, &set);
    let (code, out, err) = check(&a, &b, false);
    assert_eq!(
        code, 0,
        "the same edit on both still disagrees:\n{out}{err}"
    );

    // A restart of A adopts its pinned maps and reports the same fingerprints at once.
    let before = fingerprints(&status(&a).expect("status"));
    d_a.stop().expect("stop the daemon");
    let config = {
        let (c, _) = sluice_tests::api::running_config(&b).expect("B's configuration");
        let mut c = c;
        c.daemon = lab_a
            .daemon_config(&Weights::Equal)
            .expect("the lab's daemon config")
            .daemon;
        c
    };
    let _d_a = Daemon::start_keeping(&lab_a, config).expect("restart the daemon");
    assert_eq!(fingerprints(&status(&a).expect("status")), before);
    let (code, out, err) = check(&a, &b, false);
    assert_eq!(code, 0, "disagree after a restart:\n{out}{err}");

    // A peer that cannot be asked is an error, not a disagreement.
    let (code, _, err) = check(&a, Path::new("/nonexistent/sluice.sock"), false);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/sluice.sock"), "{err}");
}
