//! What ingest does with requests that fail before authentication (wrong
//! or missing signature or token, oversized body, bad delivery id), and
//! with the unverifiable ones kept for replay (a source without its secret,
//! Gusto's verification token).
//!
//! Anyone who can reach the listener can send these, so they must not cost
//! the quarantine its genuine entries nor keep a response waiting on NATS:
//! - recording is rate-limited per source and per client address; over a
//!   limit the request is answered the same but only counted (the count is
//!   logged at most every 10 s, carried by the next recorded entry and shown
//!   by `GET /stats`);
//! - failures before authentication are recorded in their own bounded
//!   stream (`TENURE_REJECTED`), metadata and a 256-byte prefix only, by a
//!   background task: the 401 does not wait for JetStream, and at most
//!   [`MAX_RECORDING`] recordings are in flight (more are dropped and
//!   counted), so a NATS outage cannot pile them up.

use axum::http::HeaderMap;
use bytes::Bytes;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use tenure_bus::quarantine::RejectedRequest;
use tenure_bus::Bus;
use tokio::sync::Semaphore;
use tracing::warn;

/// Recordings of unauthenticated requests in flight at once.
pub const MAX_RECORDING: usize = 32;
/// Client addresses remembered by the per-client limiter before idle ones
/// are forgotten.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// Counters `GET /stats` reports, since the process started.
#[derive(Default, Debug)]
pub struct Stats {
    /// Generic webhooks authenticated by a deprecated `v1=` signature.
    pub signature_v1_accepted: AtomicU64,
    /// v1 webhooks whose signed content (timestamp and body) was accepted
    /// before under another delivery id: answered as duplicates.
    pub signed_content_duplicates: AtomicU64,
    /// Requests that could not be authenticated: refused before
    /// authentication, or unverifiable payloads (a source without its
    /// secret, Gusto's setup call).
    pub unauthenticated: AtomicU64,
    /// ... of which recorded: in the rejected-request store, or for
    /// unverifiable payloads in the quarantine.
    pub unauthenticated_recorded: AtomicU64,
    /// ... of which over a rate limit or the in-flight bound: not recorded.
    pub unauthenticated_dropped: AtomicU64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsSnapshot {
    pub signature_v1_accepted: u64,
    pub signed_content_duplicates: u64,
    pub unauthenticated: u64,
    pub unauthenticated_recorded: u64,
    pub unauthenticated_dropped: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            signature_v1_accepted: g(&self.signature_v1_accepted),
            signed_content_duplicates: g(&self.signed_content_duplicates),
            unauthenticated: g(&self.unauthenticated),
            unauthenticated_recorded: g(&self.unauthenticated_recorded),
            unauthenticated_dropped: g(&self.unauthenticated_dropped),
        }
    }
}

/// True at most once per `every_secs` (for log lines a flood would repeat).
#[derive(Default, Debug)]
pub struct Throttle(AtomicI64);

impl Throttle {
    pub fn due(&self, every_secs: i64) -> bool {
        let now = chrono::Utc::now().timestamp();
        let last = self.0.load(Ordering::Relaxed);
        now - last >= every_secs
            && self
                .0
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// The rate limits on recording unauthenticated requests.
pub struct Gate {
    per_source: Option<DefaultKeyedRateLimiter<String>>,
    per_client: Option<DefaultKeyedRateLimiter<IpAddr>>,
    pub(crate) recording: Arc<Semaphore>,
    /// Dropped since the last recorded entry (carried by the next one).
    dropped_since_recorded: AtomicU64,
    pub(crate) log_dropped: Throttle,
}

fn per_minute<K: std::hash::Hash + Eq + Clone>(n: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    // The whole minute's allowance may come at once, then refills evenly.
    NonZeroU32::new(n).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
}

impl Gate {
    /// `0` for a limit records nothing of that kind (everything is only
    /// counted).
    pub fn new(per_source_per_minute: u32, per_client_per_minute: u32) -> Self {
        Self {
            per_source: per_minute(per_source_per_minute),
            per_client: per_minute(per_client_per_minute),
            recording: Arc::new(Semaphore::new(MAX_RECORDING)),
            dropped_since_recorded: AtomicU64::new(0),
            log_dropped: Throttle::default(),
        }
    }

    /// Whether a rejection from `client` to `source` may be recorded now.
    /// Both limits must allow it; the client's is checked first so one
    /// noisy client does not use up the source's allowance.
    pub fn admit(&self, source: &str, client: Option<IpAddr>) -> bool {
        let client_ok = match (&self.per_client, client) {
            (Some(l), Some(ip)) => {
                if l.len() > MAX_TRACKED_CLIENTS {
                    l.retain_recent();
                }
                l.check_key(&ip).is_ok()
            }
            // Without an address (a test calling the router directly) only
            // the source's limit applies.
            (Some(_), None) => true,
            (None, _) => false,
        };
        client_ok
            && self
                .per_source
                .as_ref()
                .is_some_and(|l| l.check_key(&source.to_string()).is_ok())
    }

    pub(crate) fn dropped(&self) {
        self.dropped_since_recorded.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn take_dropped(&self) -> u64 {
        self.dropped_since_recorded.swap(0, Ordering::Relaxed)
    }
}

/// A request refused before authentication, as [`record_rejected`] needs
/// it.
pub struct Refused<'a> {
    pub source: &'a str,
    pub status: u16,
    pub error: &'static str,
    /// `<error>: [<field>: ]<message>`.
    pub reason: String,
    pub client: Option<SocketAddr>,
    pub body: Bytes,
    pub headers: &'a HeaderMap,
}

/// Counts a request refused before authentication and, within the rate
/// limits and the in-flight bound, records its metadata in
/// `TENURE_REJECTED` from a background task: the caller answers at once,
/// whatever state NATS is in. Every endpoint that authenticates requests
/// should refuse through this rather than quarantine the body.
pub fn record_rejected(bus: &Bus, gate: &Gate, stats: &Stats, r: Refused<'_>) {
    stats.unauthenticated.fetch_add(1, Ordering::Relaxed);
    let ip = r.client.map(|c| c.ip());
    if !gate.admit(r.source, ip) {
        return dropped(gate, stats, r.source, ip);
    }
    // Too many recordings already waiting (NATS slow or down).
    let Ok(permit) = gate.recording.clone().try_acquire_owned() else {
        return dropped(gate, stats, r.source, ip);
    };
    warn!(source = r.source, client = ?r.client, status = r.status, error = r.error, reason = %r.reason, "unauthenticated request rejected");
    stats
        .unauthenticated_recorded
        .fetch_add(1, Ordering::Relaxed);
    let bus = bus.clone();
    let source = r.source.to_string();
    let client = r.client.map(|c| c.to_string()).unwrap_or_default();
    let headers = crate::kept_headers(r.headers);
    let dropped_before = gate.take_dropped();
    let (status, reason, body) = (r.status, r.reason, r.body);
    tokio::spawn(async move {
        let recorded = bus
            .record_rejected(RejectedRequest {
                source: &source,
                status,
                reason: &reason,
                client: &client,
                body: &body,
                headers: &headers,
                dropped_before,
            })
            .await;
        if let Err(e) = recorded {
            warn!(source, error = %e, "could not record the rejected request");
        }
        drop(permit);
    });
}

/// Counts an unauthenticated request that is not recorded; logs the count
/// at most every 10 s.
pub fn dropped(gate: &Gate, stats: &Stats, source: &str, client: Option<IpAddr>) {
    gate.dropped();
    let n = stats
        .unauthenticated_dropped
        .fetch_add(1, Ordering::Relaxed)
        + 1;
    if gate.log_dropped.due(10) {
        warn!(source, client = ?client, unauthenticated_dropped_since_start = n, "unauthenticated requests over the recording rate limit: answered, counted, not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_cannot_use_up_another_clients_allowance_or_exceed_the_sources() {
        let gate = Gate::new(5, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let admitted_a = (0..100).filter(|_| gate.admit("generic", Some(a))).count();
        assert_eq!(admitted_a, 2);
        assert!(gate.admit("generic", Some(b)));
        assert!(gate.admit("generic", Some(b)));
        assert!(!gate.admit("generic", Some(b)));
        // Source allowance: 5 in all; a and b took 4.
        assert!(gate.admit("generic", Some(c)));
        assert!(!gate.admit("generic", Some(c)));
        // Another source has its own allowance.
        let d: IpAddr = "192.0.2.4".parse().unwrap();
        assert!(gate.admit("bamboo", Some(d)));
    }

    #[test]
    fn a_zero_limit_records_nothing() {
        let gate = Gate::new(0, 10);
        assert!(!gate.admit("generic", None));
        let gate = Gate::new(10, 0);
        assert!(!gate.admit("generic", Some("192.0.2.1".parse().unwrap())));
    }

    #[test]
    fn throttle_fires_once_per_period() {
        let t = Throttle::default();
        assert!(t.due(10));
        assert!(!t.due(10));
    }
}
