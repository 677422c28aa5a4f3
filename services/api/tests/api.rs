//! The operator API over HTTP (in process) on a fresh database and a
//! private JetStream.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::time::Duration;
use tenure_api::{router, router_with, ApiState};
use tenure_bus::dlq::DeadLetter;
use tenure_bus::{Bus, Job};
use tenure_config::Secret;
use tenure_testkit::{NatsServer, TestDb};
use tower::ServiceExt;

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

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string()))?)
        .await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
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
async fn without_a_token_the_api_serves_reads_only() -> anyhow::Result<()> {
    let (_db, _nats, pool, _bus) = setup().await?;
    let app = router(pool);
    assert_eq!(
        call(&app, "GET", "/v1/persons", None, "").await?.0,
        StatusCode::OK
    );
    let (status, body) = call(&app, "POST", "/v1/dlq/1/redrive", None, "").await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "read_only");
    Ok(())
}

#[tokio::test]
async fn with_a_token_operators_list_and_redrive_dead_letters_and_approve_held_changes(
) -> anyhow::Result<()> {
    let (_db, _nats, pool, bus) = setup().await?;
    let app = router_with(ApiState {
        pool: pool.clone(),
        bus: Some(bus.clone()),
        token: Some(Secret::new("op-token")),
        partitions: 8,
    });
    assert_eq!(
        call(&app, "GET", "/v1/persons", None, "").await?.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, "GET", "/v1/persons", Some("wrong"), "").await?.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, "GET", "/healthz", None, "").await?.0,
        StatusCode::OK,
        "health stays open for probes"
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
    Ok(())
}
