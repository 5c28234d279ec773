//! The pass/drop/forward reason counters: `REASONS` counts the packets without a VIP,
//! `VIP_REASONS` those whose VIP is known, one row of `reason::COUNT` per VIP id (the
//! balancer increments one of the two per packet). The global figures are `REASONS` plus
//! the sum of every VIP row that may hold counts (removed VIPs' rows too, so that they
//! never go backwards while the daemon runs).

use std::sync::atomic::Ordering;

use lb_common::{Counters, names, reason};

use crate::{Dataplane, DataplaneError, batch};

/// One VIP's reason counts, indexed by `lb_common::reason` code.
pub type VipReasons = [u64; reason::COUNT as usize];

/// Per-reason counts over all packets, indexed by code: those without a VIP (`global`)
/// plus every VIP row (removed VIPs' too), as [`Dataplane::reason_counts_split`] gives them.
pub fn reason_totals(global: &[u64], per_vip: &[VipReasons]) -> Vec<u64> {
    (0..reason::COUNT as usize)
        .map(|code| {
            global.get(code).copied().unwrap_or(0) + per_vip.iter().map(|r| r[code]).sum::<u64>()
        })
        .collect()
}

impl Dataplane {
    /// Per-reason packet counts over all packets (those without a VIP and those of every
    /// VIP), summed over CPUs, indexed by `lb_common::reason` code.
    pub fn reason_counts(&self) -> Result<Vec<u64>, DataplaneError> {
        let (global, per_vip) = self.reason_counts_split()?;
        Ok(reason_totals(&global, &per_vip))
    }

    /// Flows opened on each CPU (indexed by CPU), over every VIP row that may hold counts:
    /// how RSS spreads new flows (a CPU far above the others is the one whose inserts
    /// evict).
    pub fn new_flows_per_cpu(&self) -> Result<Vec<u64>, DataplaneError> {
        let rows = self.vip_rows();
        let per = batch::sum_per_cpu(&self.vip_stats, rows, |a: &mut Counters, c| {
            a.new_flows += c.new_flows;
        })
        .map_err(|source| DataplaneError::Map {
            name: names::VIP_STATS,
            source,
        })?;
        Ok(per.iter().map(|c| c.new_flows).collect())
    }

    /// VIP ids that may hold counts: up to the highest one seen while this data plane
    /// ran (a removed VIP's counts still count), plus one.
    fn vip_rows(&self) -> u32 {
        let in_use = self.vips_in_use();
        self.vip_reason_rows
            .fetch_max(in_use, Ordering::Relaxed)
            .max(in_use)
    }

    /// The reason counts of the packets without a VIP (`REASONS`), and of each VIP id's
    /// packets (`VIP_REASONS`, rows `0..` the highest VIP id seen), summed over CPUs.
    pub fn reason_counts_split(&self) -> Result<(Vec<u64>, Vec<VipReasons>), DataplaneError> {
        let global =
            batch::sum_first(&self.reasons, reason::COUNT, |a, c| *a += c).map_err(|source| {
                DataplaneError::Map {
                    name: names::REASONS,
                    source,
                }
            })?;
        let rows = self.vip_rows();
        let flat = batch::sum_first(&self.vip_reasons, rows * reason::COUNT, |a, c| *a += c)
            .map_err(|source| DataplaneError::Map {
                name: names::VIP_REASONS,
                source,
            })?;
        let per_vip = flat
            .chunks(reason::COUNT as usize)
            .map(|row| {
                let mut r = [0; reason::COUNT as usize];
                r[..row.len()].copy_from_slice(row);
                r
            })
            .collect();
        Ok((global, per_vip))
    }
}
