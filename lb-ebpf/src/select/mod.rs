//! Choosing a backend for a new flow.

mod maglev;

pub use maglev::maglev;
