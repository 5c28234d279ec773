use std::net::IpAddr;

use super::*;
use crate::model::{DesiredBackend, VipIdent};

fn backend(a: &str, weight: u32) -> DesiredBackend {
    DesiredBackend {
        address: a.parse().unwrap(),
        weight,
        mac: None,
        serving: true,
        in_flight: None,
    }
}

fn vip(scheduler: Sched, backends: Vec<DesiredBackend>) -> DesiredVip {
    DesiredVip {
        ident: VipIdent {
            address: "10.0.0.1".parse().unwrap(),
            port: 80,
            proto: lb_common::PROTO_TCP,
        },
        mode: lb_common::MODE_DSR,
        scheduler,
        table_size: 251,
        backends,
    }
}

fn three() -> Vec<DesiredBackend> {
    vec![
        backend("10.0.0.2", 100),
        backend("10.0.0.3", 200),
        backend("2001:db8::4", 100),
    ]
}

#[test]
fn maglev_ignores_the_order_backends_were_added_and_their_slot_ids() {
    let a = vip(Sched::Maglev, three());
    let mut reversed = three();
    reversed.reverse();
    let b = vip(Sched::Maglev, reversed);
    assert_eq!(super::vip(&a, 7), super::vip(&b, 7));

    // The same table written with other slot ids (as another balancer allocates them).
    let names: Vec<String> = a.backends.iter().map(|b| b.address.to_string()).collect();
    let ids: Vec<(u32, IpAddr)> = a
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| (1000 - 3 * i as u32, b.address))
        .collect();
    let entries: Vec<maglev::Entry<'_>> = a
        .backends
        .iter()
        .zip(&names)
        .zip(&ids)
        .map(|((b, name), (id, _))| maglev::Entry {
            name,
            weight: b.weight,
            id: *id,
        })
        .collect();
    let built = maglev::build(&entries, a.table_size, 7).unwrap();
    assert_eq!(table(&a, 7, &built, &ids), super::vip(&a, 7));
    assert_eq!(super::vip(&a, 7).to_string().len(), 16);
}

#[test]
fn every_input_that_moves_flows_changes_it() {
    let base = vip(Sched::Maglev, three());
    let fp = super::vip(&base, 7);
    let mut changed = Vec::new();
    changed.push(super::vip(&base, 8));
    let mut v = base.clone();
    v.backends[1].weight = 100;
    changed.push(super::vip(&v, 7));
    let mut v = base.clone();
    v.backends[0].address = "10.0.0.9".parse().unwrap();
    changed.push(super::vip(&v, 7));
    let mut v = base.clone();
    v.backends.pop();
    changed.push(super::vip(&v, 7));
    let mut v = base.clone();
    v.backends[2].serving = false;
    changed.push(super::vip(&v, 7));
    let mut v = base.clone();
    v.table_size = 257;
    changed.push(super::vip(&v, 7));
    let mut v = base.clone();
    v.scheduler = Sched::SourceHash;
    changed.push(super::vip(&v, 7));
    let mut v = base.clone();
    v.ident.port = 81;
    changed.push(super::vip(&v, 7));
    for (i, c) in changed.iter().enumerate() {
        assert_ne!(*c, fp, "change {i} kept the fingerprint");
    }
}

#[test]
fn sequences_hash_their_order_of_addresses() {
    let rr = vip(Sched::RoundRobin, three());
    let mut reordered = three();
    reordered.swap(0, 1);
    // rr takes the backends in configuration order: another order is another sequence.
    assert_ne!(
        super::vip(&rr, 7),
        super::vip(&vip(Sched::RoundRobin, reordered), 7)
    );
    let mut wrr = vip(Sched::WeightedRoundRobin, three());
    let fp = super::vip(&wrr, 7);
    assert_eq!(fp, super::vip(&wrr.clone(), 7));
    wrr.backends[0].weight = 300;
    assert_ne!(fp, super::vip(&wrr, 7));
    // Not a Maglev table of the same backends.
    assert_ne!(
        super::vip(&rr, 7),
        super::vip(&vip(Sched::Maglev, three()), 7)
    );
}

#[test]
fn the_config_fingerprint_ignores_key_order_and_spacing() {
    let one = "[daemon]\ninterface = \"x\"\nhash_seed = 5\n[[vip]]\nname = \"web\"\n\
               address = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n\
               [[vip.backend]]\naddress = \"10.0.0.2\"\nweight = 10\n";
    let two = "[daemon]\nhash_seed = 5\ninterface = \"x\"\n\n[[vip]]\nport = 80\n\
               name = \"web\"\nforwarding = \"dsr\"\nprotocol = \"tcp\"\naddress = \"10.0.0.1\"\n\
               [[vip.backend]]\nweight = 10\naddress = \"10.0.0.2\"\n";
    let parse = |t: &str| crate::config::parse(t, "test").unwrap().config;
    let fp = config(&parse(one)).unwrap();
    assert_eq!(fp, config(&parse(two)).unwrap());
    let three = one.replace("weight = 10", "weight = 11");
    assert_ne!(fp, config(&parse(&three)).unwrap());
}

#[test]
fn the_config_fingerprint_leaves_out_this_hosts_own_keys_only() {
    let text = "[daemon]\ninterface = \"eth0\"\nhash_seed = 5\n[[vip]]\nname = \"web\"\n\
                address = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n\
                [[vip.backend]]\naddress = \"10.0.0.2\"\n";
    let base = crate::config::parse(text, "test").unwrap().config;
    let fp = config(&base).unwrap();

    let mut other_host = base.clone();
    other_host.daemon.interface = "ens3".to_owned();
    other_host.daemon.xdp_mode = crate::config::XdpMode::Generic;
    other_host.daemon.state_dir = "/var/lib/sluice-b".into();
    other_host.daemon.api_socket = "/run/b.sock".into();
    other_host.daemon.metrics_listen = Some("127.0.0.1:9999".parse().unwrap());
    other_host.daemon.api_group = Some("ops".to_owned());
    other_host.daemon.pin_dir = Some("/sys/fs/bpf/b".into());
    assert_eq!(config(&other_host).unwrap(), fp);

    let mut seed = base.clone();
    seed.daemon.hash_seed = 6;
    assert_ne!(config(&seed).unwrap(), fp);
    let mut timeout = base.clone();
    timeout.daemon.tcp_idle_timeout_ms += 1;
    assert_ne!(config(&timeout).unwrap(), fp);
    let mut added = base.clone();
    let mut b = added.vips[0].backends[0].clone();
    b.address = "10.0.0.3".parse().unwrap();
    added.vips[0].backends.push(b);
    assert_ne!(config(&added).unwrap(), fp);
}

#[test]
fn an_added_backend_changes_the_table_fingerprint() {
    let base = vip(Sched::Maglev, three());
    let mut more = three();
    more.push(backend("10.0.0.5", 100));
    assert_ne!(
        super::vip(&base, 7),
        super::vip(&vip(Sched::Maglev, more), 7)
    );
}
