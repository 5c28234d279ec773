//! [`validate_model`]: the rules of the file, on a model without its text.

use super::*;

/// Every configuration the file accepts, the model accepts as it is; a problem the file
/// reports, the model reports at the same path with the same message (no line).
#[test]
fn the_model_is_validated_like_its_file() {
    let loaded = load(Path::new(REFERENCE)).unwrap_or_else(|e| panic!("{e}"));
    let again = validate_model(&loaded.config, "model").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.config, loaded.config);
    assert_eq!(again.warnings, loaded.warnings);

    let mut bad = loaded.config.clone();
    bad.vips[0].backends[1].weight = 20_000;
    bad.vips[1].table_size = 1000;
    let by_file = parse(&bad.to_toml().expect("TOML"), "edit")
        .expect_err("refused")
        .problems();
    let by_model = validate_model(&bad, "edit")
        .expect_err("refused")
        .problems();
    let strip = |ps: Vec<Problem>| -> Vec<(String, String)> {
        let mut v: Vec<_> = ps.into_iter().map(|p| (p.path, p.message)).collect();
        v.sort();
        v
    };
    assert!(by_model.iter().all(|p| p.line.is_none()));
    assert_eq!(strip(by_model), strip(by_file));
}

/// The TOML of a configuration is its `[daemon]` table's then each VIP's.
#[test]
fn the_toml_is_made_of_its_parts() {
    let small = ok(&format!(
        "{DAEMON}[[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n\
         [[vip]]\naddress = \"10.0.0.2\"\nport = 80\nprotocol = \"udp\"\nforwarding = \"dsr\"\n\
         [[vip.backend]]\naddress = \"10.0.1.1\"\nmac = \"02:00:00:00:00:01\"\n"
    ))
    .config;
    let c = load(Path::new(REFERENCE))
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    for c in [&small, &c] {
        let mut parts = daemon_toml(&c.daemon).expect("TOML");
        for v in &c.vips {
            parts.push_str(&vip_toml(v).expect("TOML"));
        }
        assert_eq!(parts, c.to_toml().expect("TOML"));
        let texts: Vec<std::sync::Arc<str>> = c
            .vips
            .iter()
            .map(|v| vip_toml(v).expect("TOML").into())
            .collect();
        assert_eq!(
            crate::fingerprint::config_from_parts(c, &texts).expect("TOML"),
            crate::fingerprint::config(c).expect("TOML")
        );
    }
}

/// How long validating 4096 VIPs × 64 backends takes, through the text and through the
/// model (`cargo test -p sluice-core --release --lib -- --ignored --nocapture model_scale`).
#[test]
#[ignore = "a measurement"]
fn model_scale_timing() {
    let mut text = String::from(
        "[daemon]\ninterface = \"eth0\"\nvip_capacity = 4096\nbackend_capacity = 300000\n\
         table_capacity = 8000000\n",
    );
    for v in 0..4096u32 {
        text.push_str(&format!(
            "[[vip]]\naddress = \"10.{}.{}.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\ntable_size = 641\n",
            v / 256,
            v % 256
        ));
        for b in 0..64u32 {
            text.push_str(&format!(
                "[[vip.backend]]\naddress = \"172.{}.{}.{}\"\n",
                16 + v / 256,
                v % 256,
                b + 1
            ));
        }
    }
    let t = std::time::Instant::now();
    let c = parse(&text, "scale")
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    eprintln!("parse (text) {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let out = c.to_toml().expect("TOML");
    eprintln!("to_toml {:?} ({} bytes)", t.elapsed(), out.len());
    let t = std::time::Instant::now();
    let _ = parse(&out, "scale").expect("valid");
    eprintln!("parse (exported) {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let m = validate_model(&c, "scale").expect("valid");
    eprintln!("validate_model {:?}", t.elapsed());
    assert_eq!(m.config, c);
    let t = std::time::Instant::now();
    let mut c2 = c.clone();
    eprintln!("clone {:?}", t.elapsed());
    c2.vips[7].backends[0].weight = 3;
    let t = std::time::Instant::now();
    let eq = c2 == c;
    eprintln!("eq {:?} {eq}", t.elapsed());
    let t = std::time::Instant::now();
    let s = crate::persist::merge::summary(&c, &c2, 8);
    eprintln!("summary {:?} {s}", t.elapsed());
    let t = std::time::Instant::now();
    let st = crate::state::State::new(c.clone());
    eprintln!("State::new {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let _ = crate::fingerprint::config(&c);
    eprintln!("fingerprint {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let next = st.with_config(c2);
    eprintln!("with_config {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let _ = next.desired();
    eprintln!("desired {:?}", t.elapsed());
}
