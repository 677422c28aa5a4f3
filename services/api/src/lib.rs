//! The operator HTTP API: health, persons, accounts, a person's audit
//! timeline and hash-chain verification. Read-only over the event store and
//! projections.

pub mod queries;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tenure_config::Config;
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

pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/v1/persons", get(list_persons))
        .route("/v1/persons/{key}", get(get_person))
        .route("/v1/persons/{key}/timeline", get(get_timeline))
        .route("/v1/accounts", get(list_accounts))
        .route("/v1/schedules", get(list_schedules))
        .route("/v1/audit/verify", get(verify))
        .with_state(pool)
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

async fn get_person(State(pool): State<PgPool>, Path(key): Path<String>) -> Response {
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

pub async fn run(cfg: &Config, pool: PgPool, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&cfg.api.listen).await?;
    info!(listen = %listener.local_addr()?, "api listening");
    axum::serve(listener, router(pool))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
