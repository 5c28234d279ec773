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

use std::cmp::Reverse;
use std::collections::binary_heap::PeekMut;
use std::collections::{BTreeMap, BinaryHeap};
use std::hint::select_unpredictable;

use lb_common::NO_BACKEND;

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

/// Fills `table` (all `NO_BACKEND`) with the claims of the plan's walkers, whose quotas sum
/// to its size, in the order `scheduler` gives. The last `endgame_at` claims search the
/// free list instead of walking.
fn fill(table: &mut [u32], plan: Plan, scheduler: Scheduler, endgame_at: u32) {
    let mut fill = Fill::new(table, plan.walkers, endgame_at);
    match scheduler {
        Scheduler::Order(order) => fill.by_order(&order),
        Scheduler::Heap => fill.by_heap(&plan.weights, &plan.quotas, plan.max_weight),
    }
}

/// When to switch from walking to searching the free list: at `√M` free slots, where a
/// walk costs about `M/free` probes and a search `free` multiply-and-reduce steps of about
/// the same cost. At M = 65537 this saves a third (10 backends) to a half (1000) of all
/// probes.
fn endgame_threshold(size: u32) -> u32 {
    size.isqrt()
}

/// SipHash-2-4 of `data` under the 128-bit key `(k0, k1)` (the siphasher crate; pinned by
/// the reference vectors and `tables_are_pinned` in the tests).
fn siphash24(k0: u64, k1: u64, data: &[u8]) -> u64 {
    siphasher::sip::SipHasher24::new_with_keys(k0, k1).hash(data)
}

/// `(a + m − back) mod m` for `a < m` and `0 < back ≤ m`, without overflow for any `m`, and
/// without a branch, which would mispredict on every other step of a walk.
#[inline(always)]
fn add_mod(a: u32, back: u32, m: u32) -> u32 {
    // If `a < back`, `a + (m − back) < m`; otherwise the wrapped sum is not selected.
    select_unpredictable(a >= back, a.wrapping_sub(back), a.wrapping_add(m - back))
}

/// `add_mod(a, back, m)` with `skip = m − back` given.
#[inline(always)]
fn step(a: u32, back: u32, skip: u32) -> u32 {
    select_unpredictable(a >= back, a.wrapping_sub(back), a.wrapping_add(skip))
}

/// `a⁻¹ mod m` for a prime `m` and `0 < a < m`, by the extended Euclidean algorithm (about
/// `0.84·ln m` divisions, a third of what Fermat's `a^(m−2)` takes).
fn inverse(a: u32, m: u32) -> u32 {
    // Invariants: `r0 ≡ t0·a` and `r1 ≡ t1·a (mod m)`; |t| ≤ m fits an i64.
    let (mut r0, mut r1) = (m, a);
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - i64::from(q) * t1);
    }
    // `gcd(a, m) = r0 = 1` since `m` is a prime; `t0` is in `(−m, m)`.
    t0.rem_euclid(i64::from(m)) as u32
}

/// `(offset, skip)` of the permutation of `name` in a table of `size` slots.
fn permutation(name: &str, size: u32, seed: u32) -> (u32, u32) {
    let m = u64::from(size);
    let offset = siphash24(u64::from(seed), OFFSET_KEY, name.as_bytes()) % m;
    // `size` is a prime ≥ 2, so `m - 1 ≥ 1`.
    let skip = siphash24(u64::from(seed), SKIP_KEY, name.as_bytes()) % (m - 1) + 1;
    (offset as u32, skip as u32)
}

/// One backend being placed: where its permutation walk stands.
#[derive(Clone, Copy, Debug)]
struct Walker {
    /// Next slot of its permutation to try.
    pos: u32,
    /// `M − skip`: the slot after `p` is `p − back` if `p ≥ back`, else `p + skip`.
    back: u32,
    /// `M − (2·skip mod M)`: the same for two steps.
    back2: u32,
    /// The value written into the slots it claims.
    id: u32,
}

impl Walker {
    fn new(e: &Entry<'_>, size: u32, seed: u32) -> Self {
        let (pos, skip) = permutation(e.name, size, seed);
        let skip2 = add_mod(skip, size - skip, size);
        Self {
            pos,
            back: size - skip,
            back2: size - skip2,
            id: e.id,
        }
    }
}

/// The order of the claims. Walker `i` makes its `k`-th claim in round `⌈k·w_max/wᵢ⌉`
/// (as credit rounds give it) and, within a round, walkers claim in name order.
#[derive(Debug, PartialEq, Eq)]
enum Scheduler {
    /// Precomputed, as lists of walker indices.
    Order(ClaimOrder),
    /// One claim at a time from a min-heap of `(next claim round, name index)`, when the
    /// rounds are too many to list (weights skewed by more than `M`).
    Heap,
}

/// The claim order as `periods` repetitions of `period`, then `tail`. While every walker
/// has at least `wᵢ` claims left, every `w_max` rounds hold exactly `wᵢ` claims of walker
/// `i`, in the same order (walker `i` claims in round `r` iff `⌊r·wᵢ/w_max⌋` steps up,
/// which repeats with period `w_max`); the tail is what is left when one walker has fewer.
#[derive(Debug, PartialEq, Eq)]
struct ClaimOrder {
    period: Vec<u32>,
    periods: u32,
    tail: Vec<u32>,
}

impl ClaimOrder {
    /// `None` if the tail would span more than `M` rounds (weights skewed so much that the
    /// light backends' rounds are mostly empty: the heap is cheaper).
    fn new(plan: &Plan, size: u32) -> Option<Self> {
        let (w, q) = (&plan.weights, &plan.quotas);
        let paces: Vec<Pace> = w.iter().map(|&w| Pace::new(w, plan.max_weight)).collect();
        let periods = w.iter().zip(q).map(|(&w, &q)| q / w).min().unwrap_or(0);
        let period = if periods > 0 {
            by_round(&paces, w, u64::from(size))?
        } else {
            Vec::new()
        };
        // `periods·wᵢ ≤ qᵢ` by the choice of `periods`.
        let left: Vec<u32> = w.iter().zip(q).map(|(&w, &q)| q - periods * w).collect();
        let tail = by_round(&paces, &left, u64::from(size))?;
        Some(ClaimOrder {
            period,
            periods,
            tail,
        })
    }
}

/// The claims of walkers that make `counts[i]` claims each, from round 1 (credit 0), in
/// claim order: by round, then by index. A counting sort by round; `None` if a claim comes
/// after round `max_rounds`.
fn by_round(paces: &[Pace], counts: &[u32], max_rounds: u64) -> Option<Vec<u32>> {
    let rounds = paces
        .iter()
        .zip(counts)
        .map(|(pace, &n)| pace.round(n))
        .max()
        .unwrap_or(0);
    if rounds > max_rounds {
        return None;
    }
    // `start[r]`: claims in round `r` (1-based), then where round `r` begins in `order`.
    // `rounds ≤ max_rounds ≤ M` fits a usize.
    let mut start = vec![0u32; rounds as usize + 1];
    for (pace, &n) in paces.iter().zip(counts) {
        pace.rounds(n, |r| start[r as usize] += 1);
    }
    let mut total = 0;
    for s in &mut start {
        let claims = *s;
        *s = total;
        total += claims;
    }
    let mut order = vec![0u32; total as usize];
    for (i, (pace, &n)) in paces.iter().zip(counts).enumerate() {
        // All rounds are within `start` now.
        pace.rounds(n, |r| {
            let s = &mut start[r as usize];
            order[*s as usize] = i as u32;
            *s += 1;
        });
    }
    Some(order)
}

/// The rounds of a walker's claims: its `k`-th claim is in round `⌈k·w_max/w⌉`, computed
/// step by step from `w_max = whole·w + part` without a division per claim.
#[derive(Clone, Copy, Debug)]
struct Pace {
    w: u32,
    whole: u32,
    part: u32,
}

impl Pace {
    fn new(w: u32, max_weight: u32) -> Self {
        Pace {
            w,
            whole: max_weight / w,
            part: max_weight % w,
        }
    }

    /// The round of the `k`-th claim (0 for `k` = 0).
    fn round(self, k: u32) -> u64 {
        // k ≤ M < 2³² and w_max < 2³², so the product fits.
        let max_weight = u64::from(self.whole) * u64::from(self.w) + u64::from(self.part);
        (u64::from(k) * max_weight).div_ceil(u64::from(self.w))
    }

    /// Calls `f` with the rounds of the first `n` claims, in order.
    #[inline(always)]
    fn rounds(self, n: u32, mut f: impl FnMut(u64)) {
        let (w, whole, part) = (
            u64::from(self.w),
            u64::from(self.whole),
            u64::from(self.part),
        );
        if part == 0 {
            // `w` divides `w_max` (equal weights: one claim a round).
            for k in 1..=u64::from(n) {
                f(k * whole);
            }
            return;
        }
        // After `k` steps: `round = ⌊k·w_max/w⌋`, `rest = k·w_max mod w`.
        let (mut round, mut rest) = (0u64, 0u64);
        for _ in 0..n {
            round += whole;
            rest += part;
            if rest >= w {
                rest -= w;
                round += 1;
            }
            f(round + u64::from(rest != 0));
        }
    }
}

/// The precomputed order when the rounds can be listed, else the heap.
fn choose_scheduler(plan: &Plan, size: u32) -> Scheduler {
    ClaimOrder::new(plan, size).map_or(Scheduler::Heap, Scheduler::Order)
}

/// How a walk probes its permutation: so many slots at a time, branch-free, or (`Long`)
/// two at a time with a branch after each. The fuller the table, the longer the walks; a
/// chunk a few times the expected walk seldom comes up empty, so its one branch is well
/// predicted, while a loop that branches on every probe mispredicts about once a walk.
#[derive(Clone, Copy, Debug)]
enum Probe {
    Two,
    Four,
    Eight,
    Long,
}

/// The table being filled: first by walking permutations over an occupancy bitmap, then,
/// for the last few free slots, by searching the list of them (the "endgame").
struct Fill<'t> {
    table: &'t mut [u32],
    walkers: Vec<Walker>,
    /// Bit `p` set: slot `p` is taken (kept up to date until the endgame). Its length is a
    /// power of two; the bits past `M` stay clear.
    taken: Vec<u64>,
    /// Claims made so far.
    claimed: u32,
    /// The claims before the endgame, in phases `(claims at its end, probe)`: while more
    /// than `M/2` slots are free, `M/4`, `M/16`, then up to the endgame.
    phases: [(u32, Probe); 4],
    /// In the endgame: the free slots, in no particular order. Empty before.
    free: Vec<u32>,
    /// In the endgame: `skip⁻¹ mod M` of each walker, computed when first needed (0 until
    /// then).
    inv: Vec<u32>,
}

impl<'t> Fill<'t> {
    fn new(table: &'t mut [u32], walkers: Vec<Walker>, endgame_at: u32) -> Self {
        let size = table.len() as u32;
        let walks = size.saturating_sub(endgame_at);
        let phase = |free_left: u32, probe| ((size - free_left).min(walks), probe);
        let mut fill = Fill {
            taken: vec![0; table.len().div_ceil(64).next_power_of_two()],
            table,
            walkers,
            claimed: 0,
            phases: [
                phase(size / 2, Probe::Two),
                phase(size / 4, Probe::Four),
                phase(size / 16, Probe::Eight),
                (walks, Probe::Long),
            ],
            free: Vec::new(),
            inv: Vec::new(),
        };
        if walks == 0 {
            fill.enter_endgame();
        }
        fill
    }

    fn enter_endgame(&mut self) {
        let size = self.table.len() as u32;
        for (i, &word) in self.taken.iter().enumerate() {
            let mut free = !word;
            while free != 0 {
                let p = i as u32 * 64 + free.trailing_zeros();
                if p >= size {
                    break;
                }
                self.free.push(p);
                free &= free - 1;
            }
        }
        self.inv = vec![0; self.walkers.len()];
    }

    /// The walkers `run` claim, in order, each the first free slot of its permutation from
    /// its position on.
    fn claim(&mut self, mut run: &[u32]) {
        let walks = self.phases[3].0;
        while !run.is_empty() {
            if self.claimed >= walks {
                for &i in run {
                    let pos = self.search(i as usize);
                    let w = &mut self.walkers[i as usize];
                    self.table[pos as usize] = w.id;
                    w.pos = add_mod(pos, w.back, self.table.len() as u32);
                }
                return;
            }
            // The phase the next claim is in; the last one ends where the endgame begins.
            let (end, probe) = *self
                .phases
                .iter()
                .find(|&&(end, _)| end > self.claimed)
                .unwrap_or(&self.phases[3]);
            let (now, rest) = run.split_at(run.len().min((end - self.claimed) as usize));
            match probe {
                Probe::Two => self.walk::<2>(now),
                Probe::Four => self.walk::<4>(now),
                Probe::Eight => self.walk::<8>(now),
                Probe::Long => self.walk::<0>(now),
            }
            // At most `end − claimed` claims.
            self.claimed += now.len() as u32;
            if self.claimed == walks {
                self.enter_endgame();
            }
            run = rest;
        }
    }

    /// The claims of `run` (all before the endgame), each walking its permutation over the
    /// bitmap: `M/free` probes on average, `K` at a time branch-free (`K` = 0: two at a
    /// time, with a branch after each). The state is in locals so that it stays in
    /// registers.
    #[inline(always)]
    fn walk<const K: usize>(&mut self, run: &[u32]) {
        let size = self.table.len() as u32;
        // The bitmap's length is a power of two, so masking the index proves it in bounds
        // (one `and` instead of a compare and branch per probe).
        let mask = self.taken.len() - 1;
        let taken = &mut self.taken[..=mask];
        let free_at =
            |taken: &[u64], p: u32| (taken[(p / 64) as usize & mask] >> (p % 64)) & 1 == 0;
        let table = &mut *self.table;
        let walkers = &mut self.walkers[..];
        // The last claimant and where its walk goes on. A walker that claims many times in
        // a row (a heavy one among light ones) mostly finds its next slot free, whatever
        // the fill (the others have taken few of the slots ahead of it): its walks take
        // the plain loop, from a register rather than from the store its previous claim
        // just made.
        let (mut last, mut next) = (u32::MAX, 0);
        for &i in run {
            let w = &mut walkers[i as usize];
            let (back, back2) = (w.back, w.back2);
            let (skip, skip2) = (size - back, size - back2);
            // Two chains of probes: `p` steps by `2·skip`, and each odd probe is one step
            // on from it, which halves the latency of the walk.
            let mut p = w.pos;
            let pos = if i == last {
                p = next;
                while !free_at(taken, p) {
                    p = step(p, back, skip);
                }
                p
            } else if K == 0 {
                loop {
                    if free_at(taken, p) {
                        break p;
                    }
                    let q = step(p, back, skip);
                    if free_at(taken, q) {
                        break q;
                    }
                    p = step(p, back2, skip2);
                }
            } else {
                loop {
                    let mut at = [0; K];
                    for k in (0..K).step_by(2) {
                        at[k] = p;
                        at[k + 1] = step(p, back, skip);
                        p = step(p, back2, skip2);
                    }
                    // The first free one, branch-free (`u32::MAX` is not a slot: `M < 2³²`).
                    let mut found = u32::MAX;
                    for &a in at.iter().rev() {
                        found = select_unpredictable(free_at(taken, a), a, found);
                    }
                    if found != u32::MAX {
                        break found;
                    }
                }
            };
            taken[(pos / 64) as usize & mask] |= 1 << (pos % 64);
            table[pos as usize] = w.id;
            (last, next) = (i, step(pos, back, skip));
            w.pos = next;
        }
    }

    /// The free slot that comes first in walker `i`'s permutation from its position: the
    /// one with the fewest steps `(f − pos)·skip⁻¹ mod M`, all different since the
    /// permutation is one.
    fn search(&mut self, i: usize) -> u32 {
        let size = self.table.len() as u32;
        let m = u64::from(size);
        if self.inv[i] == 0 {
            self.inv[i] = inverse(size - self.walkers[i].back, size);
        }
        let (pos, inv) = (u64::from(self.walkers[i].pos), u64::from(self.inv[i]));
        // Barrett reduction of `x < m²`: `q = ⌊x·r/2⁶⁴⌋` with `r = ⌊(2⁶⁴ − 1)/m⌋` is the
        // quotient or one less, so one conditional subtraction finishes it.
        let r = u64::MAX / m;
        let mut best = u64::MAX;
        for (i, &f) in self.free.iter().enumerate() {
            // `(f − pos) mod m` and `t mod m` for `t < 2m`, branch-free: `min` keeps the
            // value that did not wrap around.
            let d = u64::from(f).wrapping_sub(pos);
            let diff = d.min(d.wrapping_add(m));
            let x = diff * inv;
            let t = x - ((u128::from(x) * u128::from(r)) >> 64) as u64 * m;
            let steps = t.min(t.wrapping_sub(m));
            // Steps in the high half, index in the low: the minimum is unique.
            best = best.min(steps << 32 | i as u64);
        }
        self.free.swap_remove((best & 0xffff_ffff) as usize)
    }

    /// The claims in a precomputed order.
    fn by_order(&mut self, order: &ClaimOrder) {
        // A short period (few backends) repeated into one run of a few hundred claims:
        // each run costs a phase lookup, once per 10 claims for 10 equal backends.
        let periods = order.periods as usize;
        let rep = 256usize
            .div_ceil(order.period.len().max(1))
            .clamp(1, periods.max(1));
        let run = order.period.repeat(rep);
        for _ in 0..periods / rep {
            self.claim(&run);
        }
        for _ in 0..periods % rep {
            self.claim(&order.period);
        }
        self.claim(&order.tail);
    }

    /// The same claim order from a min-heap of `(next claim round, name index)`: by round,
    /// and within a round in name order.
    fn by_heap(&mut self, weights: &[u32], quotas: &[u32], max_weight: u32) {
        // The round of the `k`-th claim: `⌈k·w_max/w⌉` (k ≤ M < 2³², w_max < 2³²).
        let round = |k: u32, w: u32| (u64::from(k) * u64::from(max_weight)).div_ceil(u64::from(w));
        let mut claimed = vec![0u32; weights.len()];
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Reverse((round(1, w), i)))
            .collect();
        // The order does not depend on where the claims land, so it is taken from the heap
        // a few hundred claims at a time and claimed as a run.
        let mut run: Vec<u32> = Vec::with_capacity(256);
        while let Some(mut top) = heap.peek_mut() {
            let i = top.0.1;
            // `i` indexes the walkers, whose number fits a u32 as M does.
            run.push(i as u32);
            claimed[i] += 1;
            if claimed[i] == quotas[i] {
                PeekMut::pop(top);
            } else {
                *top = Reverse((round(claimed[i] + 1, weights[i]), i));
            }
            if run.len() == run.capacity() {
                self.claim(&run);
                run.clear();
            }
        }
        self.claim(&run);
    }
}

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
