//! `just bench`: fan-out throughput of an initial load against local SCIM
//! servers, each figure next to a ceiling: the same requests sent straight
//! by a plain HTTP client with the same concurrency (what the servers can
//! take).
//!
//! Scenarios, each on a fresh stack (database, NATS, scim2-server processes):
//!
//! - one app, single calls (`bulk = "off"`): per new hire a look-up by
//!   externalId, one by userName and the create;
//! - one app, single calls with `unique_user_name` in the profile: the
//!   userName look-up is left to the create's 409, two requests per hire;
//! - one app with SCIM Bulk (the default where the server announces it):
//!   per hire the externalId look-up, and the creates in `POST /Bulk`
//!   requests of up to `bulk_batch` operations;
//! - three apps, each on its own scim2-server process, with bulk: the
//!   scaled-down version of the "10,000 hires × 3 apps in 60 s" budget.
//!
//! Tenure's figure runs from starting the fanout with every job queued until
//! every `AccountCreated` event is recorded (the bench watches the event
//! store, not the apps, so it does not load the servers it measures); then
//! each app must hold exactly one account per hire.
//!
//! `BENCH_FANOUT_N` (default 500) and `BENCH_FANOUT_N3` (default 2000) set
//! the hires of the one-app and three-app scenarios; `BENCH_FANOUT_ONLY`
//! (`single`, `unique`, `bulk`, `three`, comma-separated) runs a subset.

use anyhow::Context;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenure_e2e::{person, wait_for, Options, Stack};
use tenure_testkit::ScimServer;

const CONCURRENCY: usize = 4;
const BULK_BATCH: usize = 100;

/// The requests per new account, as Tenure sends them.
#[derive(Clone, Copy, Debug)]
enum Pattern {
    /// externalId look-up, userName look-up, POST.
    Single,
    /// externalId look-up, POST.
    Unique,
    /// externalId look-ups, then POST /Bulk of `BULK_BATCH` creates.
    Bulk,
}

fn user_body(user: &str, ext: &str, i: usize) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user, "externalId": ext, "active": true,
        "name": {"givenName": "Cei", "familyName": format!("Ling{i}")},
        "displayName": format!("Cei Ling{i}"),
        "emails": [{"value": user, "type": "work", "primary": true}]
    })
}

/// The plain client: `CONCURRENCY` workers per app, all apps at once, each
/// sending `pattern`'s requests for `n` new accounts per app.
async fn ceiling(apps: &[(String, String)], n: usize, pattern: Pattern) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut workers = Vec::new();
    for (base, token) in apps {
        let next = Arc::new(AtomicUsize::new(0));
        for _ in 0..CONCURRENCY {
            let (http, base, token, next) =
                (http.clone(), base.clone(), token.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                let step = match pattern {
                    Pattern::Bulk => BULK_BATCH,
                    _ => 1,
                };
                loop {
                    let from = next.fetch_add(step, Ordering::Relaxed);
                    if from >= n {
                        return anyhow::Ok(());
                    }
                    let to = (from + step).min(n);
                    let mut creates = Vec::new();
                    for i in from..to {
                        let user = format!("ceiling{i}@example.com");
                        let ext = format!("x-{i}");
                        let mut filters = vec![format!("externalId eq \"{ext}\"")];
                        if matches!(pattern, Pattern::Single) {
                            filters.push(format!("userName eq \"{user}\""));
                        }
                        for filter in filters {
                            http.get(format!("{base}/Users"))
                                .query(&[("filter", filter)])
                                .bearer_auth(&token)
                                .send()
                                .await?
                                .error_for_status()?;
                        }
                        creates.push(user_body(&user, &ext, i));
                    }
                    let (url, body) = match pattern {
                        Pattern::Bulk => (
                            format!("{base}/Bulk"),
                            json!({
                                "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                                "Operations": creates.into_iter().enumerate().map(|(k, data)| json!({
                                    "method": "POST", "path": "/Users",
                                    "bulkId": format!("b{}", from + k), "data": data
                                })).collect::<Vec<_>>()
                            }),
                        ),
                        _ => (
                            format!("{base}/Users"),
                            creates.pop().context("one create")?,
                        ),
                    };
                    let answer: Value = http
                        .post(url)
                        .bearer_auth(&token)
                        .header("content-type", "application/scim+json")
                        .body(body.to_string())
                        .send()
                        .await?
                        .error_for_status()?
                        .json()
                        .await?;
                    if let Some(ops) = answer["Operations"].as_array() {
                        anyhow::ensure!(
                            ops.iter().all(|o| o["status"] == "201"),
                            "bulk create failed: {answer}"
                        );
                    }
                }
            }));
        }
    }
    for w in workers {
        w.await??;
    }
    Ok((n * apps.len()) as f64 / started.elapsed().as_secs_f64())
}

async fn user_count(base: &str, token: &str) -> anyhow::Result<i64> {
    let v: Value = reqwest::Client::new()
        .get(format!("{base}/Users?count=1"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    v["totalResults"].as_i64().context("totalResults")
}

struct Figures {
    name: &'static str,
    apps: usize,
    n: usize,
    ceiling: f64,
    tenure: f64,
    calls: i64,
    bulk_calls: i64,
    latency_ms: i64,
    /// Mean operations per bulk request, as each create saw it, and the
    /// mean latency of those requests.
    bulk_size: i64,
    bulk_ms: i64,
    span_ms: i64,
}

async fn scenario(
    name: &'static str,
    apps: usize,
    n: usize,
    pattern: Pattern,
) -> anyhow::Result<Figures> {
    let profile = match pattern {
        Pattern::Single => "bulk = \"off\"\n".to_string(),
        Pattern::Unique => {
            "bulk = \"off\"\nprofile = { extends = \"generic\", unique_user_name = true }\n".into()
        }
        Pattern::Bulk => format!(
            "bulk_batch = {BULK_BATCH}\nprofile = {{ extends = \"generic\", unique_user_name = true }}\n"
        ),
    };
    // A third app on a server process of its own.
    let third = (apps == 3).then(ScimServer::start).transpose()?;
    let chat_tenant = "chat";
    let extra = match &third {
        Some(server) => {
            std::env::set_var("TENURE_CHAT_TOKEN", &server.token);
            format!(
                "[[app]]\nname = \"chat\"\nbase_url = \"{}\"\ntoken = {{ env = \"TENURE_CHAT_TOKEN\" }}\n{profile}",
                server.tenant_url(chat_tenant)
            )
        }
        None => String::new(),
    };
    let git = if apps == 1 {
        // Only the wiki app: the git app would share the machine's cores.
        "rule = 'person.department == \"nobody\"'\n".to_string()
    } else {
        profile.clone()
    };
    let mut stack = Stack::with_options(Options {
        fanout: format!("concurrency = {CONCURRENCY}"),
        wiki: profile.clone(),
        git,
        extra,
        ..Options::default()
    })
    .await
    .context("starting peers")?;
    stack.start_core().await?;

    // (base URL of Tenure's tenant, token) per app, and the ceiling's.
    let mut targets = vec![(
        stack.scim.tenant_url(&stack.wiki_tenant),
        stack.scim.token.clone(),
    )];
    let mut ceilings = vec![(stack.scim.tenant_url("ceiling"), stack.scim.token.clone())];
    if apps == 3 {
        targets.push((
            stack.scim_git.tenant_url(&stack.git_tenant),
            stack.scim_git.token.clone(),
        ));
        ceilings.push((
            stack.scim_git.tenant_url("ceiling"),
            stack.scim_git.token.clone(),
        ));
        let server = third.as_ref().context("third server")?;
        targets.push((server.tenant_url(chat_tenant), server.token.clone()));
        ceilings.push((server.tenant_url("ceiling"), server.token.clone()));
    }

    let ceiling = ceiling(&ceilings, n, pattern).await?;
    eprintln!("{name}: plain client {ceiling:.0} accounts/s");

    eprintln!("{name}: queueing {n} hires with the fanout stopped…");
    for i in 0..n {
        let p = person(
            &format!("E-{i}"),
            "Fan",
            &format!("Out{i}"),
            if apps == 3 { "Engineering" } else { "Sales" },
            "active",
            "2026-01-02T09:00:00Z",
        );
        stack.send(&p, &format!("hire-{i}")).await?;
    }
    wait_for(Duration::from_secs(600), || async {
        Ok(
            stack.psql_count("SELECT count(*) FROM persons").await? == n as i64
                && stack.psql_count("SELECT count(*) FROM outbox").await? == 0,
        )
    })
    .await?;
    let total = (n * apps) as i64;
    let started = Instant::now();
    stack.start_fanout()?;
    wait_for(Duration::from_secs(900), || async {
        Ok(stack
            .psql_count("SELECT count(*) FROM events WHERE event_type = 'AccountCreated'")
            .await?
            >= total)
    })
    .await?;
    let tenure = total as f64 / started.elapsed().as_secs_f64();
    for (base, token) in &targets {
        let held = user_count(base, token).await?;
        anyhow::ensure!(
            held == n as i64,
            "{base} holds {held} accounts, not exactly {n}"
        );
    }
    // Only the apps that get accounts: with one app, the git app's jobs
    // (no account wanted) still look for one by externalId.
    let measured = if apps == 1 {
        "metadata->>'app' = 'wiki'"
    } else {
        "true"
    };
    let calls = stack
        .psql_count(&format!(
            "SELECT count(*) FROM events WHERE event_type = 'ScimCallSucceeded' AND {measured}"
        ))
        .await?;
    let bulk_calls = stack
        .psql_count(&format!("SELECT count(*) FROM events WHERE event_type = 'ScimCallSucceeded' AND data ? 'bulk' AND {measured}"))
        .await?;
    // Look-ups only: an operation of a bulk request carries the latency of
    // the whole request.
    let latency_ms = stack
        .psql_count(&format!("SELECT coalesce(round(avg((data->>'latency_ms')::numeric)), 0)::bigint FROM events WHERE event_type = 'ScimCallSucceeded' AND data->>'method' = 'GET' AND {measured}"))
        .await?;
    let bulk_size = stack
        .psql_count(&format!("SELECT coalesce(round(avg((data->'bulk'->>'operations')::numeric)), 0)::bigint FROM events WHERE event_type = 'ScimCallSucceeded' AND data ? 'bulk' AND {measured}"))
        .await?;
    let bulk_ms = stack
        .psql_count(&format!("SELECT coalesce(round(avg((data->>'latency_ms')::numeric)), 0)::bigint FROM events WHERE event_type = 'ScimCallSucceeded' AND data ? 'bulk' AND {measured}"))
        .await?;
    let span_ms = stack
        .psql_count("SELECT (extract(epoch FROM max(recorded_at) - min(recorded_at)) * 1000)::bigint FROM events WHERE event_type = 'AccountCreated'")
        .await?;
    eprintln!("{name}: Tenure {tenure:.0} accounts/s");
    Ok(Figures {
        name,
        apps,
        n,
        ceiling,
        tenure,
        calls,
        bulk_calls,
        latency_ms,
        bulk_size,
        bulk_ms,
        span_ms,
    })
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env_usize("BENCH_FANOUT_N", 500);
    let n3 = env_usize("BENCH_FANOUT_N3", 2000);
    let only = std::env::var("BENCH_FANOUT_ONLY").unwrap_or_default();
    let wanted = |s: &str| only.is_empty() || only.split(',').any(|o| o.trim() == s);
    let mut all = Vec::new();
    if wanted("single") {
        all.push(scenario("one app, single calls", 1, n, Pattern::Single).await?);
    }
    if wanted("unique") {
        all.push(
            scenario(
                "one app, single calls, no userName look-up",
                1,
                n,
                Pattern::Unique,
            )
            .await?,
        );
    }
    if wanted("bulk") {
        all.push(scenario("one app, bulk", 1, n, Pattern::Bulk).await?);
    }
    if wanted("three") {
        all.push(scenario("three apps, bulk", 3, n3, Pattern::Bulk).await?);
    }

    println!("\nFan-out throughput of an initial load, concurrency {CONCURRENCY} per app, every call audited\n");
    println!("| scenario | hires × apps | plain HTTP client, accounts/s | Tenure, accounts/s | ratio | first to last account, accounts/s | SCIM calls audited (in bulk) | mean look-up latency | mean bulk request: operations, latency |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for f in &all {
        println!(
            "| {} | {} × {} | {:.0} | {:.0} | {:.2} | {:.0} | {} ({}) | {} ms | {} |",
            f.name,
            f.n,
            f.apps,
            f.ceiling,
            f.tenure,
            f.tenure / f.ceiling,
            (f.n * f.apps) as f64 * 1000.0 / f.span_ms.max(1) as f64,
            f.calls,
            f.bulk_calls,
            f.latency_ms,
            if f.bulk_calls > 0 {
                format!("{}, {} ms", f.bulk_size, f.bulk_ms)
            } else {
                "-".into()
            },
        );
    }
    if let Some(f) = all.iter().find(|f| f.apps == 3) {
        println!(
            "\nAt {:.0} accounts/s, 10,000 hires × 3 apps would take about {:.0} s.",
            f.tenure,
            30_000.0 / f.tenure
        );
    }
    Ok(())
}
