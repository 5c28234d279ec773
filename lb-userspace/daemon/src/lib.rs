//! sluice's daemon: the event loop that owns the data plane ([`daemon`]), the API its CLI
//! and tools talk to ([`api`]), the health checks ([`health`]), the metrics endpoint
//! ([`metrics`]), the autoscaler's driver and providers ([`autoscale`]), the persisted live
//! edits ([`persist`]) and the checks before it attaches anything ([`preflight`]).
//!
//! The pure parts it runs (configuration, state, plans, policies) are `sluice-core`'s; the
//! kernel is reached only through `sluice-dataplane`.

pub mod announce;
pub mod api;
pub mod autoscale;
pub mod daemon;
pub mod doctor;
pub mod health;
pub mod load;
pub mod lookup;
pub mod metrics;
pub mod notify;
pub mod persist;
pub mod preflight;
pub mod state;

use sluice_core::{config, lifecycle, plan};
use sluice_dataplane::{self as dataplane, atomic_file};
