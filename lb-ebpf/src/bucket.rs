//! The per-CPU token bucket shared by the ICMP too-big limit (`IcmpLimit`) and the flood
//! guard (`FloodGuard`): time credit in ns, one token costs `1e9 / per_sec` ns, at most one
//! second of credit kept; a changed rate starts a full bucket.

const NS_PER_SEC: u64 = 1_000_000_000;

/// Take one token at `now` (ns) from the bucket made of `credit_ns`, `last_ns` and the
/// `rate` it was filled under, for a rate of `per_sec` (> 0). Whether there was one.
#[inline(always)]
pub fn take(
    credit_ns: &mut u64,
    last_ns: &mut u64,
    rate: &mut u32,
    per_sec: u32,
    now: u64,
) -> bool {
    let cost = NS_PER_SEC / u64::from(per_sec);
    let credit = if *rate == per_sec {
        let c = *credit_ns + now.saturating_sub(*last_ns);
        if c > NS_PER_SEC { NS_PER_SEC } else { c }
    } else {
        // A new rate (or the first token): a full bucket.
        *rate = per_sec;
        NS_PER_SEC
    };
    *last_ns = now;
    if credit < cost {
        *credit_ns = credit;
        return false;
    }
    *credit_ns = credit - cost;
    true
}
