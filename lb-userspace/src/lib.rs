//! sluice's control plane: configuration, the Maglev table builder, and the data-plane
//! owner. The `sluice` binary (`main.rs`) is a thin CLI over this library.

pub mod api;
pub mod atomic_file;
pub mod autoscale;
pub mod bench;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod health;
pub mod lab;
pub mod lifecycle;
pub mod lookup;
pub mod maglev;
pub mod metrics;
pub mod persist;
pub mod plan;
pub mod preflight;
pub mod sched;
pub mod state;
