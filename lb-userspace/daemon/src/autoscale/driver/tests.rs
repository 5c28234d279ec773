use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

#[tokio::test]
async fn backend_metric_over_http() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        for body in ["42.5\n", "not a number"] {
            let (mut c, _) = l.accept().await.unwrap();
            let mut b = [0u8; 512];
            let n = c.read(&mut b).await.unwrap();
            assert!(String::from_utf8_lossy(&b[..n]).starts_with("GET /queue HTTP/1.1\r\n"));
            c.write_all(format!("HTTP/1.1 200 OK\r\n\r\n{body}").as_bytes())
                .await
                .unwrap();
        }
    });
    let m = BackendMetricConfig {
        port,
        path: "/queue".to_owned(),
        timeout_ms: 500,
    };
    let lo = IpAddr::from([127, 0, 0, 1]);
    assert_eq!(fetch_all(&[lo], &m).await, vec![Some(42.5)]);
    assert_eq!(fetch_all(&[lo], &m).await, vec![None]);
    // Nobody listens any more: no answer.
    assert_eq!(fetch_all(&[lo], &m).await, vec![None]);
}

/// One local server answer per connection (the request is read, then `answer` sent and
/// the connection closed).
async fn answering(answers: Vec<Vec<u8>>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        for a in answers {
            let (mut c, _) = l.accept().await.unwrap();
            let mut b = [0u8; 512];
            let _ = c.read(&mut b).await.unwrap();
            c.write_all(&a).await.unwrap();
        }
    });
    port
}

/// A chunked answer is read whole (the hand-written client saw no metric in it), with
/// or without a length; a non-2xx status or a body over the limit gives no value.
#[tokio::test]
async fn backend_metric_chunked_and_limits() {
    let big = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
        METRIC_BODY_LIMIT + 1,
        "1".repeat(METRIC_BODY_LIMIT + 1)
    );
    let port = answering(vec![
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n17\r\n3\r\n.25\r\n0\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n7.5".to_vec(),
        b"HTTP/1.1 503 Busy\r\nContent-Length: 1\r\n\r\n9".to_vec(),
        big.into_bytes(),
    ])
    .await;
    let m = BackendMetricConfig {
        port,
        path: "/queue".to_owned(),
        timeout_ms: 2000,
    };
    let lo = IpAddr::from([127, 0, 0, 1]);
    assert_eq!(fetch_all(&[lo], &m).await, vec![Some(17.25)], "chunked");
    assert_eq!(fetch_all(&[lo], &m).await, vec![Some(7.5)], "length");
    assert_eq!(fetch_all(&[lo], &m).await, vec![None], "503");
    assert_eq!(fetch_all(&[lo], &m).await, vec![None], "over the limit");
}
