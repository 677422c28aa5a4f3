//! The fan-out service: one logical SCIM provider per configured app.
//! Jobs are level-triggered ("bring this person in this app to its desired
//! state"), so redelivered, duplicated or stale jobs are harmless.

pub mod mapping;
pub mod worker;

pub use worker::{account_stream, AppWorker, Outcome, WorkerError};

use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tenure_bus::{subjects, Bus, Job, JOBS_STREAM};
use tenure_config::{AppConfig, Config, FanoutConfig};
use tenure_scim::{Auth, Capabilities, RetryPolicy, ScimClient};
use tenure_store::sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

pub fn retry_policy(cfg: &FanoutConfig) -> RetryPolicy {
    RetryPolicy {
        max_attempts: cfg.max_attempts,
        base_delay: Duration::from_millis(cfg.base_delay_ms),
        max_delay: Duration::from_millis(cfg.max_delay_ms),
    }
}

/// Builds the worker of one app: its HTTP client (one connection pool per
/// app) and the capabilities its server announces.
pub async fn app_worker(
    app: &AppConfig,
    fanout: &FanoutConfig,
    pool: PgPool,
) -> anyhow::Result<AppWorker> {
    let auth = match &app.token {
        Some(secret) => Auth::Bearer(secret.resolve()?.expose().to_string()),
        None => Auth::None,
    };
    let client = ScimClient::new(&app.base_url, auth, fanout.request_timeout())?;
    let caps = match client.service_provider_config().await {
        Ok(call) => call.value,
        Err(e) => {
            // Without discovery the RFC defaults are the best guess; a wrong
            // guess shows up as a failed call in the audit, not silently.
            warn!(app = %app.name, error = %e, "no ServiceProviderConfig; assuming PATCH and filter support");
            Capabilities::default()
        }
    };
    info!(app = %app.name, ?caps, "app ready");
    Ok(AppWorker {
        app: app.clone(),
        client,
        caps,
        retry: retry_policy(fanout),
        pool,
    })
}

/// Runs one consumer per app until cancelled.
pub async fn run(
    cfg: &Config,
    pool: PgPool,
    bus: Bus,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for app in &cfg.apps {
        let worker = Arc::new(app_worker(app, &cfg.fanout, pool.clone()).await?);
        let bus = bus.clone();
        let fanout = cfg.fanout.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = consume(worker.clone(), bus, fanout, shutdown).await {
                warn!(app = %worker.app.name, error = %e, "app consumer stopped");
            }
        }));
    }
    if tasks.is_empty() {
        warn!("no apps configured; fanout has nothing to do");
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

async fn consume(
    worker: Arc<AppWorker>,
    bus: Bus,
    fanout: FanoutConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let ack_wait = Duration::from_secs(fanout.ack_wait_secs.max(1));
    let consumer = bus
        .durable_consumer(
            JOBS_STREAM,
            &format!("fanout-{}", worker.app.name),
            &subjects::jobs_of_app(&worker.app.name),
            ack_wait,
            fanout.max_deliver,
        )
        .await?;
    let mut messages = consumer.messages().await?;
    let slots = Arc::new(tokio::sync::Semaphore::new(fanout.concurrency.max(1)));
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = messages.next() => m,
        };
        let msg = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                warn!(error = %e, "job consumer error; continuing");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            None => break,
        };
        let permit = slots.clone().acquire_owned().await?;
        let worker = worker.clone();
        tokio::spawn(async move {
            handle(&worker, msg, ack_wait).await;
            drop(permit);
        });
    }
    Ok(())
}

async fn handle(worker: &AppWorker, msg: async_nats::jetstream::Message, ack_wait: Duration) {
    use async_nats::jetstream::AckKind;
    let job: Job = match serde_json::from_slice(&msg.payload) {
        Ok(j) => j,
        Err(e) => {
            warn!(error = %e, "undecodable job; terminating it");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
    };
    let span = tracing::info_span!("reconcile", app = %job.app, person = %job.person_id, correlation_id = %job.correlation_id);
    async {
        // Long retries must not look like a dead worker to JetStream.
        let progress = async {
            loop {
                tokio::time::sleep(ack_wait / 3).await;
                let _ = msg.ack_with(AckKind::Progress).await;
            }
        };
        let result = tokio::select! {
            r = worker.reconcile(&job) => r,
            _ = progress => unreachable!("the progress loop never ends"),
        };
        match result {
            Ok(outcome) => {
                info!(?outcome, "reconciled");
                if let Err(e) = msg.ack().await {
                    warn!(error = %e, "ack failed; the job will run again, harmlessly");
                }
            }
            Err(e) => {
                let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
                let delay = Duration::from_secs(
                    (2u64.saturating_pow(delivered.clamp(1, 8) as u32)).min(300),
                );
                warn!(error = %e, delivered, ?delay, "reconcile failed; job will be redelivered");
                let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
            }
        }
    }
    .instrument(span)
    .await
}
