//! The small things an operator hit (issue 11), where a daemon or root is needed: edits
//! that change nothing are idempotent and keep the version, a user outside the API's group
//! is told about `daemon.api_group`, and decap pins of two namespaces' `eth0` coexist.
//!
//! Each test builds its own namespaces (prefix `sl-cs-<pid>-<n>`), removed when they drop,
//! also on failure; tests run one at a time.

use std::path::Path;

use anyhow::bail;
use clap::Parser as _;
use lb_common::programs;
use lb_userspace::cli::{Cli, dispatch};
use sluice_daemon::api::{Request, Response, client};
use sluice_dataplane::{AttachMode, pinned};
use sluice_lab::lab::{Lab, LabSpec, Weights, daemon::Daemon};
use sluice_tests::{netns::Named, prefix, require_root, serial};

/// `sluice --api-socket SOCKET ARGS...`, in process.
fn sluice(socket: &Path, args: &[&str]) -> anyhow::Result<()> {
    let socket = socket.to_string_lossy();
    let argv = ["sluice", "--api-socket", &socket]
        .into_iter()
        .chain(args.iter().copied());
    dispatch(Cli::try_parse_from(argv)?)
}

fn version(socket: &Path) -> anyhow::Result<u64> {
    match client::request(socket, &Request::Config)? {
        Response::Config { version, .. } => Ok(version),
        r => bail!("unexpected answer {r:?}"),
    }
}

#[test]
fn edits_that_change_nothing_succeed_and_keep_the_version() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("cs", "idem")).backends(2)).expect("bring the lab up");
    let config = lab
        .daemon_config(&Weights::Equal)
        .expect("the lab's daemon config");
    let socket = config.daemon.api_socket.clone();
    let d = Daemon::start(&lab, config).expect("start the daemon");
    let backend = lab.backend(0).addr4().to_string();
    let at = ["--vip", "lab-tcp4", "--address", &backend];
    let v0 = version(&socket).expect("the config's version");

    // Undrain of an active backend: done already.
    sluice(&socket, &[&["backend", "undrain"][..], &at].concat())
        .expect("undrain of an active backend");
    assert!(
        version(&socket).expect("the config's version") == v0,
        "a no-op undrain bumped the version"
    );
    // `vip set` to what it is; a repeated set-weight.
    sluice(
        &socket,
        &["vip", "set", "lab-tcp4", "--scheduler", "maglev"],
    )
    .expect("run the sluice CLI");
    sluice(
        &socket,
        &[&["backend", "set-weight"][..], &at, &["--weight", "1"]].concat(),
    )
    .expect("run the sluice CLI");
    assert!(
        version(&socket).expect("the config's version") == v0,
        "no-op edits bumped the version"
    );

    // The API itself: the running configuration sent back is not a change.
    let Response::Config { toml, version: v } =
        client::request(&socket, &Request::Config).expect("an API request")
    else {
        panic!("no config");
    };
    match client::request(
        &socket,
        &Request::Apply {
            config: toml,
            dry_run: false,
            base_version: Some(v),
            force: false,
        },
    )
    .expect("an API request")
    {
        Response::Plan {
            applied: false,
            version,
            ..
        } if version == v0 => {}
        r => panic!("the unchanged configuration was applied: {r:?}"),
    }

    // A real change, made twice: one new version.
    let drain = [&["backend", "drain"][..], &at].concat();
    sluice(&socket, &drain).expect("run the sluice CLI");
    sluice(&socket, &drain).expect("a repeated drain");
    assert!(
        version(&socket).expect("the config's version") == v0 + 1,
        "a drain made twice: {}",
        version(&socket).expect("the config's version")
    );
    sluice(&socket, &[&["backend", "undrain"][..], &at].concat()).expect("run the sluice CLI");
    assert!(version(&socket).expect("the config's version") == v0 + 2);
    drop(d);
    lab.down().expect("take the lab down");
}

/// Where a child run as `nobody` reads its socket from.
const CHILD_SOCKET: &str = "SLUICE_TEST_CHILD_SOCKET";

/// Run by [`a_user_outside_the_api_group_is_told_how_to_get_in`] as `nobody`: `sluice
/// backend list` against the socket, printing its error on one line.
#[test]
#[ignore = "run as another user by a_user_outside_the_api_group_is_told_how_to_get_in"]
fn cli_as_child() {
    let socket = std::env::var(CHILD_SOCKET).expect("run by the parent test");
    match sluice(Path::new(&socket), &["backend", "list"]) {
        Ok(()) => println!("SERVED"),
        Err(e) => println!("REFUSED {}", format!("{e:#}").replace('\n', " ")),
    }
}

#[test]
fn a_user_outside_the_api_group_is_told_how_to_get_in() {
    use std::os::unix::{fs::PermissionsExt as _, process::CommandExt as _};
    require_root();
    let _serial = serial();
    let lab = Lab::up(LabSpec::new(&prefix("cs", "acl")).backends(1)).expect("bring the lab up");
    let mut config = lab
        .daemon_config(&Weights::Equal)
        .expect("the lab's daemon config");
    // Debian's `nogroup` (65534) exists on every machine this runs on.
    config.daemon.api_group = Some("nogroup".to_owned());
    let socket = config.daemon.api_socket.clone();
    let d = Daemon::start(&lab, config).expect("start the daemon");

    // A copy of this binary that `nobody` can execute (the build directory may be out of
    // its reach).
    let dir = std::env::temp_dir().join(format!("sluice-cs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the directory");
    let exe = dir.join("child");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .expect("set the file's permissions");
    std::fs::copy(std::env::current_exe().expect("the test binary"), &exe).expect("copy the file");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))
        .expect("set the file's permissions");
    let mut cmd = std::process::Command::new(&exe);
    cmd.args([
        "--exact",
        "cli_as_child",
        "--include-ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD_SOCKET, &socket);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // Not root, not in nogroup: the kernel refuses the socket (0660 root:nogroup).
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65533) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.expect("run the child as nobody");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.find("REFUSED ").map(|i| l[i..].to_owned()))
        .unwrap_or_else(|| panic!("the child was not refused: {text}"));
    println!("{line}");
    for part in [
        &socket.display().to_string(),
        "daemon.api_group",
        "\"nogroup\"",
        "usermod -aG nogroup",
    ] {
        assert!(line.contains(part), "{part:?} missing from: {line}");
    }
    drop(d);
    lab.down().expect("take the lab down");
}

/// Removes the test's link pins, also on failure (a namespace's deletion detaches its
/// links but leaves their pins).
struct Pins(Vec<std::path::PathBuf>);

impl Drop for Pins {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
fn decap_pins_of_two_namespaces_eth0_coexist() {
    require_root();
    let _serial = serial();
    let a = Named::new(&prefix("cs", "na")).expect("a named namespace");
    let b = Named::new(&prefix("cs", "nb")).expect("a named namespace");
    for ns in [&a, &b] {
        ns.exec(&[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ])
        .expect("run a command in the namespace");
        ns.exec(&["ip", "link", "set", "eth0", "up"])
            .expect("run a command in the namespace");
        ns.exec(&["ip", "link", "set", "eth1", "up"])
            .expect("run a command in the namespace");
    }
    let id = |ns: &Named| ns.run(pinned::netns_id);
    let (ia, ib) = (
        id(&a)
            .expect("run in the namespace")
            .expect("the namespace's id"),
        id(&b)
            .expect("run in the namespace")
            .expect("the namespace's id"),
    );
    // The name pins had before they named the namespace.
    let old_name = format!("{}@eth0", programs::DECAP);
    let mut pins = Pins(vec![
        pinned::link_pin_path(programs::DECAP, "eth0", ia),
        pinned::link_pin_path(programs::DECAP, "eth0", ib),
        pinned::pin_path(&old_name),
    ]);
    let attach =
        |ns: &Named| ns.run(|| pinned::attach_pinned(programs::DECAP, "eth0", AttachMode::Native));
    let detach = |ns: &Named| ns.run(|| pinned::detach_pinned(programs::DECAP, "eth0"));

    let (_, pa) = attach(&a)
        .expect("run in the namespace")
        .expect("attach the decap program");
    let (_, pb) = attach(&b)
        .expect("second namespace")
        .expect("second namespace");
    assert!(pa != pb && pa.exists() && pb.exists(), "{pa:?} {pb:?}");

    detach(&a)
        .expect("run in the namespace")
        .expect("detach the decap program");
    assert!(
        !pa.exists() && pb.exists(),
        "detaching in one took the other's"
    );
    // Detached already here; it is attached in the other namespace, and the message says
    // which.
    let e = detach(&a)
        .expect("run in the namespace")
        .expect_err("nothing left to detach here")
        .to_string();
    assert!(
        e.contains("not attached") && e.contains(b.name()),
        "the message does not say where it is attached: {e}"
    );
    detach(&b)
        .expect("run in the namespace")
        .expect("detach the decap program");
    assert!(!pb.exists());

    // A pin from before the namespace was in the name still detaches.
    let (_, old) = a
        .run(|| pinned::attach_pinned_as(programs::DECAP, "eth0", AttachMode::Native, &old_name))
        .expect("run in the namespace")
        .expect("attach the decap program under the old pin name");
    assert!(old.exists());
    // Not from a namespace without that interface.
    b.exec(&["ip", "link", "del", "eth0"])
        .expect("run a command in the namespace");
    assert!(
        detach(&b).expect("run in the namespace").is_err(),
        "another namespace detached the old pin"
    );
    detach(&a)
        .expect("run in the namespace")
        .expect("detach the decap program");
    assert!(!old.exists(), "the old-style pin is still there");
    pins.0.clear();
}
