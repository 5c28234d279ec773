//! The flow table and new-flow admission, as the daemon sees them: connection tracking
//! (the sweeper, the flow clock, the active counts), the table's entries, and the per-CPU
//! `FLOOD_GUARD` counters of the new flows forwarded without an entry.

use std::os::fd::AsFd;

use lb_common::{FloodGuard, FlowKey, FlowValue, names};

use super::{Dataplane, DataplaneError, FlowTable, Inserted, conntrack, open_typed};

/// An older build's flow table (a kernel hash map, plain or LRU), whose flows move into
/// this build's on an upgrade.
pub type OldFlows = aya::maps::HashMap<aya::maps::MapData, FlowKey, FlowValue>;

/// What copying an older build's flows did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Flows copied into this build's table.
    pub copied: u64,
    /// Flows this build's table had already (copied before, or opened by the new program).
    pub present: u64,
    /// Flows without room in their probe: their next packet picks a backend again.
    pub lost: u64,
}

impl Dataplane {
    /// A flow-table walker with its own map handles (the daemon runs it without holding the
    /// data plane).
    pub fn sweeper(
        &self,
        timeouts: conntrack::Timeouts,
    ) -> Result<conntrack::Sweeper, DataplaneError> {
        let flows = FlowTable::map(
            self.flows_fd.as_fd(),
            self.region_fd.as_fd(),
            self.flows_meta,
        )?;
        let stats = open_typed(&self.backend_stats_fd, names::BACKEND_STATS)?;
        Ok(conntrack::Sweeper::new(
            flows,
            stats,
            timeouts,
            self.flows_capacity,
        ))
    }

    /// How many flows arriving on one CPU the flow table holds: all it is sized for (one
    /// table for every CPU).
    pub fn flows_one_cpu_holds(&self) -> u32 {
        self.flows_capacity
    }

    /// Size the flow table's region for `flows` flows now ([`lb_common::region_for`]), as
    /// the daemon's sweeper does as they come (benchmarks fill tables without one).
    pub fn fit_flow_region(&self, flows: u64) -> crate::Resized {
        let t = &self.flows;
        t.resize(lb_common::region_for(flows, t.slots()))
    }

    /// The flow table itself (its slots, as the program sees them).
    pub fn flow_table(&self) -> &FlowTable {
        &self.flows
    }

    /// The flow clock's writer, on its own map handle (the daemon keeps it from a thread
    /// without holding the data plane; see [`conntrack::Clock`]).
    pub fn clock(&self) -> Result<conntrack::Clock, DataplaneError> {
        Ok(conntrack::Clock::new(open_typed(
            &self.clock_fd,
            names::CLOCK,
        )?))
    }

    /// Take a sweep's counts as the base of the active-connection figures.
    pub fn rebase_conntrack(&mut self, sweep: &conntrack::Sweep) {
        self.book.rebase(sweep);
    }

    /// The connection-tracking book (last sweep, totals).
    pub fn conntrack(&self) -> &conntrack::Book {
        &self.book
    }

    /// Active connections of backend slot `id` now (see `conntrack`).
    pub fn active(&self, id: u32) -> Result<u64, DataplaneError> {
        let c = self.backend_counters(id)?;
        Ok(self.book.active(id, c.into()))
    }

    /// The flow-table entry of a 5-tuple, if any.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.flows.get(key)
    }

    /// Number of entries in the flow table (walks the table: for tests and stats, not
    /// per-packet paths).
    pub fn flow_count(&self) -> usize {
        self.flows.count()
    }

    /// Live flow-table entries per backend id (walks the table: for plans and stats).
    pub fn flows_per_backend(&self) -> std::collections::HashMap<u32, u64> {
        let mut out = std::collections::HashMap::new();
        for e in self.flows.iter() {
            *out.entry(e.value.backend_id).or_insert(0) += 1;
        }
        out
    }

    /// Copy every flow of an older build's table into this one's (an upgrade across the
    /// change of the table's layout), leaving those it has already.
    pub fn copy_flows_from(&self, old: &OldFlows) -> Moved {
        let mut m = Moved::default();
        for (k, v) in old.iter().filter_map(Result::ok) {
            match self.flows.insert(&k, &v) {
                Inserted::Taken => m.copied += 1,
                Inserted::Exists => m.present += 1,
                Inserted::Full => m.lost += 1,
            }
        }
        m
    }

    /// Remove every flow-table entry (tests and benchmarks start from an empty table;
    /// nothing may forward meanwhile).
    pub fn clear_flows(&mut self) -> Result<(), DataplaneError> {
        self.flows.clear();
        Ok(())
    }

    /// New flows forwarded by their hash without a flow entry because the flood guard's
    /// rate was exceeded (`daemon.new_flow_limit_per_cpu`), since load (summed over CPUs).
    pub fn unpinned_flows(&self) -> Result<u64, DataplaneError> {
        self.flood_guard_sum(|g| g.unpinned)
    }

    /// New flows forwarded by their hash without a flow entry because their insert found
    /// no free slot in the flow table, since load (summed over CPUs).
    pub fn table_full_flows(&self) -> Result<u64, DataplaneError> {
        self.flood_guard_sum(|g| g.table_full)
    }

    /// One `FLOOD_GUARD` counter, summed over CPUs.
    fn flood_guard_sum(&self, field: impl Fn(&FloodGuard) -> u64) -> Result<u64, DataplaneError> {
        let v = self
            .flood_guard
            .get(&0, 0)
            .map_err(|source| DataplaneError::Map {
                name: names::FLOOD_GUARD,
                source,
            })?;
        Ok(v.iter().map(field).sum())
    }
}
