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

/// The narrowest table drawn (a narrower terminal wraps it).
const MIN_WIDTH: usize = 60;

/// The terminal's width when stdout is one, else 80 (what a report piped to a file or a
/// mail gets); never under [`MIN_WIDTH`].
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
        usize::from(ws.ws_col).max(MIN_WIDTH)
    } else {
        80
    }
}

/// The local time of `secs` (Unix time) with its zone's abbreviation, from the C library
/// (`$TZ`, else /etc/localtime); UTC if it cannot say.
fn local(secs: i64) -> (chrono::DateTime<chrono::FixedOffset>, String) {
    let utc = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    let t: libc::time_t = secs;
    // SAFETY: `tm` is plain data (integers and a pointer), valid zeroed.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r reads `t` and writes `tm` only (the reentrant variant).
    if unsafe { libc::localtime_r(&raw const t, &raw mut tm) }.is_null() {
        return (utc.fixed_offset(), "UTC".to_owned());
    }
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: tm_zone points to the C library's static, NUL-terminated zone names.
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    match chrono::FixedOffset::east_opt(i32::try_from(tm.tm_gmtoff).unwrap_or(0)) {
        Some(off) => (utc.with_timezone(&off), zone),
        None => (utc.fixed_offset(), "UTC".to_owned()),
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// "2026-12-03 21:05:09 CET": the local time now.
fn timestamp() -> String {
    let (t, zone) = local(now_secs());
    format!("{} {zone}", t.format("%Y-%m-%d %H:%M:%S"))
        .trim_end()
        .to_owned()
}

/// "21:05:09": the local time of day now.
fn clock() -> String {
    local(now_secs()).0.format("%H:%M:%S").to_string()
}

/// `text` in lines of at most `width` characters, broken at spaces (a word longer than a
/// line is cut into pieces: nothing is lost).
fn wrap(text: &str, width: usize) -> Vec<String> {
    // An indented text (a backend under its VIP) stays indented on every line.
    let body = text.trim_start_matches(' ');
    let indent = &text[..text.len() - body.len()];
    if !indent.is_empty() && indent.len() < width / 2 {
        return wrap(body, width - indent.len())
            .into_iter()
            .map(|l| format!("{indent}{l}"))
            .collect();
    }
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        let len = line.chars().count();
        if len > 0 && len + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        while line.chars().count() + word.len() > width {
            let room = width - line.chars().count();
            line.extend(word.drain(..room));
            lines.push(std::mem::take(&mut line));
        }
        line.extend(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// One table row of at most `width` characters: the label in the first column, or on
/// lines of its own when it does not fit there (nothing is cut off: an IPv6 backend may be
/// long).
fn row(out: &mut String, width: usize, label: &str, figures: &str) {
    use std::fmt::Write as _;
    let first = width.saturating_sub(FIGURES);
    let label = if label.chars().count() <= first {
        label
    } else {
        for l in wrap(label, width) {
            out.push_str(&l);
            out.push('\n');
        }
        ""
    };
    let _ = writeln!(out, "{}", format!("{label:<first$}{figures}").trim_end());
}

fn figures(cells: [&str; 6]) -> String {
    let [p, b, f, a, h, st] = cells;
    // Cut to their columns (the figures are at most 7 wide, the names shorter): a row
    // never grows past the width.
    format!(" {p:>7.7} {b:>7.7} {f:>7.7} {a:>7.7} {h:>6.6} {st:<10.10}")
}

/// One frame: a title with the time, then a row per VIP and per backend, each line at most
/// `width` characters.
fn render(s: &Status, now: &Totals, before: &Totals, secs: f64, width: usize) -> String {
    let mut out = format!("sluice stats  {}  (rates over {secs:.1} s)\n", timestamp());
    let first = width.saturating_sub(FIGURES);
    row(
        &mut out,
        width,
        if first >= 13 { "vip / backend" } else { "" },
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
    // Since when the daemon has not answered (local time of day).
    let mut away: Option<String> = None;
    let mut shown = 0;
    loop {
        match fetch() {
            Ok(now) => {
                if let Some(since) = away.take() {
                    let n: &mut dyn std::io::Write = if w.json { notes } else { out };
                    let text = format!("{}  daemon back (unavailable since {since})", clock());
                    for l in wrap(&text, w.width) {
                        writeln!(n, "{l}")?;
                    }
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
                if away.is_none() {
                    let n: &mut dyn std::io::Write = if w.json { notes } else { out };
                    let why = match &e {
                        ClientError::Connect { error, .. } => error.to_string(),
                        e => e.to_string(),
                    };
                    let since = clock();
                    let text = format!(
                        "daemon unavailable since {since}, retrying every {:.1} s (Ctrl-C to \
                         stop): {why} at {}",
                        w.interval.as_secs_f64(),
                        w.socket.display()
                    );
                    for l in wrap(&text, w.width) {
                        writeln!(n, "{l}")?;
                    }
                    n.flush()?;
                    away = Some(since);
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

    fn backend(address: &str, lifecycle: &str, health: &str, packets: u64) -> serde_json::Value {
        serde_json::json!({
            "address": address, "weight": 1, "effective_weight": 1, "lifecycle": lifecycle,
            "active": 99_999_999, "closes": 0, "health": health, "since": 0, "reason": "",
            "transitions": 0, "packets": packets, "bytes": packets * 1500,
            "new_flows": packets / 10,
        })
    }

    fn vip(
        name: &str,
        vip: &str,
        packets: u64,
        backends: Vec<serde_json::Value>,
    ) -> serde_json::Value {
        serde_json::json!({
            "name": name, "vip": vip, "forwarding": "ipip", "scheduler": "maglev",
            "check": "tcp", "packets": packets, "bytes": packets * 1500,
            "new_flows": packets / 10, "active": 123_456, "backends": backends,
        })
    }

    /// A realistic status: an IPv6 VIP with a long name, an IPv4 one with backends in
    /// every state, and one whose name alone is wider than a narrow terminal.
    fn status(written: u64, packets: u64) -> Status {
        let text = serde_json::json!({
            "written": written,
            "vips": [
                vip("a-rather-long-vip-name", "[2001:db8:1234:5678::100]:443/tcp", packets, vec![
                    backend("2001:db8:1234:5678:9abc:def0:1234:5678", "slow-start", "up", packets),
                    backend("2001:db8::2", "active", "down", 0),
                ]),
                vip("web", "192.0.2.10:80/tcp", packets / 3, vec![
                    backend("10.0.0.1", "active", "up", packets / 3),
                    backend("10.0.0.2", "draining", "up", 7),
                    backend("10.0.0.3", "drained", "up", 0),
                    backend("10.0.0.4", "quiesced", "down", 0),
                ]),
                vip(
                    "inference-gateway-for-the-europe-west-region-blue-green-canary",
                    "[2001:db8:ffff:ffff:ffff:ffff:ffff:fffe]:65535/udp",
                    u64::MAX / 1600,
                    vec![backend("fd00:1234:5678:9abc:def0:1234:5678:9abc", "active", "up", 1)],
                ),
            ],
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

    fn assert_fits(text: &str, width: usize) {
        for l in text.lines() {
            let n = l.chars().count();
            assert!(n <= width, "{n} columns, over {width}: {l:?}\n{text}");
        }
    }

    #[test]
    fn frames_fit_the_width_and_carry_the_time() {
        let (a, b) = (status(10, 2_000_000_000), status(9, 1_000));
        for width in [80, 100, 60] {
            let f = frame(&a, &b, Duration::from_secs(1), false, width).unwrap();
            assert_fits(&f, width);
            let now = timestamp();
            assert!(f.lines().next().unwrap().contains(&now[..10]), "{f}");
            // Nothing is cut: long names get lines of their own.
            let flat = f.replace('\n', "");
            for name in [
                "2001:db8:1234:5678:9abc:def0:1234:5678",
                "inference-gateway-for-the-europe-west-region-blue-green-canary",
                "[2001:db8:ffff:ffff:ffff:ffff:ffff:fffe]:65535/udp",
                "fd00:1234:5678:9abc:def0:1234:5678:9abc",
            ] {
                assert!(flat.contains(name), "{width}: {name} missing\n{f}");
            }
            for state in ["slow-start", "draining", "drained", "quiesced", " down "] {
                assert!(f.contains(state), "{width}: {state} missing\n{f}");
            }
            assert!(f.contains(" 3.0T "), "{f}");
        }
        // A wide terminal: names stay on their row.
        let f = frame(&a, &b, Duration::from_secs(1), false, 160).unwrap();
        assert_fits(&f, 160);
        assert!(
            f.lines()
                .any(|l| l.contains("2001:db8:1234:5678:9abc:def0:1234:5678")
                    && l.contains("slow-start")),
            "{f}"
        );
    }

    #[test]
    fn wrap_keeps_every_character() {
        assert_eq!(wrap("", 10), vec![String::new()]);
        assert_eq!(wrap("ab cd ef", 5), vec!["ab cd", "ef"]);
        assert_eq!(wrap("  ab cd ef", 7), vec!["  ab cd", "  ef"]);
        let long = "x".repeat(25);
        let lines = wrap(&format!("a {long}"), 10);
        assert!(lines.iter().all(|l| l.chars().count() <= 10), "{lines:?}");
        assert_eq!(lines.concat().replace(' ', ""), format!("a{long}"));
    }

    /// A real socket: a fake daemon answers, goes away (its socket removed, as a stopped
    /// `sluice run` leaves it), and a new one answers on the same path.
    #[test]
    fn watch_outlives_a_restart_of_the_api_socket() {
        use std::io::{BufRead as _, Write as _};
        let dir = std::env::temp_dir().join(format!("sluice-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let sock = dir.join("api.sock");
        let serve = |answers: u64, first: u64| {
            let _ = std::fs::remove_file(&sock);
            let l = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
            let path = sock.clone();
            std::thread::spawn(move || {
                for i in 0..answers {
                    let (s, _) = l.accept().expect("accept");
                    let mut line = String::new();
                    std::io::BufReader::new(&s)
                        .read_line(&mut line)
                        .expect("read");
                    let resp = Response::Status {
                        status: status(first + i, 1000 * (first + i)),
                    };
                    let mut w = &s;
                    writeln!(w, "{}", serde_json::to_string(&resp).expect("JSON")).expect("write");
                }
                drop(l);
                let _ = std::fs::remove_file(path);
            })
        };
        let mut first = Some(serve(2, 1));
        let mut second = None;
        let mut slept = 0;
        let mut out = Vec::new();
        let w = Watch {
            interval: Duration::from_millis(1),
            json: false,
            width: 80,
            clear: false,
            frames: Some(2),
            socket: &sock,
        };
        watch(
            &w,
            || snapshot_raw(&sock),
            |_| {
                slept += 1;
                if slept == 2 {
                    // The first daemon answered twice and is gone.
                    first.take().expect("once").join().expect("server");
                }
                if slept == 4 {
                    second = Some(serve(2, 10));
                }
                assert!(slept < 20, "the watch did not resume");
            },
            &mut out,
            &mut Vec::new(),
        )
        .expect("the watch outlives the restart");
        second.expect("started").join().expect("server");
        let out = String::from_utf8(out).expect("UTF-8");
        assert_eq!(out.matches("sluice stats").count(), 2, "{out}");
        assert_eq!(out.matches("daemon unavailable since").count(), 1, "{out}");
        assert_eq!(out.matches("daemon back").count(), 1, "{out}");
        assert_fits(&out, 80);
        let _ = std::fs::remove_dir_all(&dir);
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
        assert_eq!(out.matches("daemon unavailable since").count(), 1, "{out}");
        assert_eq!(out.matches("daemon back").count(), 1, "{out}");
        assert_fits(&out, 80);
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
