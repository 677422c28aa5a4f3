//! `just bench`: how long from a termination webhook until every app shows
//! the account switched off (design budget: p99 under 1 s).
//!
//! The end of each measurement is the `recorded_at` of the account event
//! that Tenure appends *after* the app acknowledged the change, so the
//! figure slightly overstates the real latency, never understates it.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::{Duration, Instant};
use tenure_e2e::bench::report;
use tenure_e2e::{person, Options, Stack};

const HIRES: usize = 200;
const SEQUENTIAL: usize = 100;
const BURST: usize = 100;
/// Jobs in flight per app. scim2-server listens with a backlog of 5: more
/// concurrent connections than that get their SYN dropped and retried by
/// the kernel a second later, which would measure the peer, not Tenure.
const CONCURRENCY: usize = 4;

fn ms(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(0) as f64 / 1000.0
}

/// Total latency and its two stages: webhook → decision recorded by the
/// engine, and decision → last app switched off (fanout).
fn report_stages(name: &str, samples: &[(DateTime<Utc>, DateTime<Utc>, DateTime<Utc>)]) {
    report(
        name,
        samples.iter().map(|(s, _, off)| ms(*s, *off)).collect(),
    );
    report(
        &format!("↳ {name}: webhook → engine decision"),
        samples.iter().map(|(s, d, _)| ms(*s, *d)).collect(),
    );
    report(
        &format!("↳ {name}: decision → apps switched off"),
        samples.iter().map(|(_, d, off)| ms(*d, *off)).collect(),
    );
}

/// When the engine recorded the termination, and when both apps had
/// switched the person off, from the person's timeline.
async fn switched_off_at(
    stack: &Stack,
    source_id: &str,
) -> anyhow::Result<Option<(DateTime<Utc>, DateTime<Utc>)>> {
    let t = stack
        .api(&format!("/v1/persons/{source_id}/timeline"))
        .await?;
    let events = t["events"].as_array().cloned().unwrap_or_default();
    let at = |kind: &str, app: &str| {
        events
            .iter()
            .filter(|e| e["event_type"] == kind && e["metadata"]["app"] == app)
            .filter_map(|e| e["recorded_at"].as_str()?.parse::<DateTime<Utc>>().ok())
            .next_back()
    };
    let decided = events
        .iter()
        .filter(|e| e["event_type"] == "PersonTerminated")
        .filter_map(|e| e["recorded_at"].as_str()?.parse::<DateTime<Utc>>().ok())
        .next_back();
    Ok(
        match (
            decided,
            at("AccountDeactivated", "wiki"),
            at("AccountDeleted", "git"),
        ) {
            (Some(d), Some(a), Some(b)) => Some((d, a.max(b))),
            _ => None,
        },
    )
}

async fn wait_off(
    stack: &Stack,
    source_id: &str,
) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(t) = switched_off_at(stack, source_id).await? {
            return Ok(t);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{source_id} was not switched off within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn leaver(i: usize) -> Value {
    let mut p = person(
        &format!("E-{i}"),
        "Lee",
        &format!("Leaver{i}"),
        "Engineering",
        "terminated",
        "2026-06-30T17:00:00Z",
    );
    p["end_date"] = "2026-06-30".into();
    p
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Production fanout defaults, so the figures are what an install gets.
    let mut stack = Stack::with_options(Options {
        fanout: format!("concurrency = {CONCURRENCY}"),
        // Terminating everyone is the point here, not a mistake to hold.
        wiki: "mass_change = { enabled = false }".into(),
        git: "mass_change = { enabled = false }".into(),
        ..Options::default()
    })
    .await
    .context("starting the stack")?;
    stack.start_core().await?;
    stack.start_fanout()?;
    eprintln!("hiring {HIRES} persons into two apps…");
    let started = Instant::now();
    for i in 0..HIRES {
        let p = person(
            &format!("E-{i}"),
            "Lee",
            &format!("Leaver{i}"),
            "Engineering",
            "active",
            "2026-01-02T09:00:00Z",
        );
        stack.send(&p, &format!("hire-{i}")).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while stack.scim_users(&stack.git_tenant).await?.len() < HIRES
        || stack.scim_users(&stack.wiki_tenant).await?.len() < HIRES
    {
        anyhow::ensure!(Instant::now() < deadline, "hires did not converge");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hire_secs = started.elapsed().as_secs_f64();
    eprintln!("{HIRES} hires × 2 apps provisioned in {hire_secs:.2} s");

    let mut sequential = Vec::new();
    for i in 0..SEQUENTIAL {
        let sent = Utc::now();
        stack.send(&leaver(i), &format!("term-{i}")).await?;
        let (decided, off) = wait_off(&stack, &format!("E-{i}")).await?;
        sequential.push((sent, decided, off));
    }

    let mut sent_at = Vec::new();
    for i in SEQUENTIAL..SEQUENTIAL + BURST {
        sent_at.push((i, Utc::now()));
        stack.send(&leaver(i), &format!("term-{i}")).await?;
    }
    let mut burst = Vec::new();
    for (i, sent) in sent_at {
        let (decided, off) = wait_off(&stack, &format!("E-{i}")).await?;
        burst.push((sent, decided, off));
    }

    println!("\nTermination webhook → both apps switched off (ms), {HIRES} persons, apps: one scim2-server process each\n");
    println!("| scenario | terminations | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    report_stages("one at a time", &sequential);
    report_stages(&format!("burst of {BURST}"), &burst);
    println!("\nprovisioning: {HIRES} hires × 2 apps in {hire_secs:.2} s ({:.0} accounts/s, including webhook sending)", (2 * HIRES) as f64 / hire_secs);
    Ok(())
}
