//! The operator API over HTTP (the router served on a local port) on a
//! fresh database and a private JetStream.

use axum::http::StatusCode;
use std::time::Duration;
use tenure_api::auth::Tokens;
use tenure_api::{router, router_with, ApiState};
use tenure_bus::dlq::DeadLetter;
use tenure_bus::{Bus, Job};
use tenure_config::Scope;
use tenure_testkit::{NatsServer, TestDb};

#[path = "api/audit.rs"]
mod audit;

async fn setup() -> anyhow::Result<(TestDb, NatsServer, tenure_store::sqlx::PgPool, Bus)> {
    let db = TestDb::create().await?;
    let owner = tenure_store::connect(&db.url(), None, 2).await?;
    tenure_store::migrate(&owner).await?;
    owner.close().await;
    let pool = tenure_store::connect(&db.url(), Some("tenure_app"), 4).await?;
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    Ok((db, nats, pool, bus))
}

/// The router listening on a free local port, as `tenure run api` serves
/// it; dropped with the test's runtime.
pub struct Served {
    pub base: String,
    http: reqwest::Client,
}

pub async fn serve(app: axum::Router) -> anyhow::Result<Served> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Served {
        base,
        http: reqwest::Client::new(),
    })
}

impl Served {
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method.parse()?, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Ok(req.send().await?)
    }
}

async fn call(
    app: &Served,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    let resp = app.raw(method, path, token, &[], body).await?;
    let status = StatusCode::from_u16(resp.status().as_u16())?;
    let bytes = resp.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    ))
}

fn job(app: &str) -> Job {
    Job {
        app: app.into(),
        person_id: uuid::Uuid::new_v4(),
        correlation_id: uuid::Uuid::new_v4(),
        causation_id: None,
        approved: false,
    }
}

#[tokio::test]
async fn without_a_configured_token_the_api_refuses_everything_but_health() -> anyhow::Result<()> {
    let (_db, _nats, pool, _bus) = setup().await?;
    let app = serve(router(pool, Tokens::none())).await?;
    for (method, path) in [
        ("GET", "/v1/persons"),
        ("GET", "/v1/audit/review"),
        ("POST", "/v1/dlq/1/redrive"),
    ] {
        let (status, body) = call(&app, method, path, Some("anything"), "").await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(body["error"], "api_closed", "{path}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("[[api.token]]") && message.contains("tenure api token-hash"),
            "{message}"
        );
    }
    assert_eq!(
        call(&app, "GET", "/healthz", None, "").await?.0,
        StatusCode::OK
    );
    Ok(())
}

#[tokio::test]
async fn the_deprecated_single_token_still_acts_as_an_admin_named_token() -> anyhow::Result<()> {
    let (_db, _nats, pool, _bus) = setup().await?;
    std::env::set_var("TENURE_TEST_LEGACY_API_TOKEN", "legacy-token");
    let tokens = Tokens::from_config(&tenure_config::ApiTokens::Single(
        tenure_config::SecretRef::Env {
            env: "TENURE_TEST_LEGACY_API_TOKEN".into(),
        },
    ))?;
    let app = serve(router(pool, tokens)).await?;
    assert_eq!(
        call(&app, "GET", "/v1/persons", Some("legacy-token"), "")
            .await?
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "GET", "/v1/persons", Some("legacy-token2"), "")
            .await?
            .0,
        StatusCode::UNAUTHORIZED
    );
    // Admin: operator routes pass authentication (and then find no bus).
    assert_eq!(
        call(&app, "POST", "/v1/dlq/1/redrive", Some("legacy-token"), "")
            .await?
            .0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    Ok(())
}

/// Each operator action as the audit trail recorded it: (actor, action, ok).
async fn operator_actions(
    pool: &tenure_store::sqlx::PgPool,
) -> anyhow::Result<Vec<(String, String, bool)>> {
    let rows: Vec<(String, String, bool)> = tenure_store::sqlx::query_as(
        "SELECT metadata->>'actor', data->>'action', (data->>'ok')::bool FROM events
         WHERE stream_id = 'operator' AND event_type = 'OperatorActionTaken' ORDER BY version",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

#[tokio::test]
async fn named_tokens_list_and_redrive_dead_letters_and_approve_held_changes_within_their_scopes(
) -> anyhow::Result<()> {
    let (_db, _nats, pool, bus) = setup().await?;
    let tokens = Tokens::single("ops", "op-token", &[Scope::Operate]).with(
        "auditor",
        "audit-token",
        &[Scope::AuditRead],
    );
    let app = serve(router_with(ApiState {
        bus: Some(bus.clone()),
        ..ApiState::new(pool.clone(), tokens)
    }))
    .await?;
    let (status, body) = call(&app, "GET", "/v1/persons", None, "").await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let resp = app.raw("GET", "/v1/persons", None, &[], "").await?;
    assert_eq!(
        resp.headers().get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    assert_eq!(
        call(&app, "GET", "/v1/persons", Some("wrong"), "").await?.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, "GET", "/v1/persons", Some("audit-token"), "")
            .await?
            .0,
        StatusCode::OK,
        "audit:read reads"
    );
    assert_eq!(
        call(&app, "GET", "/healthz", None, "").await?.0,
        StatusCode::OK,
        "health stays open for probes"
    );
    for (path, body) in [
        ("/v1/dlq/1/redrive", ""),
        ("/v1/apps/wiki/approve", r#"{"all": true}"#),
    ] {
        let (status, answer) = call(&app, "POST", path, Some("audit-token"), body).await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {answer}");
        assert_eq!(answer["error"], "forbidden");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("auditor") && m.contains("operate")),
            "{answer}"
        );
    }
    assert!(
        operator_actions(&pool).await?.is_empty(),
        "refused requests act on nothing"
    );

    let dead = job("wiki");
    let seq = bus
        .dead_letter(&DeadLetter {
            job: dead.clone(),
            error: "HTTP 400".into(),
            deliveries: 1,
            reason: "refused".into(),
            dead_at: chrono::Utc::now(),
        })
        .await?;
    let (status, list) = call(&app, "GET", "/v1/dlq?app=wiki", Some("op-token"), "").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list[0]["sequence"], seq);
    assert_eq!(list[0]["reason"], "refused");
    assert_eq!(list[0]["kind"], "job");
    // A message a consumer gave up on is listed beside jobs, labelled.
    let poison = bus
        .dead_letter_message(&tenure_bus::dlq::DeadMessage::new(
            "engine",
            "tenure.ingest.generic",
            "TENURE_INGEST:7".into(),
            b"{\"email\":\"x\"}",
            vec![],
            5,
            "index row size 9016 exceeds btree version 4 maximum 2704",
        ))
        .await?;
    let (_, list) = call(&app, "GET", "/v1/dlq", Some("op-token"), "").await?;
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    assert_eq!(list[1]["kind"], "message");
    assert_eq!(list[1]["consumer"], "engine");
    assert_eq!(list[1]["payload_text"], "{\"email\":\"x\"}");
    let (_, only) = call(&app, "GET", "/v1/dlq?consumer=engine", Some("op-token"), "").await?;
    assert_eq!(only.as_array().map(Vec::len), Some(1), "{only}");
    let (status, shown) = call(
        &app,
        "GET",
        &format!("/v1/dlq/{poison}"),
        Some("op-token"),
        "",
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    assert!(shown["error"].as_str().is_some_and(|e| e.contains("2704")));
    let (status, body) = call(
        &app,
        "POST",
        &format!("/v1/dlq/{poison}/redrive"),
        Some("op-token"),
        "",
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kind"], "message");
    assert_eq!(body["subject"], "tenure.ingest.generic");
    let (status, body) = call(
        &app,
        "POST",
        &format!("/v1/dlq/{seq}/redrive"),
        Some("op-token"),
        "",
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["job"]["person_id"], dead.person_id.to_string());
    assert_eq!(
        call(
            &app,
            "POST",
            &format!("/v1/dlq/{seq}/redrive"),
            Some("op-token"),
            ""
        )
        .await?
        .0,
        StatusCode::NOT_FOUND
    );

    let held = job("wiki");
    tenure_store::sqlx::query("INSERT INTO staged_changes (app, person_id, job, reason) VALUES ('wiki', $1, $2, 'too many')")
        .bind(held.person_id)
        .bind(serde_json::to_value(&held)?)
        .execute(&pool)
        .await?;
    let (_, staged) = call(&app, "GET", "/v1/staged", Some("op-token"), "").await?;
    assert_eq!(staged.as_array().map(Vec::len), Some(1));
    assert_eq!(
        call(
            &app,
            "POST",
            "/v1/apps/wiki/approve",
            Some("op-token"),
            "{}"
        )
        .await?
        .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (status, body) = call(
        &app,
        "POST",
        "/v1/apps/wiki/approve",
        Some("op-token"),
        r#"{"all": true}"#,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["released"], 1);
    // The released job is on the queue, marked approved.
    let mut jobs = bus.js.get_stream(tenure_bus::JOBS_STREAM).await?;
    let last = jobs.info().await?.state.last_sequence;
    let m = jobs.get_raw_message(last).await?;
    let queued: Job = serde_json::from_slice(&m.payload)?;
    assert!(queued.approved);
    assert_eq!(queued.person_id, held.person_id);

    // Every action is in the audit trail under the token's name, the
    // failed redrive of a gone dead letter too.
    assert_eq!(
        operator_actions(&pool).await?,
        [
            ("api:ops".into(), "redrive".into(), true),
            ("api:ops".into(), "redrive".into(), true),
            ("api:ops".into(), "redrive".into(), false),
            ("api:ops".into(), "approve".into(), true),
        ]
    );
    Ok(())
}
