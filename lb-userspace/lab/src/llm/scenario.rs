//! The inference comparison's scenario: which model servers, which trace, which clients,
//! and the balancer policies compared. The offline simulator ([`super::sim`],
//! `sluice simulate inference`) and the lab run (`sluice bench inference`) take the same
//! [`Scenario`], so the two can be compared figure by figure.

use std::{fmt, net::IpAddr, time::Duration};

use sluice_core::load::policy::PolicyParams;

use super::{
    ModelParams,
    loadgen::{LogNormal, SessionSpec},
};

/// How the balancer picks the backend of a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Balancer {
    /// `scheduler = "maglev"`, the configured (equal) weights: static.
    Maglev,
    /// `scheduler = "lc"`: least connections from the kernel's connection counters.
    LeastConn,
    /// `scheduler = "maglev"` with `[vip.load]` (preset `vllm`): the load policy's weights.
    MaglevLoad,
    /// `scheduler = "lc"` with `[vip.load]`: reported in-flight requests instead of the
    /// connection count, and the load policy's saturation filter.
    LeastConnLoad,
}

impl Balancer {
    /// Every policy, in the order the tables show them.
    pub const ALL: [Balancer; 4] = [
        Balancer::Maglev,
        Balancer::LeastConn,
        Balancer::MaglevLoad,
        Balancer::LeastConnLoad,
    ];

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Balancer::Maglev => "maglev",
            Balancer::LeastConn => "lc",
            Balancer::MaglevLoad => "maglev+load",
            Balancer::LeastConnLoad => "lc+load",
        }
    }

    /// Parse a name of [`Balancer::name`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == s)
    }

    /// Whether the policy reads the backends' load reports.
    pub fn reads_load(self) -> bool {
        matches!(self, Balancer::MaglevLoad | Balancer::LeastConnLoad)
    }

    /// Whether new connections follow a least-connection sequence.
    pub fn least_conn(self) -> bool {
        matches!(self, Balancer::LeastConn | Balancer::LeastConnLoad)
    }
}

impl fmt::Display for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One comparison: the fleet of simulated model servers, the conversations sent to it, and
/// the daemon's settings that matter.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// One entry per backend (their `speed` differ: heterogeneous GPUs).
    pub backends: Vec<ModelParams>,
    pub sessions: SessionSpec,
    /// Load that reaches one backend without passing this balancer (another balancer of
    /// the fleet, or clients that address the server directly): its connections are not
    /// in this balancer's counts, its requests are in the server's reports.
    pub background: Option<Background>,
    /// A request's connect and read timeout (lab only).
    pub timeout: Duration,
    /// The configured weight of every backend.
    pub weight: u32,
    /// `[vip.load]` policy parameters.
    pub policy: PolicyParams,
    /// `[vip.load] interval_ms`: how often each backend's report is read.
    pub read_interval: Duration,
    /// The daemon's lifecycle tick, when the load policy runs.
    pub tick: Duration,
    /// `daemon.least_conn_refresh_ms`.
    pub lc_refresh: Duration,
    /// `vip.table_size` (prime).
    pub table_size: u32,
}

/// Conversations sent straight to one backend.
#[derive(Clone, Debug, PartialEq)]
pub struct Background {
    pub sessions: SessionSpec,
    /// Index of the backend they go to.
    pub backend: usize,
}

/// The number of backends of the default scenario, and the speed of its slower ones.
pub const DEFAULT_BACKENDS: usize = 4;
pub const DEFAULT_SLOW_SPEED: f64 = 0.5;

/// The default scenario's arrival rate of conversations through the balancer, and of
/// those reaching backend 1 directly, per second.
pub const DEFAULT_RATE: f64 = 1.7;
pub const DEFAULT_BACKGROUND_RATE: f64 = 0.6;

impl Default for Scenario {
    /// Four model servers, the last one a GPU of half the speed, serving conversations
    /// that arrive as a Poisson process; each conversation is one keep-alive connection
    /// whose turns resend the growing context (a first prompt of median 1000 tokens with
    /// a heavy tail: documents, agents' tool output), so connections differ widely in the
    /// work they carry. Besides the balancer's 1.7 conversations a second, 0.6 a second
    /// of the same kind reach backend 1 directly (another balancer's share, or clients
    /// that address the server): together about 80 % of the fleet's capacity.
    fn default() -> Self {
        let fast = ModelParams {
            decode_base_ms: 10.0,
            prefill_ms_per_1k_tokens: 20.0,
            ..ModelParams::default()
        };
        let mut backends = vec![fast.clone(); DEFAULT_BACKENDS];
        if let Some(last) = backends.last_mut() {
            last.speed = DEFAULT_SLOW_SPEED;
        }
        let ln = |median, sigma, min, max| LogNormal {
            median,
            sigma,
            min,
            max,
        };
        let sessions = SessionSpec {
            seed: 14,
            sessions: 1000,
            rate: DEFAULT_RATE,
            turns: ln(3.0, 0.7, 1, 20),
            context: ln(1000.0, 1.2, 64, 12000),
            user: ln(64.0, 1.0, 8, 1024),
            output: ln(128.0, 0.8, 8, 1024),
            think: Duration::ZERO,
            max_context: 16384,
        };
        let mut s = Self {
            backends,
            sessions,
            background: None,
            timeout: Duration::from_secs(120),
            weight: 100,
            policy: PolicyParams {
                stale_after: Duration::from_millis(750),
                ..PolicyParams::default()
            },
            read_interval: Duration::from_millis(250),
            tick: Duration::from_millis(200),
            lc_refresh: Duration::from_millis(100),
            table_size: 65537,
        };
        s.set_background(DEFAULT_BACKGROUND_RATE);
        s
    }
}

impl Scenario {
    /// Background conversations to backend 1 at `rate` a second (0: none): the same kind
    /// as the balancer's, another seed, as many as arrive while the balancer's do.
    pub fn set_background(&mut self, rate: f64) {
        if rate <= 0.0 || !rate.is_finite() {
            self.background = None;
            return;
        }
        let mut spec = self.sessions.clone();
        spec.seed = self.sessions.seed.wrapping_add(1000);
        spec.rate = rate;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a non-negative count, rounded"
        )]
        let n =
            (self.sessions.sessions as f64 * rate / self.sessions.rate.max(1e-9)).round() as usize;
        spec.sessions = n;
        self.background = Some(Background {
            sessions: spec,
            backend: 0,
        });
    }

    /// The default scenario with `n` backends, every `slow_every`-th of them (counting
    /// from the last) at `slow_speed`; `None` keeps all at full speed.
    pub fn with_backends(mut self, n: usize, slow: Option<(usize, f64)>) -> Self {
        let base = self.backends.first().cloned().unwrap_or_default();
        self.backends = (0..n)
            .map(|i| {
                let mut p = ModelParams {
                    speed: 1.0,
                    ..base.clone()
                };
                if let Some((every, speed)) = slow
                    && every > 0
                    && (n - 1 - i).is_multiple_of(every)
                {
                    p.speed = speed;
                }
                p
            })
            .collect();
        self
    }

    /// The address the simulator gives backend `i` (the lab uses its own).
    pub fn sim_address(i: usize) -> IpAddr {
        let i = u32::try_from(i).unwrap_or(u32::MAX - 2);
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0102_u32.saturating_add(i)))
    }

    /// A paragraph describing the scenario, for the printed report.
    pub fn describe(&self) -> String {
        let speeds: Vec<String> = self
            .backends
            .iter()
            .map(|p| format!("{}", p.speed))
            .collect();
        let p = self.backends.first().cloned().unwrap_or_default();
        let t = &self.sessions;
        let ln = |l: &LogNormal| {
            format!(
                "median {} sigma {} [{}, {}]",
                l.median, l.sigma, l.min, l.max
            )
        };
        format!(
            "{} backends (speeds {}; batch {}, decode {} ms/token × (1 + {} × (batch − 1)), \
             prefill {} ms/1k tokens, KV cache {} tokens)\n\
             {} conversations, Poisson {}/s, seed {}: turns {}; first prompt {}; \
             user turn {}; output {}; think {} ms; context cut at {}\n\
             {}\n\
             load reads every {} ms, policy tick {} ms, lc refresh {} ms, queue_limit {}, kv_limit {}",
            self.backends.len(),
            speeds.join(", "),
            p.batch,
            p.decode_base_ms,
            p.decode_alpha,
            p.prefill_ms_per_1k_tokens,
            p.kv_capacity_tokens,
            t.sessions,
            t.rate,
            t.seed,
            ln(&t.turns),
            ln(&t.context),
            ln(&t.user),
            ln(&t.output),
            t.think.as_millis(),
            t.max_context,
            match &self.background {
                Some(b) => format!(
                    "background: {} conversations of the same kind, Poisson {}/s, straight to backend {} (not through the balancer)",
                    b.sessions.sessions,
                    b.sessions.rate,
                    b.backend + 1
                ),
                None => "no background load".to_owned(),
            },
            self.read_interval.as_millis(),
            self.tick.as_millis(),
            self.lc_refresh.as_millis(),
            self.policy.queue_limit,
            self.policy.kv_limit,
        )
    }
}

/// One row of a comparison: a policy's figures.
#[derive(Clone, Debug)]
pub struct Row {
    pub balancer: Balancer,
    pub summary: super::loadgen::Summary,
}

/// The comparison table (TTFT percentiles, total-time p99, throughput, failures and each
/// backend's share of requests), then how the load-aware policies compare on p99 TTFT.
pub fn table(rows: &[Row]) -> String {
    use std::fmt::Write as _;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:>9} {:>9} {:>9} {:>10} {:>8} {:>8} {:>6}  requests per backend",
        "policy", "TTFT p50", "p95", "p99", "total p99", "req/s", "tok/s", "failed"
    );
    for r in rows {
        let s = &r.summary;
        let shares: Vec<String> = s.by_backend.iter().map(|(_, n)| n.to_string()).collect();
        let _ = writeln!(
            out,
            "{:<12} {:>7.0}ms {:>7.0}ms {:>7.0}ms {:>8.0}ms {:>8.2} {:>8.0} {:>6}  {}",
            r.balancer.name(),
            ms(s.ttft.p50),
            ms(s.ttft.p95),
            ms(s.ttft.p99),
            ms(s.total.p99),
            s.requests_per_s,
            s.tokens_per_s,
            s.failures,
            shares.join(" / ")
        );
    }
    let p99 = |b: Balancer| {
        rows.iter()
            .find(|r| r.balancer == b)
            .map(|r| ms(r.summary.ttft.p99))
    };
    for aware in [Balancer::MaglevLoad, Balancer::LeastConnLoad] {
        let Some(a) = p99(aware) else { continue };
        let mut parts = Vec::new();
        for base in [Balancer::LeastConn, Balancer::Maglev] {
            if let Some(b) = p99(base).filter(|b| *b > 0.0) {
                parts.push(format!("{:.2} × {}'s", a / b, base.name()));
            }
        }
        if !parts.is_empty() {
            let _ = writeln!(out, "{aware} p99 TTFT = {}", parts.join(", "));
        }
    }
    out
}
