mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::{event, TestDb};
use serde_json::json;
use sqlx::Connection;
use tenure_store::{
    append, read_stream, stream_version, ExpectedVersion, Metadata, NewEvent, StoreError,
};
use uuid::Uuid;

#[tokio::test]
async fn append_and_read_stream_round_trip() {
    let db = TestDb::new().await;
    let person_id = Uuid::new_v4();
    let full_metadata = Metadata {
        correlation_id: Uuid::new_v4(),
        causation_id: Some(Uuid::new_v4()),
        person_id: Some(person_id),
        app: Some("github".into()),
        source: Some("workday".into()),
        actor: "ingest".into(),
        effective_at: Utc
            .with_ymd_and_hms(2025, 1, 31, 23, 59, 59)
            .single()
            .map(|t| t + chrono::Duration::nanoseconds(123_456_789)),
    };
    let first_batch = vec![
        NewEvent {
            metadata: full_metadata.clone(),
            ..event(
                "PersonHired",
                json!({"name": "Ada", "grade": 7, "tags": ["a", "b"]}),
            )
        },
        event("PersonUpdated", json!({"name": "Ada Lovelace"})),
        event("PersonUpdated", json!({"manager": null})),
    ];

    let mut tx = db.pool.begin().await.unwrap();
    let recorded1 = append(&mut tx, "person-1", ExpectedVersion::NoStream, &first_batch)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut conn = db.pool.acquire().await.unwrap();
    let recorded2 = append(
        &mut conn,
        "person-1",
        ExpectedVersion::Exact(3),
        &[
            event("PersonLeft", json!({})),
            event("PersonRehired", json!({})),
        ],
    )
    .await
    .unwrap();
    // Unrelated stream must not leak into person-1.
    append(
        &mut conn,
        "person-2",
        ExpectedVersion::Any,
        &[event("PersonHired", json!({}))],
    )
    .await
    .unwrap();

    let versions: Vec<i64> = recorded1
        .iter()
        .chain(&recorded2)
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);

    // One append is one transaction; global positions follow versions.
    assert!(recorded1
        .iter()
        .all(|e| e.transaction_id == recorded1[0].transaction_id));
    assert!(recorded2[0].transaction_id > recorded1[0].transaction_id);
    let positions: Vec<i64> = recorded1
        .iter()
        .chain(&recorded2)
        .map(|e| e.global_position)
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

    // Hash chain links.
    assert_eq!(recorded1[0].prev_hash, "00".repeat(32));
    let all: Vec<_> = recorded1.iter().chain(&recorded2).collect();
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }

    // What append returned is exactly what is stored (incl. recorded_at).
    let stored = read_stream(&db.pool, "person-1").await.unwrap();
    let expected: Vec<_> = recorded1.iter().chain(&recorded2).cloned().collect();
    assert_eq!(stored, expected);
    assert_eq!(stored[0].metadata, full_metadata);
    assert_eq!(
        stored[0].data,
        json!({"name": "Ada", "grade": 7, "tags": ["a", "b"]})
    );
    for (stored, sent) in stored.iter().zip(first_batch.iter()) {
        assert_eq!(stored.event_id, sent.event_id);
        assert_eq!(stored.event_type, sent.event_type);
        assert_eq!(stored.metadata, sent.metadata);
    }

    // Absent optional metadata is omitted, not stored as null.
    let (has_person, has_actor): (bool, bool) = sqlx::query_as(
        "SELECT metadata ? 'person_id', metadata ? 'actor' FROM events WHERE event_id = $1",
    )
    .bind(first_batch[1].event_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(!has_person);
    assert!(has_actor);

    assert_eq!(stream_version(&mut conn, "person-1").await.unwrap(), 5);
    assert_eq!(stream_version(&mut conn, "nobody").await.unwrap(), 0);
    assert!(read_stream(&db.pool, "nobody").await.unwrap().is_empty());
    drop(conn);
    db.drop_db().await;
}

#[tokio::test]
async fn stale_expected_version_is_a_conflict() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.unwrap();
    append(
        &mut conn,
        "s",
        ExpectedVersion::NoStream,
        &[event("A", json!(1)), event("B", json!(2))],
    )
    .await
    .unwrap();

    let err = append(
        &mut conn,
        "s",
        ExpectedVersion::Exact(1),
        &[event("C", json!(3))],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { stream, expected: 1, actual: 2 } if stream == "s"),
        "{err:?}"
    );
    let err = append(
        &mut conn,
        "s",
        ExpectedVersion::NoStream,
        &[event("C", json!(3))],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Conflict {
                expected: 0,
                actual: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let err = append(
        &mut conn,
        "new",
        ExpectedVersion::Exact(4),
        &[event("C", json!(3))],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Conflict {
                expected: 4,
                actual: 0,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "version conflict on stream new: expected 4, found 0"
    );

    // Nothing was written by the failed attempts.
    assert_eq!(read_stream(&db.pool, "s").await.unwrap().len(), 2);
    assert!(read_stream(&db.pool, "new").await.unwrap().is_empty());
    // Any appends regardless of the head.
    let r = append(
        &mut conn,
        "s",
        ExpectedVersion::Any,
        &[event("C", json!(3))],
    )
    .await
    .unwrap();
    assert_eq!(r[0].version, 3);
    drop(conn);
    db.drop_db().await;
}

/// Both transactions read version 1 before either commits; the second one's
/// insert waits on the first one's uncommitted row and must fail with
/// Conflict, not a raw unique violation, once the first commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_append_with_same_expected_version_conflicts() {
    let db = TestDb::new().await;
    let mut seed = db.pool.acquire().await.unwrap();
    append(
        &mut seed,
        "s",
        ExpectedVersion::NoStream,
        &[event("Created", json!({}))],
    )
    .await
    .unwrap();
    drop(seed);

    let mut c1 = db.conn().await;
    let mut c2 = db.conn().await;
    let mut tx1 = c1.begin().await.unwrap();
    let winner = event("FromTx1", json!({"tx": 1}));
    let r1 = append(
        &mut tx1,
        "s",
        ExpectedVersion::Exact(1),
        std::slice::from_ref(&winner),
    )
    .await
    .unwrap();
    assert_eq!(r1[0].version, 2);

    let loser = tokio::spawn(async move {
        let mut tx2 = c2.begin().await.unwrap();
        let result = append(
            &mut tx2,
            "s",
            ExpectedVersion::Exact(1),
            &[event("FromTx2", json!({"tx": 2}))],
        )
        .await;
        let _ = tx2.rollback().await;
        result
    });

    // Make sure tx2 is really blocked on tx1's row before tx1 commits.
    wait_for_lock_waiters(&db, 1).await;
    assert!(!loser.is_finished());
    tx1.commit().await.unwrap();

    let err = loser.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { stream, expected: 1, actual: 2 } if stream == "s"),
        "{err:?}"
    );
    let stored = read_stream(&db.pool, "s").await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].event_id, winner.event_id);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_writers_exactly_one_wins() {
    const WRITERS: usize = 8;
    let db = TestDb::new().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let pool = db.pool.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            barrier.wait().await;
            let result = append(
                &mut tx,
                "contested",
                ExpectedVersion::NoStream,
                &[event("Claim", json!({"writer": i}))],
            )
            .await;
            match result {
                Ok(_) => tx.commit().await.map(|_| true).map_err(StoreError::from),
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        }));
    }
    let mut wins = 0;
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { expected: 0, .. }) => conflicts += 1,
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!((wins, conflicts), (1, WRITERS - 1));
    assert_eq!(read_stream(&db.pool, "contested").await.unwrap().len(), 1);
    db.drop_db().await;
}

#[tokio::test]
async fn duplicate_event_id_is_reported() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let e = event("Once", json!({}));
    append(
        &mut conn,
        "a",
        ExpectedVersion::Any,
        std::slice::from_ref(&e),
    )
    .await
    .unwrap();
    let err = append(
        &mut conn,
        "b",
        ExpectedVersion::Any,
        std::slice::from_ref(&e),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::DuplicateEventId { stream } if stream == "b"),
        "{err:?}"
    );
    assert!(read_stream(&db.pool, "b").await.unwrap().is_empty());
    drop(conn);
    db.drop_db().await;
}

#[tokio::test]
async fn empty_append_still_checks_the_expected_version() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.unwrap();
    assert!(append(&mut conn, "s", ExpectedVersion::NoStream, &[])
        .await
        .unwrap()
        .is_empty());
    let err = append(&mut conn, "s", ExpectedVersion::Exact(2), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    drop(conn);
    db.drop_db().await;
}

async fn wait_for_lock_waiters(db: &TestDb, n: i64) {
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no transaction started waiting for a lock");
}
