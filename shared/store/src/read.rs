use sqlx::PgExecutor;
use uuid::Uuid;

use crate::event::{decode_row, Position, RecordedEvent, EVENT_COLUMNS};
use crate::StoreError;

/// All events of a stream, ordered by version.
pub async fn read_stream<'e>(
    executor: impl PgExecutor<'e>,
    stream_id: &str,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 ORDER BY version");
    let rows = sqlx::query(&sql)
        .bind(stream_id)
        .fetch_all(executor)
        .await?;
    rows.iter().map(decode_row).collect()
}

/// The events of a stream after `after_version`, ordered by version: the
/// tail a reader folds onto a snapshot taken at that version.
pub async fn read_stream_after<'e>(
    executor: impl PgExecutor<'e>,
    stream_id: &str,
    after_version: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version"
    );
    let rows = sqlx::query(&sql)
        .bind(stream_id)
        .bind(after_version)
        .fetch_all(executor)
        .await?;
    rows.iter().map(decode_row).collect()
}

/// Up to `limit` events after `after` in global order
/// `(transaction_id, global_position)`.
///
/// Global positions are assigned at insert time but become visible at commit
/// time, so a reader that only tracked `global_position` could move past an
/// event whose transaction commits late and never see it. Instead, only events
/// of transactions older than every still-running transaction
/// (`pg_snapshot_xmin`) are returned: those transactions have all finished, and
/// no transaction started later can produce an event that sorts before them.
/// Feeding the last returned event's [`RecordedEvent::position`] back as
/// `after` therefore never skips anything.
///
/// The cost is latency: events become readable only once every transaction
/// that was already running when they were written has ended — across the
/// whole cluster, since transaction ids are cluster-wide. Keep write
/// transactions short and avoid idle-in-transaction sessions.
pub async fn read_all<'e>(
    executor: impl PgExecutor<'e>,
    after: Position,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events \
         WHERE (transaction_id, global_position) > ($1::bigint::text::xid8, $2) \
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY transaction_id, global_position \
         LIMIT $3"
    );
    let rows = sqlx::query(&sql)
        .bind(after.transaction_id)
        .bind(after.global_position)
        .bind(limit)
        .fetch_all(executor)
        .await?;
    rows.iter().map(decode_row).collect()
}

/// Every event whose metadata names `person_id`, across all streams, in
/// global position order.
pub async fn person_timeline<'e>(
    executor: impl PgExecutor<'e>,
    person_id: Uuid,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events \
         WHERE metadata->>'person_id' = $1 \
         ORDER BY global_position"
    );
    // Must match the jsonb text form: Uuid serialises hyphenated lowercase.
    let rows = sqlx::query(&sql)
        .bind(person_id.hyphenated().to_string())
        .fetch_all(executor)
        .await?;
    rows.iter().map(decode_row).collect()
}
