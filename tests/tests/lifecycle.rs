//! Future-dated lifecycle end to end: real NATS, PostgreSQL and scim2-server,
//! with engines running in this process on a clock the tests move forward.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::time::Duration;
use tenure_e2e::{wait_for, Options, Stack};
use tenure_engine::ManualClock;

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("instant")
}

fn record(id: &str, given: &str, family: &str, tz: &str, fields: Value) -> Value {
    let mut r = json!({
        "person_id": id,
        "given_name": given,
        "family_name": family,
        "work_email": format!("{}.{}@example.com", given.to_lowercase(), family.to_lowercase()),
        "department": "Engineering",
        "time_zone": tz,
        "employment_status": "active",
        "start_date": "2026-01-05",
        "effective_at": "2026-01-01T09:00:00Z",
    });
    if let (Some(o), Some(extra)) = (r.as_object_mut(), fields.as_object()) {
        for (k, v) in extra {
            o.insert(k.clone(), v.clone());
        }
    }
    r
}

async fn stack(wiki: &str) -> anyhow::Result<Stack> {
    let mut stack = Stack::with_options(Options {
        engine: "scheduler_poll_ms = 50".into(),
        wiki: wiki.into(),
        ..Options::default()
    })
    .await?;
    stack.start_without_engine().await?;
    Ok(stack)
}

async fn count(stack: &Stack, sql: &str) -> anyhow::Result<i64> {
    stack.psql_count(sql).await
}

/// Nothing must happen for a while: checked for `ms` milliseconds.
async fn stays_absent(stack: &Stack, tenant: &str, user: &str, ms: u64) -> anyhow::Result<()> {
    let until = std::time::Instant::now() + Duration::from_millis(ms);
    while std::time::Instant::now() < until {
        let u = stack.scim_user(tenant, user).await?;
        anyhow::ensure!(u.is_none(), "{user} appeared in {tenant} too early: {u:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_hire_is_pre_provisioned_then_activated_at_the_local_start_of_day(
) -> anyhow::Result<()> {
    let stack = stack("pre_provision_days = 1").await?;
    let clock = ManualClock::at(utc("2026-03-01T12:00:00Z"));
    let _engine = stack.spawn_engine(clock.clock()).await?;

    let ana = record(
        "E-1",
        "Ana",
        "Silva",
        "Europe/Berlin",
        json!({"start_date": "2026-03-03", "effective_at": "2026-02-20T09:00:00Z"}),
    );
    stack.send(&ana, "hire-ana").await?;
    wait_for(Duration::from_secs(30), || async {
        Ok(count(
            &stack,
            "SELECT count(*) FROM events WHERE event_type = 'HireScheduled'",
        )
        .await?
            == 1)
    })
    .await?;

    // The schedule shows the start in UTC and on the person's wall clock.
    let out = stack.tenure(&["schedule", "list"]).output()?;
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("start")
            && listing.contains("2026-03-02 23:00:00")
            && listing.contains("2026-03-03 00:00:00 CET"),
        "{listing}"
    );
    assert!(
        listing.contains("pre_provision") && listing.contains("2026-03-01 23:00:00"),
        "{listing}"
    );

    stays_absent(&stack, &stack.wiki_tenant, "ana.silva@example.com", 400).await?;
    clock.set(utc("2026-03-01T22:59:59Z"));
    stays_absent(&stack, &stack.wiki_tenant, "ana.silva@example.com", 400).await?;

    // One day ahead of the start: created, but inactive.
    clock.set(utc("2026-03-01T23:00:00Z"));
    let early = stack
        .wait_user(&stack.wiki_tenant, "ana.silva@example.com", |u| u.is_some())
        .await?;
    assert_eq!(
        early.as_ref().map(|u| u["active"].clone()),
        Some(json!(false))
    );
    stays_absent(&stack, &stack.git_tenant, "ana.silva", 300).await?;

    clock.set(utc("2026-03-02T22:59:59Z"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        stack
            .scim_user(&stack.wiki_tenant, "ana.silva@example.com")
            .await?
            .map(|u| u["active"].clone()),
        Some(json!(false))
    );

    // Midnight in Berlin: active everywhere she is entitled to.
    clock.set(utc("2026-03-02T23:00:00Z"));
    let live = stack
        .wait_user(&stack.wiki_tenant, "ana.silva@example.com", |u| {
            u.is_some_and(|u| u["active"] == true)
        })
        .await?;
    assert_eq!(
        live.map(|u| u["id"].clone()),
        early.map(|u| u["id"].clone()),
        "the pre-provisioned account is activated, not replaced"
    );
    stack
        .wait_user(&stack.git_tenant, "ana.silva", |u| {
            u.is_some_and(|u| u["active"] == true)
        })
        .await?;
    assert_eq!(
        count(
            &stack,
            "SELECT count(*) FROM events WHERE event_type = 'PersonHired'"
        )
        .await?,
        1
    );
    assert_eq!(
        count(&stack, "SELECT count(*) FROM schedules").await?,
        0,
        "nothing left to fire"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_friday_last_day_ends_at_local_midnight_and_a_cancelled_one_leaves_no_trace(
) -> anyhow::Result<()> {
    let stack = stack("").await?;
    let clock = ManualClock::at(utc("2026-05-20T12:00:00Z"));
    let _engine = stack.spawn_engine(clock.clock()).await?;

    let bo = record("E-2", "Bo", "Berg", "America/New_York", json!({}));
    let dee = record("E-3", "Dee", "Diaz", "America/New_York", json!({}));
    stack.send(&bo, "hire-bo").await?;
    stack.send(&dee, "hire-dee").await?;
    stack
        .wait_user(&stack.git_tenant, "bo.berg", |u| u.is_some())
        .await?;
    stack
        .wait_user(&stack.git_tenant, "dee.diaz", |u| u.is_some())
        .await?;

    // Both get Friday 29 May as last day; Dee's is withdrawn on Tuesday.
    let friday = json!({"end_date": "2026-05-29", "effective_at": "2026-05-20T12:00:00Z"});
    stack
        .send(
            &record("E-2", "Bo", "Berg", "America/New_York", friday.clone()),
            "last-day-bo",
        )
        .await?;
    stack
        .send(
            &record("E-3", "Dee", "Diaz", "America/New_York", friday),
            "last-day-dee",
        )
        .await?;
    clock.set(utc("2026-05-26T14:00:00Z"));
    stack
        .send(
            &record(
                "E-3",
                "Dee",
                "Diaz",
                "America/New_York",
                json!({"effective_at": "2026-05-26T14:00:00Z"}),
            ),
            "stays-dee",
        )
        .await?;
    wait_for(Duration::from_secs(30), || async {
        Ok(count(
            &stack,
            "SELECT count(*) FROM events WHERE event_type = 'TerminationCancelled'",
        )
        .await?
            == 1)
    })
    .await?;

    // Friday 23:59:59 in New York is 03:59:59 UTC on Saturday.
    clock.set(utc("2026-05-30T03:59:59Z"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        stack
            .scim_user(&stack.wiki_tenant, "bo.berg@example.com")
            .await?
            .map(|u| u["active"].clone()),
        Some(json!(true))
    );
    assert!(stack
        .scim_user(&stack.git_tenant, "bo.berg")
        .await?
        .is_some());

    clock.set(utc("2026-05-30T04:00:00Z"));
    stack
        .wait_user(&stack.wiki_tenant, "bo.berg@example.com", |u| {
            u.is_some_and(|u| u["active"] == false)
        })
        .await?;
    stack
        .wait_user(&stack.git_tenant, "bo.berg", |u| u.is_none())
        .await?;

    // Dee: still there, active, and no deactivation was ever sent.
    clock.set(utc("2026-06-02T12:00:00Z"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        stack
            .scim_user(&stack.wiki_tenant, "dee.diaz@example.com")
            .await?
            .map(|u| u["active"].clone()),
        Some(json!(true))
    );
    assert!(stack
        .scim_user(&stack.git_tenant, "dee.diaz")
        .await?
        .is_some());
    let dee_id = stack.api("/v1/persons/E-3").await?["person"]["person_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let downstream = count(
        &stack,
        &format!("SELECT count(*) FROM events WHERE metadata->>'person_id' = '{dee_id}' AND event_type IN ('AccountDeactivated', 'AccountDeleted', 'PersonTerminated')"),
    )
    .await?;
    assert_eq!(downstream, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescinded_hire_leaves_no_trace_downstream() -> anyhow::Result<()> {
    let stack = stack("pre_provision_days = 7").await?;
    let clock = ManualClock::at(utc("2026-02-25T12:00:00Z"));
    let _engine = stack.spawn_engine(clock.clock()).await?;

    // Chen is within the pre-provisioning window: an inactive account exists.
    let chen = record(
        "E-4",
        "Chen",
        "Wu",
        "Europe/Berlin",
        json!({"start_date": "2026-03-03", "effective_at": "2026-02-20T09:00:00Z"}),
    );
    stack.send(&chen, "hire-chen").await?;
    stack
        .wait_user(&stack.wiki_tenant, "chen.wu@example.com", |u| {
            u.is_some_and(|u| u["active"] == false)
        })
        .await?;
    // Eve starts later: nothing exists yet.
    let eve = record(
        "E-5",
        "Eve",
        "Ek",
        "Europe/Berlin",
        json!({"start_date": "2026-04-01", "effective_at": "2026-02-20T09:00:00Z"}),
    );
    stack.send(&eve, "hire-eve").await?;

    let rescind = |r: &Value| {
        let mut r = r.clone();
        r["employment_status"] = "rescinded".into();
        r["effective_at"] = "2026-02-26T09:00:00Z".into();
        r
    };
    clock.set(utc("2026-02-26T09:00:00Z"));
    stack.send(&rescind(&chen), "rescind-chen").await?;
    stack.send(&rescind(&eve), "rescind-eve").await?;
    stack
        .wait_user(&stack.wiki_tenant, "chen.wu@example.com", |u| u.is_none())
        .await?;

    // Past both start dates nothing comes back.
    clock.set(utc("2026-04-02T12:00:00Z"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stack.scim_users(&stack.wiki_tenant).await?.is_empty());
    assert!(stack.scim_users(&stack.git_tenant).await?.is_empty());
    assert_eq!(
        count(
            &stack,
            "SELECT count(*) FROM events WHERE event_type = 'HireRescinded'"
        )
        .await?,
        2
    );
    assert_eq!(
        count(
            &stack,
            "SELECT count(*) FROM events WHERE event_type = 'PersonHired'"
        )
        .await?,
        0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_never_fire_one_schedule_twice() -> anyhow::Result<()> {
    const N: usize = 30;
    let stack = stack("").await?;
    let clock = ManualClock::at(utc("2026-03-01T12:00:00Z"));
    let _a = stack.spawn_engine(clock.clock()).await?;
    let _b = stack.spawn_engine(clock.clock()).await?;
    for i in 0..N {
        let r = record(
            &format!("E-{}", 100 + i),
            "Kai",
            &format!("Start{i}"),
            "Europe/Berlin",
            json!({"start_date": "2026-03-03", "effective_at": "2026-02-20T09:00:00Z"}),
        );
        stack.send(&r, &format!("hire-{i}")).await?;
    }
    wait_for(Duration::from_secs(30), || async {
        Ok(count(
            &stack,
            "SELECT count(*) FROM events WHERE event_type = 'HireScheduled'",
        )
        .await?
            == N as i64)
    })
    .await?;
    clock.set(utc("2026-03-02T23:00:00Z"));
    wait_for(Duration::from_secs(60), || async {
        Ok(stack.scim_users(&stack.wiki_tenant).await?.len() == N
            && stack.scim_users(&stack.git_tenant).await?.len() == N)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count(
            &stack,
            "SELECT count(*) FROM events WHERE event_type = 'PersonHired'"
        )
        .await?,
        N as i64
    );
    assert_eq!(
        count(
            &stack,
            "SELECT count(*) FROM events WHERE event_type = 'EntitlementChanged'"
        )
        .await?,
        2 * N as i64
    );
    assert_eq!(
        count(
            &stack,
            "SELECT count(*) FROM events WHERE event_type = 'AccountCreated'"
        )
        .await?,
        2 * N as i64
    );
    assert_eq!(count(&stack, "SELECT count(*) FROM schedules").await?, 0);
    Ok(())
}
