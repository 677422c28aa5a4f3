//! Batched reconciles for one app (ADR 0018): jobs of different persons
//! who need a brand-new account are planned together and their creates go
//! to the app as SCIM Bulk requests.
//!
//! What stays as in a single reconcile: each person holds its own lease
//! (one advisory lock per (app, person), all taken by the batch's
//! transaction), the account is looked for by `externalId` (and `userName`
//! unless the profile lets the 409 of a taken name catch it) before any
//! create, every call is audited on that person's account stream, and each
//! person's outcome is recorded under its own savepoint, so a failure stays
//! with its person. Anything that is not a plain create — an account that
//! turns out to exist, a 409, an operation the server did not run, a bulk
//! request that failed as a whole — continues on the single-call path
//! under the same lease, which looks the account up again first.

use std::collections::HashMap;

use futures::StreamExt;
use tenure_bus::Job;
use tenure_config::BulkMode;
use tenure_domain::{Attributes, Entitlement};
use tenure_scim::{diff_with, BulkItem, BulkLimits, Desired, Op, RemoteUser, ScimError};
use tenure_store::sqlx::{self, Row};
use tracing::Instrument;
use uuid::Uuid;

use crate::mapping;
use crate::worker::{
    account_stream, describe, AppWorker, Audit, Known, Outcome, WorkerError, LEASE_NAMESPACE,
};

/// Look-ups and fallback reconciles of one batch in flight at once. One:
/// the app's `concurrency` bounds the batches in flight, so the app gets at
/// most that many requests at once, as from single jobs. (Four per batch
/// was measured slower: sixteen look-ups at once queue up in a
/// single-threaded server.)
const BATCH_CALLS_IN_FLIGHT: usize = 1;

/// What became of one job handed to [`AppWorker::reconcile_batch`].
#[derive(Debug)]
pub enum BatchResult {
    /// Reconciled within the batch.
    Done(Result<Outcome, WorkerError>),
    /// Not taken into the batch (another worker holds the person's lease,
    /// the person no longer needs a plain create, or a second job for the
    /// same person): run it on the single path.
    Single,
}

/// One person's state as read for planning.
struct Person {
    attributes: Attributes,
    entitlement: Entitlement,
    known: Known,
}

/// A person the batch works on, under its lease.
struct Work<'a> {
    index: usize,
    job: &'a Job,
    desired: Desired,
    user_name: String,
    stream: String,
    version: i64,
    audit: Audit<'a>,
    result: Option<Result<(Outcome, Option<RemoteUser>), ScimError>>,
    /// Continue on the single-call path: `Some(found)` after a 409 with
    /// what the `userName` look-up found, `None` for a full reconcile.
    fallback: Option<Fallback>,
}

enum Fallback {
    /// Look everything up again and converge (the bulk request or this
    /// operation failed in a way that says nothing about the account).
    Full,
    /// The create met a taken `userName`: link or refuse as the single
    /// path does after a 409.
    Conflict,
    /// The look-up found the account: converge from it.
    Found(Box<RemoteUser>, &'static str),
}

impl AppWorker {
    /// The bulk limits to plan with: `None` (single calls) when the app's
    /// `bulk` setting is `off`, discovery did not announce usable bulk
    /// support under the app's profile, or filtering is unavailable (the
    /// batch must look for existing accounts before creating).
    pub fn bulk_limits(&self) -> Option<BulkLimits> {
        if self.app.bulk == BulkMode::Off {
            return None;
        }
        let caps = self.caps.read().ok()?;
        caps.bulk.filter(|_| caps.caps.filter)
    }

    /// Which of `jobs` look like brand-new creates, from a read without
    /// leases; the rest should take the single path right away. The batch
    /// checks again under the leases.
    pub async fn batchable(&self, jobs: &[Job]) -> Result<Vec<bool>, WorkerError> {
        if self.bulk_limits().is_none() {
            return Ok(vec![false; jobs.len()]);
        }
        let persons: Vec<Uuid> = jobs.iter().map(|j| j.person_id).collect();
        let mut conn = self.pool.acquire().await?;
        let read = self.read_persons(&mut conn, &persons).await?;
        let mut seen = std::collections::HashSet::new();
        Ok(jobs
            .iter()
            .map(|j| {
                seen.insert(j.person_id)
                    && read.get(&j.person_id).is_some_and(|p| self.is_new(j, p))
            })
            .collect())
    }

    /// Persons, entitlements and known accounts of `persons` in one query.
    async fn read_persons(
        &self,
        conn: &mut sqlx::PgConnection,
        persons: &[Uuid],
    ) -> Result<HashMap<Uuid, Person>, WorkerError> {
        let rows = sqlx::query(
            "SELECT p.person_id, p.attributes, e.entitlement, a.remote_id, a.user_name
             FROM persons p
             LEFT JOIN entitlements e ON e.app = $2 AND e.person_id = p.person_id
             LEFT JOIN accounts a ON a.app = $2 AND a.person_id = p.person_id
             WHERE p.person_id = ANY($1)",
        )
        .bind(persons)
        .bind(&self.app.name)
        .fetch_all(&mut *conn)
        .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let person_id: Uuid = row.try_get("person_id")?;
            let attributes: Attributes =
                serde_json::from_value(row.try_get("attributes")?).unwrap_or_default();
            let entitlement = row
                .try_get::<Option<String>, _>("entitlement")?
                .as_deref()
                .and_then(Entitlement::parse)
                .unwrap_or_default();
            let known = Known {
                remote_id: row.try_get("remote_id")?,
                user_name: row.try_get("user_name")?,
            };
            out.insert(
                person_id,
                Person {
                    attributes,
                    entitlement,
                    known,
                },
            );
        }
        Ok(out)
    }

    /// Whether reconciling `p` would look for an account and, finding none,
    /// create it: the person should have an account and Tenure has never
    /// linked one.
    fn is_new(&self, job: &Job, p: &Person) -> bool {
        p.known.is_none()
            && matches!(
                mapping::desired(&self.app, job.person_id, &p.attributes, None, p.entitlement),
                Desired::Present(_)
            )
    }

    /// Reconciles `jobs` (of different persons, as [`AppWorker::batchable`]
    /// picked them) together; see the module documentation. The result has
    /// one entry per job, in order.
    pub async fn reconcile_batch(&self, jobs: &[Job]) -> Vec<BatchResult> {
        let span = tracing::info_span!("reconcile_batch", app = %self.app.name, jobs = jobs.len());
        let mut results: Vec<BatchResult> = jobs.iter().map(|_| BatchResult::Single).collect();
        if let Err(e) = self.batch(jobs, &mut results).instrument(span).await {
            tracing::warn!(app = %self.app.name, error = %e, "batch failed; its jobs are retried");
            for r in results.iter_mut() {
                // Leased jobs may have had SCIM calls whose audit is lost
                // with the transaction: they run again, look the accounts
                // up and link what was created.
                if matches!(r, BatchResult::Done(_)) {
                    *r = BatchResult::Done(Err(WorkerError::Batch(e.to_string())));
                }
            }
        }
        results
    }

    async fn batch(&self, jobs: &[Job], results: &mut [BatchResult]) -> Result<(), WorkerError> {
        self.refresh_caps().await;
        let Some(limits) = self.bulk_limits() else {
            return Ok(());
        };
        let app = self.app.name.as_str();
        // One job per person, leases taken in person order; try-locks never
        // wait, so two batches cannot deadlock and a busy person goes to the
        // single path, which waits for its lease there.
        let mut order: Vec<usize> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, j) in jobs.iter().enumerate() {
            if seen.insert(j.person_id) {
                order.push(i);
            }
        }
        order.sort_by_key(|i| jobs[*i].person_id);
        let keys: Vec<String> = order
            .iter()
            .map(|i| format!("{app}:{}", jobs[*i].person_id))
            .collect();
        let mut tx = self.pool.begin().await?;
        let locked: Vec<(i64, bool)> = sqlx::query_as(
            "SELECT n, pg_try_advisory_xact_lock($1, hashtext(k))
             FROM unnest($2::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
        )
        .bind(LEASE_NAMESPACE)
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?;
        let leased: Vec<usize> = locked
            .iter()
            .filter(|(_, got)| *got)
            .filter_map(|(n, _)| {
                order
                    .get(usize::try_from(*n).ok()?.checked_sub(1)?)
                    .copied()
            })
            .collect();
        let persons: Vec<Uuid> = leased.iter().map(|i| jobs[*i].person_id).collect();
        // Read again under the leases: only what is still a plain create
        // stays in the batch.
        let mut read = self.read_persons(&mut tx, &persons).await?;
        let streams: Vec<String> = persons.iter().map(|p| account_stream(app, *p)).collect();
        let versions: HashMap<String, i64> = sqlx::query_as(
            "SELECT stream_id, max(version) FROM events WHERE stream_id = ANY($1) GROUP BY stream_id",
        )
        .bind(&streams)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut work: Vec<Work> = Vec::new();
        for i in leased {
            let job = &jobs[i];
            let Some(p) = read.remove(&job.person_id) else {
                continue;
            };
            if !self.is_new(job, &p) {
                continue;
            }
            let manager = self
                .manager_remote_id(&mut *tx, job.person_id, &p.attributes)
                .await?;
            let desired = mapping::desired(
                &self.app,
                job.person_id,
                &p.attributes,
                manager.as_deref(),
                p.entitlement,
            );
            let stream = account_stream(app, job.person_id);
            work.push(Work {
                index: i,
                job,
                desired,
                user_name: mapping::user_name(&self.app, job.person_id, &p.attributes),
                version: versions.get(&stream).copied().unwrap_or(0),
                stream,
                audit: Audit::new(job, app),
                result: None,
                fallback: None,
            });
        }
        if work.is_empty() {
            tx.rollback().await?;
            return Ok(());
        }
        // The person is wanted: a held deprovisioning is moot (as in the
        // single path).
        let wanted: Vec<Uuid> = work.iter().map(|w| w.job.person_id).collect();
        sqlx::query("DELETE FROM staged_changes WHERE app = $1 AND person_id = ANY($2)")
            .bind(app)
            .bind(&wanted)
            .execute(&mut *tx)
            .await?;
        for w in &work {
            results[w.index] = BatchResult::Done(Err(WorkerError::Batch("not settled".into())));
        }

        // 1. Look for existing accounts, as a single reconcile would.
        let by_user_name = !self.create_first(&Known {
            remote_id: None,
            user_name: None,
        });
        let lookups: Vec<_> = work
            .into_iter()
            .map(|w| self.look_for(w, by_user_name))
            .collect();
        work = futures::stream::iter(lookups)
            .buffer_unordered(BATCH_CALLS_IN_FLIGHT)
            .collect()
            .await;

        // 2. Create the rest with bulk requests.
        let caps = self.caps();
        let mut creates: Vec<(usize, BulkItem)> = Vec::new();
        for (k, w) in work.iter_mut().enumerate() {
            if w.result.is_some() || w.fallback.is_some() {
                continue;
            }
            match diff_with(&w.desired, None, caps, &self.profile).as_slice() {
                [op @ Op::Create(_)] => creates.push((
                    k,
                    BulkItem {
                        bulk_id: w.job.person_id.to_string(),
                        op: op.clone(),
                        etag: None,
                    },
                )),
                _ => w.fallback = Some(Fallback::Full),
            }
        }
        let items: Vec<BulkItem> = creates.iter().map(|(_, item)| item.clone()).collect();
        let chunks = match limits.chunks(&self.client, &items, &self.profile) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot plan bulk requests; creating one by one");
                Vec::new()
            }
        };
        let mut sent = vec![false; items.len()];
        for range in chunks {
            for s in &mut sent[range.clone()] {
                *s = true;
            }
            let chunk = &items[range.clone()];
            let members = &creates[range];
            // Each create's intent is committed before the request, so a
            // crash during it leaves "attempted, outcome unknown" in the
            // audit; without that record nothing is sent now and the
            // members are reconciled one by one below.
            let ops: HashMap<usize, &Op> = members.iter().map(|(k, item)| (*k, &item.op)).collect();
            let intents: Vec<_> = work
                .iter_mut()
                .enumerate()
                .filter_map(|(k, w)| {
                    let (kind, data) = crate::worker::intent(ops.get(&k)?)?;
                    Some((&mut w.audit, kind, data))
                })
                .collect();
            if let Err(e) = self.record_intents(intents).await {
                tracing::warn!(error = %e, "cannot record the intents of a bulk request; creating one by one");
                for (k, _) in members {
                    work[*k].fallback = Some(Fallback::Full);
                }
                continue;
            }
            if let Some(l) = &self.limiter {
                l.until_ready().await;
            }
            match self
                .client
                .bulk_users(chunk, &self.profile, limits, None)
                .await
            {
                Ok(call) => {
                    for ((k, item), answer) in members.iter().zip(call.results) {
                        let w = &mut work[*k];
                        match answer {
                            Some(Ok(done)) => {
                                w.audit.bulk_call(&done.record, &call.record, chunk.len());
                                let (kind, data) = describe(&item.op, &done.value, None);
                                w.audit.push(kind, data);
                                w.result = Some(Ok((Outcome::Changed(vec![kind]), done.value)));
                            }
                            Some(Err(e)) => {
                                if let Some(r) = e.record() {
                                    w.audit.bulk_call(r, &call.record, chunk.len());
                                }
                                if e.status() == Some(409) {
                                    w.fallback = Some(Fallback::Conflict);
                                } else if e.is_retryable() {
                                    w.fallback = Some(Fallback::Full);
                                } else {
                                    let reason = crate::worker::refusal(&e);
                                    w.result = Some(Ok((Outcome::Failed(reason), None)));
                                }
                            }
                            None => w.fallback = Some(Fallback::Full),
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, operations = chunk.len(), "bulk request failed; continuing one by one");
                    for (k, _) in members {
                        let w = &mut work[*k];
                        if let Some(r) = e.record() {
                            w.audit.call(r, 1);
                        }
                        w.fallback = Some(Fallback::Full);
                    }
                }
            }
        }
        for ((k, _), was_sent) in creates.iter().zip(sent) {
            if !was_sent {
                work[*k].fallback = Some(Fallback::Full);
            }
        }

        // 3. Everything else on the single-call path, still leased.
        let rest: Vec<_> = work.into_iter().map(|w| self.fall_back(w)).collect();
        work = futures::stream::iter(rest)
            .buffer_unordered(BATCH_CALLS_IN_FLIGHT)
            .collect()
            .await;

        // 4. Record each person's outcome under its own savepoint.
        let mut settled: Vec<(usize, Result<Outcome, WorkerError>)> = Vec::new();
        for w in work {
            let result = match w.result {
                Some(r) => r,
                None => Err(ScimError::Config("no outcome".into())),
            };
            let mut sp = sqlx::Connection::begin(&mut *tx).await?;
            let outcome = self
                .finish(&mut sp, w.job, &w.stream, w.version, w.audit, result)
                .await;
            match &outcome {
                Ok(_) | Err(WorkerError::Transient(_)) => sp.commit().await?,
                Err(_) => sp.rollback().await?,
            }
            settled.push((w.index, outcome));
        }
        tx.commit().await?;
        for (i, outcome) in settled {
            results[i] = BatchResult::Done(outcome);
        }
        Ok(())
    }

    /// Looks for the account of a brand-new person (stage 1).
    async fn look_for<'a>(&self, mut w: Work<'a>, by_user_name: bool) -> Work<'a> {
        let none = Known {
            remote_id: None,
            user_name: None,
        };
        match self
            .lookup(w.job, &none, &w.user_name, by_user_name, &mut w.audit)
            .await
        {
            Ok(Some((remote, how))) => w.fallback = Some(Fallback::Found(Box::new(remote), how)),
            Ok(None) => {}
            Err(e) => w.result = Some(Err(e)),
        }
        w
    }

    /// Continues a person on the single-call path (stage 3).
    async fn fall_back<'a>(&self, mut w: Work<'a>) -> Work<'a> {
        let Some(fallback) = w.fallback.take() else {
            return w;
        };
        let span = tracing::info_span!("reconcile", app = %w.job.app, person = %w.job.person_id, correlation_id = %w.job.correlation_id);
        let result = async {
                match fallback {
                    Fallback::Full => {
                        let none = Known {
                            remote_id: None,
                            user_name: None,
                        };
                        self.converge(w.job, &w.desired, &none, &w.user_name, &mut w.audit)
                            .await
                    }
                    Fallback::Found(remote, how) => {
                        self.converge_from(
                            w.job,
                            &w.desired,
                            &w.user_name,
                            &mut w.audit,
                            Some((*remote, how)),
                        )
                        .await
                    }
                    Fallback::Conflict => {
                        let found = self
                            .call(&mut w.audit, || {
                                self.client.find_user("userName", &w.user_name)
                            })
                            .await;
                        match found {
                            Ok(call) => match call.value {
                                Some(u) => {
                                    self.converge_from(
                                        w.job,
                                        &w.desired,
                                        &w.user_name,
                                        &mut w.audit,
                                        Some((u, "userName")),
                                    )
                                    .await
                                }
                                None => Ok((
                                    Outcome::Failed(format!(
                                        "create of {:?} conflicted (409) but no account with that userName is visible",
                                        w.user_name
                                    )),
                                    None,
                                )),
                            },
                            Err(e) => Err(e),
                        }
                    }
                }
            }
            .instrument(span)
            .await;
        w.result = Some(result);
        w
    }
}
