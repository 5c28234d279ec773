//! The autoscaler's cron entries: a schedule (`CronSchedule::parse`, sluice's wrapper of
//! `croner`) on the first line, a time zone (`CronZone::parse`) on the second, and the cron
//! policy (`autoscale::policy::cron::Schedules::evaluate`, the entry in force: croner's
//! search backwards) at a time made of the last 8 bytes (within years 1970..2200), twice a
//! day apart. A schedule prints back as written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::{
    autoscale::{
        clock::Time,
        policy::{Metrics, Sample, cron::Schedules},
    },
    config::autoscale::{CronConfig, CronSchedule, CronZone},
};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (text, time) = data.split_at(data.len() - 8);
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let (schedule, zone) = text.split_once('\n').unwrap_or((text, "UTC"));
    let Ok(schedule) = CronSchedule::parse(schedule).map_err(|e| e.to_string()) else {
        return;
    };
    assert_eq!(schedule.to_string(), schedule.as_str());
    let Ok(timezone) = CronZone::parse(zone) else {
        return;
    };
    // 1970-01-01 .. 2200-01-01, in milliseconds.
    let span = 7_258_118_400_000u64;
    let now = u64::from_le_bytes(time.try_into().expect("8 bytes")) % span;
    let mut s = Schedules::new(vec![CronConfig {
        schedule,
        timezone,
        min: Some(1),
        max: Some(10),
        desired: Some(5),
    }]);
    for t in [now, now + 86_400_000] {
        let o = s.evaluate(&Sample {
            now: Time(t),
            current: 3,
            metrics: Metrics::default(),
        });
        assert!(o.set.is_none_or(|d| d == 5));
    }
});
