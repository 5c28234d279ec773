//! The autoscaler as the daemon runs it: the pure policies and the simulator are the
//! core's (re-exported here); the driver (a task that samples, decides and turns plans into
//! edits), the providers of new backends and the persisted decision history are the
//! daemon's.

pub use sluice_core::autoscale::*;

pub mod driver;
pub mod persist;
pub mod provider;
