//! `tenure quarantine list|show|replay|rejected`: payloads ingest refused,
//! sending one through the pipeline again once its cause is fixed, and the
//! requests refused before authentication (kept apart, metadata only).

use anyhow::{bail, Context};
use clap::Subcommand;
use std::time::Duration;
use tenure_bus::Bus;
use tenure_config::Config;
use tenure_ingest::replay::{self, ReplayOutcome};

#[derive(Subcommand)]
pub enum QuarantineCmd {
    /// The newest rejected payloads with the reason (payload preview).
    List {
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// One rejected payload in full, by its number from `list`.
    Show { sequence: u64 },
    /// Send a rejected payload through ingest again with the current
    /// configuration (after setting a missing secret or fixing a mapping),
    /// or put a failed fetch-back on the fetch queue again. The entry stays
    /// in quarantine as an audit record.
    Replay {
        sequence: u64,
        /// For sources authenticated by a bearer token (Personio), whose
        /// token is never kept: vouch for the payload and present the
        /// configured token on its behalf. Payloads refused for a wrong or
        /// missing token are not replayed even so.
        #[arg(long)]
        force: bool,
    },
    /// Requests refused before authentication (wrong or missing signature
    /// or token, oversized, bad delivery id): kept apart from the
    /// quarantine, metadata and a 256-byte prefix only, and rate-limited;
    /// with how full that store is and how many were dropped.
    Rejected {
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
}

async fn bus(cfg: &Config) -> anyhow::Result<Bus> {
    Ok(Bus::connect(
        &cfg.nats.url,
        Duration::from_secs(cfg.nats.duplicate_window_secs),
    )
    .await?)
}

pub async fn run(cfg: &Config, command: &QuarantineCmd) -> anyhow::Result<()> {
    let bus = bus(cfg).await?;
    match command {
        QuarantineCmd::Show { sequence } => {
            let q = bus
                .quarantined(*sequence)
                .await?
                .with_context(|| format!("no quarantined payload #{sequence}"))?;
            println!("{}", serde_json::to_string_pretty(&q)?);
        }
        QuarantineCmd::List { limit } => {
            let items = bus.list_quarantine(*limit).await?;
            if items.is_empty() {
                println!("quarantine is empty");
            }
            for q in items {
                let preview: String = q.payload.chars().take(120).collect();
                println!(
                    "#{:<5} {} {:<8} {}  {}\n       payload: {}",
                    q.sequence,
                    q.received_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    q.source,
                    q.status,
                    q.reason,
                    preview
                );
            }
            if let Ok(n) = bus.rejected_entries().await {
                if n > 0 {
                    println!(
                        "({n} requests refused before authentication are kept apart: `tenure quarantine rejected`)"
                    );
                }
            }
        }
        QuarantineCmd::Replay { sequence, force } => {
            replay_one(cfg, bus, *sequence, *force).await?;
        }
        QuarantineCmd::Rejected { limit } => {
            let stats = bus.rejected_stats().await?;
            println!(
                "{} of at most {} entries ({} of {} bytes); {} more dropped by the rate limits",
                stats.entries, stats.max_entries, stats.bytes, stats.max_bytes, stats.dropped
            );
            for r in bus.list_rejected(*limit).await? {
                let prefix: String = r.body_prefix.chars().take(80).collect();
                println!(
                    "#{:<5} {} {:<8} {}  {}\n       from {}  body {} bytes sha256:{}{}\n       starts: {}",
                    r.sequence,
                    r.received_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    r.source,
                    r.status,
                    r.reason,
                    if r.client.is_empty() { "?" } else { &r.client },
                    r.body_len,
                    r.body_sha256,
                    if r.dropped_before > 0 {
                        format!("  ({} dropped before it)", r.dropped_before)
                    } else {
                        String::new()
                    },
                    prefix
                );
            }
        }
    }
    Ok(())
}

async fn replay_one(cfg: &Config, bus: Bus, sequence: u64, force: bool) -> anyhow::Result<()> {
    let entry = bus
        .quarantined(sequence)
        .await?
        .with_context(|| format!("no quarantined payload #{sequence}"))?;
    let state = tenure_ingest::state_from_config(cfg, bus)?;
    let token = if force {
        match cfg.sources.iter().find(|s| s.name == entry.source) {
            Some(src) if replay::uses_bearer_token(src.kind) => {
                let secret = src
                    .secret
                    .as_ref()
                    .with_context(|| {
                        format!(
                            "source {:?} has no secret configured; set it, then replay",
                            src.name
                        )
                    })?
                    .resolve()?;
                Some(secret.expose().to_string())
            }
            _ => None,
        }
    } else {
        None
    };
    let outcome = match &token {
        Some(t) => replay::replay_forced(&state, &entry, t).await,
        None => replay::replay(&state, &entry).await,
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            bail!(
                "#{sequence} ({} {}, {}) was not replayed: {e}",
                entry.source,
                entry.status,
                entry.reason
            );
        }
    };
    match outcome {
        ReplayOutcome::Published {
            delivery_id,
            correlation_id,
            status,
            published,
        } => {
            println!(
                "#{sequence} replayed from source {}: {status}, delivery {delivery_id}, correlation {correlation_id}",
                entry.source
            );
            for p in &published {
                println!(
                    "  {} {} person {}{}",
                    p.subject,
                    p.msg_id,
                    p.person,
                    if p.duplicate {
                        " (duplicate: published before)"
                    } else {
                        ""
                    }
                );
            }
        }
        ReplayOutcome::FetchRequeued(p) => println!(
            "#{sequence}: fetch-back of person {} queued again on {} as {}{}",
            p.person,
            p.subject,
            p.msg_id,
            if p.duplicate {
                " (duplicate: replayed before)"
            } else {
                ""
            }
        ),
        ReplayOutcome::Ignored { reason } => {
            println!("#{sequence} is authentic but nothing to act on: {reason}")
        }
        ReplayOutcome::Handshake => {
            println!("#{sequence} is a setup call: answered, nothing published")
        }
    }
    println!("the entry stays in quarantine as an audit record");
    Ok(())
}
