//! Fingerprints that show whether balancers agree (`sluice fleet check`, `sluice vip list`,
//! the status and the metrics).
//!
//! - A VIP's **table fingerprint** hashes what decides where its new flows go: the VIP's
//!   identity, its scheduler, the hash seed, the table size and the lookup table as a
//!   sequence of backend *addresses* (slot ids differ from balancer to balancer; addresses
//!   do not). Balancers with the same configuration, health and `daemon.hash_seed` get the
//!   same fingerprint; a changed weight, backend, seed or table size changes it. For the
//!   sequence schedulers the table is the sequence of addresses computed from the weights
//!   (for `lc`/`wlc`, as if every backend had the same number of connections: the live
//!   plan follows each balancer's own connections).
//! - The **configuration fingerprint** hashes the canonical exported configuration
//!   ([`Config::to_toml`]): the same however the file orders its keys or spaces its text.
//!   The `[daemon]` keys that are this host's own (interface, paths, sockets, metrics
//!   address, API group) are left out; `hash_seed`, the limits and timeouts, every VIP
//!   and backend are in.
//!
//! Both are FNV-1a 64-bit hashes of a fixed encoding, printed as 16 hex digits: stable
//! across runs and hosts (std's hasher promises neither). Compare fingerprints of one sluice
//! version: a release that changes how tables are built changes them too.

use std::{fmt, net::IpAddr};

use lb_common::NO_BACKEND;

use crate::{
    config::Config,
    maglev,
    model::{DesiredVip, Sched, addr_bytes},
    sched,
};

/// A 64-bit fingerprint, shown as 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Version of the encoding below: part of every hash, so a future change of the encoding
/// never matches an old fingerprint by accident.
const VIP_DOMAIN: &[u8] = b"sluice-vip-table-1";
const CONFIG_DOMAIN: &[u8] = b"sluice-config-1";
/// What a slot without a backend (or with an unknown id) hashes as.
const NO_RANK: u32 = u32::MAX;

/// FNV-1a, 64 bits, fed incrementally.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }

    fn addr(&mut self, a: IpAddr) {
        let (bytes, family) = addr_bytes(a);
        self.bytes(&[family]);
        self.bytes(&bytes);
    }
}

/// A fixed code per scheduler (not `Debug`, which could change with a rename).
fn sched_code(s: Sched) -> u8 {
    match s {
        Sched::Maglev => 1,
        Sched::SourceHash => 2,
        Sched::RoundRobin => 3,
        Sched::WeightedRoundRobin => 4,
        Sched::LeastConn => 5,
        Sched::WeightedLeastConn => 6,
    }
}

/// The table fingerprint of `v` whose lookup table (or sequence) is `table`, its slots
/// holding the ids of `ids` (`(slot id, backend address)`, any order).
///
/// The table is hashed as ranks: the addresses it uses, sorted, then each slot's index in
/// that list (4 bytes a slot rather than 17).
pub fn table(v: &DesiredVip, seed: u32, table: &[u32], ids: &[(u32, IpAddr)]) -> Fingerprint {
    let mut by_addr: Vec<(IpAddr, u32)> = ids.iter().map(|(id, a)| (*a, *id)).collect();
    by_addr.sort_unstable();
    by_addr.dedup_by_key(|(a, _)| *a);
    let mut rank_of: Vec<(u32, u32)> = by_addr
        .iter()
        .enumerate()
        .map(|(rank, (_, id))| (*id, rank as u32))
        .collect();
    rank_of.sort_unstable();

    let mut h = Fnv::new();
    h.bytes(VIP_DOMAIN);
    h.addr(v.ident.address);
    h.bytes(&v.ident.port.to_be_bytes());
    h.bytes(&[v.ident.proto, sched_code(v.scheduler)]);
    h.u32(seed);
    h.u32(v.table_size);
    h.u32(by_addr.len() as u32);
    for (a, _) in &by_addr {
        h.addr(*a);
    }
    h.u32(table.len() as u32);
    for &slot in table {
        let rank = if slot == NO_BACKEND {
            NO_RANK
        } else {
            rank_of
                .binary_search_by_key(&slot, |(id, _)| *id)
                .map_or(NO_RANK, |i| rank_of[i].1)
        };
        h.u32(rank);
    }
    Fingerprint(h.0)
}

/// The table fingerprint of `v` with hash seed `seed`: its table built here (with ids of
/// this function's choosing, which the fingerprint does not depend on). A Maglev table
/// that cannot be built (a size that is not prime, too small) hashes as an empty table.
pub fn vip(v: &DesiredVip, seed: u32) -> Fingerprint {
    let ids: Vec<(u32, IpAddr)> = v
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| (i as u32 + 1, b.address))
        .collect();
    let weight = |b: &crate::model::DesiredBackend| if b.serving { b.weight } else { 0 };
    let built = match v.scheduler.order() {
        None => {
            let names: Vec<String> = v.backends.iter().map(|b| b.address.to_string()).collect();
            let entries: Vec<maglev::Entry<'_>> = v
                .backends
                .iter()
                .zip(&names)
                .zip(&ids)
                .map(|((b, name), (id, _))| maglev::Entry {
                    name,
                    weight: weight(b),
                    id: *id,
                })
                .collect();
            maglev::build(&entries, v.table_size, seed).unwrap_or_default()
        }
        Some(order) => {
            let members: Vec<sched::Member> = v
                .backends
                .iter()
                .zip(&ids)
                .map(|(b, (id, _))| sched::Member {
                    id: *id,
                    weight: weight(b),
                    active: 0,
                })
                .collect();
            sched::sequence(order, &members, v.table_size, v.table_size)
        }
    };
    table(v, seed, &built, &ids)
}

/// The configuration fingerprint: a hash of [`Config::to_toml`] with the `[daemon]` keys
/// that name things of this host only left out (`interface`, `xdp_mode`, `state_dir`,
/// `api_socket`, `metrics_listen`, `api_group`, `pin_dir`), so that balancers
/// with other interface names or paths but the same VIPs, backends and settings agree.
pub fn config(c: &Config) -> Result<Fingerprint, toml::ser::Error> {
    let mut shared = c.clone();
    shared.daemon = shared_daemon(&c.daemon);
    let text = shared.to_toml()?;
    let mut h = Fnv::new();
    h.bytes(CONFIG_DOMAIN);
    h.bytes(text.as_bytes());
    Ok(Fingerprint(h.0))
}

/// [`config`] from the TOML of each VIP of `c` ([`crate::config::vip_toml`], in order):
/// the same fingerprint, without writing the VIPs out again.
pub fn config_from_parts(
    c: &Config,
    vip_texts: &[std::sync::Arc<str>],
) -> Result<Fingerprint, toml::ser::Error> {
    if c.vips.is_empty() || vip_texts.len() != c.vips.len() {
        return config(c);
    }
    let daemon = crate::config::daemon_toml(&shared_daemon(&c.daemon))?;
    let mut h = Fnv::new();
    h.bytes(CONFIG_DOMAIN);
    h.bytes(daemon.as_bytes());
    for t in vip_texts {
        h.bytes(t.as_bytes());
    }
    Ok(Fingerprint(h.0))
}

/// `d` without what names things of this host only.
fn shared_daemon(d: &crate::config::DaemonConfig) -> crate::config::DaemonConfig {
    let mut d = d.clone();
    {
        let d = &mut d;
        d.interface.clear();
        d.xdp_mode = crate::config::XdpMode::Auto;
        d.state_dir = std::path::PathBuf::new();
        d.api_socket = std::path::PathBuf::new();
        d.metrics_listen = None;
        d.api_group = None;
        d.pin_dir = None;
    }
    d
}

#[cfg(test)]
mod tests;
