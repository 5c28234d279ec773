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
