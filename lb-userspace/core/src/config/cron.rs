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
    /// wrong. A schedule that never fires is refused: croner accepts a field of empty list
    /// items (`,`) as selecting nothing, and dates no year has (`30 2`); the autoscaler's
    /// search for the entry in force would walk back to year 1 on every evaluation (found
    /// by `fuzz/fuzz_targets/cron_schedule.rs`: seconds for an empty minute field).
    pub fn parse(text: &str) -> Result<Self, CronError> {
        use croner::parser::{CronParser, Seconds, Year};
        let refuse = |why: String| CronError::Schedule {
            text: text.to_owned(),
            why,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| refuse(e.to_string()))?;
        let p = &cron.pattern;
        // The fields that select on their own: one selecting nothing is cheap to see, and
        // makes the search below slow (minute by minute).
        for (field, c) in [
            ("minute", &p.minutes),
            ("hour", &p.hours),
            ("month", &p.months),
        ] {
            if c.values().is_empty() && !c.has_modifiers() {
                return Err(refuse(format!("the {field} field selects no value")));
            }
        }
        // Days (day of month or of week) and months that never meet: the calendar repeats
        // every 400 years, so a schedule that does not fire within 400 years never does.
        let cycle_start = chrono::NaiveDate::from_ymd_opt(croner::YEAR_UPPER_LIMIT - 400, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc());
        if let Some(start) = cycle_start
            && cron.find_next_occurrence(&start, true).is_err()
        {
            return Err(refuse("it never fires (no such date)".to_owned()));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Schedules that can never fire are refused at parse time, quickly, instead of making
    /// every evaluation search back 2000 years; rare but real ones stay accepted.
    #[test]
    fn never_firing_schedules_are_refused() {
        for (text, why) in [
            (", 0 * * *", "minute field selects no value"),
            ("0 , 28 * 2", "hour field selects no value"),
            ("0 0 1 ,, *", "month field selects no value"),
            ("0 13 , * *", "never fires"),
            ("0 0 30 2 *", "never fires"),
            ("0 0 31 4,6,9,11 *", "never fires"),
        ] {
            let start = std::time::Instant::now();
            let e = CronSchedule::parse(text).expect_err(text).to_string();
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(
                start.elapsed() < std::time::Duration::from_secs(1),
                "{text:?} took {:?}",
                start.elapsed()
            );
        }
        for ok in [
            "0 0 29 2 *",
            "0 0 * 2 5#5",
            "0 8 * * MON-FRI",
            "@daily",
            "0 0 L 2 *",
            "0 0 15W * *",
            "0 13 , * 1",
            "0,, 8 * * *",
        ] {
            assert!(CronSchedule::parse(ok).is_ok(), "{ok:?}");
        }
    }
}
