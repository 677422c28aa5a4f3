//! `just bench`: what applying a record costs as a person's history grows,
//! and whether one busy person delays everyone else.
//!
//! Runs the release `tenure` binary (`tenure run ingest engine api`) on a
//! private `nats-server` and a fresh database, no fanout. Latency is taken
//! from just before the signed webhook is sent until the engine's
//! transaction with the record has committed (its inbox row is visible;
//! polled every millisecond), one record at a time.
//!
//! 1. A person with ~10 events and one with ~10,000 (built with 5,000
//!    records, each changing an attribute): 100 more records to each.
//! 2. The person with ~10,000 events receives 1,000 records as fast as 8
//!    senders can post them, while 30 unrelated persons are hired, one
//!    sent every 100 ms whether or not the previous was applied: each
//!    hire's latency.
//! 3. The same two measurements with person snapshots switched off
//!    (every load folds the whole stream, as before snapshots) and one
//!    worker. One worker still takes turns between persons, so this is not
//!    the engine before per-person work, which applied messages strictly in
//!    arrival order (a hire then waited for the whole backlog ahead of it).
//!
//! `BENCH_APPLY_SCALE` (a percentage, default 100) shrinks every count for
//! a quick trial run.

use anyhow::Context;
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tenure_e2e::bench::report;
use tenure_e2e::{person, Options, Stack};
use tenure_store::sqlx::{self, PgPool};

fn scaled(n: usize) -> usize {
    let pct: usize = std::env::var("BENCH_APPLY_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    (n * pct / 100).max(1)
}

/// The i-th record of `id`: a new title each time, stated one second after
/// the previous one so each is the newest fact.
fn record(id: &str, i: usize) -> Value {
    let stated = chrono::Utc::now() - chrono::Duration::days(2)
        + chrono::Duration::seconds(i64::try_from(i).unwrap_or(0));
    let mut r = person(id, "Lee", id, "Sales", "active", &stated.to_rfc3339());
    r["title"] = json!(format!("Title {i}"));
    r
}

async fn committed(pool: &PgPool, delivery: &str) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM inbox WHERE source = 'generic' AND delivery_id = $1",
    )
    .bind(delivery)
    .fetch_one(pool)
    .await?
        > 0)
}

/// Sends one record and waits until the engine committed it; milliseconds.
async fn timed(stack: &Stack, pool: &PgPool, body: &Value, delivery: &str) -> anyhow::Result<f64> {
    let start = Instant::now();
    stack.send(body, delivery).await?;
    let deadline = start + Duration::from_secs(300);
    while !committed(pool, delivery).await? {
        anyhow::ensure!(Instant::now() < deadline, "{delivery} was never applied");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

/// Sends records `from..to` of `id` with 8 senders, without waiting for
/// the engine.
async fn flood(stack: &Stack, id: &str, from: usize, to: usize) -> anyhow::Result<()> {
    let sent: Vec<anyhow::Result<Value>> = futures::stream::iter(from..to)
        .map(|i| async move { stack.send(&record(id, i), &format!("{id}-{i}")).await })
        .buffer_unordered(8)
        .collect()
        .await;
    for s in sent {
        s?;
    }
    Ok(())
}

async fn wait_applied(pool: &PgPool, delivery: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    while !committed(pool, delivery).await? {
        anyhow::ensure!(Instant::now() < deadline, "{delivery} was never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn events_of(pool: &PgPool, id: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM events e JOIN persons p ON e.stream_id = 'person-' || p.person_id
         WHERE p.source_person_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await?)
}

/// 100 records, one after another, to `id` (whose records so far are
/// numbered below `next`); latencies in ms.
async fn sequential(
    stack: &Stack,
    pool: &PgPool,
    id: &str,
    next: &mut usize,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for _ in 0..scaled(100) {
        let i = *next;
        *next += 1;
        out.push(timed(stack, pool, &record(id, i), &format!("{id}-{i}")).await?);
    }
    Ok(out)
}

/// `busy` receives `n` records from 8 senders while persons `prefix0..` are
/// hired one every 100 ms; the hires' latencies in ms and how long the busy
/// person's records took to be applied.
async fn busy_and_hires(
    stack: &Stack,
    pool: &PgPool,
    busy: &str,
    next: &mut usize,
    n: usize,
    prefix: &str,
) -> anyhow::Result<(Vec<f64>, Duration)> {
    let (from, to) = (*next, *next + n);
    *next = to;
    let started = Instant::now();
    let stream = async {
        flood(stack, busy, from, to).await?;
        wait_applied(pool, &format!("{busy}-{}", to - 1)).await?;
        anyhow::Ok(started.elapsed())
    };
    // Each hire is sent on its own schedule, whether or not the previous
    // one was applied, so every one of them meets the busy person's queue.
    let hires = futures::future::join_all((0..scaled(30)).map(|h| async move {
        tokio::time::sleep(Duration::from_millis(300 + 100 * h as u64)).await;
        let id = format!("{prefix}{h}");
        let body = person(&id, "New", &id, "Sales", "active", "2026-01-02T09:00:00Z");
        timed(stack, pool, &body, &format!("hire-{id}")).await
    }));
    let hires = async {
        hires
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<f64>>>()
    };
    let (busy_took, hires) = tokio::join!(stream, hires);
    Ok((hires?, busy_took?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut stack = Stack::with_options(Options::default())
        .await
        .context("starting peers")?;
    stack.start_core().await?;
    let pool = tenure_store::connect(&stack.db.url(), None, 4).await?;

    let (small, big) = ("E-small", "E-big");
    let (mut next_small, mut next_big) = (0, 0);
    eprintln!("building a person with ~10 events and one with ~10,000…");
    for _ in 0..5 {
        let i = next_small;
        next_small += 1;
        timed(&stack, &pool, &record(small, i), &format!("{small}-{i}")).await?;
    }
    let built = Instant::now();
    let history = scaled(5_000);
    flood(&stack, big, 0, history).await?;
    next_big = next_big.max(history);
    wait_applied(&pool, &format!("{big}-{}", history - 1)).await?;
    eprintln!(
        "{} records applied to one person in {:.1} s",
        history,
        built.elapsed().as_secs_f64()
    );
    let (small_events, big_events) = (events_of(&pool, small).await?, events_of(&pool, big).await?);

    eprintln!("measuring with snapshots and 4 workers…");
    let small_ms = sequential(&stack, &pool, small, &mut next_small).await?;
    let big_ms = sequential(&stack, &pool, big, &mut next_big).await?;
    let busy_n = scaled(1_000);
    let (hires, busy_took) =
        busy_and_hires(&stack, &pool, big, &mut next_big, busy_n, "H-").await?;

    // Every load folds the whole stream, as before snapshots; one record is
    // applied at a time (taking turns between persons).
    eprintln!("restarting the engine without snapshots and with one worker…");
    stack.stop_core()?;
    let config = stack.dir.path().join("tenure.toml");
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(
        &config,
        text.replacen(
            "[engine]\n",
            "[engine]\nsnapshot_every = 2000000000\nworkers = 1\n",
            1,
        ),
    )?;
    sqlx::query("DELETE FROM person_snapshots")
        .execute(&pool)
        .await?;
    stack.start_core().await?;
    let big_before = events_of(&pool, big).await?;
    let big_ms_before = sequential(&stack, &pool, big, &mut next_big).await?;
    let busy_n_before = scaled(200);
    let (hires_before, busy_took_before) =
        busy_and_hires(&stack, &pool, big, &mut next_big, busy_n_before, "B-").await?;

    println!(
        "\nWebhook → record applied by the engine (ms), one record at a time; release build\n"
    );
    println!("| scenario | records | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    report(
        &format!("person with {small_events} events, snapshots, 4 workers"),
        small_ms,
    );
    report(
        &format!("person with {big_events} events, snapshots, 4 workers"),
        big_ms,
    );
    report(
        &format!(
            "unrelated hire while that person receives {busy_n} records, snapshots, 4 workers"
        ),
        hires,
    );
    report(
        &format!("person with {big_before} events, snapshots off, 1 worker"),
        big_ms_before,
    );
    report(
        &format!("unrelated hire while a person with {big_before} events receives {busy_n_before} records, snapshots off, 1 worker"),
        hires_before,
    );
    println!(
        "\nThe busy person's {busy_n} records were applied in {:.1} s (snapshots, 4 workers); {busy_n_before} records in {:.1} s with snapshots off.",
        busy_took.as_secs_f64(),
        busy_took_before.as_secs_f64()
    );
    Ok(())
}
