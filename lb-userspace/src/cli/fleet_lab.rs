//! `sluice lab up --balancers N`: the routed fleet lab (`crate::lab::fleet`) with its BIRDs
//! and its daemons running, left up until `sluice lab down`.

use crate::{
    config,
    lab::fleet::{CONVERGE, FLEET_VIP4, FLEET_VIP4_LC, Fleet, FleetSpec},
};

pub fn up(spec: FleetSpec, equal_weights: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let n = spec.balancers;
    // An error from here on drops `fleet`, which removes all of it.
    let fleet = Fleet::up(spec)?;
    let weights: Vec<u32> = (1..=fleet.backends().len() as u32)
        .map(|k| if equal_weights { 1 } else { k })
        .collect();
    for i in 0..n {
        // Detached: `sluice lab down` stops it with the rest.
        let run = fleet.spawn_daemon(i, &exe, &weights)?;
        drop(run.child);
    }
    let all: Vec<usize> = (0..n).collect();
    let took = fleet.wait_next_hops(FLEET_VIP4, &all, CONVERGE)?;
    let p = fleet.prefix().to_owned();
    println!(
        "fleet lab {p} is up ({} mode): {n} balancers announce {FLEET_VIP4} and {FLEET_VIP4_LC} \
         over BGP; the router had ECMP over all of them after {took:.1?}",
        fleet.mode()
    );
    let row = |cells: [&str; 4]| {
        let [ns, node, v4, extra] = cells;
        println!("  {ns:<16}{node:<11}{v4:<14}{extra}");
    };
    println!();
    row(["namespace", "node", "ipv4", ""]);
    let r = fleet.router();
    row([
        r.ns(),
        &r.name(),
        &r.addr4().to_string(),
        "BIRD (BGP AS 65000 + BFD), ECMP; 10.98.1.254 to the clients",
    ]);
    for i in 0..n {
        let lb = fleet.balancer(i);
        row([
            lb.ns(),
            &lb.name(),
            &lb.addr4().to_string(),
            &format!(
                "BIRD (AS 65001) + sluice, API {}",
                fleet.api_socket(i).display()
            ),
        ]);
    }
    for c in fleet.clients() {
        row([
            c.ns(),
            &c.name(),
            &c.addr4().to_string(),
            "default via the router",
        ]);
    }
    for (b, w) in fleet.backends().iter().zip(&weights) {
        row([
            b.ns(),
            &b.name(),
            &b.addr4().to_string(),
            &format!("weight {w}, MAC {}", config::format_mac(&b.mac())),
        ]);
    }
    let bird = |i: usize| fleet.bird_socket(fleet.balancer(i)).display().to_string();
    println!(
        "\n  configs:     {}",
        fleet.balancer_dir(0).join("sluice.toml").display()
    );
    println!("  routes:      ip -n {} route show {FLEET_VIP4}", r.ns());
    println!(
        "  BGP:         birdc -s {} show protocols",
        fleet.bird_socket(r).display()
    );
    println!("               birdc -s {} show route table vips4", bird(0));
    println!(
        "  balancer 1:  sluice --api-socket {} announce status",
        fleet.api_socket(0).display()
    );
    println!(
        "  compare:     sluice --api-socket {} fleet check --peer {}",
        fleet.api_socket(0).display(),
        fleet.api_socket(n.saturating_sub(1)).display()
    );
    println!(
        "  try it:      ip netns exec {} curl -s http://{FLEET_VIP4}/",
        fleet.client(0).ns()
    );
    println!("  remove it:   sluice lab down --prefix {p}");
    fleet.keep();
    Ok(())
}
