use super::*;

fn running() -> Config {
    config::parse(
        "[daemon]\ninterface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"10.0.0.10\"\n\
         port = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n\
         [[vip.backend]]\naddress = \"10.0.1.1\"\nweight = 2\n\
         [[vip.backend]]\naddress = \"10.0.1.2\"\nstate = \"draining\"\n",
        "test",
    )
    .expect("valid")
    .config
}

fn a(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn web() -> String {
    "web".to_owned()
}

/// Every edit, made twice: the second succeeds and changes nothing.
#[test]
fn repeated_edits_are_noops() {
    let edits = [
        LiveEdit::Undrain {
            vip: web(),
            address: a("10.0.1.1"),
        },
        LiveEdit::Undrain {
            vip: web(),
            address: a("10.0.1.2"),
        },
        LiveEdit::Drain {
            vip: web(),
            address: a("10.0.1.2"),
            remove: false,
        },
        LiveEdit::SetWeight {
            vip: web(),
            address: a("10.0.1.1"),
            weight: 2,
        },
        LiveEdit::BackendAdd {
            vip: web(),
            address: a("10.0.1.1"),
            weight: 2,
            mac: None,
        },
        LiveEdit::BackendAdd {
            vip: web(),
            address: a("10.0.1.3"),
            weight: 1,
            mac: None,
        },
        LiveEdit::VipAdd(VipAdd {
            name: Some("api".to_owned()),
            address: "10.0.0.11".to_owned(),
            port: 443,
            protocol: "tcp".to_owned(),
            forwarding: "ipip".to_owned(),
            table_size: config::DEFAULT_TABLE_SIZE,
            scheduler: "maglev".to_owned(),
            slow_start_ms: 0,
            drain_timeout_ms: config::DEFAULT_DRAIN_TIMEOUT_MS,
            on_down: "reassign".to_owned(),
        }),
    ];
    for edit in edits {
        let mut c = running();
        edit.apply_to(&mut c)
            .unwrap_or_else(|e| panic!("{edit:?}: {e}"));
        let once = c.clone();
        edit.apply_to(&mut c)
            .unwrap_or_else(|e| panic!("{edit:?} again: {e}"));
        assert_eq!(c, once, "{edit:?} again changed the configuration");
    }
    // Undrain of an active backend is already done: no error, no change.
    let mut c = running();
    LiveEdit::Undrain {
        vip: web(),
        address: a("10.0.1.1"),
    }
    .apply_to(&mut c)
    .expect("undrain");
    assert_eq!(c, running());
}

/// An edit that does not apply says why, naming the option, and changes nothing.
#[test]
fn edits_that_do_not_apply_change_nothing() {
    let cases = [
        (
            LiveEdit::BackendAdd {
                vip: web(),
                address: a("10.0.1.1"),
                weight: 5,
                mac: None,
            },
            "set-weight",
        ),
        (
            LiveEdit::SetWeight {
                vip: "nope".to_owned(),
                address: a("10.0.1.1"),
                weight: 5,
            },
            "--vip \"nope\": no such VIP (VIPs: web)",
        ),
        (
            LiveEdit::BackendRemove {
                vip: web(),
                address: a("10.0.9.9"),
            },
            "--address 10.0.9.9: not a backend",
        ),
        (
            LiveEdit::VipSet(VipSet {
                name: web(),
                table_size: Some(1009),
                scheduler: Some("fastest".to_owned()),
                ..VipSet::default()
            }),
            "--scheduler \"fastest\": accepted values are",
        ),
    ];
    for (edit, says) in cases {
        let mut c = running();
        let e = edit.apply_to(&mut c).expect_err("refused");
        assert!(e.contains(says), "{edit:?}: {e}");
        assert_eq!(c, running(), "{edit:?} changed the configuration");
    }
}

/// The refusal of a live edit, as the daemon words it.
fn refusal(c: &Config) -> String {
    crate::api::server::validate_model(c).expect_err("refused")
}

/// A refused edit names the option the user typed, then the configuration path.
#[test]
fn refusals_name_the_option_typed() {
    let edit = LiveEdit::SetWeight {
        vip: web(),
        address: a("10.0.1.2"),
        weight: 20_000,
    };
    let mut c = running();
    edit.apply_to(&mut c).expect("the edit is made");
    let said = edit.typed().name_options(&c, &refusal(&c));
    assert!(said.starts_with(crate::api::server::REJECTED), "{said}");
    assert!(
        said.contains(
            "\n--weight 20000: 20000 is out of range (0..=10000) (vip[0].backend[1].weight)"
        ),
        "{said}"
    );
    // A VIP option.
    let edit = LiveEdit::VipSet(VipSet {
        name: web(),
        table_size: Some(1000),
        ..VipSet::default()
    });
    let mut c = running();
    edit.apply_to(&mut c).expect("the edit is made");
    let said = edit.typed().name_options(&c, &refusal(&c));
    assert!(said.contains("\n--table-size 1000: "), "{said}");
    assert!(said.ends_with("(vip[0].table_size)"), "{said}");
    // A problem elsewhere keeps its path only.
    let other = "rejected, nothing changed:\nvip[0].backend[0].weight: out of range";
    assert_eq!(edit.typed().name_options(&c, other), other);
}

/// The request as the CLI sends it: small, whatever the configuration's size.
#[test]
fn an_edit_request_is_small_json() {
    let req = crate::api::Request::Edit {
        edit: LiveEdit::SetWeight {
            vip: web(),
            address: a("10.0.1.2"),
            weight: 3,
        },
        dry_run: false,
        base_version: Some(7),
    };
    let text = serde_json::to_string(&req).expect("JSON");
    assert_eq!(
        text,
        r#"{"op":"edit","edit":{"edit":"set-weight","vip":"web","address":"10.0.1.2","weight":3},"dry_run":false,"base_version":7}"#
    );
    let back: crate::api::Request = serde_json::from_str(&text).expect("decoded");
    assert!(matches!(back, crate::api::Request::Edit { .. }));
}
