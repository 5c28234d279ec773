//! `kind = "exec"`: user commands create and destroy backends (the lab starts and stops
//! backend namespaces with it). `create` prints the new backend's address on the first
//! line of its standard output, optionally followed by its MAC; `destroy` gets the address
//! (and MAC) as extra arguments and in the environment (`SLUICE_BACKEND`, `SLUICE_MAC`,
//! and `SLUICE_VIP` for both). Each run has a timeout (the process is killed at it) and is
//! retried; every failure is logged with the exit status and standard error.

use std::{collections::BTreeSet, net::IpAddr, sync::Arc, sync::Mutex, time::Duration};

use tokio::process::Command;
use tracing::warn;

use super::{Call, Candidate, Provider, ProviderError};

#[derive(Debug)]
pub struct Exec {
    vip: String,
    create: Vec<String>,
    destroy: Vec<String>,
    timeout: Duration,
    retries: u32,
    /// Addresses this provider created (only those may be scaled in).
    made: Arc<Mutex<BTreeSet<IpAddr>>>,
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
            made: Arc::default(),
        }
    }
}

/// Run `argv` once: its standard output, or why not.
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
        .kill_on_drop(true);
    let out = match tokio::time::timeout(timeout, cmd.output()).await {
        Err(_) => return Err(format!("killed after {} ms", timeout.as_millis())),
        Ok(Err(e)) => return Err(format!("cannot run {prog:?}: {e}")),
        Ok(Ok(o)) => o,
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{} (stderr: {:?})",
            out.status,
            err.trim().chars().take(400).collect::<String>()
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
                warn!(vip, command = ?argv, attempt = attempt + 1, of = retries + 1, error = %e, "autoscaler: {what} command failed");
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
        let made = Arc::clone(&self.made);
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
            made.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(c.address);
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
        let made = Arc::clone(&self.made);
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
            made.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&c.address);
            Ok(())
        })
    }

    fn owns(&self, address: IpAddr) -> bool {
        self.made
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&address)
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
        assert!(p.owns(c.address));
        // Returned again while it is a backend: refused.
        assert!(p.acquire(&[c.address]).await.is_err());
        p.release(c.clone()).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "web 10.0.0.7 10.0.0.7 02:00:00:00:00:07\n"
        );
        assert!(!p.owns(c.address));

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
