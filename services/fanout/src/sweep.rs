//! Drift the per-person reconcile cannot see: accounts in the app that
//! Tenure does not manage. A sweep lists the app's accounts page by page,
//! reports every account that is neither linked to a person nor carries a
//! known person's externalId, and, when the app's policy says so,
//! deactivates them. Everything it finds and does is recorded on the
//! app's stream.

use crate::worker::{AppWorker, WorkerError};
use serde::Serialize;
use serde_json::json;
use std::collections::HashSet;
use tenure_config::UnmanagedPolicy;
use tenure_scim::{diff_with, Desired};
use tenure_store::sqlx;
use tenure_store::{ExpectedVersion, Metadata, NewEvent};
use uuid::Uuid;

const PAGE: usize = 100;
/// Accounts named in one event; the count is always complete.
const LISTED: usize = 1000;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Unmanaged {
    pub id: String,
    pub user_name: String,
    pub active: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub app: String,
    pub listed: usize,
    pub managed: usize,
    pub unmanaged: Vec<Unmanaged>,
    pub deactivated: usize,
    pub errors: Vec<String>,
    /// What listing taught about the server (e.g. it fails when `count`
    /// is sent, so pages are its own size); also recorded as
    /// `ServerBehaviourLearned` events.
    pub learned: Vec<tenure_scim::Lesson>,
}

impl AppWorker {
    /// Lists the app's accounts and reports (and by policy, or when
    /// `force_deactivate`, switches off) those Tenure does not manage.
    pub async fn sweep(&self, force_deactivate: bool) -> Result<SweepReport, WorkerError> {
        self.load_learned().await?;
        let listed = self.client.list_all_users(PAGE).await;
        // A lesson learned on the way (paging without `count`) is kept even
        // when the listing then failed for another reason.
        let learned = self.store_lessons().await?;
        let (users, calls) = listed.map_err(|e| WorkerError::Transient(e.to_string()))?;
        let linked: HashSet<String> = sqlx::query_scalar::<_, String>(
            "SELECT remote_id FROM accounts WHERE app = $1 AND remote_id IS NOT NULL",
        )
        .bind(&self.app.name)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();
        let persons: HashSet<String> =
            sqlx::query_scalar::<_, String>("SELECT person_id::text FROM persons")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .collect();
        let unmanaged_users: Vec<&tenure_scim::RemoteUser> = users
            .iter()
            .filter(|u| !linked.contains(&u.id))
            .filter(|u| u.external_id.as_ref().is_none_or(|x| !persons.contains(x)))
            .collect();
        let unmanaged: Vec<Unmanaged> = unmanaged_users
            .iter()
            .map(|u| Unmanaged {
                id: u.id.clone(),
                user_name: u.user_name.clone(),
                active: u.active,
            })
            .collect();
        let deactivate = force_deactivate || self.app.unmanaged == UnmanagedPolicy::Deactivate;
        let mut deactivated = 0;
        let mut errors = Vec::new();
        let mut events = Vec::new();
        for call in &calls {
            events.push(self.app_event(
                "ScimCallSucceeded",
                serde_json::to_value(call).unwrap_or_default(),
            ));
        }
        if deactivate {
            // Accounts the app needs (the admin Tenure logs in with, service
            // accounts) are listed in `unmanaged_keep` and never touched.
            let keep = |u: &tenure_scim::RemoteUser| {
                self.app
                    .unmanaged_keep
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(&u.user_name))
            };
            for u in unmanaged_users.iter().filter(|u| u.active && !keep(u)) {
                // The same minimal operation a reconcile would send: PATCH,
                // or PUT of the account as it is when the app lacks PATCH.
                let Some(op) =
                    diff_with(&Desired::Deactivated, Some(u), self.caps(), &self.profile)
                        .into_iter()
                        .next()
                else {
                    continue;
                };
                if let Some(l) = &self.limiter {
                    l.until_ready().await;
                }
                let etag = tenure_scim::if_match(self.caps(), Some(u)).map(str::to_string);
                match self
                    .client
                    .execute_with(&op, &self.profile, etag.as_deref())
                    .await
                {
                    Ok(call) => {
                        deactivated += 1;
                        events.push(self.app_event(
                            "ScimCallSucceeded",
                            serde_json::to_value(&call.record).unwrap_or_default(),
                        ));
                        events.push(self.app_event(
                            "UnmanagedAccountDeactivated",
                            json!({ "remote_id": u.id, "user_name": u.user_name }),
                        ));
                    }
                    Err(e) => {
                        if let Some(r) = e.record() {
                            events.push(self.app_event(
                                "ScimCallFailed",
                                serde_json::to_value(r).unwrap_or_default(),
                            ));
                        }
                        errors.push(e.to_string());
                    }
                }
            }
        }
        events.push(self.app_event(
            "AccountsSwept",
            json!({
                "listed": users.len(),
                "managed": users.len() - unmanaged.len(),
                "unmanaged_count": unmanaged.len(),
                "unmanaged": unmanaged.iter().take(LISTED).collect::<Vec<_>>(),
                "deactivated": deactivated,
            }),
        ));
        let mut conn = self.pool.acquire().await?;
        tenure_store::append(
            &mut conn,
            &format!("app-{}", self.app.name),
            ExpectedVersion::Any,
            &events,
        )
        .await?;
        Ok(SweepReport {
            app: self.app.name.clone(),
            listed: users.len(),
            managed: users.len() - unmanaged.len(),
            unmanaged,
            deactivated,
            errors,
            learned,
        })
    }

    /// An event of the fanout on the app's own stream, in no job's
    /// correlation.
    pub(crate) fn app_event(&self, kind: &str, data: serde_json::Value) -> NewEvent {
        NewEvent {
            event_id: Uuid::new_v4(),
            event_type: kind.into(),
            data,
            metadata: Metadata {
                correlation_id: Uuid::new_v4(),
                causation_id: None,
                person_id: None,
                app: Some(self.app.name.clone()),
                source: None,
                actor: "fanout".into(),
                effective_at: None,
            },
        }
    }
}
