//! Quarantine replay: a payload refused because of configuration (a
//! missing secret, a mapping naming an absent field) or a fetch that could
//! not complete goes through the same pipeline again once the cause is fixed.
//!
//! A webhook is verified again with the source's *current* configuration:
//! its signature against the current secret, and signed timestamps against
//! the time it was first received (not now), so an old delivery is not
//! refused as stale and nothing unsigned gets in. The quarantine entry is
//! kept either way: it is an audit record.
//!
//! Sources authenticated by a bearer token (Personio) are the exception:
//! the token is a secret and was never kept, so such a payload cannot be
//! authenticated again. [`replay`] refuses it; [`replay_forced`] lets an
//! operator vouch for it, presenting the source's configured token on the
//! sender's behalf, and still refuses a payload that was rejected because
//! its token was wrong or missing (status 401): that one was never from
//! the HRIS as far as anyone can tell.

use crate::{accept, headers_from, Answer, IngestState, Published};
use bytes::Bytes;
use chrono::Utc;
use tenure_bus::quarantine::Quarantined;
use tenure_bus::{subjects, FetchEnvelope};
use tenure_sources::Kind;
use uuid::Uuid;

/// The quarantine header marking a fetch-back that could not complete.
pub const KIND_HEADER: &str = "x-tenure-kind";

/// What a successful replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// The webhook passed this time; these messages were published.
    Published {
        delivery_id: String,
        correlation_id: Uuid,
        /// `accepted` (records) or `fetching` (fetch-backs queued).
        status: &'static str,
        published: Vec<Published>,
    },
    /// Authentic, but an event Tenure does not act on.
    Ignored { reason: String },
    /// A vendor's setup call: nothing to publish.
    Handshake,
    /// A quarantined fetch-back put back on the fetch queue.
    FetchRequeued(Published),
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no source {0:?} is configured (any more); add it to the configuration first")]
    UnknownSource(String),
    #[error("not replayable: {0}")]
    NotReplayable(String),
    #[error("source {name:?} ({kind}) authenticates with a bearer token, which is never kept in quarantine, so this payload cannot be authenticated again; if you know it came from the HRIS, replay it with --force (the configured token is presented on its behalf)")]
    NeedsForce { name: String, kind: Kind },
    #[error("still refused ({status} {error}): {message}")]
    Refused {
        status: u16,
        error: &'static str,
        message: String,
        field: Option<String>,
    },
    #[error("the quarantined fetch-back is not a fetch envelope: {0}")]
    BadFetch(String),
    #[error("JetStream: {0}")]
    Bus(String),
}

/// Replays a quarantined entry with the current configuration, refusing
/// bearer-token sources (see the module docs).
pub async fn replay(
    state: &IngestState,
    entry: &Quarantined,
) -> Result<ReplayOutcome, ReplayError> {
    run(state, entry, None).await
}

/// As [`replay`], but a bearer-token source's payload is accepted on the
/// operator's word: `token` (the source's configured secret) is presented
/// on the sender's behalf. Entries refused for a bad token stay refused.
pub async fn replay_forced(
    state: &IngestState,
    entry: &Quarantined,
    token: &str,
) -> Result<ReplayOutcome, ReplayError> {
    run(state, entry, Some(token)).await
}

/// Whether a quarantine entry is a fetch-back rather than a webhook.
pub fn is_fetch(entry: &Quarantined) -> bool {
    entry
        .headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case(KIND_HEADER) && v.trim() == "fetch")
}

/// Whether a source kind authenticates with a token that quarantine never
/// keeps.
pub fn uses_bearer_token(kind: Kind) -> bool {
    kind == Kind::Personio
}

async fn run(
    state: &IngestState,
    entry: &Quarantined,
    force_token: Option<&str>,
) -> Result<ReplayOutcome, ReplayError> {
    if is_fetch(entry) {
        return requeue_fetch(state, entry).await;
    }
    let source = state
        .sources
        .get(&entry.source)
        .cloned()
        .ok_or_else(|| ReplayError::UnknownSource(entry.source.clone()))?;
    if entry.status == 200 {
        return Err(ReplayError::NotReplayable(
            "this entry is a setup call kept for the operator to read, not a refused payload"
                .into(),
        ));
    }
    if entry.raw.is_empty() {
        return Err(ReplayError::NotReplayable(format!(
            "the payload was not kept ({} {})",
            entry.status, entry.reason
        )));
    }
    let mut headers = headers_from(&entry.headers);
    if uses_bearer_token(source.adapter.kind) {
        let Some(token) = force_token else {
            return Err(ReplayError::NeedsForce {
                name: source.name.clone(),
                kind: source.adapter.kind,
            });
        };
        if entry.status == 401 {
            return Err(ReplayError::NotReplayable(format!(
                "it was refused because its token was missing or wrong ({}); it is not known to come from the HRIS, so it is not replayed even with --force",
                entry.reason
            )));
        }
        let value = axum::http::HeaderValue::from_str(token.trim()).map_err(|_| {
            ReplayError::NotReplayable("the configured token is not a valid header value".into())
        })?;
        headers.insert(tenure_sources::signature::H_TENURE_TOKEN, value);
    }
    let received_at = entry.received_at.unwrap_or_else(Utc::now);
    let answer = accept(
        state,
        &source,
        &headers,
        entry.raw.clone(),
        received_at,
        true,
        None,
    )
    .await
    .map_err(|r| ReplayError::Refused {
        status: r.status.as_u16(),
        error: r.body.error,
        message: r.body.message,
        field: r.body.field,
    })?;
    Ok(match answer {
        Answer::Handshake { .. } => ReplayOutcome::Handshake,
        Answer::Done {
            body, published, ..
        } => match body.status {
            "ignored" => ReplayOutcome::Ignored {
                reason: body.reason.unwrap_or_default(),
            },
            status => ReplayOutcome::Published {
                delivery_id: body.delivery_id,
                correlation_id: body.correlation_id,
                status,
                published,
            },
        },
    })
}

async fn requeue_fetch(
    state: &IngestState,
    entry: &Quarantined,
) -> Result<ReplayOutcome, ReplayError> {
    let envelope: FetchEnvelope =
        serde_json::from_slice(&entry.raw).map_err(|e| ReplayError::BadFetch(e.to_string()))?;
    if !state.sources.contains_key(&envelope.source) {
        return Err(ReplayError::UnknownSource(envelope.source));
    }
    let subject = subjects::fetch(&envelope.source);
    let msg_id = format!("replay:{}", entry.sequence);
    let stored = state
        .bus
        .publish(&subject, &msg_id, &[], Bytes::copy_from_slice(&entry.raw))
        .await
        .map_err(|e| ReplayError::Bus(e.to_string()))?;
    Ok(ReplayOutcome::FetchRequeued(Published {
        subject,
        msg_id,
        person: envelope.request.source_person_id,
        duplicate: stored.duplicate,
    }))
}
