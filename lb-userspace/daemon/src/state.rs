//! The core's [`State`] as the daemon uses it: a snapshot of it with the kernel's counters
//! ([`Snapshot`]), and the files the daemon keeps in its state directory (`status.json`,
//! `down.json`).

use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
pub use sluice_core::state::*;

use crate::{
    atomic_file::{self, Durability},
    dataplane::Dataplane,
    health::Health,
};

/// A [`State`] with the data plane's counters: what `sluice backend list`, `stats`, the
/// metrics and the autoscaler read.
pub trait Snapshot {
    /// A snapshot for `sluice backend list`, with the kernel's counters.
    fn status(&self, dp: &Dataplane) -> Status;
    /// [`Snapshot::status`] of the VIPs `which` picks only.
    fn status_of(
        &self,
        dp: &Dataplane,
        which: impl Fn(&crate::config::VipConfig) -> bool,
    ) -> Status;
    /// [`Snapshot::status`] with the VIP and reason counters of `inputs`, just read (the
    /// status tick), rather than read again.
    fn status_with(&self, dp: &Dataplane, inputs: &StatusInputs) -> Status;
}

impl Snapshot for State {
    fn status(&self, dp: &Dataplane) -> Status {
        self.status_of(dp, |_| true)
    }

    fn status_of(
        &self,
        dp: &Dataplane,
        which: impl Fn(&crate::config::VipConfig) -> bool,
    ) -> Status {
        // Every counter in one read of each map (not one syscall per VIP and backend), of
        // the slots in use.
        let vips = dp.used_vip_counters().unwrap_or_default();
        let reasons = dp.reason_counts_split().unwrap_or_default();
        build_status(self, dp, which, &vips, &reasons)
    }

    fn status_with(&self, dp: &Dataplane, inputs: &StatusInputs) -> Status {
        build_status(self, dp, |_| true, &inputs.counters, &inputs.reasons)
    }
}

/// The status of the VIPs `which` picks, with the VIPs' counters and the reason counts
/// (without a VIP, per VIP) given, and the backends' read here.
fn build_status(
    state: &State,
    dp: &Dataplane,
    which: impl Fn(&crate::config::VipConfig) -> bool,
    vip_counts: &[lb_common::Counters],
    (global_reasons, vip_reasons): &(Vec<u64>, Vec<crate::dataplane::VipReasons>),
) -> Status {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let backend_counts = dp.used_backend_counters().unwrap_or_default();
    let hops: std::collections::BTreeMap<u32, NextHopStatus> = dp
        .next_hops()
        .into_iter()
        .map(|h| (h.slot, next_hop_status(&h.resolution)))
        .collect();
    let counters =
        |all: &[lb_common::Counters], id: u32| all.get(id as usize).copied().unwrap_or_default();
    let vips = state
        .config
        .vips
        .iter()
        .filter(|v| which(v))
        .map(|v| {
            let id = ident(v);
            let rec = dp.layout().vip(&id);
            let vip_counters =
                rec.map_or_else(Default::default, |r| counters(vip_counts, r.vip_id));
            let mut vip_active = 0;
            let mut status = VipStatus {
                name: v.name.clone(),
                vip: id.to_string(),
                forwarding: v.forwarding.as_str().to_owned(),
                scheduler: v.scheduler.as_str().to_owned(),
                check: v.health.check.as_str().to_owned(),
                packets: vip_counters.packets,
                bytes: vip_counters.bytes,
                new_flows: vip_counters.new_flows,
                fingerprint: rec
                    .and_then(|r| r.fingerprint)
                    .map(|f| f.to_string())
                    .unwrap_or_default(),
                reasons: rec
                    .and_then(|r| vip_reasons.get(r.vip_id as usize))
                    .map(named_reasons)
                    .unwrap_or_default(),
                backends: v
                    .backends
                    .iter()
                    .map(|b| {
                        let h = state.health_of(id, b.address);
                        let slot = rec.and_then(|r| r.backends.get(&b.address)).map(|r| r.id);
                        let c =
                            slot.map_or_else(Default::default, |s| counters(&backend_counts, s));
                        let active = slot.map_or(0, |s| dp.conntrack().active(s, c.into()));
                        vip_active += active;
                        // One lookup of each kind per backend (thousands, every second).
                        let tw = state.table_weight(v, b);
                        let life = state.life_of(id, b.address);
                        BackendStatus {
                            address: b.address,
                            weight: b.weight,
                            effective_weight: tw.div_ceil(WEIGHT_SCALE),
                            lifecycle: lifecycle_of(b, h, life, tw).to_owned(),
                            active,
                            closes: c.closes,
                            health: h.map_or(Health::Up, |h| h.health),
                            since: h.map_or(0, |h| secs(h.since)),
                            reason: h.map(|h| h.reason.clone()).unwrap_or_default(),
                            transitions: h.map_or(0, |h| h.transitions),
                            transitions_down: h.map_or(0, |h| h.transitions_down),
                            checks: h.map_or(0, |h| h.checks),
                            failed_checks: h.map_or(0, |h| h.failed_checks),
                            packets: c.packets,
                            bytes: c.bytes,
                            new_flows: c.new_flows,
                            flows: None,
                            load: None,
                            next_hop: slot.and_then(|s| hops.get(&s)).cloned(),
                        }
                    })
                    .collect(),
                active: 0,
            };
            status.active = vip_active;
            status
        })
        .collect();
    // Every packet: those without a VIP, and every VIP row (removed VIPs' too).
    let reasons = lb_common::reason::NAMES
        .iter()
        .zip(crate::dataplane::reason_totals(global_reasons, vip_reasons))
        .map(|(n, c)| ((*n).to_owned(), c))
        .collect();
    let ct = dp.conntrack();
    Status {
        written: secs(SystemTime::now()),
        vips,
        reasons,
        conntrack: ConntrackStatus {
            last_sweep_ms_ago: ct
                .last_sweep
                .map(|(t, _, _)| t.elapsed().as_millis() as u64),
            last_sweep_took_us: ct.last_sweep.map(|(_, d, _)| d.as_micros() as u64),
            last_sweep_flows: ct.last_sweep.map(|(_, _, n)| n),
            expired: ct.expired_total,
            reaped: ct.reaped_total,
            evicted: ct.evicted_total,
            region_slots: u64::from(dp.flow_table().region().slots()),
        },
        config_fingerprint: state
            .config_fingerprint()
            .map(|f| f.to_string())
            .unwrap_or_default(),
        fib_fallbacks: dp.fib_fallbacks().unwrap_or_default(),
        unpinned_flows: dp.unpinned_flows().unwrap_or_default(),
        table_full_flows: dp.table_full_flows().unwrap_or_default(),
    }
}

/// A VIP's reason counts by name, those counted at least once.
fn named_reasons(r: &crate::dataplane::VipReasons) -> std::collections::BTreeMap<String, u64> {
    lb_common::reason::NAMES
        .iter()
        .zip(r)
        .filter(|(_, n)| **n > 0)
        .map(|(name, n)| ((*name).to_owned(), *n))
        .collect()
}

/// A next hop as `sluice backend list` shows it: `10.0.0.1 on eth0 (02:…), mtu 1500`
/// (the interface by name when it still has one), or why it is unresolved.
fn next_hop_status(r: &crate::dataplane::nexthop::Resolution) -> NextHopStatus {
    match r {
        Ok(h) => {
            let mac = h
                .dmac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            let dev = nix::net::if_::if_indextoname(h.ifindex).map_or_else(
                |_| format!("ifindex {}", h.ifindex),
                |n| n.to_string_lossy().into_owned(),
            );
            NextHopStatus {
                resolved: true,
                detail: format!("{mac} on {dev}, mtu {}", h.mtu),
            }
        }
        Err(why) => NextHopStatus {
            resolved: false,
            detail: format!("unresolved: {why} (forwarded through the kernel's FIB)"),
        },
    }
}

/// `status` with each backend's flow-table entries filled in.
pub fn with_flows(mut status: Status, dp: &Dataplane, state: &State) -> Status {
    let per = dp.flows_per_backend();
    for (v, vs) in state.config.vips.iter().zip(&mut status.vips) {
        let rec = dp.layout().vip(&ident(v));
        for b in &mut vs.backends {
            let id = rec.and_then(|r| r.backends.get(&b.address)).map(|r| r.id);
            b.flows = Some(id.and_then(|id| per.get(&id).copied()).unwrap_or(0));
        }
    }
    status
}

/// `<state_dir>/down.json`: the backends down now, rewritten on every health transition and
/// left in place when the daemon stops. Under `on_down = "keep"` a down backend still serves
/// its flows in the pinned maps, so they cannot tell the next daemon it was down; this file
/// does.
pub const DOWN_FILE: &str = "down.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct DownFile {
    /// (VIP as `VipIdent` displays it, backend address).
    down: Vec<(String, IpAddr)>,
}

/// Write the backends `state` has down to `<dir>/down.json` (atomically).
pub fn write_down(dir: &Path, state: &State) -> std::io::Result<()> {
    let f = DownFile {
        down: state.down().map(|(v, b)| (v.to_string(), b)).collect(),
    };
    let bytes = serde_json::to_vec_pretty(&f).map_err(std::io::Error::other)?;
    atomic_file::write(&dir.join(DOWN_FILE), &bytes, Durability::Snapshot)
}

/// The (VIP, backend) pairs `<dir>/down.json` lists; none if it is missing or unreadable.
pub fn read_down(dir: &Path) -> Vec<(String, IpAddr)> {
    std::fs::read(dir.join(DOWN_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<DownFile>(&b).ok())
        .map(|f| f.down)
        .unwrap_or_default()
}

/// Write `status` to `<dir>/status.json` atomically (temporary file, rename; not fsynced:
/// it is rewritten every second), readable by root only (0600), or also by `group`
/// (`daemon.api_group`'s gid: 0640), as the API is: it names every backend.
pub fn write_status(dir: &Path, status: &Status, group: Option<u32>) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    atomic_file::write_private(
        &dir.join("status.json"),
        &bytes,
        Durability::Snapshot,
        atomic_file::private_mode(group),
        group,
    )
}

/// How often the status file is rewritten when nothing in it changed (its `written` time
/// then tells that the daemon is alive).
pub const STATUS_UNCHANGED_REWRITE: Duration = Duration::from_secs(10);

/// The daemon's `<state_dir>/status.json`: each snapshot is encoded and written on a
/// blocking thread, off the daemon's loop, and only when something in it changed (or
/// every [`STATUS_UNCHANGED_REWRITE`]): an idle daemon with thousands of backends does not
/// encode megabytes of JSON every second. A snapshot that comes while the previous one is
/// still being written is skipped (the next, at most a second later, is fresher).
#[derive(Debug)]
pub struct StatusFile {
    dir: std::path::PathBuf,
    group: Option<u32>,
    writing: Option<tokio::task::JoinHandle<()>>,
    last: Option<(std::sync::Arc<Status>, Instant)>,
}

/// Whether two snapshots show the same (all but when they were taken).
fn same_figures(a: &Status, b: &Status) -> bool {
    a.vips == b.vips
        && a.reasons == b.reasons
        && (
            a.conntrack.expired,
            a.conntrack.reaped,
            a.conntrack.evicted,
            a.conntrack.last_sweep_flows,
        ) == (
            b.conntrack.expired,
            b.conntrack.reaped,
            b.conntrack.evicted,
            b.conntrack.last_sweep_flows,
        )
}

impl StatusFile {
    /// For `dir`, readable by `group` (`daemon.api_group`) too if it exists.
    pub fn new(dir: &Path, group: Option<&str>) -> Self {
        let group = group.and_then(|g| match crate::api::server::group_gid(g) {
            Ok((gid, _)) => Some(gid),
            Err(e) => {
                tracing::warn!(error = %e, "daemon.api_group: the status file stays root-only");
                None
            }
        });
        Self {
            dir: dir.to_owned(),
            group,
            writing: None,
            last: None,
        }
    }

    /// Write `status` (in the background), unless it shows what the file already does.
    pub fn write(&mut self, status: std::sync::Arc<Status>) {
        if self.writing.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        if let Some((last, at)) = &self.last
            && at.elapsed() < STATUS_UNCHANGED_REWRITE
            && same_figures(last, &status)
        {
            return;
        }
        self.last = Some((std::sync::Arc::clone(&status), Instant::now()));
        let (dir, group) = (self.dir.clone(), self.group);
        self.writing = Some(tokio::task::spawn_blocking(move || {
            if let Err(err) = write_status(&dir, &status, group) {
                tracing::warn!(error = %err, dir = %dir.display(), "writing the status file");
            }
        }));
    }

    /// Wait for the write in progress, if any.
    pub async fn finish(&mut self) {
        if let Some(h) = self.writing.take() {
            let _ = h.await;
        }
    }
}

/// What a status snapshot is made of that changes without an event of the daemon's loop:
/// the kernel's counters (VIPs, which move with their backends', and drop reasons) and the conntrack sweeper's
/// totals, with the state's version (edits, reloads, the autoscaler) and a generation the
/// loop bumps on everything else (health events, next hops, lifecycle steps). The same inputs make the same snapshot, so
/// an idle daemon with 262,144 backends reads its VIPs' counters each second instead of
/// building and comparing the whole status.
#[derive(Debug, PartialEq)]
pub struct StatusInputs {
    generation: (u64, u64),
    /// The VIPs' counters: every packet counted for a backend is counted for its VIP.
    counters: Vec<lb_common::Counters>,
    reasons: (Vec<u64>, Vec<crate::dataplane::VipReasons>),
    conntrack: (u64, u64, u64, Option<u64>),
    tables_built: u64,
}

impl StatusInputs {
    /// The inputs now (`None` if a counter could not be read: then build the snapshot).
    pub fn read(dp: &Dataplane, generation: (u64, u64)) -> Option<Self> {
        let ct = dp.conntrack();
        Some(Self {
            generation,
            counters: dp.used_vip_counters().ok()?,
            reasons: dp.reason_counts_split().ok()?,
            conntrack: (
                ct.expired_total,
                ct.reaped_total,
                ct.evicted_total,
                ct.last_sweep.map(|(_, _, n)| n),
            ),
            tables_built: dp.tables_built(),
        })
    }
}

/// Read `<dir>/status.json`.
pub fn read_status(dir: &Path) -> std::io::Result<Status> {
    let bytes = std::fs::read(dir.join("status.json"))?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The metrics show the lifecycle state the status (`backend list`, `stats`) carries.
    #[test]
    fn weight_0_is_quiesced_in_the_metrics_too() {
        let text = "[daemon]\ninterface = \"x\"\n[[vip]]\nname = \"web\"\naddress = \"10.0.0.1\"\n\
                    port = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n[[vip.backend]]\naddress = \"10.0.1.1\"\nweight = 0\n";
        let s = State::new(crate::config::parse(text, "test").unwrap().config);
        let (v, b) = (&s.config.vips[0], &s.config.vips[0].backends[0]);
        assert_eq!(s.lifecycle(v, b), "quiesced");
        // The metrics show the state the status (`backend list`, `stats`) carries.
        let status = Status {
            written: 0,
            vips: vec![VipStatus {
                name: "web".into(),
                vip: "10.0.0.1:80/tcp".into(),
                forwarding: "dsr".into(),
                scheduler: "maglev".into(),
                check: "tcp".into(),
                packets: 0,
                bytes: 0,
                new_flows: 0,
                active: 0,
                fingerprint: String::new(),
                reasons: BTreeMap::new(),
                backends: vec![BackendStatus {
                    address: b.address,
                    weight: 0,
                    effective_weight: 0,
                    lifecycle: s.lifecycle(v, b).to_owned(),
                    active: 0,
                    closes: 0,
                    health: Health::Up,
                    since: 0,
                    reason: String::new(),
                    transitions: 0,
                    transitions_down: 0,
                    checks: 0,
                    failed_checks: 0,
                    packets: 0,
                    bytes: 0,
                    new_flows: 0,
                    flows: None,
                    load: None,
                    next_hop: None,
                }],
            }],
            reasons: BTreeMap::new(),
            conntrack: ConntrackStatus::default(),
            config_fingerprint: String::new(),
            fib_fallbacks: 0,
            unpinned_flows: 0,
            table_full_flows: 0,
        };
        let text = crate::metrics::render(&status, 0, 0, &Default::default(), None);
        let line = |state: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("sluice_backend_state")
                        && l.contains(&format!("state=\"{state}\""))
                })
                .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
        };
        assert_eq!(line("quiesced").as_deref(), Some("1"), "{text}");
        assert_eq!(line("active").as_deref(), Some("0"), "{text}");
    }
}
