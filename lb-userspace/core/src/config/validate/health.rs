//! `[vip.health]` and `[vip.backend.health]`: the kind of check, its port, timings and
//! the keys of each kind.

use super::Cx;
use crate::config::raw::RawHealth;
use crate::config::{CheckKind, HealthConfig, Protocol};
use crate::config::{
    DEFAULT_HEALTH_FALL, DEFAULT_HEALTH_INTERVAL_MS, DEFAULT_HEALTH_PATH, DEFAULT_HEALTH_RISE,
    DEFAULT_HEALTH_SEND, DEFAULT_HEALTH_TIMEOUT_MS, HEALTH_COUNT_RANGE, HEALTH_INTERVAL_RANGE,
    HEALTH_TIMEOUT_RANGE,
};

/// How often and how patiently a backend is checked.
struct CheckTiming {
    interval_ms: u32,
    timeout_ms: u32,
    rise: u32,
    fall: u32,
}

impl Cx<'_> {
    /// A health-check section (already merged with the VIP's for a backend override).
    pub(super) fn health(
        &mut self,
        path: &str,
        h: &RawHealth,
        vip_port: Option<u16>,
        protocol: Option<Protocol>,
    ) -> Option<HealthConfig> {
        let at = |key: &str| format!("{path}.{key}");
        let check = self.check_kind(&at("check"), h.check.as_ref(), vip_port, protocol)?;
        let port = self.check_port(&at("port"), h.port, vip_port, check)?;
        if check == CheckKind::None
            && h.check.is_none()
            && vip_port == Some(0)
            && protocol == Some(Protocol::Tcp)
        {
            self.warn(
                path,
                "no health checks for an all-ports VIP unless [vip.health] sets check and port",
            );
        }
        let timing = self.check_timing(path, h)?;
        let ok = self.keys_fit_check_kind(path, h, check);
        let path_value = self.http_path(&at("path"), h.path.as_ref())?;
        let expect_status = self.expect_status(&at("expect_status"), h.expect_status.as_deref())?;
        if check == CheckKind::Udp && protocol == Some(Protocol::Tcp) {
            self.warn(
                &at("check"),
                "a udp check on a tcp VIP checks another service than the one balanced",
            );
        }
        ok.then(|| HealthConfig {
            check,
            port,
            interval_ms: timing.interval_ms,
            timeout_ms: timing.timeout_ms,
            rise: timing.rise,
            fall: timing.fall,
            path: path_value,
            expect_status,
            send: h
                .send
                .clone()
                .unwrap_or_else(|| DEFAULT_HEALTH_SEND.to_owned()),
            expect: h.expect.clone(),
        })
    }

    /// `check`, defaulting by the VIP's protocol and port.
    fn check_kind(
        &mut self,
        path: &str,
        value: Option<&String>,
        vip_port: Option<u16>,
        protocol: Option<Protocol>,
    ) -> Option<CheckKind> {
        // tcp VIPs are checked with a TCP connect on their port by default; udp VIPs (no
        // protocol-agnostic probe exists) and all-ports VIPs (no port to pick) only when
        // configured.
        let default_kind = match (protocol, vip_port) {
            (Some(Protocol::Udp), _) | (_, Some(0)) => CheckKind::None,
            _ => CheckKind::Tcp,
        };
        self.named(path, value, Some(default_kind))
    }

    /// `port`: the VIP's by default; an all-ports VIP's checks must name one.
    fn check_port(
        &mut self,
        path: &str,
        value: Option<i64>,
        vip_port: Option<u16>,
        check: CheckKind,
    ) -> Option<u16> {
        match (value, vip_port) {
            (Some(_), _) => self.int(path, value, None, 1..=u16::MAX),
            (None, Some(0)) if check != CheckKind::None => {
                self.error(
                    path,
                    "the VIP serves every port (port = 0): say which port to check",
                );
                None
            }
            (None, p) => Some(p.unwrap_or(0)),
        }
    }

    /// `interval_ms`, `timeout_ms` (which must fit in the interval), `rise` and `fall`.
    fn check_timing(&mut self, path: &str, h: &RawHealth) -> Option<CheckTiming> {
        let at = |key: &str| format!("{path}.{key}");
        let interval_ms = self.int(
            &at("interval_ms"),
            h.interval_ms,
            Some(DEFAULT_HEALTH_INTERVAL_MS),
            HEALTH_INTERVAL_RANGE,
        )?;
        // Default: 1000 ms, or half the interval when that is shorter (so `interval_ms`
        // alone is always valid); an explicit value must fit in the interval.
        let timeout_ms = self.int(
            &at("timeout_ms"),
            h.timeout_ms,
            Some(DEFAULT_HEALTH_TIMEOUT_MS.min(interval_ms / 2)),
            HEALTH_TIMEOUT_RANGE,
        )?;
        if timeout_ms > interval_ms {
            self.error(
                &at("timeout_ms"),
                format!("{timeout_ms} ms is longer than interval_ms ({interval_ms} ms): checks would overlap"),
            );
            return None;
        }
        let rise = self.int(
            &at("rise"),
            h.rise,
            Some(DEFAULT_HEALTH_RISE),
            HEALTH_COUNT_RANGE,
        )?;
        let fall = self.int(
            &at("fall"),
            h.fall,
            Some(DEFAULT_HEALTH_FALL),
            HEALTH_COUNT_RANGE,
        )?;
        Some(CheckTiming {
            interval_ms,
            timeout_ms,
            rise,
            fall,
        })
    }

    /// Whether every kind-specific key set (`path`, `expect_status`: http; `send`,
    /// `expect`: udp) belongs to `check`; each that does not is an error.
    fn keys_fit_check_kind(&mut self, path: &str, h: &RawHealth, check: CheckKind) -> bool {
        let at = |key: &str| format!("{path}.{key}");
        let only = |cx: &mut Self, key: &str, set: bool, kind: CheckKind| {
            if set && check != kind {
                cx.error(
                    &at(key),
                    format!("`{key}` only applies to check = \"{kind}\" (this is \"{check}\")"),
                );
                false
            } else {
                true
            }
        };
        only(self, "path", h.path.is_some(), CheckKind::Http)
            & only(
                self,
                "expect_status",
                h.expect_status.is_some(),
                CheckKind::Http,
            )
            & only(self, "send", h.send.is_some(), CheckKind::Udp)
            & only(self, "expect", h.expect.is_some(), CheckKind::Udp)
    }

    /// `path` of an http check: starts with '/', no spaces.
    fn http_path(&mut self, path: &str, value: Option<&String>) -> Option<String> {
        let path_value = value
            .cloned()
            .unwrap_or_else(|| DEFAULT_HEALTH_PATH.to_owned());
        if !path_value.starts_with('/')
            || path_value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            self.error(
                path,
                format!(
                    "{path_value:?} is not an HTTP path (it must start with '/' and have no spaces)"
                ),
            );
            return None;
        }
        Some(path_value)
    }

    /// `expect_status`: a status or range, 200-399 by default.
    fn expect_status(&mut self, path: &str, value: Option<&str>) -> Option<(u16, u16)> {
        match value {
            None => Some((200, 399)),
            Some(s) => {
                match parse_status_range(s) {
                    Some(r) => Some(r),
                    None => {
                        self.error(path, format!("{s:?} is not a status or range like \"200\" or \"200-399\" (100..=599)"));
                        None
                    }
                }
            }
        }
    }
}

/// "200" or "200-399", each in 100..=599, low ≤ high.
fn parse_status_range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let v: u16 = s.trim().parse().ok()?;
            (v, v)
        }
    };
    ((100..=599).contains(&lo) && (100..=599).contains(&hi) && lo <= hi).then_some((lo, hi))
}
