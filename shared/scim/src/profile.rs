//! App profiles: what Tenure knows about how one kind of app speaks SCIM,
//! beyond what its `/ServiceProviderConfig` says (or because it has none).
//!
//! A profile is data. The built-in ones ([`builtin`]) hold only facts checked
//! against the apps' documentation; every field the facts do not settle keeps
//! the [`Profile::generic`] (RFC 7644) value, and the doc comment of each
//! profile says which fields are checked. Operators can write their own in
//! TOML (see [`Profile`]'s `Deserialize`).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::diff::Capabilities;
use crate::shape::{Shape, ShapeOverride};

/// How an app treats `active = false`. Informational: the diff sends the same
/// deactivation whatever this says; docs and reports use it to tell the
/// operator what a leaver's account looks like afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deprovision {
    /// The account stays and cannot be used (RFC 7643 `active`).
    Deactivate,
    /// The app deletes the account.
    Delete,
    /// The app blocks the account, its own state distinct from deactivated.
    Block,
}

/// How Tenure talks SCIM to one kind of app.
///
/// # User-defined profiles
///
/// `Deserialize` reads a profile in which every field is optional; missing
/// fields come from the profile named by `extends` (a built-in, default
/// `"generic"`), `assumed` field by field. Unknown keys are errors, so a typo
/// does not silently fall back to a default. In TOML:
///
/// ```toml
/// name = "legacy-hr"
/// extends = "generic"      # optional
/// discovery = false
/// put_allowed = false
/// external_id = false
/// bulk = false             # never POST /Bulk, whatever discovery says
/// unique_user_name = true  # the app answers 409 to a taken userName
/// group_patch = false      # groups changed by PUT with the full member list
/// protected_groups = ["admin"]  # never updated or deleted
/// content_type = "application/json"
/// deprovision = "block"    # deactivate | delete | block
/// auth_hint = "Bearer token from the HR admin page"
/// [assumed]
/// etag = true              # patch and filter keep the base's values
/// ```
///
/// `name` defaults to `"custom"`. `Serialize` writes every field, which reads
/// back to the same profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ProfileDef")]
pub struct Profile {
    pub name: String,
    /// Whether to read `/ServiceProviderConfig`. `false` for apps without
    /// one: `assumed` is used without asking.
    pub discovery: bool,
    /// The capabilities used when discovery is off, or on but unanswered
    /// (404/501).
    pub assumed: Capabilities,
    /// `false`: the app does not store `externalId`, so it is never sent,
    /// compared or filtered on; accounts are matched by `userName` or the
    /// stored remote id only.
    pub external_id: bool,
    /// `false`: the app rejects or mishandles a full PUT, so updates and
    /// deactivations go by PATCH even if discovery says PATCH is unsupported.
    pub put_allowed: bool,
    /// Whether the app has a SCIM `/Groups` endpoint Tenure may use.
    pub groups: bool,
    /// Whether Tenure may create groups there; when not, groups must exist
    /// in the app already and missing ones are reported, not created.
    pub create_groups: bool,
    /// Whether groups are changed with PATCH. `false` (Nextcloud): every
    /// rename and membership change is a PUT of the whole group with its
    /// full member list, whatever discovery says about PATCH.
    pub group_patch: bool,
    /// Groups Tenure never updates or deletes, by `displayName` or id
    /// (exact): the app's own administrators group and the like. A
    /// `[[app.group]]` naming one is reported, not synced.
    pub protected_groups: Vec<String>,
    /// The `Content-Type` of request bodies: `application/scim+json` (RFC
    /// 7644 §3.1) or `application/json` for servers that accept only that.
    pub content_type: Cow<'static, str>,
    /// Whether Tenure may use `POST /Bulk` (RFC 7644 §3.7) when discovery
    /// says the server supports it. `false` vetoes bulk whatever the server
    /// announces; `true` alone never turns it on (a server without
    /// discovery, or announcing no bulk, gets single calls).
    pub bulk: bool,
    /// Whether the app refuses a create whose `userName` is taken with 409
    /// (RFC 7644 §3.3 requires it). When set, and the app stores
    /// `externalId`, a person Tenure has never linked is created right after
    /// the `externalId` look-up found nothing, without a `userName` look-up;
    /// the 409 of a taken name leads to the `userName` look-up and the link
    /// rules as before. Off by default: an app that accepted a duplicate
    /// `userName` would otherwise get a second account for someone who
    /// already has one there.
    pub unique_user_name: bool,
    pub deprovision: Deprovision,
    /// How to authenticate, for docs and error messages. Never a secret.
    pub auth_hint: Cow<'static, str>,
    /// Where the SCIM root lives relative to the app's URL, for docs and
    /// setup hints; empty when not known. `<ns>`-style parts are
    /// placeholders.
    pub path_hint: Cow<'static, str>,
    /// How the User resource is shaped for the app (see [`crate::shape`]);
    /// an app's `[app.shape]` overrides it key by key.
    #[serde(default)]
    pub shape: Shape,
}

/// The capabilities a profile assumes when nothing else is known: PATCH and
/// filtering, as the fanout assumed before profiles existed, but no ETags, so
/// no `If-Match` goes to a server whose ETag support nobody checked (Tenure
/// sent none before profiles either).
pub const FALLBACK_CAPS: Capabilities = Capabilities {
    patch: true,
    filter: true,
    etag: false,
};

/// RFC 7644 §3.1's media type for SCIM bodies.
pub const SCIM_JSON: &str = "application/scim+json";

/// The names [`builtin`] knows.
pub const BUILTIN_NAMES: [&str; 7] = [
    "generic",
    "gitlab",
    "zulip",
    "nextcloud",
    "keycloak",
    "openwebui",
    "grafana",
];

const NOT_CHECKED_AUTH: &str = "not among the checked facts; see the app's SCIM documentation";

impl Profile {
    /// RFC 7644 as written: discovery on, externalId stored, PUT allowed,
    /// `/Groups` present, `active = false` deactivates.
    pub fn generic() -> Profile {
        Profile {
            name: "generic".into(),
            discovery: true,
            assumed: FALLBACK_CAPS,
            external_id: true,
            put_allowed: true,
            groups: true,
            create_groups: true,
            group_patch: true,
            protected_groups: Vec::new(),
            content_type: Cow::Borrowed(SCIM_JSON),
            bulk: true,
            unique_user_name: false,
            deprovision: Deprovision::Deactivate,
            auth_hint: Cow::Borrowed("Bearer token or HTTP Basic, as the app documents"),
            path_hint: Cow::Borrowed(""),
            shape: Shape::default(),
        }
    }

    /// The capabilities to plan with: what discovery found when the profile
    /// allows discovery and it answered, else `assumed`; then the profile's
    /// hard restrictions, which beat whatever the server announces. With PUT
    /// disallowed PATCH is the only way to change an account, so `patch` is
    /// forced on.
    pub fn apply(&self, discovered: Option<Capabilities>) -> Capabilities {
        let mut caps = match discovered {
            Some(found) if self.discovery => found,
            _ => self.assumed,
        };
        if !self.put_allowed {
            caps.patch = true;
        }
        caps
    }

    /// Whether the group with this `displayName` or id is one Tenure must
    /// never update or delete.
    pub fn is_protected_group(&self, display_name: &str, id: &str) -> bool {
        self.protected_groups
            .iter()
            .any(|p| p == display_name || (!id.is_empty() && p == id))
    }

    /// The attributes to look an account up by with a filter, in order:
    /// `externalId` then `userName`, or only `userName` when the app does
    /// not store `externalId`.
    pub fn lookup_attributes(&self) -> &'static [&'static str] {
        if self.external_id {
            &["externalId", "userName"]
        } else {
            &["userName"]
        }
    }
}

impl Default for Profile {
    fn default() -> Self {
        Profile::generic()
    }
}

/// A built-in profile by name (case-insensitive), `None` for an unknown name.
///
/// Only the facts quoted per profile below are checked; every other field
/// keeps the generic value, except `groups`, which is `false` wherever the
/// facts do not mention groups (an unverified endpoint is not relied on).
pub fn builtin(name: &str) -> Option<Profile> {
    let g = Profile::generic();
    let p = match name.to_ascii_lowercase().as_str() {
        "generic" => g,
        // GitLab self-managed: "/api/scim/v2/application/Users; deprovision
        // blocks the user; no ServiceProviderConfig; `active` changes only
        // via PATCH, full PUT rejected". Hence no discovery, PUT off (so
        // deactivation is always PATCH active=false), deprovision = Block.
        // No ETag support is known, so none is assumed.
        // Its documented endpoints are /Users only: no /Bulk.
        "gitlab" => Profile {
            name: "gitlab".into(),
            discovery: false,
            put_allowed: false,
            groups: false,
            bulk: false,
            deprovision: Deprovision::Block,
            auth_hint: Cow::Borrowed(NOT_CHECKED_AUTH),
            path_hint: Cow::Borrowed("/api/scim/v2/application"),
            ..g
        },
        // Zulip (beta): "/scim/v2/; no groups; bearer token per realm".
        // Its SCIM server is django-scim2, whose /Bulk answers "not
        // implemented" and whose ServiceProviderConfig says bulk is
        // unsupported; vetoed in case a deployment overrides the document.
        "zulip" => Profile {
            name: "zulip".into(),
            groups: false,
            bulk: false,
            auth_hint: Cow::Borrowed("Bearer token, one per realm"),
            path_hint: Cow::Borrowed("/scim/v2"),
            ..g
        },
        // Nextcloud `scimserviceprovider` app:
        // "/index.php/apps/scimserviceprovider/Users|Groups; Basic auth with
        // an app password or a bearer JWT; admin accounts only; no
        // externalId". Hence external_id = false and groups on.
        // Its documented endpoints are Users and Groups: no /Bulk.
        // Groups (read from the app's GroupService.php and routes.php):
        // "POST /Groups → 201, 409 when the name exists", so Tenure creates
        // them; its routes are resource routes (index, show, create,
        // update = PUT, destroy) with no PATCH, so group changes are a PUT
        // with the full member list; "the admin group cannot be deleted
        // (403)", and Tenure must not strip it either; "older releases
        // accepted only Content-Type: application/json". A group's id is
        // its URL-encoded displayName, which the client percent-encodes
        // once more as a path segment like any other id.
        "nextcloud" => Profile {
            name: "nextcloud".into(),
            external_id: false,
            groups: true,
            create_groups: true,
            group_patch: false,
            protected_groups: vec!["admin".to_string()],
            content_type: Cow::Borrowed("application/json"),
            bulk: false,
            auth_hint: Cow::Borrowed(
                "HTTP Basic with an app password, or a bearer JWT; the account must be an admin",
            ),
            path_hint: Cow::Borrowed("/index.php/apps/scimserviceprovider"),
            ..g
        },
        // Keycloak 26.x (preview, started with `--features=scim-api`):
        // "realm level; active:false blocks login", which is deactivation.
        "keycloak" => Profile {
            name: "keycloak".into(),
            groups: false,
            deprovision: Deprovision::Deactivate,
            auth_hint: Cow::Borrowed(
                "not among the checked facts; the endpoint is per realm and needs --features=scim-api",
            ),
            ..g
        },
        // Open WebUI: "/api/v1/scim/v2/, SCIM_ENABLED, SCIM_TOKEN".
        "openwebui" => Profile {
            name: "openwebui".into(),
            groups: false,
            auth_hint: Cow::Borrowed(
                "Bearer token equal to the server's SCIM_TOKEN; the server needs SCIM_ENABLED",
            ),
            path_hint: Cow::Borrowed("/api/v1/scim/v2"),
            ..g
        },
        // Grafana Enterprise (preview):
        // "/apis/scim.grafana.app/v0alpha1/namespaces/<ns>/Users; users and
        // teams" (teams are its Groups).
        "grafana" => Profile {
            name: "grafana".into(),
            groups: true,
            auth_hint: Cow::Borrowed(NOT_CHECKED_AUTH),
            path_hint: Cow::Borrowed("/apis/scim.grafana.app/v0alpha1/namespaces/<ns>"),
            ..g
        },
        _ => return None,
    };
    Some(p)
}

/// The serialized form: every field optional, filled from `extends`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileDef {
    extends: Option<String>,
    name: Option<String>,
    discovery: Option<bool>,
    assumed: Option<CapsDef>,
    external_id: Option<bool>,
    put_allowed: Option<bool>,
    groups: Option<bool>,
    create_groups: Option<bool>,
    group_patch: Option<bool>,
    protected_groups: Option<Vec<String>>,
    content_type: Option<String>,
    bulk: Option<bool>,
    unique_user_name: Option<bool>,
    deprovision: Option<Deprovision>,
    auth_hint: Option<String>,
    path_hint: Option<String>,
    shape: Option<ShapeOverride>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CapsDef {
    patch: Option<bool>,
    filter: Option<bool>,
    etag: Option<bool>,
}

impl TryFrom<ProfileDef> for Profile {
    type Error = String;

    fn try_from(d: ProfileDef) -> Result<Self, Self::Error> {
        let base_name = d.extends.as_deref().unwrap_or("generic");
        let base = builtin(base_name).ok_or_else(|| {
            format!(
                "profile extends unknown profile {base_name:?}; known: {}",
                BUILTIN_NAMES.join(", ")
            )
        })?;
        let assumed = match d.assumed {
            None => base.assumed,
            Some(c) => Capabilities {
                patch: c.patch.unwrap_or(base.assumed.patch),
                filter: c.filter.unwrap_or(base.assumed.filter),
                etag: c.etag.unwrap_or(base.assumed.etag),
            },
        };
        if let Some(ct) = &d.content_type {
            let bare = ct.split(';').next().unwrap_or_default().trim();
            if !bare.eq_ignore_ascii_case(SCIM_JSON)
                && !bare.eq_ignore_ascii_case("application/json")
            {
                return Err(format!(
                    "content_type must be {SCIM_JSON} or application/json, not {ct:?}"
                ));
            }
        }
        let name = d.name.unwrap_or_else(|| "custom".into());
        if name.trim().is_empty() {
            return Err("profile name must not be empty".into());
        }
        Ok(Profile {
            name,
            discovery: d.discovery.unwrap_or(base.discovery),
            assumed,
            external_id: d.external_id.unwrap_or(base.external_id),
            put_allowed: d.put_allowed.unwrap_or(base.put_allowed),
            groups: d.groups.unwrap_or(base.groups),
            create_groups: d.create_groups.unwrap_or(base.create_groups),
            group_patch: d.group_patch.unwrap_or(base.group_patch),
            protected_groups: d.protected_groups.unwrap_or(base.protected_groups),
            content_type: d.content_type.map(Cow::Owned).unwrap_or(base.content_type),
            bulk: d.bulk.unwrap_or(base.bulk),
            unique_user_name: d.unique_user_name.unwrap_or(base.unique_user_name),
            deprovision: d.deprovision.unwrap_or(base.deprovision),
            auth_hint: d.auth_hint.map(Cow::Owned).unwrap_or(base.auth_hint),
            path_hint: d.path_hint.map(Cow::Owned).unwrap_or(base.path_hint),
            shape: match &d.shape {
                Some(o) => base.shape.overridden(o)?,
                None => base.shape,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_name_resolves_to_itself() {
        for name in BUILTIN_NAMES {
            let p = builtin(name).expect(name);
            assert_eq!(p.name, name);
            assert!(!p.auth_hint.is_empty(), "{name}");
        }
        assert_eq!(builtin("GitLab").map(|p| p.name), Some("gitlab".into()));
        assert_eq!(builtin("nope"), None);
        assert_eq!(Profile::default(), builtin("generic").expect("generic"));
    }

    #[test]
    fn builtins_encode_the_checked_facts() {
        let gitlab = builtin("gitlab").expect("gitlab");
        assert!(!gitlab.discovery && !gitlab.put_allowed);
        assert_eq!(gitlab.deprovision, Deprovision::Block);
        assert_eq!(gitlab.path_hint, "/api/scim/v2/application");
        let nextcloud = builtin("nextcloud").expect("nextcloud");
        assert!(!nextcloud.external_id && nextcloud.groups);
        assert_eq!(nextcloud.lookup_attributes(), ["userName"]);
        // Groups are created, changed by PUT only, and admin is left alone.
        assert!(nextcloud.create_groups && !nextcloud.group_patch && nextcloud.put_allowed);
        assert_eq!(nextcloud.protected_groups, ["admin"]);
        assert!(
            nextcloud.is_protected_group("admin", "x")
                && !nextcloud.is_protected_group("Admins", "Admins")
        );
        assert_eq!(nextcloud.content_type, "application/json");
        assert_eq!(Profile::generic().content_type, SCIM_JSON);
        assert!(Profile::generic().group_patch && Profile::generic().protected_groups.is_empty());
        assert!(!builtin("zulip").expect("zulip").groups);
        for no_bulk in ["gitlab", "zulip", "nextcloud"] {
            assert!(!builtin(no_bulk).expect(no_bulk).bulk, "{no_bulk}");
        }
        assert!(Profile::generic().bulk && !Profile::generic().unique_user_name);
        assert!(builtin("grafana").expect("grafana").groups);
        assert!(builtin("openwebui")
            .expect("openwebui")
            .auth_hint
            .contains("SCIM_TOKEN"));
        assert_eq!(
            Profile::generic().lookup_attributes(),
            ["externalId", "userName"]
        );
    }

    #[test]
    fn apply_prefers_discovery_then_forces_restrictions() {
        let none = Capabilities {
            patch: false,
            filter: false,
            etag: false,
        };
        let all = Capabilities::default();
        let generic = Profile::generic();
        assert_eq!(generic.apply(Some(none)), none);
        assert_eq!(generic.apply(None), FALLBACK_CAPS);

        // GitLab never asks, so a discovered value cannot reach the plan.
        let gitlab = builtin("gitlab").expect("gitlab");
        assert_eq!(gitlab.apply(Some(none)), gitlab.assumed);
        assert_eq!(gitlab.apply(Some(all)), gitlab.assumed);

        // PUT disallowed forces PATCH even over discovery.
        let no_put = Profile {
            put_allowed: false,
            ..Profile::generic()
        };
        let caps = no_put.apply(Some(none));
        assert!(caps.patch);
        assert!(!caps.filter && !caps.etag);
        let assumed_without_patch = Profile {
            put_allowed: false,
            discovery: false,
            assumed: none,
            ..Profile::generic()
        };
        assert!(assumed_without_patch.apply(None).patch);
    }

    #[test]
    fn deserialises_with_defaults_and_extends() {
        let p: Profile = serde_json::from_value(serde_json::json!({})).expect("empty");
        assert_eq!(
            p,
            Profile {
                name: "custom".into(),
                ..Profile::generic()
            }
        );
        let p: Profile = serde_json::from_value(serde_json::json!({
            "extends": "gitlab", "name": "gl2", "put_allowed": true,
            "assumed": {"etag": true}
        }))
        .expect("extends");
        let gitlab = builtin("gitlab").expect("gitlab");
        assert_eq!(
            p,
            Profile {
                name: "gl2".into(),
                put_allowed: true,
                assumed: Capabilities {
                    etag: true,
                    ..gitlab.assumed
                },
                ..gitlab
            }
        );
        for bad in [
            serde_json::json!({"extends": "nope"}),
            serde_json::json!({"put_alowed": false}),
            serde_json::json!({"assumed": {"etags": true}}),
            serde_json::json!({"deprovision": "suspend"}),
            serde_json::json!({"name": " "}),
            serde_json::json!({"content_type": "text/plain"}),
        ] {
            assert!(
                serde_json::from_value::<Profile>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn serialises_to_what_it_reads() {
        for name in BUILTIN_NAMES {
            let p = builtin(name).expect(name);
            let v = serde_json::to_value(&p).expect("serialise");
            assert_eq!(serde_json::from_value::<Profile>(v).expect("read back"), p);
        }
    }
}
