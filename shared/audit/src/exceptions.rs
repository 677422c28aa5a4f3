//! Exceptions an auditor expects to be empty in a healthy install: leavers
//! still holding an active account, accounts whose last SCIM call failed,
//! and accounts the app holds that HR does not know.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tenure_store::RecordedEvent;
use uuid::Uuid;

use crate::access::AccountState;
use crate::leavers::Termination;
use crate::render::{Report, Table};
use crate::EventRef;

/// The SCIM call records on account streams.
pub const CALL_TYPES: &[&str] = &["ScimCallSucceeded", "ScimCallFailed"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActiveLeaverAccount {
    pub person_id: Uuid,
    pub person: String,
    pub app: String,
    pub user_name: Option<String>,
    pub remote_id: Option<String>,
    pub terminated_at: DateTime<Utc>,
    pub active_since: DateTime<Utc>,
    pub active_assumed: bool,
    pub granted_by: Option<EventRef>,
}

/// The leaver's account when it is still active now.
pub fn active_leaver(
    termination: &Termination,
    app: &str,
    state: Option<&AccountState>,
) -> Option<ActiveLeaverAccount> {
    let s = state.filter(|s| s.active)?;
    Some(ActiveLeaverAccount {
        person_id: termination.person_id,
        person: termination.person.clone(),
        app: app.to_owned(),
        user_name: s.user_name.clone(),
        remote_id: s.remote_id.clone(),
        terminated_at: termination.effective_at,
        active_since: s.since,
        active_assumed: s.active_assumed,
        granted_by: s.granted_by.clone(),
    })
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailedLastCall {
    pub person_id: Uuid,
    pub app: String,
    pub at: DateTime<Utc>,
    pub method: String,
    pub path: String,
    pub status: Option<u64>,
    pub error: Option<String>,
    pub event: EventRef,
}

/// The account's last SCIM call, when it failed (`last` is the last call
/// record of the account stream).
pub fn failed_last_call(
    app: &str,
    person_id: Uuid,
    last: &RecordedEvent,
) -> Option<FailedLastCall> {
    if last.event_type != "ScimCallFailed" {
        return None;
    }
    let d = &last.data;
    Some(FailedLastCall {
        person_id,
        app: app.to_owned(),
        at: last.recorded_at,
        method: d["method"].as_str().unwrap_or("").to_owned(),
        path: d["path"].as_str().unwrap_or("").to_owned(),
        status: d["status"].as_u64(),
        error: d["error"].as_str().map(str::to_owned),
        event: EventRef::from(last),
    })
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnmanagedAccount {
    pub app: String,
    pub remote_id: String,
    pub user_name: String,
    pub active: bool,
    pub swept_at: DateTime<Utc>,
}

/// The accounts listed by an app's latest `AccountsSwept` (the sweep lists
/// a bounded sample; `unmanaged_count` says how many there were).
pub fn unmanaged_from_sweep(app: &str, sweep: &RecordedEvent) -> Vec<UnmanagedAccount> {
    sweep.data["unmanaged"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|u| UnmanagedAccount {
                    app: app.to_owned(),
                    remote_id: u["id"].as_str().unwrap_or("").to_owned(),
                    user_name: u["user_name"].as_str().unwrap_or("").to_owned(),
                    active: u["active"].as_bool().unwrap_or(true),
                    swept_at: sweep.recorded_at,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExceptionsReport {
    pub active_leaver_accounts: Vec<ActiveLeaverAccount>,
    pub failed_last_calls: Vec<FailedLastCall>,
    pub unmanaged_accounts: Vec<UnmanagedAccount>,
}

impl ExceptionsReport {
    pub fn is_empty(&self) -> bool {
        self.active_leaver_accounts.is_empty()
            && self.failed_last_calls.is_empty()
            && self.unmanaged_accounts.is_empty()
    }
}

impl Report for ExceptionsReport {
    fn table(&self) -> Table {
        let mut t = Table::new(&["exception", "app", "person_id", "who", "at", "detail"]);
        for a in &self.active_leaver_accounts {
            t.push(vec![
                "leaver-active".into(),
                a.app.clone(),
                a.person_id.to_string(),
                format!("{} ({})", a.person, a.user_name.clone().unwrap_or_default()),
                a.terminated_at.to_rfc3339(),
                format!(
                    "terminated, account active since {}{}",
                    a.active_since.to_rfc3339(),
                    if a.active_assumed {
                        " (linked; active assumed)"
                    } else {
                        ""
                    }
                ),
            ]);
        }
        for f in &self.failed_last_calls {
            t.push(vec![
                "last-call-failed".into(),
                f.app.clone(),
                f.person_id.to_string(),
                String::new(),
                f.at.to_rfc3339(),
                format!(
                    "{} {}: {}",
                    f.method,
                    f.path,
                    f.status
                        .map(|s| format!("HTTP {s}"))
                        .or_else(|| f.error.clone())
                        .unwrap_or_default()
                ),
            ]);
        }
        for u in &self.unmanaged_accounts {
            t.push(vec![
                "unmanaged".into(),
                u.app.clone(),
                String::new(),
                u.user_name.clone(),
                u.swept_at.to_rfc3339(),
                format!(
                    "remote id {}, {}",
                    u.remote_id,
                    if u.active { "active" } else { "inactive" }
                ),
            ]);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tests::{ev, t0};
    use serde_json::json;

    #[test]
    fn only_a_failed_last_call_is_an_exception() {
        let p = Uuid::from_u128(1);
        let failed = ev(
            "s",
            3,
            "ScimCallFailed",
            json!({"method": "PATCH", "path": "/Users/1", "status": 500}),
            t0(),
        );
        let f = failed_last_call("wiki", p, &failed).unwrap();
        assert_eq!((f.status, f.method.as_str()), (Some(500), "PATCH"));
        let ok = ev("s", 4, "ScimCallSucceeded", json!({"status": 200}), t0());
        assert!(failed_last_call("wiki", p, &ok).is_none());
    }

    #[test]
    fn the_sweep_lists_unmanaged_accounts() {
        let sweep = ev(
            "app-wiki",
            1,
            "AccountsSwept",
            json!({"unmanaged": [{"id": "9", "user_name": "ghost", "active": true}], "unmanaged_count": 1}),
            t0(),
        );
        let u = unmanaged_from_sweep("wiki", &sweep);
        assert_eq!(u.len(), 1);
        assert_eq!((u[0].user_name.as_str(), u[0].active), ("ghost", true));
    }
}
