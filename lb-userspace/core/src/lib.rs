//! sluice's pure core: the configuration and its validation, the model the data plane is
//! given ([`model`]), the Maglev table builder, the sequence schedulers, edit plans, backend
//! lifecycle, the daemon's [`state::State`], health transitions, the autoscaler's policies
//! and its simulator, and the merge of persisted live edits.
//!
//! Nothing here makes a system call beyond reading files it is handed: no aya, no tokio, no
//! libc (`cargo tree -p sluice-core`). The data plane (`sluice-dataplane`) and the daemon
//! (`sluice-daemon`) build on it.

pub mod announce;
pub mod autoscale;
pub mod config;
pub mod fingerprint;
pub mod health;
pub mod lifecycle;
pub mod load;
pub mod maglev;
pub mod model;
pub mod persist;
pub mod plan;
pub mod sched;
pub mod state;
