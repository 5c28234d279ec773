//! The offline simulator.
