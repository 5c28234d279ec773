//! The Prometheus text exposition format (version 0.0.4, which vLLM, TGI, SGLang and Triton
//! serve), parsed strictly and without panics, and turned into a [`Report`] by
//! [`Selectors`].
//!
//! Written here rather than taken from a crate: `prometheus-parse` (the most used) is
//! regex-based, does not unescape `\\`/`\"`/`\n` in label values reliably and has had no
//! release since 2023; sluice needs a few hundred lines at most, with line numbers in its
//! errors and no panic on any input (fuzzed in the tests).
//!
//! Accepted: `# HELP`/`# TYPE` and other comment lines (skipped), blank lines, CRLF line
//! ends, metric names with colons, label values with escapes, values as Rust's `f64` parser
//! takes them (`+Inf`, `-Inf`, `NaN`, exponents) and an optional integer timestamp. A line
//! that is none of these makes the whole page an error, as Prometheus rejects the scrape.

use super::Report;
use super::presets::{Selector, Selectors, is_label_name, is_metric_name};

/// A page that is not in the text format: the line (1-based) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

/// Every sample of `text`, in order.
pub fn parse(text: &str) -> Result<Vec<Sample<'_>>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.trim_end().is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let sample = sample(trimmed).map_err(|message| ParseError {
            line: i + 1,
            message,
        })?;
        out.push(sample);
    }
    Ok(out)
}

/// The report `selectors` find in `text`: each figure is the sum of the series its first
/// selector with any series on the page matches (series whose value is NaN or infinite
/// are left out: they say nothing about load). The KV-cache use is clamped to 0..=1 (the
/// servers export a fraction; a value above 1 would be a percentage or a bug, and is read
/// as full).
pub fn report(text: &str, selectors: &Selectors) -> Result<Report, ParseError> {
    let samples = parse(text)?;
    let figure = |list: &[Selector]| -> Option<f64> {
        list.iter().find_map(|sel| {
            let mut found = false;
            let mut sum = 0.0;
            for s in samples.iter().filter(|s| sel.matches(s.name, &s.labels)) {
                found = true;
                if s.value.is_finite() {
                    sum += s.value;
                }
            }
            found.then_some(sum)
        })
    };
    Ok(Report {
        waiting: figure(&selectors.waiting),
        running: figure(&selectors.running),
        kv_cache: figure(&selectors.kv_cache).map(|v| v.clamp(0.0, 1.0)),
        agent: None,
    })
}

/// `name{labels} value [timestamp]`, leading blanks removed.
fn sample(line: &str) -> Result<Sample<'_>, String> {
    let end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..end];
    if !is_metric_name(name) {
        return Err(format!("{name:?} is not a metric name"));
    }
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        let (parsed, after) = labels_borrowed(rest)?;
        labels = parsed;
        rest = after;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("expected a blank and a value after the metric".to_owned());
    }
    let mut words = rest.split([' ', '\t']).filter(|w| !w.is_empty());
    let value = words.next().ok_or_else(|| format!("{name} has no value"))?;
    let value = parse_value(value)?;
    if let Some(ts) = words.next()
        && ts.parse::<i64>().is_err()
    {
        return Err(format!(
            "{ts:?} is not a timestamp (milliseconds, an integer)"
        ));
    }
    if let Some(extra) = words.next() {
        return Err(format!(
            "unexpected {extra:?} after the value and timestamp"
        ));
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

fn parse_value(s: &str) -> Result<f64, String> {
    // Rust's parser also takes "inf" and "infinity" in any case: harmless.
    s.parse::<f64>()
        .map_err(|_| format!("{s:?} is not a number"))
}

/// Label pairs (names as `N`) and the rest of the line after the '}'.
pub(super) type Parsed<'a, N> = (Vec<(N, String)>, &'a str);

/// `{a="x",b="y"}` at the start of `s` (which starts with '{'): the pairs, owned, and what
/// follows the '}'.
pub(super) fn labels(s: &str) -> Result<Parsed<'_, String>, String> {
    let (pairs, rest) = labels_borrowed(s)?;
    Ok((
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        rest,
    ))
}

fn labels_borrowed(s: &str) -> Result<Parsed<'_, &str>, String> {
    let mut rest = s
        .strip_prefix('{')
        .ok_or_else(|| "expected '{'".to_owned())?;
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((out, after));
        }
        if rest.is_empty() {
            return Err("unclosed '{': expected '}'".to_owned());
        }
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("expected label=\"value\" at {:?}", clip(rest)))?;
        let name = rest[..eq].trim_matches([' ', '\t']);
        if !is_label_name(name) {
            return Err(format!("{name:?} is not a label name"));
        }
        rest = rest[eq + 1..].trim_start_matches([' ', '\t']);
        let Some(quoted) = rest.strip_prefix('"') else {
            return Err(format!(
                "the value of label {name} must be quoted (\"...\")"
            ));
        };
        let (value, after) = quoted_value(quoted)?;
        out.push((name, value));
        rest = after.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            if rest.is_empty() {
                return Err("unclosed '{': expected '}'".to_owned());
            }
            return Err(format!("expected ',' or '}}' at {:?}", clip(rest)));
        }
    }
}

/// A label value after its opening quote: the unescaped value and what follows the
/// closing quote.
fn quoted_value(s: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                Some((_, other)) => {
                    return Err(format!(
                        "unknown escape \\{other} in a label value (only \\\\, \\\" and \\n)"
                    ));
                }
                None => break,
            },
            c => value.push(c),
        }
    }
    Err("unclosed '\"' in a label value".to_owned())
}

/// The start of `s`, for error messages.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(24) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests;
