//! From what the engine decided an app should hold (the entitlement) to
//! the SCIM account to converge on. Pure, so the mapping rules are tested
//! without a server.

use std::collections::BTreeMap;
use tenure_config::{parse_template, AppConfig, Segment, UserNameFrom};
use tenure_domain::{Attributes, Entitlement, PurgeAction, TerminationPolicy};
use tenure_scim::{Desired, UserSpec};
use uuid::Uuid;

/// Fills a mapping template: absent attributes render as nothing.
/// Templates are checked at config load; one that is not (a caller's own)
/// renders as written.
pub fn render(template: &str, person_id: Uuid, attrs: &Attributes) -> String {
    render_with(template, person_id, attrs, &[])
}

/// Like [`render`], with extra placeholder values (e.g. `idp_group`).
pub fn render_with(
    template: &str,
    person_id: Uuid,
    attrs: &Attributes,
    extra: &[(&str, &str)],
) -> String {
    let Ok(segments) = parse_template(template) else {
        return template.to_string();
    };
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Text(t) => out.push_str(&t),
            Segment::Placeholder(name) => match name.as_str() {
                "person_id" => out.push_str(&person_id.to_string()),
                "email_local_part" => out.push_str(email_local_part(&attrs.email)),
                other => match extra.iter().find(|(k, _)| *k == other) {
                    Some((_, v)) => out.push_str(v),
                    None => out.push_str(attrs.get(other).unwrap_or_default()),
                },
            },
        }
    }
    out
}

fn email_local_part(email: &str) -> &str {
    email.split_once('@').map_or(email, |(local, _)| local)
}

/// A template's value, `None` for an empty result ("unset"); without a
/// template, `default`.
fn mapped(
    template: &Option<String>,
    person_id: Uuid,
    attrs: &Attributes,
    default: Option<&str>,
) -> Option<String> {
    match template {
        Some(t) => Some(render(t, person_id, attrs)).filter(|v| !v.trim().is_empty()),
        None => default.map(str::to_string),
    }
}

/// The account's userName: `mapping.user_name` when set (and not empty once
/// rendered), else what the `user_name` key picks.
pub fn user_name(app: &AppConfig, person_id: Uuid, attrs: &Attributes) -> String {
    if let Some(name) = mapped(&app.mapping.user_name, person_id, attrs, None) {
        return name;
    }
    match app.user_name {
        UserNameFrom::Email => attrs.email.clone(),
        UserNameFrom::EmailLocalPart => email_local_part(&attrs.email).to_string(),
        UserNameFrom::EmployeeNumber => attrs
            .employee_number
            .clone()
            .unwrap_or_else(|| attrs.email.clone()),
    }
}

/// `manager` is the manager's account id in this app, if the manager has
/// one; it is sent only when the app's `mapping.manager` is on.
pub fn user_spec(
    app: &AppConfig,
    person_id: Uuid,
    attrs: &Attributes,
    manager: Option<&str>,
    active: bool,
) -> UserSpec {
    let m = &app.mapping;
    let or_empty = |v: Option<String>| v.unwrap_or_default();
    UserSpec {
        user_name: user_name(app, person_id, attrs),
        // The person id, not the HR id: it is stable across sources and is
        // what a lookup after a crash finds the account by.
        external_id: person_id.to_string(),
        given_name: or_empty(mapped(
            &m.given_name,
            person_id,
            attrs,
            Some(&attrs.given_name),
        )),
        family_name: or_empty(mapped(
            &m.family_name,
            person_id,
            attrs,
            Some(&attrs.family_name),
        )),
        // Set (even to "") only when mapped: the app's shape decides
        // whether an unmapped one is derived from the names.
        name_formatted: m
            .name_formatted
            .as_ref()
            .map(|t| render(t, person_id, attrs).trim().to_string()),
        display_name: or_empty(mapped(
            &m.display_name,
            person_id,
            attrs,
            Some(&attrs.display_name),
        )),
        email: or_empty(mapped(&m.email, person_id, attrs, Some(&attrs.email))),
        active,
        title: mapped(&m.title, person_id, attrs, attrs.title.as_deref()),
        department: mapped(&m.department, person_id, attrs, attrs.department.as_deref()),
        employee_number: mapped(
            &m.employee_number,
            person_id,
            attrs,
            attrs.employee_number.as_deref(),
        ),
        cost_center: mapped(
            &m.cost_center,
            person_id,
            attrs,
            attrs.cost_center.as_deref(),
        ),
        organization: mapped(
            &m.organization,
            person_id,
            attrs,
            attrs.organization.as_deref(),
        ),
        division: mapped(&m.division, person_id, attrs, attrs.division.as_deref()),
        manager: manager
            .filter(|id| m.manager && !id.is_empty())
            .map(str::to_string),
        extra: free_attributes(app, |t| render(t, person_id, attrs)),
    }
}

/// The app's free mappings (`[app.mapping.attributes]`) by canonical path:
/// the rendered value, or `Null` ("remove") when it renders empty.
fn free_attributes(
    app: &AppConfig,
    render: impl Fn(&str) -> String,
) -> BTreeMap<String, serde_json::Value> {
    app.mapping
        .attributes
        .iter()
        .map(|(path, template)| {
            let value = serde_json::to_value(template)
                .ok()
                .and_then(|t| render_value(&t, &render))
                .unwrap_or(serde_json::Value::Null);
            (tenure_scim::shape::canonical_path(path), value)
        })
        .collect()
}

/// A free mapping's value with every string rendered as a template; a
/// string that renders empty, and an array or table left empty by that,
/// is left out (`None`).
fn render_value(
    v: &serde_json::Value,
    render: &impl Fn(&str) -> String,
) -> Option<serde_json::Value> {
    use serde_json::Value;
    match v {
        Value::String(t) => {
            let s = render(t);
            (!s.trim().is_empty()).then_some(Value::String(s))
        }
        Value::Array(items) => {
            let items: Vec<Value> = items
                .iter()
                .filter_map(|i| render_value(i, render))
                .collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        Value::Object(fields) => {
            let fields: serde_json::Map<String, Value> = fields
                .iter()
                .filter_map(|(k, i)| Some((k.clone(), render_value(i, render)?)))
                .collect();
            (!fields.is_empty()).then_some(Value::Object(fields))
        }
        Value::Null => None,
        other => Some(other.clone()),
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
        ..UserSpec::default()
    }
}

/// `manager`: the manager's account id in this app (see [`user_spec`]).
pub fn desired(
    app: &AppConfig,
    person_id: Uuid,
    attrs: &Attributes,
    manager: Option<&str>,
    entitlement: Entitlement,
) -> Desired {
    match entitlement {
        Entitlement::Active => Desired::Present(user_spec(app, person_id, attrs, manager, true)),
        Entitlement::PreProvisioned => {
            Desired::Present(user_spec(app, person_id, attrs, manager, false))
        }
        Entitlement::NoAccount | Entitlement::Suspended => Desired::Deactivated,
        Entitlement::Revoked => match app.on_termination {
            TerminationPolicy::Deactivate => Desired::Deactivated,
            TerminationPolicy::Delete => Desired::Deleted,
        },
        Entitlement::Purged => match app.purge_action {
            PurgeAction::Delete => Desired::Deleted,
            PurgeAction::Anonymise => {
                // Free mappings are personal too: every one is removed.
                let mut anon = anonymised_spec(person_id);
                anon.extra = free_attributes(app, |_| String::new());
                Desired::Present(anon)
            }
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
            None,
            Entitlement::Active,
        ) else {
            panic!("expected present")
        };
        assert_eq!(spec.user_name, "ana.silva");
        assert_eq!(spec.external_id, id.to_string());
        assert!(spec.active);
        let Desired::Present(early) =
            desired(&app(""), id, &attrs(), None, Entitlement::PreProvisioned)
        else {
            panic!("expected present")
        };
        assert!(
            !early.active,
            "pre-provisioned accounts stay inactive until the start"
        );
    }

    fn spec_of(app: &AppConfig, attrs: &Attributes, manager: Option<&str>) -> UserSpec {
        match desired(app, Uuid::nil(), attrs, manager, Entitlement::Active) {
            Desired::Present(spec) => spec,
            other => panic!("expected present, got {other:?}"),
        }
    }

    #[test]
    fn templates_render_attributes_and_extras() {
        let id = Uuid::nil();
        let a = Attributes {
            cost_center: Some("CC-7".into()),
            ..attrs()
        };
        assert_eq!(render("{given_name}.{family_name}", id, &a), "Ana.Silva");
        assert_eq!(
            render("{email_local_part}@corp.example", id, &a),
            "ana.silva@corp.example"
        );
        assert_eq!(render("{{{department}}}", id, &a), "{Engineering}");
        assert_eq!(render("x-{division}-y", id, &a), "x--y", "absent is empty");
        assert_eq!(render("{person_id}", id, &a), id.to_string());
        assert_eq!(render("{ cost_center }/{title}", id, &a), "CC-7/");
    }

    #[test]
    fn mapping_templates_shape_the_spec() {
        let a = Attributes {
            cost_center: Some("CC-7".into()),
            organization: Some("Acme".into()),
            division: Some("Labs".into()),
            manager_id: Some("E-0".into()),
            ..attrs()
        };
        // Without templates the attributes pass through, the manager too.
        let plain = spec_of(&app(""), &a, Some("remote-boss"));
        assert_eq!(plain.user_name, "ana.silva@example.com");
        assert_eq!(plain.cost_center.as_deref(), Some("CC-7"));
        assert_eq!(plain.organization.as_deref(), Some("Acme"));
        assert_eq!(plain.division.as_deref(), Some("Labs"));
        assert_eq!(plain.manager.as_deref(), Some("remote-boss"));
        assert_eq!(spec_of(&app(""), &a, None).manager, None);

        let mapped = app(concat!(
            "user_name = \"employee_number\"\n",
            "[app.mapping]\n",
            "user_name = \"{given_name}.{family_name}\"\n",
            "display_name = \"{family_name}, {given_name}\"\n",
            "email = \"{email_local_part}@corp.example\"\n",
            "cost_center = \"{department}/{cost_center}\"\n",
            "organization = \"\"\n",
            "division = \"{title}\"\n",
            "manager = false\n",
        ));
        let spec = spec_of(&mapped, &a, Some("remote-boss"));
        assert_eq!(spec.user_name, "Ana.Silva", "mapping.user_name wins");
        assert_eq!(user_name(&mapped, Uuid::nil(), &a), "Ana.Silva");
        assert_eq!(spec.display_name, "Silva, Ana");
        assert_eq!(spec.email, "ana.silva@corp.example");
        assert_eq!(spec.cost_center.as_deref(), Some("Engineering/CC-7"));
        assert_eq!(spec.organization, None, "an empty template unsets");
        assert_eq!(spec.division, None, "renders empty without a title");
        assert_eq!(spec.manager, None, "mapping.manager = false");

        // A user name template that renders empty falls back to the key.
        let fallback =
            app("user_name = \"email_local_part\"\n[app.mapping]\nuser_name = \"{title}\"\n");
        assert_eq!(spec_of(&fallback, &a, None).user_name, "ana.silva");
    }

    #[test]
    fn every_modelled_attribute_and_free_ones_can_be_mapped() {
        let a = Attributes {
            title: Some("Engineer".into()),
            employee_number: Some("42".into()),
            location: Some("Lisbon".into()),
            ..attrs()
        };
        let mapped = app(concat!(
            "[app.mapping]\n",
            "given_name = \"{given_name}-x\"\n",
            "family_name = \"{family_name}\"\n",
            "name_formatted = \"{family_name}, {given_name}\"\n",
            "title = \"{title} ({department})\"\n",
            "department = \"\"\n",
            "employee_number = \"E{employee_number}\"\n",
            "[app.mapping.attributes]\n",
            "nickName = \"{given_name}\"\n",
            "preferredLanguage = \"{division}\"\n",
            "\"urn:acme:ext:1.0:User:badge\" = \"B-{employee_number}\"\n",
            "addresses = [{ type = \"work\", locality = \"{location}\", primary = true }]\n",
            "phoneNumbers = [{ type = \"work\", value = \"{division}\" }]\n",
        ));
        let spec = spec_of(&mapped, &a, None);
        assert_eq!(spec.given_name, "Ana-x");
        assert_eq!(spec.name_formatted.as_deref(), Some("Silva, Ana"));
        assert_eq!(spec.title.as_deref(), Some("Engineer (Engineering)"));
        assert_eq!(spec.department, None, "an empty template unsets");
        assert_eq!(spec.employee_number.as_deref(), Some("E42"));
        assert_eq!(spec.extra["nickName"], serde_json::json!("Ana"));
        assert_eq!(
            spec.extra["preferredLanguage"],
            serde_json::Value::Null,
            "renders empty: removed from the app"
        );
        assert_eq!(
            spec.extra["urn:acme:ext:1.0:User:badge"],
            serde_json::json!("B-42")
        );
        assert_eq!(
            spec.extra["addresses"],
            serde_json::json!([{"type": "work", "locality": "Lisbon", "primary": true}]),
            "complex values render their strings"
        );
        assert_eq!(
            spec.extra["phoneNumbers"],
            serde_json::json!([{"type": "work"}]),
            "a part that renders empty is left out"
        );
        // Without mappings nothing free is sent and name.formatted is left
        // to the shape.
        let plain = spec_of(&app(""), &a, None);
        assert!(plain.extra.is_empty() && plain.name_formatted.is_none());
        // Anonymising removes the free mappings too.
        let anon = app(concat!(
            "purge_action = \"anonymise\"\n",
            "[app.mapping.attributes]\nnickName = \"{given_name}\"\n"
        ));
        let Desired::Present(gone) = desired(&anon, Uuid::nil(), &a, None, Entitlement::Purged)
        else {
            panic!("expected an anonymised account")
        };
        assert_eq!(gone.extra["nickName"], serde_json::Value::Null);
    }

    #[test]
    fn anonymised_accounts_carry_no_mapped_attributes() {
        let mapped = app("purge_action = \"anonymise\"\n[app.mapping]\ncost_center = \"CC\"\ndivision = \"{division}\"\n");
        let a = Attributes {
            division: Some("Labs".into()),
            ..attrs()
        };
        let Desired::Present(anon) = desired(
            &mapped,
            Uuid::nil(),
            &a,
            Some("remote-boss"),
            Entitlement::Purged,
        ) else {
            panic!("expected an anonymised account")
        };
        assert_eq!(
            (
                anon.cost_center,
                anon.organization,
                anon.division,
                anon.manager
            ),
            (None, None, None, None)
        );
    }

    #[test]
    fn revocation_and_purge_follow_the_app_policy() {
        let id = Uuid::nil();
        assert_eq!(
            desired(&app(""), id, &attrs(), None, Entitlement::Revoked),
            Desired::Deactivated
        );
        assert_eq!(
            desired(
                &app("on_termination = \"delete\""),
                id,
                &attrs(),
                None,
                Entitlement::Revoked
            ),
            Desired::Deleted
        );
        assert_eq!(
            desired(&app(""), id, &attrs(), None, Entitlement::Suspended),
            Desired::Deactivated
        );
        assert_eq!(
            desired(&app(""), id, &attrs(), None, Entitlement::Removed),
            Desired::Deleted
        );
        assert_eq!(
            desired(&app(""), id, &attrs(), None, Entitlement::Purged),
            Desired::Deleted
        );
        let Desired::Present(anon) = desired(
            &app("purge_action = \"anonymise\""),
            id,
            &attrs(),
            None,
            Entitlement::Purged,
        ) else {
            panic!("expected an anonymised account")
        };
        assert!(!anon.active);
        assert!(!anon.email.contains("ana"));
        assert_eq!(anon.external_id, id.to_string());
    }
}
