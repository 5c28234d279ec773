//! Map names, capacities, keys and values.

/// Names of the maps in the balancer's eBPF object, as userspace looks them up.
pub mod names {
    pub const VIPS: &str = "VIPS";
    pub const BACKENDS: &str = "BACKENDS";
    pub const TABLES: &str = "TABLES";
    pub const FLOWS: &str = "FLOWS";
    pub const FLOW_TABLE: &str = "FLOW_TABLE";
    pub const FLOW_REGION: &str = "FLOW_REGION";
    pub const CONFIG: &str = "CONFIG";
    pub const VIP_STATS: &str = "VIP_STATS";
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    pub const REASONS: &str = "REASONS";
    pub const VIP_REASONS: &str = "VIP_REASONS";
    pub const CURSORS: &str = "CURSORS";
    pub const FIB_SCRATCH: &str = "FIB_SCRATCH";
    pub const ICMP_LIMIT: &str = "ICMP_LIMIT";
    pub const NEXT_HOPS: &str = "NEXT_HOPS";
    pub const FIB_FALLBACKS: &str = "FIB_FALLBACKS";
    pub const FLOOD_GUARD: &str = "FLOOD_GUARD";
    pub const FLOOD_LIMIT: &str = "FLOOD_LIMIT";
    pub const CLOCK: &str = "CLOCK";
}

/// Names of the programs in the balancer's eBPF object (`sluice-ebpf`).
pub mod programs {
    /// The load balancer itself.
    pub const BALANCER: &str = "sluice_lb";
    /// The backend-side IPIP/IP6IP6 decapsulation.
    pub const DECAP: &str = "sluice_decap";
    /// `XDP_PASS`, for veth peers that must receive `XDP_TX`/redirected frames.
    pub const PASS: &str = "sluice_pass";
    /// Health probes through the forwarding path, to the backend slot the XDP metadata
    /// names ([`ProbeMeta`](super::ProbeMeta)).
    pub const PROBE: &str = "sluice_probe";
}

/// Default VIP capacity (`daemon.vip_capacity`): the entries of `VIPS`, `CURSORS` and
/// `VIP_STATS`, as the object declares them; the daemon sets the size at load. VIP ids are
/// `0..capacity`.
pub const DEFAULT_VIP_CAPACITY: u32 = 1024;
/// Default backend slots (`daemon.backend_capacity`): the entries of `BACKENDS`,
/// `NEXT_HOPS` and `BACKEND_STATS`, as the object declares them; the daemon sets the size
/// at load. Slot 0 is reserved: a table slot holding 0 is empty and never forwards.
pub const DEFAULT_BACKEND_CAPACITY: u32 = 16384;
/// Default capacity of the flow table (entries).
pub const DEFAULT_FLOW_ENTRIES: u32 = 1 << 20;
/// Default capacity of the lookup-table storage (`TABLES`, u32 backend ids), enough for
/// 32 Maglev (or source-hash) VIPs with 65537-slot tables, double-buffered. A sequence VIP
/// (rr, wrr, lc, wlc) takes twice as much: its fallback Maglev table is double-buffered
/// too.
pub const DEFAULT_TABLE_SLOTS: u32 = 32 * 2 * 65537;
/// Health probes use source ports `PROBE_PORT_BASE..=65535` (16384 ports), a different one
/// for each probe of a VIP's check; the target backend's id travels in front of the frame,
/// in the XDP metadata of the probe's test run ([`ProbeMeta`]), where the probe program
/// reads it; the daemon matches replies by port (and TCP sequence number).
pub const PROBE_PORT_BASE: u16 = 49152;

/// The XDP metadata (`data_meta..data`) a health probe is run with (`BPF_PROG_TEST_RUN`,
/// `xdp_md.data` = its size): the backend slot to send the probe to. Any slot id fits,
/// unlike a header field of the probe itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProbeMeta {
    /// Backend slot id (native byte order).
    pub backend_id: u32,
}
/// The backend id that means "no backend".
pub const NO_BACKEND: u32 = 0;

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Forwarding modes (`VipMeta::mode`).
pub const MODE_DSR: u8 = 1;
pub const MODE_IPIP: u8 = 2;

/// How the kernel picks a new flow's backend (`VipMeta::scheduler`). The six schedulers a
/// VIP can name reduce to three kernel mechanisms; the daemon writes the table each reads.
///
/// `maglev`: table slot `flow_hash % table_size` (a Maglev table).
pub const SCHED_MAGLEV: u8 = 0;
/// `rr`, `wrr`, `lc`, `wlc`: the table is a sequence of backend ids of length `table_size`,
/// walked one step per new flow by the VIP's shared cursor (`CURSORS`). The daemon writes
/// the round-robin order (rr), the smooth weighted order (wrr), or the least-connection
/// order computed from the kernel's open/close counters (lc, wlc).
///
/// A TCP packet without a flow entry that is not a SYN (SYN without ACK) belongs to a
/// connection that began elsewhere (on another balancer, before an ECMP change): it is
/// sent by the flow hash into the VIP's fallback Maglev table (`hash_base`, `hash_size`)
/// instead, the table a `maglev` VIP with the same backends and weights would have, so
/// every balancer with the same config and hash seed sends it to the same backend.
pub const SCHED_SEQUENCE: u8 = 1;
/// `source-hash`: table slot `source_hash % table_size` (a Maglev table indexed by the
/// client address only, so one client's flows share a backend).
pub const SCHED_SOURCE_HASH: u8 = 2;

/// `FlowValue::state`: the connection is open (counted as active), and a packet was seen
/// after the one that opened it.
pub const FLOW_OPEN: u32 = 0;
/// `FlowValue::state`: a FIN or RST was seen from the client. The flow keeps its backend
/// (the rest of the close still has to reach it) but no longer counts as active.
pub const FLOW_CLOSING: u32 = 1;
/// `FlowValue::state`: open (counted as active), and nothing seen since the packet that
/// opened it (a SYN waiting for its ACK, a one-packet UDP flow, a flood's flow); its next
/// packet makes it `FLOW_OPEN`. When the table must shrink, the daemon evicts such flows
/// before those seen again (as an LRU's inactive list goes before its active one), so a
/// flood cannot push out established connections.
pub const FLOW_NEW: u32 = 2;

/// Whether a `FlowValue::state` counts as an active connection.
pub const fn flow_is_open(state: u32) -> bool {
    state != FLOW_CLOSING
}
/// `FlowValue::last_seen` is `CLOCK_MONOTONIC` (coarse) nanoseconds shifted right by this:
/// ticks of 1.07 s, so the kernel rewrites it at most about once a second per flow.
///
/// The program does not read the clock itself: the daemon writes the current tick into the
/// `CLOCK` array (one `u32`) as it changes, and the program stamps flows with that. A
/// helper call per packet cost more than the rest of the flow-table hit on CPUs whose
/// kernels mitigate return-stack attacks (`bpf_ktime_get_coarse_ns`: about 21 ns of an
/// established packet's 82, measured). Without a daemon the clock stands still; the daemon
/// that starts again counts a flow's idle time from no earlier than its own start.
pub const FLOW_TIME_SHIFT: u32 = 30;

/// `Backend::flags`: the backend may carry flows (present and not down). A flow whose
/// backend lacks this flag is reassigned on its next packet.
pub const BACKEND_F_SERVING: u8 = 1;
/// `Backend::flags`: `mac` is set (DSR uses it instead of a FIB lookup).
pub const BACKEND_F_HAS_MAC: u8 = 2;
/// `Backend::flags`: its VIP forwards with IPIP (else DSR). An established flow is forwarded
/// from its backend entry alone, without the VIP lookup.
pub const BACKEND_F_IPIP: u8 = 4;

/// The ABI epoch of the maps: bumped when a map's *meaning* changes while its type and sizes
/// stay the same (which the daemon's per-map check of pinned maps cannot see). A daemon
/// refuses to adopt pinned maps saved under another epoch (except the earlier ones it knows
/// how to upgrade). It lives here, next to the `#[repr(C)]` types it guards, so a change to
/// their meaning and the bump go together.
/// 2: `Backend::flags` carries `BACKEND_F_IPIP`.
/// 3: `VipMeta` grows `hash_base`/`hash_size` (the sequence schedulers' fallback Maglev
/// table), 16 → 24 bytes.
pub const ABI_EPOCH: u32 = 3;

/// Key of the `VIPS` hash map. Port 0 means every port of that address and protocol.
/// Aligned to 4 (same layout) so the data path builds it from a flow key in five words.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    /// IPv4 in the first 4 bytes (rest zero), or IPv6; network order.
    pub addr: [u8; 16],
    /// Destination port, network byte order.
    pub port: [u8; 2],
    pub proto: u8,
    pub family: u8,
}

impl VipKey {
    /// The VIP key a flow is addressed to: its destination address, port, protocol and
    /// family, moved as words.
    #[inline(always)]
    pub const fn of_flow(key: &FlowKey) -> Self {
        let w = key.words();
        let d = FlowKey::W_DST;
        // Little-endian words: the destination port is the upper half of the ports word,
        // protocol and family the lower half of the tail word.
        let tail =
            (u32::from_le(w[FlowKey::W_PORTS]) >> 16) | (u32::from_le(w[FlowKey::W_TAIL]) << 16);
        Self::from_words([w[d], w[d + 1], w[d + 2], w[d + 3], tail.to_le()])
    }

    /// The same address, protocol and family with port 0: the address's all-ports VIP.
    #[inline(always)]
    pub const fn any_port(self) -> Self {
        let mut w = self.words();
        w[4] = (u32::from_le(w[4]) & !0xffff).to_le();
        Self::from_words(w)
    }

    #[inline(always)]
    const fn from_words(words: [u32; 5]) -> Self {
        // SAFETY: same size (asserted below); any bytes make a valid key.
        unsafe { core::mem::transmute::<[u32; 5], Self>(words) }
    }

    #[inline(always)]
    const fn words(self) -> [u32; 5] {
        // SAFETY: as above.
        unsafe { core::mem::transmute::<Self, [u32; 5]>(self) }
    }
}

/// Value of the `VIPS` map. Replaced whole by userspace, so a reader never sees a mix of
/// an old and a new table (`table_base`/`table_size`, and `hash_base`/`hash_size`, switch
/// together).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipMeta {
    /// Index into `VIP_STATS`, and the owner tag of this VIP's backends.
    pub vip_id: u32,
    /// First slot of this VIP's live lookup table in `TABLES`.
    pub table_base: u32,
    /// Slots in the live table (a prime); 0 means the VIP has no table yet.
    pub table_size: u32,
    pub mode: u8,
    pub scheduler: u8,
    pub flags: u8,
    pub _pad: u8,
    /// `SCHED_SEQUENCE` only: first slot of the fallback Maglev table in `TABLES`, which
    /// TCP packets of connections begun elsewhere (no flow entry, not a SYN) are hashed
    /// into.
    pub hash_base: u32,
    /// Slots of the fallback table (a prime, the VIP's `table_size`); 0: none (every new
    /// flow follows the sequence).
    pub hash_size: u32,
}

/// `a`, a 16-byte address field at a 4-aligned offset of its struct, as four native
/// 32-bit words (how the data path moves addresses; see [`FlowKey::words`]).
///
/// # Safety
/// `a` is 4-byte aligned.
#[inline(always)]
const unsafe fn addr_words(a: &[u8; 16]) -> &[u32; 4] {
    // SAFETY: 16 initialised bytes, and the caller's alignment.
    unsafe { &*core::ptr::from_ref(a).cast::<[u32; 4]>() }
}

/// Value of the `BACKENDS` array, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    /// Backend address (IPIP outer destination; FIB lookup for DSR without `mac`).
    pub addr: [u8; 16],
    pub mac: [u8; 6],
    pub family: u8,
    pub flags: u8,
    /// Bumped every time the slot is (re)used; a flow remembers the generation it was
    /// assigned under, so a reused slot never inherits an old slot's flows.
    pub generation: u32,
    /// The VIP this backend slot belongs to.
    pub vip_id: u32,
}

impl Backend {
    /// `addr` as four native words (IPv4: the first).
    #[inline(always)]
    pub const fn addr_words(&self) -> &[u32; 4] {
        // SAFETY: `addr` is at offset 0 of a 4-aligned struct (asserted below).
        unsafe { addr_words(&self.addr) }
    }
}

/// Value of the `NEXT_HOPS` array, indexed by backend id: where a frame for that backend
/// leaves, as the daemon resolved it over rtnetlink (route to the backend's address, the
/// egress interface's MAC and MTU, the next hop's neighbour entry). `ifindex` 0: none (the
/// program asks the kernel's FIB with `bpf_fib_lookup`, and counts it in `FIB_FALLBACKS`).
/// Used by IPIP backends and DSR backends without a configured MAC; the daemon rewrites it
/// when a route, link or neighbour changes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHop {
    /// The next hop's MAC (the backend's, or its gateway's).
    pub dmac: [u8; 6],
    /// The egress interface's MAC.
    pub smac: [u8; 6],
    /// The egress interface; 0 when unresolved.
    pub ifindex: u32,
    /// The egress MTU (the route's, else the interface's): a packet longer than this once
    /// encapsulated is too big, as `bpf_fib_lookup` would say.
    pub mtu: u16,
    pub _pad: [u8; 2],
}

/// Value of the per-CPU `FLOOD_GUARD` map: whether a new flow on this CPU may take a flow
/// entry. The token bucket of new flows this CPU may pin in the flow table (`credit_ns`:
/// time credit, one flow costs `1e9 / per_sec` ns, at most one second kept; `per_sec`: the
/// rate it was filled under, a changed one starts a full bucket), and the new flows
/// forwarded without an entry beyond it; and the new flows forwarded without an entry
/// because the table had no room for them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FloodGuard {
    pub credit_ns: u64,
    pub last_ns: u64,
    pub per_sec: u32,
    /// Tokens taken since the clock was last read (the bucket reads it only every few
    /// takes, or when it runs dry: see `lb-ebpf`'s `bucket::take_lazily`).
    pub untimed: u32,
    /// New flows forwarded by their hash without a flow entry (over the rate).
    pub unpinned: u64,
    /// New flows forwarded by their hash without a flow entry because their insert found
    /// no free slot (the table never evicts by itself: the daemon's sweep frees room when
    /// it passes its high-water mark).
    pub table_full: u64,
}

/// Value of the `FLOOD_LIMIT` array (one entry, written by the daemon): new flows each CPU
/// may pin a second; 0: no limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FloodLimit {
    pub per_cpu_per_sec: u32,
    pub _pad: u32,
}

/// Key of the `FLOWS` map: the 5-tuple as seen on the wire. Aligned to 4 so that the
/// data path reads and writes it as ten 32-bit words ([`FlowKey::words`]).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

impl FlowKey {
    /// The first of the source address's four words in [`FlowKey::words`] (an IPv4 address
    /// is word 0, words 1–3 zero).
    pub const W_SRC: usize = 0;
    /// The first of the destination address's four words.
    pub const W_DST: usize = 4;
    /// The ports, source then destination, as on the wire.
    pub const W_PORTS: usize = 8;
    /// Protocol, family and padding (zero).
    pub const W_TAIL: usize = 9;

    /// A key from its ten words, as [`FlowKey::words`] gives them.
    #[inline(always)]
    pub const fn from_words(words: [u32; 10]) -> Self {
        // SAFETY: same size (asserted below); every bit pattern is a valid `FlowKey`
        // (byte arrays only).
        unsafe { core::mem::transmute::<[u32; 10], Self>(words) }
    }

    /// The key as the ten 32-bit words it is in memory (native order). The data path builds,
    /// hashes and copies keys this way: each word one load or store, where a word put
    /// together from the byte fields costs BPF four byte loads and six shifts and ors, and
    /// mixing byte and word accesses to one key defeats store-to-load forwarding.
    #[inline(always)]
    pub const fn words(&self) -> &[u32; 10] {
        // SAFETY: 40 bytes, aligned to 4 (asserted below), every byte initialised (the
        // padding is a field).
        unsafe { &*core::ptr::from_ref(self).cast::<[u32; 10]>() }
    }

    /// [`FlowKey::words`], to write.
    #[inline(always)]
    pub const fn words_mut(&mut self) -> &mut [u32; 10] {
        // SAFETY: as in `words`; any words written make a valid key.
        unsafe { &mut *core::ptr::from_mut(self).cast::<[u32; 10]>() }
    }
}

/// Value of the `FLOWS` map: where the flow goes, and what connection tracking knows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    pub backend_id: u32,
    pub generation: u32,
    /// When the last packet was seen, in `FLOW_TIME_SHIFT` ticks of `CLOCK_MONOTONIC`
    /// (coarse), as the daemon's `CLOCK` said then. The daemon expires idle flows from it.
    pub last_seen: u32,
    /// `FLOW_NEW`, `FLOW_OPEN` or `FLOW_CLOSING`.
    pub state: u32,
}

/// Global settings (`CONFIG` array, one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GlobalConfig {
    /// Outer IPv4 source for IPIP: `encap_v4_prefix | (encap_hash & !encap_v4_mask)`.
    pub encap_v4_prefix: [u8; 4],
    pub encap_v4_mask: [u8; 4],
    /// Outer IPv6 source for IP6IP6: the first 12 bytes of this prefix, then the flow hash.
    pub encap_v6_prefix: [u8; 16],
    /// Seed of the flow hash (the same on every LB instance keeps them in agreement).
    pub hash_seed: u32,
    /// ICMP "fragmentation needed" / "packet too big" messages each CPU may send a second
    /// (also its burst); 0 sends none (too-big packets are only dropped).
    pub icmp_too_big_per_sec: u32,
    /// A 256-bit filter of the VIP addresses (bit `vip_filter_bit(addr)` set for each): a
    /// frame whose destination's bit is clear is not for a VIP, and is passed without a
    /// hash-map lookup.
    pub vip_filter: [u64; 4],
}

impl GlobalConfig {
    /// `encap_v4_prefix` and `encap_v4_mask` as native words.
    #[inline(always)]
    pub const fn encap_v4_words(&self) -> (u32, u32) {
        (
            u32::from_ne_bytes(self.encap_v4_prefix),
            u32::from_ne_bytes(self.encap_v4_mask),
        )
    }

    /// `encap_v6_prefix` as four native words.
    #[inline(always)]
    pub const fn encap_v6_words(&self) -> &[u32; 4] {
        // SAFETY: at offset 8 of an 8-aligned struct (asserted below).
        unsafe { addr_words(&self.encap_v6_prefix) }
    }
}

/// The `GlobalConfig::vip_filter` bit of a destination address (IPv4 in the first 4 bytes,
/// the rest zero): its 32-bit words folded together, then folded to 8 bits.
#[inline(always)]
pub fn vip_filter_bit(addr: &[u8; 16]) -> u32 {
    let w = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    let x = w(0) ^ w(4) ^ w(8) ^ w(12);
    let x = x ^ (x >> 16);
    (x ^ (x >> 8)) & 0xff
}

/// Value of the per-CPU `ICMP_LIMIT` map: the token bucket of ICMP too-big messages.
/// `credit_ns` is time credit (one message costs `1e9 / icmp_too_big_per_sec` ns, at most
/// one second is kept); `per_sec` is the rate the bucket was filled under: a changed rate
/// starts a full bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IcmpLimit {
    pub credit_ns: u64,
    pub last_ns: u64,
    pub per_sec: u32,
    pub _pad: u32,
}

/// Per-CPU traffic counters, per VIP and per backend. `new_flows` and `closes` are the
/// kernel's connection tracking: a flow opens when it is inserted (or a SYN reopens a
/// closing flow) and closes when the client's first FIN or RST is seen. The daemon derives
/// active connections from them (and expires idle flows itself).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub closes: u64,
}

const _: () = assert!(size_of::<VipKey>() == 20);
const _: () = assert!(size_of::<VipMeta>() == 24);
const _: () = assert!(size_of::<Backend>() == 32);
const _: () = assert!(size_of::<FlowKey>() == 40 && align_of::<FlowKey>() == 4);
const _: () = assert!(align_of::<VipKey>() == 4);
// The address fields read as words.
const _: () = assert!(core::mem::offset_of!(Backend, addr) == 0 && align_of::<Backend>() >= 4);
const _: () = assert!(
    core::mem::offset_of!(GlobalConfig, encap_v6_prefix) % 4 == 0
        && align_of::<GlobalConfig>() >= 4
);
const _: () = assert!(size_of::<NextHop>() == 20);
// XDP metadata comes in 4-byte units, at most 32 bytes.
const _: () = assert!(size_of::<ProbeMeta>() == 4);
const _: () = assert!(size_of::<FloodGuard>() == 40);
const _: () = assert!(size_of::<FloodLimit>() == 8);
const _: () = assert!(size_of::<FlowValue>() == 16);
const _: () = assert!(size_of::<GlobalConfig>() == 64);
const _: () = assert!(size_of::<Counters>() == 32);
const _: () = assert!(size_of::<IcmpLimit>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, `Copy`, made of integers and byte arrays, with
    // explicit padding fields, so every bit pattern is valid and there are no hidden bytes.
    unsafe impl aya::Pod for super::VipKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipMeta {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Backend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GlobalConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IcmpLimit {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NextHop {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FloodGuard {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FloodLimit {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::FlowSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::FlowTableMeta {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(family: u8, dst: [u8; 16], dport: u16, proto: u8) -> FlowKey {
        FlowKey {
            src: [0xa5; 16],
            dst,
            sport: 40000u16.to_be_bytes(),
            dport: dport.to_be_bytes(),
            proto,
            family,
            _pad: [0; 2],
        }
    }

    #[test]
    fn vip_key_of_flow_is_its_destination() {
        let mut dst = [0u8; 16];
        for (i, b) in dst.iter_mut().enumerate() {
            *b = 0x30 + i as u8;
        }
        for (family, proto, port) in [
            (FAMILY_V4, PROTO_TCP, 443),
            (FAMILY_V6, PROTO_UDP, 0xfe01),
            (FAMILY_V6, PROTO_TCP, 1),
        ] {
            let k = flow(family, dst, port, proto);
            let want = VipKey {
                addr: dst,
                port: port.to_be_bytes(),
                proto,
                family,
            };
            assert_eq!(VipKey::of_flow(&k), want);
            assert_eq!(
                VipKey::of_flow(&k).any_port(),
                VipKey {
                    port: [0, 0],
                    ..want
                }
            );
        }
    }

    #[test]
    fn flow_key_words_are_its_bytes() {
        let k = flow(FAMILY_V6, [7; 16], 0x0102, PROTO_TCP);
        let w = k.words();
        assert_eq!(w[FlowKey::W_SRC], u32::from_ne_bytes([0xa5; 4]));
        assert_eq!(w[FlowKey::W_DST + 3], u32::from_ne_bytes([7; 4]));
        assert_eq!(
            w[FlowKey::W_PORTS],
            u32::from_ne_bytes([0x9c, 0x40, 0x01, 0x02])
        );
        assert_eq!(
            w[FlowKey::W_TAIL],
            u32::from_ne_bytes([PROTO_TCP, FAMILY_V6, 0, 0])
        );
        assert_eq!(FlowKey::from_words(*w), k);
    }
}
