//! Batched creates with SCIM Bulk against a real scim2-server and a fresh
//! database: one account per person, every call audited on that person's
//! account stream, and a taken userName handled for its person only.

mod common;

use std::time::Duration;

use common::{hire_person, job, setup, stream_events as stream, Setup};
use serde_json::{json, Value};
use tenure_bus::Job;
use tenure_fanout::batch::BatchResult;
use tenure_fanout::{account_stream, Outcome};
use tenure_store::sqlx::{self, PgPool};
use uuid::Uuid;

/// A hired person with an active entitlement in the wiki.
async fn hire(pool: &PgPool, n: usize, email: &str) -> Job {
    let attributes = json!({
        "given_name": "Bea", "family_name": format!("Bulk{n}"),
        "display_name": format!("Bea Bulk{n}"), "email": email,
    });
    job(hire_person(pool, &format!("E-{n}"), attributes, "active").await)
}

async fn users(s: &Setup) -> Vec<Value> {
    s.list("Users?count=1000").await
}

fn done(r: &BatchResult) -> &Outcome {
    match r {
        BatchResult::Done(Ok(o)) => o,
        other => panic!("not reconciled in the batch: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_hires_are_created_with_one_bulk_request_and_audited_per_person() {
    let s = setup(None).await;
    // A manual account already holds the userName one of the hires will get.
    let taken = reqwest::Client::new()
        .post(format!("{}/Users", s.url()))
        .bearer_auth(&s.server.token)
        .header("content-type", "application/scim+json")
        .body(
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                   "userName": "bea2@example.com"})
            .to_string(),
        )
        .send()
        .await
        .expect("seed");
    assert_eq!(taken.status(), 201);
    let w = s
        .worker("profile = { extends = \"generic\", unique_user_name = true }")
        .await;
    assert!(w.bulk_limits().is_some(), "scim2-server announces bulk");
    let mut jobs = Vec::new();
    for n in 0..5 {
        jobs.push(hire(&s.pool, n, &format!("bea{n}@example.com")).await);
    }
    assert_eq!(w.batchable(&jobs).await.expect("batchable"), vec![true; 5]);

    let results = w.reconcile_batch(&jobs).await;
    assert_eq!(results.len(), 5);
    for (n, r) in results.iter().enumerate() {
        let outcome = done(r);
        if n == 2 {
            // The hand-made account with the taken userName was adopted
            // (it has no externalId), as after a single 409.
            assert_eq!(
                outcome,
                &Outcome::Changed(vec!["AccountAdopted", "AccountUpdated"])
            );
        } else {
            assert_eq!(outcome, &Outcome::Changed(vec!["AccountCreated"]));
        }
    }
    let held = users(&s).await;
    assert_eq!(held.len(), 5, "one account per person, none doubled");
    for job in &jobs {
        let mine: Vec<&Value> = held
            .iter()
            .filter(|u| u["externalId"] == job.person_id.to_string())
            .collect();
        assert_eq!(mine.len(), 1, "{job:?}");
        let remote_id: Option<String> = sqlx::query_scalar(
            "SELECT remote_id FROM accounts WHERE app = 'wiki' AND person_id = $1",
        )
        .bind(job.person_id)
        .fetch_one(&s.pool)
        .await
        .expect("account projection");
        assert_eq!(remote_id.as_deref(), mine[0]["id"].as_str());
    }

    // Per person: the externalId look-up, the intent to create (committed
    // before the request), then the create as one operation of a POST /Bulk
    // carrying all the creates.
    let events = stream(&s.pool, &account_stream("wiki", jobs[0].person_id)).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ScimCallSucceeded",
            "AccountCreateAttempted",
            "ScimCallSucceeded",
            "AccountCreated"
        ]
    );
    assert!(events[0].1["path"]
        .as_str()
        .is_some_and(|p| p.starts_with("/Users?filter=externalId eq")));
    let create = &events[2].1;
    assert_eq!(create["method"], "POST");
    assert_eq!(create["path"], "/Users");
    assert_eq!(create["status"], 201);
    assert!(create["latency_ms"].is_u64());
    assert_eq!(create["bulk"]["path"], "/Bulk");
    assert_eq!(create["bulk"]["status"], 200);
    assert_eq!(create["bulk"]["operations"], 5);

    // The collision: the 409 inside the bulk response, the userName
    // look-up, the link, then the update to what Tenure wants.
    let events = stream(&s.pool, &account_stream("wiki", jobs[2].person_id)).await;
    let trail: Vec<(String, Value, Value)> = events
        .iter()
        .map(|(k, d)| (k.clone(), d["method"].clone(), d["status"].clone()))
        .collect();
    assert_eq!(trail[1].0, "AccountCreateAttempted");
    assert_eq!(
        trail[2],
        ("ScimCallFailed".into(), json!("POST"), json!(409))
    );
    assert_eq!(events[2].1["bulk"]["operations"], 5);
    assert!(trail.iter().any(|(k, _, _)| k == "AccountAdopted"));

    // Run again: level-triggered, nothing left to do, nothing batched.
    assert_eq!(w.batchable(&jobs).await.expect("batchable"), vec![false; 5]);
    for job in &jobs {
        assert_eq!(w.reconcile(job).await.expect("reconcile"), Outcome::InSync);
    }
    assert_eq!(users(&s).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_off_or_a_leased_person_takes_the_single_path() {
    let s = setup(None).await;
    let off = s.worker("bulk = \"off\"").await;
    assert_eq!(off.bulk_limits(), None);
    let jobs = vec![
        hire(&s.pool, 0, "cy0@example.com").await,
        hire(&s.pool, 1, "cy1@example.com").await,
    ];
    assert_eq!(
        off.batchable(&jobs).await.expect("batchable"),
        vec![false; 2]
    );

    // A person whose lease another worker holds is left to the single path.
    let w = s.worker("").await;
    let mut other = s.pool.begin().await.expect("tx");
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(0x7e_4e_01_i32)
        .bind(format!("wiki:{}", jobs[0].person_id))
        .execute(&mut *other)
        .await
        .expect("lease");
    let results = tokio::time::timeout(Duration::from_secs(30), w.reconcile_batch(&jobs))
        .await
        .expect("the batch does not wait for a lease");
    assert!(matches!(results[0], BatchResult::Single), "{results:?}");
    assert_eq!(done(&results[1]), &Outcome::Changed(vec!["AccountCreated"]));
    other.rollback().await.expect("release");
    assert_eq!(
        w.reconcile(&jobs[0]).await.expect("single"),
        Outcome::Changed(vec!["AccountCreated"])
    );
    // Without unique_user_name, the single path still looks up userName.
    let events = stream(&s.pool, &account_stream("wiki", jobs[0].person_id)).await;
    assert!(events.iter().any(|(_, d)| d["path"]
        .as_str()
        .is_some_and(|p| p.contains("userName eq"))));
    assert_eq!(users(&s).await.len(), 2);
}

/// The method and path of every SCIM call on a person's account stream.
async fn calls(pool: &PgPool, person: Uuid) -> Vec<String> {
    stream(pool, &account_stream("wiki", person))
        .await
        .into_iter()
        .filter(|(k, _)| k.starts_with("ScimCall"))
        .map(|(_, d)| {
            format!(
                "{} {} {}",
                d["method"].as_str().unwrap_or_default(),
                d["path"].as_str().unwrap_or_default(),
                d["status"]
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_unique_user_names_a_new_hire_is_created_without_a_user_name_look_up() {
    let s = setup(None).await;
    let w = s
        .worker("bulk = \"off\"\nprofile = { extends = \"generic\", unique_user_name = true }")
        .await;
    let seed = |user: Value| {
        let url = format!("{}/Users", s.url());
        let token = s.server.token.clone();
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/scim+json")
                .body(user.to_string())
                .send()
                .await
                .expect("seed");
            assert_eq!(r.status(), 201);
        }
    };
    let core = "urn:ietf:params:scim:schemas:core:2.0:User";
    // A hand-made account with the name, no externalId: linked after the 409.
    seed(json!({"schemas": [core], "userName": "dee1@example.com"})).await;
    // Someone else's account with the name: never linked.
    seed(json!({"schemas": [core], "userName": "dee2@example.com", "externalId": "someone-else"}))
        .await;
    let fresh = hire(&s.pool, 0, "dee0@example.com").await;
    let manual = hire(&s.pool, 1, "dee1@example.com").await;
    let foreign = hire(&s.pool, 2, "dee2@example.com").await;

    assert_eq!(
        w.reconcile(&fresh).await.expect("reconcile"),
        Outcome::Changed(vec!["AccountCreated"])
    );
    let made = calls(&s.pool, fresh.person_id).await;
    assert_eq!(made.len(), 2, "{made:?}");
    assert!(
        made[0].starts_with("GET /Users?filter=externalId eq"),
        "{made:?}"
    );
    assert_eq!(made[1], "POST /Users 201");

    assert!(matches!(
        w.reconcile(&manual).await.expect("reconcile"),
        Outcome::Changed(ref what) if what.contains(&"AccountAdopted")
    ));
    let made = calls(&s.pool, manual.person_id).await;
    assert_eq!(made[1], "POST /Users 409", "{made:?}");
    assert!(
        made[2].starts_with("GET /Users?filter=userName eq"),
        "{made:?}"
    );

    let refused = w.reconcile(&foreign).await.expect("reconcile");
    assert!(
        matches!(&refused, Outcome::Failed(why) if why.contains("not linking someone else's account")),
        "{refused:?}"
    );
    let held = users(&s).await;
    assert_eq!(held.len(), 3, "no account was doubled: {held:?}");
    assert_eq!(
        held.iter()
            .filter(|u| u["externalId"] == foreign.person_id.to_string())
            .count(),
        0
    );
}
