//! The operator HTTP API: health, persons, accounts, schedules, a
//! person's audit timeline, hash-chain verification, the audit queries
//! (`/v1/audit/...`) and operator actions (dead-letter redrive,
//! approvals). Closed by default: every /v1 route needs a configured
//! bearer token holding the route's scope ([`auth`]).

pub mod as_of;
pub mod audit;
pub mod auth;
pub mod ops;
pub mod queries;

use axum::extract::{Extension, FromRef, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tenure_bus::Bus;
use tenure_config::{Config, Scope};
use tenure_store::sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::info;
use uuid::Uuid;

pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": code, "message": message.into() })),
    )
        .into_response()
}

pub(crate) fn db_error(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "query failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the database query failed; see the service log",
    )
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    app: Option<String>,
}

#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    /// Needed by operator actions; read endpoints work without it.
    pub bus: Option<Bus>,
    /// Who may call; with none configured every /v1 request is refused.
    pub tokens: auth::Tokens,
    pub partitions: u32,
    /// `[audit] deprovision_sla_hours`, in seconds.
    pub deprovision_sla_secs: i64,
}

impl ApiState {
    /// A state with defaults, for tests and embedding.
    pub fn new(pool: PgPool, tokens: auth::Tokens) -> ApiState {
        ApiState {
            pool,
            bus: None,
            tokens,
            partitions: 8,
            deprovision_sla_secs: 24 * 3600,
        }
    }
}

impl FromRef<ApiState> for PgPool {
    fn from_ref(state: &ApiState) -> PgPool {
        state.pool.clone()
    }
}

/// A router with no bus and the given tokens.
pub fn router(pool: PgPool, tokens: auth::Tokens) -> Router {
    router_with(ApiState::new(pool, tokens))
}

pub fn router_with(state: ApiState) -> Router {
    let guard =
        |scope: Scope| middleware::from_fn_with_state((state.tokens.clone(), scope), authenticate);
    let read = Router::new()
        .route("/v1/persons", get(list_persons))
        .route("/v1/persons/{key}", get(get_person))
        .route("/v1/persons/{key}/timeline", get(get_timeline))
        .route("/v1/accounts", get(list_accounts))
        .route("/v1/schedules", get(list_schedules))
        .route("/v1/identities", get(list_identities))
        .route("/v1/audit/verify", get(verify))
        .route("/v1/audit/access", get(audit::access))
        .route("/v1/audit/review", get(audit::access_review))
        .route("/v1/audit/deprovision", get(audit::deprovision))
        .route("/v1/audit/exceptions", get(audit::exceptions))
        .route("/v1/audit/events", get(audit::events))
        .route("/v1/dlq", get(list_dlq))
        .route("/v1/dlq/{sequence}", get(get_dlq))
        .route("/v1/staged", get(list_staged))
        .route_layer(guard(Scope::AuditRead));
    let operate = Router::new()
        .route("/v1/dlq/{sequence}/redrive", post(redrive))
        .route("/v1/apps/{app}/approve", post(approve))
        .route_layer(guard(Scope::Operate));
    Router::new()
        .route("/healthz", get(health))
        .merge(read)
        .merge(operate)
        .with_state(state)
}

/// Every /v1 request must carry a configured token that grants `needed`;
/// the caller it names is handed to the handler (operator actions record
/// it).
async fn authenticate(
    State((tokens, needed)): State<(auth::Tokens, Scope)>,
    mut request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match tokens.check(header, needed) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => refused(refusal),
    }
}

fn refused(refusal: auth::Refusal) -> Response {
    let unauthorized = |message: &str| {
        let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
        r.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        r
    };
    match refusal {
        auth::Refusal::Closed => error(
            StatusCode::FORBIDDEN,
            "api_closed",
            "the operator API is closed: no token is configured. Make a random token \
             (`openssl rand -hex 32`), hash it with `tenure api token-hash` (reads the token \
             from stdin) and add [[api.token]] with name, hash and scopes \
             (audit:read, operate, admin) to the config; see docs/configuration.md#api",
        ),
        auth::Refusal::Missing => {
            unauthorized("send a configured token as `Authorization: Bearer <token>`")
        }
        auth::Refusal::Unknown => unauthorized("the bearer token matches no configured token"),
        auth::Refusal::Forbidden { name, needed } => error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {name:?} lacks the scope {:?} this request needs",
                needed.as_str()
            ),
        ),
    }
}

async fn health(State(pool): State<PgPool>) -> Response {
    match tenure_store::sqlx::query("SELECT 1").execute(&pool).await {
        Ok(_) => Json(json!({ "status": "ok" })).into_response(),
        Err(e) => db_error(e),
    }
}

async fn list_persons(State(pool): State<PgPool>, Query(q): Query<ListQuery>) -> Response {
    match queries::persons(&pool, q.limit.unwrap_or(100).clamp(1, 1000)).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => db_error(e),
    }
}

/// PostgreSQL text cannot hold NUL, so such a key names no person; asking
/// the database anyway only produces an encoding error and a warning.
fn no_such_key(key: &str) -> Option<Response> {
    key.contains('\0').then(|| {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no person matches {key:?}"),
        )
    })
}

#[derive(Deserialize)]
struct PersonQuery {
    /// RFC 3339: the person as the events recorded up to then make them.
    as_of: Option<chrono::DateTime<chrono::Utc>>,
}

async fn get_person(
    State(pool): State<PgPool>,
    Path(key): Path<String>,
    Query(q): Query<PersonQuery>,
) -> Response {
    if let Some(r) = no_such_key(&key) {
        return r;
    }
    if let Some(at) = q.as_of {
        return get_person_as_of(&pool, &key, at).await;
    }
    match queries::find_person(&pool, &key).await {
        Ok(Some(p)) => match queries::accounts(&pool, None, Some(p.person_id)).await {
            Ok(accounts) => Json(json!({ "person": p, "accounts": accounts })).into_response(),
            Err(e) => db_error(e),
        },
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no person matches {key:?}"),
        ),
        Err(e) => db_error(e),
    }
}

/// The key names a person by id, or by what the persons projection
/// holds today (e-mail, source person id); the state itself is folded from
/// the events only.
async fn get_person_as_of(pool: &PgPool, key: &str, at: chrono::DateTime<chrono::Utc>) -> Response {
    let person_id = match key.parse::<Uuid>() {
        Ok(id) => Some(id),
        Err(_) => match queries::find_person(pool, key).await {
            Ok(p) => p.map(|p| p.person_id),
            Err(e) => return db_error(e),
        },
    };
    let found = match person_id {
        Some(id) => as_of::person_as_of(pool, id, at).await,
        None => Ok(None),
    };
    match found {
        Ok(Some(p)) => Json(p).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("nothing recorded about {key:?} up to {}", at.to_rfc3339()),
        ),
        Err(e) => db_error(e),
    }
}

async fn get_timeline(State(pool): State<PgPool>, Path(key): Path<String>) -> Response {
    if let Some(r) = no_such_key(&key) {
        return r;
    }
    let id = match Uuid::parse_str(&key) {
        Ok(id) => Some(id),
        Err(_) => match queries::find_person(&pool, &key).await {
            Ok(p) => p.map(|p| p.person_id),
            Err(e) => return db_error(e),
        },
    };
    let Some(id) = id else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no person matches {key:?}"),
        );
    };
    match queries::timeline(&pool, id).await {
        Ok(events) if events.is_empty() => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no events for person {id}"),
        ),
        Ok(events) => Json(json!({ "person_id": id, "events": events })).into_response(),
        Err(e) => db_error(e),
    }
}

async fn list_accounts(State(pool): State<PgPool>, Query(q): Query<ListQuery>) -> Response {
    match queries::accounts(&pool, q.app.as_deref(), None).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => db_error(e),
    }
}

#[derive(Deserialize)]
struct IdentitiesQuery {
    idp: Option<String>,
    #[serde(default)]
    unlinked: bool,
    limit: Option<i64>,
}

async fn list_identities(State(pool): State<PgPool>, Query(q): Query<IdentitiesQuery>) -> Response {
    match queries::identities(
        &pool,
        q.idp.as_deref(),
        q.unlinked,
        q.limit.unwrap_or(1000).clamp(1, 10_000),
    )
    .await
    {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => db_error(e),
    }
}

async fn list_schedules(State(pool): State<PgPool>, Query(q): Query<ListQuery>) -> Response {
    match queries::schedules(&pool, q.limit.unwrap_or(100).clamp(1, 1000)).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => db_error(e),
    }
}

async fn verify(State(pool): State<PgPool>) -> Response {
    match tenure_store::verify(&pool).await {
        Ok(report) => {
            let status = if report.is_ok() {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            (status, Json(report)).into_response()
        }
        Err(e) => db_error(e),
    }
}

#[derive(Deserialize)]
struct DlqQuery {
    app: Option<String>,
    consumer: Option<String>,
    limit: Option<usize>,
}

fn no_bus() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "no connection to NATS",
    )
}

/// Dead letters of both kinds, each labelled by `kind`: `job` (a fanout
/// job) or `message` (any message a consumer or relay gave up on).
async fn list_dlq(State(state): State<ApiState>, Query(q): Query<DlqQuery>) -> Response {
    let Some(bus) = state.bus.as_ref() else {
        return no_bus();
    };
    let filter = tenure_bus::dlq::DeadFilter {
        app: q.app,
        consumer: q.consumer,
    };
    match bus
        .list_dead(&filter, q.limit.unwrap_or(100).clamp(1, 10_000))
        .await
    {
        Ok(entries) => Json(entries).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
    }
}

async fn get_dlq(State(state): State<ApiState>, Path(sequence): Path<u64>) -> Response {
    let Some(bus) = state.bus.as_ref() else {
        return no_bus();
    };
    match bus.dead_entry(sequence).await {
        Ok(Some(entry)) => Json(entry).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no dead letter #{sequence}"),
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
    }
}

async fn redrive(
    State(state): State<ApiState>,
    Extension(caller): Extension<auth::Caller>,
    Path(sequence): Path<u64>,
) -> Response {
    let Some(bus) = state.bus.as_ref() else {
        return no_bus();
    };
    match ops::redrive(
        &state.pool,
        bus,
        sequence,
        state.partitions,
        &caller.actor(),
    )
    .await
    {
        Ok(Some(tenure_bus::dlq::Redriven::Job { job })) => {
            Json(json!({ "redriven": sequence, "kind": "job", "job": job })).into_response()
        }
        Ok(Some(tenure_bus::dlq::Redriven::Message { consumer, subject })) => Json(json!({
            "redriven": sequence, "kind": "message", "consumer": consumer, "subject": subject
        }))
        .into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no dead letter #{sequence}"),
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
    }
}

async fn list_staged(State(state): State<ApiState>, Query(q): Query<ListQuery>) -> Response {
    match ops::staged(&state.pool, q.app.as_deref()).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => db_error(e),
    }
}

#[derive(Deserialize)]
struct ApproveBody {
    #[serde(default)]
    persons: Vec<Uuid>,
    #[serde(default)]
    all: bool,
}

async fn approve(
    State(state): State<ApiState>,
    Extension(caller): Extension<auth::Caller>,
    Path(app): Path<String>,
    Json(body): Json<ApproveBody>,
) -> Response {
    if !body.all && body.persons.is_empty() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "give `persons` or `all: true`",
        );
    }
    let Some(bus) = state.bus.as_ref() else {
        return no_bus();
    };
    let persons = (!body.all).then_some(body.persons.as_slice());
    match ops::approve(
        &state.pool,
        bus,
        &app,
        persons,
        state.partitions,
        &caller.actor(),
    )
    .await
    {
        Ok(released) => Json(json!({ "app": app, "released": released })).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
    }
}

pub async fn run(
    cfg: &Config,
    pool: PgPool,
    bus: Option<Bus>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tokens = auth::Tokens::from_config(&cfg.api.token)?;
    match &cfg.api.token {
        tenure_config::ApiTokens::None => tracing::warn!(
            "no [[api.token]] configured: the operator API refuses every /v1 request \
             (docs/configuration.md#api)"
        ),
        tenure_config::ApiTokens::Single(_) => tracing::warn!(
            "[api] token = {{ … }} is deprecated: it acts as one admin token named \"token\"; \
             use [[api.token]] tables with hashes and scopes (docs/configuration.md#api)"
        ),
        tenure_config::ApiTokens::Named(_) => {}
    }
    let state = ApiState {
        pool,
        bus,
        tokens,
        partitions: cfg.engine.partitions,
        deprovision_sla_secs: i64::try_from(cfg.audit.deprovision_sla_hours.saturating_mul(3600))
            .unwrap_or(i64::MAX),
    };
    let listener = tokio::net::TcpListener::bind(&cfg.api.listen).await?;
    info!(listen = %listener.local_addr()?, "api listening");
    let a = &cfg.api;
    let limits = tenure_http::Limits {
        header_read_timeout: std::time::Duration::from_secs(a.header_read_timeout_secs),
        request_timeout: std::time::Duration::from_secs(a.request_timeout_secs),
        idle_timeout: std::time::Duration::from_secs(a.idle_timeout_secs),
        max_connections: a.max_connections,
        max_connections_per_client: a.max_connections_per_client,
    };
    tenure_http::serve("api", listener, router_with(state), limits, shutdown).await?;
    Ok(())
}
