//! The layout saved after every publish (`<state_dir>/layout.json`): what it holds, how it
//! is written and read back, and which saved epochs a daemon adopts.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use lb_common::ABI_EPOCH;
use serde::{Deserialize, Serialize};

use super::{LAYOUT_FILE, MapSpec, PinConfig};
use crate::{AttachMode, DataplaneError, VipIdent, layout::Layout};

/// Format of the saved layout file.
const FORMAT: u32 = 1;
/// Earlier epochs whose pinned maps this build adopts: what it rebuilds its layout from
/// (VIP ids, table positions, backend addresses, slots, generations) means the same in
/// them, and what changed is rewritten by the first publish — which writes every backend of
/// every VIP before the new program takes over the link. Their saved layout is ignored
/// (the state is rebuilt from the maps, as for an unreadable one). Any other epoch (a newer
/// build's) is refused ([`DataplaneError::Epoch`]).
/// 1 → 2: the first publish sets `BACKEND_F_IPIP` on the backends of IPIP VIPs.
/// 2 → 3 is not listed: `VipMeta` grew (16 → 24 bytes), so the pinned `VIPS` of an
/// earlier build no longer fits this one's and the adoption is refused before any epoch is
/// read ([`DataplaneError::Incompatible`]).
pub const ADOPTABLE_EPOCHS: [u32; 1] = [1];

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
    /// The sequence schedulers' fallback Maglev table: slots of each half (0: none), their
    /// starts, and which one `VIPS` points at.
    #[serde(default)]
    pub hash_size: u32,
    #[serde(default)]
    pub hash_halves: [u32; 2],
    #[serde(default)]
    pub hash_live: usize,
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
    pub(super) fn ident(&self) -> VipIdent {
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

pub(super) fn mode_from(s: &str) -> Option<AttachMode> {
    match s {
        "native" => Some(AttachMode::Native),
        "generic" => Some(AttachMode::Generic),
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
                    hash_size: r.hash_size,
                    hash_halves: r.hash_halves,
                    hash_live: r.hash_live,
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
}

/// Read a saved layout: `None` if there is none, or it is unreadable, or it belongs to
/// another pin directory (with a warning).
pub(super) fn read_saved(path: &Path, dir: &Path) -> Option<SavedLayout> {
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

/// The saved layout to adopt with: `saved` as read, unless maps are being adopted (`adopting`)
/// and it is from another ABI epoch: an earlier, adoptable one's is ignored (the layout is
/// rebuilt from the maps alone); any other epoch is refused.
pub(super) fn for_adoption(
    saved: Option<SavedLayout>,
    adopting: bool,
    cfg: &PinConfig,
) -> Result<Option<SavedLayout>, DataplaneError> {
    let Some(s) = saved.as_ref().filter(|s| adopting && s.epoch != ABI_EPOCH) else {
        return Ok(saved);
    };
    if !ADOPTABLE_EPOCHS.contains(&s.epoch) {
        return Err(DataplaneError::Epoch {
            dir: cfg.dir.clone(),
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
    Ok(None)
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
