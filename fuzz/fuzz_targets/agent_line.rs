//! HAProxy agent-check answers: the line read off the connection
//! (`sluice_daemon::load::read_agent_line`, segments of a size the first byte picks) and
//! parsed (`sluice_core::load::agent::parse`). What a line says, written back as an agent
//! would (`load::agent_text`), parses to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::load::agent;
use sluice_daemon::load::{agent_text, read_agent_line};

fn round_trip(line: &str) {
    if let Ok(Some(a)) = agent::parse(line) {
        let text = agent_text(&a);
        assert_eq!(agent::parse(&text), Ok(Some(a)), "{line:?} → {text:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let mut reader = sluice_fuzz::Chunked {
        data: rest,
        step: usize::from(step) + 1,
    };
    if let Ok(line) = sluice_fuzz::runtime().block_on(read_agent_line(&mut reader)) {
        assert!(line.len() <= agent::MAX_LINE && !line.contains('\n'));
        round_trip(&line);
    }
    // The parser on its own, on any text (a line with newlines inside, too).
    round_trip(&String::from_utf8_lossy(rest));
});
