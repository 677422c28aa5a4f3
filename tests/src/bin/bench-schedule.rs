//! `just bench`: how late the durable scheduler fires due transitions.
//!
//! Persons are hired, then each gets a record that cuts access at a given
//! future instant. The engine (the release `tenure` binary on the wall
//! clock) must fire each termination at that instant. Lateness is the
//! event's `recorded_at` minus the due instant (`metadata.effective_at`,
//! which the scheduler sets to the instant it fired for).

use anyhow::Context;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::json;
use std::time::Duration;
use tenure_e2e::bench::report;
use tenure_e2e::{person, Options, Stack};
use tenure_store::sqlx::{self, Row};

const BURST: usize = 500;
const STREAM: usize = 500;
const STREAM_SPACING_MS: i64 = 20;

async fn lateness(pool: &sqlx::PgPool, prefix: &str) -> anyhow::Result<Vec<f64>> {
    let rows = sqlx::query(
        "SELECT e.recorded_at, (e.metadata->>'effective_at')::timestamptz AS due
         FROM events e JOIN persons p ON p.person_id = (e.metadata->>'person_id')::uuid
         WHERE e.event_type = 'PersonTerminated' AND p.source_person_id LIKE $1",
    )
    .bind(format!("{prefix}%"))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let at: DateTime<Utc> = r.try_get("recorded_at")?;
            let due: DateTime<Utc> = r.try_get("due")?;
            Ok((at - due).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        })
        .collect()
}

async fn wait_count(pool: &sqlx::PgPool, prefix: &str, n: usize) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        if lateness(pool, prefix).await?.len() >= n {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "terminations did not all fire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut stack = Stack::with_options(Options::default())
        .await
        .context("starting peers")?;
    stack.start_core().await?;
    let pool = tenure_store::connect(&stack.db.url(), None, 4).await?;

    eprintln!("hiring {} persons…", BURST + STREAM);
    for (prefix, n) in [("B-", BURST), ("S-", STREAM)] {
        for i in 0..n {
            let p = person(
                &format!("{prefix}{i}"),
                "Lee",
                &format!("{prefix}{i}"),
                "Sales",
                "active",
                "2026-01-02T09:00:00Z",
            );
            stack.send(&p, &format!("hire-{prefix}{i}")).await?;
        }
    }

    // Every burst person loses access at the same instant; the stream
    // persons one after another, 20 ms apart.
    let sending = ChronoDuration::seconds(20);
    let burst_at = Utc::now() + sending;
    let stream_at = burst_at + ChronoDuration::seconds(5);
    eprintln!("scheduling terminations at {burst_at} (burst) and from {stream_at} (stream)…");
    let cut = |prefix: &str, i: usize, at: DateTime<Utc>| {
        let mut p = person(
            &format!("{prefix}{i}"),
            "Lee",
            &format!("{prefix}{i}"),
            "Sales",
            "terminated",
            &at.to_rfc3339(),
        );
        p["revoke_immediately"] = json!(true);
        p
    };
    for i in 0..BURST {
        stack
            .send(&cut("B-", i, burst_at), &format!("cut-B-{i}"))
            .await?;
    }
    for i in 0..STREAM {
        let at = stream_at + ChronoDuration::milliseconds(STREAM_SPACING_MS * i as i64);
        stack.send(&cut("S-", i, at), &format!("cut-S-{i}")).await?;
    }
    anyhow::ensure!(
        Utc::now() < burst_at,
        "sending took longer than the lead time; raise it"
    );
    wait_count(&pool, "B-", BURST).await?;
    wait_count(&pool, "S-", STREAM).await?;

    println!(
        "\nDue transition → recorded by the engine (lateness, ms); one engine, release build\n"
    );
    println!("| scenario | transitions | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    report(
        &format!("{BURST} due at the same instant"),
        lateness(&pool, "B-").await?,
    );
    report(
        &format!("{STREAM} due {STREAM_SPACING_MS} ms apart"),
        lateness(&pool, "S-").await?,
    );
    Ok(())
}
