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

/// Takes between two reads of the clock, at most (see [`take_lazily`]).
const UNTIMED_TAKES: u32 = 64;

/// [`take`], reading the clock (`now`, a helper call) only when the bucket has no whole
/// token left or every [`UNTIMED_TAKES`] takes: a take with credit left spends it without
/// knowing the time (the helper call cost about 20 ns a new flow on the benchmark
/// machine). The credit that time brings in meanwhile is added at the next read, so the
/// rate is the same; only the one-second cap is applied late: after a full, idle bucket at
/// most `UNTIMED_TAKES` tokens more pass than [`take`] would let through.
#[inline(always)]
pub fn take_lazily(
    credit_ns: &mut u64,
    last_ns: &mut u64,
    rate: &mut u32,
    untimed: &mut u32,
    per_sec: u32,
    now: impl FnOnce() -> u64,
) -> bool {
    let cost = NS_PER_SEC / u64::from(per_sec);
    if *rate == per_sec && *untimed < UNTIMED_TAKES && *credit_ns >= cost {
        *untimed += 1;
        *credit_ns -= cost;
        return true;
    }
    *untimed = 0;
    take(credit_ns, last_ns, rate, per_sec, now())
}
