//! The fan-out service: one logical SCIM provider per configured app.
//! Jobs are level-triggered ("bring this person in this app to its desired
//! state"), so redelivered, duplicated or stale jobs are harmless. Per app:
//! a concurrency limit, an optional request-rate limit, a circuit breaker,
//! and a dead-letter queue for jobs that cannot succeed.

pub mod batch;
pub mod breaker;
pub mod decide;
pub mod groups;
pub mod mapping;
pub mod replay_app;
mod server_behaviour;
pub mod sweep;
pub mod worker;

pub use worker::{account_stream, AppWorker, Outcome, WorkerError};

use breaker::{Admit, Breaker, BreakerConfig, Transition};
use futures::StreamExt;
use serde_json::json;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tenure_bus::dlq::DeadLetter;
use tenure_bus::{subjects, Bus, Job, JOBS_STREAM};
use tenure_config::{AppConfig, Config, FanoutConfig};
use tenure_scim::discovery::DiscoveredCaps;
use tenure_scim::{Auth, RetryPolicy, ScimClient};
use tenure_store::sqlx::PgPool;
use tenure_store::{ExpectedVersion, Metadata, NewEvent};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};
use uuid::Uuid;

pub fn retry_policy(cfg: &FanoutConfig) -> RetryPolicy {
    RetryPolicy {
        max_attempts: cfg.max_attempts,
        base_delay: Duration::from_millis(cfg.base_delay_ms),
        max_delay: Duration::from_millis(cfg.max_delay_ms),
    }
}

fn limiter(app: &AppConfig) -> Option<Arc<worker::Limiter>> {
    let rate = NonZeroU32::new(app.rate_limit_per_second?)?;
    let burst = app
        .rate_limit_burst
        .and_then(NonZeroU32::new)
        .unwrap_or(rate);
    Some(Arc::new(governor::RateLimiter::direct(
        governor::Quota::per_second(rate).allow_burst(burst),
    )))
}

/// A worker that never talks to the app on its own (no discovery): for
/// planning from Tenure's last known state.
pub fn offline_worker(
    app: &AppConfig,
    fanout: &FanoutConfig,
    pool: PgPool,
) -> anyhow::Result<AppWorker> {
    let profile = app.scim_profile()?;
    Ok(AppWorker {
        app: app.clone(),
        client: ScimClient::new(&app.base_url, Auth::None, fanout.request_timeout())?,
        caps: std::sync::RwLock::new(DiscoveredCaps {
            caps: profile.apply(None),
            discovered: None,
            bulk: None,
            fetched_at: Instant::now(),
        }),
        profile,
        retry: retry_policy(fanout),
        pool,
        limiter: None,
    })
}

/// Builds the worker of one app: its HTTP client (one connection pool per
/// app), the capabilities its server announces and its request budget.
pub async fn app_worker(
    app: &AppConfig,
    fanout: &FanoutConfig,
    pool: PgPool,
) -> anyhow::Result<AppWorker> {
    let auth = match (&app.token, &app.basic_user) {
        (Some(secret), Some(user)) => Auth::Basic {
            user: user.clone(),
            password: secret.resolve()?.expose().to_string(),
        },
        (Some(secret), None) => Auth::Bearer(secret.resolve()?.expose().to_string()),
        (None, _) => Auth::None,
    };
    let profile = app.scim_profile()?;
    let client = ScimClient::for_profile(&app.base_url, auth, fanout.request_timeout(), &profile)?;
    // A server's Retry-After pauses the whole app, at most as long as one
    // call would ever wait.
    client
        .pause()
        .set_cap(Duration::from_millis(fanout.max_delay_ms));
    let caps = match client.discover(&profile).await {
        Ok((found, _)) => found,
        Err(e) => {
            // The profile's assumptions are the best guess until the next
            // refresh; a wrong guess shows up as a failed call in the audit.
            warn!(app = %app.name, error = %e, "capability discovery failed; using the profile's assumptions");
            DiscoveredCaps {
                caps: profile.apply(None),
                discovered: None,
                bulk: None,
                // Stale at once, so the first job asks again.
                fetched_at: Instant::now()
                    .checked_sub(worker::CAPS_TTL)
                    .unwrap_or_else(Instant::now),
            }
        }
    };
    info!(app = %app.name, profile = %profile.name, caps = ?caps.caps, bulk = ?caps.bulk.filter(|_| app.bulk == tenure_config::BulkMode::Auto), "app ready");
    Ok(AppWorker {
        app: app.clone(),
        client,
        caps: std::sync::RwLock::new(caps),
        profile,
        retry: retry_policy(fanout),
        pool,
        limiter: limiter(app),
    })
}

/// One app's worker with the state its jobs share.
struct AppRuntime {
    worker: AppWorker,
    breaker: Mutex<Breaker>,
    bus: Bus,
    fanout: FanoutConfig,
    partitions: u32,
    /// Set when an account changed; the group loop then syncs the groups.
    groups_dirty: std::sync::atomic::AtomicBool,
    /// Jobs in flight in this process, all apps together: each holds a
    /// database connection for its lease, so they must leave room in the
    /// shared pool for everything else.
    job_slots: Arc<tokio::sync::Semaphore>,
}

/// Connections of the process's pool that fanout jobs leave to others: the
/// engine's two notification listeners when it shares the process, and
/// room for short transactions (a job's second connection for the
/// mass-change guard, dead letters, the engine, the API).
pub const POOL_HEADROOM: u32 = 4;

/// Fanout jobs one process runs at once over all apps: what the pool has
/// left after [`POOL_HEADROOM`], at least one.
pub fn job_slots(pool_size: u32) -> usize {
    pool_size.saturating_sub(POOL_HEADROOM).max(1) as usize
}

/// Runs one consumer per app until cancelled.
pub async fn run(
    cfg: &Config,
    pool: PgPool,
    bus: Bus,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if cfg.apps.is_empty() {
        // Not an error: an install may start with only an IdP or sources
        // configured. Idle until shut down rather than end the process.
        info!("no [[app]] is configured; fanout is idle (add an app and restart to provision)");
        shutdown.cancelled().await;
        return Ok(());
    }
    if cfg.fanout.max_deliver < 1 {
        warn!(
            max_deliver = cfg.fanout.max_deliver,
            "fanout.max_deliver sets no limit: a person an app keeps failing is retried for ever and never dead-lettered"
        );
    }
    let slots = job_slots(pool.options().get_max_connections());
    info!(
        job_slots = slots,
        pool = pool.options().get_max_connections(),
        "fanout job slots for all apps"
    );
    let job_slots = Arc::new(tokio::sync::Semaphore::new(slots));
    let mut tasks = Vec::new();
    for app in &cfg.apps {
        let runtime = Arc::new(AppRuntime {
            worker: app_worker(app, &cfg.fanout, pool.clone()).await?,
            breaker: Mutex::new(Breaker::new(BreakerConfig {
                threshold: cfg.fanout.breaker_failures,
                error_rate: cfg.fanout.breaker_error_rate,
                window: Duration::from_secs(cfg.fanout.breaker_window_secs.max(1)),
                cooldown: Duration::from_millis(cfg.fanout.breaker_cooldown_ms),
                max_cooldown: Duration::from_millis(cfg.fanout.breaker_max_cooldown_ms),
            })),
            bus: bus.clone(),
            fanout: cfg.fanout.clone(),
            partitions: cfg.engine.partitions,
            // A first sync at start-up catches up with what happened while down.
            groups_dirty: std::sync::atomic::AtomicBool::new(true),
            job_slots: job_slots.clone(),
        });
        if !app.groups.is_empty() {
            tasks.push(tokio::spawn(group_loop(runtime.clone(), shutdown.clone())));
        }
        let sweeps = tokio::spawn(sweep_loop(
            runtime.clone(),
            app.reconcile_cron.clone(),
            shutdown.clone(),
        ));
        tasks.push(sweeps);
        let shutdown = shutdown.clone();
        let concurrency = app.concurrency(&cfg.fanout);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = consume(runtime.clone(), concurrency, shutdown).await {
                warn!(app = %runtime.worker.app.name, error = %e, "app consumer stopped");
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

impl AppRuntime {
    fn admit(&self, person: Uuid) -> Admit {
        match self.breaker.lock() {
            Ok(mut b) => b.admit(person, Instant::now()),
            Err(_) => Admit::Yes,
        }
    }

    /// A person's account now exists in the app: their direct reports'
    /// accounts can name it as manager, so they are reconciled again.
    async fn requeue_reports(&self, job: &Job) {
        if !self.worker.app.mapping.manager {
            return;
        }
        let reports: Vec<Uuid> = match tenure_store::sqlx::query_scalar(
            "SELECT r.person_id FROM persons m
             JOIN persons r ON r.source = m.source AND r.attributes->>'manager_id' = m.source_person_id
             JOIN entitlements e ON e.app = $2 AND e.person_id = r.person_id
             WHERE m.person_id = $1",
        )
        .bind(job.person_id)
        .bind(&self.worker.app.name)
        .fetch_all(&self.worker.pool)
        .await
        {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "could not find direct reports; their manager links wait for the next reconcile");
                return;
            }
        };
        let batch: Vec<_> = reports
            .into_iter()
            .filter_map(|report| {
                let follow = Job {
                    app: job.app.clone(),
                    person_id: report,
                    correlation_id: job.correlation_id,
                    causation_id: job.causation_id,
                    approved: false,
                };
                let payload = serde_json::to_vec(&follow).ok()?;
                Some((
                    subjects::jobs(&job.app, follow.partition(self.partitions)),
                    format!(
                        "manager-linked:{}:{}:{}:{}",
                        job.app,
                        job.person_id,
                        report,
                        job.causation_id.map(|c| c.to_string()).unwrap_or_default()
                    ),
                    bytes::Bytes::from(payload),
                ))
            })
            .collect();
        for result in self.bus.publish_many(batch).await {
            if let Err(e) = result {
                warn!(error = %e, "could not queue a direct report's reconcile");
            }
        }
    }

    fn abandon_probe(&self) {
        if let Ok(mut b) = self.breaker.lock() {
            b.abandon_probe(Instant::now());
        }
    }

    /// How long no new job should start: while the circuit is open, or
    /// while the app asked for quiet with Retry-After.
    fn wait(&self) -> Duration {
        let breaker = self
            .breaker
            .lock()
            .map(|b| b.wait(Instant::now()))
            .unwrap_or_default();
        breaker.max(self.worker.client.pause().remaining())
    }

    /// Whether a job may run for a person with an open dead letter in this
    /// app. Only a newer change of the person runs it (and clears the dead
    /// letter, with an event); anything else waits for `tenure dlq redrive`.
    async fn passes_dead_letter(&self, job: &Job) -> bool {
        let app = &self.worker.app.name;
        let open = match tenure_store::dead_letters::open_dead_letter(
            &self.worker.pool,
            app,
            job.person_id,
        )
        .await
        {
            Ok(open) => open,
            Err(e) => {
                // Running a job twice is harmless; losing one is not.
                warn!(error = %e, "cannot read open dead letters; running the job");
                return true;
            }
        };
        let Some(open) = open else { return true };
        if !tenure_store::dead_letters::job_clears(&open, job.causation_id) {
            info!(
                dead_letter = open.sequence,
                "the person's job is dead-lettered; skipped until `tenure dlq redrive`"
            );
            return false;
        }
        self.clear_dead_letter(job, &open).await;
        true
    }

    async fn clear_dead_letter(&self, job: &Job, open: &tenure_store::OpenDeadLetter) {
        let app = &self.worker.app.name;
        let stream = account_stream(app, job.person_id);
        let event = self.event(
            "DeadLetterCleared",
            json!({ "sequence": open.sequence, "reason": "the person changed since", "caused_by": job.causation_id }),
            Some(job),
        );
        let result = async {
            let mut tx = self.worker.pool.begin().await?;
            tenure_store::dead_letters::close_dead_letter(
                &mut tx,
                app,
                job.person_id,
                &stream,
                &event,
            )
            .await?;
            tx.commit().await?;
            anyhow::Ok(())
        }
        .await;
        match result {
            Ok(()) => info!(
                dead_letter = open.sequence,
                "the person changed; dead letter cleared"
            ),
            Err(e) => warn!(error = %e, "could not clear a dead letter; the job runs anyway"),
        }
    }

    async fn record(&self, person: Uuid, healthy: bool, error: Option<&str>) {
        let transition = match self.breaker.lock() {
            Ok(mut b) => b.record(person, healthy, Instant::now()),
            Err(_) => None,
        };
        let app = &self.worker.app.name;
        let (kind, data) = match transition {
            Some(Transition::Opened {
                cooldown,
                failing,
                seen,
            }) => {
                warn!(app = %app, ?cooldown, failing, seen, "circuit opened: calls to the app are paused");
                (
                    "CircuitOpened",
                    json!({
                        "cooldown_ms": cooldown.as_millis() as u64,
                        "failing_persons": failing,
                        "persons_seen": seen,
                        "last_error": error,
                    }),
                )
            }
            Some(Transition::Closed) => {
                info!(app = %app, "circuit closed: the app answers again");
                ("CircuitClosed", json!({}))
            }
            None => return,
        };
        self.audit(&format!("app-{app}"), kind, data, None).await;
    }

    fn event(&self, kind: &str, data: serde_json::Value, job: Option<&Job>) -> NewEvent {
        NewEvent {
            event_id: Uuid::new_v4(),
            event_type: kind.into(),
            data,
            metadata: Metadata {
                correlation_id: job.map_or_else(Uuid::new_v4, |j| j.correlation_id),
                causation_id: job.and_then(|j| j.causation_id),
                person_id: job.map(|j| j.person_id),
                app: Some(self.worker.app.name.clone()),
                source: None,
                actor: "fanout".into(),
                effective_at: None,
            },
        }
    }

    async fn audit(&self, stream: &str, kind: &str, data: serde_json::Value, job: Option<&Job>) {
        let event = self.event(kind, data, job);
        let result = async {
            let mut conn = self.worker.pool.acquire().await?;
            tenure_store::append(&mut conn, stream, ExpectedVersion::Any, &[event]).await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            warn!(stream, kind, error = %e, "could not record an audit event");
        }
    }

    /// Files the job for operators and records that on the account stream,
    /// with the open dead letter that keeps periodic reconciles away from
    /// the person until it is redriven. `origin` names the job's message.
    async fn dead_letter(
        &self,
        job: &Job,
        reason: &str,
        error: &str,
        deliveries: u64,
        origin: &str,
    ) -> bool {
        let letter = DeadLetter {
            job: job.clone(),
            error: error.to_string(),
            deliveries,
            reason: reason.to_string(),
            dead_at: chrono::Utc::now(),
        };
        match self.bus.dead_letter_from(&letter, origin).await {
            Ok(sequence) => {
                warn!(
                    sequence,
                    reason, error, "job moved to the dead-letter queue"
                );
                let stream = account_stream(&job.app, job.person_id);
                let event = self.event(
                    "JobDeadLettered",
                    json!({ "sequence": sequence, "reason": reason, "error": error, "deliveries": deliveries }),
                    Some(job),
                );
                let open = tenure_store::OpenDeadLetter {
                    app: job.app.clone(),
                    person_id: job.person_id,
                    sequence: i64::try_from(sequence).unwrap_or(i64::MAX),
                    reason: reason.to_string(),
                    error: error.to_string(),
                    deliveries: i64::try_from(deliveries).unwrap_or(i64::MAX),
                    causation_id: job.causation_id,
                    dead_at: letter.dead_at,
                };
                let recorded = async {
                    let mut tx = self.worker.pool.begin().await?;
                    tenure_store::dead_letters::record_dead_letter(&mut tx, &stream, &event, &open)
                        .await?;
                    tx.commit().await?;
                    anyhow::Ok(())
                }
                .await;
                if let Err(e) = recorded {
                    // The letter is filed; only the periodic reconcile may
                    // try the person again before it is redriven.
                    warn!(stream, error = %e, "could not record the dead letter in the database");
                }
                true
            }
            Err(e) => {
                warn!(error = %e, "could not dead-letter the job; it will be redelivered");
                false
            }
        }
    }
}

/// Runs the app's unmanaged-account sweep on its reconcile schedule. Among
/// several fanout processes, the one that claims the schedule's row runs it.
async fn sweep_loop(runtime: Arc<AppRuntime>, cron: String, shutdown: CancellationToken) {
    use std::str::FromStr;
    let Ok(schedule) = cron::Schedule::from_str(&cron) else {
        warn!(app = %runtime.worker.app.name, "reconcile_cron does not parse; no sweeps");
        return;
    };
    let name = format!("sweep:{}", runtime.worker.app.name);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(15)) => {}
        }
        match claim_due(&runtime.worker.pool, &name, &schedule).await {
            Ok(true) => {
                // The periodic run also repairs group drift.
                runtime
                    .groups_dirty
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                match runtime.worker.sweep(false).await {
                    Ok(r) => {
                        info!(app = %r.app, listed = r.listed, unmanaged = r.unmanaged.len(), deactivated = r.deactivated, "sweep done")
                    }
                    Err(e) => warn!(error = %e, "sweep failed; next run at the next schedule"),
                }
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "sweep schedule unreadable"),
        }
    }
}

/// Keeps the app's groups in line: a sync a moment after accounts changed
/// (changes in between are coalesced), and on every periodic sweep.
async fn group_loop(runtime: Arc<AppRuntime>, shutdown: CancellationToken) {
    use std::sync::atomic::Ordering;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        if !runtime.groups_dirty.swap(false, Ordering::Relaxed) {
            continue;
        }
        match runtime.worker.sync_groups().await {
            Ok(r) if !r.errors.is_empty() => {
                warn!(app = %r.app, errors = ?r.errors, "group sync incomplete; retrying later");
                runtime.groups_dirty.store(true, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Ok(r) => {
                if r.created + r.updated + r.deleted > 0 {
                    info!(app = %r.app, created = r.created, updated = r.updated, deleted = r.deleted, "groups synced");
                }
                if let Some(why) = r.skipped {
                    warn!(app = %r.app, why, "groups not synced");
                }
                if !r.missing.is_empty() {
                    warn!(app = %r.app, missing = ?r.missing, "groups must be created in the app first (its profile does not let Tenure create them)");
                }
            }
            Err(e) => {
                warn!(error = %e, "group sync failed; retrying later");
                runtime.groups_dirty.store(true, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// Whether a periodic task is due now, claiming it when it is.
async fn claim_due(
    pool: &PgPool,
    name: &str,
    schedule: &cron::Schedule,
) -> Result<bool, tenure_store::sqlx::Error> {
    let mut tx = pool.begin().await?;
    let due = tenure_store::claim_periodic(&mut tx, name, chrono::Utc::now(), |last| {
        schedule.after(&last).next()
    })
    .await?;
    tx.commit().await?;
    Ok(due)
}

async fn consume(
    runtime: Arc<AppRuntime>,
    concurrency: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = runtime.worker.app.name.clone();
    let ack_wait = Duration::from_secs(runtime.fanout.ack_wait_secs.max(1));
    let durable = format!("fanout-{app}");
    let filter = subjects::jobs_of_app(&app);
    let consumer = if runtime.fanout.max_deliver >= 1 {
        // Created or updated: a changed `max_deliver` must reach JetStream,
        // or JetStream would stop delivering a failing job before its last
        // delivery here dead-letters it. Failed jobs are NAKed with their
        // own delays; the backoff only spaces deliveries of jobs whose
        // worker vanished.
        let redelivery = tenure_bus::Redelivery {
            max_deliver: runtime.fanout.max_deliver,
            backoff: vec![ack_wait],
            max_ack_pending: 1000,
        };
        runtime
            .bus
            .bounded_consumer(JOBS_STREAM, &durable, &filter, &redelivery)
            .await?
    } else {
        runtime
            .bus
            .durable_consumer(
                JOBS_STREAM,
                &durable,
                &filter,
                ack_wait,
                runtime.fanout.max_deliver,
            )
            .await?
    };
    let mut messages = consumer.messages().await?;
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    loop {
        // While the circuit is open, leave jobs in the stream.
        let pause = runtime.wait();
        if !pause.is_zero() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause.min(Duration::from_secs(1))) => continue,
            }
        }
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
        // With bulk, the jobs ready now are gathered for a batch.
        let mut batch = vec![msg];
        if let Some(limits) = runtime.worker.bulk_limits() {
            let cap = runtime
                .worker
                .app
                .bulk_batch
                .min(limits.max_operations)
                .max(1);
            let deadline = tokio::time::Instant::now() + BATCH_GATHER;
            while batch.len() < cap {
                match tokio::time::timeout_at(deadline, messages.next()).await {
                    Ok(Some(Ok(m))) => batch.push(m),
                    Ok(Some(Err(e))) => {
                        warn!(error = %e, "job consumer error; continuing");
                        break;
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let permit = slots.clone().acquire_owned().await?;
        let shared = runtime.job_slots.clone().acquire_owned().await?;
        let runtime = runtime.clone();
        if batch.len() == 1 {
            let msg = batch.pop().expect("one message");
            tokio::spawn(async move {
                handle(&runtime, msg, ack_wait).await;
                drop((permit, shared));
            });
        } else {
            let slots = slots.clone();
            tokio::spawn(async move {
                handle_batch(&runtime, batch, ack_wait, slots).await;
                drop((permit, shared));
            });
        }
    }
    Ok(())
}

/// How long the consumer waits for more ready jobs to fill a batch. The
/// jobs of an initial load are already buffered, so a batch fills at once;
/// a lone job waits this long at most.
const BATCH_GATHER: Duration = Duration::from_millis(5);

/// Jobs received together for an app with bulk: the brand-new creates
/// among them are reconciled as one batch, the rest as single jobs.
async fn handle_batch(
    runtime: &Arc<AppRuntime>,
    msgs: Vec<async_nats::jetstream::Message>,
    ack_wait: Duration,
    slots: Arc<tokio::sync::Semaphore>,
) {
    use async_nats::jetstream::AckKind;
    let single = |msg: async_nats::jetstream::Message| {
        let (runtime, slots) = (runtime.clone(), slots.clone());
        tokio::spawn(async move {
            // Each single job takes its own slots, as from the consumer.
            let Ok(permit) = slots.acquire_owned().await else {
                return;
            };
            let Ok(shared) = runtime.job_slots.clone().acquire_owned().await else {
                return;
            };
            handle(&runtime, msg, ack_wait).await;
            drop((permit, shared));
        });
    };
    let mut jobs = Vec::with_capacity(msgs.len());
    let mut live = Vec::with_capacity(msgs.len());
    for msg in msgs {
        match serde_json::from_slice::<Job>(&msg.payload) {
            Ok(job) => {
                jobs.push(job);
                live.push(msg);
            }
            // The single path terminates undecodable jobs.
            Err(_) => single(msg),
        }
    }
    // Dead-lettered persons are the single path's business too.
    let persons: Vec<Uuid> = jobs.iter().map(|j| j.person_id).collect();
    let dead: std::collections::HashSet<Uuid> =
        match tenure_store::dead_letters::open_dead_letters_among(
            &runtime.worker.pool,
            &runtime.worker.app.name,
            &persons,
        )
        .await
        {
            Ok(open) => open.into_iter().map(|d| d.person_id).collect(),
            Err(e) => {
                warn!(error = %e, "cannot read open dead letters; jobs run one by one");
                persons.iter().copied().collect()
            }
        };
    if !dead.is_empty() {
        let (gated, rest): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .zip(live)
            .partition(|(j, _)| dead.contains(&j.person_id));
        gated.into_iter().for_each(|(_, m)| single(m));
        (jobs, live) = rest.into_iter().unzip();
        if jobs.is_empty() {
            return;
        }
    }
    // An open or probing circuit is the single path's business.
    let first = jobs.first().map(|j| j.person_id).unwrap_or_default();
    match runtime.admit(first) {
        Admit::Yes => {}
        Admit::Probe => {
            runtime.abandon_probe();
            live.into_iter().for_each(single);
            return;
        }
        Admit::No { .. } => {
            live.into_iter().for_each(single);
            return;
        }
    }
    let picked = match runtime.worker.batchable(&jobs).await {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "cannot plan a batch; jobs run one by one");
            vec![false; jobs.len()]
        }
    };
    let mut batch_jobs = Vec::new();
    let mut batch_msgs = Vec::new();
    for ((job, msg), take) in jobs.into_iter().zip(live).zip(picked) {
        if take {
            batch_jobs.push(job);
            batch_msgs.push(msg);
        } else {
            single(msg);
        }
    }
    if batch_jobs.len() < 2 {
        batch_msgs.into_iter().for_each(single);
        return;
    }
    // Long fallbacks must not look like a dead worker to JetStream.
    let progress = async {
        loop {
            tokio::time::sleep(ack_wait / 3).await;
            for m in &batch_msgs {
                let _ = m.ack_with(AckKind::Progress).await;
            }
        }
    };
    let results = tokio::select! {
        r = runtime.worker.reconcile_batch(&batch_jobs) => r,
        _ = progress => unreachable!("the progress loop never ends"),
    };
    let budget = u64::try_from(runtime.fanout.max_deliver)
        .unwrap_or(u64::MAX)
        .max(1);
    for ((job, msg), result) in batch_jobs.into_iter().zip(batch_msgs).zip(results) {
        match result {
            batch::BatchResult::Single => single(msg),
            batch::BatchResult::Done(result) => {
                let span = tracing::info_span!("reconcile", app = %job.app, person = %job.person_id, correlation_id = %job.correlation_id);
                let delivered = msg.info().map(|i| i.delivered).unwrap_or(1).max(1) as u64;
                settle(runtime, &msg, &job, delivered, budget, Admit::Yes, result)
                    .instrument(span)
                    .await;
            }
        }
    }
}

async fn handle(runtime: &AppRuntime, msg: async_nats::jetstream::Message, ack_wait: Duration) {
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
        if !runtime.passes_dead_letter(&job).await {
            if let Err(e) = msg.ack().await {
                warn!(error = %e, "ack failed; the job will be skipped again");
            }
            return;
        }
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1).max(1) as u64;
        let budget = u64::try_from(runtime.fanout.max_deliver)
            .unwrap_or(u64::MAX)
            .max(1);
        let admitted = runtime.admit(job.person_id);
        if let Admit::No { retry_in } = admitted {
            // A job turned away by an open circuit still uses a delivery;
            // on its last one it goes to the dead letters, never nowhere.
            if delivered >= budget
                && runtime
                    .dead_letter(
                        &job,
                        "exhausted",
                        "the app's circuit stayed open",
                        delivered,
                        &origin(&msg),
                    )
                    .await
            {
                let _ = msg.ack_with(AckKind::Term).await;
            } else {
                let _ = msg
                    .ack_with(AckKind::Nak(Some(retry_in.max(Duration::from_millis(100)))))
                    .await;
            }
            return;
        }
        // Long retries must not look like a dead worker to JetStream.
        let progress = async {
            loop {
                tokio::time::sleep(ack_wait / 3).await;
                let _ = msg.ack_with(AckKind::Progress).await;
            }
        };
        let result = tokio::select! {
            r = runtime.worker.reconcile(&job) => r,
            _ = progress => unreachable!("the progress loop never ends"),
        };
        settle(runtime, &msg, &job, delivered, budget, admitted, result).await;
    }
    .instrument(span)
    .await
}

/// The job message's place in its stream, which names it for good (a
/// redriven job is a new message).
fn origin(msg: &async_nats::jetstream::Message) -> String {
    match msg.info() {
        Ok(i) => format!("{}:{}", i.stream, i.stream_sequence),
        Err(_) => format!("{}:{}", msg.subject, Uuid::new_v4()),
    }
}

/// Acknowledges a reconciled job as its outcome says: done, dead-lettered,
/// or redelivered with backoff; and tells the app's circuit breaker.
async fn settle(
    runtime: &AppRuntime,
    msg: &async_nats::jetstream::Message,
    job: &Job,
    delivered: u64,
    budget: u64,
    admitted: Admit,
    result: Result<Outcome, WorkerError>,
) {
    use async_nats::jetstream::AckKind;
    let job = job.clone();
    match result {
        Ok(Outcome::Failed(reason)) => {
            // The app answered, so it is healthy; the job needs a person.
            runtime.record(job.person_id, true, None).await;
            if runtime
                .dead_letter(&job, "refused", &reason, delivered, &origin(msg))
                .await
            {
                let _ = msg.ack_with(AckKind::Term).await;
            } else {
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                    .await;
            }
        }
        Ok(outcome) => {
            runtime.record(job.person_id, true, None).await;
            // Jobs also come when only a person's IdP groups changed (the
            // account itself stays as it is), so any job may change groups.
            if matches!(outcome, Outcome::Changed(_)) || !runtime.worker.app.groups.is_empty() {
                runtime
                    .groups_dirty
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if let Outcome::Changed(what) = &outcome {
                if what
                    .iter()
                    .any(|w| matches!(*w, "AccountCreated" | "AccountLinked" | "AccountAdopted"))
                {
                    runtime.requeue_reports(&job).await;
                }
            }
            if outcome == Outcome::Staged {
                warn!("held by the mass-change guard; `tenure approve` releases it");
            } else {
                info!(?outcome, "reconciled");
            }
            if let Err(e) = msg.ack().await {
                warn!(error = %e, "ack failed; the job will run again, harmlessly");
            }
        }
        Err(e) => {
            if matches!(e, WorkerError::Transient(_)) {
                runtime
                    .record(job.person_id, false, Some(&e.to_string()))
                    .await;
            } else if admitted == Admit::Probe {
                // The probe failed on our side (database), not the app's:
                // let a later job probe instead of leaving the circuit
                // half-open for good.
                runtime.abandon_probe();
            }
            if delivered >= budget
                && runtime
                    .dead_letter(&job, "exhausted", &e.to_string(), delivered, &origin(msg))
                    .await
            {
                let _ = msg.ack_with(AckKind::Term).await;
                return;
            }
            let delay = Duration::from_secs(2u64.saturating_pow(delivered.clamp(1, 8) as u32));
            warn!(error = %e, delivered, ?delay, "reconcile failed; job will be redelivered");
            let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_leave_the_headroom_of_the_pool_to_others() {
        assert_eq!(job_slots(20), 16);
        assert_eq!(job_slots(5), 1);
        assert_eq!(job_slots(4), 1, "at least one job runs");
        assert_eq!(job_slots(0), 1);
    }
}
