//! One probe of one backend: TCP connect, HTTP GET, or a UDP exchange, bounded by the
//! configured timeout.

use std::{net::IpAddr, time::Duration};

use tokio::{
    net::{TcpStream, UdpSocket},
    time::timeout,
};

use crate::config::{CheckKind, HealthConfig};

/// Probe `backend`; (success, what happened).
pub async fn probe(backend: IpAddr, spec: &HealthConfig) -> (bool, String) {
    let limit = Duration::from_millis(u64::from(spec.timeout_ms));
    let run = async {
        match spec.check {
            CheckKind::None => Ok("no check".to_owned()),
            CheckKind::Tcp => tcp(backend, spec.port).await,
            CheckKind::Http => http(backend, spec).await,
            CheckKind::Udp => udp(backend, spec).await,
        }
    };
    match timeout(limit, run).await {
        Ok(Ok(what)) => (true, what),
        Ok(Err(why)) => (false, why),
        Err(_) => (false, format!("no answer within {} ms", spec.timeout_ms)),
    }
}

async fn tcp(backend: IpAddr, port: u16) -> Result<String, String> {
    TcpStream::connect((backend, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    Ok("connected".to_owned())
}

/// Why a `GET` gave no answer; the texts are the health check's reasons.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("request: {0}")]
    Request(hyper::http::Error),
    #[error("send: {0}")]
    Send(hyper::Error),
    #[error("not an HTTP response: {0}")]
    NotHttp(hyper::Error),
    #[error("receive: {0}")]
    Receive(hyper::Error),
    #[error("receive: the body is over {0} bytes")]
    TooLarge(usize),
    #[error("receive: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
}

/// What a `GET` answered: the status and, when asked for, the whole body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Option<hyper::body::Bytes>,
}

/// Aborts the task driving a connection when the request is done or dropped (a timeout),
/// so that no connection outlives its probe.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `GET path` on `backend:port` over a fresh connection (one request, `Connection: close`):
/// the health check's and the autoscaler's backend-metric request. `Host` is the backend's
/// address without the port. With `body_limit`, the body is read whole (any framing:
/// length, chunked or until close) if it is at most that many bytes; without it, only the
/// status is read. The caller bounds the time.
pub async fn get(
    backend: IpAddr,
    port: u16,
    path: &str,
    agent: &str,
    body_limit: Option<usize>,
) -> Result<Answer, GetError> {
    let s = TcpStream::connect((backend, port))
        .await
        .map_err(GetError::Connect)?;
    let host = match backend {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    get_on(s, host, path, agent, body_limit).await
}

/// [`get`] on a connection already made (`s`), with `host` as the `Host` header: the
/// request written and the answer read and parsed. Public for the parser fuzzer
/// (`fuzz/fuzz_targets/http_answer.rs`), which answers from memory.
pub async fn get_on<S>(
    s: S,
    host: String,
    path: &str,
    agent: &str,
    body_limit: Option<usize>,
) -> Result<Answer, GetError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt as _, Empty, Limited};
    use hyper::{
        Request,
        body::Bytes,
        header::{CONNECTION, HOST, USER_AGENT},
    };

    let req = Request::get(path)
        .header(HOST, host)
        .header(USER_AGENT, agent)
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(GetError::Request)?;
    // Header names as they were written by hand before (`Host:`, not `host:`).
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .map_err(GetError::Send)?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        // Its errors surface through the request's result.
        let _ = conn.await;
    }));
    let response = sender.send_request(req).await.map_err(|e| {
        if e.is_parse() {
            GetError::NotHttp(e)
        } else if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
            GetError::Receive(e)
        } else {
            GetError::Send(e)
        }
    })?;
    let status = response.status().as_u16();
    let body = match body_limit {
        None => None,
        Some(limit) => Some(
            Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        GetError::TooLarge(limit)
                    } else {
                        GetError::Body(e)
                    }
                })?
                .to_bytes(),
        ),
    };
    Ok(Answer { status, body })
}

async fn http(backend: IpAddr, spec: &HealthConfig) -> Result<String, String> {
    // The status is all the check needs.
    let code = get(backend, spec.port, &spec.path, "sluice-health", None)
        .await
        .map_err(|e| e.to_string())?
        .status;
    judge_status(code, spec.expect_status)
}

/// An `http` check's verdict on the status `code` of its answer (`expect` inclusive).
pub fn judge_status(code: u16, expect: (u16, u16)) -> Result<String, String> {
    let (lo, hi) = expect;
    if (lo..=hi).contains(&code) {
        Ok(format!("HTTP {code}"))
    } else {
        Err(format!("HTTP {code}, expected {lo}-{hi}"))
    }
}

async fn udp(backend: IpAddr, spec: &HealthConfig) -> Result<String, String> {
    let local: IpAddr = if backend.is_ipv4() {
        [0, 0, 0, 0].into()
    } else {
        [0u16; 8].into()
    };
    let s = UdpSocket::bind((local, 0))
        .await
        .map_err(|e| format!("bind: {e}"))?;
    s.connect((backend, spec.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.send(spec.send.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 2048];
    let n = s
        .recv(&mut buf)
        .await
        .map_err(|e| format!("receive: {e}"))?;
    let reply = String::from_utf8_lossy(&buf[..n]);
    match &spec.expect {
        Some(want) if !reply.contains(want.as_str()) => {
            Err(format!("reply {reply:?} lacks {want:?}"))
        }
        _ => Ok(format!("{n}-byte reply")),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn spec(check: CheckKind, port: u16) -> HealthConfig {
        HealthConfig {
            check,
            port,
            interval_ms: 1000,
            timeout_ms: 500,
            rise: 1,
            fall: 1,
            path: "/health".to_owned(),
            expect_status: (200, 299),
            send: "ping".to_owned(),
            expect: Some("pong".to_owned()),
        }
    }

    #[tokio::test]
    async fn tcp_http_udp_on_loopback() {
        let lo: IpAddr = [127, 0, 0, 1].into();
        // A refused port fails.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let (ok, why) = probe(lo, &spec(CheckKind::Tcp, port)).await;
        assert!(!ok && why.contains("connect"), "{why}");

        // HTTP: 200 passes, 503 fails.
        for (status, want) in [(200, true), (503, false)] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            tokio::spawn(async move {
                let (mut c, _) = l.accept().await.unwrap();
                let mut b = [0u8; 512];
                let n = c.read(&mut b).await.unwrap();
                assert!(String::from_utf8_lossy(&b[..n]).starts_with("GET /health HTTP/1.1\r\n"));
                c.write_all(format!("HTTP/1.1 {status} X\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
            });
            let (ok, why) = probe(lo, &spec(CheckKind::Http, port)).await;
            assert_eq!(ok, want, "{why}");
        }

        // UDP: a reply containing "pong" passes; silence times out.
        let u = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = u.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            let (n, from) = u.recv_from(&mut b).await.unwrap();
            assert_eq!(&b[..n], b"ping");
            u.send_to(b"pong!", from).await.unwrap();
        });
        let (ok, why) = probe(lo, &spec(CheckKind::Udp, port)).await;
        assert!(ok, "{why}");
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (ok, why) = probe(
            lo,
            &spec(CheckKind::Udp, silent.local_addr().unwrap().port()),
        )
        .await;
        assert!(!ok && why.contains("no answer"), "{why}");
    }

    /// The request as before (title-case headers, `Host` the address without the port,
    /// `Connection: close`); a garbage answer is "not an HTTP response"; an answer that
    /// stalls after its head still passes on its status.
    #[tokio::test]
    async fn http_request_and_answers() {
        let lo: IpAddr = [127, 0, 0, 1].into();
        let answers: [&[u8]; 3] = [
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        ];
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            for a in answers {
                let (mut c, _) = l.accept().await.unwrap();
                let mut b = [0u8; 512];
                let n = c.read(&mut b).await.unwrap();
                requests.push(String::from_utf8_lossy(&b[..n]).into_owned());
                c.write_all(a).await.unwrap();
                // Held open (the stalled body) until the probe is done.
                let _ = c.read(&mut b).await;
            }
            requests
        });
        let (ok, why) = probe(lo, &spec(CheckKind::Http, port)).await;
        assert!(ok && why == "HTTP 204", "{why}");
        let (ok, why) = probe(lo, &spec(CheckKind::Http, port)).await;
        assert!(!ok && why.starts_with("not an HTTP response"), "{why}");
        let (ok, why) = probe(lo, &spec(CheckKind::Http, port)).await;
        assert!(ok && why == "HTTP 200", "{why}");
        let requests = server.await.unwrap();
        for r in &requests {
            assert!(r.starts_with("GET /health HTTP/1.1\r\n"), "{r}");
            assert!(r.contains("\r\nHost: 127.0.0.1\r\n"), "{r}");
            assert!(r.contains("\r\nUser-Agent: sluice-health\r\n"), "{r}");
            assert!(r.contains("\r\nConnection: close\r\n"), "{r}");
            assert!(r.ends_with("\r\n\r\n"), "{r}");
        }
    }
}
