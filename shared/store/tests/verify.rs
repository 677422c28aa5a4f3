mod common;

use common::{event, person_event, TestDb};
use serde_json::json;
use sqlx::Executor;
use tenure_store::{
    append, verify, ChainProblem, ChainProblemKind, ExpectedVersion, NewEvent, VerifyReport,
};
use uuid::Uuid;

/// Values whose jsonb round trip changes their textual form or key order.
fn awkward_event() -> NewEvent {
    person_event(
        "Awkward",
        Uuid::new_v4(),
        json!({
            "zeta": 1, "a": 2, "aa": 3, "B": 4, "é": 5,
            "floats": [0.1, 0.30000000000000004, 1e300, 1.5e-10, 5.0, -0.0, 123456.789, f64::MAX, f64::MIN_POSITIVE],
            "ints": [0, -1, i64::MIN, i64::MAX, u64::MAX],
            "strings": ["", "quote \" backslash \\", "ctl \u{1}\u{1f}", "tab\tnl\n", "é😀", "</script>"],
            "nested": {"y": {"b": [], "a": {}}, "x": [{"k2": true, "k1": null}]},
        }),
    )
}

async fn seed(db: &TestDb) {
    let mut conn = db.pool.acquire().await.unwrap();
    append(
        &mut conn,
        "s1",
        ExpectedVersion::NoStream,
        &[
            event("A", json!({"n": 1})),
            awkward_event(),
            event("C", json!({"n": 3})),
            event("D", json!({"n": 4})),
        ],
    )
    .await
    .unwrap();
    append(
        &mut conn,
        "s2",
        ExpectedVersion::NoStream,
        &[event("A", json!({"n": 1})), event("B", json!({"n": 2}))],
    )
    .await
    .unwrap();
    append(
        &mut conn,
        "s1",
        ExpectedVersion::Exact(4),
        &[awkward_event()],
    )
    .await
    .unwrap();
}

/// Runs `sql` with triggers disabled for this session only, as an attacker
/// with superuser access would.
async fn tamper(db: &TestDb, sql: &str) {
    let mut conn = db.conn().await;
    conn.execute("SET session_replication_role = replica")
        .await
        .unwrap();
    let affected = conn.execute(sql).await.unwrap().rows_affected();
    assert_eq!(affected, 1, "{sql}");
    conn.execute("RESET session_replication_role")
        .await
        .unwrap();
}

#[tokio::test]
async fn untouched_store_verifies() {
    let db = TestDb::new().await;
    assert_eq!(verify(&db.pool).await.unwrap(), VerifyReport::default());
    seed(&db).await;
    let report = verify(&db.pool).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.streams, report.events), (2, 7));
    db.drop_db().await;
}

#[tokio::test]
async fn altered_event_is_reported_as_hash_mismatch() {
    let db = TestDb::new().await;
    seed(&db).await;
    tamper(
        &db,
        "UPDATE events SET data = jsonb_set(data, '{n}', '300') WHERE stream_id = 's1' AND version = 3",
    )
    .await;
    let report = verify(&db.pool).await.unwrap();
    assert!(!report.is_ok());
    assert_eq!(
        report.problems,
        vec![ChainProblem {
            stream_id: "s1".into(),
            version: 3,
            kind: ChainProblemKind::HashMismatch
        }]
    );
    assert_eq!((report.streams, report.events), (2, 7));
    db.drop_db().await;
}

#[tokio::test]
async fn altered_metadata_or_timestamp_is_reported() {
    let db = TestDb::new().await;
    seed(&db).await;
    tamper(
        &db,
        "UPDATE events SET metadata = metadata || '{\"actor\": \"mallory\"}' \
         WHERE stream_id = 's2' AND version = 1",
    )
    .await;
    tamper(
        &db,
        "UPDATE events SET recorded_at = recorded_at - interval '1 day' \
         WHERE stream_id = 's1' AND version = 5",
    )
    .await;
    let report = verify(&db.pool).await.unwrap();
    assert_eq!(
        report.problems,
        vec![
            ChainProblem {
                stream_id: "s1".into(),
                version: 5,
                kind: ChainProblemKind::HashMismatch
            },
            ChainProblem {
                stream_id: "s2".into(),
                version: 1,
                kind: ChainProblemKind::HashMismatch
            },
        ]
    );
    db.drop_db().await;
}

#[tokio::test]
async fn deleted_event_is_reported() {
    let db = TestDb::new().await;
    seed(&db).await;
    tamper(
        &db,
        "DELETE FROM events WHERE stream_id = 's1' AND version = 3",
    )
    .await;
    let report = verify(&db.pool).await.unwrap();
    assert_eq!(
        report.problems,
        vec![
            ChainProblem {
                stream_id: "s1".into(),
                version: 4,
                kind: ChainProblemKind::VersionGap
            },
            ChainProblem {
                stream_id: "s1".into(),
                version: 4,
                kind: ChainProblemKind::BrokenLink
            },
        ]
    );
    assert_eq!((report.streams, report.events), (2, 6));
    db.drop_db().await;
}

#[tokio::test]
async fn rewritten_chain_suffix_is_reported_as_broken_link() {
    // Re-hashing a forged event with the correct algorithm makes it
    // self-consistent, but its successor still points at the original hash.
    let db = TestDb::new().await;
    seed(&db).await;
    tamper(
        &db,
        "UPDATE events SET hash = sha256(hash) WHERE stream_id = 's2' AND version = 1",
    )
    .await;
    let report = verify(&db.pool).await.unwrap();
    assert_eq!(
        report.problems,
        vec![
            ChainProblem {
                stream_id: "s2".into(),
                version: 1,
                kind: ChainProblemKind::HashMismatch
            },
            ChainProblem {
                stream_id: "s2".into(),
                version: 2,
                kind: ChainProblemKind::BrokenLink
            },
        ]
    );
    db.drop_db().await;
}
