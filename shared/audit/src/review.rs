//! The access review export: every account holding access at an instant,
//! in every app or one, with what a reviewer needs to judge it (manager,
//! department, title and the last HR change), all as HR and the apps stood
//! at that instant according to the event history.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use std::collections::HashMap;
use tenure_store::RecordedEvent;
use uuid::Uuid;

use crate::access::{fold_account, parse_account_stream, AccountState, ACCOUNT_STATE_TYPES};
use crate::leavers::person_label;
use crate::read::{decode, COLUMNS};
use crate::render::{Report, Table};
use crate::{AuditError, EventRef};

/// The person as their stream said at the instant: the last event carrying
/// the full `attributes` (a lifecycle event or `AttributesChanged`), which
/// is also the last change HR made to the person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PersonAt {
    pub person: String,
    pub display_name: Option<String>,
    /// The manager's id in the HR source (`manager_id`), as HR sent it.
    pub manager: Option<String>,
    pub department: Option<String>,
    pub title: Option<String>,
    pub last_hr_change: EventRef,
    /// When the change took effect (`since`/`start_at` of a lifecycle
    /// event); `None` for an attribute change, which holds from when it
    /// was recorded.
    pub last_hr_change_effective: Option<DateTime<Utc>>,
}

fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

impl PersonAt {
    /// From the last attribute-carrying event of a person stream.
    pub fn from_event(event: &RecordedEvent) -> PersonAt {
        let a = &event.data["attributes"];
        let effective = ["since", "start_at"]
            .iter()
            .find_map(|k| serde_json::from_value(event.data[*k].clone()).ok());
        PersonAt {
            person: person_label(a),
            display_name: text(&a["display_name"]),
            manager: text(&a["manager_id"]),
            department: text(&a["department"]),
            title: text(&a["title"]),
            last_hr_change: EventRef::from(event),
            last_hr_change_effective: effective,
        }
    }
}

/// One account for the reviewer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReviewRow {
    pub app: String,
    pub person_id: Uuid,
    pub person: String,
    pub display_name: Option<String>,
    pub user_name: Option<String>,
    pub remote_id: Option<String>,
    pub active: bool,
    pub active_assumed: bool,
    /// When the account came to exist in the app.
    pub account_since: DateTime<Utc>,
    pub manager: Option<String>,
    pub department: Option<String>,
    pub title: Option<String>,
    /// `None` when no person event was recorded by the instant (an account
    /// of someone HR never sent, e.g. adopted before the first import).
    pub last_hr_change: Option<EventRef>,
    pub last_hr_change_effective: Option<DateTime<Utc>>,
    /// The event that began the current access.
    pub granted_by: Option<EventRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReviewReport {
    pub at: DateTime<Utc>,
    /// `None`: every app.
    pub app: Option<String>,
    pub rows: Vec<ReviewRow>,
}

/// One review row from an account's state and its person at the instant.
pub fn review_row(
    app: &str,
    person_id: Uuid,
    state: AccountState,
    person: Option<&PersonAt>,
) -> ReviewRow {
    ReviewRow {
        app: app.to_owned(),
        person_id,
        person: person.map(|p| p.person.clone()).unwrap_or_default(),
        display_name: person.and_then(|p| p.display_name.clone()),
        user_name: state.user_name,
        remote_id: state.remote_id,
        active: state.active,
        active_assumed: state.active_assumed,
        account_since: state.appeared.at,
        manager: person.and_then(|p| p.manager.clone()),
        department: person.and_then(|p| p.department.clone()),
        title: person.and_then(|p| p.title.clone()),
        last_hr_change: person.map(|p| p.last_hr_change.clone()),
        last_hr_change_effective: person.and_then(|p| p.last_hr_change_effective),
        granted_by: state.granted_by,
    }
}

impl Report for ReviewReport {
    fn table(&self) -> Table {
        let mut t = Table::new(&[
            "app",
            "person",
            "person_id",
            "display_name",
            "user_name",
            "remote_id",
            "active",
            "account_since",
            "manager",
            "department",
            "title",
            "last_hr_change",
            "last_hr_change_at",
            "granted_by",
            "correlation_id",
        ]);
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        for r in &self.rows {
            t.push(vec![
                r.app.clone(),
                r.person.clone(),
                r.person_id.to_string(),
                opt(&r.display_name),
                opt(&r.user_name),
                opt(&r.remote_id),
                match (r.active, r.active_assumed) {
                    (true, true) => "yes (assumed)".into(),
                    (true, false) => "yes".into(),
                    (false, _) => "no".into(),
                },
                r.account_since.to_rfc3339(),
                opt(&r.manager),
                opt(&r.department),
                opt(&r.title),
                r.last_hr_change
                    .as_ref()
                    .map(|e| format!("{} #{}", e.event_type, e.global_position))
                    .unwrap_or_default(),
                r.last_hr_change_effective
                    .or(r.last_hr_change.as_ref().map(|e| e.at))
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                r.granted_by
                    .as_ref()
                    .map(|g| format!("{} #{}", g.event_type, g.global_position))
                    .unwrap_or_default(),
                r.granted_by
                    .as_ref()
                    .map(|g| g.correlation_id.to_string())
                    .unwrap_or_default(),
            ]);
        }
        t
    }
}

/// Every account holding access at `at` in `app` (every app when `None`);
/// with `include_inactive`, also the accounts that existed but were
/// inactive. Read from `events` only.
pub async fn access_review(
    pool: &PgPool,
    app: Option<&str>,
    at: DateTime<Utc>,
    include_inactive: bool,
) -> Result<ReviewReport, AuditError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events
         WHERE ($1::text IS NULL OR metadata->>'app' = $1) AND event_type = ANY($2)
           AND recorded_at <= $3 AND stream_id LIKE 'account-%'
         ORDER BY stream_id, version"
    );
    let types: Vec<String> = ACCOUNT_STATE_TYPES.iter().map(|t| t.to_string()).collect();
    let rows = sqlx::query(&sql)
        .bind(app)
        .bind(&types)
        .bind(at)
        .fetch_all(pool)
        .await?;
    let mut streams: Vec<(String, Vec<RecordedEvent>)> = Vec::new();
    for row in &rows {
        let e = decode(row)?;
        match streams.last_mut() {
            Some((s, events)) if *s == e.stream_id => events.push(e),
            _ => streams.push((e.stream_id.clone(), vec![e])),
        }
    }
    let mut held = Vec::new();
    for (stream, events) in &streams {
        let Some((stream_app, person_id)) = parse_account_stream(stream) else {
            continue;
        };
        if let Some(state) = fold_account(events).state {
            if state.active || include_inactive {
                held.push((stream_app.to_owned(), person_id, state));
            }
        }
    }
    let mut persons: Vec<Uuid> = held.iter().map(|(_, p, _)| *p).collect();
    persons.sort_unstable();
    persons.dedup();
    let people = persons_at(pool, &persons, at).await?;
    let mut out: Vec<ReviewRow> = held
        .into_iter()
        .map(|(app, person_id, state)| review_row(&app, person_id, state, people.get(&person_id)))
        .collect();
    out.sort_by(|a, b| (&a.app, &a.person, a.person_id).cmp(&(&b.app, &b.person, b.person_id)));
    Ok(ReviewReport {
        at,
        app: app.map(str::to_owned),
        rows: out,
    })
}

/// Each person as their stream said at `at`.
pub async fn persons_at(
    pool: &PgPool,
    persons: &[Uuid],
    at: DateTime<Utc>,
) -> Result<HashMap<Uuid, PersonAt>, AuditError> {
    let streams: Vec<String> = persons.iter().map(|p| format!("person-{p}")).collect();
    let sql = format!(
        "SELECT DISTINCT ON (stream_id) {COLUMNS} FROM events
         WHERE stream_id = ANY($1) AND recorded_at <= $2 AND data ? 'attributes'
         ORDER BY stream_id, version DESC"
    );
    let rows = sqlx::query(&sql)
        .bind(&streams)
        .bind(at)
        .fetch_all(pool)
        .await?;
    let mut out = HashMap::new();
    for row in &rows {
        let e = decode(row)?;
        if let Some(p) = e
            .stream_id
            .strip_prefix("person-")
            .and_then(|p| p.parse().ok())
        {
            out.insert(p, PersonAt::from_event(&e));
        }
    }
    Ok(out)
}
