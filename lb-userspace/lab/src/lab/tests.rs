use super::*;

#[test]
fn a_lab_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Lab>();
}

#[test]
fn names_round_trip() {
    for role in [Role::Switch, Role::Lb, Role::Client(3), Role::Backend(12)] {
        let n = ns_name("sl-lab", role);
        assert_eq!(parse_ns_name(&n), Some(("sl-lab", role)));
    }
    // Only exact lab names match.
    assert_eq!(
        parse_ns_name("sl-lab-x-sw"),
        Some(("sl-lab-x", Role::Switch))
    );
    assert_eq!(parse_ns_name("sl-lab-b01"), None);
    assert_eq!(parse_ns_name("sl-lab-b"), None);
    assert_eq!(parse_ns_name("-sw"), None);
    assert_eq!(parse_ns_name("host"), None);
}

#[test]
fn address_plan() {
    let b1 = Node::new("p", Role::Backend(1)).expect("node");
    assert_eq!(b1.addr4(), Ipv4Addr::new(10, 97, 0, 11));
    assert_eq!(b1.addr6(), "fd97::11".parse::<Ipv6Addr>().expect("v6"));
    assert_eq!(fmt_mac(b1.mac()), "02:97:00:00:00:0b");
    let b89 = Node::new("p", Role::Backend(89)).expect("node");
    assert_eq!(b89.addr6(), "fd97::99".parse::<Ipv6Addr>().expect("v6"));
    let c1 = Node::new("p", Role::Client(1)).expect("node");
    assert_eq!(c1.addr4(), Ipv4Addr::new(10, 97, 0, 2));
    let lb = Node::new("p", Role::Lb).expect("node");
    assert_eq!(lb.addr6(), "fd97::1".parse::<Ipv6Addr>().expect("v6"));
    assert_eq!(VIP6, "fd97::100".parse::<Ipv6Addr>().expect("v6"));
}

#[test]
fn prefixes() {
    assert!(validate_prefix("sl-lab").is_ok());
    assert!(validate_prefix("sl-lt-123-a").is_ok());
    for bad in ["", "-x", "x-", "Sl", "a/b", "a b", &"x".repeat(33)] {
        assert!(validate_prefix(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn weights() {
    assert_eq!(Weights::Ascending.for_backends(3).expect("w"), [1, 2, 3]);
    assert_eq!(Weights::Equal.for_backends(2).expect("w"), [1, 1]);
    assert!(Weights::Explicit(vec![1]).for_backends(2).is_err());
}
