//! Semantic validation: from the file's shape (`raw`) to a typed [`Config`], collecting
//! every problem rather than stopping at the first. The generic checks (integers in range,
//! names, addresses) and the context that collects problems are here; each section has
//! its own file: [`daemon`], [`vip`] (VIPs and backends) and [`health`].

mod announce;
mod daemon;
mod health;
mod load;
mod vip;

use std::fmt::Display;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use super::locate::Locator;
use super::raw::RawFile;
use super::{Config, Named, Problem};
/// The Maglev builder's primality test: a table size the config accepts is one it builds.
pub(super) use crate::maglev::is_prime;

/// Validates `raw`; the config is `Some` exactly when there are no problems. Returns
/// (config, problems, warnings).
pub(super) fn validate(
    raw: &RawFile,
    loc: &Locator,
) -> (Option<Config>, Vec<Problem>, Vec<Problem>) {
    let mut cx = Cx {
        loc,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let daemon = match &raw.daemon {
        Some(d) => cx.daemon(d),
        None => {
            cx.error(
                "daemon",
                "missing required table [daemon] (it must set at least `interface`)",
            );
            None
        }
    };
    let vips = cx.vips(&raw.vip, daemon.as_ref());
    // Report in file order; problems without a line (a missing [daemon]) come first.
    cx.problems.sort_by_key(|p| p.line.unwrap_or(0));
    cx.warnings.sort_by_key(|p| p.line.unwrap_or(0));
    let config = match (daemon, vips) {
        (Some(daemon), Some(vips)) if cx.problems.is_empty() => Some(Config { daemon, vips }),
        _ => None,
    };
    (config, cx.problems, cx.warnings)
}

/// Run `f` with a validation context over `loc`; (its result, problems, warnings), each
/// list in file order. For files other than the main configuration (simulator policies).
pub(super) fn with_cx<T>(
    loc: &Locator,
    f: impl FnOnce(&mut Cx<'_>) -> T,
) -> (T, Vec<Problem>, Vec<Problem>) {
    let mut cx = Cx {
        loc,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let out = f(&mut cx);
    cx.problems.sort_by_key(|p| p.line.unwrap_or(0));
    cx.warnings.sort_by_key(|p| p.line.unwrap_or(0));
    (out, cx.problems, cx.warnings)
}

pub(super) struct Cx<'a> {
    loc: &'a Locator,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Cx<'_> {
    fn problem(&self, path: &str, message: impl Display) -> Problem {
        Problem {
            line: self.loc.line(path),
            path: path.to_owned(),
            message: message.to_string(),
        }
    }

    pub(super) fn error(&mut self, path: &str, message: impl Display) {
        let p = self.problem(path, message);
        self.problems.push(p);
    }

    pub(super) fn warn(&mut self, path: &str, message: impl Display) {
        let p = self.problem(path, message);
        self.warnings.push(p);
    }

    /// `vip[0] (line 3)`: another place in the file, for "also at" messages.
    pub(super) fn where_is(&self, path: &str) -> String {
        match self.loc.line(path) {
            Some(line) => format!("{path} (line {line})"),
            None => path.to_owned(),
        }
    }

    pub(super) fn missing(&mut self, path: &str) {
        let key = path.rsplit('.').next().unwrap_or(path);
        let table = super::locate::parent(path).unwrap_or("");
        self.error(path, format!("missing required key `{key}` in [{table}]"));
    }

    pub(super) fn required<'v, T: ?Sized>(
        &mut self,
        path: &str,
        value: Option<&'v T>,
    ) -> Option<&'v T> {
        if value.is_none() {
            self.missing(path);
        }
        value
    }

    /// An integer in `range`, or `default` when absent (`None` default: required).
    pub(super) fn int<T>(
        &mut self,
        path: &str,
        value: Option<i64>,
        default: Option<T>,
        range: RangeInclusive<T>,
    ) -> Option<T>
    where
        T: TryFrom<i64> + PartialOrd + Copy + Display,
    {
        let Some(v) = value else {
            if default.is_none() {
                self.missing(path);
            }
            return default;
        };
        match T::try_from(v) {
            Ok(t) if range.contains(&t) => Some(t),
            _ => {
                self.error(
                    path,
                    format!("{v} is out of range ({}..={})", range.start(), range.end()),
                );
                None
            }
        }
    }

    /// One of the names in `T::ALL`, or `default` when absent (`None` default: required).
    pub(super) fn named<T: Named>(
        &mut self,
        path: &str,
        value: Option<&String>,
        default: Option<T>,
    ) -> Option<T> {
        let Some(s) = value else {
            if default.is_none() {
                self.missing(path);
            }
            return default;
        };
        if let Some((_, v)) = T::ALL.iter().find(|(n, _)| n == s) {
            return Some(*v);
        }
        let accepted: Vec<String> = T::ALL.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        let message = if T::RESERVED.contains(&s.as_str()) {
            format!(
                "{} \"{s}\" is not supported yet (only {})",
                T::FIELD,
                accepted.join(", ")
            )
        } else {
            format!(
                "unknown {} \"{s}\"; accepted values: {}",
                T::FIELD,
                accepted.join(", ")
            )
        };
        self.error(path, message);
        None
    }

    pub(super) fn ip(&mut self, path: &str, value: Option<&String>, what: &str) -> Option<IpAddr> {
        let s = self.required(path, value)?;
        let Ok(ip) = s.parse::<IpAddr>() else {
            self.error(path, format!("\"{s}\" is not an IP address"));
            return None;
        };
        let bad = if ip.is_unspecified() {
            Some("the unspecified address")
        } else if ip.is_multicast() {
            Some("a multicast address")
        } else if ip == IpAddr::from([255, 255, 255, 255]) {
            Some("the broadcast address")
        } else {
            None
        };
        if let Some(bad) = bad {
            self.error(
                path,
                format!("{ip} is {bad}; {what} must be a unicast address"),
            );
            return None;
        }
        Some(ip)
    }
}
