//! Which persons an app gets, and what happens when they stop getting it.

use crate::person::{Lifecycle, Person};
use crate::record::Attributes;
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

/// A person is in scope when `attribute` equals one of `values` (exactly).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeFilter {
    pub attribute: String,
    pub values: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppPolicy {
    pub scope: Option<ScopeFilter>,
    pub on_termination: TerminationPolicy,
}

// One value exists per decision and is matched on at once; boxing the
// attributes would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entitlement {
    /// The person should have an active account with these attributes.
    Active(Attributes),
    /// The person should not have a usable account; an existing one is
    /// handled per the policy, and none is ever created.
    Revoked(TerminationPolicy),
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

    pub fn entitlement(&self, person: &Person) -> Entitlement {
        match person.lifecycle {
            Some(Lifecycle::Active) if self.in_scope(&person.attributes) => {
                Entitlement::Active(person.attributes.clone())
            }
            Some(Lifecycle::Active) | Some(Lifecycle::Terminated) => {
                Entitlement::Revoked(self.on_termination)
            }
            // Not started yet: an account left from an earlier employment is
            // switched off, never deleted, because the person is coming back.
            Some(Lifecycle::PreHire) | None => Entitlement::Revoked(TerminationPolicy::Deactivate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(l: Lifecycle, dept: &str) -> Person {
        Person {
            lifecycle: Some(l),
            attributes: Attributes {
                department: Some(dept.into()),
                ..Attributes::default()
            },
            ..Person::default()
        }
    }

    #[test]
    fn scope_and_policy() {
        let app = AppPolicy {
            scope: Some(ScopeFilter {
                attribute: "department".into(),
                values: vec!["Engineering".into()],
            }),
            on_termination: TerminationPolicy::Delete,
        };
        assert!(matches!(
            app.entitlement(&person(Lifecycle::Active, "Engineering")),
            Entitlement::Active(_)
        ));
        assert_eq!(
            app.entitlement(&person(Lifecycle::Active, "Sales")),
            Entitlement::Revoked(TerminationPolicy::Delete)
        );
        assert_eq!(
            app.entitlement(&person(Lifecycle::Terminated, "Engineering")),
            Entitlement::Revoked(TerminationPolicy::Delete)
        );
        assert_eq!(
            app.entitlement(&person(Lifecycle::PreHire, "Engineering")),
            Entitlement::Revoked(TerminationPolicy::Deactivate)
        );
    }
}
