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
const fn finish(mut h: u32, len: u32) -> u32 {
    h ^= len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline(always)]
const fn word(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Hash of a flow key. IPv4 keys hash only the words that can be non-zero.
#[inline(always)]
pub fn flow_hash(key: &FlowKey, seed: u32) -> u32 {
    let ports = u32::from_le_bytes([key.sport[0], key.sport[1], key.dport[0], key.dport[1]]);
    let tail = u32::from_le_bytes([key.proto, key.family, 0, 0]);
    let mut h = seed;
    if key.family == crate::FAMILY_V6 {
        let mut i = 0;
        while i < 16 {
            h = mix(h, word(&key.src, i));
            h = mix(h, word(&key.dst, i));
            i += 4;
        }
    } else {
        h = mix(h, word(&key.src, 0));
        h = mix(h, word(&key.dst, 0));
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
    let mut h = seed
        ^ u32::from_le_bytes([key.sport[0], key.sport[1], key.dport[0], key.dport[1]])
        ^ (u32::from(key.proto) << 8);
    if key.family == crate::FAMILY_V6 {
        let mut i = 0;
        while i < 16 {
            h ^= word(&key.src, i) ^ word(&key.dst, i).rotate_left(16);
            i += 4;
        }
    } else {
        h ^= word(&key.src, 0) ^ word(&key.dst, 0).rotate_left(16);
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
        while i < 16 {
            h = mix(h, word(&key.src, i));
            i += 4;
        }
    } else {
        h = mix(h, word(&key.src, 0));
    }
    finish(h, 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: [u8; 4], sport: u16) -> FlowKey {
        let mut k = FlowKey {
            family: crate::FAMILY_V4,
            proto: crate::PROTO_TCP,
            sport: sport.to_be_bytes(),
            dport: 80u16.to_be_bytes(),
            ..FlowKey::default()
        };
        k.src[..4].copy_from_slice(&src);
        k.dst[..4].copy_from_slice(&[10, 0, 0, 1]);
        k
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
}
