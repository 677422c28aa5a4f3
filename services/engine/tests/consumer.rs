//! The engine's consumer on a private JetStream and a fresh database: a
//! record the database refuses is dead-lettered once and never loops, and
//! the records behind it are applied.

use chrono::Utc;
use std::time::{Duration, Instant};
use tenure_bus::{subjects, Bus, IngestEnvelope, INGEST_STREAM};
use tenure_domain::SourceRecord;
use tenure_engine::process::person_id_for;
use tenure_store::sqlx::{self, PgPool};
use tenure_testkit::{NatsServer, TestDb};
use uuid::Uuid;

async fn db() -> anyhow::Result<(TestDb, PgPool)> {
    db_with("").await
}

/// A fresh database with `setup` run by its owner after the migrations.
async fn db_with(setup: &str) -> anyhow::Result<(TestDb, PgPool)> {
    let db = TestDb::create().await?;
    let owner = tenure_store::connect(&db.url(), None, 2).await?;
    tenure_store::migrate(&owner).await?;
    if !setup.is_empty() {
        sqlx::raw_sql(setup).execute(&owner).await?;
    }
    owner.close().await;
    let pool = tenure_store::connect(&db.url(), Some("tenure_app"), 8).await?;
    Ok((db, pool))
}

fn envelope(person: &str, email: &str, delivery: &str) -> anyhow::Result<IngestEnvelope> {
    let record: SourceRecord = serde_json::from_value(serde_json::json!({
        "person_id": person, "given_name": "Bo", "family_name": "Berg",
        "work_email": email, "employment_status": "active",
        "start_date": "2026-01-05", "effective_at": "2026-01-05T09:00:00Z"
    }))?;
    Ok(IngestEnvelope {
        source: "generic".into(),
        delivery_id: delivery.into(),
        received_at: Utc::now(),
        correlation_id: Uuid::new_v4(),
        record,
    })
}

async fn publish(bus: &Bus, env: &IngestEnvelope) -> anyhow::Result<()> {
    bus.publish(
        &subjects::ingest(&env.source),
        &env.msg_id(),
        &[],
        serde_json::to_vec(env)?.into(),
    )
    .await?;
    Ok(())
}

async fn listed(pool: &PgPool, person: &str) -> anyhow::Result<bool> {
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM persons WHERE person_id = $1")
            .bind(person_id_for("generic", person))
            .fetch_one(pool)
            .await?
            > 0,
    )
}

fn start_engine(
    pool: &PgPool,
    bus: &Bus,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let cfg = tenure_config::Config::parse(
        "[engine]\nworkers = 2\nmax_deliver = 3\nredeliver_after_secs = 1\n",
        "test",
    )?;
    let (pool, bus, stop) = (pool.clone(), bus.clone(), stop.clone());
    Ok(tokio::spawn(async move {
        tenure_engine::run(&cfg, pool, bus, stop, tenure_engine::Clock::system()).await
    }))
}

#[tokio::test]
async fn a_record_the_database_refuses_is_dead_lettered_once_and_later_records_apply(
) -> anyhow::Result<()> {
    let (_db, pool) = db().await?;
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let engine = start_engine(&pool, &bus, &stop)?;

    // An e-mail far larger than an index entry may be (and not one that
    // compresses to fit): the insert into the persons projection fails on
    // every attempt.
    let local: String = (0..300)
        .map(|_| Uuid::new_v4().simple().to_string())
        .collect();
    let huge = format!("{}@example.com", &local[..9_000]);
    publish(&bus, &envelope("E-poison", &huge, "d-poison")?).await?;
    publish(&bus, &envelope("E-ok", "ok@example.com", "d-ok")?).await?;

    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = bus.list_dead_messages(Some("engine"), 10).await?;
        if !dead.is_empty() && listed(&pool, "E-ok").await? {
            break dead;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no dead letter or E-ok not applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter = &dead[0].message;
    assert_eq!(letter.subject, "tenure.ingest.generic");
    assert_eq!(
        letter.deliveries, 1,
        "a permanent error is not retried: {letter:?}"
    );
    assert!(letter.error.starts_with("refused:"), "{}", letter.error);
    assert!(!listed(&pool, "E-poison").await?);

    // Longer than the redelivery wait: it does not come back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut consumer = bus
        .js
        .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
            "engine",
            INGEST_STREAM,
        )
        .await?;
    let info = consumer.info().await?;
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    assert_eq!(bus.list_dead_messages(Some("engine"), 10).await?.len(), 1);
    assert!(info.config.max_deliver > 0, "the consumer is bounded");

    stop.cancel();
    engine.await??;
    Ok(())
}

#[tokio::test]
async fn a_record_that_keeps_failing_is_retried_with_backoff_then_dead_lettered(
) -> anyhow::Result<()> {
    // The database keeps failing for one person as it would while a
    // replica fails over: an error class that is worth retrying.
    let (_db, pool) = db_with(
        "CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.source_person_id = 'E-flaky' THEN
                 RAISE EXCEPTION 'connection lost' USING ERRCODE = '08006';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER flaky BEFORE INSERT ON persons FOR EACH ROW EXECUTE FUNCTION flaky();",
    )
    .await?;
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let engine = start_engine(&pool, &bus, &stop)?;
    let started = Instant::now();
    publish(&bus, &envelope("E-flaky", "flaky@example.com", "d-flaky")?).await?;
    publish(&bus, &envelope("E-ok", "ok@example.com", "d-ok")?).await?;

    let deadline = Instant::now() + Duration::from_secs(60);
    while !listed(&pool, "E-ok").await? {
        anyhow::ensure!(Instant::now() < deadline, "E-ok not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ok_after = started.elapsed();
    let dead = loop {
        let dead = bus.list_dead_messages(Some("engine"), 10).await?;
        if !dead.is_empty() {
            break dead;
        }
        anyhow::ensure!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dead_after = started.elapsed();
    assert!(
        ok_after < Duration::from_secs(2),
        "the other person did not wait for the retries: {ok_after:?}"
    );
    let letter = &dead[0].message;
    assert_eq!(letter.deliveries, 3, "{letter:?}");
    assert!(
        letter.error.starts_with("failed 3 deliveries") && letter.error.contains("connection lost"),
        "{}",
        letter.error
    );
    // Waits of 1 s and then 2 s between the three deliveries.
    assert!(dead_after >= Duration::from_secs(3), "{dead_after:?}");
    assert!(!listed(&pool, "E-flaky").await?);

    stop.cancel();
    engine.await??;
    Ok(())
}

#[tokio::test]
async fn a_busy_person_does_not_hold_up_others_and_keeps_its_order() -> anyhow::Result<()> {
    let (_db, pool) = db().await?;
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    // Everything is waiting in the stream before the engine starts, the
    // busy person's 300 records ahead of the hire.
    for i in 0..300 {
        let mut env = envelope("E-busy", "busy@example.com", &format!("d-{i}"))?;
        env.record.title = Some(format!("Title {i}"));
        publish(&bus, &env).await?;
    }
    publish(&bus, &envelope("E-hire", "hire@example.com", "d-hire")?).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let engine = start_engine(&pool, &bus, &stop)?;

    let busy = person_id_for("generic", "E-busy");
    let received = || async {
        anyhow::Ok(
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = 'SourceRecordReceived'",
            )
            .bind(format!("person-{busy}"))
            .fetch_one(&pool)
            .await?,
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !listed(&pool, "E-hire").await? {
        anyhow::ensure!(Instant::now() < deadline, "the hire was not applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before_hire = received().await?;
    assert!(
        before_hire < 100,
        "the hire waited for {before_hire} of the busy person's records"
    );
    while received().await? < 300 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the busy person's records were not all applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One person's records are applied in the order they were delivered.
    let order: Vec<String> = sqlx::query_scalar(
        "SELECT data->>'delivery_id' FROM events
         WHERE stream_id = $1 AND event_type = 'SourceRecordReceived' ORDER BY version",
    )
    .bind(format!("person-{busy}"))
    .fetch_all(&pool)
    .await?;
    let expected: Vec<String> = (0..300).map(|i| format!("d-{i}")).collect();
    assert_eq!(order, expected);

    stop.cancel();
    engine.await??;
    Ok(())
}
