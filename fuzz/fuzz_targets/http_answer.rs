//! HTTP answers to the daemon's GETs (`sluice_daemon::health::get_on`, hyper's HTTP/1
//! client as `health::get` drives it, on an in-memory connection answered with the input):
//! the health check's status verdict (`health::judge_status`), the load reader's page
//! (`load::page_report`: status, UTF-8, Prometheus text, the preset's selectors) and the
//! autoscaler's backend metric (`autoscale::driver::metric_value`). The first byte picks the
//! body limit: none (the health check), the load reader's, or a small one. A body is never
//! longer than its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::{config, load::presets::Preset};
use sluice_daemon::{autoscale::driver::metric_value, health, load};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn spec() -> config::LoadConfig {
    config::LoadConfig {
        source: config::LoadSource::Prometheus,
        port: 8000,
        path: "/metrics".to_owned(),
        interval_ms: 250,
        timeout_ms: 250,
        stale_after_ms: 1000,
        preset: Some(Preset::Vllm),
        waiting: None,
        running: None,
        kv_cache: None,
        queue_limit: 5,
        kv_limit_percent: 80,
        in_flight: config::InFlight::Reported,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, answer)) = data.split_first() else {
        return;
    };
    let limit = match pick % 3 {
        0 => None,
        1 => Some(load::MAX_PAGE),
        _ => Some(16),
    };
    let answer = answer.to_vec();
    let got = sluice_fuzz::runtime().block_on(async move {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        // The backend: takes the request's head, answers, closes its side, and reads on
        // until the client is done with the connection.
        let serve = async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.ends_with(b"\r\n\r\n") {
                match server.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = server.write_all(&answer).await;
            let _ = server.shutdown().await;
            while matches!(server.read(&mut buf).await, Ok(n) if n > 0) {}
        };
        let get = health::get_on(
            client,
            "192.0.2.1".to_owned(),
            "/metrics",
            "sluice-fuzz",
            limit,
        );
        tokio::join!(serve, get).1
    });
    let Ok(answer) = got else { return };
    assert!(
        (100..=999).contains(&answer.status),
        "status {}",
        answer.status
    );
    match (limit, &answer.body) {
        (None, None) => {}
        (Some(l), Some(b)) => assert!(b.len() <= l, "a {}-byte body over {l}", b.len()),
        (l, b) => panic!("body limit {l:?}, body {b:?}"),
    }
    let _ = health::judge_status(answer.status, (200, 299));
    if let Some(v) = metric_value(&answer) {
        assert!(v.is_finite());
    }
    if let Ok(r) = load::page_report(&answer, &spec()) {
        assert!(r.kv_cache.is_none_or(|k| (0.0..=1.0).contains(&k)));
    }
});
