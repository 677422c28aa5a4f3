//! SCIM Groups (RFC 7643 §4.2): the desired and remote group models, their
//! mapping to SCIM JSON, and the pure group reconciliation [`diff_group`].
//!
//! Members are remote user ids (`members[].value`), never HR ids: the caller
//! maps people to the app's user ids before planning.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::diff::{Capabilities, PatchOp};
use crate::error::ScimError;
use crate::profile::Profile;
use crate::user::{get_ci, non_empty_opt};

pub const CORE_GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// The PATCH path of a group's name.
pub const PATH_GROUP_DISPLAY_NAME: &str = "displayName";
/// The PATCH path of a group's member list.
pub const PATH_MEMBERS: &str = "members";

/// The group an app should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    pub display_name: String,
    /// `None` (or empty) means no `externalId` is sent.
    pub external_id: Option<String>,
    /// Remote user ids.
    pub members: BTreeSet<String>,
}

impl GroupSpec {
    /// The full SCIM Group resource, as sent by POST and PUT. `externalId`
    /// is left out when unset or when the profile says the app does not
    /// store it. `members` is always sent (empty for no members), so a PUT
    /// really replaces the member list.
    pub fn to_scim(&self, profile: &Profile) -> Value {
        let mut group = Map::new();
        group.insert("schemas".into(), json!([CORE_GROUP_SCHEMA]));
        group.insert("displayName".into(), self.display_name.clone().into());
        if profile.external_id {
            if let Some(v) = non_empty_opt(&self.external_id) {
                group.insert("externalId".into(), v.into());
            }
        }
        group.insert("members".into(), member_values(&self.members));
        Value::Object(group)
    }
}

/// `[{"value": id}, ...]`, the member list form of RFC 7643 §4.2.
fn member_values<'a>(ids: impl IntoIterator<Item = &'a String>) -> Value {
    Value::Array(ids.into_iter().map(|id| json!({ "value": id })).collect())
}

/// A Group as a SCIM server returned it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteGroup {
    pub id: String,
    pub display_name: String,
    pub external_id: Option<String>,
    /// `members[].value`: remote ids (users, or nested groups).
    pub members: BTreeSet<String>,
    /// `meta.version`, the resource's ETag.
    pub etag: Option<String>,
}

impl RemoteGroup {
    /// Reads a SCIM Group resource. Only `id` and `displayName` are
    /// required; members without a string `value` are skipped.
    pub fn from_scim(v: &Value) -> Result<Self, ScimError> {
        let obj = v
            .as_object()
            .ok_or_else(|| ScimError::InvalidResource("a Group must be a JSON object".into()))?;
        let str_of = |o: &Map<String, Value>, key: &str| {
            get_ci(o, key).and_then(Value::as_str).map(str::to_owned)
        };
        let id = str_of(obj, "id")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ScimError::InvalidResource("Group has no id".into()))?;
        let display_name = str_of(obj, "displayName")
            .ok_or_else(|| ScimError::InvalidResource(format!("Group {id} has no displayName")))?;
        let members = match get_ci(obj, "members") {
            None | Some(Value::Null) => BTreeSet::new(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_object)
                .filter_map(|m| str_of(m, "value"))
                .collect(),
            Some(_) => {
                return Err(ScimError::InvalidResource(format!(
                    "Group {id}: members is not an array"
                )))
            }
        };
        let meta = get_ci(obj, "meta").and_then(Value::as_object);
        Ok(RemoteGroup {
            display_name,
            external_id: str_of(obj, "externalId"),
            members,
            etag: meta.and_then(|m| str_of(m, "version")),
            id,
        })
    }

    /// The remote group as a spec.
    pub fn to_spec(&self) -> GroupSpec {
        GroupSpec {
            display_name: self.display_name.clone(),
            external_id: self.external_id.clone(),
            members: self.members.clone(),
        }
    }
}

/// One SCIM call on a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupOp {
    /// POST with the spec's members.
    Create(GroupSpec),
    /// PATCH `replace displayName`.
    Rename { id: String, display_name: String },
    /// PATCH `add members`, one operation carrying these ids.
    AddMembers { id: String, members: Vec<String> },
    /// PATCH with one `remove members[value eq "<id>"]` operation per id.
    RemoveMembers { id: String, members: Vec<String> },
    /// PUT: replaces name, externalId and the whole member list.
    Replace { id: String, spec: GroupSpec },
    /// DELETE.
    Delete { id: String },
}

impl GroupOp {
    /// The group the op acts on; `None` for a create.
    pub fn id(&self) -> Option<&str> {
        match self {
            GroupOp::Create(_) => None,
            GroupOp::Rename { id, .. }
            | GroupOp::AddMembers { id, .. }
            | GroupOp::RemoveMembers { id, .. }
            | GroupOp::Replace { id, .. }
            | GroupOp::Delete { id } => Some(id),
        }
    }

    /// The PATCH operations of a PATCH-style op; `None` for the others.
    ///
    /// A removal uses the RFC 7644 §3.5.2.2 path filter form
    /// `members[value eq "<id>"]`, one operation per member. (The form
    /// Authentik and Entra send, `remove members` with a value list, is
    /// refused by RFC-strict servers such as scim2-server.)
    pub fn patch_ops(&self) -> Option<Vec<PatchOp>> {
        match self {
            GroupOp::Rename { display_name, .. } => Some(vec![PatchOp::replace(
                PATH_GROUP_DISPLAY_NAME,
                display_name.clone(),
            )]),
            GroupOp::AddMembers { members, .. } => Some(vec![PatchOp {
                op: "add".into(),
                path: PATH_MEMBERS.into(),
                value: member_values(members),
            }]),
            GroupOp::RemoveMembers { members, .. } => Some(
                members
                    .iter()
                    .map(|m| PatchOp::remove(member_filter_path(m)))
                    .collect(),
            ),
            GroupOp::Create(_) | GroupOp::Replace { .. } | GroupOp::Delete { .. } => None,
        }
    }
}

/// `members[value eq "<id>"]`, the id as a JSON string literal (escaped).
pub fn member_filter_path(id: &str) -> String {
    format!("{PATH_MEMBERS}[value eq {}]", Value::from(id))
}

/// The spec as it may go to this app: without `externalId` when the profile
/// says the app does not store it.
fn spec_for(desired: &GroupSpec, profile: &Profile) -> GroupSpec {
    let mut spec = desired.clone();
    if !profile.external_id {
        spec.external_id = None;
    }
    spec
}

/// The operations that make `remote` match `desired`; empty when it does.
///
/// - no remote group: one `Create` with all desired members;
/// - with PATCH (`caps.patch`): a `Rename` when `displayName` differs, then
///   `AddMembers` and `RemoveMembers` for the member difference, each with at
///   most `max_members_per_patch` members (0 counts as 1), ids in order;
/// - without PATCH: one `Replace` with the full desired spec when the
///   profile allows PUT, else nothing: the caller must report the group as
///   not reconcilable. (Pass caps through [`Profile::apply`], which turns
///   PATCH on for profiles that forbid PUT.)
///
/// `externalId` is set by `Create` and `Replace` but not compared: a
/// difference alone plans nothing. With `profile.external_id = false` the
/// specs of `Create` and `Replace` carry no `externalId`.
pub fn diff_group(
    desired: &GroupSpec,
    remote: Option<&RemoteGroup>,
    caps: Capabilities,
    profile: &Profile,
    max_members_per_patch: usize,
) -> Vec<GroupOp> {
    let Some(remote) = remote else {
        return vec![GroupOp::Create(spec_for(desired, profile))];
    };
    let renamed = remote.display_name != desired.display_name;
    let to_add: Vec<String> = desired
        .members
        .difference(&remote.members)
        .cloned()
        .collect();
    let to_remove: Vec<String> = remote
        .members
        .difference(&desired.members)
        .cloned()
        .collect();
    if !renamed && to_add.is_empty() && to_remove.is_empty() {
        return Vec::new();
    }
    if !caps.patch {
        if profile.put_allowed {
            return vec![GroupOp::Replace {
                id: remote.id.clone(),
                spec: spec_for(desired, profile),
            }];
        }
        return Vec::new();
    }
    let chunk = max_members_per_patch.max(1);
    let mut ops = Vec::new();
    if renamed {
        ops.push(GroupOp::Rename {
            id: remote.id.clone(),
            display_name: desired.display_name.clone(),
        });
    }
    for members in to_add.chunks(chunk) {
        ops.push(GroupOp::AddMembers {
            id: remote.id.clone(),
            members: members.to_vec(),
        });
    }
    for members in to_remove.chunks(chunk) {
        ops.push(GroupOp::RemoveMembers {
            id: remote.id.clone(),
            members: members.to_vec(),
        });
    }
    ops
}

/// The operations that make the group gone: one `Delete` when it exists.
pub fn diff_group_delete(remote: Option<&RemoteGroup>) -> Vec<GroupOp> {
    remote
        .map(|r| vec![GroupOp::Delete { id: r.id.clone() }])
        .unwrap_or_default()
}

/// What the group looks like after a server applied `op` to `remote`
/// (`None`: no group). A `Create` yields a group with an empty `id` (the
/// server assigns it); an op on another id than `remote`'s, or on no group,
/// changes nothing. The ETag is cleared by every change: the server
/// assigned a new version.
pub fn apply_group_op(remote: Option<&RemoteGroup>, op: &GroupOp) -> Option<RemoteGroup> {
    if let GroupOp::Create(spec) = op {
        return Some(RemoteGroup {
            id: String::new(),
            display_name: spec.display_name.clone(),
            external_id: spec.external_id.clone(),
            members: spec.members.clone(),
            etag: None,
        });
    }
    let remote = remote?;
    if op.id() != Some(remote.id.as_str()) {
        return Some(remote.clone());
    }
    let mut r = remote.clone();
    match op {
        GroupOp::Create(_) => unreachable!("handled above"),
        GroupOp::Rename { display_name, .. } => r.display_name = display_name.clone(),
        GroupOp::AddMembers { members, .. } => r.members.extend(members.iter().cloned()),
        GroupOp::RemoveMembers { members, .. } => {
            for m in members {
                r.members.remove(m);
            }
        }
        GroupOp::Replace { spec, .. } => {
            r.display_name = spec.display_name.clone();
            r.external_id = spec.external_id.clone();
            r.members = spec.members.clone();
        }
        GroupOp::Delete { .. } => return None,
    }
    r.etag = None;
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(xs: &[&str]) -> BTreeSet<String> {
        xs.iter().map(|s| (*s).to_owned()).collect()
    }

    fn spec(name: &str, members: &[&str]) -> GroupSpec {
        GroupSpec {
            display_name: name.into(),
            external_id: Some("G-1".into()),
            members: ids(members),
        }
    }

    fn remote(name: &str, members: &[&str]) -> RemoteGroup {
        RemoteGroup {
            id: "g1".into(),
            display_name: name.into(),
            external_id: Some("G-1".into()),
            members: ids(members),
            etag: Some("W/\"1\"".into()),
        }
    }

    const PATCH: Capabilities = Capabilities {
        patch: true,
        filter: true,
        etag: true,
    };
    const NO_PATCH: Capabilities = Capabilities {
        patch: false,
        filter: true,
        etag: true,
    };

    #[test]
    fn to_scim_and_from_scim() {
        let s = spec("Eng", &["u2", "u1"]);
        let v = s.to_scim(&Profile::generic());
        assert_eq!(
            v,
            json!({
                "schemas": [CORE_GROUP_SCHEMA], "displayName": "Eng", "externalId": "G-1",
                "members": [{"value": "u1"}, {"value": "u2"}]
            })
        );
        let nextcloud = crate::profile::builtin("nextcloud").expect("nextcloud");
        assert!(s.to_scim(&nextcloud).get("externalId").is_none());
        let mut back = v.clone();
        back["id"] = "g1".into();
        back["meta"] = json!({"version": "W/\"2\""});
        back["members"][0]["display"] = "Ada".into();
        let r = RemoteGroup::from_scim(&back).expect("valid group");
        assert_eq!(r.id, "g1");
        assert_eq!(r.etag.as_deref(), Some("W/\"2\""));
        assert_eq!(r.to_spec(), s);
        let bare = RemoteGroup::from_scim(&json!({"id": "g", "displayname": "x"})).expect("bare");
        assert!(bare.members.is_empty() && bare.external_id.is_none());
        assert!(RemoteGroup::from_scim(&json!({"displayName": "x"})).is_err());
        assert!(RemoteGroup::from_scim(&json!({"id": "g"})).is_err());
        assert!(
            RemoteGroup::from_scim(&json!({"id": "g", "displayName": "x", "members": 1})).is_err()
        );
    }

    #[test]
    fn patch_ops_use_rfc_forms() {
        let add = GroupOp::AddMembers {
            id: "g".into(),
            members: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            serde_json::to_value(add.patch_ops().expect("patch")).expect("json"),
            json!([{"op": "add", "path": "members", "value": [{"value": "a"}, {"value": "b"}]}])
        );
        let remove = GroupOp::RemoveMembers {
            id: "g".into(),
            members: vec!["a\"b".into(), "c".into()],
        };
        assert_eq!(
            serde_json::to_value(remove.patch_ops().expect("patch")).expect("json"),
            json!([
                {"op": "remove", "path": "members[value eq \"a\\\"b\"]"},
                {"op": "remove", "path": "members[value eq \"c\"]"}
            ])
        );
        assert!(GroupOp::Delete { id: "g".into() }.patch_ops().is_none());
    }

    #[test]
    fn diff_creates_renames_and_chunks() {
        let g = Profile::generic();
        let want = spec("Eng", &["a", "b", "c", "d", "e"]);
        assert_eq!(
            diff_group(&want, None, PATCH, &g, 2),
            vec![GroupOp::Create(want.clone())]
        );
        let have = remote("Engineering", &["a", "x"]);
        assert_eq!(
            diff_group(&want, Some(&have), PATCH, &g, 2),
            vec![
                GroupOp::Rename {
                    id: "g1".into(),
                    display_name: "Eng".into()
                },
                GroupOp::AddMembers {
                    id: "g1".into(),
                    members: vec!["b".into(), "c".into()]
                },
                GroupOp::AddMembers {
                    id: "g1".into(),
                    members: vec!["d".into(), "e".into()]
                },
                GroupOp::RemoveMembers {
                    id: "g1".into(),
                    members: vec!["x".into()]
                },
            ]
        );
        let same = remote("Eng", &["a", "b", "c", "d", "e"]);
        assert!(diff_group(&want, Some(&same), PATCH, &g, 2).is_empty());
        assert!(diff_group(&want, Some(&same), NO_PATCH, &g, 2).is_empty());
        // 0 is taken as 1 rather than looping or sending nothing.
        assert_eq!(
            diff_group(&want, Some(&have), PATCH, &g, 0).len(),
            1 + 4 + 1
        );
        assert_eq!(diff_group_delete(None), vec![]);
        assert_eq!(
            diff_group_delete(Some(&have)),
            vec![GroupOp::Delete { id: "g1".into() }]
        );
    }

    #[test]
    fn diff_without_patch_puts_or_gives_up() {
        let want = spec("Eng", &["a"]);
        let have = remote("Eng", &["b"]);
        let nextcloud = crate::profile::builtin("nextcloud").expect("nextcloud");
        assert_eq!(
            diff_group(&want, Some(&have), NO_PATCH, &nextcloud, 10),
            vec![GroupOp::Replace {
                id: "g1".into(),
                spec: GroupSpec {
                    external_id: None,
                    ..want.clone()
                }
            }]
        );
        let no_put = Profile {
            put_allowed: false,
            ..Profile::generic()
        };
        assert!(diff_group(&want, Some(&have), NO_PATCH, &no_put, 10).is_empty());
        // Profile::apply turns PATCH on for such a profile.
        let caps = no_put.apply(Some(NO_PATCH));
        assert!(matches!(
            diff_group(&want, Some(&have), caps, &no_put, 10).as_slice(),
            [GroupOp::AddMembers { .. }, GroupOp::RemoveMembers { .. }]
        ));
    }

    #[test]
    fn apply_ignores_other_ids_and_deletes() {
        let have = remote("Eng", &["a"]);
        let other = GroupOp::Rename {
            id: "other".into(),
            display_name: "X".into(),
        };
        assert_eq!(apply_group_op(Some(&have), &other), Some(have.clone()));
        assert_eq!(apply_group_op(None, &other), None);
        assert_eq!(
            apply_group_op(Some(&have), &GroupOp::Delete { id: "g1".into() }),
            None
        );
    }

    fn member_set() -> impl Strategy<Value = BTreeSet<String>> {
        proptest::collection::btree_set("u[0-9]{1,2}", 0..12)
    }

    fn arb_remote() -> impl Strategy<Value = Option<RemoteGroup>> {
        proptest::option::of(("[A-C]{1,2}", member_set(), any::<bool>())).prop_map(|o| {
            o.map(|(name, members, ext)| RemoteGroup {
                id: "g1".into(),
                display_name: name,
                external_id: ext.then(|| "G-1".into()),
                members,
                etag: Some("W/\"1\"".into()),
            })
        })
    }

    proptest! {
        #[test]
        fn applying_the_plan_converges(
            name in "[A-C]{1,2}",
            members in member_set(),
            remote in arb_remote(),
            patch in any::<bool>(),
            put_allowed in any::<bool>(),
            external_id in any::<bool>(),
            max in 0usize..5,
        ) {
            let desired = GroupSpec { display_name: name, external_id: Some("G-1".into()), members };
            let caps = Capabilities { patch, filter: true, etag: true };
            let profile = Profile { put_allowed, external_id, ..Profile::generic() };
            let ops = diff_group(&desired, remote.as_ref(), caps, &profile, max);
            let mut state = remote.clone();
            for op in &ops {
                if remote.is_some() {
                    prop_assert!(!matches!(op, GroupOp::Create(_)), "create over an existing group");
                }
                if let GroupOp::AddMembers { members, .. } | GroupOp::RemoveMembers { members, .. } = op {
                    prop_assert!(!members.is_empty() && members.len() <= max.max(1));
                }
                state = apply_group_op(state.as_ref(), op);
            }
            if let Some(s) = state.as_mut() {
                if s.id.is_empty() {
                    s.id = "new".into();
                }
            }
            let again = diff_group(&desired, state.as_ref(), caps, &profile, max);
            if remote.is_some() && !patch && !put_allowed {
                // Neither PATCH nor PUT: nothing planned, nothing changed.
                prop_assert!(ops.is_empty());
                prop_assert!(again.is_empty());
            } else {
                prop_assert!(again.is_empty(), "{ops:?} then {again:?}");
                let s = state.as_ref().expect("group exists");
                prop_assert_eq!(&s.display_name, &desired.display_name);
                prop_assert_eq!(&s.members, &desired.members);
            }
            let gone = diff_group_delete(state.as_ref());
            let mut after = state.clone();
            for op in &gone {
                after = apply_group_op(after.as_ref(), op);
            }
            prop_assert!(after.is_none());
            prop_assert!(diff_group_delete(after.as_ref()).is_empty());
        }
    }
}
