//! The standard `process_*` metrics, read from `/proc/self` at each scrape.

use super::{render::gauge_u64 as g, text::Exposition};

/// What `/proc/self/stat` and friends say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Process {
    pub cpu_seconds: f64,
    pub start_time_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
fn ticks_per_second() -> f64 {
    use nix::unistd::{SysconfVar, sysconf};
    #[expect(clippy::cast_precision_loss, reason = "a small constant")]
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

fn page_size() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(p)) => u64::try_from(p).unwrap_or(4096),
        _ => 4096,
    }
}

/// The fields of a `stat` line after the command (which may hold spaces and parentheses):
/// field 3 (state) first.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// Parse `/proc/self/stat` given the boot time (`btime` of `/proc/stat`).
#[expect(clippy::cast_precision_loss, reason = "times in seconds")]
pub fn parse_stat(stat: &str, boot_time: u64, tick: f64, page: u64) -> Option<Process> {
    let f = stat_fields(stat)?;
    // After the command: state is field 3, so field n is f[n - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let utime = num(14)?;
    let stime = num(15)?;
    Some(Process {
        cpu_seconds: (utime + stime) as f64 / tick,
        threads: num(20)?,
        start_time_seconds: boot_time as f64 + num(22)? as f64 / tick,
        virtual_bytes: num(23)?,
        resident_bytes: num(24)?.saturating_mul(page),
        ..Process::default()
    })
}

fn boot_time() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of open files, from `/proc/self/limits`.
fn max_fds() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let l = s.lines().find(|l| l.starts_with("Max open files"))?;
    l["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What does not change while the process runs: the boot time (`/proc/stat`, whose
/// interrupt lines are long on big hosts), clock ticks per second and the page size, read
/// at the first scrape.
fn constants() -> Option<(u64, f64, u64)> {
    static CONSTANTS: std::sync::OnceLock<Option<(u64, f64, u64)>> = std::sync::OnceLock::new();
    *CONSTANTS.get_or_init(|| Some((boot_time()?, ticks_per_second(), page_size())))
}

/// This process's figures (`None` where `/proc` is not there).
pub fn read() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (boot, tick, page) = constants()?;
    let mut p = parse_stat(&stat, boot, tick, page)?;
    p.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    p.max_fds = max_fds();
    Some(p)
}

/// Add the `process_*` families.
pub fn expose(e: &mut Exposition) {
    let Some(p) = read() else { return };
    e.counter_f64("process_cpu_seconds", Vec::new(), p.cpu_seconds);
    e.gauge_f64(
        "process_start_time_seconds",
        Vec::new(),
        p.start_time_seconds,
    );
    e.gauge(
        "process_resident_memory_bytes",
        Vec::new(),
        g(p.resident_bytes),
    );
    e.gauge(
        "process_virtual_memory_bytes",
        Vec::new(),
        g(p.virtual_bytes),
    );
    e.gauge("process_threads", Vec::new(), g(p.threads));
    e.gauge("process_open_fds", Vec::new(), g(p.open_fds));
    if let Some(m) = p.max_fds {
        e.gauge("process_max_fds", Vec::new(), g(m));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_a_tricky_command_parses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss
        let stat = "42 (sl) uice (x)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 \
                    1000 123456789 300 18446744073709551615";
        let p = parse_stat(stat, 1_700_000_000, 100.0, 4096).unwrap();
        assert_eq!(
            p,
            Process {
                cpu_seconds: 3.0,
                start_time_seconds: 1_700_000_010.0,
                resident_bytes: 300 * 4096,
                virtual_bytes: 123_456_789,
                threads: 7,
                open_fds: 0,
                max_fds: None,
            }
        );
    }

    #[test]
    fn this_process_reads() {
        let p = read().expect("/proc/self");
        assert!(
            p.resident_bytes > 0 && p.open_fds > 0 && p.threads > 0,
            "{p:?}"
        );
        assert!(p.start_time_seconds > 1.0e9, "{p:?}");
    }
}
