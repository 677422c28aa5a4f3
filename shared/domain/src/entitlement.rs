//! What each app should hold for a person, as a function of the person's
//! view and the time: per-app scope, pre-provisioning, leave, termination
//! and purge policies.

use crate::person::{Lifecycle, View};
use crate::record::Attributes;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

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

/// An assignment rule: a CEL expression over `person` that says whether the
/// person belongs in the app, e.g.
/// `person.department == "Engineering" || "gitea-users" in person.groups`.
#[derive(Clone)]
pub struct Rule {
    source: String,
    program: Arc<cel::Program>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(pub String);

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rule({:?})", self.source)
    }
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Rule {}

impl Rule {
    /// Parses the rule and tries it on a sample person, so a rule that
    /// names an unknown attribute or does not yield a boolean fails when
    /// the configuration loads, not when the first person is judged.
    pub fn compile(source: &str) -> Result<Self, RuleError> {
        let program =
            cel::Program::compile(source).map_err(|e| RuleError(first_line(&e.to_string())))?;
        let rule = Rule {
            source: source.to_string(),
            program: Arc::new(program),
        };
        for variable in rule.program.references().variables() {
            if variable != "person" {
                return Err(RuleError(format!(
                    "unknown variable `{variable}`: rules can only use `person`"
                )));
            }
        }
        rule.evaluate(&Attributes::default(), &[])?;
        Ok(rule)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn evaluate(&self, attributes: &Attributes, groups: &[String]) -> Result<bool, RuleError> {
        let mut person: HashMap<String, cel::Value> = HashMap::new();
        for name in Attributes::NAMES {
            // Missing attributes read as "" so string functions never meet null.
            person.insert(name.to_string(), attributes.get(name).unwrap_or("").into());
        }
        person.insert("groups".into(), groups.to_vec().into());
        let mut context = cel::Context::default();
        context.add_variable_from_value("person", person);
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(RuleError(format!(
                "the rule must yield true or false, not {other:?}"
            ))),
            Err(e) => Err(RuleError(e.to_string())),
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or(s)
        .trim_start_matches("ERROR: ")
        .to_string()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppPolicy {
    pub name: String,
    pub scope: Option<ScopeFilter>,
    /// Assignment rule; with `scope`, both must hold.
    pub rule: Option<Rule>,
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
            rule: None,
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
    pub fn in_scope(&self, attributes: &Attributes, groups: &[String]) -> bool {
        let filter = match &self.scope {
            None => true,
            Some(f) => attributes
                .get(&f.attribute)
                .is_some_and(|v| f.values.iter().any(|x| x == v)),
        };
        // A rule that fails on a person's data does not grant access here;
        // decisions use `try_entitlement`, which keeps the previous answer.
        filter
            && self
                .rule
                .as_ref()
                .is_none_or(|r| r.evaluate(attributes, groups).unwrap_or(false))
    }

    /// Like [`AppPolicy::in_scope`], but a rule that fails on this person's
    /// data is an error instead of "not in scope".
    pub fn scope_check(
        &self,
        attributes: &Attributes,
        groups: &[String],
    ) -> Result<bool, RuleError> {
        let filter = match &self.scope {
            None => true,
            Some(f) => attributes
                .get(&f.attribute)
                .is_some_and(|v| f.values.iter().any(|x| x == v)),
        };
        match (&self.rule, filter) {
            (Some(rule), true) => rule.evaluate(attributes, groups),
            _ => Ok(filter),
        }
    }

    /// The entitlement, or the rule's error when the rule decides it and
    /// fails; the caller then keeps what was decided before, so a rule that
    /// breaks on odd data never revokes access by itself.
    pub fn try_entitlement(
        &self,
        view: &View,
        now: DateTime<Utc>,
    ) -> Result<Entitlement, RuleError> {
        let scope_matters = matches!(
            view.lifecycle,
            Lifecycle::PreHire | Lifecycle::Active | Lifecycle::OnLeave
        );
        let in_scope = if scope_matters {
            self.scope_check(&view.attributes, &view.groups)?
        } else {
            false
        };
        Ok(self.entitlement_with(view, now, in_scope))
    }

    pub fn entitlement(&self, view: &View, now: DateTime<Utc>) -> Entitlement {
        self.entitlement_with(view, now, self.in_scope(&view.attributes, &view.groups))
    }

    fn entitlement_with(&self, view: &View, now: DateTime<Utc>, in_scope: bool) -> Entitlement {
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
            revoked_immediately: false,
            groups: vec![],
        }
    }

    #[test]
    fn rules_select_persons_and_fail_early_when_wrong() {
        let rule = Rule::compile(
            r#"person.department == "Engineering" || person.title.startsWith("CTO")"#,
        )
        .expect("valid");
        let mut a = Attributes {
            department: Some("Engineering".into()),
            ..Attributes::default()
        };
        assert_eq!(rule.evaluate(&a, &[]), Ok(true));
        a.department = Some("Sales".into());
        assert_eq!(rule.evaluate(&a, &[]), Ok(false));
        a.title = Some("CTO Office".into());
        assert_eq!(rule.evaluate(&a, &[]), Ok(true));
        let groups = Rule::compile(r#""gitea-users" in person.groups"#).expect("valid");
        assert_eq!(groups.evaluate(&a, &["gitea-users".into()]), Ok(true));
        assert_eq!(groups.evaluate(&a, &[]), Ok(false));

        for (bad, why) in [
            ("person.department ==", "syntax"),
            ("person.shoe_size == 42", "no such key"),
            ("dept == \"x\"", "unknown variable"),
            ("person.department", "true or false"),
        ] {
            let e = Rule::compile(bad).expect_err(bad);
            assert!(
                e.0.to_lowercase().contains(why) || why == "syntax",
                "{bad}: {e}"
            );
        }
        let mut app = AppPolicy::new("git");
        app.rule = Some(rule);
        assert!(!app.in_scope(
            &Attributes {
                department: Some("Sales".into()),
                ..Attributes::default()
            },
            &[]
        ));
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
