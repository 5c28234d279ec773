//! `#[repr(C)]` keys and values shared by the XDP program (`lb-ebpf`) and the daemon
//! (`lb-userspace`) through BPF maps, plus the pure functions both sides must compute
//! identically (the flow hash). No logic that only one side needs lives here.
//!
//! Every type has explicit padding and a compile-time size assertion: a change in layout
//! is a build error, not a silent mismatch between kernel and userspace.
#![no_std]

pub mod bench;
pub mod flow_table;
pub mod hash;
pub mod maps;
pub mod reason;

pub use flow_table::*;
pub use maps::*;

/// An IPv4 TCP flow key from `src`:`sport` to 10.0.0.1:`dport`, for the unit tests.
#[cfg(test)]
pub(crate) fn test_key(src: [u8; 4], sport: u16, dport: u16) -> FlowKey {
    let mut k = FlowKey {
        family: FAMILY_V4,
        proto: PROTO_TCP,
        sport: sport.to_be_bytes(),
        dport: dport.to_be_bytes(),
        ..FlowKey::default()
    };
    k.src[..4].copy_from_slice(&src);
    k.dst[..4].copy_from_slice(&[10, 0, 0, 1]);
    k
}
