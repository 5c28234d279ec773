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
//! 3. it rebuilds the [`Layout`](crate::layout::Layout) — VIP ids, backend slots with their generations, table
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

mod link;
mod recover;
mod saved;
mod specs;

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use aya::programs::links::FdLink;
use lb_common::names;

pub(crate) use self::link::link_ifindex;
use self::{
    link::{open_pinned_link, reusable_link},
    saved::{mode_from, read_saved},
};
pub use self::{
    saved::{ADOPTABLE_EPOCHS, SavedLayout, SavedVip, saved_layout_for},
    specs::{Found, MapSpec, abi_hash, inspect, lock_pin_dir, object_specs},
};
use super::{AttachMode, Dataplane, DataplaneError, Sizes, pinned};

/// The balancer's pinned XDP link, in the pin directory (maps are pinned under their own,
/// upper-case, names).
pub const LINK_PIN: &str = "link";
/// Where an older build's flow table waits while this build loads (an upgrade across the
/// table's change of layout), in the pin directory (bpffs refuses names with a dot).
const OLD_FLOWS_PIN: &str = "FLOWS_OLD";
/// The saved layout's file name, in `daemon.state_dir`.
pub const LAYOUT_FILE: &str = "layout.json";

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
    /// An older build's flow table whose flows were copied into this one's at load: copied
    /// again once this build's program runs (the flows the old program opened meanwhile),
    /// then dropped.
    pub(super) old_flows: Option<crate::flows::OldFlows>,
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
        pinned::prepare_pin_dir(&dir)?;
        let lock = lock_pin_dir(&dir)?;
        // A daemon stopped in the middle of an upgrade that moved an older flow table aside
        // (below) before it pinned its own: the older table goes back, to be moved again.
        if dir.join(OLD_FLOWS_PIN).exists() && !dir.join(names::FLOWS).exists() {
            move_pin(&dir, OLD_FLOWS_PIN, names::FLOWS)?;
        }
        let specs = object_specs(sizes)?;
        let found = inspect(&dir, &specs)?;
        let adopting = !found.maps.is_empty();
        let saved = saved::for_adoption(read_saved(&cfg.layout_file, &dir), adopting, &cfg)?;
        let link = found.link && reusable_link(&dir, &cfg.interface)?;
        for name in &found.replaced {
            tracing::warn!(map = %name, "this build changed the shape of a pinned counter map: it is replaced by a new one (its counters restart from zero)");
            unpin(&dir, name)?;
        }
        // An older build's flow table: held open (the old program keeps forwarding with it
        // until the link switches) and moved aside, so that this build's table takes its
        // pin; put back if this build fails to load, removed once it has.
        let old_flows = if found.old_flows {
            move_pin(&dir, names::FLOWS, OLD_FLOWS_PIN)?;
            let old = aya::maps::MapData::from_pin(dir.join(OLD_FLOWS_PIN))
                .and_then(aya::maps::Map::from_map_data)
                .and_then(crate::flows::OldFlows::try_from);
            match old {
                Ok(o) => Some(o),
                Err(source) => {
                    move_pin(&dir, OLD_FLOWS_PIN, names::FLOWS)?;
                    return Err(DataplaneError::Map {
                        name: names::FLOWS,
                        source,
                    });
                }
            }
        } else {
            None
        };
        let pins: Vec<(String, PathBuf)> = specs
            .iter()
            .map(|s| (s.name.clone(), dir.join(&s.name)))
            .collect();
        let loaded = Self::load_with(sizes, &pins);
        if old_flows.is_some() {
            if loaded.is_ok() {
                unpin(&dir, OLD_FLOWS_PIN)?;
            } else {
                move_pin(&dir, OLD_FLOWS_PIN, names::FLOWS)?;
            }
        }
        let mut dp = loaded?;
        let mut adoption = Adoption {
            maps: found.maps.clone(),
            new: found.new.clone(),
            stale: found.stale.clone(),
            link,
            ..Adoption::default()
        };
        if let Some(old) = &old_flows {
            let m = dp.copy_flows_from(old);
            tracing::info!(
                copied = m.copied,
                lost = m.lost,
                "moved the flows of the older build's flow table into this build's"
            );
            adoption.notes.push(format!(
                "the flow table changed layout: {} flows copied into the new table{}",
                m.copied,
                if m.lost > 0 {
                    format!(
                        ", {} without room (their next packet picks a backend again)",
                        m.lost
                    )
                } else {
                    String::new()
                }
            ));
        }
        if adopting {
            dp.adopt_layout(sizes, saved.as_ref(), &dir, &mut adoption)?;
        }
        for name in &found.stale {
            unpin(&dir, name)?;
        }
        dp.pins = Some(Pins {
            abi: abi_hash(&specs),
            specs,
            mode: saved
                .as_ref()
                .and_then(|s| s.xdp_mode.as_deref())
                .and_then(mode_from),
            existing_link: None,
            adopted: adopting,
            old_flows,
            cfg,
            _lock: lock,
        });
        if link {
            let l = open_pinned_link(&dir)?;
            if let Some(p) = dp.pins.as_mut() {
                p.existing_link = Some(l);
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

/// Rename the pin `from` in `dir` to `to`.
fn move_pin(dir: &Path, from: &str, to: &str) -> Result<(), DataplaneError> {
    std::fs::rename(dir.join(from), dir.join(to)).map_err(|e| DataplaneError::Pins {
        dir: dir.to_owned(),
        message: format!("renaming the pin {from} to {to}: {e}"),
    })
}

/// Remove the pin `name` from `dir`.
fn unpin(dir: &Path, name: &str) -> Result<(), DataplaneError> {
    let p = dir.join(name);
    std::fs::remove_file(&p).map_err(|e| DataplaneError::Pins {
        dir: dir.to_owned(),
        message: format!("removing {}: {e}", p.display()),
    })
}

#[cfg(test)]
mod tests;
