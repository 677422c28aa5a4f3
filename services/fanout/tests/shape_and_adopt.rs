//! The outgoing User shaped from config against servers that refuse
//! Tenure's default body (the fault modes `require-name-formatted` and
//! `reject-email-type-primary` of tests/peers/scim_faults.py), the `adopt`
//! policy for accounts Tenure did not create, and `tenure plan --live`
//! deciding exactly as the reconcile does, all on a real scim2-server and a
//! fresh database.

mod common;

use common::{hire_person, job, setup, stream_events, Setup};
use serde_json::{json, Value};
use tenure_bus::Job;
use tenure_fanout::decide::{Decision, Link};
use tenure_fanout::{account_stream, AppWorker, Outcome};
use tenure_store::sqlx::{self, PgPool};

/// A hired person with the given entitlement in the wiki.
async fn hire(pool: &PgPool, email: &str, entitlement: &str) -> Job {
    let attributes = json!({
        "given_name": "Ada", "family_name": "Lovelace",
        "display_name": "Ada Lovelace", "email": email, "title": "Engineer",
        "location": "Lisbon",
    });
    job(hire_person(pool, &format!("E-{email}"), attributes, entitlement).await)
}

async fn set_entitlement(pool: &PgPool, job: &Job, entitlement: &str) {
    common::set_entitlement(pool, job.person_id, entitlement).await
}

/// An account made in the app by hand, as Tenure would not make it.
async fn seed_account(s: &Setup, user_name: &str, external_id: Option<&str>) -> String {
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "name": {"givenName": "Old", "familyName": "Name", "formatted": "Old Name"},
        "title": "Hand-made",
    });
    if let Some(x) = external_id {
        body["externalId"] = x.into();
    }
    let resp: Value = s
        .http
        .post(format!("{}/Users", s.url()))
        .bearer_auth(&s.server.token)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .expect("seed")
        .json()
        .await
        .expect("json");
    resp["id"].as_str().expect("id").to_owned()
}

async fn get_user(s: &Setup, id: &str) -> Value {
    s.http
        .get(format!("{}/Users/{id}", s.url()))
        .bearer_auth(&s.server.token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

async fn events(pool: &PgPool, job: &Job) -> Vec<(String, Value)> {
    stream_events(pool, &account_stream("wiki", job.person_id)).await
}

fn of_kind<'a>(events: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|(k, _)| k == kind)
        .map(|(_, d)| d)
        .collect()
}

/// The reconcile is refused for good, naming the attribute the server
/// named (one of `attributes`).
async fn failed_for(s: &Setup, w: &AppWorker, job: &Job, attributes: &[&str]) {
    let outcome = w.reconcile(job).await.expect("reconcile");
    let Outcome::Failed(reason) = outcome else {
        panic!("expected a refusal, got {outcome:?}")
    };
    let evs = events(&s.pool, job).await;
    let failed = of_kind(&evs, "ReconcileFailed");
    assert_eq!(failed.len(), 1, "{evs:?}");
    let named = failed[0]["attribute"].as_str().unwrap_or_default();
    assert!(attributes.contains(&named), "{failed:?}");
    assert!(
        reason.contains(&format!("refused attribute: {named}")),
        "{reason}"
    );
    assert_eq!(failed[0]["retrying"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_requiring_name_formatted_refuses_the_default_body_and_takes_the_shaped_one() {
    let s = setup(Some(&["require-name-formatted"])).await;
    let plain = s.worker("").await;
    let ada = hire(&s.pool, "ada@example.com", "active").await;
    failed_for(&s, &plain, &ada, &["name.formatted"]).await;

    let shaped = s.worker("[app.shape]\nname_formatted = true\n").await;
    let bea = hire(&s.pool, "bea@example.com", "active").await;
    assert_eq!(
        shaped.reconcile(&bea).await.expect("reconcile"),
        Outcome::Changed(vec!["AccountCreated"])
    );
    let id: String =
        sqlx::query_scalar("SELECT remote_id FROM accounts WHERE app = 'wiki' AND person_id = $1")
            .bind(bea.person_id)
            .fetch_one(&s.pool)
            .await
            .expect("linked");
    assert_eq!(get_user(&s, &id).await["name"]["formatted"], "Ada Lovelace");
    // What is sent is what is compared: the next reconcile sends nothing.
    assert_eq!(
        shaped.reconcile(&bea).await.expect("again"),
        Outcome::InSync
    );
    // And the refused person goes through once the app is shaped.
    assert_eq!(
        shaped.reconcile(&ada).await.expect("redrive"),
        Outcome::Changed(vec!["AccountCreated"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_rejecting_email_type_and_primary_takes_bare_emails_without_endless_patches() {
    let s = setup(Some(&["reject-email-type-primary"])).await;
    let plain = s.worker("").await;
    let ada = hire(&s.pool, "ada@example.com", "active").await;
    failed_for(&s, &plain, &ada, &["emails.type", "emails.primary"]).await;

    let shaped = s
        .worker("[app.shape]\nomit = [\"emails.type\", \"emails.primary\"]\n")
        .await;
    assert_eq!(
        shaped.reconcile(&ada).await.expect("reconcile"),
        Outcome::Changed(vec!["AccountCreated"])
    );
    assert_eq!(
        shaped.reconcile(&ada).await.expect("again"),
        Outcome::InSync
    );
    let writes = s
        .server
        .requests()
        .expect("log")
        .into_iter()
        .filter(|r| r.method != "GET")
        .count();
    assert_eq!(writes, 2, "one refused POST, one accepted; no PATCH after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constants_reach_the_server_and_do_not_cause_patches() {
    let s = setup(None).await;
    let w = s
        .worker(concat!(
            "[app.shape.constant]\nuserType = \"Employee\"\n",
            "[app.mapping.attributes]\nnickName = \"{given_name}\"\n",
            "addresses = [{ type = \"work\", locality = \"{location}\" }]\n",
        ))
        .await;
    let ada = hire(&s.pool, "ada@example.com", "active").await;
    assert_eq!(
        w.reconcile(&ada).await.expect("create"),
        Outcome::Changed(vec!["AccountCreated"])
    );
    let id: String =
        sqlx::query_scalar("SELECT remote_id FROM accounts WHERE app = 'wiki' AND person_id = $1")
            .bind(ada.person_id)
            .fetch_one(&s.pool)
            .await
            .expect("linked");
    let user = get_user(&s, &id).await;
    assert_eq!(user["userType"], "Employee");
    assert_eq!(user["nickName"], "Ada");
    assert_eq!(user["addresses"][0]["locality"], "Lisbon");
    assert_eq!(w.reconcile(&ada).await.expect("again"), Outcome::InSync);
}

/// The person's own e-mail is the userName of a hand-made account.
async fn adoption_case(
    adopt: &str,
    external_id: Option<&str>,
) -> (Setup, AppWorker, Job, String, Outcome) {
    let s = setup(None).await;
    let w = s
        .worker(&format!(
            "adopt = \"{adopt}\"\n[app.shape]\nname_formatted = true\n"
        ))
        .await;
    let job = hire(&s.pool, "ada@example.com", "active").await;
    let id = seed_account(&s, "ada@example.com", external_id).await;
    let outcome = w.reconcile(&job).await.expect("reconcile");
    (s, w, job, id, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmanaged_account_is_adopted_with_its_before_image_and_listed_by_drift() {
    let (s, w, job, id, outcome) = adoption_case("unmanaged_only", None).await;
    assert_eq!(
        outcome,
        Outcome::Changed(vec!["AccountAdopted", "AccountUpdated"])
    );
    let evs = events(&s.pool, &job).await;
    let adopted = of_kind(&evs, "AccountAdopted");
    assert_eq!(adopted.len(), 1);
    assert_eq!(adopted[0]["remote_id"], id.as_str());
    assert_eq!(
        adopted[0]["before"]["title"], "Hand-made",
        "the before-image"
    );
    assert_eq!(adopted[0]["policy"], "unmanaged_only");
    assert!(of_kind(&evs, "AccountLinked").is_empty());
    let now = get_user(&s, &id).await;
    assert_eq!(now["externalId"], job.person_id.to_string());
    assert_eq!(now["title"], "Engineer");
    assert_eq!(
        now["name"]["formatted"], "Ada Lovelace",
        "name.formatted is not left stale"
    );
    let listed = w.adopted_accounts().await.expect("adopted");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].remote_id, id);
    assert_eq!(listed[0].person_id, Some(job.person_id));
    assert_eq!(w.reconcile(&job).await.expect("again"), Outcome::InSync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_never_refuses_and_leaves_the_account_alone() {
    let (s, _w, job, id, outcome) = adoption_case("never", None).await;
    let Outcome::Failed(reason) = outcome else {
        panic!("expected a refusal, got {outcome:?}")
    };
    assert!(reason.contains("adopt = \"never\""), "{reason}");
    assert_eq!(get_user(&s, &id).await["title"], "Hand-made");
    assert!(of_kind(&events(&s.pool, &job).await, "AccountAdopted").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_elses_account_is_refused_unless_adopt_is_always() {
    let (s, _w, _job, id, outcome) = adoption_case("unmanaged_only", Some("someone-else")).await;
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    assert_eq!(get_user(&s, &id).await["externalId"], "someone-else");
    drop(s);

    let (s, _w, job, id, outcome) = adoption_case("always", Some("someone-else")).await;
    assert_eq!(
        outcome,
        Outcome::Changed(vec!["AccountAdopted", "AccountUpdated"])
    );
    let evs = events(&s.pool, &job).await;
    assert_eq!(
        of_kind(&evs, "AccountAdopted")[0]["previous_external_id"],
        "someone-else"
    );
    assert_eq!(
        get_user(&s, &id).await["externalId"],
        job.person_id.to_string()
    );
}

/// `plan --live` and the reconcile, run on the same states, agree: the
/// plan's refusal is the reconcile's, its link or adoption is the event the
/// reconcile records, and its requests are the writes the reconcile sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_live_and_reconcile_decide_the_same() {
    // No fault: scim2-server as it is, with the request log kept.
    let s = setup(Some(&[])).await;
    let w = s.worker("[app.shape]\nname_formatted = true\n").await;
    let new_hire = hire(&s.pool, "new@example.com", "active").await;
    let unmanaged = hire(&s.pool, "hand@example.com", "active").await;
    seed_account(&s, "hand@example.com", None).await;
    let taken = hire(&s.pool, "taken@example.com", "active").await;
    seed_account(&s, "taken@example.com", Some("someone-else")).await;
    let crashed = hire(&s.pool, "crashed@example.com", "active").await;
    seed_account(
        &s,
        "crashed@example.com",
        Some(&crashed.person_id.to_string()),
    )
    .await;
    let leaver = hire(&s.pool, "leaver@example.com", "active").await;
    assert!(matches!(
        w.reconcile(&leaver).await.expect("hire"),
        Outcome::Changed(_)
    ));
    set_entitlement(&s.pool, &leaver, "revoked").await;

    for job in [&new_hire, &unmanaged, &taken, &crashed, &leaver] {
        let plan = w
            .plan(job.person_id, true)
            .await
            .expect("plan")
            .expect("a person");
        let before = s.server.requests().map(|r| r.len()).unwrap_or(0);
        let before_events = events(&s.pool, job).await.len();
        let outcome = w.reconcile(job).await.expect("reconcile");
        let evs = events(&s.pool, job).await[before_events..].to_vec();
        match &plan.decision {
            Decision::Refuse(reason) => {
                assert_eq!(
                    outcome,
                    Outcome::Failed(reason.clone()),
                    "{}",
                    plan.user_name
                );
            }
            Decision::Proceed { link, .. } => {
                let kinds: Vec<&str> = evs.iter().map(|(k, _)| k.as_str()).collect();
                let want_link = match link {
                    Link::Known => None,
                    Link::Linked => Some("AccountLinked"),
                    Link::Adopted => Some("AccountAdopted"),
                };
                for l in ["AccountLinked", "AccountAdopted"] {
                    assert_eq!(
                        kinds.contains(&l),
                        want_link == Some(l),
                        "{}: {kinds:?} vs {link:?}",
                        plan.user_name
                    );
                }
                let sent: Vec<(String, Value)> = s.server.requests().expect("log")[before..]
                    .iter()
                    .filter(|r| r.method != "GET")
                    .map(|r| {
                        let path = r.path.split("/v2").nth(1).unwrap_or_default().to_owned();
                        (format!("{} {path}", r.method), r.body.clone())
                    })
                    .collect();
                let planned: Vec<(String, Value)> = plan
                    .ops
                    .iter()
                    .map(|op| {
                        let (m, p, b) = tenure_scim::planned_request(op, &w.profile);
                        (format!("{m} {p}"), b.unwrap_or(Value::Null))
                    })
                    .collect();
                assert_eq!(sent, planned, "{}", plan.user_name);
            }
        }
        // Afterwards the plan has nothing left to do (or refuses again).
        let after = w
            .plan(job.person_id, true)
            .await
            .expect("plan")
            .expect("person");
        assert!(after.ops.is_empty(), "{}: {:?}", plan.user_name, after.ops);
    }
    let refused = w
        .plan(taken.person_id, true)
        .await
        .expect("plan")
        .expect("person");
    assert!(
        matches!(refused.decision, Decision::Refuse(_)),
        "{refused:?}"
    );
}
