//! The simulated LLM backend (`sluice_lab::llm`) in a lab backend's namespace, reached
//! from a client directly (no balancer): a streamed completion has exactly `max_tokens`
//! SSE tokens and `[DONE]`, several requests share one keep-alive connection, `/metrics`
//! shows the engine's real queue while 20 requests share a batch of 4, and the load
//! generator runs a bounded seeded trace. Every wait is bounded; the lab is removed on drop.

use std::{
    thread,
    time::{Duration, Instant},
};

use sluice_lab::{
    lab::{Lab, LabSpec, Servers},
    llm::{
        LLM_PORT, LlmServer, ModelParams,
        client::Client,
        loadgen::{self, LoadSpec, LogNormal, Trace, TraceSpec},
        parse_metrics,
    },
};
use sluice_tests::{prefix, require_root, serial};

const TIMEOUT: Duration = Duration::from_secs(10);

fn params(batch: usize) -> ModelParams {
    ModelParams {
        batch,
        decode_base_ms: 5.0,
        prefill_ms_per_1k_tokens: 10.0,
        ..ModelParams::default()
    }
}

#[test]
fn llm_backend_streams_reports_load_and_serves_a_trace() {
    require_root();
    let _serial = serial();
    let lab = Lab::up(
        LabSpec::new(&prefix("llm", "b"))
            .backends(1)
            .ipv6(false)
            .servers(Servers::None),
    )
    .expect("bring the lab up");
    let (client, backend) = (lab.client(0), lab.backend(0));
    let server = LlmServer::start_in(backend, LLM_PORT, params(4)).expect("start the llm server");
    let to = backend.sock4(LLM_PORT);

    // One connection, three streamed completions (keep-alive).
    let mut c = Client::connect(Some(client), to, TIMEOUT).expect("connect");
    for max_tokens in [1, 7, 20] {
        let done = c.complete(100, max_tokens).expect("a completion");
        assert_eq!(done.tokens, max_tokens, "{done:?}");
        assert!(done.done, "no [DONE]: {done:?}");
        assert_eq!(done.backend.as_deref(), Some("backend-1"));
        assert!(done.ttft <= done.total, "{done:?}");
    }
    let (status, text) = c.get("/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains("# TYPE vllm:kv_cache_usage_perc gauge"),
        "{text}"
    );
    assert!(
        text.contains("engine=\"0\",model_name=\"sluice-sim\""),
        "{text}"
    );
    let idle = parse_metrics(&text).expect("metrics parse");
    assert_eq!((idle.running, idle.waiting), (0, 0), "{text}");

    // 20 concurrent requests, batch 4: 4 run, the rest wait, while they last.
    let workers: Vec<_> = (0..20)
        .map(|_| {
            let mut c = Client::connect(Some(client), to, TIMEOUT).expect("connect");
            thread::spawn(move || c.complete(200, 40))
        })
        .collect();
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = None;
    while Instant::now() < deadline {
        let (_, text) = c.get("/metrics").expect("metrics under load");
        let load = parse_metrics(&text).expect("metrics parse");
        // The first arrival may start a step of its own; the next step fills the batch.
        if load.waiting >= 1 && load.running == 4 {
            seen = Some(load);
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let load = seen.expect("/metrics never showed a full batch (4) and a waiting request");
    assert!(load.kv_usage > 0.0 && load.kv_usage <= 1.0, "{load:?}");
    for w in workers {
        let done = w.join().expect("worker").expect("a completion under load");
        assert_eq!(done.tokens, 40);
    }

    // A bounded seeded trace through the load generator: 50 requests, 8 clients,
    // 5 requests a connection.
    let trace = Trace::generate(&TraceSpec {
        seed: 14,
        requests: 50,
        prompt: LogNormal {
            median: 256.0,
            sigma: 1.0,
            min: 8,
            max: 4096,
        },
        output: LogNormal {
            median: 16.0,
            sigma: 0.8,
            min: 2,
            max: 128,
        },
        rate: None,
    });
    let report = loadgen::run(
        Some(client),
        to,
        &trace,
        &LoadSpec {
            concurrency: 8,
            requests_per_conn: 5,
            open_loop: false,
            timeout: TIMEOUT,
        },
    );
    let s = report.summary();
    println!("llm load generator, 50 requests, 8 clients, batch 4:\n{s}");
    assert_eq!((s.requests, s.failures), (50, 0), "{s}");
    assert!(s.ttft.p50 <= s.ttft.p99 && s.ttft.p99 <= s.total.p99, "{s}");
    assert!(s.tokens_per_s > 0.0, "{s}");
    server.stop();
}
