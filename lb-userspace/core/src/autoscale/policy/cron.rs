//! Cron schedules for known peaks. Each entry fires on a standard five-field cron
//! expression (minute hour day-of-month month day-of-week; `@daily` and names like `MON`
//! work too) evaluated in an IANA time zone, so "08:00 Europe/Paris" stays 08:00 local time
//! across daylight-saving changes.
//!
//! The entry that fired last (over all entries of the VIP) is *in force*: its `min` and
//! `max` replace the section's until another entry fires. Being stateless over time, this
//! survives a daemon restart (the entry in force is recomputed from the schedule). An
//! entry's `desired` is a one-off: in the evaluation that first sees the firing, the count
//! is set to it (overriding the other policies that round); afterwards they take over.

use super::{Opinion, Sample};
use crate::{autoscale::clock::Time, config::autoscale::CronConfig};

#[derive(Debug, Clone)]
struct Entry {
    /// Its schedule and zone were parsed when the configuration was validated.
    spec: CronConfig,
}

impl Entry {
    /// The last firing at or before `now`.
    fn last_firing(&self, now: Time) -> Option<Time> {
        let local = now.to_utc().with_timezone(&self.spec.timezone.tz());
        self.spec
            .schedule
            .cron()
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| Time::from_chrono(&t))
    }
}

/// The cron entries of one VIP.
#[derive(Debug, Clone)]
pub struct Schedules {
    entries: Vec<Entry>,
    last_eval: Option<Time>,
}

impl Schedules {
    pub fn new(specs: Vec<CronConfig>) -> Self {
        Self {
            entries: specs.into_iter().map(|spec| Entry { spec }).collect(),
            last_eval: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn evaluate(&mut self, s: &Sample) -> Opinion {
        let previous = self.last_eval.replace(s.now);
        let mut in_force: Option<(usize, Time)> = None;
        let mut set: Option<(u32, usize)> = None;
        for (i, e) in self.entries.iter().enumerate() {
            let Some(fired) = e.last_firing(s.now) else {
                continue;
            };
            if in_force.is_none_or(|(_, t)| fired > t) {
                in_force = Some((i, fired));
            }
            if let (Some(d), Some(prev)) = (e.spec.desired, previous)
                && fired > prev
                && set.is_none_or(|(best, _)| d > best)
            {
                set = Some((d, i));
            }
        }
        let Some((i, fired)) = in_force else {
            return Opinion {
                reason: "cron: no entry has fired yet".to_owned(),
                ..Opinion::default()
            };
        };
        let e = &self.entries[i].spec;
        let mut reason = format!(
            "cron[{i}] \"{}\" {} in force since {}",
            e.schedule,
            e.timezone,
            fired
                .to_utc()
                .with_timezone(&e.timezone.tz())
                .format("%Y-%m-%d %H:%M %Z")
        );
        if let Some(m) = e.min {
            reason.push_str(&format!(", min {m}"));
        }
        if let Some(m) = e.max {
            reason.push_str(&format!(", max {m}"));
        }
        if let Some((d, j)) = set {
            reason.push_str(&format!("; cron[{j}] fired: set {d}"));
        }
        Opinion {
            desired: None,
            set: set.map(|(d, _)| d),
            min: e.min,
            max: e.max,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use chrono_tz::Tz;

    use super::*;
    use crate::{
        autoscale::policy::Metrics,
        config::autoscale::{CronSchedule, CronZone},
    };

    fn entry(schedule: &str, tz: &str, min: Option<u32>, desired: Option<u32>) -> CronConfig {
        CronConfig {
            schedule: CronSchedule::parse(schedule).unwrap(),
            timezone: CronZone::parse(tz).unwrap(),
            min,
            max: None,
            desired,
        }
    }

    fn at<Z: chrono::TimeZone>(t: chrono::DateTime<Z>) -> Sample {
        Sample {
            now: Time::from_chrono(&t),
            current: 2,
            metrics: Metrics::default(),
        }
    }

    /// A peak from 22:00 to 02:00 Tokyo time crosses the day boundary (and, in UTC, is
    /// 13:00–17:00 the same day): the peak entry stays in force over local midnight.
    #[test]
    fn across_midnight_in_a_time_zone() {
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        let mut p = Schedules::new(vec![
            entry("0 22 * * *", "Asia/Tokyo", Some(8), Some(10)),
            entry("0 2 * * *", "Asia/Tokyo", Some(2), None),
        ]);
        // 21:59 local: the 02:00 entry (from this morning) is in force.
        let o = p.evaluate(&at(tokyo.with_ymd_and_hms(2025, 6, 1, 21, 59, 0).unwrap()));
        assert_eq!((o.min, o.set), (Some(2), None), "{}", o.reason);
        // 22:00:30 local = 13:00:30 UTC: the peak fires; desired is set once.
        let o = p.evaluate(&at(chrono::Utc
            .with_ymd_and_hms(2025, 6, 1, 13, 0, 30)
            .unwrap()));
        assert_eq!((o.min, o.set), (Some(8), Some(10)), "{}", o.reason);
        // 23:30 and 00:30 the next day: still the peak, the one-off is not repeated.
        let o = p.evaluate(&at(tokyo.with_ymd_and_hms(2025, 6, 1, 23, 30, 0).unwrap()));
        assert_eq!((o.min, o.set), (Some(8), None), "{}", o.reason);
        let o = p.evaluate(&at(tokyo.with_ymd_and_hms(2025, 6, 2, 0, 30, 0).unwrap()));
        assert_eq!((o.min, o.set), (Some(8), None), "{}", o.reason);
        // 02:00 local: back to min 2.
        let o = p.evaluate(&at(tokyo.with_ymd_and_hms(2025, 6, 2, 2, 0, 0).unwrap()));
        assert_eq!(o.min, Some(2), "{}", o.reason);
    }

    /// 08:00 in Paris is 07:00 UTC in winter and 06:00 UTC in summer: the schedule follows
    /// local time across the daylight-saving change (30 March 2025).
    #[test]
    fn local_time_across_daylight_saving() {
        let mut p = Schedules::new(vec![
            entry("0 8 * * *", "Europe/Paris", Some(5), None),
            entry("0 20 * * *", "Europe/Paris", Some(1), None),
        ]);
        let utc = |d, h, m| at(chrono::Utc.with_ymd_and_hms(2025, 3, d, h, m, 0).unwrap());
        assert_eq!(p.evaluate(&utc(29, 6, 59)).min, Some(1));
        assert_eq!(p.evaluate(&utc(29, 7, 0)).min, Some(5), "winter: 07:00 UTC");
        assert_eq!(p.evaluate(&utc(30, 5, 59)).min, Some(1));
        assert_eq!(p.evaluate(&utc(30, 6, 0)).min, Some(5), "summer: 06:00 UTC");
    }

    #[test]
    fn weekdays_only_and_parse_errors() {
        let mut p = Schedules::new(vec![entry("30 9 * * MON-FRI", "UTC", Some(4), None)]);
        // Saturday 7 June 2025 12:00: Friday's 09:30 is in force.
        let o = p.evaluate(&at(chrono::Utc
            .with_ymd_and_hms(2025, 6, 7, 12, 0, 0)
            .unwrap()));
        assert!(o.reason.contains("2025-06-06 09:30"), "{}", o.reason);
        assert!(CronSchedule::parse("61 * * * *").is_err());
        assert!(
            CronSchedule::parse("0 8 * * * *").is_err(),
            "seconds are not accepted"
        );
        assert!(CronZone::parse("Mars/Olympus").is_err());
    }
}
