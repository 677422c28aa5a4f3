//! Rebuilding a downstream app from history: for an app that was wiped,
//! restored from an old backup, or is new. It reads what the app holds,
//! takes every person the app should know of (an entitlement, a linked
//! account, or an account in the app carrying the person's externalId),
//! and brings each one to the desired state through the same reconcile the
//! fanout runs ([`AppWorker::reconcile`], which re-creates an account whose
//! stored id is gone and records the new id), then the app's groups
//! through [`AppWorker::sync_groups`]. A dry run plans each person with
//! [`AppWorker::plan`] (the same `decide` as the reconcile) and sends
//! nothing that changes the app.
//!
//! One run is one correlation id: every person's reconcile carries it, and
//! `AppReplayStarted` / `AppReplayFinished` on the app's stream bracket it
//! with the counts.

use crate::decide::{Decision, Link};
use crate::worker::{AppWorker, Outcome, WorkerError};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use tenure_bus::Job;
use tenure_scim::Op;
use tenure_store::sqlx;
use tenure_store::{ExpectedVersion, Metadata, NewEvent};
use uuid::Uuid;

const PAGE: usize = 100;
/// Persons named per category in the finished event; counts are complete.
const LISTED: usize = 200;

/// What one person's reconcile (or plan) did to their account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Created,
    Updated,
    Deactivated,
    Deleted,
    Unchanged,
    /// A deprovision held by the mass-change guard.
    Held,
    Failed,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Created => "created",
            Effect::Updated => "updated",
            Effect::Deactivated => "deactivated",
            Effect::Deleted => "deleted",
            Effect::Unchanged => "unchanged",
            Effect::Held => "held",
            Effect::Failed => "failed",
        }
    }

    /// The effect of a reconcile outcome. A change that includes a create
    /// counts as created, then delete, deactivate, update in that order.
    /// An account found gone and forgotten (an observed `AccountDeleted`
    /// with nothing sent) counts as deleted.
    pub fn of_outcome(outcome: &Outcome) -> Effect {
        match outcome {
            Outcome::UnknownPerson | Outcome::InSync => Effect::Unchanged,
            Outcome::Staged => Effect::Held,
            Outcome::Failed(_) => Effect::Failed,
            Outcome::Changed(kinds) => {
                let has = |k: &str| kinds.contains(&k);
                if has("AccountCreated") {
                    Effect::Created
                } else if has("AccountDeleted") {
                    Effect::Deleted
                } else if has("AccountDeactivated") {
                    Effect::Deactivated
                } else {
                    Effect::Updated
                }
            }
        }
    }

    /// The effect a plan foresees: its operations, or a link/adoption that
    /// sends nothing (an update of Tenure's records), or a refusal.
    pub fn of_plan(decision: &Decision, ops: &[Op]) -> Effect {
        let link = match decision {
            Decision::Refuse(_) => return Effect::Failed,
            Decision::Proceed { link, .. } => *link,
        };
        let deactivates = |op: &Op| match op {
            Op::Patch { ops, .. } => ops
                .iter()
                .any(|p| p.path == "active" && p.value == json!(false)),
            Op::Replace { spec, .. } => !spec.active,
            _ => false,
        };
        if ops.iter().any(|o| matches!(o, Op::Create(_))) {
            Effect::Created
        } else if ops.iter().any(|o| matches!(o, Op::Delete { .. })) {
            Effect::Deleted
        } else if ops.iter().any(deactivates) {
            Effect::Deactivated
        } else if !ops.is_empty() || link != Link::Known {
            Effect::Updated
        } else {
            Effect::Unchanged
        }
    }
}

/// One person's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct PersonReplay {
    pub person_id: Uuid,
    pub user_name: String,
    pub entitlement: String,
    pub effect: Effect,
    /// In a dry run: the requests the reconcile would send, as
    /// `METHOD path`; a refusal's or failure's reason otherwise.
    pub detail: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayCounts {
    pub created: usize,
    pub updated: usize,
    pub deactivated: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub held: usize,
    pub failed: usize,
}

impl ReplayCounts {
    pub fn add(&mut self, effect: Effect) {
        match effect {
            Effect::Created => self.created += 1,
            Effect::Updated => self.updated += 1,
            Effect::Deactivated => self.deactivated += 1,
            Effect::Deleted => self.deleted += 1,
            Effect::Unchanged => self.unchanged += 1,
            Effect::Held => self.held += 1,
            Effect::Failed => self.failed += 1,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupReplay {
    /// Groups the app must hold.
    pub desired: usize,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    /// In a dry run: desired groups the app does not hold (by name).
    pub missing: Vec<String>,
    pub errors: Vec<String>,
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub app: String,
    pub correlation_id: Uuid,
    pub dry_run: bool,
    /// Accounts the app held when the run started.
    pub listed_accounts: usize,
    /// Groups the app held when the run started.
    pub listed_groups: usize,
    /// Accounts in the app that belong to no known person: left alone (see
    /// `tenure drift` and the app's `unmanaged` policy).
    pub unmanaged: usize,
    pub counts: ReplayCounts,
    pub persons: Vec<PersonReplay>,
    pub groups: GroupReplay,
}

/// The persons a replay visits: everyone with an entitlement or a linked
/// account in the app, and everyone whose id an account in the app carries
/// as its externalId (an account restored from a backup that Tenure no
/// longer links). Sorted, each once.
pub fn persons_to_visit(
    entitled_or_linked: impl IntoIterator<Item = Uuid>,
    known_persons: &BTreeSet<Uuid>,
    listed_external_ids: impl IntoIterator<Item = Option<String>>,
) -> (Vec<Uuid>, usize) {
    let mut out: BTreeSet<Uuid> = entitled_or_linked.into_iter().collect();
    let mut unmanaged = 0;
    for x in listed_external_ids {
        match x.and_then(|x| x.parse::<Uuid>().ok()) {
            Some(p) if known_persons.contains(&p) => {
                out.insert(p);
            }
            _ => unmanaged += 1,
        }
    }
    (out.into_iter().collect(), unmanaged)
}

impl AppWorker {
    /// Converges the app with what history says it must hold (see the
    /// module documentation); with `dry_run`, only plans.
    pub async fn replay_app(&self, dry_run: bool) -> Result<ReplayReport, WorkerError> {
        let correlation_id = Uuid::new_v4();
        let app = self.app.name.clone();
        tracing::info!(%app, %correlation_id, dry_run, "app replay started");
        self.load_learned().await?;
        let (users, _) = self
            .client
            .list_all_users(PAGE)
            .await
            .map_err(|e| WorkerError::Transient(format!("listing the app's users: {e}")))?;
        let listed_groups = if !self.app.groups.is_empty() && self.profile.groups {
            let (groups, _) =
                self.client.list_all_groups(PAGE).await.map_err(|e| {
                    WorkerError::Transient(format!("listing the app's groups: {e}"))
                })?;
            groups
        } else {
            Vec::new()
        };
        self.store_lessons().await?;

        let candidates: Vec<Uuid> = sqlx::query_scalar(
            "SELECT person_id FROM entitlements WHERE app = $1
             UNION SELECT person_id FROM accounts WHERE app = $1",
        )
        .bind(&app)
        .fetch_all(&self.pool)
        .await?;
        let known: BTreeSet<Uuid> = sqlx::query_scalar("SELECT person_id FROM persons")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .collect();
        // An account Tenure links is managed even when it lost its externalId.
        let linked: BTreeSet<String> = sqlx::query_scalar(
            "SELECT remote_id FROM accounts WHERE app = $1 AND remote_id IS NOT NULL",
        )
        .bind(&app)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();
        let (persons, unmanaged) = persons_to_visit(
            candidates,
            &known,
            users
                .iter()
                .filter(|u| !linked.contains(&u.id))
                .map(|u| u.external_id.clone()),
        );

        let start = json!({
            "dry_run": dry_run,
            "listed_accounts": users.len(),
            "listed_groups": listed_groups.len(),
            "persons": persons.len(),
            "unmanaged": unmanaged,
        });
        if !dry_run {
            self.append_app_event(correlation_id, "AppReplayStarted", start)
                .await?;
        }

        let mut counts = ReplayCounts::default();
        let mut lines = Vec::with_capacity(persons.len());
        for person_id in persons {
            let line = if dry_run {
                self.replay_plan(person_id).await?
            } else {
                self.replay_person(person_id, correlation_id).await?
            };
            let Some(line) = line else { continue };
            counts.add(line.effect);
            lines.push(line);
        }

        let groups = if dry_run {
            self.replay_groups_plan(&listed_groups).await?
        } else {
            // After the accounts, so members are named by the new ids.
            let r = self.sync_groups().await?;
            GroupReplay {
                desired: r.groups,
                created: r.created,
                updated: r.updated,
                deleted: r.deleted,
                missing: r.missing,
                errors: r.errors,
                skipped: r.skipped,
            }
        };

        let report = ReplayReport {
            app: app.clone(),
            correlation_id,
            dry_run,
            listed_accounts: users.len(),
            listed_groups: listed_groups.len(),
            unmanaged,
            counts,
            persons: lines,
            groups,
        };
        if !dry_run {
            let named = |e: Effect| {
                report
                    .persons
                    .iter()
                    .filter(|p| p.effect == e)
                    .take(LISTED)
                    .map(|p| p.person_id)
                    .collect::<Vec<_>>()
            };
            self.append_app_event(
                correlation_id,
                "AppReplayFinished",
                json!({
                    "counts": report.counts,
                    "groups": report.groups,
                    "unmanaged": report.unmanaged,
                    "held": named(Effect::Held),
                    "failed": named(Effect::Failed),
                }),
            )
            .await?;
        }
        tracing::info!(%app, %correlation_id, counts = ?report.counts, "app replay finished");
        Ok(report)
    }

    async fn replay_person(
        &self,
        person_id: Uuid,
        correlation_id: Uuid,
    ) -> Result<Option<PersonReplay>, WorkerError> {
        let job = Job {
            app: self.app.name.clone(),
            person_id,
            correlation_id,
            causation_id: None,
            approved: false,
        };
        let (effect, detail) = match self.reconcile(&job).await {
            Ok(Outcome::UnknownPerson) => return Ok(None),
            Ok(outcome) => {
                let detail = match &outcome {
                    Outcome::Failed(reason) => vec![reason.clone()],
                    Outcome::Changed(kinds) => kinds.iter().map(|k| k.to_string()).collect(),
                    _ => Vec::new(),
                };
                (Effect::of_outcome(&outcome), detail)
            }
            // The app failed in a way that may pass: this person is counted
            // failed and the next replay or reconcile tries again.
            Err(WorkerError::Transient(e)) => (Effect::Failed, vec![e]),
            Err(e) => return Err(e),
        };
        let (user_name, entitlement) = self.person_line(person_id).await?;
        Ok(Some(PersonReplay {
            person_id,
            user_name,
            entitlement,
            effect,
            detail,
        }))
    }

    async fn replay_plan(&self, person_id: Uuid) -> Result<Option<PersonReplay>, WorkerError> {
        let planned = match self.plan(person_id, true).await {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(None),
            Err(WorkerError::Transient(e)) => {
                let (user_name, entitlement) = self.person_line(person_id).await?;
                return Ok(Some(PersonReplay {
                    person_id,
                    user_name,
                    entitlement,
                    effect: Effect::Failed,
                    detail: vec![e],
                }));
            }
            Err(e) => return Err(e),
        };
        let detail = match &planned.decision {
            Decision::Refuse(reason) => vec![reason.clone()],
            Decision::Proceed { link, .. } => {
                let mut d: Vec<String> = planned
                    .ops
                    .iter()
                    .map(|op| {
                        let (method, path, _) = tenure_scim::planned_request(op, &self.profile);
                        format!("{method} {path}")
                    })
                    .collect();
                match link {
                    Link::Linked => d.insert(0, "link the account".into()),
                    Link::Adopted => d.insert(0, "adopt the account".into()),
                    Link::Known => {}
                }
                d
            }
        };
        let mut effect = Effect::of_plan(&planned.decision, &planned.ops);
        let mut detail = detail;
        // The account Tenure linked is gone and none is wanted: the run
        // records it as deleted and forgets the link, so the plan says so.
        if let (Effect::Unchanged, Some(gone), "none") = (
            effect,
            planned.stored_remote_id.as_deref(),
            planned.found_by,
        ) {
            effect = Effect::Deleted;
            detail.push(format!(
                "forget the link to account {gone}: it is gone from the app"
            ));
        }
        Ok(Some(PersonReplay {
            person_id,
            user_name: planned.user_name.clone(),
            entitlement: planned.entitlement.as_str().to_string(),
            effect,
            detail,
        }))
    }

    /// The groups a sync would create: desired names the app lacks. Which
    /// members change is not planned: after a wipe, members are the
    /// accounts the run has yet to create.
    async fn replay_groups_plan(
        &self,
        listed: &[tenure_scim::RemoteGroup],
    ) -> Result<GroupReplay, WorkerError> {
        if self.app.groups.is_empty() {
            return Ok(GroupReplay::default());
        }
        if !self.profile.groups {
            return Ok(GroupReplay {
                skipped: Some(format!("profile {} has no groups", self.profile.name)),
                ..GroupReplay::default()
            });
        }
        let rows: Vec<(Uuid, serde_json::Value, serde_json::Value)> = sqlx::query_as(
            "SELECT p.person_id, p.attributes, p.groups FROM persons p
             JOIN entitlements e ON e.app = $1 AND e.person_id = p.person_id AND e.entitlement = 'active'",
        )
        .bind(&self.app.name)
        .fetch_all(&self.pool)
        .await?;
        let members: Vec<crate::groups::Member> = rows
            .into_iter()
            .map(|(p, attrs, groups)| {
                (
                    p,
                    serde_json::from_value(attrs).unwrap_or_default(),
                    serde_json::from_value(groups).unwrap_or_default(),
                    p.to_string(),
                )
            })
            .collect();
        let desired: BTreeMap<String, BTreeSet<String>> =
            crate::groups::desired_groups(&self.app, &members);
        let held: BTreeSet<&str> = listed.iter().map(|g| g.display_name.as_str()).collect();
        let missing: Vec<String> = desired
            .keys()
            .filter(|n| !held.contains(n.as_str()))
            .cloned()
            .collect();
        Ok(GroupReplay {
            desired: desired.len(),
            created: missing.len(),
            missing,
            ..GroupReplay::default()
        })
    }

    async fn person_line(&self, person_id: Uuid) -> Result<(String, String), WorkerError> {
        let row: Option<(serde_json::Value, Option<String>)> = sqlx::query_as(
            "SELECT p.attributes, e.entitlement FROM persons p
             LEFT JOIN entitlements e ON e.app = $2 AND e.person_id = p.person_id
             WHERE p.person_id = $1",
        )
        .bind(person_id)
        .bind(&self.app.name)
        .fetch_optional(&self.pool)
        .await?;
        let Some((attrs, entitlement)) = row else {
            return Ok((String::new(), String::new()));
        };
        let attrs = serde_json::from_value(attrs).unwrap_or_default();
        Ok((
            crate::mapping::user_name(&self.app, person_id, &attrs),
            entitlement.unwrap_or_else(|| "no_account".into()),
        ))
    }

    async fn append_app_event(
        &self,
        correlation_id: Uuid,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<(), WorkerError> {
        let event = NewEvent {
            event_id: Uuid::new_v4(),
            event_type: kind.into(),
            data,
            metadata: Metadata {
                correlation_id,
                causation_id: None,
                person_id: None,
                app: Some(self.app.name.clone()),
                source: None,
                actor: "replay".into(),
                effective_at: None,
            },
        };
        let mut conn = self.pool.acquire().await?;
        tenure_store::append(
            &mut conn,
            &format!("app-{}", self.app.name),
            ExpectedVersion::Any,
            &[event],
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenure_scim::{PatchOp, UserSpec};

    #[test]
    fn outcomes_count_by_their_strongest_change() {
        assert_eq!(Effect::of_outcome(&Outcome::InSync), Effect::Unchanged);
        assert_eq!(Effect::of_outcome(&Outcome::Staged), Effect::Held);
        assert_eq!(
            Effect::of_outcome(&Outcome::Failed("409".into())),
            Effect::Failed
        );
        assert_eq!(
            Effect::of_outcome(&Outcome::Changed(vec!["AccountLinked", "AccountCreated"])),
            Effect::Created
        );
        assert_eq!(
            Effect::of_outcome(&Outcome::Changed(vec![
                "AccountLinked",
                "AccountDeactivated"
            ])),
            Effect::Deactivated
        );
        assert_eq!(
            Effect::of_outcome(&Outcome::Changed(vec!["AccountLinked"])),
            Effect::Updated
        );
        assert_eq!(
            Effect::of_outcome(&Outcome::Changed(vec!["AccountDeleted"])),
            Effect::Deleted
        );
    }

    #[test]
    fn plans_count_as_the_reconcile_would() {
        let go = |link| Decision::Proceed {
            link,
            ops: Vec::new(),
        };
        let off = Op::Patch {
            id: "r1".into(),
            ops: vec![PatchOp {
                op: "replace".into(),
                path: "active".into(),
                value: json!(false),
            }],
        };
        assert_eq!(Effect::of_plan(&go(Link::Known), &[]), Effect::Unchanged);
        assert_eq!(Effect::of_plan(&go(Link::Linked), &[]), Effect::Updated);
        assert_eq!(
            Effect::of_plan(&go(Link::Known), &[Op::Create(UserSpec::default())]),
            Effect::Created
        );
        assert_eq!(
            Effect::of_plan(&go(Link::Linked), &[off]),
            Effect::Deactivated
        );
        assert_eq!(
            Effect::of_plan(&go(Link::Known), &[Op::Delete { id: "r1".into() }]),
            Effect::Deleted
        );
        assert_eq!(
            Effect::of_plan(&Decision::Refuse("taken".into()), &[]),
            Effect::Failed
        );
    }

    #[test]
    fn restored_accounts_of_known_persons_are_visited_and_strangers_left_alone() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let known: BTreeSet<Uuid> = [a, b, c].into();
        let (visit, unmanaged) = persons_to_visit(
            [a, a],
            &known,
            [
                Some(b.to_string()),
                Some(a.to_string()),
                Some(Uuid::new_v4().to_string()),
                Some("not-a-uuid".into()),
                None,
            ],
        );
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(visit, want);
        assert_eq!(unmanaged, 3);
    }
}
