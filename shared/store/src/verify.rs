use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::chain::{event_hash, EventFields, GENESIS_HASH};
use crate::StoreError;

/// What is wrong with one stored event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ChainProblemKind {
    /// The stored hash does not match the event's contents: the event was
    /// altered after it was written.
    HashMismatch,
    /// The event's `prev_hash` is not the hash of the event stored before it
    /// (or not the genesis hash for a stream's first event): an event was
    /// removed, replaced or inserted.
    BrokenLink,
    /// The version does not follow the previous one (or the stream does not
    /// start at 1).
    VersionGap,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainProblem {
    pub stream_id: String,
    pub version: i64,
    pub kind: ChainProblemKind,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub streams: u64,
    pub events: u64,
    pub problems: Vec<ChainProblem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Re-walks every stream's hash chain from the stored rows.
///
/// Rows are streamed in `(stream_id, version)` order from a single query (one
/// consistent snapshot), so memory use does not grow with the table. Each
/// event is checked against its stored neighbour, so one altered event is
/// reported once rather than breaking everything after it.
///
/// Removing the *last* events of a stream leaves a valid, shorter chain and
/// cannot be detected from the chain alone.
pub async fn verify(pool: &PgPool) -> Result<VerifyReport, StoreError> {
    let mut conn = pool.acquire().await?;
    let mut rows = sqlx::query(
        "SELECT stream_id, version, event_id, event_type, data, metadata, recorded_at, prev_hash, hash \
         FROM events ORDER BY stream_id, version",
    )
    .fetch(&mut *conn);

    let mut report = VerifyReport::default();
    // (stream_id, version, hash) of the previous row.
    let mut previous: Option<(String, i64, Vec<u8>)> = None;
    while let Some(row) = rows.try_next().await? {
        let stream_id: String = row.try_get("stream_id")?;
        let version: i64 = row.try_get("version")?;
        let event_id: Uuid = row.try_get("event_id")?;
        let event_type: String = row.try_get("event_type")?;
        let data: Value = row.try_get("data")?;
        let metadata: Value = row.try_get("metadata")?;
        let recorded_at: DateTime<Utc> = row.try_get("recorded_at")?;
        let prev_hash: Vec<u8> = row.try_get("prev_hash")?;
        let hash: Vec<u8> = row.try_get("hash")?;

        report.events += 1;
        let (expected_version, expected_prev) = match previous.take() {
            Some((prev_stream, prev_version, prev_stored_hash)) if prev_stream == stream_id => {
                (prev_version + 1, prev_stored_hash)
            }
            _ => {
                report.streams += 1;
                (1, GENESIS_HASH.to_vec())
            }
        };
        let mut problem = |kind| {
            report.problems.push(ChainProblem {
                stream_id: stream_id.clone(),
                version,
                kind,
            })
        };
        if version != expected_version {
            problem(ChainProblemKind::VersionGap);
        }
        if prev_hash != expected_prev {
            problem(ChainProblemKind::BrokenLink);
        }
        let recomputed = event_hash(
            &prev_hash,
            &EventFields {
                stream_id: &stream_id,
                version,
                event_id,
                event_type: &event_type,
                data: &data,
                metadata: &metadata,
                recorded_at,
            },
        );
        if recomputed[..] != hash[..] {
            problem(ChainProblemKind::HashMismatch);
        }
        previous = Some((stream_id, version, hash));
    }
    Ok(report)
}
