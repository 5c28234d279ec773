//! One probe of one backend: TCP connect, HTTP GET, or a UDP exchange, bounded by the
//! configured timeout.

use std::{net::IpAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
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

/// Connect to `backend:port` and send `GET path` (one request, then the server closes):
/// the health check's and the autoscaler's backend-metric request.
pub async fn send_get(
    backend: IpAddr,
    port: u16,
    path: &str,
    agent: &str,
) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect((backend, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let host = match backend {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {agent}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    Ok(s)
}

async fn http(backend: IpAddr, spec: &HealthConfig) -> Result<String, String> {
    let mut s = send_get(backend, spec.port, &spec.path, "sluice-health").await?;
    // The status line is all we need; read until it is complete.
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or("");
    let code: u16 = line
        .strip_prefix("HTTP/")
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP response: {:?}",
                line.chars().take(60).collect::<String>()
            )
        })?;
    let (lo, hi) = spec.expect_status;
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
}
