mod common;

use std::time::Duration;

use common::{event, TestDb};
use serde_json::json;
use sqlx::{Connection, PgPool};
use tenure_store::{append, read_all, ExpectedVersion, Position, RecordedEvent};
use uuid::Uuid;

fn ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

/// `read_all` only returns events below the oldest running transaction id of
/// the whole cluster, so an unrelated test holding a transaction open can
/// delay (never reorder) results. Wait until at least `n` are readable.
async fn read_all_at_least(pool: &PgPool, after: Position, n: usize) -> Vec<RecordedEvent> {
    for _ in 0..500 {
        let events = read_all(pool, after, 100).await.unwrap();
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fewer than {n} events became readable after {after:?}");
}

#[tokio::test]
async fn read_all_does_not_skip_late_commits() {
    let db = TestDb::new().await;

    // An event committed before the race; the reader checkpoints after it.
    let mut conn = db.pool.acquire().await.unwrap();
    let c = append(
        &mut conn,
        "c",
        ExpectedVersion::NoStream,
        &[event("C", json!({}))],
    )
    .await
    .unwrap()
    .remove(0);
    drop(conn);
    let first_read = read_all_at_least(&db.pool, Position::START, 1).await;
    assert_eq!(ids(&first_read), vec![c.event_id]);
    let checkpoint = first_read[0].position();
    assert_eq!(checkpoint, c.position());

    // Transaction A appends first (lower xid and lower global position) but
    // stays open; B appends afterwards and commits.
    let mut conn_a = db.conn().await;
    let mut tx_a = conn_a.begin().await.unwrap();
    let a = append(
        &mut tx_a,
        "a",
        ExpectedVersion::NoStream,
        &[event("A", json!({}))],
    )
    .await
    .unwrap()
    .remove(0);
    let mut conn_b = db.conn().await;
    let mut tx_b = conn_b.begin().await.unwrap();
    let b = append(
        &mut tx_b,
        "b",
        ExpectedVersion::NoStream,
        &[event("B", json!({}))],
    )
    .await
    .unwrap()
    .remove(0);
    tx_b.commit().await.unwrap();
    assert!(a.global_position < b.global_position);
    assert!(a.transaction_id < b.transaction_id);

    // This is the hazard: B is committed and visible with a higher global
    // position than A, so a reader that only tracked global_position would
    // consume B now, checkpoint past A, and never see A.
    let naive: Vec<i64> = sqlx::query_scalar(
        "SELECT global_position FROM events WHERE global_position > $1 ORDER BY 1",
    )
    .bind(checkpoint.global_position)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(naive, vec![b.global_position]);

    // read_all must hold B back while A is in flight.
    assert!(read_all(&db.pool, checkpoint, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(&read_all(&db.pool, Position::START, 100).await.unwrap()),
        vec![c.event_id]
    );

    tx_a.commit().await.unwrap();

    // The checkpointed reader now gets A, then B.
    let resumed = read_all_at_least(&db.pool, checkpoint, 2).await;
    assert_eq!(ids(&resumed), vec![a.event_id, b.event_id]);
    assert_eq!(resumed[0], a);
    assert_eq!(resumed[1], b);
    // A fresh reader sees the full order.
    let from_start = read_all_at_least(&db.pool, Position::START, 3).await;
    assert_eq!(ids(&from_start), vec![c.event_id, a.event_id, b.event_id]);
    // Resuming after each event yields exactly the rest.
    assert_eq!(
        ids(&read_all(&db.pool, a.position(), 100).await.unwrap()),
        vec![b.event_id]
    );
    assert!(read_all(&db.pool, b.position(), 100)
        .await
        .unwrap()
        .is_empty());
    db.drop_db().await;
}

#[tokio::test]
async fn read_all_pages_in_transaction_then_position_order() {
    let db = TestDb::new().await;
    let mut written = Vec::new();
    for i in 0..5 {
        let mut tx = db.pool.begin().await.unwrap();
        let batch = [
            event("E", json!({"i": i, "n": 0})),
            event("E", json!({"i": i, "n": 1})),
        ];
        written.extend(
            append(&mut tx, &format!("s{i}"), ExpectedVersion::NoStream, &batch)
                .await
                .unwrap(),
        );
        tx.commit().await.unwrap();
    }
    let all = read_all_at_least(&db.pool, Position::START, written.len()).await;
    assert_eq!(all, written);
    let positions: Vec<Position> = all.iter().map(RecordedEvent::position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));

    // Paging with limit reproduces the same sequence.
    let mut paged = Vec::new();
    let mut after = Position::START;
    loop {
        let page = read_all(&db.pool, after, 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = last.position();
        paged.extend(page);
    }
    assert_eq!(paged, written);
    db.drop_db().await;
}
