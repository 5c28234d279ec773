//! Restarts and upgrades without dropping a flow.
//!
//! `sluice run` pins every map of the balancer (every map of its object; the benchmarks'
//! maps are in an object of their own, [`super::BenchObject`]) in its pin directory
//! (`daemon.pin_dir`, by default `/sys/fs/bpf/sluice/<interface>`), and the balancer's XDP
//! attachment as a pinned `bpf_link` (`<pin dir>/link`). When the daemon stops, all of
//! that stays: the program keeps forwarding with the last published state, and every flow
//! stays in `FLOWS`.
//!
//! The next daemon on the same pin directory **adopts** it:
//! 1. it checks that every pinned map has exactly the type, key size, value size, entry
//!    count and flags its own object declares (an upgrade that changed a value size
//!    cannot reuse the pinned map: refused, naming the difference);
//! 2. it loads its (possibly newer) object with the pinned maps in place of fresh ones
//!    (`EbpfLoader::map_pin_path`; a map that is new in this build is created and pinned);
//! 3. it rebuilds the [`Layout`] — VIP ids, backend slots with their generations, table
//!    halves and which one is live — from `VIPS` and `BACKENDS` (the truth the kernel
//!    forwards with), using the layout saved after every publish (`<state_dir>/layout.json`)
//!    for what the maps cannot say (where each VIP's inactive half is, the slot cursor) and
//!    cross-checking the rest; so the first publish keeps every unchanged backend's slot
//!    and generation, and therefore its flows;
//! 4. it replaces the program inside the pinned link with `bpf_link_update` (aya's
//!    `Xdp::attach_to_link`): atomic, there is no instant without a program.
//!
//! A lock (`flock` on the pin directory) keeps two daemons from sharing one. Removing it
//! all is explicit: `sluice detach` ([`detach`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use aya::{
    maps::MapInfo,
    programs::{
        Xdp,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use lb_common::{
    ABI_EPOCH, Backend, FAMILY_V4, FAMILY_V6, MAX_BACKENDS, MAX_VIPS, VipKey, VipMeta, names,
};
use serde::{Deserialize, Serialize};

use super::{
    AttachMode, Dataplane, DataplaneError, EBPF_OBJECT, Sizes, VipIdent,
    attach::{attach_xdp, error_chain},
    layout::{BackendRecord, BackendSlots, Layout, VipRecord},
    pinned,
};

/// The balancer's pinned XDP link, in the pin directory (maps are pinned under their own,
/// upper-case, names).
pub const LINK_PIN: &str = "link";
/// The saved layout's file name, in `daemon.state_dir`.
pub const LAYOUT_FILE: &str = "layout.json";
/// Format of the saved layout file.
const FORMAT: u32 = 1;
/// Earlier epochs whose pinned maps this build adopts: what it rebuilds its layout from
/// (VIP ids, table positions, backend addresses, slots, generations) means the same in
/// them, and what changed is rewritten by the first publish — which writes every backend of
/// every VIP before the new program takes over the link. Their saved layout is ignored
/// (the state is rebuilt from the maps, as for an unreadable one). Any other epoch (a newer
/// build's) is refused ([`DataplaneError::Epoch`]).
/// 1 → 2: the first publish sets `BACKEND_F_IPIP` on the backends of IPIP VIPs.
const ADOPTABLE_EPOCHS: [u32; 1] = [1];

/// How a daemon pins (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinConfig {
    /// The pin directory (on bpffs).
    pub dir: PathBuf,
    /// The interface the balancer is attached to.
    pub interface: String,
    /// Where the layout is saved after every publish (bpffs holds only BPF objects).
    pub layout_file: PathBuf,
    /// Leave everything attached and pinned when the daemon stops (`sluice run`); false
    /// for ephemeral daemons (`sluice demo`, the lab's in-process daemon), which detach and
    /// unpin on exit.
    pub keep: bool,
}

/// The pinned state a dataplane holds.
pub(super) struct Pins {
    pub(super) cfg: PinConfig,
    /// `flock` on the pin directory, held for the dataplane's life.
    _lock: File,
    /// The link a previous daemon pinned, waiting for the new program.
    existing_link: Option<FdLink>,
    /// Whether maps were adopted (rather than created).
    pub(super) adopted: bool,
    /// The mode the link was attached in (saved: a link does not say).
    pub(super) mode: Option<AttachMode>,
    abi: String,
    specs: Vec<MapSpec>,
}

impl std::fmt::Debug for Pins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pins")
            .field("cfg", &self.cfg)
            .field("adopted", &self.adopted)
            .finish_non_exhaustive()
    }
}

/// A map as the object declares it (and as the kernel must hold it to be adopted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapSpec {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

/// The maps the balancer pins: every map of its object but data sections, with the entry
/// counts `sizes` gives `FLOWS` and `TABLES` at load.
pub fn object_specs(sizes: Sizes) -> Result<Vec<MapSpec>, DataplaneError> {
    let obj = aya_obj::Object::parse(EBPF_OBJECT).map_err(|e| DataplaneError::Pins {
        dir: PathBuf::new(),
        message: format!("parsing the eBPF object: {e}"),
    })?;
    let mut specs: Vec<MapSpec> = obj
        .maps
        .iter()
        .filter(|(name, _)| !name.starts_with('.'))
        .map(|(name, m)| MapSpec {
            name: name.clone(),
            map_type: m.map_type(),
            key_size: m.key_size(),
            value_size: m.value_size(),
            max_entries: match name.as_str() {
                names::FLOWS => sizes.flow_entries,
                names::TABLES => sizes.table_slots,
                _ => m.max_entries(),
            },
            flags: m.map_flags(),
        })
        .collect();
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(specs)
}

/// A short, stable fingerprint of the maps (names, types, sizes, entries, flags) and
/// [`ABI_EPOCH`]: FNV-1a 64 over a canonical text (stable across Rust versions, unlike
/// `std`'s hasher).
pub fn abi_hash(specs: &[MapSpec]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut text = format!("epoch {ABI_EPOCH}\n");
    for s in specs {
        text.push_str(&format!(
            "{} {} {} {} {} {}\n",
            s.name, s.map_type, s.key_size, s.value_size, s.max_entries, s.flags
        ));
    }
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// How a pinned map differs from its spec (empty: adoptable).
fn differences(spec: &MapSpec, pinned: &MapSpec) -> Vec<String> {
    let mut d = Vec::new();
    let mut cmp = |what: &str, have: u32, want: u32, hint: &str| {
        if have != want {
            d.push(format!(
                "{}: {what} {have} pinned, {want} in this build{hint}",
                spec.name
            ));
        }
    };
    cmp("map type", pinned.map_type, spec.map_type, "");
    cmp("key size", pinned.key_size, spec.key_size, "");
    cmp("value size", pinned.value_size, spec.value_size, "");
    let hint = match spec.name.as_str() {
        names::FLOWS => " (daemon.flow_table_size)",
        names::TABLES => " (daemon.table_capacity)",
        _ => "",
    };
    cmp("max entries", pinned.max_entries, spec.max_entries, hint);
    cmp("flags", pinned.flags, spec.flags, "");
    d
}

/// What a pin directory holds, checked against this build's maps.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Pinned maps this build uses (adopted).
    pub maps: Vec<String>,
    /// Maps of this build not pinned yet (created and pinned at load).
    pub new: Vec<String>,
    /// Pinned maps this build no longer has (unpinned after adoption).
    pub stale: Vec<String>,
    /// Pinned counter maps whose shape this build changed (e.g. a new reason counter):
    /// replaced by new, empty ones instead of refusing the adoption ([`RESETTABLE`]).
    pub replaced: Vec<String>,
    /// A pinned XDP link.
    pub link: bool,
}

/// Maps that hold nothing but counters the daemon only reports: when this build changes
/// their shape, the pinned ones are replaced by new, zeroed ones (the old program keeps its
/// own until the link switches to the new program) rather than refusing to adopt, which
/// would leave `sluice detach` (dropping every flow) as the only way to upgrade.
pub const RESETTABLE: &[&str] = &[names::REASONS];

/// Inspect `dir`: every pinned map must match its spec exactly, or the whole adoption is
/// refused ([`DataplaneError::Incompatible`], listing every difference).
pub fn inspect(dir: &Path, specs: &[MapSpec]) -> Result<Found, DataplaneError> {
    let err = |message: String| DataplaneError::Pins {
        dir: dir.to_owned(),
        message,
    };
    let mut found = Found::default();
    let mut diffs = Vec::new();
    let mut present = BTreeSet::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            found.new = specs.iter().map(|s| s.name.clone()).collect();
            return Ok(found);
        }
        Err(e) => return Err(err(format!("reading it: {e}"))),
    };
    for e in entries {
        let e = e.map_err(|e| err(format!("reading it: {e}")))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == LINK_PIN {
            found.link = true;
            continue;
        }
        let Some(spec) = specs.iter().find(|s| s.name == name) else {
            found.stale.push(name);
            continue;
        };
        let info = MapInfo::from_pin(e.path())
            .map_err(|e| err(format!("{name} is not a pinned map: {}", error_chain(&e))))?;
        let pinned = MapSpec {
            name: name.clone(),
            map_type: info.map_type().map_or(u32::MAX, |t| t as u32),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        };
        let d = differences(spec, &pinned);
        if !d.is_empty() && RESETTABLE.contains(&name.as_str()) {
            found.replaced.push(name);
            continue;
        }
        diffs.extend(d);
        present.insert(name.clone());
        found.maps.push(name);
    }
    if !diffs.is_empty() {
        return Err(DataplaneError::Incompatible {
            dir: dir.to_owned(),
            differences: diffs,
        });
    }
    found.new = specs
        .iter()
        .filter(|s| !present.contains(&s.name))
        .map(|s| s.name.clone())
        .collect();
    found.maps.sort();
    found.stale.sort();
    found.replaced.sort();
    Ok(found)
}

/// Take the pin directory's lock (`flock`, released when the file closes or the process
/// dies): one daemon (or `sluice detach`) at a time.
pub fn lock_pin_dir(dir: &Path) -> Result<File, DataplaneError> {
    let err = |message: String| DataplaneError::Pins {
        dir: dir.to_owned(),
        message,
    };
    let f = File::open(dir).map_err(|e| err(format!("opening it: {e}")))?;
    // std's `try_lock` is flock(LOCK_EX | LOCK_NB) on Linux.
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(err(
            "another sluice daemon is using it (stop it first)".to_owned(),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(err(format!("locking it: {e}"))),
    }
}

/// The layout as saved after every publish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedLayout {
    pub format: u32,
    /// [`abi_hash`] of the maps it was saved with, and their specs.
    pub abi: String,
    pub epoch: u32,
    pub maps: Vec<MapSpec>,
    pub pin_dir: PathBuf,
    pub interface: String,
    /// "native" or "generic": how the pinned link was attached.
    pub xdp_mode: Option<String>,
    pub table_slots: u32,
    /// The backend-slot allocator's round-robin cursor.
    pub cursor: usize,
    pub vips: Vec<SavedVip>,
}

/// One VIP of a [`SavedLayout`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedVip {
    pub address: IpAddr,
    pub port: u16,
    pub proto: u8,
    pub vip_id: u32,
    pub mode: u8,
    pub table_size: u32,
    /// Starts of the two halves in `TABLES`, and which one `VIPS` points at.
    pub halves: [u32; 2],
    pub live: usize,
    pub backends: Vec<SavedBackend>,
}

/// One backend slot of a [`SavedVip`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedBackend {
    pub address: IpAddr,
    pub id: u32,
    pub generation: u32,
}

impl SavedVip {
    fn ident(&self) -> VipIdent {
        VipIdent {
            address: self.address,
            port: self.port,
            proto: self.proto,
        }
    }
}

fn mode_name(m: AttachMode) -> &'static str {
    match m {
        AttachMode::Native => "native",
        AttachMode::Generic => "generic",
        AttachMode::Auto => "auto",
    }
}

fn mode_from(s: &str) -> Option<AttachMode> {
    match s {
        "native" => Some(AttachMode::Native),
        "generic" => Some(AttachMode::Generic),
        _ => None,
    }
}

/// A VIP key as the daemon names it.
pub fn ident_of(k: &VipKey) -> Option<VipIdent> {
    let address = match k.family {
        FAMILY_V4 => IpAddr::V4(Ipv4Addr::new(k.addr[0], k.addr[1], k.addr[2], k.addr[3])),
        FAMILY_V6 => IpAddr::V6(Ipv6Addr::from(k.addr)),
        _ => return None,
    };
    Some(VipIdent {
        address,
        port: u16::from_be_bytes(k.port),
        proto: k.proto,
    })
}

/// A backend slot's address (`None`: a free slot).
fn addr_of(b: &Backend) -> Option<IpAddr> {
    match b.family {
        FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::new(
            b.addr[0], b.addr[1], b.addr[2], b.addr[3],
        ))),
        FAMILY_V6 => Some(IpAddr::V6(Ipv6Addr::from(b.addr))),
        _ => None,
    }
}

impl Layout {
    /// The layout to save.
    pub(super) fn to_saved(
        &self,
        abi: &str,
        maps: Vec<MapSpec>,
        pins: &PinConfig,
        mode: Option<AttachMode>,
    ) -> SavedLayout {
        SavedLayout {
            format: FORMAT,
            abi: abi.to_owned(),
            epoch: ABI_EPOCH,
            maps,
            pin_dir: pins.dir.clone(),
            interface: pins.interface.clone(),
            xdp_mode: mode.map(|m| mode_name(m).to_owned()),
            table_slots: self.regions.capacity(),
            cursor: self.slots.cursor(),
            vips: self
                .vips
                .iter()
                .map(|(ident, r)| SavedVip {
                    address: ident.address,
                    port: ident.port,
                    proto: ident.proto,
                    vip_id: r.vip_id,
                    mode: r.mode,
                    table_size: r.table_size,
                    halves: r.halves,
                    live: r.live,
                    backends: r
                        .backends
                        .iter()
                        .map(|(a, b)| SavedBackend {
                            address: *a,
                            id: b.id,
                            generation: b.generation,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Rebuild the layout of pinned maps: `vips` is the content of `VIPS`, `backends` of
    /// `BACKENDS` (indexed by slot id). The maps decide (they are what the kernel forwards
    /// with); `saved` supplies the inactive halves and the cursor where it agrees with them.
    /// Returns the layout and the disagreements found (for the log); an error when the maps
    /// themselves are inconsistent (overlapping tables, duplicate VIP ids, out of range).
    pub fn recover(
        table_slots: u32,
        vips: &[(VipIdent, VipMeta)],
        backends: &[Backend],
        saved: Option<&SavedLayout>,
    ) -> Result<(Self, Vec<String>), String> {
        let mut layout = Self::new(table_slots);
        let mut notes = Vec::new();
        let saved_vips: BTreeMap<VipIdent, &SavedVip> = saved
            .map(|s| s.vips.iter().map(|v| (v.ident(), v)).collect())
            .unwrap_or_default();
        let mut by_id: BTreeMap<u32, VipIdent> = BTreeMap::new();
        // `VipMeta::table_size` is the live table's length, which can be shorter than a half
        // (sequence schedulers) or 0 (no backend for new flows). The saved layout knows the
        // halves; without it (or where it disagrees) a half is as long as the live table,
        // and the first publish reallocates both if the VIP needs longer ones.
        let mut halves: BTreeMap<VipIdent, ([u32; 2], usize, u32)> = BTreeMap::new();
        for (ident, meta) in vips {
            if meta.vip_id >= MAX_VIPS || !layout.vip_ids.reserve(meta.vip_id) {
                return Err(format!(
                    "VIPS: {ident} has VIP id {}, out of range or used twice",
                    meta.vip_id
                ));
            }
            by_id.insert(meta.vip_id, *ident);
            // The live half may be either saved one: least-connection refreshes flip
            // without saving.
            let s = saved_vips.get(ident).and_then(|s| {
                let live = s.halves.iter().position(|h| *h == meta.table_base)?;
                (s.vip_id == meta.vip_id && s.table_size >= meta.table_size).then_some((
                    s.halves,
                    live,
                    s.table_size,
                ))
            });
            let (h, live, size) = s.unwrap_or(([meta.table_base, 0], 0, meta.table_size));
            if size > 0 && !layout.regions.reserve(h[live], size) {
                return Err(format!(
                    "VIPS: {ident}'s table [{}, +{size}) is beyond TABLES ({table_slots} slots) or overlaps another",
                    h[live]
                ));
            }
            halves.insert(*ident, (h, live, size));
        }
        // Backend slots: every slot with an address belongs to the VIP its `vip_id` names.
        let generations: Vec<u32> = backends.iter().map(|b| b.generation).collect();
        let mut members: BTreeMap<VipIdent, BTreeMap<IpAddr, BackendRecord>> = BTreeMap::new();
        let mut used = Vec::new();
        for (id, b) in backends.iter().enumerate().skip(1) {
            let Some(addr) = addr_of(b) else { continue };
            let id = id as u32;
            let Some(ident) = by_id.get(&b.vip_id) else {
                notes.push(format!(
                    "BACKENDS slot {id} ({addr}) names VIP id {}, which VIPS does not have: freed",
                    b.vip_id
                ));
                continue;
            };
            let m = members.entry(*ident).or_default();
            if m.contains_key(&addr) {
                notes.push(format!(
                    "BACKENDS slot {id}: {addr} twice under {ident}: the later slot is freed"
                ));
                continue;
            }
            m.insert(
                addr,
                BackendRecord {
                    id,
                    generation: b.generation,
                },
            );
            used.push(id);
        }
        // Inactive halves: the saved ones where they agree, else fresh.
        let mut unplaced = Vec::new();
        for (ident, meta) in vips {
            let (mut h, live, size) = halves[ident];
            let from_saved = saved_vips
                .get(ident)
                .is_some_and(|s| s.halves == h && s.table_size == size);
            if size > 0 && !(from_saved && layout.regions.reserve(h[1 - live], size)) {
                unplaced.push((*ident, *meta, h, live, size));
                continue;
            }
            if size == 0 {
                h = [0, 0];
            }
            layout
                .vips
                .insert(*ident, record(meta, h, live, size, &mut members, ident));
        }
        for (ident, meta, mut h, live, size) in unplaced {
            h[1 - live] = layout
                .regions
                .alloc(size)
                .map_err(|e| format!("no room in TABLES for {ident}'s inactive table half: {e}"))?;
            layout
                .vips
                .insert(ident, record(&meta, h, live, size, &mut members, &ident));
        }
        let cursor = saved.map_or_else(
            || used.iter().max().map_or(1, |m| *m as usize + 1),
            |s| s.cursor,
        );
        layout.slots = BackendSlots::restore(&generations, &used, cursor);
        if let Some(s) = saved {
            cross_check(s, &layout, table_slots, &mut notes);
        }
        Ok((layout, notes))
    }
}

fn record(
    meta: &VipMeta,
    halves: [u32; 2],
    live: usize,
    table_size: u32,
    members: &mut BTreeMap<VipIdent, BTreeMap<IpAddr, BackendRecord>>,
    ident: &VipIdent,
) -> VipRecord {
    VipRecord {
        vip_id: meta.vip_id,
        mode: meta.mode,
        table_size,
        live_len: meta.table_size,
        // Unknown: the first publish rebuilds every table (same backends, same slots: the
        // same table for Maglev).
        published: None,
        halves,
        live,
        backends: members.remove(ident).unwrap_or_default(),
    }
}

/// Where the saved layout and the one rebuilt from the maps disagree (a daemon that died
/// between writing the maps and saving, or a file from another run).
fn cross_check(saved: &SavedLayout, layout: &Layout, table_slots: u32, notes: &mut Vec<String>) {
    if saved.table_slots != table_slots {
        notes.push(format!(
            "saved with {} table slots, TABLES has {table_slots}",
            saved.table_slots
        ));
    }
    for s in &saved.vips {
        let ident = s.ident();
        let Some(r) = layout.vips.get(&ident) else {
            notes.push(format!("{ident} is saved but not in VIPS"));
            continue;
        };
        if r.vip_id != s.vip_id || r.table_size != s.table_size {
            notes.push(format!(
                "{ident}: saved VIP id {} / table size {}, VIPS has {} / {}",
                s.vip_id, s.table_size, r.vip_id, r.table_size
            ));
        }
        if r.table_size > 0 && !s.halves.contains(&r.halves[r.live]) {
            notes.push(format!(
                "{ident}: saved live half at {:?}, VIPS points at {}",
                s.halves.get(s.live),
                r.halves[r.live]
            ));
        }
        let want: BTreeMap<IpAddr, (u32, u32)> = s
            .backends
            .iter()
            .map(|b| (b.address, (b.id, b.generation)))
            .collect();
        let have: BTreeMap<IpAddr, (u32, u32)> = r
            .backends
            .iter()
            .map(|(a, b)| (*a, (b.id, b.generation)))
            .collect();
        if want != have {
            notes.push(format!(
                "{ident}: saved backends (address → slot, generation) {want:?}, BACKENDS has {have:?}"
            ));
        }
    }
    for ident in layout.vips.keys() {
        if !saved.vips.iter().any(|s| s.ident() == *ident) {
            notes.push(format!("{ident} is in VIPS but not saved"));
        }
    }
}

/// Read a saved layout: `None` if there is none, or it is unreadable, or it belongs to
/// another pin directory (with a warning).
fn read_saved(path: &Path, dir: &Path) -> Option<SavedLayout> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the saved layout");
            return None;
        }
    };
    match serde_json::from_str::<SavedLayout>(&text) {
        Ok(s) if s.format == FORMAT && s.pin_dir == dir => Some(s),
        Ok(s) => {
            tracing::warn!(path = %path.display(), format = s.format, pin_dir = %s.pin_dir.display(), "the saved layout is for another pin directory or format; ignored");
            None
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the saved layout is not valid; ignored");
            None
        }
    }
}

/// The interface index the XDP link pinned at `path` is attached to (0: the interface is
/// gone), read with `BPF_OBJ_GET` + `BPF_OBJ_GET_INFO_BY_FD` (aya's `LinkInfo` has no
/// ifindex, and `FdLink` does not lend its descriptor).
pub(crate) fn link_ifindex(path: &Path) -> Result<u32, String> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C)]
    struct GetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let mut get = GetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: the bpf syscall with a valid attribute block (a NUL-terminated path).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &raw mut get,
            size_of::<GetAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: a descriptor the kernel just gave us, owned from here on.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id (u32 each), then the union at offset 16,
    // whose `xdp` member is `ifindex`. 64 bytes cover every member.
    let mut info = [0u32; 16];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: as above; `info` is our buffer of `info_len` bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    const BPF_LINK_TYPE_XDP: u32 = 6;
    if info[0] != BPF_LINK_TYPE_XDP {
        return Err(format!("not an XDP link (link type {})", info[0]));
    }
    Ok(info[4])
}

/// What [`Dataplane::load_pinned`] found and did, for the daemon's log.
#[derive(Debug, Default)]
pub struct Adoption {
    /// Maps taken over from the pin directory (empty: a fresh start).
    pub maps: Vec<String>,
    /// Maps this build added (created and pinned).
    pub new: Vec<String>,
    /// Pins of maps this build no longer has (removed).
    pub stale: Vec<String>,
    /// A previous daemon's XDP link, which [`Dataplane::attach_balancer`] will reuse.
    pub link: bool,
    /// Where the saved layout disagreed with the maps (the maps won).
    pub notes: Vec<String>,
    /// VIPs and backends found in the maps, and flows in the flow table.
    pub vips: usize,
    pub backends: usize,
    pub flows: usize,
}

impl Dataplane {
    /// Load for a daemon: [`Dataplane::load`], but with every map pinned in `cfg.dir`, and,
    /// when a previous daemon left its maps there, adopting them and its layout (see the
    /// module documentation). The balancer is attached by [`Dataplane::attach_balancer`].
    pub fn load_pinned(sizes: Sizes, cfg: PinConfig) -> Result<(Self, Adoption), DataplaneError> {
        let dir = cfg.dir.clone();
        let err = |message: String| DataplaneError::Pins {
            dir: dir.clone(),
            message,
        };
        pinned::prepare_pin_dir(&dir)?;
        let lock = lock_pin_dir(&dir)?;
        let specs = object_specs(sizes)?;
        let found = inspect(&dir, &specs)?;
        let mut saved = read_saved(&cfg.layout_file, &dir);
        if !found.maps.is_empty()
            && let Some(s) = &saved
            && s.epoch != ABI_EPOCH
        {
            if !ADOPTABLE_EPOCHS.contains(&s.epoch) {
                return Err(DataplaneError::Epoch {
                    dir,
                    layout_file: cfg.layout_file.clone(),
                    saved: s.epoch,
                    ours: ABI_EPOCH,
                });
            }
            tracing::warn!(
                layout = %cfg.layout_file.display(),
                saved_epoch = s.epoch,
                epoch = ABI_EPOCH,
                "the pinned state is from an earlier ABI epoch: its saved layout is ignored and the layout rebuilt from the maps (the first publish rewrites every backend for this epoch before the new program takes over)"
            );
            saved = None;
        }
        // A link whose interface is gone is dead weight; one on another interface is not ours.
        let link_path = dir.join(LINK_PIN);
        let mut link = false;
        if found.link {
            let want = super::iface::lookup(&cfg.interface)
                .ok()
                .flatten()
                .map(|i| i.ifindex);
            match link_ifindex(&link_path) {
                Ok(0) => {
                    tracing::warn!(link = %link_path.display(), "the pinned XDP link's interface is gone; attaching anew");
                    std::fs::remove_file(&link_path)
                        .map_err(|e| err(format!("removing {}: {e}", link_path.display())))?;
                }
                Ok(i) if Some(i) == want => link = true,
                Ok(i) => {
                    return Err(err(format!(
                        "its XDP link is attached to interface index {i}, not to {} ({}): \
                         the pin directory of another interface? (daemon.pin_dir)",
                        cfg.interface,
                        want.map_or_else(|| "not found".to_owned(), |w| format!("index {w}"))
                    )));
                }
                Err(e) => return Err(err(format!("{}: {e}", link_path.display()))),
            }
        }
        for name in &found.replaced {
            let p = dir.join(name);
            tracing::warn!(map = %name, "this build changed the shape of a pinned counter map: it is replaced by a new one (its counters restart from zero)");
            std::fs::remove_file(&p).map_err(|e| err(format!("removing {}: {e}", p.display())))?;
        }
        let pins: Vec<(String, PathBuf)> = specs
            .iter()
            .map(|s| (s.name.clone(), dir.join(&s.name)))
            .collect();
        let mut dp = Self::load_with(sizes, &pins)?;
        let mut adoption = Adoption {
            maps: found.maps.clone(),
            new: found.new.clone(),
            stale: found.stale.clone(),
            link,
            ..Adoption::default()
        };
        if !found.maps.is_empty() {
            let vips: Vec<(VipIdent, VipMeta)> = dp
                .vips
                .iter()
                .filter_map(Result::ok)
                .filter_map(|(k, m)| Some((ident_of(&k)?, m)))
                .collect();
            let backends = (0..MAX_BACKENDS)
                .map(|i| {
                    dp.backends
                        .get(&i, 0)
                        .map_err(|source| DataplaneError::Map {
                            name: names::BACKENDS,
                            source,
                        })
                })
                .collect::<Result<Vec<Backend>, _>>()?;
            let (layout, notes) =
                Layout::recover(sizes.table_slots, &vips, &backends, saved.as_ref()).map_err(
                    |why| DataplaneError::Incompatible {
                        dir: dir.clone(),
                        differences: vec![why],
                    },
                )?;
            adoption.vips = layout.vips.len();
            adoption.backends = layout.vips.values().map(|r| r.backends.len()).sum();
            adoption.flows = dp.flow_count();
            adoption.notes = notes;
            dp.layout = layout;
        }
        for name in &found.stale {
            let p = dir.join(name);
            std::fs::remove_file(&p).map_err(|e| err(format!("removing {}: {e}", p.display())))?;
        }
        dp.pins = Some(Pins {
            abi: abi_hash(&specs),
            specs,
            mode: saved
                .as_ref()
                .and_then(|s| s.xdp_mode.as_deref())
                .and_then(mode_from),
            existing_link: None,
            adopted: !found.maps.is_empty(),
            cfg,
            _lock: lock,
        });
        if link {
            let l = PinnedLink::from_pin(&link_path)
                .map_err(|e| err(format!("{}: {}", link_path.display(), error_chain(&e))))?;
            if let Some(p) = dp.pins.as_mut() {
                p.existing_link = Some(FdLink::from(l));
            }
        }
        dp.save_layout();
        Ok((dp, adoption))
    }

    /// Whether this dataplane took over maps a previous daemon pinned.
    pub fn adopted(&self) -> bool {
        self.pins.as_ref().is_some_and(|p| p.adopted)
    }

    /// Detach and unpin whatever the daemon was told (a failed start of a fresh daemon).
    pub fn stop_removing(&mut self) -> Result<(), DataplaneError> {
        if let Some(p) = self.pins.as_mut() {
            p.cfg.keep = false;
        }
        self.stop().map(drop)
    }

    /// The pin directory, if this dataplane pins.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_ref().map(|p| p.cfg.dir.as_path())
    }

    /// Save the layout (after every publish) where the next daemon will look for it. A
    /// failure is logged, not returned: the maps are already changed, and adoption trusts
    /// them over the file.
    pub(super) fn save_layout(&self) {
        let Some(p) = &self.pins else { return };
        let saved = self
            .layout
            .to_saved(&p.abi, p.specs.clone(), &p.cfg, p.mode);
        let result = serde_json::to_vec_pretty(&saved)
            .map_err(std::io::Error::other)
            .and_then(|b| {
                crate::atomic_file::write(
                    &p.cfg.layout_file,
                    &b,
                    crate::atomic_file::Durability::Persistent,
                )
            });
        if let Err(e) = result {
            tracing::warn!(path = %p.cfg.layout_file.display(), error = %e, "saving the layout failed: a restart rebuilds it from the pinned maps (inactive table halves are reallocated)");
        }
    }

    /// Attach the balancer to `interface`. A pinning dataplane reuses the pinned link of
    /// the previous daemon, replacing its program atomically (`bpf_link_update`; the mode
    /// stays what it was), or attaches anew and pins the link. Returns the mode and
    /// whether an existing link was taken over.
    pub fn attach_balancer(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<(AttachMode, bool), DataplaneError> {
        const BALANCER: &str = lb_common::programs::BALANCER;
        let Some(pins) = self.pins.as_mut() else {
            return self.attach(BALANCER, interface, mode).map(|m| (m, false));
        };
        let dir = pins.cfg.dir.clone();
        let existing = pins.existing_link.take();
        let prev_mode = pins.mode;
        let err = |message: String| DataplaneError::Attach {
            interface: interface.to_owned(),
            message,
        };
        let prog: &mut Xdp = self.program(BALANCER)?;
        let (got, replaced) = match existing {
            Some(fd_link) => {
                let link = XdpLink::try_from(fd_link)
                    .map_err(|e| err(format!("the pinned link: {}", error_chain(&e))))?;
                let id = prog.attach_to_link(link).map_err(|e| {
                    err(format!(
                        "replacing the program in the pinned link: {}",
                        error_chain(&e)
                    ))
                })?;
                // The pin keeps the link; the program's own handle on it is not needed.
                drop(prog.take_link(id));
                let got = prev_mode.unwrap_or(mode);
                if mode != AttachMode::Auto && prev_mode.is_some_and(|p| p != mode) {
                    tracing::warn!(interface, ?got, wanted = ?mode, "the adopted link keeps its XDP mode; `sluice detach` and start again to change it (drops the flows)");
                }
                (got, true)
            }
            None => {
                let (id, got) = attach_xdp(prog, BALANCER, interface, mode)?;
                let link = prog.take_link(id).map_err(|e| err(error_chain(&e)))?;
                let link = FdLink::try_from(link).map_err(|e| {
                    err(format!(
                        "the kernel gave no bpf_link to pin (XDP links need Linux 5.9): {}",
                        error_chain(&e)
                    ))
                })?;
                let path = dir.join(LINK_PIN);
                link.pin(&path).map_err(|e| {
                    err(format!(
                        "pinning at {}: {}",
                        path.display(),
                        error_chain(&e)
                    ))
                })?;
                (got, false)
            }
        };
        // The kernel must now run this program on that link.
        let want = prog.info().map_err(|e| err(error_chain(&e)))?.id();
        let path = dir.join(LINK_PIN);
        let have = PinnedLink::from_pin(&path)
            .map_err(|e| err(error_chain(&e)))
            .and_then(|l| FdLink::from(l).info().map_err(|e| err(error_chain(&e))))?
            .program_id();
        if have != want {
            return Err(err(format!(
                "the pinned link at {} runs program {have}, not the one just loaded ({want})",
                path.display()
            )));
        }
        self.attached.push(super::Attached {
            program: BALANCER,
            interface: interface.to_owned(),
            mode: got,
            link: None,
        });
        if let Some(p) = self.pins.as_mut() {
            p.mode = Some(got);
        }
        self.save_layout();
        Ok((got, replaced))
    }

    /// The daemon is stopping. A pinning dataplane that keeps (`sluice run`) leaves the
    /// balancer attached and everything pinned: returns the pin directory. Otherwise
    /// everything is detached, and an ephemeral daemon's pins and saved layout removed.
    pub fn stop(&mut self) -> Result<Option<PathBuf>, DataplaneError> {
        self.detach_all()?;
        let Some(p) = &self.pins else { return Ok(None) };
        if p.cfg.keep {
            return Ok(Some(p.cfg.dir.clone()));
        }
        pinned::remove_pin_dir(&p.cfg.dir, LINK_PIN)?;
        let _ = std::fs::remove_file(&p.cfg.layout_file);
        self.attached.clear();
        Ok(None)
    }
}

/// `sluice detach`: remove the balancer from the interface it is pinned on (the link pin,
/// which detaches it), its maps (and with them every flow), the pin directory and its empty
/// parents, and the saved layout if given. Refused while a daemon holds the directory.
/// What was removed; an error if nothing was pinned there.
pub fn detach(dir: &Path, layout_file: Option<&Path>) -> Result<Vec<PathBuf>, DataplaneError> {
    if !dir.exists() {
        return Err(DataplaneError::Pins {
            dir: dir.to_owned(),
            message: "does not exist: nothing of sluice is pinned there".to_owned(),
        });
    }
    let _lock = lock_pin_dir(dir)?;
    let mut removed = pinned::remove_pin_dir(dir, LINK_PIN)?;
    if let Some(f) = layout_file
        && std::fs::remove_file(f).is_ok()
    {
        removed.push(f.to_owned());
    }
    Ok(removed)
}

/// The saved layout in `state_dir` if it belongs to the balancer pinned in `pin_dir` (for
/// `sluice detach` without a config file: whatever its format or epoch, it names its pin
/// directory).
pub fn saved_layout_for(pin_dir: &Path, state_dir: &Path) -> Option<PathBuf> {
    #[derive(Deserialize)]
    struct Owner {
        pin_dir: PathBuf,
    }
    let path = state_dir.join(LAYOUT_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    let owner: Owner = serde_json::from_str(&text).ok()?;
    (owner.pin_dir == pin_dir).then_some(path)
}

#[cfg(test)]
mod tests {
    use lb_common::{BACKEND_F_SERVING, PROTO_TCP};

    use super::*;
    use sluice_core::model::addr_bytes;

    /// One holder of a pin directory's lock at a time; closing the file releases it.
    #[test]
    fn a_pin_dir_is_locked_by_one_holder_at_a_time() {
        let dir = std::env::temp_dir().join(format!("sluice-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let held = lock_pin_dir(&dir).unwrap();
        let e = lock_pin_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("another sluice daemon is using it"), "{e}");
        assert!(e.contains(&dir.display().to_string()), "{e}");
        drop(held);
        drop(lock_pin_dir(&dir).unwrap());
        let e = lock_pin_dir(&dir.join("missing")).unwrap_err().to_string();
        assert!(e.contains("opening it"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn ident(last: u8) -> VipIdent {
        VipIdent {
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
            port: 80,
            proto: PROTO_TCP,
        }
    }

    fn backend(addr: &str, vip_id: u32, generation: u32) -> Backend {
        let (addr, family) = addr_bytes(addr.parse().unwrap());
        Backend {
            addr,
            family,
            flags: BACKEND_F_SERVING,
            generation,
            vip_id,
            ..Backend::default()
        }
    }

    fn meta(vip_id: u32, table_base: u32, table_size: u32) -> VipMeta {
        VipMeta {
            vip_id,
            table_base,
            table_size,
            mode: lb_common::MODE_DSR,
            ..VipMeta::default()
        }
    }

    /// Two VIPs: one with backends in slots 3 (generation 2) and 5, one with slot 1; slot 2
    /// freed at generation 4.
    fn kernel() -> (Vec<(VipIdent, VipMeta)>, Vec<Backend>) {
        let vips = vec![(ident(1), meta(0, 20, 10)), (ident(2), meta(4, 40, 10))];
        let mut b = vec![Backend::default(); MAX_BACKENDS as usize];
        b[3] = backend("10.1.0.1", 0, 2);
        b[5] = backend("10.1.0.2", 0, 1);
        b[1] = backend("10.2.0.1", 4, 1);
        b[2] = Backend {
            generation: 4,
            ..Backend::default()
        };
        (vips, b)
    }

    #[test]
    fn detach_finds_the_saved_layout_of_its_pin_dir_only() {
        let dir = std::env::temp_dir().join(format!("sluice-saved-for-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mine = Path::new("/sys/fs/bpf/sluice/eth0");
        assert_eq!(saved_layout_for(mine, &dir), None, "no file");
        // Another epoch and format than this build's: still found by its pin directory.
        let text = r#"{"format": 7, "epoch": 99, "pin_dir": "/sys/fs/bpf/sluice/eth0"}"#;
        std::fs::write(dir.join(LAYOUT_FILE), text).unwrap();
        assert_eq!(saved_layout_for(mine, &dir), Some(dir.join(LAYOUT_FILE)));
        assert_eq!(
            saved_layout_for(Path::new("/sys/fs/bpf/sluice/eth1"), &dir),
            None,
            "another balancer's layout"
        );
        std::fs::write(dir.join(LAYOUT_FILE), "not json").unwrap();
        assert_eq!(saved_layout_for(mine, &dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn pins() -> PinConfig {
        PinConfig {
            dir: "/sys/fs/bpf/sluice/eth0".into(),
            interface: "eth0".into(),
            layout_file: "/run/sluice/layout.json".into(),
            keep: true,
        }
    }

    #[test]
    fn recovery_from_the_maps_alone_keeps_slots_and_generations() {
        let (vips, b) = kernel();
        let (mut l, notes) = Layout::recover(100, &vips, &b, None).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        let r = l.vip(&ident(1)).unwrap();
        assert_eq!((r.vip_id, r.halves[r.live], r.table_size), (0, 20, 10));
        let a: IpAddr = "10.1.0.1".parse().unwrap();
        assert_eq!(
            r.backends[&a],
            BackendRecord {
                id: 3,
                generation: 2
            }
        );
        assert_eq!(
            l.backend_id(&ident(2), "10.2.0.1".parse().unwrap()),
            Some(1)
        );
        // The inactive halves were placed where nothing else is.
        let (h1, h2) = (
            l.vip(&ident(1)).unwrap().halves,
            l.vip(&ident(2)).unwrap().halves,
        );
        let mut ranges = vec![h1[0], h1[1], h2[0], h2[1]];
        ranges.sort_unstable();
        assert!(ranges.windows(2).all(|w| w[1] - w[0] >= 10), "{ranges:?}");
        assert_eq!(l.regions.free_slots(), 60);
        // Next slot: after the highest in use; the freed slot 2 comes back past generation 4.
        assert_eq!(l.slots.alloc().unwrap(), (6, 1));
        assert_eq!(l.vip_ids.alloc().unwrap(), 1);
        for _ in 7..MAX_BACKENDS {
            l.slots.alloc().unwrap();
        }
        assert_eq!(l.slots.alloc().unwrap(), (2, 5));
    }

    #[test]
    fn a_saved_layout_round_trips_exactly() {
        let (vips, b) = kernel();
        let (l, _) = Layout::recover(100, &vips, &b, None).unwrap();
        let saved = l.to_saved("abc", Vec::new(), &pins(), Some(AttachMode::Native));
        let text = serde_json::to_string(&saved).unwrap();
        let back: SavedLayout = serde_json::from_str(&text).unwrap();
        assert_eq!(back, saved);
        let (again, notes) = Layout::recover(100, &vips, &b, Some(&back)).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            again.to_saved("abc", Vec::new(), &pins(), Some(AttachMode::Native)),
            saved
        );
    }

    #[test]
    fn the_maps_win_over_a_stale_saved_layout() {
        let (vips, b) = kernel();
        let (l, _) = Layout::recover(100, &vips, &b, None).unwrap();
        let mut stale = l.to_saved("abc", Vec::new(), &pins(), None);
        // The daemon died after moving 10.1.0.2 to slot 7 in the maps but before saving.
        stale.vips[0].backends[1].id = 7;
        stale.vips.push(SavedVip {
            port: 443,
            ..stale.vips[0].clone()
        });
        let (got, notes) = Layout::recover(100, &vips, &b, Some(&stale)).unwrap();
        assert_eq!(
            got.backend_id(&ident(1), "10.1.0.2".parse().unwrap()),
            Some(5)
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("not in VIPS")), "{notes:?}");
    }

    #[test]
    fn short_live_tables_use_the_saved_halves() {
        // A sequence scheduler's live table (VipMeta::table_size) is shorter than a half.
        let (mut vips, b) = kernel();
        let (l, _) = Layout::recover(100, &vips, &b, None).unwrap();
        let mut saved = l.to_saved("abc", Vec::new(), &pins(), None);
        vips[0].1.table_size = 4;
        // Without the saved layout, a half is taken to be as long as the live table.
        let (alone, _) = Layout::recover(100, &vips, &b, None).unwrap();
        assert_eq!(alone.vip(&ident(1)).unwrap().table_size, 4);
        // With it, the halves are the saved ones, whichever is live now.
        let r = l.vip(&ident(1)).unwrap();
        saved.vips[0].live = 1 - r.live;
        let (got, notes) = Layout::recover(100, &vips, &b, Some(&saved)).unwrap();
        let g = got.vip(&ident(1)).unwrap();
        assert_eq!((g.table_size, g.halves, g.live_len), (10, r.halves, 4));
        assert_eq!(g.halves[g.live], 20);
        assert_eq!(got.regions.free_slots(), 60, "{notes:?}");
        // No live table at all (no backend for new flows).
        vips[0].1.table_size = 0;
        let (none, _) = Layout::recover(100, &vips, &b, None).unwrap();
        assert_eq!(none.vip(&ident(1)).unwrap().table_size, 0);
        assert_eq!(none.regions.free_slots(), 80);
    }

    #[test]
    fn inconsistent_maps_are_refused() {
        let (mut vips, b) = kernel();
        vips[1].1.table_base = 25; // overlaps the first VIP's table
        assert!(
            Layout::recover(100, &vips, &b, None)
                .unwrap_err()
                .contains("overlaps")
        );
        let (mut vips, b) = kernel();
        vips[1].1.vip_id = 0;
        assert!(
            Layout::recover(100, &vips, &b, None)
                .unwrap_err()
                .contains("twice")
        );
        let (vips, b) = kernel();
        assert!(
            Layout::recover(45, &vips, &b, None).is_err(),
            "beyond TABLES"
        );
    }

    #[test]
    fn orphan_and_duplicate_slots_are_freed() {
        let (vips, mut b) = kernel();
        b[9] = backend("10.9.9.9", 7, 1); // VIP id 7 does not exist
        b[10] = backend("10.1.0.1", 0, 1); // a second slot for the same backend
        let (l, notes) = Layout::recover(100, &vips, &b, None).unwrap();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(
            l.backend_id(&ident(1), "10.1.0.1".parse().unwrap()),
            Some(3)
        );
        assert_eq!(l.slots.in_use(), 3);
    }

    #[test]
    fn the_compatibility_check_names_every_difference() {
        let spec = MapSpec {
            name: names::FLOWS.to_owned(),
            map_type: 9,
            key_size: 40,
            value_size: 16,
            max_entries: 1 << 20,
            flags: 2,
        };
        assert!(differences(&spec, &spec).is_empty());
        let pinned = MapSpec {
            value_size: 8,
            max_entries: 1 << 19,
            ..spec.clone()
        };
        let d = differences(&spec, &pinned);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0], "FLOWS: value size 8 pinned, 16 in this build");
        assert!(d[1].contains("daemon.flow_table_size"), "{d:?}");
    }

    #[test]
    fn the_abi_hash_follows_every_map_property() {
        let sizes = Sizes::default();
        let specs = object_specs(sizes).unwrap();
        for name in [
            names::VIPS,
            names::BACKENDS,
            names::FLOWS,
            names::TABLES,
            names::CONFIG,
        ] {
            assert!(specs.iter().any(|s| s.name == name), "{name} not pinned");
        }
        for name in [
            lb_common::bench::names::GEN_CONFIG,
            lb_common::bench::names::GEN_COUNTER,
            lb_common::bench::names::SINK_COUNT,
        ] {
            assert!(
                !specs.iter().any(|s| s.name == name),
                "{name}: benchmark maps are not the balancer's"
            );
        }
        let h = abi_hash(&specs);
        assert_eq!(h, abi_hash(&specs), "stable");
        let mut other = specs.clone();
        other[0].value_size += 8;
        assert_ne!(abi_hash(&other), h);
        let bigger = object_specs(Sizes {
            flow_entries: sizes.flow_entries * 2,
            ..sizes
        })
        .unwrap();
        assert_ne!(abi_hash(&bigger), h, "the flow-table size is part of it");
    }

    #[test]
    fn the_abi_hash_is_pinned() {
        // A daemon adopts the maps a previous one pinned only if their fingerprint matches:
        // this value is what the balancer's maps and `ABI_EPOCH` give today. It changes only
        // with a map (or the epoch) on purpose; then update it here.
        let specs = object_specs(Sizes::default()).unwrap();
        assert_eq!(abi_hash(&specs), "01bae95eab63c4e5");
    }
}
