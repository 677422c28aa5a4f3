//! Delivery that survives a misbehaving app: a fault-injecting proxy sits
//! between Tenure and a real scim2-server (the wiki app).

use std::collections::HashSet;
use std::time::Duration;
use tenure_e2e::{person, wait_for, Options, Stack, TEST_FANOUT};
use tenure_testkit::fault::{Fault, FaultProxy};

async fn stack(fanout_extra: &str) -> anyhow::Result<Stack> {
    let stack = Stack::with_options(Options {
        fanout: format!("{TEST_FANOUT}{fanout_extra}"),
        proxy_wiki: true,
        ..Options::default()
    })
    .await?;
    Ok(stack)
}

fn proxy(stack: &Stack) -> anyhow::Result<&FaultProxy> {
    stack
        .proxy
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no proxy"))
}

async fn events(stack: &Stack, kind: &str) -> anyhow::Result<i64> {
    stack
        .psql_count(&format!(
            "SELECT count(*) FROM events WHERE event_type = '{kind}'"
        ))
        .await
}

async fn hire(stack: &Stack, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        let p = person(
            &format!("E-{i}"),
            "Fay",
            &format!("Fault{i}"),
            "Engineering",
            "active",
            "2026-01-02T09:00:00Z",
        );
        stack.send(&p, &format!("hire-{i}")).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_at_the_app_are_retried_until_it_converges_and_every_call_is_audited(
) -> anyhow::Result<()> {
    let mut stack = stack("").await?;
    let p = proxy(&stack)?.clone();
    stack.start_core().await?;
    stack.start_fanout()?;
    // Let discovery (GET /ServiceProviderConfig at start) through first.
    wait_for(Duration::from_secs(30), || async {
        Ok(!p.seen().is_empty())
    })
    .await?;
    p.push([
        Fault::Status(503, Some(1)),
        Fault::Status(500, None),
        Fault::Drop,
        Fault::Status(429, Some(1)),
        Fault::Delay(Duration::from_millis(300)),
        Fault::Status(502, None),
    ]);
    const N: usize = 6;
    hire(&stack, N).await?;
    wait_for(Duration::from_secs(60), || async {
        Ok(stack.scim_users(&stack.wiki_tenant).await?.len() >= N)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let users = stack.scim_users(&stack.wiki_tenant).await?;
    assert_eq!(
        users.len(),
        N,
        "one account per person, none lost, none doubled"
    );
    let ids: HashSet<&str> = users
        .iter()
        .filter_map(|u| u["externalId"].as_str())
        .collect();
    assert_eq!(ids.len(), N);
    assert_eq!(
        stack.scim_users(&stack.git_tenant).await?.len(),
        N,
        "the healthy app was not held up"
    );

    // Every injected failure is in the event store with what the app said.
    let statuses: Vec<Option<i64>> = {
        let out = std::process::Command::new("psql")
            .args(["-tA", "-h", "127.0.0.1", "-U", "postgres", "-d", &stack.db.name, "-c",
                "SELECT coalesce(data->>'status', 'none') FROM events WHERE event_type = 'ScimCallFailed' AND metadata->>'app' = 'wiki' ORDER BY global_position"])
            .output()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().parse().ok())
            .collect()
    };
    for expected in [Some(503), Some(500), None, Some(429), Some(502)] {
        assert!(
            statuses.contains(&expected),
            "failed call with status {expected:?} is audited: {statuses:?}"
        );
    }
    let seen = p.seen();
    assert!(
        seen.iter().filter(|(_, _, s)| *s == Some(503)).count() == 1
            && seen.iter().any(|(_, _, s)| s.is_none()),
        "{seen:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_app_opens_the_circuit_which_closes_after_recovery() -> anyhow::Result<()> {
    let mut stack = stack("max_attempts = 1\nbreaker_failures = 2\nbreaker_cooldown_ms = 300\nbreaker_max_cooldown_ms = 600\nmax_deliver = 100\n").await?;
    let p = proxy(&stack)?.clone();
    p.set_default(Fault::Status(500, None));
    stack.start_core().await?;
    stack.start_fanout()?;
    hire(&stack, 3).await?;
    wait_for(Duration::from_secs(30), || async {
        Ok(events(&stack, "CircuitOpened").await? >= 1)
    })
    .await?;

    // While open, the app is only probed, not hammered.
    let before = p.seen().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = p.seen().len() - before;
    assert!(
        during <= 12,
        "{during} requests reached the failing app in 1.5 s with the circuit open"
    );

    p.set_default(Fault::Pass);
    wait_for(Duration::from_secs(60), || async {
        Ok(stack.scim_users(&stack.wiki_tenant).await?.len() == 3)
    })
    .await?;
    wait_for(Duration::from_secs(10), || async {
        Ok(events(&stack, "CircuitClosed").await? >= 1)
    })
    .await?;
    let app_stream = stack
        .psql_count("SELECT count(*) FROM events WHERE stream_id = 'app-wiki'")
        .await?;
    assert!(
        app_stream >= 2,
        "circuit transitions are audited on the app's stream"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_exhausted_jobs_go_to_the_dlq_and_redrive_once_fixed() -> anyhow::Result<()> {
    let mut stack = stack("max_attempts = 1\nmax_deliver = 2\nbreaker_failures = 100\n").await?;
    let p = proxy(&stack)?.clone();
    // The app refuses creates outright (a 400 is not worth retrying).
    p.set_default(Fault::StatusFor("POST".into(), 400));
    stack.start_core().await?;
    stack.start_fanout()?;
    hire(&stack, 1).await?;
    wait_for(Duration::from_secs(30), || async {
        Ok(events(&stack, "JobDeadLettered").await? == 1)
    })
    .await?;

    // Then it fails every request: the job is retried, then given up.
    p.set_default(Fault::Status(503, None));
    let p2 = person(
        "E-9",
        "Gil",
        "Gone",
        "Engineering",
        "active",
        "2026-01-02T09:00:00Z",
    );
    stack.send(&p2, "hire-9").await?;
    wait_for(Duration::from_secs(60), || async {
        Ok(events(&stack, "JobDeadLettered").await? == 2)
    })
    .await?;

    let out = stack.tenure(&["dlq", "list"]).output()?;
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listing.contains("refused") && listing.contains("HTTP 400"),
        "{listing}"
    );
    assert!(
        listing.contains("exhausted") && listing.contains("after 2 deliveries"),
        "{listing}"
    );
    assert!(stack.scim_users(&stack.wiki_tenant).await?.is_empty());

    // The app is fixed; the operator redrives everything.
    p.set_default(Fault::Pass);
    let out = stack.tenure(&["dlq", "redrive", "--all"]).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(Duration::from_secs(30), || async {
        Ok(stack.scim_users(&stack.wiki_tenant).await?.len() == 2)
    })
    .await?;
    let out = stack.tenure(&["dlq", "list"]).output()?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("empty"));
    Ok(())
}
