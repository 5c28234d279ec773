//! The benchmark report as text (`bench.txt`, also printed), as an SVG bar chart of the
//! per-packet ratios (`ratios.svg`), and as a flat list of named figures.

use std::fmt::Write as _;

use super::Report;

fn mark(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "✓",
        Some(false) => "✗",
        None => "",
    }
}

const MIB: f64 = (1 << 20) as f64;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Every headline figure, named.
pub fn figures(r: &Report) -> Vec<(String, f64)> {
    let mut v = Vec::new();
    if let Some(p) = &r.packet {
        v.push(("packet.floor.p50_ns".into(), p.floor_ns.p50 as f64));
        for c in &p.cases {
            for (what, x) in [
                ("p10_ns", c.sluice_ns.p10 as f64),
                ("p50_ns", c.sluice_ns.p50 as f64),
                ("p90_ns", c.sluice_ns.p90 as f64),
                ("p99_ns", c.sluice_ns.p99 as f64),
                ("floor_p50_ns", c.floor_ns.p50 as f64),
                ("ratio", c.ratio),
            ] {
                v.push((format!("packet.{}.{what}", c.name), x));
            }
        }
    }
    if let Some(c) = &r.control {
        for m in &c.maglev {
            v.push((format!("maglev.{}.median_ms", m.backends), m.median_ms));
        }
        let e = &c.publish_edit;
        v.push(("publish_edit.add_median_ms".into(), e.add_median_ms));
        v.push(("publish_edit.remove_median_ms".into(), e.remove_median_ms));
        v.push((
            "publish_edit.verified_rounds".into(),
            e.verified_rounds as f64,
        ));
        let m = &c.memory;
        v.push((
            "memory.vmrss_published_kib".into(),
            m.vmrss_published_kib as f64,
        ));
        v.push(("memory.daemon_kib".into(), m.daemon_kib as f64));
        v.push(("memory.publish_ms".into(), m.publish_ms));
        let d = &c.daemon;
        v.push(("daemon.list_median_ms".into(), d.list_median_ms));
        v.push(("daemon.list_max_ms".into(), d.list_max_ms));
        v.push(("daemon.metrics_median_ms".into(), d.metrics_median_ms));
        v.push(("daemon.edit_median_ms".into(), d.edit_median_ms));
        v.push(("daemon.idle_cpu_percent".into(), d.idle_cpu_percent));
        v.push((
            "map_memory.total_bytes".into(),
            c.map_memory.total_bytes as f64,
        ));
        let f = &c.flow_scale;
        v.push(("flow_scale.held".into(), f.held as f64));
        v.push(("flow_scale.fill_flows_per_s".into(), f.fill_flows_per_s));
        v.push(("flow_scale.one_cpu_held".into(), f.one_cpu_held as f64));
    }
    if let Some(t) = &r.throughput {
        for run in &t.runs {
            v.push((
                format!("throughput.{}.{}.{}.pps", run.mode, run.config, run.flows),
                run.pps,
            ));
        }
        for s in &t.summary {
            v.push((
                format!("throughput.{}.{}.vs_floor_tx", s.mode, s.flows),
                s.vs_floor_tx,
            ));
            v.push((
                format!("throughput.{}.{}.vs_drop", s.mode, s.flows),
                s.vs_drop,
            ));
            v.push((
                format!("throughput.{}.{}.floor_miss_vs_floor_tx", s.mode, s.flows),
                s.miss_vs_floor_tx,
            ));
        }
    }
    v
}

/// The human-readable table.
pub fn text(r: &Report) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(
        s,
        "sluice {} bench ({} build){}: kernel {}, {}, {} CPUs ({} possible), {} MiB, load average {:.2} {:.2} {:.2} at start; measured on CPU {}; {:.0} s",
        r.sluice_version,
        r.build_profile,
        if r.quick { " (quick)" } else { "" },
        m.kernel,
        m.cpu_model,
        m.cpus,
        m.cpus_possible,
        m.memory_mib,
        m.load_average[0],
        m.load_average[1],
        m.load_average[2],
        r.cpu,
        r.duration_s
    );
    if let Some(p) = &r.packet {
        packet_text(&mut s, p);
    }
    if let Some(c) = &r.control {
        let _ = writeln!(s, "\nControl plane");
        maglev_text(&mut s, c);
        memory_text(&mut s, &c.memory);
        daemon_text(&mut s, &c.daemon);
        map_memory_text(&mut s, &c.map_memory);
        flow_scale_text(&mut s, &c.flow_scale);
    }
    if let Some(t) = &r.throughput {
        s.push_str(&super::throughput::text(t));
    }
    s
}

/// The per-packet table: the floor's line, then one line a case, then the notes.
fn packet_text(s: &mut String, p: &super::packet::Report) {
    use super::packet::{Method, WARM_REPEAT, short};
    let how = match p.method {
        Method::Block => format!(
            "block method: {} rounds; in each, the floor's {} calls back to back, then each \
             case's {} calls back to back ({} unmeasured warm-up calls before each block); \
             ratio = median over rounds of (case p50 / that round's floor p50)",
            p.rounds, p.calls_per_case, p.calls_per_case, p.warmup_calls
        ),
        Method::Paired => format!(
            "paired method: {} round(s) of {} calls a case, each call paired with one of the \
             floor on the same frame, in alternating order ({} warm-up pairs); ratio = median \
             over rounds of (case p50 / the paired floor calls' p50)",
            p.rounds, p.calls_per_case, p.warmup_calls
        ),
    };
    let _ = writeln!(
        s,
        "\nPer packet: BPF_PROG_TEST_RUN, repeat 1, kernel-measured ns, on CPU {}; floor = \
         sluice_floor_tx (swap MACs, XDP_TX); {how}. p10/p50/p90: every measured call of \
         every round, pooled. New-flow cases: a 5-tuple never seen each call, each block \
         in a newly loaded object (an empty table: nothing evicted); many-flow cases: each call a hit, \
         cycling over the flows of a table of their own ({} entries; the others' {}). Memory \
         floors (references, not sluice; one before each many-flow case): the floor plus \
         one 64-byte line read a call, one line per flow of that case, each at its own \
         scattered place in as many lines as that case's region has slots: what reading a \
         flow's line costs here when the program does nothing else. Warm \
         ratio: the same frame {} times back to back in one call (kernel average, caches \
         warm; sluice ns / floor ns), for the one-flow cases a run leaves parseable.",
        p.cpu, p.filled_flow_entries, p.flow_entries, WARM_REPEAT
    );
    let _ = writeln!(
        s,
        "{:<42} {:>7} {:>6} {:>5} {:>5} {:>5} {:>6}  {:<13} {:<10} {:>12}",
        "case", "verdict", "flows", "p10", "p50", "p90", "ratio", "rounds", "target", "warm ratio"
    );
    let range = |r: &[f64]| match (
        r.iter().copied().reduce(f64::min),
        r.iter().copied().reduce(f64::max),
    ) {
        (Some(lo), Some(hi)) if r.len() > 1 => format!("{lo:.2}–{hi:.2}"),
        _ => String::new(),
    };
    let f = &p.floor_ns;
    let _ = writeln!(
        s,
        "{:<42} {:>7} {:>6} {:>5} {:>5} {:>5} {:>6}",
        "floor (MAC swap, XDP_TX)", "TX", "", f.p10, f.p50, f.p90, "1.00×"
    );
    for c in &p.cases {
        let target = c
            .target
            .map(|t| format!("≤ {t:.2}× {}", mark(c.met)))
            .unwrap_or_default();
        let warm = c.warm.as_ref().map_or_else(String::new, |w| {
            format!("{:.2}× ({:.0}/{:.0})", w.ratio, w.sluice_ns, w.floor_ns)
        });
        let label = if c.new_flows == if c.fresh { c.calls } else { 0 } {
            c.label.clone()
        } else {
            format!(
                "{} [{} of {} calls opened a flow]",
                c.label, c.new_flows, c.calls
            )
        };
        let line = format!(
            "{:<42} {:>7} {:>6} {:>5} {:>5} {:>5} {:>5.2}×  {:<13} {:<10} {}",
            label,
            c.verdict.trim_start_matches("XDP_"),
            short(c.flows_in_table),
            c.sluice_ns.p10,
            c.sluice_ns.p50,
            c.sluice_ns.p90,
            c.ratio,
            range(&c.round_ratios),
            target,
            warm
        );
        let _ = writeln!(s, "{}", line.trim_end());
    }
    if p.method == Method::Block {
        let _ = writeln!(
            s,
            "floor p50 by round: {} ns",
            p.floor_round_p50_ns
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for n in &p.notes {
        let _ = writeln!(s, "note: {n}");
    }
}

/// Maglev build times, and how long an edit takes to be in effect.
fn maglev_text(s: &mut String, c: &super::control::Report) {
    for b in &c.maglev {
        let target = b
            .target_ms
            .map(|t| format!("  target ≤ {t} ms {}", mark(b.met)))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  Maglev build, {:>4} backends, M = {}: median {:.3} ms (min {:.3}, max {:.3}, {} runs){target}",
            b.backends, b.table_size, b.median_ms, b.min_ms, b.max_ms, b.runs
        );
    }
    let e = &c.publish_edit;
    let _ = writeln!(
        s,
        "  Edit in effect (publish of +1 backend on a {}-backend VIP): median {:.2} ms, max {:.2} ms \
         (Maglev build {:.2} ms); removal {:.2} ms; new backend served a new flow in {}/{} rounds  \
         target ≤ {} ms {}",
        e.backends_before,
        e.add_median_ms,
        e.add_max_ms,
        e.add_build_median_ms,
        e.remove_median_ms,
        e.verified_rounds,
        e.rounds,
        e.target_ms,
        mark(Some(e.met))
    );
}

/// The daemon's memory with many VIPs published.
fn memory_text(s: &mut String, mm: &super::control::Memory) {
    let _ = writeln!(
        s,
        "  Daemon memory, {} VIPs × {} backends published (in {:.0} ms): VmRSS {:.1} MiB \
         (before load {:.1}, loaded {:.1}; anon {:.1}, file {:.1}, shmem {:.1}); of which the \
         TABLES and FLOWS mappings {:.1} MiB (kernel memory, below); daemon's own {:.1} MiB  target ≤ {} MiB {}",
        mm.vips,
        mm.backends_per_vip,
        mm.publish_ms,
        mib(mm.vmrss_published_kib),
        mib(mm.vmrss_before_kib),
        mib(mm.vmrss_loaded_kib),
        mib(mm.rss_anon_kib),
        mib(mm.rss_file_kib),
        mib(mm.rss_shmem_kib),
        mib(mm.tables_mapping_kib),
        mib(mm.daemon_kib),
        mm.target_mib,
        mark(Some(mm.met))
    );
}

/// The daemon's API, metrics and idle CPU with many VIPs.
fn daemon_text(s: &mut String, d: &super::daemon_scale::DaemonScale) {
    let _ = writeln!(
        s,
        "  Daemon with {} VIPs × {} backends: `sluice backend list` median {:.1} ms, max {:.1} ms \
         ({} runs); metrics scrape {:.1} ms ({} bytes); API edit {:.1} ms; idle CPU {:.2}% of a core \
         over {:.0} s  targets list ≤ {} ms, idle ≤ {}% {}",
        d.vips,
        d.backends_per_vip,
        d.list_median_ms,
        d.list_max_ms,
        d.list_runs,
        d.metrics_median_ms,
        d.metrics_bytes,
        d.edit_median_ms,
        d.idle_cpu_percent,
        d.idle_window_s,
        d.target_list_ms,
        d.target_idle_cpu_percent,
        mark(Some(d.met))
    );
}

/// The kernel memory of the balancer's maps at the default sizes.
fn map_memory_text(s: &mut String, k: &super::control::MapMemory) {
    let _ = writeln!(
        s,
        "  Kernel map memory, default sizes ({} flows, {} table slots): {:.1} MiB",
        k.flow_entries,
        k.table_slots,
        k.total_bytes as f64 / MIB
    );
    for map in k.maps.iter().filter(|m| m.memlock_bytes >= 64 << 10) {
        let _ = writeln!(
            s,
            "    {:<14} {:>9} entries {:>8.1} MiB",
            map.name,
            map.max_entries,
            map.memlock_bytes as f64 / MIB
        );
    }
    let small: u64 = k
        .maps
        .iter()
        .filter(|m| m.memlock_bytes < 64 << 10)
        .map(|m| m.memlock_bytes)
        .sum();
    let _ = writeln!(
        s,
        "    {:<14} {:>17} {:>8.1} MiB",
        "(the rest)",
        "",
        small as f64 / MIB
    );
}

/// Filling the flow table from every CPU, and from one.
fn flow_scale_text(s: &mut String, f: &super::control::FlowScale) {
    let _ = writeln!(
        s,
        "  Flow table ({} entries): {} new flows over {} CPUs in {:.2} s ({:.0} flows/s), {} held \
         (counted in {:.2} s); the same flows all on one CPU: {} held",
        f.capacity,
        f.flows_offered,
        f.cpus,
        f.fill_s,
        f.fill_flows_per_s,
        f.held,
        f.count_s,
        f.one_cpu_held
    );
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A horizontal bar chart of the per-packet ratios, with each target marked.
pub fn svg(r: &Report) -> String {
    let cases = r.packet.as_ref().map_or(&[][..], |p| &p.cases[..]);
    let (left, bar_w, row, top) = (340.0, 420.0, 26.0, 56.0);
    let width = left + bar_w + 90.0;
    let height = top + row * cases.len() as f64 + 40.0;
    let max = cases
        .iter()
        .flat_map(|c| [c.ratio, c.target.unwrap_or(0.0)])
        .fold(2.0_f64, f64::max)
        .ceil();
    let x = |v: f64| left + v / max * bar_w;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "sluice per-packet cost / floor ({} method, BPF_PROG_TEST_RUN) — {}, kernel {}",
        r.packet.as_ref().map_or("block", |p| p.method.name()),
        r.machine.cpu_model,
        r.machine.kernel
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#,
        esc(&title)
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="38" fill="#555">bar: ratio to sluice_floor_tx (median over rounds of p50 / floor p50); red tick: target</text>"##
    );
    for g in 0..=(max as u32) {
        let gx = x(f64::from(g));
        let _ = writeln!(
            s,
            r##"<line x1="{gx}" y1="{}" x2="{gx}" y2="{}" stroke="{}" stroke-width="1"/>"##,
            top - 6.0,
            top + row * cases.len() as f64,
            if g == 1 { "#888" } else { "#ddd" }
        );
        let _ = writeln!(
            s,
            r##"<text x="{gx}" y="{}" text-anchor="middle" fill="#555">{g}×</text>"##,
            top + row * cases.len() as f64 + 16.0
        );
    }
    for (i, c) in cases.iter().enumerate() {
        let y = top + row * i as f64;
        let color = match c.met {
            Some(false) => "#d9534f",
            Some(true) => "#3c8d40",
            None => "#4a78b5",
        };
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            left - 8.0,
            y + 15.0,
            esc(&c.label)
        );
        let _ = writeln!(
            s,
            r#"<rect x="{left}" y="{}" width="{:.1}" height="{}" fill="{color}"/>"#,
            y + 3.0,
            (x(c.ratio) - left).max(1.0),
            row - 8.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}">{:.2}× ({} ns)</text>"#,
            x(c.ratio) + 4.0,
            y + 15.0,
            c.ratio,
            c.sluice_ns.p50
        );
        if let Some(t) = c.target {
            let tx = x(t);
            let _ = writeln!(
                s,
                r##"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{}" stroke="#c00" stroke-width="2"/>"##,
                y + 1.0,
                y + row - 3.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
