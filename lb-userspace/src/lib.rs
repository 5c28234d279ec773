//! The `sluice` command: the CLI over the daemon (`sluice run`), its API, the data plane
//! (for the commands that work without a daemon: `detach`, `decap`, `lookup --offline`) and
//! the lab (`demo`, `lab`, `bench`). `main.rs` only parses arguments and dispatches.
//!
//! The crates below it, and what each may depend on, are pictured in ARCHITECTURE.md.

pub mod cli;
pub mod logging;

use sluice_core::{autoscale, config};
use sluice_daemon::{api, daemon, health, metrics, notify, persist, preflight, state};
use sluice_dataplane::{self as dataplane, atomic_file};
use sluice_lab::{bench, lab};
