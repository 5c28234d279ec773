//! The flow table and new-flow admission, as the daemon sees them: connection tracking
//! (the sweeper, the flow clock, the active counts), the table's entries, and the per-CPU
//! `FLOOD_GUARD` counters of the new flows forwarded without an entry.

use aya::maps::MapError;
#[cfg(feature = "test-helpers")]
use aya::maps::PerCpuValues;
use lb_common::{FloodGuard, FlowKey, FlowValue, names};

use super::{Dataplane, DataplaneError, conntrack, open_typed};

impl Dataplane {
    /// A flow-table walker with its own map handles (the daemon runs it without holding the
    /// data plane).
    pub fn sweeper(
        &self,
        timeouts: conntrack::Timeouts,
    ) -> Result<conntrack::Sweeper, DataplaneError> {
        let flows = open_typed(&self.flows_fd, names::FLOWS)?;
        let stats = open_typed(&self.backend_stats_fd, names::BACKEND_STATS)?;
        Ok(conntrack::Sweeper::new(
            flows,
            stats,
            timeouts,
            self.flows_capacity,
        ))
    }

    /// How many flows arriving on one CPU the flow table holds: all of it, or its CPU share
    /// (`entries / possible CPUs`) for a table an older build pinned as an LRU with per-CPU
    /// lists.
    pub fn flows_one_cpu_holds(&self) -> u32 {
        self.flows_one_cpu
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
        self.flows.get(key, 0).ok()
    }

    /// Number of entries in the flow table (walks the table: for tests and stats, not
    /// per-packet paths).
    pub fn flow_count(&self) -> usize {
        self.flows.keys().filter(Result::is_ok).count()
    }

    /// Live flow-table entries per backend id (walks the table: for plans and stats).
    pub fn flows_per_backend(&self) -> std::collections::HashMap<u32, u64> {
        let mut out = std::collections::HashMap::new();
        for (_, v) in self.flows.iter().filter_map(Result::ok) {
            *out.entry(v.backend_id).or_insert(0) += 1;
        }
        out
    }

    /// Remove every flow-table entry (tests and benchmarks start from an empty table).
    pub fn clear_flows(&mut self) -> Result<(), DataplaneError> {
        let keys: Vec<FlowKey> = self.flows.keys().filter_map(Result::ok).collect();
        for k in keys {
            match self.flows.remove(&k) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(source) => {
                    return Err(DataplaneError::Map {
                        name: names::FLOWS,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// New flows forwarded by their hash without a flow entry because the flood guard's
    /// rate was exceeded (`daemon.new_flow_limit_per_cpu`), since load (summed over CPUs).
    pub fn unpinned_flows(&self) -> Result<u64, DataplaneError> {
        self.flood_guard_sum(|g| g.unpinned)
    }

    /// New flows forwarded by their hash without a flow entry because the flow table was
    /// full, since load (summed over CPUs).
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

    /// Forget on every CPU that the flow table was found full (the program then tries its
    /// next insert again, as it does at the flow clock's next tick). For tests, behind the
    /// `test-helpers` feature.
    #[cfg(feature = "test-helpers")]
    pub fn forget_table_full(&mut self) -> Result<(), DataplaneError> {
        let err = |source| DataplaneError::Map {
            name: names::FLOOD_GUARD,
            source,
        };
        let cleared: Vec<FloodGuard> = self
            .flood_guard
            .get(&0, 0)
            .map_err(err)?
            .iter()
            .map(|g| FloodGuard {
                full_tick_after: 0,
                ..*g
            })
            .collect();
        // One value per CPU, as just read: only a CPU count that changed meanwhile fails.
        let values = PerCpuValues::try_from(cleared).map_err(|io_error| {
            err(MapError::SyscallError(aya::sys::SyscallError {
                call: "PerCpuValues::try_from",
                io_error,
            }))
        })?;
        self.flood_guard.set(0, values, 0).map_err(err)
    }
}
