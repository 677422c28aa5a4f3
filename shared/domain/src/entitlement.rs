//! What each app should hold for a person, as a function of the person's
//! view and the time: per-app scope, pre-provisioning, leave, termination
//! and purge policies.

use crate::person::{Lifecycle, View};
use crate::record::Attributes;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TerminationPolicy {
    /// Keep the account but set `active=false` (reversible, keeps data).
    #[default]
    Deactivate,
    /// Remove the account from the app.
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LeavePolicy {
    /// Deactivate the account for the duration of the leave.
    #[default]
    Suspend,
    /// Leave the account active.
    Keep,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PurgeAction {
    #[default]
    Delete,
    /// Keep an inactive account with personal data replaced.
    Anonymise,
}

/// A person is in scope when `attribute` equals one of `values` (exactly).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeFilter {
    pub attribute: String,
    pub values: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppPolicy {
    pub name: String,
    pub scope: Option<ScopeFilter>,
    pub on_termination: TerminationPolicy,
    pub on_leave: LeavePolicy,
    /// Create the account (inactive) this many days before the start date.
    pub pre_provision_days: u32,
    /// Days after termination before the account is purged; never if unset.
    pub purge_after_days: Option<u32>,
    pub purge_action: PurgeAction,
}

impl AppPolicy {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            scope: None,
            on_termination: TerminationPolicy::default(),
            on_leave: LeavePolicy::default(),
            pre_provision_days: 0,
            purge_after_days: None,
            purge_action: PurgeAction::default(),
        }
    }
}

/// What one app should hold for one person right now.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Entitlement {
    /// No account is wanted; one that exists is left inactive.
    #[default]
    NoAccount,
    /// Created ahead of the start date, inactive until then.
    PreProvisioned,
    Active,
    /// On leave under a suspending policy: inactive, kept.
    Suspended,
    /// Terminated or out of scope: handled by the termination policy.
    Revoked,
    /// The grace period after termination has ended: deleted or anonymised.
    Purged,
    /// The hire was rescinded: no trace may remain.
    Removed,
}

impl Entitlement {
    pub fn as_str(self) -> &'static str {
        match self {
            Entitlement::NoAccount => "no_account",
            Entitlement::PreProvisioned => "pre_provisioned",
            Entitlement::Active => "active",
            Entitlement::Suspended => "suspended",
            Entitlement::Revoked => "revoked",
            Entitlement::Purged => "purged",
            Entitlement::Removed => "removed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "no_account" => Entitlement::NoAccount,
            "pre_provisioned" => Entitlement::PreProvisioned,
            "active" => Entitlement::Active,
            "suspended" => Entitlement::Suspended,
            "revoked" => Entitlement::Revoked,
            "purged" => Entitlement::Purged,
            "removed" => Entitlement::Removed,
            _ => return None,
        })
    }
}

impl AppPolicy {
    pub fn in_scope(&self, attributes: &Attributes) -> bool {
        match &self.scope {
            None => true,
            Some(f) => attributes
                .get(&f.attribute)
                .is_some_and(|v| f.values.iter().any(|x| x == v)),
        }
    }

    pub fn entitlement(&self, view: &View, now: DateTime<Utc>) -> Entitlement {
        let in_scope = self.in_scope(&view.attributes);
        match view.lifecycle {
            Lifecycle::PreHire => match view.start_at {
                Some(start)
                    if in_scope
                        && self.pre_provision_days > 0
                        && now >= start - Duration::days(i64::from(self.pre_provision_days)) =>
                {
                    Entitlement::PreProvisioned
                }
                _ => Entitlement::NoAccount,
            },
            Lifecycle::Active if in_scope => Entitlement::Active,
            Lifecycle::OnLeave if in_scope => match self.on_leave {
                LeavePolicy::Keep => Entitlement::Active,
                LeavePolicy::Suspend => Entitlement::Suspended,
            },
            Lifecycle::Active | Lifecycle::OnLeave => Entitlement::Revoked,
            Lifecycle::Terminated | Lifecycle::Purged => {
                let purge_at = view
                    .termination_at
                    .zip(self.purge_after_days)
                    .map(|(t, d)| t + Duration::days(i64::from(d)));
                match purge_at {
                    Some(p) if now >= p => Entitlement::Purged,
                    _ => Entitlement::Revoked,
                }
            }
            Lifecycle::Cancelled => Entitlement::Removed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(l: Lifecycle, dept: &str) -> View {
        View {
            lifecycle: l,
            since: DateTime::<Utc>::MIN_UTC,
            attributes: Attributes {
                department: Some(dept.into()),
                ..Attributes::default()
            },
            start_at: None,
            end_at: None,
            termination_at: None,
        }
    }

    #[test]
    fn scope_and_policy() {
        let mut app = AppPolicy::new("git");
        app.scope = Some(ScopeFilter {
            attribute: "department".into(),
            values: vec!["Engineering".into()],
        });
        let now = Utc::now();
        assert_eq!(
            app.entitlement(&view(Lifecycle::Active, "Engineering"), now),
            Entitlement::Active
        );
        assert_eq!(
            app.entitlement(&view(Lifecycle::Active, "Sales"), now),
            Entitlement::Revoked
        );
        assert_eq!(
            app.entitlement(&view(Lifecycle::Terminated, "Engineering"), now),
            Entitlement::Revoked
        );
        assert_eq!(
            app.entitlement(&view(Lifecycle::PreHire, "Engineering"), now),
            Entitlement::NoAccount
        );
        assert_eq!(
            app.entitlement(&view(Lifecycle::Cancelled, "Engineering"), now),
            Entitlement::Removed
        );
        assert_eq!(
            app.entitlement(&view(Lifecycle::OnLeave, "Engineering"), now),
            Entitlement::Suspended
        );
    }
}
