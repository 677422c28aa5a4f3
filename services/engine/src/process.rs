//! The imperative shell around `decide`/`evolve`: load a person, decide,
//! and commit events, projections, schedules and outbox rows in the
//! caller's transaction.

use crate::snapshot::{self, load, Loaded};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use tenure_bus::{subjects, IdentityEnvelope, IngestEnvelope, Job};
use tenure_config::Config;
use tenure_domain::person::{catch_up, current_fact, view_at};
use tenure_domain::{
    decide, evolve, wakeups, Command, Context, Correlation, Entitlement, IdpIdentity, Person,
    PersonEvent,
};
use tenure_store::sqlx::{self, PgConnection, PgPool};
use tenure_store::{ExpectedVersion, Metadata, NewEvent, StoreError};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored event {0} does not decode: {1}")]
    Corrupt(Uuid, String),
    #[error("person snapshot cannot be written: {0}")]
    Snapshot(String),
}

impl ProcessError {
    fn database_code(&self) -> Option<String> {
        let e = match self {
            ProcessError::Db(e) | ProcessError::Store(StoreError::Database(e)) => e,
            _ => return None,
        };
        Some(e.as_database_error()?.code()?.into_owned())
    }

    /// Another writer changed the person first (or the database broke a
    /// deadlock between two): deciding again is correct.
    pub fn is_conflict(&self) -> bool {
        matches!(self, ProcessError::Store(StoreError::Conflict { .. }))
            || matches!(self.database_code().as_deref(), Some("40001" | "40P01"))
    }

    /// The same input would fail the same way on every delivery: the
    /// database refuses a value (data exceptions, constraint violations,
    /// limits such as an index row too large), or stored data does not
    /// decode. Connection and availability errors are not permanent.
    pub fn is_permanent(&self) -> bool {
        match self {
            ProcessError::Corrupt(..) | ProcessError::Snapshot(_) => true,
            ProcessError::Store(StoreError::Decode(_) | StoreError::Encode(_)) => true,
            _ => self
                .database_code()
                .is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c.starts_with("54")),
        }
    }
}

/// Everything decisions are made against: timing policy, app policies and
/// the partitioning of job subjects.
#[derive(Clone, Debug)]
pub struct Engine {
    pub ctx: Context,
    pub partitions: u32,
    /// How each identity provider's users are matched to HR persons.
    pub correlation: HashMap<String, Correlation>,
    /// Events after a person's stored snapshot at which a new one is
    /// written; what a load folds at most (plus one decision's events).
    pub snapshot_every: i64,
}

impl Engine {
    pub fn from_config(cfg: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            ctx: Context {
                policy: cfg.engine.policy()?,
                apps: cfg.apps.iter().map(|a| a.policy()).collect(),
            },
            partitions: cfg.engine.partitions,
            correlation: cfg
                .idp
                .iter()
                .map(|i| (i.name.clone(), i.correlate))
                .collect(),
            snapshot_every: i64::from(cfg.engine.snapshot_every.max(1)),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// This delivery was processed before; nothing was written.
    AlreadyProcessed,
    /// An IdP snapshot older than the one already applied for the same
    /// user; nothing was written.
    Stale,
    Recorded {
        person_id: Uuid,
        events: Vec<String>,
        jobs: Vec<String>,
    },
}

pub const OUTBOX_CHANNEL: &str = "tenure_outbox";
/// Advisory-lock namespace serialising work on one person across engines.
const PERSON_LOCK: i32 = 0x7e_4e_02;

pub use tenure_domain::person::person_id_for;

pub fn person_stream(id: Uuid) -> String {
    format!("person-{id}")
}

/// Serialises engines on one person for the rest of the transaction.
pub async fn lock_person(conn: &mut PgConnection, person_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(PERSON_LOCK)
        .bind(person_id.to_string())
        .execute(conn)
        .await
        .map(|_| ())
}

/// Like [`lock_person`] but gives up at once when another engine has it.
pub async fn try_lock_person(
    conn: &mut PgConnection,
    person_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, hashtext($2))")
        .bind(PERSON_LOCK)
        .bind(person_id.to_string())
        .fetch_one(conn)
        .await
}

pub async fn apply_envelope(
    pool: &PgPool,
    engine: &Engine,
    env: &IngestEnvelope,
    now: DateTime<Utc>,
) -> Result<Applied, ProcessError> {
    let mut tx = pool.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO inbox (source, delivery_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(&env.source)
    .bind(&env.delivery_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if fresh == 0 {
        tx.rollback().await?;
        tracing::info!("delivery already processed");
        return Ok(Applied::AlreadyProcessed);
    }
    let person_id = person_id_for(&env.source, &env.record.person_id);
    tracing::Span::current().record("person", tracing::field::display(person_id));
    lock_person(&mut tx, person_id).await?;
    let loaded = load(&mut tx, person_id, now).await?;
    let decided = decide(
        &loaded.state,
        &Command::ApplyRecord {
            source: env.source.clone(),
            delivery_id: env.delivery_id.clone(),
            record: env.record.clone(),
            now,
        },
        &engine.ctx,
    );
    // The received record is the cause of every decision taken on arrival.
    let record_event_id = Uuid::new_v4();
    let metas: Vec<(Uuid, Metadata)> = decided
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let id = if i == 0 {
                record_event_id
            } else {
                Uuid::new_v4()
            };
            (
                id,
                Metadata {
                    correlation_id: env.correlation_id,
                    causation_id: (i > 0).then_some(record_event_id),
                    person_id: Some(person_id),
                    app: None,
                    source: Some(env.source.clone()),
                    actor: "engine".into(),
                    effective_at: Some(env.record.effective_at),
                },
            )
        })
        .collect();
    let (mut events, mut jobs) =
        persist(&mut tx, engine, person_id, &loaded, &decided, metas, now).await?;
    if !decided.is_empty() {
        let (more_events, more_jobs) =
            link_waiting_identities(&mut tx, engine, person_id, env.correlation_id, now).await?;
        events.extend(more_events);
        jobs.extend(more_jobs);
    }
    tx.commit().await?;
    tracing::info!(?events, ?jobs, "record applied");
    Ok(Applied::Recorded {
        person_id,
        events,
        jobs,
    })
}

/// Applies an IdP's snapshot of one user: records it, finds the HR person
/// it correlates with, and brings that person's linked identity (and so
/// `person.groups` and every rule using it) in line. An identity that
/// correlates with nobody waits in `idp_identities` until a person with a
/// matching key arrives.
pub async fn apply_identity(
    pool: &PgPool,
    engine: &Engine,
    env: &IdentityEnvelope,
    now: DateTime<Utc>,
) -> Result<Applied, ProcessError> {
    let mut tx = pool.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO inbox (source, delivery_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(env.source())
    .bind(&env.delivery_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if fresh == 0 {
        tx.rollback().await?;
        return Ok(Applied::AlreadyProcessed);
    }
    let identity = &env.identity;
    let how = engine
        .correlation
        .get(&identity.provider)
        .copied()
        .unwrap_or_default();
    let keys = identity.keys(how);
    let previous: Option<Option<Uuid>> = sqlx::query_scalar(
        "SELECT person_id FROM idp_identities WHERE provider = $1 AND idp_id = $2 FOR UPDATE",
    )
    .bind(&identity.provider)
    .bind(&identity.idp_id)
    .fetch_optional(&mut *tx)
    .await?;
    let previous = previous.flatten();
    let matched = if identity.deleted {
        None
    } else {
        correlate(&mut tx, how, &keys).await?
    };
    // Snapshots of one user can arrive out of order (a redelivery after a
    // failure, two engines): only one newer than the stored one is applied.
    let newer = sqlx::query(
        "INSERT INTO idp_identities (provider, idp_id, user_name, keys, snapshot, person_id, deleted, sequence, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
         ON CONFLICT (provider, idp_id) DO UPDATE SET user_name = $3, keys = $4, snapshot = $5,
             person_id = $6, deleted = $7, sequence = COALESCE($8, idp_identities.sequence), updated_at = now()
         WHERE $8 IS NULL OR idp_identities.sequence IS NULL OR idp_identities.sequence < $8",
    )
    .bind(&identity.provider)
    .bind(&identity.idp_id)
    .bind(&identity.user_name)
    .bind(&keys)
    .bind(serde_json::to_value(identity).unwrap_or_default())
    .bind(matched)
    .bind(identity.deleted)
    .bind(env.sequence)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if newer == 0 {
        // The delivery stays recorded in the inbox: it is settled, not lost.
        tx.commit().await?;
        tracing::info!(
            sequence = env.sequence,
            "an older identity snapshot than the one applied; ignored"
        );
        return Ok(Applied::Stale);
    }

    let mut events = Vec::new();
    let mut jobs = Vec::new();
    // The identity moved to someone else (an e-mail changed hands) or was
    // deleted: the old person loses it first.
    if let Some(old) = previous.filter(|p| Some(*p) != matched) {
        let gone = IdpIdentity {
            deleted: true,
            ..identity.clone()
        };
        let (e, j) = sync_identity(&mut tx, engine, old, &gone, env.correlation_id, now).await?;
        events.extend(e);
        jobs.extend(j);
    }
    if let Some(person_id) = matched {
        tracing::Span::current().record("person", tracing::field::display(person_id));
        let (e, j) = sync_identity(
            &mut tx,
            engine,
            person_id,
            identity,
            env.correlation_id,
            now,
        )
        .await?;
        events.extend(e);
        jobs.extend(j);
    } else if !identity.deleted {
        tracing::info!(
            provider = %identity.provider,
            idp_id = %identity.idp_id,
            user_name = %identity.user_name,
            "identity correlates with no person yet"
        );
    }
    tx.commit().await?;
    Ok(Applied::Recorded {
        person_id: matched.or(previous).unwrap_or_default(),
        events,
        jobs,
    })
}

/// The one person whose correlation key matches, if exactly one does: an
/// ambiguous match links nobody rather than the wrong person.
async fn correlate(
    conn: &mut PgConnection,
    how: Correlation,
    keys: &[String],
) -> Result<Option<Uuid>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(None);
    }
    let sql = match how {
        Correlation::Email => {
            "SELECT person_id FROM persons WHERE lower(attributes->>'email') = ANY($1) LIMIT 2"
        }
        Correlation::EmployeeNumber => {
            "SELECT person_id FROM persons WHERE attributes->>'employee_number' = ANY($1) LIMIT 2"
        }
        Correlation::Username => {
            "SELECT person_id FROM persons WHERE lower(split_part(attributes->>'email', '@', 1)) = ANY($1) LIMIT 2"
        }
    };
    let found: Vec<Uuid> = sqlx::query_scalar(sql).bind(keys).fetch_all(conn).await?;
    if found.len() > 1 {
        tracing::warn!(?keys, "identity matches several persons; linking none");
        return Ok(None);
    }
    Ok(found.into_iter().next())
}

/// Identities that were waiting for this person (or already linked to it)
/// are applied after an HR record changed it: a new hire whose Authentik
/// account came first gets its groups at once.
async fn link_waiting_identities(
    conn: &mut PgConnection,
    engine: &Engine,
    person_id: Uuid,
    correlation_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(Vec<String>, Vec<String>), ProcessError> {
    let row: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT attributes FROM persons WHERE person_id = $1")
            .bind(person_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(attributes) = row else {
        return Ok(Default::default());
    };
    let email = attributes
        .get("email")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .trim()
        .to_lowercase();
    let employee_number = attributes
        .get("employee_number")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .trim()
        .to_string();
    let local = email.split('@').next().unwrap_or_default().to_string();
    let mut events = Vec::new();
    let mut jobs = Vec::new();
    for (provider, how) in &engine.correlation {
        let key = match how {
            Correlation::Email => &email,
            Correlation::EmployeeNumber => &employee_number,
            Correlation::Username => &local,
        };
        if key.is_empty() {
            continue;
        }
        let waiting: Vec<(String, serde_json::Value)> = sqlx::query_as(
            "SELECT idp_id, snapshot FROM idp_identities
             WHERE provider = $1 AND NOT deleted AND person_id IS NULL AND keys @> ARRAY[$2]
             FOR UPDATE",
        )
        .bind(provider)
        .bind(key)
        .fetch_all(&mut *conn)
        .await?;
        for (idp_id, snapshot) in waiting {
            let Ok(identity) = serde_json::from_value::<IdpIdentity>(snapshot) else {
                continue;
            };
            // The same rule as on the identity's arrival: a key shared by
            // several persons links nobody.
            let keys = identity.keys(*how);
            if correlate(&mut *conn, *how, &keys).await? != Some(person_id) {
                continue;
            }
            sqlx::query(
                "UPDATE idp_identities SET person_id = $3, updated_at = now() WHERE provider = $1 AND idp_id = $2",
            )
            .bind(provider)
            .bind(&idp_id)
            .bind(person_id)
            .execute(&mut *conn)
            .await?;
            let (e, j) =
                sync_identity(conn, engine, person_id, &identity, correlation_id, now).await?;
            events.extend(e);
            jobs.extend(j);
        }
    }
    Ok((events, jobs))
}

async fn sync_identity(
    conn: &mut PgConnection,
    engine: &Engine,
    person_id: Uuid,
    identity: &IdpIdentity,
    correlation_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(Vec<String>, Vec<String>), ProcessError> {
    lock_person(conn, person_id).await?;
    let loaded = load(&mut *conn, person_id, now).await?;
    let decided = decide(
        &loaded.state,
        &Command::ApplyIdentity {
            identity: identity.clone(),
            now,
        },
        &engine.ctx,
    );
    let first = Uuid::new_v4();
    let metas = decided
        .iter()
        .enumerate()
        .map(|(i, _)| {
            (
                if i == 0 { first } else { Uuid::new_v4() },
                Metadata {
                    correlation_id,
                    causation_id: (i > 0).then_some(first),
                    person_id: Some(person_id),
                    app: None,
                    source: Some(format!("idp:{}", identity.provider)),
                    actor: "engine".into(),
                    effective_at: Some(now),
                },
            )
        })
        .collect();
    persist(conn, engine, person_id, &loaded, &decided, metas, now).await
}

/// Lets time pass for one person: fires whatever became due by `now`.
/// Events are caused by, and correlated with, the record in force.
pub async fn tick_person(
    conn: &mut PgConnection,
    engine: &Engine,
    person_id: Uuid,
    due_from: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Vec<String>, ProcessError> {
    // Step through every wakeup from the oldest due one, so transitions
    // missed during an outage are recorded at their own instants.
    let from = due_from.map_or(now, |t| t - chrono::Duration::microseconds(1));
    let loaded = load(&mut *conn, person_id, from.min(now)).await?;
    let steps = catch_up(&loaded.state, &engine.ctx, from, now);
    let mut state = loaded.state.clone();
    let mut decided = Vec::with_capacity(steps.len());
    let mut metas = Vec::with_capacity(steps.len());
    for (at, event) in steps {
        let cause = current_fact(&state.facts, at).and_then(|f| {
            loaded
                .records
                .get(&(f.source.clone(), f.delivery_id.clone()))
                .copied()
        });
        metas.push((
            Uuid::new_v4(),
            Metadata {
                correlation_id: cause.map_or_else(Uuid::new_v4, |(_, c)| c),
                causation_id: cause.map(|(e, _)| e),
                person_id: Some(person_id),
                app: None,
                source: None,
                actor: "scheduler".into(),
                effective_at: Some(at),
            },
        ));
        state = evolve(state, &event);
        decided.push(event);
    }
    let (events, _) = persist(conn, engine, person_id, &loaded, &decided, metas, now).await?;
    Ok(events)
}

/// Appends the decided events and brings projections, schedules and the
/// outbox in line, all in the caller's transaction.
async fn persist(
    conn: &mut PgConnection,
    engine: &Engine,
    person_id: Uuid,
    loaded: &Loaded,
    decided: &[PersonEvent],
    metas: Vec<(Uuid, Metadata)>,
    now: DateTime<Utc>,
) -> Result<(Vec<String>, Vec<String>), ProcessError> {
    let stream = person_stream(person_id);
    let new_events: Vec<NewEvent> = decided
        .iter()
        .zip(metas)
        .map(|(e, (event_id, metadata))| NewEvent {
            event_id,
            event_type: e.event_type().to_string(),
            data: e.to_data(),
            metadata,
        })
        .collect();
    let recorded = if new_events.is_empty() {
        Vec::new()
    } else {
        tenure_store::append(
            &mut *conn,
            &stream,
            ExpectedVersion::Exact(loaded.version),
            &new_events,
        )
        .await?
    };
    let after = decided.iter().fold(loaded.state.clone(), evolve);
    let new_version = recorded.last().map_or(loaded.version, |e| e.version);
    if new_version - loaded.snapshot_version >= engine.snapshot_every {
        let mut records = loaded.records.clone();
        for (event, r) in decided.iter().zip(&recorded) {
            if let PersonEvent::SourceRecordReceived {
                source,
                delivery_id,
                ..
            } = event
            {
                records.insert(
                    (source.clone(), delivery_id.clone()),
                    (r.event_id, r.metadata.correlation_id),
                );
            }
        }
        snapshot::save(&mut *conn, person_id, new_version, &after, &records, now).await?;
    }

    // A person known only from future-dated records is listed as
    // `scheduled`, with the attributes of the earliest of them.
    let view = view_at(&after.facts, now, &engine.ctx.policy);
    let first_future = after
        .facts
        .iter()
        .filter(|f| f.effective > now)
        .min_by_key(|f| f.effective);
    let listed = match (after.lifecycle, &view, first_future) {
        (Some(l), Some(v), _) => Some((
            l.as_str(),
            after.attributes.clone(),
            v.start_at,
            v.termination_at,
            current_fact(&after.facts, now),
        )),
        (None, _, Some(f)) => Some(("scheduled", f.record.attributes(), None, None, Some(f))),
        _ => None,
    };
    if let Some((status, attributes, start_at, termination_at, fact)) = listed {
        sqlx::query(
            "INSERT INTO persons (person_id, source, source_person_id, status, attributes, version, start_at, termination_at, time_zone, groups, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now())
             ON CONFLICT (person_id) DO UPDATE SET status = $4, attributes = $5, version = $6,
                 start_at = $7, termination_at = $8, time_zone = $9, groups = $10, updated_at = now()",
        )
        .bind(person_id)
        .bind(fact.map(|f| f.source.as_str()).unwrap_or(""))
        .bind(fact.map(|f| f.record.person_id.as_str()).unwrap_or(""))
        .bind(status)
        .bind(serde_json::to_value(&attributes).unwrap_or_default())
        .bind(new_version)
        .bind(start_at)
        .bind(termination_at)
        .bind(time_zone_of(&after, engine))
        .bind(serde_json::Value::from(after.groups()))
        .execute(&mut *conn)
        .await?;
    }

    // Jobs: an app hears about the person when its entitlement changed, or
    // when attributes changed while the app holds an account.
    // IdP groups feed group definitions, so a change in them is news for
    // every app holding an account, like an attribute change.
    let attributes_changed =
        after.attributes != loaded.state.attributes || after.groups() != loaded.state.groups();
    let attributes_cause = decided
        .iter()
        .zip(&recorded)
        .rev()
        .find(|(e, _)| {
            carries_attributes(e)
                || matches!(
                    e,
                    PersonEvent::IdentitySynced { .. } | PersonEvent::IdentityUnlinked { .. }
                )
        })
        .map(|(_, r)| r.event_id);
    let mut jobs = Vec::new();
    for app in &engine.ctx.apps {
        let changed = decided.iter().zip(&recorded).rev().find(
            |(e, _)| matches!(e, PersonEvent::EntitlementChanged { app: a, .. } if *a == app.name),
        );
        let cause = match changed {
            Some((PersonEvent::EntitlementChanged { to, .. }, r)) => {
                sqlx::query(
                    "INSERT INTO entitlements (app, person_id, entitlement, updated_at) VALUES ($1, $2, $3, now())
                     ON CONFLICT (app, person_id) DO UPDATE SET entitlement = $3, updated_at = now()",
                )
                .bind(&app.name)
                .bind(person_id)
                .bind(to.as_str())
                .execute(&mut *conn)
                .await?;
                Some(r.event_id)
            }
            _ if attributes_changed && holds_account(after.entitlement(&app.name)) => {
                attributes_cause
            }
            _ => None,
        };
        let Some(cause) = cause else { continue };
        let correlation = recorded
            .first()
            .map_or_else(Uuid::new_v4, |r| r.metadata.correlation_id);
        let job = Job {
            app: app.name.clone(),
            person_id,
            correlation_id: correlation,
            causation_id: Some(cause),
            approved: false,
        };
        sqlx::query("INSERT INTO outbox (msg_id, subject, payload) VALUES ($1, $2, $3)")
            .bind(format!("job:{cause}:{}", app.name))
            .bind(subjects::jobs(&app.name, job.partition(engine.partitions)))
            .bind(serde_json::to_value(&job).unwrap_or_default())
            .execute(&mut *conn)
            .await?;
        jobs.push(app.name.clone());
    }
    if !jobs.is_empty() {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(OUTBOX_CHANNEL)
            .execute(&mut *conn)
            .await?;
    }

    replace_schedules(conn, engine, person_id, &after, now).await?;
    Ok((
        decided.iter().map(|e| e.event_type().to_string()).collect(),
        jobs,
    ))
}

fn carries_attributes(e: &PersonEvent) -> bool {
    matches!(
        e,
        PersonEvent::AttributesChanged { .. }
            | PersonEvent::PersonHired { .. }
            | PersonEvent::PersonRehired { .. }
            | PersonEvent::HireScheduled { .. }
            | PersonEvent::LeaveStarted { .. }
            | PersonEvent::LeaveEnded { .. }
            | PersonEvent::PersonTerminated { .. }
            | PersonEvent::HireRescinded { .. }
    )
}

fn holds_account(e: Entitlement) -> bool {
    matches!(
        e,
        Entitlement::Active | Entitlement::PreProvisioned | Entitlement::Suspended
    )
}

fn time_zone_of(person: &Person, engine: &Engine) -> String {
    person
        .attributes
        .time_zone
        .clone()
        .unwrap_or_else(|| engine.ctx.policy.default_tz.name().to_string())
}

pub const SCHEDULE_CHANNEL: &str = "tenure_schedules";

/// Rewrites the person's pending wakeups. Rows another engine holds are
/// skipped instead of waited for (that engine rewrites them itself), so two
/// engines can never deadlock on one person's schedules.
async fn replace_schedules(
    conn: &mut PgConnection,
    engine: &Engine,
    person_id: Uuid,
    person: &Person,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let due = wakeups(person, &engine.ctx, now);
    let ids: Vec<Uuid> = due
        .iter()
        .map(|w| {
            Uuid::new_v5(
                &person_id,
                format!(
                    "{}|{}|{}",
                    w.kind,
                    w.app.as_deref().unwrap_or(""),
                    w.at.timestamp_micros()
                )
                .as_bytes(),
            )
        })
        .collect();
    sqlx::query(
        "DELETE FROM schedules WHERE schedule_id IN (
             SELECT schedule_id FROM schedules WHERE person_id = $1 AND NOT (schedule_id = ANY($2))
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(person_id)
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    if due.is_empty() {
        return Ok(());
    }
    let tz = time_zone_of(person, engine);
    let kinds: Vec<String> = due.iter().map(|w| w.kind.clone()).collect();
    let apps: Vec<Option<String>> = due.iter().map(|w| w.app.clone()).collect();
    let ats: Vec<DateTime<Utc>> = due.iter().map(|w| w.at).collect();
    sqlx::query(
        "INSERT INTO schedules (schedule_id, person_id, kind, app, due_at, time_zone)
         SELECT id, $2, kind, app, due_at, $6 FROM UNNEST($1::uuid[], $3::text[], $4::text[], $5::timestamptz[]) AS t(id, kind, app, due_at)
         ON CONFLICT (schedule_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(person_id)
    .bind(&kinds)
    .bind(&apps)
    .bind(&ats)
    .bind(&tz)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(SCHEDULE_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
