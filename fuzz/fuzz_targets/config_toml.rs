//! The configuration file: TOML text → validated `Config` (`sluice_core::config::parse`, as
//! `sluice run --config` and `config check` read it), then its export parsed back to the
//! same `Config`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        sluice_fuzz::check_config(text, "fuzz.toml");
    }
});
