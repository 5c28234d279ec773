//! The flow hash: MurmurHash3's 32-bit block mix over the 5-tuple, seeded.
//!
//! Both sides compute it: the XDP program to pick a lookup-table slot and the outer IPIP
//! source, userspace to predict and explain (`plan`, tests). Every LB instance with the
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
