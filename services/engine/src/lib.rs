//! The engine: consumes verified source records, runs the pure person
//! lifecycle, and commits events, projections, schedules and outbox rows in
//! one transaction. Beside the consumer run the outbox relay and the
//! durable scheduler that fires future-dated transitions.

pub mod clock;
pub mod process;
pub mod relay;
pub mod scheduler;

pub use clock::{Clock, ManualClock};
pub use process::{apply_envelope, Applied, Engine};

use futures::StreamExt;
use std::time::Duration;
use tenure_bus::{Bus, IdentityEnvelope, IngestEnvelope, INGEST_STREAM};
use tenure_config::Config;
use tenure_store::sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

/// Consumes `tenure.ingest.>` until cancelled, with the relay and the
/// scheduler running beside it.
pub async fn run(
    cfg: &Config,
    pool: PgPool,
    bus: Bus,
    shutdown: CancellationToken,
    clock: Clock,
) -> anyhow::Result<()> {
    let engine = Engine::from_config(cfg)?;
    let relay = tokio::spawn(relay::run(pool.clone(), bus.clone(), shutdown.clone()));
    let scheduler = tokio::spawn(scheduler::run(
        pool.clone(),
        engine.clone(),
        scheduler::cron_tasks(cfg)?,
        clock.clone(),
        Duration::from_millis(cfg.engine.scheduler_poll_ms.max(10)),
        shutdown.clone(),
    ));

    let identities = tokio::spawn(identity_loop(
        pool.clone(),
        engine.clone(),
        bus.clone(),
        format!("{}-identity", cfg.engine.consumer_name),
        clock.clone(),
        shutdown.clone(),
    ));
    let consumer = bus
        .durable_consumer(
            INGEST_STREAM,
            &cfg.engine.consumer_name,
            "tenure.ingest.>",
            Duration::from_secs(30),
            -1,
        )
        .await?;
    let mut messages = consumer.messages().await?;
    info!(consumer = %cfg.engine.consumer_name, "engine consuming");
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = messages.next() => m,
        };
        let msg = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                warn!(error = %e, "ingest consumer error; continuing");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            None => break,
        };
        let envelope: IngestEnvelope = match serde_json::from_slice(&msg.payload) {
            Ok(e) => e,
            Err(e) => {
                // Ingest validated this already; a message that still does not
                // decode would fail forever, so it is terminated, loudly.
                error!(error = %e, subject = %msg.subject, "undecodable ingest message; terminating it");
                let _ = msg.ack_with(async_nats::jetstream::AckKind::Term).await;
                continue;
            }
        };
        let span = tracing::info_span!("apply", source = %envelope.source, delivery_id = %envelope.delivery_id, correlation_id = %envelope.correlation_id, person = tracing::field::Empty);
        let result = apply_with_retry(&pool, &engine, &clock, &envelope)
            .instrument(span)
            .await;
        match result {
            Ok(_) => {
                if let Err(e) = msg.ack().await {
                    warn!(error = %e, "ack failed; the record will be redelivered and skipped as already processed");
                }
            }
            Err(e) => {
                error!(error = %e, delivery_id = %envelope.delivery_id, "record not applied; will be redelivered");
                let _ = msg
                    .ack_with(async_nats::jetstream::AckKind::Nak(Some(
                        Duration::from_secs(2),
                    )))
                    .await;
            }
        }
    }
    shutdown.cancel();
    let _ = relay.await;
    let _ = scheduler.await;
    let _ = identities.await;
    Ok(())
}

/// IdP identity snapshots have their own durable consumer on the ingest
/// stream: a burst of group changes from the IdP never waits behind HR
/// records, nor they behind it.
async fn identity_loop(
    pool: PgPool,
    engine: Engine,
    bus: Bus,
    durable: String,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let consumer = match bus
        .durable_consumer(
            INGEST_STREAM,
            &durable,
            "tenure.identity.>",
            Duration::from_secs(30),
            -1,
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "identity consumer unavailable; identities are not applied");
            return;
        }
    };
    let mut messages = match consumer.messages().await {
        Ok(m) => m,
        Err(e) => {
            error!(error = %e, "identity consumer unavailable; identities are not applied");
            return;
        }
    };
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = messages.next() => m,
        };
        match next {
            Some(Ok(msg)) => apply_identity_message(&pool, &engine, &clock, msg).await,
            Some(Err(e)) => {
                warn!(error = %e, "identity consumer error; continuing");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => break,
        }
    }
}

async fn apply_identity_message(
    pool: &PgPool,
    engine: &Engine,
    clock: &Clock,
    msg: async_nats::jetstream::Message,
) {
    let envelope: IdentityEnvelope = match serde_json::from_slice(&msg.payload) {
        Ok(e) => e,
        Err(e) => {
            error!(error = %e, subject = %msg.subject, "undecodable identity message; terminating it");
            let _ = msg.ack_with(async_nats::jetstream::AckKind::Term).await;
            return;
        }
    };
    let span = tracing::info_span!("identity", provider = %envelope.identity.provider, idp_id = %envelope.identity.idp_id, correlation_id = %envelope.correlation_id, person = tracing::field::Empty);
    let result = async {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match process::apply_identity(pool, engine, &envelope, clock.now()).await {
                Err(e) if e.is_conflict() && attempt < 10 => {
                    tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
                }
                other => return other,
            }
        }
    }
    .instrument(span)
    .await;
    match result {
        Ok(_) => {
            let _ = msg.ack().await;
        }
        Err(e) => {
            error!(error = %e, "identity not applied; will be redelivered");
            let _ = msg
                .ack_with(async_nats::jetstream::AckKind::Nak(Some(
                    Duration::from_secs(2),
                )))
                .await;
        }
    }
}

/// Version conflicts mean another engine instance changed the same person
/// concurrently: re-reading and deciding again is the correct response.
async fn apply_with_retry(
    pool: &PgPool,
    engine: &Engine,
    clock: &Clock,
    envelope: &IngestEnvelope,
) -> Result<Applied, process::ProcessError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match apply_envelope(pool, engine, envelope, clock.now()).await {
            Err(e) if e.is_conflict() && attempt < 10 => {
                tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
            }
            other => return other,
        }
    }
}
