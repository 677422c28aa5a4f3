//! What Tenure learns about one app's server by talking to it, beyond what
//! its profile and `/ServiceProviderConfig` say: real servers answer group
//! members by another key than the id, refuse a member-removal form, fail
//! when `count` is sent, or ignore `filter`. Each lesson is learned once
//! from a response, kept per app (the fanout stores it and records a
//! `ServerBehaviourLearned` event), and used by every later call.

use serde::{Deserialize, Serialize};

/// How lists are paged (RFC 7644 §3.4.2.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Paging {
    /// `startIndex` and `count`, as the RFC describes.
    #[default]
    StartIndexAndCount,
    /// `startIndex` only: the server failed (4xx/5xx) when `count` was
    /// sent, so pages are the server's own size.
    StartIndexOnly,
}

/// Which attribute of a group's `members[]` entries names the user
/// (RFC 7643 §4.2 says `value` is the id; some servers send the userName).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MemberKey {
    /// `value` is the user's id (the RFC).
    Id,
    /// `$ref` ends with the user's id (`…/Users/<id>`).
    Ref,
    /// `value` is the user's `userName` (case-insensitive).
    UserName,
    /// `display` is the user's `userName` (case-insensitive).
    Display,
}

impl MemberKey {
    /// In order of preference when two keys explain a group equally well.
    pub const ALL: [MemberKey; 4] = [
        MemberKey::Id,
        MemberKey::Ref,
        MemberKey::UserName,
        MemberKey::Display,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MemberKey::Id => "id",
            MemberKey::Ref => "$ref",
            MemberKey::UserName => "userName",
            MemberKey::Display => "display",
        }
    }
}

/// How members are taken out of a group, from the RFC's form to the
/// heaviest; a server that refuses one form (400, 405, 501) gets the next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoveForm {
    /// PATCH `remove` with path `members[value eq "<id>"]` (RFC 7644
    /// §3.5.2.2).
    #[default]
    PathFilter,
    /// PATCH `remove` with path `members` and a value list
    /// `[{"value": "<id>"}]`, as Authentik and Entra send it.
    ValueList,
    /// PATCH `replace` of `members` with the whole desired list.
    ReplaceMembers,
    /// PUT of the whole group; also what every membership change uses once
    /// PATCH on groups is refused outright (405/501).
    Put,
}

impl RemoveForm {
    /// The form to try after this one was refused; `None` after PUT.
    pub fn next(self) -> Option<RemoveForm> {
        match self {
            RemoveForm::PathFilter => Some(RemoveForm::ValueList),
            RemoveForm::ValueList => Some(RemoveForm::ReplaceMembers),
            RemoveForm::ReplaceMembers => Some(RemoveForm::Put),
            RemoveForm::Put => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RemoveForm::PathFilter => "path_filter",
            RemoveForm::ValueList => "value_list",
            RemoveForm::ReplaceMembers => "replace_members",
            RemoveForm::Put => "put",
        }
    }
}

/// Everything learned about one app's server. The default is what the RFC
/// promises; each field moves away from it only on evidence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Learned {
    pub paging: Paging,
    /// The server answered a filtered look-up with resources that do not
    /// match the filter, so look-ups scan the whole list.
    pub filter_ignored: bool,
    /// `None` until a group with members Tenure knows was read.
    pub member_key: Option<MemberKey>,
    pub remove_form: RemoveForm,
}

/// One thing learned, with the evidence, for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lesson {
    /// `paging`, `filter`, `member_key` or `remove_form`.
    pub what: String,
    pub value: String,
    /// The response that taught it, e.g. `HTTP 500 on GET /Users?count=…`.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_forms_fall_back_in_order_and_end_at_put() {
        let mut form = RemoveForm::default();
        let mut seen = vec![form];
        while let Some(next) = form.next() {
            assert!(next > form);
            form = next;
            seen.push(form);
        }
        assert_eq!(
            seen,
            [
                RemoveForm::PathFilter,
                RemoveForm::ValueList,
                RemoveForm::ReplaceMembers,
                RemoveForm::Put
            ]
        );
    }

    #[test]
    fn learned_reads_back_and_tolerates_missing_fields() {
        let l = Learned {
            paging: Paging::StartIndexOnly,
            filter_ignored: true,
            member_key: Some(MemberKey::UserName),
            remove_form: RemoveForm::ReplaceMembers,
        };
        let v = serde_json::to_value(l).expect("json");
        assert_eq!(v["member_key"], "userName");
        assert_eq!(serde_json::from_value::<Learned>(v).expect("back"), l);
        let old: Learned =
            serde_json::from_value(serde_json::json!({"paging": "start_index_only"}))
                .expect("partial");
        assert_eq!(old.paging, Paging::StartIndexOnly);
        assert_eq!(old.remove_form, RemoveForm::PathFilter);
    }
}
