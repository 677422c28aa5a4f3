//! Slow and greedy clients against the shared listener, on loopback: a
//! slowloris must not make `/healthz` unresponsive, half-sent requests are
//! closed after the header-read timeout, stalled uploads after the request
//! timeout, and connections over the limit are closed on accept.

use axum::routing::{get, post};
use axum::Router;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tenure_http::{serve, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(limits: Limits) -> anyhow::Result<Server> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/upload", post(|body: String| async move { body.len().to_string() }))
        .route(
            "/peer",
            get(|axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>| async move {
                peer.ip().to_string()
            }),
        );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve("test", listener, app, limits, shutdown.clone()));
    Ok(Server {
        addr,
        shutdown,
        task: Some(task),
    })
}

/// One request on a fresh connection; the status line and body.
async fn get_once(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    get_from("127.0.0.1", addr, path).await
}

/// As `get_once`, from another loopback address: another client.
async fn get_from(source: &str, addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse()?)?;
    let mut s = socket.connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// Whether the server has closed `s` (EOF or reset) within `wait`.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or similar before the close is fine; keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

/// Opens `n` connections that each send half a request head and stop.
async fn half_sent(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .await?;
        held.push(s);
    }
    Ok(held)
}

#[tokio::test]
async fn three_hundred_half_sent_requests_neither_block_healthz_nor_outlive_the_header_timeout(
) -> anyhow::Result<()> {
    let server = start(Limits {
        header_read_timeout: Duration::from_secs(2),
        ..Limits::default()
    })
    .await?;
    assert_eq!(Limits::default().max_connections_per_client, 256);
    let mut held = half_sent(server.addr, 300).await?;

    // The slow client holds its 256 (`max_connections_per_client`); anyone
    // else is served at once.
    let t = Instant::now();
    let answer = get_from("127.0.0.2", server.addr, "/healthz").await?;
    let took = t.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took < Duration::from_millis(500), "healthz took {took:?}");

    // Each half-sent request is closed once the header timeout is over,
    // not held for as long as the client likes.
    let deadline = Instant::now() + Duration::from_secs(5);
    for (i, s) in held.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            closed_within(s, left).await,
            "half-sent connection {i} still open 5 s after a 2 s header timeout"
        );
    }
    let answer = get_once(server.addr, "/healthz").await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    Ok(())
}

#[tokio::test]
async fn a_keep_alive_connection_outlives_the_header_timeout_and_closes_when_idle(
) -> anyhow::Result<()> {
    // Clients keep idle connections pooled and reuse them later: the
    // header clock must not close them between requests.
    let server = start(Limits {
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(3),
        ..Limits::default()
    })
    .await?;
    let mut s = TcpStream::connect(server.addr).await?;
    let mut buf = [0u8; 256];
    for _ in 0..2 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await?;
        let n = s.read(&mut buf).await?;
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let t = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    assert!(
        t.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_head_trickled_a_byte_at_a_time_is_closed_at_the_header_timeout() -> anyhow::Result<()> {
    let server = start(Limits {
        header_read_timeout: Duration::from_secs(1),
        ..Limits::default()
    })
    .await?;
    let mut s = TcpStream::connect(server.addr).await?;
    let t = Instant::now();
    let head =
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for b in head {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if t.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    assert!(closed_within(&mut s, Duration::from_secs(1)).await);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    Ok(())
}

#[tokio::test]
async fn a_stalled_upload_gets_408_after_the_request_timeout() -> anyhow::Result<()> {
    let server = start(Limits {
        request_timeout: Duration::from_secs(1),
        ..Limits::default()
    })
    .await?;
    let mut s = TcpStream::connect(server.addr).await?;
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        .await?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(4), s.read(&mut buf)).await??;
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    Ok(())
}

#[tokio::test]
async fn a_connection_that_moves_no_bytes_is_closed_after_the_idle_timeout() -> anyhow::Result<()> {
    // Header timeout longer than the idle one, so only the idle timeout
    // can close this connection that never sends anything.
    let server = start(Limits {
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(1),
        ..Limits::default()
    })
    .await?;
    let mut s = TcpStream::connect(server.addr).await?;
    assert!(closed_within(&mut s, Duration::from_secs(4)).await);
    Ok(())
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_on_accept_and_slots_come_back() -> anyhow::Result<()>
{
    let server = start(Limits {
        header_read_timeout: Duration::from_secs(2),
        max_connections: 20,
        ..Limits::default()
    })
    .await?;
    let mut held = half_sent(server.addr, 20).await?;
    // Give the server a moment to accept all twenty.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = TcpStream::connect(server.addr).await?;
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert!(
        closed_within(&mut over, Duration::from_secs(1)).await,
        "the 21st connection was served or held"
    );
    for s in &mut held {
        assert!(closed_within(s, Duration::from_secs(5)).await);
    }
    let answer = get_once(server.addr, "/healthz").await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    Ok(())
}

#[tokio::test]
async fn one_client_address_is_held_to_its_own_limit() -> anyhow::Result<()> {
    let server = start(Limits {
        max_connections_per_client: 5,
        ..Limits::default()
    })
    .await?;
    let _held = half_sent(server.addr, 5).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = TcpStream::connect(server.addr).await?;
    assert!(closed_within(&mut over, Duration::from_secs(1)).await);
    let answer = get_from("127.0.0.2", server.addr, "/healthz").await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    Ok(())
}

#[tokio::test]
async fn handlers_see_the_peer_address_and_shutdown_returns() -> anyhow::Result<()> {
    let mut server = start(Limits::default()).await?;
    let answer = get_once(server.addr, "/peer").await?;
    assert!(answer.ends_with("127.0.0.1"), "{answer}");
    server.shutdown.cancel();
    let task = server.task.take().expect("task");
    tokio::time::timeout(Duration::from_secs(5), task).await???;
    Ok(())
}
