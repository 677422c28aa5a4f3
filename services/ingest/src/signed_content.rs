//! De-duplication of generic webhooks on what the signature covers.
//!
//! A `v1=` signature covers the timestamp and the body but not
//! `X-Tenure-Delivery`, so a captured request sent again within the
//! timestamp window with a new delivery id would pass as a new delivery and
//! apply the record again. Ingest therefore remembers, per source, the
//! first delivery id each signed content (timestamp and body) arrived
//! with, for as long as that timestamp can pass the skew check, and
//! publishes a repeat under that first id: JetStream and the engine then
//! see a duplicate. The memory is a JetStream stream whose message ids are
//! the content hashes (its duplicate window does the remembering), so it
//! holds across ingest restarts and instances. When the first publish of
//! the record failed, the repeat carries the first id too and stores the
//! record then.

use crate::IngestState;
use async_nats::jetstream::stream;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tenure_bus::BusError;

pub const SIGNED_STREAM: &str = "TENURE_SIGNED";

/// The key of one signed content of `source`.
pub fn content_key(source: &str, timestamp: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update(b"\n");
    h.update(timestamp.trim().as_bytes());
    h.update(b"\n");
    h.update(body);
    format!("signed:{}", hex::encode(h.finalize()))
}

/// How long a signed content is remembered: a timestamp passes the skew
/// check from `skew` before to `skew` after it was signed, plus a margin.
fn window(max_skew_secs: u64) -> Duration {
    Duration::from_secs(max_skew_secs.saturating_mul(2).saturating_add(60))
}

async fn ensure_stream(state: &IngestState) -> Result<(), BusError> {
    state
        .signed_stream
        .get_or_try_init(|| async {
            let w = window(state.max_clock_skew_secs);
            state
                .bus
                .js
                .create_or_update_stream(stream::Config {
                    name: SIGNED_STREAM.into(),
                    subjects: vec!["tenure.signed.>".into()],
                    duplicate_window: w,
                    max_age: w,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|e| BusError::Stream {
                    stream: SIGNED_STREAM.into(),
                    detail: e.to_string(),
                })
        })
        .await
        .map(|_| ())
}

/// The delivery id this signed content was first accepted with: `delivery`
/// itself the first time, the earlier id after that.
pub async fn first_delivery(
    state: &IngestState,
    source: &str,
    key: &str,
    delivery: &str,
) -> Result<String, BusError> {
    ensure_stream(state).await?;
    let stored = state
        .bus
        .publish(
            &format!("tenure.signed.{source}"),
            key,
            &[],
            Bytes::copy_from_slice(delivery.as_bytes()),
        )
        .await?;
    if !stored.duplicate {
        return Ok(delivery.to_string());
    }
    // A duplicate's ack names the sequence of the message it duplicates.
    let stream = state
        .bus
        .js
        .get_stream(SIGNED_STREAM)
        .await
        .map_err(|e| BusError::Stream {
            stream: SIGNED_STREAM.into(),
            detail: e.to_string(),
        })?;
    match stream.get_raw_message(stored.sequence).await {
        Ok(m) => Ok(String::from_utf8_lossy(&m.payload).into_owned()),
        // Aged out between the publish and the read: its window is over.
        Err(_) => Ok(delivery.to_string()),
    }
}
