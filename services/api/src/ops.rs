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

/// Releases held deprovisioning of `app`: every held change, or only those
/// of `persons`. Returns how many were released.
pub async fn approve(
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
pub async fn redrive(
    pool: &PgPool,
    bus: &Bus,
    sequence: u64,
    partitions: u32,
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
                actor: "operator".into(),
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
