//! `sluice simulate`: replay a load trace through the autoscaler's policies
//! (`crate::autoscale::sim`) and compare with the plain Kubernetes HPA defaults.

use std::path::Path;

use sluice_lab::llm::{
    scenario::{self, Balancer, Row, Scenario},
    sim,
};

use crate::autoscale::sim as autoscale_sim;

pub fn run(trace: &Path, policy: &Path, csv: Option<&Path>, every_s: f64) -> anyhow::Result<()> {
    let (points, p, s) = autoscale_sim::load(trace, policy).map_err(anyhow::Error::msg)?;
    let ours = autoscale_sim::run(&points, &p, &s).map_err(anyhow::Error::msg)?;
    let duration = ours.duration_s;
    println!(
        "{}: {:.0} s, capacity {} connections/backend, startup {} ms, policy {}",
        trace.display(),
        duration,
        s.capacity,
        s.startup_ms,
        policy.display()
    );
    println!();
    print!("{}", autoscale_sim::timeline(&ours, every_s));
    println!();
    let mut runs = vec![("policy".to_owned(), &ours)];
    let baseline = match autoscale_sim::hpa_defaults(&p) {
        Some(h) => Some(autoscale_sim::run(&points, &h, &s).map_err(anyhow::Error::msg)?),
        None => None,
    };
    if let Some(b) = &baseline {
        runs.push(("HPA defaults".to_owned(), b));
    }
    print!("{}", autoscale_sim::table(&runs));
    if baseline.is_none() {
        println!("(no [autoscale.target]: no HPA baseline to compare with)");
    }
    if let Some(path) = csv {
        std::fs::write(path, autoscale_sim::csv(&ours))
            .map_err(|e| anyhow::anyhow!("--csv {}: {e}", path.display()))?;
        println!("time series written to {}", path.display());
    }
    Ok(())
}

/// The inference comparison's scenario, as `sluice simulate inference` and `sluice bench
/// inference` take it (defaults: [`Scenario::default`]).
#[derive(Debug, Clone, clap::Args)]
pub struct ScenarioArgs {
    /// Model-server backends.
    #[arg(long, default_value_t = sluice_lab::llm::scenario::DEFAULT_BACKENDS)]
    pub backends: usize,
    /// Every Nth backend (counting from the last) is a slower GPU; 0: none.
    #[arg(long, default_value_t = sluice_lab::llm::scenario::DEFAULT_BACKENDS)]
    pub slow_every: usize,
    /// The slower GPUs' speed (0.5: every step takes twice as long).
    #[arg(long, default_value_t = sluice_lab::llm::scenario::DEFAULT_SLOW_SPEED)]
    pub slow_speed: f64,
    /// Conversations (each a connection carrying its turns) [default: the scenario's].
    #[arg(long)]
    pub sessions: Option<usize>,
    /// Poisson arrival rate of conversations, per second [default: the scenario's, scaled
    /// with --backends].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Conversations per second sent straight to backend 1, past the balancer (another
    /// balancer's share, or direct clients): load the balancer's connection counts do not
    /// see. 0: none [default: the scenario's, scaled with --backends].
    #[arg(long)]
    pub background: Option<f64>,
    /// Median turns per conversation [default: the scenario's].
    #[arg(long)]
    pub turns: Option<f64>,
    /// Median first prompt (system prompt and documents), tokens [default: the scenario's].
    #[arg(long)]
    pub context: Option<f64>,
    /// The trace's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The policies compared, comma-separated: maglev, lc, maglev+load, lc+load.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "maglev,lc,maglev+load,lc+load"
    )]
    pub policies: Vec<String>,
}

impl ScenarioArgs {
    /// The scenario and the policies, or which argument is wrong.
    pub fn scenario(&self) -> anyhow::Result<(Scenario, Vec<Balancer>)> {
        anyhow::ensure!(self.backends >= 1, "--backends must be at least 1");
        anyhow::ensure!(
            self.slow_speed.is_finite() && self.slow_speed > 0.0,
            "--slow-speed {} must be a positive number",
            self.slow_speed
        );
        let base = Scenario::default();
        let scale = self.backends as f64 / base.backends.len() as f64;
        let slow = (self.slow_every > 0).then_some((self.slow_every, self.slow_speed));
        let mut s = base.clone().with_backends(self.backends, slow);
        s.sessions.rate = match self.rate {
            Some(r) => {
                anyhow::ensure!(r.is_finite() && r > 0.0, "--rate {r} must be more than 0");
                r
            }
            None => base.sessions.rate * scale,
        };
        if let Some(n) = self.sessions {
            anyhow::ensure!(n >= 1, "--sessions must be at least 1");
            s.sessions.sessions = n;
        }
        if let Some(t) = self.turns {
            anyhow::ensure!(t.is_finite() && t >= 1.0, "--turns {t} must be at least 1");
            s.sessions.turns.median = t;
        }
        if let Some(c) = self.context {
            anyhow::ensure!(
                c.is_finite() && c >= 1.0,
                "--context {c} must be at least 1"
            );
            s.sessions.context.median = c;
        }
        if let Some(seed) = self.seed {
            s.sessions.seed = seed;
        }
        let background = match self.background {
            Some(r) => {
                anyhow::ensure!(
                    r.is_finite() && r >= 0.0,
                    "--background {r} must be 0 or more"
                );
                r
            }
            None => base
                .background
                .as_ref()
                .map_or(0.0, |b| b.sessions.rate * scale),
        };
        s.set_background(background);
        let mut policies = Vec::new();
        for p in &self.policies {
            let b = Balancer::parse(p.trim()).ok_or_else(|| {
                anyhow::anyhow!(
                    "--policies: unknown policy {p:?} (known: maglev, lc, maglev+load, lc+load)"
                )
            })?;
            if !policies.contains(&b) {
                policies.push(b);
            }
        }
        anyhow::ensure!(!policies.is_empty(), "--policies names no policy");
        Ok((s, policies))
    }
}

/// `sluice simulate inference`: the scenario through each policy on simulated time.
pub fn inference(args: &ScenarioArgs) -> anyhow::Result<()> {
    let (s, policies) = args.scenario()?;
    println!(
        "offline inference comparison (simulated time)\n{}\n",
        s.describe()
    );
    let mut rows = Vec::new();
    for b in policies {
        let r = sim::run(&s, b)?;
        rows.push(Row {
            balancer: b,
            summary: r.report.summary(),
        });
    }
    print!("{}", scenario::table(&rows));
    Ok(())
}
