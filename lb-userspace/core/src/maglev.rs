//! Weighted Maglev lookup tables (Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016, §3.4), with weights that are really proportional.
//!
//! # The table
//!
//! A table has `M` slots, `M` prime. The XDP program sends a new flow to
//! `table[flow_hash % M]`; every LB instance that builds the same table from the same
//! backends therefore agrees on where every flow goes.
//!
//! # Permutations and the hash
//!
//! Every backend owns a permutation of `0..M`: `offset = h1(name) % M`,
//! `skip = h2(name) % (M − 1) + 1`, and its `j`-th preference is `(offset + j·skip) % M`
//! (a full permutation, since `M` is prime and `1 ≤ skip < M`). It derives from the
//! backend's *name* only, so a backend keeps its permutation when others come and go, on
//! every instance and across restarts.
//!
//! `h1` and `h2` are SipHash-2-4 (Aumasson and Bernstein, 2012) of the UTF-8 bytes of the
//! name, with the 128-bit key `(seed, OFFSET_KEY)` and `(seed, SKIP_KEY)`: two independent,
//! seeded, well-distributed 64-bit hashes, from the siphasher crate (the field's standard
//! SipHash implementation). The hash is part of the on-wire contract between LB instances:
//! it must never change with a Rust release (which rules out `DefaultHasher`/`RandomState`)
//! or with a crate upgrade, so the tests pin it by the reference vectors of the SipHash
//! paper and pin whole tables built with it. Names are short and there are at most a few
//! thousand per table, so its speed is irrelevant here.
//!
//! # Weights
//!
//! The original algorithm gives every backend one slot per round, so all backends get
//! (almost) the same share. Weighting schemes that merely let heavier backends go more
//! often, or start earlier, give shares only loosely related to the weights (Katran's
//! default hasher is known to give 1:2:3 nearly equal shares). Here, instead:
//!
//! 1. **Quotas.** Backend `i` gets exactly `qᵢ = ⌊M·wᵢ/W⌋` slots (`W = Σw`), and the
//!    `M − Σqᵢ` slots left over go one each to the backends with the largest remainders
//!    `M·wᵢ mod W` (ties: name order). Every backend therefore owns its exact share
//!    `M·wᵢ/W` rounded up or down: the error is *below one slot*, so the relative error is
//!    under `1/(M·wᵢ/W)`, i.e. under 1% whenever a backend's share is at least 100 slots
//!    (for equal weights: whenever `M ≥ 100·N`). A backend whose share is under one slot
//!    may get none.
//! 2. **Credit rounds.** The table fills in rounds. In each round every backend (in name
//!    order) earns `credit += wᵢ` and, if `credit ≥ w_max` and its quota is not used up,
//!    claims a slot (`credit −= w_max`): the next slot of its own permutation that is still
//!    free. So backend `i` makes its `k`-th claim in round `⌈k·w_max/wᵢ⌉`: claims interleave
//!    in proportion to the weights and each backend takes the *head* of its permutation,
//!    which is what keeps the table consistent when the set of backends changes. With equal
//!    weights this is exactly the original Maglev population.
//!
//! The input order of the entries does not matter (they are sorted by name first), and the
//! result is a pure function of `(names, weights, ids, M, seed)`.
//!
//! # Consistency
//!
//! Removing one of `N` backends moves its own `1/N` of the slots plus a cascade: the
//! survivors find the freed slots earlier in their walks, stop short of slots they used to
//! take, which others then take, and so on. Measured at M = 65537 (see the tests), removing
//! one of 3, 10, 100, 1000 equal backends moves 1.00×, 1.03×, 1.57× and ≈ 7× the minimum
//! (the extra is ≈ 0.6% of the table for large `N`, less with a larger `M`), the same as
//! textbook Maglev.
//!
//! # Speed
//!
//! Balancers of different versions must compute the same table from the same config and
//! seed (or a rolling upgrade moves connections), so what follows changes how fast the
//! table is built, never the table: the tests hold the builder, bit for bit, to a verbatim
//! copy of the one before these changes (`maglev/reference.rs`) on some 500 inputs.
//!
//! - **The claim order is listed first**, not found round by round: it does not depend on
//!   where the claims land. While every backend has `wᵢ` claims of quota left, the next
//!   `w_max` rounds hold exactly `wᵢ` claims of backend `i`, always in the same order; so
//!   one such period is listed (a counting sort by round, with each backend's rounds paced
//!   without a division per claim) and replayed, and what is left once a quota runs short
//!   is listed the same way. Only when the rounds outnumber `M` (weights skewed so much
//!   that a light backend's claims are more than `M` rounds apart) is the order taken from
//!   a binary heap keyed by each backend's next claim round (`O(M·log N)`).
//! - **Walks.** Almost all the time goes into the permutation walks: a claim probes
//!   `M/free` slots on average, each probe one bit of an occupancy bitmap (16 KiB at
//!   M = 65537, in L1) and a branch-free add-and-wrap, here on two chains (every other
//!   probe is one step on from a chain of double steps, which halves a walk's latency). A
//!   loop that branches after every probe mispredicts about once a claim, which was half
//!   of the time; so until only `M/16` slots are free a walk probes 2, 4 or 8 slots at a
//!   time (more as the table fills, a few times the expected walk), picks the first free
//!   one with conditional moves, and branches once, seldom wrongly. A backend claiming
//!   again right after itself (a heavy one among light ones) keeps finding its next slot
//!   free whatever the fill: it takes the plain loop, from a register.
//! - **Endgame.** Walking the last few slots is the expensive part, so once `√M` slots are
//!   left a claim instead scans the list of free slots for the one that comes first in the
//!   claimant's permutation: slot `f` is `(f − pos)·skip⁻¹ mod M` steps away, a multiply
//!   and a Barrett reduction (`skip⁻¹` by the extended Euclidean algorithm). Both give the
//!   same slot.
//! - **Setup**: names sorted by a 16-byte prefix as one integer (the whole name only on a
//!   tie), ids and remainders sorted as integers, equal weights' quotas without a division.
//!
//! Release build, M = 65537, on a shared 2-vCPU VM (`cargo run --release -p sluice-core
//! --example maglev_bench`: best of 3 medians of 51 builds): 10, 100 and 1000 equal
//! backends 0.50, 0.59 and 0.68 ms, with weights 1..=10 0.49, 0.59 and 0.72 ms; before
//! these changes 0.81, 0.89 and 0.98 ms, and 1.00, 1.07 and 1.20 ms. Probing in chunks
//! bought about a third; listing the order, most of the rest for weighted backends (and
//! 2.0 → 0.65 ms for one backend of weight 1000 among 999 of weight 1). Tried and
//! dropped: a byte map, or the table itself, as the occupancy map (no faster: out of L1),
//! four chains, chunks of 16, choosing the chunk from counted walk lengths rather than the
//! fill (the counting cost more than it saved), BMI2 shifts (no faster), an endgame
//! threshold from 0.4 to 1.3·√M (flat). The two SipHashes per name are about 2% of a build
//! of 1000, not worth a cache. A build allocates a handful of flat `Vec`s, nothing per
//! slot.

mod fill;

use std::collections::BTreeMap;

use lb_common::NO_BACKEND;

use self::fill::{Walker, choose_scheduler, endgame_threshold, fill};

/// One backend as the table builder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry<'a> {
    /// Stable identity (e.g. "10.0.0.2" or "[2001:db8::2]"); the permutation derives from it, so the
    /// same backend gets the same permutation on every LB instance and after restarts.
    pub name: &'a str,
    /// Relative weight; 0 = takes no slots.
    pub weight: u32,
    /// The value written into the slots this backend owns (a backend id; never 0).
    pub id: u32,
}

/// Why a table cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaglevError {
    /// The table size must be a prime, or permutations would not visit every slot.
    #[error("Maglev table size {0} is not a prime")]
    NotPrime(u32),
    /// Fewer slots than backends with a non-zero weight.
    #[error(
        "Maglev table size {size} is smaller than the number of weighted backends ({backends})"
    )]
    TooSmall {
        /// The requested table size.
        size: u32,
        /// Backends with a non-zero weight.
        backends: usize,
    },
    /// Id 0 is `NO_BACKEND`: a slot holding it drops traffic.
    #[error("backend {0:?} has id 0, which is reserved for \"no backend\"")]
    ZeroId(String),
    /// Two entries with the same name would get the same permutation.
    #[error("backend name {0:?} appears more than once")]
    DuplicateName(String),
    /// Two different backends would write the same id into the table.
    #[error("backend id {id} is used by both {first:?} and {second:?}")]
    DuplicateId {
        /// The shared id.
        id: u32,
        /// The first name using it (in name order).
        first: String,
        /// The second name using it.
        second: String,
    },
}

/// SipHash key half that, with the seed, keys `h1` (the permutation offset).
const OFFSET_KEY: u64 = 0x736c_7569_6365_4f46; // "sluiceOF"
/// SipHash key half that, with the seed, keys `h2` (the permutation skip).
const SKIP_KEY: u64 = 0x736c_7569_6365_534b; // "sluiceSK"

/// Build a table of `size` slots (size must be prime). Slots of an empty set (or all weights 0) hold 0
/// (lb_common::NO_BACKEND), which the kernel treats as "no backend, drop".
///
/// Every entry, weighted or not, must have a unique name and a unique non-zero id. The
/// result does not depend on the order of `entries`; see the module documentation for the
/// guarantees on shares.
pub fn build(entries: &[Entry<'_>], size: u32, seed: u32) -> Result<Vec<u32>, MaglevError> {
    if !is_prime(size) {
        return Err(MaglevError::NotPrime(size));
    }
    let sorted = by_name(entries);
    validate(&sorted)?;

    let active: Vec<&Entry<'_>> = sorted.into_iter().filter(|e| e.weight > 0).collect();
    if active.len() > size as usize {
        return Err(MaglevError::TooSmall {
            size,
            backends: active.len(),
        });
    }
    let mut table = vec![NO_BACKEND; size as usize];
    if active.is_empty() {
        return Ok(table);
    }

    let plan = Plan::new(&active, size, seed);
    let scheduler = choose_scheduler(&plan, size);
    fill(&mut table, plan, scheduler, endgame_threshold(size));
    Ok(table)
}

/// Whether `n` is a prime.
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    // Trial division by 6k ± 1 up to √n (at most ≈ 11 000 rounds for a u32).
    let n = u64::from(n);
    let mut d = 5u64;
    while d * d <= n {
        if n % d == 0 || n % (d + 2) == 0 {
            return false;
        }
        d += 6;
    }
    true
}

/// Fraction of slots whose value differs between two tables of equal size.
///
/// Tables of different sizes share no slot meaning, so every slot counts as moved (1.0);
/// two empty tables have moved nothing (0.0).
pub fn moved_fraction(old: &[u32], new: &[u32]) -> f64 {
    if old.len() != new.len() {
        return 1.0;
    }
    if old.is_empty() {
        return 0.0;
    }
    let moved = old.iter().zip(new).filter(|(a, b)| a != b).count();
    moved as f64 / old.len() as f64
}

/// Slots per id (including `NO_BACKEND`, if any slot holds it).
pub fn shares(table: &[u32]) -> BTreeMap<u32, usize> {
    let mut out = BTreeMap::new();
    for &id in table {
        *out.entry(id).or_insert(0) += 1;
    }
    out
}

/// The entries in name order (byte-wise, as `str` compares), sorted by the first 16 bytes
/// of each name as a number, and only on a tie by the whole names: most comparisons are one
/// integer compare instead of a `memcmp` call.
fn by_name<'e, 'a>(entries: &'e [Entry<'a>]) -> Vec<&'e Entry<'a>> {
    // Zero-padded big-endian: a name's key is never above that of a name that sorts after
    // it, so ordering by (key, name) is ordering by name.
    let key = |name: &str| {
        let mut prefix = [0u8; 16];
        let n = name.len().min(16);
        prefix[..n].copy_from_slice(&name.as_bytes()[..n]);
        u128::from_be_bytes(prefix)
    };
    let mut keyed: Vec<(u128, &'e Entry<'a>)> = entries.iter().map(|e| (key(e.name), e)).collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(b.1.name)));
    keyed.into_iter().map(|(_, e)| e).collect()
}

/// Checks ids and names of entries already sorted by name.
fn validate(sorted: &[&Entry<'_>]) -> Result<(), MaglevError> {
    if let Some(e) = sorted.iter().find(|e| e.id == NO_BACKEND) {
        return Err(MaglevError::ZeroId(e.name.to_owned()));
    }
    if let Some(w) = sorted.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(MaglevError::DuplicateName(w[0].name.to_owned()));
    }
    // (id, name index) in one integer: among equal ids, name order, so the error names
    // are deterministic.
    let mut by_id: Vec<u128> = sorted
        .iter()
        .enumerate()
        .map(|(i, e)| u128::from(e.id) << 64 | i as u128)
        .collect();
    by_id.sort_unstable();
    if let Some(w) = by_id.windows(2).find(|w| w[0] >> 64 == w[1] >> 64) {
        let (first, second) = (sorted[w[0] as u64 as usize], sorted[w[1] as u64 as usize]);
        return Err(MaglevError::DuplicateId {
            id: first.id,
            first: first.name.to_owned(),
            second: second.name.to_owned(),
        });
    }
    Ok(())
}

/// Exact slot counts by largest remainder: `⌊M·wᵢ/W⌋`, plus one for the `M − Σ⌊…⌋`
/// backends with the largest `M·wᵢ mod W` (ties broken by name order, i.e. index).
fn quotas(active: &[&Entry<'_>], size: u32) -> Vec<u32> {
    let m = u64::from(size);
    if active.iter().all(|e| e.weight == active[0].weight) {
        // Equal weights, equal remainders: the first `M mod N` in name order get one more.
        let n = active.len() as u64;
        // At most M, so it fits a u32.
        let (q, left) = ((m / n) as u32, (m % n) as usize);
        return (0..active.len()).map(|i| q + u32::from(i < left)).collect();
    }
    let total: u64 = active.iter().map(|e| u64::from(e.weight)).sum();
    let mut quotas = Vec::with_capacity(active.len());
    // (largest remainder first, then name order) as one integer per entry.
    let mut order: Vec<u128> = Vec::with_capacity(active.len());
    for (i, e) in active.iter().enumerate() {
        // M < 2³² and w < 2³², so M·w < 2⁶⁴; the quotient is at most M, so it fits a u32.
        let share = m * u64::from(e.weight);
        quotas.push((share / total) as u32);
        order.push(u128::from(u64::MAX - share % total) << 64 | i as u128);
    }
    let given: u64 = quotas.iter().map(|&q| u64::from(q)).sum();
    // Each floor loses less than one slot, so fewer than `active.len()` are left over.
    let left = (m - given) as usize;
    if left > 0 {
        // The `left` first in that order (all keys differ), in any order.
        order.select_nth_unstable(left - 1);
        for &key in &order[..left] {
            quotas[key as u64 as usize] += 1;
        }
    }
    quotas
}

/// The weighted backends that get at least one slot, in name order: their walkers, weights
/// and quotas; and the largest weight of all weighted backends (the credit a claim costs;
/// a backend whose quota is 0 may hold it).
struct Plan {
    walkers: Vec<Walker>,
    weights: Vec<u32>,
    quotas: Vec<u32>,
    max_weight: u32,
}

impl Plan {
    fn new(active: &[&Entry<'_>], size: u32, seed: u32) -> Self {
        let quotas = quotas(active, size);
        let max_weight = active.iter().map(|e| e.weight).max().unwrap_or(1);
        let mut plan = Plan {
            walkers: Vec::with_capacity(active.len()),
            weights: Vec::with_capacity(active.len()),
            quotas: Vec::with_capacity(active.len()),
            max_weight,
        };
        for (e, quota) in active.iter().zip(quotas) {
            if quota > 0 {
                plan.walkers.push(Walker::new(e, size, seed));
                plan.weights.push(e.weight);
                plan.quotas.push(quota);
            }
        }
        plan
    }
}

/// SipHash-2-4 of `data` under the 128-bit key `(k0, k1)` (the siphasher crate; pinned by
/// the reference vectors and `tables_are_pinned` in the tests).
fn siphash24(k0: u64, k1: u64, data: &[u8]) -> u64 {
    siphasher::sip::SipHasher24::new_with_keys(k0, k1).hash(data)
}

/// `(offset, skip)` of the permutation of `name` in a table of `size` slots.
fn permutation(name: &str, size: u32, seed: u32) -> (u32, u32) {
    let m = u64::from(size);
    let offset = siphash24(u64::from(seed), OFFSET_KEY, name.as_bytes()) % m;
    // `size` is a prime ≥ 2, so `m - 1 ≥ 1`.
    let skip = siphash24(u64::from(seed), SKIP_KEY, name.as_bytes()) % (m - 1) + 1;
    (offset as u32, skip as u32)
}

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
