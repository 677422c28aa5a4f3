//! Event search for auditors: by person, app, event type, correlation id
//! and time range, a page at a time. The cursor is the `global_position`
//! of the last event of the previous page.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder};
use tenure_store::RecordedEvent;
use uuid::Uuid;

use crate::read::{decode, COLUMNS};
use crate::render::{Report, Table};
use crate::AuditError;

/// The largest page a caller may ask for.
pub const MAX_LIMIT: i64 = 10_000;

#[derive(Clone, Debug, Default)]
pub struct SearchFilter {
    pub person_id: Option<Uuid>,
    pub app: Option<String>,
    /// Any of these types (all types when empty).
    pub event_types: Vec<String>,
    pub correlation_id: Option<Uuid>,
    /// `recorded_at >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `recorded_at < to`.
    pub to: Option<DateTime<Utc>>,
    /// Events after this global position (the previous page's cursor).
    pub after: Option<i64>,
    pub limit: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchPage {
    pub events: Vec<RecordedEvent>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next_cursor: Option<i64>,
}

impl Report for SearchPage {
    fn table(&self) -> Table {
        let mut t = Table::new(&[
            "position",
            "recorded_at",
            "stream",
            "type",
            "correlation_id",
            "data",
        ]);
        for e in &self.events {
            t.push(vec![
                e.global_position.to_string(),
                e.recorded_at.to_rfc3339(),
                e.stream_id.clone(),
                e.event_type.clone(),
                e.metadata.correlation_id.to_string(),
                e.data.to_string(),
            ]);
        }
        t
    }
}

/// One page of matching events in global position order.
pub async fn search(pool: &PgPool, filter: &SearchFilter) -> Result<SearchPage, AuditError> {
    if !(1..=MAX_LIMIT).contains(&filter.limit) {
        return Err(AuditError::Invalid(format!(
            "the page size must be between 1 and {MAX_LIMIT}"
        )));
    }
    let mut q: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("SELECT {COLUMNS} FROM events WHERE TRUE"));
    if let Some(p) = filter.person_id {
        q.push(" AND metadata->>'person_id' = ")
            .push_bind(p.hyphenated().to_string());
    }
    if let Some(app) = &filter.app {
        q.push(" AND metadata->>'app' = ").push_bind(app.clone());
    }
    if !filter.event_types.is_empty() {
        q.push(" AND event_type = ANY(")
            .push_bind(filter.event_types.clone())
            .push(")");
    }
    if let Some(c) = filter.correlation_id {
        q.push(" AND metadata->>'correlation_id' = ")
            .push_bind(c.hyphenated().to_string());
    }
    if let Some(from) = filter.from {
        q.push(" AND recorded_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        q.push(" AND recorded_at < ").push_bind(to);
    }
    if let Some(after) = filter.after {
        q.push(" AND global_position > ").push_bind(after);
    }
    // One more than asked tells whether another page follows.
    q.push(" ORDER BY global_position LIMIT ")
        .push_bind(filter.limit + 1);
    let rows = q.build().fetch_all(pool).await?;
    let mut events: Vec<RecordedEvent> = rows.iter().map(decode).collect::<Result<_, _>>()?;
    let more = events.len() as i64 > filter.limit;
    events.truncate(filter.limit as usize);
    Ok(SearchPage {
        next_cursor: more
            .then(|| events.last().map(|e| e.global_position))
            .flatten(),
        events,
    })
}
