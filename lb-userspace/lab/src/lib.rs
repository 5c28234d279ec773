//! sluice's lab and benchmarks (not published): network-namespace topologies with test
//! servers and an in-process daemon ([`lab`]), the benchmarks and traffic generator
//! ([`bench`]) that `sluice bench` and the tests run, the demo ([`demo`]) that
//! `sluice demo` runs, and an LLM-like backend with a load generator ([`llm`]). It reaches
//! the balancer's maps through `sluice-dataplane`'s `test-helpers` feature.

pub mod bench;
pub mod conn;
pub mod demo;
pub mod fleet_demo;
pub mod lab;
pub mod llm;

use sluice_core::{config, maglev};
use sluice_daemon::{api, daemon, health, state};
use sluice_dataplane as dataplane;
