//! The sequence schedulers (`rr`, `wrr`, `lc`, `wlc`): the order in which new flows of a VIP
//! take its backends. The kernel only walks the sequence (one step of a shared cursor per
//! new flow, `lb_common::SCHED_SEQUENCE`); everything that makes the order right is here,
//! pure and tested.
//!
//! - `rr`: every eligible backend once, in configuration order.
//! - `wrr`: the smooth weighted round robin that nginx uses: each step every backend gains
//!   its weight, the one with the most credit is chosen and pays the total. Weights 5:1:1
//!   give `a a b a c a a`, not `a a a a a b c`.
//! - `lc` / `wlc`: least connections, as IPVS defines them (fewest active connections; for
//!   wlc divided by the weight), planned ahead: the daemon knows each backend's active
//!   connections (kernel counters) and simulates the next `horizon` new flows greedily, each
//!   going to the backend that would have the fewest at that moment. The kernel then follows
//!   that plan until the daemon recomputes it (every `daemon.least_conn_refresh_ms`). If more
//!   flows arrive than planned, the sequence repeats, which keeps spreading them in the
//!   proportions of the plan.
//!
//! A backend with weight 0 (quiesced, draining) never appears; an empty sequence means the
//! VIP has no backend for new flows.

use std::{cmp::Reverse, collections::BinaryHeap};

/// One backend as a sequence scheduler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// What the sequence holds for this backend (its slot id).
    pub id: u32,
    /// 0 = never chosen.
    pub weight: u32,
    /// Active connections now (`lc`, `wlc`).
    pub active: u64,
}

/// Which order to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    RoundRobin,
    WeightedRoundRobin,
    LeastConn,
    WeightedLeastConn,
}

/// How far ahead a least-connection plan looks, in seconds of new flows at the recent rate.
pub const LC_HORIZON_SECS: f64 = 0.5;

/// The number of new flows a least-connection plan covers: half a second of them at the
/// recent new-flow rate, and at least 8 per eligible backend.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "non-negative and rounded up; `as` saturates"
)]
pub fn lc_horizon(rate_per_s: f64, eligible: usize) -> u32 {
    (rate_per_s.max(0.0) * LC_HORIZON_SECS)
        .max(8.0 * eligible as f64)
        .ceil() as u32
}

/// The sequence for `members`, at most `capacity` long (the VIP's table size).
/// `horizon` is how many new flows the least-connection plan covers (ignored otherwise).
pub fn sequence(order: Order, members: &[Member], capacity: u32, horizon: u32) -> Vec<u32> {
    let eligible: Vec<Member> = members.iter().copied().filter(|m| m.weight > 0).collect();
    if eligible.is_empty() || capacity == 0 {
        return Vec::new();
    }
    match order {
        Order::RoundRobin => eligible
            .iter()
            .map(|m| m.id)
            .take(capacity as usize)
            .collect(),
        Order::WeightedRoundRobin => smooth_wrr(&eligible, capacity),
        Order::LeastConn => least_conn(&eligible, false, horizon.clamp(1, capacity)),
        Order::WeightedLeastConn => least_conn(&eligible, true, horizon.clamp(1, capacity)),
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// nginx's smooth weighted round robin over one period (the sum of the weights, reduced by
/// their common divisor). When the period exceeds `capacity`, the weights are scaled down
/// proportionally (each at least 1) until it fits.
fn smooth_wrr(members: &[Member], capacity: u32) -> Vec<u32> {
    let mut weights: Vec<u64> = members.iter().map(|m| u64::from(m.weight)).collect();
    let g = weights.iter().copied().fold(0, gcd).max(1);
    for w in &mut weights {
        *w /= g;
    }
    let mut total: u64 = weights.iter().sum();
    if total > u64::from(capacity) {
        let scale = u64::from(capacity) as f64 / total as f64;
        for w in &mut weights {
            *w = ((*w as f64 * scale).floor() as u64).max(1);
        }
        // Rounding each up to 1 can still overflow when there are nearly `capacity`
        // backends: trim the largest until it fits.
        total = weights.iter().sum();
        while total > u64::from(capacity) {
            if let Some(w) = weights.iter_mut().filter(|w| **w > 1).max() {
                *w -= 1;
                total -= 1;
            } else {
                break;
            }
        }
    }
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut credit = vec![0i64; members.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total.min(i64::from(capacity)) {
        for (c, w) in credit.iter_mut().zip(&weights) {
            *c += *w as i64;
        }
        // The first of the highest credits wins, as in nginx.
        let (best, _) =
            credit.iter().enumerate().fold(
                (0, i64::MIN),
                |acc, (i, c)| if *c > acc.1 { (i, *c) } else { acc },
            );
        credit[best] -= total;
        out.push(members[best].id);
    }
    out
}

/// Greedy least-connection plan for `horizon` new flows: each goes to the backend with the
/// lowest (active + planned) [/ weight]; ties go to the earlier backend.
fn least_conn(members: &[Member], weighted: bool, horizon: u32) -> Vec<u32> {
    // Order by load = conns / weight, compared exactly as conns_a * w_b < conns_b * w_a.
    #[derive(PartialEq, Eq)]
    struct Load {
        conns: u64,
        weight: u64,
        index: usize,
    }
    impl Ord for Load {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            (u128::from(self.conns) * u128::from(o.weight))
                .cmp(&(u128::from(o.conns) * u128::from(self.weight)))
                .then(self.index.cmp(&o.index))
        }
    }
    impl PartialOrd for Load {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    let mut heap: BinaryHeap<Reverse<Load>> = members
        .iter()
        .enumerate()
        .map(|(index, m)| {
            Reverse(Load {
                conns: m.active,
                weight: if weighted { u64::from(m.weight) } else { 1 },
                index,
            })
        })
        .collect();
    let mut out = Vec::with_capacity(horizon as usize);
    for _ in 0..horizon {
        let Some(Reverse(mut l)) = heap.pop() else {
            break;
        };
        out.push(members[l.index].id);
        l.conns += 1;
        heap.push(Reverse(l));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u32, weight: u32, active: u64) -> Member {
        Member { id, weight, active }
    }

    #[test]
    fn rr_is_configuration_order_without_quiesced() {
        let s = sequence(
            Order::RoundRobin,
            &[m(1, 1, 0), m(2, 0, 0), m(3, 5, 0)],
            100,
            0,
        );
        assert_eq!(s, [1, 3]);
    }

    #[test]
    fn wrr_is_smooth_like_nginx() {
        // nginx's own example: {a:5, b:1, c:1} → a a b a c a a.
        let s = sequence(
            Order::WeightedRoundRobin,
            &[m(1, 5, 0), m(2, 1, 0), m(3, 1, 0)],
            100,
            0,
        );
        assert_eq!(s, [1, 1, 2, 1, 3, 1, 1]);
        // Common divisors are removed: 2:4 is 1:2.
        let s = sequence(Order::WeightedRoundRobin, &[m(1, 2, 0), m(2, 4, 0)], 100, 0);
        assert_eq!(s, [2, 1, 2]);
    }

    #[test]
    fn wrr_fits_capacity_and_keeps_proportions() {
        let members: Vec<Member> = (1..=10).map(|i| m(i, i * 1000 + 1, 0)).collect();
        let s = sequence(Order::WeightedRoundRobin, &members, 997, 0);
        assert!(s.len() <= 997 && s.len() > 900, "{}", s.len());
        let total: f64 = members.iter().map(|x| f64::from(x.weight)).sum();
        for x in &members {
            let share = s.iter().filter(|i| **i == x.id).count() as f64 / s.len() as f64;
            let want = f64::from(x.weight) / total;
            assert!((share - want).abs() < 0.01, "{}: {share} vs {want}", x.id);
        }
    }

    #[test]
    fn lc_fills_the_emptiest_first() {
        // One backend already holds 10 long-lived connections: the next 20 new flows go
        // 10 + 10 to the two others first, then they take turns.
        let s = sequence(
            Order::LeastConn,
            &[m(1, 1, 10), m(2, 1, 0), m(3, 1, 0)],
            1000,
            26,
        );
        let count = |id| s.iter().filter(|x| **x == id).count();
        assert_eq!(&s[..4], [2, 3, 2, 3]);
        assert_eq!((count(1), count(2), count(3)), (2, 12, 12));
    }

    #[test]
    fn wlc_divides_by_weight_and_lc_ignores_it() {
        let members = [m(1, 3, 0), m(2, 1, 0)];
        let s = sequence(Order::WeightedLeastConn, &members, 1000, 8);
        assert_eq!(s.iter().filter(|x| **x == 1).count(), 6);
        let s = sequence(Order::LeastConn, &members, 1000, 8);
        assert_eq!(s.iter().filter(|x| **x == 1).count(), 4);
    }

    #[test]
    fn empty_when_nothing_is_eligible() {
        assert!(sequence(Order::WeightedLeastConn, &[m(1, 0, 0)], 10, 5).is_empty());
        assert!(sequence(Order::RoundRobin, &[], 10, 5).is_empty());
    }
}
