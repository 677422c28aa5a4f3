//! `tenure replay app` on a real scim2-server and a fresh database: after
//! hires, movers and leavers, a wiped tenant is rebuilt to exactly the
//! accounts and groups history wants (none twice, the new ids recorded),
//! accounts of leavers restored active from an old backup are switched off,
//! a second run sends no write, a dry run sends none at all, and large
//! deprovisions stay behind the mass-change guard.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{hire_person, job, move_to, set_entitlement, Setup};
use serde_json::{json, Value};
use tenure_fanout::replay_app::Effect;
use tenure_fanout::{AppWorker, Outcome};
use tenure_store::sqlx::{self, PgPool};
use uuid::Uuid;

/// Persons hired before the app is lost (the issue asks for 50; the run
/// stays well under half a minute on two cores).
const HIRES: usize = 50;
const DEPARTMENTS: [&str; 3] = ["Eng", "Sales", "Ops"];
const GROUPS: &str = "[[app.group]]\nname = \"dept-{department}\"\n";

async fn setup() -> Setup {
    // No faults: started this way so the server logs what it received.
    common::setup(Some(&[])).await
}

async fn worker(s: &Setup) -> AppWorker {
    s.worker(GROUPS).await
}

fn email(n: usize) -> String {
    format!("p{n}@example.com")
}

async fn hire(pool: &PgPool, n: usize) -> Uuid {
    let attributes = json!({
        "given_name": "Pat", "family_name": format!("Person{n}"),
        "display_name": format!("Pat Person{n}"), "email": email(n),
        "department": DEPARTMENTS[n % DEPARTMENTS.len()],
    });
    hire_person(pool, &format!("E-{n}"), attributes, "active").await
}

async fn leave(pool: &PgPool, person: Uuid) {
    set_entitlement(pool, person, "revoked").await
}

async fn list(s: &Setup, kind: &str) -> Vec<Value> {
    s.list(&format!("{kind}?count=1000")).await
}

/// Deletes every user and group of the tenant, as a lost or reset app.
async fn wipe(s: &Setup) {
    for kind in ["Groups", "Users"] {
        for r in list(s, kind).await {
            let id = r["id"].as_str().expect("id");
            let status = s
                .http
                .delete(format!("{}/{kind}/{id}", s.url()))
                .bearer_auth(&s.server.token)
                .send()
                .await
                .expect("delete")
                .status();
            assert!(status.is_success(), "{kind}/{id}: {status}");
        }
    }
    assert!(list(s, "Users").await.is_empty());
}

/// An account as an old backup holds it: the person's, active.
async fn restore(s: &Setup, person: Uuid, user_name: &str) {
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name, "externalId": person.to_string(), "active": true,
        "name": {"givenName": "Pat", "familyName": "Restored"},
    });
    let status = s
        .http
        .post(format!("{}/Users", s.url()))
        .bearer_auth(&s.server.token)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .expect("restore")
        .status();
    assert_eq!(status, 201);
}

/// userName → (id, active) of the tenant's users; fails on a duplicate.
async fn users(s: &Setup) -> BTreeMap<String, (String, bool)> {
    let mut out = BTreeMap::new();
    for u in list(s, "Users").await {
        let name = u["userName"].as_str().expect("userName").to_lowercase();
        let id = u["id"].as_str().expect("id").to_owned();
        let active = u["active"].as_bool().unwrap_or(true);
        assert!(
            out.insert(name.clone(), (id, active)).is_none(),
            "{name} twice"
        );
    }
    out
}

/// displayName → member ids of the tenant's groups; fails on a duplicate.
async fn groups(s: &Setup) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for g in list(s, "Groups").await {
        let name = g["displayName"].as_str().expect("displayName").to_owned();
        let members = g["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["value"].as_str().map(str::to_owned))
            .collect();
        assert!(out.insert(name.clone(), members).is_none(), "{name} twice");
    }
    out
}

/// person → remote id as the accounts projection records it.
async fn linked(pool: &PgPool) -> BTreeMap<Uuid, String> {
    sqlx::query_as::<_, (Uuid, Option<String>)>(
        "SELECT person_id, remote_id FROM accounts WHERE app = 'wiki'",
    )
    .fetch_all(pool)
    .await
    .expect("accounts")
    .into_iter()
    .filter_map(|(p, r)| r.map(|r| (p, r)))
    .collect()
}

struct History {
    /// person → (email, department) of everyone still employed.
    staying: BTreeMap<Uuid, (String, String)>,
    /// person → email of the leavers.
    leavers: BTreeMap<Uuid, String>,
}

/// HIRES hires reconciled, every fifth moved to another department, every
/// seventh gone; all reconciled and the groups synced, as the fanout would.
async fn history(s: &Setup, w: &AppWorker) -> History {
    let mut staying = BTreeMap::new();
    let mut leavers = BTreeMap::new();
    let mut people = Vec::new();
    for n in 0..HIRES {
        let p = hire(&s.pool, n).await;
        assert_eq!(
            w.reconcile(&job(p)).await.expect("hire"),
            Outcome::Changed(vec!["AccountCreated"])
        );
        people.push((n, p));
    }
    w.sync_groups().await.expect("groups");
    for &(n, p) in &people {
        let mut dept = DEPARTMENTS[n % DEPARTMENTS.len()].to_string();
        if n % 7 == 3 {
            leave(&s.pool, p).await;
            leavers.insert(p, email(n));
        } else if n % 5 == 1 {
            dept = DEPARTMENTS[(n + 1) % DEPARTMENTS.len()].to_string();
            move_to(&s.pool, p, &dept).await;
        }
        if n % 7 == 3 || n % 5 == 1 {
            assert!(matches!(
                w.reconcile(&job(p)).await.expect("change"),
                Outcome::Changed(_)
            ));
        }
        if n % 7 != 3 {
            staying.insert(p, (email(n), dept));
        }
    }
    let r = w.sync_groups().await.expect("groups");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    History { staying, leavers }
}

/// The tenant holds one active account per person still employed, with the
/// id Tenure recorded, nothing for anyone else unless `inactive` names
/// it, and each department group exactly with its members.
async fn holds_exactly(s: &Setup, h: &History, inactive: &BTreeSet<String>) {
    let users = users(s).await;
    let links = linked(&s.pool).await;
    let want: BTreeSet<String> = h
        .staying
        .values()
        .map(|(e, _)| e.clone())
        .chain(inactive.iter().cloned())
        .collect();
    assert_eq!(users.keys().cloned().collect::<BTreeSet<_>>(), want);
    let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (p, (email, dept)) in &h.staying {
        let (id, active) = &users[email];
        assert!(active, "{email} must be active");
        assert_eq!(links.get(p), Some(id), "{email}: recorded id");
        members
            .entry(format!("dept-{dept}"))
            .or_default()
            .insert(id.clone());
    }
    for e in inactive {
        assert!(!users[e].1, "{e} must be inactive");
    }
    assert_eq!(groups(s).await, members);
}

fn writes(s: &Setup) -> Vec<String> {
    s.server
        .requests()
        .expect("requests")
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

async fn app_events(pool: &PgPool) -> Vec<(String, Value, Uuid)> {
    sqlx::query_as::<_, (String, Value, String)>(
        "SELECT event_type, data, metadata->>'correlation_id' FROM events
         WHERE stream_id = 'app-wiki' AND event_type LIKE 'AppReplay%' ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .expect("events")
    .into_iter()
    .map(|(k, d, c)| (k, d, c.parse().expect("uuid")))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_app_is_rebuilt_a_restored_backup_is_switched_off_and_a_rerun_changes_nothing() {
    let s = setup().await;
    let w = worker(&s).await;
    let h = history(&s, &w).await;
    assert!(!h.leavers.is_empty() && h.staying.len() > h.leavers.len());
    holds_exactly(&s, &h, &h.leavers.values().cloned().collect()).await;

    // The app is lost. A dry run plans the rebuild and sends nothing.
    wipe(&s).await;
    s.server.clear_requests().expect("clear");
    let plan = w.replay_app(true).await.expect("dry run");
    assert_eq!(writes(&s), Vec::<String>::new());
    assert_eq!(plan.counts.created, h.staying.len(), "{:?}", plan.counts);
    // The plan counts what the run will record: the leavers' links to
    // accounts the wipe took are forgotten.
    assert_eq!(plan.counts.deleted, h.leavers.len(), "{:?}", plan.counts);
    assert!(plan
        .persons
        .iter()
        .filter(|p| p.effect == Effect::Created)
        .all(|p| p.detail.iter().any(|d| d.starts_with("POST "))));
    assert_eq!(plan.groups.missing.len(), DEPARTMENTS.len());
    assert!(
        app_events(&s.pool).await.is_empty(),
        "a dry run records nothing"
    );

    let run = w.replay_app(false).await.expect("replay");
    assert_eq!(run.counts.created, h.staying.len(), "{:?}", run.counts);
    // The leavers' accounts are gone and none is wanted: forgotten.
    assert_eq!(run.counts.deleted, h.leavers.len(), "{:?}", run.counts);
    assert_eq!(run.counts.failed + run.counts.held, 0, "{:?}", run.persons);
    assert_eq!(run.groups.created, DEPARTMENTS.len());
    holds_exactly(&s, &h, &BTreeSet::new()).await;
    let links = linked(&s.pool).await;
    for p in h.leavers.keys() {
        assert!(!links.contains_key(p), "the gone account is forgotten");
        let forgot: Option<Value> = sqlx::query_scalar(
            "SELECT data FROM events WHERE stream_id = $1 AND event_type = 'AccountDeleted'
             ORDER BY version DESC LIMIT 1",
        )
        .bind(tenure_fanout::account_stream("wiki", *p))
        .fetch_optional(&s.pool)
        .await
        .expect("event");
        assert_eq!(forgot.map(|d| d["observed"].clone()), Some(json!(true)));
    }
    let events = app_events(&s.pool).await;
    assert_eq!(
        events.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["AppReplayStarted", "AppReplayFinished"]
    );
    assert!(events.iter().all(|e| e.2 == run.correlation_id));
    assert_eq!(events[1].1["counts"]["created"], h.staying.len());
    // Every account event of the run carries its correlation id.
    let carried: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'AccountCreated'
         AND metadata->>'correlation_id' = $1",
    )
    .bind(run.correlation_id.to_string())
    .fetch_one(&s.pool)
    .await
    .expect("count");
    assert_eq!(carried as usize, h.staying.len());

    // An old backup is restored: the leavers' accounts come back, active.
    for (p, e) in &h.leavers {
        restore(&s, *p, e).await;
    }
    let run = w.replay_app(false).await.expect("replay after restore");
    assert_eq!(run.counts.deactivated, h.leavers.len(), "{:?}", run.persons);
    assert_eq!(run.counts.unchanged, h.staying.len(), "{:?}", run.counts);
    holds_exactly(&s, &h, &h.leavers.values().cloned().collect()).await;

    // Again: nothing left to do, and not one write sent.
    s.server.clear_requests().expect("clear");
    let again = w.replay_app(false).await.expect("second replay");
    assert_eq!(writes(&s), Vec::<String>::new());
    assert_eq!(
        again.counts.unchanged,
        h.staying.len() + h.leavers.len(),
        "{:?}",
        again.counts
    );
    assert_eq!(
        again.counts.created
            + again.counts.updated
            + again.counts.deactivated
            + again.counts.deleted
            + again.counts.held
            + again.counts.failed,
        0,
        "{:?}",
        again.counts
    );
    assert_eq!(again.groups.created + again.groups.updated, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_would_switch_off_many_accounts_is_held_by_the_guard() {
    let s = setup().await;
    let w = worker(&s).await;
    let mut people = Vec::new();
    for n in 0..20 {
        let p = hire(&s.pool, n).await;
        w.reconcile(&job(p)).await.expect("hire");
        people.push(p);
    }
    // Eight leave at once (e.g. a bad HR export): more than a quarter of
    // the app's accounts and more than `min_count`.
    for p in &people[..8] {
        leave(&s.pool, *p).await;
    }
    let run = w.replay_app(false).await.expect("replay");
    let guard = tenure_config::MassChangeGuard::default();
    assert_eq!(
        run.counts.deactivated, guard.min_count as usize,
        "{:?}",
        run.counts
    );
    assert_eq!(run.counts.held, 8 - guard.min_count as usize);
    let active = users(&s)
        .await
        .values()
        .filter(|(_, active)| *active)
        .count();
    assert_eq!(active, 20 - guard.min_count as usize);
    let finished = app_events(&s.pool).await;
    assert_eq!(finished[1].1["held"].as_array().map(Vec::len), Some(3));
}
