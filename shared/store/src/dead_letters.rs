//! The projection of open dead letters per (app, person), written together
//! with the account-stream event that explains each change:
//! `JobDeadLettered` opens a row, `DeadLetterRedriven` (an operator's
//! redrive) or `DeadLetterCleared` (the person changed since) closes it.
//! While a row is open the periodic reconcile leaves the person alone in
//! that app.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{append, ExpectedVersion, NewEvent, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct OpenDeadLetter {
    pub app: String,
    pub person_id: Uuid,
    pub sequence: i64,
    pub reason: String,
    pub error: String,
    pub deliveries: i64,
    pub causation_id: Option<Uuid>,
    pub dead_at: DateTime<Utc>,
}

/// The open dead letter of (app, person), if any.
pub async fn open_dead_letter<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    app: &str,
    person_id: Uuid,
) -> Result<Option<OpenDeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT app, person_id, sequence, reason, error, deliveries, causation_id, dead_at
         FROM open_dead_letters WHERE app = $1 AND person_id = $2",
    )
    .bind(app)
    .bind(person_id)
    .fetch_optional(executor)
    .await
}

/// The open dead letters of `app` among `persons`.
pub async fn open_dead_letters_among<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    app: &str,
    persons: &[Uuid],
) -> Result<Vec<OpenDeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT app, person_id, sequence, reason, error, deliveries, causation_id, dead_at
         FROM open_dead_letters WHERE app = $1 AND person_id = ANY($2)",
    )
    .bind(app)
    .bind(persons)
    .fetch_all(executor)
    .await
}

/// Open dead letters, oldest first, optionally of one app.
pub async fn open_dead_letters<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    app: Option<&str>,
) -> Result<Vec<OpenDeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT app, person_id, sequence, reason, error, deliveries, causation_id, dead_at
         FROM open_dead_letters WHERE $1::text IS NULL OR app = $1 ORDER BY dead_at",
    )
    .bind(app)
    .fetch_all(executor)
    .await
}

/// In the caller's transaction: appends `event` (`JobDeadLettered`) to
/// `stream` and opens (or refreshes) the row for `letter`.
pub async fn record_dead_letter(
    conn: &mut PgConnection,
    stream: &str,
    event: &NewEvent,
    letter: &OpenDeadLetter,
) -> Result<(), StoreError> {
    append(
        conn,
        stream,
        ExpectedVersion::Any,
        std::slice::from_ref(event),
    )
    .await?;
    sqlx::query(
        "INSERT INTO open_dead_letters (app, person_id, sequence, reason, error, deliveries, causation_id, dead_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (app, person_id) DO UPDATE SET sequence = $3, reason = $4, error = $5,
             deliveries = $6, causation_id = $7, dead_at = $8",
    )
    .bind(&letter.app)
    .bind(letter.person_id)
    .bind(letter.sequence)
    .bind(&letter.reason)
    .bind(&letter.error)
    .bind(letter.deliveries)
    .bind(letter.causation_id)
    .bind(letter.dead_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// In the caller's transaction: closes the open dead letter of (app,
/// person) and appends `event` (`DeadLetterRedriven` or
/// `DeadLetterCleared`) to `stream`. Nothing is written when none is open;
/// the closed row is returned.
pub async fn close_dead_letter(
    conn: &mut PgConnection,
    app: &str,
    person_id: Uuid,
    stream: &str,
    event: &NewEvent,
) -> Result<Option<OpenDeadLetter>, StoreError> {
    let closed: Option<OpenDeadLetter> = sqlx::query_as(
        "DELETE FROM open_dead_letters WHERE app = $1 AND person_id = $2
         RETURNING app, person_id, sequence, reason, error, deliveries, causation_id, dead_at",
    )
    .bind(app)
    .bind(person_id)
    .fetch_optional(&mut *conn)
    .await?;
    if closed.is_some() {
        append(
            conn,
            stream,
            ExpectedVersion::Any,
            std::slice::from_ref(event),
        )
        .await?;
    }
    Ok(closed)
}

/// Whether a job caused by `causation` may run for a person whose dead
/// letter is `open`: only a job with a cause other than the dead job's (a
/// newer change of the person) runs, and it clears the dead letter. Jobs
/// without a cause (periodic reconciles, sweeps) and redeliveries of the
/// dead job's cause wait for a redrive.
pub fn job_clears(open: &OpenDeadLetter, causation: Option<Uuid>) -> bool {
    causation.is_some() && causation != open.causation_id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(causation_id: Option<Uuid>) -> OpenDeadLetter {
        OpenDeadLetter {
            app: "wiki".into(),
            person_id: Uuid::new_v4(),
            sequence: 1,
            reason: "exhausted".into(),
            error: "HTTP 500".into(),
            deliveries: 3,
            causation_id,
            dead_at: Utc::now(),
        }
    }

    #[test]
    fn only_a_newer_change_of_the_person_clears_a_dead_letter() {
        let cause = Uuid::new_v4();
        let open = letter(Some(cause));
        assert!(!job_clears(&open, None), "a periodic reconcile waits");
        assert!(
            !job_clears(&open, Some(cause)),
            "the dead job's cause waits"
        );
        assert!(job_clears(&open, Some(Uuid::new_v4())));
        let from_reconcile = letter(None);
        assert!(!job_clears(&from_reconcile, None));
        assert!(job_clears(&from_reconcile, Some(cause)));
    }
}
