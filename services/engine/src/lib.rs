//! The engine: consumes verified source records, runs the pure person
//! lifecycle, and commits events, projections, schedules and outbox rows in
//! one transaction. Beside the consumer run the outbox relay and the
//! durable scheduler that fires future-dated transitions.

pub mod clock;
pub mod per_person;
pub mod process;
pub mod relay;
pub mod scheduler;
pub mod snapshot;

pub use clock::{Clock, ManualClock};
pub use process::{apply_envelope, Applied, Engine};

use std::sync::Arc;
use std::time::Duration;
use tenure_bus::{Bus, IdentityEnvelope, IngestEnvelope, Redelivery, INGEST_STREAM};
use tenure_config::Config;
use tenure_store::sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

/// How often, and how far apart, a record or IdP snapshot that failed is
/// delivered again before it is dead-lettered.
pub fn redelivery(cfg: &Config) -> Redelivery {
    let mut r = Redelivery::exponential(
        cfg.engine.max_deliver.max(1),
        Duration::from_secs(cfg.engine.redeliver_after_secs.max(1)),
        Duration::from_secs(600),
    );
    r.max_ack_pending = i64::try_from(cfg.engine.max_in_flight.max(1)).unwrap_or(i64::MAX);
    r
}

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
    let redelivery = redelivery(cfg);
    let limits = per_person::Limits {
        workers: cfg.engine.workers,
        max_in_flight: cfg.engine.max_in_flight,
        ack_wait: redelivery.ack_wait(),
    };
    let shared = Shared {
        pool,
        engine,
        bus: bus.clone(),
        clock,
        redelivery: redelivery.clone(),
    };

    let identities = tokio::spawn(consume(
        Arc::new(Identities(Consumer {
            shared: shared.clone(),
            durable: format!("{}-identity", cfg.engine.consumer_name),
        })),
        "tenure.identity.>",
        limits,
        shutdown.clone(),
    ));
    let records = Arc::new(Records(Consumer {
        shared,
        durable: cfg.engine.consumer_name.clone(),
    }));
    let result = consume(records, "tenure.ingest.>", limits, shutdown.clone()).await;
    shutdown.cancel();
    let _ = relay.await;
    let _ = scheduler.await;
    let _ = identities.await;
    result
}

/// What every consumer of the engine needs.
#[derive(Clone)]
struct Shared {
    pool: PgPool,
    engine: Engine,
    bus: Bus,
    clock: Clock,
    redelivery: Redelivery,
}

struct Consumer {
    shared: Shared,
    durable: String,
}

/// Runs one bounded durable consumer on the ingest stream, persons in
/// parallel, until cancelled.
async fn consume<W>(
    work: Arc<W>,
    filter: &str,
    limits: per_person::Limits,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    W: per_person::PerKey + AsRef<Consumer>,
{
    let c: &Consumer = (*work).as_ref();
    let bus = c.shared.bus.clone();
    let durable = c.durable.clone();
    let consumer = bus
        .bounded_consumer(INGEST_STREAM, &durable, filter, &c.shared.redelivery)
        .await?;
    // A message whose handler crashed or hung on every delivery is filed
    // too, not only those that failed with an error.
    match bus.watch_exhausted(INGEST_STREAM, &durable).await {
        Ok(watch) => {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = watch => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
        Err(e) => warn!(consumer = %durable, error = %e, "cannot watch for exhausted messages"),
    }
    // Pull about as many as can run soon; the rest stay in JetStream, where
    // their ack wait has not started.
    let messages = consumer
        .stream()
        .max_messages_per_batch(limits.workers.max(1) * 8)
        .messages()
        .await?;
    info!(consumer = %durable, workers = limits.workers, "engine consuming");
    per_person::run(work, messages, limits, shutdown).await;
    Ok(())
}

/// HR records, ordered per person.
struct Records(Consumer);

impl AsRef<Consumer> for Records {
    fn as_ref(&self) -> &Consumer {
        &self.0
    }
}

impl per_person::PerKey for Records {
    type Item = IngestEnvelope;

    fn key(
        &self,
        msg: &async_nats::jetstream::Message,
    ) -> Result<(String, IngestEnvelope), String> {
        // Ingest validated this already; one that still does not decode
        // would fail on every delivery.
        let envelope: IngestEnvelope = serde_json::from_slice(&msg.payload)
            .map_err(|e| format!("undecodable ingest message: {e}"))?;
        let person = process::person_id_for(&envelope.source, &envelope.record.person_id);
        Ok((person.to_string(), envelope))
    }

    async fn handle(&self, envelope: IngestEnvelope, msg: async_nats::jetstream::Message) {
        let s = &self.0.shared;
        let span = tracing::info_span!("apply", source = %envelope.source, delivery_id = %envelope.delivery_id, correlation_id = %envelope.correlation_id, person = tracing::field::Empty);
        let work = retry_conflicts(|| apply_envelope(&s.pool, &s.engine, &envelope, s.clock.now()));
        let result = tenure_bus::with_progress(&msg, s.redelivery.ack_wait() / 2, work)
            .instrument(span.clone())
            .await;
        settle(&self.0, msg, result.map(|_| ()))
            .instrument(span)
            .await;
    }

    async fn refuse(&self, msg: async_nats::jetstream::Message, why: String) {
        dead_letter(&self.0, &msg, &why).await;
    }
}

/// IdP identity snapshots, on their own durable consumer of the ingest
/// stream: a burst of group changes from the IdP never waits behind HR
/// records, nor they behind it. Ordered per IdP user, so a user's
/// snapshots are applied in the order they were written.
struct Identities(Consumer);

impl AsRef<Consumer> for Identities {
    fn as_ref(&self) -> &Consumer {
        &self.0
    }
}

impl per_person::PerKey for Identities {
    type Item = IdentityEnvelope;

    fn key(
        &self,
        msg: &async_nats::jetstream::Message,
    ) -> Result<(String, IdentityEnvelope), String> {
        let envelope: IdentityEnvelope = serde_json::from_slice(&msg.payload)
            .map_err(|e| format!("undecodable identity message: {e}"))?;
        let key = format!(
            "{}:{}",
            envelope.identity.provider, envelope.identity.idp_id
        );
        Ok((key, envelope))
    }

    async fn handle(&self, envelope: IdentityEnvelope, msg: async_nats::jetstream::Message) {
        let s = &self.0.shared;
        let span = tracing::info_span!("identity", provider = %envelope.identity.provider, idp_id = %envelope.identity.idp_id, correlation_id = %envelope.correlation_id, person = tracing::field::Empty);
        let work = retry_conflicts(|| {
            process::apply_identity(&s.pool, &s.engine, &envelope, s.clock.now())
        });
        let result = tenure_bus::with_progress(&msg, s.redelivery.ack_wait() / 2, work)
            .instrument(span.clone())
            .await;
        settle(&self.0, msg, result.map(|_| ()))
            .instrument(span)
            .await;
    }

    async fn refuse(&self, msg: async_nats::jetstream::Message, why: String) {
        dead_letter(&self.0, &msg, &why).await;
    }
}

/// Version conflicts and deadlocks mean another engine (or another of this
/// engine's workers) changed the same person at the same time: reading
/// again and deciding again is the correct response.
async fn retry_conflicts<F, Fut>(mut attempt_once: F) -> Result<Applied, process::ProcessError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Applied, process::ProcessError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match attempt_once().await {
            Err(e) if e.is_conflict() && attempt < 10 => {
                tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
            }
            other => return other,
        }
    }
}

/// Acks an applied message. A failed one is delivered again later, with
/// growing waits, unless the failure is permanent (the same input would
/// fail the same way: a value the database refuses) or this was its last
/// delivery: then it is dead-lettered with the error, and the messages
/// behind it go on.
async fn settle(
    c: &Consumer,
    msg: async_nats::jetstream::Message,
    outcome: Result<(), process::ProcessError>,
) {
    let e = match outcome {
        Ok(()) => {
            if let Err(e) = msg.ack().await {
                warn!(error = %e, "ack failed; the message will be redelivered and skipped as already processed");
            }
            return;
        }
        Err(e) => e,
    };
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
    let redelivery = &c.shared.redelivery;
    if e.is_permanent() {
        error!(error = %e, "message refused for good; dead-lettering it");
        dead_letter(c, &msg, &format!("refused: {e}")).await;
    } else if redelivery.is_last(delivered) {
        error!(error = %e, delivered, "message failed on its last delivery; dead-lettering it");
        dead_letter(c, &msg, &format!("failed {delivered} deliveries: {e}")).await;
    } else {
        let wait = redelivery.nak_delay(delivered);
        warn!(error = %e, delivered, wait_s = wait.as_secs(), "message not applied; it is delivered again later");
        let _ = msg
            .ack_with(async_nats::jetstream::AckKind::Nak(Some(wait)))
            .await;
    }
}

async fn dead_letter(c: &Consumer, msg: &async_nats::jetstream::Message, why: &str) {
    if let Err(e) = tenure_bus::dlq::settle_poison(&c.shared.bus, msg, &c.durable, why).await {
        error!(error = %e, %why, "could not dead-letter the message; it is delivered again later");
    }
}
