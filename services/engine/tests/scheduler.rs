//! The durable scheduler and periodic tasks on a fresh PostgreSQL database,
//! driven by explicit instants instead of the wall clock.

use chrono::{DateTime, Utc};
use std::str::FromStr;
use tenure_bus::IngestEnvelope;
use tenure_domain::{AppPolicy, Context, Policy};
use tenure_engine::scheduler::{fire_due, run_cron, CronAction, CronTask};
use tenure_engine::{apply_envelope, Engine};
use tenure_store::sqlx::{self, PgPool};
use tenure_testkit::TestDb;
use uuid::Uuid;

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("instant")
}

async fn db() -> anyhow::Result<(TestDb, PgPool)> {
    let db = TestDb::create().await?;
    let owner = tenure_store::connect(&db.url(), None, 2).await?;
    tenure_store::migrate(&owner).await?;
    owner.close().await;
    let pool = tenure_store::connect(&db.url(), Some("tenure_app"), 8).await?;
    Ok((db, pool))
}

fn engine() -> Engine {
    Engine {
        ctx: Context {
            policy: Policy {
                default_tz: chrono_tz::Europe::Berlin,
                ..Policy::default()
            },
            apps: vec![AppPolicy::new("wiki")],
        },
        partitions: 4,
        snapshot_every: 50,
        correlation: Default::default(),
    }
}

fn envelope(
    person: &str,
    delivery: &str,
    extra: serde_json::Value,
) -> anyhow::Result<IngestEnvelope> {
    let mut v = serde_json::json!({
        "person_id": person, "given_name": "Ana", "family_name": person,
        "work_email": format!("{}@example.com", person.to_lowercase()), "employment_status": "active",
        "start_date": "2026-03-03", "effective_at": "2026-02-01T09:00:00Z"
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    Ok(IngestEnvelope {
        source: "generic".into(),
        delivery_id: delivery.into(),
        received_at: Utc::now(),
        correlation_id: Uuid::new_v4(),
        record: serde_json::from_value(v)?,
    })
}

async fn count(pool: &PgPool, sql: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}

#[tokio::test]
async fn catch_up_after_an_outage_fires_every_transition_in_due_order() -> anyhow::Result<()> {
    let (_db, pool) = db().await?;
    let e = engine();
    let env = envelope("E-1", "d1", serde_json::json!({"end_date": "2026-03-31"}))?;
    apply_envelope(&pool, &e, &env, utc("2026-02-01T09:00:00Z")).await?;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM schedules WHERE kind IN ('start', 'termination')"
        )
        .await?,
        2
    );

    // Nothing is due yet; then the engine comes back in May.
    assert_eq!(fire_due(&pool, &e, utc("2026-03-02T22:59:59Z")).await?, 0);
    assert_eq!(fire_due(&pool, &e, utc("2026-05-01T00:00:00Z")).await?, 1);
    let events = tenure_store::read_stream(
        &pool,
        &format!(
            "person-{}",
            tenure_engine::process::person_id_for("generic", "E-1")
        ),
    )
    .await?;
    let fired: Vec<(&str, Option<DateTime<Utc>>)> = events
        .iter()
        .filter(|ev| ev.metadata.actor == "scheduler")
        .map(|ev| (ev.event_type.as_str(), ev.metadata.effective_at))
        .collect();
    assert_eq!(
        fired,
        [
            ("PersonHired", Some(utc("2026-03-02T23:00:00Z"))),
            ("EntitlementChanged", Some(utc("2026-03-02T23:00:00Z"))),
            ("PersonTerminated", Some(utc("2026-03-31T22:00:00Z"))),
            ("EntitlementChanged", Some(utc("2026-03-31T22:00:00Z"))),
        ]
    );
    // Scheduler-fired events are caused by, and correlated with, the record.
    let record = &events[0];
    for ev in events.iter().filter(|ev| ev.metadata.actor == "scheduler") {
        assert_eq!(ev.metadata.causation_id, Some(record.event_id));
        assert_eq!(ev.metadata.correlation_id, env.correlation_id);
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM schedules").await?, 0);
    assert_eq!(
        fire_due(&pool, &e, utc("2026-06-01T00:00:00Z")).await?,
        0,
        "nothing fires twice"
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_schedulers_fire_each_due_transition_exactly_once() -> anyhow::Result<()> {
    let (_db, pool) = db().await?;
    let e = engine();
    for i in 0..40 {
        apply_envelope(
            &pool,
            &e,
            &envelope(&format!("E-{i}"), &format!("d{i}"), serde_json::json!({}))?,
            utc("2026-02-01T09:00:00Z"),
        )
        .await?;
    }
    let at = utc("2026-03-03T00:00:00Z");
    let (a, b, c) = tokio::join!(
        fire_due(&pool, &e, at),
        fire_due(&pool, &e, at),
        fire_due(&pool, &e, at)
    );
    let fired = a? + b? + c?;
    assert!(fired >= 40, "every person was ticked ({fired})");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE event_type = 'PersonHired'"
        )
        .await?,
        40
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM outbox").await?,
        40,
        "one job per person for the one app"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM schedules").await?, 0);
    Ok(())
}

#[tokio::test]
async fn several_pending_changes_coexist_and_apply_in_order() -> anyhow::Result<()> {
    let (_db, pool) = db().await?;
    let e = engine();
    let now = utc("2026-06-01T09:00:00Z");
    apply_envelope(
        &pool,
        &e,
        &envelope("E-1", "d1", serde_json::json!({"start_date": "2026-01-05"}))?,
        now,
    )
    .await?;
    // A move on 1 July and a promotion on 1 August, sent in reverse order.
    let promo = serde_json::json!({"start_date": "2026-01-05", "department": "Sales", "title": "Lead", "effective_date": "2026-08-01", "effective_at": "2026-06-01T09:00:00Z"});
    let mover = serde_json::json!({"start_date": "2026-01-05", "department": "Sales", "effective_date": "2026-07-01", "effective_at": "2026-06-01T08:00:00Z"});
    apply_envelope(&pool, &e, &envelope("E-1", "d3", promo)?, now).await?;
    apply_envelope(&pool, &e, &envelope("E-1", "d2", mover)?, now).await?;
    let due: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT due_at FROM schedules WHERE kind = 'record' ORDER BY due_at")
            .fetch_all(&pool)
            .await?;
    assert_eq!(
        due,
        [utc("2026-06-30T22:00:00Z"), utc("2026-07-31T22:00:00Z")]
    );
    let dept = |pool: PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT coalesce(attributes->>'department', '-') || '/' || coalesce(attributes->>'title', '-') FROM persons",
        )
        .fetch_one(&pool)
        .await
    };
    assert_eq!(dept(pool.clone()).await?, "-/-");
    fire_due(&pool, &e, utc("2026-07-15T00:00:00Z")).await?;
    assert_eq!(dept(pool.clone()).await?, "Sales/-");
    fire_due(&pool, &e, utc("2026-08-15T00:00:00Z")).await?;
    assert_eq!(dept(pool.clone()).await?, "Sales/Lead");
    Ok(())
}

#[tokio::test]
async fn a_periodic_task_that_missed_runs_runs_once() -> anyhow::Result<()> {
    let (_db, pool) = db().await?;
    let e = engine();
    for i in 0..3 {
        apply_envelope(
            &pool,
            &e,
            &envelope(
                &format!("E-{i}"),
                &format!("d{i}"),
                serde_json::json!({"start_date": "2026-01-05"}),
            )?,
            utc("2026-02-01T09:00:00Z"),
        )
        .await?;
    }
    sqlx::query("DELETE FROM outbox").execute(&pool).await?;
    let tasks = vec![CronTask {
        name: "reconcile:wiki".into(),
        schedule: cron::Schedule::from_str("0 0 * * * *")?,
        action: CronAction::Reconcile { app: "wiki".into() },
    }];
    let t0 = utc("2026-02-01T10:15:00Z");
    assert!(
        run_cron(&pool, &e, &tasks, t0).await?.is_empty(),
        "first sight starts the clock"
    );
    assert!(run_cron(&pool, &e, &tasks, utc("2026-02-01T10:59:59Z"))
        .await?
        .is_empty());
    // Down from 11:00 until 16:30: five runs were missed, one happens.
    assert_eq!(
        run_cron(&pool, &e, &tasks, utc("2026-02-01T16:30:00Z")).await?,
        ["reconcile:wiki"]
    );
    assert!(run_cron(&pool, &e, &tasks, utc("2026-02-01T16:30:01Z"))
        .await?
        .is_empty());
    assert_eq!(
        count(&pool, "SELECT count(*) FROM outbox").await?,
        3,
        "one reconcile job per person, once"
    );
    assert_eq!(
        run_cron(&pool, &e, &tasks, utc("2026-02-01T17:00:00Z")).await?,
        ["reconcile:wiki"]
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await?, 6);
    Ok(())
}

#[tokio::test]
async fn the_expiry_sweep_catches_a_termination_whose_schedule_was_lost() -> anyhow::Result<()> {
    let (_db, pool) = db().await?;
    let e = engine();
    let env = envelope(
        "E-1",
        "d1",
        serde_json::json!({"start_date": "2026-01-05", "end_date": "2026-03-31"}),
    )?;
    apply_envelope(&pool, &e, &env, utc("2026-03-01T09:00:00Z")).await?;
    // An operator (or a restore) wiped the schedules table.
    let owner = tenure_store::connect(&_db.url(), None, 1).await?;
    sqlx::query("DELETE FROM schedules").execute(&owner).await?;
    assert_eq!(
        fire_due(&pool, &e, utc("2026-04-01T00:30:00Z")).await?,
        0,
        "nothing left to fire"
    );

    let tasks = vec![CronTask {
        name: "expiry_sweep".into(),
        schedule: cron::Schedule::from_str("0 0 * * * *")?,
        action: CronAction::ExpirySweep,
    }];
    run_cron(&pool, &e, &tasks, utc("2026-04-01T00:30:00Z")).await?;
    assert_eq!(
        run_cron(&pool, &e, &tasks, utc("2026-04-01T01:00:00Z")).await?,
        ["expiry_sweep"]
    );
    let status: String = sqlx::query_scalar("SELECT status FROM persons")
        .fetch_one(&pool)
        .await?;
    assert_eq!(status, "terminated");
    let at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT (metadata->>'effective_at')::timestamptz FROM events WHERE event_type = 'PersonTerminated'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(
        at,
        Some(utc("2026-04-01T01:00:00Z")),
        "fired by the sweep, late but not lost"
    );
    Ok(())
}
