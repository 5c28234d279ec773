//! Filling a Maglev table: the claim order (listed, or from a heap), the permutation walks
//! over an occupancy bitmap, and the endgame over the free list (the module documentation
//! of [`super`], "Speed", says why each is there). What is filled is decided in
//! [`super`]: the quotas and the [`Plan`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::hint::select_unpredictable;

use super::{Entry, Plan, permutation};

/// Fills `table` (all `NO_BACKEND`) with the claims of the plan's walkers, whose quotas sum
/// to its size, in the order `scheduler` gives. The last `endgame_at` claims search the
/// free list instead of walking.
pub(super) fn fill(table: &mut [u32], plan: Plan, scheduler: Scheduler, endgame_at: u32) {
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
pub(super) fn endgame_threshold(size: u32) -> u32 {
    size.isqrt()
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
pub(super) fn inverse(a: u32, m: u32) -> u32 {
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

/// One backend being placed: where its permutation walk stands.
#[derive(Clone, Copy, Debug)]
pub(super) struct Walker {
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
    pub(super) fn new(e: &Entry<'_>, size: u32, seed: u32) -> Self {
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
pub(super) enum Scheduler {
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
pub(super) struct ClaimOrder {
    period: Vec<u32>,
    periods: u32,
    tail: Vec<u32>,
}

impl ClaimOrder {
    /// `None` if the tail would span more than `M` rounds (weights skewed so much that the
    /// light backends' rounds are mostly empty: the heap is cheaper).
    pub(super) fn new(plan: &Plan, size: u32) -> Option<Self> {
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
pub(super) fn choose_scheduler(plan: &Plan, size: u32) -> Scheduler {
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
