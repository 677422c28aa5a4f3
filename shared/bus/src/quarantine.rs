//! Rejected payloads are kept in JetStream with the reason, so nothing a
//! sender sent is lost and operators can see why it was refused.

use crate::{Bus, BusError, QUARANTINE_STREAM};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

pub const H_REASON: &str = "Tenure-Reason";
pub const H_STATUS: &str = "Tenure-Status";
pub const H_SOURCE: &str = "Tenure-Source";
pub const H_RECEIVED: &str = "Tenure-Received-At";
/// The request headers (no bearer tokens) as JSON pairs, for replay.
pub const H_HEADERS: &str = "Tenure-Request-Headers";

#[derive(Debug, Clone, Serialize)]
pub struct Quarantined {
    pub sequence: u64,
    pub source: String,
    pub status: u16,
    pub reason: String,
    pub received_at: Option<DateTime<Utc>>,
    pub payload: String,
    /// Request headers kept for replay (signatures, timestamps, ids).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// The raw payload bytes.
    #[serde(skip)]
    pub raw: bytes::Bytes,
}

impl Bus {
    pub async fn quarantine(
        &self,
        source: &str,
        status: u16,
        reason: &str,
        payload: Bytes,
    ) -> Result<u64, BusError> {
        self.quarantine_request(source, status, reason, payload, &[])
            .await
    }

    /// Quarantines a payload with the request headers needed to verify it
    /// again when it is replayed.
    pub async fn quarantine_request(
        &self,
        source: &str,
        status: u16,
        reason: &str,
        payload: Bytes,
        headers: &[(String, String)],
    ) -> Result<u64, BusError> {
        let now = Utc::now().to_rfc3339();
        let headers_json = serde_json::to_string(headers).unwrap_or_default();
        let status = status.to_string();
        // Header values cannot hold newlines; reasons are single-line anyway.
        let reason: String = reason
            .chars()
            .filter(|c| !c.is_control())
            .take(1000)
            .collect();
        let stored = self
            .publish(
                &crate::subjects::quarantine(source),
                &uuid::Uuid::new_v4().to_string(),
                &[
                    (H_REASON, reason.as_str()),
                    (H_STATUS, status.as_str()),
                    (H_SOURCE, source),
                    (H_RECEIVED, now.as_str()),
                    (H_HEADERS, headers_json.as_str()),
                ],
                payload,
            )
            .await?;
        Ok(stored.sequence)
    }

    /// The newest `limit` quarantined payloads, oldest first.
    pub async fn list_quarantine(&self, limit: u64) -> Result<Vec<Quarantined>, BusError> {
        self.newest(QUARANTINE_STREAM, limit, decode).await
    }

    /// The newest `limit` entries of a stream, oldest first, each decoded.
    async fn newest<T>(
        &self,
        stream_name: &str,
        limit: u64,
        decode: fn(async_nats::jetstream::message::StreamMessage) -> T,
    ) -> Result<Vec<T>, BusError> {
        let err = |e: String| BusError::Stream {
            stream: stream_name.into(),
            detail: e,
        };
        let mut stream = self
            .js
            .get_stream(stream_name)
            .await
            .map_err(|e| err(e.to_string()))?;
        let state = stream
            .info()
            .await
            .map_err(|e| err(e.to_string()))?
            .state
            .clone();
        if state.messages == 0 {
            return Ok(Vec::new());
        }
        let from = state
            .last_sequence
            .saturating_sub(limit.saturating_sub(1))
            .max(state.first_sequence);
        let mut out = Vec::new();
        for seq in from..=state.last_sequence {
            // A gap is an entry that aged out or was discarded after info().
            if let Ok(m) = stream.get_raw_message(seq).await {
                out.push(decode(m));
            }
        }
        Ok(out)
    }

    /// One quarantined payload by its sequence number.
    pub async fn quarantined(&self, sequence: u64) -> Result<Option<Quarantined>, BusError> {
        let stream = self
            .js
            .get_stream(QUARANTINE_STREAM)
            .await
            .map_err(|e| BusError::Stream {
                stream: QUARANTINE_STREAM.into(),
                detail: e.to_string(),
            })?;
        Ok(stream.get_raw_message(sequence).await.ok().map(decode))
    }
}

fn decode(m: async_nats::jetstream::message::StreamMessage) -> Quarantined {
    let h = |name: &str| m.headers.get(name).map(|v| v.as_str().to_string());
    Quarantined {
        sequence: m.sequence,
        source: h(H_SOURCE).unwrap_or_default(),
        status: h(H_STATUS).and_then(|s| s.parse().ok()).unwrap_or(0),
        reason: h(H_REASON).unwrap_or_default(),
        received_at: h(H_RECEIVED)
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc)),
        payload: String::from_utf8_lossy(&m.payload).into_owned(),
        headers: h(H_HEADERS)
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default(),
        raw: m.payload.clone(),
    }
}

/// Requests that failed *before* authentication (wrong or missing
/// signature or token, oversized, a bad delivery id) are recorded apart
/// from the quarantine, in a stream of their own, so that a sender without
/// the secret cannot evict what the quarantine keeps for replay (ADR 0010).
/// Only metadata is kept: the body's length, SHA-256 and first
/// [`REJECTED_PREFIX_BYTES`] bytes.
pub const REJECTED_STREAM: &str = "TENURE_REJECTED";
pub const REJECTED_PREFIX_BYTES: usize = 256;
const REJECTED_MAX_MSGS: i64 = 10_000;
const REJECTED_MAX_BYTES: i64 = 16 * 1024 * 1024;
/// Header: the client address the request came from.
pub const H_CLIENT: &str = "Tenure-Client";
/// Header: the rejected body's length in bytes.
pub const H_BODY_LEN: &str = "Tenure-Body-Length";
/// Header: hex SHA-256 of the rejected body.
pub const H_BODY_SHA256: &str = "Tenure-Body-Sha256";
/// Header: rejections not recorded (over a rate limit) since the previous
/// recorded one.
pub const H_DROPPED: &str = "Tenure-Dropped-Before";

pub fn rejected_subject(source: &str) -> String {
    format!("tenure.rejected.{source}")
}

pub(crate) async fn ensure_rejected_stream(
    js: &async_nats::jetstream::Context,
) -> Result<(), BusError> {
    use async_nats::jetstream::stream;
    js.create_or_update_stream(stream::Config {
        name: REJECTED_STREAM.into(),
        subjects: vec!["tenure.rejected.>".into()],
        max_messages: REJECTED_MAX_MSGS,
        max_bytes: REJECTED_MAX_BYTES,
        max_age: Duration::from_secs(30 * 24 * 3600),
        discard: stream::DiscardPolicy::Old,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::Stream {
        stream: REJECTED_STREAM.into(),
        detail: e.to_string(),
    })?;
    Ok(())
}

/// What is known of a request that failed before authentication.
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    pub sequence: u64,
    pub source: String,
    pub status: u16,
    pub reason: String,
    pub received_at: Option<DateTime<Utc>>,
    /// The client address, as the listener saw it.
    pub client: String,
    pub body_len: u64,
    pub body_sha256: String,
    /// The first bytes of the body, lossily decoded.
    pub body_prefix: String,
    /// Request headers (no bearer tokens).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Rejections dropped by the rate limits just before this one.
    pub dropped_before: u64,
}

/// How full the rejected-request store is.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedStats {
    pub entries: u64,
    pub bytes: u64,
    pub max_entries: i64,
    pub max_bytes: i64,
    /// Rejections dropped by the rate limits, summed over the entries
    /// still held.
    pub dropped: u64,
}

/// One rejection to record; see [`Bus::record_rejected`].
pub struct RejectedRequest<'a> {
    pub source: &'a str,
    pub status: u16,
    pub reason: &'a str,
    pub client: &'a str,
    pub body: &'a [u8],
    pub headers: &'a [(String, String)],
    pub dropped_before: u64,
}

impl Bus {
    /// Records a request that failed before authentication: metadata and
    /// a short body prefix only, in [`REJECTED_STREAM`].
    pub async fn record_rejected(&self, r: RejectedRequest<'_>) -> Result<u64, BusError> {
        use sha2::{Digest, Sha256};
        let now = Utc::now().to_rfc3339();
        let status = r.status.to_string();
        let reason: String = r
            .reason
            .chars()
            .filter(|c| !c.is_control())
            .take(500)
            .collect();
        // Headers are attacker-chosen too: keep at most 2 KiB of them.
        let mut kept = Vec::new();
        let mut size = 0;
        for (n, v) in r.headers {
            size += n.len() + v.len();
            if size > 2048 {
                break;
            }
            kept.push((n.clone(), v.clone()));
        }
        let headers_json = serde_json::to_string(&kept).unwrap_or_default();
        let len = r.body.len().to_string();
        let digest = hex::encode(Sha256::digest(r.body));
        let dropped = r.dropped_before.to_string();
        let prefix = Bytes::copy_from_slice(&r.body[..r.body.len().min(REJECTED_PREFIX_BYTES)]);
        let stored = self
            .publish(
                &rejected_subject(r.source),
                &uuid::Uuid::new_v4().to_string(),
                &[
                    (H_REASON, reason.as_str()),
                    (H_STATUS, status.as_str()),
                    (H_SOURCE, r.source),
                    (H_RECEIVED, now.as_str()),
                    (H_CLIENT, r.client),
                    (H_BODY_LEN, len.as_str()),
                    (H_BODY_SHA256, digest.as_str()),
                    (H_DROPPED, dropped.as_str()),
                    (H_HEADERS, headers_json.as_str()),
                ],
                prefix,
            )
            .await?;
        Ok(stored.sequence)
    }

    /// The newest `limit` rejected requests, oldest first.
    pub async fn list_rejected(&self, limit: u64) -> Result<Vec<Rejected>, BusError> {
        self.newest(REJECTED_STREAM, limit, decode_rejected).await
    }

    /// How many rejected requests the store holds (one stream read).
    pub async fn rejected_entries(&self) -> Result<u64, BusError> {
        let err = |e: String| BusError::Stream {
            stream: REJECTED_STREAM.into(),
            detail: e,
        };
        let mut stream = self
            .js
            .get_stream(REJECTED_STREAM)
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(stream
            .info()
            .await
            .map_err(|e| err(e.to_string()))?
            .state
            .messages)
    }

    /// Entry count and size of the rejected-request store, and the drops
    /// recorded in what it still holds (reads every entry's headers: the
    /// store is bounded to 10,000 entries).
    pub async fn rejected_stats(&self) -> Result<RejectedStats, BusError> {
        let all = self.list_rejected(REJECTED_MAX_MSGS as u64).await?;
        let mut stream =
            self.js
                .get_stream(REJECTED_STREAM)
                .await
                .map_err(|e| BusError::Stream {
                    stream: REJECTED_STREAM.into(),
                    detail: e.to_string(),
                })?;
        let info = stream.info().await.map_err(|e| BusError::Stream {
            stream: REJECTED_STREAM.into(),
            detail: e.to_string(),
        })?;
        Ok(RejectedStats {
            entries: info.state.messages,
            bytes: info.state.bytes,
            max_entries: REJECTED_MAX_MSGS,
            max_bytes: REJECTED_MAX_BYTES,
            dropped: all.iter().map(|r| r.dropped_before).sum(),
        })
    }
}

fn decode_rejected(m: async_nats::jetstream::message::StreamMessage) -> Rejected {
    let h = |name: &str| m.headers.get(name).map(|v| v.as_str().to_string());
    Rejected {
        sequence: m.sequence,
        source: h(H_SOURCE).unwrap_or_default(),
        status: h(H_STATUS).and_then(|s| s.parse().ok()).unwrap_or(0),
        reason: h(H_REASON).unwrap_or_default(),
        received_at: h(H_RECEIVED)
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc)),
        client: h(H_CLIENT).unwrap_or_default(),
        body_len: h(H_BODY_LEN).and_then(|s| s.parse().ok()).unwrap_or(0),
        body_sha256: h(H_BODY_SHA256).unwrap_or_default(),
        body_prefix: String::from_utf8_lossy(&m.payload).into_owned(),
        headers: h(H_HEADERS)
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default(),
        dropped_before: h(H_DROPPED).and_then(|s| s.parse().ok()).unwrap_or(0),
    }
}
