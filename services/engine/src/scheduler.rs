//! The durable scheduler: fires due person wakeups, and runs periodic tasks
//! (full reconcile per app, expiry sweep) on cron expressions. Any number of
//! engine instances may run it; rows are claimed with `FOR UPDATE SKIP
//! LOCKED` and each person is taken under an advisory lock, so a due
//! transition fires exactly once.

use crate::clock::Clock;
use crate::process::{self, Engine, ProcessError};
use chrono::{DateTime, Utc};
use std::str::FromStr;
use std::time::Duration;
use tenure_bus::{subjects, Job};
use tenure_config::Config;
use tenure_store::sqlx::{self, postgres::PgListener, PgPool, Row};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};
use uuid::Uuid;

/// Persons fired per transaction: large enough to amortise the commit,
/// small enough that one slow person does not hold many locks for long.
const BATCH: i64 = 64;
/// Shortest pause between scheduler rounds.
const MIN_WAIT: Duration = Duration::from_millis(20);

/// One periodic task with its cron schedule.
#[derive(Clone, Debug)]
pub struct CronTask {
    pub name: String,
    pub schedule: cron::Schedule,
    pub action: CronAction,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CronAction {
    /// Queue a reconcile job for every known person in one app.
    Reconcile { app: String },
    /// Re-evaluate every person whose last day is within the warning window.
    ExpirySweep,
}

pub fn cron_tasks(cfg: &Config) -> anyhow::Result<Vec<CronTask>> {
    let mut tasks = vec![CronTask {
        name: "expiry_sweep".into(),
        schedule: cron::Schedule::from_str(&cfg.engine.expiry_sweep_cron)?,
        action: CronAction::ExpirySweep,
    }];
    for app in &cfg.apps {
        tasks.push(CronTask {
            name: format!("reconcile:{}", app.name),
            schedule: cron::Schedule::from_str(&app.reconcile_cron)?,
            action: CronAction::Reconcile {
                app: app.name.clone(),
            },
        });
    }
    Ok(tasks)
}

/// Fires every schedule due at `now`, oldest first. Returns the persons
/// ticked.
pub async fn fire_due(
    pool: &PgPool,
    engine: &Engine,
    now: DateTime<Utc>,
) -> Result<usize, ProcessError> {
    let mut fired = 0;
    loop {
        let mut tx = pool.begin().await?;
        let rows = sqlx::query(
            "SELECT person_id, due_at FROM schedules WHERE due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(fired);
        }
        // Rows come oldest first, so the first row of a person is its oldest due instant.
        let mut persons: Vec<(Uuid, DateTime<Utc>)> = Vec::new();
        for r in &rows {
            let p: Uuid = r.try_get("person_id")?;
            if !persons.iter().any(|(q, _)| *q == p) {
                persons.push((p, r.try_get("due_at")?));
            }
        }
        let mut progressed = 0;
        for (person, oldest_due) in persons {
            if !process::try_lock_person(&mut tx, person).await? {
                continue;
            }
            let mut sp = sqlx::Connection::begin(&mut *tx).await?;
            let span = tracing::info_span!("fire", person = %person);
            match process::tick_person(&mut sp, engine, person, Some(oldest_due), now)
                .instrument(span)
                .await
            {
                Ok(events) => {
                    sp.commit().await?;
                    progressed += 1;
                    if !events.is_empty() {
                        info!(?events, "due transitions fired");
                    }
                }
                Err(e) if e.is_conflict() => {
                    // An ingest write got there first; the rows stay due and
                    // are fired again on the next round.
                    sp.rollback().await?;
                }
                Err(e) => {
                    sp.rollback().await?;
                    warn!(error = %e, "could not fire due schedules; will retry");
                }
            }
        }
        tx.commit().await?;
        fired += progressed;
        if progressed == 0 {
            // Everything due is held by other engines right now.
            return Ok(fired);
        }
    }
}

/// Runs each periodic task whose next run is due. A task that missed many
/// runs while Tenure was down runs once, not once per missed run.
pub async fn run_cron(
    pool: &PgPool,
    engine: &Engine,
    tasks: &[CronTask],
    now: DateTime<Utc>,
) -> Result<Vec<String>, ProcessError> {
    let mut ran = Vec::new();
    for task in tasks {
        let mut tx = pool.begin().await?;
        let due = tenure_store::claim_periodic(&mut tx, &task.name, now, |last| {
            task.schedule.after(&last).next()
        })
        .await?;
        if !due {
            // Commit, not roll back: a first sighting must be remembered.
            tx.commit().await?;
            continue;
        }
        match &task.action {
            CronAction::Reconcile { app } => reconcile_app(&mut tx, engine, app, now).await?,
            CronAction::ExpirySweep => expiry_sweep(&mut tx, engine, now).await?,
        }
        tx.commit().await?;
        info!(task = %task.name, "periodic task ran");
        ran.push(task.name.clone());
    }
    Ok(ran)
}

async fn reconcile_app(
    conn: &mut sqlx::PgConnection,
    engine: &Engine,
    app: &str,
    now: DateTime<Utc>,
) -> Result<(), ProcessError> {
    // Decide everyone again first, so a changed rule or a new app takes
    // effect; then ask the fanout to repair drift for whoever has an
    // entitlement in the app, except persons whose job is dead-lettered
    // there: the app refused them until an operator redrives them (or the
    // person changes), and retrying them every run only burns deliveries.
    reevaluate(conn, engine, now).await?;
    let persons: Vec<Uuid> = sqlx::query_scalar(
        "SELECT e.person_id FROM entitlements e
         WHERE e.app = $1 AND NOT EXISTS (
             SELECT 1 FROM open_dead_letters d WHERE d.app = e.app AND d.person_id = e.person_id)",
    )
    .bind(app)
    .fetch_all(&mut *conn)
    .await?;
    let run = Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("cron:{app}:{}", now.timestamp_micros()).as_bytes(),
    );
    queue_reconcile(conn, engine, app, &persons, run).await
}

/// Re-decides every known person at `now`, each in its own savepoint.
/// Returns how many persons had something new to record.
pub async fn reevaluate(
    conn: &mut sqlx::PgConnection,
    engine: &Engine,
    now: DateTime<Utc>,
) -> Result<usize, ProcessError> {
    let persons: Vec<Uuid> = sqlx::query_scalar("SELECT person_id FROM persons")
        .fetch_all(&mut *conn)
        .await?;
    let mut changed = 0;
    for person in persons {
        if !process::try_lock_person(&mut *conn, person).await? {
            continue;
        }
        let mut sp = sqlx::Connection::begin(&mut *conn).await?;
        match process::tick_person(&mut sp, engine, person, None, now).await {
            Ok(events) => {
                sp.commit().await?;
                changed += usize::from(!events.is_empty());
            }
            Err(e) => {
                sp.rollback().await?;
                warn!(person = %person, error = %e, "could not re-evaluate a person");
            }
        }
    }
    Ok(changed)
}

/// Queues a level-triggered job per person for `app` through the outbox.
pub async fn queue_reconcile(
    conn: &mut sqlx::PgConnection,
    engine: &Engine,
    app: &str,
    persons: &[Uuid],
    run: Uuid,
) -> Result<(), ProcessError> {
    let mut ids = Vec::with_capacity(persons.len());
    let mut subjects_ = Vec::with_capacity(persons.len());
    let mut payloads = Vec::with_capacity(persons.len());
    for p in persons {
        let job = Job {
            app: app.to_string(),
            person_id: *p,
            correlation_id: run,
            causation_id: None,
            approved: false,
        };
        ids.push(format!("reconcile:{run}:{p}"));
        subjects_.push(subjects::jobs(app, job.partition(engine.partitions)));
        payloads.push(serde_json::to_value(&job).unwrap_or_default());
    }
    sqlx::query(
        "INSERT INTO outbox (msg_id, subject, payload) SELECT * FROM UNNEST($1::text[], $2::text[], $3::jsonb[])
         ON CONFLICT (msg_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&subjects_)
    .bind(&payloads)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(process::OUTBOX_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn expiry_sweep(
    conn: &mut sqlx::PgConnection,
    engine: &Engine,
    now: DateTime<Utc>,
) -> Result<(), ProcessError> {
    let window =
        chrono::Duration::days(i64::from(engine.ctx.policy.expiry_warning_days.unwrap_or(0)) + 1);
    let persons: Vec<Uuid> = sqlx::query_scalar(
        "SELECT person_id FROM persons WHERE termination_at IS NOT NULL AND termination_at <= $1
           AND status NOT IN ('terminated', 'purged', 'cancelled')",
    )
    .bind(now + window)
    .fetch_all(&mut *conn)
    .await?;
    for person in persons {
        if !process::try_lock_person(&mut *conn, person).await? {
            continue;
        }
        let mut sp = sqlx::Connection::begin(&mut *conn).await?;
        match process::tick_person(&mut sp, engine, person, None, now).await {
            Ok(_) => sp.commit().await?,
            Err(e) => {
                sp.rollback().await?;
                warn!(person = %person, error = %e, "expiry sweep skipped a person");
            }
        }
    }
    Ok(())
}

/// The scheduler loop: fires due schedules, runs cron tasks, then sleeps
/// until the next due instant (at most `poll`), waking early when a new
/// schedule is written.
pub async fn run(
    pool: PgPool,
    engine: Engine,
    tasks: Vec<CronTask>,
    clock: Clock,
    poll: Duration,
    shutdown: CancellationToken,
) {
    let mut listener = match PgListener::connect_with(&pool).await {
        Ok(mut l) => l.listen(process::SCHEDULE_CHANNEL).await.ok().map(|_| l),
        Err(_) => None,
    };
    loop {
        let now = clock.now();
        if let Err(e) = fire_due(&pool, &engine, now).await {
            warn!(error = %e, "scheduler round failed");
        }
        if let Err(e) = run_cron(&pool, &engine, &tasks, now).await {
            warn!(error = %e, "periodic tasks failed");
        }
        let next: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT min(due_at) FROM schedules")
            .fetch_one(&pool)
            .await
            .ok()
            .flatten();
        // A due row that could not fire (held by another engine, or a
        // person that fails to load) must not make this loop spin.
        let wait = next
            .map(|n| (n - clock.now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(poll)
            .clamp(MIN_WAIT.min(poll), poll);
        let woken = async {
            match listener.as_mut() {
                Some(l) => {
                    let _ = tokio::time::timeout(wait, l.recv()).await;
                }
                None => tokio::time::sleep(wait).await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = woken => {}
        }
    }
}
