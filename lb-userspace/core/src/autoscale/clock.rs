//! Time for the autoscaler. Every policy, the controller and the reconciler take the time
//! as an argument ([`Time`]); only the daemon's driver reads a [`Clock`]. Tests and the
//! simulator use a [`ManualClock`] (or plain [`Time`] values) and never sleep.
//!
//! The time is wall-clock milliseconds since the Unix epoch, because cron schedules are
//! wall-clock times in a time zone; durations between two readings saturate at zero, so a
//! clock stepped backwards makes windows look shorter, never negative.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// A point in time: milliseconds since the Unix epoch (UTC).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Time(pub u64);

impl Time {
    /// `secs` seconds after the epoch.
    pub fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// Milliseconds since `earlier` (0 if `earlier` is later).
    pub fn since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// `ms` milliseconds later.
    pub fn plus_ms(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms))
    }

    /// `ms` milliseconds earlier (the epoch at the earliest).
    pub fn minus_ms(self, ms: u64) -> Time {
        Time(self.0.saturating_sub(ms))
    }

    /// As a chrono UTC time (for cron).
    pub fn to_utc(self) -> chrono::DateTime<chrono::Utc> {
        let ms = i64::try_from(self.0).unwrap_or(i64::MAX);
        chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
    }

    /// From a chrono time (the epoch for times before it).
    pub fn from_chrono<Tz: chrono::TimeZone>(t: &chrono::DateTime<Tz>) -> Time {
        Time(u64::try_from(t.timestamp_millis()).unwrap_or(0))
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_utc().format("%Y-%m-%dT%H:%M:%S%.3fZ"))
    }
}

/// Where the autoscaler's driver reads the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Time;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Time {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Time(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to (tests, the simulator).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(start: Time) -> Self {
        Self(AtomicU64::new(start.0))
    }

    /// Move forward by `ms`.
    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::Relaxed);
    }

    pub fn set(&self, t: Time) {
        self.0.store(t.0, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Time {
        Time(self.0.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Time::from_secs(10));
        assert_eq!(c.now(), Time(10_000));
        c.advance_ms(1500);
        assert_eq!(c.now(), Time(11_500));
        assert_eq!(c.now().since(Time(12_000)), 0, "saturates");
        assert_eq!(Time(0).to_string(), "1970-01-01T00:00:00.000Z");
    }
}
