//! Group sync, listing and look-ups against SCIM servers that misbehave
//! the way real ones do (the fault modes of tests/peers/scim_faults.py, on
//! top of a real scim2-server), with a fresh database: members returned by
//! userName, a refused `members[value eq …]` removal, 500 on `count`, and a
//! `filter` that is ignored.

mod common;

use std::collections::BTreeSet;

use common::{hire_person, job, Setup};
use serde_json::{json, Value};
use tenure_bus::Job;
use tenure_fanout::Outcome;
use tenure_scim::{MemberKey, Paging, RemoveForm};
use tenure_store::sqlx::{self, PgPool};
use tenure_testkit::ReceivedRequest;
use uuid::Uuid;

async fn setup(faults: &[&str]) -> Setup {
    common::setup(Some(faults)).await
}

const GROUPS: &str = "[[app.group]]\nname = \"dept-{department}\"\n";

/// A hired person with an active entitlement in the wiki.
async fn hire(pool: &PgPool, name: &str, department: &str) -> Job {
    let attributes = json!({
        "given_name": name, "family_name": "Test", "display_name": format!("{name} Test"),
        "email": format!("{}@example.com", name.to_lowercase()), "department": department,
    });
    job(hire_person(pool, &format!("E-{name}"), attributes, "active").await)
}

async fn move_to(pool: &PgPool, job: &Job, department: &str) {
    common::move_to(pool, job.person_id, department).await
}

async fn leave(pool: &PgPool, job: &Job) {
    sqlx::query("DELETE FROM entitlements WHERE app = 'wiki' AND person_id = $1")
        .bind(job.person_id)
        .execute(pool)
        .await
        .expect("leave");
}

/// The group as the server shows it: display name → member values.
async fn remote_groups(s: &Setup) -> Vec<(String, BTreeSet<String>)> {
    let mut out: Vec<(String, BTreeSet<String>)> = s
        .list("Groups")
        .await
        .iter()
        .map(|g| {
            let members = g["members"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|m| m["value"].as_str().map(str::to_owned))
                .collect();
            (
                g["displayName"].as_str().unwrap_or_default().to_owned(),
                members,
            )
        })
        .collect();
    out.sort();
    out
}

fn names(xs: &[&str]) -> BTreeSet<String> {
    xs.iter().map(|s| (*s).to_owned()).collect()
}

fn group_writes(log: &[ReceivedRequest]) -> Vec<&ReceivedRequest> {
    log.iter()
        .filter(|r| r.path.contains("/Groups") && r.method != "GET")
        .collect()
}

async fn app_stream_len(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_id = 'app-wiki'")
        .fetch_one(pool)
        .await
        .expect("count")
}

async fn app_events(pool: &PgPool, kind: &str) -> Vec<Value> {
    sqlx::query_scalar::<_, Value>(
        "SELECT data FROM events WHERE stream_id = 'app-wiki' AND event_type = $1 ORDER BY version",
    )
    .bind(kind)
    .fetch_all(pool)
    .await
    .expect("events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn movers_and_leavers_leave_their_groups_when_members_come_back_by_user_name() {
    let s = setup(&["members-by-username", "reject-member-path-filter"]).await;
    let w = s.worker(GROUPS).await;
    let ada = hire(&s.pool, "Ada", "Eng").await;
    let bob = hire(&s.pool, "Bob", "Eng").await;
    let cy = hire(&s.pool, "Cy", "Ops").await;
    for job in [&ada, &bob, &cy] {
        assert!(matches!(
            w.reconcile(job).await.expect("reconcile"),
            Outcome::Changed(_)
        ));
    }
    let first = w.sync_groups().await.expect("sync");
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    assert_eq!(first.created, 2);
    assert_eq!(
        remote_groups(&s).await,
        vec![
            (
                "dept-Eng".into(),
                names(&["ada@example.com", "bob@example.com"])
            ),
            ("dept-Ops".into(), names(&["cy@example.com"])),
        ]
    );
    // The next sync reads the groups back by userName and finds nothing to
    // do: no re-adds.
    s.server.clear_requests().expect("clear");
    let stream_before = app_stream_len(&s.pool).await;
    let quiet = w.sync_groups().await.expect("sync");
    assert_eq!(quiet.updated, 0, "{quiet:?}");
    assert!(group_writes(&s.server.requests().expect("log")).is_empty());
    assert_eq!(
        app_stream_len(&s.pool).await,
        stream_before,
        "a sync that changes nothing adds nothing to the app's stream"
    );
    assert_eq!(w.client.learned().member_key, Some(MemberKey::UserName));

    // Bob moves to Ops, Cy leaves.
    move_to(&s.pool, &bob, "Ops").await;
    leave(&s.pool, &cy).await;
    s.server.clear_requests().expect("clear");
    for _ in 0..4 {
        let r = w.sync_groups().await.expect("sync");
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.stuck.is_empty(), "{:?}", r.stuck);
    }
    assert_eq!(
        remote_groups(&s).await,
        vec![
            ("dept-Eng".into(), names(&["ada@example.com"])),
            ("dept-Ops".into(), names(&["bob@example.com"])),
        ]
    );
    let log = s.server.requests().expect("log");
    let writes = group_writes(&log);
    // The path-filter removal was refused (400, the fault), then the value
    // list (400: scim2-server only takes the RFC's forms), then a replace of
    // the member list worked and was kept: the second group went straight
    // to it, and every later round is quiet.
    let refused: Vec<_> = writes.iter().filter(|r| r.status == 400).collect();
    assert_eq!(refused.len(), 2, "{writes:#?}");
    assert!(
        writes.len() <= 5,
        "a bounded number of writes over four rounds: {writes:#?}"
    );
    // Nobody is re-added: no `add` operation names Ada (who never moved),
    // and Bob is added once, to Ops.
    let ada_id: String =
        sqlx::query_scalar("SELECT remote_id FROM accounts WHERE app = 'wiki' AND person_id = $1")
            .bind(ada.person_id)
            .fetch_one(&s.pool)
            .await
            .expect("ada");
    let added: Vec<String> = writes
        .iter()
        .filter(|r| r.status < 400)
        .flat_map(|r| r.body["Operations"].as_array().cloned().unwrap_or_default())
        .filter(|op| op["op"] == "add")
        .flat_map(|op| op["value"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v["value"].as_str().map(str::to_owned))
        .collect();
    assert!(!added.contains(&ada_id), "{added:?}");
    assert!(added.len() <= 1, "{added:?}");
    let learned = w.client.learned();
    assert_eq!(
        learned.remove_form,
        RemoveForm::ReplaceMembers,
        "{learned:?}"
    );
    let lessons = app_events(&s.pool, "ServerBehaviourLearned").await;
    let what: Vec<&str> = lessons.iter().filter_map(|e| e["what"].as_str()).collect();
    assert!(
        what.contains(&"member_key") && what.contains(&"remove_form"),
        "{lessons:?}"
    );

    // A new worker (a restart) starts from what was learned: no refused
    // call again.
    let again = s.worker(GROUPS).await;
    move_to(&s.pool, &ada, "Ops").await;
    s.server.clear_requests().expect("clear");
    let r = again.sync_groups().await.expect("sync");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let log = s.server.requests().expect("log");
    assert!(
        group_writes(&log).iter().all(|r| r.status < 400),
        "{log:#?}"
    );
    assert_eq!(again.client.learned().remove_form, learned.remove_form);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_never_converges_is_set_aside_after_the_limit() {
    let s = setup(&["members-by-username"]).await;
    let w = s.worker(GROUPS).await;
    let ada = hire(&s.pool, "Ada", "Eng").await;
    let bob = hire(&s.pool, "Bob", "Eng").await;
    for job in [&ada, &bob] {
        w.reconcile(job).await.expect("reconcile");
    }
    // Tenure forgets the userNames: the server's answer (userNames) can no
    // longer be told apart from strangers, as when Tenure compared ids with
    // userNames and re-added everyone on every sync.
    sqlx::query("UPDATE accounts SET user_name = NULL WHERE app = 'wiki'")
        .execute(&s.pool)
        .await
        .expect("forget");
    let created = w.sync_groups().await.expect("create");
    assert_eq!(created.created, 1);
    s.server.clear_requests().expect("clear");
    let mut stuck = Vec::new();
    for _ in 0..6 {
        let r = w.sync_groups().await.expect("sync");
        stuck = r.stuck;
    }
    let writes = group_writes(&s.server.requests().expect("log"))
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    // The default limit: three syncs send the same change, then nothing.
    assert!(
        !writes.is_empty() && writes.len() <= 3 * 2,
        "writes: {writes:#?}"
    );
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    assert_eq!(stuck[0].name, "dept-Eng");
    assert!(stuck[0].reason.contains("3 syncs"), "{}", stuck[0].reason);
    let parked = app_events(&s.pool, "GroupNotConverging").await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0]["group"], "dept-Eng");
    assert_eq!(w.stuck_groups().await.expect("stuck").len(), 1);

    // Redriven, it gets the limit again and is set aside again.
    assert_eq!(
        w.redrive_groups(&[]).await.expect("redrive"),
        vec!["dept-Eng".to_string()]
    );
    assert!(w.stuck_groups().await.expect("stuck").is_empty());
    s.server.clear_requests().expect("clear");
    for _ in 0..5 {
        w.sync_groups().await.expect("sync");
    }
    let writes = group_writes(&s.server.requests().expect("log")).len();
    assert!(writes > 0 && writes <= 3 * 2, "{writes}");
    assert_eq!(app_events(&s.pool, "GroupRedriven").await.len(), 1);
    assert_eq!(app_events(&s.pool, "GroupNotConverging").await.len(), 2);

    // A configuration change lets it be tried again.
    let changed = s.worker(&format!("group_repeat_limit = 1\n{GROUPS}")).await;
    s.server.clear_requests().expect("clear");
    let r = changed.sync_groups().await.expect("sync");
    assert!(r.stuck.is_empty(), "tried again after the change: {r:?}");
    let r = changed.sync_groups().await.expect("sync");
    assert_eq!(r.stuck.len(), 1, "and set aside after one sync: {r:?}");
    assert_eq!(app_events(&s.pool, "GroupRedriven").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_and_group_listing_page_without_count_when_count_fails() {
    let s = setup(&["count-500"]).await;
    let w = s.worker("").await;
    for name in ["Ada", "Bob", "Cy"] {
        let job = hire(&s.pool, name, "Eng").await;
        w.reconcile(&job).await.expect("reconcile");
    }
    let report = w.sweep(false).await.expect("sweep");
    assert_eq!(report.listed, 3);
    assert_eq!(report.managed, 3);
    assert_eq!(report.learned.len(), 1, "{:?}", report.learned);
    assert_eq!(report.learned[0].what, "paging");
    assert!(
        report.learned[0].reason.contains("500"),
        "{:?}",
        report.learned
    );
    assert_eq!(w.client.learned().paging, Paging::StartIndexOnly);
    let events = app_events(&s.pool, "ServerBehaviourLearned").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["value"], "start_index_only");

    // Later listings (a restarted worker too) send no `count` at all.
    let again = s.worker("").await;
    s.server.clear_requests().expect("clear");
    let report = again.sweep(false).await.expect("sweep");
    assert_eq!(report.listed, 3);
    assert!(report.learned.is_empty());
    let (groups, _) = again.client.list_all_groups(2).await.expect("groups");
    assert!(groups.is_empty());
    let log = s.server.requests().expect("log");
    assert!(!log.is_empty());
    for r in &log {
        assert!(!r.query.contains("count="), "{r:?}");
        assert_eq!(r.status, 200, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_filter_cannot_make_tenure_link_the_wrong_account() {
    let s = setup(&["no-filter"]).await;
    // Accounts that exist before Tenure: two strangers and Bob's.
    let mut existing = Vec::new();
    for user_name in ["zed@example.com", "bob@example.com", "yan@example.com"] {
        let created: Value = reqwest::Client::new()
            .post(format!("{}/Users", s.url()))
            .bearer_auth(&s.server.token)
            .header("content-type", "application/scim+json")
            .body(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                       "userName": user_name})
                .to_string(),
            )
            .send()
            .await
            .expect("seed")
            .json()
            .await
            .expect("json");
        existing.push(created["id"].as_str().expect("id").to_owned());
    }
    let w = s.worker("").await;
    let ada = hire(&s.pool, "Ada", "Eng").await;
    let bob = hire(&s.pool, "Bob", "Eng").await;
    // Ada has no account: the first user of the unfiltered answer is not
    // taken for hers, one is created.
    assert!(matches!(
        w.reconcile(&ada).await.expect("ada"),
        Outcome::Changed(_)
    ));
    let linked = |person: Uuid| {
        let pool = s.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT remote_id FROM accounts WHERE app = 'wiki' AND person_id = $1",
            )
            .bind(person)
            .fetch_one(&pool)
            .await
            .expect("account")
        }
    };
    let ada_id = linked(ada.person_id).await.expect("ada linked");
    assert!(!existing.contains(&ada_id), "Ada got a stranger's account");
    // Bob's pre-existing account is found among everyone the server sent.
    w.reconcile(&bob).await.expect("bob");
    assert_eq!(
        linked(bob.person_id).await.as_deref(),
        Some(existing[1].as_str())
    );
    assert!(w.client.learned().filter_ignored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nextcloud_profile_puts_groups_as_json_and_leaves_admin_alone() {
    let s = setup(&["no-patch-groups", "content-type-json-only"]).await;
    // The app's own admin group, with its administrator in it.
    let admin: Value = reqwest::Client::new()
        .post(format!("{}/Groups", s.url()))
        .bearer_auth(&s.server.token)
        .header("content-type", "application/json")
        .body(
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                     "displayName": "admin", "members": []})
            .to_string(),
        )
        .send()
        .await
        .expect("seed admin")
        .json()
        .await
        .expect("json");
    let w = s.worker(
        "profile = \"nextcloud\"\n[[app.group]]\nname = \"dept-{department}\"\n[[app.group]]\nname = \"admin\"\nrule = 'person.department == \"Eng\"'\n",
    )
    .await;
    let ada = hire(&s.pool, "Ada", "Eng").await;
    let bob = hire(&s.pool, "Bob", "Eng").await;
    for job in [&ada, &bob] {
        assert!(matches!(
            w.reconcile(job).await.expect("reconcile"),
            Outcome::Changed(_)
        ));
    }
    let r = w.sync_groups().await.expect("sync");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.created, 1, "groups are created");
    assert_eq!(r.protected, ["admin"]);
    move_to(&s.pool, &bob, "Ops").await;
    let r = w.sync_groups().await.expect("sync");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let groups = remote_groups(&s).await;
    let ids = |name: &str| {
        groups
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m.len())
            .unwrap_or(usize::MAX)
    };
    assert_eq!(ids("dept-Eng"), 1);
    assert_eq!(ids("dept-Ops"), 1);
    assert_eq!(ids("admin"), 0, "admin is never changed");
    let log = s.server.requests().expect("log");
    for r in &log {
        assert!(r.status < 400, "nothing refused: {r:?}");
        if r.path.contains("/Groups") {
            assert_ne!(r.method, "PATCH", "{r:?}");
            assert!(
                !r.path.ends_with(admin["id"].as_str().unwrap_or("-")) || r.method == "GET",
                "{r:?}"
            );
        }
        if let Some(ct) = &r.content_type {
            assert_eq!(ct, "application/json", "{r:?}");
        }
    }
    assert!(log
        .iter()
        .any(|r| r.method == "PUT" && r.path.contains("/Groups/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_filter_groups_are_found_by_listing_even_when_count_fails() {
    let s = setup(&["count-500"]).await;
    // A server Tenure may not filter: groups are found by listing them.
    let profile =
        "profile = { extends = \"generic\", discovery = false, assumed = { filter = false } }\n";
    let w = s.worker(&format!("{profile}{GROUPS}")).await;
    let ada = hire(&s.pool, "Ada", "Eng").await;
    w.reconcile(&ada).await.expect("reconcile");
    let r = w.sync_groups().await.expect("sync");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.created, 1);
    // Looking for the group in the list taught that `count` fails.
    assert!(r.learned.iter().any(|l| l.what == "paging"), "{r:?}");
    // Tenure loses its record of the group: the next sync must find it in
    // the list, not create a second one.
    sqlx::query("DELETE FROM app_groups")
        .execute(&s.pool)
        .await
        .expect("forget");
    let r = w.sync_groups().await.expect("sync");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.created, 0, "{r:?}");
    assert_eq!(remote_groups(&s).await.len(), 1);
    assert_eq!(w.client.learned().paging, Paging::StartIndexOnly);
}
