mod common;

use common::{event, TestDb};
use serde_json::json;
use tenure_store::{append, read_stream, ExpectedVersion};

fn sqlstate(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()).unwrap_or_default(),
        other => panic!("expected a database error, got {other:?}"),
    }
}

fn message(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => panic!("expected a database error, got {other:?}"),
    }
}

const INSUFFICIENT_PRIVILEGE: &str = "42501";

#[tokio::test]
async fn app_role_can_only_insert_and_select_events() {
    let db = TestDb::new().await;
    let app = db.app_pool().await;
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&app)
        .await
        .unwrap();
    assert_eq!(role, "tenure_app");

    // INSERT (through append) and SELECT work.
    let mut conn = app.acquire().await.unwrap();
    let written = append(
        &mut conn,
        "s",
        ExpectedVersion::NoStream,
        &[event("A", json!({"x": 1})), event("B", json!({"x": 2}))],
    )
    .await
    .unwrap();
    drop(conn);
    assert_eq!(read_stream(&app, "s").await.unwrap(), written);

    for statement in [
        "UPDATE events SET event_type = 'Forged'",
        "DELETE FROM events",
        "TRUNCATE events",
        // Forging the writing transaction or the global position would break
        // the global reader's ordering guarantee.
        "INSERT INTO events (transaction_id, stream_id, version, event_id, event_type, data, \
         metadata, recorded_at, prev_hash, hash) \
         SELECT '1'::xid8, 'x', 1, gen_random_uuid(), 'T', '{}', '{}', now(), \
                decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex')",
        "INSERT INTO events (global_position, stream_id, version, \
         event_id, event_type, data, metadata, recorded_at, prev_hash, hash) \
         OVERRIDING SYSTEM VALUE SELECT 1000000, 'x', 1, gen_random_uuid(), 'T', '{}', '{}', now(), \
                decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex')",
    ] {
        let err = sqlx::query(statement).execute(&app).await.unwrap_err();
        assert_eq!(sqlstate(&err), INSUFFICIENT_PRIVILEGE, "{statement}: {err}");
    }
    assert_eq!(read_stream(&db.pool, "s").await.unwrap(), written);

    // Projection and work tables are fully writable by the application.
    sqlx::query(
        "INSERT INTO persons (person_id, source, source_person_id, status, attributes, version) \
         VALUES (gen_random_uuid(), 'hr', '42', 'active', '{}', 1)",
    )
    .execute(&app)
    .await
    .unwrap();
    sqlx::query("UPDATE persons SET status = 'left'")
        .execute(&app)
        .await
        .unwrap();
    sqlx::query("DELETE FROM persons")
        .execute(&app)
        .await
        .unwrap();
    sqlx::query("INSERT INTO outbox (msg_id, subject, payload) VALUES ('m1', 'subj', '{}')")
        .execute(&app)
        .await
        .unwrap();
    sqlx::query("INSERT INTO inbox (source, delivery_id) VALUES ('hr', 'd1')")
        .execute(&app)
        .await
        .unwrap();
    sqlx::query("INSERT INTO accounts (app, person_id) VALUES ('github', gen_random_uuid())")
        .execute(&app)
        .await
        .unwrap();

    app.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn trigger_blocks_mutation_even_for_superuser() {
    let db = TestDb::new().await;
    let is_superuser: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(is_superuser, "this test needs a superuser admin URL");

    let mut conn = db.pool.acquire().await.unwrap();
    let written = append(
        &mut conn,
        "s",
        ExpectedVersion::NoStream,
        &[event("A", json!({}))],
    )
    .await
    .unwrap();
    drop(conn);

    for statement in [
        "UPDATE events SET data = '{\"forged\": true}'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let err = sqlx::query(statement).execute(&db.pool).await.unwrap_err();
        assert!(
            message(&err).contains("events are append-only"),
            "{statement}: {err}"
        );
    }
    assert_eq!(read_stream(&db.pool, "s").await.unwrap(), written);
    db.drop_db().await;
}
