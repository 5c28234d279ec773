//! `sluice doctor`, in the lab: each breakage once (the VIP removed from a backend's `lo`,
//! `arp_ignore=0`, its MTU lowered, its server stopped, decapsulation detached for an IPIP
//! VIP, IP forwarding off on the balancer); doctor exits 1 naming that check, and the fix
//! command it prints, run in that namespace, makes it green again. Also: `backend list`
//! points a down backend at the doctor to run on it.
//!
//! `sluice` is this test binary re-executed (`sluice_as_child`), entering a namespace with
//! `--netns` (not `ip netns exec`, which remounts /sys and hides the pins). Shell fixes run
//! with `ip netns exec NS sh -c FIX`. The labs (prefix `sl-doctor-<pid>-<n>`) are removed
//! when they drop, also on failure; the decap pin a fix made is removed by a guard.

use std::{
    net::IpAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use sluice_core::config::Forwarding;
use sluice_daemon::{
    doctor::{Report, Severity},
    health::Health,
};
use sluice_lab::lab::{Lab, LabSpec, TCP_PORT, Weights, daemon::Daemon, lab_dir, lab_pin_dir};
use sluice_tests::{child, prefix, require_root, serial};

/// Not a test of its own: the `sluice` command line, run by the tests below in a child
/// process (this binary re-executed).
#[test]
fn sluice_as_child() {
    child::run_if_child();
}

/// `sluice ARGS...`: its exit success and stdout (stderr appended).
fn sluice(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = child::command(args)?.stdin(Stdio::null()).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// `sluice --netns NS doctor ARGS... --json`: its exit success and report.
fn doctor(ns: &str, args: &[&str]) -> anyhow::Result<(bool, Report)> {
    let mut all = vec!["--netns", ns, "doctor"];
    all.extend_from_slice(args);
    all.push("--json");
    let (ok, out) = sluice(&all)?;
    // The test harness of the child prints its own lines around the command's.
    let json = out
        .find("{\n")
        .zip(out.rfind("\n}"))
        .map(|(a, b)| &out[a..=b + 1])
        .with_context(|| format!("no JSON in {out}"))?;
    let report: Report =
        serde_json::from_str(json).with_context(|| format!("doctor's JSON: {out}"))?;
    ensure!(
        ok != report.failed(),
        "exit status {ok} disagrees with the report: {out}"
    );
    Ok((ok, report))
}

/// Run doctor: it must fail on `check` (and nothing else); then run the fix it prints in
/// `ns` and doctor must pass. The fix, for the record.
fn broken_then_fixed(ns: &str, args: &[&str], check: &str) -> anyhow::Result<String> {
    let (ok, report) = doctor(ns, args)?;
    let failing: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.status == Severity::Fail)
        .map(|f| f.check.as_str())
        .collect();
    ensure!(
        !ok && failing == [check],
        "want only {check} failing, got {failing:?}:\n{}",
        report.table()
    );
    let fix = report
        .of(check)
        .find_map(|f| f.fix.clone())
        .context("no fix")?;
    run_fix(ns, &fix)?;
    let (ok, after) = doctor(ns, args)?;
    ensure!(ok, "still failing after `{fix}`:\n{}", after.table());
    Ok(fix)
}

/// Run a fix command in namespace `ns`: sluice's own through `sluice --netns`, anything
/// else with `ip netns exec NS sh -c`.
fn run_fix(ns: &str, fix: &str) -> anyhow::Result<()> {
    if let Some(rest) = fix.strip_prefix("sluice ") {
        let mut args = vec!["--netns", ns];
        args.extend(rest.split_whitespace());
        let (ok, out) = sluice(&args)?;
        ensure!(ok, "`{fix}` failed: {out}");
        return Ok(());
    }
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", fix])
        .output()?;
    ensure!(
        out.status.success(),
        "`{fix}` in {ns} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn sh(ns: &str, cmd: &str) -> anyhow::Result<()> {
    run_fix(ns, cmd)
}

#[test]
fn backend_breakages_are_named_and_their_fixes_work() {
    require_root();
    let _g = serial();
    let lab =
        Lab::up(LabSpec::new(&prefix("doctor", "1")).backends(1)).expect("bring the DSR lab up");
    let b = lab.backend(0);
    let ns = b.ns();
    let vip = format!("{}:{TCP_PORT}/tcp", lab.vip4());
    let args = ["backend", "--vip", vip.as_str(), "--mode", "dsr"];

    let (ok, report) = doctor(ns, &args).expect("doctor");
    assert!(ok, "the lab's backend is healthy:\n{}", report.table());
    for check in [
        "vip-address",
        "arp-ignore",
        "arp-announce",
        "mtu",
        "listener",
    ] {
        assert!(
            report.of(check).count() > 0,
            "{check} checked:\n{}",
            report.table()
        );
    }

    lab.break_backend(0).expect("remove the VIPs from lo");
    let fix = broken_then_fixed(ns, &args, "vip-address").expect("the VIP off lo");
    assert_eq!(fix, format!("ip addr add {}/32 dev lo", lab.vip4()));
    lab.repair_backend(0).expect("the IPv6 VIP back");

    sh(ns, "sysctl -qw net.ipv4.conf.all.arp_ignore=0").expect("arp_ignore=0");
    broken_then_fixed(ns, &args, "arp-ignore").expect("arp_ignore=0");

    sh(ns, "ip link set dev eth0 mtu 1400").expect("lower the MTU");
    let fix = broken_then_fixed(ns, &args, "mtu").expect("MTU 1400");
    assert_eq!(fix, "ip link set dev eth0 mtu 1500");

    // The server stopped: doctor names its port; the fix is to start the service.
    lab.kill_backend_server(0).expect("stop the server");
    let (ok, report) = doctor(ns, &args).expect("doctor");
    let listener: Vec<_> = report.of("listener").collect();
    assert!(
        !ok && listener.len() == 1
            && listener[0].status == Severity::Fail
            && listener[0].detail.contains(&format!("port {TCP_PORT}")),
        "{}",
        report.table()
    );
    lab.start_backend_server(0).expect("start the server again");
    let (ok, report) = doctor(ns, &args).expect("doctor");
    assert!(ok, "{}", report.table());
}

/// Detaches, on drop, the decap a fix attached under sluice's own pin name.
struct DecapPin<'a>(&'a str);

impl Drop for DecapPin<'_> {
    fn drop(&mut self) {
        let _ = sluice(&["--netns", self.0, "decap", "detach", "--interface", "eth0"]);
    }
}

#[test]
fn ipip_decap_and_forwarding_are_named_and_their_fixes_work() {
    require_root();
    let _g = serial();
    let lab = Lab::up(
        LabSpec::new(&prefix("doctor", "2"))
            .backends(2)
            .mode(Forwarding::Ipip),
    )
    .expect("bring the IPIP lab up");
    balancer_side(&lab).expect("the balancer side");

    let ns = lab.backend(0).ns();
    let vip = format!("{}:{TCP_PORT}/tcp", lab.vip4());
    let args = ["backend", "--vip", vip.as_str(), "--mode", "ipip"];
    let (ok, report) = doctor(ns, &args).expect("doctor");
    assert!(ok, "the lab's IPIP backend is healthy:\n{}", report.table());
    assert!(
        report
            .of("decap")
            .any(|f| f.detail.contains("sluice's decap on eth0")),
        "{}",
        report.table()
    );
    // Detach the lab's decap (removing its pin detaches it).
    let pin: PathBuf = lab
        .pins()
        .into_iter()
        .find(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy().contains("sluice_decap") && n.to_string_lossy().contains(ns)
            })
        })
        .expect("the backend's decap pin");
    std::fs::remove_file(&pin).expect("detach the decap");
    let _attached = DecapPin(ns);
    let fix = broken_then_fixed(ns, &args, "decap").expect("no decap");
    assert_eq!(fix, "sluice decap attach --interface eth0");
}

/// The balancer: green with the daemon running; forwarding off names `ip-forward` and its
/// fix; a down backend gets the hint in `backend list` and in doctor's report.
fn balancer_side(lab: &Lab) -> anyhow::Result<()> {
    let dir = lab_dir(lab.prefix()).join("doctor");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("sluice.toml");
    let socket = dir.join("sluice.sock");
    let mut config = lab.daemon_config(&Weights::Equal)?;
    config.daemon.state_dir = dir.join("state");
    config.daemon.api_socket.clone_from(&socket);
    config.daemon.pin_dir = Some(lab_pin_dir(lab.prefix()));
    config.vips.retain(|v| v.name == "lab-tcp4");
    for v in &mut config.vips {
        v.health.interval_ms = 300;
        v.health.timeout_ms = 200;
        v.health.rise = 2;
        v.health.fall = 2;
    }
    std::fs::write(&file, config.to_toml()?)?;
    let d = Daemon::start(lab, config)?;
    let lb = lab.lb_ns();
    let file_arg = file.to_str().context("path")?;
    let args = ["--config", file_arg];
    let (ok, report) = doctor(lb, &args)?;
    ensure!(ok, "the lab's balancer is healthy:\n{}", report.table());
    for check in ["xdp", "ip-forward", "next-hop", "daemon", "bpffs"] {
        ensure!(
            report.of(check).count() > 0,
            "{check} checked:\n{}",
            report.table()
        );
    }
    ensure!(
        report
            .of("xdp")
            .any(|f| f.status == Severity::Ok && f.detail.contains("native")),
        "{}",
        report.table()
    );

    sh(lb, "sysctl -qw net.ipv4.ip_forward=0")?;
    let fix = broken_then_fixed(lb, &args, "ip-forward")?;
    ensure!(fix == "sysctl -w net.ipv4.ip_forward=1", "{fix}");

    // A backend down: `backend list` and doctor point at the doctor to run on it.
    let b: IpAddr = lab.backend(1).addr4().into();
    lab.kill_backend_server(1)?;
    d.wait_health("lab-tcp4", b, Health::Down, Duration::from_secs(10))?;
    let hint = format!(
        "sluice doctor backend --vip {}:{TCP_PORT}/tcp --mode ipip",
        lab.vip4()
    );
    let socket_arg = socket.to_str().context("path")?;
    let (ok, list) = sluice(&["--api-socket", socket_arg, "backend", "list"])?;
    ensure!(
        ok && list.contains(&hint),
        "no hint in backend list: {list}"
    );
    let (_, report) = doctor(lb, &args)?;
    if !report
        .of("backend-health")
        .any(|f| f.fix.as_deref().is_some_and(|x| x.contains(&hint)))
    {
        bail!("no backend-health finding:\n{}", report.table());
    }
    lab.start_backend_server(1)?;
    d.stop()?;
    Ok(())
}
