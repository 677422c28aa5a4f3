//! Publishes outbox rows to JetStream. Rows are deleted only after JetStream
//! acknowledged them; the message id makes a re-publish after a crash a
//! no-op on the bus.

use bytes::Bytes;
use std::time::Duration;
use tenure_bus::Bus;
use tenure_store::sqlx::{self, postgres::PgListener, PgPool, Row};
use tokio_util::sync::CancellationToken;
use tracing::warn;

const BATCH: i64 = 256;

pub async fn run(pool: PgPool, bus: Bus, shutdown: CancellationToken) {
    let mut listener = match PgListener::connect_with(&pool).await {
        Ok(mut l) => match l.listen(crate::process::OUTBOX_CHANNEL).await {
            Ok(()) => Some(l),
            Err(e) => {
                warn!(error = %e, "LISTEN failed; relay falls back to polling");
                None
            }
        },
        Err(e) => {
            warn!(error = %e, "no listener connection; relay falls back to polling");
            None
        }
    };
    loop {
        loop {
            match publish_batch(&pool, &bus).await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    warn!(error = %e, "outbox relay failed; retrying");
                    break;
                }
            }
        }
        // A notification wakes the relay at once; the poll interval covers
        // a lost connection or a notification missed during a batch.
        let wait = async {
            match listener.as_mut() {
                Some(l) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), l.recv()).await;
                }
                None => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wait => {}
        }
    }
}

/// Publishes up to one batch; returns how many rows were published.
pub async fn publish_batch(pool: &PgPool, bus: &Bus) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // SKIP LOCKED lets several relays share the outbox without double work.
    let rows = sqlx::query("SELECT id, msg_id, subject, payload FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED")
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut batch = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let payload: serde_json::Value = row.try_get("payload")?;
        ids.push(id);
        batch.push((
            row.try_get::<String, _>("subject")?,
            row.try_get::<String, _>("msg_id")?,
            Bytes::from(serde_json::to_vec(&payload).unwrap_or_default()),
        ));
    }
    let results = bus.publish_many(batch).await;
    let done: Vec<i64> = ids
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(id, _)| *id)
        .collect();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        warn!(error = %e, failed = ids.len() - done.len(), "some outbox messages were not stored; they stay for the next round");
    }
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(&done)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.len())
}
