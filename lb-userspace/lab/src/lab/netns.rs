//! Named network namespaces (`ip netns`), entered with setns(2): per thread for closures
//! ([`Netns::run`]), in the child for commands ([`Netns::command`]).
//!
//! Unlike `ip netns exec`, neither changes the mount namespace: pins in /sys/fs/bpf land in
//! the host's bpffs and outlive the command. The flip side: /sys/class/net still shows the
//! host's interfaces, so commands should ask `ip` (netlink), not sysfs. Every command is an
//! argument vector, never a shell script.

use std::{
    ffi::OsStr,
    fs::File,
    io::Write as _,
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::PathBuf,
    process::{Command, Stdio},
};

use super::LabError;

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// A named network namespace. Plain data: creating and deleting are explicit
/// ([`Netns::create`], [`Netns::delete`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// The namespace called `name` (which may or may not exist).
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
        }
    }

    /// `ip netns add NAME`, then bring its `lo` up. Fails if it exists.
    pub fn create(name: &str) -> Result<Self, LabError> {
        let ns = Self::named(name);
        if ns.exists() {
            return Err(LabError::Exists(format!("network namespace {name}")));
        }
        run_cmd(Command::new("ip").args(["netns", "add", name]), None)?;
        ns.ip(&[&["link", "set", "lo", "up"]])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    fn open(&self) -> Result<File, LabError> {
        File::open(self.path()).map_err(|source| LabError::Io {
            what: format!("opening network namespace {}", self.name),
            source,
        })
    }

    /// Run `f` with the calling thread inside this namespace, then move it back (also if
    /// `f` panics). Sockets `f` creates stay in this namespace; threads it spawns start in
    /// it.
    ///
    /// ```no_run
    /// # fn f(lab: &sluice_lab::lab::Lab) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::net::TcpStream;
    /// let s = lab.client(0).run(|| TcpStream::connect((lab.vip4(), 80)))??;
    /// # Ok(()) }
    /// ```
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, LabError> {
        let home = File::open("/proc/thread-self/ns/net").map_err(|source| LabError::Io {
            what: "opening the thread's own network namespace".into(),
            source,
        })?;
        let target = self.open()?;
        setns(&target).map_err(|source| LabError::Io {
            what: format!("entering network namespace {}", self.name),
            source,
        })?;
        /// Moves the thread back home when dropped (also during unwinding).
        struct Home(File);
        impl Drop for Home {
            fn drop(&mut self) {
                if let Err(e) = setns(&self.0) {
                    // Carrying on would run everything else this thread does in the lab.
                    eprintln!("fatal: cannot return from a lab network namespace: {e}");
                    std::process::abort();
                }
            }
        }
        let _home = Home(home);
        Ok(f())
    }

    /// A command that runs inside this namespace (entered in the child before `exec`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Result<Command, LabError> {
        let fd = self.open()?;
        let mut cmd = Command::new(program);
        // SAFETY: the closure only makes the setns(2) system call (async-signal-safe) on
        // a descriptor it owns, and builds an io::Error from errno without allocating.
        unsafe {
            cmd.pre_exec(move || setns(&fd));
        }
        Ok(cmd)
    }

    /// Run `argv` inside this namespace; its stdout, or an error with its stderr.
    pub fn exec(&self, argv: &[&str]) -> Result<String, LabError> {
        let (program, args) = argv.split_first().ok_or_else(|| LabError::Command {
            command: String::new(),
            message: "empty command".into(),
        })?;
        let mut cmd = self.command(program)?;
        cmd.args(args);
        run_cmd(&mut cmd, None).map_err(|e| e.in_ns(&self.name))
    }

    /// Run `ip ARGS…` inside this namespace for each argument list, in order, stopping at
    /// the first that fails.
    pub fn ip(&self, commands: &[&[&str]]) -> Result<(), LabError> {
        for args in commands {
            let mut cmd = self.command("ip")?;
            cmd.args(*args);
            run_cmd(&mut cmd, None).map_err(|e| e.in_ns(&self.name))?;
        }
        Ok(())
    }

    /// Write `value` to the namespace's sysctl `key` (`net.ipv4.ip_forward`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        // /proc/sys/net resolves to the network namespace of the opening thread.
        self.run(|| std::fs::write(&path, value))?
            .map_err(|source| LabError::Io {
                what: format!("{}: sysctl {key}={value}", self.name),
                source,
            })
    }

    /// The processes whose network namespace this is (as `ip netns pids`), never this
    /// process itself.
    pub fn pids(&self) -> Vec<u32> {
        let Ok(target) = std::fs::metadata(self.path()) else {
            return Vec::new();
        };
        let me = std::process::id();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != me)
            .filter(|pid| {
                std::fs::metadata(format!("/proc/{pid}/ns/net"))
                    .is_ok_and(|m| m.ino() == target.ino() && m.dev() == target.dev())
            })
            .collect();
        pids.sort_unstable();
        pids
    }

    /// `ip netns del NAME`; nothing to do if it does not exist.
    pub fn delete(&self) -> Result<(), LabError> {
        if !self.exists() {
            return Ok(());
        }
        run_cmd(Command::new("ip").args(["netns", "del", &self.name]), None)?;
        Ok(())
    }
}

/// The names of every namespace in /run/netns.
pub fn list() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

fn setns(f: &File) -> std::io::Result<()> {
    // Affects only the calling thread.
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// Run a command to completion: its stdout, or an error with its stderr.
pub(super) fn run_cmd(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<String, LabError> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    tracing::debug!(command = %shown, "lab");
    let err = |message: String| LabError::Command {
        command: shown.clone(),
        message,
    };
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| err(e.to_string()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(err(format!("{}: {}", out.status, stderr.trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
