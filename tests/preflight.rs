//! A daemon fails before it touches anything: a start that cannot serve (a missing
//! `api_group`, a metrics port in use, an API socket of a live daemon, a regular file at
//! `api_socket`) is refused with nothing attached and nothing pinned, and leaves what it
//! found alone; a saved layout of another ABI epoch does not cost the flows; the temporary
//! files of crashed writes are removed at start; `sluice detach --pin-dir` without a config
//! removes the saved layout too; the native→generic fallback only falls back when the
//! driver lacks native XDP.
//!
//! Every lab test builds its own lab (prefix `sl-pre-<pid>-<n>`), removed when it drops
//! (the lab's pin directory included), also on failure. Every loop is bounded.

use std::{net::SocketAddr, path::Path};

use anyhow::ensure;
use lb_common::ABI_EPOCH;
use sluice_dataplane::{
    self as dataplane, ADOPTABLE_EPOCHS, AttachMode, Dataplane, LAYOUT_FILE, Sizes,
};
use sluice_lab::lab::{self, Lab, LabSpec, Node, Weights, daemon::Daemon};
use sluice_tests::{
    conn::{Held, echo_all, xdp_prog},
    netns::{Private, run},
    prefix, require_root, serial,
};

/// A refused start: its message, after checking that nothing was attached or pinned.
fn refused(lab: &Lab, config: sluice_core::config::Config, case: &str) -> anyhow::Result<String> {
    let pin_dir = lab::lab_pin_dir(lab.prefix());
    let why = match Daemon::start_keeping(lab, config) {
        Ok(d) => {
            d.stop()?;
            anyhow::bail!("{case}: the daemon started");
        }
        Err(e) => e.to_string(),
    };
    println!("{case}: refused: {why}");
    ensure!(
        why.contains("refused before anything was loaded, pinned or attached"),
        "{case}: not refused by the preflight: {why}"
    );
    ensure!(
        xdp_prog(lab)?.is_none(),
        "{case}: an XDP program is attached after the refusal"
    );
    ensure!(
        !pin_dir.exists(),
        "{case}: {} exists after the refusal",
        pin_dir.display()
    );
    Ok(why)
}

#[test]
fn a_start_that_cannot_serve_touches_nothing() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("pre", "ref")).backends(1)).expect("bring the lab up");
    let config = lab
        .daemon_config(&Weights::Equal)
        .expect("the lab's daemon config");
    let socket = config.daemon.api_socket.clone();
    std::fs::create_dir_all(socket.parent().expect("socket dir")).expect("create the directory");

    // A group that does not exist.
    let mut c = config.clone();
    c.daemon.api_group = Some("sluice-no-such-group-4711".to_owned());
    let why = refused(&lab, c, "missing api_group").expect("the refused start");
    assert!(
        why.contains("daemon.api_group") && why.contains("sluice-no-such-group-4711"),
        "{why}"
    );
    assert!(!socket.exists(), "the refused start left its API socket");

    // The metrics port taken (in the LB's namespace, where the daemon listens).
    let addr = config.daemon.metrics_listen.expect("metrics_listen");
    let taken = lab
        .lb()
        .run(|| std::net::TcpListener::bind(addr))
        .expect("run in the namespace")
        .expect("bind the API port");
    let why = refused(&lab, config.clone(), "metrics port in use").expect("the refused start");
    assert!(
        why.contains(&format!("daemon.metrics_listen {addr}")),
        "{why}"
    );
    assert!(!socket.exists(), "the refused start left its API socket");
    drop(taken);

    // The API socket of a live daemon: refused, and it keeps working.
    let live = std::os::unix::net::UnixListener::bind(&socket).expect("bind a Unix socket");
    let why = refused(&lab, config.clone(), "api_socket in use").expect("the refused start");
    assert!(
        why.contains("daemon.api_socket") && why.contains("in use"),
        "{why}"
    );
    assert!(
        std::os::unix::net::UnixStream::connect(&socket).is_ok(),
        "the live daemon's socket was taken away"
    );
    drop(live);
    std::fs::remove_file(&socket).expect("remove the file");

    // A regular file at api_socket: refused, and left as it was.
    std::fs::write(&socket, b"precious").expect("write the file");
    let why =
        refused(&lab, config.clone(), "regular file at api_socket").expect("the refused start");
    assert!(why.contains("is not a socket"), "{why}");
    assert!(
        std::fs::read(&socket).expect("read the file") == b"precious",
        "the file at api_socket was changed"
    );
    std::fs::remove_file(&socket).expect("remove the file");

    // Without the obstacles the same configuration starts (and, ephemeral, cleans up).
    let d = Daemon::start(&lab, config).expect("start the daemon");
    assert!(
        xdp_prog(&lab)
            .expect("look up the attached XDP program")
            .is_some(),
        "no program after a good start"
    );
    d.stop().expect("stop the daemon");
    lab.down().expect("take the lab down");
}

fn set_epoch(layout: &Path, epoch: u32) -> anyhow::Result<()> {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(layout)?)?;
    v["epoch"] = epoch.into();
    std::fs::write(layout, serde_json::to_vec_pretty(&v)?)?;
    Ok(())
}

/// Open `n` held connections; each is checked by an echo.
fn hold(client: &Node, to: SocketAddr, n: usize) -> anyhow::Result<Vec<Held>> {
    (0..n).map(|_| Held::open(client, to)).collect()
}

#[test]
fn a_saved_layout_of_another_epoch_costs_no_flow() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("pre", "epo")).backends(3)).expect("bring the lab up");
    let pin_dir = lab::lab_pin_dir(lab.prefix());
    let layout = lab::lab_dir(lab.prefix()).join(LAYOUT_FILE);
    let vip = SocketAddr::new(lab.vip4().into(), lab::TCP_PORT);
    let config = lab
        .daemon_config(&Weights::Equal)
        .expect("the lab's daemon config");

    let d = Daemon::start_keeping(&lab, config.clone()).expect("start the daemon keeping the pins");
    let mut held = hold(lab.client(0), vip, 20).expect("hold connections");
    let backends: Vec<String> = held.iter().map(|h| h.backend.clone()).collect();
    echo_all(&mut held, "first").expect("echo on every held connection");
    d.stop().expect("stop the daemon");

    // Saved by an earlier build whose maps this one adopts: rebuilt from the maps. (Not
    // every earlier epoch: one whose maps changed shape is refused by the map check.)
    set_epoch(&layout, ADOPTABLE_EPOCHS[0]).expect("set the saved epoch");
    let d = Daemon::start_keeping(&lab, config.clone())
        .expect("a layout of the previous epoch blocked the start");
    echo_all(&mut held, "earlier-epoch").expect("echo on every held connection");
    d.stop().expect("stop the daemon");

    // Saved by a newer build: refused, saying how to keep the flows (delete the saved
    // layout), and nothing changed.
    let before = xdp_prog(&lab)
        .expect("look up the attached XDP program")
        .expect("no program");
    set_epoch(&layout, ABI_EPOCH + 1).expect("set the saved epoch");
    let why = Daemon::start_keeping(&lab, config.clone())
        .expect_err("a layout of a newer epoch was adopted without a word")
        .to_string();
    println!("newer epoch refused: {why}");
    assert!(
        why.contains("delete the saved layout")
            && why.contains(&format!("rm {}", layout.display()))
            && why.contains("keeping every flow"),
        "the refusal does not say to delete the saved layout: {why}"
    );
    assert!(
        xdp_prog(&lab).expect("look up the attached XDP program") == Some(before),
        "a refused start changed the program"
    );
    echo_all(&mut held, "refused").expect("echo on every held connection");

    // Following the advice keeps every flow on its backend.
    std::fs::remove_file(&layout).expect("remove the file");
    let d = Daemon::start_keeping(&lab, config).expect("start the daemon keeping the pins");
    assert!(
        xdp_prog(&lab).expect("look up the attached XDP program") != Some(before),
        "no new program after following the advice"
    );
    echo_all(&mut held, "advice-followed").expect("echo on every held connection");
    let now: Vec<String> = held.iter().map(|h| h.backend.clone()).collect();
    assert!(now == backends, "connections changed backends");
    d.stop().expect("stop the daemon");
    drop(held);
    dataplane::detach(&pin_dir, Some(&layout)).expect("detach the dataplane");
    lab.down().expect("take the lab down");
}

#[test]
fn crash_leftovers_go_at_start_and_detach_finds_the_saved_layout() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("pre", "tmp")).backends(1)).expect("bring the lab up");
    let pin_dir = lab::lab_pin_dir(lab.prefix());
    let state_dir = lab::lab_dir(lab.prefix());
    let layout = state_dir.join(LAYOUT_FILE);
    std::fs::create_dir_all(&state_dir).expect("create the directory");

    // Temporary files of writes by a process that died (reaped just now).
    let dead = std::process::Command::new("true")
        .spawn()
        .and_then(|mut c| c.wait().map(|_| c.id()))
        .expect("run the process");
    let leftovers = [
        state_dir.join(format!("{LAYOUT_FILE}.tmp.{dead}")),
        state_dir.join(format!("runtime.toml.tmp.{dead}")),
        state_dir.join(format!("status.tmp.{dead}")),
    ];
    for f in &leftovers {
        std::fs::write(f, b"half-written").expect("write the file");
    }
    let unrelated = state_dir.join("notes.tmp");
    std::fs::write(&unrelated, b"mine").expect("write the file");

    let d = Daemon::start_keeping(
        &lab,
        lab.daemon_config(&Weights::Equal)
            .expect("the lab's daemon config"),
    )
    .expect("start the daemon keeping the pins");
    for f in &leftovers {
        assert!(!f.exists(), "{} survived the start", f.display());
    }
    assert!(unrelated.exists(), "an unrelated file was removed");
    d.stop().expect("stop the daemon");
    assert!(layout.exists(), "no saved layout after the stop");

    // `sluice detach --pin-dir DIR --state-dir DIR` (no config file): the layout goes too.
    lb_userspace::cli::detach::run(None, None, Some(pin_dir.clone()), Some(state_dir.clone()))
        .expect("sluice detach");
    assert!(!pin_dir.exists(), "{} still exists", pin_dir.display());
    assert!(
        !layout.exists(),
        "{} still exists after detach",
        layout.display()
    );
    assert!(
        xdp_prog(&lab)
            .expect("look up the attached XDP program")
            .is_none(),
        "still attached after detach"
    );
    lab.down().expect("take the lab down");
}

#[test]
fn auto_mode_reports_real_attach_errors() {
    require_root();
    let _ns = Private::enter().expect("a private network namespace");
    let sizes = Sizes {
        flow_entries: 4096,
        table_slots: 4096,
        ..Sizes::default()
    };
    let balancer = lb_common::programs::BALANCER;
    let mut dp = Dataplane::load(sizes).expect("load the object");
    let missing = dp
        .attach(balancer, "sl-nope0", AttachMode::Auto)
        .expect_err("attached to a missing interface")
        .to_string();
    println!("missing interface: {missing}");
    assert!(
        missing.contains("no such interface") && !missing.contains("native XDP not available"),
        "{missing}"
    );

    // An interface with a program already attached (in native mode): busy, no fallback.
    run(&[
        "ip", "link", "add", "sl-pa", "type", "veth", "peer", "name", "sl-pb",
    ])
    .expect("run ip");
    run(&["ip", "link", "set", "sl-pa", "up"]).expect("run ip");
    run(&["ip", "link", "set", "sl-pb", "up"]).expect("run ip");
    assert!(
        dp.attach(balancer, "sl-pa", AttachMode::Native)
            .expect("attach the program")
            == AttachMode::Native
    );
    let mut other = Dataplane::load(sizes).expect("load the object");
    let busy = other
        .attach(balancer, "sl-pa", AttachMode::Auto)
        .expect_err("a second program attached over the first")
        .to_string();
    println!("busy interface: {busy}");
    // The native attempt's own error (EBUSY), not the generic attempt's (EEXIST: "native
    // and generic XDP can't be active at the same time") after a fallback.
    assert!(
        busy.contains("Device or resource busy")
            && busy.contains("another XDP program is attached to sl-pa"),
        "{busy}"
    );
    assert!(
        other.attached().is_empty(),
        "the second program attached anyway"
    );
    dp.detach_all().expect("detach everything");
}
