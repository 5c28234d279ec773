//! `[vip.load]`: where and how often each backend's load report is read.

use super::Cx;
use crate::config::raw::RawLoad;
use crate::config::{
    DEFAULT_LOAD_INTERVAL_MS, DEFAULT_LOAD_KV_LIMIT_PERCENT, DEFAULT_LOAD_PATH, DEFAULT_LOAD_PORT,
    DEFAULT_LOAD_QUEUE_LIMIT, InFlight, LOAD_INTERVAL_RANGE, LOAD_STALE_RANGE, LoadConfig,
    LoadSource,
};
use crate::load::presets::{Preset, Selector};

impl Cx<'_> {
    pub(super) fn load(&mut self, path: &str, l: &RawLoad) -> Option<LoadConfig> {
        let at = |key: &str| format!("{path}.{key}");
        let source = self.named::<LoadSource>(&at("source"), l.source.as_ref(), None);
        // `Some(None)`: no preset; `None`: an invalid one (already an error).
        let preset = match &l.preset {
            None => Some(None),
            Some(p) => self.named::<Preset>(&at("preset"), Some(p), None).map(Some),
        };
        let timing = self.load_timing(path, l);
        let waiting = self.selector(&at("waiting"), l.waiting.as_ref());
        let running = self.selector(&at("running"), l.running.as_ref());
        let kv_cache = self.selector(&at("kv_cache"), l.kv_cache.as_ref());
        let in_flight = self.named::<InFlight>(
            &at("in_flight"),
            l.in_flight.as_ref(),
            Some(InFlight::Reported),
        );
        let (source, preset) = (source?, preset?);
        let port = match (source, l.port) {
            (LoadSource::Agent, None) => {
                self.error(
                    &at("port"),
                    "missing required key `port` for source = \"agent\" (the agent's TCP port)",
                );
                None
            }
            (_, Some(_)) => self.int(&at("port"), l.port, None, 1..=u16::MAX),
            (LoadSource::Prometheus, None) => {
                Some(preset.map_or(DEFAULT_LOAD_PORT, Preset::default_port))
            }
        };
        let mut ok = true;
        if source == LoadSource::Agent {
            for (key, set) in [
                ("path", l.path.is_some()),
                ("preset", l.preset.is_some()),
                ("waiting", l.waiting.is_some()),
                ("running", l.running.is_some()),
                ("kv_cache", l.kv_cache.is_some()),
            ] {
                if set {
                    self.error(
                        &at(key),
                        format!(
                            "`{key}` only applies to source = \"prometheus\" (this is \"agent\")"
                        ),
                    );
                    ok = false;
                }
            }
        } else if l.preset.is_none()
            && l.waiting.is_none()
            && l.running.is_none()
            && l.kv_cache.is_none()
        {
            self.error(
                path,
                "a prometheus source needs `preset` (vllm, tgi, sglang, triton) or at least one of \
                 `waiting`, `running`, `kv_cache`",
            );
            ok = false;
        }
        let lpath = l
            .path
            .clone()
            .unwrap_or_else(|| DEFAULT_LOAD_PATH.to_owned());
        if !lpath.starts_with('/') || lpath.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.error(
                &at("path"),
                format!(
                    "{lpath:?} is not an HTTP path (it must start with '/' and have no spaces)"
                ),
            );
            ok = false;
        }
        ok.then_some(())?;
        let (interval_ms, timeout_ms, stale_after_ms) = timing?;
        let queue_limit = self.int(
            &format!("{path}.queue_limit"),
            l.queue_limit,
            Some(DEFAULT_LOAD_QUEUE_LIMIT),
            0..=1_000_000,
        );
        let kv_limit_percent = self.int(
            &format!("{path}.kv_limit_percent"),
            l.kv_limit_percent,
            Some(DEFAULT_LOAD_KV_LIMIT_PERCENT),
            1..=100,
        );
        Some(LoadConfig {
            in_flight: in_flight?,
            queue_limit: queue_limit?,
            kv_limit_percent: kv_limit_percent?,
            source,
            port: port?,
            path: lpath,
            interval_ms,
            timeout_ms,
            stale_after_ms,
            preset,
            waiting: waiting?,
            running: running?,
            kv_cache: kv_cache?,
        })
    }

    /// `interval_ms`, `timeout_ms` (default: the interval; at most the interval) and
    /// `stale_after_ms` (default: 3 intervals; at least one).
    fn load_timing(&mut self, path: &str, l: &RawLoad) -> Option<(u32, u32, u32)> {
        let at = |key: &str| format!("{path}.{key}");
        let interval = self.int(
            &at("interval_ms"),
            l.interval_ms,
            Some(DEFAULT_LOAD_INTERVAL_MS),
            LOAD_INTERVAL_RANGE,
        )?;
        let timeout = self.int(
            &at("timeout_ms"),
            l.timeout_ms,
            Some(interval),
            1..=*LOAD_INTERVAL_RANGE.end(),
        )?;
        if timeout > interval {
            self.error(
                &at("timeout_ms"),
                format!(
                    "{timeout} ms is longer than interval_ms ({interval} ms): reads would overlap"
                ),
            );
            return None;
        }
        let stale = self.int(
            &at("stale_after_ms"),
            l.stale_after_ms,
            Some(interval.saturating_mul(3).min(*LOAD_STALE_RANGE.end())),
            LOAD_STALE_RANGE,
        )?;
        if stale < interval {
            self.error(
                &at("stale_after_ms"),
                format!("{stale} ms is shorter than interval_ms ({interval} ms): every report would be stale before the next read"),
            );
            return None;
        }
        Some((interval, timeout, stale))
    }

    /// An optional selector: `Some(None)` when absent, `None` when invalid.
    fn selector(&mut self, path: &str, value: Option<&String>) -> Option<Option<Selector>> {
        match value {
            None => Some(None),
            Some(s) => match Selector::parse(s) {
                Ok(sel) => Some(Some(sel)),
                Err(why) => {
                    self.error(
                        path,
                        format!(
                            "{s:?} is not a metric selector like name{{label=\"value\"}}: {why}"
                        ),
                    );
                    None
                }
            },
        }
    }
}
