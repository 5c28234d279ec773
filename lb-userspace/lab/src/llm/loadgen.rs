//! The load generator: a seeded, replayable trace of completions with heavy-tailed prompt
//! and output lengths, run by concurrent streaming clients from a lab client's namespace.
//!
//! - Lengths are log-normal: `median × e^(sigma × z)`, `z` standard normal (Box–Muller on
//!   a SplitMix64 stream), rounded and clamped to `[min, max]`. Sigma 1 gives a p99 about
//!   10× the median.
//! - Arrivals (open loop): Poisson, exponential gaps of mean `1 / rate`. Latencies of an
//!   open-loop run count from the request's scheduled time, so a backlog on the client
//!   side shows as latency (no coordinated omission).
//! - Closed loop: `concurrency` clients, each sends its next request when the last ended.
//! - Each client keeps its connection for `requests_per_conn` requests (0: all), then
//!   opens a new one; a failed request closes its connection.
//!
//! The same seed gives the same trace, so it can be replayed against different balancer
//! policies; which requests go to which client depends on timing.

use std::{
    fmt,
    net::SocketAddr,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use super::client::{Client, Completion};
use crate::lab::Node;

/// A log-normal length distribution, clamped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogNormal {
    pub median: f64,
    pub sigma: f64,
    pub min: u32,
    pub max: u32,
}

/// What trace to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceSpec {
    pub seed: u64,
    pub requests: usize,
    /// Prompt tokens. Default: median 512, sigma 1, 16..=8192.
    pub prompt: LogNormal,
    /// Output tokens (`max_tokens`). Default: median 128, sigma 0.8, 4..=1024.
    pub output: LogNormal,
    /// Open-loop arrival rate, requests/s (`None`: all at time 0, for closed loop).
    pub rate: Option<f64>,
}

impl Default for TraceSpec {
    fn default() -> Self {
        Self {
            seed: 1,
            requests: 100,
            prompt: LogNormal {
                median: 512.0,
                sigma: 1.0,
                min: 16,
                max: 8192,
            },
            output: LogNormal {
                median: 128.0,
                sigma: 0.8,
                min: 4,
                max: 1024,
            },
            rate: None,
        }
    }
}

/// One request of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRequest {
    /// Scheduled send time from the start (open loop), µs.
    pub at_us: u64,
    pub prompt_tokens: u32,
    pub max_tokens: u32,
}

/// A generated trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    pub requests: Vec<TraceRequest>,
}

/// SplitMix64 (Steele, Lea, Flood 2014).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn log_normal(&mut self, d: &LogNormal) -> u32 {
        let v = (d.median * (d.sigma * self.normal()).exp()).round();
        (v.clamp(f64::from(d.min), f64::from(d.max))) as u32
    }
}

impl Trace {
    /// The trace `spec` describes (the same for the same spec).
    pub fn generate(spec: &TraceSpec) -> Self {
        let mut rng = SplitMix64::new(spec.seed);
        let mut at = 0.0f64;
        let requests = (0..spec.requests)
            .map(|_| {
                let prompt_tokens = rng.log_normal(&spec.prompt);
                let max_tokens = rng.log_normal(&spec.output);
                if let Some(rate) = spec.rate.filter(|r| *r > 0.0) {
                    at += -rng.unit().ln() / rate * 1e6;
                }
                TraceRequest {
                    at_us: at as u64,
                    prompt_tokens,
                    max_tokens,
                }
            })
            .collect();
        Self { requests }
    }
}

/// Conversations ([`Sessions`]): each one a keep-alive connection whose turns are sent
/// back to back (after `think`), each turn's prompt holding the conversation so far, as a
/// chat client or an agent resends its context.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionSpec {
    pub seed: u64,
    pub sessions: usize,
    /// Poisson arrivals of new conversations, per second.
    pub rate: f64,
    /// Turns per conversation (at least 1).
    pub turns: LogNormal,
    /// The first prompt: system prompt and any document.
    pub context: LogNormal,
    /// What the user adds each turn.
    pub user: LogNormal,
    /// Output tokens of each turn (`max_tokens`).
    pub output: LogNormal,
    /// Between a response's end and the next turn.
    pub think: Duration,
    /// Prompts are cut to this many tokens (the model's context).
    pub max_context: u32,
}

/// One conversation: when it starts and its turns (their `at_us` is unused: a turn is sent
/// when the previous one ended, plus the think time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub at_us: u64,
    pub turns: Vec<TraceRequest>,
}

/// A generated set of conversations, by start time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sessions {
    pub sessions: Vec<Session>,
}

impl Sessions {
    /// The conversations `spec` describes (the same for the same spec).
    pub fn generate(spec: &SessionSpec) -> Self {
        let mut rng = SplitMix64::new(spec.seed);
        let mut at = 0.0f64;
        let sessions = (0..spec.sessions)
            .map(|_| {
                if spec.rate > 0.0 {
                    at += -rng.unit().ln() / spec.rate * 1e6;
                }
                let turns = rng.log_normal(&spec.turns).max(1);
                let mut context = u64::from(rng.log_normal(&spec.context));
                let turns = (0..turns)
                    .map(|_| {
                        context += u64::from(rng.log_normal(&spec.user));
                        let max_tokens = rng.log_normal(&spec.output);
                        let prompt = context.min(u64::from(spec.max_context.max(1)));
                        context += u64::from(max_tokens);
                        TraceRequest {
                            at_us: 0,
                            prompt_tokens: u32::try_from(prompt).unwrap_or(u32::MAX),
                            max_tokens,
                        }
                    })
                    .collect();
                Session {
                    at_us: at as u64,
                    turns,
                }
            })
            .collect();
        Self { sessions }
    }

    /// The number of requests (turns) of all conversations.
    pub fn requests(&self) -> usize {
        self.sessions.iter().map(|s| s.turns.len()).sum()
    }

    /// Each session's index of its first request in the flat numbering (session order,
    /// then turn order).
    pub fn offsets(&self) -> Vec<usize> {
        let mut next = 0;
        self.sessions
            .iter()
            .map(|s| {
                let at = next;
                next += s.turns.len();
                at
            })
            .collect()
    }
}

/// Run every conversation of `sessions` against `target` from `node`'s namespace: each
/// on its own connection (a thread), started at its time; a failed turn ends the
/// conversation (its remaining turns count as failed). Results are numbered as
/// [`Sessions::offsets`] says.
pub fn run_sessions(
    node: Option<&Node>,
    target: SocketAddr,
    sessions: &Sessions,
    timeout: Duration,
    think: Duration,
) -> LoadReport {
    let results = Mutex::new(Vec::with_capacity(sessions.requests()));
    let offsets = sessions.offsets();
    let start = Instant::now();
    std::thread::scope(|s| {
        for (session, offset) in sessions.sessions.iter().zip(offsets) {
            let due = start + Duration::from_micros(session.at_us);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let results = &results;
            s.spawn(move || {
                let out = conversation(node, target, session, offset, timeout, think);
                if let Ok(mut r) = results.lock() {
                    r.extend(out);
                }
            });
        }
    });
    let wall = start.elapsed();
    let mut results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    results.sort_by_key(|r| r.index);
    LoadReport { results, wall }
}

/// One conversation's turns on one connection.
fn conversation(
    node: Option<&Node>,
    target: SocketAddr,
    session: &Session,
    offset: usize,
    timeout: Duration,
    think: Duration,
) -> Vec<RequestResult> {
    let mut out = Vec::with_capacity(session.turns.len());
    let mut client = match Client::connect(node, target, timeout) {
        Ok(c) => Some(c),
        Err(e) => {
            let error = e.to_string();
            return session
                .turns
                .iter()
                .enumerate()
                .map(|(i, t)| failed(offset + i, t, &error))
                .collect();
        }
    };
    for (i, turn) in session.turns.iter().enumerate() {
        if i > 0 && !think.is_zero() {
            std::thread::sleep(think);
        }
        let Some(c) = client.as_mut() else {
            out.push(failed(offset + i, turn, "an earlier turn failed"));
            continue;
        };
        match c.complete(turn.prompt_tokens, turn.max_tokens) {
            Ok(done) => {
                let error = (!done.done || done.tokens != turn.max_tokens).then(|| {
                    format!(
                        "{} of {} tokens, [DONE] {}",
                        done.tokens, turn.max_tokens, done.done
                    )
                });
                if error.is_some() {
                    client = None;
                }
                out.push(RequestResult {
                    index: offset + i,
                    max_tokens: turn.max_tokens,
                    completion: done,
                    error,
                });
            }
            Err(e) => {
                client = None;
                out.push(failed(offset + i, turn, &e.to_string()));
            }
        }
    }
    out
}

fn failed(index: usize, turn: &TraceRequest, error: &str) -> RequestResult {
    RequestResult {
        index,
        max_tokens: turn.max_tokens,
        completion: Completion::default(),
        error: Some(error.to_owned()),
    }
}

/// How to run a trace.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadSpec {
    /// Concurrent clients (threads, each with its own connection).
    pub concurrency: usize,
    /// Requests a connection carries before the client reconnects (0: no limit).
    pub requests_per_conn: usize,
    /// Send at the trace's times (open loop) rather than back to back (closed loop).
    pub open_loop: bool,
    /// Connect and read timeout.
    pub timeout: Duration,
}

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            concurrency: 8,
            requests_per_conn: 0,
            open_loop: false,
            timeout: Duration::from_secs(30),
        }
    }
}

/// One request's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestResult {
    /// Index in the trace.
    pub index: usize,
    /// The tokens asked for.
    pub max_tokens: u32,
    /// The completion (times count from the scheduled time in open loop).
    pub completion: Completion,
    /// Why it failed: an error, too few tokens or no `[DONE]`.
    pub error: Option<String>,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// By trace index.
    pub results: Vec<RequestResult>,
    pub wall: Duration,
}

/// p50, p95, p99.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
}

impl Percentiles {
    /// Nearest-rank percentiles of `v` (zero when empty).
    pub fn of(mut v: Vec<Duration>) -> Self {
        v.sort_unstable();
        let at = |p: f64| {
            if v.is_empty() {
                return Duration::ZERO;
            }
            let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1]
        };
        Self {
            p50: at(50.0),
            p95: at(95.0),
            p99: at(99.0),
        }
    }
}

/// A run's figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub requests: usize,
    pub failures: usize,
    pub ttft: Percentiles,
    pub total: Percentiles,
    pub mean_itl: Percentiles,
    pub requests_per_s: f64,
    pub tokens_per_s: f64,
    /// Successful requests by `X-Backend`, sorted by name.
    pub by_backend: Vec<(String, usize)>,
}

impl LoadReport {
    /// Percentiles over the successful requests, throughput over the wall time.
    pub fn summary(&self) -> Summary {
        let ok: Vec<&RequestResult> = self.results.iter().filter(|r| r.error.is_none()).collect();
        let secs = self.wall.as_secs_f64().max(1e-9);
        let tokens: u64 = ok.iter().map(|r| u64::from(r.completion.tokens)).sum();
        let mut by: std::collections::BTreeMap<String, usize> = Default::default();
        for r in &ok {
            let b = r.completion.backend.clone().unwrap_or_else(|| "?".into());
            *by.entry(b).or_default() += 1;
        }
        Summary {
            requests: self.results.len(),
            failures: self.results.len() - ok.len(),
            ttft: Percentiles::of(ok.iter().map(|r| r.completion.ttft).collect()),
            total: Percentiles::of(ok.iter().map(|r| r.completion.total).collect()),
            mean_itl: Percentiles::of(ok.iter().map(|r| r.completion.mean_itl).collect()),
            requests_per_s: ok.len() as f64 / secs,
            tokens_per_s: tokens as f64 / secs,
            by_backend: by.into_iter().collect(),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let p = |p: &Percentiles| {
            format!(
                "p50 {:.1} p95 {:.1} p99 {:.1} ms",
                ms(p.p50),
                ms(p.p95),
                ms(p.p99)
            )
        };
        writeln!(f, "requests {} failures {}", self.requests, self.failures)?;
        writeln!(f, "ttft      {}", p(&self.ttft))?;
        writeln!(f, "total     {}", p(&self.total))?;
        writeln!(f, "mean itl  {}", p(&self.mean_itl))?;
        write!(
            f,
            "throughput {:.1} requests/s {:.0} tokens/s",
            self.requests_per_s, self.tokens_per_s
        )?;
        for (b, n) in &self.by_backend {
            write!(f, "\n  {b}: {n}")?;
        }
        Ok(())
    }
}

/// Run `trace` against `target` from `node`'s namespace (this one if `None`).
pub fn run(node: Option<&Node>, target: SocketAddr, trace: &Trace, spec: &LoadSpec) -> LoadReport {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(trace.requests.len()));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..spec.concurrency.max(1) {
            s.spawn(|| worker(node, target, trace, spec, start, &next, &results));
        }
    });
    let wall = start.elapsed();
    let mut results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    results.sort_by_key(|r| r.index);
    LoadReport { results, wall }
}

fn worker(
    node: Option<&Node>,
    target: SocketAddr,
    trace: &Trace,
    spec: &LoadSpec,
    start: Instant,
    next: &AtomicUsize,
    results: &Mutex<Vec<RequestResult>>,
) {
    let mut conn: Option<(Client, usize)> = None;
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(req) = trace.requests.get(index) else {
            return;
        };
        let late = if spec.open_loop {
            let due = start + Duration::from_micros(req.at_us);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            Instant::now().saturating_duration_since(due)
        } else {
            Duration::ZERO
        };
        let outcome = match conn.take() {
            Some(c) => Ok(c),
            None => Client::connect(node, target, spec.timeout).map(|c| (c, 0)),
        }
        .and_then(|(mut c, used)| {
            let done = c.complete(req.prompt_tokens, req.max_tokens)?;
            Ok((c, used + 1, done))
        });
        let (completion, error) = match outcome {
            Ok((c, used, done)) => {
                if spec.requests_per_conn == 0 || used < spec.requests_per_conn {
                    conn = Some((c, used));
                }
                let error = (!done.done || done.tokens != req.max_tokens).then(|| {
                    format!(
                        "{} of {} tokens, [DONE] {}",
                        done.tokens, req.max_tokens, done.done
                    )
                });
                (done, error)
            }
            Err(e) => (Completion::default(), Some(e.to_string())),
        };
        let completion = Completion {
            ttft: completion.ttft + late,
            total: completion.total + late,
            ..completion
        };
        if let Ok(mut r) = results.lock() {
            r.push(RequestResult {
                index,
                max_tokens: req.max_tokens,
                completion,
                error,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_is_deterministic_and_heavy_tailed() {
        let spec = TraceSpec {
            requests: 2000,
            rate: Some(100.0),
            ..TraceSpec::default()
        };
        let a = Trace::generate(&spec);
        assert_eq!(a, Trace::generate(&spec));
        assert_ne!(
            a,
            Trace::generate(&TraceSpec {
                seed: 2,
                ..spec.clone()
            })
        );
        let mut p: Vec<u32> = a.requests.iter().map(|r| r.prompt_tokens).collect();
        p.sort_unstable();
        let (median, p99) = (p[1000], p[1980]);
        assert!((400..=650).contains(&median), "median {median}");
        assert!(p99 > 5 * median, "p99 {p99} median {median}");
        assert!(p.iter().all(|&t| (16..=8192).contains(&t)));
        // Poisson at 100/s: 2000 requests take about 20 s.
        let last = a.requests.last().map_or(0, |r| r.at_us);
        assert!((17_000_000..23_000_000).contains(&last), "{last}");
        assert!(a.requests.windows(2).all(|w| w[0].at_us <= w[1].at_us));
    }

    #[test]
    fn conversations_resend_their_growing_context() {
        let spec = SessionSpec {
            seed: 3,
            sessions: 500,
            rate: 2.0,
            turns: LogNormal {
                median: 3.0,
                sigma: 0.7,
                min: 1,
                max: 20,
            },
            context: LogNormal {
                median: 1000.0,
                sigma: 1.2,
                min: 64,
                max: 12000,
            },
            user: LogNormal {
                median: 64.0,
                sigma: 1.0,
                min: 8,
                max: 1024,
            },
            output: LogNormal {
                median: 128.0,
                sigma: 0.8,
                min: 8,
                max: 1024,
            },
            think: Duration::ZERO,
            max_context: 16384,
        };
        let a = Sessions::generate(&spec);
        assert_eq!(
            a,
            Sessions::generate(&spec),
            "the same spec, the same sessions"
        );
        assert_eq!(a.sessions.len(), 500);
        assert!(a.sessions.windows(2).all(|w| w[0].at_us <= w[1].at_us));
        // Poisson at 2/s: 500 conversations take about 250 s.
        let last = a.sessions.last().map_or(0, |s| s.at_us);
        assert!((200_000_000..300_000_000).contains(&last), "{last}");
        for s in &a.sessions {
            assert!((1..=20).contains(&s.turns.len()));
            for w in s.turns.windows(2) {
                // The next prompt holds the previous prompt, its answer and a new turn.
                let grown = u64::from(w[0].prompt_tokens) + u64::from(w[0].max_tokens) + 8;
                assert!(
                    u64::from(w[1].prompt_tokens) >= grown.min(16384),
                    "{:?}",
                    s.turns
                );
            }
        }
        let offsets = a.offsets();
        assert_eq!(offsets[0], 0);
        assert_eq!(
            offsets[1],
            a.sessions[0].turns.len(),
            "requests are numbered session by session"
        );
        assert_eq!(
            a.requests(),
            a.sessions.iter().map(|s| s.turns.len()).sum::<usize>()
        );
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(v);
        assert_eq!(p.p50, Duration::from_millis(50));
        assert_eq!(p.p95, Duration::from_millis(95));
        assert_eq!(p.p99, Duration::from_millis(99));
        assert_eq!(Percentiles::of(vec![]), Percentiles::default());
    }
}
