//! `just bench`: fan-out throughput against a local SCIM server, compared
//! with the same requests sent straight by a plain HTTP client (the
//! ceiling: what the server can take).
//!
//! A new hire costs three requests (a look-up by externalId, one by
//! userName, the create). The ceiling sends exactly those with the same
//! concurrency; Tenure's figure is from starting the fanout with N jobs
//! queued until the app holds N accounts, with every call audited.

use anyhow::Context;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenure_e2e::{person, wait_for, Options, Stack};

const N: usize = 500;
const CONCURRENCY: usize = 4;

async fn ceiling(stack: &Stack, tenant: &str) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let base = Arc::new(stack.scim.tenant_url(tenant));
    let token = Arc::new(stack.scim.token.clone());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (http, base, token, next) = (http.clone(), base.clone(), token.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= N {
                    return anyhow::Ok(());
                }
                let user = format!("ceiling{i}@example.com");
                for filter in [
                    format!("externalId eq \"x-{i}\""),
                    format!("userName eq \"{user}\""),
                ] {
                    http.get(format!("{base}/Users"))
                        .query(&[("filter", filter)])
                        .bearer_auth(token.as_str())
                        .send()
                        .await?
                        .error_for_status()?;
                }
                let body = serde_json::json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": user, "externalId": format!("x-{i}"), "active": true,
                    "name": {"givenName": "Cei", "familyName": format!("Ling{i}")},
                    "emails": [{"value": user, "type": "work", "primary": true}]
                });
                http.post(format!("{base}/Users"))
                    .bearer_auth(token.as_str())
                    .header("content-type", "application/scim+json")
                    .body(body.to_string())
                    .send()
                    .await?
                    .error_for_status()?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(N as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut stack = Stack::with_options(Options {
        fanout: format!("concurrency = {CONCURRENCY}"),
        // Only the wiki app: the git app would share the machine's cores.
        git: "rule = 'person.department == \"nobody\"'".into(),
        ..Options::default()
    })
    .await
    .context("starting peers")?;
    stack.start_core().await?;

    let ceiling = ceiling(&stack, "ceiling").await?;
    eprintln!("plain client: {ceiling:.0} accounts/s");

    eprintln!("queueing {N} hires with the fanout stopped…");
    for i in 0..N {
        let p = person(
            &format!("E-{i}"),
            "Fan",
            &format!("Out{i}"),
            "Sales",
            "active",
            "2026-01-02T09:00:00Z",
        );
        stack.send(&p, &format!("hire-{i}")).await?;
    }
    wait_for(Duration::from_secs(120), || async {
        Ok(
            stack.psql_count("SELECT count(*) FROM persons").await? == N as i64
                && stack.psql_count("SELECT count(*) FROM outbox").await? == 0,
        )
    })
    .await?;
    let started = Instant::now();
    stack.start_fanout()?;
    // Poll Tenure's own record, not the app: listing hundreds of users
    // every few milliseconds would load the server being measured.
    wait_for(Duration::from_secs(300), || async {
        Ok(stack
            .psql_count("SELECT count(*) FROM events WHERE event_type = 'AccountCreated'")
            .await?
            >= N as i64)
    })
    .await?;
    let tenure = N as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(
        stack.scim_users(&stack.wiki_tenant).await?.len() == N,
        "the app holds exactly {N} accounts"
    );
    let calls = stack.psql_count("SELECT count(*) FROM events WHERE event_type = 'ScimCallSucceeded' AND metadata->>'app' = 'wiki'").await?;
    let latency = stack
        .psql_count("SELECT coalesce(round(avg((data->>'latency_ms')::numeric)), 0)::bigint FROM events WHERE event_type = 'ScimCallSucceeded' AND metadata->>'app' = 'wiki'")
        .await?;
    let span_ms = stack
        .psql_count("SELECT (extract(epoch FROM max(recorded_at) - min(recorded_at)) * 1000)::bigint FROM events WHERE event_type = 'AccountCreated'")
        .await?;

    println!("\nFan-out throughput, {N} new accounts in one scim2-server tenant, concurrency {CONCURRENCY}\n");
    println!("| sender | accounts/s | ratio |");
    println!("|---|---|---|");
    println!("| plain HTTP client, same 3 requests per account | {ceiling:.0} | 1.00 |");
    println!(
        "| Tenure fanout (lease, look-ups, create, audit of every call) | {tenure:.0} | {:.2} |",
        tenure / ceiling
    );
    println!(
        "\n{calls} SCIM calls audited for {N} accounts; mean call latency seen by Tenure {latency} ms; first to last account created in {span_ms} ms ({:.0} accounts/s without the fanout's start-up)",
        N as f64 * 1000.0 / span_ms.max(1) as f64
    );
    Ok(())
}
