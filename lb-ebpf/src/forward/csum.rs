//! Internet checksum of an IPv4 header built on the stack.

/// RFC 1071 checksum of a 20-byte IPv4 header whose checksum field is zero, held as ten
/// 16-bit words as they lie in memory (network byte order bytes); the result is the word to
/// store as it is (the one's-complement sum is byte-order independent).
#[inline(always)]
pub fn ipv4_header(h: &[u16; 10]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < 10 {
        sum += u32::from(h[i]);
        i += 1;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
