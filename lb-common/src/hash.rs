//! The flow hash: MurmurHash3's 32-bit block mix over the 5-tuple, seeded.
//!
//! Both sides compute it: the XDP program to pick a lookup-table slot, userspace to predict
//! and explain (`plan`, tests). IPIP's outer header takes the cheaper [`encap_hash`]. Every LB instance with the
//! same seed and the same tables sends a flow to the same backend.

use crate::FlowKey;

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
const fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
const fn finish(h: u32, len: u32) -> u32 {
    fmix32(h ^ len)
}

/// MurmurHash3's finalizer: every input bit moves every output bit.
#[inline(always)]
pub(crate) const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Word `i` of the key, as the little-endian reading of its four bytes (the same value on
/// every host, and one load on BPF).
#[inline(always)]
const fn word(key: &FlowKey, i: usize) -> u32 {
    u32::from_le(key.words()[i])
}

/// Hash of a flow key. IPv4 keys hash only the words that can be non-zero.
#[inline(always)]
pub fn flow_hash(key: &FlowKey, seed: u32) -> u32 {
    let (s, d) = (FlowKey::W_SRC, FlowKey::W_DST);
    let ports = word(key, FlowKey::W_PORTS);
    let tail = word(key, FlowKey::W_TAIL) & 0xffff;
    let mut h = seed;
    if key.family == crate::FAMILY_V6 {
        let mut i = 0;
        while i < 4 {
            h = mix(h, word(key, s + i));
            h = mix(h, word(key, d + i));
            i += 1;
        }
    } else {
        h = mix(h, word(key, s));
        h = mix(h, word(key, d));
    }
    h = mix(h, ports);
    h = mix(h, tail);
    finish(h, 40)
}

/// The per-flow bits of an IPIP packet's outer header (the host bits of its source
/// address, the IPv6 flow label), so that the backends' NICs spread flows over their
/// receive queues: the 5-tuple's words folded by XOR (the destination's rotated), then
/// MurmurHash3's finalizer. Not [`flow_hash`]: that one chains a multiply-rotate-multiply
/// block per word, about 50 cycles of dependent latency that every encapsulated packet of
/// an established flow would pay (its flow entry does not keep the hash); spreading flows
/// over queues needs well-mixed bits, not that strength.
#[inline(always)]
pub fn encap_hash(key: &FlowKey, seed: u32) -> u32 {
    let (s, d) = (FlowKey::W_SRC, FlowKey::W_DST);
    let mut h = seed ^ word(key, FlowKey::W_PORTS) ^ ((word(key, FlowKey::W_TAIL) & 0xff) << 8);
    if key.family == crate::FAMILY_V6 {
        let mut i = 0;
        while i < 4 {
            h ^= word(key, s + i) ^ word(key, d + i).rotate_left(16);
            i += 1;
        }
    } else {
        h ^= word(key, s) ^ word(key, d).rotate_left(16);
    }
    finish(h, 0)
}

/// Hash of the flow's source address only (the `source-hash` scheduler): every flow of one
/// client lands on the same table slot.
#[inline(always)]
pub fn source_hash(key: &FlowKey, seed: u32) -> u32 {
    let mut h = seed ^ 0x5eed_5a17;
    if key.family == crate::FAMILY_V6 {
        let mut i = 0;
        while i < 4 {
            h = mix(h, word(key, FlowKey::W_SRC + i));
            i += 1;
        }
    } else {
        h = mix(h, word(key, FlowKey::W_SRC));
    }
    finish(h, 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: [u8; 4], sport: u16) -> FlowKey {
        crate::test_key(src, sport, 80)
    }

    #[test]
    fn deterministic_and_seeded() {
        let k = key([192, 0, 2, 1], 40000);
        assert_eq!(flow_hash(&k, 1), flow_hash(&k, 1));
        assert_ne!(flow_hash(&k, 1), flow_hash(&k, 2));
    }

    #[test]
    fn source_hash_ignores_ports_and_destination() {
        let a = key([192, 0, 2, 1], 40000);
        let mut b = key([192, 0, 2, 1], 40001);
        b.dst[3] = 9;
        assert_eq!(source_hash(&a, 3), source_hash(&b, 3));
        assert_ne!(
            source_hash(&a, 3),
            source_hash(&key([192, 0, 2, 2], 40000), 3)
        );
        assert_ne!(source_hash(&a, 3), source_hash(&a, 4));
    }

    #[test]
    fn encap_hash_is_seeded_and_spreads_flows_over_queues() {
        let k = key([192, 0, 2, 1], 40000);
        assert_eq!(encap_hash(&k, 1), encap_hash(&k, 1));
        assert_ne!(encap_hash(&k, 1), encap_hash(&k, 2));
        // What a backend's NIC sees of it: the outer source's low 16 bits (a /16 prefix),
        // hashed by RSS onto queues. 60000 ports × 4 clients over 16 queues (low bits) and
        // over 7 (the whole value): each within 3% of the mean.
        for (n, low16) in [(16u32, true), (7, false)] {
            let mut q = [0u32; 16];
            let q = &mut q[..n as usize];
            for c in 1..=4u8 {
                for p in 1000..61000u16 {
                    let h = encap_hash(&key([192, 0, 2, c], p), 0);
                    q[((if low16 { h & 0xffff } else { h }) % n) as usize] += 1;
                }
            }
            let mean = 240_000.0 / f64::from(n);
            for b in q.iter() {
                assert!((f64::from(*b) - mean).abs() / mean < 0.03, "{q:?}");
            }
        }
        // IPv6: every word of both addresses counts.
        let mut a = k;
        a.family = crate::FAMILY_V6;
        for i in 0..16 {
            let mut b = a;
            b.src[i] ^= 1;
            assert_ne!(encap_hash(&a, 0), encap_hash(&b, 0), "src byte {i}");
            let mut b = a;
            b.dst[i] ^= 1;
            assert_ne!(encap_hash(&a, 0), encap_hash(&b, 0), "dst byte {i}");
        }
    }

    #[test]
    fn spreads_source_ports_evenly() {
        // 60000 consecutive source ports over 7 buckets: each bucket within 3% of the mean.
        let mut buckets = [0u32; 7];
        for p in 1000..61000u16 {
            buckets[(flow_hash(&key([192, 0, 2, 1], p), 0) % 7) as usize] += 1;
        }
        let mean = 60000.0 / 7.0;
        for b in buckets {
            assert!((f64::from(b) - mean).abs() / mean < 0.03, "{buckets:?}");
        }
    }

    /// The hashes' values are part of the fleet's contract: balancers of different releases
    /// behind one ECMP group must pick the same backend for a flow (and give its IPIP packets
    /// the same outer source). Values computed before the key was read as words.
    #[test]
    fn values_are_stable_across_releases() {
        let mut v4 = key([192, 0, 2, 1], 40000);
        v4.dst[..4].copy_from_slice(&[10, 96, 0, 100]);
        v4.dport = 443u16.to_be_bytes();
        let mut udp = v4;
        udp.proto = crate::PROTO_UDP;
        udp.sport = 5353u16.to_be_bytes();
        udp.dport = 53u16.to_be_bytes();
        let mut v6 = v4;
        v6.family = crate::FAMILY_V6;
        for i in 0..16u8 {
            v6.src[usize::from(i)] = 0x20 + i * 7;
            v6.dst[usize::from(i)] = 0xfd - i * 3;
        }
        for (name, k, want) in [
            ("v4", v4, [0x9fbf_a15a, 0xadc6_2bf8, 0xc62d_537d]),
            ("udp", udp, [0xc098_c6a6, 0x3ffd_2345, 0xc62d_537d]),
            ("v6", v6, [0xd94c_64c0, 0x9c19_0de7, 0x5c73_2b58]),
        ] {
            let got = [
                flow_hash(&k, 0x5eed),
                encap_hash(&k, 0x5eed),
                source_hash(&k, 0x5eed),
            ];
            assert_eq!(got, want, "{name}: flow, encap, source hash");
        }
    }
}
