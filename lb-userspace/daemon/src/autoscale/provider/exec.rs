//! `kind = "exec"`: user commands create and destroy backends (the lab starts and stops
//! backend namespaces with it). Each run has a timeout (the process is killed at it) and is
//! retried; every failure is logged with the exit status and standard error.
//!
//! **The contract for the commands:**
//!
//! - `create` prints the new backend's address on the **first line** of its standard
//!   output, optionally followed by its MAC (`10.0.0.7` or `10.0.0.7 02:00:00:00:00:07`),
//!   and exits 0. Later lines are ignored. sluice waits for the command to *exit*, not for
//!   its standard output to close: a server it leaves running in the background may keep
//!   the inherited stdout/stderr open (what it writes there after the exit is not read).
//! - `destroy` gets the address (and MAC) as extra arguments and in the environment
//!   (`SLUICE_BACKEND`, `SLUICE_MAC`); both get `SLUICE_VIP`. It exits 0 once the backend
//!   is gone; a failure is retried, then counted, and the backend stays recorded in
//!   `autoscale.json` and is destroyed again at the next daemon start.
//! - Both may run again for the same backend after a daemon restart, so `destroy` should
//!   succeed for a backend that is already gone.
//!
//! Which backends were created is the driver's record (persisted across restarts), not
//! this provider's: `owns` is false here.

use std::{
    net::IpAddr,
    process::ExitStatus,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _},
    process::Command,
};
use tracing::warn;

use super::{Call, Candidate, Provider, ProviderError};

#[derive(Debug)]
pub struct Exec {
    vip: String,
    create: Vec<String>,
    destroy: Vec<String>,
    timeout: Duration,
    retries: u32,
}

impl Exec {
    pub fn new(
        vip: &str,
        create: Vec<String>,
        destroy: Vec<String>,
        timeout_ms: u32,
        retries: u32,
    ) -> Self {
        Self {
            vip: vip.to_owned(),
            create,
            destroy,
            timeout: Duration::from_millis(u64::from(timeout_ms)),
            retries,
        }
    }
}

/// How long, after the command exited, its output pipes may take to reach their end (a
/// background process that inherited them keeps them open: then what was read counts).
const AFTER_EXIT: Duration = Duration::from_millis(200);
/// Output kept per stream (the first line is what matters; stderr goes into errors).
const KEEP_OUTPUT: usize = 16 * 1024;

/// Read `r` into `buf` until its end or [`KEEP_OUTPUT`] bytes.
async fn collect(mut r: impl AsyncRead + Unpin, buf: Arc<Mutex<Vec<u8>>>) {
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut b = buf.lock().unwrap_or_else(PoisonError::into_inner);
                let room = KEEP_OUTPUT.saturating_sub(b.len());
                b.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

/// Run `argv` once and wait for it to exit (not for its output to close): its standard
/// output, or why not.
async fn run_once(
    argv: &[String],
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<String, String> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {prog:?}: {e}"))?;
    let (out, err) = (Arc::<Mutex<Vec<u8>>>::default(), Arc::default());
    let readers = [
        child
            .stdout
            .take()
            .map(|r| tokio::spawn(collect(r, Arc::clone(&out)))),
        child
            .stderr
            .take()
            .map(|r| tokio::spawn(collect(r, Arc::clone(&err)))),
    ];
    let status: ExitStatus = match tokio::time::timeout(timeout, child.wait()).await {
        Err(_) => {
            // Dropping `child` kills it (kill_on_drop); say so only once it is dead.
            let _ = child.kill().await;
            for r in readers.into_iter().flatten() {
                r.abort();
            }
            return Err(format!("killed after {} ms", timeout.as_millis()));
        }
        Ok(Err(e)) => return Err(format!("waiting for {prog:?}: {e}")),
        Ok(Ok(s)) => s,
    };
    for r in readers.into_iter().flatten() {
        let abort = r.abort_handle();
        if tokio::time::timeout(AFTER_EXIT, r).await.is_err() {
            abort.abort();
        }
    }
    let text = |b: &Arc<Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&b.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    };
    if status.success() {
        Ok(text(&out))
    } else {
        Err(format!(
            "{status} (stderr: {:?})",
            text(&err).trim().chars().take(400).collect::<String>()
        ))
    }
}

/// Run with retries; the last error names every attempt's outcome.
async fn run(
    what: &str,
    vip: &str,
    argv: &[String],
    env: &[(&str, String)],
    timeout: Duration,
    retries: u32,
) -> Result<String, ProviderError> {
    let mut errors = Vec::new();
    for attempt in 0..=retries {
        match run_once(argv, env, timeout).await {
            Ok(out) => return Ok(out),
            Err(e) => {
                warn!(vip, command = %argv.join(" "), attempt = attempt + 1, of = retries + 1, error = %e, "autoscaler: {what} command failed");
                errors.push(e);
            }
        }
    }
    Err(ProviderError::Command(format!(
        "{what} {argv:?} failed {} time(s): {}",
        errors.len(),
        errors.join("; ")
    )))
}

/// The first line of `create`'s output: `address [mac]`.
pub fn parse_created(out: &str) -> Result<Candidate, String> {
    let line = out.lines().next().unwrap_or("").trim();
    let mut f = line.split_whitespace();
    let addr = f
        .next()
        .ok_or("the create command printed nothing (expected \"<address> [<mac>]\")")?;
    let address: IpAddr = addr.parse().map_err(|_| {
        format!("the create command printed {line:?}: {addr:?} is not an IP address")
    })?;
    let mac = match f.next() {
        None => None,
        Some(m) => Some(
            crate::config::parse_mac(m)
                .map_err(|e| format!("the create command printed {line:?}: {e}"))?,
        ),
    };
    Ok(Candidate { address, mac })
}

impl Provider for Exec {
    fn acquire(&self, in_use: &[IpAddr]) -> Call<Candidate> {
        let (vip, argv, timeout, retries) = (
            self.vip.clone(),
            self.create.clone(),
            self.timeout,
            self.retries,
        );
        let in_use = in_use.to_vec();
        Box::pin(async move {
            let env = [("SLUICE_VIP", vip.clone())];
            let out = run("create", &vip, &argv, &env, timeout, retries).await?;
            let c = parse_created(&out).map_err(ProviderError::Command)?;
            if in_use.contains(&c.address) {
                return Err(ProviderError::Command(format!(
                    "the create command returned {}, which is already a backend of the VIP",
                    c.address
                )));
            }
            Ok(c)
        })
    }

    fn release(&self, c: Candidate) -> Call<()> {
        let (vip, mut argv, timeout, retries) = (
            self.vip.clone(),
            self.destroy.clone(),
            self.timeout,
            self.retries,
        );
        Box::pin(async move {
            let mac = c.mac.as_ref().map(crate::config::format_mac);
            argv.push(c.address.to_string());
            argv.extend(mac.clone());
            let env = [
                ("SLUICE_VIP", vip.clone()),
                ("SLUICE_BACKEND", c.address.to_string()),
                ("SLUICE_MAC", mac.unwrap_or_default()),
            ];
            run("destroy", &vip, &argv, &env, timeout, retries).await?;
            Ok(())
        })
    }

    /// Nothing is ours by configuration: the driver records what `create` made.
    fn owns(&self, _address: IpAddr) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            script.to_owned(),
            "sh".to_owned(),
        ]
    }

    #[tokio::test]
    async fn create_destroy_timeout_and_retries() {
        let dir = std::env::temp_dir().join(format!("sluice-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let p = Exec::new(
            "web",
            sh("echo \"10.0.0.7 02:00:00:00:00:07\"; echo ignored"),
            sh(&format!(
                "echo \"$SLUICE_VIP $SLUICE_BACKEND $1 $2\" >> {}",
                log.display()
            )),
            2000,
            0,
        );
        let c = p.acquire(&[]).await.unwrap();
        assert_eq!(c.address, IpAddr::from([10, 0, 0, 7]));
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 7]));
        // Returned again while it is a backend: refused.
        assert!(p.acquire(&[c.address]).await.is_err());
        p.release(c.clone()).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "web 10.0.0.7 10.0.0.7 02:00:00:00:00:07\n"
        );
        assert!(!p.owns(c.address), "ownership is the driver's record");

        // A failing command is retried, and the error says how often and why.
        let count = dir.join("count");
        let failing = Exec::new(
            "web",
            sh(&format!(
                "echo x >> {}; echo nope >&2; exit 3",
                count.display()
            )),
            sh("true"),
            2000,
            2,
        );
        let e = failing.acquire(&[]).await.unwrap_err().to_string();
        assert!(
            e.contains("failed 3 time(s)") && e.contains("nope") && e.contains("exit status: 3"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 3);
        // A hanging command is killed at the timeout.
        let slow = Exec::new("web", sh("sleep 5"), sh("true"), 200, 0);
        let t = std::time::Instant::now();
        let e = slow.acquire(&[]).await.unwrap_err().to_string();
        assert!(e.contains("killed after 200 ms"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
        // A create that leaves a background process holding its stdout (and stderr) open
        // is done when it exits: its first line counts, the process is not waited for.
        let t = std::time::Instant::now();
        let bg = Exec::new(
            "web",
            sh("echo 10.0.0.8; sleep 5 & echo later; exit 0"),
            sh("true"),
            3000,
            0,
        );
        let c = bg.acquire(&[]).await.unwrap();
        assert_eq!(c.address, IpAddr::from([10, 0, 0, 8]));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // Garbage output.
        let bad = Exec::new("web", sh("echo hello"), sh("true"), 2000, 0);
        assert!(
            bad.acquire(&[])
                .await
                .unwrap_err()
                .to_string()
                .contains("not an IP address")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
