//! From what the engine decided an app should hold (the entitlement) to
//! the SCIM account to converge on. Pure, so the mapping rules are tested
//! without a server.

use tenure_config::{AppConfig, UserNameFrom};
use tenure_domain::{Attributes, Entitlement, PurgeAction, TerminationPolicy};
use tenure_scim::{Desired, UserSpec};
use uuid::Uuid;

pub fn user_name(app: &AppConfig, attrs: &Attributes) -> String {
    match app.user_name {
        UserNameFrom::Email => attrs.email.clone(),
        UserNameFrom::EmailLocalPart => attrs
            .email
            .split_once('@')
            .map_or(attrs.email.clone(), |(local, _)| local.to_string()),
        UserNameFrom::EmployeeNumber => attrs
            .employee_number
            .clone()
            .unwrap_or_else(|| attrs.email.clone()),
    }
}

pub fn user_spec(app: &AppConfig, person_id: Uuid, attrs: &Attributes, active: bool) -> UserSpec {
    UserSpec {
        user_name: user_name(app, attrs),
        // The person id, not the HR id: it is stable across sources and is
        // what a lookup after a crash finds the account by.
        external_id: person_id.to_string(),
        given_name: attrs.given_name.clone(),
        family_name: attrs.family_name.clone(),
        display_name: attrs.display_name.clone(),
        email: attrs.email.clone(),
        active,
        title: attrs.title.clone(),
        department: attrs.department.clone(),
        employee_number: attrs.employee_number.clone(),
    }
}

/// An inactive account with every personal attribute replaced; the
/// externalId keeps it linked so it is never re-created.
pub fn anonymised_spec(person_id: Uuid) -> UserSpec {
    let tag = person_id.simple().to_string();
    UserSpec {
        user_name: format!("former-{}", &tag[..12]),
        external_id: person_id.to_string(),
        given_name: "Former".into(),
        family_name: "Employee".into(),
        display_name: "Former employee".into(),
        email: format!("former-{}@invalid", &tag[..12]),
        active: false,
        title: None,
        department: None,
        employee_number: None,
    }
}

pub fn desired(
    app: &AppConfig,
    person_id: Uuid,
    attrs: &Attributes,
    entitlement: Entitlement,
) -> Desired {
    match entitlement {
        Entitlement::Active => Desired::Present(user_spec(app, person_id, attrs, true)),
        Entitlement::PreProvisioned => Desired::Present(user_spec(app, person_id, attrs, false)),
        Entitlement::NoAccount | Entitlement::Suspended => Desired::Deactivated,
        Entitlement::Revoked => match app.on_termination {
            TerminationPolicy::Deactivate => Desired::Deactivated,
            TerminationPolicy::Delete => Desired::Deleted,
        },
        Entitlement::Purged => match app.purge_action {
            PurgeAction::Delete => Desired::Deleted,
            PurgeAction::Anonymise => Desired::Present(anonymised_spec(person_id)),
        },
        Entitlement::Removed => Desired::Deleted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(toml_extra: &str) -> AppConfig {
        let text =
            format!("[[app]]\nname = \"wiki\"\nbase_url = \"http://127.0.0.1:1/v2\"\n{toml_extra}");
        tenure_config::Config::parse(&text, "test")
            .map(|c| c.apps[0].clone())
            .expect("config")
    }

    fn attrs() -> Attributes {
        Attributes {
            given_name: "Ana".into(),
            family_name: "Silva".into(),
            display_name: "Ana Silva".into(),
            email: "ana.silva@example.com".into(),
            department: Some("Engineering".into()),
            ..Attributes::default()
        }
    }

    #[test]
    fn active_and_pre_provisioned_accounts() {
        let id = Uuid::nil();
        let Desired::Present(spec) = desired(
            &app("user_name = \"email_local_part\""),
            id,
            &attrs(),
            Entitlement::Active,
        ) else {
            panic!("expected present")
        };
        assert_eq!(spec.user_name, "ana.silva");
        assert_eq!(spec.external_id, id.to_string());
        assert!(spec.active);
        let Desired::Present(early) = desired(&app(""), id, &attrs(), Entitlement::PreProvisioned)
        else {
            panic!("expected present")
        };
        assert!(
            !early.active,
            "pre-provisioned accounts stay inactive until the start"
        );
    }

    #[test]
    fn revocation_and_purge_follow_the_app_policy() {
        let id = Uuid::nil();
        assert_eq!(
            desired(&app(""), id, &attrs(), Entitlement::Revoked),
            Desired::Deactivated
        );
        assert_eq!(
            desired(
                &app("on_termination = \"delete\""),
                id,
                &attrs(),
                Entitlement::Revoked
            ),
            Desired::Deleted
        );
        assert_eq!(
            desired(&app(""), id, &attrs(), Entitlement::Suspended),
            Desired::Deactivated
        );
        assert_eq!(
            desired(&app(""), id, &attrs(), Entitlement::Removed),
            Desired::Deleted
        );
        assert_eq!(
            desired(&app(""), id, &attrs(), Entitlement::Purged),
            Desired::Deleted
        );
        let Desired::Present(anon) = desired(
            &app("purge_action = \"anonymise\""),
            id,
            &attrs(),
            Entitlement::Purged,
        ) else {
            panic!("expected an anonymised account")
        };
        assert!(!anon.active);
        assert!(!anon.email.contains("ana"));
        assert_eq!(anon.external_id, id.to_string());
    }
}
