use super::*;
use crate::load::presets::Preset;

/// vLLM V1 with two engines (data parallel), as `/metrics` shows it (abridged).
const VLLM: &str = "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
# TYPE vllm:num_requests_running gauge\n\
vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 5.0\n\
vllm:num_requests_running{engine=\"1\",model_name=\"m\"} 2.0\n\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n\
# TYPE vllm:num_requests_waiting gauge\n\
vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 3\n\
vllm:num_requests_waiting{engine=\"1\",model_name=\"m\"} 4\n\
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n\
# TYPE vllm:kv_cache_usage_perc gauge\n\
vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.25\n\
vllm:kv_cache_usage_perc{engine=\"1\",model_name=\"m\"} 0.125\n\
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n\
# TYPE vllm:prompt_tokens_total counter\n\
vllm:prompt_tokens_total{engine=\"0\",model_name=\"m\"} 1.2345e+06\n\
vllm:e2e_request_latency_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"m\"} 42.0\n";

#[test]
fn vllm_two_engines_are_summed() {
    let r = report(VLLM, &Preset::Vllm.selectors()).unwrap();
    assert_eq!(r.waiting, Some(7.0));
    assert_eq!(r.running, Some(7.0));
    assert_eq!(r.kv_cache, Some(0.375));
    assert_eq!(r.agent, None);
}

#[test]
fn vllm_falls_back_to_the_deprecated_kv_metric() {
    let old = "vllm:num_requests_waiting{model_name=\"m\"} 1\n\
               vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5\n";
    let r = report(old, &Preset::Vllm.selectors()).unwrap();
    assert_eq!(
        (r.waiting, r.running, r.kv_cache),
        (Some(1.0), None, Some(0.5))
    );
}

#[test]
fn tgi_sglang_triton() {
    let tgi = "# TYPE tgi_queue_size gauge\ntgi_queue_size 12\n# TYPE tgi_batch_current_size gauge\n\
               tgi_batch_current_size 32\ntgi_batch_current_max_tokens 9000\n";
    let r = report(tgi, &Preset::Tgi.selectors()).unwrap();
    assert_eq!(
        (r.waiting, r.running, r.kv_cache),
        (Some(12.0), Some(32.0), None)
    );

    let sglang = "# HELP sglang:num_queue_reqs The number of requests in the waiting queue\n\
                  # TYPE sglang:num_queue_reqs gauge\n\
                  sglang:num_queue_reqs{model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 2.0\n\
                  sglang:num_running_reqs{model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 17.0\n\
                  sglang:token_usage{model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 0.58\n";
    let r = report(sglang, &Preset::Sglang.selectors()).unwrap();
    assert_eq!(
        (r.waiting, r.running, r.kv_cache),
        (Some(2.0), Some(17.0), Some(0.58))
    );

    let triton = "# HELP nv_trt_llm_request_metrics TRT LLM request metrics\n\
                  # TYPE nv_trt_llm_request_metrics gauge\n\
                  nv_trt_llm_request_metrics{model=\"tensorrt_llm\",request_type=\"waiting\",version=\"1\"} 6\n\
                  nv_trt_llm_request_metrics{model=\"tensorrt_llm\",request_type=\"context\",version=\"1\"} 1\n\
                  nv_trt_llm_request_metrics{model=\"tensorrt_llm\",request_type=\"scheduled\",version=\"1\"} 9\n\
                  nv_trt_llm_request_metrics{model=\"tensorrt_llm\",request_type=\"max\",version=\"1\"} 512\n\
                  # TYPE nv_trt_llm_kv_cache_block_metrics gauge\n\
                  nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"max\",model=\"tensorrt_llm\",version=\"1\"} 11147\n\
                  nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"fraction\",model=\"tensorrt_llm\",version=\"1\"} 0.75\n";
    let r = report(triton, &Preset::Triton.selectors()).unwrap();
    assert_eq!(
        (r.waiting, r.running, r.kv_cache),
        (Some(6.0), Some(9.0), Some(0.75))
    );
}

#[test]
fn edge_cases_of_the_format() {
    let text = "\r\n  # a comment\r\n\r\n\
                m{a=\"x\\\\y\\\"z\\nw\"} 1 1712345678000\r\n\
                m{a=\"other\"}\t2\r\n\
                inf +Inf\nninf -Inf\nnan NaN\nempty{} 3\ntrailing{a=\"1\",} 4\nneg -1.5e-3\n";
    let samples = parse(text).unwrap();
    assert_eq!(samples.len(), 8);
    assert_eq!(samples[0].labels, vec![("a", "x\\y\"z\nw".to_owned())]);
    assert_eq!(samples[2].value, f64::INFINITY);
    assert_eq!(samples[3].value, f64::NEG_INFINITY);
    assert!(samples[4].value.is_nan());
    let sel = |s: &str| Selectors {
        waiting: vec![Selector::parse(s).unwrap()],
        ..Selectors::default()
    };
    let w = |s: &str| report(text, &sel(s)).unwrap().waiting;
    assert_eq!(w("m{a=\"x\\\\y\\\"z\\nw\"}"), Some(1.0));
    assert_eq!(w("m"), Some(3.0));
    assert_eq!(w("m{a=\"nope\"}"), None);
    assert_eq!(w("nan"), Some(0.0), "NaN series are left out of the sum");
    assert_eq!(w("inf"), Some(0.0));
    assert_eq!(w("absent"), None);
}

#[test]
fn kv_cache_is_clamped() {
    let kv = |v: &str| {
        report(
            &format!("vllm:kv_cache_usage_perc {v}\n"),
            &Preset::Vllm.selectors(),
        )
        .unwrap()
        .kv_cache
    };
    assert_eq!(kv("87.5"), Some(1.0));
    assert_eq!(kv("-0.1"), Some(0.0));
    assert_eq!(kv("0.5"), Some(0.5));
}

#[test]
fn malformed_pages_name_the_line() {
    for (text, line, why) in [
        ("ok 1\nbad\n", 2, "value"),
        ("ok 1\n\n1bad 2\n", 3, "not a metric name"),
        ("m{a=\"1\" 2\n", 1, "expected ','"),
        ("m{a=\"1 2\n", 1, "unclosed"),
        ("m{a=1} 2\n", 1, "quoted"),
        ("m{a=\"\\t\"} 2\n", 1, "escape"),
        ("m one\n", 1, "not a number"),
        ("m 1 2.5\n", 1, "timestamp"),
        ("m 1 2 3\n", 1, "unexpected"),
        ("m{a=\"1\"}2\n", 1, "blank"),
        ("m{-=\"1\"} 2\n", 1, "label name"),
        ("m{a=\"1\"", 1, "unclosed"),
    ] {
        let e = parse(text).expect_err(text);
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.message.contains(why), "{text:?}: {e}");
        assert!(e.to_string().starts_with(&format!("line {line}: ")));
    }
}

/// Random bytes (and random mutations of a real page) never panic.
#[test]
fn no_panic_on_random_input() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"{}=\",\\ \t\n\r#:_aZ09.+-eInfNa\xc3\xa9";
    let selectors = Preset::Triton.selectors();
    for round in 0..4000 {
        let len = (next() % 80) as usize;
        let bytes: Vec<u8> = if round % 2 == 0 {
            (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect()
        } else {
            let mut b = VLLM.as_bytes().to_vec();
            for _ in 0..4 {
                let i = (next() % b.len() as u64) as usize;
                b[i] = (next() & 0xff) as u8;
            }
            b
        };
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse(&text);
        let _ = report(&text, &selectors);
        let _ = Selector::parse(&text);
    }
}
