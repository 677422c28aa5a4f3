use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::chain::{event_hash, EventFields, GENESIS_HASH};
use crate::event::{ExpectedVersion, NewEvent, RecordedEvent};
use crate::StoreError;

const STREAM_VERSION_CONSTRAINT: &str = "events_stream_id_version_key";
const EVENT_ID_CONSTRAINT: &str = "events_event_id_key";
const UNIQUE_VIOLATION: &str = "23505";

/// Current version of a stream: the version of its last event, 0 when empty.
pub async fn stream_version(conn: &mut PgConnection, stream_id: &str) -> Result<i64, StoreError> {
    Ok(stream_head(conn, stream_id).await?.map_or(0, |head| head.0))
}

async fn stream_head(
    conn: &mut PgConnection,
    stream_id: &str,
) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
    let head = sqlx::query_as::<_, (i64, Vec<u8>)>(
        "SELECT version, hash FROM events WHERE stream_id = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(stream_id)
    .fetch_optional(conn)
    .await?;
    Ok(head)
}

/// Appends `events` to `stream_id` with consecutive versions, extending the
/// stream's hash chain.
///
/// Runs on the caller's connection and therefore inside the caller's
/// transaction, so projections and outbox rows can be written atomically with
/// the events; nothing is visible to others until the caller commits.
///
/// Returns [`StoreError::Conflict`] when `expected` does not match the
/// stream's current version, and also when a concurrent transaction appends to
/// the same stream first (its commit makes our insert hit the unique
/// `(stream_id, version)` constraint). In the second case the caller's
/// transaction is aborted and must be rolled back.
pub async fn append(
    conn: &mut PgConnection,
    stream_id: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<Vec<RecordedEvent>, StoreError> {
    let (current, head_hash) = match stream_head(conn, stream_id).await? {
        Some((version, hash)) => (version, hash),
        None => (0, GENESIS_HASH.to_vec()),
    };
    let expected_version = match expected {
        ExpectedVersion::NoStream => Some(0),
        ExpectedVersion::Exact(v) => Some(v),
        ExpectedVersion::Any => None,
    };
    if let Some(expected_version) = expected_version {
        if expected_version != current {
            return Err(StoreError::Conflict {
                stream: stream_id.to_owned(),
                expected: expected_version,
                actual: current,
            });
        }
    }
    if events.is_empty() {
        return Ok(Vec::new());
    }

    let recorded_at = now_micros();
    let mut batch = Batch::with_capacity(events.len());
    let mut prev_hash = head_hash;
    for (offset, event) in (1i64..).zip(events) {
        let version = current + offset;
        let metadata = serde_json::to_value(&event.metadata)
            .map_err(|e| StoreError::Encode(format!("metadata of {}: {e}", event.event_id)))?;
        let hash = event_hash(
            &prev_hash,
            &EventFields {
                stream_id,
                version,
                event_id: event.event_id,
                event_type: &event.event_type,
                data: &event.data,
                metadata: &metadata,
                recorded_at,
            },
        )
        .to_vec();
        batch.versions.push(version);
        batch.event_ids.push(event.event_id);
        batch.event_types.push(event.event_type.clone());
        batch.data.push(event.data.clone());
        batch.metadata.push(metadata);
        batch
            .prev_hashes
            .push(std::mem::replace(&mut prev_hash, hash.clone()));
        batch.hashes.push(hash);
    }

    // One round trip for the whole batch. ORDER BY ordinality makes the
    // identity column hand out global positions in version order.
    let rows = sqlx::query(
        "INSERT INTO events \
             (stream_id, version, event_id, event_type, data, metadata, recorded_at, prev_hash, hash) \
         SELECT $1, u.version, u.event_id, u.event_type, u.data, u.metadata, $2, u.prev_hash, u.hash \
         FROM UNNEST($3::bigint[], $4::uuid[], $5::text[], $6::jsonb[], $7::jsonb[], $8::bytea[], $9::bytea[]) \
              WITH ORDINALITY AS u(version, event_id, event_type, data, metadata, prev_hash, hash, ord) \
         ORDER BY u.ord \
         RETURNING version, global_position, transaction_id::text::bigint AS transaction_id",
    )
    .bind(stream_id)
    .bind(recorded_at)
    .bind(&batch.versions)
    .bind(&batch.event_ids)
    .bind(&batch.event_types)
    .bind(&batch.data)
    .bind(&batch.metadata)
    .bind(&batch.prev_hashes)
    .bind(&batch.hashes)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| map_insert_error(e, stream_id, expected_version.unwrap_or(current), current))?;

    let mut positions = Vec::with_capacity(rows.len());
    for row in &rows {
        let version: i64 = row.try_get("version")?;
        let global_position: i64 = row.try_get("global_position")?;
        let transaction_id: i64 = row.try_get("transaction_id")?;
        positions.push((version, global_position, transaction_id));
    }
    // RETURNING order is not guaranteed by SQL; match rows by version.
    positions.sort_unstable_by_key(|p| p.0);
    if positions.len() != events.len() {
        return Err(StoreError::Decode(format!(
            "append to {stream_id}: inserted {} of {} events",
            positions.len(),
            events.len()
        )));
    }

    let mut recorded = Vec::with_capacity(events.len());
    for (i, (event, (version, global_position, transaction_id))) in
        events.iter().zip(positions).enumerate()
    {
        if version != batch.versions[i] {
            return Err(StoreError::Decode(format!(
                "append to {stream_id}: expected version {} back, got {version}",
                batch.versions[i]
            )));
        }
        recorded.push(RecordedEvent {
            global_position,
            transaction_id,
            stream_id: stream_id.to_owned(),
            version,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            data: event.data.clone(),
            metadata: event.metadata.clone(),
            recorded_at,
            prev_hash: hex::encode(&batch.prev_hashes[i]),
            hash: hex::encode(&batch.hashes[i]),
        });
    }
    Ok(recorded)
}

/// Column arrays for the UNNEST insert.
struct Batch {
    versions: Vec<i64>,
    event_ids: Vec<Uuid>,
    event_types: Vec<String>,
    data: Vec<Value>,
    metadata: Vec<Value>,
    prev_hashes: Vec<Vec<u8>>,
    hashes: Vec<Vec<u8>>,
}

impl Batch {
    fn with_capacity(n: usize) -> Self {
        Batch {
            versions: Vec::with_capacity(n),
            event_ids: Vec::with_capacity(n),
            event_types: Vec::with_capacity(n),
            data: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            prev_hashes: Vec::with_capacity(n),
            hashes: Vec::with_capacity(n),
        }
    }
}

/// timestamptz has microsecond precision; truncating up front means the value
/// hashed here is exactly the value read back by `verify`.
fn now_micros() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn map_insert_error(
    error: sqlx::Error,
    stream_id: &str,
    expected: i64,
    current: i64,
) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        if db.code().as_deref() == Some(UNIQUE_VIOLATION) {
            match db.constraint() {
                // Only a writer that committed after we read the head can
                // hold our next version, so it exists now: `current + 1` is
                // the lowest version we know to be taken.
                Some(STREAM_VERSION_CONSTRAINT) => {
                    return StoreError::Conflict {
                        stream: stream_id.to_owned(),
                        expected,
                        actual: current + 1,
                    }
                }
                Some(EVENT_ID_CONSTRAINT) => {
                    return StoreError::DuplicateEventId {
                        stream: stream_id.to_owned(),
                    }
                }
                _ => {}
            }
        }
    }
    StoreError::Database(error)
}
