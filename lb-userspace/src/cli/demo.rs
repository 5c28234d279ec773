//! `sluice demo`: the lab's demo ([`sluice_lab::demo`]), with the backend table of
//! `sluice backend list`.

use std::path::Path;

pub fn run(config_file: Option<&Path>, connections: usize) -> anyhow::Result<()> {
    sluice_lab::demo::run(config_file, connections, super::backend::print)
}
