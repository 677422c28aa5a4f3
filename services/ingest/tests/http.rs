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
    // Authentic but refused: kept in full in the quarantine, for replay.
    let q = bus.list_quarantine(100).await?;
    assert_eq!(q.iter().map(|x| x.status).collect::<Vec<_>>(), [400, 422]);
    assert!(q[1].reason.contains("work_email"), "{:?}", q[1]);
    assert!(
        q[1].payload.contains("ana at example"),
        "the rejected payload is kept"
    );
    // Refused before authentication: metadata only, in their own store
    // (recorded in the background, so wait for it).
    let rejected = wait_for_rejected(&bus, 4).await?;
    let mut statuses: Vec<u16> = rejected.iter().map(|x| x.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [400, 401, 401, 413]);
    let forged = rejected
        .iter()
        .find(|r| r.reason.contains("does not match"))
        .expect("the wrong signature is recorded");
    assert_eq!(forged.body_len, body.len() as u64);
    assert_eq!(forged.body_sha256.len(), 64);
    Ok(())
}

async fn wait_for_rejected(
    bus: &Bus,
    n: usize,
) -> anyhow::Result<Vec<tenure_bus::quarantine::Rejected>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = bus.list_rejected(10_000).await?;
        if got.len() >= n || std::time::Instant::now() > deadline {
            return Ok(got);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

fn signed_v2(body: &[u8], delivery: &str, signed_delivery: &str, ts: i64) -> Request<Body> {
    Request::post("/v1/sources/generic/records")
        .header("content-type", "application/json")
        .header("x-tenure-delivery", delivery)
        .header("x-tenure-timestamp", ts.to_string())
        .header(
            "x-tenure-signature",
            signature::sign_generic_v2(SECRET.as_bytes(), ts, signed_delivery, body),
        )
        .body(Body::from(body.to_vec()))
        .expect("request")
}

#[tokio::test]
async fn a_captured_v1_webhook_sent_500_times_with_new_delivery_ids_is_stored_once(
) -> anyhow::Result<()> {
    let (_nats, bus, app) = setup().await?;
    let body = serde_json::to_vec(&record())?;
    let now = Utc::now().timestamp();
    let (status, first) = send(&app, signed(&body, "hr-1", now, SECRET)).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["duplicate"], false);
    for i in 0..500 {
        let (status, again) =
            send(&app, signed(&body, &format!("replay-{i}"), now, SECRET)).await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{again}");
        assert_eq!(again["duplicate"], true, "{again}");
        assert_eq!(again["delivery_id"], "hr-1", "{again}");
        assert_eq!(again["correlation_id"], first["correlation_id"]);
    }
    assert_eq!(
        stored(&bus, INGEST_STREAM).await?,
        1,
        "one record reaches the engine"
    );
    // A sender re-signing the same record with a fresh timestamp is a new
    // signed content; its own delivery id then decides, as before.
    let (status, resent) = send(&app, signed(&body, "hr-1", now + 1, SECRET)).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(resent["duplicate"], true);
    assert_eq!(stored(&bus, INGEST_STREAM).await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_v2_signature_covers_the_delivery_id() -> anyhow::Result<()> {
    let (_nats, bus, app) = setup().await?;
    let body = serde_json::to_vec(&record())?;
    let now = Utc::now().timestamp();
    let (status, ok) = send(&app, signed_v2(&body, "hr-7", "hr-7", now)).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{ok}");
    let (status, e) = send(&app, signed_v2(&body, "hr-8", "hr-7", now)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{e}");
    assert_eq!(e["error"], "invalid_signature");
    assert!(
        e["message"].as_str().unwrap_or("").contains("delivery id"),
        "{e}"
    );
    // Adding a valid v1 tag beside the v2 one does not get it in either.
    let req = Request::post("/v1/sources/generic/records")
        .header("x-tenure-delivery", "hr-9")
        .header("x-tenure-timestamp", now.to_string())
        .header(
            "x-tenure-signature",
            format!(
                "{},{}",
                signature::sign_generic_v2(SECRET.as_bytes(), now, "hr-7", &body),
                signature::sign_generic(SECRET.as_bytes(), now, &body)
            ),
        )
        .body(Body::from(body.clone()))?;
    let (status, _) = send(&app, req).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(stored(&bus, INGEST_STREAM).await?, 1);
    Ok(())
}

#[tokio::test]
async fn v1_signatures_are_counted_and_can_be_refused() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    let state = Arc::new(IngestState::generic(
        bus.clone(),
        SECRET,
        4096,
        Arc::new(Utc::now),
    ));
    let app = router(state.clone());
    let body = serde_json::to_vec(&record())?;
    let now = Utc::now().timestamp();
    let (status, _) = send(&app, signed(&body, "v1-a", now, SECRET)).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = send(&app, signed_v2(&body, "v2-a", "v2-a", now)).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, counters) = send(&app, Request::get("/stats").body(Body::empty())?).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(counters["signature_v1_accepted"], 1, "{counters}");

    let mut strict = IngestState::generic(bus.clone(), SECRET, 4096, Arc::new(Utc::now));
    strict.accept_v1 = false;
    let app = router(Arc::new(strict));
    let (status, e) = send(&app, signed(&body, "v1-b", now, SECRET)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{e}");
    assert!(
        e["message"].as_str().unwrap_or("").contains("accept_v1"),
        "{e}"
    );
    let (status, _) = send(&app, signed_v2(&body, "v2-b", "v2-b", now)).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    Ok(())
}

#[tokio::test]
async fn trailing_bytes_after_the_record_are_malformed_json() -> anyhow::Result<()> {
    let (_nats, bus, app) = setup().await?;
    let mut body = serde_json::to_vec(&record())?;
    body.extend_from_slice(b"xyz");
    let (status, e) = send(&app, signed(&body, "t-1", Utc::now().timestamp(), SECRET)).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"], "malformed_json");
    assert_eq!(stored(&bus, INGEST_STREAM).await?, 0);
    Ok(())
}

/// Ingest on a real loopback listener (client addresses, limits).
async fn listen(
    state: Arc<IngestState>,
) -> anyhow::Result<(String, tokio_util::sync::CancellationToken)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(tenure_http::serve(
        "ingest",
        listener,
        router(state),
        tenure_http::Limits::default(),
        stop.clone(),
    ));
    Ok((base, stop))
}

#[tokio::test]
async fn two_thousand_forged_posts_cannot_evict_genuine_quarantine_entries() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    let mut state = IngestState::generic(bus.clone(), SECRET, 64 * 1024, Arc::new(Utc::now));
    // Gusto before its secret is configured: the setup call is the only
    // place the verification token exists.
    state.add_source(tenure_ingest::SourceRuntime::new(
        "gusto",
        tenure_sources::Adapter::new(
            tenure_sources::Kind::Gusto,
            tenure_sources::FieldMapping::default(),
            None,
        ),
        64 * 1024,
    ));
    let state = Arc::new(state);
    let (base, stop) = listen(state.clone()).await?;
    let http = reqwest::Client::new();

    // Genuine entries: the Gusto token, and an authentic record refused
    // for a bad field.
    let token = r#"{"verification_token":"gusto-token-4f1c"}"#;
    let r = http
        .post(format!("{base}/v1/sources/gusto/webhook"))
        .body(token)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    let mut bad = record();
    bad["work_email"] = "not an address".into();
    let bad = serde_json::to_vec(&bad)?;
    let now = Utc::now().timestamp();
    let r = http
        .post(format!("{base}/v1/sources/generic/records"))
        .header("x-tenure-delivery", "genuine-1")
        .header("x-tenure-timestamp", now.to_string())
        .header(
            "x-tenure-signature",
            signature::sign_generic_v2(SECRET.as_bytes(), now, "genuine-1", &bad),
        )
        .body(bad)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 422);
    let genuine = bus.list_quarantine(100).await?;
    assert_eq!(genuine.len(), 2);

    // 2,000 forged posts, 32 at a time: 1,000 with a wrong signature on
    // 60 KiB bodies, 1,000 fake Gusto setup calls.
    let forged_body = vec![b'x'; 60 * 1024];
    use futures::StreamExt;
    let results: Vec<_> = futures::stream::iter((0..2000).map(|i| {
        let http = http.clone();
        let base = base.clone();
        let forged_body = forged_body.clone();
        async move {
            let r = if i % 2 == 0 {
                http.post(format!("{base}/v1/sources/generic/records"))
                    .header("x-tenure-delivery", format!("forged-{i}"))
                    .header("x-tenure-timestamp", Utc::now().timestamp().to_string())
                    .header("x-tenure-signature", "v2=00")
                    .body(forged_body)
            } else {
                http.post(format!("{base}/v1/sources/gusto/webhook"))
                    .body(format!(r#"{{"verification_token":"forged-{i}"}}"#))
            };
            r.send().await.map(|r| r.status().as_u16())
        }
    }))
    .buffer_unordered(32)
    .collect()
    .await;
    let statuses: Vec<u16> = results.into_iter().collect::<Result<_, _>>()?;
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 1000);
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1000);

    // The genuine entries are all still there, the token readable.
    let after = bus.list_quarantine(10_000).await?;
    for g in &genuine {
        let kept = bus
            .quarantined(g.sequence)
            .await?
            .expect("genuine entry kept");
        assert_eq!(kept.payload, g.payload);
    }
    assert!(after.iter().any(|q| q.payload.contains("gusto-token-4f1c")));
    // Forged setup calls reached the quarantine only within the
    // per-client limit (20 a minute by default).
    assert!(after.len() <= 2 + 20, "{} quarantine entries", after.len());
    // Forged signatures: metadata only, within the same limit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rejected = bus.list_rejected(10_000).await?;
    assert!(
        !rejected.is_empty() && rejected.len() <= 20,
        "{}",
        rejected.len()
    );
    assert!(rejected
        .iter()
        .all(|r| r.body_prefix.len() <= 256 && r.body_len == 60 * 1024));
    let stats = state.stats.snapshot();
    assert_eq!(stats.unauthenticated, 2000 + 1, "{stats:?}");
    assert_eq!(
        stats.unauthenticated_recorded + stats.unauthenticated_dropped,
        2000 + 1,
        "{stats:?}"
    );
    assert!(stats.unauthenticated_dropped >= 1960, "{stats:?}");
    stop.cancel();
    Ok(())
}

#[tokio::test]
async fn with_nats_stopped_forged_requests_get_401_at_once_and_genuine_ones_an_honest_503(
) -> anyhow::Result<()> {
    let (nats, bus, app) = setup().await?;
    drop(nats);
    let body = serde_json::to_vec(&record())?;
    let now = Utc::now().timestamp();

    let t = std::time::Instant::now();
    let (status, _) = send(&app, signed(&body, "f-1", now, "wrong")).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "forged request held {:?}",
        t.elapsed()
    );

    let resp = app
        .clone()
        .oneshot(signed_v2(&body, "g-1", "g-1", now))
        .await?;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let e: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?;
    let message = e["message"].as_str().unwrap_or("");
    assert!(message.contains("not confirmed"), "{e}");
    assert!(
        message.contains("retrying with the same delivery id is safe"),
        "{e}"
    );
    drop(bus);
    Ok(())
}
