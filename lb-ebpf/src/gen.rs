//! The traffic generator (`sluice_gen`), run with `BPF_PROG_TEST_RUN` in live-frames mode:
//! the kernel hands it copies of one template frame, it turns each into the next flow of a
//! configured set (source port and source address from a per-CPU counter) and returns
//! `XDP_TX`, which transmits the frame on the interface the run names as ingress.
//!
//! In live-frames mode a frame may be a fresh copy of the template or one this program
//! already rewrote, so every field is written whole (never incremented) and the checksums
//! are updated from the bytes actually in the frame.

use aya_ebpf::{
    bindings::xdp_action,
    macros::map,
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use lb_common::bench::{GEN_MAX_OFFSET, GEN_TEMPLATE_LEN, GenConfig};

use crate::frame::ptr_at;

/// The generator's settings (one entry, written by `sluice gen`/`sluice bench`).
#[map]
pub static GEN_CONFIG: Array<GenConfig> = Array::with_max_entries(1, 0);

/// The template's first bytes, written back into every frame (`GenConfig::restore_len`).
#[map]
pub static GEN_TEMPLATE: Array<[u8; GEN_TEMPLATE_LEN]> = Array::with_max_entries(1, 0);

/// Packets generated on each CPU; the flow index is this modulo `GenConfig::flows`.
#[map]
pub static GEN_COUNTER: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// RFC 1624 (eqn. 3): the checksum `csum` after one 16-bit word changes from `old` to `new`.
#[inline(always)]
fn csum_replace(csum: u16, old: u16, new: u16) -> u16 {
    let mut s = u32::from(!csum) + u32::from(!old) + u32::from(new);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// `off` bounded below `GEN_MAX_OFFSET` by a mask computed right where it is used. A range
/// check alone is not enough for older verifiers (6.1): the compiler checks a copy and then
/// reloads the offset from the stack, and the bound is lost on the reload.
#[inline(always)]
fn bounded(off: u32) -> usize {
    const _: () = assert!(GEN_MAX_OFFSET.is_power_of_two());
    (off & (GEN_MAX_OFFSET - 1)) as usize
}

/// Read a big-endian 16-bit word at `off`.
#[inline(always)]
fn read16(ctx: &XdpContext, off: u32) -> Option<u16> {
    let p: *mut [u8; 2] = ptr_at(ctx, bounded(off))?;
    // SAFETY: `ptr_at` checked the 2 bytes are inside the frame.
    Some(u16::from_be_bytes(unsafe { *p }))
}

/// Write a big-endian 16-bit word at `off`.
#[inline(always)]
fn write16(ctx: &XdpContext, off: u32, v: u16) -> Option<()> {
    let p: *mut [u8; 2] = ptr_at(ctx, bounded(off))?;
    // SAFETY: as in `read16`.
    unsafe { *p = v.to_be_bytes() };
    Some(())
}

/// Update the checksum at `off` (0: none) for a word changing from `old` to `new`.
#[inline(always)]
fn fix(ctx: &XdpContext, off: u32, old: u16, new: u16, udp: bool) -> Option<()> {
    if off == 0 {
        return Some(());
    }
    let c = read16(ctx, off)?;
    if udp && c == 0 {
        // An IPv4 UDP datagram without a checksum stays without one.
        return Some(());
    }
    let mut n = csum_replace(c, old, new);
    if udp && n == 0 {
        n = 0xffff;
    }
    write16(ctx, off, n)
}

/// Replace the word at `off` with `new`, keeping both checksums right.
#[inline(always)]
fn set_word(ctx: &XdpContext, cfg: &GenConfig, off: u32, new: u16, in_ip: bool) -> Option<()> {
    let old = read16(ctx, off)?;
    if old == new {
        return Some(());
    }
    write16(ctx, off, new)?;
    if in_ip {
        fix(ctx, cfg.ip_csum_off, old, new, false)?;
    }
    fix(ctx, cfg.l4_csum_off, old, new, cfg.udp != 0)
}

/// Entry point: rewrite the frame into flow `counter % flows`, `XDP_TX` it.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    match rewrite(ctx) {
        Some(()) => xdp_action::XDP_TX,
        None => xdp_action::XDP_ABORTED,
    }
}

/// Write the template's first `len` bytes (a multiple of 8) back into the frame.
#[inline(always)]
fn restore(ctx: &XdpContext, len: u32) -> Option<()> {
    let t = GEN_TEMPLATE.get_ptr(0)?.cast::<u64>();
    let mut w = 0;
    while w < GEN_TEMPLATE_LEN / 8 {
        if (w as u32) * 8 >= len {
            break;
        }
        let p: *mut [u8; 8] = ptr_at(ctx, w * 8)?;
        // SAFETY: `ptr_at` checked the 8 bytes are inside the frame; `w * 8 + 8` is within
        // the map value (`w < GEN_TEMPLATE_LEN / 8`), read unaligned-safe as a u64.
        unsafe { *p = core::ptr::read_unaligned(t.add(w)).to_ne_bytes() };
        w += 1;
    }
    Some(())
}

#[inline(always)]
fn rewrite(ctx: &XdpContext) -> Option<()> {
    let cfg = *GEN_CONFIG.get(0)?;
    if cfg.restore_len != 0 {
        restore(ctx, cfg.restore_len)?;
    }
    let counter = GEN_COUNTER.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
    let n = unsafe {
        let n = *counter;
        *counter = n + 1;
        n
    };
    // Offsets are bounded by masking where they are used (`bounded`); the daemon only
    // writes offsets below GEN_MAX_OFFSET (bench::traffic checks it).
    let flows = u64::from(cfg.flows.max(1));
    let i = (n.wrapping_mul(u64::from(cfg.stride.max(1))) % flows) as u32;
    let ports = cfg.ports.max(1);
    let sport = cfg.sport_base.wrapping_add(i % ports) as u16;
    let addr = cfg.addr_base.wrapping_add(i / ports);
    set_word(ctx, &cfg, cfg.sport_off, sport, false)?;
    // The address is part of the IPv4 header (its checksum) and of the L4 pseudo-header.
    set_word(ctx, &cfg, cfg.addr_off, (addr >> 16) as u16, true)?;
    set_word(ctx, &cfg, cfg.addr_off + 2, addr as u16, true)
}
