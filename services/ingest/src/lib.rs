//! The ingest service: verifies, validates and normalises HR webhooks (one
//! adapter per vendor) and IdP pushes, and publishes them to JetStream. It
//! answers 202 only once JetStream has stored what it received, so an
//! accepted webhook is never lost; dataless webhooks are answered before the
//! person is fetched back from the HRIS (see [`fetch`]).

pub mod fetch;
pub mod identity;
pub mod openapi;
pub mod replay;
pub mod signed_content;
pub mod unauthenticated;

use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tenure_bus::{subjects, Bus, FetchEnvelope, IngestEnvelope};
use tenure_config::{Config, SourceConfig};
use tenure_sources::signature::SignatureVersion;
use tenure_sources::{Adapter, AdapterError, ErrorKind, FieldMapping, Kind, Outcome};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};
use unauthenticated::{Gate, Stats, Throttle};
use uuid::Uuid;

pub const GENERIC_SOURCE: &str = "generic";
const MAX_DELIVERY_ID: usize = 128;
/// Request headers kept with a quarantined payload so it can be verified
/// again on replay. Bearer tokens are secrets and are never kept.
const NOT_KEPT: [&str; 4] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "x-tenure-token",
];

/// Wall clock, swappable in tests.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// One configured source as the service runs it.
pub struct SourceRuntime {
    pub name: String,
    pub adapter: Adapter,
    pub max_body_bytes: usize,
    pub limiter: Option<DefaultDirectRateLimiter>,
}

impl SourceRuntime {
    pub fn new(name: &str, adapter: Adapter, max_body_bytes: usize) -> Self {
        Self {
            name: name.to_string(),
            adapter,
            max_body_bytes,
            limiter: None,
        }
    }

    pub fn with_rate_limit(mut self, per_second: u32, burst: Option<u32>) -> Self {
        if let Some(rate) = NonZeroU32::new(per_second) {
            let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
            self.limiter = Some(RateLimiter::direct(
                Quota::per_second(rate).allow_burst(burst),
            ));
        }
        self
    }

    /// Builds the runtime of a `[[source]]` block; a missing secret is not
    /// an error here: its webhooks are quarantined until it is set.
    pub fn from_config(src: &SourceConfig, default_max_body: usize) -> Self {
        let secret = src
            .secret
            .as_ref()
            .and_then(|s| match s.resolve() {
                Ok(v) => Some(v.expose().as_bytes().to_vec()),
                Err(e) => {
                    warn!(source = %src.name, error = %e, "source secret unavailable; its webhooks are quarantined until it is set");
                    None
                }
            });
        let adapter = Adapter::new(src.kind, src.mapping.clone(), secret);
        let rt = Self::new(
            &src.name,
            adapter,
            src.max_body_bytes.unwrap_or(default_max_body),
        );
        match src.rate_limit_per_second {
            Some(r) => rt.with_rate_limit(r, src.rate_limit_burst),
            None => rt,
        }
    }
}

pub struct IngestState {
    pub bus: Bus,
    /// Optional: only deletions fetched back need it (to read the person's
    /// last record), and the inbound SCIM endpoint.
    pub pool: Option<tenure_store::sqlx::PgPool>,
    pub sources: HashMap<String, Arc<SourceRuntime>>,
    pub max_clock_skew_secs: u64,
    pub clock: Clock,
    /// Accept deprecated `v1=` generic signatures (`ingest.generic.accept_v1`).
    pub accept_v1: bool,
    /// Rate limits on recording requests that fail authentication.
    pub gate: Gate,
    pub stats: Stats,
    v1_log: Throttle,
    signed_stream: tokio::sync::OnceCell<()>,
}

impl IngestState {
    /// A state with only the generic source, signed with `generic_secret`.
    pub fn generic(bus: Bus, generic_secret: &str, max_body_bytes: usize, clock: Clock) -> Self {
        let adapter = Adapter::new(
            Kind::Generic,
            FieldMapping::default(),
            Some(generic_secret.as_bytes().to_vec()),
        );
        let mut sources = HashMap::new();
        sources.insert(
            GENERIC_SOURCE.to_string(),
            Arc::new(SourceRuntime::new(GENERIC_SOURCE, adapter, max_body_bytes)),
        );
        Self {
            bus,
            pool: None,
            sources,
            max_clock_skew_secs: 300,
            clock,
            accept_v1: true,
            gate: Gate::new(60, 20),
            stats: Stats::default(),
            v1_log: Throttle::default(),
            signed_stream: tokio::sync::OnceCell::new(),
        }
    }

    pub fn add_source(&mut self, rt: SourceRuntime) {
        self.sources.insert(rt.name.clone(), Arc::new(rt));
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable error code: `invalid_signature`, `malformed_json`,
    /// `malformed_payload`, `invalid_record`, `source_not_configured`,
    /// `payload_too_large`, `rate_limited`, `unknown_source`, `unavailable`
    /// (JetStream did not confirm storing: retrying with the same delivery
    /// id is safe), `invalid_delivery_id`, `request_timeout`;
    /// for IdP notifications also `unknown_idp` and `invalid_token`.
    pub error: &'static str,
    pub message: String,
    /// The payload field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// `accepted` (records published), `fetching` (dataless webhook: the
    /// person is fetched back from the HRIS next) or `ignored`.
    pub status: &'static str,
    pub delivery_id: String,
    pub correlation_id: Uuid,
    /// The same delivery was accepted before; nothing new happens.
    pub duplicate: bool,
    /// Records (or fetches) published for this delivery.
    pub records: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub(crate) struct Rejection {
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

    /// JetStream did not confirm that it stored the message. It may have
    /// (a lost ack), so the answer must not say it did not.
    fn unavailable() -> Self {
        Rejection::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "not confirmed: JetStream did not acknowledge storing the record in time; retrying with the same delivery id is safe (it is applied once)",
        )
    }

    fn from_adapter(kind: Kind, e: AdapterError) -> Self {
        let (status, code) = match e.kind {
            ErrorKind::Unauthorized => (StatusCode::UNAUTHORIZED, "invalid_signature"),
            ErrorKind::Malformed if kind == Kind::Generic => {
                (StatusCode::BAD_REQUEST, "malformed_json")
            }
            ErrorKind::Malformed => (StatusCode::BAD_REQUEST, "malformed_payload"),
            ErrorKind::Invalid => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_record"),
            ErrorKind::Config => (StatusCode::UNPROCESSABLE_ENTITY, "source_not_configured"),
        };
        let mut r = Rejection::new(status, code, e.message);
        r.body.field = e.field;
        r
    }
}

pub fn router(state: Arc<IngestState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/openapi.json", get(openapi::serve))
        .route("/stats", get(stats))
        .route("/v1/sources/generic/records", post(generic_record))
        .route("/v1/sources/{name}/webhook", post(source_webhook))
        .with_state(state)
}

/// Counters since the process started (docs/security.md): deprecated
/// signatures, signed-content duplicates, unauthenticated requests
/// recorded and dropped.
#[utoipa::path(get, path = "/stats", tag = "operations",
    responses((status = 200, description = "Counters since start", body = unauthenticated::StatsSnapshot)))]
pub async fn stats(State(state): State<Arc<IngestState>>) -> Json<unauthenticated::StatsSnapshot> {
    Json(state.stats.snapshot())
}

fn generic_delivery_id(headers: &HeaderMap, body: &[u8]) -> Result<String, Rejection> {
    match headers.get(tenure_sources::signature::H_TENURE_DELIVERY) {
        None => Ok(body_hash(body)),
        Some(v) => {
            let id = v.to_str().unwrap_or("").trim();
            if valid_delivery_id(id) {
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

fn valid_delivery_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_DELIVERY_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

fn body_hash(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

/// The generic webhook: one signed SourceRecord per request.
#[utoipa::path(
    post,
    path = "/v1/sources/generic/records",
    tag = "sources",
    request_body(content = String, content_type = "application/json",
        description = "One person record (docs/api.md), signed: `X-Tenure-Timestamp` (Unix seconds), optional `X-Tenure-Delivery` id for de-duplication, and `X-Tenure-Signature: v2=<hex HMAC-SHA256(secret, \"v2:<timestamp>:<delivery id>:<body>\")>` (the deprecated `v1=<hex HMAC-SHA256(secret, \"<timestamp>.<body>\")>` is still accepted unless `ingest.generic.accept_v1 = false`)."),
    responses(
        (status = 202, description = "Stored in JetStream", body = Accepted),
        (status = 400, description = "Not JSON or a bad delivery id", body = ErrorBody),
        (status = 401, description = "Signature missing, wrong or stale", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid; `field` names it", body = ErrorBody),
        (status = 429, description = "Over the source's rate limit; retry after `Retry-After`", body = ErrorBody),
        (status = 503, description = "Not confirmed: JetStream did not acknowledge in time; retrying with the same delivery id is safe", body = ErrorBody),
    )
)]
pub async fn generic_record(State(state): State<Arc<IngestState>>, request: Request) -> Response {
    receive(state, GENERIC_SOURCE.to_string(), request).await
}

/// A vendor webhook of a configured `[[source]]` (BambooHR, HiBob,
/// Personio, Gusto, Deel, Frappe HR or generic), verified with that
/// vendor's signature scheme.
#[utoipa::path(
    post,
    path = "/v1/sources/{name}/webhook",
    tag = "sources",
    params(("name" = String, Path, description = "The `[[source]]` name from the configuration")),
    request_body(content = String, content_type = "application/json",
        description = "The vendor's own webhook body and signature headers (docs/sources/)."),
    responses(
        (status = 200, description = "A setup handshake (HiBob `Ping test`, Gusto verification token), or an authentic event Tenure does not act on", body = Accepted),
        (status = 202, description = "Records, or fetch-back requests, stored in JetStream", body = Accepted),
        (status = 400, description = "Not the vendor's format", body = ErrorBody),
        (status = 401, description = "Signature or token missing or wrong", body = ErrorBody),
        (status = 404, description = "No such source configured", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 422, description = "Invalid field, or the source is not fully configured; quarantined for replay", body = ErrorBody),
        (status = 429, description = "Over the source's rate limit", body = ErrorBody),
        (status = 503, description = "Not confirmed: JetStream did not acknowledge in time; retrying the same webhook is safe", body = ErrorBody),
    )
)]
pub async fn source_webhook(
    State(state): State<Arc<IngestState>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    receive(state, name, request).await
}

async fn receive(state: Arc<IngestState>, name: String, request: Request) -> Response {
    let Some(source) = state.sources.get(&name).cloned() else {
        let r = Rejection::new(
            StatusCode::NOT_FOUND,
            "unknown_source",
            format!("no source {name:?} is configured"),
        );
        return (r.status, Json(r.body)).into_response();
    };
    if let Some(limiter) = &source.limiter {
        if limiter.check().is_err() {
            let body = ErrorBody {
                error: "rate_limited",
                message: format!("source {name:?} is over its rate limit; retry later"),
                field: None,
            };
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                Json(body),
            )
                .into_response();
        }
    }
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let (parts, body) = request.into_parts();
    let body = match read_body(&parts.headers, body, source.max_body_bytes).await {
        Ok(b) => b,
        Err((rejection, partial)) => {
            return reject(&state, &source, rejection, partial, &parts.headers, client).await
        }
    };
    let received_at = (state.clock)();
    match accept(
        &state,
        &source,
        &parts.headers,
        body.clone(),
        received_at,
        false,
        client.map(|c| c.ip()),
    )
    .await
    {
        Ok(answer) => answer.into_response(),
        Err(r) => reject(&state, &source, r, body, &parts.headers, client).await,
    }
}

/// What `accept` made of a verified payload; the webhook turns it into its
/// HTTP answer, a quarantine replay reports it.
pub(crate) enum Answer {
    /// A vendor's setup call, answered as the vendor expects.
    Handshake {
        status: StatusCode,
        content_type: &'static str,
        body: String,
    },
    /// Records or fetch-backs published, or an authentic event ignored.
    Done {
        status: StatusCode,
        body: Accepted,
        published: Vec<Published>,
    },
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Handshake {
                status,
                content_type,
                body,
            } => (status, [("content-type", content_type)], body).into_response(),
            Answer::Done { status, body, .. } => (status, Json(body)).into_response(),
        }
    }
}

/// One message `accept` published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Published {
    pub subject: String,
    pub msg_id: String,
    /// The source's person id.
    pub person: String,
    /// JetStream already held a message with this id.
    pub duplicate: bool,
}

/// What a verified payload turned into, shared by webhooks and quarantine
/// replay. `replay` checks signed timestamps against the original receipt
/// instead of now.
pub(crate) async fn accept(
    state: &IngestState,
    source: &SourceRuntime,
    headers: &HeaderMap,
    body: Bytes,
    received_at: DateTime<Utc>,
    replay: bool,
    client: Option<IpAddr>,
) -> Result<Answer, Rejection> {
    let kind = source.adapter.kind;
    let mut delivery = if kind == Kind::Generic {
        generic_delivery_id(headers, &body)?
    } else {
        source
            .adapter
            .delivery_id(headers, &body)
            .filter(|d| valid_delivery_id(d))
            .unwrap_or_else(|| body_hash(&body))
    };
    // Authentication first, before anything waits on JetStream: a forged
    // request is answered at once whatever state NATS is in.
    let now = if replay { received_at } else { (state.clock)() };
    let outcome = source
        .adapter
        .handle(headers, &body, now, state.max_clock_skew_secs)
        .map_err(|e| Rejection::from_adapter(kind, e))?;
    if kind == Kind::Generic && generic_signature_version(headers) == SignatureVersion::V1 {
        if !state.accept_v1 {
            return Err(Rejection::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                "v1 signatures are no longer accepted (ingest.generic.accept_v1 = false); sign with v2, which covers X-Tenure-Delivery",
            ));
        }
        let n = state
            .stats
            .signature_v1_accepted
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if state.v1_log.due(60) {
            warn!(source = %source.name, v1_accepted_since_start = n, "deprecated v1 signature accepted: it does not cover X-Tenure-Delivery; senders should sign with v2 (docs/sources/generic.md)");
        }
        if matches!(outcome, Outcome::Records(_)) {
            let ts = headers
                .get(tenure_sources::signature::H_TENURE_TIMESTAMP)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let key = signed_content::content_key(&source.name, ts, &body);
            let first = signed_content::first_delivery(state, &source.name, &key, &delivery)
                .await
                .map_err(|e| {
                    warn!(source = %source.name, error = %e, "JetStream did not confirm the signed-content check");
                    Rejection::unavailable()
                })?;
            if first != delivery {
                state
                    .stats
                    .signed_content_duplicates
                    .fetch_add(1, Ordering::Relaxed);
                info!(source = %source.name, delivery_id = %delivery, first_delivery_id = %first, "v1 webhook with signed content seen before under another delivery id: handled as that delivery");
                delivery = first;
            }
        }
    }
    let correlation_id = Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("{}:{delivery}", source.name).as_bytes(),
    );
    let span = tracing::info_span!("ingest", source = %source.name, delivery_id = %delivery, %correlation_id, replay, person = tracing::field::Empty);
    async move {
        let accepted = |status: &'static str,
                        duplicate: bool,
                        records: usize,
                        reason: Option<String>| Accepted {
            status,
            delivery_id: delivery.clone(),
            correlation_id,
            duplicate,
            records,
            reason,
        };
        match outcome {
            Outcome::Handshake {
                status,
                content_type,
                body: answer,
            } => {
                info!("setup handshake answered");
                if let Some(reason) = source.adapter.handshake_quarantine_reason(&body) {
                    // The operator must read what the vendor sent (Gusto's
                    // verification token) and nowhere else keeps it. It
                    // is unauthenticated by nature, so rate-limited like
                    // other unauthenticated payloads.
                    if !replay {
                        state.stats.unauthenticated.fetch_add(1, Ordering::Relaxed);
                    }
                    if !replay && !state.gate.admit(&source.name, client) {
                        unauthenticated::dropped(&state.gate, &state.stats, &source.name, client);
                    } else {
                        if !replay {
                            state
                                .stats
                                .unauthenticated_recorded
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        if let Err(e) = state
                            .bus
                            .quarantine_request(
                                &source.name,
                                200,
                                reason,
                                body.clone(),
                                &kept_headers(headers),
                            )
                            .await
                        {
                            warn!(error = %e, "could not keep the handshake payload");
                        }
                    }
                }
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                Ok(Answer::Handshake {
                    status,
                    content_type,
                    body: answer,
                })
            }
            Outcome::Ignored { reason } => {
                info!(%reason, "authentic webhook ignored");
                Ok(Answer::Done {
                    status: StatusCode::OK,
                    body: accepted("ignored", false, 0, Some(reason)),
                    published: Vec::new(),
                })
            }
            Outcome::Records(records) => {
                let n = records.len();
                let mut all_duplicate = n > 0;
                let mut published = Vec::with_capacity(n);
                for (i, record) in records.into_iter().enumerate() {
                    tracing::Span::current().record("person", record.person_id.as_str());
                    let envelope = IngestEnvelope {
                        source: source.name.clone(),
                        correlation_id,
                        delivery_id: if n == 1 {
                            delivery.clone()
                        } else {
                            format!("{delivery}#{i}")
                        },
                        received_at,
                        record,
                    };
                    let payload = encode(&envelope)?;
                    let subject = subjects::ingest(&source.name);
                    let msg_id = envelope.msg_id();
                    let stored = publish(state, &subject, &msg_id, payload).await?;
                    all_duplicate &= stored.duplicate;
                    published.push(Published {
                        subject,
                        msg_id,
                        person: envelope.record.person_id,
                        duplicate: stored.duplicate,
                    });
                }
                info!(records = n, "records accepted");
                Ok(Answer::Done {
                    status: StatusCode::ACCEPTED,
                    body: accepted("accepted", all_duplicate, n, None),
                    published,
                })
            }
            Outcome::Fetch(requests) => {
                let n = requests.len();
                let mut all_duplicate = n > 0;
                let mut published = Vec::with_capacity(n);
                for request in requests {
                    tracing::Span::current().record("person", request.source_person_id.as_str());
                    let envelope = FetchEnvelope {
                        source: source.name.clone(),
                        delivery_id: delivery.clone(),
                        received_at,
                        correlation_id,
                        request,
                    };
                    let payload = encode(&envelope)?;
                    let subject = subjects::fetch(&source.name);
                    let msg_id = envelope.msg_id();
                    let stored = publish(state, &subject, &msg_id, payload).await?;
                    all_duplicate &= stored.duplicate;
                    published.push(Published {
                        subject,
                        msg_id,
                        person: envelope.request.source_person_id,
                        duplicate: stored.duplicate,
                    });
                }
                info!(persons = n, "fetch-back queued");
                Ok(Answer::Done {
                    status: StatusCode::ACCEPTED,
                    body: accepted("fetching", all_duplicate, n, None),
                    published,
                })
            }
        }
    }
    .instrument(span)
    .await
}

fn encode<T: Serialize>(v: &T) -> Result<Bytes, Rejection> {
    serde_json::to_vec(v).map(Bytes::from).map_err(|e| {
        Rejection::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot encode envelope: {e}"),
        )
    })
}

async fn publish(
    state: &IngestState,
    subject: &str,
    msg_id: &str,
    payload: Bytes,
) -> Result<tenure_bus::Stored, Rejection> {
    state
        .bus
        .publish(subject, msg_id, &[], payload)
        .await
        .map_err(|e| {
            warn!(error = %e, "JetStream did not confirm storing the message");
            Rejection::unavailable()
        })
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

/// The request headers worth keeping for a replay, as `name: value` pairs.
pub fn kept_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(n, _)| !NOT_KEPT.contains(&n.as_str()))
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

pub fn headers_from(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in pairs {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            map.append(name, value);
        }
    }
    map
}

fn generic_signature_version(headers: &HeaderMap) -> SignatureVersion {
    tenure_sources::signature::generic_version(
        headers
            .get(tenure_sources::signature::H_TENURE_SIGNATURE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Where a refused request is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// JetStream is down: there is nowhere to keep it.
    Nothing,
    /// Failed before authentication: metadata in the rejected-request
    /// store, rate-limited, without waiting for it.
    Rejected,
    /// Unverifiable (the source has no secret yet) but needed for replay:
    /// in full in the quarantine, rate-limited.
    QuarantineLimited,
    /// Authentic but refused: in full in the quarantine.
    Quarantine,
}

fn keep(r: &Rejection, source: &SourceRuntime) -> Keep {
    match (r.status, r.body.error) {
        (StatusCode::SERVICE_UNAVAILABLE, _) => Keep::Nothing,
        (StatusCode::UNAUTHORIZED, _) | (_, "payload_too_large" | "invalid_delivery_id") => {
            Keep::Rejected
        }
        (_, "source_not_configured") if !source.adapter.has_secret() => Keep::QuarantineLimited,
        _ => Keep::Quarantine,
    }
}

async fn reject(
    state: &IngestState,
    source: &SourceRuntime,
    r: Rejection,
    payload: Bytes,
    headers: &HeaderMap,
    client: Option<SocketAddr>,
) -> Response {
    let name = source.name.as_str();
    let reason = || match &r.body.field {
        Some(f) => format!("{}: {}: {}", r.body.error, f, r.body.message),
        None => format!("{}: {}", r.body.error, r.body.message),
    };
    let ip = client.map(|c| c.ip());
    let kept = keep(&r, source);
    if kept == Keep::QuarantineLimited {
        state.stats.unauthenticated.fetch_add(1, Ordering::Relaxed);
    }
    match kept {
        Keep::Nothing => {
            warn!(source = name, status = r.status.as_u16(), error = r.body.error, reason = %r.body.message, "payload rejected");
        }
        Keep::QuarantineLimited if !state.gate.admit(name, ip) => {
            unauthenticated::dropped(&state.gate, &state.stats, name, ip);
        }
        Keep::Rejected => unauthenticated::record_rejected(
            &state.bus,
            &state.gate,
            &state.stats,
            unauthenticated::Refused {
                source: name,
                status: r.status.as_u16(),
                error: r.body.error,
                reason: reason(),
                client,
                body: payload,
                headers,
            },
        ),
        Keep::QuarantineLimited | Keep::Quarantine => {
            warn!(source = name, client = ?client, status = r.status.as_u16(), error = r.body.error, reason = %r.body.message, "payload rejected; quarantined");
            if kept == Keep::QuarantineLimited {
                state
                    .stats
                    .unauthenticated_recorded
                    .fetch_add(1, Ordering::Relaxed);
            }
            if let Err(e) = state
                .bus
                .quarantine_request(
                    name,
                    r.status.as_u16(),
                    &reason(),
                    payload,
                    &kept_headers(headers),
                )
                .await
            {
                warn!(error = %e, "could not quarantine the rejected payload");
            }
        }
    }
    let mut resp = (r.status, Json(r.body)).into_response();
    if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from_static("5"));
    }
    resp
}

/// Builds the state from the configuration: the generic source plus every
/// `[[source]]`.
pub fn state_from_config(cfg: &Config, bus: Bus) -> anyhow::Result<IngestState> {
    // Without its secret the generic webhook stays up and quarantines what
    // it gets (replayable once the secret is set): a deployment that only
    // uses vendor sources need not invent one.
    let secret = match cfg.ingest.generic.secret.resolve() {
        Ok(s) => s.expose().to_string(),
        Err(e) => {
            warn!(error = %e, "generic source has no secret; its webhooks are quarantined until it is set");
            String::new()
        }
    };
    let mut state =
        IngestState::generic(bus, &secret, cfg.ingest.max_body_bytes, Arc::new(Utc::now));
    state.max_clock_skew_secs = cfg.ingest.max_clock_skew_secs;
    state.accept_v1 = cfg.ingest.generic.accept_v1;
    state.gate = Gate::new(
        cfg.ingest.unauthenticated_per_source_per_minute,
        cfg.ingest.unauthenticated_per_client_per_minute,
    );
    for src in &cfg.sources {
        if src.kind.fetches() && src.api.is_none() {
            warn!(source = %src.name, kind = %src.kind, "source has no [source.api]: its dataless webhooks will be quarantined");
        }
        state.add_source(SourceRuntime::from_config(src, cfg.ingest.max_body_bytes));
    }
    Ok(state)
}

/// The `[ingest]` listener bounds (docs/security.md).
pub fn listener_limits(cfg: &Config) -> tenure_http::Limits {
    let i = &cfg.ingest;
    tenure_http::Limits {
        header_read_timeout: std::time::Duration::from_secs(i.header_read_timeout_secs),
        request_timeout: std::time::Duration::from_secs(i.request_timeout_secs),
        idle_timeout: std::time::Duration::from_secs(i.idle_timeout_secs),
        max_connections: i.max_connections,
        max_connections_per_client: i.max_connections_per_client,
    }
}

/// Runs the ingest HTTP server, the fetch-back worker and, when IdPs are
/// configured, the inbound SCIM endpoint and its publisher, until
/// `shutdown` is cancelled.
pub async fn run(
    cfg: &Config,
    bus: Bus,
    pool: Option<tenure_store::sqlx::PgPool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut state = state_from_config(cfg, bus.clone())?;
    state.pool = pool.clone();
    let state = Arc::new(state);
    let mut app = router(state.clone());
    let mut tasks = Vec::new();
    if !cfg.idp.is_empty() {
        let pool = pool
            .clone()
            .ok_or_else(|| anyhow::anyhow!("[[idp]] needs the database: run ingest with it"))?;
        let (routes, publishers) = identity::mount(cfg, pool, state.clone(), shutdown.clone())?;
        app = app.merge(routes);
        tasks.extend(publishers);
    }
    tasks.push(tokio::spawn(fetch::run(
        cfg.clone(),
        state.clone(),
        shutdown.clone(),
    )));
    let listener = tokio::net::TcpListener::bind(&cfg.ingest.listen).await?;
    info!(listen = %listener.local_addr()?, sources = state.sources.len(), idps = cfg.idp.len(), "ingest listening");
    tenure_http::serve("ingest", listener, app, listener_limits(cfg), shutdown).await?;
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}
