//! Signed evidence exports: events as JSON Lines, each with its stored
//! hashes, closed by a manifest line signed with Ed25519.
//!
//! ```text
//! {"global_position":1,…,"prev_hash":"00…","hash":"9f…"}
//! …
//! {"manifest":{"format":"tenure-audit-export/1","count":2,…,"lines_sha256":"…"},"signature":"…"}
//! ```
//!
//! `lines_sha256` is one SHA-256 over every event line with its `\n`, in
//! file order, so removing, adding, editing or reordering a line changes it;
//! the manifest is signed, so it cannot be recomputed without the key.
//! [`verify_export`] needs only the file and the public key, and also
//! recomputes each event's hash from its fields and checks the per-stream
//! links, to say which line is wrong.

use chrono::{DateTime, Utc};
use ed25519_dalek::{SigningKey, VerifyingKey};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use tenure_store::chain::{event_hash, EventFields};
use uuid::Uuid;

use crate::signing;
use crate::AuditError;

pub const FORMAT: &str = "tenure-audit-export/1";

/// One event line: the stored row, hashes in hex. `data` and `metadata`
/// are exactly the stored jsonb, so the hash can be recomputed from them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedEvent {
    pub global_position: i64,
    pub transaction_id: i64,
    pub stream_id: String,
    pub version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub data: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: String,
    pub hash: String,
}

impl ExportedEvent {
    /// Whether `hash` is the hash of the fields and `prev_hash`.
    pub fn hash_matches(&self) -> bool {
        let Ok(prev) = hex::decode(&self.prev_hash) else {
            return false;
        };
        let recomputed = event_hash(
            &prev,
            &EventFields {
                stream_id: &self.stream_id,
                version: self.version,
                event_id: self.event_id,
                event_type: &self.event_type,
                data: &self.data,
                metadata: &self.metadata,
                recorded_at: self.recorded_at,
            },
        );
        hex::encode(recomputed) == self.hash
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// Events recorded in `[from, to)`.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Only this app's events, when set.
    pub app: Option<String>,
    pub count: u64,
    pub first_position: Option<i64>,
    pub last_position: Option<i64>,
    pub lines_sha256: String,
    pub created_at: DateTime<Utc>,
    /// Hex of the Ed25519 public key that signed the manifest.
    pub public_key: String,
}

impl Manifest {
    /// The signed bytes: a domain tag, then the manifest's JSON.
    fn signed_bytes(&self) -> Result<Vec<u8>, AuditError> {
        let mut out = format!("{FORMAT}\n").into_bytes();
        serde_json::to_writer(&mut out, self)
            .map_err(|e| AuditError::Format(format!("cannot encode the manifest: {e}")))?;
        Ok(out)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestLine {
    manifest: Manifest,
    signature: String,
}

#[derive(Clone, Debug)]
pub struct ExportFilter {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub app: Option<String>,
}

/// One [`ExportedEvent`] line with its `\n`, `data` and `metadata` copied as
/// the database prints them instead of parsed and printed again (81,000
/// to 153,000 events/s on 11M events, docs/benchmarks.md). The line still parses
/// as an `ExportedEvent`, and the hash is recomputed from what it parses to.
fn event_line(row: &PgRow, global_position: i64) -> Result<Vec<u8>, AuditError> {
    let encode = |e: serde_json::Error| AuditError::Format(format!("cannot encode an event: {e}"));
    let data: &str = row.try_get("data")?;
    let metadata: &str = row.try_get("metadata")?;
    let mut line = Vec::with_capacity(data.len() + metadata.len() + 400);
    let transaction_id: i64 = row.try_get("transaction_id")?;
    let version: i64 = row.try_get("version")?;
    let event_id: Uuid = row.try_get("event_id")?;
    let recorded_at: DateTime<Utc> = row.try_get("recorded_at")?;
    let prev_hash: &[u8] = row.try_get("prev_hash")?;
    let hash: &[u8] = row.try_get("hash")?;
    write!(
        line,
        "{{\"global_position\":{global_position},\"transaction_id\":{transaction_id},\"stream_id\":"
    )?;
    serde_json::to_writer(&mut line, row.try_get::<&str, _>("stream_id")?).map_err(encode)?;
    write!(
        line,
        ",\"version\":{version},\"event_id\":\"{event_id}\",\"event_type\":"
    )?;
    serde_json::to_writer(&mut line, row.try_get::<&str, _>("event_type")?).map_err(encode)?;
    write!(
        line,
        ",\"data\":{data},\"metadata\":{metadata},\"recorded_at\":"
    )?;
    serde_json::to_writer(&mut line, &recorded_at).map_err(encode)?;
    writeln!(
        line,
        ",\"prev_hash\":\"{}\",\"hash\":\"{}\"}}",
        hex::encode(prev_hash),
        hex::encode(hash)
    )?;
    Ok(line)
}

/// Writes the events recorded in `[from, to)` (of one app when asked) in
/// global position order, then the signed manifest. Rows are streamed, so
/// memory does not grow with the export.
pub async fn export(
    pool: &PgPool,
    filter: &ExportFilter,
    key: &SigningKey,
    out: &mut impl Write,
) -> Result<Manifest, AuditError> {
    let mut conn = pool.acquire().await?;
    let mut rows = sqlx::query(
        "SELECT global_position, transaction_id::text::bigint AS transaction_id, stream_id,
                version, event_id, event_type, data::text AS data, metadata::text AS metadata,
                recorded_at, prev_hash, hash
         FROM events
         WHERE recorded_at >= $1 AND recorded_at < $2
           AND ($3::text IS NULL OR metadata->>'app' = $3)
         ORDER BY global_position",
    )
    .bind(filter.from)
    .bind(filter.to)
    .bind(filter.app.as_deref())
    .fetch(&mut *conn);
    let mut hasher = Sha256::new();
    let (mut count, mut first, mut last) = (0u64, None, None);
    while let Some(row) = rows.try_next().await? {
        let global_position: i64 = row.try_get("global_position")?;
        let line = event_line(&row, global_position)?;
        hasher.update(&line);
        out.write_all(&line)?;
        count += 1;
        first.get_or_insert(global_position);
        last = Some(global_position);
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        from: filter.from,
        to: filter.to,
        app: filter.app.clone(),
        count,
        first_position: first,
        last_position: last,
        lines_sha256: hex::encode(hasher.finalize()),
        created_at: Utc::now(),
        public_key: signing::public_hex(&key.verifying_key()),
    };
    let signature = signing::sign(key, &manifest.signed_bytes()?);
    let line = ManifestLine {
        manifest: manifest.clone(),
        signature: hex::encode(signature),
    };
    serde_json::to_writer(&mut *out, &line)
        .map_err(|e| AuditError::Format(format!("cannot encode the manifest: {e}")))?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(manifest)
}

/// What [`verify_export`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExportVerification {
    pub manifest: Option<Manifest>,
    pub events: u64,
    pub signature_valid: bool,
    /// Each problem with the line it was found on (1-based).
    pub problems: Vec<String>,
}

impl ExportVerification {
    pub fn is_ok(&self) -> bool {
        self.signature_valid && self.problems.is_empty()
    }
}

/// Checks an export against the public key the auditor trusts.
pub fn verify_export(
    input: impl BufRead,
    public_key: &VerifyingKey,
) -> Result<ExportVerification, AuditError> {
    let mut report = ExportVerification::default();
    let mut hasher = Sha256::new();
    let (mut first, mut last): (Option<i64>, Option<i64>) = (None, None);
    // Per stream: (version, hash) of its previous line.
    let mut streams: HashMap<String, (i64, String)> = HashMap::new();
    let mut manifest_line: Option<(usize, String)> = None;
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        let n = n + 1;
        if let Some((at, _)) = &manifest_line {
            report
                .problems
                .push(format!("line {n}: text after the manifest (line {at})"));
            continue;
        }
        if line.starts_with("{\"manifest\"") {
            manifest_line = Some((n, line));
            continue;
        }
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
        report.events += 1;
        let event: ExportedEvent = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(e) => {
                report
                    .problems
                    .push(format!("line {n}: not an exported event ({e})"));
                continue;
            }
        };
        let at = format!(
            "line {n} ({} version {}, position {})",
            event.stream_id, event.version, event.global_position
        );
        if !event.hash_matches() {
            report.problems.push(format!(
                "{at}: the content does not match its hash (edited)"
            ));
        }
        if let Some(prev) = last.filter(|p| *p >= event.global_position) {
            report
                .problems
                .push(format!("{at}: out of order (follows position {prev})"));
        }
        match streams.get(&event.stream_id) {
            Some((v, _)) if event.version <= *v => report.problems.push(format!(
                "{at}: out of order (follows version {v} of the stream)"
            )),
            Some((v, h)) if event.version == v + 1 && event.prev_hash != *h => {
                report.problems.push(format!(
                    "{at}: does not link to the stream's previous event"
                ))
            }
            Some((v, _)) if event.version > v + 1 => report.problems.push(format!(
                "{at}: version(s) {}..{} of the stream are missing",
                v + 1,
                event.version - 1
            )),
            _ => {}
        }
        streams.insert(event.stream_id.clone(), (event.version, event.hash.clone()));
        first.get_or_insert(event.global_position);
        last = Some(last.map_or(event.global_position, |l| l.max(event.global_position)));
    }
    let Some((at, text)) = manifest_line else {
        report
            .problems
            .push("no manifest: the file does not end with a signed manifest line".into());
        return Ok(report);
    };
    let parsed: ManifestLine = serde_json::from_str(&text)
        .map_err(|e| AuditError::Format(format!("line {at}: unreadable manifest: {e}")))?;
    let manifest = parsed.manifest;
    let signature = hex::decode(&parsed.signature).unwrap_or_default();
    report.signature_valid = signing::verify(public_key, &manifest.signed_bytes()?, &signature);
    if !report.signature_valid {
        report
            .problems
            .push(if manifest.public_key != signing::public_hex(public_key) {
                "the manifest is not signed by the given public key".into()
            } else {
                "the manifest's signature is invalid (the manifest was altered)".into()
            });
    }
    if manifest.format != FORMAT {
        report
            .problems
            .push(format!("unknown format {:?}", manifest.format));
    }
    if manifest.count != report.events {
        report.problems.push(format!(
            "the manifest counts {} events, the file holds {}",
            manifest.count, report.events
        ));
    }
    if hex::encode(hasher.finalize()) != manifest.lines_sha256 {
        report.problems.push(
            "the lines' SHA-256 differs from the manifest's: a line was edited, removed, added or moved".into(),
        );
    }
    if (manifest.first_position, manifest.last_position) != (first, last) {
        report.problems.push(format!(
            "the manifest covers positions {:?}..{:?}, the file {:?}..{:?}",
            manifest.first_position, manifest.last_position, first, last
        ));
    }
    report.manifest = Some(manifest);
    Ok(report)
}
