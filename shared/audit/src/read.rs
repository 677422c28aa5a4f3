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

/// What the account fold reads of an event: no hashes, and of the metadata
/// only the ids an [`EventRef`] carries: exactly the columns the partial
/// indexes of migrations 0014 and 0015 include, so their reads stay
/// index-only.
const FOLD_COLUMNS: &str = "global_position, stream_id, version, event_id, event_type, data, \
     recorded_at, (metadata->>'correlation_id')::uuid AS correlation_id, \
     (metadata->>'causation_id')::uuid AS causation_id";

/// A row of [`FOLD_COLUMNS`]: an event with only what the fold reads
/// (empty hashes, transaction id 0); never returned to callers.
fn decode_for_fold(row: &PgRow) -> Result<RecordedEvent, AuditError> {
    Ok(RecordedEvent {
        global_position: row.try_get("global_position")?,
        transaction_id: 0,
        stream_id: row.try_get("stream_id")?,
        version: row.try_get("version")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        data: row.try_get("data")?,
        metadata: tenure_store::Metadata {
            correlation_id: row.try_get("correlation_id")?,
            causation_id: row.try_get("causation_id")?,
            ..tenure_store::Metadata::default()
        },
        recorded_at: row.try_get("recorded_at")?,
        prev_hash: String::new(),
        hash: String::new(),
    })
}

/// The account events that can change what access at an instant shows:
/// an account appearing, deactivated or deleted, and the updates writing
/// `active` or `userName`. Exactly the predicate of the partial index
/// `events_account_access_idx` (migrations/0014_audit_access_index.sql):
/// change one, change both. Updates of other attributes (a mover's title)
/// leave `active`, `userName` and the account's id as they were, so the
/// fold comes out the same without them (the id aside, see `access_at`).
const ACCESS_EVENTS: &str = "stream_id LIKE 'account-%' AND (
        event_type IN ('AccountCreated', 'AccountLinked', 'AccountAdopted', 'AccountDeactivated', 'AccountDeleted')
        OR (event_type = 'AccountUpdated' AND (
            data ? 'replaced_with'
            OR data->'changes' @> '[{\"path\": \"active\"}]'
            OR data->'changes' @> '[{\"path\": \"userName\"}]')))";

/// [`ACCESS_EVENTS`] and the events that explain a slow deprovisioning
/// (`REASON_TYPES`): the predicate of the partial index
/// `events_leaver_accounts_idx` (migrations/0015_audit_leaver_accounts_index.sql),
/// keyed by person for time to deprovision and the exceptions report.
const LEAVER_EVENTS: &str = "stream_id LIKE 'account-%' AND (
        event_type IN ('AccountCreated', 'AccountLinked', 'AccountAdopted', 'AccountDeactivated', 'AccountDeleted',
                       'JobDeadLettered', 'DeprovisionStaged', 'ScimCallFailed', 'ReconcileFailed')
        OR (event_type = 'AccountUpdated' AND (
            data ? 'replaced_with'
            OR data->'changes' @> '[{\"path\": \"active\"}]'
            OR data->'changes' @> '[{\"path\": \"userName\"}]')))";

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
    // stops at the first event with attributes, instead of a DISTINCT ON
    // that read and sorted every event of every person asked about.
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

/// The last remote id each of these account streams named up to `at`
/// (all events when `None`), by stream.
async fn remote_ids(
    pool: &PgPool,
    streams: &[String],
    at: Option<DateTime<Utc>>,
) -> Result<HashMap<String, String>, AuditError> {
    if streams.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT DISTINCT ON (stream_id) stream_id, data->>'remote_id' AS remote_id
         FROM events
         WHERE stream_id = ANY($1) AND event_type = ANY($2)
           AND ($3::timestamptz IS NULL OR recorded_at <= $3)
           AND data->>'remote_id' IS NOT NULL
         ORDER BY stream_id, version DESC",
    )
    .bind(streams)
    .bind(types(&[ACCOUNT_STATE_TYPES]))
    .bind(at)
    .fetch_all(pool)
    .await?;
    let mut out = HashMap::new();
    for row in rows {
        out.insert(row.try_get("stream_id")?, row.try_get("remote_id")?);
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
    // An index-only scan of `events_account_access_idx` (ACCESS_EVENTS);
    // sorted here rather than by the database, whose sort spilled to disk.
    let sql = format!(
        "SELECT {FOLD_COLUMNS} FROM events
         WHERE metadata->>'app' = $1 AND recorded_at <= $2 AND {ACCESS_EVENTS}"
    );
    let mut events: Vec<RecordedEvent> = sqlx::query(&sql)
        .bind(app)
        .bind(at)
        .fetch_all(pool)
        .await?
        .iter()
        .map(decode_for_fold)
        .collect::<Result<_, _>>()?;
    events.sort_unstable_by(|a, b| (&a.stream_id, a.version).cmp(&(&b.stream_id, b.version)));
    let mut held = Vec::new();
    let mut unknown_ids = Vec::new();
    for (stream, events) in by_stream(events) {
        let Some((_, person_id)) = parse_account_stream(&stream) else {
            continue;
        };
        if let Some(state) = fold_account(&events).state {
            if state.active || include_inactive {
                if state.remote_id.is_none() {
                    unknown_ids.push(stream.clone());
                }
                held.push((person_id, state));
            }
        }
    }
    // The updates left out of ACCESS_EVENTS name the id the account already
    // had, except where the create's answer was lost and a later call was
    // the first to carry the id: those few are looked up in full.
    let late_ids = remote_ids(pool, &unknown_ids, Some(at)).await?;
    for (person_id, state) in &mut held {
        if state.remote_id.is_none() {
            state.remote_id = late_ids.get(&format!("account-{app}-{person_id}")).cloned();
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

/// Account and reason events of these persons, per account stream, as the
/// fold reads them ([`FOLD_COLUMNS`]): an index-only scan of
/// `events_leaver_accounts_idx` ([`LEAVER_EVENTS`]), so updates that write
/// neither `active` nor `userName` are not among them.
async fn account_streams_of(
    pool: &PgPool,
    persons: &[Uuid],
    kinds: &[&[&str]],
) -> Result<BTreeMap<String, Vec<RecordedEvent>>, AuditError> {
    let ids: Vec<String> = persons.iter().map(|p| p.hyphenated().to_string()).collect();
    let sql = format!(
        "SELECT {FOLD_COLUMNS} FROM events
         WHERE metadata->>'person_id' = ANY($1) AND event_type = ANY($2) AND {LEAVER_EVENTS}"
    );
    let mut events: Vec<RecordedEvent> = sqlx::query(&sql)
        .bind(&ids)
        .bind(types(kinds))
        .fetch_all(pool)
        .await?
        .iter()
        .map(decode_for_fold)
        .collect::<Result<_, _>>()?;
    events.sort_unstable_by(|a, b| (&a.stream_id, a.version).cmp(&(&b.stream_id, b.version)));
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
    // Only a person terminated (or purged) at some point can be a leaver
    // now: the others' lifecycle events are not read.
    let sql = format!(
        "SELECT {COLUMNS} FROM events
         WHERE event_type = ANY($1) AND stream_id IN (
             SELECT stream_id FROM events
             WHERE event_type IN ('PersonTerminated', 'PersonPurged') AND stream_id LIKE 'person-%'
         )
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
    // As in `access_at`: an id first named by an update left out.
    let unknown: Vec<String> = report
        .active_leaver_accounts
        .iter()
        .filter(|a| a.remote_id.is_none())
        .map(|a| format!("account-{}-{}", a.app, a.person_id))
        .collect();
    let late_ids = remote_ids(pool, &unknown, None).await?;
    for a in &mut report.active_leaver_accounts {
        if a.remote_id.is_none() {
            a.remote_id = late_ids
                .get(&format!("account-{}-{}", a.app, a.person_id))
                .cloned();
        }
    }

    // A failed call that no later call on its stream followed. Starting
    // from the (few) failures keeps this off the millions of successful
    // calls, which a "last call per stream, then keep the failed" query
    // had to sort.
    let sql = format!(
        "SELECT {COLUMNS} FROM events failed
         WHERE failed.event_type = 'ScimCallFailed' AND failed.stream_id LIKE 'account-%'
           AND NOT EXISTS (
               SELECT 1 FROM events later
               WHERE later.stream_id = failed.stream_id AND later.version > failed.version
                 AND later.event_type = ANY($1)
           )
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
