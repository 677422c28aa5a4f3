//! Rejected payloads are kept in JetStream with the reason, so nothing a
//! sender sent is lost and operators can see why it was refused.

use crate::{Bus, BusError, QUARANTINE_STREAM};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

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
        let err = |e: String| BusError::Stream {
            stream: QUARANTINE_STREAM.into(),
            detail: e,
        };
        let mut stream = self
            .js
            .get_stream(QUARANTINE_STREAM)
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
