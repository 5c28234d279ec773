//! API requests as the daemon's API server takes them: the request line read off the
//! socket (`api::server::read_request`, segments of a size the first byte picks) and
//! decoded (`api::server::decode`: the JSON `Request`, and an `apply`'s configuration parsed
//! and validated). A decoded request encodes to JSON that decodes to the same request; an
//! applied configuration round-trips through its TOML export.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_daemon::api::server::{self, Call, ReadLimits};

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let limits = ReadLimits {
        max_bytes: server::MAX_REQUEST_BYTES,
        idle: server::IDLE_TIMEOUT,
        total: server::REQUEST_TIMEOUT,
    };
    let mut reader = sluice_fuzz::Chunked {
        data: rest,
        step: usize::from(step) * 64 + 1,
    };
    let line = sluice_fuzz::runtime().block_on(server::read_request(&mut reader, limits));
    let line = match line {
        Ok(line) => {
            assert!(!line.contains(&b'\n') && rest.starts_with(&line));
            line
        }
        // No newline: the daemon drops the connection.
        Err(_) => {
            assert!(!rest.contains(&b'\n'));
            return;
        }
    };
    match server::decode(&line) {
        Ok(Call::Other(req)) => {
            let json = serde_json::to_vec(&req).expect("a request encodes");
            match server::decode(&json) {
                Ok(Call::Other(again)) => assert_eq!(
                    serde_json::to_vec(&again).expect("a request encodes"),
                    json,
                    "request round trip"
                ),
                other => panic!("{} decodes to {other:?}", String::from_utf8_lossy(&json)),
            }
        }
        Ok(Call::Apply { config, .. }) => {
            let text = config.to_toml().expect("an applied configuration exports");
            let again = server::parse_apply(&text)
                .unwrap_or_else(|e| panic!("the export does not parse: {e}\n{text}"));
            assert_eq!(again, *config, "export round trip\n{text}");
        }
        Err(_) => {}
    }
});
