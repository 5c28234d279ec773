//! sluice's kernel side. `main.rs` (the balancer's object) and `bin/sluice-bench-ebpf.rs` (the
//! benchmarks' object: `bench`, `gen`) hold only the program entry points; everything else is
//! here so host builds of the workspace compile and lint it too.
//!
//! Map of the modules (Katran's split): `parse` turns a frame into a [`parse::Packet`]
//! view, `flow` keeps connections on their backend, `select` picks a backend for a new
//! flow, `forward` rewrites the frame (DSR or IPIP), `stats` counts (`track`: what a packet
//! did to its connection, which `flow` decides and `stats` counts), `balancer` and `decap`
//! tie them together.
#![no_std]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod atomic;
pub mod balancer;
mod bucket;
pub mod decap;
pub mod flood;
pub mod flow;
pub mod forward;
mod frame;
pub mod maps;
pub mod parse;
pub mod probe;
pub mod select;
pub mod stats;
pub mod track;
