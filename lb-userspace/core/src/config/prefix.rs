//! IPv4 and IPv6 prefixes (`daemon.encap_source_v4`/`_v6`): parsed, checked for host bits,
//! and written back as `addr/len`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// An IPv4 prefix with its host bits clear (`172.16.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Prefix {
    addr: Ipv4Addr,
    len: u8,
}

/// An IPv6 prefix with its host bits clear (`fd00:5c::/96`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Prefix {
    addr: Ipv6Addr,
    len: u8,
}

impl Ipv4Prefix {
    /// `addr/len`; `None` when `len > 32` or `addr` has bits set past `len`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        let p = Self { addr, len };
        (len <= 32 && addr.to_bits() & !p.mask_bits() == 0).then_some(p)
    }
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
    /// The netmask (`255.255.0.0` for a /16).
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.mask_bits())
    }
    fn mask_bits(&self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0)
    }
}

impl Ipv6Prefix {
    /// `addr/len`; `None` when `len > 128` or `addr` has bits set past `len`.
    pub fn new(addr: Ipv6Addr, len: u8) -> Option<Self> {
        let p = Self { addr, len };
        (len <= 128 && addr.to_bits() & !p.mask_bits() == 0).then_some(p)
    }
    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }
    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
    /// The netmask (`ffff:ffff::` for a /32).
    pub fn mask(&self) -> Ipv6Addr {
        Ipv6Addr::from_bits(self.mask_bits())
    }
    fn mask_bits(&self) -> u128 {
        u128::MAX
            .checked_shl(128 - u32::from(self.len))
            .unwrap_or(0)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Splits `addr/len` and parses both halves; the message says what is wrong.
fn split_prefix<A: FromStr>(s: &str, family: &str, max: u8) -> Result<(A, u8), String> {
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| format!("\"{s}\" is not a prefix: expected <{family} address>/<length>"))?;
    let addr = a
        .parse::<A>()
        .map_err(|_| format!("\"{s}\": \"{a}\" is not an {family} address"))?;
    let len =
        l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(|| {
            format!("\"{s}\": prefix length \"{l}\" is not a number in 0..={max}")
        })?;
    Ok((addr, len))
}

impl FromStr for Ipv4Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = split_prefix::<Ipv4Addr>(s, "IPv4", 32)?;
        Self::new(addr, len).ok_or_else(|| {
            let canonical = Ipv4Addr::from_bits(addr.to_bits() & Self { addr, len }.mask_bits());
            format!("\"{s}\" has host bits set (did you mean {canonical}/{len}?)")
        })
    }
}

impl FromStr for Ipv6Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = split_prefix::<Ipv6Addr>(s, "IPv6", 128)?;
        Self::new(addr, len).ok_or_else(|| {
            let canonical = Ipv6Addr::from_bits(addr.to_bits() & Self { addr, len }.mask_bits());
            format!("\"{s}\" has host bits set (did you mean {canonical}/{len}?)")
        })
    }
}

impl Serialize for Ipv4Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for Ipv6Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
