//! Applying one source record: the imperative shell around `decide`/`evolve`.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tenure_bus::{subjects, IngestEnvelope, Job};
use tenure_config::Config;
use tenure_domain::{decide, evolve, AppPolicy, Command, Person, PersonEvent};
use tenure_store::sqlx::{self, PgPool};
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
}

/// The app policies the engine needs to decide which apps to notify.
#[derive(Clone, Debug)]
pub struct EngineApps {
    pub apps: Vec<(String, AppPolicy)>,
    pub partitions: u32,
}

impl EngineApps {
    pub fn from_config(cfg: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            apps: cfg
                .apps
                .iter()
                .map(|a| (a.name.clone(), a.policy()))
                .collect(),
            partitions: cfg.engine.partitions,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// This delivery was processed before; nothing was written.
    AlreadyProcessed,
    Recorded {
        person_id: Uuid,
        events: Vec<String>,
        jobs: Vec<String>,
    },
}

pub const OUTBOX_CHANNEL: &str = "tenure_outbox";

/// Stable person id per (source, source person id): two engines seeing the
/// first record of a person at once agree on the stream and one of them
/// gets a version conflict instead of a second person.
pub fn person_id_for(source: &str, source_person_id: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("tenure:person:{source}:{source_person_id}").as_bytes(),
    )
}

pub fn person_stream(id: Uuid) -> String {
    format!("person-{id}")
}

pub async fn apply_envelope(
    pool: &PgPool,
    apps: &EngineApps,
    default_tz: Tz,
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

    let existing: Option<Uuid> = sqlx::query_scalar(
        "SELECT person_id FROM persons WHERE source = $1 AND source_person_id = $2",
    )
    .bind(&env.source)
    .bind(&env.record.person_id)
    .fetch_optional(&mut *tx)
    .await?;
    let person_id = existing.unwrap_or_else(|| person_id_for(&env.source, &env.record.person_id));
    tracing::Span::current().record("person", tracing::field::display(person_id));
    let stream = person_stream(person_id);

    let history = tenure_store::read_stream(&mut *tx, &stream).await?;
    let version = history.last().map_or(0, |e| e.version);
    let mut before = Person::default();
    for e in &history {
        let event = PersonEvent::from_stored(&e.event_type, e.data.clone())
            .map_err(|err| ProcessError::Corrupt(e.event_id, err.to_string()))?;
        before = evolve(before, &event);
    }

    let decided = decide(
        &before,
        &Command::ApplyRecord {
            source: env.source.clone(),
            delivery_id: env.delivery_id.clone(),
            record: env.record.clone(),
            now,
            default_tz,
        },
    );
    let after = decided.iter().fold(before.clone(), evolve);

    // The received record is the cause of every decision taken from it.
    let record_event_id = Uuid::new_v4();
    let new_events: Vec<NewEvent> = decided
        .iter()
        .enumerate()
        .map(|(i, e)| NewEvent {
            event_id: if i == 0 {
                record_event_id
            } else {
                Uuid::new_v4()
            },
            event_type: e.event_type().to_string(),
            data: e.to_data(),
            metadata: Metadata {
                correlation_id: env.correlation_id,
                causation_id: (i > 0).then_some(record_event_id),
                person_id: Some(person_id),
                app: None,
                source: Some(env.source.clone()),
                actor: "engine".into(),
                effective_at: Some(env.record.effective_at),
            },
        })
        .collect();
    let recorded = tenure_store::append(
        &mut tx,
        &stream,
        ExpectedVersion::Exact(version),
        &new_events,
    )
    .await?;
    let new_version = recorded.last().map_or(version, |e| e.version);

    if let Some(lifecycle) = after.lifecycle {
        sqlx::query(
            "INSERT INTO persons (person_id, source, source_person_id, status, attributes, version, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, now())
             ON CONFLICT (person_id) DO UPDATE SET status = $4, attributes = $5, version = $6, updated_at = now()",
        )
        .bind(person_id)
        .bind(&env.source)
        .bind(&env.record.person_id)
        .bind(lifecycle.as_str())
        .bind(serde_json::to_value(&after.attributes).unwrap_or_default())
        .bind(new_version)
        .execute(&mut *tx)
        .await?;
    }

    // Level-triggered jobs: only apps whose entitlement for this person
    // changed are told to reconcile; the job itself carries no operations.
    let decision = decided
        .iter()
        .zip(&recorded)
        .rfind(|(e, _)| e.affects_apps())
        .map(|(_, r)| r.event_id);
    let mut jobs = Vec::new();
    if let Some(cause) = decision {
        for (app, policy) in &apps.apps {
            if policy.entitlement(&before) == policy.entitlement(&after) {
                continue;
            }
            let job = Job {
                app: app.clone(),
                person_id,
                correlation_id: env.correlation_id,
                causation_id: Some(cause),
            };
            sqlx::query("INSERT INTO outbox (msg_id, subject, payload) VALUES ($1, $2, $3)")
                .bind(format!("job:{cause}:{app}"))
                .bind(subjects::jobs(app, job.partition(apps.partitions)))
                .bind(serde_json::to_value(&job).unwrap_or_default())
                .execute(&mut *tx)
                .await?;
            jobs.push(app.clone());
        }
        if !jobs.is_empty() {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(OUTBOX_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    let events: Vec<String> = decided.iter().map(|e| e.event_type().to_string()).collect();
    tracing::info!(?events, ?jobs, "record applied");
    Ok(Applied::Recorded {
        person_id,
        events,
        jobs,
    })
}
