mod common;

use common::{event, person_event, TestDb};
use serde_json::json;
use tenure_store::{append, person_timeline, ExpectedVersion};
use uuid::Uuid;

#[tokio::test]
async fn person_timeline_spans_streams_in_global_order() {
    let db = TestDb::new().await;
    let alice = Uuid::new_v4();
    let bob = Uuid::new_v4();
    let mut conn = db.pool.acquire().await.unwrap();
    let mut expected = Vec::new();

    expected.extend(
        append(
            &mut conn,
            &format!("person-{alice}"),
            ExpectedVersion::NoStream,
            &[person_event("Hired", alice, json!({}))],
        )
        .await
        .unwrap(),
    );
    append(
        &mut conn,
        &format!("person-{bob}"),
        ExpectedVersion::NoStream,
        &[person_event("Hired", bob, json!({}))],
    )
    .await
    .unwrap();
    // Same stream, one of Alice's and one of Bob's events, plus one without a person.
    let mixed = append(
        &mut conn,
        "account-github",
        ExpectedVersion::NoStream,
        &[
            person_event("AccountCreated", bob, json!({})),
            person_event("AccountCreated", alice, json!({})),
            event("AppConfigured", json!({})),
        ],
    )
    .await
    .unwrap();
    expected.push(mixed[1].clone());
    expected.extend(
        append(
            &mut conn,
            &format!("person-{alice}"),
            ExpectedVersion::Exact(1),
            &[person_event("Left", alice, json!({}))],
        )
        .await
        .unwrap(),
    );
    drop(conn);

    let timeline = person_timeline(&db.pool, alice).await.unwrap();
    assert_eq!(timeline, expected);
    let types: Vec<&str> = timeline.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["Hired", "AccountCreated", "Left"]);
    assert!(timeline
        .windows(2)
        .all(|w| w[0].global_position < w[1].global_position));
    assert!(timeline.iter().all(|e| e.metadata.person_id == Some(alice)));

    assert_eq!(person_timeline(&db.pool, bob).await.unwrap().len(), 2);
    assert!(person_timeline(&db.pool, Uuid::new_v4())
        .await
        .unwrap()
        .is_empty());
    db.drop_db().await;
}
