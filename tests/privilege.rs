//! The daemon run as the systemd unit runs it (`packaging/sluice.service`): an unprivileged
//! system user, only the unit's capabilities (`AmbientCapabilities=`, read from the unit
//! file) as inheritable, ambient and bounding sets, no new privileges — through `setpriv`,
//! in a network namespace of its own (`nsenter --net`, so the host's bpffs stays visible),
//! with a pin directory and a runtime directory owned by that user as the unit's
//! `ExecStartPre=` and `RuntimeDirectory=` make them, and `$NOTIFY_SOCKET` as systemd sets it.
//!
//! - it attaches, says `READY=1`, and runs with exactly those capabilities;
//! - it serves an edit through its API, made by the user (a member of `daemon.api_group`,
//!   not root), and `RELOADING=1` … `READY=1` around a SIGHUP reload;
//! - it stops (`STOPPING=1`) leaving the balancer attached, starts again and adopts the
//!   pinned maps with the edit kept;
//! - without any one of CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN it cannot start, without
//!   CAP_NET_RAW its health checks cannot go through the forwarding path: none is spare.
//!
//! The user and group, the namespaces, the pins and the directories are removed afterwards,
//! also when the test fails (`World`'s `Drop`).

use std::{
    io::Read as _,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use sluice_daemon::api::{Request, Response, client};
use sluice_tests::{child, netns::Named, require_root, serial};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/sluice.service");

/// Not a test of its own: the `sluice` command line, run by the test below in a child
/// process (this binary re-executed), so that it needs no other binary built.
#[test]
fn sluice_as_child() {
    child::run_if_child();
}

/// The unit's capabilities: `AmbientCapabilities=`, which must equal
/// `CapabilityBoundingSet=` (`CAP_BPF CAP_PERFMON ...`).
fn unit_capabilities() -> anyhow::Result<Vec<String>> {
    let unit = std::fs::read_to_string(UNIT).context(UNIT)?;
    let value = |key: &str| -> anyhow::Result<Vec<String>> {
        let line = unit
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("no {key} in {UNIT}"))?;
        let mut caps: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        caps.sort();
        Ok(caps)
    };
    let ambient = value("AmbientCapabilities=")?;
    let bounding = value("CapabilityBoundingSet=")?;
    ensure!(
        ambient == bounding,
        "the unit's ambient {ambient:?} and bounding {bounding:?} sets differ"
    );
    ensure!(!ambient.is_empty(), "no capabilities in the unit");
    Ok(ambient)
}

/// `CAP_NET_ADMIN` → `net_admin` (setpriv's spelling), and the capability's bit.
fn cap_bit(cap: &str) -> anyhow::Result<(String, u32)> {
    let name = cap
        .strip_prefix("CAP_")
        .with_context(|| format!("{cap}: not a capability"))?
        .to_ascii_lowercase();
    let bit = match name.as_str() {
        "chown" => 0,
        "net_bind_service" => 10,
        "net_admin" => 12,
        "net_raw" => 13,
        "ipc_lock" => 14,
        "sys_admin" => 21,
        "sys_resource" => 24,
        "perfmon" => 38,
        "bpf" => 39,
        _ => bail!("{cap}: unknown to this test"),
    };
    Ok((name, bit))
}

/// Everything the test creates, removed on drop (also after a failure).
struct World {
    user: String,
    lb: Option<Named>,
    peer: Option<Named>,
    /// Root-owned, 0755: the config file (as /etc/sluice), the binary, the notify socket.
    dir: PathBuf,
    /// The user's, 0750: `RuntimeDirectory=` (state_dir, API socket).
    run: PathBuf,
    /// The user's, 0750: what the unit's `ExecStartPre=` makes (/sys/fs/bpf/sluice).
    pins: PathBuf,
    iface: String,
    daemon: Option<Child>,
}

impl World {
    fn new() -> anyhow::Result<Self> {
        let id = std::process::id() % 100_000;
        let mut w = Self {
            user: format!("slprv{id}"),
            lb: None,
            peer: None,
            // Not under /run, which may be mounted noexec (the binary is copied here).
            dir: PathBuf::from(format!("/var/tmp/sluice-prv-{id}")),
            run: PathBuf::from(format!("/var/tmp/sluice-prv-{id}/run")),
            pins: PathBuf::from(format!("/sys/fs/bpf/sluice-prv-{id}")),
            iface: format!("slprv{id}"),
            daemon: None,
        };
        // A crashed earlier run of the same pid may have left its user.
        let _ = Command::new("userdel").arg(&w.user).output();
        let _ = Command::new("groupdel").arg(&w.user).output();
        run(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            &w.user,
        ]))?;
        w.lb = Some(Named::new(&format!("sl-prv-{id}-lb"))?);
        w.peer = Some(Named::new(&format!("sl-prv-{id}-peer"))?);
        let peer = w.peer()?.name().to_owned();
        let peer_if = format!("{}p", w.iface);
        w.lb()?.exec(&[
            "ip", "link", "add", &w.iface, "type", "veth", "peer", "name", &peer_if, "netns", &peer,
        ])?;
        w.lb()?
            .exec(&["ip", "addr", "add", "10.199.7.1/24", "dev", &w.iface])?;
        w.lb()?.exec(&["ip", "link", "set", &w.iface, "up"])?;
        w.peer()?
            .exec(&["ip", "addr", "add", "10.199.7.2/24", "dev", &peer_if])?;
        w.peer()?.exec(&["ip", "link", "set", &peer_if, "up"])?;

        let _ = std::fs::remove_dir_all(&w.dir);
        std::fs::create_dir_all(&w.dir)?;
        set_mode(&w.dir, 0o755)?;
        // What RuntimeDirectory=sluice (RuntimeDirectoryMode=0750) and the ExecStartPre= lines
        // make, owned by the unit's user.
        let _ = std::fs::remove_dir_all(&w.pins);
        for dir in [&w.run, &w.pins] {
            run(Command::new("install").args([
                "-d",
                "-o",
                &w.user,
                "-g",
                &w.user,
                "-m",
                "0750",
                dir.to_str().unwrap_or_default(),
            ]))?;
        }
        // The binary where the user can run it (the build's directory may be root's alone).
        let exe = w.exe();
        std::fs::copy(std::env::current_exe()?, &exe)?;
        set_mode(&exe, 0o755)?;
        let config = format!(
            "# as /etc/sluice/sluice.toml, for the namespace\n\
             [daemon]\n\
             interface = \"{iface}\"\n\
             state_dir = \"{run}/state\"\n\
             api_socket = \"{run}/sluice.sock\"\n\
             api_group = \"{user}\"\n\
             metrics_listen = \"127.0.0.1:9640\"\n\
             pin_dir = \"{pins}/{iface}\"\n\
             flow_table_size = 4096\n\
             table_capacity = 1024\n\
             \n\
             [[vip]]\n\
             name = \"web\"\n\
             address = \"10.199.7.100\"\n\
             port = 80\n\
             protocol = \"tcp\"\n\
             forwarding = \"dsr\"\n\
             table_size = 251\n\
             [vip.health]\n\
             check = \"tcp\"\n\
             interval_ms = 500\n\
             timeout_ms = 300\n\
             [[vip.backend]]\n\
             address = \"10.199.7.2\"\n",
            iface = w.iface,
            run = w.run.display(),
            user = w.user,
            pins = w.pins.display(),
        );
        std::fs::write(w.config(), config)?;
        set_mode(&w.config(), 0o644)?;
        Ok(w)
    }

    fn lb(&self) -> anyhow::Result<&Named> {
        self.lb.as_ref().context("no lb namespace")
    }

    fn peer(&self) -> anyhow::Result<&Named> {
        self.peer.as_ref().context("no peer namespace")
    }

    fn exe(&self) -> PathBuf {
        self.dir.join("sluice-test")
    }

    fn config(&self) -> PathBuf {
        self.dir.join("sluice.toml")
    }

    fn socket(&self) -> PathBuf {
        self.run.join("sluice.sock")
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// This binary as `sluice ARGS...`, started by `prefix` (setpriv, nsenter).
    fn sluice(&self, prefix: &[String], args: &[&str]) -> Command {
        let (program, rest) = match prefix.split_first() {
            Some((p, rest)) => (p.clone(), rest.to_vec()),
            None => (self.exe().display().to_string(), Vec::new()),
        };
        let mut cmd = Command::new(program);
        cmd.args(rest);
        if !prefix.is_empty() {
            cmd.arg("--").arg(self.exe());
        }
        cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        child::set_args(&mut cmd, args)
            .current_dir("/")
            .stdin(Stdio::null());
        cmd
    }

    /// setpriv to the unit's user with `caps` (setpriv names, e.g. `bpf`) as inheritable,
    /// ambient and bounding sets, no new privileges; `net`: inside the lb namespace.
    fn setpriv(&self, caps: &[String], net: bool) -> anyhow::Result<Vec<String>> {
        let set = std::iter::once("-all".to_owned())
            .chain(caps.iter().map(|c| format!("+{c}")))
            .collect::<Vec<_>>()
            .join(",");
        let mut prefix = Vec::new();
        if net {
            prefix.push("nsenter".to_owned());
            prefix.push(format!("--net=/run/netns/{}", self.lb()?.name()));
        }
        prefix.extend([
            "setpriv".to_owned(),
            format!("--reuid={}", self.user),
            format!("--regid={}", self.user),
            "--init-groups".to_owned(),
            format!("--inh-caps={set}"),
            format!("--ambient-caps={set}"),
            format!("--bounding-set={set}"),
            "--no-new-privs".to_owned(),
        ]);
        Ok(prefix)
    }

    /// `sluice run --config FILE` as the unit runs it, with `$NOTIFY_SOCKET`.
    fn start(&mut self, caps: &[String], notify: &Notify, log: &str) -> anyhow::Result<()> {
        ensure!(self.daemon.is_none(), "a daemon is running already");
        let prefix = self.setpriv(caps, true)?;
        let config = self.config().display().to_string();
        let out = std::fs::File::create(self.log(log))?;
        let child = self
            .sluice(&prefix, &["run", "--config", &config])
            .env("NOTIFY_SOCKET", &notify.path)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .context("starting sluice run through nsenter and setpriv")?;
        self.daemon = Some(child);
        Ok(())
    }

    /// Wait for `READY=1` (within 60 s), failing at once, with its log, if the daemon exits.
    fn ready(&mut self, notify: &Notify, log: &str) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            match notify.expect("READY=1", Duration::from_millis(200)) {
                Ok(mut s) => {
                    seen.append(&mut s);
                    return Ok(seen);
                }
                Err(_) if Instant::now() < deadline => {}
                Err(e) => bail!("{e:#}\n{}", self.read_log(log)),
            }
            if let Some(status) = self.exited(Duration::ZERO)? {
                bail!(
                    "sluice run exited ({status}) before READY=1:\n{}",
                    self.read_log(log)
                );
            }
        }
    }

    fn daemon_pid(&self) -> anyhow::Result<i32> {
        let child = self.daemon.as_ref().context("no daemon")?;
        Ok(i32::try_from(child.id())?)
    }

    fn signal(&self, sig: i32) -> anyhow::Result<()> {
        // SAFETY: kill(2) on our own child's pid, which we have not waited for.
        if unsafe { libc::kill(self.daemon_pid()?, sig) } != 0 {
            bail!("kill: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGTERM, then its exit status (within 30 s).
    fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.signal(libc::SIGTERM)?;
        let mut child = self.daemon.take().context("no daemon")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the daemon did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's exit status if it has exited, within `within`.
    fn exited(&mut self, within: Duration) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + within;
        loop {
            let child = self.daemon.as_mut().context("no daemon")?;
            if let Some(s) = child.try_wait()? {
                self.daemon = None;
                return Ok(Some(s));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn read_log(&self, name: &str) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.log(name)) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Whether the lb interface has an XDP program attached.
    fn attached(&self) -> anyhow::Result<bool> {
        let out = self
            .lb()?
            .exec(&["ip", "-details", "link", "show", "dev", &self.iface])?;
        Ok(out.contains("prog/xdp"))
    }

    fn backends(&self) -> anyhow::Result<Vec<String>> {
        match client::request(&self.socket(), &Request::Config)? {
            Response::Config { toml, .. } => {
                let c = sluice_core::config::parse(&toml, "running")?.config;
                Ok(c.vips
                    .iter()
                    .flat_map(|v| v.backends.iter().map(|b| b.address.to_string()))
                    .collect())
            }
            r => bail!("unexpected answer {r:?}"),
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        // The balancer: detached and unpinned as an operator would, as root.
        if self.config().exists() {
            let config = self.config().display().to_string();
            let _ = self
                .sluice(&[], &["detach", "--config", &config])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.pins);
        self.peer = None;
        self.lb = None;
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = Command::new("userdel").arg(&self.user).output();
        let _ = Command::new("groupdel").arg(&self.user).output();
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The service manager's end of `$NOTIFY_SOCKET`: a datagram socket anyone may send to.
struct Notify {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Notify {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path)?;
        set_mode(&path, 0o777)?;
        Ok(Self { sock, path })
    }

    /// The next message containing `want`, within `within` (others before it are
    /// returned too, for the failure message).
    fn expect(&self, want: &str, within: Duration) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(
                !left.is_zero(),
                "no {want:?} on $NOTIFY_SOCKET within {within:?}; got {seen:?}"
            );
            self.sock.set_read_timeout(Some(left))?;
            let mut buf = [0u8; 512];
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let done = m.lines().any(|l| l == want);
                    seen.push(m);
                    if done {
                        return Ok(seen);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The process's `Uid:`, `NoNewPrivs:` and capability lines (`/proc/PID/status`).
fn proc_status(pid: i32) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect())
}

#[test]
fn the_unit_s_capabilities_are_enough_and_each_is_needed() {
    require_root();
    let _serial = serial();
    if let Err(e) = scenario() {
        panic!("{e:#}");
    }
}

fn scenario() -> anyhow::Result<()> {
    let unit_caps = unit_capabilities()?;
    let mut caps = Vec::new();
    let mut mask = 0u64;
    for c in &unit_caps {
        let (name, bit) = cap_bit(c)?;
        caps.push(name);
        mask |= 1 << bit;
    }
    let mut w = World::new()?;
    let notify = Notify::new(&w.dir)?;

    // Started as the unit starts it: ready once attached and serving.
    w.start(&caps, &notify, "first")?;
    w.ready(&notify, "first")?;
    let pid = w.daemon_pid()?;
    let status = proc_status(pid)?;
    let uid = nix::unistd::User::from_name(&w.user)?
        .context("the test user")?
        .uid
        .as_raw();
    let hex = format!("{mask:016x}");
    for (key, want) in [
        ("CapEff", hex.as_str()),
        ("CapPrm", hex.as_str()),
        ("CapAmb", hex.as_str()),
        ("CapBnd", hex.as_str()),
        ("NoNewPrivs", "1"),
    ] {
        ensure!(
            status.get(key).map(String::as_str) == Some(want),
            "{key}: {:?}, want {want} ({unit_caps:?})",
            status.get(key)
        );
    }
    let uids = status.get("Uid").cloned().unwrap_or_default();
    ensure!(
        uids.split_whitespace().all(|u| u == uid.to_string()),
        "the daemon runs as {uids}, not {uid}"
    );
    ensure!(w.attached()?, "no XDP program on {}", w.iface);
    ensure!(
        w.pins.join(&w.iface).join("link").exists(),
        "the link is not pinned"
    );

    // An edit through the API, by the unprivileged user (a member of daemon.api_group).
    let socket = w.socket().display().to_string();
    let prefix = w.setpriv(&[], false)?;
    let out = w
        .sluice(
            &prefix,
            &[
                "--api-socket",
                &socket,
                "backend",
                "add",
                "--vip",
                "web",
                "--address",
                "10.199.7.3",
            ],
        )
        .output()?;
    ensure!(
        out.status.success(),
        "backend add as {}: {}\n{}",
        w.user,
        String::from_utf8_lossy(&out.stderr),
        w.read_log("first")
    );
    let backends = w.backends()?;
    ensure!(
        backends.contains(&"10.199.7.3".to_owned()),
        "the added backend is not running: {backends:?}"
    );

    // SIGHUP: RELOADING=1, then READY=1 again.
    w.signal(libc::SIGHUP)?;
    let seen = notify.expect("READY=1", Duration::from_secs(30))?;
    ensure!(
        seen.iter().any(|m| m.starts_with("RELOADING=1")),
        "no RELOADING=1 before READY=1: {seen:?}"
    );

    // Stopped: STOPPING=1, a clean exit, the balancer still attached.
    let status = w.stop()?;
    notify.expect("STOPPING=1", Duration::from_secs(5))?;
    ensure!(
        status.success(),
        "the daemon exited {status}:\n{}",
        w.read_log("first")
    );
    ensure!(
        w.attached()?,
        "a stopped daemon must leave the balancer attached"
    );

    // Started again: it adopts the pinned maps, the edit kept.
    w.start(&caps, &notify, "second")?;
    w.ready(&notify, "second")?;
    let log = w.read_log("second");
    ensure!(
        log.contains("adopting the pinned state"),
        "the restart did not adopt the pinned maps:\n{log}"
    );
    let backends = w.backends()?;
    ensure!(
        backends.contains(&"10.199.7.3".to_owned()),
        "the edit was lost across the restart: {backends:?}"
    );
    let status = w.stop()?;
    ensure!(status.success(), "second stop: {status}");

    // None of the four is spare.
    for drop in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != drop).cloned().collect();
        let name = format!("without-{drop}");
        w.start(&fewer, &notify, &name)?;
        match drop.as_str() {
            // Health checks through the forwarding path read raw sockets.
            "net_raw" => {
                w.ready(&notify, &name)?;
                let deadline = Instant::now() + Duration::from_secs(10);
                while !w.read_log(&name).contains("raw sockets") {
                    ensure!(
                        Instant::now() < deadline,
                        "without CAP_NET_RAW, no word of raw sockets:\n{}",
                        w.read_log(&name)
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
                w.stop()?;
            }
            _ => {
                let Some(status) = w.exited(Duration::from_secs(60))? else {
                    bail!(
                        "the daemon started without CAP_{}:\n{}",
                        drop.to_ascii_uppercase(),
                        w.read_log(&name)
                    );
                };
                let log = w.read_log(&name);
                ensure!(
                    !status.success() && log.contains("BPF_PROG_LOAD"),
                    "without CAP_{}: {status}, expected a refused program load:\n{log}",
                    drop.to_ascii_uppercase()
                );
            }
        }
    }
    ensure!(w.attached()?, "the balancer went away");
    drop(w);
    Ok(())
}
