//! Benchmark frames, built by hand (Ethernet, IPv4 or IPv6, TCP or UDP, valid checksums) so
//! that one buffer can become the next flow between two runs without allocating:
//! [`Frame::set_source`] rewrites the source port and the low 32 bits of the source address
//! and recomputes the checksums. The fixtures build theirs independently (etherparse); these
//! only need to be valid, and cheap to change.

use std::net::IpAddr;

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

const ETH_HLEN: usize = 14;

/// What to build.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// UDP instead of TCP.
    pub udp: bool,
    /// TCP flags (ignored for UDP).
    pub tcp_flags: u8,
    pub payload_len: usize,
}

/// A frame and where its fields are.
#[derive(Clone, Debug)]
pub struct Frame {
    pub bytes: Vec<u8>,
    l3: usize,
    l4: usize,
    v6: bool,
    udp: bool,
}

impl Frame {
    pub fn build(s: &Spec) -> Self {
        let v6 = s.src.is_ipv6();
        assert_eq!(v6, s.dst.is_ipv6(), "mixed address families");
        let l3 = ETH_HLEN;
        let l4 = l3 + if v6 { 40 } else { 20 };
        let l4_len = if s.udp { 8 } else { 20 } + s.payload_len;
        let mut b = vec![0u8; l4 + l4_len];
        b[0..6].copy_from_slice(&s.dst_mac);
        b[6..12].copy_from_slice(&s.src_mac);
        b[12..14].copy_from_slice(&(if v6 { 0x86dd_u16 } else { 0x0800 }).to_be_bytes());
        let proto = if s.udp { 17 } else { 6 };
        match (s.src, s.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let h = &mut b[l3..l4];
                h[0] = 0x45;
                h[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
                h[4..6].copy_from_slice(&0x1234_u16.to_be_bytes());
                h[6] = 0x40; // DF
                h[8] = 64;
                h[9] = proto;
                h[12..16].copy_from_slice(&src.octets());
                h[16..20].copy_from_slice(&dst.octets());
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let h = &mut b[l3..l4];
                h[0] = 0x60;
                h[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                h[6] = proto;
                h[7] = 64;
                h[8..24].copy_from_slice(&src.octets());
                h[24..40].copy_from_slice(&dst.octets());
            }
            _ => unreachable!("checked above"),
        }
        {
            let t = &mut b[l4..];
            t[0..2].copy_from_slice(&s.sport.to_be_bytes());
            t[2..4].copy_from_slice(&s.dport.to_be_bytes());
            if s.udp {
                t[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            } else {
                t[4..8].copy_from_slice(&1_u32.to_be_bytes()); // seq
                t[12] = 5 << 4; // data offset: 5 words
                t[13] = s.tcp_flags;
                t[14..16].copy_from_slice(&64240_u16.to_be_bytes()); // window
            }
            for (i, p) in t[l4_len - s.payload_len..].iter_mut().enumerate() {
                *p = b'a' + (i % 26) as u8;
            }
        }
        let mut f = Self {
            bytes: b,
            l3,
            l4,
            v6,
            udp: s.udp,
        };
        f.checksums();
        f
    }

    /// Offset of the TCP/UDP source port.
    pub fn sport_off(&self) -> usize {
        self.l4
    }

    /// Offset of the low 32 bits of the source address.
    pub fn addr_off(&self) -> usize {
        self.l3 + if self.v6 { 8 + 12 } else { 12 }
    }

    /// Offset of the IPv4 header checksum (`None` for IPv6).
    pub fn ip_csum_off(&self) -> Option<usize> {
        (!self.v6).then_some(self.l3 + 10)
    }

    /// Offset of the TCP/UDP checksum.
    pub fn l4_csum_off(&self) -> usize {
        self.l4 + if self.udp { 6 } else { 16 }
    }

    pub fn is_udp(&self) -> bool {
        self.udp
    }

    /// Make this frame flow (`addr_low`, `sport`): the low 32 bits of the source address
    /// and the source port; checksums recomputed.
    pub fn set_source(&mut self, addr_low: u32, sport: u16) {
        let a = self.addr_off();
        self.bytes[a..a + 4].copy_from_slice(&addr_low.to_be_bytes());
        let p = self.sport_off();
        self.bytes[p..p + 2].copy_from_slice(&sport.to_be_bytes());
        self.checksums();
    }

    fn checksums(&mut self) {
        let (l3, l4) = (self.l3, self.l4);
        if !self.v6 {
            self.bytes[l3 + 10..l3 + 12].fill(0);
            let c = fold(sum(&self.bytes[l3..l4]));
            self.bytes[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let co = self.l4_csum_off();
        self.bytes[co..co + 2].fill(0);
        let l4_len = self.bytes.len() - l4;
        let mut s = sum(&self.bytes[l4..]);
        // Pseudo-header: addresses, protocol, length.
        s += if self.v6 {
            sum(&self.bytes[l3 + 8..l3 + 40])
        } else {
            sum(&self.bytes[l3 + 12..l3 + 20])
        };
        s += u64::from(if self.udp { 17_u16 } else { 6 });
        s += l4_len as u64;
        let mut c = fold(s);
        if self.udp && c == 0 {
            c = 0xffff;
        }
        self.bytes[co..co + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// One's-complement sum of big-endian 16-bit words (odd length padded with zero).
fn sum(b: &[u8]) -> u64 {
    let mut s = 0u64;
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        s += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        s += u64::from(*last) << 8;
    }
    s
}

/// Fold a sum to 16 bits and complement it.
fn fold(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The source of flow `i` of a benchmark: port `1024 + i % 64000`, and the low 32 bits of
/// the source address `base + i / 64000` (so 64000 flows per address).
pub const PORTS_PER_ADDR: u32 = 64_000;
pub const FIRST_PORT: u32 = 1024;

pub fn flow_source(base: u32, i: u64) -> (u32, u16) {
    let port = FIRST_PORT + (i % u64::from(PORTS_PER_ADDR)) as u32;
    let addr = base.wrapping_add((i / u64::from(PORTS_PER_ADDR)) as u32);
    (addr, port as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(src: &str, dst: &str, udp: bool) -> Spec {
        Spec {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: 1000,
            dport: 80,
            udp,
            tcp_flags: TCP_SYN,
            payload_len: 7,
        }
    }

    /// A valid checksum sums (with its pseudo-header) to 0xffff, i.e. folds to 0.
    fn verify(f: &Frame) {
        if let Some(o) = f.ip_csum_off() {
            assert_eq!(fold(sum(&f.bytes[o - 10..o + 10])), 0, "ipv4 header");
        }
        let l4 = f.sport_off();
        let mut s = sum(&f.bytes[l4..]);
        s += if f.v6 {
            sum(&f.bytes[f.l3 + 8..f.l3 + 40])
        } else {
            sum(&f.bytes[f.l3 + 12..f.l3 + 20])
        };
        s += u64::from(if f.udp { 17_u16 } else { 6 }) + (f.bytes.len() - l4) as u64;
        assert_eq!(fold(s), 0, "l4");
    }

    #[test]
    fn checksums_stay_valid_when_the_flow_changes() {
        for (src, dst) in [("100.64.0.1", "10.0.0.1"), ("2001:db8::1", "fd00::1")] {
            for udp in [false, true] {
                let mut f = Frame::build(&spec(src, dst, udp));
                verify(&f);
                for i in [0, 1, 63_999, 64_000, 1_000_000] {
                    let (a, p) = flow_source(0x6440_0000, i);
                    f.set_source(a, p);
                    verify(&f);
                    let o = f.addr_off();
                    assert_eq!(f.bytes[o..o + 4], a.to_be_bytes());
                }
            }
        }
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // The classic example header (Wikipedia, "IPv4 header checksum"): b861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(fold(sum(&h)), 0xb861);
    }
}
