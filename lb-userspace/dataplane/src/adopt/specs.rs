//! The maps this build pins, their ABI fingerprint, and the check that a pin directory's
//! maps are exactly those (what adopting them requires); the pin directory's lock.

use std::{
    collections::BTreeSet,
    fs::File,
    path::{Path, PathBuf},
};

use aya::maps::MapInfo;
use lb_common::{ABI_EPOCH, names};
use serde::{Deserialize, Serialize};

use super::LINK_PIN;
use crate::{DataplaneError, EBPF_OBJECT, Sizes, attach::error_chain};

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
/// counts `sizes` gives at load (`Sizes::SIZED`: the flow and lookup tables, the per-VIP
/// and the per-backend maps).
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
            max_entries: sizes.max_entries(name).unwrap_or_else(|| m.max_entries()),
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
pub(super) fn differences(spec: &MapSpec, pinned: &MapSpec) -> Vec<String> {
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
        names::VIPS | names::CURSORS | names::VIP_STATS | names::VIP_REASONS => {
            " (daemon.vip_capacity)"
        }
        names::BACKENDS | names::NEXT_HOPS | names::BACKEND_STATS => " (daemon.backend_capacity)",
        _ => "",
    };
    cmp("max entries", pinned.max_entries, spec.max_entries, hint);
    cmp("flags", pinned.flags, spec.flags, "");
    d
}

/// `BPF_MAP_TYPE_HASH`, the flow table's type before the array of slots.
const BPF_MAP_TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_LRU_HASH`, the flow table's type before that.
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

/// Whether a pinned `FLOWS` is an older build's hash table (plain or LRU) of this build's
/// flow keys and values: its flows are copied into this build's table
/// ([`Found::old_flows`]) instead of refusing the adoption.
pub(super) fn is_old_flow_table(pinned: &MapSpec) -> bool {
    pinned.name == names::FLOWS
        && matches!(pinned.map_type, BPF_MAP_TYPE_HASH | BPF_MAP_TYPE_LRU_HASH)
        && pinned.key_size as usize == size_of::<lb_common::FlowKey>()
        && pinned.value_size as usize == size_of::<lb_common::FlowValue>()
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
    /// The pinned `FLOWS` is an older build's hash table: its flows move into a new table
    /// of this build's (see `Dataplane::load_pinned`).
    pub old_flows: bool,
}

/// Maps that hold nothing but counters the daemon only reports (and, in `FLOOD_GUARD`, the
/// flood guard's token bucket, which a zeroed value restarts full, and when the flow table
/// was last found full): when this build changes their shape, the pinned ones are replaced
/// by new, zeroed ones (the old program keeps its own until the link switches to the new
/// program) rather than refusing to adopt, which would leave `sluice detach` (dropping
/// every flow) as the only way to upgrade.
pub const RESETTABLE: &[&str] = &[names::REASONS, names::FLOOD_GUARD];

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
        if !d.is_empty() && is_old_flow_table(&pinned) {
            found.old_flows = true;
            continue;
        }
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
