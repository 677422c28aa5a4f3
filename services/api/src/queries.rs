//! Read-side queries shared by the HTTP API and the CLI.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tenure_store::sqlx::{self, PgPool, Row};
use tenure_store::RecordedEvent;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize)]
pub struct PersonRow {
    pub person_id: Uuid,
    pub source: String,
    pub source_person_id: String,
    pub status: String,
    pub attributes: serde_json::Value,
    /// Display names of the IdP groups the person's linked identities are
    /// in (what rules see as `person.groups`), sorted.
    pub groups: serde_json::Value,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountRow {
    pub app: String,
    pub person_id: Uuid,
    pub remote_id: Option<String>,
    pub user_name: Option<String>,
    pub active: Option<bool>,
    pub updated_at: DateTime<Utc>,
}

fn person(r: &sqlx::postgres::PgRow) -> Result<PersonRow, sqlx::Error> {
    Ok(PersonRow {
        person_id: r.try_get("person_id")?,
        source: r.try_get("source")?,
        source_person_id: r.try_get("source_person_id")?,
        status: r.try_get("status")?,
        attributes: r.try_get("attributes")?,
        groups: r.try_get("groups")?,
        version: r.try_get("version")?,
        updated_at: r.try_get("updated_at")?,
    })
}

const PERSON_COLUMNS: &str =
    "person_id, source, source_person_id, status, attributes, groups, version, updated_at";

pub async fn persons(pool: &PgPool, limit: i64) -> Result<Vec<PersonRow>, sqlx::Error> {
    let sql = format!("SELECT {PERSON_COLUMNS} FROM persons ORDER BY updated_at DESC LIMIT $1");
    sqlx::query(&sql)
        .bind(limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(person)
        .collect()
}

/// Finds a person by Tenure id, work e-mail (case-insensitive) or source person id.
pub async fn find_person(pool: &PgPool, key: &str) -> Result<Option<PersonRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {PERSON_COLUMNS} FROM persons
         WHERE person_id::text = $1 OR lower(attributes->>'email') = lower($1) OR source_person_id = $1
         ORDER BY updated_at DESC LIMIT 1"
    );
    sqlx::query(&sql)
        .bind(key)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(person)
        .transpose()
}

pub async fn accounts(
    pool: &PgPool,
    app: Option<&str>,
    person: Option<Uuid>,
) -> Result<Vec<AccountRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT app, person_id, remote_id, user_name, active, updated_at FROM accounts
         WHERE ($1::text IS NULL OR app = $1) AND ($2::uuid IS NULL OR person_id = $2)
         ORDER BY app, user_name",
    )
    .bind(app)
    .bind(person)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AccountRow {
                app: r.try_get("app")?,
                person_id: r.try_get("person_id")?,
                remote_id: r.try_get("remote_id")?,
                user_name: r.try_get("user_name")?,
                active: r.try_get("active")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect()
}

pub async fn timeline(
    pool: &PgPool,
    person_id: Uuid,
) -> Result<Vec<RecordedEvent>, tenure_store::StoreError> {
    tenure_store::person_timeline(pool, person_id).await
}

/// One line per event for terminals: time, stream, type, the ids that chain
/// it to its cause, and a short summary of the payload.
pub fn timeline_line(e: &RecordedEvent) -> String {
    let short = |u: Uuid| u.simple().to_string()[..8].to_string();
    let summary = match e.event_type.as_str() {
        "ScimCallSucceeded" | "ScimCallFailed" => format!(
            "{} {} -> {} ({} ms){}",
            e.data["method"].as_str().unwrap_or("?"),
            e.data["path"].as_str().unwrap_or("?"),
            e.data["status"]
                .as_u64()
                .map_or("no response".to_string(), |s| s.to_string()),
            e.data["latency_ms"].as_u64().unwrap_or(0),
            e.data["error"]
                .as_str()
                .map(|m| format!(" error: {m}"))
                .unwrap_or_default()
        ),
        "SourceRecordReceived" => format!(
            "{} delivery {} status {}",
            e.data["source"].as_str().unwrap_or("?"),
            e.data["delivery_id"].as_str().unwrap_or("?"),
            e.data["record"]["employment_status"]
                .as_str()
                .unwrap_or("?")
        ),
        _ => {
            let s = e.data.to_string();
            if s.len() > 100 {
                format!(
                    "{}…",
                    &s[..s.char_indices().nth(100).map_or(s.len(), |(i, _)| i)]
                )
            } else {
                s
            }
        }
    };
    format!(
        "{}  {:<44} {:<22} id={} cause={} corr={}  {}",
        e.recorded_at.format("%Y-%m-%d %H:%M:%S%.3f"),
        e.stream_id,
        e.event_type,
        short(e.event_id),
        e.metadata.causation_id.map_or("-".to_string(), short),
        short(e.metadata.correlation_id),
        summary
    )
}

#[derive(Debug, Clone, Serialize)]
pub struct ScheduleRow {
    pub person_id: Uuid,
    pub email: Option<String>,
    pub kind: String,
    pub app: Option<String>,
    pub due_at: DateTime<Utc>,
    pub time_zone: String,
    /// The due instant on the person's local wall clock, with its offset.
    pub due_local: String,
}

pub async fn schedules(pool: &PgPool, limit: i64) -> Result<Vec<ScheduleRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT s.person_id, p.attributes->>'email' AS email, s.kind, s.app, s.due_at, s.time_zone
         FROM schedules s LEFT JOIN persons p ON p.person_id = s.person_id
         ORDER BY s.due_at, s.person_id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let due_at: DateTime<Utc> = r.try_get("due_at")?;
            let time_zone: String = r.try_get("time_zone")?;
            let due_local = match time_zone.parse::<chrono_tz::Tz>() {
                Ok(tz) => due_at
                    .with_timezone(&tz)
                    .format("%Y-%m-%d %H:%M:%S %Z")
                    .to_string(),
                Err(_) => due_at.to_rfc3339(),
            };
            Ok(ScheduleRow {
                person_id: r.try_get("person_id")?,
                email: r.try_get("email")?,
                kind: r.try_get("kind")?,
                app: r.try_get("app")?,
                due_at,
                time_zone,
                due_local,
            })
        })
        .collect()
}

/// One IdP identity as the engine last applied it, and the HR person it is
/// linked to (none: no person correlates yet).
#[derive(Debug, Clone, Serialize)]
pub struct IdentityRow {
    pub provider: String,
    pub idp_id: String,
    pub user_name: String,
    pub emails: serde_json::Value,
    pub employee_number: Option<String>,
    pub active: Option<bool>,
    pub groups: serde_json::Value,
    pub deleted: bool,
    pub person_id: Option<Uuid>,
    /// The linked person's work e-mail and source id, for reading.
    pub person_email: Option<String>,
    pub person_source_id: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// IdP identities, by provider and user name; `unlinked` keeps only those
/// no HR person correlates with.
pub async fn identities(
    pool: &PgPool,
    provider: Option<&str>,
    unlinked: bool,
    limit: i64,
) -> Result<Vec<IdentityRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT i.provider, i.idp_id, i.user_name,
                COALESCE(i.snapshot->'emails', '[]') AS emails,
                i.snapshot->>'employee_number' AS employee_number,
                (i.snapshot->>'active')::boolean AS active,
                COALESCE(i.snapshot->'groups', '[]') AS groups,
                i.deleted, i.person_id, i.updated_at,
                p.attributes->>'email' AS person_email, p.source_person_id AS person_source_id
         FROM idp_identities i LEFT JOIN persons p ON p.person_id = i.person_id
         WHERE ($1::text IS NULL OR i.provider = $1) AND (NOT $2 OR i.person_id IS NULL)
         ORDER BY i.provider, lower(i.user_name), i.idp_id
         LIMIT $3",
    )
    .bind(provider)
    .bind(unlinked)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(IdentityRow {
                provider: r.try_get("provider")?,
                idp_id: r.try_get("idp_id")?,
                user_name: r.try_get("user_name")?,
                emails: r.try_get("emails")?,
                employee_number: r.try_get("employee_number")?,
                active: r.try_get("active")?,
                groups: r.try_get("groups")?,
                deleted: r.try_get("deleted")?,
                person_id: r.try_get("person_id")?,
                person_email: r.try_get("person_email")?,
                person_source_id: r.try_get("person_source_id")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect()
}
