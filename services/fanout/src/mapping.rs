//! From a person and an app's policy to the account the app should hold.
//! Pure, so the mapping rules are tested without a server.

use tenure_config::{AppConfig, UserNameFrom};
use tenure_domain::{Attributes, Entitlement, Person, TerminationPolicy};
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

pub fn user_spec(app: &AppConfig, person_id: Uuid, attrs: &Attributes) -> UserSpec {
    UserSpec {
        user_name: user_name(app, attrs),
        // The person id, not the HR id: it is stable across sources and is
        // what a lookup after a crash finds the account by.
        external_id: person_id.to_string(),
        given_name: attrs.given_name.clone(),
        family_name: attrs.family_name.clone(),
        display_name: attrs.display_name.clone(),
        email: attrs.email.clone(),
        active: true,
        title: attrs.title.clone(),
        department: attrs.department.clone(),
        employee_number: attrs.employee_number.clone(),
    }
}

pub fn desired(app: &AppConfig, person_id: Uuid, person: &Person) -> Desired {
    match app.policy().entitlement(person) {
        Entitlement::Active(attrs) => Desired::Present(user_spec(app, person_id, &attrs)),
        Entitlement::Revoked(TerminationPolicy::Deactivate) => Desired::Deactivated,
        Entitlement::Revoked(TerminationPolicy::Delete) => Desired::Deleted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenure_domain::Lifecycle;

    fn app(toml_extra: &str) -> AppConfig {
        let text =
            format!("[[app]]\nname = \"wiki\"\nbase_url = \"http://127.0.0.1:1/v2\"\n{toml_extra}");
        tenure_config::Config::parse(&text, "test")
            .map(|c| c.apps[0].clone())
            .expect("config")
    }

    fn person(l: Lifecycle) -> Person {
        Person {
            lifecycle: Some(l),
            attributes: Attributes {
                given_name: "Ana".into(),
                family_name: "Silva".into(),
                display_name: "Ana Silva".into(),
                email: "ana.silva@example.com".into(),
                department: Some("Engineering".into()),
                ..Attributes::default()
            },
            ..Person::default()
        }
    }

    #[test]
    fn active_person_maps_to_a_present_account() {
        let id = Uuid::nil();
        let Desired::Present(spec) = desired(
            &app("user_name = \"email_local_part\""),
            id,
            &person(Lifecycle::Active),
        ) else {
            panic!("expected present")
        };
        assert_eq!(spec.user_name, "ana.silva");
        assert_eq!(spec.external_id, id.to_string());
        assert!(spec.active);
        assert_eq!(spec.department.as_deref(), Some("Engineering"));
    }

    #[test]
    fn termination_follows_the_app_policy() {
        assert_eq!(
            desired(&app(""), Uuid::nil(), &person(Lifecycle::Terminated)),
            Desired::Deactivated
        );
        assert_eq!(
            desired(
                &app("on_termination = \"delete\""),
                Uuid::nil(),
                &person(Lifecycle::Terminated)
            ),
            Desired::Deleted
        );
        let scoped = app("scope = { attribute = \"department\", values = [\"Sales\"] }");
        assert_eq!(
            desired(&scoped, Uuid::nil(), &person(Lifecycle::Active)),
            Desired::Deactivated
        );
    }
}
