//! A person as they stood at an instant: the events of their stream
//! recorded up to then, folded with the domain's `evolve`, the same fold
//! the engine decides with. The projections are not read, so a projection
//! changed or rebuilt after the fact cannot change the answer; the
//! entitlements are the `EntitlementChanged` events among them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use tenure_domain::{evolve, Person, PersonEvent};
use tenure_store::sqlx::{self, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize)]
pub struct PersonAsOf {
    pub person_id: Uuid,
    pub as_of: DateTime<Utc>,
    /// `None` before the first lifecycle event (e.g. a record scheduled
    /// for later, or no event at all yet).
    pub lifecycle: Option<String>,
    pub attributes: serde_json::Value,
    /// App → entitlement, as last decided up to `as_of`.
    pub entitlements: BTreeMap<String, String>,
    pub start_at: Option<DateTime<Utc>>,
    pub pending_termination: Option<DateTime<Utc>>,
    /// IdP groups of the identities linked at `as_of`.
    pub groups: Vec<String>,
    /// Events folded (recorded at or before `as_of`).
    pub events: usize,
    pub last_event_at: Option<DateTime<Utc>>,
    /// Events up to `as_of` whose payload this build cannot read; the
    /// answer is then what the readable ones say.
    pub undecodable: usize,
}

/// The person `person_id` at `as_of`; `None` when nothing was recorded
/// about them up to then.
pub async fn person_as_of(
    pool: &PgPool,
    person_id: Uuid,
    as_of: DateTime<Utc>,
) -> Result<Option<PersonAsOf>, sqlx::Error> {
    let rows: Vec<(String, serde_json::Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT event_type, data, recorded_at FROM events
         WHERE stream_id = $1 AND recorded_at <= $2 ORDER BY version",
    )
    .bind(format!("person-{person_id}"))
    .bind(as_of)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut state = Person::default();
    let mut undecodable = 0;
    let mut last = None;
    for (kind, data, at) in &rows {
        last = Some(*at);
        match PersonEvent::from_stored(kind, data.clone()) {
            Ok(e) => state = evolve(state, &e),
            Err(e) => {
                tracing::warn!(%person_id, event_type = %kind, error = %e, "event not readable; left out of the as-of fold");
                undecodable += 1;
            }
        }
    }
    Ok(Some(PersonAsOf {
        person_id,
        as_of,
        lifecycle: state.lifecycle.map(|l| l.as_str().to_string()),
        attributes: serde_json::to_value(&state.attributes).unwrap_or_default(),
        entitlements: state
            .entitlements
            .iter()
            .map(|(app, e)| (app.clone(), e.as_str().to_string()))
            .collect(),
        start_at: state.start_at,
        pending_termination: state.pending_termination,
        groups: state.groups(),
        events: rows.len(),
        last_event_at: last,
        undecodable,
    }))
}
