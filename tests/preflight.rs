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

use anyhow::{Context as _, ensure};
use lb_common::ABI_EPOCH;
use sluice_dataplane::{self as dataplane, AttachMode, Dataplane, LAYOUT_FILE, Sizes};
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
fn a_start_that_cannot_serve_touches_nothing() -> anyhow::Result<()> {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("pre", "ref")).backends(1))?;
    let config = lab.daemon_config(&Weights::Equal)?;
    let socket = config.daemon.api_socket.clone();
    std::fs::create_dir_all(socket.parent().context("socket dir")?)?;

    // A group that does not exist.
    let mut c = config.clone();
    c.daemon.api_group = Some("sluice-no-such-group-4711".to_owned());
    let why = refused(&lab, c, "missing api_group")?;
    ensure!(
        why.contains("daemon.api_group") && why.contains("sluice-no-such-group-4711"),
        "{why}"
    );
    ensure!(!socket.exists(), "the refused start left its API socket");

    // The metrics port taken (in the LB's namespace, where the daemon listens).
    let addr = config.daemon.metrics_listen.context("metrics_listen")?;
    let taken = lab.lb().run(|| std::net::TcpListener::bind(addr))??;
    let why = refused(&lab, config.clone(), "metrics port in use")?;
    ensure!(
        why.contains(&format!("daemon.metrics_listen {addr}")),
        "{why}"
    );
    ensure!(!socket.exists(), "the refused start left its API socket");
    drop(taken);

    // The API socket of a live daemon: refused, and it keeps working.
    let live = std::os::unix::net::UnixListener::bind(&socket)?;
    let why = refused(&lab, config.clone(), "api_socket in use")?;
    ensure!(
        why.contains("daemon.api_socket") && why.contains("in use"),
        "{why}"
    );
    ensure!(
        std::os::unix::net::UnixStream::connect(&socket).is_ok(),
        "the live daemon's socket was taken away"
    );
    drop(live);
    std::fs::remove_file(&socket)?;

    // A regular file at api_socket: refused, and left as it was.
    std::fs::write(&socket, b"precious")?;
    let why = refused(&lab, config.clone(), "regular file at api_socket")?;
    ensure!(why.contains("is not a socket"), "{why}");
    ensure!(
        std::fs::read(&socket)? == b"precious",
        "the file at api_socket was changed"
    );
    std::fs::remove_file(&socket)?;

    // Without the obstacles the same configuration starts (and, ephemeral, cleans up).
    let d = Daemon::start(&lab, config)?;
    ensure!(xdp_prog(&lab)?.is_some(), "no program after a good start");
    d.stop()?;
    lab.down()?;
    Ok(())
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
fn a_saved_layout_of_another_epoch_costs_no_flow() -> anyhow::Result<()> {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("pre", "epo")).backends(3))?;
    let pin_dir = lab::lab_pin_dir(lab.prefix());
    let layout = lab::lab_dir(lab.prefix()).join(LAYOUT_FILE);
    let vip = SocketAddr::new(lab.vip4().into(), lab::TCP_PORT);
    let config = lab.daemon_config(&Weights::Equal)?;

    let d = Daemon::start_keeping(&lab, config.clone())?;
    let mut held = hold(lab.client(0), vip, 20)?;
    let backends: Vec<String> = held.iter().map(|h| h.backend.clone()).collect();
    echo_all(&mut held, "first")?;
    d.stop()?;

    // Saved by the previous epoch's build: adopted, rebuilt from the maps.
    set_epoch(&layout, ABI_EPOCH - 1)?;
    let d = Daemon::start_keeping(&lab, config.clone())
        .context("a layout of the previous epoch blocked the start")?;
    echo_all(&mut held, "earlier-epoch")?;
    d.stop()?;

    // Saved by a newer build: refused, saying how to keep the flows (delete the saved
    // layout), and nothing changed.
    let before = xdp_prog(&lab)?.context("no program")?;
    set_epoch(&layout, ABI_EPOCH + 1)?;
    let why = Daemon::start_keeping(&lab, config.clone())
        .err()
        .context("a layout of a newer epoch was adopted without a word")?
        .to_string();
    println!("newer epoch refused: {why}");
    ensure!(
        why.contains("delete the saved layout")
            && why.contains(&format!("rm {}", layout.display()))
            && why.contains("keeping every flow"),
        "the refusal does not say to delete the saved layout: {why}"
    );
    ensure!(
        xdp_prog(&lab)? == Some(before),
        "a refused start changed the program"
    );
    echo_all(&mut held, "refused")?;

    // Following the advice keeps every flow on its backend.
    std::fs::remove_file(&layout)?;
    let d = Daemon::start_keeping(&lab, config)?;
    ensure!(
        xdp_prog(&lab)? != Some(before),
        "no new program after following the advice"
    );
    echo_all(&mut held, "advice-followed")?;
    let now: Vec<String> = held.iter().map(|h| h.backend.clone()).collect();
    ensure!(now == backends, "connections changed backends");
    d.stop()?;
    drop(held);
    dataplane::detach(&pin_dir, Some(&layout))?;
    lab.down()?;
    Ok(())
}

#[test]
fn crash_leftovers_go_at_start_and_detach_finds_the_saved_layout() -> anyhow::Result<()> {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("pre", "tmp")).backends(1))?;
    let pin_dir = lab::lab_pin_dir(lab.prefix());
    let state_dir = lab::lab_dir(lab.prefix());
    let layout = state_dir.join(LAYOUT_FILE);
    std::fs::create_dir_all(&state_dir)?;

    // Temporary files of writes by a process that died (reaped just now).
    let dead = std::process::Command::new("true")
        .spawn()
        .and_then(|mut c| c.wait().map(|_| c.id()))?;
    let leftovers = [
        state_dir.join(format!("{LAYOUT_FILE}.tmp.{dead}")),
        state_dir.join(format!("runtime.toml.tmp.{dead}")),
        state_dir.join(format!("status.tmp.{dead}")),
    ];
    for f in &leftovers {
        std::fs::write(f, b"half-written")?;
    }
    let unrelated = state_dir.join("notes.tmp");
    std::fs::write(&unrelated, b"mine")?;

    let d = Daemon::start_keeping(&lab, lab.daemon_config(&Weights::Equal)?)?;
    for f in &leftovers {
        ensure!(!f.exists(), "{} survived the start", f.display());
    }
    ensure!(unrelated.exists(), "an unrelated file was removed");
    d.stop()?;
    ensure!(layout.exists(), "no saved layout after the stop");

    // `sluice detach --pin-dir DIR --state-dir DIR` (no config file): the layout goes too.
    lb_userspace::cli::detach::run(None, None, Some(pin_dir.clone()), Some(state_dir.clone()))?;
    ensure!(!pin_dir.exists(), "{} still exists", pin_dir.display());
    ensure!(
        !layout.exists(),
        "{} still exists after detach",
        layout.display()
    );
    ensure!(xdp_prog(&lab)?.is_none(), "still attached after detach");
    lab.down()?;
    Ok(())
}

#[test]
fn auto_mode_reports_real_attach_errors() -> anyhow::Result<()> {
    require_root();
    let _ns = Private::enter()?;
    let sizes = Sizes {
        flow_entries: 4096,
        table_slots: 4096,
    };
    let balancer = lb_common::programs::BALANCER;
    let mut dp = Dataplane::load(sizes)?;
    let missing = dp
        .attach(balancer, "sl-nope0", AttachMode::Auto)
        .err()
        .context("attached to a missing interface")?
        .to_string();
    println!("missing interface: {missing}");
    ensure!(
        missing.contains("no such interface") && !missing.contains("native XDP not available"),
        "{missing}"
    );

    // An interface with a program already attached (in native mode): busy, no fallback.
    run(&[
        "ip", "link", "add", "sl-pa", "type", "veth", "peer", "name", "sl-pb",
    ])?;
    run(&["ip", "link", "set", "sl-pa", "up"])?;
    run(&["ip", "link", "set", "sl-pb", "up"])?;
    ensure!(dp.attach(balancer, "sl-pa", AttachMode::Native)? == AttachMode::Native);
    let mut other = Dataplane::load(sizes)?;
    let busy = other
        .attach(balancer, "sl-pa", AttachMode::Auto)
        .err()
        .context("a second program attached over the first")?
        .to_string();
    println!("busy interface: {busy}");
    // The native attempt's own error (EBUSY), not the generic attempt's (EEXIST: "native
    // and generic XDP can't be active at the same time") after a fallback.
    ensure!(
        busy.contains("Device or resource busy")
            && busy.contains("another XDP program is attached to sl-pa"),
        "{busy}"
    );
    ensure!(
        other.attached().is_empty(),
        "the second program attached anyway"
    );
    dp.detach_all()?;
    Ok(())
}
