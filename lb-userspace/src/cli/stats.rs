//! `sluice stats [--watch]`: per VIP and per backend rates (packets/s, bytes/s, new
//! flows/s) from two snapshots of the kernel counters one interval apart, the flow-table
//! entries per backend, health and state. `--watch` prints a frame per interval (with the
//! time; 80 columns, or the terminal's width) and waits out a daemon restart.

use std::{collections::HashMap, path::Path, time::Duration};

use crate::{
    api::{
        Request, Response,
        client::{self, ClientError},
    },
    state::Status,
};

fn snapshot_raw(socket: &Path) -> Result<Status, ClientError> {
    match client::request(socket, &Request::Status { flows: true })? {
        Response::Status { status } => Ok(status),
        _ => Err(ClientError::Daemon(
            "unexpected answer to a status request".to_owned(),
        )),
    }
}

fn snapshot(socket: &Path) -> anyhow::Result<Status> {
    Ok(snapshot_raw(socket)?)
}

/// (packets, bytes, new flows) per key.
type Totals = HashMap<String, (u64, u64, u64)>;

fn totals(s: &Status) -> Totals {
    let mut t = HashMap::new();
    for v in &s.vips {
        t.insert(v.vip.clone(), (v.packets, v.bytes, v.new_flows));
        for b in &v.backends {
            t.insert(
                format!("{} {}", v.vip, b.address),
                (b.packets, b.bytes, b.new_flows),
            );
        }
    }
    t
}

fn rate(now: &Totals, before: &Totals, key: &str, secs: f64) -> (f64, f64, f64) {
    let (a, b) = (
        now.get(key).copied().unwrap_or_default(),
        before.get(key).copied().unwrap_or_default(),
    );
    let d = |x: u64, y: u64| x.saturating_sub(y) as f64 / secs;
    (d(a.0, b.0), d(a.1, b.1), d(a.2, b.2))
}

fn human(x: f64) -> String {
    if x >= 1e12 {
        format!("{:.1}T", x / 1e12)
    } else if x >= 1e9 {
        format!("{:.1}G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// Width of the columns after the name: four rates/counts of 8, health 7, state 11.
const FIGURES: usize = 4 * 8 + 7 + 11;

/// The terminal's width when stdout is one, else 80 (what a report piped to a file or a
/// mail gets); never under 60.
fn width() -> usize {
    use std::io::IsTerminal as _;
    if !std::io::stdout().is_terminal() {
        return 80;
    }
    // nix has no safe call for TIOCGWINSZ; its macro declares the typed ioctl.
    nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize, into ours; fd 1 is stdout.
    let rc = unsafe { tiocgwinsz(1, &raw mut ws) };
    if rc.is_ok() && ws.ws_col > 0 {
        usize::from(ws.ws_col).max(60)
    } else {
        80
    }
}

/// "2026-12-03 21:05:09 UTC" for the wall clock now.
fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(0), 0)
        .map_or_else(String::new, |t| {
            t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
        })
}

/// One table row of at most `width` characters: the label in the first column, or on a
/// line of its own when it does not fit there (nothing is cut off: an IPv6 backend may be
/// long).
fn row(out: &mut String, width: usize, label: &str, figures: &str) {
    use std::fmt::Write as _;
    let first = width.saturating_sub(FIGURES);
    let label = if label.chars().count() <= first {
        label
    } else {
        out.push_str(label);
        out.push('\n');
        ""
    };
    let _ = writeln!(out, "{}", format!("{label:<first$}{figures}").trim_end());
}

fn figures(cells: [&str; 6]) -> String {
    let [p, b, f, a, h, st] = cells;
    format!(" {p:>7} {b:>7} {f:>7} {a:>7} {h:>6} {st:<10}")
}

/// One frame: a title with the time, then a row per VIP and per backend, each line at most
/// `width` characters.
fn render(s: &Status, now: &Totals, before: &Totals, secs: f64, width: usize) -> String {
    let mut out = format!("sluice stats  {}  (rates over {secs:.1} s)\n", timestamp());
    row(
        &mut out,
        width,
        "vip / backend",
        &figures(["pkts/s", "bytes/s", "flows/s", "active", "health", "state"]),
    );
    for v in &s.vips {
        let (p, b, f) = rate(now, before, &v.vip, secs);
        row(
            &mut out,
            width,
            &format!("{} {}", v.name, v.vip),
            &figures([
                &human(p),
                &human(b),
                &human(f),
                &human(v.active as f64),
                "",
                &v.scheduler,
            ]),
        );
        for be in &v.backends {
            let (p, b, f) = rate(now, before, &format!("{} {}", v.vip, be.address), secs);
            row(
                &mut out,
                width,
                &format!("  {}", be.address),
                &figures([
                    &human(p),
                    &human(b),
                    &human(f),
                    &human(be.active as f64),
                    &format!("{:?}", be.health).to_lowercase(),
                    &be.lifecycle,
                ]),
            );
        }
    }
    out
}

/// One sample's output: a JSON line, or the table.
fn frame(
    now: &Status,
    before: &Status,
    interval: Duration,
    json: bool,
    width: usize,
) -> anyhow::Result<String> {
    let secs = (now.written.saturating_sub(before.written) as f64).max(interval.as_secs_f64());
    let (a, b) = (totals(now), totals(before));
    if json {
        let rows: Vec<_> = a
            .keys()
            .map(|k| {
                let (p, by, f) = rate(&a, &b, k, secs);
                serde_json::json!({"key": k, "packets_per_s": p, "bytes_per_s": by, "new_flows_per_s": f})
            })
            .collect();
        Ok(format!(
            "{}\n",
            serde_json::to_string(&serde_json::json!({"status": now, "rates": rows}))?
        ))
    } else {
        Ok(render(now, &a, &b, secs, width))
    }
}

/// Whether `e` means the daemon is not there (stopped, restarting, or gone mid-answer),
/// which a watch waits out; the others (refused, an error answer) it reports.
fn daemon_gone(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Connect { .. } | ClientError::Io(_) | ClientError::Decode(_)
    )
}

/// How a watch ends: after this many frames (tests), or never (Ctrl-C).
pub struct Watch<'a> {
    pub interval: Duration,
    pub json: bool,
    pub width: usize,
    /// Clear the screen before each frame (a terminal).
    pub clear: bool,
    pub frames: Option<usize>,
    pub socket: &'a Path,
}

/// `stats --watch`: a frame per interval; while the daemon is away (a restart), one line
/// saying so, then frames again once it answers. Frames and notes go to `out` (notes to
/// `notes` in JSON mode, to keep `out` one JSON document per line).
pub fn watch(
    w: &Watch<'_>,
    mut fetch: impl FnMut() -> Result<Status, ClientError>,
    mut sleep: impl FnMut(Duration),
    out: &mut dyn std::io::Write,
    notes: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let mut before: Option<Status> = None;
    let mut waiting = false;
    let mut shown = 0;
    loop {
        match fetch() {
            Ok(now) => {
                if waiting {
                    let n: &mut dyn std::io::Write = if w.json { notes } else { out };
                    writeln!(n, "{}  the daemon answers again", timestamp())?;
                    waiting = false;
                }
                if let Some(b) = &before {
                    let f = frame(&now, b, w.interval, w.json, w.width)?;
                    if w.clear {
                        // Clear the screen and go home: a refreshing table.
                        write!(out, "\x1b[2J\x1b[H")?;
                    }
                    out.write_all(f.as_bytes())?;
                    out.flush()?;
                    shown += 1;
                    if w.frames.is_some_and(|n| shown >= n) {
                        return Ok(());
                    }
                }
                before = Some(now);
            }
            Err(e) if daemon_gone(&e) => {
                if !waiting {
                    let n: &mut dyn std::io::Write = if w.json { notes } else { out };
                    let why = match &e {
                        ClientError::Connect { error, .. } => error.to_string(),
                        e => e.to_string(),
                    };
                    writeln!(
                        n,
                        "{}  no answer from the daemon ({why}); waiting for it at {} \
                         (Ctrl-C to stop)",
                        timestamp(),
                        w.socket.display()
                    )?;
                    n.flush()?;
                    waiting = true;
                }
                // Rates need two samples of the same daemon's counters.
                before = None;
            }
            Err(e) => return Err(e.into()),
        }
        sleep(w.interval);
    }
}

pub fn run(socket: &Path, watch_it: bool, interval: Duration, json: bool) -> anyhow::Result<()> {
    if watch_it {
        use std::io::IsTerminal as _;
        let w = Watch {
            interval,
            json,
            width: width(),
            clear: !json && std::io::stdout().is_terminal(),
            frames: None,
            socket,
        };
        return watch(
            &w,
            || snapshot_raw(socket),
            std::thread::sleep,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        );
    }
    let before = snapshot(socket)?;
    std::thread::sleep(interval);
    let now = snapshot(socket)?;
    print!("{}", frame(&now, &before, interval, json, width())?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(written: u64, packets: u64) -> Status {
        let text = serde_json::json!({
            "written": written,
            "vips": [{
                "name": "a-rather-long-vip-name", "vip": "[2001:db8:1234:5678::100]:443/tcp",
                "forwarding": "ipip", "scheduler": "maglev", "check": "tcp",
                "packets": packets, "bytes": packets * 1500, "new_flows": packets / 10,
                "active": 123_456,
                "backends": [{
                    "address": "2001:db8:1234:5678:9abc:def0:1234:5678", "weight": 1,
                    "effective_weight": 1, "lifecycle": "slow-start", "active": 99_999_999,
                    "closes": 0, "health": "up", "since": 0, "reason": "", "transitions": 0,
                    "packets": packets, "bytes": packets * 1500, "new_flows": packets / 10,
                }],
            }],
            "reasons": {},
            "conntrack": serde_json::to_value(crate::state::ConntrackStatus::default()).unwrap(),
        });
        serde_json::from_value(text).expect("a status")
    }

    fn refused() -> ClientError {
        ClientError::Connect {
            path: "/run/test.sock".to_owned(),
            error: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        }
    }

    #[test]
    fn frames_fit_80_columns_and_carry_the_time() {
        let (a, b) = (status(10, 2_000_000_000), status(9, 1_000));
        let f = frame(&a, &b, Duration::from_secs(1), false, 80).unwrap();
        for l in f.lines() {
            assert!(
                l.chars().count() <= 80,
                "{} columns: {l:?}",
                l.chars().count()
            );
        }
        let year = timestamp();
        assert!(f.lines().next().unwrap().contains(&year[..10]), "{f}");
        // Long names are not cut: they get a line of their own.
        assert!(f.contains("2001:db8:1234:5678:9abc:def0:1234:5678"), "{f}");
        assert!(f.contains("slow-start") && f.contains(" 3.0T "), "{f}");
        // A wider terminal: names stay on the row.
        let f = frame(&a, &b, Duration::from_secs(1), false, 160).unwrap();
        assert!(
            f.lines()
                .any(|l| l.contains("2001:db8:1234:5678:9abc:def0:1234:5678")
                    && l.contains("slow-start")),
            "{f}"
        );
    }

    #[test]
    fn watch_waits_for_a_restarting_daemon() {
        let mut answers = vec![
            Ok(status(1, 0)),
            Ok(status(2, 100)),
            Err(refused()),
            Err(refused()),
            Err(ClientError::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            ))),
            Ok(status(6, 0)),
            Ok(status(7, 50)),
        ]
        .into_iter();
        let mut out = Vec::new();
        let mut notes = Vec::new();
        let mut slept = 0;
        let w = Watch {
            interval: Duration::from_secs(1),
            json: false,
            width: 80,
            clear: false,
            frames: Some(2),
            socket: Path::new("/run/test.sock"),
        };
        watch(
            &w,
            || answers.next().expect("the watch stops after two frames"),
            |_| slept += 1,
            &mut out,
            &mut notes,
        )
        .expect("the watch outlives the restart");
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.matches("sluice stats").count(), 2, "{out}");
        assert_eq!(out.matches("waiting for it").count(), 1, "{out}");
        assert_eq!(out.matches("answers again").count(), 1, "{out}");
        assert!(out.contains("/run/test.sock"), "{out}");
        assert_eq!(slept, 6);
        // A refusal that waiting cannot fix ends it.
        let r = watch(
            &w,
            || Err(ClientError::Denied("permission denied".to_owned())),
            |_| {},
            &mut Vec::new(),
            &mut Vec::new(),
        );
        assert!(r.is_err());
    }
}
