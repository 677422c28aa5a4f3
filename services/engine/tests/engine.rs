//! The engine shell on a fresh PostgreSQL database and a private JetStream.

use chrono::{TimeZone, Utc};
use std::time::Duration;
use tenure_bus::{Bus, IngestEnvelope, JOBS_STREAM};
use tenure_domain::{AppPolicy, Context, Policy, ScopeFilter, SourceRecord, TerminationPolicy};
use tenure_engine::{apply_envelope, relay, Applied, Engine};
use tenure_store::sqlx::PgPool;
use tenure_testkit::{NatsServer, TestDb};
use uuid::Uuid;

async fn db() -> anyhow::Result<(TestDb, PgPool)> {
    let db = TestDb::create().await?;
    let owner = tenure_store::connect(&db.url(), None, 2).await?;
    tenure_store::migrate(&owner).await?;
    owner.close().await;
    let pool = tenure_store::connect(&db.url(), Some("tenure_app"), 4).await?;
    Ok((db, pool))
}

fn apps() -> Engine {
    let mut git = AppPolicy::new("git");
    git.scope = Some(ScopeFilter {
        attribute: "department".into(),
        values: vec!["Engineering".into()],
    });
    git.on_termination = TerminationPolicy::Delete;
    Engine {
        ctx: Context {
            policy: Policy::default(),
            apps: vec![AppPolicy::new("wiki"), git],
        },
        partitions: 4,
        snapshot_every: 50,
        correlation: Default::default(),
    }
}

fn envelope(delivery: &str, status: &str, dept: &str, hour: u32) -> anyhow::Result<IngestEnvelope> {
    let record: SourceRecord = serde_json::from_value(serde_json::json!({
        "person_id": "E-7", "given_name": "Bo", "family_name": "Berg",
        "work_email": "bo@example.com", "employment_status": status, "department": dept,
        "start_date": "2026-01-05", "effective_at": format!("2026-01-05T{hour:02}:00:00Z")
    }))?;
    Ok(IngestEnvelope {
        source: "generic".into(),
        delivery_id: delivery.into(),
        received_at: Utc::now(),
        correlation_id: Uuid::new_v4(),
        record,
    })
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 1, 12, 0, 0)
        .single()
        .expect("time")
}

#[tokio::test]
async fn records_become_events_projection_and_jobs_in_one_transaction() -> anyhow::Result<()> {
    let (_db, pool) = db().await?;
    let hire = envelope("d-1", "active", "Engineering", 9)?;
    let applied = apply_envelope(&pool, &apps(), &hire, now()).await?;
    let Applied::Recorded {
        person_id,
        events,
        jobs,
    } = applied
    else {
        panic!("expected a recording")
    };
    assert_eq!(
        events,
        [
            "SourceRecordReceived",
            "PersonHired",
            "EntitlementChanged",
            "EntitlementChanged"
        ]
    );
    assert_eq!(jobs, ["wiki", "git"]);

    let status: String =
        tenure_store::sqlx::query_scalar("SELECT status FROM persons WHERE person_id = $1")
            .bind(person_id)
            .fetch_one(&pool)
            .await?;
    assert_eq!(status, "active");
    let outbox: i64 = tenure_store::sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await?;
    assert_eq!(outbox, 2);

    // The same delivery again (JetStream redelivery) adds nothing.
    assert_eq!(
        apply_envelope(&pool, &apps(), &hire, now()).await?,
        Applied::AlreadyProcessed
    );
    let stream = tenure_store::read_stream(&pool, &format!("person-{person_id}")).await?;
    assert_eq!(stream.len(), 4);
    assert_eq!(
        stream[1].metadata.causation_id,
        Some(stream[0].event_id),
        "the decision points at the record"
    );
    assert_eq!(stream[0].metadata.correlation_id, hire.correlation_id);

    // A move changes the wiki account's department and takes the person out of git's scope.
    let moved = envelope("d-2", "active", "Sales", 10)?;
    let Applied::Recorded { events, jobs, .. } =
        apply_envelope(&pool, &apps(), &moved, now()).await?
    else {
        panic!("expected a recording")
    };
    assert_eq!(
        events,
        [
            "SourceRecordReceived",
            "AttributesChanged",
            "EntitlementChanged"
        ]
    );
    assert_eq!(jobs, ["wiki", "git"]);

    // A record that changes nothing for anyone sends no jobs.
    let same = envelope("d-3", "active", "Sales", 11)?;
    let Applied::Recorded { events, jobs, .. } =
        apply_envelope(&pool, &apps(), &same, now()).await?
    else {
        panic!("expected a recording")
    };
    assert_eq!(events, ["SourceRecordReceived"]);
    assert!(jobs.is_empty());
    Ok(())
}

#[tokio::test]
async fn concurrent_engines_on_one_person_serialise_through_version_conflicts() -> anyhow::Result<()>
{
    let (_db, pool) = db().await?;
    let a = envelope("d-a", "active", "Engineering", 9)?;
    let b = envelope("d-b", "active", "Sales", 10)?;
    let apps = apps();
    let (ra, rb) = tokio::join!(
        apply_envelope(&pool, &apps, &a, now()),
        apply_envelope(&pool, &apps, &b, now())
    );
    let conflicts = [&ra, &rb]
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(tenure_engine::process::ProcessError::Store(
                    tenure_store::StoreError::Conflict { .. }
                ))
            )
        })
        .count();
    assert!(conflicts <= 1);
    // The loser retries, as the consumer loop does, and both records end up in one stream.
    for (r, env) in [(ra, &a), (rb, &b)] {
        if r.is_err() {
            apply_envelope(&pool, &apps, env, now()).await?;
        }
    }
    let n: i64 = tenure_store::sqlx::query_scalar("SELECT count(DISTINCT stream_id) FROM events")
        .fetch_one(&pool)
        .await?;
    assert_eq!(n, 1);
    let received: i64 = tenure_store::sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'SourceRecordReceived'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(received, 2);
    Ok(())
}

#[tokio::test]
async fn relay_publishes_outbox_with_message_ids_and_empties_it() -> anyhow::Result<()> {
    let (_db, pool) = db().await?;
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    apply_envelope(
        &pool,
        &apps(),
        &envelope("d-1", "active", "Engineering", 9)?,
        now(),
    )
    .await?;
    assert_eq!(relay::publish_batch(&pool, &bus).await?, 2);
    assert_eq!(relay::publish_batch(&pool, &bus).await?, 0);
    let mut s = bus.js.get_stream(JOBS_STREAM).await?;
    assert_eq!(s.info().await?.state.messages, 2);
    let m = s.get_raw_message(1).await?;
    let job: tenure_bus::Job = serde_json::from_slice(&m.payload)?;
    assert!(["wiki", "git"].contains(&job.app.as_str()));
    let msg_id = m
        .headers
        .get("Nats-Msg-Id")
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    assert!(msg_id.starts_with("job:"), "{msg_id}");
    Ok(())
}
