//! The IdP notification webhook (`POST /v1/idp/{name}/events`) under
//! hostile traffic, on a real loopback listener with a real nats-server and
//! PostgreSQL: forged posts are refused before anything waits on NATS,
//! never reach the quarantine, and are recorded (metadata only) within the
//! same rate limits as the HR webhooks'.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenure_bus::Bus;
use tenure_config::Config;
use tenure_ingest::{identity, router, state_from_config, IngestState};
use tenure_testkit::{NatsServer, TestDb};
use tokio_util::sync::CancellationToken;

const WEBHOOK_TOKEN: &str = "ak-webhook-7d2e";
const MAX_BODY: usize = 96 * 1024;

/// A private directory holding the secrets as files (the environment is
/// shared by the tests running in parallel).
struct Secrets(PathBuf);

impl Secrets {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("tenure-idp-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        for (name, value) in [
            ("scim", "scim-token-1"),
            ("api", "api-token-1"),
            ("webhook", WEBHOOK_TOKEN),
        ] {
            std::fs::write(dir.join(name), value)?;
        }
        Ok(Self(dir))
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Ingest {
    base: String,
    state: Arc<IngestState>,
    stop: CancellationToken,
    _secrets: Secrets,
    _db: TestDb,
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Ingest as `tenure run ingest` mounts it, with two IdPs: "authentik",
/// fully configured, and "legacy", without a `webhook_token` (its
/// notifications cannot be authenticated).
async fn start(bus: &Bus) -> anyhow::Result<Ingest> {
    let secrets = Secrets::new()?;
    let db = TestDb::create().await?;
    let owner = tenure_store::connect(&db.url(), None, 2).await?;
    tenure_store::migrate(&owner).await?;
    owner.close().await;
    let pool = tenure_store::connect(&db.url(), Some("tenure_app"), 4).await?;
    let cfg = Config::parse(
        &format!(
            "[ingest]\nmax_body_bytes = {MAX_BODY}\n\n\
             [[idp]]\nname = \"authentik\"\ntoken = {{ file = \"{scim}\" }}\n\
             api_url = \"http://127.0.0.1:9/api/v3\"\napi_token = {{ file = \"{api}\" }}\n\
             webhook_token = {{ file = \"{webhook}\" }}\n\n\
             [[idp]]\nname = \"legacy\"\ntoken = {{ file = \"{scim}\" }}\n",
            scim = secrets.path("scim"),
            api = secrets.path("api"),
            webhook = secrets.path("webhook"),
        ),
        "idp_notifications.rs",
    )?;
    let state = Arc::new(state_from_config(&cfg, bus.clone())?);
    let stop = CancellationToken::new();
    let (routes, _publishers) = identity::mount(&cfg, pool, state.clone(), stop.clone())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(tenure_http::serve(
        "ingest",
        listener,
        router(state.clone()).merge(routes),
        tenure_http::Limits::default(),
        stop.clone(),
    ));
    Ok(Ingest {
        base,
        state,
        stop,
        _secrets: secrets,
        _db: db,
    })
}

fn notification(event: &str) -> serde_json::Value {
    serde_json::json!({
        "event_pk": event, "action": "model_updated", "model_app": "authentik_core",
        "model_name": "user", "pk": 7, "name": "asilva", "username": "asilva",
    })
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

#[tokio::test]
async fn five_hundred_forged_notifications_leave_the_quarantine_untouched_and_are_counted(
) -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    let ingest = start(&bus).await?;
    let http = client()?;
    let events = format!("{}/v1/idp/authentik/events", ingest.base);

    // Genuine entries: an authentic notification Tenure cannot read, and
    // one to the IdP without a webhook token (kept for the operator).
    let r = http
        .post(&events)
        .bearer_auth(WEBHOOK_TOKEN)
        .body(r#"{"hello": "genuine-400"}"#)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 400, "{}", r.text().await?);
    let r = http
        .post(format!("{}/v1/idp/legacy/events", ingest.base))
        .body(r#"{"username": "genuine-422"}"#)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 422, "{}", r.text().await?);
    let genuine = bus.list_quarantine(100).await?;
    assert_eq!(genuine.len(), 2, "{genuine:?}");

    // 500 forged posts, 32 at a time, bodies close to the size limit: a
    // wrong token, no Authorization at all, another scheme.
    let forged_body = vec![b'x'; 64 * 1024];
    use futures::StreamExt;
    let started = Instant::now();
    let answers: Vec<_> = futures::stream::iter((0..500).map(|i| {
        let (http, events, body) = (http.clone(), events.clone(), forged_body.clone());
        async move {
            let r = http.post(&events).body(body);
            let r = match i % 3 {
                0 => r.bearer_auth(format!("forged-{i}")),
                1 => r,
                _ => r.basic_auth("admin", Some(WEBHOOK_TOKEN)),
            };
            let r = r.send().await?;
            let www = r.headers().get("www-authenticate").cloned();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await?;
            anyhow::Ok((status, www, body))
        }
    }))
    .buffer_unordered(32)
    .collect()
    .await;
    let elapsed = started.elapsed();
    for answer in answers {
        let (status, www, body) = answer?;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid_token", "{body}");
        assert_eq!(www.as_ref().and_then(|v| v.to_str().ok()), Some("Bearer"));
    }

    // The quarantine holds exactly the genuine entries, unchanged.
    let after = bus.list_quarantine(10_000).await?;
    assert_eq!(
        after.iter().map(|q| q.sequence).collect::<Vec<_>>(),
        genuine.iter().map(|q| q.sequence).collect::<Vec<_>>(),
        "forged notifications reached the quarantine"
    );
    for g in &genuine {
        let kept = bus.quarantined(g.sequence).await?.expect("genuine entry");
        assert_eq!(kept.payload, g.payload);
    }

    // Forged posts: metadata only, within the per-client limit (20 a
    // minute by default, one of which the unverifiable 422 used), in
    // the store of requests refused before authentication.
    let deadline = Instant::now() + Duration::from_secs(5);
    let rejected = loop {
        let got = bus.list_rejected(10_000).await?;
        let recorded = ingest.state.stats.snapshot().unauthenticated_recorded;
        // Recording is in the background: wait until the store has
        // everything the counter says was recorded.
        if got.len() as u64 + 1 >= recorded || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !rejected.is_empty() && rejected.len() <= 20,
        "{} rejected entries",
        rejected.len()
    );
    for r in &rejected {
        assert_eq!(r.source, "idp:authentik");
        assert_eq!(r.status, 401);
        assert!(r.reason.starts_with("invalid_token"), "{}", r.reason);
        assert_eq!(r.body_len, 64 * 1024);
        assert!(r.body_prefix.len() <= 256);
        assert!(r.client.starts_with("127.0.0.1:"), "{}", r.client);
        assert!(
            r.headers
                .iter()
                .all(|(n, v)| n != "authorization" && !v.contains(WEBHOOK_TOKEN)),
            "a token was kept: {:?}",
            r.headers
        );
    }

    // Every forged post is counted, recorded or dropped, and `/stats`
    // shows it; the unverifiable 422 is counted with them.
    let stats: serde_json::Value = http
        .get(format!("{}/stats", ingest.base))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(stats["unauthenticated"], 501, "{stats}");
    let recorded = stats["unauthenticated_recorded"].as_u64().unwrap_or(0);
    let dropped = stats["unauthenticated_dropped"].as_u64().unwrap_or(0);
    assert_eq!(recorded + dropped, 501, "{stats}");
    assert_eq!(recorded, rejected.len() as u64 + 1, "{stats}");
    assert!(dropped >= 480, "{stats}");

    // Nothing was queued for re-fetching.
    let mut fetch = bus.js.get_stream(tenure_bus::IDP_FETCH_STREAM).await?;
    assert_eq!(fetch.info().await?.state.messages, 0);
    eprintln!("500 forged notifications answered in {elapsed:?}");
    drop(nats);
    Ok(())
}

#[tokio::test]
async fn with_nats_stopped_a_forged_notification_gets_401_at_once_and_a_genuine_one_an_honest_503(
) -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    let ingest = start(&bus).await?;
    let http = client()?;
    let events = format!("{}/v1/idp/authentik/events", ingest.base);
    drop(nats);

    let body = serde_json::to_vec(&notification("ev-outage-1"))?;
    let t = Instant::now();
    let r = http
        .post(&events)
        .bearer_auth("wrong")
        .body(body.clone())
        .send()
        .await?;
    let held = t.elapsed();
    assert_eq!(r.status().as_u16(), 401);
    assert!(
        held < Duration::from_secs(1),
        "forged request held {held:?}"
    );
    // Several more, beyond the bound on recordings in flight: none waits.
    let t = Instant::now();
    for i in 0..40 {
        let r = http
            .post(&events)
            .bearer_auth(format!("wrong-{i}"))
            .body(body.clone())
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 401);
    }
    let forty = t.elapsed();
    assert!(
        forty < Duration::from_secs(4),
        "40 forged requests took {forty:?}"
    );
    eprintln!(
        "with NATS stopped: a forged notification answered in {held:?}, 40 more in {forty:?}"
    );

    let r = http
        .post(&events)
        .bearer_auth(WEBHOOK_TOKEN)
        .body(body)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let e: serde_json::Value = r.json().await?;
    let message = e["message"].as_str().unwrap_or("");
    assert!(message.contains("not confirmed"), "{e}");
    assert!(message.contains("retrying is safe"), "{e}");
    let stats = ingest.state.stats.snapshot();
    assert_eq!(stats.unauthenticated, 41, "{stats:?}");
    assert_eq!(
        stats.unauthenticated_recorded + stats.unauthenticated_dropped,
        41
    );
    Ok(())
}

#[tokio::test]
async fn a_notification_over_the_size_limit_is_refused_whether_its_length_is_declared_or_not(
) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    let ingest = start(&bus).await?;
    let events = format!("{}/v1/idp/authentik/events", ingest.base);
    let big = vec![b'x'; MAX_BODY + 1];

    // With Content-Length: refused on the declared length.
    let r = client()?
        .post(&events)
        .bearer_auth(WEBHOOK_TOKEN)
        .body(big.clone())
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 413);
    let e: serde_json::Value = r.json().await?;
    assert_eq!(e["error"], "payload_too_large", "{e}");

    // Chunked, no length declared: refused once the read passes the limit.
    let addr = ingest.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST /v1/idp/authentik/events HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {WEBHOOK_TOKEN}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await?;
    for chunk in big.chunks(16 * 1024) {
        // The server may answer and close before the whole body is sent.
        if conn
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .is_err()
            || conn.write_all(chunk).await.is_err()
            || conn.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    drop(nats);
    Ok(())
}
