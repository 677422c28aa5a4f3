//! The generic webhook over HTTP against a real, private JetStream.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tenure_bus::{Bus, INGEST_STREAM};
use tenure_ingest::{router, IngestState};
use tenure_sources::signature;
use tenure_testkit::NatsServer;
use tower::ServiceExt;

const SECRET: &str = "s3cret";

async fn setup() -> anyhow::Result<(NatsServer, Bus, axum::Router)> {
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    let state = Arc::new(IngestState::generic(
        bus.clone(),
        SECRET,
        4096,
        Arc::new(Utc::now),
    ));
    Ok((nats, bus, router(state)))
}

fn record() -> serde_json::Value {
    serde_json::json!({
        "person_id": "E-1", "given_name": "Ana", "family_name": "Silva",
        "work_email": "ana@example.com", "employment_status": "active",
        "start_date": "2026-03-03", "effective_at": "2026-02-01T10:00:00Z"
    })
}

fn signed(body: &[u8], delivery: &str, ts: i64, secret: &str) -> Request<Body> {
    Request::post("/v1/sources/generic/records")
        .header("content-type", "application/json")
        .header("x-tenure-delivery", delivery)
        .header("x-tenure-timestamp", ts.to_string())
        .header(
            "x-tenure-signature",
            signature::sign_generic(secret.as_bytes(), ts, body),
        )
        .body(Body::from(body.to_vec()))
        .expect("request")
}

async fn send(
    app: &axum::Router,
    req: Request<Body>,
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    let resp = app.clone().oneshot(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&bytes)?))
}

async fn stored(bus: &Bus, stream: &str) -> anyhow::Result<u64> {
    let mut s = bus.js.get_stream(stream).await?;
    Ok(s.info().await?.state.messages)
}

#[tokio::test]
async fn accepted_record_is_in_jetstream_once_even_when_delivered_twice() -> anyhow::Result<()> {
    let (_nats, bus, app) = setup().await?;
    let body = serde_json::to_vec(&record())?;
    let now = Utc::now().timestamp();
    let (status, first) = send(&app, signed(&body, "d-1", now, SECRET)).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["duplicate"], false);
    let (status, second) = send(&app, signed(&body, "d-1", now, SECRET)).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["correlation_id"], second["correlation_id"]);
    assert_eq!(stored(&bus, INGEST_STREAM).await?, 1);

    let s = bus.js.get_stream(INGEST_STREAM).await?;
    let msg = s.get_raw_message(1).await?;
    let env: tenure_bus::IngestEnvelope = serde_json::from_slice(&msg.payload)?;
    assert_eq!(env.delivery_id, "d-1");
    assert_eq!(env.record.work_email, "ana@example.com");
    Ok(())
}

#[tokio::test]
async fn rejections_are_explained_and_quarantined_and_publish_nothing() -> anyhow::Result<()> {
    let (_nats, bus, app) = setup().await?;
    let body = serde_json::to_vec(&record())?;
    let now = Utc::now().timestamp();

    let (status, e) = send(&app, signed(&body, "d-1", now, "wrong")).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(e["error"], "invalid_signature");

    let (status, e) = send(&app, signed(&body, "d-2", now - 3600, SECRET)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(e["message"].as_str().unwrap_or("").contains("3600"), "{e}");

    let (status, e) = send(&app, signed(b"{\"person_id\": ", "d-3", now, SECRET)).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"], "malformed_json");

    let mut bad = record();
    bad["work_email"] = "ana at example".into();
    let (status, e) = send(&app, signed(&serde_json::to_vec(&bad)?, "d-4", now, SECRET)).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(e["field"], "work_email");

    let big = vec![b' '; 5000];
    let (status, e) = send(&app, signed(&big, "d-5", now, SECRET)).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(e["error"], "payload_too_large");

    let (status, _) = send(&app, signed(&body, "bad id with spaces", now, SECRET)).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    assert_eq!(
        stored(&bus, INGEST_STREAM).await?,
        0,
        "nothing reaches the engine"
    );
    let q = bus.list_quarantine(100).await?;
    assert_eq!(
        q.iter().map(|x| x.status).collect::<Vec<_>>(),
        [401, 401, 400, 422, 413, 400]
    );
    assert!(q[3].reason.contains("work_email"), "{:?}", q[3]);
    assert!(
        q[0].payload.contains("ana@example.com"),
        "the rejected payload is kept"
    );
    Ok(())
}

#[tokio::test]
async fn a_source_over_its_rate_limit_gets_429_and_nothing_is_published() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    let mut state = IngestState::generic(bus.clone(), SECRET, 4096, Arc::new(Utc::now));
    let limited = tenure_ingest::SourceRuntime::new(
        "generic",
        tenure_sources::Adapter::new(
            tenure_sources::Kind::Generic,
            tenure_sources::FieldMapping::default(),
            Some(SECRET.as_bytes().to_vec()),
        ),
        4096,
    )
    .with_rate_limit(1, Some(1));
    state.add_source(limited);
    let app = router(Arc::new(state));
    let body = serde_json::to_vec(&record())?;
    let now = Utc::now().timestamp();
    let (status, _) = send(&app, signed(&body, "r-1", now, SECRET)).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    let resp = app
        .clone()
        .oneshot(signed(&body, "r-2", now, SECRET))
        .await?;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(stored(&bus, INGEST_STREAM).await?, 1);
    // A rate-limited sender retries; it is not quarantined.
    assert_eq!(stored(&bus, tenure_bus::QUARANTINE_STREAM).await?, 0);
    Ok(())
}
