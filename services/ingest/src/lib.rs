//! The ingest service: verifies, validates and normalises HR webhooks and
//! publishes them to JetStream. It answers 202 only once JetStream has
//! stored the record, so an accepted webhook is never lost.

pub mod signature;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tenure_bus::{subjects, Bus, IngestEnvelope};
use tenure_config::{Config, Secret};
use tenure_domain::record::ParseError;
use tenure_domain::SourceRecord;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};
use uuid::Uuid;

pub const GENERIC_SOURCE: &str = "generic";
const MAX_DELIVERY_ID: usize = 128;

/// Wall clock, swappable in tests.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub struct IngestState {
    pub bus: Bus,
    pub generic_secret: Secret,
    pub max_body_bytes: usize,
    pub max_clock_skew_secs: u64,
    pub clock: Clock,
}

#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Accepted {
    pub status: &'static str,
    pub delivery_id: String,
    pub correlation_id: Uuid,
    /// The same delivery was accepted before; nothing new happens.
    pub duplicate: bool,
}

struct Rejection {
    status: StatusCode,
    body: ErrorBody,
}

impl Rejection {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error,
                message: message.into(),
                field: None,
            },
        }
    }
}

pub fn router(state: Arc<IngestState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/sources/generic/records", post(generic_record))
        .with_state(state)
}

fn delivery_id(headers: &HeaderMap, body: &[u8]) -> Result<String, Rejection> {
    match headers.get(signature::H_DELIVERY) {
        None => Ok(format!("sha256:{}", hex::encode(Sha256::digest(body)))),
        Some(v) => {
            let id = v.to_str().unwrap_or("").trim();
            let ok = !id.is_empty()
                && id.len() <= MAX_DELIVERY_ID
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
            if ok {
                Ok(id.to_string())
            } else {
                Err(Rejection::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_delivery_id",
                    format!(
                        "X-Tenure-Delivery must be 1-{MAX_DELIVERY_ID} characters of A-Z a-z 0-9 - _ . :"
                    ),
                ))
            }
        }
    }
}

async fn generic_record(State(state): State<Arc<IngestState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match read_body(&parts.headers, body, state.max_body_bytes).await {
        Ok(b) => b,
        Err((rejection, partial)) => return reject(&state, rejection, partial).await,
    };
    let delivery = match delivery_id(&parts.headers, &body) {
        Ok(d) => d,
        Err(r) => return reject(&state, r, body).await,
    };
    let span = tracing::info_span!("ingest", source = GENERIC_SOURCE, delivery_id = %delivery, person = tracing::field::Empty, correlation_id = tracing::field::Empty);
    async move {
        let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
        if let Err(e) = signature::verify(
            state.generic_secret.expose().as_bytes(),
            header(signature::H_TIMESTAMP),
            header(signature::H_SIGNATURE),
            &body,
            (state.clock)(),
            state.max_clock_skew_secs,
        ) {
            return reject(
                &state,
                Rejection::new(StatusCode::UNAUTHORIZED, "invalid_signature", e.to_string()),
                body,
            )
            .await;
        }
        let record = match SourceRecord::from_json(&body) {
            Ok(r) => r,
            Err(ParseError::Syntax(m)) => {
                return reject(
                    &state,
                    Rejection::new(StatusCode::BAD_REQUEST, "malformed_json", m),
                    body,
                )
                .await
            }
            Err(ParseError::Invalid(e)) => {
                let mut r = Rejection::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_record",
                    e.message,
                );
                r.body.field = Some(e.field);
                return reject(&state, r, body).await;
            }
        };
        tracing::Span::current().record("person", record.person_id.as_str());
        let envelope = IngestEnvelope {
            source: GENERIC_SOURCE.into(),
            correlation_id: Uuid::new_v5(
                &Uuid::NAMESPACE_OID,
                format!("{GENERIC_SOURCE}:{delivery}").as_bytes(),
            ),
            delivery_id: delivery.clone(),
            received_at: (state.clock)(),
            record,
        };
        tracing::Span::current().record(
            "correlation_id",
            tracing::field::display(envelope.correlation_id),
        );
        let payload = match serde_json::to_vec(&envelope) {
            Ok(p) => Bytes::from(p),
            Err(e) => return internal(format!("cannot encode envelope: {e}")),
        };
        match state
            .bus
            .publish(
                &subjects::ingest(GENERIC_SOURCE),
                &envelope.msg_id(),
                &[],
                payload,
            )
            .await
        {
            Ok(stored) => {
                info!(
                    sequence = stored.sequence,
                    duplicate = stored.duplicate,
                    "record accepted"
                );
                (
                    StatusCode::ACCEPTED,
                    Json(Accepted {
                        status: "accepted",
                        delivery_id: delivery,
                        correlation_id: envelope.correlation_id,
                        duplicate: stored.duplicate,
                    }),
                )
                    .into_response()
            }
            Err(e) => {
                warn!(error = %e, "JetStream did not store the record");
                let body = ErrorBody {
                    error: "unavailable",
                    message: "the record could not be stored; retry later".into(),
                    field: None,
                };
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "5")],
                    Json(body),
                )
                    .into_response()
            }
        }
    }
    .instrument(span)
    .await
}

/// Reads at most `limit` bytes. An oversized body is refused early from its
/// Content-Length when it has one. Its bytes are not kept: the quarantine
/// records the rejection and its reason with an empty payload, so an
/// oversized sender cannot fill the quarantine.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, (Rejection, Bytes)> {
    let too_large = || {
        Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err((too_large(), Bytes::new()));
    }
    to_bytes(body, limit)
        .await
        .map_err(|_| (too_large(), Bytes::new()))
}

async fn reject(state: &IngestState, r: Rejection, payload: Bytes) -> Response {
    warn!(status = r.status.as_u16(), error = r.body.error, reason = %r.body.message, "record rejected");
    let reason = match &r.body.field {
        Some(f) => format!("{}: {}: {}", r.body.error, f, r.body.message),
        None => format!("{}: {}", r.body.error, r.body.message),
    };
    if let Err(e) = state
        .bus
        .quarantine(GENERIC_SOURCE, r.status.as_u16(), &reason, payload)
        .await
    {
        warn!(error = %e, "could not quarantine the rejected payload");
    }
    (r.status, Json(r.body)).into_response()
}

fn internal(message: String) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(ErrorBody {
            error: "internal",
            message,
            field: None,
        }),
    )
        .into_response()
}

/// Runs the ingest HTTP server until `shutdown` is cancelled.
pub async fn run(cfg: &Config, bus: Bus, shutdown: CancellationToken) -> anyhow::Result<()> {
    let secret = cfg.ingest.generic.secret.resolve()?;
    let state = Arc::new(IngestState {
        bus,
        generic_secret: secret,
        max_body_bytes: cfg.ingest.max_body_bytes,
        max_clock_skew_secs: cfg.ingest.max_clock_skew_secs,
        clock: Arc::new(Utc::now),
    });
    let listener = tokio::net::TcpListener::bind(&cfg.ingest.listen).await?;
    info!(listen = %listener.local_addr()?, "ingest listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
