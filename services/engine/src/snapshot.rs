//! Loading a person in time independent of the length of their history:
//! the stored snapshot (`person_snapshots`) plus the events after it,
//! instead of a fold of the whole stream.
//!
//! A snapshot is the person compacted at the instant it was stored
//! ([`Person::compacted`]): facts outranked by the one in force then are
//! dropped, so it stays small however many records the person received.
//! It is therefore used only for decisions at that instant or later; an
//! earlier one (a clock behind another engine's) folds the whole stream.
//! Deliveries whose facts were dropped are recognised by the inbox, which
//! every record passes before it reaches the person.
//!
//! Snapshots are a projection: any row may be deleted at any time, and the
//! next load folds the stream and writes it again.

use crate::process::{person_stream, ProcessError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tenure_domain::{evolve, Person, PersonEvent};
use tenure_store::sqlx::{self, PgConnection};
use uuid::Uuid;

/// Format of the stored state. Raise it when `Person` or `evolve` change in
/// a way old snapshots would not fold to: rows of another format are
/// ignored and replaced on the next write.
pub const SNAPSHOT_SCHEMA: i32 = 1;

/// (source, delivery id) → (event id, correlation id) of the
/// `SourceRecordReceived` event that recorded the delivery; delivery ids
/// are only unique within a source.
pub type Records = HashMap<(String, String), (Uuid, Uuid)>;

/// The person's aggregate as stored, plus where each received record sits
/// in the stream (so later decisions can name it as their cause).
pub struct Loaded {
    pub state: Person,
    pub version: i64,
    pub records: Records,
    /// Version of the snapshot the state was loaded from (0: none).
    pub snapshot_version: i64,
}

/// What `records` holds per kept fact.
#[derive(Serialize, Deserialize)]
struct StoredRecord {
    source: String,
    delivery_id: String,
    event_id: Uuid,
    correlation_id: Uuid,
}

/// The person as decisions at `at` (or later) need them.
pub async fn load(
    conn: &mut PgConnection,
    person_id: Uuid,
    at: DateTime<Utc>,
) -> Result<Loaded, ProcessError> {
    let row: Option<(i64, serde_json::Value, serde_json::Value)> = sqlx::query_as(
        "SELECT version, state, records FROM person_snapshots
         WHERE person_id = $1 AND schema = $2 AND valid_from <= $3",
    )
    .bind(person_id)
    .bind(SNAPSHOT_SCHEMA)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?;
    let base = row.and_then(|(version, state, records)| {
        let state = serde_json::from_value::<Person>(state);
        let records = serde_json::from_value::<Vec<StoredRecord>>(records);
        match (state, records) {
            (Ok(state), Ok(records)) => Some((version, state, records)),
            (Err(e), _) | (_, Err(e)) => {
                // Only a stale format gets here; the stream is the truth.
                tracing::warn!(%person_id, error = %e, "person snapshot does not decode; folding the stream");
                None
            }
        }
    });
    let (snapshot_version, mut state, mut records) = match base {
        Some((version, state, stored)) => (
            version,
            state,
            stored
                .into_iter()
                .map(|r| ((r.source, r.delivery_id), (r.event_id, r.correlation_id)))
                .collect(),
        ),
        None => (0, Person::default(), Records::new()),
    };
    let tail =
        tenure_store::read_stream_after(&mut *conn, &person_stream(person_id), snapshot_version)
            .await?;
    for e in &tail {
        let event = PersonEvent::from_stored(&e.event_type, e.data.clone())
            .map_err(|err| ProcessError::Corrupt(e.event_id, err.to_string()))?;
        if let PersonEvent::SourceRecordReceived {
            source,
            delivery_id,
            ..
        } = &event
        {
            records.insert(
                (source.clone(), delivery_id.clone()),
                (e.event_id, e.metadata.correlation_id),
            );
        }
        state = evolve(state, &event);
    }
    Ok(Loaded {
        state,
        version: tail.last().map_or(snapshot_version, |e| e.version),
        records,
        snapshot_version,
    })
}

/// Stores `state` (at stream `version`) compacted at `valid_from`, with the
/// origin of each fact it keeps. A newer snapshot already stored wins.
pub async fn save(
    conn: &mut PgConnection,
    person_id: Uuid,
    version: i64,
    state: &Person,
    records: &Records,
    valid_from: DateTime<Utc>,
) -> Result<(), ProcessError> {
    let kept = state.clone().compacted(valid_from);
    let origins: Vec<StoredRecord> = kept
        .facts
        .iter()
        .filter_map(|f| {
            let key = (f.source.clone(), f.delivery_id.clone());
            records
                .get(&key)
                .map(|(event_id, correlation_id)| StoredRecord {
                    source: key.0,
                    delivery_id: key.1,
                    event_id: *event_id,
                    correlation_id: *correlation_id,
                })
        })
        .collect();
    let state = serde_json::to_value(&kept).map_err(|e| ProcessError::Snapshot(e.to_string()))?;
    let origins =
        serde_json::to_value(&origins).map_err(|e| ProcessError::Snapshot(e.to_string()))?;
    sqlx::query(
        "INSERT INTO person_snapshots (person_id, version, schema, valid_from, state, records, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, now())
         ON CONFLICT (person_id) DO UPDATE SET version = $2, schema = $3, valid_from = $4,
             state = $5, records = $6, updated_at = now()
         WHERE person_snapshots.version < $2 OR person_snapshots.schema <> $3",
    )
    .bind(person_id)
    .bind(version)
    .bind(SNAPSHOT_SCHEMA)
    .bind(valid_from)
    .bind(state)
    .bind(origins)
    .execute(conn)
    .await?;
    Ok(())
}
