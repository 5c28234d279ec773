//! What the parser fuzz targets share: a tokio runtime for the async readers, a reader that
//! hands its bytes over in chunks of a chosen size, and the configuration's round trip.

use std::{
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
};

use sluice_core::config;
use tokio::io::{AsyncRead, ReadBuf};

/// One current-thread runtime (timers enabled) for every input of a target.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime")
    })
}

/// An in-memory reader giving at most `step` bytes a read (a peer whose bytes arrive in
/// several segments), then the end of the stream.
pub struct Chunked<'a> {
    pub data: &'a [u8],
    pub step: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.step.max(1).min(self.data.len()).min(buf.remaining());
        let (head, tail) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = tail;
        Poll::Ready(Ok(()))
    }
}

/// A valid configuration exports to TOML that parses again to the same configuration;
/// an invalid one renders its problems.
pub fn check_config(text: &str, origin: &str) {
    match config::parse(text, origin) {
        Ok(loaded) => {
            let exported = loaded
                .config
                .to_toml()
                .unwrap_or_else(|e| panic!("a valid configuration does not export: {e}"));
            let again = config::parse(&exported, "exported").unwrap_or_else(|e| {
                panic!("the exported configuration does not parse: {e}\n{exported}")
            });
            assert_eq!(again.config, loaded.config, "export round trip\n{exported}");
        }
        Err(e) => {
            let _ = e.to_string();
            for p in e.problems() {
                let _ = p.render(origin);
            }
        }
    }
}
