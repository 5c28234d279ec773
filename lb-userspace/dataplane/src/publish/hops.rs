//! The `NEXT_HOPS` slots: every backend that leaves through a route (IPIP, and DSR without
//! a configured MAC) gets its next hop written next to its `BACKENDS` slot, before the
//! slot is published, so the program forwards its packets without `bpf_fib_lookup`.
//! Addresses are resolved ([`crate::nexthop::resolve`]) when a backend first needs one and
//! all again on [`Dataplane::refresh_next_hops`] (the daemon calls it when the kernel
//! announces a link, neighbour or route change, and when `FIB_FALLBACKS` moves).
//!
//! An entry is rewritten whole by one map update; a packet reading it at that instant
//! could see part of the old and part of the new value (array values are copied without a
//! lock), which costs at most that packet: the same as a neighbour change costs any
//! router.

use std::{collections::BTreeMap, net::IpAddr};

use lb_common::{MODE_IPIP, NextHop, names};

use crate::{
    Dataplane, DataplaneError, Desired, DesiredBackend, DesiredVip,
    nexthop::{self, Resolution, Unresolved},
};

/// What the data plane knows of next hops.
#[derive(Debug, Default)]
pub struct Hops {
    /// What each address resolved to, at its last resolution.
    resolved: BTreeMap<IpAddr, Resolution>,
    /// Slot → the address it was written for and what its entry holds.
    slots: BTreeMap<u32, (IpAddr, NextHop)>,
    /// The network namespace the balancer was attached in (`/proc/thread-self/ns/net` of
    /// the attaching thread): interface indexes only mean something there, so next hops
    /// are resolved there, whichever thread publishes. `None` before an attach: the
    /// publishing thread's.
    netns: Option<std::fs::File>,
}

/// `(st_dev, st_ino)` of a namespace file: equal for the same namespace.
fn ns_id(f: &std::fs::File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    f.metadata().ok().map(|m| (m.dev(), m.ino()))
}

/// [`nexthop::resolve`] in the namespace `netns` (the calling thread's when `None` or the
/// same): another namespace is entered by a short-lived thread of its own.
fn resolve_in(
    netns: Option<&std::fs::File>,
    addrs: &[IpAddr],
) -> std::io::Result<BTreeMap<IpAddr, Resolution>> {
    let here = std::fs::File::open("/proc/thread-self/ns/net").ok();
    let Some(ns) = netns.filter(|ns| here.as_ref().and_then(ns_id) != ns_id(ns)) else {
        return nexthop::resolve(addrs);
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            nexthop::resolve(addrs)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the resolving thread panicked")))
    })
}

/// Whether `b` of `vip` leaves through a route (and so through its `NEXT_HOPS` slot).
pub fn needs_hop(vip: &DesiredVip, b: &DesiredBackend) -> bool {
    vip.mode == MODE_IPIP || b.mac.is_none()
}

/// One backend's next hop, for `sluice backend list` and the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HopStatus {
    pub address: IpAddr,
    pub slot: u32,
    pub resolution: Resolution,
}

impl Dataplane {
    /// Resolve the addresses in `desired` that need a next hop and have none resolved yet
    /// (one batch). A failure to ask the kernel is logged: those backends go through the
    /// FIB until the next refresh.
    pub(super) fn resolve_new_hops(&mut self, desired: &Desired) {
        let mut todo: Vec<IpAddr> = desired
            .vips
            .iter()
            .flat_map(|v| v.backends.iter().filter(|b| needs_hop(v, b)))
            .map(|b| b.address)
            .filter(|a| !self.hops.resolved.contains_key(a))
            .collect();
        todo.sort();
        todo.dedup();
        match resolve_in(self.hops.netns.as_ref(), &todo) {
            Ok(r) => self.hops.resolved.extend(r),
            Err(e) => tracing::warn!(error = %e, "resolving backends' next hops"),
        }
    }

    /// Write slot `id`'s next hop for `addr` (`None`: the slot needs none) if it differs
    /// from what the entry holds.
    pub(super) fn write_hop(
        &mut self,
        id: u32,
        addr: Option<IpAddr>,
    ) -> Result<(), DataplaneError> {
        let hop = addr
            .and_then(|a| self.hops.resolved.get(&a))
            .and_then(|r| r.as_ref().ok())
            .copied()
            .unwrap_or_default();
        let held = self.hops.slots.get(&id);
        if held.is_some_and(|(a, h)| Some(*a) == addr && *h == hop) {
            return Ok(());
        }
        // A slot never written by this daemon may hold an earlier daemon's entry: written
        // whatever it holds (an entry of zeros for a slot that needs none).
        if addr.is_none() && held.is_none() {
            return Ok(());
        }
        self.next_hops
            .set(id, hop, 0)
            .map_err(|source| DataplaneError::Map {
                name: names::NEXT_HOPS,
                source,
            })?;
        match addr {
            Some(a) => {
                self.hops.slots.insert(id, (a, hop));
            }
            None => {
                self.hops.slots.remove(&id);
            }
        }
        Ok(())
    }

    /// Resolve every published backend's next hop again and rewrite the entries that
    /// changed (a neighbour's new MAC, a route through another interface, a next hop that
    /// became resolved or lost). How many entries changed.
    pub fn refresh_next_hops(&mut self) -> Result<usize, DataplaneError> {
        let mut addrs: Vec<IpAddr> = self.hops.slots.values().map(|(a, _)| *a).collect();
        addrs.sort();
        addrs.dedup();
        let resolved = match resolve_in(self.hops.netns.as_ref(), &addrs) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "resolving backends' next hops");
                return Ok(0);
            }
        };
        self.hops.resolved = resolved;
        let slots: Vec<(u32, IpAddr, NextHop)> = self
            .hops
            .slots
            .iter()
            .map(|(id, (a, h))| (*id, *a, *h))
            .collect();
        let mut changed = 0;
        for (id, a, old) in slots {
            self.write_hop(id, Some(a))?;
            if self.hops.slots.get(&id).is_some_and(|(_, h)| *h != old) {
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Remember the calling thread's network namespace as the balancer's (see
    /// [`Hops::netns`]); called when the balancer is attached. Resolves every slot again
    /// when it changed.
    pub(crate) fn note_balancer_netns(&mut self) {
        let Ok(here) = std::fs::File::open("/proc/thread-self/ns/net") else {
            return;
        };
        let changed = self.hops.netns.as_ref().and_then(ns_id) != ns_id(&here);
        self.hops.netns = Some(here);
        if changed && !self.hops.slots.is_empty() {
            // Resolved in another namespace before the attach: resolve where it runs.
            self.hops.resolved.clear();
            if let Err(e) = self.refresh_next_hops() {
                tracing::warn!(error = %e, "resolving backends' next hops after the attach");
            }
        }
    }

    /// Every slot's next hop as last resolved, by address.
    pub fn next_hops(&self) -> Vec<HopStatus> {
        self.hops
            .slots
            .iter()
            .map(|(id, (a, _))| HopStatus {
                address: *a,
                slot: *id,
                resolution: self
                    .hops
                    .resolved
                    .get(a)
                    .cloned()
                    .unwrap_or(Err(Unresolved::NoRoute("not resolved yet".into()))),
            })
            .collect()
    }

    /// The slot's `NEXT_HOPS` entry as the kernel holds it (tests, `lookup`).
    pub fn next_hop_entry(&self, id: u32) -> Result<NextHop, DataplaneError> {
        self.next_hops
            .get(&id, 0)
            .map_err(|source| DataplaneError::Map {
                name: names::NEXT_HOPS,
                source,
            })
    }

    /// Frames the program sent through `bpf_fib_lookup` for want of a resolved next hop,
    /// since load (summed over CPUs).
    pub fn fib_fallbacks(&self) -> Result<u64, DataplaneError> {
        let v = self
            .fib_fallbacks
            .get(&0, 0)
            .map_err(|source| DataplaneError::Map {
                name: names::FIB_FALLBACKS,
                source,
            })?;
        Ok(v.iter().sum())
    }
}
