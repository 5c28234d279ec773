//! Load reports (inference-aware balancing, `[vip.load]`): one task per backend of each
//! VIP with a load section reads the backend's report every `interval_ms` (a Prometheus
//! page over HTTP, or an HAProxy agent-check line over TCP), bounded by `timeout_ms`, and
//! stores it on the [`Board`].
//!
//! Who owns the readings: the [`Readers`] on the daemon. Its board is shared with the
//! reader tasks, which write it directly (under a short `std` mutex, never across an
//! await): the daemon's loop is never woken nor blocked by a read. The loop takes what it
//! needs when it needs it: [`Readers::fill`] for the status (and so `sluice backend list`
//! and the metrics), and [`Readers::readings`] for a weight policy (not applied yet).

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sluice_core::load::{Agent, Reading, Report, agent, prom};
use tokio::{io::AsyncReadExt as _, net::TcpStream, task::JoinHandle};

use crate::{
    config::{Config, LoadConfig, LoadSource},
    dataplane::VipIdent,
    state::{LoadStatus, Status, ident},
};

/// The largest metrics page read, in bytes (a vLLM page with its histograms is ~100 KiB).
pub const MAX_PAGE: usize = 4 << 20;
/// The `User-Agent` of the requests.
const USER_AGENT: &str = "sluice-load";

/// What is known of one backend's load.
#[derive(Clone, Debug, Default)]
pub struct Slot {
    /// The last good report and when it was read.
    pub last: Option<(Report, Instant)>,
    /// The last read's failure, if it failed (cleared by a good read).
    pub error: Option<String>,
    /// Failed reads since the reader started.
    pub errors: u64,
}

/// The readings of every (VIP, backend) with a load section.
pub type Board = Arc<Mutex<BTreeMap<(VipIdent, IpAddr), Slot>>>;

/// The reader tasks and their board.
#[derive(Default)]
pub struct Readers {
    board: Board,
    running: Vec<JoinHandle<()>>,
}

impl Readers {
    /// (Re)start one reader per backend of each VIP with `[vip.load]` (after every commit:
    /// settings or backends may have changed). Readings of backends that stay are kept;
    /// the others are dropped.
    pub fn restart(&mut self, config: &Config) {
        for t in self.running.drain(..) {
            t.abort();
        }
        let mut wanted = Vec::new();
        for v in &config.vips {
            let Some(load) = &v.load else { continue };
            let id = ident(v);
            for b in &v.backends {
                wanted.push((id, b.address));
                self.running
                    .push(spawn(id, b.address, load.clone(), Arc::clone(&self.board)));
            }
        }
        if let Ok(mut board) = self.board.lock() {
            board.retain(|k, _| wanted.contains(k));
        }
    }

    /// Each reading as the weight policy takes it.
    pub fn readings(&self) -> BTreeMap<(VipIdent, IpAddr), Reading> {
        let Ok(board) = self.board.lock() else {
            return BTreeMap::new();
        };
        board
            .iter()
            .map(|(k, s)| {
                let r = match &s.last {
                    None => Reading::Never,
                    Some((report, at)) => Reading::Report {
                        report: report.clone(),
                        age: at.elapsed(),
                        error: s.error.clone(),
                    },
                };
                (*k, r)
            })
            .collect()
    }

    /// Fill in the `load` of each backend of `status` whose VIP has `[vip.load]`.
    pub fn fill(&self, status: &mut Status, config: &Config) {
        let Ok(board) = self.board.lock() else { return };
        for vs in &mut status.vips {
            let Some(v) = config.vips.iter().find(|v| v.name == vs.name) else {
                continue;
            };
            let Some(load) = &v.load else { continue };
            let id = ident(v);
            for b in &mut vs.backends {
                let slot = board.get(&(id, b.address)).cloned().unwrap_or_default();
                b.load = Some(load_status(&slot, load));
            }
        }
    }

    /// The reading of `backend` of `vip` as the status shows it.
    pub fn status_of(&self, vip: VipIdent, backend: IpAddr, load: &LoadConfig) -> LoadStatus {
        let slot = self
            .board
            .lock()
            .ok()
            .and_then(|b| b.get(&(vip, backend)).cloned())
            .unwrap_or_default();
        load_status(&slot, load)
    }

    /// The board, for tests.
    pub fn board(&self) -> &Board {
        &self.board
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        for t in &self.running {
            t.abort();
        }
    }
}

fn load_status(slot: &Slot, load: &LoadConfig) -> LoadStatus {
    let age = slot.last.as_ref().map(|(_, at)| at.elapsed());
    let report = slot.last.as_ref().map(|(r, _)| r);
    LoadStatus {
        waiting: report.and_then(|r| r.waiting),
        running: report.and_then(|r| r.running),
        kv_cache: report.and_then(|r| r.kv_cache),
        agent: report.and_then(|r| r.agent.as_ref()).map(agent_text),
        age_ms: age.map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
        stale: age.is_none_or(|a| a > Duration::from_millis(u64::from(load.stale_after_ms))),
        error: slot.error.clone(),
        errors: slot.errors,
    }
}

/// An agent's answer as the agent would have written it.
pub fn agent_text(a: &Agent) -> String {
    match a {
        Agent::WeightPercent(p) => format!("{p}%"),
        Agent::Weight(w) => format!("weight:{w}"),
        Agent::Drain => "drain".to_owned(),
        Agent::Maint => "maint".to_owned(),
        Agent::Ready => "ready".to_owned(),
        Agent::Down(why) if why.is_empty() => "down".to_owned(),
        Agent::Down(why) => format!("down#{why}"),
    }
}

/// The reader of one backend: a read every interval (the first after a random part of
/// it, so that backends are not read in lock-step), each bounded by the timeout.
fn spawn(vip: VipIdent, backend: IpAddr, spec: LoadConfig, board: Board) -> JoinHandle<()> {
    tokio::spawn(async move {
        let interval = Duration::from_millis(u64::from(spec.interval_ms));
        let timeout = Duration::from_millis(u64::from(spec.timeout_ms));
        tokio::time::sleep(jitter(&vip, backend, interval)).await;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let outcome = match tokio::time::timeout(timeout, read(backend, &spec)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no report within {} ms", spec.timeout_ms)),
            };
            let Ok(mut board) = board.lock() else { return };
            let slot = board.entry((vip, backend)).or_default();
            match outcome {
                Ok(report) => {
                    slot.last = Some((report, Instant::now()));
                    slot.error = None;
                }
                Err(e) => {
                    slot.error = Some(e);
                    slot.errors += 1;
                }
            }
        }
    })
}

fn jitter(vip: &VipIdent, backend: IpAddr, interval: Duration) -> Duration {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(format!("{vip}{backend}").as_bytes());
    let ms = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(h.finish() % ms)
}

/// One read of `backend`'s report.
pub async fn read(backend: IpAddr, spec: &LoadConfig) -> Result<Report, String> {
    match spec.source {
        LoadSource::Prometheus => {
            let answer =
                crate::health::get(backend, spec.port, &spec.path, USER_AGENT, Some(MAX_PAGE))
                    .await
                    .map_err(|e| format!("GET {}: {e}", spec.path))?;
            page_report(&answer, spec)
        }
        LoadSource::Agent => {
            let line = agent_line(backend, spec.port).await?;
            let a = agent::parse(&line).map_err(|e| format!("agent: {e}"))?;
            Ok(Report {
                agent: a,
                ..Report::default()
            })
        }
    }
}

/// The report a Prometheus page `answer` gives with `spec`'s selectors (a 2xx status and a
/// UTF-8 page in the text format), or why not.
pub fn page_report(answer: &crate::health::Answer, spec: &LoadConfig) -> Result<Report, String> {
    if !(200..300).contains(&answer.status) {
        return Err(format!("GET {}: status {}", spec.path, answer.status));
    }
    let body = answer.body.clone().unwrap_or_default();
    let text = std::str::from_utf8(&body)
        .map_err(|e| format!("GET {}: the page is not UTF-8 ({e})", spec.path))?;
    prom::report(text, &spec.selectors()).map_err(|e| format!("{}: {e}", spec.path))
}

/// Connect to the agent and read its line (up to a newline, the end of the stream or
/// [`agent::MAX_LINE`] bytes).
async fn agent_line(backend: IpAddr, port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect((backend, port))
        .await
        .map_err(|e| format!("agent {backend}:{port}: {e}"))?;
    read_agent_line(&mut s)
        .await
        .map_err(|e| format!("agent {backend}:{port}: {e}"))
}

/// The agent's line from `s`: up to a newline, the end of the stream or
/// [`agent::MAX_LINE`] bytes (public for the parser fuzzer).
pub async fn read_agent_line(
    s: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<String, String> {
    let mut buf = vec![0u8; agent::MAX_LINE];
    let mut len = 0;
    while len < buf.len() {
        let n = s.read(&mut buf[len..]).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].contains(&b'\n') {
            break;
        }
    }
    let line = buf[..len].split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8(line.to_vec()).map_err(|_| "the line is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    fn spec(source: LoadSource, port: u16) -> LoadConfig {
        LoadConfig {
            source,
            port,
            path: "/metrics".to_owned(),
            interval_ms: 100,
            timeout_ms: 100,
            stale_after_ms: 300,
            preset: Some(sluice_core::load::presets::Preset::Vllm),
            waiting: None,
            running: None,
            kv_cache: None,
            queue_limit: 5,
            kv_limit_percent: 80,
            in_flight: crate::config::InFlight::Reported,
        }
    }

    /// A listener answering every connection with `answer`.
    async fn serve(answer: &'static [u8]) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut req = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_millis(50), s.read(&mut req)).await;
                let _ = s.write_all(answer).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn reads_a_metrics_page_and_an_agent_line() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        let body = "vllm:num_requests_waiting{engine=\"0\"} 3\nvllm:num_requests_waiting{engine=\"1\"} 4\nvllm:kv_cache_usage_perc 0.5\n";
        let page: &'static str = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        let port = serve(page.as_bytes()).await;
        let r = read(lo, &spec(LoadSource::Prometheus, port)).await.unwrap();
        assert_eq!((r.waiting, r.kv_cache), (Some(7.0), Some(0.5)));

        let port = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbad\n").await;
        let e = read(lo, &spec(LoadSource::Prometheus, port))
            .await
            .unwrap_err();
        assert!(e.contains("line 1"), "{e}");

        let port = serve(b"up 75% # warm\n").await;
        let r = read(lo, &spec(LoadSource::Agent, port)).await.unwrap();
        assert_eq!(r.agent, Some(Agent::WeightPercent(75)));
        let port = serve(b"").await;
        assert!(
            read(lo, &spec(LoadSource::Agent, port))
                .await
                .unwrap_err()
                .contains("empty")
        );
    }

    #[test]
    fn status_says_stale_and_error() {
        let load = spec(LoadSource::Prometheus, 1);
        let never = load_status(&Slot::default(), &load);
        assert!(never.stale && never.age_ms.is_none());
        let slot = Slot {
            last: Some((
                Report {
                    waiting: Some(2.0),
                    ..Report::default()
                },
                Instant::now(),
            )),
            error: Some("boom".to_owned()),
            errors: 3,
        };
        let s = load_status(&slot, &load);
        assert_eq!((s.waiting, s.stale, s.errors), (Some(2.0), false, 3));
        assert_eq!(s.error.as_deref(), Some("boom"));
        assert_eq!(agent_text(&Agent::Down("x y".to_owned())), "down#x y");
    }
}
