use std::net::IpAddr;

use super::*;
use crate::{config::BackendState, health::Event};

/// Two VIPs on 10.0.0.1 (tcp 80, udp 53), one on 10.0.0.2 and one on 2001:db8::1, two
/// backends each; announcing enabled.
fn config(enabled: bool) -> Config {
    let vip = |name: &str, addr: &str, port: u16, proto: &str, sched: &str| {
        let (b1, b2) = if addr.contains(':') {
            ("2001:db8:1::1", "2001:db8:1::2")
        } else {
            ("10.0.1.1", "10.0.1.2")
        };
        format!(
            "[[vip]]\nname = \"{name}\"\naddress = \"{addr}\"\nport = {port}\nprotocol = \"{proto}\"\n\
             forwarding = \"dsr\"\nscheduler = \"{sched}\"\nslow_start_ms = 0\n\
             [[vip.backend]]\naddress = \"{b1}\"\n[[vip.backend]]\naddress = \"{b2}\"\n"
        )
    };
    let text = format!(
        "[daemon]\ninterface = \"x\"\n[daemon.announce]\nenabled = {enabled}\n{}{}{}{}",
        vip("web", "10.0.0.1", 80, "tcp", "maglev"),
        vip("dns", "10.0.0.1", 53, "udp", "rr"),
        vip("api", "10.0.0.2", 443, "tcp", "wlc"),
        vip("web6", "2001:db8::1", 80, "tcp", "maglev"),
    );
    crate::config::parse(&text, "test").unwrap().config
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn why(d: &BTreeMap<IpAddr, Decision>, a: &str) -> Why {
    d.get(&addr(a))
        .unwrap_or_else(|| panic!("{a} in {d:?}"))
        .why
}

fn set_health(s: &mut State, vip: &str, backend: &str, health: Health) {
    let v = s.config.vips.iter().find(|v| v.name == vip).unwrap();
    let e = Event {
        vip: ident(v),
        backend: addr(backend),
        health,
        reason: String::new(),
        ok: None,
    };
    s.apply(&e);
}

#[test]
fn every_address_with_a_serving_backend_is_announced_once() {
    let s = State::new(config(true));
    let d = decide(&s, |_| true, false);
    assert_eq!(d.len(), 3, "one entry per address: {d:?}");
    for a in ["10.0.0.1", "10.0.0.2", "2001:db8::1"] {
        assert_eq!(why(&d, a), Why::Announced);
    }
    assert_eq!(d[&addr("10.0.0.1")].vips, ["web", "dns"]);
}

#[test]
fn disabled_touches_nothing_whatever_else_holds() {
    let s = State::new(config(false));
    for maintenance in [false, true] {
        let d = decide(&s, |_| false, maintenance);
        assert!(d.values().all(|x| x.why == Why::Disabled), "{d:?}");
    }
}

#[test]
fn maintenance_withdraws_every_address() {
    let s = State::new(config(true));
    let d = decide(&s, |_| true, true);
    assert!(d.values().all(|x| x.why == Why::Maintenance), "{d:?}");
    assert!(!Why::Maintenance.announced());
}

#[test]
fn an_address_needs_one_attached_vip_with_a_serving_backend() {
    let mut s = State::new(config(true));
    // Every backend of "api" down: its address goes.
    set_health(&mut s, "api", "10.0.1.1", Health::Down);
    set_health(&mut s, "api", "10.0.1.2", Health::Down);
    // "web" has none up either, but "dns" on the same address still serves.
    set_health(&mut s, "web", "10.0.1.1", Health::Down);
    set_health(&mut s, "web", "10.0.1.2", Health::Down);
    let d = decide(&s, |_| true, false);
    assert_eq!(why(&d, "10.0.0.2"), Why::NoServingBackend);
    assert_eq!(why(&d, "10.0.0.1"), Why::Announced);
    // One backend back up: announced again.
    set_health(&mut s, "api", "10.0.1.2", Health::Up);
    assert_eq!(
        why(&decide(&s, |_| true, false), "10.0.0.2"),
        Why::Announced
    );

    // "dns" not published: 10.0.0.1 rests on "web", which has nothing up.
    let web_only = |id: VipIdent| id.port != 53;
    assert_eq!(
        why(&decide(&s, web_only, false), "10.0.0.1"),
        Why::NoServingBackend
    );
    // Nothing attached at all.
    assert_eq!(
        why(&decide(&s, |_| false, false), "10.0.0.1"),
        Why::NotAttached
    );
}

#[test]
fn a_down_backend_does_not_count_even_when_it_keeps_its_flows() {
    let mut c = config(true);
    c.vips[3].on_down = crate::config::OnDown::Keep;
    let mut s = State::new(c);
    set_health(&mut s, "web6", "2001:db8:1::1", Health::Down);
    set_health(&mut s, "web6", "2001:db8:1::2", Health::Down);
    assert!(s.desired().vips[3].backends[0].serving, "its flows stay");
    assert_eq!(
        why(&decide(&s, |_| true, false), "2001:db8::1"),
        Why::NoServingBackend
    );
}

#[test]
fn draining_or_weight_0_backends_do_not_count() {
    let mut c = config(true);
    c.vips[2].backends[0].state = BackendState::Draining;
    c.vips[2].backends[1].weight = 0;
    let s = State::new(c.clone());
    assert_eq!(
        why(&decide(&s, |_| true, false), "10.0.0.2"),
        Why::NoServingBackend
    );
    // A VIP with no backends at all.
    c.vips[2].backends.clear();
    let s = State::new(c);
    assert_eq!(
        why(&decide(&s, |_| true, false), "10.0.0.2"),
        Why::NoServingBackend
    );
}

#[test]
fn sequence_schedulers_are_warned_about_only_when_announcing() {
    let c = config(true);
    let names: Vec<&str> = sequence_vips(&c).map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["dns", "api"]);
    let w = sequence_warning(&c.vips[1]);
    assert!(
        w.contains("dns") && w.contains("rr") && w.contains("use maglev"),
        "{w}"
    );
    assert_eq!(sequence_vips(&config(false)).count(), 0);
}

#[test]
fn reasons_read_as_documented() {
    let all = [
        (Why::Disabled, "announce disabled"),
        (Why::Maintenance, "maintenance"),
        (Why::NotAttached, "not attached"),
        (Why::NoServingBackend, "no serving backend"),
        (Why::Announced, "announced"),
    ];
    for (w, s) in all {
        assert_eq!(w.as_str(), s);
        assert_eq!(w.announced(), w == Why::Announced);
    }
}
