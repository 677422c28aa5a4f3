//! The pure reconciliation decision: given what should be and what is, which
//! SCIM operations close the gap. No I/O here, so the engine can plan, test
//! and audit decisions without a server.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::profile::Profile;
use crate::shape::{covers, Shape, PATH_NAME_FORMATTED};
use crate::user::{
    manager_ref, non_empty, non_empty_opt, sent_formatted, work_emails, RemoteUser, UserSpec,
};

/// What Tenure wants for one person in one app.
// Unboxed so callers can build and match it directly; one value lives per
// decision, so the padding of the unit variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Desired {
    /// The account must exist with these attributes (`spec.active` may be
    /// false, e.g. pre-provisioned before the start date).
    Present(UserSpec),
    /// If an account exists it must be inactive; never create one.
    Deactivated,
    /// If an account exists it must be deleted; never create one.
    Deleted,
}

/// What the server supports, from `/ServiceProviderConfig`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub patch: bool,
    pub filter: bool,
    pub etag: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            patch: true,
            filter: true,
            etag: true,
        }
    }
}

/// One SCIM call to make.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Create(UserSpec),
    Patch {
        id: String,
        ops: Vec<PatchOp>,
    },
    /// PUT: replaces every attribute; never creates.
    Replace {
        id: String,
        spec: UserSpec,
    },
    Delete {
        id: String,
    },
}

/// One RFC 7644 §3.5.2 PATCH operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatchOp {
    /// `replace`, or `remove` to clear an attribute the spec leaves unset.
    pub op: String,
    pub path: String,
    /// `null` for `remove`, which RFC 7644 sends without a value.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub value: Value,
}

impl PatchOp {
    pub fn replace(path: impl Into<String>, value: impl Into<Value>) -> Self {
        PatchOp {
            op: "replace".into(),
            path: path.into(),
            value: value.into(),
        }
    }

    pub fn remove(path: impl Into<String>) -> Self {
        PatchOp {
            op: "remove".into(),
            path: path.into(),
            value: Value::Null,
        }
    }
}

pub const PATH_USER_NAME: &str = "userName";
pub const PATH_EXTERNAL_ID: &str = "externalId";
pub const PATH_GIVEN_NAME: &str = "name.givenName";
pub const PATH_FAMILY_NAME: &str = "name.familyName";
pub const PATH_DISPLAY_NAME: &str = "displayName";
/// The whole list rather than `emails[type eq "work"].value`: a value filter
/// fails with `noTarget` when the account has no work email yet, and Tenure
/// owns the account's email anyway.
pub const PATH_EMAILS: &str = "emails";
pub const PATH_ACTIVE: &str = "active";
pub const PATH_TITLE: &str = "title";
pub const PATH_DEPARTMENT: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department";
pub const PATH_EMPLOYEE_NUMBER: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber";
pub const PATH_COST_CENTER: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter";
pub const PATH_ORGANIZATION: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:organization";
pub const PATH_DIVISION: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:division";
/// The whole complex `manager` attribute, replaced with `{"value": id}`.
pub const PATH_MANAGER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";

/// What `remote` looks like after the server applied `ops` (as made by
/// [`diff`]). Servers may answer a PATCH with 204 and no body; this spares a
/// read-back. `None` when an op is outside what `diff` produces, so the
/// caller knows to read the resource instead of guessing.
pub fn apply_patch(remote: &RemoteUser, ops: &[PatchOp]) -> Option<RemoteUser> {
    let mut r = remote.clone();
    for p in ops {
        if !is_typed_path(&p.path) {
            // A free attribute (constant or free mapping): kept in `raw`,
            // where the diff reads it back.
            if !r.raw.is_object() {
                r.raw = Value::Object(serde_json::Map::new());
            }
            let obj = r.raw.as_object_mut()?;
            match p.op.as_str() {
                "remove" => {
                    crate::shape::remove_path(obj, &p.path);
                }
                "replace" => crate::shape::set_path(obj, &p.path, p.value.clone()),
                _ => return None,
            }
            continue;
        }
        let text = match (p.op.as_str(), &p.value) {
            ("remove", _) => None,
            ("replace", Value::String(s)) => Some(s.clone()),
            ("replace", Value::Bool(_) | Value::Array(_) | Value::Object(_)) => None,
            _ => return None,
        };
        match p.path.as_str() {
            PATH_USER_NAME => r.user_name = text?,
            PATH_EXTERNAL_ID => r.external_id = text,
            PATH_GIVEN_NAME => r.given_name = text,
            PATH_FAMILY_NAME => r.family_name = text,
            PATH_NAME_FORMATTED => r.name_formatted = text,
            PATH_DISPLAY_NAME => r.display_name = text,
            PATH_TITLE => r.title = text,
            PATH_DEPARTMENT => r.department = text,
            PATH_EMPLOYEE_NUMBER => r.employee_number = text,
            PATH_COST_CENTER => r.cost_center = text,
            PATH_ORGANIZATION => r.organization = text,
            PATH_DIVISION => r.division = text,
            PATH_MANAGER => {
                r.manager = match (p.op.as_str(), &p.value) {
                    ("remove", _) => None,
                    ("replace", Value::Object(m)) => Some(m.get("value")?.as_str()?.to_owned()),
                    _ => return None,
                }
            }
            PATH_ACTIVE => r.active = p.value.as_bool()?,
            PATH_EMAILS => {
                r.email = p
                    .value
                    .get(0)
                    .and_then(|e| e["value"].as_str())
                    .map(str::to_owned)
            }
            _ => return None,
        }
    }
    // The server assigned a new version; the old one must not be reused.
    r.etag = None;
    Some(r)
}

/// The paths [`RemoteUser`] models with a field of its own.
fn is_typed_path(path: &str) -> bool {
    [
        PATH_USER_NAME,
        PATH_EXTERNAL_ID,
        PATH_GIVEN_NAME,
        PATH_FAMILY_NAME,
        PATH_NAME_FORMATTED,
        PATH_DISPLAY_NAME,
        PATH_EMAILS,
        PATH_ACTIVE,
        PATH_TITLE,
        PATH_DEPARTMENT,
        PATH_EMPLOYEE_NUMBER,
        PATH_COST_CENTER,
        PATH_ORGANIZATION,
        PATH_DIVISION,
        PATH_MANAGER,
    ]
    .contains(&path)
}

/// The operations that make `remote` match `desired`; empty when it already
/// does. At most one operation is returned. The same as [`diff_with`] and the
/// generic profile.
pub fn diff(desired: &Desired, remote: Option<&RemoteUser>, caps: Capabilities) -> Vec<Op> {
    diff_inner(desired, remote, caps, true, &Shape::default())
}

/// [`diff`] under an app's [`Profile`]:
///
/// - `external_id = false`: the spec's `externalId` is left out of the specs
///   of `Create` and `Replace` and never compared or patched (the app does not
///   store it, so whatever it reports, or does not, counts as equal);
/// - `put_allowed = false`: never `Replace`; updates and deactivations are
///   `Patch`, whatever `caps.patch` says;
/// - its [`Shape`]: an omitted attribute is neither sent nor compared (an
///   omitted `externalId` counts as `external_id = false`), `name.formatted`
///   is compared when the shape sends it, and constants and free mappings
///   are compared with [`covers`], so a server that decorates a value does
///   not look changed.
pub fn diff_with(
    desired: &Desired,
    remote: Option<&RemoteUser>,
    caps: Capabilities,
    profile: &Profile,
) -> Vec<Op> {
    let caps = if profile.put_allowed {
        caps
    } else {
        Capabilities {
            patch: true,
            ..caps
        }
    };
    let external_id = profile.external_id && !profile.shape.omits(PATH_EXTERNAL_ID);
    let mut ops = diff_inner(desired, remote, caps, external_id, &profile.shape);
    if !external_id {
        for op in &mut ops {
            if let Op::Create(spec) | Op::Replace { spec, .. } = op {
                spec.external_id.clear();
            }
        }
    }
    ops
}

fn diff_inner(
    desired: &Desired,
    remote: Option<&RemoteUser>,
    caps: Capabilities,
    external_id: bool,
    shape: &Shape,
) -> Vec<Op> {
    match (desired, remote) {
        (Desired::Present(spec), None) => vec![Op::Create(spec.clone())],
        (Desired::Present(spec), Some(remote)) => {
            let ops = attribute_changes(spec, remote, external_id, shape);
            if ops.is_empty() {
                Vec::new()
            } else if caps.patch {
                vec![Op::Patch {
                    id: remote.id.clone(),
                    ops,
                }]
            } else {
                vec![Op::Replace {
                    id: remote.id.clone(),
                    spec: spec.clone(),
                }]
            }
        }
        (Desired::Deactivated, Some(remote)) if remote.active => {
            if caps.patch {
                vec![Op::Patch {
                    id: remote.id.clone(),
                    ops: vec![PatchOp::replace(PATH_ACTIVE, false)],
                }]
            } else {
                // PUT replaces everything, so it must carry the remote's own
                // attributes or deactivating would also wipe the profile.
                let mut spec = remote.to_spec();
                spec.active = false;
                vec![Op::Replace {
                    id: remote.id.clone(),
                    spec,
                }]
            }
        }
        (Desired::Deactivated, _) => Vec::new(),
        (Desired::Deleted, Some(remote)) => vec![Op::Delete {
            id: remote.id.clone(),
        }],
        (Desired::Deleted, None) => Vec::new(),
    }
}

/// `replace` to set, `remove` to clear, so an attribute dropped from the
/// spec is dropped on the server too.
fn set(path: &str, value: Option<&str>) -> PatchOp {
    match value {
        Some(v) => PatchOp::replace(path, v),
        None => PatchOp::remove(path),
    }
}

/// `external_id = false` leaves `externalId` out of the comparison, and so
/// does the shape for every attribute it omits: only what is sent is
/// compared.
fn attribute_changes(
    spec: &UserSpec,
    remote: &RemoteUser,
    external_id: bool,
    shape: &Shape,
) -> Vec<PatchOp> {
    let sent = |path: &str| !shape.omits(path);
    let mut ops = Vec::new();
    // userName is caseExact=false (RFC 7643 §4.1.1): a case-only difference
    // is the same name, and servers may normalise its case.
    if spec.user_name.to_lowercase() != remote.user_name.to_lowercase() {
        ops.push(PatchOp::replace(PATH_USER_NAME, spec.user_name.as_str()));
    }
    let (want_external, have_external) = if external_id {
        (
            non_empty(&spec.external_id),
            non_empty_opt(&remote.external_id),
        )
    } else {
        (None, None)
    };
    let strings = [
        (PATH_EXTERNAL_ID, want_external, have_external),
        (
            PATH_GIVEN_NAME,
            non_empty(&spec.given_name),
            non_empty_opt(&remote.given_name),
        ),
        (
            PATH_FAMILY_NAME,
            non_empty(&spec.family_name),
            non_empty_opt(&remote.family_name),
        ),
        (
            PATH_DISPLAY_NAME,
            non_empty(&spec.display_name),
            non_empty_opt(&remote.display_name),
        ),
    ];
    for (path, want, have) in strings {
        if want != have && sent(path) {
            ops.push(set(path, want));
        }
    }
    if let Some(want) = sent_formatted(spec, shape) {
        if want.as_deref() != non_empty_opt(&remote.name_formatted) {
            ops.push(set(PATH_NAME_FORMATTED, want.as_deref()));
        }
    }
    let want_email = non_empty(&spec.email);
    let have_email = non_empty_opt(&remote.email);
    // Compared case-insensitively: mail systems treat addresses that way in
    // practice and some servers lowercase them, which would otherwise make
    // every reconcile re-send the email forever.
    let email_same = match (want_email, have_email) {
        (Some(w), Some(h)) => w.to_lowercase() == h.to_lowercase(),
        (None, None) => true,
        _ => false,
    };
    if !email_same && sent(PATH_EMAILS) {
        ops.push(match want_email {
            Some(e) => PatchOp::replace(PATH_EMAILS, work_emails(e, shape)),
            None => PatchOp::remove(PATH_EMAILS),
        });
    }
    if spec.active != remote.active {
        ops.push(PatchOp::replace(PATH_ACTIVE, spec.active));
    }
    let optionals = [
        (
            PATH_TITLE,
            non_empty_opt(&spec.title),
            non_empty_opt(&remote.title),
        ),
        (
            PATH_DEPARTMENT,
            non_empty_opt(&spec.department),
            non_empty_opt(&remote.department),
        ),
        (
            PATH_EMPLOYEE_NUMBER,
            non_empty_opt(&spec.employee_number),
            non_empty_opt(&remote.employee_number),
        ),
        (
            PATH_COST_CENTER,
            non_empty_opt(&spec.cost_center),
            non_empty_opt(&remote.cost_center),
        ),
        (
            PATH_ORGANIZATION,
            non_empty_opt(&spec.organization),
            non_empty_opt(&remote.organization),
        ),
        (
            PATH_DIVISION,
            non_empty_opt(&spec.division),
            non_empty_opt(&remote.division),
        ),
    ];
    for (path, want, have) in optionals {
        if want != have && sent(path) {
            ops.push(set(path, want));
        }
    }
    let (want_manager, have_manager) =
        (non_empty_opt(&spec.manager), non_empty_opt(&remote.manager));
    if want_manager != have_manager && sent(PATH_MANAGER) {
        ops.push(match want_manager {
            Some(id) => PatchOp::replace(PATH_MANAGER, manager_ref(id)),
            None => PatchOp::remove(PATH_MANAGER),
        });
    }
    for (path, want) in spec.extra.iter().chain(shape.constant.iter()) {
        if !covers(want, remote.value_at(path)) {
            ops.push(if want.is_null() {
                PatchOp::remove(path.as_str())
            } else {
                PatchOp::replace(path.as_str(), want.clone())
            });
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn spec() -> UserSpec {
        UserSpec {
            user_name: "ada".into(),
            external_id: "E-1".into(),
            given_name: "Ada".into(),
            family_name: "Lovelace".into(),
            display_name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
            active: true,
            title: Some("Engineer".into()),
            department: Some("R&D".into()),
            employee_number: Some("42".into()),
            cost_center: Some("CC-1".into()),
            organization: Some("Acme".into()),
            division: None,
            manager: Some("m-1".into()),
            ..UserSpec::default()
        }
    }

    fn remote_of(spec: &UserSpec) -> RemoteUser {
        RemoteUser {
            id: "u1".into(),
            user_name: spec.user_name.clone(),
            external_id: non_empty(&spec.external_id).map(str::to_owned),
            given_name: non_empty(&spec.given_name).map(str::to_owned),
            family_name: non_empty(&spec.family_name).map(str::to_owned),
            display_name: non_empty(&spec.display_name).map(str::to_owned),
            email: non_empty(&spec.email).map(str::to_owned),
            active: spec.active,
            title: non_empty_opt(&spec.title).map(str::to_owned),
            department: non_empty_opt(&spec.department).map(str::to_owned),
            employee_number: non_empty_opt(&spec.employee_number).map(str::to_owned),
            cost_center: non_empty_opt(&spec.cost_center).map(str::to_owned),
            organization: non_empty_opt(&spec.organization).map(str::to_owned),
            division: non_empty_opt(&spec.division).map(str::to_owned),
            manager: non_empty_opt(&spec.manager).map(str::to_owned),
            name_formatted: spec.name_formatted.clone(),
            etag: Some("W/\"1\"".into()),
            raw: Value::Null,
        }
    }

    /// What a conforming server does with an op, modelled on the fields
    /// `RemoteUser` exposes. The integration tests check the real server
    /// agrees with this model.
    fn apply(op: &Op, remote: Option<RemoteUser>) -> Option<RemoteUser> {
        match op {
            Op::Create(spec) => {
                assert!(remote.is_none(), "create over an existing account");
                Some(remote_of(spec))
            }
            Op::Replace { id, spec } => {
                let remote = remote.expect("replace never creates");
                assert_eq!(&remote.id, id);
                Some(RemoteUser {
                    id: id.clone(),
                    ..remote_of(spec)
                })
            }
            Op::Delete { id } => {
                let remote = remote.expect("delete of a missing account");
                assert_eq!(&remote.id, id);
                None
            }
            Op::Patch { id, ops } => {
                let r = remote.expect("patch of a missing account");
                assert_eq!(&r.id, id);
                Some(apply_patch(&r, ops).expect("diff only makes ops apply_patch knows"))
            }
        }
    }

    fn apply_all(ops: &[Op], remote: Option<RemoteUser>) -> Option<RemoteUser> {
        ops.iter().fold(remote, |r, op| apply(op, r))
    }

    #[test]
    fn present_missing_creates() {
        let s = spec();
        assert_eq!(
            diff(&Desired::Present(s.clone()), None, Capabilities::default()),
            vec![Op::Create(s)]
        );
    }

    #[test]
    fn present_equal_is_noop() {
        let s = spec();
        let r = remote_of(&s);
        assert!(diff(&Desired::Present(s), Some(&r), Capabilities::default()).is_empty());
    }

    #[test]
    fn user_name_case_only_difference_is_noop() {
        let s = spec();
        let mut r = remote_of(&s);
        r.user_name = "ADA".into();
        assert!(diff(&Desired::Present(s), Some(&r), Capabilities::default()).is_empty());
    }

    #[test]
    fn empty_string_equals_absent() {
        let mut s = spec();
        s.display_name = String::new();
        s.title = Some(String::new());
        let mut r = remote_of(&s);
        r.title = None;
        r.display_name = Some(String::new());
        assert!(diff(&Desired::Present(s), Some(&r), Capabilities::default()).is_empty());
    }

    #[test]
    fn present_changed_patches_only_differences() {
        let s = spec();
        let mut r = remote_of(&s);
        r.given_name = Some("Augusta".into());
        r.email = Some("old@example.com".into());
        r.department = None;
        r.title = Some("Old".into());
        r.active = false;
        let mut want = s.clone();
        want.title = None;
        let ops = diff(&Desired::Present(want), Some(&r), Capabilities::default());
        assert_eq!(
            ops,
            vec![Op::Patch {
                id: "u1".into(),
                ops: vec![
                    PatchOp::replace(PATH_GIVEN_NAME, "Ada"),
                    PatchOp::replace(
                        PATH_EMAILS,
                        json!([{"value": "ada@example.com", "type": "work", "primary": true}])
                    ),
                    PatchOp::replace(PATH_ACTIVE, true),
                    PatchOp::remove(PATH_TITLE),
                    PatchOp::replace(PATH_DEPARTMENT, "R&D"),
                ],
            }]
        );
    }

    #[test]
    fn without_patch_support_replaces() {
        let s = spec();
        let mut r = remote_of(&s);
        r.family_name = None;
        let caps = Capabilities {
            patch: false,
            ..Capabilities::default()
        };
        assert_eq!(
            diff(&Desired::Present(s.clone()), Some(&r), caps),
            vec![Op::Replace {
                id: "u1".into(),
                spec: s
            }]
        );
    }

    #[test]
    fn deactivate() {
        let r = remote_of(&spec());
        assert_eq!(
            diff(&Desired::Deactivated, Some(&r), Capabilities::default()),
            vec![Op::Patch {
                id: "u1".into(),
                ops: vec![PatchOp::replace(PATH_ACTIVE, false)]
            }]
        );
        let no_patch = Capabilities {
            patch: false,
            ..Capabilities::default()
        };
        let mut kept = spec();
        kept.active = false;
        assert_eq!(
            diff(&Desired::Deactivated, Some(&r), no_patch),
            vec![Op::Replace {
                id: "u1".into(),
                spec: kept
            }]
        );
        let mut inactive = r.clone();
        inactive.active = false;
        assert!(diff(&Desired::Deactivated, Some(&inactive), no_patch).is_empty());
        assert!(diff(&Desired::Deactivated, None, Capabilities::default()).is_empty());
    }

    #[test]
    fn delete() {
        let r = remote_of(&spec());
        assert_eq!(
            diff(&Desired::Deleted, Some(&r), Capabilities::default()),
            vec![Op::Delete { id: "u1".into() }]
        );
        assert!(diff(&Desired::Deleted, None, Capabilities::default()).is_empty());
    }

    #[test]
    fn enterprise_paths_match_the_schema_urn() {
        use crate::user::ENTERPRISE_USER_SCHEMA;
        assert_eq!(
            PATH_DEPARTMENT,
            format!("{ENTERPRISE_USER_SCHEMA}:department")
        );
        assert_eq!(
            PATH_EMPLOYEE_NUMBER,
            format!("{ENTERPRISE_USER_SCHEMA}:employeeNumber")
        );
        assert_eq!(
            PATH_COST_CENTER,
            format!("{ENTERPRISE_USER_SCHEMA}:costCenter")
        );
        assert_eq!(
            PATH_ORGANIZATION,
            format!("{ENTERPRISE_USER_SCHEMA}:organization")
        );
        assert_eq!(PATH_DIVISION, format!("{ENTERPRISE_USER_SCHEMA}:division"));
        assert_eq!(PATH_MANAGER, format!("{ENTERPRISE_USER_SCHEMA}:manager"));
    }

    #[test]
    fn enterprise_extension_changes_patch_and_apply() {
        let s = spec();
        let mut r = remote_of(&s);
        r.cost_center = None;
        r.organization = Some("Old".into());
        r.division = Some("Gone".into());
        r.manager = Some("m-0".into());
        let ops = diff(
            &Desired::Present(s.clone()),
            Some(&r),
            Capabilities::default(),
        );
        let patch = vec![
            PatchOp::replace(PATH_COST_CENTER, "CC-1"),
            PatchOp::replace(PATH_ORGANIZATION, "Acme"),
            PatchOp::remove(PATH_DIVISION),
            PatchOp::replace(PATH_MANAGER, json!({"value": "m-1"})),
        ];
        assert_eq!(
            ops,
            vec![Op::Patch {
                id: "u1".into(),
                ops: patch.clone()
            }]
        );
        let after = apply_patch(&r, &patch).expect("known paths");
        assert_eq!(after.manager.as_deref(), Some("m-1"));
        assert!(diff(
            &Desired::Present(s.clone()),
            Some(&after),
            Capabilities::default()
        )
        .is_empty());
        let mut no_manager = s;
        no_manager.manager = None;
        let ops = diff(
            &Desired::Present(no_manager),
            Some(&after),
            Capabilities::default(),
        );
        assert_eq!(
            ops,
            vec![Op::Patch {
                id: "u1".into(),
                ops: vec![PatchOp::remove(PATH_MANAGER)]
            }]
        );
        assert_eq!(
            apply_patch(&after, &[PatchOp::replace(PATH_MANAGER, "bare")]),
            None,
            "a manager is a reference object"
        );
    }

    #[test]
    fn remove_op_serialises_without_value() {
        let v = serde_json::to_value(PatchOp::remove(PATH_TITLE)).expect("serialise");
        assert_eq!(v, json!({"op": "remove", "path": "title"}));
        let v = serde_json::to_value(PatchOp::replace(PATH_ACTIVE, false)).expect("serialise");
        assert_eq!(
            v,
            json!({"op": "replace", "path": "active", "value": false})
        );
    }

    // Small alphabets so that generated specs and remotes often agree on some
    // attributes and differ on others, and hit case-only differences.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[aAbB]{1,3}"]
    }

    fn opt_text() -> impl Strategy<Value = Option<String>> {
        prop::option::of(text())
    }

    fn any_spec() -> impl Strategy<Value = UserSpec> {
        (
            "[aAbB]{1,3}",
            (text(), text(), text(), text(), text()),
            any::<bool>(),
            (opt_text(), opt_text(), opt_text()),
            (opt_text(), opt_text(), opt_text(), opt_text()),
        )
            .prop_map(
                |(
                    user_name,
                    (external_id, given_name, family_name, display_name, email),
                    active,
                    (title, department, employee_number),
                    (cost_center, organization, division, manager),
                )| UserSpec {
                    user_name,
                    external_id,
                    given_name,
                    family_name,
                    display_name,
                    email,
                    active,
                    title,
                    department,
                    employee_number,
                    cost_center,
                    organization,
                    division,
                    manager,
                    ..UserSpec::default()
                },
            )
    }

    fn any_remote() -> impl Strategy<Value = RemoteUser> {
        (
            "[aAbB]{1,3}",
            (opt_text(), opt_text(), opt_text(), opt_text(), opt_text()),
            any::<bool>(),
            (opt_text(), opt_text(), opt_text()),
            (opt_text(), opt_text(), opt_text(), opt_text()),
        )
            .prop_map(
                |(
                    user_name,
                    (external_id, given_name, family_name, display_name, email),
                    active,
                    (title, department, employee_number),
                    (cost_center, organization, division, manager),
                )| RemoteUser {
                    id: "r1".into(),
                    user_name,
                    external_id,
                    given_name,
                    family_name,
                    display_name,
                    email,
                    active,
                    title,
                    department,
                    employee_number,
                    cost_center,
                    organization,
                    division,
                    manager,
                    name_formatted: None,
                    etag: None,
                    raw: Value::Null,
                },
            )
    }

    fn any_desired() -> impl Strategy<Value = Desired> {
        prop_oneof![
            any_spec().prop_map(Desired::Present),
            Just(Desired::Deactivated),
            Just(Desired::Deleted),
        ]
    }

    fn any_caps() -> impl Strategy<Value = Capabilities> {
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(patch, filter, etag)| {
            Capabilities {
                patch,
                filter,
                etag,
            }
        })
    }

    #[test]
    fn profile_without_external_id_neither_sends_nor_compares_it() {
        let nextcloud = crate::profile::builtin("nextcloud").expect("nextcloud");
        let s = spec();
        let mut without = s.clone();
        without.external_id = String::new();
        assert_eq!(
            diff_with(
                &Desired::Present(s.clone()),
                None,
                Capabilities::default(),
                &nextcloud
            ),
            vec![Op::Create(without.clone())]
        );
        // The server reports no externalId (or a stale one): equal either way.
        let mut r = remote_of(&s);
        r.external_id = None;
        assert!(diff_with(
            &Desired::Present(s.clone()),
            Some(&r),
            Capabilities::default(),
            &nextcloud
        )
        .is_empty());
        r.external_id = Some("other".into());
        assert!(diff_with(
            &Desired::Present(s.clone()),
            Some(&r),
            Capabilities::default(),
            &nextcloud
        )
        .is_empty());
        // The generic diff would patch it.
        assert_eq!(
            diff(
                &Desired::Present(s.clone()),
                Some(&r),
                Capabilities::default()
            ),
            vec![Op::Patch {
                id: "u1".into(),
                ops: vec![PatchOp::replace(PATH_EXTERNAL_ID, "E-1")]
            }]
        );
        // A PUT carries no externalId either.
        r.title = None;
        let no_patch = Capabilities {
            patch: false,
            ..Capabilities::default()
        };
        assert_eq!(
            diff_with(&Desired::Present(s), Some(&r), no_patch, &nextcloud),
            vec![Op::Replace {
                id: "u1".into(),
                spec: without
            }]
        );
    }

    #[test]
    fn profile_without_put_patches_even_without_patch_support() {
        let gitlab = crate::profile::builtin("gitlab").expect("gitlab");
        let no_patch = Capabilities {
            patch: false,
            ..Capabilities::default()
        };
        let s = spec();
        let r = remote_of(&s);
        assert_eq!(
            diff_with(&Desired::Deactivated, Some(&r), no_patch, &gitlab),
            vec![Op::Patch {
                id: "u1".into(),
                ops: vec![PatchOp::replace(PATH_ACTIVE, false)]
            }]
        );
        let mut moved = s.clone();
        moved.title = Some("Lead".into());
        assert_eq!(
            diff_with(&Desired::Present(moved), Some(&r), no_patch, &gitlab),
            vec![Op::Patch {
                id: "u1".into(),
                ops: vec![PatchOp::replace(PATH_TITLE, "Lead")]
            }]
        );
    }

    fn any_profile() -> impl Strategy<Value = Profile> {
        (
            prop::sample::select(crate::profile::BUILTIN_NAMES.to_vec()),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(name, external_id, put_allowed)| Profile {
                external_id,
                put_allowed,
                ..crate::profile::builtin(name).expect("builtin")
            })
    }

    proptest! {
        #[test]
        fn generic_profile_is_plain_diff(
            desired in any_desired(),
            remote in prop::option::of(any_remote()),
            caps in any_caps(),
        ) {
            prop_assert_eq!(
                diff_with(&desired, remote.as_ref(), caps, &Profile::generic()),
                diff(&desired, remote.as_ref(), caps)
            );
        }

        #[test]
        fn profiles_converge_and_respect_their_restrictions(
            desired in any_desired(),
            remote in prop::option::of(any_remote()),
            caps in any_caps(),
            profile in any_profile(),
        ) {
            let ops = diff_with(&desired, remote.as_ref(), caps, &profile);
            prop_assert!(ops.len() <= 1);
            let after = apply_all(&ops, remote.clone());
            let again = diff_with(&desired, after.as_ref(), caps, &profile);
            prop_assert!(again.is_empty(), "second diff not empty: {:?}", again);
            for op in &ops {
                if !profile.put_allowed {
                    prop_assert!(!matches!(op, Op::Replace { .. }), "PUT under {}: {:?}", profile.name, op);
                }
                if !profile.external_id {
                    match op {
                        Op::Create(spec) | Op::Replace { spec, .. } => {
                            prop_assert!(spec.external_id.is_empty());
                        }
                        Op::Patch { ops, .. } => {
                            prop_assert!(ops.iter().all(|p| p.path != PATH_EXTERNAL_ID));
                        }
                        Op::Delete { .. } => {}
                    }
                }
            }
        }

        #[test]
        fn converges_in_one_step(
            desired in any_desired(),
            remote in prop::option::of(any_remote()),
            caps in any_caps(),
        ) {
            let ops = diff(&desired, remote.as_ref(), caps);
            prop_assert!(ops.len() <= 1);
            let after = apply_all(&ops, remote.clone());
            let again = diff(&desired, after.as_ref(), caps);
            prop_assert!(again.is_empty(), "second diff not empty: {:?}", again);
            match &desired {
                Desired::Present(_) => prop_assert!(after.is_some()),
                Desired::Deactivated => {
                    prop_assert_eq!(after.is_some(), remote.is_some());
                    if let Some(a) = &after {
                        prop_assert!(!a.active);
                    }
                }
                Desired::Deleted => prop_assert!(after.is_none()),
            }
        }

        #[test]
        fn deactivating_keeps_other_attributes(remote in any_remote(), caps in any_caps()) {
            let ops = diff(&Desired::Deactivated, Some(&remote), caps);
            if let Some(after) = apply_all(&ops, Some(remote.clone())) {
                let mut expected = remote.clone();
                expected.active = false;
                // Normalise empty strings, which the Replace path drops.
                prop_assert_eq!(after.to_spec().to_scim(), expected.to_spec().to_scim());
            }
        }

        #[test]
        fn never_creates_over_existing_or_when_not_present(
            desired in any_desired(),
            remote in prop::option::of(any_remote()),
            caps in any_caps(),
        ) {
            let ops = diff(&desired, remote.as_ref(), caps);
            let creates = ops.iter().any(|o| matches!(o, Op::Create(_)));
            if remote.is_some() || !matches!(desired, Desired::Present(_)) {
                prop_assert!(!creates);
            }
            if !caps.patch {
                let patches = ops.iter().any(|o| matches!(o, Op::Patch { .. }));
                prop_assert!(!patches, "PATCH without patch support: {:?}", ops);
            }
        }
    }

    fn shaped(shape: Shape) -> Profile {
        Profile {
            shape,
            ..Profile::generic()
        }
    }

    /// A conforming server: a create or PUT stores the body as sent, a PATCH
    /// applies its operations.
    fn server_apply(op: &Op, remote: Option<RemoteUser>, profile: &Profile) -> Option<RemoteUser> {
        let stored = |id: &str, spec: &UserSpec| {
            let mut body = spec.to_scim_with(profile);
            body["id"] = id.into();
            RemoteUser::from_scim(&body).expect("a body Tenure sends reads back")
        };
        match op {
            Op::Create(spec) => Some(stored("u1", spec)),
            Op::Replace { id, spec } => Some(stored(id, spec)),
            Op::Delete { .. } => None,
            Op::Patch { ops, .. } => {
                Some(apply_patch(&remote.expect("patch of a missing account"), ops).expect("known"))
            }
        }
    }

    #[test]
    fn shaped_emails_are_sent_without_type_or_primary_and_do_not_loop() {
        let profile = shaped(Shape {
            omit: ["emails.type".to_owned(), "emails.primary".to_owned()].into(),
            ..Shape::default()
        });
        let s = spec();
        let body = s.to_scim_with(&profile);
        assert_eq!(body["emails"], json!([{"value": "ada@example.com"}]));
        // The server adds type and primary on its own: still in sync.
        let mut created = body.clone();
        created["id"] = "u1".into();
        created["emails"] = json!([{"value": "ada@example.com", "type": "work", "primary": true}]);
        let r = RemoteUser::from_scim(&created).expect("user");
        assert!(diff_with(
            &Desired::Present(s.clone()),
            Some(&r),
            Capabilities::default(),
            &profile
        )
        .is_empty());
        // A changed address is patched with the shaped value.
        let mut moved = s;
        moved.email = "ada@new.example".into();
        assert_eq!(
            diff_with(
                &Desired::Present(moved),
                Some(&r),
                Capabilities::default(),
                &profile
            ),
            vec![Op::Patch {
                id: "u1".into(),
                ops: vec![PatchOp::replace(
                    PATH_EMAILS,
                    json!([{"value": "ada@new.example"}])
                )]
            }]
        );
    }

    #[test]
    fn omitted_attributes_are_neither_sent_nor_compared() {
        let profile = shaped(Shape {
            omit: [
                "title".to_owned(),
                PATH_DEPARTMENT.to_owned(),
                "externalId".to_owned(),
            ]
            .into(),
            ..Shape::default()
        });
        let s = spec();
        let body = s.to_scim_with(&profile);
        assert!(body.get("title").is_none() && body.get("externalId").is_none());
        assert!(body[crate::user::ENTERPRISE_USER_SCHEMA]
            .get("department")
            .is_none());
        let mut r = remote_of(&s);
        r.title = Some("Something else".into());
        r.department = None;
        r.external_id = None;
        assert!(diff_with(
            &Desired::Present(s.clone()),
            Some(&r),
            Capabilities::default(),
            &profile
        )
        .is_empty());
        let Op::Create(created) = &diff_with(
            &Desired::Present(s),
            None,
            Capabilities::default(),
            &profile,
        )[0] else {
            panic!("expected a create")
        };
        assert!(
            created.external_id.is_empty(),
            "an omitted externalId is not stored"
        );
    }

    #[test]
    fn name_formatted_is_sent_and_kept_current_when_shaped_in() {
        let profile = shaped(Shape {
            name_formatted: true,
            ..Shape::default()
        });
        let s = spec();
        assert_eq!(
            s.to_scim_with(&profile)["name"]["formatted"],
            "Ada Lovelace"
        );
        assert!(
            s.to_scim().pointer("/name/formatted").is_none(),
            "off by default"
        );
        // An adopted account with a stale formatted name is corrected.
        let mut r = remote_of(&s);
        r.name_formatted = Some("A. Byron".into());
        assert_eq!(
            diff_with(
                &Desired::Present(s.clone()),
                Some(&r),
                Capabilities::default(),
                &profile
            ),
            vec![Op::Patch {
                id: "u1".into(),
                ops: vec![PatchOp::replace(PATH_NAME_FORMATTED, "Ada Lovelace")]
            }]
        );
        // Without the shape the same remote is in sync: not sent, not compared.
        assert!(diff(
            &Desired::Present(s.clone()),
            Some(&r),
            Capabilities::default()
        )
        .is_empty());
        // A mapped value wins over the joined names.
        let mut mapped = s;
        mapped.name_formatted = Some("Lovelace, Ada".into());
        assert_eq!(
            mapped.to_scim_with(&profile)["name"]["formatted"],
            "Lovelace, Ada"
        );
    }

    #[test]
    fn constants_and_free_mappings_are_sent_and_compared_as_subsets() {
        let ext = "urn:acme:params:scim:schemas:extension:acme:1.0:User";
        let profile = shaped(Shape {
            constant: [
                ("userType".to_owned(), json!("Employee")),
                (format!("{ext}:plan"), json!({"tier": "gold"})),
            ]
            .into(),
            ..Shape::default()
        });
        let mut s = spec();
        s.extra.insert("nickName".into(), json!("ada"));
        s.extra.insert("preferredLanguage".into(), Value::Null);
        let body = s.to_scim_with(&profile);
        assert_eq!(body["userType"], "Employee");
        assert_eq!(body[ext]["plan"], json!({"tier": "gold"}));
        assert_eq!(body["nickName"], "ada");
        assert!(body.get("preferredLanguage").is_none());
        assert!(body["schemas"]
            .as_array()
            .expect("schemas")
            .contains(&json!(ext)));
        // The server decorates the complex constant: still in sync.
        let mut stored = body.clone();
        stored["id"] = "u1".into();
        stored[ext]["plan"]["since"] = "2020".into();
        let r = RemoteUser::from_scim(&stored).expect("user");
        assert!(diff_with(
            &Desired::Present(s.clone()),
            Some(&r),
            Capabilities::default(),
            &profile
        )
        .is_empty());
        // A changed constant and a value the mapping now leaves unset.
        stored["userType"] = "Contractor".into();
        stored["preferredLanguage"] = "de".into();
        let r = RemoteUser::from_scim(&stored).expect("user");
        let ops = diff_with(
            &Desired::Present(s.clone()),
            Some(&r),
            Capabilities::default(),
            &profile,
        );
        assert_eq!(
            ops,
            vec![Op::Patch {
                id: "u1".into(),
                ops: vec![
                    PatchOp::remove("preferredLanguage"),
                    PatchOp::replace("userType", "Employee"),
                ]
            }]
        );
        let Op::Patch { ops: patch, .. } = &ops[0] else {
            panic!("patch")
        };
        let after = apply_patch(&r, patch).expect("free paths apply");
        assert!(diff_with(
            &Desired::Present(s),
            Some(&after),
            Capabilities::default(),
            &profile
        )
        .is_empty());
    }

    fn any_shape() -> impl Strategy<Value = Shape> {
        let omittable = crate::shape::omittable();
        (
            any::<bool>(),
            prop::sample::subsequence(omittable.clone(), 0..=4),
            any::<bool>(),
        )
            .prop_map(|(name_formatted, omit, constants)| {
                let mut shape = Shape {
                    name_formatted: name_formatted
                        && !omit.iter().any(|p| p == "name" || p == "name.formatted"),
                    omit: omit.into_iter().collect(),
                    ..Shape::default()
                };
                if constants {
                    shape.constant.insert("userType".into(), json!("Employee"));
                    shape.constant.insert(
                        "urn:acme:ext:1.0:User:plan".into(),
                        json!({"tier": "gold", "seats": 3}),
                    );
                }
                shape
            })
    }

    proptest! {
        #[test]
        fn shaped_bodies_converge_and_never_touch_omitted_attributes(
            desired in any_desired(),
            remote in prop::option::of(any_remote()),
            caps in any_caps(),
            shape in any_shape(),
            nick in prop::option::of(prop_oneof![Just(Value::Null), Just(json!("nick"))]),
        ) {
            let profile = shaped(shape.clone());
            let desired = match desired {
                Desired::Present(mut s) => {
                    if let Some(n) = nick {
                        s.extra.insert("nickName".into(), n);
                    }
                    Desired::Present(s)
                }
                other => other,
            };
            let ops = diff_with(&desired, remote.as_ref(), caps, &profile);
            let after = ops.iter().fold(remote.clone(), |r, op| server_apply(op, r, &profile));
            let again = diff_with(&desired, after.as_ref(), caps, &profile);
            prop_assert!(again.is_empty(), "second diff not empty: {:?}", again);
            for op in &ops {
                match op {
                    Op::Create(spec) | Op::Replace { spec, .. } => {
                        let body = spec.to_scim_with(&profile);
                        for path in &shape.omit {
                            prop_assert!(
                                crate::shape::get_path(&body, path).is_none(),
                                "{} sent although omitted: {}", path, body
                            );
                        }
                    }
                    Op::Patch { ops, .. } => {
                        for p in ops {
                            prop_assert!(!shape.omits(&p.path), "{} patched although omitted", p.path);
                        }
                    }
                    Op::Delete { .. } => {}
                }
            }
        }
    }
}
