//! The pure engine model of the simulated model server: continuous batching on simulated
//! time (microseconds), no I/O, no clock. [`Engine::submit`] queues a request,
//! [`Engine::advance`] runs the engine up to a time and returns the tokens and completions
//! that happened, [`Engine::next_event_at`] says when the next thing happens.
//!
//! One engine iteration ("step"), as in vLLM without chunked prefill:
//!
//! 1. admit waiting requests, first come first served, while fewer than
//!    [`ModelParams::batch`] run and the KV cache has room for the prompt (an empty batch
//!    always admits one, so an oversized prompt does not stall the queue);
//! 2. the step lasts `prefill + decode`, divided by [`ModelParams::speed`]:
//!    - `prefill = prefill_ms_per_1k_tokens × (prompt tokens admitted in this step) / 1000`
//!    - `decode = decode_base_ms × (1 + decode_alpha × (running − 1))`;
//! 3. at its end every running sequence has one more token (a newly admitted one: its first
//!    token); those with `max_tokens` tokens finish and leave the batch.
//!
//! A request arriving during a step waits for its end. KV-cache use is the sum of the
//! running sequences' prompt and generated tokens over [`ModelParams::kv_capacity_tokens`].

use std::collections::VecDeque;

/// The simulated server's parameters (`sluice lab llm-backend` flags).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelParams {
    /// The model name served (metrics label `model_name`). Default `sluice-sim`.
    pub model_name: String,
    /// Most sequences decoding at once (continuous batching). Default 16.
    pub batch: usize,
    /// Prefill time per 1000 prompt tokens, ms. Default 40.
    pub prefill_ms_per_1k_tokens: f64,
    /// Decode time of one token with a batch of one, ms. Default 20.
    pub decode_base_ms: f64,
    /// How much each further sequence in the batch slows a decode step (fraction). Default 0.05.
    pub decode_alpha: f64,
    /// Speed factor of this "GPU" (2.0: twice as fast, 0.5: half as fast). Default 1.0.
    pub speed: f64,
    /// KV-cache capacity in tokens. Default 32768.
    pub kv_capacity_tokens: u64,
}

impl Default for ModelParams {
    fn default() -> Self {
        Self {
            model_name: "sluice-sim".into(),
            batch: 16,
            prefill_ms_per_1k_tokens: 40.0,
            decode_base_ms: 20.0,
            decode_alpha: 0.05,
            speed: 1.0,
            kv_capacity_tokens: 32768,
        }
    }
}

/// Why parameters are unusable.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid model parameter {field}: {message}")]
pub struct ParamError {
    pub field: &'static str,
    pub message: String,
}

impl ModelParams {
    /// Check every field (positive, finite).
    pub fn validate(&self) -> Result<(), ParamError> {
        let bad = |field, message: &str| {
            Err(ParamError {
                field,
                message: message.into(),
            })
        };
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if self.batch == 0 {
            return bad("batch", "must be at least 1");
        }
        if !pos(self.speed) {
            return bad("speed", "must be a positive number");
        }
        if !pos(self.decode_base_ms) {
            return bad("decode_base_ms", "must be a positive number");
        }
        if !(self.prefill_ms_per_1k_tokens.is_finite() && self.prefill_ms_per_1k_tokens >= 0.0) {
            return bad("prefill_ms_per_1k_tokens", "must be 0 or more");
        }
        if !(self.decode_alpha.is_finite() && self.decode_alpha >= 0.0) {
            return bad("decode_alpha", "must be 0 or more");
        }
        if self.kv_capacity_tokens == 0 {
            return bad("kv_capacity_tokens", "must be at least 1");
        }
        if self.model_name.is_empty() || self.model_name.contains(['"', '\\', '\n']) {
            return bad(
                "model_name",
                "must be non-empty, without quotes or backslashes",
            );
        }
        Ok(())
    }

    /// Prefill time of `tokens` prompt tokens, µs.
    pub fn prefill_us(&self, tokens: u64) -> u64 {
        (self.prefill_ms_per_1k_tokens * tokens as f64 / self.speed).round() as u64
    }

    /// One decode step with `running` sequences, µs.
    pub fn decode_us(&self, running: usize) -> u64 {
        let extra = running.saturating_sub(1) as f64;
        us(self.decode_base_ms * (1.0 + self.decode_alpha * extra) / self.speed)
    }
}

fn us(ms: f64) -> u64 {
    // Non-negative and finite by validation; at least 1 µs so time always moves.
    ((ms * 1000.0).round() as u64).max(1)
}

/// What [`Engine::advance`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Request `id` produced token number `index` (0: the first) at `at` µs.
    Token { id: u64, index: u32, at: u64 },
    /// Request `id` finished (after its last token) at `at` µs.
    Done { id: u64, at: u64 },
}

/// The engine's load, as `GET /metrics` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    /// `vllm:num_requests_waiting`.
    pub waiting: usize,
    /// `vllm:num_requests_running`.
    pub running: usize,
    /// `vllm:kv_cache_usage_perc` (a fraction, 0..=1).
    pub kv_usage: f64,
}

#[derive(Clone, Debug)]
struct Seq {
    id: u64,
    prompt: u64,
    max_tokens: u32,
    generated: u32,
}

/// The continuous-batching engine on simulated time (µs).
#[derive(Clone, Debug)]
pub struct Engine {
    params: ModelParams,
    now: u64,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    /// When the step in progress ends; `None`: idle.
    step_end: Option<u64>,
    /// When the step in progress started, and the prompt tokens it prefills.
    step_start: u64,
    step_prefill: u64,
}

impl Engine {
    /// An idle engine at time 0. `params` must be valid ([`ModelParams::validate`]).
    pub fn new(params: ModelParams) -> Self {
        Self {
            params,
            now: 0,
            waiting: VecDeque::new(),
            running: Vec::new(),
            step_end: None,
            step_start: 0,
            step_prefill: 0,
        }
    }

    /// Its parameters.
    pub fn params(&self) -> &ModelParams {
        &self.params
    }

    /// The engine's time, µs.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Queue request `id` at `at` µs (after advancing to it; events up to `at` are
    /// returned). `max_tokens` 0 counts as 1.
    pub fn submit(&mut self, at: u64, id: u64, prompt: u64, max_tokens: u32) -> Vec<Event> {
        let events = self.advance(at);
        self.waiting.push_back(Seq {
            id,
            prompt,
            max_tokens: max_tokens.max(1),
            generated: 0,
        });
        if self.step_end.is_none() {
            self.start_step();
        } else if self.step_start == self.now {
            // Arrived the instant the step began: it joins that step.
            self.plan_step();
        }
        events
    }

    /// Remove request `id` (its client went away), waiting or running.
    pub fn cancel(&mut self, id: u64) {
        self.waiting.retain(|s| s.id != id);
        self.running.retain(|s| s.id != id);
    }

    /// When the next step ends (the next events), if any.
    pub fn next_event_at(&self) -> Option<u64> {
        self.step_end
    }

    /// Run the engine up to `to` µs; the events of every step that ended by then.
    pub fn advance(&mut self, to: u64) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(end) = self.step_end
            && end <= to
        {
            self.now = end;
            self.step_end = None;
            self.finish_step(&mut events);
            if !self.running.is_empty() || !self.waiting.is_empty() {
                self.start_step();
            }
        }
        self.now = self.now.max(to);
        events
    }

    /// Waiting, running and KV-cache use now.
    pub fn load(&self) -> Load {
        let used: u64 = self
            .running
            .iter()
            .map(|s| s.prompt + u64::from(s.generated))
            .sum();
        Load {
            waiting: self.waiting.len(),
            running: self.running.len(),
            kv_usage: (used as f64 / self.params.kv_capacity_tokens as f64).min(1.0),
        }
    }

    fn kv_used(&self) -> u64 {
        self.running
            .iter()
            .map(|s| s.prompt + u64::from(s.generated))
            .sum()
    }

    fn start_step(&mut self) {
        self.step_start = self.now;
        self.step_prefill = 0;
        self.plan_step();
    }

    /// Admit what fits into the step starting at `step_start`, and set its end.
    fn plan_step(&mut self) {
        let mut prefill_tokens = self.step_prefill;
        let mut used = self.kv_used();
        while self.running.len() < self.params.batch
            && let Some(next) = self.waiting.front()
        {
            let fits = used + next.prompt <= self.params.kv_capacity_tokens;
            if !fits && !self.running.is_empty() {
                break;
            }
            let Some(seq) = self.waiting.pop_front() else {
                break;
            };
            prefill_tokens += seq.prompt;
            used += seq.prompt;
            self.running.push(seq);
        }
        self.step_prefill = prefill_tokens;
        if self.running.is_empty() {
            self.step_end = None;
            return;
        }
        let d = self.params.prefill_us(prefill_tokens) + self.params.decode_us(self.running.len());
        self.step_end = Some(self.step_start + d);
    }

    fn finish_step(&mut self, events: &mut Vec<Event>) {
        let at = self.now;
        for s in &mut self.running {
            events.push(Event::Token {
                id: s.id,
                index: s.generated,
                at,
            });
            s.generated += 1;
            if s.generated >= s.max_tokens {
                events.push(Event::Done { id: s.id, at });
            }
        }
        self.running.retain(|s| s.generated < s.max_tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ModelParams {
        ModelParams {
            batch: 4,
            prefill_ms_per_1k_tokens: 100.0,
            decode_base_ms: 10.0,
            decode_alpha: 0.1,
            kv_capacity_tokens: 10_000,
            ..ModelParams::default()
        }
    }

    fn tokens(events: &[Event], id: u64) -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match *e {
                Event::Token { id: i, at, .. } if i == id => Some(at),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn one_request_prefill_then_decode() {
        let mut e = Engine::new(params());
        e.submit(0, 1, 1000, 3);
        let ev = e.advance(1_000_000);
        // Step 1: prefill 100 ms + decode 10 ms; then 10 ms a token (batch 1).
        assert_eq!(tokens(&ev, 1), vec![110_000, 120_000, 130_000]);
        assert_eq!(ev.last(), Some(&Event::Done { id: 1, at: 130_000 }));
        assert_eq!(e.load(), Load::default());
        assert_eq!(e.next_event_at(), None);
    }

    #[test]
    fn batch_limit_and_fifo_queue() {
        let mut e = Engine::new(params());
        for id in 0..6 {
            e.submit(0, id, 100, 5);
        }
        let l = e.load();
        assert_eq!((l.waiting, l.running), (2, 4), "{l:?}");
        let ev = e.advance(u64::MAX / 2);
        // The queued ones start only after the first four finished, in order.
        let first_done = ev
            .iter()
            .find_map(|x| match x {
                Event::Done { at, .. } => Some(*at),
                Event::Token { .. } => None,
            })
            .expect("a completion");
        let t4 = tokens(&ev, 4)[0];
        let t5 = tokens(&ev, 5)[0];
        assert!(
            t4 > first_done && t5 == t4,
            "t4 {t4} t5 {t5} done {first_done}"
        );
        assert_eq!(
            ev.iter()
                .filter(|x| matches!(x, Event::Done { .. }))
                .count(),
            6
        );
    }

    #[test]
    fn decode_slows_with_batch_size() {
        let p = params();
        assert_eq!(p.decode_us(1), 10_000);
        assert_eq!(p.decode_us(4), 13_000);
        let mut e = Engine::new(ModelParams {
            prefill_ms_per_1k_tokens: 0.0,
            ..p
        });
        for id in 0..4 {
            e.submit(0, id, 10, 3);
        }
        let ev = e.advance(1_000_000);
        assert_eq!(tokens(&ev, 0), vec![13_000, 26_000, 39_000]);
    }

    #[test]
    fn request_during_a_step_waits_for_its_end_and_prefill_stalls_decode() {
        let mut e = Engine::new(params());
        e.submit(0, 1, 0, 10); // decodes at 10 ms a step
        assert!(e.submit(5_000, 2, 2000, 2).is_empty());
        assert_eq!(e.load().waiting, 1);
        let ev = e.advance(1_000_000);
        let t1 = tokens(&ev, 1);
        let t2 = tokens(&ev, 2);
        // 2 joins at 10 ms: that step has 200 ms prefill + 11 ms decode (batch 2).
        assert_eq!(t1[..2], [10_000, 221_000]);
        assert_eq!(t2, vec![221_000, 232_000]);
    }

    #[test]
    fn kv_usage_and_kv_admission() {
        let mut e = Engine::new(ModelParams {
            kv_capacity_tokens: 1000,
            ..params()
        });
        e.submit(0, 1, 400, 100);
        e.submit(0, 2, 400, 100);
        e.submit(0, 3, 400, 100); // does not fit: waits
        let l = e.load();
        assert_eq!((l.running, l.waiting), (2, 1));
        assert!((l.kv_usage - 0.8).abs() < 1e-9, "{l:?}");
        e.advance(e.next_event_at().expect("a step"));
        assert!((e.load().kv_usage - 0.802).abs() < 1e-9);
        // An oversized prompt still runs when the batch is empty.
        let mut e = Engine::new(ModelParams {
            kv_capacity_tokens: 100,
            ..params()
        });
        e.submit(0, 1, 500, 1);
        assert_eq!(e.load().running, 1);
        assert!((e.load().kv_usage - 1.0).abs() < 1e-9);
    }

    #[test]
    fn slower_backend_takes_proportionally_longer() {
        let run = |speed| {
            let mut e = Engine::new(ModelParams { speed, ..params() });
            e.submit(0, 1, 1000, 10);
            let ev = e.advance(u64::MAX / 2);
            tokens(&ev, 1)
        };
        let fast = run(1.0);
        let slow = run(0.5);
        assert_eq!(fast.len(), 10);
        for (f, s) in fast.iter().zip(&slow) {
            assert_eq!(*s, 2 * f);
        }
    }

    #[test]
    fn cancel_frees_the_slot() {
        let mut e = Engine::new(params());
        for id in 0..5 {
            e.submit(0, id, 10, 100);
        }
        e.cancel(0);
        e.advance(e.next_event_at().expect("a step"));
        assert_eq!(e.load().running, 4);
        assert_eq!(e.load().waiting, 0);
    }

    #[test]
    fn validation_names_the_field() {
        let bad = ModelParams {
            speed: 0.0,
            ..ModelParams::default()
        };
        assert_eq!(bad.validate().map_err(|e| e.field), Err("speed"));
        let bad = ModelParams {
            batch: 0,
            ..ModelParams::default()
        };
        assert_eq!(bad.validate().map_err(|e| e.field), Err("batch"));
        assert_eq!(ModelParams::default().validate(), Ok(()));
    }
}
