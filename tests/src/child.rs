//! The `sluice` command line in a child process: the test binary re-executed so that it
//! runs only its `sluice_as_child` test, which runs the arguments it finds in [`ARGV`]
//! through `main`'s own code (`lb_userspace::cli::main_with`). Tests need no other binary
//! built, and what they see (exit status, stdout, stderr, the daemon's log) is the real
//! thing.
//!
//! Every test binary that uses it declares
//! `#[test] fn sluice_as_child() { sluice_tests::child::run_if_child() }`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

/// The environment variable carrying the child's command line, one argument a line.
pub const ARGV: &str = "SLUICE_TEST_ARGV";

/// The body of every test binary's `sluice_as_child` test: nothing in a normal test run; in a
/// child started by [`command`] or [`set_args`], runs `sluice` and exits with its status.
pub fn run_if_child() {
    let Some(argv) = std::env::var_os(ARGV) else {
        return;
    };
    let args: Vec<String> = argv
        .to_string_lossy()
        .split('\n')
        .map(str::to_owned)
        .collect();
    std::process::exit(i32::from(lb_userspace::cli::main_with(args)));
}

/// Makes `cmd` (this test binary, possibly behind a prefix such as `setpriv ... --`) run
/// `sluice ARGS...`: the harness arguments that select the child's test, and [`ARGV`].
/// Call it after any `env_clear`.
pub fn set_args<'c>(cmd: &'c mut Command, args: &[&str]) -> &'c mut Command {
    let argv: Vec<&str> = std::iter::once("sluice")
        .chain(args.iter().copied())
        .collect();
    cmd.args([
        "--exact",
        "sluice_as_child",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(ARGV, argv.join("\n"))
}

/// `sluice ARGS...` as a child process of this test binary, ready to run.
pub fn command(args: &[&str]) -> std::io::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    set_args(&mut cmd, args);
    Ok(cmd)
}

/// `sluice --netns NS run --config CONFIG` as a child process, its stderr (the log) in
/// `log`, not waited for.
pub fn spawn_run(ns: &str, config: &Path, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    let c = config.to_str().context("the config path")?;
    Ok(command(&["--netns", ns, "run", "--config", c])?
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()?)
}

/// A running `sluice run` child; stopped when dropped (a failed test): SIGTERM, then
/// SIGKILL after 20 s.
pub struct Daemon {
    proc: Child,
    log: PathBuf,
}

impl Daemon {
    /// [`spawn_run`], once `ready()` (its API answers): 60 s at most.
    pub fn start(
        ns: &str,
        config: &Path,
        log: PathBuf,
        ready: impl Fn() -> bool,
    ) -> anyhow::Result<Self> {
        let proc = spawn_run(ns, config, &log)?;
        let mut d = Self { proc, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = d.proc.try_wait()? {
                bail!("sluice run exited ({status}):\n{}", d.log());
            }
            if ready() {
                return Ok(d);
            }
            ensure!(
                Instant::now() < deadline,
                "the daemon's API did not answer within 60 s:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    pub fn signal(&self, sig: i32) -> anyhow::Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        if unsafe { libc::kill(self.pid() as i32, sig) } != 0 {
            bail!("kill: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.proc.try_wait(), Ok(None))
    }

    /// SIGTERM, and wait for the exit (30 s at most): its status and log.
    pub fn stop(mut self) -> anyhow::Result<(ExitStatus, String)> {
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.proc.try_wait()? {
                return Ok((status, self.log()));
            }
            ensure!(
                Instant::now() < deadline,
                "the daemon did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.proc.kill();
            let _ = self.proc.wait();
        }
    }
}
