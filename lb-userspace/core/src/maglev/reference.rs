//! The Maglev builder as it was before the speed work (commit 697b9bc), kept verbatim (less
//! the input checks and helpers that do not shape the table) as the reference the tests
//! hold the real builder to, bit for bit: balancers of different versions in one fleet
//! must compute the same table from the same config and seed. Never change what this
//! builds; it is the contract.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::hint::select_unpredictable;

use lb_common::NO_BACKEND;

use super::Entry;

/// SipHash key half that, with the seed, keys `h1` (the permutation offset).
const OFFSET_KEY: u64 = 0x736c_7569_6365_4f46; // "sluiceOF"
/// SipHash key half that, with the seed, keys `h2` (the permutation skip).
const SKIP_KEY: u64 = 0x736c_7569_6365_534b; // "sluiceSK"

/// The heap scheduler is used when the round loop would visit more than
/// `HEAP_COST · M · log₂(N)` backend-rounds: one heap operation per claim costs about as
/// much as `HEAP_COST · log₂(N)` loop visits (measured: with 1000 backends at M = 65537 the
/// two break even at ≈ 30 visits per slot).
const HEAP_COST: u64 = 3;

/// The table the builder of commit 697b9bc produced for valid input (`super::build`
/// checks the input; this assumes it valid).
pub(super) fn build(entries: &[Entry<'_>], size: u32, seed: u32) -> Vec<u32> {
    let mut sorted: Vec<&Entry<'_>> = entries.iter().collect();
    sorted.sort_unstable_by(|a, b| a.name.cmp(b.name));
    let active: Vec<&Entry<'_>> = sorted.into_iter().filter(|e| e.weight > 0).collect();
    let mut table = vec![NO_BACKEND; size as usize];
    if active.is_empty() {
        return table;
    }
    let (walkers, max_weight) = walkers(&active, size, seed);
    let scheduler = choose_scheduler(&walkers, size, max_weight);
    fill(
        &mut table,
        walkers,
        max_weight,
        scheduler,
        endgame_threshold(size),
    );
    table
}

/// Exact slot counts by largest remainder: `⌊M·wᵢ/W⌋`, plus one for the `M − Σ⌊…⌋`
/// backends with the largest `M·wᵢ mod W` (ties broken by name order, i.e. index).
fn quotas(active: &[&Entry<'_>], size: u32) -> Vec<u32> {
    let m = u64::from(size);
    let total: u64 = active.iter().map(|e| u64::from(e.weight)).sum();
    // M < 2³² and w < 2³², so M·w < 2⁶⁴; the quotient is at most M, so it fits a u32.
    let mut quotas: Vec<u32> = active
        .iter()
        .map(|e| (m * u64::from(e.weight) / total) as u32)
        .collect();
    let given: u64 = quotas.iter().map(|&q| u64::from(q)).sum();
    // Each floor loses less than one slot, so fewer than `active.len()` are left over.
    let left = (m - given) as usize;
    if left > 0 {
        let mut order: Vec<usize> = (0..active.len()).collect();
        order.sort_by_key(|&i| Reverse(m * u64::from(active[i].weight) % total));
        for &i in &order[..left] {
            quotas[i] += 1;
        }
    }
    quotas
}

/// The walkers of the weighted backends (sorted by name) that get at least one slot, and
/// the largest weight (the credit a claim costs).
fn walkers(active: &[&Entry<'_>], size: u32, seed: u32) -> (Vec<Walker>, u32) {
    let quotas = quotas(active, size);
    let max_weight = active.iter().map(|e| e.weight).max().unwrap_or(1);
    let walkers = active
        .iter()
        .zip(quotas)
        .filter(|&(_, quota)| quota > 0)
        .map(|(e, quota)| Walker::new(e, quota, size, seed))
        .collect();
    (walkers, max_weight)
}

/// Fills `table` (all `NO_BACKEND`) with the claims of `walkers`, whose quotas sum to its
/// size. The last `endgame_at` claims search the free list instead of walking.
fn fill(
    table: &mut [u32],
    walkers: Vec<Walker>,
    max_weight: u32,
    scheduler: Scheduler,
    endgame_at: u32,
) {
    let mut fill = Fill::new(table, endgame_at);
    match scheduler {
        Scheduler::Rounds => fill.by_rounds(walkers, max_weight),
        Scheduler::Heap => fill.by_heap(walkers, max_weight),
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

/// `a⁻¹ mod m` for a prime `m` and `0 < a < m` (Fermat: `a^(m−2)`).
fn inverse(a: u32, m: u64) -> u32 {
    let (mut base, mut exp, mut acc) = (u64::from(a), m - 2, 1u64);
    while exp > 0 {
        if exp & 1 == 1 {
            acc = acc * base % m;
        }
        base = base * base % m;
        exp >>= 1;
    }
    // Reduced mod `m`, which is a u32.
    acc as u32
}

/// `(offset, skip)` of the permutation of `name` in a table of `size` slots.
fn permutation(name: &str, size: u32, seed: u32) -> (u32, u32) {
    let m = u64::from(size);
    let offset = siphash24(u64::from(seed), OFFSET_KEY, name.as_bytes()) % m;
    // `size` is a prime ≥ 2, so `m - 1 ≥ 1`.
    let skip = siphash24(u64::from(seed), SKIP_KEY, name.as_bytes()) % (m - 1) + 1;
    (offset as u32, skip as u32)
}

/// One backend being placed: where its permutation walk stands and what it has left.
#[derive(Clone, Copy, Debug)]
struct Walker {
    /// Next slot of its permutation to try.
    pos: u32,
    skip: u32,
    /// `M − skip`: the slot after `p` is `p − back` if `p ≥ back`, else `p + skip`.
    back: u32,
    /// `skip⁻¹ mod M`, computed when first needed (0 until then).
    inv: u32,
    weight: u32,
    id: u32,
    /// Slots to claim in all.
    quota: u32,
    /// Slots still to claim.
    left: u32,
    /// Credit carried between rounds (round scheduler only); below `max_weight`.
    credit: u64,
}

impl Walker {
    fn new(e: &Entry<'_>, quota: u32, size: u32, seed: u32) -> Self {
        let (pos, skip) = permutation(e.name, size, seed);
        Self {
            pos,
            skip,
            back: size - skip,
            inv: 0,
            weight: e.weight,
            id: e.id,
            quota,
            left: quota,
            credit: 0,
        }
    }

    /// The round of this walker's next claim: the `k`-th is in round `⌈k·w_max/w⌉`.
    fn next_round(&self, max_weight: u32) -> u64 {
        // k ≤ M < 2³² and w_max < 2³², so the product fits.
        let k = u64::from(self.quota - self.left) + 1;
        (k * u64::from(max_weight)).div_ceil(u64::from(self.weight))
    }
}

/// Which scheduler runs the rounds; both give the same claim order, so the same table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheduler {
    Rounds,
    Heap,
}

/// The round loop visits walker `i` in every round up to its last claim, round
/// `⌈qᵢ·w_max/wᵢ⌉`; the heap does about `M·log₂ N` sift steps. Pick the cheaper.
fn choose_scheduler(walkers: &[Walker], size: u32, max_weight: u32) -> Scheduler {
    let visits = walkers.iter().fold(0u64, |acc, w| {
        // `left` is the whole quota here: q·w_max < 2⁶⁴.
        acc.saturating_add(
            (u64::from(w.left) * u64::from(max_weight)).div_ceil(u64::from(w.weight)),
        )
    });
    let log_n = u64::from(usize::BITS - walkers.len().leading_zeros());
    if visits
        <= HEAP_COST
            .saturating_mul(u64::from(size))
            .saturating_mul(log_n)
    {
        Scheduler::Rounds
    } else {
        Scheduler::Heap
    }
}

/// The table being filled: first by walking permutations over an occupancy bitmap, then,
/// for the last few free slots, by searching the list of them (the "endgame").
struct Fill<'t> {
    table: &'t mut [u32],
    /// Bit `p` set: slot `p` is taken (kept up to date until the endgame). Its length is a
    /// power of two; the bits past `M` stay clear.
    taken: Vec<u64>,
    /// Claims left before the endgame; 0 once in it.
    walks_left: u32,
    /// In the endgame: the free slots, in no particular order. Empty before.
    free: Vec<u32>,
}

impl<'t> Fill<'t> {
    fn new(table: &'t mut [u32], endgame_at: u32) -> Self {
        let walks_left = (table.len() as u32).saturating_sub(endgame_at);
        let mut fill = Fill {
            taken: vec![0; table.len().div_ceil(64).next_power_of_two()],
            table,
            walks_left,
            free: Vec::new(),
        };
        if walks_left == 0 {
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
    }

    /// Walker `w` claims the first free slot of its permutation from its current position on.
    #[inline(always)]
    fn claim(&mut self, w: &mut Walker) {
        let pos = if self.walks_left > 0 {
            let pos = self.walk(w);
            self.walks_left -= 1;
            if self.walks_left == 0 {
                self.enter_endgame();
            }
            pos
        } else {
            self.search(w)
        };
        self.table[pos as usize] = w.id;
        w.pos = add_mod(pos, w.back, self.table.len() as u32);
        w.left -= 1;
    }

    /// Walks the permutation probing the bitmap: `M/free` probes on average.
    #[inline(always)]
    fn walk(&mut self, w: &Walker) -> u32 {
        let size = self.table.len() as u32;
        // The bitmap's length is a power of two, so masking the index proves it in bounds
        // (one `and` instead of a compare and branch per probe).
        let mask = self.taken.len() - 1;
        let taken = &mut self.taken[..=mask];
        let mut pos = w.pos;
        while (taken[(pos / 64) as usize & mask] >> (pos % 64)) & 1 != 0 {
            pos = add_mod(pos, w.back, size);
        }
        taken[(pos / 64) as usize & mask] |= 1 << (pos % 64);
        pos
    }

    /// The free slot that comes first in `w`'s permutation from `w.pos`: the one with the
    /// fewest steps `(f − pos)·skip⁻¹ mod M`, all different since the permutation is one.
    fn search(&mut self, w: &mut Walker) -> u32 {
        let m = u64::from(self.table.len() as u32);
        if w.inv == 0 {
            w.inv = inverse(w.skip, m);
        }
        let (pos, inv) = (u64::from(w.pos), u64::from(w.inv));
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

    /// Round by round: every walker, in name order, earns its weight in credit and claims
    /// a slot if it has `max_weight` of it (at most one per round, as no weight exceeds
    /// `max_weight`). Walkers whose quota is used up leave at the end of the round.
    fn by_rounds(&mut self, mut walkers: Vec<Walker>, max_weight: u32) {
        // Equal weights: everyone claims in every round (the original Maglev).
        let uniform = walkers.iter().all(|w| w.weight == max_weight);
        let max_weight = u64::from(max_weight);
        // Otherwise who claims in a round is decided first, without a branch: whether a
        // walker claims is close to a coin toss that a branch would often mispredict.
        let mut claimants: Vec<usize> = if uniform {
            Vec::new()
        } else {
            vec![0; walkers.len()]
        };
        while !walkers.is_empty() {
            let mut finished = false;
            if uniform {
                for w in &mut walkers {
                    self.claim(w);
                    finished |= w.left == 0;
                }
            } else {
                let mut count = 0;
                for (i, w) in walkers.iter_mut().enumerate() {
                    w.credit += u64::from(w.weight);
                    let claims = w.credit >= max_weight;
                    w.credit -= max_weight * u64::from(claims);
                    claimants[count] = i;
                    count += usize::from(claims);
                }
                for &i in &claimants[..count] {
                    let w = &mut walkers[i];
                    self.claim(w);
                    finished |= w.left == 0;
                }
            }
            if finished {
                walkers.retain(|w| w.left > 0);
            }
        }
    }

    /// The same claim order as [`Fill::by_rounds`] from a min-heap of
    /// `(next claim round, name index)`: by round, and within a round in name order.
    fn by_heap(&mut self, mut walkers: Vec<Walker>, max_weight: u32) {
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = walkers
            .iter()
            .enumerate()
            .map(|(i, w)| Reverse((w.next_round(max_weight), i)))
            .collect();
        while let Some(mut top) = heap.peek_mut() {
            let i = top.0.1;
            let w = &mut walkers[i];
            self.claim(w);
            if w.left == 0 {
                PeekMut::pop(top);
            } else {
                *top = Reverse((w.next_round(max_weight), i));
            }
        }
    }
}
