//! TCP MSS clamping on encapsulated SYNs: the MSS option is lowered to what fits the egress
//! MTU once the outer header is added, and the TCP checksum is fixed incrementally
//! (RFC 1624). A SYN without an MSS option is left alone: its peer then assumes the
//! default MSS (536 for IPv4, 1220 for IPv6, RFC 9293), which always fits.

use aya_ebpf::programs::XdpContext;
use lb_common::reason;

use crate::parse::{Packet, ptr_at};

/// Options looked at before giving up on finding the MSS (NOPs count). Every common stack
/// sends the MSS first; the bound keeps the verifier's work small (each step multiplies
/// the states it explores).
const MAX_STEPS: usize = 8;

/// The offset of the MSS value (2 bytes, network order) in the TCP SYN's options, and the
/// value. `None` when the SYN has no (well-formed) MSS option inside its header.
#[inline(always)]
pub(super) fn find(ctx: &XdpContext, pkt: &Packet) -> Option<(usize, u16)> {
    let th: *const [u8; 20] = ptr_at(ctx, pkt.l4_off)?;
    // SAFETY: `ptr_at` checked the fixed TCP header is inside the frame; byte 12 holds the
    // data offset.
    let doff = usize::from(unsafe { (*th)[12] } >> 4) * 4;
    let end = pkt.l4_off + doff;
    if end > pkt.l3_off + usize::from(pkt.l3_len) {
        return None;
    }
    let mut off = pkt.l4_off + 20;
    for _ in 0..MAX_STEPS {
        // The explicit bound keeps the offset provably small for the verifier (an options
        // area ends at most 18 + 60 + 60 bytes into the frame).
        if off >= end || off > 160 {
            return None;
        }
        // Kind and length, read as a pair: the verifier gives a one-byte read at a variable
        // offset no range. A NOP or end-of-list in the frame's last byte then ends the walk
        // early, which is right: no MSS option follows.
        let opt: *const [u8; 2] = ptr_at(ctx, off)?;
        // SAFETY: `ptr_at` checked both bytes are inside the frame.
        let (kind, len) = unsafe { ((*opt)[0], usize::from((*opt)[1])) };
        match kind {
            // End of options.
            0 => return None,
            // No-operation (padding).
            1 => off += 1,
            kind => {
                if kind == 2 {
                    if len != 4 || off + 4 > end {
                        return None;
                    }
                    let v: *const [u8; 4] = ptr_at(ctx, off)?;
                    // SAFETY: `ptr_at` checked the 4 option bytes are inside the frame.
                    let v = unsafe { [(*v)[2], (*v)[3]] };
                    return Some((off + 2, u16::from_be_bytes(v)));
                }
                if len < 2 {
                    return None;
                }
                off += len;
            }
        }
    }
    None
}

/// Write `new` over the MSS value `old` at `off` and fix the TCP checksum.
#[inline(always)]
pub(super) fn set(
    ctx: &XdpContext,
    pkt: &Packet,
    off: usize,
    old: u16,
    new: u16,
) -> Result<(), u32> {
    let v: *mut [u8; 2] = ptr_at(ctx, off).ok_or(reason::DROP_INTERNAL)?;
    let c: *mut [u8; 2] = ptr_at(ctx, pkt.l4_off + 16).ok_or(reason::DROP_INTERNAL)?;
    // A 16-bit field at an odd offset of the segment straddles two checksum words: its
    // bytes count swapped (RFC 1071: the sum is byte-order independent).
    let (m, m1) = if (off - pkt.l4_off) & 1 == 1 {
        (old.swap_bytes(), new.swap_bytes())
    } else {
        (old, new)
    };
    // SAFETY: `ptr_at` checked both 2-byte fields are inside the frame.
    unsafe {
        let hc = u16::from_be_bytes(*c);
        // RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m').
        let mut sum = u32::from(!hc) + u32::from(!m) + u32::from(m1);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        c.write((!(sum as u16)).to_be_bytes());
        v.write(new.to_be_bytes());
    }
    Ok(())
}
