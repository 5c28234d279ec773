//! Cron schedules and time zones of `[[vip.autoscale.cron]]`, parsed once, when the
//! configuration is validated; the autoscaler's cron policy uses the parsed values.

use serde::{Serialize, Serializer};

/// Why a cron schedule or time zone is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error(
        "{text:?} is not a cron expression (minute hour day-of-month month day-of-week): {why}"
    )]
    Schedule { text: String, why: String },
    #[error(
        "{0:?} is not an IANA time zone (e.g. \"UTC\", \"Europe/Paris\", \"America/New_York\")"
    )]
    Zone(String),
}

/// A five-field cron expression, parsed once when the configuration is validated; the text
/// as written is kept for display and for writing the configuration back.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    text: String,
    cron: croner::Cron,
}

impl CronSchedule {
    /// Parse a five-field cron expression (no seconds, no year); the error says what is
    /// wrong.
    pub fn parse(text: &str) -> Result<Self, CronError> {
        use croner::parser::{CronParser, Seconds, Year};
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| CronError::Schedule {
                text: text.to_owned(),
                why: e.to_string(),
            })?;
        Ok(Self {
            text: text.to_owned(),
            cron,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn cron(&self) -> &croner::Cron {
        &self.cron
    }
}

/// An IANA time zone, checked when the configuration is validated; the name as written is
/// kept for display and for writing the configuration back.
#[derive(Debug, Clone)]
pub struct CronZone {
    name: String,
    tz: chrono_tz::Tz,
}

impl CronZone {
    pub fn parse(name: &str) -> Result<Self, CronError> {
        let tz = name
            .parse::<chrono_tz::Tz>()
            .map_err(|_| CronError::Zone(name.to_owned()))?;
        Ok(Self {
            name: name.to_owned(),
            tz,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn tz(&self) -> chrono_tz::Tz {
        self.tz
    }
}

// Both compare, print and serialize as the text they were parsed from (the parsed value
// follows from it), so configurations stay comparable and `config save` writes them back
// as written.
macro_rules! as_text {
    ($t:ty, $field:ident) => {
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.$field == other.$field
            }
        }
        impl Eq for $t {}
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.$field == *other
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.$field)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.$field)
            }
        }
    };
}
as_text!(CronSchedule, text);
as_text!(CronZone, name);
