//! The fleet demo (`sluice demo --balancers N`): the fleet lab with its router and BIRDs,
//! a daemon on every balancer, traffic spread over them, one balancer taken out for
//! maintenance (withdrawn, then restored), then one lost as a host would be, with a table
//! of connections and resets after each step; everything removed at the end.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};

use crate::{
    api::{Request, Response, client},
    conn::{Held, echo_parallel},
    lab::{
        TCP_PORT,
        daemon::Daemon,
        fleet::{CONVERGE, FLEET_VIP4, Fleet, FleetSpec},
    },
};

const PREFIX: &str = "sl-fleet-demo";
const VIP_NAME: &str = "fleet-tcp";
const WEIGHTS: [u32; 3] = [1, 2, 3];
/// Long-lived connections held through every step.
const HELD: usize = 40;

/// Run the fleet demo with `balancers` balancers (2..=4) and `connections` new connections
/// per burst.
pub fn run(balancers: usize, connections: usize) -> anyhow::Result<()> {
    ensure!(
        (2..=4).contains(&balancers),
        "--balancers {balancers}: the fleet demo needs 2 to 4"
    );
    // Leftovers of an interrupted earlier demo; if some cannot go, `Fleet::up` says so.
    let _ = crate::lab::Lab::down_prefix(PREFIX);
    section(&format!(
        "building the fleet lab: a client, a router running BIRD (BGP + BFD 100 ms x 3, ECMP), \
         {balancers} balancers each running BIRD and sluice, 3 backends (DSR)"
    ));
    let fleet = Fleet::up(FleetSpec::new(PREFIX).balancers(balancers))?;
    let result = demo(&fleet, connections);
    section("tearing the fleet lab down");
    let removed = fleet.down()?;
    println!(
        "   removed {} namespaces, {} pins and every BIRD and daemon",
        removed.namespaces.len(),
        removed.pins.len()
    );
    result
}

fn section(title: &str) {
    println!("\n== {title}");
}

fn demo(fleet: &Fleet, connections: usize) -> anyhow::Result<()> {
    let n = fleet.balancers().len();
    let daemons: Vec<Daemon> = (0..n)
        .map(|i| fleet.start_daemon(i, &WEIGHTS))
        .collect::<Result<_, _>>()?;
    let all: Vec<usize> = (0..n).collect();
    let took = fleet.wait_next_hops(FLEET_VIP4, &all, CONVERGE)?;
    println!(
        "   every balancer announces {FLEET_VIP4}; the router has one ECMP route over all {n} \
         after {:.1} s",
        took.as_secs_f64()
    );

    section(&format!(
        "{HELD} long-lived connections and {connections} short ones from the client"
    ));
    let mut held: Vec<Held> = (0..HELD)
        .map(|_| Held::open(fleet.client(0), fleet.vip_sock(TCP_PORT)))
        .collect::<Result<_, _>>()?;
    let mut table = Table::new(fleet);
    table.burst(fleet, connections)?;
    table.step(fleet, &mut held, "spread")?;

    section("maintenance: `sluice announce withdraw --all` on lb-1 (it keeps forwarding)");
    let t0 = Instant::now();
    announce(fleet, 0, Request::AnnounceWithdraw { all: true })?;
    let others: Vec<usize> = (1..n).collect();
    fleet.wait_next_hops(FLEET_VIP4, &others, Duration::from_secs(5))?;
    println!(
        "   the router stopped forwarding to lb-1 {} ms after the command",
        t0.elapsed().as_millis()
    );
    table.burst(fleet, connections)?;
    table.step(fleet, &mut held, "lb-1 withdrawn")?;
    announce(fleet, 0, Request::AnnounceRestore)?;
    let took = fleet.wait_next_hops(FLEET_VIP4, &all, CONVERGE)?;
    println!(
        "   `sluice announce restore`: lb-1 is back in the route after {} ms",
        took.as_millis()
    );

    let victim = n - 1;
    section(&format!(
        "failure: lb-{} loses its link and its BIRD dies (as a dead host)",
        victim + 1
    ));
    let t0 = Instant::now();
    fleet.kill_balancer(victim)?;
    let stalls = table.step(fleet, &mut held, "balancer lost")?;
    let left: Vec<usize> = (0..victim).collect();
    fleet.wait_next_hops(FLEET_VIP4, &left, Duration::from_secs(5))?;
    println!(
        "   BFD took lb-{} out of the route; the slowest connection stalled {} ms (the \
         blackout), measured from the kill {} ms ago",
        victim + 1,
        stalls.as_millis(),
        t0.elapsed().as_millis()
    );
    table.burst(fleet, connections)?;
    table.print();
    drop(daemons);
    ensure!(table.resets == 0, "{} connections were reset", table.resets);
    Ok(())
}

fn announce(fleet: &Fleet, i: usize, request: Request) -> anyhow::Result<()> {
    match client::request(&fleet.api_socket(i), &request)
        .with_context(|| format!("lb-{}'s API", i + 1))?
    {
        Response::Error { message } => anyhow::bail!("lb-{}: {message}", i + 1),
        _ => Ok(()),
    }
}

/// One step of the demo: what happened, new flows per balancer, held connections per
/// backend, resets.
struct Row {
    what: String,
    new_flows: Vec<u64>,
    per_backend: BTreeMap<String, usize>,
    resets: usize,
}

/// The demo's running record: its rows, and the counters and resets so far.
struct Table {
    balancers: usize,
    rows: Vec<Row>,
    new_flows: Vec<u64>,
    resets: usize,
}

impl Table {
    fn new(fleet: &Fleet) -> Self {
        Self {
            balancers: fleet.balancers().len(),
            rows: Vec::new(),
            new_flows: new_flows(fleet),
            resets: 0,
        }
    }

    /// `n` short connections (each must answer).
    fn burst(&mut self, fleet: &Fleet, n: usize) -> anyhow::Result<()> {
        for i in 0..n {
            let c = Held::open(fleet.client(0), fleet.vip_sock(TCP_PORT))
                .with_context(|| format!("short connection {i}"))?;
            c.close()?;
        }
        Ok(())
    }

    /// One echo on every held connection (all at once); a row of the table. Returns the
    /// slowest echo.
    fn step(&mut self, fleet: &Fleet, held: &mut [Held], what: &str) -> anyhow::Result<Duration> {
        let results = echo_parallel(held, what);
        let resets = results.iter().filter(|r| r.is_err()).count();
        self.resets += resets;
        let now = new_flows(fleet);
        let delta: Vec<u64> = now
            .iter()
            .zip(&self.new_flows)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        self.new_flows = now;
        let mut per_backend = BTreeMap::new();
        for c in held.iter() {
            *per_backend.entry(c.backend.clone()).or_insert(0) += 1;
        }
        self.rows.push(Row {
            what: what.to_owned(),
            new_flows: delta,
            per_backend,
            resets,
        });
        self.print_last();
        Ok(results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .max()
            .copied()
            .unwrap_or_default())
    }

    fn header(&self) {
        print!("\n   {:<16}", "step (new flows)");
        for i in 1..=self.balancers {
            print!("{:>10}", format!("new@lb-{i}"));
        }
        println!("   held per backend                         resets");
    }

    fn row(&self, r: &Row) {
        print!("   {:<16}", r.what);
        for d in &r.new_flows {
            print!("{d:>10}");
        }
        let backends: Vec<String> = r
            .per_backend
            .iter()
            .map(|(b, c)| format!("{b} {c}"))
            .collect();
        println!("   {:<40} {}", backends.join(", "), r.resets);
    }

    fn print_last(&self) {
        self.header();
        if let Some(r) = self.rows.last() {
            self.row(r);
        }
    }

    fn print(&self) {
        println!("\n   the whole run ({HELD} long-lived connections held throughout):");
        self.header();
        for r in &self.rows {
            self.row(r);
        }
        println!("   connections reset: {}", self.resets);
    }
}

/// Each balancer's new flows of the demo VIP so far (0 for one that does not answer).
fn new_flows(fleet: &Fleet) -> Vec<u64> {
    (0..fleet.balancers().len())
        .map(
            |i| match client::request(&fleet.api_socket(i), &Request::Status { flows: false }) {
                Ok(Response::Status { status }) => status
                    .vips
                    .iter()
                    .find(|v| v.name == VIP_NAME)
                    .map_or(0, |v| v.new_flows),
                _ => 0,
            },
        )
        .collect()
}
