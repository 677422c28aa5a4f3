//! Signed checkpoints of the global log.
//!
//! Per-stream hash chains show an edited event, or a gap inside a stream,
//! but not a whole stream deleted by someone who disabled the append-only
//! triggers. A checkpoint commits to every event up to a position of the
//! global order `(transaction_id, global_position)` — the order in which
//! the set of earlier events can no longer change, see
//! `tenure_store::read_all` — through a running hash
//! `h' = SHA-256(h ‖ global_position ‖ event hash)`, and signs it. Re-walking
//! the log ([`verify_checkpoints`]) recomputes the running hash and every
//! event's hash: any event deleted, inserted or changed before a checkpoint
//! makes it disagree.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use ed25519_dalek::{SigningKey, VerifyingKey};
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use tenure_store::chain::{event_hash, EventFields};
use uuid::Uuid;

use crate::render::{Report, Table};
use crate::{signing, AuditError};

/// Running hash before the first event.
pub const START_HASH: [u8; 32] = [0; 32];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    pub id: i64,
    pub transaction_id: i64,
    pub global_position: i64,
    pub event_count: i64,
    pub running_hash: String,
    pub created_at: DateTime<Utc>,
    pub public_key: String,
    pub signature: String,
}

/// One step of the running hash.
pub fn step(running: &[u8; 32], global_position: i64, event_hash: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(running);
    h.update(global_position.to_be_bytes());
    h.update(event_hash);
    h.finalize().into()
}

fn signed_bytes(
    transaction_id: i64,
    global_position: i64,
    event_count: i64,
    running_hash: &str,
    created_at: DateTime<Utc>,
) -> Vec<u8> {
    format!(
        "tenure-checkpoint/1\n{transaction_id}\n{global_position}\n{event_count}\n{running_hash}\n{}",
        created_at.to_rfc3339_opts(SecondsFormat::Micros, true)
    )
    .into_bytes()
}

const CHECKPOINT_COLUMNS: &str = "id, transaction_id, global_position, event_count, running_hash, \
     created_at, public_key, signature";

fn decode(row: &sqlx::postgres::PgRow) -> Result<Checkpoint, AuditError> {
    let bytes = |k: &str| row.try_get::<Vec<u8>, _>(k).map(hex::encode);
    Ok(Checkpoint {
        id: row.try_get("id")?,
        transaction_id: row.try_get("transaction_id")?,
        global_position: row.try_get("global_position")?,
        event_count: row.try_get("event_count")?,
        running_hash: bytes("running_hash")?,
        created_at: row.try_get("created_at")?,
        public_key: bytes("public_key")?,
        signature: bytes("signature")?,
    })
}

/// Every checkpoint, in log order.
pub async fn list_checkpoints(pool: &PgPool) -> Result<Vec<Checkpoint>, AuditError> {
    let sql = format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints
         ORDER BY transaction_id, global_position, id"
    );
    sqlx::query(&sql)
        .fetch_all(pool)
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// Signs a checkpoint over every event committed so far, continuing the
/// running hash from the latest checkpoint. `None` when no event was
/// written since (or at all). Cheap to call periodically: it reads only
/// the events after the previous checkpoint.
pub async fn create_checkpoint(
    pool: &PgPool,
    key: &SigningKey,
) -> Result<Option<Checkpoint>, AuditError> {
    let last = list_checkpoints(pool).await?.pop();
    let (mut running, mut count, after) = match &last {
        Some(c) => {
            let hash = hex::decode(&c.running_hash)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or_else(|| AuditError::Format(format!("checkpoint #{} is malformed", c.id)))?;
            (hash, c.event_count, (c.transaction_id, c.global_position))
        }
        None => (START_HASH, 0, (0, 0)),
    };
    let mut conn = pool.acquire().await?;
    let mut rows = sqlx::query(
        "SELECT transaction_id::text::bigint AS transaction_id, global_position, hash FROM events
         WHERE (transaction_id, global_position) > ($1::bigint::text::xid8, $2)
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY transaction_id, global_position",
    )
    .bind(after.0)
    .bind(after.1)
    .fetch(&mut *conn);
    let mut head = None;
    while let Some(row) = rows.try_next().await? {
        let position: i64 = row.try_get("global_position")?;
        let hash: Vec<u8> = row.try_get("hash")?;
        running = step(&running, position, &hash);
        count += 1;
        head = Some((row.try_get::<i64, _>("transaction_id")?, position));
    }
    drop(rows);
    let Some((transaction_id, global_position)) = head else {
        return Ok(None);
    };
    let created_at = Utc::now().trunc_subsecs(6);
    let running_hex = hex::encode(running);
    let signature = signing::sign(
        key,
        &signed_bytes(
            transaction_id,
            global_position,
            count,
            &running_hex,
            created_at,
        ),
    );
    let sql = format!(
        "INSERT INTO audit_checkpoints
           (transaction_id, global_position, event_count, running_hash, created_at, public_key, signature)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING {CHECKPOINT_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(transaction_id)
        .bind(global_position)
        .bind(count)
        .bind(running.to_vec())
        .bind(created_at)
        .bind(key.verifying_key().to_bytes().to_vec())
        .bind(signature.to_vec())
        .fetch_one(&mut *conn)
        .await?;
    let checkpoint = decode(&row)?;
    tracing::info!(
        checkpoint = checkpoint.id,
        global_position,
        events = count,
        "signed a checkpoint of the event log"
    );
    Ok(Some(checkpoint))
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckpointVerification {
    pub checkpoints: usize,
    /// Events re-walked (up to the last checkpoint).
    pub events: u64,
    /// Whether signatures were checked against a key the caller trusts
    /// rather than the key stored with each checkpoint.
    pub trusted_key: bool,
    pub problems: Vec<String>,
}

impl CheckpointVerification {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Report for CheckpointVerification {
    fn table(&self) -> Table {
        let mut t = Table::new(&["problem"]);
        for p in &self.problems {
            t.push(vec![p.clone()]);
        }
        t
    }
}

/// Re-walks the log up to the last checkpoint and checks every checkpoint:
/// its signature (against `trusted` when given, which an auditor should
/// do: a forger could sign with a key of their own), its running hash and
/// count, and the hash of every event walked.
pub async fn verify_checkpoints(
    pool: &PgPool,
    trusted: Option<&VerifyingKey>,
) -> Result<CheckpointVerification, AuditError> {
    let checkpoints = list_checkpoints(pool).await?;
    let mut report = CheckpointVerification {
        checkpoints: checkpoints.len(),
        trusted_key: trusted.is_some(),
        ..Default::default()
    };
    for c in &checkpoints {
        let stored = signing::public_key(&c.public_key).ok();
        let key = match (trusted, &stored) {
            (Some(t), _) => Some(*t),
            (None, s) => *s,
        };
        let message = signed_bytes(
            c.transaction_id,
            c.global_position,
            c.event_count,
            &c.running_hash,
            c.created_at,
        );
        let signature = hex::decode(&c.signature).unwrap_or_default();
        if !key.is_some_and(|k| signing::verify(&k, &message, &signature)) {
            report
                .problems
                .push(if trusted.is_some() && stored != trusted.copied() {
                    format!("checkpoint #{}: not signed by the given public key", c.id)
                } else {
                    format!(
                        "checkpoint #{}: invalid signature (the checkpoint was altered)",
                        c.id
                    )
                });
        }
    }
    let Some(last) = checkpoints.last() else {
        return Ok(report);
    };

    let mut conn = pool.acquire().await?;
    let mut rows = sqlx::query(
        "SELECT transaction_id::text::bigint AS transaction_id, global_position, stream_id,
                version, event_id, event_type, data, metadata, recorded_at, prev_hash, hash
         FROM events
         WHERE (transaction_id, global_position) <= ($1::bigint::text::xid8, $2)
         ORDER BY transaction_id, global_position",
    )
    .bind(last.transaction_id)
    .bind(last.global_position)
    .fetch(&mut *conn);
    let mut running = START_HASH;
    let mut count = 0i64;
    let mut next = checkpoints.iter().peekable();
    let check = |c: &Checkpoint, running: &[u8; 32], count: i64, problems: &mut Vec<String>| {
        if hex::encode(running) != c.running_hash || count != c.event_count {
            problems.push(format!(
                "checkpoint #{} at position {}: the log up to it differs ({} events now, {} when signed): events were deleted, inserted or altered",
                c.id, c.global_position, count, c.event_count
            ));
        }
    };
    while let Some(row) = rows.try_next().await? {
        let position = (
            row.try_get::<i64, _>("transaction_id")?,
            row.try_get::<i64, _>("global_position")?,
        );
        // A checkpoint whose own last event is gone is checked before the
        // event that now follows it.
        while let Some(c) = next.next_if(|c| (c.transaction_id, c.global_position) < position) {
            check(c, &running, count, &mut report.problems);
        }
        let stream_id: String = row.try_get("stream_id")?;
        let version: i64 = row.try_get("version")?;
        let data: Value = row.try_get("data")?;
        let metadata: Value = row.try_get("metadata")?;
        let prev_hash: Vec<u8> = row.try_get("prev_hash")?;
        let hash: Vec<u8> = row.try_get("hash")?;
        let recomputed = event_hash(
            &prev_hash,
            &EventFields {
                stream_id: &stream_id,
                version,
                event_id: row.try_get::<Uuid, _>("event_id")?,
                event_type: &row.try_get::<String, _>("event_type")?,
                data: &data,
                metadata: &metadata,
                recorded_at: row.try_get("recorded_at")?,
            },
        );
        if recomputed[..] != hash[..] {
            report.problems.push(format!(
                "{stream_id} version {version}: the content does not match its hash"
            ));
        }
        running = step(&running, position.1, &hash);
        count += 1;
        report.events += 1;
        while let Some(c) = next.next_if(|c| (c.transaction_id, c.global_position) == position) {
            check(c, &running, count, &mut report.problems);
        }
    }
    for c in next {
        check(c, &running, count, &mut report.problems);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_hash_depends_on_order_and_position() {
        let a = step(&START_HASH, 1, &[1; 32]);
        let ab = step(&a, 2, &[2; 32]);
        let b = step(&START_HASH, 2, &[2; 32]);
        let ba = step(&b, 1, &[1; 32]);
        assert_ne!(ab, ba);
        assert_ne!(
            step(&START_HASH, 1, &[1; 32]),
            step(&START_HASH, 3, &[1; 32])
        );
    }

    #[test]
    fn the_signed_text_pins_every_field() {
        let t = DateTime::parse_from_rfc3339("2026-03-31T10:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            String::from_utf8(signed_bytes(7, 42, 40, "ab", t)).unwrap(),
            "tenure-checkpoint/1\n7\n42\n40\nab\n2026-03-31T10:00:00.500000Z"
        );
    }
}
