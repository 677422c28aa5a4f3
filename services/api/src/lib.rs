//! The operator HTTP API: health, persons, accounts, schedules, a
//! person's audit timeline, hash-chain verification, and, with a token
//! configured, operator actions (dead-letter redrive, approvals).

pub mod ops;
pub mod queries;

use axum::extract::{FromRef, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tenure_bus::Bus;
use tenure_config::Config;
use tenure_config::Secret;
use tenure_store::sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::info;
use uuid::Uuid;

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": code, "message": message.into() })),
    )
        .into_response()
}

fn db_error(e: impl std::fmt::Display) -> Response {
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
    pub token: Option<Secret>,
    pub partitions: u32,
}

impl FromRef<ApiState> for PgPool {
    fn from_ref(state: &ApiState) -> PgPool {
        state.pool.clone()
    }
}

/// Read-only router without authentication (tests, loopback installs).
pub fn router(pool: PgPool) -> Router {
    router_with(ApiState {
        pool,
        bus: None,
        token: None,
        partitions: 8,
    })
}

pub fn router_with(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/v1/persons", get(list_persons))
        .route("/v1/persons/{key}", get(get_person))
        .route("/v1/persons/{key}/timeline", get(get_timeline))
        .route("/v1/accounts", get(list_accounts))
        .route("/v1/schedules", get(list_schedules))
        .route("/v1/identities", get(list_identities))
        .route("/v1/audit/verify", get(verify))
        .route("/v1/dlq", get(list_dlq))
        .route("/v1/dlq/{sequence}", get(get_dlq))
        .route("/v1/dlq/{sequence}/redrive", post(redrive))
        .route("/v1/staged", get(list_staged))
        .route("/v1/apps/{app}/approve", post(approve))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(health))
        .merge(v1)
        .with_state(state)
}

/// With a token configured every /v1 request must carry it; without one,
/// only reads are served.
async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match &state.token {
        Some(token) => {
            let given = request
                .headers()
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let ok = given.is_some_and(|g| subtle_eq(g.as_bytes(), token.expose().as_bytes()));
            if !ok {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong bearer token",
                );
            }
        }
        None if request.method() != axum::http::Method::GET => {
            return error(
                StatusCode::FORBIDDEN,
                "read_only",
                "operator actions need api.token to be configured",
            );
        }
        None => {}
    }
    next.run(request).await
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    // Constant time for equal lengths; the token length is not secret.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

async fn get_person(State(pool): State<PgPool>, Path(key): Path<String>) -> Response {
    if let Some(r) = no_such_key(&key) {
        return r;
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

async fn redrive(State(state): State<ApiState>, Path(sequence): Path<u64>) -> Response {
    let Some(bus) = state.bus.as_ref() else {
        return no_bus();
    };
    match ops::redrive(&state.pool, bus, sequence, state.partitions).await {
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
    match ops::approve(&state.pool, bus, &app, persons, state.partitions).await {
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
    let token = match &cfg.api.token {
        Some(t) => Some(t.resolve()?),
        None => None,
    };
    let state = ApiState {
        pool,
        bus,
        token,
        partitions: cfg.engine.partitions,
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
