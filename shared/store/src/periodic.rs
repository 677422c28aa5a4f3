//! Claiming runs of periodic tasks (`cron_runs`), shared by every process
//! that runs them, so a task runs once per due time however many engines
//! or fanouts are up, and once after an outage, not once per missed run.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// In the caller's transaction: whether `name` is due at `now` given
/// `next_after` (the task's schedule), and if so, marks it as run at `now`.
/// A first sighting starts the task's clock and is not a run. The row is
/// taken with `SKIP LOCKED`: while another transaction holds it, the answer
/// is "not due". Rolling the transaction back undoes the claim.
pub async fn claim_periodic(
    conn: &mut PgConnection,
    name: &str,
    now: DateTime<Utc>,
    next_after: impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
) -> Result<bool, sqlx::Error> {
    sqlx::query("INSERT INTO cron_runs (name, last_run_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(name)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let last: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT last_run_at FROM cron_runs WHERE name = $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let due = last.and_then(next_after).is_some_and(|next| next <= now);
    if due {
        sqlx::query("UPDATE cron_runs SET last_run_at = $2 WHERE name = $1")
            .bind(name)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(due)
}
