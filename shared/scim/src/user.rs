//! Desired users (what Tenure wants an app to hold) and remote users (what a
//! SCIM server says it holds), and their mapping to SCIM JSON.
//!
//! Convention shared with [`mod@crate::diff`]: an empty string in a [`UserSpec`]
//! means "no value", so it is left out of the JSON, and a remote attribute that
//! is absent or empty compares equal to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::ScimError;
use crate::profile::Profile;
use crate::shape::{self, Shape, PATH_EMAILS_PRIMARY, PATH_EMAILS_TYPE, PATH_NAME_FORMATTED};

pub const CORE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// The account an app should hold for a person.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    pub user_name: String,
    pub external_id: String,
    pub given_name: String,
    pub family_name: String,
    pub display_name: String,
    pub email: String,
    pub active: bool,
    pub title: Option<String>,
    pub department: Option<String>,
    pub employee_number: Option<String>,
    #[serde(default)]
    pub cost_center: Option<String>,
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(default)]
    pub division: Option<String>,
    /// The manager's id in the same app (`manager.value` of the enterprise
    /// extension), not the manager's HR id.
    #[serde(default)]
    pub manager: Option<String>,
    /// `name.formatted` from the app's mapping; without one, a shape with
    /// `name_formatted` joins given and family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_formatted: Option<String>,
    /// Attributes Tenure does not model, by canonical path (see
    /// [`crate::shape`]), from the app's free mappings: a value to send, or
    /// `Null` for "unset" (removed when the server has one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Value>,
}

/// `None` for an empty string, so "unset" has one spelling everywhere.
pub(crate) fn non_empty(s: &str) -> Option<&str> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

pub(crate) fn non_empty_opt(s: &Option<String>) -> Option<&str> {
    s.as_deref().and_then(non_empty)
}

/// The enterprise `manager` value Tenure writes: a reference by id.
pub(crate) fn manager_ref(id: &str) -> Value {
    json!({ "value": id })
}

/// The `emails` value Tenure writes: a single primary work address, with
/// `type` and `primary` unless the shape leaves them out.
pub(crate) fn work_emails(email: &str, shape: &Shape) -> Value {
    let mut entry = Map::new();
    entry.insert("value".into(), email.into());
    if !shape.omits(PATH_EMAILS_TYPE) {
        entry.insert("type".into(), "work".into());
    }
    if !shape.omits(PATH_EMAILS_PRIMARY) {
        entry.insert("primary".into(), true.into());
    }
    Value::Array(vec![Value::Object(entry)])
}

/// Whether Tenure manages `name.formatted` for this spec and shape, and
/// with which value: `None` when it is not sent (and so not compared);
/// `Some(None)` when it is managed but empty.
pub(crate) fn sent_formatted(spec: &UserSpec, shape: &Shape) -> Option<Option<String>> {
    if shape.omits(PATH_NAME_FORMATTED) {
        return None;
    }
    if let Some(mapped) = &spec.name_formatted {
        return Some(non_empty(mapped).map(str::to_owned));
    }
    if !shape.name_formatted {
        return None;
    }
    let joined = [spec.given_name.trim(), spec.family_name.trim()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    Some(non_empty(&joined).map(str::to_owned))
}

impl UserSpec {
    /// The full SCIM User resource, as sent by POST and PUT, unshaped.
    pub fn to_scim(&self) -> Value {
        self.to_scim_shaped(&Shape::default(), true)
    }

    /// [`UserSpec::to_scim`] under an app's profile: without `externalId`
    /// when the app does not store it, and shaped by the profile's
    /// [`Shape`] (attributes omitted, `name.formatted`, constants).
    pub fn to_scim_with(&self, profile: &Profile) -> Value {
        self.to_scim_shaped(&profile.shape, profile.external_id)
    }

    fn to_scim_shaped(&self, shape: &Shape, external_id: bool) -> Value {
        use crate::diff::{
            PATH_COST_CENTER, PATH_DEPARTMENT, PATH_DISPLAY_NAME, PATH_DIVISION, PATH_EMAILS,
            PATH_EMPLOYEE_NUMBER, PATH_EXTERNAL_ID, PATH_FAMILY_NAME, PATH_GIVEN_NAME,
            PATH_MANAGER, PATH_ORGANIZATION, PATH_TITLE,
        };
        let sends = |path: &str| !shape.omits(path);
        let mut user = Map::new();
        let mut schemas = vec![Value::from(CORE_USER_SCHEMA)];
        user.insert("userName".into(), self.user_name.clone().into());
        if external_id && sends(PATH_EXTERNAL_ID) {
            if let Some(v) = non_empty(&self.external_id) {
                user.insert("externalId".into(), v.into());
            }
        }
        let mut name = Map::new();
        if let Some(v) = non_empty(&self.given_name).filter(|_| sends(PATH_GIVEN_NAME)) {
            name.insert("givenName".into(), v.into());
        }
        if let Some(v) = non_empty(&self.family_name).filter(|_| sends(PATH_FAMILY_NAME)) {
            name.insert("familyName".into(), v.into());
        }
        if let Some(Some(v)) = sent_formatted(self, shape) {
            name.insert("formatted".into(), v.into());
        }
        if !name.is_empty() {
            user.insert("name".into(), Value::Object(name));
        }
        if let Some(v) = non_empty(&self.display_name).filter(|_| sends(PATH_DISPLAY_NAME)) {
            user.insert("displayName".into(), v.into());
        }
        if let Some(v) = non_empty(&self.email).filter(|_| sends(PATH_EMAILS)) {
            user.insert("emails".into(), work_emails(v, shape));
        }
        user.insert("active".into(), self.active.into());
        if let Some(v) = non_empty_opt(&self.title).filter(|_| sends(PATH_TITLE)) {
            user.insert("title".into(), v.into());
        }
        let mut enterprise = Map::new();
        let fields = [
            (
                "employeeNumber",
                PATH_EMPLOYEE_NUMBER,
                &self.employee_number,
            ),
            ("department", PATH_DEPARTMENT, &self.department),
            ("costCenter", PATH_COST_CENTER, &self.cost_center),
            ("organization", PATH_ORGANIZATION, &self.organization),
            ("division", PATH_DIVISION, &self.division),
        ];
        for (key, path, value) in fields {
            if let Some(v) = non_empty_opt(value).filter(|_| sends(path)) {
                enterprise.insert(key.into(), v.into());
            }
        }
        if let Some(v) = non_empty_opt(&self.manager).filter(|_| sends(PATH_MANAGER)) {
            enterprise.insert("manager".into(), manager_ref(v));
        }
        if !enterprise.is_empty() {
            schemas.push(ENTERPRISE_USER_SCHEMA.into());
            user.insert(ENTERPRISE_USER_SCHEMA.into(), Value::Object(enterprise));
        }
        user.insert("schemas".into(), Value::Array(schemas));
        for (path, value) in self.extra.iter().chain(shape.constant.iter()) {
            if !value.is_null() {
                shape::set_path(&mut user, path, value.clone());
            }
        }
        Value::Object(user)
    }
}

/// A User as a SCIM server returned it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteUser {
    pub id: String,
    pub user_name: String,
    pub external_id: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub display_name: Option<String>,
    /// The primary email, else the first one.
    pub email: Option<String>,
    /// Absent in the resource means active: RFC 7643 gives no default, and
    /// servers that do not model deactivation omit it for live accounts.
    pub active: bool,
    pub title: Option<String>,
    pub department: Option<String>,
    pub employee_number: Option<String>,
    #[serde(default)]
    pub cost_center: Option<String>,
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(default)]
    pub division: Option<String>,
    /// `manager.value`: the manager's id in this app.
    #[serde(default)]
    pub manager: Option<String>,
    #[serde(default)]
    pub name_formatted: Option<String>,
    /// `meta.version`, the resource's ETag.
    pub etag: Option<String>,
    /// The resource as the server returned it, for attributes Tenure does
    /// not model (constants, free mappings) and as the before-image of an
    /// adopted account. `Null` when it was not read from a server.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub raw: Value,
}

/// Looks up an attribute the way SCIM names work: case-insensitively
/// (RFC 7643 §2.1). The exact spelling is tried first as the cheap common case.
pub(crate) fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// A string attribute; `null`, absent and wrong types all read as absent
/// because one odd attribute should not make a whole account unreadable.
fn get_str(obj: &Map<String, Value>, key: &str) -> Option<String> {
    get_ci(obj, key).and_then(Value::as_str).map(str::to_owned)
}

fn get_bool(obj: &Map<String, Value>, key: &str) -> Option<bool> {
    match get_ci(obj, key)? {
        Value::Bool(b) => Some(*b),
        // Some servers serialise booleans as strings.
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn pick_email(obj: &Map<String, Value>) -> Option<String> {
    let emails = get_ci(obj, "emails")?.as_array()?;
    let objects: Vec<&Map<String, Value>> = emails.iter().filter_map(Value::as_object).collect();
    let primary = objects
        .iter()
        .find(|e| get_bool(e, "primary") == Some(true))
        .or_else(|| objects.first())?;
    get_str(primary, "value")
}

/// The resource without its read-only `groups`, which Tenure never writes
/// here and which can list thousands of groups: `raw` is stored with every
/// account.
fn without_groups(obj: &Map<String, Value>) -> Value {
    Value::Object(
        obj.iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("groups"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

impl RemoteUser {
    /// Reads a SCIM User resource. Only `id` and `userName` are required.
    pub fn from_scim(v: &Value) -> Result<Self, ScimError> {
        let obj = v
            .as_object()
            .ok_or_else(|| ScimError::InvalidResource("a User must be a JSON object".into()))?;
        let id = get_str(obj, "id")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ScimError::InvalidResource("User has no id".into()))?;
        let user_name = get_str(obj, "userName")
            .ok_or_else(|| ScimError::InvalidResource(format!("User {id} has no userName")))?;
        let name = get_ci(obj, "name").and_then(Value::as_object);
        let enterprise = get_ci(obj, ENTERPRISE_USER_SCHEMA).and_then(Value::as_object);
        let meta = get_ci(obj, "meta").and_then(Value::as_object);
        Ok(RemoteUser {
            user_name,
            external_id: get_str(obj, "externalId"),
            given_name: name.and_then(|n| get_str(n, "givenName")),
            family_name: name.and_then(|n| get_str(n, "familyName")),
            display_name: get_str(obj, "displayName"),
            email: pick_email(obj),
            active: get_bool(obj, "active").unwrap_or(true),
            title: get_str(obj, "title"),
            department: enterprise.and_then(|e| get_str(e, "department")),
            employee_number: enterprise.and_then(|e| get_str(e, "employeeNumber")),
            cost_center: enterprise.and_then(|e| get_str(e, "costCenter")),
            organization: enterprise.and_then(|e| get_str(e, "organization")),
            division: enterprise.and_then(|e| get_str(e, "division")),
            manager: enterprise
                .and_then(|e| get_ci(e, "manager"))
                .and_then(Value::as_object)
                .and_then(|m| get_str(m, "value")),
            name_formatted: name.and_then(|n| get_str(n, "formatted")),
            etag: meta.and_then(|m| get_str(m, "version")),
            raw: without_groups(obj),
            id,
        })
    }

    /// The remote's modelled attributes as a spec, for a PUT that must keep
    /// them (deactivating without PATCH). Absent values become empty strings,
    /// which [`UserSpec::to_scim`] leaves out again.
    pub fn to_spec(&self) -> UserSpec {
        let or_empty = |v: &Option<String>| v.clone().unwrap_or_default();
        UserSpec {
            user_name: self.user_name.clone(),
            external_id: or_empty(&self.external_id),
            given_name: or_empty(&self.given_name),
            family_name: or_empty(&self.family_name),
            display_name: or_empty(&self.display_name),
            email: or_empty(&self.email),
            active: self.active,
            title: self.title.clone(),
            department: self.department.clone(),
            employee_number: self.employee_number.clone(),
            cost_center: self.cost_center.clone(),
            organization: self.organization.clone(),
            division: self.division.clone(),
            manager: self.manager.clone(),
            name_formatted: self.name_formatted.clone(),
            extra: BTreeMap::new(),
        }
    }

    /// The value of a free (unmodelled) attribute at a canonical path.
    pub fn value_at(&self, path: &str) -> Option<&Value> {
        shape::get_path(&self.raw, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            employee_number: None,
            cost_center: Some("CC-1".into()),
            organization: None,
            division: Some("Labs".into()),
            manager: Some("m-1".into()),
            ..UserSpec::default()
        }
    }

    #[test]
    fn to_scim_has_core_and_enterprise() {
        let v = spec().to_scim();
        assert_eq!(
            v["schemas"],
            json!([CORE_USER_SCHEMA, ENTERPRISE_USER_SCHEMA])
        );
        assert_eq!(v["userName"], "ada");
        assert_eq!(v["externalId"], "E-1");
        assert_eq!(
            v["name"],
            json!({"givenName": "Ada", "familyName": "Lovelace"})
        );
        assert_eq!(v["displayName"], "Ada Lovelace");
        assert_eq!(
            v["emails"],
            json!([{"value": "ada@example.com", "type": "work", "primary": true}])
        );
        assert_eq!(v["active"], true);
        assert_eq!(v["title"], "Engineer");
        assert_eq!(
            v[ENTERPRISE_USER_SCHEMA],
            json!({
                "department": "R&D", "costCenter": "CC-1", "division": "Labs",
                "manager": {"value": "m-1"}
            })
        );
    }

    #[test]
    fn to_scim_without_enterprise_or_empty_values() {
        let mut s = spec();
        s.department = None;
        s.employee_number = Some(String::new());
        s.email = String::new();
        s.title = None;
        s.cost_center = None;
        s.division = Some(String::new());
        s.manager = None;
        let v = s.to_scim();
        assert_eq!(v["schemas"], json!([CORE_USER_SCHEMA]));
        assert!(v.get(ENTERPRISE_USER_SCHEMA).is_none());
        assert!(v.get("emails").is_none());
        assert!(v.get("title").is_none());
    }

    #[test]
    fn to_scim_with_profile_drops_external_id_only_when_told() {
        let s = spec();
        let nextcloud = crate::profile::builtin("nextcloud").expect("nextcloud");
        let mut expected = s.to_scim();
        assert_eq!(s.to_scim_with(&Profile::generic()), expected);
        expected
            .as_object_mut()
            .expect("object")
            .remove("externalId");
        assert_eq!(s.to_scim_with(&nextcloud), expected);
        assert!(s.to_scim_with(&nextcloud).get("externalId").is_none());
    }

    #[test]
    fn raw_keeps_unmodelled_attributes_but_not_group_memberships() {
        let v = json!({
            "id": "u1", "userName": "ada", "userType": "Employee",
            "name": {"formatted": "Ada L"},
            "groups": [{"value": "g1"}, {"value": "g2"}]
        });
        let u = RemoteUser::from_scim(&v).expect("valid user");
        assert_eq!(u.name_formatted.as_deref(), Some("Ada L"));
        assert_eq!(u.value_at("userType"), Some(&json!("Employee")));
        assert!(u.raw.get("groups").is_none());
    }

    #[test]
    fn from_scim_reads_everything() {
        let v = json!({
            "schemas": [CORE_USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "id": "u1", "userName": "Ada", "externalId": "E-1",
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "displayName": "Ada L",
            "emails": [
                {"value": "home@example.com", "type": "home"},
                {"value": "work@example.com", "type": "work", "primary": true}
            ],
            "active": false, "title": "Eng",
            ENTERPRISE_USER_SCHEMA: {
                "department": "R&D", "employeeNumber": "42", "costCenter": "CC",
                "organization": "Org", "division": "Div",
                "manager": {"value": "m1", "$ref": "../Users/m1", "displayName": "Boss"}
            },
            "meta": {"version": "W/\"3\""}
        });
        let u = RemoteUser::from_scim(&v).expect("valid user");
        assert_eq!(u.id, "u1");
        assert_eq!(u.user_name, "Ada");
        assert_eq!(u.email.as_deref(), Some("work@example.com"));
        assert!(!u.active);
        assert_eq!(u.department.as_deref(), Some("R&D"));
        assert_eq!(u.employee_number.as_deref(), Some("42"));
        assert_eq!(u.cost_center.as_deref(), Some("CC"));
        assert_eq!(u.organization.as_deref(), Some("Org"));
        assert_eq!(u.division.as_deref(), Some("Div"));
        assert_eq!(u.manager.as_deref(), Some("m1"));
        assert_eq!(u.etag.as_deref(), Some("W/\"3\""));
    }

    #[test]
    fn from_scim_defaults() {
        let v = json!({
            "id": "u1", "username": "ada",
            "emails": [{"value": "a@example.com"}, {"value": "b@example.com"}]
        });
        let u = RemoteUser::from_scim(&v).expect("valid user");
        assert_eq!(u.user_name, "ada", "attribute names are case-insensitive");
        assert!(u.active, "absent active means active");
        assert_eq!(u.email.as_deref(), Some("a@example.com"));
        assert_eq!(u.external_id, None);
        assert_eq!(u.etag, None);
    }

    #[test]
    fn from_scim_rejects_missing_id_or_username() {
        assert!(RemoteUser::from_scim(&json!({"userName": "x"})).is_err());
        assert!(RemoteUser::from_scim(&json!({"id": "1"})).is_err());
        assert!(RemoteUser::from_scim(&json!([1])).is_err());
    }

    #[test]
    fn spec_round_trips_through_scim() {
        let s = spec();
        let mut v = s.to_scim();
        v["id"] = "u1".into();
        let remote = RemoteUser::from_scim(&v).expect("valid user");
        assert_eq!(remote.to_spec(), s);
    }
}
