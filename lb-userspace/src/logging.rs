//! The log (standard error): its level from `$SLUICE_LOG` (else `$RUST_LOG`, else `info`),
//! in `tracing_subscriber`'s `EnvFilter` syntax (`debug`, `warn,sluice_daemon=debug`), and
//! its format: text, or with `sluice run --log-format json` one JSON object a line
//! (`timestamp`, `level`, `target`, `fields` with `message` and every field of the event).
//! Events carry their values as fields (`vip`, `backend`, `peer_uid`, ...), so that both
//! formats can be filtered on them.

use tracing_subscriber::EnvFilter;

/// The environment variable with the log level (filter directives).
pub const LEVEL_ENV: &str = "SLUICE_LOG";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line an event: time, level, target, message, then `field=value` pairs.
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, `fields` (`message` and
    /// the event's fields).
    Json,
}

/// The level filter from `$SLUICE_LOG` or `$RUST_LOG` (`info` without either), and the
/// complaint about a value that is not a filter (then `info` is used).
pub fn filter_from_env() -> (EnvFilter, Option<String>) {
    for var in [LEVEL_ENV, "RUST_LOG"] {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => {
                return match EnvFilter::try_new(&v) {
                    Ok(f) => (f, None),
                    Err(e) => (
                        EnvFilter::new("info"),
                        Some(format!(
                            "{var}={v:?} is not a log filter ({e}); logging at info"
                        )),
                    ),
                };
            }
            _ => {}
        }
    }
    (EnvFilter::new("info"), None)
}

/// The subscriber writing `format` to `writer` (colours only for text on a terminal).
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(b.with_ansi(ansi).fmt_fields(text_fields()).finish()),
        LogFormat::Json => Box::new(b.json().with_ansi(false).finish()),
    }
}

/// `field=value` pairs, a value quoted (as a Rust string literal) when it has a space, a
/// quote, an `=` or a control character, so that a line splits into its fields unambiguously
/// (`reason="connect: Connection refused"`); the message as it is.
fn text_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use tracing_subscriber::field::MakeExt as _;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let v = format!("{value:?}");
        if field.name() == "message" {
            write!(w, "{v}")
        } else if needs_quotes(&v) {
            write!(w, "{}={v:?}", field.name())
        } else {
            write!(w, "{}={v}", field.name())
        }
    })
    .delimited(" ")
}

/// Whether `v` (a value as formatted) needs quotes to stay one field.
fn needs_quotes(v: &str) -> bool {
    let quoted = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
    !quoted
        && (v.is_empty()
            || v.chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control()))
}

/// Install the process's log on standard error.
pub fn init(format: LogFormat) {
    let (filter, complaint) = filter_from_env();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let s = subscriber(format, filter, std::io::stderr, ansi);
    // Only `main` calls this, once.
    let _ = tracing::subscriber::set_global_default(s);
    if let Some(c) = complaint {
        tracing::warn!("{c}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer, for reading back what was logged.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(format: LogFormat, f: impl FnOnce()) -> String {
        let buf = Buffer::default();
        let w = buf.clone();
        let s = subscriber(format, EnvFilter::new("info"), move || w.clone(), false);
        tracing::subscriber::with_default(s, f);
        let bytes = buf.0.lock().expect("buffer").clone();
        String::from_utf8(bytes).expect("UTF-8")
    }

    #[test]
    fn json_lines_are_objects_with_level_and_fields() {
        let out = logged(LogFormat::Json, || {
            tracing::info!(vip = %"web", backend = %"10.0.0.3:80", weight = 2, "backend added");
            tracing::warn!(
                peer_uid = 1000u32,
                reason = "a \"quoted\"\nvalue",
                "edit refused"
            );
            tracing::debug!("not at info");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        for l in &lines {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(
                v["level"].is_string() && v["fields"]["message"].is_string(),
                "{l}"
            );
            assert!(v["timestamp"].is_string(), "{l}");
        }
        let first: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON");
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["fields"]["vip"], "web");
        assert_eq!(first["fields"]["backend"], "10.0.0.3:80");
        assert_eq!(first["fields"]["weight"], 2);
        let second: serde_json::Value = serde_json::from_str(lines[1]).expect("JSON");
        assert_eq!(second["level"], "WARN");
        assert_eq!(second["fields"]["peer_uid"], 1000);
        assert_eq!(second["fields"]["reason"], "a \"quoted\"\nvalue");
    }

    #[test]
    fn text_lines_carry_the_fields() {
        let out = logged(LogFormat::Text, || {
            tracing::info!(vip = %"web", peer_uid = 0u32, "edit applied");
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            out.contains("INFO") && out.contains("edit applied") && out.contains("vip=web"),
            "{out}"
        );
        assert!(out.contains("peer_uid=0"), "{out}");
        let out = logged(LogFormat::Text, || {
            tracing::warn!(
                error = %"connect: Connection refused",
                path = %"/run/sluice/sluice.sock",
                "API accept failed"
            );
        });
        assert!(
            out.contains(r#"error="connect: Connection refused" path=/run/sluice/sluice.sock"#),
            "{out}"
        );
        assert!(!needs_quotes("\"already quoted\"") && needs_quotes("") && !needs_quotes("web"));
    }
}
