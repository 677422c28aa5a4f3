//! The audit queries: SQL that reads `events` (and nothing else), folded by
//! the pure functions of [`crate::access`], [`crate::leavers`],
//! [`crate::deprovision`] and [`crate::exceptions`]. The indexes they rely
//! on are in `migrations/0013_audit_queries.sql`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use std::collections::{BTreeMap, HashMap};
use tenure_store::{RecordedEvent, StoreError};
use uuid::Uuid;

use crate::access::{fold_account, parse_account_stream, AccessInterval, ACCOUNT_STATE_TYPES};
use crate::deprovision::{deprovision_row, DeprovisionReport, CIRCUIT_TYPES, REASON_TYPES};
use crate::exceptions::{
    active_leaver, failed_last_call, unmanaged_from_sweep, ExceptionsReport, CALL_TYPES,
};
use crate::leavers::{current_leaver, person_label, terminations, LIFECYCLE_TYPES};
use crate::render::{Report, Table};
use crate::{AuditError, EventRef};

/// Columns decoded by [`decode`].
pub(crate) use tenure_store::event::EVENT_COLUMNS as COLUMNS;

/// The store's decoding of an event row, its failures as the audit names
/// them.
pub(crate) fn decode(row: &PgRow) -> Result<RecordedEvent, AuditError> {
    tenure_store::event::decode_row(row).map_err(|e| match e {
        StoreError::Database(e) => AuditError::Database(e),
        StoreError::Decode(detail) => AuditError::Format(detail),
        other => AuditError::Store(other),
    })
}

fn types(lists: &[&[&str]]) -> Vec<String> {
    lists
        .iter()
        .flat_map(|l| l.iter().map(|t| (*t).to_owned()))
        .collect()
}

/// Events grouped by stream, in the order the query returned them.
fn by_stream(events: Vec<RecordedEvent>) -> BTreeMap<String, Vec<RecordedEvent>> {
    let mut out: BTreeMap<String, Vec<RecordedEvent>> = BTreeMap::new();
    for e in events {
        out.entry(e.stream_id.clone()).or_default().push(e);
    }
    out
}

async fn fetch(
    pool: &PgPool,
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<Vec<RecordedEvent>, AuditError> {
    query.fetch_all(pool).await?.iter().map(decode).collect()
}

/// Work e-mail (or name) of each person as their stream said at `at`.
async fn person_labels(
    pool: &PgPool,
    persons: &[Uuid],
    at: DateTime<Utc>,
) -> Result<HashMap<Uuid, String>, AuditError> {
    let streams: Vec<String> = persons.iter().map(|p| format!("person-{p}")).collect();
    // One backward walk of the (stream_id, version) index per person that
    // stops at the first event with attributes: a DISTINCT ON over the
    // streams read every event of every person (100k persons: seconds).
    let rows = sqlx::query(
        "SELECT s.stream_id, last.attributes
         FROM unnest($1::text[]) AS s(stream_id)
         CROSS JOIN LATERAL (
             SELECT data->'attributes' AS attributes FROM events e
             WHERE e.stream_id = s.stream_id AND e.recorded_at <= $2 AND e.data ? 'attributes'
             ORDER BY e.version DESC
             LIMIT 1
         ) last",
    )
    .bind(&streams)
    .bind(at)
    .fetch_all(pool)
    .await?;
    let mut out = HashMap::new();
    for row in rows {
        let stream: String = row.try_get("stream_id")?;
        let attributes: Value = row.try_get("attributes")?;
        if let Some(p) = stream.strip_prefix("person-").and_then(|p| p.parse().ok()) {
            out.insert(p, person_label(&attributes));
        }
    }
    Ok(out)
}

/// The events named by `ids` (the decisions that caused account changes).
async fn events_by_id(pool: &PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, EventRef>, AuditError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!("SELECT {COLUMNS} FROM events WHERE event_id = ANY($1)");
    let events = fetch(pool, sqlx::query(&sql).bind(ids)).await?;
    Ok(events
        .iter()
        .map(|e| (e.event_id, EventRef::from(e)))
        .collect())
}

/// One account as it stood at the instant asked about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccessRow {
    pub app: String,
    pub person_id: Uuid,
    pub person: String,
    pub user_name: Option<String>,
    pub remote_id: Option<String>,
    pub active: bool,
    pub active_assumed: bool,
    /// Since when the account has been in its current state (active or
    /// not) at the instant.
    pub since: DateTime<Utc>,
    /// When the account came to exist in the app.
    pub account_since: DateTime<Utc>,
    /// The event that began the access (its correlation id ties it to the
    /// HR record that started the chain).
    pub granted_by: Option<EventRef>,
    /// The decision the grant answered (the person event the fanout job
    /// was caused by), when recorded.
    pub decision: Option<EventRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccessReport {
    pub app: String,
    pub at: DateTime<Utc>,
    pub rows: Vec<AccessRow>,
}

impl Report for AccessReport {
    fn table(&self) -> Table {
        let mut t = Table::new(&[
            "person",
            "person_id",
            "user_name",
            "remote_id",
            "active",
            "since",
            "granted_by",
            "correlation_id",
            "decision",
        ]);
        for r in &self.rows {
            t.push(vec![
                r.person.clone(),
                r.person_id.to_string(),
                r.user_name.clone().unwrap_or_default(),
                r.remote_id.clone().unwrap_or_default(),
                match (r.active, r.active_assumed) {
                    (true, true) => "yes (assumed)".into(),
                    (true, false) => "yes".into(),
                    (false, _) => "no".into(),
                },
                r.since.to_rfc3339(),
                r.granted_by
                    .as_ref()
                    .map(|g| format!("{} #{}", g.event_type, g.global_position))
                    .unwrap_or_default(),
                r.granted_by
                    .as_ref()
                    .map(|g| g.correlation_id.to_string())
                    .unwrap_or_default(),
                r.decision
                    .as_ref()
                    .map(|d| format!("{} #{}", d.event_type, d.global_position))
                    .unwrap_or_default(),
            ]);
        }
        t
    }
}

/// Every account of `app` that held access at `at` (with `include_inactive`,
/// also the accounts that existed but were inactive).
pub async fn access_at(
    pool: &PgPool,
    app: &str,
    at: DateTime<Utc>,
    include_inactive: bool,
) -> Result<AccessReport, AuditError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events
         WHERE metadata->>'app' = $1 AND event_type = ANY($2) AND recorded_at <= $3
           AND stream_id LIKE 'account-%'
         ORDER BY stream_id, version"
    );
    let events = fetch(
        pool,
        sqlx::query(&sql)
            .bind(app)
            .bind(types(&[ACCOUNT_STATE_TYPES]))
            .bind(at),
    )
    .await?;
    let mut held = Vec::new();
    for (stream, events) in by_stream(events) {
        let Some((_, person_id)) = parse_account_stream(&stream) else {
            continue;
        };
        if let Some(state) = fold_account(&events).state {
            if state.active || include_inactive {
                held.push((person_id, state));
            }
        }
    }
    let persons: Vec<Uuid> = held.iter().map(|(p, _)| *p).collect();
    let labels = person_labels(pool, &persons, at).await?;
    let causes: Vec<Uuid> = held
        .iter()
        .filter_map(|(_, s)| s.granted_by.as_ref()?.causation_id)
        .collect();
    let decisions = events_by_id(pool, &causes).await?;
    let mut rows: Vec<AccessRow> = held
        .into_iter()
        .map(|(person_id, s)| AccessRow {
            app: app.to_owned(),
            person_id,
            person: labels.get(&person_id).cloned().unwrap_or_default(),
            decision: s
                .granted_by
                .as_ref()
                .and_then(|g| decisions.get(&g.causation_id?).cloned()),
            user_name: s.user_name,
            remote_id: s.remote_id,
            active: s.active,
            active_assumed: s.active_assumed,
            since: s.since,
            account_since: s.appeared.at,
            granted_by: s.granted_by,
        })
        .collect();
    rows.sort_by(|a, b| (&a.person, a.person_id).cmp(&(&b.person, b.person_id)));
    Ok(AccessReport {
        app: app.to_owned(),
        at,
        rows,
    })
}

/// A person's access intervals in one app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppIntervals {
    pub app: String,
    pub intervals: Vec<AccessInterval>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PersonAccessReport {
    pub person_id: Uuid,
    pub until: Option<DateTime<Utc>>,
    pub apps: Vec<AppIntervals>,
}

impl Report for PersonAccessReport {
    fn table(&self) -> Table {
        let mut t = Table::new(&[
            "app",
            "user_name",
            "remote_id",
            "from",
            "to",
            "granted_by",
            "ended_by",
        ]);
        let r = |e: &EventRef| format!("{} #{}", e.event_type, e.global_position);
        for a in &self.apps {
            for i in &a.intervals {
                t.push(vec![
                    a.app.clone(),
                    i.user_name.clone().unwrap_or_default(),
                    i.remote_id.clone().unwrap_or_default(),
                    i.from.to_rfc3339(),
                    i.to.map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "(open)".into()),
                    r(&i.granted_by),
                    i.ended_by.as_ref().map(r).unwrap_or_default(),
                ]);
            }
        }
        t
    }
}

/// Every access interval the person had, per app (only `app` when given),
/// from the events recorded up to `until` (all when `None`).
pub async fn person_access(
    pool: &PgPool,
    person_id: Uuid,
    app: Option<&str>,
    until: Option<DateTime<Utc>>,
) -> Result<PersonAccessReport, AuditError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events
         WHERE metadata->>'person_id' = $1 AND event_type = ANY($2)
           AND stream_id LIKE 'account-%' AND ($3::timestamptz IS NULL OR recorded_at <= $3)
         ORDER BY stream_id, version"
    );
    let events = fetch(
        pool,
        sqlx::query(&sql)
            .bind(person_id.hyphenated().to_string())
            .bind(types(&[ACCOUNT_STATE_TYPES]))
            .bind(until),
    )
    .await?;
    let mut apps = Vec::new();
    for (stream, events) in by_stream(events) {
        let Some((stream_app, _)) = parse_account_stream(&stream) else {
            continue;
        };
        if app.is_some_and(|a| a != stream_app) {
            continue;
        }
        apps.push(AppIntervals {
            app: stream_app.to_owned(),
            intervals: fold_account(&events).intervals,
        });
    }
    Ok(PersonAccessReport {
        person_id,
        until,
        apps,
    })
}

/// Account and reason events of these persons, per account stream.
async fn account_streams_of(
    pool: &PgPool,
    persons: &[Uuid],
    kinds: &[&[&str]],
) -> Result<BTreeMap<String, Vec<RecordedEvent>>, AuditError> {
    let ids: Vec<String> = persons.iter().map(|p| p.hyphenated().to_string()).collect();
    let sql = format!(
        "SELECT {COLUMNS} FROM events
         WHERE metadata->>'person_id' = ANY($1) AND event_type = ANY($2)
           AND stream_id LIKE 'account-%'
         ORDER BY stream_id, version"
    );
    let events = fetch(pool, sqlx::query(&sql).bind(&ids).bind(types(kinds))).await?;
    Ok(by_stream(events))
}

/// Time to deprovision for the leavers whose termination took effect in
/// `[from, to)`; `sla_secs` marks breaches, `now` ends pending ones.
pub async fn deprovision(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    sla_secs: i64,
    now: DateTime<Utc>,
) -> Result<DeprovisionReport, AuditError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events
         WHERE event_type = 'PersonTerminated' AND stream_id LIKE 'person-%'
         ORDER BY global_position"
    );
    let leavers: Vec<_> = fetch(pool, sqlx::query(&sql))
        .await?
        .iter()
        .flat_map(|e| terminations(std::iter::once(e)))
        .filter(|t| t.effective_at >= from && t.effective_at < to)
        .collect();
    let mut persons: Vec<Uuid> = leavers.iter().map(|t| t.person_id).collect();
    persons.sort_unstable();
    persons.dedup();
    let accounts = account_streams_of(pool, &persons, &[ACCOUNT_STATE_TYPES, REASON_TYPES]).await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM events
         WHERE event_type = ANY($1) AND stream_id LIKE 'app-%'
         ORDER BY stream_id, version"
    );
    let circuits = by_stream(fetch(pool, sqlx::query(&sql).bind(types(&[CIRCUIT_TYPES]))).await?);
    let mut per_person: HashMap<Uuid, Vec<(&str, &[RecordedEvent])>> = HashMap::new();
    for (stream, events) in &accounts {
        if let Some((app, person)) = parse_account_stream(stream) {
            per_person
                .entry(person)
                .or_default()
                .push((app, events.as_slice()));
        }
    }
    let mut rows = Vec::new();
    for t in &leavers {
        for (app, events) in per_person.get(&t.person_id).into_iter().flatten() {
            let circuit = circuits
                .get(&format!("app-{app}"))
                .map(Vec::as_slice)
                .unwrap_or_default();
            rows.extend(deprovision_row(t, app, events, circuit, now, sla_secs));
        }
    }
    Ok(DeprovisionReport::new(
        from,
        to,
        sla_secs,
        now,
        leavers.len(),
        rows,
    ))
}

/// Leavers with an active account, accounts whose last SCIM call failed,
/// and the unmanaged accounts of each app's latest sweep.
pub async fn exceptions(pool: &PgPool) -> Result<ExceptionsReport, AuditError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events
         WHERE event_type = ANY($1) AND stream_id LIKE 'person-%'
         ORDER BY stream_id, version"
    );
    let lifecycle =
        by_stream(fetch(pool, sqlx::query(&sql).bind(types(&[LIFECYCLE_TYPES]))).await?);
    let leavers: HashMap<Uuid, _> = lifecycle
        .values()
        .filter_map(|events| current_leaver(events.iter()))
        .map(|t| (t.person_id, t))
        .collect();
    let persons: Vec<Uuid> = leavers.keys().copied().collect();
    let mut report = ExceptionsReport::default();
    for (stream, events) in account_streams_of(pool, &persons, &[ACCOUNT_STATE_TYPES]).await? {
        let Some((app, person)) = parse_account_stream(&stream) else {
            continue;
        };
        let Some(t) = leavers.get(&person) else {
            continue;
        };
        let state = fold_account(&events).state;
        report
            .active_leaver_accounts
            .extend(active_leaver(t, app, state.as_ref()));
    }

    // Only the failed ones leave the database: most accounts' last call
    // succeeded.
    let sql = format!(
        "SELECT {COLUMNS} FROM (
             SELECT DISTINCT ON (stream_id) * FROM events
             WHERE event_type = ANY($1) AND stream_id LIKE 'account-%'
             ORDER BY stream_id, version DESC
         ) last
         WHERE event_type = 'ScimCallFailed'
         ORDER BY global_position"
    );
    for last in fetch(pool, sqlx::query(&sql).bind(types(&[CALL_TYPES]))).await? {
        if let Some((app, person)) = parse_account_stream(&last.stream_id) {
            report
                .failed_last_calls
                .extend(failed_last_call(app, person, &last));
        }
    }

    let sql = format!(
        "SELECT DISTINCT ON (stream_id) {COLUMNS} FROM events
         WHERE event_type = 'AccountsSwept' AND stream_id LIKE 'app-%'
         ORDER BY stream_id, version DESC"
    );
    for sweep in fetch(pool, sqlx::query(&sql)).await? {
        if let Some(app) = sweep.stream_id.strip_prefix("app-") {
            report
                .unmanaged_accounts
                .extend(unmanaged_from_sweep(app, &sweep));
        }
    }
    Ok(report)
}
