//! Identity providers as sources: the inbound SCIM 2.0 endpoint Authentik's
//! SCIM provider pushes to, the publisher that moves the snapshots it
//! writes (in the same transaction as each SCIM change) to JetStream, and
//! Authentik's notification webhook (`POST /v1/idp/<name>/events`), whose
//! events are answered at once and completed by a worker that reads the
//! named users (or a group's members) back from Authentik's API and writes
//! them into the same SCIM mirror.

use axum::body::to_bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tenure_bus::messages::{IdpFetch, IdpFetchTarget};
use tenure_bus::{subjects, Bus, IdentityEnvelope};
use tenure_config::{Config, IdpConfig, SourceApiConfig};
use tenure_idp_scim::FetchedUser;
use tenure_sources::FetchCall;
use tenure_store::sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};
use uuid::Uuid;

use crate::fetch::{ApiClient, FetchError};
use crate::unauthenticated::{self, Refused};
use crate::{Accepted, ErrorBody, IngestState};

use tenure_bus::IDP_FETCH_STREAM;

/// How a re-fetch consumer is bounded: 30 deliveries, the first retry after
/// 10 s, doubling up to 10 min (about 4 hours in all) before it is
/// quarantined; each delivery already retries the API call with backoff,
/// and a delivery longer than the 10 s ack wait (a group's members) reports
/// progress.
fn refetch_redelivery() -> tenure_bus::Redelivery {
    tenure_bus::Redelivery::exponential(30, Duration::from_secs(10), Duration::from_secs(600))
}
/// At most this many members of one group are re-fetched for one event;
/// beyond it, the SCIM provider's own sync is relied upon.
const MAX_GROUP_MEMBERS: usize = 5000;
const MAX_EVENT_ID: usize = 128;

/// The routes for every `[[idp]]` (SCIM at `/scim/v2/<name>`, and at
/// `/scim/v2` too when there is exactly one; the notification webhook at
/// `/v1/idp/<name>/events`), one publisher task per IdP and one re-fetch
/// worker per IdP with an API configured. Refused notifications share
/// `ingest`'s rate limits and counters for unauthenticated requests.
pub fn mount(
    cfg: &Config,
    pool: PgPool,
    ingest: Arc<IngestState>,
    shutdown: CancellationToken,
) -> anyhow::Result<(Router, Vec<JoinHandle<()>>)> {
    let bus = ingest.bus.clone();
    let mut router = Router::new();
    let mut tasks = Vec::new();
    let mut idps = HashMap::new();
    let public = cfg
        .ingest
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", cfg.ingest.listen));
    for idp in &cfg.idp {
        let token = idp.token.resolve()?;
        let make = |prefix: &str| {
            let mut p = tenure_idp_scim::Provider::new(
                pool.clone(),
                idp.name.clone(),
                token.expose().to_string(),
                format!("{}{prefix}", public.trim_end_matches('/')),
            );
            p.max_body_bytes = p.max_body_bytes.max(cfg.ingest.max_body_bytes);
            // A change whose snapshot could not be published as one message
            // is refused at the endpoint (413) instead of stalling the relay.
            p.max_snapshot_bytes = max_snapshot_bytes(bus.client.max_payload());
            Arc::new(p)
        };
        let prefix = format!("/scim/v2/{}", idp.name);
        router = router.nest(&prefix, tenure_idp_scim::router(make(&prefix)));
        if cfg.idp.len() == 1 {
            router = router.nest("/scim/v2", tenure_idp_scim::router(make("/scim/v2")));
        }
        tasks.push(tokio::spawn(publish_loop(
            pool.clone(),
            bus.clone(),
            idp.name.clone(),
            shutdown.clone(),
        )));
        let rt = EventsIdp::from_config(idp);
        if let Some(api) = &rt.api {
            tasks.push(tokio::spawn(fetch_loop(
                pool.clone(),
                bus.clone(),
                idp.name.clone(),
                api.clone(),
                shutdown.clone(),
            )));
        }
        idps.insert(idp.name.clone(), Arc::new(rt));
    }
    let events = Arc::new(EventsState {
        ingest,
        idps,
        max_body_bytes: cfg.ingest.max_body_bytes,
    });
    router = router.route("/v1/idp/{name}/events", post(idp_events).with_state(events));
    Ok((router, tasks))
}

/// Publish attempts of one outbox row that JetStream keeps refusing (while
/// others go through) before it is dead-lettered and the relay moves on.
const MAX_RELAY_ATTEMPTS: u32 = 8;
/// Room left in a message for the envelope's other fields and headers.
const ENVELOPE_ROOM: usize = 8 * 1024;

/// The name a relay's dead messages are filed under.
pub fn relay_name(provider: &str) -> String {
    format!("idp-relay-{provider}")
}

/// The largest snapshot the inbound SCIM endpoint accepts for a server
/// whose largest message is `max_payload` bytes.
pub fn max_snapshot_bytes(max_payload: usize) -> usize {
    tenure_idp_scim::Provider::DEFAULT_MAX_SNAPSHOT_BYTES
        .min(max_payload.saturating_sub(ENVELOPE_ROOM))
        .max(1024)
}

/// Publishes pending identity snapshots, oldest first. The outbox sequence
/// is the message id, so two ingest instances publishing the same rows (or
/// a crash between publish and mark) never produce two messages. A row that
/// cannot be published (larger than the server's `max_payload`, unreadable,
/// or refused `MAX_RELAY_ATTEMPTS` times) is dead-lettered and removed, so
/// it never holds up the rows behind it.
pub async fn publish_loop(pool: PgPool, bus: Bus, provider: String, shutdown: CancellationToken) {
    info!(%provider, "identity publisher running");
    let mut relay = Relay::default();
    let mut idle = Duration::from_millis(250);
    loop {
        match publish_pending_with(&pool, &bus, &provider, &mut relay).await {
            Ok(n) if n > 0 => {
                idle = Duration::from_millis(250);
                continue;
            }
            Ok(_) => idle = Duration::from_millis(250),
            Err(e) => {
                // Back off while JetStream or the database is away, and say
                // so once per retry, not four times a second.
                warn!(%provider, error = %e, retry_in_ms = idle.as_millis() as u64, "identity snapshots not published yet; retrying");
                idle = (idle * 2).min(Duration::from_secs(30));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(idle) => {}
        }
    }
}

/// What the relay remembers between rounds: failed attempts per row.
#[derive(Default)]
pub struct Relay {
    attempts: HashMap<i64, u32>,
}

pub async fn publish_pending(pool: &PgPool, bus: &Bus, provider: &str) -> anyhow::Result<usize> {
    publish_pending_with(pool, bus, provider, &mut Relay::default()).await
}

/// One round of the relay: publishes up to 200 rows in order, stopping at
/// the first row JetStream refuses (so one user's snapshots stay in order)
/// unless that row has used up its attempts. Returns how many rows left
/// the outbox.
pub async fn publish_pending_with(
    pool: &PgPool,
    bus: &Bus,
    provider: &str,
    relay: &mut Relay,
) -> anyhow::Result<usize> {
    let rows = tenure_idp_scim::pending_rows(pool, provider, 200).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let subject = subjects::identity(provider);
    // The server's limit for one message, as it announced it on connect.
    let max_payload = bus.client.max_payload();
    let mut done = Vec::with_capacity(rows.len());
    let mut failure = None;
    for (seq, snapshot) in rows {
        let env = IdentityEnvelope {
            sequence: Some(seq),
            delivery_id: format!("scim:{seq}"),
            received_at: Utc::now(),
            correlation_id: Uuid::new_v5(
                &Uuid::NAMESPACE_OID,
                format!("idp:{provider}:{seq}").as_bytes(),
            ),
            identity: match serde_json::from_value(snapshot.clone()) {
                Ok(i) => i,
                Err(e) => {
                    let raw = serde_json::to_vec(&snapshot).unwrap_or_default();
                    let why = format!("outbox row {seq} is not an identity snapshot: {e}");
                    if let Err(e) =
                        dead_letter_row(bus, provider, seq, &subject, &raw, 1, &why).await
                    {
                        failure = Some(e);
                        break;
                    }
                    done.push(seq);
                    continue;
                }
            },
        };
        let msg_id = env.msg_id();
        let payload = Bytes::from(serde_json::to_vec(&env)?);
        if payload.len() + msg_id.len() + 64 > max_payload {
            let why = format!(
                "the identity snapshot of user '{}' is {} bytes; the NATS server accepts at most {max_payload} per message",
                env.identity.user_name.chars().take(80).collect::<String>(),
                payload.len()
            );
            if let Err(e) = dead_letter_row(bus, provider, seq, &subject, &payload, 1, &why).await {
                failure = Some(e);
                break;
            }
            done.push(seq);
            continue;
        }
        match bus.publish(&subject, &msg_id, &[], payload.clone()).await {
            Ok(_) => {
                relay.attempts.remove(&seq);
                done.push(seq);
            }
            Err(e) => {
                let n = relay.attempts.entry(seq).or_insert(0);
                *n += 1;
                if *n < MAX_RELAY_ATTEMPTS {
                    failure = Some(e.into());
                    break;
                }
                let attempts = *n;
                let why = format!("publishing failed {attempts} times: {e}");
                if let Err(e) =
                    dead_letter_row(bus, provider, seq, &subject, &payload, attempts, &why).await
                {
                    failure = Some(e);
                    break;
                }
                relay.attempts.remove(&seq);
                done.push(seq);
            }
        }
    }
    tenure_idp_scim::mark_published(pool, &done).await?;
    // What went through is marked even when a later row failed.
    match failure {
        Some(e) if done.is_empty() => Err(e),
        Some(e) => {
            warn!(%provider, error = %e, published = done.len(), "some identity snapshots not published yet");
            Ok(done.len())
        }
        None => Ok(done.len()),
    }
}

async fn dead_letter_row(
    bus: &Bus,
    provider: &str,
    seq: i64,
    subject: &str,
    payload: &[u8],
    attempts: u32,
    why: &str,
) -> anyhow::Result<()> {
    let dead = tenure_bus::dlq::DeadMessage::new(
        &relay_name(provider),
        subject,
        format!("idp_scim_outbox:{provider}:{seq}"),
        payload,
        vec![("Nats-Msg-Id".into(), format!("idp:{provider}:scim:{seq}"))],
        u64::from(attempts),
        why,
    );
    let filed = bus.dead_letter_message(&dead).await?;
    error!(%provider, outbox_seq = seq, dead_letter = filed, reason = %why, "identity snapshot dead-lettered; the relay moves on");
    Ok(())
}

// ---------------------------------------------------------------------------
// The notification webhook.

/// What the notification webhook needs of one `[[idp]]`.
pub struct EventsIdp {
    name: String,
    webhook_token: Option<String>,
    api: Option<Arc<AuthentikApi>>,
    /// Why notifications cannot be acted on (missing or unreadable
    /// settings); they are answered 422 and quarantined.
    problem: Option<String>,
}

impl EventsIdp {
    pub fn from_config(idp: &IdpConfig) -> Self {
        let mut problems = Vec::new();
        let webhook_token = match &idp.webhook_token {
            None => {
                problems.push("webhook_token is not set".to_string());
                None
            }
            Some(t) => match t.resolve() {
                Ok(v) => Some(v.expose().to_string()),
                Err(e) => {
                    problems.push(format!("webhook_token: {e}"));
                    None
                }
            },
        };
        let api = match (&idp.api_url, &idp.api_token) {
            (Some(url), Some(token)) => match AuthentikApi::new(url, token) {
                Ok(a) => Some(Arc::new(a)),
                Err(e) => {
                    problems.push(format!("api_url/api_token: {e}"));
                    None
                }
            },
            (None, _) => {
                problems.push("api_url is not set".to_string());
                None
            }
            (_, None) => {
                problems.push("api_token is not set".to_string());
                None
            }
        };
        let problem = (!problems.is_empty()).then(|| problems.join("; "));
        if let (Some(p), true) = (
            &problem,
            idp.webhook_token.is_some() || idp.api_url.is_some(),
        ) {
            warn!(provider = %idp.name, problem = %p, "IdP notifications will be quarantined until configured");
        }
        Self {
            name: idp.name.clone(),
            webhook_token,
            api,
            problem,
        }
    }
}

pub struct EventsState {
    /// For its bus, and its rate limits and counters of unauthenticated
    /// requests, shared with the HR webhooks.
    ingest: Arc<IngestState>,
    idps: HashMap<String, Arc<EventsIdp>>,
    max_body_bytes: usize,
}

/// The quarantine (and log) name of an IdP's notifications.
fn quarantine_source(provider: &str) -> String {
    format!("idp:{provider}")
}

fn error_response(status: StatusCode, error: &'static str, message: impl Into<String>) -> Response {
    let mut resp = (
        status,
        Json(ErrorBody {
            error,
            message: message.into(),
            field: None,
        }),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from_static("5"));
    }
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

/// Where a notification kept in the quarantine came from.
enum Sender {
    /// Its bearer token matched.
    Authentic,
    /// The IdP has no usable `webhook_token`, so it cannot be checked:
    /// anyone could have sent it, so it is kept only within the rate
    /// limits on unauthenticated requests.
    Unverified(Option<SocketAddr>),
}

/// Refuses a notification that got past authentication (or could not be
/// put to it) and keeps it in the quarantine with the reason (the
/// `Authorization` header is never kept). An unverified one over the rate
/// limits is answered the same, counted, and not kept.
#[allow(clippy::too_many_arguments)]
async fn refuse(
    st: &EventsState,
    provider: &str,
    status: StatusCode,
    error: &'static str,
    message: String,
    body: Bytes,
    headers: &HeaderMap,
    sender: Sender,
) -> Response {
    let (gate, stats) = (&st.ingest.gate, &st.ingest.stats);
    let source = quarantine_source(provider);
    if let Sender::Unverified(client) = sender {
        stats.unauthenticated.fetch_add(1, Ordering::Relaxed);
        let ip = client.map(|c| c.ip());
        if !gate.admit(&source, ip) {
            unauthenticated::dropped(gate, stats, &source, ip);
            return error_response(status, error, message);
        }
        stats
            .unauthenticated_recorded
            .fetch_add(1, Ordering::Relaxed);
    }
    warn!(%provider, status = status.as_u16(), error, reason = %message, "IdP notification refused; quarantined");
    if let Err(e) = st
        .ingest
        .bus
        .quarantine_request(
            &source,
            status.as_u16(),
            &format!("{error}: {message}"),
            body,
            &crate::kept_headers(headers),
        )
        .await
    {
        warn!(error = %e, "could not quarantine the refused notification");
    }
    error_response(status, error, message)
}

/// Refuses a notification before authentication (wrong or missing token,
/// oversized body): answered at once, counted, and within the rate limits
/// its metadata recorded in `TENURE_REJECTED` in the background; the body
/// is never kept, so forged posts cannot push genuine quarantine entries
/// out, and nothing here waits on NATS.
#[allow(clippy::too_many_arguments)]
fn refuse_unauthenticated(
    st: &EventsState,
    provider: &str,
    status: StatusCode,
    error: &'static str,
    message: String,
    body: Bytes,
    headers: &HeaderMap,
    client: Option<SocketAddr>,
) -> Response {
    let source = quarantine_source(provider);
    unauthenticated::record_rejected(
        &st.ingest.bus,
        &st.ingest.gate,
        &st.ingest.stats,
        Refused {
            source: &source,
            status: status.as_u16(),
            error,
            reason: format!("{error}: {message}"),
            client,
            body,
            headers,
        },
    );
    error_response(status, error, message)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

/// Authentik's notification webhook (generic webhook transport): the
/// default body or the recommended body mapping. Answered once the re-fetch
/// is stored in JetStream; the user (or the group's members) is then read
/// from Authentik's API and written into the SCIM mirror.
#[utoipa::path(
    post,
    path = "/v1/idp/{name}/events",
    tag = "idp",
    params(("name" = String, Path, description = "The `[[idp]]` name from the configuration")),
    request_body(content = String, content_type = "application/json",
        description = "Authentik's generic webhook body: its default `{\"body\", \"severity\", \"user_email\", \"user_username\", \"event_user_email\", \"event_user_username\"}`, or the body mapping of docs/sources/authentik.md (`event_pk`, `action`, `model_app`, `model_name`, `pk`, `name`, `username`, `email`). `Authorization: Bearer <webhook_token>` is required (Authentik's header mapping)."),
    responses(
        (status = 200, description = "Authentic, but about nothing Tenure re-fetches (another model)", body = Accepted),
        (status = 202, description = "Re-fetch stored in JetStream", body = Accepted),
        (status = 400, description = "Not a notification body Tenure understands; quarantined", body = ErrorBody),
        (status = 401, description = "Bearer token missing or wrong; not quarantined (metadata only, rate-limited, in the rejected-request store)", body = ErrorBody),
        (status = 404, description = "No such `[[idp]]` configured", body = ErrorBody),
        (status = 413, description = "Body over the size limit; not quarantined (metadata only, rate-limited)", body = ErrorBody),
        (status = 422, description = "`webhook_token`, `api_url` or `api_token` not configured; quarantined for replay (without a `webhook_token`, within the unauthenticated rate limits)", body = ErrorBody),
        (status = 503, description = "Not confirmed: JetStream did not acknowledge in time; retrying is safe", body = ErrorBody),
    )
)]
pub async fn idp_events(
    State(st): State<Arc<EventsState>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let Some(idp) = st.idps.get(&name).cloned() else {
        return error_response(
            StatusCode::NOT_FOUND,
            "unknown_idp",
            format!("no [[idp]] {name:?} is configured"),
        );
    };
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    // Everything up to the token check is cheap and waits for nothing:
    // anyone who reaches the listener can send these.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // A declared length over the limit is refused without reading a byte.
    let body = if declared.is_some_and(|n| n > st.max_body_bytes) {
        None
    } else {
        to_bytes(body, st.max_body_bytes).await.ok()
    };
    let Some(body) = body else {
        return refuse_unauthenticated(
            &st,
            &idp.name,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body is larger than {} bytes", st.max_body_bytes),
            Bytes::new(),
            &headers,
            client,
        );
    };
    let sender = match idp.webhook_token.as_deref() {
        Some(expected) => {
            if !bearer(&headers).is_some_and(|t| {
                tenure_sources::signature::token_matches(expected.as_bytes(), t.as_bytes())
            }) {
                return refuse_unauthenticated(
                    &st,
                    &idp.name,
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "Authorization: Bearer <webhook_token> is missing or wrong".into(),
                    body,
                    &headers,
                    client,
                );
            }
            Sender::Authentic
        }
        None => Sender::Unverified(client),
    };
    if let Some(problem) = idp.problem.as_deref() {
        return refuse(
            &st,
            &idp.name,
            StatusCode::UNPROCESSABLE_ENTITY,
            "source_not_configured",
            format!("[[idp]] {:?}: {problem}", idp.name),
            body,
            &headers,
            sender,
        )
        .await;
    }
    let parsed = match parse_event(&body) {
        Ok(p) => p,
        Err(e) => {
            return refuse(
                &st,
                &idp.name,
                StatusCode::BAD_REQUEST,
                "malformed_payload",
                e.to_string(),
                body,
                &headers,
                Sender::Authentic,
            )
            .await
        }
    };
    accept_event(&st, &idp.name, parsed).await
}

async fn accept_event(st: &EventsState, provider: &str, parsed: ParsedEvent) -> Response {
    let delivery = parsed
        .event_id
        .clone()
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let correlation_id = Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("idp:{provider}:{delivery}").as_bytes(),
    );
    let span = tracing::info_span!("idp_event", %provider, delivery_id = %delivery, %correlation_id, action = parsed.action.as_deref().unwrap_or(""));
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
        if parsed.targets.is_empty() {
            let reason = parsed
                .ignored
                .clone()
                .unwrap_or_else(|| "names no user or group".into());
            info!(%reason, "IdP notification ignored");
            return (
                StatusCode::OK,
                Json(accepted("ignored", false, 0, Some(reason))),
            )
                .into_response();
        }
        let n = parsed.targets.len();
        let mut all_duplicate = true;
        for (i, target) in parsed.targets.into_iter().enumerate() {
            let msg = IdpFetch {
                provider: provider.to_string(),
                delivery_id: if n == 1 {
                    delivery.clone()
                } else {
                    format!("{delivery}#{i}")
                },
                received_at: Utc::now(),
                correlation_id,
                target,
            };
            let payload = match serde_json::to_vec(&msg) {
                Ok(p) => Bytes::from(p),
                Err(e) => {
                    error!(error = %e, "cannot encode the re-fetch");
                    return error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "cannot encode the re-fetch",
                    );
                }
            };
            match st
                .ingest
                .bus
                .publish(&subjects::idp_fetch(provider), &msg.msg_id(), &[], payload)
                .await
            {
                Ok(stored) => all_duplicate &= stored.duplicate,
                Err(e) => {
                    // It may have been stored all the same (a lost
                    // acknowledgement, or sent once NATS is back), so the
                    // answer must not say it was not.
                    warn!(error = %e, "JetStream did not confirm storing the re-fetch");
                    return error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "not confirmed: JetStream did not acknowledge storing the re-fetch in time; retrying is safe (the same event_pk is applied once, and a repeated re-fetch only reads the user again)",
                    );
                }
            }
        }
        info!(targets = n, "IdP re-fetch queued");
        (
            StatusCode::ACCEPTED,
            Json(accepted("fetching", all_duplicate, n, None)),
        )
            .into_response()
    }
    .instrument(span)
    .await
}

// ---------------------------------------------------------------------------
// Notification bodies.

/// What a notification body names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedEvent {
    /// Authentik's event id (body mapping `event_pk`): JetStream drops a
    /// second delivery of the same event.
    pub event_id: Option<String>,
    pub action: Option<String>,
    pub targets: Vec<IdpFetchTarget>,
    /// Why an authentic notification names nothing to re-fetch.
    pub ignored: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body must be a JSON object")]
    NotObject,
    #[error("neither Authentik's default notification body nor the documented body mapping (no body, model_name, pk, username or email)")]
    Unrecognised,
    #[error("{field} is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// The model of an Authentik event context (`context.model`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct EventModel {
    app: Option<String>,
    model_name: Option<String>,
    pk: Option<String>,
    name: Option<String>,
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn model_from_json(o: &Map<String, Value>) -> EventModel {
    EventModel {
        app: text(o.get("app")),
        model_name: text(o.get("model_name")),
        pk: text(o.get("pk")),
        name: text(o.get("name")),
    }
}

/// Reads a notification body: the documented body mapping (flat keys, or a
/// `model` / `context.model` object as in Authentik's event context) or
/// Authentik's default body, whose `body` is the event summary
/// (`"model_updated: {'model': {...}, ...}"`, a Python dict).
pub fn parse_event(body: &[u8]) -> Result<ParsedEvent, EventError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
    let Value::Object(o) = v else {
        return Err(EventError::NotObject);
    };
    let event_id = match text(o.get("event_pk")) {
        Some(id)
            if id.len() <= MAX_EVENT_ID
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) =>
        {
            Some(id)
        }
        Some(_) => {
            return Err(EventError::Invalid {
                field: "event_pk",
                reason: format!("at most {MAX_EVENT_ID} characters of A-Z a-z 0-9 - _ . :"),
            })
        }
        None => None,
    };
    let nested = o
        .get("model")
        .and_then(Value::as_object)
        .or_else(|| o.get("context")?.get("model")?.as_object())
        .map(model_from_json)
        .unwrap_or_default();
    let flat = EventModel {
        app: text(o.get("model_app")).or(nested.app),
        model_name: text(o.get("model_name")).or(nested.model_name),
        pk: text(o.get("pk")).or(nested.pk),
        name: text(o.get("name")).or(nested.name),
    };
    let username = text(o.get("username"));
    let email = text(o.get("email"));
    let mut action = text(o.get("action"));
    let custom = flat != EventModel::default() || username.is_some() || email.is_some();
    let (model, username, email) = if custom {
        (flat, username, email)
    } else if let Some(summary) = o.get("body").and_then(Value::as_str) {
        if o.get("severity").is_none() && !o.contains_key("event_user_username") {
            return Err(EventError::Unrecognised);
        }
        let (act, model) = parse_summary(summary);
        action = action.or(act);
        if model == EventModel::default() {
            // No model: the event is about its user (a login, a password
            // or attribute change through a flow), the default body's
            // `event_user_*`.
            (
                model,
                text(o.get("event_user_username")),
                text(o.get("event_user_email")),
            )
        } else {
            (model, None, None)
        }
    } else {
        return Err(EventError::Unrecognised);
    };
    let mut out = ParsedEvent {
        event_id,
        action,
        ..Default::default()
    };
    if let Some(app) = model.app.as_deref().filter(|a| *a != "authentik_core") {
        out.ignored = Some(format!(
            "the event is about {app}, not authentik_core users or groups"
        ));
        return Ok(out);
    }
    match model
        .model_name
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("user") => {
            let pk = model.pk.map(|p| check_user_pk(&p)).transpose()?;
            out.targets.push(IdpFetchTarget::User {
                pk,
                // For users, the model's name is the username.
                username: username.or(model.name),
                email,
            });
        }
        Some("group") => {
            let pk = model.pk.map(|p| check_group_pk(&p)).transpose()?;
            out.targets.push(IdpFetchTarget::Group {
                pk,
                name: model.name,
            });
        }
        Some(other) => {
            out.ignored = Some(format!("the event is about a {other}, not a user or group"));
        }
        None if username.is_some() || email.is_some() => {
            out.targets.push(IdpFetchTarget::User {
                pk: model.pk.map(|p| check_user_pk(&p)).transpose()?,
                username,
                email,
            });
        }
        None => out.ignored = Some("the event names no user or group".into()),
    }
    if let Some(IdpFetchTarget::User {
        pk: None,
        username: None,
        email: None,
    })
    | Some(IdpFetchTarget::Group {
        pk: None,
        name: None,
    }) = out.targets.first()
    {
        out.targets.clear();
        out.ignored = Some("the event names no pk, username, email or group name".into());
    }
    Ok(out)
}

fn check_user_pk(pk: &str) -> Result<String, EventError> {
    if !pk.is_empty() && pk.len() <= 20 && pk.bytes().all(|b| b.is_ascii_digit()) {
        Ok(pk.to_string())
    } else {
        Err(EventError::Invalid {
            field: "pk",
            reason: "an Authentik user pk is a number".into(),
        })
    }
}

fn check_group_pk(pk: &str) -> Result<String, EventError> {
    Uuid::parse_str(pk)
        .map(|u| u.to_string())
        .map_err(|_| EventError::Invalid {
            field: "pk",
            reason: "an Authentik group pk is a UUID".into(),
        })
}

/// The action and `'model': {...}` of an event summary such as
/// `model_updated: {'model': {'app': 'authentik_core', 'model_name': 'user', 'pk': 5, 'name': 'asilva'}, ...}`.
fn parse_summary(summary: &str) -> (Option<String>, EventModel) {
    let action = summary
        .split_once(':')
        .map(|(a, _)| a.trim())
        .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .map(str::to_string);
    let mut model = EventModel::default();
    let Some(start) = summary.find("'model': {") else {
        return (action, model);
    };
    for (k, v) in py_dict_items(&summary[start + "'model': {".len()..]) {
        match k.as_str() {
            "app" => model.app = Some(v),
            "model_name" => model.model_name = Some(v),
            "pk" => model.pk = Some(v),
            "name" => model.name = Some(v),
            _ => {}
        }
    }
    (action, model)
}

/// The flat `'key': value` items of a Python dict repr, from just after its
/// `{` to its closing `}`; values are strings (either quote) or bare tokens.
fn py_dict_items(s: &str) -> Vec<(String, String)> {
    let mut items = Vec::new();
    let mut chars = s.chars().peekable();
    let read_token = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Option<String> {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek().copied()? {
            q @ ('\'' | '"') => {
                chars.next();
                let mut out = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                out.push(n);
                            }
                        }
                        c if c == q => return Some(out),
                        c => out.push(c),
                    }
                }
                None
            }
            '{' | '[' => None,
            _ => {
                let mut out = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '}' || c == ':' {
                        break;
                    }
                    out.push(c);
                    chars.next();
                }
                Some(out.trim().to_string())
            }
        }
    };
    while let Some(key) = read_token(&mut chars) {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some(':') {
            break;
        }
        let Some(value) = read_token(&mut chars) else {
            break;
        };
        items.push((key, value));
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            Some(',') => continue,
            _ => break,
        }
    }
    items
}

// ---------------------------------------------------------------------------
// Authentik's API.

/// Authentik's REST API (`/api/v3/`), with the bearer `api_token`.
pub struct AuthentikApi {
    base: String,
    token: String,
    client: ApiClient,
}

impl AuthentikApi {
    pub fn new(api_url: &str, token: &tenure_config::SecretRef) -> anyhow::Result<Self> {
        let base = api_url.trim().trim_end_matches('/');
        let base = base.strip_suffix("/api/v3").unwrap_or(base).to_string();
        reqwest::Url::parse(&base)?;
        let client = ApiClient::new(&SourceApiConfig {
            base_url: base.clone(),
            token: token.clone(),
            user: None,
            timeout_ms: 10_000,
            max_attempts: 4,
        })?;
        let token = token.resolve()?.expose().to_string();
        Ok(Self {
            base,
            token,
            client,
        })
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, FetchError> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), query)
            .map_err(|e| FetchError::Permanent(format!("building the Authentik URL: {e}")))?;
        let call = FetchCall {
            method: reqwest::Method::GET,
            url: url.to_string(),
            headers: vec![
                ("authorization".into(), format!("Bearer {}", self.token)),
                ("accept".into(), "application/json".into()),
            ],
            body: None,
        };
        self.client.get_json(&call).await
    }

    /// Follows Authentik's `pagination.next` page numbers.
    async fn list(
        &self,
        path: &str,
        query: &[(&str, &str)],
        limit: usize,
    ) -> Result<Vec<Value>, FetchError> {
        let mut out = Vec::new();
        let mut page = 1u64;
        loop {
            let page_s = page.to_string();
            let mut q: Vec<(&str, &str)> = query.to_vec();
            q.push(("page", &page_s));
            q.push(("page_size", "100"));
            let v = self.get(path, &q).await?;
            let results = v.get("results").and_then(Value::as_array).ok_or_else(|| {
                FetchError::Permanent(format!("GET {path}: no results list in the answer"))
            })?;
            out.extend(results.iter().cloned());
            let next = v
                .pointer("/pagination/next")
                .and_then(Value::as_u64)
                .filter(|n| *n > page);
            match next {
                Some(n) if out.len() < limit => page = n,
                _ => return Ok(out),
            }
        }
    }

    async fn user_by_pk(&self, pk: &str) -> Result<Option<Value>, FetchError> {
        match self
            .get(
                &format!("/api/v3/core/users/{pk}/"),
                &[("include_groups", "true")],
            )
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(FetchError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn user_by(&self, key: &str, value: &str) -> Result<Option<Value>, FetchError> {
        let found = self
            .list(
                "/api/v3/core/users/",
                &[(key, value), ("include_groups", "true")],
                2,
            )
            .await?;
        // `username` is exact; `email` is matched exactly too, but keep
        // only an unambiguous answer.
        let matching: Vec<Value> = found
            .into_iter()
            .filter(|u| {
                u.get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|x| x.eq_ignore_ascii_case(value))
            })
            .collect();
        match matching.len() {
            0 => Ok(None),
            1 => Ok(matching.into_iter().next()),
            n => Err(FetchError::Permanent(format!(
                "{n} Authentik users have this {key}"
            ))),
        }
    }

    /// The names of a user's groups: `groups_obj` when the answer has it,
    /// else the groups listed with the user as a member.
    async fn group_names(&self, user: &Value) -> Result<Vec<String>, FetchError> {
        if let Some(groups) = user.get("groups_obj").and_then(Value::as_array) {
            return Ok(groups
                .iter()
                .filter_map(|g| g.get("name").and_then(Value::as_str).map(str::to_string))
                .collect());
        }
        let pk = text(user.get("pk"))
            .ok_or_else(|| FetchError::Permanent("the Authentik user has no pk".into()))?;
        let groups = self
            .list(
                "/api/v3/core/groups/",
                &[("members_by_pk", &pk), ("include_users", "false")],
                usize::MAX,
            )
            .await?;
        Ok(groups
            .iter()
            .filter_map(|g| g.get("name").and_then(Value::as_str).map(str::to_string))
            .collect())
    }

    async fn group(
        &self,
        pk: Option<&str>,
        name: Option<&str>,
    ) -> Result<Option<Value>, FetchError> {
        if let Some(pk) = pk {
            return match self
                .get(
                    &format!("/api/v3/core/groups/{pk}/"),
                    &[("include_users", "true")],
                )
                .await
            {
                Ok(v) => Ok(Some(v)),
                Err(FetchError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            };
        }
        let Some(name) = name else { return Ok(None) };
        let found = self
            .list(
                "/api/v3/core/groups/",
                &[("name", name), ("include_users", "true")],
                2,
            )
            .await?;
        Ok(found
            .into_iter()
            .find(|g| g.get("name").and_then(Value::as_str) == Some(name)))
    }

    /// Whether the token sees any user at all: an empty answer from a token
    /// without the permission to view users must not read as "deleted".
    async fn sees_users(&self) -> Result<bool, FetchError> {
        let v = self
            .get("/api/v3/core/users/", &[("page_size", "1")])
            .await?;
        Ok(v.get("results")
            .and_then(Value::as_array)
            .is_some_and(|r| !r.is_empty()))
    }
}

/// Service accounts are not people; Authentik's SCIM provider can exclude
/// them too.
fn is_service_account(user: &Value) -> bool {
    matches!(
        user.get("type").and_then(Value::as_str),
        Some("service_account" | "internal_service_account")
    )
}

/// An Authentik user (`/api/v3/core/users/`) as the mirror stores it.
pub fn fetched_user(user: &Value, groups: Vec<String>) -> Result<FetchedUser, FetchError> {
    let user_name = user
        .get("username")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| FetchError::Permanent("the Authentik user has no username".into()))?;
    let emails = user
        .get("email")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| vec![e.to_string()])
        .unwrap_or_default();
    Ok(FetchedUser {
        user_name: user_name.to_string(),
        emails,
        display_name: text(user.get("name")),
        active: user
            .get("is_active")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        external_id: text(user.get("uid")),
        groups,
    })
}

// ---------------------------------------------------------------------------
// The re-fetch worker.

/// Consumes `tenure.idp_fetch.<provider>` until cancelled, one message at a
/// time so the events of one IdP apply in order.
pub async fn fetch_loop(
    pool: PgPool,
    bus: Bus,
    provider: String,
    api: Arc<AuthentikApi>,
    shutdown: CancellationToken,
) {
    let durable = format!("tenure-idp-fetch-{provider}");
    let consumer = loop {
        let made = bus
            .bounded_consumer(
                IDP_FETCH_STREAM,
                &durable,
                &subjects::idp_fetch(&provider),
                &refetch_redelivery(),
            )
            .await;
        match made {
            Ok(c) => break c,
            Err(e) => {
                warn!(%provider, error = %e, "IdP re-fetch consumer unavailable; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    // A re-fetch that crashed or hung on every delivery is filed, not lost.
    match bus.watch_exhausted(IDP_FETCH_STREAM, &durable).await {
        Ok(watch) => {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = watch => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
        Err(e) => warn!(%provider, error = %e, "cannot watch for exhausted re-fetches"),
    }
    let mut messages = match consumer.messages().await {
        Ok(m) => m,
        Err(e) => {
            error!(%provider, error = %e, "IdP re-fetch consumer unavailable");
            return;
        }
    };
    info!(%provider, "IdP re-fetch worker running");
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = messages.next() => m,
        };
        match next {
            Some(Ok(msg)) => handle_fetch(&pool, &bus, &provider, &durable, &api, msg).await,
            Some(Err(e)) => {
                warn!(%provider, error = %e, "IdP re-fetch consumer error; continuing");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => break,
        }
    }
}

async fn handle_fetch(
    pool: &PgPool,
    bus: &Bus,
    provider: &str,
    durable: &str,
    api: &AuthentikApi,
    msg: async_nats::jetstream::Message,
) {
    use async_nats::jetstream::AckKind;
    let req: IdpFetch = match serde_json::from_slice(&msg.payload) {
        Ok(r) => r,
        Err(e) => {
            let why = format!("undecodable IdP re-fetch: {e}");
            if let Err(de) = tenure_bus::dlq::settle_poison(bus, &msg, durable, &why).await {
                error!(%provider, error = %de, %why, "could not dead-letter an undecodable IdP re-fetch; it is redelivered");
            }
            return;
        }
    };
    let redelivery = refetch_redelivery();
    let span = tracing::info_span!("idp_fetch", %provider, delivery_id = %req.delivery_id, correlation_id = %req.correlation_id, user = tracing::field::Empty, group = tracing::field::Empty);
    let work = async {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        let result = match &req.target {
            IdpFetchTarget::User {
                pk,
                username,
                email,
            } => {
                let shown = username
                    .as_deref()
                    .or(email.as_deref())
                    .or(pk.as_deref())
                    .unwrap_or("");
                tracing::Span::current().record("user", shown);
                refetch_user(
                    pool,
                    provider,
                    api,
                    pk.as_deref(),
                    username.as_deref(),
                    email.as_deref(),
                )
                .await
            }
            IdpFetchTarget::Group { pk, name } => {
                let shown = name.as_deref().or(pk.as_deref()).unwrap_or("");
                tracing::Span::current().record("group", shown);
                refetch_group(pool, provider, api, pk.as_deref(), name.as_deref(), &msg).await
            }
        };
        match result {
            Ok(()) => {
                let _ = msg.ack().await;
            }
            Err(FetchError::Transient(m)) if !redelivery.is_last(delivered) => {
                let wait = redelivery.nak_delay(delivered);
                warn!(error = %m, delivered, wait_s = wait.as_secs(), "IdP re-fetch failed; JetStream redelivers it later");
                let _ = msg.ack_with(AckKind::Nak(Some(wait))).await;
            }
            Err(e) => {
                let reason = format!("idp_fetch_failed: after {delivered} deliveries: {e}");
                warn!(%reason, "IdP re-fetch quarantined");
                match bus
                    .quarantine_request(
                        &quarantine_source(provider),
                        0,
                        &reason,
                        Bytes::from(msg.payload.to_vec()),
                        &[("x-tenure-kind".into(), "idp_fetch".into())],
                    )
                    .await
                {
                    Ok(_) => {
                        let _ = msg.ack_with(AckKind::Term).await;
                    }
                    Err(qe) => {
                        warn!(error = %qe, "could not quarantine the IdP re-fetch; dead-lettering it");
                        let why = format!("{reason} (the quarantine was unavailable: {qe})");
                        if let Err(de) =
                            tenure_bus::dlq::settle_poison(bus, &msg, durable, &why).await
                        {
                            warn!(error = %de, "could not dead-letter the IdP re-fetch either; it will be redelivered");
                        }
                    }
                }
            }
        }
    };
    tenure_bus::with_progress(&msg, redelivery.ack_wait() / 2, work)
        .instrument(span)
        .await
}

fn mirror_error(e: tenure_idp_scim::Error) -> FetchError {
    match &e {
        tenure_idp_scim::Error::Database(_) => FetchError::Transient(e.to_string()),
        tenure_idp_scim::Error::Mirror { retry: true, .. } => FetchError::Transient(e.to_string()),
        _ => FetchError::Permanent(e.to_string()),
    }
}

/// Reads one user from Authentik and writes it into the mirror; a user
/// Authentik no longer has is deleted from it, as a SCIM `DELETE` would.
async fn refetch_user(
    pool: &PgPool,
    provider: &str,
    api: &AuthentikApi,
    pk: Option<&str>,
    username: Option<&str>,
    email: Option<&str>,
) -> Result<(), FetchError> {
    let user = match (pk, username, email) {
        (Some(pk), _, _) => api.user_by_pk(pk).await?,
        (None, Some(u), _) => api.user_by("username", u).await?,
        (None, None, Some(e)) => api.user_by("email", e).await?,
        (None, None, None) => {
            return Err(FetchError::Permanent("the re-fetch names no user".into()))
        }
    };
    let Some(user) = user else {
        let Some(name) = username else {
            warn!("Authentik has no such user and the event gave no username; nothing to delete");
            return Ok(());
        };
        if !api.sees_users().await? {
            return Err(FetchError::Permanent(
                "Authentik's API lists no users at all: api_token cannot view users, so a missing user cannot be told from a forbidden one".into(),
            ));
        }
        info!("Authentik has no such user; deleting it from the mirror");
        tenure_idp_scim::apply_fetched_deleted(pool, provider, name)
            .await
            .map_err(mirror_error)?;
        return Ok(());
    };
    if is_service_account(&user) {
        info!("service account; not mirrored");
        return Ok(());
    }
    let groups = api.group_names(&user).await?;
    let fetched = fetched_user(&user, groups)?;
    // Renamed in Authentik: the name the event gave is gone as well.
    if let Some(old) = username.filter(|u| !u.eq_ignore_ascii_case(&fetched.user_name)) {
        info!(old, new = %fetched.user_name, "user renamed in Authentik");
    }
    let applied = tenure_idp_scim::apply_fetched(pool, provider, &fetched)
        .await
        .map_err(mirror_error)?;
    if !applied.unknown_groups.is_empty() {
        info!(groups = ?applied.unknown_groups, "groups not (yet) pushed by Authentik's SCIM provider; left out until they are");
    }
    Ok(())
}

/// Re-fetches every member of a group, as Authentik has them now and as the
/// mirror had them, so members who left lose it too.
async fn refetch_group(
    pool: &PgPool,
    provider: &str,
    api: &AuthentikApi,
    pk: Option<&str>,
    name: Option<&str>,
    msg: &async_nats::jetstream::Message,
) -> Result<(), FetchError> {
    let group = api.group(pk, name).await?;
    let mut users: BTreeSet<String> = BTreeSet::new();
    let mut mirror_names: Vec<String> = Vec::new();
    match &group {
        Some(g) => {
            if let Some(n) = g.get("name").and_then(Value::as_str) {
                mirror_names.push(n.to_string());
            }
            for u in g
                .get("users_obj")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = u.get("username").and_then(Value::as_str) {
                    users.insert(n.to_string());
                }
            }
        }
        None => {
            // Deleted: its members in the mirror lose it. An event's model
            // name of a group reads "Group <name>" in some versions.
            if let Some(n) = name {
                mirror_names.push(n.to_string());
                if let Some(stripped) = n.strip_prefix("Group ") {
                    mirror_names.push(stripped.to_string());
                }
            }
        }
    }
    for n in &mirror_names {
        let members = tenure_idp_scim::group_member_names(pool, provider, n)
            .await
            .map_err(mirror_error)?;
        users.extend(members);
    }
    if users.len() > MAX_GROUP_MEMBERS {
        warn!(
            members = users.len(),
            max = MAX_GROUP_MEMBERS,
            "group too large to re-fetch member by member; relying on the SCIM provider's sync"
        );
        return Ok(());
    }
    info!(
        members = users.len(),
        found = group.is_some(),
        "re-fetching the group's members"
    );
    for (i, u) in users.iter().enumerate() {
        if i > 0 && i % 50 == 0 {
            let _ = msg.ack_with(async_nats::jetstream::AckKind::Progress).await;
        }
        refetch_user(pool, provider, api, None, Some(u), None)
            .instrument(tracing::info_span!("member", user = %u))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ParsedEvent, EventError> {
        parse_event(&serde_json::to_vec(&v).expect("json"))
    }

    #[test]
    fn default_body_names_the_model_in_its_summary() {
        let p = parse(json!({
            "body": "model_updated: {'model': {'app': 'authentik_core', 'model_name': 'user', 'pk': 7, 'name': 'asilva'}, 'http_request': {'args': {}, 'path': '/api/v3/core/users/7/', 'method': 'PATCH', 'request_id': 'abc', 'user_agent': 'Mozilla/5.0'}}",
            "severity": "notice",
            "user_email": "admin@example.com",
            "user_username": "akadmin",
            "event_user_email": "admin@example.com",
            "event_user_username": "akadmin"
        }))
        .expect("parsed");
        assert_eq!(p.action.as_deref(), Some("model_updated"));
        assert_eq!(
            p.targets,
            vec![IdpFetchTarget::User {
                pk: Some("7".into()),
                username: Some("asilva".into()),
                email: None
            }]
        );
        assert_eq!(p.event_id, None);

        let g = parse(json!({
            "body": "model_deleted: {'model': {'app': 'authentik_core', 'model_name': 'group', 'pk': '5e4c2b2e-3f0f-4b8e-9a0a-1c2d3e4f5a6b', 'name': \"Group dev's\"}}",
            "severity": "alert",
            "user_email": "", "user_username": "akadmin", "event_user_email": "", "event_user_username": "akadmin"
        }))
        .expect("parsed");
        assert_eq!(
            g.targets,
            vec![IdpFetchTarget::Group {
                pk: Some("5e4c2b2e-3f0f-4b8e-9a0a-1c2d3e4f5a6b".into()),
                name: Some("Group dev's".into())
            }]
        );
    }

    #[test]
    fn default_body_without_a_model_is_about_the_event_user() {
        let p = parse(json!({
            "body": "user_write: {'email': 'ana@example.com', 'name': 'Ana'}",
            "severity": "notice",
            "user_email": "admin@example.com",
            "user_username": "akadmin",
            "event_user_email": "ana@example.com",
            "event_user_username": "asilva"
        }))
        .expect("parsed");
        assert_eq!(
            p.targets,
            vec![IdpFetchTarget::User {
                pk: None,
                username: Some("asilva".into()),
                email: Some("ana@example.com".into())
            }]
        );
        // Another model: authentic, nothing to do.
        let p = parse(json!({
            "body": "model_updated: {'model': {'app': 'authentik_core', 'model_name': 'application', 'pk': 'x', 'name': 'Grafana'}}",
            "severity": "notice", "event_user_username": "akadmin"
        }))
        .expect("parsed");
        assert!(p.targets.is_empty());
        assert!(p.ignored.is_some_and(|r| r.contains("application")));
    }

    #[test]
    fn custom_mapping_body() {
        let p = parse(json!({
            "event_pk": "0b6ad0c1-6f43-4f5e-8f43-2f8f2e1c9d10",
            "action": "model_updated",
            "model_app": "authentik_core",
            "model_name": "user",
            "pk": 42,
            "name": "asilva",
            "username": "asilva"
        }))
        .expect("parsed");
        assert_eq!(
            p.event_id.as_deref(),
            Some("0b6ad0c1-6f43-4f5e-8f43-2f8f2e1c9d10")
        );
        assert_eq!(
            p.targets,
            vec![IdpFetchTarget::User {
                pk: Some("42".into()),
                username: Some("asilva".into()),
                email: None
            }]
        );
        // The event context's own shape works too.
        let p = parse(json!({"action": "model_created", "context": {"model": {"app": "authentik_core", "model_name": "group", "pk": "5e4c2b2e-3f0f-4b8e-9a0a-1c2d3e4f5a6b", "name": "developers"}}}))
            .expect("parsed");
        assert!(
            matches!(&p.targets[..], [IdpFetchTarget::Group { pk: Some(_), name: Some(n) }] if n == "developers")
        );
        // Just a username.
        let p = parse(json!({"username": "asilva"})).expect("parsed");
        assert_eq!(p.targets.len(), 1);
        // Another app's model.
        let p = parse(json!({"model_app": "authentik_providers_oauth2", "model_name": "oauth2provider", "pk": 3}))
            .expect("parsed");
        assert!(p.targets.is_empty());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            parse_event(b"not json"),
            Err(EventError::NotJson(_))
        ));
        assert_eq!(parse(json!([1, 2])), Err(EventError::NotObject));
        assert_eq!(
            parse(json!({"hello": "world"})),
            Err(EventError::Unrecognised)
        );
        assert_eq!(parse(json!({"body": "hi"})), Err(EventError::Unrecognised));
        assert!(matches!(
            parse(json!({"model_name": "user", "pk": "../../admin"})),
            Err(EventError::Invalid { field: "pk", .. })
        ));
        assert!(matches!(
            parse(json!({"model_name": "group", "pk": "not-a-uuid"})),
            Err(EventError::Invalid { field: "pk", .. })
        ));
        assert!(matches!(
            parse(json!({"event_pk": "a b", "username": "x"})),
            Err(EventError::Invalid {
                field: "event_pk",
                ..
            })
        ));
    }

    #[test]
    fn authentik_users_map_to_fetched_users() {
        let u = json!({
            "pk": 7, "username": "asilva", "name": "Ana Silva", "is_active": false,
            "email": "Ana.Silva@example.com", "uid": "c3f0", "type": "internal",
            "groups_obj": [{"pk": "5e4c2b2e-3f0f-4b8e-9a0a-1c2d3e4f5a6b", "name": "developers"}]
        });
        let f = fetched_user(&u, vec!["developers".into()]).expect("mapped");
        assert_eq!(f.user_name, "asilva");
        assert_eq!(f.emails, vec!["Ana.Silva@example.com".to_string()]);
        assert_eq!(f.display_name.as_deref(), Some("Ana Silva"));
        assert!(!f.active);
        assert_eq!(f.external_id.as_deref(), Some("c3f0"));
        assert!(fetched_user(&json!({"pk": 1}), vec![]).is_err());
        assert!(is_service_account(&json!({"type": "service_account"})));
    }
}
