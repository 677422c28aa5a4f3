//! The identity outbox relay never lets one row hold up the rest: a row
//! that cannot be published (too large for the server, unreadable, or
//! refused over and over) is dead-lettered and removed, and the rows behind
//! it go on; while JetStream refuses everything, nothing is lost. Real
//! PostgreSQL and a real nats-server.

use std::time::Duration;
use tenure_bus::dlq::DeadEntry;
use tenure_bus::{Bus, INGEST_STREAM};
use tenure_ingest::identity::{publish_pending_with, Relay};
use tenure_store::sqlx::{self, PgPool};
use tenure_testkit::{NatsServer, TestDb};

const PROVIDER: &str = "ak";

async fn setup() -> anyhow::Result<(TestDb, NatsServer, PgPool, Bus)> {
    let db = TestDb::create().await?;
    let owner = tenure_store::connect(&db.url(), None, 2).await?;
    tenure_store::migrate(&owner).await?;
    owner.close().await;
    let pool = tenure_store::connect(&db.url(), Some("tenure_app"), 4).await?;
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    Ok((db, nats, pool, bus))
}

/// Writes an outbox row as the SCIM endpoint would; `display_name` sets its size.
async fn row(pool: &PgPool, user_name: &str, display_name: &str) -> anyhow::Result<i64> {
    let id = uuid::Uuid::new_v4();
    let snapshot = serde_json::json!({
        "provider": PROVIDER, "idp_id": id.to_string(), "user_name": user_name,
        "emails": [format!("{user_name}@example.com")], "display_name": display_name,
        "active": true, "groups": []
    });
    Ok(sqlx::query_scalar(
        "INSERT INTO idp_scim_outbox (provider, user_id, snapshot) VALUES ($1, $2, $3) RETURNING seq",
    )
    .bind(PROVIDER)
    .bind(id)
    .bind(snapshot)
    .fetch_one(pool)
    .await?)
}

async fn outbox(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM idp_scim_outbox")
        .fetch_one(pool)
        .await?)
}

async fn published(bus: &Bus) -> anyhow::Result<Vec<String>> {
    let stream = bus.js.get_stream(INGEST_STREAM).await?;
    let mut names = Vec::new();
    let mut seq = 1;
    while let Ok(m) = stream.get_raw_message(seq).await {
        let env: tenure_bus::IdentityEnvelope = serde_json::from_slice(&m.payload)?;
        names.push(env.identity.user_name);
        seq += 1;
    }
    Ok(names)
}

#[tokio::test]
async fn a_snapshot_too_large_to_publish_is_dead_lettered_and_the_rows_behind_it_go_on(
) -> anyhow::Result<()> {
    let (_db, _nats, pool, bus) = setup().await?;
    row(&pool, "first", "First").await?;
    let big = row(&pool, "huge", &"x".repeat(2 * 1024 * 1024)).await?;
    row(&pool, "after", "After").await?;
    // An unreadable row (an older or foreign shape) is no obstacle either.
    sqlx::query(
        "INSERT INTO idp_scim_outbox (provider, user_id, snapshot) VALUES ($1, $2, '{\"nonsense\": true}')",
    )
    .bind(PROVIDER)
    .bind(uuid::Uuid::new_v4())
    .execute(&pool)
    .await?;
    row(&pool, "last", "Last").await?;

    let mut relay = Relay::default();
    assert_eq!(
        publish_pending_with(&pool, &bus, PROVIDER, &mut relay).await?,
        5
    );
    assert_eq!(outbox(&pool).await?, 0);
    assert_eq!(published(&bus).await?, vec!["first", "after", "last"]);
    let dead = bus.list_dead_messages(Some("idp-relay-ak"), 10).await?;
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(
        dead[0].message.origin,
        format!("idp_scim_outbox:{PROVIDER}:{big}")
    );
    assert_eq!(dead[0].message.subject, "tenure.identity.ak");
    assert!(dead[0].message.payload_truncated);
    assert!(
        dead[0].message.error.contains("'huge'") && dead[0].message.error.contains("at most"),
        "{}",
        dead[0].message.error
    );
    assert!(dead[1].message.error.contains("not an identity snapshot"));
    Ok(())
}

#[tokio::test]
async fn a_row_jetstream_keeps_refusing_is_dead_lettered_after_bounded_attempts_and_can_be_redriven(
) -> anyhow::Result<()> {
    let (_db, nats, pool, bus) = setup().await?;
    row(&pool, "stuck", "Stuck").await?;
    row(&pool, "next", "Next").await?;
    // No stream takes identity snapshots: every publish is refused.
    bus.js.delete_stream(INGEST_STREAM).await?;
    let mut relay = Relay::default();
    for attempt in 1..8 {
        assert!(
            publish_pending_with(&pool, &bus, PROVIDER, &mut relay)
                .await
                .is_err(),
            "attempt {attempt} fails and keeps the order"
        );
        assert_eq!(outbox(&pool).await?, 2);
    }
    // The eighth refusal of the same row gives it up; the next row is tried.
    assert_eq!(
        publish_pending_with(&pool, &bus, PROVIDER, &mut relay).await?,
        1
    );
    assert_eq!(outbox(&pool).await?, 1);
    let all = bus.list_dead(&Default::default(), 10).await?;
    let [DeadEntry::Message(dead)] = all.as_slice() else {
        panic!("one dead message expected: {all:?}");
    };
    assert_eq!(dead.message.deliveries, 8);
    assert!(!dead.message.payload_truncated);

    // JetStream is back (streams made again on connect): the rest goes on,
    // and the dead letter is redriven to where it belongs, in full.
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    assert_eq!(
        publish_pending_with(&pool, &bus, PROVIDER, &mut relay).await?,
        1
    );
    assert_eq!(outbox(&pool).await?, 0);
    bus.redrive_any(dead.sequence, 8).await?;
    assert_eq!(published(&bus).await?, vec!["next", "stuck"]);
    Ok(())
}
