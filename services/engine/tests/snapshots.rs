//! Person snapshots on a real PostgreSQL: a person loaded from the stored
//! snapshot plus the events after it is the person folded from the whole
//! stream, and the engine decides the same with or without snapshots.

use chrono::{DateTime, Duration, TimeZone, Utc};
use tenure_bus::IngestEnvelope;
use tenure_domain::{evolve, AppPolicy, Context, Person, PersonEvent, Policy, SourceRecord};
use tenure_engine::process::{person_id_for, person_stream, tick_person};
use tenure_engine::snapshot;
use tenure_engine::{apply_envelope, Engine};
use tenure_store::sqlx::{self, PgPool};
use tenure_testkit::TestDb;
use uuid::Uuid;

async fn db() -> anyhow::Result<(TestDb, PgPool)> {
    let db = TestDb::create().await?;
    let owner = tenure_store::connect(&db.url(), None, 2).await?;
    tenure_store::migrate(&owner).await?;
    owner.close().await;
    let pool = tenure_store::connect(&db.url(), Some("tenure_app"), 4).await?;
    Ok((db, pool))
}

fn engine(snapshot_every: i64) -> Engine {
    let mut wiki = AppPolicy::new("wiki");
    wiki.pre_provision_days = 3;
    Engine {
        ctx: Context {
            policy: Policy {
                expiry_warning_days: Some(7),
                ..Policy::default()
            },
            apps: vec![wiki, AppPolicy::new("git")],
        },
        partitions: 4,
        snapshot_every,
        correlation: Default::default(),
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 1, 9, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The i-th record of a busy person: mostly attribute changes stated at
/// the time they arrive, now and then a leave, a record effective some days
/// ahead, a late one that is already outranked, or a last day.
fn record(i: u32, now: DateTime<Utc>) -> anyhow::Result<IngestEnvelope> {
    let status = match i % 17 {
        5 => "on_leave",
        _ => "active",
    };
    let department = ["Engineering", "Sales", "Ops"][(i % 3) as usize];
    let mut r = serde_json::json!({
        "person_id": "E-busy", "given_name": "Bo", "family_name": "Berg",
        "work_email": "bo@example.com", "employment_status": status,
        "department": department,
        "title": format!("Title {i}"),
        "start_date": "2026-01-05",
        "effective_at": now.to_rfc3339(),
    });
    match i % 11 {
        // Takes effect three days after it arrives.
        3 => r["effective_date"] = serde_json::json!((now + Duration::days(3)).date_naive()),
        // Stated long ago: outranked on arrival.
        7 => r["effective_at"] = serde_json::json!((now - Duration::days(30)).to_rfc3339()),
        _ => {}
    }
    if i % 13 == 9 {
        r["end_date"] = serde_json::json!((now + Duration::days(20)).date_naive());
    }
    let record: SourceRecord = serde_json::from_value(r)?;
    Ok(IngestEnvelope {
        source: "generic".into(),
        delivery_id: format!("d-{i}"),
        received_at: now,
        correlation_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("c-{i}").as_bytes()),
        record,
    })
}

/// Applies `n` records (and a tick after every tenth) one hour apart.
async fn feed(pool: &PgPool, engine: &Engine, n: u32) -> anyhow::Result<DateTime<Utc>> {
    let person = person_id_for("generic", "E-busy");
    let mut now = t0();
    for i in 0..n {
        now += Duration::hours(1);
        apply_envelope(pool, engine, &record(i, now)?, now).await?;
        if i % 10 == 9 {
            let mut tx = pool.begin().await?;
            tick_person(&mut tx, engine, person, None, now).await?;
            tx.commit().await?;
        }
    }
    Ok(now)
}

async fn full_fold(pool: &PgPool, person: Uuid) -> anyhow::Result<(Person, i64)> {
    fold_upto(pool, person, i64::MAX).await
}

async fn fold_upto(pool: &PgPool, person: Uuid, version: i64) -> anyhow::Result<(Person, i64)> {
    let mut stream = tenure_store::read_stream(pool, &person_stream(person)).await?;
    stream.retain(|e| e.version <= version);
    let mut state = Person::default();
    for e in &stream {
        state = evolve(
            state,
            &PersonEvent::from_stored(&e.event_type, e.data.clone())?,
        );
    }
    Ok((state, stream.last().map_or(0, |e| e.version)))
}

#[tokio::test]
async fn snapshot_plus_tail_is_the_full_fold_and_stays_small() -> anyhow::Result<()> {
    let (_db, pool) = db().await?;
    let person = person_id_for("generic", "E-busy");
    let engine = engine(10);
    let now = feed(&pool, &engine, 150).await?;

    let (full, version) = full_fold(&pool, person).await?;
    let mut conn = pool.acquire().await?;
    let loaded = snapshot::load(&mut conn, person, now).await?;
    assert!(
        loaded.snapshot_version > 0,
        "a snapshot was used (version {version})"
    );
    assert!(
        version - loaded.snapshot_version < 10 + 8,
        "the tail is at most one interval plus one decision: {} of {version}",
        version - loaded.snapshot_version
    );
    assert_eq!(loaded.version, version);
    // Identical for every decision from `now` on; the full fold only has
    // more outranked facts.
    assert_eq!(
        loaded.state.clone().compacted(now),
        full.clone().compacted(now)
    );
    assert_eq!(loaded.state.entitlements, full.entitlements);
    assert_eq!(loaded.state.attributes, full.attributes);
    assert!(full.facts.len() >= 150, "{} facts", full.facts.len());
    let (stored, valid_from): (i64, DateTime<Utc>) = sqlx::query_as(
        "SELECT jsonb_array_length(state->'facts')::bigint, valid_from FROM person_snapshots WHERE person_id = $1",
    )
    .bind(person)
    .fetch_one(&pool)
    .await?;
    // The fact in force when it was stored plus those that take effect
    // later (a few records here are effective three days ahead).
    let (then, _) = fold_upto(&pool, person, loaded.snapshot_version).await?;
    assert_eq!(
        usize::try_from(stored)?,
        then.compacted(valid_from).facts.len()
    );
    assert!(stored < 10, "{stored} facts kept of {}", full.facts.len());
    // Every kept fact still knows the event that recorded it.
    for f in &loaded.state.facts {
        assert!(
            loaded
                .records
                .contains_key(&(f.source.clone(), f.delivery_id.clone())),
            "{} has no origin",
            f.delivery_id
        );
    }

    // Before the snapshot's instant (another engine's clock behind) the
    // whole stream is folded instead.
    let earlier = snapshot::load(&mut conn, person, now - Duration::days(1)).await?;
    assert_eq!(earlier.snapshot_version, 0);
    assert_eq!(earlier.state, full);

    // Snapshots are a projection: without them the load folds everything.
    sqlx::query("DELETE FROM person_snapshots")
        .execute(&pool)
        .await?;
    let rebuilt = snapshot::load(&mut conn, person, now).await?;
    assert_eq!(rebuilt.snapshot_version, 0);
    assert_eq!(rebuilt.state, full);
    Ok(())
}

#[tokio::test]
async fn the_engine_decides_the_same_with_and_without_snapshots() -> anyhow::Result<()> {
    let (_a, with) = db().await?;
    let (_b, without) = db().await?;
    feed(&with, &engine(5), 120).await?;
    feed(&without, &engine(i64::MAX), 120).await?;
    let snapshots: i64 = sqlx::query_scalar("SELECT count(*) FROM person_snapshots")
        .fetch_one(&without)
        .await?;
    assert_eq!(snapshots, 0, "the reference run folds the whole stream");

    let person = person_id_for("generic", "E-busy");
    let stream = |pool: PgPool| async move {
        let events = tenure_store::read_stream(&pool, &person_stream(person)).await?;
        anyhow::Ok(
            events
                .into_iter()
                .map(|e| (e.event_type, e.data, e.metadata.causation_id.is_some()))
                .collect::<Vec<_>>(),
        )
    };
    let (a, b) = (stream(with.clone()).await?, stream(without.clone()).await?);
    assert!(a.len() > 200, "{} events", a.len());
    assert_eq!(a, b);

    let projection = |pool: PgPool| async move {
        let row: (String, serde_json::Value, i64) =
            sqlx::query_as("SELECT status, attributes, version FROM persons WHERE person_id = $1")
                .bind(person)
                .fetch_one(&pool)
                .await?;
        let schedules: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT kind, due_at FROM schedules WHERE person_id = $1 ORDER BY due_at, kind",
        )
        .bind(person)
        .fetch_all(&pool)
        .await?;
        anyhow::Ok((row, schedules))
    };
    assert_eq!(projection(with).await?, projection(without).await?);
    Ok(())
}
