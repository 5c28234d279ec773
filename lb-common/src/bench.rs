//! Benchmark helpers shared by the kernel and `sluice bench`/`sluice gen`: the traffic
//! generator's settings and the names of the programs and maps of the benchmarks' own eBPF
//! object (`sluice-bench-ebpf`, apart from the balancer's).

/// Names of the programs in the benchmarks' eBPF object.
pub mod programs {
    /// A floor for benchmarks: swap MACs and `XDP_TX`.
    pub const FLOOR_TX: &str = "sluice_floor_tx";
    /// The live-frames traffic generator (rewrites its template per flow, `XDP_TX`).
    pub const GEN: &str = "sluice_gen";
    /// Count the frame (`SINK_COUNT`) and `XDP_DROP` it.
    pub const SINK: &str = "sluice_sink";
    /// The memory floor: read the next flow's 64-byte line of `MISS_LINES` (`miss_line`),
    /// do `MissState::work` rounds of arithmetic, then as `FLOOR_TX` (the rewrite depending
    /// on the line).
    pub const FLOOR_MISS: &str = "sluice_floor_miss";
}

/// Names of the maps in the benchmarks' eBPF object.
pub mod names {
    /// `GenConfig`, one entry.
    pub const GEN_CONFIG: &str = "GEN_CONFIG";
    /// Per-CPU packet counter of the generator (also its flow index source).
    pub const GEN_COUNTER: &str = "GEN_COUNTER";
    /// Per-CPU count of frames the sink program dropped.
    pub const SINK_COUNT: &str = "SINK_COUNT";
    /// The template's first `GenConfig::restore_len` bytes (one entry of
    /// `GEN_TEMPLATE_LEN` bytes).
    pub const GEN_TEMPLATE: &str = "GEN_TEMPLATE";
    /// The memory floor's lines (`MissLine`, a power of two of them: sized at load).
    pub const MISS_LINES: &str = "MISS_LINES";
    /// The memory floor's settings and position (`MissState`, per CPU).
    pub const MISS_STATE: &str = "MISS_STATE";
}

/// One line of the memory floor's array: 64 bytes, as a flow-table slot.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default)]
pub struct MissLine(pub [u64; 8]);

const _: () = assert!(size_of::<MissLine>() == 64);

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, `Copy`, only `u64` fields: every bit pattern is valid, no padding.
unsafe impl aya::Pod for MissLine {}

/// The memory floor's settings and position, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MissState {
    /// Its lines − 1 (they are a power of two; at most as many as `MISS_LINES` has).
    pub mask: u32,
    /// Half the bits of `mask`, rounded up: [`miss_line`]'s shift.
    pub shift: u32,
    /// The "flows": how many distinct lines it reads (at most `mask + 1`), in turn, each
    /// at its own scattered place ([`miss_line`]), as a flow table's flows sit at their
    /// hashes' slots.
    pub flows: u32,
    /// The flow the next call reads (`0..flows`).
    pub next: u32,
    /// Rounds of arithmetic after the read that do not wait for it (at most
    /// [`MISS_WORK_MAX`]): 0 measures the read alone; more stands for the rest of a
    /// program's work, which a program as small as the floor does not have.
    pub work: u32,
}

const _: () = assert!(size_of::<MissState>() == 20);

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, `Copy`, only `u32` fields: every bit pattern is valid, no padding.
unsafe impl aya::Pod for MissState {}

impl MissState {
    /// `flows` lines of `lines` (a power of two; `flows` is capped at it), read in turn
    /// from the first, each call followed by `work` rounds of arithmetic.
    pub const fn new(lines: u32, flows: u32, work: u32) -> Self {
        let mask = lines.saturating_sub(1);
        let bits = u32::BITS - mask.leading_zeros();
        Self {
            mask,
            shift: bits.div_ceil(2),
            flows: if flows == 0 || flows > mask + 1 {
                mask + 1
            } else {
                flows
            },
            next: 0,
            work,
        }
    }
}

/// The most rounds of work the memory floor does.
pub const MISS_WORK_MAX: u32 = 256;

/// The line of flow `i` (of the memory floor's `mask + 1` lines, a power of two; `shift`:
/// half its bits, rounded up): a permutation of the lines (odd multipliers and right
/// shifts, each invertible within the mask's bits), so every flow has a line of its own,
/// scattered as a keyed hash scatters flows over a table's slots. Consecutive flows' lines
/// are no constant stride apart: an earlier memory floor that read line `i × φ` (an
/// arithmetic sequence modulo the lines) was followed by the hardware, and kept 0.89× of
/// the floor's rate over 32 MiB where lines at hashed places keep 0.68×.
#[inline(always)]
pub const fn miss_line(i: u32, mask: u32, shift: u32) -> u32 {
    let mut h = i.wrapping_mul(0x9e37_79b1) & mask;
    h ^= h >> shift;
    h = h.wrapping_mul(0x85eb_ca6b) & mask;
    h ^= h >> shift;
    h = h.wrapping_mul(0xc2b2_ae35) & mask;
    h ^ (h >> shift)
}

/// How `sluice_gen` turns its template frame into flow `i` (`i` = the per-CPU packet counter
/// times `stride`, modulo `flows`): source port `sport_base + i % ports`, and the 32-bit address word at
/// `addr_off` (the low word of the source address) `addr_base + i / ports`, both written
/// big-endian with the checksums at `ip_csum_off` (IPv4 header) and `l4_csum_off` (TCP/UDP,
/// pseudo-header included) updated incrementally (RFC 1624). Offsets are from the start of
/// the frame; a checksum offset of 0 means "none".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GenConfig {
    pub flows: u32,
    pub ports: u32,
    pub sport_base: u32,
    pub addr_base: u32,
    pub sport_off: u32,
    pub addr_off: u32,
    pub ip_csum_off: u32,
    pub l4_csum_off: u32,
    /// Non-zero for UDP: a computed checksum of 0 is sent as 0xffff (RFC 768).
    pub udp: u32,
    /// Bytes of the template (`GEN_TEMPLATE`, a multiple of 8, at most
    /// `GEN_TEMPLATE_LEN`) written back into every frame before it is rewritten: in
    /// live-frames mode the kernel recycles a frame's page without copying the template
    /// again, and a far end that rewrote the frame in place (IPIP encapsulation grows it
    /// into the headroom) would otherwise leave its bytes there. 0: none.
    pub restore_len: u32,
    /// The order flows are sent in: 0 or 1 sends flow 0, 1, 2, ... (the order a flow table
    /// filled by this traffic holds them in memory, so a lookup finds the next entry where
    /// the hardware prefetcher already fetched it); another value coprime to `flows`
    /// visits them all in a scattered order, as interleaved real traffic does.
    pub stride: u32,
}

/// Size of the `GEN_TEMPLATE` value (the headers of any template fit).
pub const GEN_TEMPLATE_LEN: usize = 128;

/// Offsets in `GenConfig` must stay below this (the program's bounds for the verifier).
pub const GEN_MAX_OFFSET: u32 = 128;

const _: () = assert!(size_of::<GenConfig>() == 44);

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, `Copy`, only `u32` fields: every bit pattern is valid, no padding.
unsafe impl aya::Pod for GenConfig {}

#[cfg(test)]
mod tests {
    use super::{MissState, miss_line};

    /// Every flow has a line of its own, and consecutive flows' lines are apart by steps
    /// that hardly repeat (a stride a prefetcher could follow repeats every step).
    #[test]
    fn the_memory_floor_gives_each_flow_its_own_line_scattered() {
        for bits in [0, 1, 2, 5, 12, 16, 19] {
            let lines = 1u32 << bits;
            let st = MissState::new(lines, 0, 0);
            assert_eq!((st.mask, st.flows), (lines - 1, lines));
            let mut seen = [0u64; (1 << 19) / 64];
            for i in 0..lines {
                let l = miss_line(i, st.mask, st.shift) as usize;
                assert!(
                    seen[l / 64] & 1 << (l % 64) == 0,
                    "{bits} bits: line {l} twice"
                );
                seen[l / 64] |= 1 << (l % 64);
            }
            if bits < 16 {
                continue;
            }
            let mut steps = [0u32; 4096];
            for (i, s) in (0..).zip(steps.iter_mut()) {
                *s = miss_line(i + 1, st.mask, st.shift)
                    .wrapping_sub(miss_line(i, st.mask, st.shift))
                    & st.mask;
            }
            steps.sort_unstable();
            let most = steps.chunk_by(|a, b| a == b).map(<[u32]>::len).max();
            assert!(
                most <= Some(4),
                "{bits} bits: one step {most:?} times in 4096"
            );
        }
        assert_eq!(MissState::new(1 << 10, 100, 7).flows, 100);
        assert_eq!(MissState::new(1 << 10, 5000, 7).flows, 1 << 10);
        assert_eq!(MissState::new(1 << 19, 1, 0).shift, 10);
    }
}
