//! An LLM-like lab backend and a load generator, for inference-aware balancing (issue 14).
//!
//! # The simulated model server ([`LlmServer`], `sluice lab llm-backend`)
//!
//! A simulator, not a model: it produces `tok ` tokens on a timetable that behaves like a
//! GPU inference server under continuous batching, and exports the load a balancer would
//! read. HTTP/1.1 with keep-alive (a connection carries several requests), on port
//! [`LLM_PORT`] (8000) by default:
//!
//! - `POST /v1/completions`, an OpenAI-style JSON body: `prompt` (a string; a word counts
//!   as a token) or `prompt_tokens` (a number), `max_tokens` (default 16; exactly this
//!   many tokens are generated), `stream` (default false). Streaming answers
//!   `text/event-stream` (chunked): `data: {"choices":[{"index":0,"text":"tok "}]}` a
//!   token, then `data: [DONE]`. Otherwise one JSON `text_completion` with `usage`.
//!   Every response has `X-Backend: NAME`.
//! - `GET /metrics`: Prometheus text with vLLM's names, from the engine's real queue and
//!   batch, labelled `engine="0"` and `model_name`: `vllm:num_requests_waiting`,
//!   `vllm:num_requests_running`, `vllm:kv_cache_usage_perc` (a fraction, 0..=1).
//! - `GET /health`: 200.
//!
//! The engine ([`model::Engine`], pure, on simulated time) batches at most `batch`
//! sequences; more wait in a FIFO queue. Each step admits from the queue, then lasts
//! `prefill + decode` over `speed`, and gives each running sequence one token:
//!
//! | [`ModelParams`] field | default | meaning |
//! |---|---|---|
//! | `model_name` | `sluice-sim` | the `model_name` label |
//! | `batch` | 16 | most sequences decoding at once |
//! | `prefill_ms_per_1k_tokens` | 40 | prefill time of the prompts admitted in a step, per 1000 tokens |
//! | `decode_base_ms` | 20 | one decode step with one sequence |
//! | `decode_alpha` | 0.05 | decode step = `decode_base_ms × (1 + alpha × (batch − 1))` |
//! | `speed` | 1.0 | this GPU's speed (0.5: every step takes twice as long) |
//! | `kv_capacity_tokens` | 32768 | KV cache; use = Σ (prompt + generated) of running sequences / capacity; a prompt that does not fit waits |
//!
//! # The load generator ([`loadgen`])
//!
//! A seeded, replayable [`loadgen::Trace`] of requests with log-normal prompt and output
//! lengths (and Poisson arrivals for open loop), run from a lab client's namespace by
//! `concurrency` clients, several requests a connection; per request TTFT, mean
//! inter-token time, total time, tokens; a [`loadgen::Summary`] with p50/p95/p99 and
//! throughput.

pub mod bench;
pub mod client;
pub mod loadgen;
pub mod model;
pub mod scenario;
mod server;
pub mod sim;

pub use self::{
    model::{Load, ModelParams, ParamError},
    server::{LLM_PORT, LlmServer},
};

/// Why the LLM server or its client failed.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("{0}")]
    Io(String),
    #[error("bad response: {0}")]
    Protocol(String),
}

impl From<std::io::Error> for LlmError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

/// The three vLLM gauges: name, help.
const GAUGES: [(&str, &str); 3] = [
    (
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
    ),
    (
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
    ),
    (
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
    ),
];

/// `GET /metrics`' body for `load`.
pub fn metrics_text(model: &str, load: &Load) -> String {
    let values = [load.running as f64, load.waiting as f64, load.kv_usage];
    let mut out = String::new();
    for ((name, help), v) in GAUGES.iter().zip(values) {
        out += &format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{engine=\"0\",model_name=\"{model}\"}} {v:?}\n"
        );
    }
    out
}

/// Read the three gauges back from Prometheus text (the first sample of each).
pub fn parse_metrics(text: &str) -> Result<Load, LlmError> {
    let value = |name: &str| -> Result<f64, LlmError> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| LlmError::Protocol(format!("metric {name} missing or not a number")))
    };
    let count = |name| {
        let v = value(name)?;
        if v < 0.0 || v.fract() != 0.0 {
            return Err(LlmError::Protocol(format!("{name} {v}: not a count")));
        }
        Ok(v as usize)
    };
    Ok(Load {
        running: count(GAUGES[0].0)?,
        waiting: count(GAUGES[1].0)?,
        kv_usage: value(GAUGES[2].0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_round_trip() {
        let load = Load {
            waiting: 3,
            running: 16,
            kv_usage: 0.25,
        };
        let text = metrics_text("m", &load);
        assert!(text.contains("# TYPE vllm:num_requests_waiting gauge\n"));
        assert!(text.contains("vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 16.0\n"));
        assert_eq!(parse_metrics(&text).expect("parses"), load);
        assert!(parse_metrics("vllm:num_requests_running 1\n").is_err());
    }
}
