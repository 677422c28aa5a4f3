use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::StoreError;

/// Context recorded with every event. Stored as the `metadata` jsonb column;
/// `person_id` is indexed for person timelines.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Metadata {
    pub correlation_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<DateTime<Utc>>,
}

/// An event to be appended.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub data: Value,
    pub metadata: Metadata,
}

/// An event as stored.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RecordedEvent {
    pub global_position: i64,
    /// Id of the writing transaction (PostgreSQL `xid8`).
    pub transaction_id: i64,
    pub stream_id: String,
    /// 1 for the first event of a stream, consecutive after that.
    pub version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub data: Value,
    pub metadata: Metadata,
    pub recorded_at: DateTime<Utc>,
    /// Hex of the previous event's hash in this stream (zeros for version 1).
    pub prev_hash: String,
    /// Hex of this event's hash; see [`crate::chain`].
    pub hash: String,
}

impl RecordedEvent {
    /// Position of this event in the global order used by [`crate::read_all()`].
    pub fn position(&self) -> Position {
        Position {
            transaction_id: self.transaction_id,
            global_position: self.global_position,
        }
    }
}

/// Optimistic concurrency expectation for [`crate::append()`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The stream must not contain any event yet.
    NoStream,
    /// The stream's last event must have exactly this version (0 = empty).
    Exact(i64),
    /// No check against the current head; concurrent appends still cannot
    /// interleave (the loser gets [`StoreError::Conflict`]).
    Any,
}

/// A point in the global event order: events are ordered by
/// `(transaction_id, global_position)`. The derived ordering follows the
/// field order and therefore matches the store's order.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    pub transaction_id: i64,
    pub global_position: i64,
}

impl Position {
    /// Before every event.
    pub const START: Position = Position {
        transaction_id: 0,
        global_position: 0,
    };
}

/// Column list matching [`decode_row`].
pub const EVENT_COLUMNS: &str = "global_position, \
     transaction_id::text::bigint AS transaction_id, \
     stream_id, version, event_id, event_type, data, metadata, recorded_at, prev_hash, hash";

/// One `events` row, selected with [`EVENT_COLUMNS`], as a recorded event.
pub fn decode_row(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let stream_id: String = row.try_get("stream_id")?;
    let version: i64 = row.try_get("version")?;
    let metadata: Value = row.try_get("metadata")?;
    let metadata: Metadata = serde_json::from_value(metadata).map_err(|e| {
        StoreError::Decode(format!("metadata of {stream_id} version {version}: {e}"))
    })?;
    let prev_hash: Vec<u8> = row.try_get("prev_hash")?;
    let hash: Vec<u8> = row.try_get("hash")?;
    Ok(RecordedEvent {
        global_position: row.try_get("global_position")?,
        transaction_id: row.try_get("transaction_id")?,
        version,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        data: row.try_get("data")?,
        metadata,
        recorded_at: row.try_get("recorded_at")?,
        prev_hash: hex::encode(prev_hash),
        hash: hex::encode(hash),
        stream_id,
    })
}
