//! Next hop and MACs: from the daemon's `NEXT_HOPS` slot of the backend (resolved over
//! rtnetlink, rewritten on every route, link or neighbour change), else from the kernel's
//! FIB and neighbour tables (`bpf_fib_lookup`, counted in `FIB_FALLBACKS`).

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup as FibParams,
    },
    helpers::generated::bpf_fib_lookup,
    programs::XdpContext,
};
use lb_common::{FAMILY_V6, reason};

use crate::{
    maps::{FIB_FALLBACKS, FIB_SCRATCH, NEXT_HOPS},
    parse::{Mac, mac_at},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Where the FIB says to send a packet from `src` to `dst`.
pub struct NextHop {
    pub ifindex: u32,
    pub smac: Mac,
    pub dmac: Mac,
}

impl NextHop {
    /// `XDP_TX` when the next hop is behind the interface the frame came in on.
    #[inline(always)]
    pub fn verdict(&self, ctx: &XdpContext) -> super::Verdict {
        if self.ifindex == ctx.ingress_ifindex() as u32 {
            super::Verdict::Tx
        } else {
            super::Verdict::Redirect(self.ifindex)
        }
    }
}

/// The next hop of backend `id` for a packet of `tot_len` bytes: its `NEXT_HOPS` slot when
/// the daemon resolved one (a packet above its MTU: `DROP_TOO_BIG`, [`mtu`] says the MTU),
/// else [`lookup`] (`src`, `dst`: as there).
#[inline(always)]
pub fn next_hop(
    ctx: &XdpContext,
    id: u32,
    family: u8,
    src: &[u32; 4],
    dst: &[u32; 4],
    tot_len: u16,
) -> Result<NextHop, u32> {
    if let Some(h) = NEXT_HOPS.get(id)
        && h.ifindex != 0
    {
        if tot_len > h.mtu {
            core::hint::cold_path();
            // Where `mtu` reads it, as the FIB would have reported it.
            let p = FIB_SCRATCH.get_ptr_mut(0).ok_or(reason::DROP_INTERNAL)?;
            // SAFETY: this CPU's scratch block; `mtu_result` is a plain integer of its union.
            unsafe { (*p).__bindgen_anon_1.mtu_result = h.mtu };
            return Err(reason::DROP_TOO_BIG);
        }
        return Ok(NextHop {
            ifindex: h.ifindex,
            // SAFETY: both MACs sit at even offsets of the (8-byte aligned) slot.
            smac: unsafe { mac_at(&h.smac) },
            // SAFETY: as above.
            dmac: unsafe { mac_at(&h.dmac) },
        });
    }
    core::hint::cold_path();
    if let Some(n) = FIB_FALLBACKS.get_ptr_mut(0) {
        // SAFETY: this CPU's counter; nothing else writes it while this program runs.
        unsafe { *n += 1 };
    }
    lookup(ctx, family, src, dst, tot_len)
}

/// Look up the route to `dst` (an IPv4 address in the first word, or IPv6) for a packet
/// of `tot_len` bytes entering on the context's interface. `Err` is the drop reason:
/// `DROP_TOO_BIG` above the egress MTU (then [`mtu`] says the MTU), `DROP_NO_NEIGH` when
/// the next hop's MAC is not resolved yet, `DROP_NO_ROUTE` for anything else (no route,
/// forwarding disabled).
#[inline(always)]
fn lookup(
    ctx: &XdpContext,
    family: u8,
    src: &[u32; 4],
    dst: &[u32; 4],
    tot_len: u16,
) -> Result<NextHop, u32> {
    // The parameter block lives in a per-CPU scratch map, not on the stack: 64 bytes at
    // each of the three inlined call sites would push the balancer past the BPF stack
    // limit, and zeroing it on the stack becomes a `memset` call (a BPF-to-BPF call whose
    // frame older verifiers add to ours).
    let p = FIB_SCRATCH.get_ptr_mut(0).ok_or(reason::DROP_INTERNAL)?;
    let w = p.cast::<u64>();
    for i in 0..size_of::<FibParams>() / 8 {
        // SAFETY: a per-CPU map value of `size_of::<FibParams>()` bytes, 8-byte aligned;
        // volatile so the stores are not merged into a `memset` call.
        unsafe { core::ptr::write_volatile(w.add(i), 0) };
    }
    // SAFETY: `p` is this CPU's scratch block, zeroed above (valid for this plain C struct
    // of integers); nothing else uses it while this program runs.
    let p = unsafe { &mut *p };
    p.ifindex = ctx.ingress_ifindex() as u32;
    p.__bindgen_anon_1.tot_len = tot_len;
    if family == FAMILY_V6 {
        p.family = AF_INET6;
        // Word by word and volatile, like the zeroing above: copying DSR's all-zero source
        // (a constant) would otherwise become a `memset` call.
        let (s6, d6) = (
            core::ptr::addr_of_mut!(p.__bindgen_anon_3.ipv6_src).cast::<u32>(),
            core::ptr::addr_of_mut!(p.__bindgen_anon_4.ipv6_dst).cast::<u32>(),
        );
        for i in 0..4 {
            // SAFETY: `i` < 4, inside both arrays.
            unsafe {
                core::ptr::write_volatile(s6.add(i), src[i]);
                core::ptr::write_volatile(d6.add(i), dst[i]);
            }
        }
    } else {
        p.family = AF_INET;
        p.__bindgen_anon_3.ipv4_src = src[0];
        p.__bindgen_anon_4.ipv4_dst = dst[0];
    }
    // SAFETY: `p` is a valid, fully initialised parameter block of the size we pass.
    let ret = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            core::ptr::from_mut(p),
            size_of::<FibParams>() as i32,
            0,
        )
    };
    if ret == i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        Ok(NextHop {
            ifindex: p.ifindex,
            // SAFETY: both MACs sit at even offsets (52, 58) of the (8-byte aligned) block.
            smac: unsafe { mac_at(&p.smac) },
            // SAFETY: as above.
            dmac: unsafe { mac_at(&p.dmac) },
        })
    } else if ret == i64::from(BPF_FIB_LKUP_RET_FRAG_NEEDED) {
        Err(reason::DROP_TOO_BIG)
    } else if ret == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        Err(reason::DROP_NO_NEIGH)
    } else {
        Err(reason::DROP_NO_ROUTE)
    }
}

/// The egress MTU the last [`lookup`] on this CPU reported with `DROP_TOO_BIG` (the
/// kernel's `mtu_result`, since Linux 5.12), or 0.
#[inline(always)]
pub fn mtu() -> u16 {
    match FIB_SCRATCH.get_ptr(0) {
        // SAFETY: this CPU's scratch block, written by the last lookup of this program run;
        // `mtu_result` shares its union with `tot_len` (plain integers).
        Some(p) => unsafe { (*p).__bindgen_anon_1.mtu_result },
        None => 0,
    }
}
