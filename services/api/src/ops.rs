//! Operator actions shared by the HTTP API and the CLI.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tenure_bus::Bus;
use tenure_store::sqlx::{self, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StagedRow {
    pub app: String,
    pub person_id: Uuid,
    pub email: String,
    pub reason: String,
    pub staged_at: DateTime<Utc>,
}

pub async fn staged(pool: &PgPool, app: Option<&str>) -> Result<Vec<StagedRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.app, s.person_id, coalesce(p.attributes->>'email', '') AS email, s.reason, s.staged_at
         FROM staged_changes s LEFT JOIN persons p ON p.person_id = s.person_id
         WHERE $1::text IS NULL OR s.app = $1 ORDER BY s.staged_at",
    )
    .bind(app)
    .fetch_all(pool)
    .await
}

/// The stream holding one `OperatorActionTaken` event per operator action
/// (redrive, approve, …), whoever did it: an API token or the CLI.
pub const OPERATOR_STREAM: &str = "operator";

/// Records an operator action in the audit trail: what was done, by whom
/// (`actor`: `api:<token name>` or `cli:<user>`) and how it ended.
pub async fn record_action(
    pool: &PgPool,
    actor: &str,
    action: &str,
    app: Option<&str>,
    details: serde_json::Value,
    outcome: Result<serde_json::Value, String>,
) -> Result<(), tenure_store::StoreError> {
    let (ok, result) = match outcome {
        Ok(v) => (true, v),
        Err(e) => (false, serde_json::Value::String(e)),
    };
    let event = tenure_store::NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "OperatorActionTaken".into(),
        data: serde_json::json!({
            "action": action,
            "actor": actor,
            "details": details,
            "ok": ok,
            "result": result,
        }),
        metadata: tenure_store::Metadata {
            correlation_id: Uuid::new_v4(),
            app: app.map(str::to_owned),
            actor: actor.to_owned(),
            ..tenure_store::Metadata::default()
        },
    };
    let mut conn = pool.acquire().await?;
    tenure_store::append(
        &mut conn,
        OPERATOR_STREAM,
        tenure_store::ExpectedVersion::Any,
        &[event],
    )
    .await?;
    Ok(())
}

fn not_recorded(e: tenure_store::StoreError) -> anyhow::Error {
    anyhow::anyhow!("the action ran but could not be recorded in the audit trail: {e}")
}

/// Releases held deprovisioning of `app`: every held change, or only those
/// of `persons`. Returns how many were released. The action is recorded on
/// the [`OPERATOR_STREAM`] under `actor`.
pub async fn approve(
    pool: &PgPool,
    bus: &Bus,
    app: &str,
    persons: Option<&[Uuid]>,
    partitions: u32,
    actor: &str,
) -> anyhow::Result<usize> {
    let outcome = approve_held(pool, bus, app, persons, partitions).await;
    record_action(
        pool,
        actor,
        "approve",
        Some(app),
        serde_json::json!({ "app": app, "persons": persons }),
        match &outcome {
            Ok(n) => Ok(serde_json::json!({ "released": n })),
            Err(e) => Err(format!("{e:#}")),
        },
    )
    .await
    .map_err(not_recorded)?;
    outcome
}

async fn approve_held(
    pool: &PgPool,
    bus: &Bus,
    app: &str,
    persons: Option<&[Uuid]>,
    partitions: u32,
) -> anyhow::Result<usize> {
    let rows: Vec<(Uuid, serde_json::Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT person_id, job, staged_at FROM staged_changes WHERE app = $1 ORDER BY staged_at",
    )
    .bind(app)
    .fetch_all(pool)
    .await?;
    let mut released = 0;
    for (person, job, staged_at) in rows {
        if persons.is_some_and(|p| !p.contains(&person)) {
            continue;
        }
        let mut job: tenure_bus::Job = serde_json::from_value(job)?;
        job.approved = true;
        bus.publish(
            &tenure_bus::subjects::jobs(app, job.partition(partitions)),
            &format!("approve:{app}:{person}:{}", staged_at.timestamp_micros()),
            &[],
            Bytes::from(serde_json::to_vec(&job)?),
        )
        .await?;
        // After the publish: a crash in between only means approving again.
        sqlx::query(
            "DELETE FROM staged_changes WHERE app = $1 AND person_id = $2 AND staged_at = $3",
        )
        .bind(app)
        .bind(person)
        .bind(staged_at)
        .execute(pool)
        .await?;
        released += 1;
    }
    Ok(released)
}

/// Redrives dead letter `sequence`, of either kind. For a fanout job, the
/// person's open dead letter in the app is closed first (with
/// `DeadLetterRedriven` on the account stream): the fanout skips jobs of a
/// dead-lettered person, so the redriven job must find it closed.
///
/// The action is recorded on the [`OPERATOR_STREAM`] under `actor`.
pub async fn redrive(
    pool: &PgPool,
    bus: &Bus,
    sequence: u64,
    partitions: u32,
    actor: &str,
) -> anyhow::Result<Option<tenure_bus::dlq::Redriven>> {
    let outcome = redrive_entry(pool, bus, sequence, partitions, actor).await;
    let result = match &outcome {
        Ok(Some(r)) => Ok(serde_json::to_value(r).unwrap_or(serde_json::Value::Null)),
        Ok(None) => Err(format!("no dead letter #{sequence}")),
        Err(e) => Err(format!("{e:#}")),
    };
    let app = match &outcome {
        Ok(Some(tenure_bus::dlq::Redriven::Job { job })) => Some(job.app.as_str()),
        _ => None,
    };
    record_action(
        pool,
        actor,
        "redrive",
        app,
        serde_json::json!({ "sequence": sequence }),
        result,
    )
    .await
    .map_err(not_recorded)?;
    outcome
}

async fn redrive_entry(
    pool: &PgPool,
    bus: &Bus,
    sequence: u64,
    partitions: u32,
    actor: &str,
) -> anyhow::Result<Option<tenure_bus::dlq::Redriven>> {
    if let Some(tenure_bus::dlq::DeadEntry::Job(entry)) = bus.dead_entry(sequence).await? {
        let job = &entry.letter.job;
        let event = tenure_store::NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "DeadLetterRedriven".into(),
            data: serde_json::json!({ "sequence": sequence }),
            metadata: tenure_store::Metadata {
                correlation_id: job.correlation_id,
                causation_id: job.causation_id,
                person_id: Some(job.person_id),
                app: Some(job.app.clone()),
                source: None,
                actor: actor.into(),
                effective_at: None,
            },
        };
        let mut tx = pool.begin().await?;
        tenure_store::dead_letters::close_dead_letter(
            &mut tx,
            &job.app,
            job.person_id,
            &format!("account-{}-{}", job.app, job.person_id),
            &event,
        )
        .await?;
        tx.commit().await?;
    }
    Ok(bus.redrive_any(sequence, partitions).await?)
}
