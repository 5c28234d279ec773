//! No live edit is ever lost: a real `sluice run` (this test binary, re-executed as the
//! `sluice` command line: `sluice_as_child`) in the lab's load-balancer namespace, edited
//! through the CLI and the API, stopped and started again:
//!
//! - a drain survives a restart after a comment was appended to the config file;
//! - a conflicting file change refuses the start with a per-field report, and
//!   `sluice config save` resolves it (the live edit wins, the daemon starts);
//! - a second `sluice run` on the same pin directory leaves the saved edits alone;
//! - with a read-only state directory an edit is refused and nothing changes;
//! - an apply needs a base version (or `force`); of 50 concurrent applies with base
//!   versions, every acknowledged one survives a restart, the others are refused as stale;
//! - SIGHUP and `sluice reload` apply the file (merged with the live edits), the daemon
//!   keeps running.
//!
//! Every test builds its own lab (prefix `sl-per-<pid>-<n>`), removed when it drops; the
//! daemon is stopped (SIGTERM, then SIGKILL) and its files removed, also on failure. Every
//! wait is bounded.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use sluice_core::config::{self, BackendState, Config};
use sluice_daemon::{
    api::{Request, Response, client},
    persist,
};
use sluice_lab::lab::{Lab, LabSpec, Weights, lab_dir};
use sluice_tests::{
    child::{self, Daemon},
    prefix, require_root, serial,
};

const VIP: &str = "lab-tcp4";

/// Not a test of its own: the `sluice` command line, run by the tests below in a child
/// process (this binary re-executed), so that they need no other binary built.
#[test]
fn sluice_as_child() {
    child::run_if_child();
}

/// Run a `sluice` command to its end: exit code, stdout, stderr.
fn cli(args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = child::command(args)?.stdin(Stdio::null()).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The files of one test: config file, state directory, API socket.
struct Files {
    dir: PathBuf,
    file: PathBuf,
    state: PathBuf,
    socket: PathBuf,
    ns: String,
}

impl Files {
    fn new(lab: &Lab) -> anyhow::Result<(Self, Config)> {
        let dir = lab_dir(lab.prefix()).join("persist");
        std::fs::create_dir_all(&dir)?;
        let f = Self {
            file: dir.join("sluice.toml"),
            state: dir.join("state"),
            socket: dir.join("sluice.sock"),
            ns: lab.lb().ns().to_owned(),
            dir,
        };
        let mut config = lab.daemon_config(&Weights::Equal)?;
        config.daemon.state_dir.clone_from(&f.state);
        config.daemon.api_socket.clone_from(&f.socket);
        f.write(&config)?;
        Ok((f, config))
    }

    fn write(&self, config: &Config) -> anyhow::Result<()> {
        std::fs::write(
            &self.file,
            format!("# the test's config\n{}", config.to_toml()?),
        )?;
        Ok(())
    }

    fn file(&self) -> &str {
        self.file.to_str().unwrap_or_default()
    }

    /// `sluice --api-socket S ARGS...`.
    fn cli(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let mut all = vec!["--api-socket", self.socket.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        cli(&all)
    }

    /// `sluice run` in the lab's load-balancer namespace, once its API answers.
    fn start(&self) -> anyhow::Result<Daemon> {
        let log = self.dir.join(format!(
            "daemon-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        ));
        Daemon::start(&self.ns, &self.file, log, || {
            client::request(&self.socket, &Request::Status { flows: false }).is_ok()
        })
    }

    /// `sluice run` that must refuse to start: its exit code and log.
    fn refused(&self) -> anyhow::Result<(i32, String)> {
        let log = self.dir.join("refused.log");
        let mut proc = child::spawn_run(&self.ns, &self.file, &log)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = proc.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = proc.kill();
                let _ = proc.wait();
                bail!("sluice run did not stop within 60 s (it should have refused to start)");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Ok((status.code().unwrap_or(-1), std::fs::read_to_string(&log)?))
    }

    fn running(&self) -> anyhow::Result<(Config, u64)> {
        match client::request(&self.socket, &Request::Config)? {
            Response::Config { toml, version } => {
                Ok((config::parse(&toml, "running")?.config, version))
            }
            r => bail!("unexpected answer {r:?}"),
        }
    }

    fn saved(&self) -> anyhow::Result<Vec<u8>> {
        std::fs::read(self.state.join(persist::RUNTIME_FILE)).context("runtime.toml")
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn lab(tag: &str) -> anyhow::Result<Lab> {
    Ok(Lab::up(LabSpec::new(&prefix("per", tag)).backends(2))?)
}

fn backend(c: &Config, vip: &str, a: IpAddr) -> anyhow::Result<config::BackendConfig> {
    c.vips
        .iter()
        .find(|v| v.name == vip)
        .and_then(|v| v.backends.iter().find(|b| b.address == a))
        .cloned()
        .with_context(|| format!("no backend {a} in VIP {vip}"))
}

fn backend_mut<'c>(c: &'c mut Config, vip: &str, a: IpAddr) -> &'c mut config::BackendConfig {
    c.vips
        .iter_mut()
        .find(|v| v.name == vip)
        .and_then(|v| v.backends.iter_mut().find(|b| b.address == a))
        .expect("backend")
}

fn ok(what: &str, r: (i32, String, String)) -> anyhow::Result<String> {
    ensure!(r.0 == 0, "{what} failed ({}):\n{}\n{}", r.0, r.1, r.2);
    Ok(r.1)
}

#[test]
fn a_drain_survives_a_restart_after_a_comment_is_appended() {
    use std::os::unix::fs::PermissionsExt as _;
    require_root();
    let _serial = serial();
    let lab = lab("drain").expect("bring the lab up");
    let (f, config) = Files::new(&lab).expect("the test files");
    let b1 = config.vips[0].backends[0].address;
    let d = f.start().expect("start the daemon");
    let a = b1.to_string();
    ok(
        "backend drain",
        f.cli(&["backend", "drain", "--vip", VIP, "--address", &a])
            .expect("run the sluice CLI"),
    )
    .expect("the CLI command succeeds");
    // The edit is logged once, with who made it (this test runs as root) and what changed.
    let log = d.log();
    let applied: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("edit applied through the API"))
        .collect();
    assert_eq!(applied.len(), 1, "{log}");
    assert!(
        applied[0].contains("peer_uid=0 peer_pid=")
            && applied[0].contains(&format!(r#"backend {a}: state: \"active\" → \"draining\""#)),
        "{}",
        applied[0]
    );
    // An edit the config file's rules refuse: the CLI names the option typed, the log says
    // who tried it.
    let (code, _, err) = f
        .cli(&[
            "backend",
            "set-weight",
            "--vip",
            VIP,
            "--address",
            &a,
            "--weight",
            "20000",
        ])
        .expect("run the sluice CLI");
    assert!(
        code == 1
            && err.contains("--weight 20000: 20000 is out of range")
            && err.contains(".weight)"),
        "{err}"
    );
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("edit refused through the API")
                && l.contains("peer_uid=0 peer_pid=")
                && l.contains("out of range")),
        "{log}"
    );
    for name in [persist::RUNTIME_FILE, persist::BASE_FILE] {
        let mode = std::fs::metadata(f.state.join(name))
            .expect("the file's metadata")
            .permissions()
            .mode()
            & 0o777;
        assert!(mode == 0o600, "{name} has mode {mode:o}, not 0600");
    }
    d.stop().expect("stop the daemon");
    let mut text = std::fs::read_to_string(&f.file).expect("read the file");
    text.push_str("# a comment appended by the operator\n");
    std::fs::write(&f.file, text).expect("write the file");
    let d = f.start().expect("start the daemon");
    let (running, _) = f.running().expect("the daemon's running config");
    assert!(
        backend(&running, VIP, b1)
            .expect("the backend in the config")
            .state
            == BackendState::Draining,
        "the drain was lost across the restart:\n{}",
        d.log()
    );
    d.stop().expect("stop the daemon");
}

#[test]
fn a_conflicting_file_change_refuses_the_start_and_config_save_resolves_it() {
    require_root();
    let _serial = serial();
    let lab = lab("conflict").expect("bring the lab up");
    let (f, mut config) = Files::new(&lab).expect("the test files");
    let b1 = config.vips[0].backends[0].address;
    let d = f.start().expect("start the daemon");
    ok(
        "set-weight",
        f.cli(&[
            "backend",
            "set-weight",
            "--vip",
            VIP,
            "--address",
            &b1.to_string(),
            "--weight",
            "5",
        ])
        .expect("run the sluice CLI"),
    )
    .expect("the CLI command succeeds");
    d.stop().expect("stop the daemon");
    let saved = f.saved().expect("read the saved runtime.toml");
    backend_mut(&mut config, VIP, b1).weight = 7;
    f.write(&config).expect("write the config file");
    let (code, log) = f.refused().expect("the refused start");
    assert!(code != 0, "the start was not refused:\n{log}");
    let field = format!("vip \"{VIP}\" backend {b1}: weight: the file has 7, the live edits 5");
    for want in [
        field.as_str(),
        "sluice config save",
        "sluice config discard",
    ] {
        assert!(log.contains(want), "the report lacks {want:?}:\n{log}");
    }
    assert!(
        f.saved().expect("read the saved runtime.toml") == saved,
        "the saved edits changed"
    );
    let diff = ok(
        "config diff",
        f.cli(&["config", "diff", f.file()])
            .expect("run the sluice CLI"),
    )
    .expect("the CLI command succeeds");
    assert!(diff.contains(&field), "config diff:\n{diff}");
    ok(
        "config save",
        f.cli(&["config", "save", f.file()])
            .expect("run the sluice CLI"),
    )
    .expect("the CLI command succeeds");
    let d = f.start().expect("start the daemon");
    let (running, _) = f.running().expect("the daemon's running config");
    assert!(
        backend(&running, VIP, b1)
            .expect("the backend in the config")
            .weight
            == 5,
        "the live edit lost"
    );
    let file = config::load(&f.file).expect("load the config").config;
    assert!(
        backend(&file, VIP, b1)
            .expect("the backend in the config")
            .weight
            == 5,
        "config save did not write it"
    );
    d.stop().expect("stop the daemon");
}

#[test]
fn a_second_run_on_the_same_pin_dir_leaves_the_saved_edits_alone() {
    require_root();
    let _serial = serial();
    let lab = lab("second").expect("bring the lab up");
    let (f, config) = Files::new(&lab).expect("the test files");
    let b1 = config.vips[0].backends[0].address;
    let mut d = f.start().expect("start the daemon");
    ok(
        "set-weight",
        f.cli(&[
            "backend",
            "set-weight",
            "--vip",
            VIP,
            "--address",
            &b1.to_string(),
            "--weight",
            "3",
        ])
        .expect("run the sluice CLI"),
    )
    .expect("the CLI command succeeds");
    let saved = f.saved().expect("read the saved runtime.toml");
    // The file changed meanwhile (the case where the saved edits used to be discarded).
    let mut text = std::fs::read_to_string(&f.file).expect("read the file");
    text.push_str("# edited while the daemon runs\n");
    std::fs::write(&f.file, text).expect("write the file");
    let (code, log) = f.refused().expect("the refused start");
    assert!(code != 0, "a second daemon started:\n{log}");
    assert!(d.alive(), "the first daemon died");
    assert!(
        f.saved().expect("read the saved runtime.toml") == saved,
        "the running daemon's saved edits were touched"
    );
    d.stop().expect("stop the daemon");
    let d = f.start().expect("start the daemon");
    assert!(
        backend(
            &f.running().expect("the daemon's running config").0,
            VIP,
            b1
        )
        .expect("the backend in the config")
        .weight
            == 3,
        "edit lost"
    );
    d.stop().expect("stop the daemon");
}

/// A read-only bind mount of a directory (root ignores permission bits), undone on drop.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        let d = dir.to_str().unwrap_or_default();
        let run = |args: &[&str]| -> anyhow::Result<()> {
            let s = Command::new("mount").args(args).status()?;
            ensure!(s.success(), "mount {args:?}: {s}");
            Ok(())
        };
        run(&["--bind", d, d])?;
        let ro = Self(dir.to_owned());
        run(&["-o", "remount,bind,ro", d])?;
        Ok(ro)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn with_a_read_only_state_dir_an_edit_is_refused_and_nothing_changes() {
    require_root();
    let _serial = serial();
    let lab = lab("rodir").expect("bring the lab up");
    let (f, config) = Files::new(&lab).expect("the test files");
    let b1 = config.vips[0].backends[0].address;
    let d = f.start().expect("start the daemon");
    let (before, v0) = f.running().expect("the daemon's running config");
    let set = |w: &str| {
        f.cli(&[
            "backend",
            "set-weight",
            "--vip",
            VIP,
            "--address",
            &b1.to_string(),
            "--weight",
            w,
        ])
    };
    {
        let _ro = ReadOnly::new(&f.state).expect("a read-only state directory");
        let (code, out, err) = set("9").expect("run sluice backend set-weight");
        assert!(code != 0, "the edit was acknowledged:\n{out}");
        assert!(
            err.contains("saving the live edits failed") && err.contains("Read-only file system"),
            "unclear refusal:\n{err}"
        );
        let (after, v1) = f.running().expect("the daemon's running config");
        assert!(after == before && v1 == v0, "the running state changed");
    }
    ok(
        "set-weight",
        set("9").expect("run sluice backend set-weight"),
    )
    .expect("the CLI command succeeds");
    d.stop().expect("stop the daemon");
    let d = f.start().expect("start the daemon");
    assert!(
        backend(
            &f.running().expect("the daemon's running config").0,
            VIP,
            b1
        )
        .expect("the backend in the config")
        .weight
            == 9,
        "edit lost"
    );
    d.stop().expect("stop the daemon");
}

fn apply(f: &Files, c: &Config, base: Option<u64>, force: bool) -> anyhow::Result<u64> {
    match client::request(
        &f.socket,
        &Request::Apply {
            config: c.to_toml()?,
            dry_run: false,
            base_version: base,
            force,
        },
    )? {
        Response::Plan { version, .. } => Ok(version),
        r => bail!("unexpected answer {r:?}"),
    }
}

#[test]
fn applies_need_a_base_version_and_every_acknowledged_one_survives() {
    require_root();
    let _serial = serial();
    let lab = lab("apply").expect("bring the lab up");
    let (f, _) = Files::new(&lab).expect("the test files");
    let d = f.start().expect("start the daemon");
    let (mut c, _) = f.running().expect("the daemon's running config");
    c.vips[0].slow_start_ms = 1234;
    let e = match apply(&f, &c, None, false) {
        Ok(v) => panic!("an apply without a base version was acknowledged (version {v})"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("base_version is required"), "{e}");
    assert!(
        f.running().expect("the daemon's running config").0.vips[0].slow_start_ms != 1234,
        "applied"
    );
    apply(&f, &c, None, true).expect("apply the config");
    assert!(
        f.running().expect("the daemon's running config").0.vips[0].slow_start_ms == 1234,
        "force"
    );
    // 50 concurrent edits, each adding its own backend on the version it fetched.
    let (_, v0) = f.running().expect("the daemon's running config");
    let results: Vec<(IpAddr, anyhow::Result<u64>)> = std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..50u8)
            .map(|i| {
                s.spawn(move || {
                    let addr = IpAddr::from([10, 97, 99, i + 1]);
                    let r = (|| {
                        let (mut c, v) = f.running()?;
                        let mut b = c.vips[0].backends[0].clone();
                        b.address = addr;
                        b.mac = None;
                        c.vips[0].backends.push(b);
                        apply(f, &c, Some(v), false)
                    })();
                    (addr, r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let acked: Vec<IpAddr> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(a, _)| *a)
        .collect();
    for (a, r) in &results {
        if let Err(e) = r {
            assert!(
                e.to_string().contains("changed since version"),
                "{a}: refused for another reason: {e}"
            );
        }
    }
    assert!(!acked.is_empty(), "no edit acknowledged");
    d.stop().expect("stop the daemon");
    let d = f.start().expect("start the daemon");
    let (c, v) = f.running().expect("the daemon's running config");
    assert!(
        v == v0 + acked.len() as u64,
        "version {v}, {} acknowledged since {v0}",
        acked.len()
    );
    let present: Vec<IpAddr> = c.vips[0].backends.iter().map(|b| b.address).collect();
    for (a, r) in &results {
        assert!(
            present.contains(a) == r.is_ok(),
            "{a}: acknowledged {} but present {}",
            r.is_ok(),
            present.contains(a)
        );
    }
    println!(
        "{} of 50 concurrent applies acknowledged, all kept; the others refused as stale",
        acked.len()
    );
    d.stop().expect("stop the daemon");
}

#[test]
fn sighup_and_sluice_reload_apply_the_file_merged_with_live_edits() {
    require_root();
    let _serial = serial();
    let lab = lab("reload").expect("bring the lab up");
    let (f, mut config) = Files::new(&lab).expect("the test files");
    let (b1, b2) = (
        config.vips[0].backends[0].address,
        config.vips[0].backends[1].address,
    );
    let mut d = f.start().expect("start the daemon");
    ok(
        "drain",
        f.cli(&[
            "backend",
            "drain",
            "--vip",
            VIP,
            "--address",
            &b1.to_string(),
        ])
        .expect("run the sluice CLI"),
    )
    .expect("the CLI command succeeds");
    backend_mut(&mut config, VIP, b2).weight = 3;
    f.write(&config).expect("write the config file");
    d.signal(libc::SIGHUP).expect("signal the daemon");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(d.alive(), "SIGHUP killed the daemon:\n{}", d.log());
        if let Ok((c, _)) = f.running()
            && backend(&c, VIP, b2)
                .expect("the backend in the config")
                .weight
                == 3
        {
            assert!(
                backend(&c, VIP, b1)
                    .expect("the backend in the config")
                    .state
                    == BackendState::Draining,
                "the live drain was lost by the reload"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d.log().contains("SIGHUP: reloading"), "not logged");
    backend_mut(&mut config, VIP, b2).weight = 4;
    f.write(&config).expect("write the config file");
    ok("reload", f.cli(&["reload"]).expect("run the sluice CLI"))
        .expect("the CLI command succeeds");
    let (c, _) = f.running().expect("the daemon's running config");
    assert!(
        backend(&c, VIP, b2)
            .expect("the backend in the config")
            .weight
            == 4,
        "sluice reload"
    );
    // A reload that conflicts with a live edit is refused; the daemon keeps running.
    ok(
        "set-weight",
        f.cli(&[
            "backend",
            "set-weight",
            "--vip",
            VIP,
            "--address",
            &b2.to_string(),
            "--weight",
            "6",
        ])
        .expect("run the sluice CLI"),
    )
    .expect("the CLI command succeeds");
    backend_mut(&mut config, VIP, b2).weight = 8;
    f.write(&config).expect("write the config file");
    let (code, _, err) = f.cli(&["reload"]).expect("run the sluice CLI");
    assert!(
        code != 0
            && err.contains("the file has 8, the live edits 6")
            && err.contains("The daemon keeps running unchanged"),
        "{err}"
    );
    assert!(
        backend(
            &f.running().expect("the daemon's running config").0,
            VIP,
            b2
        )
        .expect("the backend in the config")
        .weight
            == 6,
        "changed"
    );
    assert!(d.alive(), "the daemon died");
    d.stop().expect("stop the daemon");
}

#[test]
fn an_empty_or_binary_runtime_toml_refuses_the_start_and_is_kept() {
    require_root();
    let _serial = serial();
    let lab = lab("corrupt").expect("bring the lab up");
    let (f, _) = Files::new(&lab).expect("the test files");
    std::fs::create_dir_all(&f.state).expect("create the directory");
    for (bytes, says) in [
        (&b""[..], "it is empty"),
        (&b"\x00\x01\x02\xff binary"[..], "it is not text"),
    ] {
        std::fs::write(f.state.join(persist::RUNTIME_FILE), bytes).expect("write the file");
        let (code, log) = f.refused().expect("the refused start");
        assert!(code != 0, "started:\n{log}");
        assert!(
            log.contains(says) && !log.contains("changed since"),
            "wrong report:\n{log}"
        );
        assert!(
            f.saved().expect("read the saved runtime.toml") == bytes,
            "runtime.toml was not kept as it was"
        );
    }
}
