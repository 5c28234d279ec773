//! The pass/drop/forward reason counters: `REASONS` counts the packets without a VIP,
//! `VIP_REASONS` those whose VIP is known, one row of `reason::COUNT` per VIP id (the
//! balancer increments one of the two per packet, but for `fwd_tx`). The global figures
//! are `REASONS` plus the sum of every VIP row that may hold counts (removed VIPs' rows
//! too, so that they never go backwards while the daemon runs).
//!
//! `fwd_tx` (`reason::FWD_TX`), the commonest reason, is not counted by the program: a
//! VIP's is its forwarded packets (`VIP_STATS`) less its other forward reasons
//! (`reason::FORWARDS_COUNTED`), derived here. The packets are read before the reasons,
//! so a packet forwarded between the two reads (counted in its reason, not yet in the
//! packets read) can only make the figure low, never high; each row's figure is kept at
//! the highest it was read at, so it never goes backwards either, and it is exact once
//! the packets in flight at one read are counted at the next.

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

/// A VIP row's `fwd_tx`: its `forwarded` packets less its other forward reasons in
/// `counts`, never below `seen`, the row's figure as last read (which it then holds).
fn fwd_tx(seen: &mut u64, forwarded: u64, counts: &VipReasons) -> u64 {
    let others: u64 = reason::FORWARDS_COUNTED
        .iter()
        .map(|&c| counts[c as usize])
        .sum();
    *seen = forwarded.saturating_sub(others).max(*seen);
    *seen
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
    /// packets (`VIP_REASONS`, rows `0..` the highest VIP id seen, with `fwd_tx` derived
    /// from `VIP_STATS`: see the module documentation), summed over CPUs.
    pub fn reason_counts_split(&self) -> Result<(Vec<u64>, Vec<VipReasons>), DataplaneError> {
        let rows = self.vip_rows();
        // The forwarded packets first (see the module documentation).
        let forwarded =
            batch::sum_first(&self.vip_stats, rows, crate::add_counters).map_err(|source| {
                DataplaneError::Map {
                    name: names::VIP_STATS,
                    source,
                }
            })?;
        let global =
            batch::sum_first(&self.reasons, reason::COUNT, |a, c| *a += c).map_err(|source| {
                DataplaneError::Map {
                    name: names::REASONS,
                    source,
                }
            })?;
        let flat = batch::sum_first(&self.vip_reasons, rows * reason::COUNT, |a, c| *a += c)
            .map_err(|source| DataplaneError::Map {
                name: names::VIP_REASONS,
                source,
            })?;
        let mut seen = self
            .fwd_tx_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() < forwarded.len() {
            seen.resize(forwarded.len(), 0);
        }
        let per_vip = flat
            .chunks(reason::COUNT as usize)
            .zip(&forwarded)
            .zip(seen.iter_mut())
            .map(|((counts, forwarded), seen)| {
                let mut r = [0; reason::COUNT as usize];
                r[..counts.len()].copy_from_slice(counts);
                r[reason::FWD_TX as usize] = fwd_tx(seen, forwarded.packets, &r);
                r
            })
            .collect();
        Ok((global, per_vip))
    }
}

#[cfg(test)]
mod tests {
    use lb_common::reason;

    use super::{VipReasons, fwd_tx};

    /// `fwd_tx` is a VIP's forwarded packets less its other forward reasons, never below
    /// what it was last read at (a read that saw a forward's reason before its packet).
    #[test]
    fn fwd_tx_is_the_forwarded_packets_less_the_other_forward_reasons() {
        let mut counts: VipReasons = [0; reason::COUNT as usize];
        counts[reason::FWD_REDIRECT as usize] = 3;
        counts[reason::FWD_ICMP as usize] = 2;
        counts[reason::FWD_MSS_CLAMPED as usize] = 1;
        // Not forwards: no part of it.
        counts[reason::DROP_NO_BACKEND as usize] = 100;
        counts[reason::ICMP_TOO_BIG as usize] = 100;
        let mut seen = [0u64; 3];
        assert_eq!(fwd_tx(&mut seen[2], 16, &counts), 10);
        assert_eq!(seen, [0, 0, 10]);
        // Two more forwards counted in their reasons, their packets not read yet: kept.
        counts[reason::FWD_ICMP as usize] += 2;
        assert_eq!(fwd_tx(&mut seen[2], 16, &counts), 10);
        assert_eq!(fwd_tx(&mut seen[2], 18, &counts), 10);
        assert_eq!(fwd_tx(&mut seen[2], 19, &counts), 11);
        // Rows of their own; more reasons than packets read gives 0, not a wrap.
        assert_eq!(fwd_tx(&mut seen[0], 5, &counts), 0);
        assert_eq!(seen, [0, 0, 11]);
    }
}
