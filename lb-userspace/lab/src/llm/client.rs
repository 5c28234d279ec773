//! A small blocking HTTP/1.1 client of the simulated model server: keep-alive, streamed
//! completions (chunked SSE) timed token by token, and `GET` for `/metrics`.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use super::LlmError;
use crate::lab::Node;

/// One streamed completion, as the client saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Completion {
    /// Token chunks received.
    pub tokens: u32,
    /// Whether `data: [DONE]` came.
    pub done: bool,
    /// Request sent → first token chunk.
    pub ttft: Duration,
    /// Request sent → `[DONE]` (or the end).
    pub total: Duration,
    /// Mean time between token chunks (zero with fewer than two tokens).
    pub mean_itl: Duration,
    /// The `X-Backend` header.
    pub backend: Option<String>,
}

/// A keep-alive connection to the server.
#[derive(Debug)]
pub struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
    host: String,
}

struct Head {
    status: u16,
    chunked: bool,
    length: usize,
    backend: Option<String>,
}

impl Client {
    /// Connect to `to` (from `node`'s namespace if given); reads time out after `timeout`.
    pub fn connect(
        node: Option<&Node>,
        to: SocketAddr,
        timeout: Duration,
    ) -> Result<Self, LlmError> {
        let connect = || TcpStream::connect_timeout(&to, timeout);
        let s = match node {
            Some(n) => n
                .run(connect)
                .map_err(|e| LlmError::Io(format!("entering {}: {e}", n.ns())))?,
            None => connect(),
        }
        .map_err(|e| LlmError::Io(format!("connecting to {to}: {e}")))?;
        s.set_read_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        Ok(Self {
            w: s.try_clone()?,
            r: BufReader::new(s),
            host: to.to_string(),
        })
    }

    /// `GET path`: status and body.
    pub fn get(&mut self, path: &str) -> Result<(u16, String), LlmError> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.w.write_all(req.as_bytes())?;
        let head = self.head()?;
        let body = self.body(&head)?;
        Ok((head.status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// A streamed completion of `prompt_tokens` and `max_tokens`.
    pub fn complete(
        &mut self,
        prompt_tokens: u32,
        max_tokens: u32,
    ) -> Result<Completion, LlmError> {
        let body = format!(
            r#"{{"prompt_tokens":{prompt_tokens},"max_tokens":{max_tokens},"stream":true}}"#
        );
        let req = format!(
            "POST /v1/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        let start = Instant::now();
        self.w.write_all(req.as_bytes())?;
        let head = self.head()?;
        if head.status != 200 || !head.chunked {
            let body = self.body(&head)?;
            return Err(LlmError::Protocol(format!(
                "status {}: {}",
                head.status,
                String::from_utf8_lossy(&body).trim()
            )));
        }
        let mut c = Completion {
            backend: head.backend,
            ..Completion::default()
        };
        let (mut first, mut last) = (None, start);
        let mut pending = Vec::new();
        while let Some(chunk) = self.chunk()? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = pending.drain(..end + 2).collect();
                let data = String::from_utf8_lossy(&event);
                let data = data.trim().strip_prefix("data: ").unwrap_or("");
                if data == "[DONE]" {
                    c.done = true;
                } else if data.contains("\"choices\"") {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = now;
                    c.tokens += 1;
                }
            }
        }
        c.total = start.elapsed();
        if let Some(f) = first {
            c.ttft = f - start;
            if c.tokens > 1 {
                c.mean_itl = (last - f) / (c.tokens - 1);
            }
        }
        Ok(c)
    }

    fn line(&mut self) -> Result<String, LlmError> {
        let mut l = String::new();
        if self.r.read_line(&mut l)? == 0 {
            return Err(LlmError::Protocol("connection closed".into()));
        }
        Ok(l.trim_end().to_owned())
    }

    fn head(&mut self) -> Result<Head, LlmError> {
        let status = self.line()?;
        let status = status
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| LlmError::Protocol(format!("status line {status:?}")))?;
        let mut head = Head {
            status,
            chunked: false,
            length: 0,
            backend: None,
        };
        loop {
            let l = self.line()?;
            if l.is_empty() {
                return Ok(head);
            }
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = v.eq_ignore_ascii_case("chunked");
            } else if k.eq_ignore_ascii_case("content-length") {
                head.length = v
                    .parse()
                    .map_err(|_| LlmError::Protocol(format!("content-length {v:?}")))?;
            } else if k.eq_ignore_ascii_case("x-backend") {
                head.backend = Some(v.to_owned());
            }
        }
    }

    fn body(&mut self, head: &Head) -> Result<Vec<u8>, LlmError> {
        if head.chunked {
            let mut body = Vec::new();
            while let Some(c) = self.chunk()? {
                body.extend(c);
            }
            return Ok(body);
        }
        let mut body = vec![0; head.length];
        self.r.read_exact(&mut body)?;
        Ok(body)
    }

    /// The next chunk of a chunked body; `None` after the last.
    fn chunk(&mut self) -> Result<Option<Vec<u8>>, LlmError> {
        let size = self.line()?;
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| LlmError::Protocol(format!("chunk size {size:?}")))?;
        let mut data = vec![0; n + 2];
        self.r.read_exact(&mut data)?;
        data.truncate(n);
        Ok((n > 0).then_some(data))
    }
}
