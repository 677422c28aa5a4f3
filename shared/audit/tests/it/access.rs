use chrono::Utc;
use tenure_audit::read::{access_at, exceptions, person_access};

use crate::{db, tick, Person};

#[tokio::test]
async fn access_at_an_instant_comes_from_events_and_survives_edited_projections() {
    let db = db().await;
    let pool = &db.pool;
    let mut ada = Person::new("ada");
    let mut bob = Person::new("bob");
    let hire = ada.hired(pool).await;
    bob.hired(pool).await;
    let before_accounts = tick().await;
    let created = ada.account_created(pool, "wiki").await;
    bob.account_created(pool, "wiki").await;
    bob.account_created(pool, "chat").await;
    let both_employed = tick().await;
    ada.terminated(pool, Utc::now()).await;
    let deactivated = ada.account_deactivated(pool, "wiki").await;
    let after = tick().await;

    let at = access_at(pool, "wiki", both_employed, false).await.unwrap();
    let names: Vec<_> = at.rows.iter().map(|r| r.person.as_str()).collect();
    assert_eq!(names, ["ada@example.com", "bob@example.com"]);
    let row = &at.rows[0];
    assert_eq!(row.person_id, ada.id);
    assert_eq!(row.user_name.as_deref(), Some("ada"));
    assert_eq!(row.remote_id.as_deref(), Some("r-ada"));
    assert!(row.active && !row.active_assumed);
    assert_eq!(row.since, created.recorded_at);
    let granted = row.granted_by.as_ref().unwrap();
    assert_eq!(granted.event_id, created.event_id);
    assert_eq!(granted.correlation_id, hire.metadata.correlation_id);
    let decision = row.decision.as_ref().unwrap();
    assert_eq!(
        (decision.event_type.as_str(), decision.event_id),
        ("PersonHired", hire.event_id)
    );

    assert!(access_at(pool, "wiki", before_accounts, false)
        .await
        .unwrap()
        .rows
        .is_empty());
    let now = access_at(pool, "wiki", after, false).await.unwrap();
    assert_eq!(now.rows.len(), 1);
    assert_eq!(now.rows[0].person_id, bob.id);
    let with_inactive = access_at(pool, "wiki", after, true).await.unwrap();
    let ada_now = with_inactive
        .rows
        .iter()
        .find(|r| r.person_id == ada.id)
        .unwrap();
    assert!(!ada_now.active);
    assert_eq!(ada_now.since, deactivated.recorded_at);

    // Someone rewrites the projections: ada active again, bob gone, a
    // person nobody hired holding an account. History does not change.
    let answers = (
        access_at(pool, "wiki", both_employed, false).await.unwrap(),
        access_at(pool, "wiki", after, false).await.unwrap(),
        exceptions(pool).await.unwrap(),
        person_access(pool, ada.id, None, None).await.unwrap(),
    );
    sqlx::query(
        "INSERT INTO accounts (app, person_id, remote_id, user_name, active)
         VALUES ('wiki', $1, 'r-ada', 'ada', true), ('wiki', gen_random_uuid(), 'x', 'mallory', true)",
    )
    .bind(ada.id)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO persons (person_id, source, source_person_id, status, attributes, version)
         VALUES ($1, 'generic', 'ada', 'active', '{}', 99)",
    )
    .bind(ada.id)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM accounts WHERE person_id = $1")
        .bind(bob.id)
        .execute(pool)
        .await
        .unwrap();
    let again = (
        access_at(pool, "wiki", both_employed, false).await.unwrap(),
        access_at(pool, "wiki", after, false).await.unwrap(),
        exceptions(pool).await.unwrap(),
        person_access(pool, ada.id, None, None).await.unwrap(),
    );
    assert_eq!(answers, again);
}

#[tokio::test]
async fn a_persons_intervals_per_app_open_and_close_with_the_account() {
    let db = db().await;
    let pool = &db.pool;
    let mut ada = Person::new("ada");
    ada.hired(pool).await;
    let created = ada.account_created(pool, "wiki").await;
    let chat = ada.account_created(pool, "chat").await;
    let off = ada.account_deactivated(pool, "wiki").await;
    let back = ada
        .account(
            pool,
            "wiki",
            "AccountUpdated",
            serde_json::json!({"remote_id": "r-ada", "changes": [{"op": "replace", "path": "active", "value": true}]}),
        )
        .await;

    let report = person_access(pool, ada.id, None, None).await.unwrap();
    let apps: Vec<_> = report.apps.iter().map(|a| a.app.as_str()).collect();
    assert_eq!(apps, ["chat", "wiki"]);
    let wiki = &report.apps[1].intervals;
    assert_eq!(wiki.len(), 2);
    assert_eq!(
        (wiki[0].from, wiki[0].to),
        (created.recorded_at, Some(off.recorded_at))
    );
    assert_eq!((wiki[1].from, wiki[1].to), (back.recorded_at, None));
    assert_eq!(report.apps[0].intervals[0].from, chat.recorded_at);

    let only_wiki_then = person_access(pool, ada.id, Some("wiki"), Some(off.recorded_at))
        .await
        .unwrap();
    assert_eq!(only_wiki_then.apps.len(), 1);
    assert_eq!(only_wiki_then.apps[0].intervals.len(), 1);
}

#[tokio::test]
async fn exceptions_list_active_leavers_and_failed_last_calls() {
    let db = db().await;
    let pool = &db.pool;
    let mut gone = Person::new("gone");
    let mut clean = Person::new("clean");
    let mut flaky = Person::new("flaky");
    for p in [&mut gone, &mut clean, &mut flaky] {
        p.hired(pool).await;
        p.account_created(pool, "wiki").await;
    }
    gone.terminated(pool, Utc::now()).await;
    gone.call_failed(pool, "wiki", 503).await;
    clean.terminated(pool, Utc::now()).await;
    clean.account_deactivated(pool, "wiki").await;
    flaky.call_failed(pool, "wiki", 500).await;

    let report = exceptions(pool).await.unwrap();
    let leavers: Vec<_> = report
        .active_leaver_accounts
        .iter()
        .map(|a| (a.person_id, a.app.as_str()))
        .collect();
    assert_eq!(leavers, [(gone.id, "wiki")]);
    let mut failed: Vec<_> = report
        .failed_last_calls
        .iter()
        .map(|f| (f.person_id, f.status))
        .collect();
    failed.sort();
    let mut expected = vec![(gone.id, Some(503)), (flaky.id, Some(500))];
    expected.sort();
    assert_eq!(failed, expected);

    // The retry that finally switches the account off clears both.
    gone.account(
        pool,
        "wiki",
        "ScimCallSucceeded",
        serde_json::json!({"method": "PATCH", "path": "/Users/r-gone", "status": 200}),
    )
    .await;
    gone.account_deactivated(pool, "wiki").await;
    let report = exceptions(pool).await.unwrap();
    assert!(report.active_leaver_accounts.is_empty());
    assert_eq!(report.failed_last_calls.len(), 1);
    assert_eq!(report.failed_last_calls[0].person_id, flaky.id);
}

#[tokio::test]
async fn access_reflects_renames_and_ids_learnt_after_a_lost_create_answer() {
    let db = db().await;
    let pool = &db.pool;
    let mut eve = Person::new("eve");
    eve.hired(pool).await;
    // The create's answer was lost: the account's id is first named by a
    // later PATCH of an attribute the access report does not show.
    eve.account(
        pool,
        "wiki",
        "AccountCreated",
        serde_json::json!({"remote_id": null, "user_name": "eve", "active": true}),
    )
    .await;
    eve.account(
        pool,
        "wiki",
        "AccountUpdated",
        serde_json::json!({"remote_id": "r-late", "changes": [
            {"op": "replace", "path": "title", "value": "Lead"}]}),
    )
    .await;
    let id_learnt = tick().await;
    let report = access_at(pool, "wiki", id_learnt, false).await.unwrap();
    assert_eq!(report.rows.len(), 1);
    assert_eq!(report.rows[0].remote_id.as_deref(), Some("r-late"));
    assert_eq!(report.rows[0].user_name.as_deref(), Some("eve"));

    eve.account(
        pool,
        "wiki",
        "AccountUpdated",
        serde_json::json!({"remote_id": "r-late", "changes": [
            {"op": "replace", "path": "userName", "value": "eve.new"}]}),
    )
    .await;
    let now = tick().await;
    let report = access_at(pool, "wiki", now, false).await.unwrap();
    assert_eq!(report.rows.len(), 1);
    assert_eq!(report.rows[0].remote_id.as_deref(), Some("r-late"));
    assert_eq!(report.rows[0].user_name.as_deref(), Some("eve.new"));
    assert!(report.rows[0].active);
}
