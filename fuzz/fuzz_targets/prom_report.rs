//! The Prometheus text format of the load reports (`sluice_core::load::prom::parse`,
//! `prom::report`) and the metric selection on top of it (`presets::Selector::parse` for a
//! `[vip.load]` selector, the presets). The first byte picks the selectors: a preset, or a
//! selector written on the first line. Invariants: a selector prints back to itself; every
//! sample has a metric name and label names; a selector made of a sample's name and labels
//! matches it, selects only series of that name, and gives a figure; figures are never NaN
//! and the KV-cache use is within 0..=1.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::load::{
    presets::{Preset, Selector, Selectors, is_label_name, is_metric_name},
    prom,
};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (selectors, page) = match pick % 5 {
        0 => (Preset::Vllm.selectors(), text),
        1 => (Preset::Tgi.selectors(), text),
        2 => (Preset::Sglang.selectors(), text),
        3 => (Preset::Triton.selectors(), text),
        _ => {
            let (first, page) = text.split_once('\n').unwrap_or((text, ""));
            let Ok(sel) = Selector::parse(first) else {
                return;
            };
            let printed = sel.to_string();
            assert_eq!(
                Selector::parse(&printed).as_ref(),
                Ok(&sel),
                "selector round trip: {printed}"
            );
            let s = Selectors {
                waiting: vec![sel.clone()],
                running: vec![sel.clone()],
                kv_cache: vec![sel],
            };
            (s, page)
        }
    };
    let check = |r: &sluice_core::load::Report| {
        for v in [r.waiting, r.running, r.kv_cache].into_iter().flatten() {
            assert!(!v.is_nan(), "a NaN figure: {r:?}");
        }
        if let Some(kv) = r.kv_cache {
            assert!((0.0..=1.0).contains(&kv), "KV-cache use {kv}");
        }
    };
    let samples = prom::parse(page);
    match prom::report(page, &selectors) {
        Ok(r) => check(&r),
        Err(e) => {
            assert!(
                samples.as_ref().is_err_and(|p| *p == e),
                "report and parse disagree"
            );
            let _ = e.to_string();
            return;
        }
    }
    let samples = samples.expect("report succeeded");
    for s in samples.iter().take(64) {
        assert!(is_metric_name(s.name), "sample name {:?}", s.name);
        assert!(s.labels.iter().all(|(k, _)| is_label_name(k)), "{s:?}");
        let sel = Selector {
            name: s.name.to_owned(),
            labels: s
                .labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        };
        assert!(sel.matches(s.name, &s.labels), "{sel} does not match {s:?}");
        // What the selector selects has its name.
        for other in &samples {
            if sel.matches(other.name, &other.labels) {
                assert_eq!(other.name, s.name);
            }
        }
        // Printed and parsed back, the selector is the same (label values escaped).
        assert_eq!(Selector::parse(&sel.to_string()).as_ref(), Ok(&sel));
        let r = prom::report(
            page,
            &Selectors {
                waiting: vec![sel],
                ..Selectors::default()
            },
        )
        .expect("the page parsed");
        assert!(r.waiting.is_some(), "{s:?} selected nothing");
        check(&r);
    }
});
