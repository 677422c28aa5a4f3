//! The HTTP listener shared by ingest and the API (and so by `tenure up`,
//! which runs both). `axum::serve` has no header-read timeout, no idle
//! timeout and no connection limit: one client holding a thousand half-sent
//! requests used up the process's file descriptors and every listener in it
//! stopped answering, `/healthz` included. [`serve`] bounds each of those:
//!
//! - **header read**: a request head (request line and headers) must be
//!   complete within `header_read_timeout` of its first byte (of accept,
//!   for a connection's first request);
//! - **request**: a handler, body upload included, must answer within
//!   `request_timeout` (408 otherwise);
//! - **idle**: a connection with no byte read or written for
//!   `idle_timeout` is closed: a keep-alive connection waiting for its next
//!   request, a stalled transfer, a client that never reads its response.
//!   It is longer than the header-read timeout on purpose: clients keep
//!   idle connections in their pools for up to 90 s, and one that reuses a
//!   connection just as the server closes it loses the request;
//! - **connections**: at most `max_connections` open at once, and at most
//!   `max_connections_per_client` from one peer address when set; a
//!   connection over a limit is closed as soon as it is accepted, so it
//!   costs a file descriptor for microseconds, not for its lifetime.
//!
//! Every request also carries `axum::extract::ConnectInfo<SocketAddr>`
//! with the peer address, for per-client limits in handlers.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, info, warn};

/// The bounds of one listener; see the module docs. Built from the
/// `[ingest]` and `[api]` configuration sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// So that one client cannot take every connection. 0: no
    /// per-address limit. Behind a reverse proxy every connection has the
    /// proxy's address, so this then bounds the proxy.
    pub max_connections_per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections: 512,
            max_connections_per_client: 256,
        }
    }
}

/// Connections refused since the listener started, by reason; logged at
/// most once a second so a flood does not also flood the log.
#[derive(Default)]
struct Refusals {
    over_total: AtomicU64,
    over_client: AtomicU64,
    last_logged: Mutex<Option<Instant>>,
    accept_failed: AtomicU64,
    last_accept_logged: Mutex<Option<Instant>>,
}

impl Refusals {
    fn count(&self, per_client: bool, peer: SocketAddr, name: &str) {
        let counter = if per_client {
            &self.over_client
        } else {
            &self.over_total
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let Ok(mut last) = self.last_logged.lock() else {
            return;
        };
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        *last = Some(now);
        warn!(
            listener = name,
            %peer,
            refused_over_max_connections = self.over_total.load(Ordering::Relaxed),
            refused_over_max_connections_per_client = self.over_client.load(Ordering::Relaxed),
            "connection limit reached; connections are closed on accept"
        );
    }
}

impl Refusals {
    fn accept_failed(&self, name: &str, e: &io::Error) {
        let n = self.accept_failed.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let Ok(mut last) = self.last_accept_logged.lock() else {
            return;
        };
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        *last = Some(now);
        warn!(listener = name, error = %e, accept_failures = n, "accept failed (out of file descriptors? raise LimitNOFILE or lower max_connections)");
    }
}

/// Open connections per peer address.
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

impl PerClient {
    fn try_add(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        if max == 0 {
            return Some(ClientSlot(None));
        }
        let mut map = self.0.lock().ok()?;
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot(Some((self.clone(), ip))))
    }
}

/// Gives the peer's slot back when its connection ends.
struct ClientSlot(Option<(Arc<PerClient>, IpAddr)>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some((per, ip)) = self.0.take() {
            if let Ok(mut map) = per.0.lock() {
                if let Some(n) = map.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        map.remove(&ip);
                    }
                }
            }
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` is
/// cancelled; then stops accepting, lets requests in flight finish, and
/// returns once every connection is closed or `request_timeout` has passed.
/// `name` labels the log lines (`ingest`, `api`).
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let app = app.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let per_client = Arc::new(PerClient::default());
    let refusals = Arc::new(Refusals::default());
    info!(
        listener = name,
        header_read_timeout_secs = limits.header_read_timeout.as_secs_f64(),
        request_timeout_secs = limits.request_timeout.as_secs_f64(),
        idle_timeout_secs = limits.idle_timeout.as_secs_f64(),
        max_connections = max,
        max_connections_per_client = limits.max_connections_per_client,
        "listener limits"
    );
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and ENFILE persist until a descriptor is freed;
                    // retrying at once would spin a core, logging each
                    // retry would flood the log.
                    refusals.accept_failed(name, &e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refusals.count(false, peer, name);
            drop(stream);
            continue;
        };
        let Some(client_slot) = per_client.try_add(peer.ip(), limits.max_connections_per_client)
        else {
            refusals.count(true, peer, name);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            connection(stream, peer, app, &limits, shutdown).await;
            drop(client_slot);
            drop(permit);
        });
    }
    // Wait for the connections still open (they finish their request and
    // close, see `connection`), but not forever.
    let drained =
        tokio::time::timeout(limits.request_timeout, slots.acquire_many(max as u32)).await;
    if drained.is_err() {
        warn!(
            listener = name,
            open = max - slots.available_permits(),
            "connections still open at shutdown were dropped"
        );
    }
    Ok(())
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: &Limits,
    shutdown: CancellationToken,
) {
    let clock = Arc::new(ConnClock::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        clock: clock.clone(),
    });
    let (on_request, on_response) = (clock.clone(), clock.clone());
    let service = app
        .map_request(move |mut req: Request<Incoming>| {
            // The head is complete: from here the request timeout applies.
            on_request.set_phase(Phase::Request);
            req.extensions_mut().insert(ConnectInfo(peer));
            req.map(Body::new)
        })
        .map_response(move |resp| {
            on_response.set_phase(Phase::Idle);
            resp
        });
    // hyper's own header-read timer also runs while a keep-alive connection
    // waits for its next request, which would close idle connections after
    // a few seconds, before clients retire them from their pools (reqwest
    // and Go keep them 90 s), and a client that reuses one just as it is
    // closed loses its request. So the head and idle clocks are kept here.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    let mut conn = pin!(builder.serve_connection(io, TowerToHyperService::new(service)));
    let mut closing = false;
    let mut check = pin!(tokio::time::sleep_until(clock.next_deadline(limits)));
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            // A new request head started: its deadline is sooner.
            _ = clock.head_started.notified() => {
                check.as_mut().reset(clock.next_deadline(limits));
            }
            _ = check.as_mut() => {
                let now = Instant::now();
                if clock.phase() == Phase::Head && now >= clock.head_deadline(limits) {
                    debug!(%peer, "request head not complete within the header-read timeout; closed");
                    return;
                }
                if now >= clock.idle_deadline(limits) {
                    debug!(%peer, "idle connection closed");
                    return;
                }
                check.as_mut().reset(clock.next_deadline(limits));
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the rest of a request head (or, right after accept, for
    /// any of it): the header-read timeout runs.
    Head = 0,
    /// The head is in; the handler runs under the request timeout.
    Request = 1,
    /// The answer is out; waiting for the next request (keep-alive).
    Idle = 2,
}

/// When a connection last moved a byte, and where it is in its request.
/// Times are milliseconds since the connection was accepted.
struct ConnClock {
    started: Instant,
    last_activity: AtomicU64,
    phase: std::sync::atomic::AtomicU8,
    head_started_at: AtomicU64,
    head_started: tokio::sync::Notify,
}

impl ConnClock {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_activity: AtomicU64::new(0),
            phase: std::sync::atomic::AtomicU8::new(Phase::Head as u8),
            head_started_at: AtomicU64::new(0),
            head_started: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Head,
            1 => Phase::Request,
            _ => Phase::Idle,
        }
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Bytes arrived or left.
    fn touch(&self, read: bool) {
        let now = self.now_ms();
        self.last_activity.store(now, Ordering::Relaxed);
        if read
            && self
                .phase
                .compare_exchange(
                    Phase::Idle as u8,
                    Phase::Head as u8,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            self.head_started_at.store(now, Ordering::Relaxed);
            self.head_started.notify_one();
        }
    }

    fn head_deadline(&self, limits: &Limits) -> Instant {
        self.at(self.head_started_at.load(Ordering::Relaxed)) + limits.header_read_timeout
    }

    fn idle_deadline(&self, limits: &Limits) -> Instant {
        self.at(self.last_activity.load(Ordering::Relaxed)) + limits.idle_timeout
    }

    fn next_deadline(&self, limits: &Limits) -> Instant {
        let idle = self.idle_deadline(limits);
        if self.phase() == Phase::Head {
            idle.min(self.head_deadline(limits))
        } else {
            idle
        }
    }
}

/// The connection's socket, telling its clock when bytes move.
struct Watched {
    inner: TcpStream,
    clock: Arc<ConnClock>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.touch(true);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch(false);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch(false);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
