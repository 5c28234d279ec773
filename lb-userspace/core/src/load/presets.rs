//! Metric selectors (`name{label="value",...}`, a small part of PromQL) and the presets of
//! the model servers sluice knows: which of their metrics say how many requests wait, how
//! many run, and how full the KV cache is.

use std::fmt;

/// One series selector: a metric name and label matchers that must all match (equality
/// only).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Selector {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

/// For each figure of a [`super::Report`], the selectors tried in order: the first whose
/// metric the page has gives the figure (a later one is a fallback for older servers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selectors {
    pub waiting: Vec<Selector>,
    pub running: Vec<Selector>,
    pub kv_cache: Vec<Selector>,
}

/// A model server whose metric names sluice knows (`[vip.load] preset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    Vllm,
    Tgi,
    Sglang,
    Triton,
}

impl Preset {
    /// The selectors of this server's metrics. Sources:
    /// - vLLM (V1 engine, `vllm/v1/metrics/loggers.py`): `vllm:num_requests_waiting`,
    ///   `vllm:num_requests_running`, `vllm:kv_cache_usage_perc` (a fraction 0..1 despite
    ///   the name; before vLLM 0.10 it was `vllm:gpu_cache_usage_perc`, kept as fallback).
    ///   One series per engine (`engine="0"`, ...): they are summed.
    /// - TGI (text-generation-inference router): `tgi_queue_size`, `tgi_batch_current_size`;
    ///   it exports no KV-cache use.
    /// - SGLang: `sglang:num_queue_reqs`, `sglang:num_running_reqs`, `sglang:token_usage`
    ///   (fraction of the KV token pool in use).
    /// - Triton with the TensorRT-LLM backend (the tensorrtllm_backend README's metrics
    ///   section; the same selectors the Kubernetes Gateway API Inference Extension
    ///   documents for Triton): `nv_trt_llm_request_metrics{request_type="waiting"}` and
    ///   `{request_type="scheduled"}`, `nv_trt_llm_kv_cache_block_metrics
    ///   {kv_cache_block_type="fraction"}`.
    pub fn selectors(self) -> Selectors {
        let s = |name: &str| Selector {
            name: name.to_owned(),
            labels: Vec::new(),
        };
        let l = |name: &str, label: &str, value: &str| Selector {
            name: name.to_owned(),
            labels: vec![(label.to_owned(), value.to_owned())],
        };
        match self {
            Preset::Vllm => Selectors {
                waiting: vec![s("vllm:num_requests_waiting")],
                running: vec![s("vllm:num_requests_running")],
                kv_cache: vec![
                    s("vllm:kv_cache_usage_perc"),
                    s("vllm:gpu_cache_usage_perc"),
                ],
            },
            Preset::Tgi => Selectors {
                waiting: vec![s("tgi_queue_size")],
                running: vec![s("tgi_batch_current_size")],
                kv_cache: Vec::new(),
            },
            Preset::Sglang => Selectors {
                waiting: vec![s("sglang:num_queue_reqs")],
                running: vec![s("sglang:num_running_reqs")],
                kv_cache: vec![s("sglang:token_usage")],
            },
            Preset::Triton => Selectors {
                waiting: vec![l("nv_trt_llm_request_metrics", "request_type", "waiting")],
                running: vec![l("nv_trt_llm_request_metrics", "request_type", "scheduled")],
                kv_cache: vec![l(
                    "nv_trt_llm_kv_cache_block_metrics",
                    "kv_cache_block_type",
                    "fraction",
                )],
            },
        }
    }

    /// The port the server serves its metrics on by default: vLLM's API port (8000), TGI's
    /// launcher default (3000), SGLang's (30000), Triton's metrics port (8002).
    pub fn default_port(self) -> u16 {
        match self {
            Preset::Vllm => 8000,
            Preset::Tgi => 3000,
            Preset::Sglang => 30000,
            Preset::Triton => 8002,
        }
    }
}

/// Whether `s` is a metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// Whether `s` is a label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

impl Selector {
    /// Parses `name` or `name{label="value",...}` (values quoted, with the exposition
    /// format's escapes `\\`, `\"`, `\n`); the error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (name, rest) = match s.find('{') {
            Some(i) => (&s[..i], Some(&s[i..])),
            None => (s, None),
        };
        let name = name.trim();
        if !is_metric_name(name) {
            return Err(format!(
                "{name:?} is not a metric name (letters, digits, '_' and ':', not starting with a digit)"
            ));
        }
        let labels = match rest {
            None => Vec::new(),
            Some(rest) => {
                let (labels, after) = super::prom::labels(rest)?;
                if !after.trim().is_empty() {
                    return Err(format!("unexpected {:?} after the labels", after.trim()));
                }
                labels
            }
        };
        Ok(Self {
            name: name.to_owned(),
            labels,
        })
    }

    /// Whether a series named `name` with `labels` matches.
    pub fn matches(&self, name: &str, labels: &[(&str, String)]) -> bool {
        self.name == name
            && self
                .labels
                .iter()
                .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if self.labels.is_empty() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, (k, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            write!(f, "{k}=\"{v}\"")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_print_back() {
        for s in [
            "vllm:num_requests_waiting",
            "nv_trt_llm_request_metrics{request_type=\"waiting\"}",
            "m{a=\"1\",b=\"x\\\"y\\\\z\\nw\"}",
        ] {
            let sel = Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(sel.to_string(), s);
        }
        let sel = Selector::parse(" m { a = \"1\" , } ").unwrap();
        assert_eq!(sel.labels, vec![("a".to_owned(), "1".to_owned())]);
        for (bad, why) in [
            ("", "not a metric name"),
            ("1abc", "not a metric name"),
            ("a-b", "not a metric name"),
            ("m{a=1}", "quoted"),
            ("m{a=\"1\"", "unclosed"),
            ("m{a=\"1\"} x", "after the labels"),
            ("m{1a=\"1\"}", "label name"),
            ("m{a=\"\\q\"}", "escape"),
        ] {
            let e = Selector::parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn every_preset_names_valid_metrics() {
        for p in [Preset::Vllm, Preset::Tgi, Preset::Sglang, Preset::Triton] {
            let s = p.selectors();
            for sel in s.waiting.iter().chain(&s.running).chain(&s.kv_cache) {
                assert_eq!(Selector::parse(&sel.to_string()).as_ref(), Ok(sel));
            }
            assert!(!s.waiting.is_empty() && !s.running.is_empty());
        }
    }
}
