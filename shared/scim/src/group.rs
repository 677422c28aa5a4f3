//! SCIM Groups (RFC 7643 §4.2): the desired and remote group models, their
//! mapping to SCIM JSON, and the pure group reconciliation [`diff_group`].
//!
//! Members are remote user ids, never HR ids: the caller maps people to the
//! app's user ids before planning. Servers do not all return members by id
//! (RFC 7643 §4.2): some answer `value` with the userName, or only a
//! `$ref`; [`MemberDirectory`] and [`learn_member_key`] find which key a
//! server uses and [`normalise_members`] turns its answer back into ids, so
//! the diff compares like with like.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::diff::{Capabilities, PatchOp};
use crate::error::ScimError;
use crate::learned::{MemberKey, RemoveForm};
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
    /// A digest of the name and members: the desired state the loop
    /// detector counts repeated changes towards.
    pub fn fingerprint(&self) -> String {
        let members: Vec<&String> = self.members.iter().collect();
        digest(&serde_json::to_string(&(&self.display_name, members)).unwrap_or_default())
    }

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
        let mut group = Value::Object(group);
        // The profile's group constants (see `crate::shape::GroupShape`).
        crate::shape::shape_group(&mut group, &profile.shape);
        group
    }
}

/// `[{"value": id}, ...]`, the member list form of RFC 7643 §4.2.
fn member_values<'a>(ids: impl IntoIterator<Item = &'a String>) -> Value {
    Value::Array(ids.into_iter().map(|id| json!({ "value": id })).collect())
}

/// One entry of a group's `members` as the server sent it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMember {
    pub value: Option<String>,
    /// `$ref`, a URI ending in the member's id.
    pub reference: Option<String>,
    pub display: Option<String>,
}

/// A Group as a SCIM server returned it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteGroup {
    pub id: String,
    pub display_name: String,
    pub external_id: Option<String>,
    /// `members[].value` as sent: remote ids on an RFC server, but see
    /// [`normalise_members`].
    pub members: BTreeSet<String>,
    /// The `members` entries in full, when read from a server; empty for a
    /// group built locally (then `members` are the ids).
    #[serde(default)]
    pub member_refs: Vec<RemoteMember>,
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
        let member_refs: Vec<RemoteMember> = match get_ci(obj, "members") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_object)
                .map(|m| RemoteMember {
                    value: str_of(m, "value").filter(|s| !s.is_empty()),
                    reference: str_of(m, "$ref").filter(|s| !s.is_empty()),
                    display: str_of(m, "display").filter(|s| !s.is_empty()),
                })
                .filter(|m| m.value.is_some() || m.reference.is_some() || m.display.is_some())
                .collect(),
            Some(_) => {
                return Err(ScimError::InvalidResource(format!(
                    "Group {id}: members is not an array"
                )))
            }
        };
        let members = member_refs.iter().filter_map(|m| m.value.clone()).collect();
        let meta = get_ci(obj, "meta").and_then(Value::as_object);
        Ok(RemoteGroup {
            display_name,
            external_id: str_of(obj, "externalId"),
            members,
            member_refs,
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

/// The accounts Tenure knows in one app (remote id and userName), to tell
/// which of a group's members are whose, whatever key the server uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberDirectory {
    ids: BTreeSet<String>,
    /// Lower-cased userName → remote id (`userName` is case-insensitive,
    /// RFC 7643 §4.1.1).
    by_user_name: BTreeMap<String, String>,
}

impl MemberDirectory {
    /// From `(remote id, userName)` pairs; a userName shared by two ids is
    /// dropped rather than guessed.
    pub fn new(accounts: impl IntoIterator<Item = (String, Option<String>)>) -> Self {
        let mut dir = MemberDirectory::default();
        let mut clash = BTreeSet::new();
        for (id, user_name) in accounts {
            if id.is_empty() {
                continue;
            }
            if let Some(name) = user_name.filter(|n| !n.is_empty()) {
                let key = name.to_lowercase();
                match dir.by_user_name.get(&key) {
                    Some(other) if other != &id => {
                        clash.insert(key);
                    }
                    _ => {
                        dir.by_user_name.insert(key, id.clone());
                    }
                }
            }
            dir.ids.insert(id);
        }
        for key in clash {
            dir.by_user_name.remove(&key);
        }
        dir
    }

    /// The remote id of `member` read by `key`, when it is an account
    /// Tenure knows.
    pub fn resolve(&self, member: &RemoteMember, key: MemberKey) -> Option<String> {
        match key {
            MemberKey::Id => member.value.clone().filter(|v| self.ids.contains(v)),
            MemberKey::Ref => member
                .reference
                .as_deref()
                .and_then(ref_id)
                .filter(|v| self.ids.contains(v)),
            MemberKey::UserName => member
                .value
                .as_ref()
                .and_then(|v| self.by_user_name.get(&v.to_lowercase()).cloned()),
            MemberKey::Display => member
                .display
                .as_ref()
                .and_then(|v| self.by_user_name.get(&v.to_lowercase()).cloned()),
        }
    }
}

/// The last path segment of a `$ref` (`https://h/scim/v2/Users/u1` → `u1`),
/// percent-decoded.
fn ref_id(reference: &str) -> Option<String> {
    let path = reference.split(['?', '#']).next().unwrap_or_default();
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    (!last.is_empty()).then(|| percent_decode(last))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The entries of a group, or its `members` values when it was built
/// locally.
fn entries(group: &RemoteGroup) -> Vec<RemoteMember> {
    if !group.member_refs.is_empty() || group.members.is_empty() {
        return group.member_refs.clone();
    }
    group
        .members
        .iter()
        .map(|v| RemoteMember {
            value: Some(v.clone()),
            ..RemoteMember::default()
        })
        .collect()
}

/// How many of the group's members `key` resolves to known accounts.
pub fn resolved_by(group: &RemoteGroup, dir: &MemberDirectory, key: MemberKey) -> usize {
    entries(group)
        .iter()
        .filter(|m| dir.resolve(m, key).is_some())
        .count()
}

/// Which key this server names group members by, judged from one group
/// read: the key that resolves the most members to known accounts (ties go
/// to the earlier of [`MemberKey::ALL`], the id first). `current`, what was
/// learned before, is kept unless another key explains strictly more
/// members, so one odd group cannot flip it back and forth. `None` when no
/// key resolves any member (an empty group, or only unknown members): there
/// is nothing to learn from.
pub fn learn_member_key(
    group: &RemoteGroup,
    dir: &MemberDirectory,
    current: Option<MemberKey>,
) -> Option<MemberKey> {
    let mut best: Option<(MemberKey, usize)> = None;
    for key in MemberKey::ALL {
        let n = resolved_by(group, dir, key);
        if n > 0 && best.is_none_or(|(_, b)| n > b) {
            best = Some((key, n));
        }
    }
    match (current, best) {
        (Some(cur), Some((_, n))) if resolved_by(group, dir, cur) >= n => Some(cur),
        (_, Some((key, _))) => Some(key),
        (cur, None) => cur,
    }
}

/// The group with its members as remote ids: each entry resolved by `key`
/// to a known account's id; an entry no known account matches keeps the
/// best identifier the server gave for it (the id in `$ref`, else `value`,
/// else `display`), so it can still be removed.
pub fn normalise_members(
    group: &RemoteGroup,
    dir: &MemberDirectory,
    key: MemberKey,
) -> RemoteGroup {
    let members = entries(group)
        .iter()
        .filter_map(|m| {
            dir.resolve(m, key).or_else(|| {
                m.reference
                    .as_deref()
                    .and_then(ref_id)
                    .or_else(|| m.value.clone())
                    .or_else(|| m.display.clone())
            })
        })
        .collect();
    RemoteGroup {
        members,
        member_refs: Vec::new(),
        ..group.clone()
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
    /// PATCH `remove members` with a value list `[{"value": id}, …]`, the
    /// form Authentik and Entra send.
    RemoveMemberValues { id: String, members: Vec<String> },
    /// PATCH `replace members` with the whole member list.
    ReplaceMembers { id: String, members: Vec<String> },
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
            | GroupOp::RemoveMemberValues { id, .. }
            | GroupOp::ReplaceMembers { id, .. }
            | GroupOp::Replace { id, .. }
            | GroupOp::Delete { id } => Some(id),
        }
    }

    /// Whether this op is how members leave the group: the ops whose form a
    /// server may refuse, and [`RemoveForm`] then moves on from.
    pub fn removes_members(&self) -> bool {
        matches!(
            self,
            GroupOp::RemoveMembers { .. }
                | GroupOp::RemoveMemberValues { .. }
                | GroupOp::ReplaceMembers { .. }
        )
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
            GroupOp::RemoveMemberValues { members, .. } => Some(vec![PatchOp {
                op: "remove".into(),
                path: PATH_MEMBERS.into(),
                value: member_values(members),
            }]),
            GroupOp::ReplaceMembers { members, .. } => {
                Some(vec![PatchOp::replace(PATH_MEMBERS, member_values(members))])
            }
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
/// [`diff_group_with`] with the RFC's removal form.
pub fn diff_group(
    desired: &GroupSpec,
    remote: Option<&RemoteGroup>,
    caps: Capabilities,
    profile: &Profile,
    max_members_per_patch: usize,
) -> Vec<GroupOp> {
    diff_group_with(
        desired,
        remote,
        caps,
        profile,
        max_members_per_patch,
        RemoveForm::PathFilter,
    )
}

/// The operations that make `remote` match `desired`; empty when it does.
/// `remote`'s members must be ids: pass a server's answer through
/// [`normalise_members`] first.
///
/// - no remote group: one `Create` with all desired members;
/// - PATCH usable on groups (`caps.patch`, `profile.group_patch`, and
///   `form` is not [`RemoveForm::Put`]): a `Rename` when `displayName`
///   differs, `AddMembers` for the members to add, and the removals in
///   `form`: `RemoveMembers` (path filter) or `RemoveMemberValues` (value
///   list), each with at most `max_members_per_patch` members (0 counts as
///   1), ids in order; or one `ReplaceMembers` with the whole desired list,
///   which also adds;
/// - otherwise one `Replace` (PUT) with the full desired spec when the
///   profile allows PUT, else nothing: the caller must report the group as
///   not reconcilable. (Pass caps through [`Profile::apply`], which turns
///   PATCH on for profiles that forbid PUT.) Under `form = Put` with PUT
///   forbidden the removals fall back to `ReplaceMembers`.
///
/// `externalId` is set by `Create` and `Replace` but not compared: a
/// difference alone plans nothing. With `profile.external_id = false` the
/// specs of `Create` and `Replace` carry no `externalId`.
pub fn diff_group_with(
    desired: &GroupSpec,
    remote: Option<&RemoteGroup>,
    caps: Capabilities,
    profile: &Profile,
    max_members_per_patch: usize,
    form: RemoveForm,
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
    let patch = caps.patch && profile.group_patch;
    if !patch || form == RemoveForm::Put {
        if profile.put_allowed {
            return vec![GroupOp::Replace {
                id: remote.id.clone(),
                spec: spec_for(desired, profile),
            }];
        }
        if !patch {
            return Vec::new();
        }
    }
    let chunk = max_members_per_patch.max(1);
    let mut ops = Vec::new();
    if renamed {
        ops.push(GroupOp::Rename {
            id: remote.id.clone(),
            display_name: desired.display_name.clone(),
        });
    }
    let replace =
        !to_remove.is_empty() && matches!(form, RemoveForm::ReplaceMembers | RemoveForm::Put);
    if replace {
        ops.push(GroupOp::ReplaceMembers {
            id: remote.id.clone(),
            members: desired.members.iter().cloned().collect(),
        });
        return ops;
    }
    for members in to_add.chunks(chunk) {
        ops.push(GroupOp::AddMembers {
            id: remote.id.clone(),
            members: members.to_vec(),
        });
    }
    for members in to_remove.chunks(chunk) {
        let (id, members) = (remote.id.clone(), members.to_vec());
        ops.push(match form {
            RemoveForm::ValueList => GroupOp::RemoveMemberValues { id, members },
            _ => GroupOp::RemoveMembers { id, members },
        });
    }
    ops
}

/// A short hex SHA-256 digest of `text`, for fingerprints stored to
/// recognise the same input later.
pub fn digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

/// What one sync would change in one group, stated so that the same change
/// planned again is recognised: the name it gets and the members it gains
/// and loses (ids, sorted), whatever form the calls take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChange {
    pub rename: Option<String>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl GroupChange {
    /// `None` when `remote` (ids, see [`normalise_members`]) already
    /// matches `desired`, or when there is no remote group yet (a create is
    /// not a repeatable no-op).
    pub fn between(desired: &GroupSpec, remote: Option<&RemoteGroup>) -> Option<GroupChange> {
        let remote = remote?;
        let change = GroupChange {
            rename: (remote.display_name != desired.display_name)
                .then(|| desired.display_name.clone()),
            add: desired
                .members
                .difference(&remote.members)
                .cloned()
                .collect(),
            remove: remote
                .members
                .difference(&desired.members)
                .cloned()
                .collect(),
        };
        (change.rename.is_some() || !change.add.is_empty() || !change.remove.is_empty())
            .then_some(change)
    }

    /// A short stable digest, stored to spot the same change next time.
    pub fn fingerprint(&self) -> String {
        digest(&serde_json::to_string(self).unwrap_or_default())
    }

    /// For logs and events: `+2 -1 rename "Eng"`, with up to a few ids.
    pub fn summary(&self) -> String {
        let few = |ids: &[String]| {
            let shown: Vec<&str> = ids.iter().take(5).map(String::as_str).collect();
            let more = ids.len().saturating_sub(5);
            if more > 0 {
                format!("{} and {more} more", shown.join(", "))
            } else {
                shown.join(", ")
            }
        };
        let mut parts = Vec::new();
        if let Some(n) = &self.rename {
            parts.push(format!("rename to {n:?}"));
        }
        if !self.add.is_empty() {
            parts.push(format!("add {}", few(&self.add)));
        }
        if !self.remove.is_empty() {
            parts.push(format!("remove {}", few(&self.remove)));
        }
        parts.join("; ")
    }
}

/// What to do with a group that needs a change again, given how many
/// consecutive syncs already sent a change towards the same desired state
/// (`repeats`, towards the state with fingerprint `last`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepeatVerdict {
    /// Nothing to change: the count starts over.
    Converged,
    /// Send it; `repeats` is the count once this sync has sent it.
    Send { repeats: u32 },
    /// `limit` syncs in a row sent a change towards this same desired state
    /// and a change is needed again: the server accepts the writes but the
    /// group does not end up as wanted (it ignores them, or they undo each
    /// other, or Tenure misreads the answer). Stop writing, set it aside.
    Stuck { repeats: u32 },
}

/// The loop detector's decision for one group. `target` is the
/// fingerprint of the desired group ([`GroupSpec::fingerprint`]): while it
/// stays the same, every sync that still finds a change counts on, whether
/// the change is the same each time or flips back and forth; a new target
/// (someone joined or left) starts at 1. A `limit` of 0 counts as 1.
pub fn repeat_verdict(
    change: Option<&GroupChange>,
    target: &str,
    last: Option<&str>,
    repeats: u32,
    limit: u32,
) -> RepeatVerdict {
    if change.is_none() {
        return RepeatVerdict::Converged;
    }
    if last != Some(target) {
        return RepeatVerdict::Send { repeats: 1 };
    }
    if repeats >= limit.max(1) {
        return RepeatVerdict::Stuck { repeats };
    }
    RepeatVerdict::Send {
        repeats: repeats.saturating_add(1),
    }
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
            member_refs: Vec::new(),
            etag: None,
        });
    }
    let remote = remote?;
    if op.id() != Some(remote.id.as_str()) {
        return Some(remote.clone());
    }
    let mut r = remote.clone();
    r.member_refs.clear();
    match op {
        GroupOp::Create(_) => unreachable!("handled above"),
        GroupOp::Rename { display_name, .. } => r.display_name = display_name.clone(),
        GroupOp::AddMembers { members, .. } => r.members.extend(members.iter().cloned()),
        GroupOp::RemoveMembers { members, .. } | GroupOp::RemoveMemberValues { members, .. } => {
            for m in members {
                r.members.remove(m);
            }
        }
        GroupOp::ReplaceMembers { members, .. } => r.members = members.iter().cloned().collect(),
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
            member_refs: Vec::new(),
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

    fn dir() -> MemberDirectory {
        MemberDirectory::new([
            ("u1".to_string(), Some("Ada@Example.com".to_string())),
            ("u2".to_string(), Some("bob@example.com".to_string())),
            ("u3".to_string(), None),
        ])
    }

    fn read(members: Value) -> RemoteGroup {
        RemoteGroup::from_scim(&json!({"id": "g1", "displayName": "Eng", "members": members}))
            .expect("group")
    }

    #[test]
    fn the_member_key_is_learned_from_what_the_server_returns() {
        let d = dir();
        let by_id = read(json!([{"value": "u1"}, {"value": "u2", "display": "Bob"}]));
        assert_eq!(learn_member_key(&by_id, &d, None), Some(MemberKey::Id));
        let by_name = read(json!([{"value": "ada@example.com"}, {"value": "BOB@example.com"}]));
        assert_eq!(
            learn_member_key(&by_name, &d, None),
            Some(MemberKey::UserName)
        );
        let by_ref = read(json!([{"$ref": "https://h/scim/v2/Users/u1", "value": "ada"}]));
        assert_eq!(learn_member_key(&by_ref, &d, None), Some(MemberKey::Ref));
        let by_display = read(json!([{"value": "x-1", "display": "bob@example.com"}]));
        assert_eq!(
            learn_member_key(&by_display, &d, None),
            Some(MemberKey::Display)
        );
        // Nothing known in the group: nothing to learn, the old answer stays.
        let strangers = read(json!([{"value": "zed"}]));
        assert_eq!(learn_member_key(&strangers, &d, None), None);
        assert_eq!(
            learn_member_key(&strangers, &d, Some(MemberKey::UserName)),
            Some(MemberKey::UserName)
        );
        assert_eq!(
            learn_member_key(&read(json!([])), &d, Some(MemberKey::Ref)),
            Some(MemberKey::Ref)
        );
        // Checked on later reads: kept while it explains as much as any
        // other key, replaced when another explains more.
        assert_eq!(
            learn_member_key(&by_id, &d, Some(MemberKey::UserName)),
            Some(MemberKey::Id)
        );
        let both = read(json!([{"value": "u1", "$ref": "/Users/u1"}]));
        assert_eq!(
            learn_member_key(&both, &d, Some(MemberKey::Ref)),
            Some(MemberKey::Ref)
        );
    }

    #[test]
    fn normalised_members_are_ids_and_unknown_members_keep_a_usable_value() {
        let d = dir();
        let g = read(json!([
            {"value": "ADA@example.com"},
            {"value": "stranger", "$ref": "https://h/v2/Users/s%2F9"},
            {"value": "carol"}
        ]));
        let n = normalise_members(&g, &d, MemberKey::UserName);
        assert_eq!(n.members, ids(&["carol", "s/9", "u1"]));
        assert!(n.member_refs.is_empty());
        // Read by id, the same group has no known member.
        assert_eq!(
            normalise_members(&g, &d, MemberKey::Id).members,
            ids(&["ADA@example.com", "carol", "s/9"])
        );
        // A userName two accounts claim resolves to neither.
        let clash = MemberDirectory::new([
            ("a".to_string(), Some("x".to_string())),
            ("b".to_string(), Some("X".to_string())),
        ]);
        let m = RemoteMember {
            value: Some("x".into()),
            ..RemoteMember::default()
        };
        assert_eq!(clash.resolve(&m, MemberKey::UserName), None);
        assert_eq!(
            clash.resolve(
                &RemoteMember {
                    value: Some("a".into()),
                    ..m
                },
                MemberKey::Id
            ),
            Some("a".into())
        );
    }

    #[test]
    fn removal_forms_and_nextcloud_put() {
        let g = Profile::generic();
        let want = spec("Eng", &["a", "b"]);
        let have = remote("Eng", &["a", "x"]);
        let plan = |form| diff_group_with(&want, Some(&have), PATCH, &g, 10, form);
        assert_eq!(
            plan(RemoveForm::ValueList),
            vec![
                GroupOp::AddMembers {
                    id: "g1".into(),
                    members: vec!["b".into()]
                },
                GroupOp::RemoveMemberValues {
                    id: "g1".into(),
                    members: vec!["x".into()]
                },
            ]
        );
        assert_eq!(
            plan(RemoveForm::ReplaceMembers),
            vec![GroupOp::ReplaceMembers {
                id: "g1".into(),
                members: vec!["a".into(), "b".into()]
            }]
        );
        assert!(matches!(
            plan(RemoveForm::Put).as_slice(),
            [GroupOp::Replace { .. }]
        ));
        // Adds alone keep the light form whatever removals need.
        let more = remote("Eng", &["a"]);
        assert!(matches!(
            diff_group_with(
                &want,
                Some(&more),
                PATCH,
                &g,
                10,
                RemoveForm::ReplaceMembers
            )
            .as_slice(),
            [GroupOp::AddMembers { .. }]
        ));
        // PUT forbidden: the heaviest PATCH form instead.
        let no_put = Profile {
            put_allowed: false,
            ..Profile::generic()
        };
        assert!(matches!(
            diff_group_with(&want, Some(&have), PATCH, &no_put, 10, RemoveForm::Put).as_slice(),
            [GroupOp::ReplaceMembers { .. }]
        ));
        // Nextcloud: PUT with the full list even when discovery says PATCH.
        let nextcloud = crate::profile::builtin("nextcloud").expect("nextcloud");
        assert_eq!(
            diff_group_with(
                &want,
                Some(&have),
                PATCH,
                &nextcloud,
                10,
                RemoveForm::PathFilter
            ),
            vec![GroupOp::Replace {
                id: "g1".into(),
                spec: GroupSpec {
                    external_id: None,
                    ..want.clone()
                }
            }]
        );
        let value_list = GroupOp::RemoveMemberValues {
            id: "g".into(),
            members: vec!["a".into()],
        };
        assert_eq!(
            serde_json::to_value(value_list.patch_ops().expect("patch")).expect("json"),
            json!([{"op": "remove", "path": "members", "value": [{"value": "a"}]}])
        );
        let replace = GroupOp::ReplaceMembers {
            id: "g".into(),
            members: vec![],
        };
        assert_eq!(
            serde_json::to_value(replace.patch_ops().expect("patch")).expect("json"),
            json!([{"op": "replace", "path": "members", "value": []}])
        );
        assert!(value_list.removes_members() && replace.removes_members());
        assert!(!GroupOp::AddMembers {
            id: "g".into(),
            members: vec![]
        }
        .removes_members());
    }

    #[test]
    fn the_same_change_stops_after_the_limit() {
        let want = spec("Eng", &["a"]);
        let have = remote("Eng", &["a", "leaver"]);
        let change = GroupChange::between(&want, Some(&have)).expect("a change");
        assert_eq!(change.remove, ["leaver"]);
        assert_eq!(change.summary(), "remove leaver");
        assert_eq!(GroupChange::between(&want, None), None);
        assert_eq!(
            GroupChange::between(&want, Some(&remote("Eng", &["a"]))),
            None
        );
        let target = want.fingerprint();
        assert_eq!(target, want.clone().fingerprint(), "stable");
        assert_ne!(target, spec("Eng", &["a", "b"]).fingerprint());
        assert_eq!(
            repeat_verdict(None, &target, Some(&target), 5, 3),
            RepeatVerdict::Converged
        );
        // Three syncs send a change towards the same group, the fourth does
        // not, whether the change repeats or flips back and forth.
        let flip = GroupChange {
            rename: None,
            add: vec!["leaver".into()],
            remove: vec![],
        };
        let mut last: Option<String> = None;
        let mut repeats = 0;
        let mut sent = 0;
        for round in 0..10 {
            let c = if round % 2 == 0 { &change } else { &flip };
            match repeat_verdict(Some(c), &target, last.as_deref(), repeats, 3) {
                RepeatVerdict::Send { repeats: r } => {
                    sent += 1;
                    repeats = r;
                    last = Some(target.clone());
                }
                RepeatVerdict::Stuck { repeats: r } => {
                    assert_eq!(r, 3);
                    break;
                }
                RepeatVerdict::Converged => unreachable!(),
            }
        }
        assert_eq!(sent, 3);
        // A new desired group starts over.
        let other = spec("Eng", &["a", "b"]).fingerprint();
        assert_eq!(
            repeat_verdict(Some(&change), &other, Some(&target), 3, 3),
            RepeatVerdict::Send { repeats: 1 }
        );
        assert_eq!(
            repeat_verdict(Some(&change), &target, Some(&target), 1, 0),
            RepeatVerdict::Stuck { repeats: 1 }
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
                member_refs: Vec::new(),
                etag: Some("W/\"1\"".into()),
            })
        })
    }

    proptest! {
        /// Whichever key the server names members by, and in whatever case
        /// it sends userNames, the members read back are exactly the ids
        /// put in, and a second read keeps the learned key.
        #[test]
        fn members_read_back_as_ids_whatever_the_key(
            n in 1usize..8,
            picked in proptest::collection::btree_set(0usize..8, 1..8),
            key in proptest::sample::select(MemberKey::ALL.to_vec()),
            upper in any::<bool>(),
        ) {
            let dir = MemberDirectory::new(
                (0..n).map(|i| (format!("u{i}"), Some(format!("User{i}@Example.com")))),
            );
            let ids: BTreeSet<String> =
                picked.iter().filter(|i| **i < n).map(|i| format!("u{i}")).collect();
            prop_assume!(!ids.is_empty());
            let name = |id: &str| {
                let n = format!("user{}@example.com", &id[1..]);
                if upper { n.to_uppercase() } else { n }
            };
            let members: Vec<Value> = ids
                .iter()
                .map(|id| match key {
                    MemberKey::Id => json!({"value": id}),
                    MemberKey::Ref => json!({"$ref": format!("https://h/scim/v2/Users/{id}")}),
                    MemberKey::UserName => json!({"value": name(id)}),
                    MemberKey::Display => json!({"value": format!("x{id}"), "display": name(id)}),
                })
                .collect();
            let g = read(Value::Array(members));
            let learned = learn_member_key(&g, &dir, None);
            prop_assert!(learned.is_some());
            let k = learned.unwrap_or(MemberKey::Id);
            prop_assert_eq!(&normalise_members(&g, &dir, k).members, &ids);
            prop_assert_eq!(learn_member_key(&g, &dir, Some(k)), Some(k));
        }

        #[test]
        fn applying_the_plan_converges(
            name in "[A-C]{1,2}",
            members in member_set(),
            remote in arb_remote(),
            patch in any::<bool>(),
            put_allowed in any::<bool>(),
            external_id in any::<bool>(),
            group_patch in any::<bool>(),
            form in proptest::sample::select(vec![
                RemoveForm::PathFilter, RemoveForm::ValueList, RemoveForm::ReplaceMembers, RemoveForm::Put,
            ]),
            max in 0usize..5,
        ) {
            let desired = GroupSpec { display_name: name, external_id: Some("G-1".into()), members };
            let caps = Capabilities { patch, filter: true, etag: true };
            let profile = Profile { put_allowed, external_id, group_patch, ..Profile::generic() };
            let ops = diff_group_with(&desired, remote.as_ref(), caps, &profile, max, form);
            let patch = patch && group_patch;
            let mut state = remote.clone();
            for op in &ops {
                if remote.is_some() {
                    prop_assert!(!matches!(op, GroupOp::Create(_)), "create over an existing group");
                }
                if let GroupOp::AddMembers { members, .. }
                | GroupOp::RemoveMembers { members, .. }
                | GroupOp::RemoveMemberValues { members, .. } = op {
                    prop_assert!(!members.is_empty() && members.len() <= max.max(1));
                }
                state = apply_group_op(state.as_ref(), op);
            }
            if let Some(s) = state.as_mut() {
                if s.id.is_empty() {
                    s.id = "new".into();
                }
            }
            let again = diff_group_with(&desired, state.as_ref(), caps, &profile, max, form);
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
