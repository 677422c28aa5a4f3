//! One reconcile of (app, person): read the desired state, find the account,
//! diff, send the minimal SCIM calls, and record every call and the outcome
//! on the account's stream.

use crate::decide::{self, Decision};
use crate::mapping;
use serde_json::json;
use tenure_bus::Job;
use tenure_config::AppConfig;
use tenure_domain::{Attributes, Entitlement};
use tenure_scim::discovery::{CapabilityCache, DiscoveredCaps};
use tenure_scim::{
    if_match, with_retry, CallRecord, Capabilities, Desired, Op, Profile, RemoteUser, RetryPolicy,
    ScimClient, ScimError,
};
use tenure_store::sqlx::{self, PgPool, Row};
use tenure_store::{ExpectedVersion, Metadata, NewEvent};
use uuid::Uuid;

/// Advisory-lock namespace for per-(app, person) leases.
pub(crate) const LEASE_NAMESPACE: i32 = 0x7e_4e_01;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] tenure_store::StoreError),
    /// The app failed in a way that may pass later (5xx, 429, timeout);
    /// the job is redelivered.
    #[error("{0}")]
    Transient(String),
    /// Tenure's side of a batch failed (database); every job of the batch
    /// is redelivered and reconciled again.
    #[error("batch: {0}")]
    Batch(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The person is not known (yet): nothing to reconcile.
    UnknownPerson,
    InSync,
    Changed(Vec<&'static str>),
    /// A permanent refusal (4xx) or a collision that needs an operator;
    /// recorded as an event, not retried.
    Failed(String),
    /// Deprovisioning held by the mass-change guard until approved.
    Staged,
}

pub type Limiter = governor::DefaultDirectRateLimiter;

pub struct AppWorker {
    pub app: AppConfig,
    pub client: ScimClient,
    /// What the app's server can do, as discovered under its profile;
    /// refreshed when older than [`CAPS_TTL`].
    pub caps: std::sync::RwLock<DiscoveredCaps>,
    /// The app's quirks: which lookups, methods and attributes it accepts.
    pub profile: Profile,
    pub retry: RetryPolicy,
    pub pool: PgPool,
    /// The app's request budget, shared by all of its jobs.
    pub limiter: Option<std::sync::Arc<Limiter>>,
}

/// How long discovered capabilities are trusted before asking again.
pub const CAPS_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

pub fn account_stream(app: &str, person: Uuid) -> String {
    format!("account-{app}-{person}")
}

/// Accumulates the audit events of one reconcile.
pub(crate) struct Audit<'a> {
    pub(crate) job: &'a Job,
    pub(crate) app: &'a str,
    pub(crate) events: Vec<NewEvent>,
    /// Events of this run already committed ahead of a call (see
    /// [`AppWorker::record_intents`]); the final append starts after them.
    pub(crate) flushed: i64,
}

/// Marks the attribute in a refusal's reason (see [`refusal`]).
const REFUSED_ATTRIBUTE: &str = "[refused attribute: ";

/// The reason recorded for a write the server refused for good, naming the
/// attribute when the server said which, and the settings that shape it.
/// The reason is what the dead letter and `ReconcileFailed` carry.
pub(crate) fn refusal(e: &ScimError) -> String {
    match e.refused_attribute() {
        Some(attr) => format!(
            "{e} {REFUSED_ATTRIBUTE}{attr}; [app.shape] omit/name_formatted or [app.mapping] change what is sent]"
        ),
        None => e.to_string(),
    }
}

/// The attribute a [`refusal`] names.
pub(crate) fn refused_attribute(reason: &str) -> Option<&str> {
    let at = reason.rfind(REFUSED_ATTRIBUTE)? + REFUSED_ATTRIBUTE.len();
    reason[at..].split(';').next().filter(|a| !a.is_empty())
}

impl<'a> Audit<'a> {
    pub(crate) fn new(job: &'a Job, app: &'a str) -> Self {
        Audit {
            job,
            app,
            events: Vec::new(),
            flushed: 0,
        }
    }

    pub(crate) fn push(&mut self, event_type: &str, data: serde_json::Value) {
        self.events.push(NewEvent {
            event_id: Uuid::new_v4(),
            event_type: event_type.to_string(),
            data,
            metadata: Metadata {
                correlation_id: self.job.correlation_id,
                causation_id: self.job.causation_id,
                person_id: Some(self.job.person_id),
                app: Some(self.app.to_string()),
                source: None,
                actor: "fanout".into(),
                effective_at: None,
            },
        });
    }

    /// One operation of a `POST /Bulk`, audited as the call it stands for,
    /// with the bulk request it travelled in.
    pub(crate) fn bulk_call(&mut self, record: &CallRecord, bulk: &CallRecord, operations: usize) {
        self.call(record, 1);
        if let Some(data) = self.events.last_mut().and_then(|e| e.data.as_object_mut()) {
            data.insert(
                "bulk".into(),
                json!({
                    "method": bulk.method,
                    "path": bulk.path,
                    "status": bulk.status,
                    "operations": operations,
                }),
            );
        }
    }

    pub(crate) fn call(&mut self, record: &CallRecord, attempt: u32) {
        let ok = record.error.is_none() && record.status.is_some_and(|s| s < 400 || s == 404);
        let mut data = serde_json::to_value(record).unwrap_or_default();
        if let Some(o) = data.as_object_mut() {
            o.insert("attempt".into(), json!(attempt));
        }
        self.push(
            if ok {
                "ScimCallSucceeded"
            } else {
                "ScimCallFailed"
            },
            data,
        );
    }
}

pub(crate) struct Known {
    pub(crate) remote_id: Option<String>,
    pub(crate) user_name: Option<String>,
}

impl Known {
    /// Tenure has never linked an account for the person in this app.
    pub(crate) fn is_none(&self) -> bool {
        self.remote_id.is_none() && self.user_name.is_none()
    }
}

/// What a reconcile of one person would send.
#[derive(Debug, Clone)]
pub struct Planned {
    pub person_id: Uuid,
    pub user_name: String,
    pub entitlement: Entitlement,
    /// How the account was found: `stored` (Tenure's last known state),
    /// `id`, `externalId`, `userName`, or `none`.
    pub found_by: &'static str,
    /// What [`decide::decide`] made of it: `ops` to send, or a refusal
    /// (then `ops` is empty), and whether the account would be linked or
    /// adopted first.
    pub decision: Decision,
    pub ops: Vec<tenure_scim::Op>,
    /// The account id Tenure has stored for the person in this app, if any.
    /// A live plan that finds nothing under it will forget the link, as the
    /// reconcile does (`AccountDeleted` with `observed: true`).
    pub stored_remote_id: Option<String>,
}

/// An account Tenure took over under the app's `adopt` policy, for
/// `tenure drift`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdoptedAccount {
    pub person_id: Option<Uuid>,
    pub remote_id: String,
    pub user_name: String,
    pub policy: String,
    /// The `externalId` the account had before Tenure took it.
    pub previous_external_id: Option<String>,
    pub adopted_at: chrono::DateTime<chrono::Utc>,
}

impl AppWorker {
    /// Every adoption in this app, newest first, from the `AccountAdopted`
    /// events (the before-image stays in the event).
    pub async fn adopted_accounts(&self) -> Result<Vec<AdoptedAccount>, WorkerError> {
        let rows = sqlx::query(
            "SELECT metadata->>'person_id' AS person_id, data, recorded_at FROM events
             WHERE event_type = 'AccountAdopted' AND metadata->>'app' = $1
             ORDER BY global_position DESC",
        )
        .bind(&self.app.name)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let data: serde_json::Value = row.try_get("data")?;
            let text = |k: &str| data[k].as_str().map(str::to_owned);
            out.push(AdoptedAccount {
                person_id: row
                    .try_get::<Option<String>, _>("person_id")?
                    .and_then(|p| p.parse().ok()),
                remote_id: text("remote_id").unwrap_or_default(),
                user_name: text("user_name").unwrap_or_default(),
                policy: text("policy").unwrap_or_default(),
                previous_external_id: text("previous_external_id"),
                adopted_at: row.try_get("recorded_at")?,
            });
        }
        Ok(out)
    }

    pub fn caps(&self) -> Capabilities {
        self.caps.read().map(|c| c.caps).unwrap_or_default()
    }

    /// Asks the app again what it supports once the cached answer is old;
    /// a failed refresh keeps the previous answer.
    pub(crate) async fn refresh_caps(&self) {
        let current = match self.caps.read() {
            Ok(c) => *c,
            Err(_) => return,
        };
        let cache = CapabilityCache::new(CAPS_TTL);
        if !cache.needs_refresh(current.fetched_at, std::time::Instant::now()) {
            return;
        }
        match self.client.discover(&self.profile).await {
            Ok((fresh, _)) => {
                if let Ok(mut c) = self.caps.write() {
                    *c = fresh;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "capability refresh failed; keeping the previous answer")
            }
        }
    }

    /// The SCIM operations a reconcile of `person_id` would send, sending
    /// nothing that changes the app. With `live`, the account is looked up
    /// with reads (as a reconcile would); otherwise Tenure's last known
    /// state of the account is used and nothing is sent at all.
    pub async fn plan(&self, person_id: Uuid, live: bool) -> Result<Option<Planned>, WorkerError> {
        let row = sqlx::query(
            "SELECT p.attributes, e.entitlement, a.remote_id, a.user_name AS known_user_name, a.state
             FROM persons p
             LEFT JOIN entitlements e ON e.app = $2 AND e.person_id = p.person_id
             LEFT JOIN accounts a ON a.app = $2 AND a.person_id = p.person_id
             WHERE p.person_id = $1",
        )
        .bind(person_id)
        .bind(&self.app.name)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let attributes: Attributes =
            serde_json::from_value(row.try_get("attributes")?).unwrap_or_default();
        let entitlement = row
            .try_get::<Option<String>, _>("entitlement")?
            .as_deref()
            .and_then(Entitlement::parse)
            .unwrap_or_default();
        let manager = self
            .manager_remote_id(&self.pool, person_id, &attributes)
            .await?;
        let desired = mapping::desired(
            &self.app,
            person_id,
            &attributes,
            manager.as_deref(),
            entitlement,
        );
        let user_name = mapping::user_name(&self.app, person_id, &attributes);
        let stored_remote_id: Option<String> = row.try_get("remote_id")?;
        let (remote, found_by) = if live {
            let job = Job {
                app: self.app.name.clone(),
                person_id,
                correlation_id: Uuid::new_v4(),
                causation_id: None,
                approved: false,
            };
            let known = Known {
                remote_id: stored_remote_id.clone(),
                user_name: row.try_get("known_user_name")?,
            };
            let mut scratch = Audit::new(&job, &self.app.name);
            // The reconcile may skip the userName look-up and learn of a
            // taken name from the create's 409 (`create_first`); it then
            // looks up by userName and decides as here, so the plan shows
            // where that ends.
            let present = matches!(desired, Desired::Present(_));
            match self
                .lookup(&job, &known, &user_name, present, &mut scratch)
                .await
                .map_err(|e| WorkerError::Transient(e.to_string()))?
            {
                Some((r, how)) => (Some(r), how),
                None => (None, "none"),
            }
        } else {
            let stored: Option<serde_json::Value> = row.try_get("state")?;
            match stored.and_then(|s| serde_json::from_value::<RemoteUser>(s).ok()) {
                Some(r) => (Some(r), "stored"),
                None => (None, "none"),
            }
        };
        let decision = decide::decide(
            &desired,
            remote.as_ref().map(|r| (r, found_by)),
            person_id,
            self.app.adopt,
            self.caps(),
            &self.profile,
        );
        let ops = match &decision {
            Decision::Proceed { ops, .. } => ops.clone(),
            Decision::Refuse(_) => Vec::new(),
        };
        Ok(Some(Planned {
            person_id,
            user_name,
            entitlement,
            found_by,
            decision,
            ops,
            stored_remote_id,
        }))
    }

    /// The account id in this app of the person's manager: the person of
    /// the same source whose HR id is the `manager_id` attribute. `None`
    /// when the app does not map managers, the person has none, or the
    /// manager has no account here (yet).
    pub(crate) async fn manager_remote_id<'e, E: sqlx::PgExecutor<'e>>(
        &self,
        executor: E,
        person_id: Uuid,
        attributes: &Attributes,
    ) -> Result<Option<String>, WorkerError> {
        let Some(manager_id) = attributes
            .manager_id
            .as_deref()
            .filter(|_| self.app.mapping.manager)
        else {
            return Ok(None);
        };
        let remote_id: Option<Option<String>> = sqlx::query_scalar(
            "SELECT a.remote_id
             FROM persons p
             JOIN persons m ON m.source = p.source AND m.source_person_id = $2
             JOIN accounts a ON a.app = $3 AND a.person_id = m.person_id
             WHERE p.person_id = $1",
        )
        .bind(person_id)
        .bind(manager_id)
        .bind(&self.app.name)
        .fetch_optional(executor)
        .await?;
        Ok(remote_id.flatten().filter(|id| !id.is_empty()))
    }

    /// Runs one job under a lease so two jobs for the same (app, person)
    /// never interleave, in this process or any other.
    pub async fn reconcile(&self, job: &Job) -> Result<Outcome, WorkerError> {
        // One transaction per job: the advisory lock is the lease, the reads
        // and the final writes share its connection. It writes only at the
        // end, so during the HTTP calls it has no transaction id and holds
        // back no global event reader; if the process dies the database
        // releases the lease.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(LEASE_NAMESPACE)
            .bind(format!("{}:{}", self.app.name, job.person_id))
            .execute(&mut *tx)
            .await?;
        match self.reconcile_leased(&mut tx, job).await {
            // A transient failure still commits the audit of its calls.
            result @ (Ok(_) | Err(WorkerError::Transient(_))) => {
                tx.commit().await?;
                result
            }
            Err(e) => {
                tx.rollback().await?;
                Err(e)
            }
        }
    }

    async fn reconcile_leased(
        &self,
        conn: &mut sqlx::PgConnection,
        job: &Job,
    ) -> Result<Outcome, WorkerError> {
        self.refresh_caps().await;
        let row = sqlx::query(
            "SELECT p.attributes, e.entitlement FROM persons p
             LEFT JOIN entitlements e ON e.app = $2 AND e.person_id = p.person_id
             WHERE p.person_id = $1",
        )
        .bind(job.person_id)
        .bind(&self.app.name)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else {
            return Ok(Outcome::UnknownPerson);
        };
        let attributes: Attributes =
            serde_json::from_value(row.try_get("attributes")?).unwrap_or_default();
        let entitlement = row
            .try_get::<Option<String>, _>("entitlement")?
            .as_deref()
            .and_then(Entitlement::parse)
            .unwrap_or_default();
        let manager = self
            .manager_remote_id(&mut *conn, job.person_id, &attributes)
            .await?;
        let desired = mapping::desired(
            &self.app,
            job.person_id,
            &attributes,
            manager.as_deref(),
            entitlement,
        );
        // Anonymising is for an account that exists; never create one for it.
        if entitlement == Entitlement::Purged
            && self.app.purge_action == tenure_domain::PurgeAction::Anonymise
        {
            let linked: Option<Option<String>> = sqlx::query_scalar(
                "SELECT remote_id FROM accounts WHERE app = $1 AND person_id = $2",
            )
            .bind(&self.app.name)
            .bind(job.person_id)
            .fetch_optional(&mut *conn)
            .await?;
            if linked.flatten().is_none() {
                return Ok(Outcome::InSync);
            }
        }
        let stream = account_stream(&self.app.name, job.person_id);
        let version = tenure_store::stream_version(&mut *conn, &stream).await?;
        let known = sqlx::query(
            "SELECT remote_id, user_name FROM accounts WHERE app = $1 AND person_id = $2",
        )
        .bind(&self.app.name)
        .bind(job.person_id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| Known {
            remote_id: r.try_get("remote_id").ok().flatten(),
            user_name: r.try_get("user_name").ok().flatten(),
        })
        .unwrap_or(Known {
            remote_id: None,
            user_name: None,
        });

        let deprovisioning = matches!(desired, Desired::Deactivated | Desired::Deleted);
        if deprovisioning && known.remote_id.is_some() && !job.approved {
            // A held change stays held until an operator approves it, even
            // once the window has passed: the periodic reconcile must not
            // push through what the guard stopped.
            let held: Option<String> = sqlx::query_scalar(
                "SELECT reason FROM staged_changes WHERE app = $1 AND person_id = $2",
            )
            .bind(&self.app.name)
            .bind(job.person_id)
            .fetch_optional(&mut *conn)
            .await?;
            if held.is_some() {
                return Ok(Outcome::Staged);
            }
            if let Some(reason) = self.guard_trips(job, &desired).await? {
                return self.stage(job, &stream, version, &reason).await;
            }
        } else if !deprovisioning {
            // The person is wanted again (rehired, back in scope): a held
            // deprovisioning is moot.
            sqlx::query("DELETE FROM staged_changes WHERE app = $1 AND person_id = $2")
                .bind(&self.app.name)
                .bind(job.person_id)
                .execute(&mut *conn)
                .await?;
        }

        let mut audit = Audit::new(job, &self.app.name);
        let user_name = mapping::user_name(&self.app, job.person_id, &attributes);
        let result = self
            .converge(job, &desired, &known, &user_name, &mut audit)
            .await;

        self.finish(conn, job, &stream, version, audit, result)
            .await
    }

    /// Records the outcome of one person's reconcile: its audit events on
    /// the account stream (at `version`, which the lease keeps current) and
    /// the account projection. A refusal that will not pass by retrying
    /// (401, 403, 400, an ambiguous lookup) is recorded and left for an
    /// operator; anything else is redelivered.
    pub(crate) async fn finish(
        &self,
        conn: &mut sqlx::PgConnection,
        job: &Job,
        stream: &str,
        version: i64,
        mut audit: Audit<'_>,
        result: Result<(Outcome, Option<RemoteUser>), ScimError>,
    ) -> Result<Outcome, WorkerError> {
        let (outcome, remote, error) = match result {
            Ok((outcome, remote)) => (Some(outcome), remote, None),
            Err(e) if !e.is_retryable() => (Some(Outcome::Failed(refusal(&e))), None, None),
            Err(e) => (None, None, Some(e)),
        };
        if let Some(e) = &error {
            audit.push(
                "ReconcileFailed",
                json!({ "error": e.to_string(), "retrying": true }),
            );
        }
        if let Some(Outcome::Failed(reason)) = &outcome {
            let mut data = json!({ "error": reason, "retrying": false });
            if let Some(attr) = refused_attribute(reason) {
                data["attribute"] = json!(attr);
            }
            audit.push("ReconcileFailed", data);
        }

        // A change already applied that this run did not record (a lost
        // response, then a re-read that shows it done) gets its outcome
        // event now, so the projection below stays the fold of the stream.
        let mut outcome = outcome;
        if let (Some(o), Some(r)) = (&mut outcome, &remote) {
            let prev = sqlx::query(
                "SELECT remote_id, user_name, active FROM accounts WHERE app = $1 AND person_id = $2",
            )
            .bind(&self.app.name)
            .bind(job.person_id)
            .fetch_optional(&mut *conn)
            .await?
            .map(|row| AccountView {
                remote_id: row.try_get("remote_id").ok().flatten(),
                user_name: row.try_get("user_name").ok().flatten(),
                active: row.try_get("active").ok().flatten(),
            });
            let folded = fold_view(prev, &audit.events);
            for (kind, data) in observed_events(folded.as_ref(), r) {
                tracing::info!(
                    kind,
                    "change found applied on re-read; recorded as observed"
                );
                audit.push(kind, data);
                match o {
                    Outcome::Changed(what) => what.push(kind),
                    Outcome::InSync => *o = Outcome::Changed(vec![kind]),
                    _ => {}
                }
            }
        }

        // The look-up found no account although Tenure had linked one, and
        // none is wanted (a deprovision): it was deleted in the app (by hand,
        // or the app was wiped). Recorded as observed, so the projection
        // stops naming an id the app no longer has and a later create or
        // replay starts from the truth.
        if let (Some(o @ Outcome::InSync), None) = (&mut outcome, &remote) {
            let linked: Option<Option<String>> = sqlx::query_scalar(
                "SELECT remote_id FROM accounts WHERE app = $1 AND person_id = $2",
            )
            .bind(&self.app.name)
            .bind(job.person_id)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(id) = linked.flatten() {
                tracing::info!(remote_id = %id, "linked account is gone from the app; recorded as observed");
                audit.push(
                    "AccountDeleted",
                    json!({ "remote_id": id, "observed": true }),
                );
                *o = Outcome::Changed(vec!["AccountDeleted"]);
            }
        }

        if !audit.events.is_empty() {
            tenure_store::append(
                &mut *conn,
                stream,
                ExpectedVersion::Exact(version + audit.flushed),
                &audit.events,
            )
            .await?;
        }
        match (&outcome, &remote) {
            (Some(_), Some(r)) => {
                sqlx::query(
                    "INSERT INTO accounts (app, person_id, remote_id, user_name, active, state, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, now())
                     ON CONFLICT (app, person_id) DO UPDATE
                     SET remote_id = $3, user_name = $4, active = $5, state = $6, updated_at = now()",
                )
                .bind(&self.app.name)
                .bind(job.person_id)
                .bind(&r.id)
                .bind(&r.user_name)
                .bind(r.active)
                .bind(remote_state(r))
                .execute(&mut *conn)
                .await?;
            }
            (Some(Outcome::Changed(what)), None) if what.contains(&"AccountDeleted") => {
                sqlx::query("DELETE FROM accounts WHERE app = $1 AND person_id = $2")
                    .bind(&self.app.name)
                    .bind(job.person_id)
                    .execute(&mut *conn)
                    .await?;
            }
            _ => {}
        }
        match (outcome, error) {
            (Some(o), _) => Ok(o),
            (None, Some(e)) => Err(WorkerError::Transient(e.to_string())),
            (None, None) => Err(WorkerError::Transient("no outcome".into())),
        }
    }

    /// Whether this deprovision would be a mass change, and why; when it is
    /// not, it is reserved in the app's window before any call is sent.
    ///
    /// Check and reserve are one step under a lock on the app's guard row
    /// (`SELECT … FOR UPDATE`): concurrent jobs take turns, each counting
    /// the reservations of those before it, so at most the limit passes
    /// whatever the concurrency. Counting committed events instead would
    /// let every job that checks before the first one commits through.
    /// A deactivation of an account Tenure last saw inactive sends nothing,
    /// so it is neither counted nor held.
    async fn guard_trips(
        &self,
        job: &Job,
        desired: &Desired,
    ) -> Result<Option<String>, WorkerError> {
        let guard = &self.app.mass_change;
        if !guard.enabled {
            return Ok(None);
        }
        let app = &self.app.name;
        let mut tx = self.pool.begin().await?;
        if matches!(desired, Desired::Deactivated) {
            let active: Option<Option<bool>> =
                sqlx::query_scalar("SELECT active FROM accounts WHERE app = $1 AND person_id = $2")
                    .bind(app)
                    .bind(job.person_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if active.flatten() == Some(false) {
                return Ok(None);
            }
        }
        sqlx::query("INSERT INTO mass_change_windows (app) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(app)
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT app FROM mass_change_windows WHERE app = $1 FOR UPDATE")
            .bind(app)
            .execute(&mut *tx)
            .await?;
        let window = i32::try_from(guard.window_minutes).unwrap_or(i32::MAX);
        sqlx::query(
            "DELETE FROM mass_change_reservations
             WHERE app = $1 AND reserved_at <= now() - make_interval(mins => $2)",
        )
        .bind(app)
        .bind(window)
        .execute(&mut *tx)
        .await?;
        let (recent, mine): (i64, bool) = sqlx::query_as(
            "SELECT count(*), coalesce(bool_or(person_id = $2), false)
             FROM mass_change_reservations WHERE app = $1",
        )
        .bind(app)
        .bind(job.person_id)
        .fetch_one(&mut *tx)
        .await?;
        if mine {
            // A retry of a deprovision already let through.
            return Ok(None);
        }
        let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts WHERE app = $1")
            .bind(app)
            .fetch_one(&mut *tx)
            .await?;
        let (recent, accounts) = (recent.max(0) as u64, accounts.max(0) as u64);
        if guard.trips(recent, accounts) {
            return Ok(Some(format!(
                "{recent} of {accounts} accounts deprovisioned in the last {} minutes; more needs approval",
                guard.window_minutes
            )));
        }
        sqlx::query("INSERT INTO mass_change_reservations (app, person_id) VALUES ($1, $2)")
            .bind(app)
            .bind(job.person_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(None)
    }

    async fn stage(
        &self,
        job: &Job,
        stream: &str,
        version: i64,
        reason: &str,
    ) -> Result<Outcome, WorkerError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO staged_changes (app, person_id, job, reason) VALUES ($1, $2, $3, $4)
             ON CONFLICT (app, person_id) DO UPDATE SET job = $3, reason = $4, staged_at = now()",
        )
        .bind(&self.app.name)
        .bind(job.person_id)
        .bind(serde_json::to_value(job).unwrap_or_default())
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        let mut audit = Audit::new(job, &self.app.name);
        audit.push("DeprovisionStaged", json!({ "reason": reason }));
        tenure_store::append(
            &mut tx,
            stream,
            ExpectedVersion::Exact(version),
            &audit.events,
        )
        .await?;
        tx.commit().await?;
        tracing::warn!(reason, "deprovisioning held by the mass-change guard");
        Ok(Outcome::Staged)
    }

    /// Commits an intent event (`AccountCreateAttempted`,
    /// `AccountDeleteAttempted`) on each account stream, after the events of
    /// the run so far, before a call whose outcome a crash could lose: the
    /// audit then shows "attempted, outcome unknown", and the link or
    /// re-read that follows on the next run. One short transaction of its
    /// own (the lease stays with the job's connection, which has written
    /// nothing); on failure nothing is sent and the job is retried.
    pub(crate) async fn record_intents(
        &self,
        intents: Vec<(&mut Audit<'_>, &'static str, serde_json::Value)>,
    ) -> Result<(), ScimError> {
        let mut audits = Vec::with_capacity(intents.len());
        for (audit, kind, data) in intents {
            audit.push(kind, data);
            audits.push(audit);
        }
        let written = async {
            let mut tx = self.pool.begin().await?;
            for audit in &audits {
                let stream = account_stream(audit.app, audit.job.person_id);
                // The lease makes this job the stream's only writer.
                let version = tenure_store::stream_version(&mut tx, &stream).await?;
                tenure_store::append(
                    &mut tx,
                    &stream,
                    ExpectedVersion::Exact(version),
                    &audit.events,
                )
                .await?;
            }
            tx.commit().await?;
            Ok::<_, WorkerError>(())
        }
        .await;
        match written {
            Ok(()) => {
                for audit in audits {
                    audit.flushed += audit.events.len() as i64;
                    audit.events.clear();
                }
                Ok(())
            }
            Err(e) => {
                for audit in audits {
                    audit.events.pop();
                }
                Err(ScimError::NotSent(format!(
                    "the intent to write could not be recorded: {e}"
                )))
            }
        }
    }

    /// Sends one call with retries, auditing every attempt.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        audit: &mut Audit<'_>,
        mut f: F,
    ) -> Result<tenure_scim::Call<T>, ScimError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<tenure_scim::Call<T>, ScimError>>,
    {
        let mut failures: Vec<CallRecord> = Vec::new();
        let limiter = self.limiter.clone();
        let attempt = || {
            let request = f();
            let limiter = limiter.clone();
            async move {
                if let Some(l) = limiter {
                    l.until_ready().await;
                }
                request.await
            }
        };
        let result = with_retry(&self.retry, attempt, |e| {
            if let Some(r) = e.record() {
                failures.push(r.clone());
            }
        })
        .await;
        for (i, r) in failures.iter().enumerate() {
            audit.call(r, i as u32 + 1);
        }
        if let Ok(call) = &result {
            audit.call(&call.record, failures.len() as u32 + 1);
        }
        result
    }

    /// Finds the account: stored remote id, then externalId, then userName.
    /// A userName match is only considered when the account is meant to
    /// exist: deactivating or deleting an account that merely shares a name
    /// with the person could switch off someone else.
    pub(crate) async fn lookup(
        &self,
        job: &Job,
        known: &Known,
        user_name: &str,
        by_user_name: bool,
        audit: &mut Audit<'_>,
    ) -> Result<Option<(RemoteUser, &'static str)>, ScimError> {
        if let Some(id) = &known.remote_id {
            if let Some(u) = self.call(audit, || self.client.get_user(id)).await?.value {
                return Ok(Some((u, "id")));
            }
        }
        if !self.caps().filter {
            return Ok(None);
        }
        let external = job.person_id.to_string();
        // Apps that do not store externalId (Nextcloud) are matched by userName only.
        if self.profile.external_id {
            if let Some(u) = self
                .call(audit, || self.client.find_user("externalId", &external))
                .await?
                .value
            {
                return Ok(Some((u, "externalId")));
            }
        }
        if !by_user_name {
            return Ok(None);
        }
        let mut names = vec![user_name.to_string()];
        if let Some(old) = &known.user_name {
            if !old.eq_ignore_ascii_case(user_name) {
                names.push(old.clone());
            }
        }
        for name in names {
            if let Some(u) = self
                .call(audit, || self.client.find_user("userName", &name))
                .await?
                .value
            {
                return Ok(Some((u, "userName")));
            }
        }
        Ok(None)
    }

    /// Whether a `userName` look-up before a create can be left to the
    /// create's 409: the app stores `externalId` (so its look-up proves
    /// that no account of the person exists), answers a taken `userName`
    /// with 409 (its profile says so), and Tenure has never linked an account
    /// for the person (so no earlier `userName` needs checking).
    pub(crate) fn create_first(&self, known: &Known) -> bool {
        self.profile.external_id && self.profile.unique_user_name && known.is_none()
    }

    pub(crate) async fn converge(
        &self,
        job: &Job,
        desired: &Desired,
        known: &Known,
        user_name: &str,
        audit: &mut Audit<'_>,
    ) -> Result<(Outcome, Option<RemoteUser>), ScimError> {
        let present = matches!(desired, Desired::Present(_));
        let by_user_name = present && !self.create_first(known);
        let found = self
            .lookup(job, known, user_name, by_user_name, audit)
            .await?;
        self.converge_from(job, desired, user_name, audit, found)
            .await
    }

    /// [`AppWorker::converge`] once the account has been looked for:
    /// `found` is what the look-up found and how.
    pub(crate) async fn converge_from(
        &self,
        job: &Job,
        desired: &Desired,
        user_name: &str,
        audit: &mut Audit<'_>,
        mut found: Option<(RemoteUser, &'static str)>,
    ) -> Result<(Outcome, Option<RemoteUser>), ScimError> {
        let mut changed: Vec<&'static str> = Vec::new();
        // Two rounds at most: a create that collides (409) is followed by a
        // lookup and one more diff against what the lookup found.
        for _round in 0..2 {
            let caps = self.caps();
            let ops = match decide::decide(
                desired,
                found.as_ref().map(|(r, how)| (r, *how)),
                job.person_id,
                self.app.adopt,
                caps,
                &self.profile,
            ) {
                Decision::Refuse(reason) => return Ok((Outcome::Failed(reason), None)),
                Decision::Proceed { link, ops } => {
                    if let Some((remote, how)) = &found {
                        if let Some((kind, data)) =
                            decide::link_event(link, remote, how, self.app.adopt)
                        {
                            audit.push(kind, data);
                            changed.push(kind);
                        }
                    }
                    ops
                }
            };
            let remote = found.as_ref().map(|(r, _)| r.clone());
            if ops.is_empty() {
                let outcome = if changed.is_empty() {
                    Outcome::InSync
                } else {
                    Outcome::Changed(changed)
                };
                return Ok((outcome, remote));
            }
            let mut current = remote;
            let mut collided = false;
            let mut stale = false;
            let mut unknown_state = false;
            for op in &ops {
                if let Some((kind, data)) = intent(op) {
                    self.record_intents(vec![(&mut *audit, kind, data)]).await?;
                }
                // With ETags, a write only lands on the version that was read.
                let etag = if_match(caps, current.as_ref()).map(str::to_string);
                match self
                    .call(audit, || {
                        self.client.execute_with(op, &self.profile, etag.as_deref())
                    })
                    .await
                {
                    Ok(call) => {
                        let (kind, data) = describe(op, &call.value, current.as_ref());
                        audit.push(kind, data);
                        changed.push(kind);
                        current = match (op, call.value) {
                            (Op::Delete { .. }, _) => None,
                            (_, Some(returned)) => Some(returned),
                            // 204 without a body: the new state follows from the ops.
                            (Op::Patch { ops, .. }, None) => {
                                match current
                                    .as_ref()
                                    .and_then(|r| tenure_scim::apply_patch(r, ops))
                                {
                                    Some(next) => Some(next),
                                    None => {
                                        unknown_state = true;
                                        current
                                    }
                                }
                            }
                            (_, None) => current,
                        };
                    }
                    Err(e) if matches!(op, Op::Create(_)) && e.status() == Some(409) => {
                        collided = true;
                        break;
                    }
                    Err(e) if e.is_precondition_failed() => {
                        // Someone changed the account since it was read: read
                        // it again and decide again.
                        stale = true;
                        break;
                    }
                    Err(e) if !e.is_retryable() => {
                        return Ok((Outcome::Failed(refusal(&e)), current));
                    }
                    Err(e) => return Err(e),
                }
            }
            if stale {
                let id = current.as_ref().map(|r| r.id.clone()).unwrap_or_default();
                found = self
                    .call(audit, || self.client.get_user(&id))
                    .await?
                    .value
                    .map(|u| (u, "id"));
                continue;
            }
            if !collided {
                if unknown_state {
                    if let Some(r) = &current {
                        if let Some(fresh) = self
                            .call(audit, || self.client.get_user(&r.id))
                            .await?
                            .value
                        {
                            current = Some(fresh);
                        }
                    }
                }
                return Ok((Outcome::Changed(changed), current));
            }
            found = self
                .call(audit, || self.client.find_user("userName", user_name))
                .await?
                .value
                .map(|u| (u, "userName"));
            if found.is_none() {
                return Ok((
                    Outcome::Failed(format!("create of {user_name:?} conflicted (409) but no account with that userName is visible")),
                    None,
                ));
            }
        }
        Ok((
            Outcome::Failed("account did not converge after a create conflict".into()),
            found.map(|(r, _)| r),
        ))
    }
}

/// The intent event written before `op` is sent, for the calls whose
/// effect a lost answer or a crash would leave unknown and that a re-run
/// cannot simply repeat: creates and deletes.
pub(crate) fn intent(op: &Op) -> Option<(&'static str, serde_json::Value)> {
    match op {
        Op::Create(spec) => Some((
            "AccountCreateAttempted",
            json!({ "user_name": spec.user_name, "active": spec.active }),
        )),
        Op::Delete { id } => Some(("AccountDeleteAttempted", json!({ "remote_id": id }))),
        Op::Patch { .. } | Op::Replace { .. } => None,
    }
}

pub(crate) fn describe(
    op: &Op,
    result: &Option<RemoteUser>,
    before: Option<&RemoteUser>,
) -> (&'static str, serde_json::Value) {
    let remote_id = result.as_ref().map(|r| r.id.clone());
    match op {
        // The account as the server answered, when it did: the projection
        // keeps the server's spelling, and the event must fold to it.
        Op::Create(spec) => (
            "AccountCreated",
            json!({
                "remote_id": remote_id,
                "user_name": result.as_ref().map_or(&spec.user_name, |r| &r.user_name),
                "active": result.as_ref().map_or(spec.active, |r| r.active),
            }),
        ),
        Op::Patch { id, ops } => {
            let deactivated = ops
                .iter()
                .any(|p| p.path == "active" && p.value == json!(false));
            let kind = if deactivated && ops.len() == 1 {
                "AccountDeactivated"
            } else {
                "AccountUpdated"
            };
            (kind, json!({ "remote_id": id, "changes": ops }))
        }
        Op::Replace { id, spec } => {
            let kind = if !spec.active && before.is_some_and(|b| b.active) {
                "AccountDeactivated"
            } else {
                "AccountUpdated"
            };
            (kind, json!({ "remote_id": id, "replaced_with": spec }))
        }
        Op::Delete { id } => ("AccountDeleted", json!({ "remote_id": id })),
    }
}

/// What the `accounts` projection holds of an account besides its state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AccountView {
    pub(crate) remote_id: Option<String>,
    pub(crate) user_name: Option<String>,
    pub(crate) active: Option<bool>,
}

fn text(v: &serde_json::Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// `prev` after the account events of one run, read as every reader of
/// the stream reads them (the audit's fold): a create, link or adoption
/// sets the account, an update or deactivation changes what it names, a
/// delete removes it.
pub(crate) fn fold_view(prev: Option<AccountView>, events: &[NewEvent]) -> Option<AccountView> {
    let mut view = prev;
    for e in events {
        let d = &e.data;
        match e.event_type.as_str() {
            "AccountCreated" | "AccountLinked" | "AccountAdopted" => {
                view = Some(AccountView {
                    remote_id: text(&d["remote_id"]),
                    user_name: text(&d["user_name"]),
                    active: d["active"].as_bool(),
                })
            }
            "AccountDeleted" => view = None,
            "AccountUpdated" | "AccountDeactivated" => {
                let Some(v) = view.as_mut() else { continue };
                if let Some(id) = text(&d["remote_id"]) {
                    v.remote_id = Some(id);
                }
                if e.event_type == "AccountDeactivated" {
                    v.active = Some(false);
                }
                match d["changes"].as_array() {
                    Some(ops) => {
                        for op in ops {
                            match op["path"].as_str() {
                                Some("userName") => {
                                    v.user_name = text(&op["value"]).or(v.user_name.take())
                                }
                                Some("active") => v.active = op["value"].as_bool().or(v.active),
                                _ => {}
                            }
                        }
                    }
                    None => {
                        let spec = &d["replaced_with"];
                        if let Some(n) = text(&spec["user_name"]) {
                            v.user_name = Some(n);
                        }
                        if let Some(a) = spec["active"].as_bool() {
                            v.active = Some(a);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    view
}

/// The events that bring `folded` (what the stream says) to `actual` (what
/// the app holds and the projection will say), each marked `observed`:
/// Tenure did not see the call that made the change succeed, it saw the
/// result. Empty when they agree.
pub(crate) fn observed_events(
    folded: Option<&AccountView>,
    actual: &RemoteUser,
) -> Vec<(&'static str, serde_json::Value)> {
    let Some(f) = folded.filter(|f| f.remote_id.as_deref() == Some(actual.id.as_str())) else {
        return vec![(
            "AccountLinked",
            json!({
                "remote_id": actual.id,
                "user_name": actual.user_name,
                "active": actual.active,
                "found_by": "observed",
                "observed": true,
            }),
        )];
    };
    let mut changes = Vec::new();
    if f.user_name.as_deref() != Some(actual.user_name.as_str()) {
        changes.push(json!({ "op": "replace", "path": "userName", "value": actual.user_name }));
    }
    if f.active != Some(actual.active) {
        changes.push(json!({ "op": "replace", "path": "active", "value": actual.active }));
    }
    if changes.is_empty() {
        return Vec::new();
    }
    let kind = if changes.len() == 1 && !actual.active && f.active != Some(false) {
        "AccountDeactivated"
    } else {
        "AccountUpdated"
    };
    vec![(
        kind,
        json!({ "remote_id": actual.id, "changes": changes, "observed": true }),
    )]
}

/// The account as last read or written, kept so `tenure plan` can diff
/// without calling the app.
pub(crate) fn remote_state(r: &RemoteUser) -> serde_json::Value {
    serde_json::to_value(r).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, data: serde_json::Value) -> NewEvent {
        NewEvent {
            event_id: Uuid::new_v4(),
            event_type: kind.into(),
            data,
            metadata: Metadata {
                correlation_id: Uuid::nil(),
                causation_id: None,
                person_id: None,
                app: None,
                source: None,
                actor: "test".into(),
                effective_at: None,
            },
        }
    }

    fn remote(active: bool) -> RemoteUser {
        RemoteUser {
            id: "r1".into(),
            user_name: "ada".into(),
            active,
            ..RemoteUser::default()
        }
    }

    fn view(active: bool) -> AccountView {
        AccountView {
            remote_id: Some("r1".into()),
            user_name: Some("ada".into()),
            active: Some(active),
        }
    }

    #[test]
    fn the_fold_follows_creates_patches_puts_and_deletes() {
        let created = fold_view(
            None,
            &[event(
                "AccountCreated",
                json!({"remote_id": "r1", "user_name": "ada", "active": true}),
            )],
        );
        assert_eq!(created, Some(view(true)));
        let patched = fold_view(
            created.clone(),
            &[event(
                "AccountUpdated",
                json!({"remote_id": "r1", "changes": [{"op": "replace", "path": "userName", "value": "ada2"}]}),
            )],
        );
        assert_eq!(
            patched.as_ref().and_then(|v| v.user_name.as_deref()),
            Some("ada2")
        );
        let put = fold_view(
            created.clone(),
            &[event(
                "AccountDeactivated",
                json!({"remote_id": "r1", "replaced_with": {"user_name": "ada", "active": false}}),
            )],
        );
        assert_eq!(put, Some(view(false)));
        assert_eq!(
            fold_view(
                created,
                &[event("AccountDeleted", json!({"remote_id": "r1"}))]
            ),
            None
        );
    }

    #[test]
    fn a_change_seen_only_on_re_read_is_recorded_as_observed() {
        // The PATCH's answer was lost; the re-read shows it applied.
        let evs = observed_events(Some(&view(true)), &remote(false));
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].0, "AccountDeactivated");
        assert_eq!(evs[0].1["observed"], true);
        assert_eq!(
            fold_view(Some(view(true)), &[event(evs[0].0, evs[0].1.clone())]),
            Some(view(false))
        );
        // Reactivated behind a lost answer: an update.
        let evs = observed_events(Some(&view(false)), &remote(true));
        assert_eq!(evs[0].0, "AccountUpdated");
        // Nothing to add when the stream already says it.
        assert!(observed_events(Some(&view(true)), &remote(true)).is_empty());
        // An account the stream does not know: linked, as observed.
        let evs = observed_events(None, &remote(true));
        assert_eq!(evs[0].0, "AccountLinked");
        assert_eq!(
            fold_view(None, &[event(evs[0].0, evs[0].1.clone())]),
            Some(view(true))
        );
    }
}
