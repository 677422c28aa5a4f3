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
