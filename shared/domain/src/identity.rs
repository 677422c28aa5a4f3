//! What an identity provider (Authentik) says about one of its users: a
//! level snapshot, not a change. The engine merges it into the HR person it
//! correlates with, so assignment rules can use the IdP's groups.

use serde::{Deserialize, Serialize};

/// How an IdP user is matched to an HR person.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Correlation {
    /// The IdP user's primary (or any) e-mail equals the person's work e-mail,
    /// compared case-insensitively.
    #[default]
    Email,
    /// The enterprise `employeeNumber` equals the person's employee number.
    EmployeeNumber,
    /// The IdP `userName` equals the local part of the person's work
    /// e-mail, compared case-insensitively.
    Username,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdpIdentity {
    /// The configured name of the IdP (e.g. "authentik").
    pub provider: String,
    /// The IdP's own stable id of the user (the inbound SCIM resource id).
    pub idp_id: String,
    pub user_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default)]
    pub emails: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub active: bool,
    /// Display names of the IdP groups the user is a member of, sorted.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The IdP deleted the user (or it fell out of the provider's scope).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl IdpIdentity {
    /// The keys this identity can be matched on, normalised for comparison.
    pub fn keys(&self, how: Correlation) -> Vec<String> {
        match how {
            Correlation::Email => self
                .emails
                .iter()
                .map(|e| e.trim().to_lowercase())
                .filter(|e| !e.is_empty())
                .collect(),
            Correlation::EmployeeNumber => self
                .employee_number
                .iter()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect(),
            Correlation::Username => {
                let u = self.user_name.trim().to_lowercase();
                if u.is_empty() {
                    vec![]
                } else {
                    vec![u]
                }
            }
        }
    }
}
