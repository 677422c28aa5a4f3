//! The shape of the User resource an app receives: which attributes Tenure
//! leaves out (`omit`), which optional sub-attributes it adds
//! (`name_formatted`) and which constant attributes it always sends
//! (`constant`). Real servers disagree here (one requires `name.formatted`,
//! another refuses `emails[].type`), so the shape is data, per profile and
//! per app.
//!
//! Body and diff read the same shape: an attribute that is not sent is not
//! compared either, so a shaped body never looks like drift and never earns
//! an endless PATCH.
//!
//! Paths use RFC 7644 §3.10 notation: `title`, `name.formatted`,
//! `emails.type`, or `<schema URN>:<attribute>[.<sub>]` for an extension.
//! The enterprise attributes may be written without their URN
//! (`department`, `manager`): no core attribute has those names.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::user::{get_ci, ENTERPRISE_USER_SCHEMA};

pub const PATH_NAME: &str = "name";
pub const PATH_NAME_FORMATTED: &str = "name.formatted";
pub const PATH_EMAILS_TYPE: &str = "emails.type";
pub const PATH_EMAILS_PRIMARY: &str = "emails.primary";

/// The enterprise extension's attributes, by their canonical spelling.
const ENTERPRISE_ATTRIBUTES: [&str; 6] = [
    "employeeNumber",
    "costCenter",
    "organization",
    "division",
    "department",
    "manager",
];

/// Core attributes (and sub-attributes) Tenure writes from the person.
const CORE_MODELLED: [&str; 11] = [
    "userName",
    "externalId",
    "name",
    "name.givenName",
    "name.familyName",
    "name.formatted",
    "displayName",
    "emails",
    "emails.type",
    "emails.primary",
    "active",
];

/// Attributes a shape may never leave out: without them Tenure can neither
/// find the account again nor switch it off.
pub const NOT_OMITTABLE: [&str; 2] = ["userName", "active"];

/// Attributes no constant may set: the server's own, and Tenure's link key.
const RESERVED: [&str; 4] = ["id", "schemas", "meta", "externalId"];

/// How the User resource is shaped for one app.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shape {
    /// Send `name.formatted`: the mapped value, else given and family name
    /// joined by a space.
    pub name_formatted: bool,
    /// Canonical paths never sent and never compared.
    pub omit: BTreeSet<String>,
    /// Attributes always sent with this value, by canonical path; compared
    /// as a subset of what the server returns (a server may add fields to
    /// a complex value without that counting as drift).
    pub constant: BTreeMap<String, Value>,
    /// How Group resources are shaped.
    pub group: GroupShape,
}

/// The shape of the Group resources Tenure sends: constants only, since a
/// group's own attributes (`displayName`, `members`) are what Tenure
/// manages, and `externalId` follows the profile. Constants go into
/// creates and PUTs; the group diff compares names and members only, so a
/// constant changed in the app is not put back until the group is
/// replaced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupShape {
    pub constant: BTreeMap<String, Value>,
}

/// A shape as written in configuration: every key optional, so that an
/// app's shape overrides its profile's key by key.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShapeOverride {
    pub name_formatted: Option<bool>,
    /// Replaces the base's list when set.
    pub omit: Option<Vec<String>>,
    /// Merged over the base's constants, key by key.
    pub constant: BTreeMap<String, Value>,
    /// Group constants, merged the same way.
    pub group: Option<GroupShape>,
}

impl Shape {
    /// Checks and canonicalises a written shape over `base`.
    pub fn overridden(&self, o: &ShapeOverride) -> Result<Shape, String> {
        let mut out = self.clone();
        if let Some(v) = o.name_formatted {
            out.name_formatted = v;
        }
        if let Some(omit) = &o.omit {
            out.omit = omit
                .iter()
                .map(|p| check_omit(p))
                .collect::<Result<_, _>>()?;
        }
        for (path, value) in &o.constant {
            out.constant.insert(check_constant(path)?, value.clone());
        }
        for (path, value) in o.group.iter().flat_map(|g| g.constant.iter()) {
            out.group
                .constant
                .insert(check_group_constant(path)?, value.clone());
        }
        if out.name_formatted && out.omits(PATH_NAME_FORMATTED) {
            return Err("shape: name_formatted = true but omit lists name.formatted".into());
        }
        Ok(out)
    }

    /// Whether `path` (canonical) is left out, directly or because its
    /// parent is (`name` covers `name.givenName`).
    pub fn omits(&self, path: &str) -> bool {
        if self.omit.contains(path) {
            return true;
        }
        match path.rsplit_once('.') {
            Some((parent, _)) if !path.starts_with("urn:") || parent.contains(':') => {
                self.omit.contains(parent)
            }
            _ => false,
        }
    }

    /// The schema URNs the constants use besides core and enterprise, for
    /// a body's `schemas`.
    pub fn extension_schemas(&self) -> BTreeSet<String> {
        self.constant
            .keys()
            .filter_map(|p| split_path(p).0.map(str::to_owned))
            .collect()
    }
}

/// Canonical spelling of an attribute path: known attributes in their RFC
/// spelling, enterprise attributes under their URN, anything else as written.
pub fn canonical_path(path: &str) -> String {
    let path = path.trim();
    let (urn, attr) = split_path(path);
    let canon_enterprise = |attr: &str| -> Option<String> {
        let (head, tail) = match attr.split_once('.') {
            Some((h, t)) => (h, Some(t)),
            None => (attr, None),
        };
        let known = ENTERPRISE_ATTRIBUTES
            .iter()
            .find(|k| k.eq_ignore_ascii_case(head))?;
        Some(match tail {
            Some(t) => format!("{ENTERPRISE_USER_SCHEMA}:{known}.{t}"),
            None => format!("{ENTERPRISE_USER_SCHEMA}:{known}"),
        })
    };
    match urn {
        Some(u) if u.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA) => {
            canon_enterprise(attr).unwrap_or_else(|| path.to_owned())
        }
        Some(_) => path.to_owned(),
        None => {
            if let Some(core) = CORE_MODELLED
                .iter()
                .chain(["title"].iter())
                .find(|k| k.eq_ignore_ascii_case(attr))
            {
                return (*core).to_owned();
            }
            canon_enterprise(attr).unwrap_or_else(|| path.to_owned())
        }
    }
}

/// `(schema URN, attribute path)`: the URN is everything before the last
/// `:` of a path that starts with `urn:`.
pub fn split_path(path: &str) -> (Option<&str>, &str) {
    if path.len() > 4 && path[..4].eq_ignore_ascii_case("urn:") {
        if let Some((urn, attr)) = path.rsplit_once(':') {
            return (Some(urn), attr);
        }
    }
    (None, path)
}

/// The paths a shape may omit, canonical.
pub fn omittable() -> Vec<String> {
    CORE_MODELLED
        .iter()
        .chain(["title"].iter())
        .filter(|p| !NOT_OMITTABLE.contains(p))
        .map(|p| (*p).to_owned())
        .chain(
            ENTERPRISE_ATTRIBUTES
                .iter()
                .map(|a| format!("{ENTERPRISE_USER_SCHEMA}:{a}")),
        )
        .collect()
}

fn check_omit(path: &str) -> Result<String, String> {
    let canon = canonical_path(path);
    if NOT_OMITTABLE.contains(&canon.as_str()) {
        return Err(format!(
            "shape.omit: {path:?} cannot be omitted; Tenure finds and deactivates accounts by it"
        ));
    }
    if omittable().contains(&canon) {
        Ok(canon)
    } else {
        Err(format!(
            "shape.omit: {path:?} is not an attribute Tenure sends; one of {}",
            omittable().join(", ")
        ))
    }
}

/// Whether `canon` is an attribute Tenure writes from the person (or under
/// one, or the `name` that holds some), so that a constant there would
/// fight the mapping. `name.middleName` and the like are free.
pub fn is_modelled(canon: &str) -> bool {
    let (urn, attr) = split_path(canon);
    let head = attr.split('.').next().unwrap_or(attr);
    match urn {
        Some(u) => {
            u.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA)
                && ENTERPRISE_ATTRIBUTES
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(head))
        }
        None => {
            let lower = attr.to_ascii_lowercase();
            lower == PATH_NAME
                || CORE_MODELLED
                    .iter()
                    .chain(["title"].iter())
                    .filter(|k| **k != PATH_NAME)
                    .map(|k| k.to_ascii_lowercase())
                    .any(|k| lower == k || lower.starts_with(&format!("{k}.")))
        }
    }
}

/// Checks a path that Tenure sets from a constant or a free mapping.
pub fn check_free_path(path: &str, what: &str) -> Result<String, String> {
    let canon = canonical_path(path);
    let (urn, attr) = split_path(&canon);
    if attr.is_empty() || attr.split('.').any(str::is_empty) || attr.contains(['[', ']', ' ']) {
        return Err(format!(
            "{what}: {path:?} is not an attribute path (attr, attr.sub or <schema URN>:attr)"
        ));
    }
    let head = attr.split('.').next().unwrap_or(attr);
    if urn.is_none() && RESERVED.iter().any(|r| r.eq_ignore_ascii_case(head)) {
        return Err(format!("{what}: {path:?} is not Tenure's to set"));
    }
    if is_modelled(&canon) {
        return Err(format!(
            "{what}: {path:?} is set from the person; change it with [app.mapping] or leave it out with shape.omit"
        ));
    }
    Ok(canon)
}

fn check_constant(path: &str) -> Result<String, String> {
    check_free_path(path, "shape.constant")
}

fn check_group_constant(path: &str) -> Result<String, String> {
    let canon = path.trim().to_owned();
    let (urn, attr) = split_path(&canon);
    let head = attr.split('.').next().unwrap_or(attr);
    if attr.is_empty() || attr.split('.').any(str::is_empty) || attr.contains(['[', ']', ' ']) {
        return Err(format!(
            "shape.group.constant: {path:?} is not an attribute path (attr, attr.sub or <schema URN>:attr)"
        ));
    }
    let managed = [
        "id",
        "schemas",
        "meta",
        "externalId",
        "displayName",
        "members",
    ];
    if urn.is_none() && managed.iter().any(|m| m.eq_ignore_ascii_case(head)) {
        return Err(format!(
            "shape.group.constant: {path:?} is Tenure's or the server's to set"
        ));
    }
    Ok(canon)
}

/// Adds the group constants to a Group body.
pub fn shape_group(body: &mut Value, shape: &Shape) {
    if let Some(obj) = body.as_object_mut() {
        for (path, value) in &shape.group.constant {
            set_path(obj, path, value.clone());
        }
    }
}

/// Sets `value` at a canonical `path` in a resource object, creating the
/// objects on the way; `schemas` gains the extension URN.
pub fn set_path(obj: &mut Map<String, Value>, path: &str, value: Value) {
    let (urn, attr) = split_path(path);
    let mut parts: Vec<&str> = Vec::new();
    if let Some(urn) = urn {
        if let Some(Value::Array(schemas)) = obj.get_mut("schemas") {
            if !schemas.iter().any(|s| s.as_str() == Some(urn)) {
                schemas.push(urn.into());
            }
        }
        parts.push(urn);
    }
    parts.extend(attr.split('.'));
    set_in(obj, &parts, value);
}

fn set_in(obj: &mut Map<String, Value>, parts: &[&str], value: Value) {
    match parts {
        [] => {}
        [last] => {
            obj.insert((*last).to_owned(), value);
        }
        [head, rest @ ..] => {
            let child = obj
                .entry((*head).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Some(o) = child.as_object_mut() {
                set_in(o, rest, value);
            }
        }
    }
}

/// Removes the value at a canonical `path`; true when there was one.
pub fn remove_path(obj: &mut Map<String, Value>, path: &str) -> bool {
    let (urn, attr) = split_path(path);
    let mut target = obj;
    if let Some(urn) = urn {
        match target.get_mut(urn).and_then(Value::as_object_mut) {
            Some(o) => target = o,
            None => return false,
        }
    }
    let parts: Vec<&str> = attr.split('.').collect();
    let Some((last, parents)) = parts.split_last() else {
        return false;
    };
    for p in parents {
        match target.get_mut(*p).and_then(Value::as_object_mut) {
            Some(o) => target = o,
            None => return false,
        }
    }
    target.remove(*last).is_some()
}

/// The value at a canonical `path` of a resource, names matched
/// case-insensitively as SCIM requires.
pub fn get_path<'a>(resource: &'a Value, path: &str) -> Option<&'a Value> {
    let (urn, attr) = split_path(path);
    let mut cur = resource;
    if let Some(urn) = urn {
        cur = get_ci(cur.as_object()?, urn)?;
    }
    for p in attr.split('.') {
        cur = get_ci(cur.as_object()?, p)?;
    }
    Some(cur)
}

/// Whether the server's value `have` holds everything of `want`: objects by
/// their keys (extra keys on the server are fine), arrays element by
/// element in any order, scalars equal (a number or boolean the server
/// returns as a string counts). `Null` wants the attribute absent or empty.
pub fn covers(want: &Value, have: Option<&Value>) -> bool {
    match (want, have) {
        (Value::Null, None | Some(Value::Null)) => true,
        (Value::Null, Some(Value::String(s))) => s.is_empty(),
        (Value::Null, Some(Value::Array(a))) => a.is_empty(),
        (Value::Null, Some(_)) => false,
        (_, None) => false,
        (Value::Object(w), Some(Value::Object(h))) => {
            w.iter().all(|(k, v)| covers(v, get_ci(h, k)))
        }
        (Value::Array(w), Some(Value::Array(h))) => {
            w.len() == h.len() && w.iter().all(|x| h.iter().any(|y| covers(x, Some(y))))
        }
        (Value::String(w), Some(Value::String(h))) => w == h,
        (Value::Bool(w), Some(Value::String(h))) => h.eq_ignore_ascii_case(&w.to_string()),
        (Value::Number(w), Some(Value::String(h))) => h.trim() == w.to_string(),
        (Value::Number(w), Some(Value::Number(h))) => w.as_f64() == h.as_f64(),
        (w, Some(h)) => w == h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_are_canonical() {
        assert_eq!(canonical_path("Emails.Type"), "emails.type");
        assert_eq!(canonical_path("name.FORMATTED"), "name.formatted");
        assert_eq!(
            canonical_path("department"),
            format!("{ENTERPRISE_USER_SCHEMA}:department")
        );
        assert_eq!(
            canonical_path(&format!("{ENTERPRISE_USER_SCHEMA}:costcenter")),
            format!("{ENTERPRISE_USER_SCHEMA}:costCenter")
        );
        assert_eq!(canonical_path("userType"), "userType");
        assert_eq!(
            split_path("urn:acme:scim:ext:1.0:User:plan.tier"),
            (Some("urn:acme:scim:ext:1.0:User"), "plan.tier")
        );
    }

    #[test]
    fn overrides_check_and_merge() {
        let base = Shape {
            name_formatted: true,
            omit: ["title".to_owned()].into(),
            constant: [("userType".to_owned(), json!("Employee"))].into(),
            ..Shape::default()
        };
        let o = ShapeOverride {
            name_formatted: None,
            omit: Some(vec!["Emails.Type".into(), "emails.primary".into()]),
            constant: [("preferredLanguage".to_owned(), json!("en"))].into(),
            group: None,
        };
        let s = base.overridden(&o).expect("valid");
        assert!(s.name_formatted, "kept from the base");
        assert_eq!(
            s.omit,
            ["emails.primary".to_owned(), "emails.type".to_owned()].into()
        );
        assert_eq!(s.constant.len(), 2);
        for (bad, why) in [
            (
                ShapeOverride {
                    omit: Some(vec!["userName".into()]),
                    ..Default::default()
                },
                "cannot be omitted",
            ),
            (
                ShapeOverride {
                    omit: Some(vec!["emails.kind".into()]),
                    ..Default::default()
                },
                "not an attribute Tenure sends",
            ),
            (
                ShapeOverride {
                    constant: [("title".to_owned(), json!("x"))].into(),
                    ..Default::default()
                },
                "[app.mapping]",
            ),
            (
                ShapeOverride {
                    constant: [("meta.created".to_owned(), json!("x"))].into(),
                    ..Default::default()
                },
                "not Tenure's",
            ),
            (
                ShapeOverride {
                    name_formatted: Some(true),
                    omit: Some(vec!["name".into()]),
                    ..Default::default()
                },
                "name_formatted",
            ),
        ] {
            let e = Shape::default().overridden(&bad).expect_err(why);
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn group_constants_are_checked_and_added() {
        let o: ShapeOverride = serde_json::from_value(json!({
            "group": {"constant": {"urn:acme:ext:1.0:Group:kind": "department"}}
        }))
        .expect("override");
        let s = Shape::default().overridden(&o).expect("valid");
        let mut body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Eng"});
        shape_group(&mut body, &s);
        assert_eq!(body["urn:acme:ext:1.0:Group"]["kind"], "department");
        assert_eq!(body["schemas"][1], "urn:acme:ext:1.0:Group");
        let bad: ShapeOverride =
            serde_json::from_value(json!({"group": {"constant": {"members": []}}}))
                .expect("parses");
        assert!(Shape::default().overridden(&bad).is_err());
    }

    #[test]
    fn free_paths_exclude_what_tenure_fills() {
        for free in [
            "name.middleName",
            "nickName",
            "userType",
            "urn:x:1.0:User:a.b",
        ] {
            assert!(check_free_path(free, "t").is_ok(), "{free}");
        }
        for taken in [
            "name",
            "name.givenName",
            "emails",
            "emails.display",
            "active",
            "department",
            "manager.displayName",
            "id",
            "externalId",
        ] {
            assert!(check_free_path(taken, "t").is_err(), "{taken}");
        }
    }

    #[test]
    fn omitting_a_parent_omits_its_children() {
        let s = Shape {
            omit: ["name".to_owned()].into(),
            ..Shape::default()
        };
        assert!(s.omits("name.givenName") && s.omits("name"));
        assert!(!s.omits("emails.type"));
        let ext = Shape {
            omit: [format!("{ENTERPRISE_USER_SCHEMA}:manager")].into(),
            ..Shape::default()
        };
        assert!(ext.omits(&format!("{ENTERPRISE_USER_SCHEMA}:manager")));
        assert!(!ext.omits(&format!("{ENTERPRISE_USER_SCHEMA}:department")));
    }

    #[test]
    fn set_get_and_remove_paths() {
        let mut o = Map::new();
        o.insert("schemas".into(), json!(["core"]));
        set_path(&mut o, "urn:acme:ext:1.0:User:plan.tier", json!("gold"));
        set_path(&mut o, "name.formatted", json!("Ada L"));
        let v = Value::Object(o.clone());
        assert_eq!(v["schemas"], json!(["core", "urn:acme:ext:1.0:User"]));
        assert_eq!(
            get_path(&v, "urn:acme:ext:1.0:User:plan.tier"),
            Some(&json!("gold"))
        );
        assert_eq!(get_path(&v, "NAME.Formatted"), Some(&json!("Ada L")));
        assert!(remove_path(&mut o, "urn:acme:ext:1.0:User:plan.tier"));
        assert!(!remove_path(&mut o, "urn:acme:ext:1.0:User:plan.tier"));
    }

    #[test]
    fn covers_tolerates_server_decoration() {
        assert!(covers(
            &json!([{"value": "x", "type": "work"}]),
            Some(&json!([{"value": "x", "type": "work", "primary": false}]))
        ));
        assert!(!covers(&json!([{"value": "x"}]), Some(&json!([]))));
        assert!(covers(&json!(true), Some(&json!("True"))));
        assert!(covers(&json!(3), Some(&json!(3.0))));
        assert!(covers(&Value::Null, Some(&json!(""))));
        assert!(!covers(&json!("a"), None));
        assert!(!covers(&json!("a"), Some(&json!("A"))));
    }
}
