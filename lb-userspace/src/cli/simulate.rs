//! `sluice simulate`: replay a load trace through the autoscaler's policies
//! (`crate::autoscale::sim`) and compare with the plain Kubernetes HPA defaults.

use std::path::Path;

use crate::autoscale::sim;

pub fn run(trace: &Path, policy: &Path, csv: Option<&Path>, every_s: f64) -> anyhow::Result<()> {
    let (points, p, s) = sim::load(trace, policy).map_err(anyhow::Error::msg)?;
    let ours = sim::run(&points, &p, &s).map_err(anyhow::Error::msg)?;
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
    print!("{}", sim::timeline(&ours, every_s));
    println!();
    let mut runs = vec![("policy".to_owned(), &ours)];
    let baseline = match sim::hpa_defaults(&p) {
        Some(h) => Some(sim::run(&points, &h, &s).map_err(anyhow::Error::msg)?),
        None => None,
    };
    if let Some(b) = &baseline {
        runs.push(("HPA defaults".to_owned(), b));
    }
    print!("{}", sim::table(&runs));
    if baseline.is_none() {
        println!("(no [autoscale.target]: no HPA baseline to compare with)");
    }
    if let Some(path) = csv {
        std::fs::write(path, sim::csv(&ours))
            .map_err(|e| anyhow::anyhow!("--csv {}: {e}", path.display()))?;
        println!("time series written to {}", path.display());
    }
    Ok(())
}
