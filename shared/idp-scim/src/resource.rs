//! Resources as JSON: normalising what clients send (canonical attribute
//! names, type checks and coercions, read-only attributes dropped), rendering
//! what is stored (id, meta, schemas, derived attributes), `attributes` /
//! `excludedAttributes` projection, and the identity snapshot of a user.

use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::error::ScimError;
use crate::filter::{get_ci, key_ci, resolve, AttrName, SimplePath, SubName};
use crate::schema::{Attr, Kind, Mutability, Returned, Ty, ENTERPRISE_SCHEMA};

/// Normalises a resource sent by a client (POST, PUT, or the result of a
/// PATCH): known attribute names get their canonical case, values are
/// checked against their type (`"true"`/`"false"` strings become booleans, a
/// bare string given for a complex attribute becomes its `value`), read-only
/// attributes and `password` are dropped, `null` and empty values mean
/// "unassigned" and are dropped, unknown attributes are kept as sent.
pub(crate) fn normalize(
    kind: Kind,
    input: Map<String, Value>,
) -> Result<Map<String, Value>, ScimError> {
    let mut out = Map::new();
    for (k, v) in input {
        if v.is_null() || k.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if is_urn(&k) {
            if let Some(ext) = kind.extension(&k) {
                let Value::Object(obj) = v else {
                    return Err(ScimError::invalid_value(format!(
                        "'{}' must be an object",
                        ext.id
                    )));
                };
                let mut norm = Map::new();
                for (ak, av) in obj {
                    match ext.attr(&ak) {
                        Some(a) => {
                            if let Some(x) = norm_attr(a, av, &format!("{}:{}", ext.id, a.name))? {
                                norm.insert(a.name.to_string(), x);
                            }
                        }
                        None if av.is_null() => {}
                        None => {
                            norm.insert(ak, av);
                        }
                    }
                }
                merge_container(&mut out, ext.id, norm);
                continue;
            }
            if k.eq_ignore_ascii_case(kind.core().id) {
                let Value::Object(obj) = v else {
                    return Err(ScimError::invalid_value(format!(
                        "'{}' must be an object",
                        kind.core().id
                    )));
                };
                for (ak, av) in normalize(kind, obj)? {
                    out.insert(ak, av);
                }
                continue;
            }
            if !v.is_object() {
                // `urn:…:attr` keys (Entra sends extension attributes that way).
                if let Ok(SimplePath::Attr {
                    name: AttrName::Known { ext, attr },
                    sub: None,
                }) = resolve(kind, &k, false)
                {
                    if let Some(x) = norm_attr(attr, v, &k)? {
                        match ext {
                            Some(e) => {
                                let mut m = Map::new();
                                m.insert(attr.name.to_string(), x);
                                merge_container(&mut out, e.id, m);
                            }
                            None => {
                                out.insert(attr.name.to_string(), x);
                            }
                        }
                    }
                    continue;
                }
            }
            if let Value::Object(o) = &v {
                if o.is_empty() {
                    continue;
                }
            }
            out.insert(k, v);
            continue;
        }
        match kind.core_attr(&k) {
            Some(a) => {
                if let Some(x) = norm_attr(a, v, a.name)? {
                    out.insert(a.name.to_string(), x);
                }
            }
            None => {
                out.insert(k, v);
            }
        }
    }
    let required = match kind {
        Kind::User => "userName",
        Kind::Group => "displayName",
    };
    match out.get(required) {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => {
            return Err(ScimError::invalid_value(format!(
                "'{required}' is required and must be a non-empty string"
            )))
        }
    }
    crate::limits::check(kind, &out)?;
    Ok(out)
}

/// Whether an attribute name is a schema URN (or starts with one).
pub(crate) fn is_urn(k: &str) -> bool {
    k.len() > 4 && k.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
}

fn merge_container(out: &mut Map<String, Value>, urn: &str, add: Map<String, Value>) {
    if add.is_empty() {
        return;
    }
    match out.get_mut(urn) {
        Some(Value::Object(existing)) => existing.extend(add),
        _ => {
            out.insert(urn.to_string(), Value::Object(add));
        }
    }
}

/// Normalises one attribute's value; `Ok(None)` when it is unassigned or
/// not stored.
fn norm_attr(a: &'static Attr, v: Value, path: &str) -> Result<Option<Value>, ScimError> {
    if v.is_null() || matches!(a.mutability, Mutability::ReadOnly | Mutability::WriteOnly) {
        return Ok(None);
    }
    if !a.multi {
        if v.is_array() {
            return Err(ScimError::invalid_value(format!(
                "'{path}' is single-valued, not an array"
            )));
        }
        return norm_single(a, v, path);
    }
    let items = match v {
        Value::Array(items) => items,
        other => vec![other],
    };
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for item in items {
        if let Some(x) = norm_single(a, item, path)? {
            if !out.contains(&x) {
                out.push(x);
            }
        }
    }
    if a.ty == Ty::Complex
        && out
            .iter()
            .filter(|x| x.get("primary") == Some(&Value::Bool(true)))
            .count()
            > 1
    {
        return Err(ScimError::invalid_value(format!(
            "at most one value of '{path}' may be primary"
        )));
    }
    Ok((!out.is_empty()).then_some(Value::Array(out)))
}

fn norm_single(a: &'static Attr, v: Value, path: &str) -> Result<Option<Value>, ScimError> {
    let wrong = |what: &str| Err(ScimError::invalid_value(format!("'{path}' must be {what}")));
    match a.ty {
        Ty::Complex => {
            let obj = match v {
                Value::Object(o) => o,
                Value::Null => return Ok(None),
                // A bare value for a complex attribute: its `value`.
                other if a.sub_attr("value").is_some() && !other.is_array() => {
                    let mut m = Map::new();
                    m.insert("value".into(), other);
                    m
                }
                _ => return wrong("an object"),
            };
            let mut out = Map::new();
            for (k, x) in obj {
                match a.sub_attr(&k) {
                    Some(s) => {
                        if let Some(y) = norm_attr(s, x, &format!("{path}.{}", s.name))? {
                            out.insert(s.name.to_string(), y);
                        }
                    }
                    None if x.is_null() => {}
                    None => {
                        out.insert(k, x);
                    }
                }
            }
            Ok((!out.is_empty()).then_some(Value::Object(out)))
        }
        Ty::String | Ty::Reference | Ty::Binary => match v {
            Value::String(_) => Ok(Some(v)),
            _ => wrong("a string"),
        },
        Ty::Boolean => match v {
            Value::Bool(_) => Ok(Some(v)),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Some(Value::Bool(true))),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Some(Value::Bool(false))),
            _ => wrong("a boolean"),
        },
        Ty::Integer => match &v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Some(v)),
            _ => wrong("an integer"),
        },
        Ty::Decimal => match v {
            Value::Number(_) => Ok(Some(v)),
            _ => wrong("a number"),
        },
        Ty::DateTime => match &v {
            Value::String(s) if DateTime::parse_from_rfc3339(s).is_ok() => Ok(Some(v)),
            _ => wrong("an RFC 3339 date-time string"),
        },
    }
}

pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// What is stored of one resource besides its data.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub id: Uuid,
    pub version: i64,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
}

/// The full representation of a stored resource. `extra` holds derived
/// attributes (a user's `groups`, a group's `members`).
pub(crate) fn render(
    kind: Kind,
    base_url: &str,
    meta: &Meta,
    data: &Map<String, Value>,
    extra: Option<(&str, Vec<Value>)>,
) -> Map<String, Value> {
    let mut out = data.clone();
    let mut schemas = vec![Value::String(kind.core().id.to_string())];
    for (k, v) in data {
        if is_urn(k) && v.is_object() {
            schemas.push(Value::String(k.clone()));
        }
    }
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("id".into(), Value::String(meta.id.to_string()));
    if let Some((name, values)) = extra {
        if !values.is_empty() {
            out.insert(name.into(), Value::Array(values));
        }
    }
    out.insert(
        "meta".into(),
        json!({
            "resourceType": kind.name(),
            "created": timestamp(meta.created),
            "lastModified": timestamp(meta.modified),
            "location": location(base_url, kind, meta.id),
            "version": etag(meta.version),
        }),
    );
    out
}

pub(crate) fn location(base_url: &str, kind: Kind, id: Uuid) -> String {
    format!("{base_url}/{}/{id}", kind.endpoint())
}

/// `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5, §3.9). Names that
/// are not attributes of the resource type are ignored.
#[derive(Debug, Default, Clone)]
pub(crate) struct Projection {
    include: Vec<SimplePath>,
    exclude: Vec<SimplePath>,
}

impl Projection {
    pub fn new<'a>(
        kind: Kind,
        attributes: impl IntoIterator<Item = &'a str>,
        excluded: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let parse = |it: &mut dyn Iterator<Item = &'a str>| -> Vec<SimplePath> {
            it.flat_map(|s| s.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .filter_map(|s| resolve(kind, s, true).ok())
                .collect()
        };
        let include = parse(&mut attributes.into_iter());
        let exclude = parse(&mut excluded.into_iter());
        Projection { include, exclude }
    }

    /// Whether the core attribute `name` will be in the response (so a
    /// derived attribute is worth loading).
    pub fn wants(&self, name: &str) -> bool {
        let names = |p: &SimplePath| match p {
            SimplePath::Attr {
                name: AttrName::Known { ext: None, attr },
                ..
            } => attr.name == name,
            _ => false,
        };
        if self.include.is_empty() {
            !self
                .exclude
                .iter()
                .any(|p| names(p) && matches!(p, SimplePath::Attr { sub: None, .. }))
        } else {
            self.include.iter().any(names)
        }
    }

    pub fn apply(&self, res: Map<String, Value>) -> Map<String, Value> {
        if self.include.is_empty() && self.exclude.is_empty() {
            return res;
        }
        let mut res = res;
        if !self.include.is_empty() {
            let mut out = Map::new();
            for key in ["schemas", "id"] {
                if let Some(v) = res.get(key) {
                    out.insert(key.into(), v.clone());
                }
            }
            for p in &self.include {
                copy_path(&res, &mut out, p);
            }
            res = out;
        }
        for p in &self.exclude {
            remove_path(&mut res, p);
        }
        res
    }
}

fn container_key(p: &SimplePath) -> Option<String> {
    match p {
        SimplePath::Extension(s) => Some(s.id.to_string()),
        SimplePath::Attr {
            name: AttrName::Known { ext: Some(e), .. },
            ..
        } => Some(e.id.to_string()),
        SimplePath::Attr {
            name: AttrName::Custom { urn, .. },
            ..
        } => Some(urn.clone()),
        _ => None,
    }
}

fn attr_name(p: &SimplePath) -> Option<(&str, Option<&SubName>, bool)> {
    match p {
        SimplePath::Extension(_) => None,
        SimplePath::Attr {
            name: AttrName::Known { attr, .. },
            sub,
        } => Some((attr.name, sub.as_ref(), attr.returned == Returned::Always)),
        SimplePath::Attr {
            name: AttrName::Custom { name, .. },
            sub,
        } => Some((name.as_str(), sub.as_ref(), false)),
    }
}

fn copy_path(src: &Map<String, Value>, out: &mut Map<String, Value>, p: &SimplePath) {
    let (src_c, out_c): (&Map<String, Value>, &mut Map<String, Value>) = match container_key(p) {
        None => (src, out),
        Some(urn) => {
            let Some(key) = key_ci(src, &urn) else { return };
            let Some(Value::Object(c)) = src.get(&key) else {
                return;
            };
            if matches!(p, SimplePath::Extension(_)) {
                out.insert(key, Value::Object(c.clone()));
                return;
            }
            let entry = out.entry(key).or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(oc) = entry else { return };
            (c, oc)
        }
    };
    let Some((name, sub, _)) = attr_name(p) else {
        return;
    };
    let Some(key) = key_ci(src_c, name) else {
        return;
    };
    let Some(v) = src_c.get(&key) else { return };
    let projected = match sub {
        None => v.clone(),
        Some(s) => project_sub(v, s.name()),
    };
    match out_c.get_mut(&key) {
        Some(existing) => merge_values(existing, projected),
        None => {
            out_c.insert(key, projected);
        }
    }
}

fn project_sub(v: &Value, sub: &str) -> Value {
    let pick = |o: &Map<String, Value>| {
        let mut m = Map::new();
        if let Some(k) = key_ci(o, sub) {
            if let Some(x) = o.get(&k) {
                m.insert(k, x.clone());
            }
        }
        Value::Object(m)
    };
    match v {
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|el| el.as_object().map(pick).unwrap_or(Value::Null))
                .collect(),
        ),
        Value::Object(o) => pick(o),
        _ => Value::Null,
    }
}

fn merge_values(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(x) => merge_values(x, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (x, y) in a.iter_mut().zip(b) {
                merge_values(x, y);
            }
        }
        (slot, from) => *slot = from,
    }
}

fn remove_path(res: &mut Map<String, Value>, p: &SimplePath) {
    let target: &mut Map<String, Value> = match container_key(p) {
        None => res,
        Some(urn) => {
            let Some(key) = key_ci(res, &urn) else { return };
            if matches!(p, SimplePath::Extension(_)) {
                res.remove(&key);
                return;
            }
            match res.get_mut(&key) {
                Some(Value::Object(c)) => c,
                _ => return,
            }
        }
    };
    let Some((name, sub, always)) = attr_name(p) else {
        return;
    };
    if always {
        return;
    }
    let Some(key) = key_ci(target, name) else {
        return;
    };
    match sub {
        None => {
            target.remove(&key);
        }
        Some(s) => match target.get_mut(&key) {
            Some(Value::Array(a)) => {
                for el in a.iter_mut() {
                    if let Some(o) = el.as_object_mut() {
                        if let Some(k) = key_ci(o, s.name()) {
                            o.remove(&k);
                        }
                    }
                }
            }
            Some(Value::Object(o)) => {
                if let Some(k) = key_ci(o, s.name()) {
                    o.remove(&k);
                }
            }
            _ => {}
        },
    }
}

fn str_at<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    get_ci(m, key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// What a user's data says about them, as the engine consumes it.
pub(crate) fn identity(
    provider: &str,
    id: Uuid,
    data: &Map<String, Value>,
    mut groups: Vec<String>,
    deleted: bool,
) -> tenure_domain::IdpIdentity {
    let mut emails: Vec<(bool, String)> = Vec::new();
    if let Some(Value::Array(items)) = get_ci(data, "emails") {
        for item in items {
            let (value, primary) = match item {
                Value::Object(o) => (
                    str_at(o, "value"),
                    get_ci(o, "primary").and_then(Value::as_bool) == Some(true),
                ),
                Value::String(s) => (Some(s.trim()).filter(|s| !s.is_empty()), false),
                _ => (None, false),
            };
            if let Some(v) = value {
                emails.push((primary, v.to_string()));
            }
        }
    }
    // Primary first, otherwise in the order sent; no duplicates.
    emails.sort_by_key(|(primary, _)| !primary);
    let mut seen = HashSet::new();
    let emails: Vec<String> = emails
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| seen.insert(e.to_lowercase()))
        .collect();
    let employee_number = get_ci(data, ENTERPRISE_SCHEMA)
        .and_then(Value::as_object)
        .and_then(|e| str_at(e, "employeeNumber"))
        .map(str::to_string);
    let name = get_ci(data, "name").and_then(Value::as_object);
    let display_name = str_at(data, "displayName")
        .map(str::to_string)
        .or_else(|| {
            name.and_then(|n| str_at(n, "formatted"))
                .map(str::to_string)
        })
        .or_else(|| {
            let n = name?;
            let full = [str_at(n, "givenName"), str_at(n, "familyName")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            (!full.is_empty()).then_some(full)
        });
    groups.sort();
    groups.dedup();
    tenure_domain::IdpIdentity {
        provider: provider.to_string(),
        idp_id: id.to_string(),
        user_name: get_ci(data, "userName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        external_id: get_ci(data, "externalId")
            .and_then(Value::as_str)
            .map(str::to_string),
        emails,
        employee_number,
        display_name,
        active: get_ci(data, "active")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        groups,
        deleted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn normalize_canonicalises_and_coerces() {
        let out = normalize(
            Kind::User,
            obj(json!({
                "schemas": ["x"],
                "id": "client-chosen",
                "USERNAME": "Ana",
                "Active": "False",
                "emails": {"Value": "a@x", "Primary": "true"},
                "password": "secret",
                "groups": [{"value": "g"}],
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"EmployeeNumber": "7", "manager": "m-1"},
                "urn:example:custom:1.0:User": {"shoe": 42},
                "nickName": null,
                "customTopLevel": "kept"
            })),
        )
        .expect("valid");
        assert_eq!(
            Value::Object(out),
            json!({
                "userName": "Ana",
                "active": false,
                "emails": [{"value": "a@x", "primary": true}],
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "7", "manager": {"value": "m-1"}},
                "urn:example:custom:1.0:User": {"shoe": 42},
                "customTopLevel": "kept"
            })
        );
    }

    #[test]
    fn normalize_rejects_bad_values() {
        for bad in [
            json!({}),
            json!({"userName": ""}),
            json!({"userName": 5}),
            json!({"userName": "a", "active": "yes"}),
            json!({"userName": "a", "displayName": ["x"]}),
            json!({"userName": "a", "emails": [{"value": 1}]}),
            json!({"userName": "a", "emails": [{"value": "a", "primary": true}, {"value": "b", "primary": true}]}),
            json!({"userName": "a", "name": "plain"}),
        ] {
            assert!(normalize(Kind::User, obj(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn projection_includes_and_excludes() {
        let res = obj(json!({
            "schemas": ["s"], "id": "1", "userName": "a", "displayName": "A",
            "name": {"givenName": "G", "familyName": "F"},
            "emails": [{"value": "a@x", "type": "work"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "7", "department": "D"}
        }));
        let p = Projection::new(
            Kind::User,
            [
                "userName,name.givenName,emails.value",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            ],
            [],
        );
        assert_eq!(
            Value::Object(p.apply(res.clone())),
            json!({"schemas": ["s"], "id": "1", "userName": "a", "name": {"givenName": "G"},
                   "emails": [{"value": "a@x"}],
                   "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "D"}})
        );
        let p = Projection::new(Kind::User, [], ["displayName,id,name.familyName,emails"]);
        let out = p.apply(res);
        assert!(out.get("displayName").is_none() && out.get("emails").is_none());
        assert_eq!(out.get("id"), Some(&json!("1")));
        assert_eq!(out.get("name"), Some(&json!({"givenName": "G"})));
        assert!(Projection::new(Kind::Group, [], ["members"]).wants("displayName"));
        assert!(!Projection::new(Kind::Group, [], ["members"]).wants("members"));
        assert!(!Projection::new(Kind::Group, ["displayName"], []).wants("members"));
        assert!(Projection::new(Kind::Group, [], []).wants("members"));
    }

    #[test]
    fn identity_from_user_data() {
        let id = Uuid::new_v4();
        let data = obj(json!({
            "userName": "ana",
            "name": {"givenName": "Ana", "familyName": "Silva"},
            "emails": [{"value": "ana@home.org"}, {"value": "Ana@Work.com", "primary": true}, {"value": "ana@work.com"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": " E-1 "}
        }));
        let i = identity(
            "authentik",
            id,
            &data,
            vec!["b".into(), "a".into(), "b".into()],
            false,
        );
        assert_eq!(i.emails, vec!["Ana@Work.com", "ana@home.org"]);
        assert_eq!(i.employee_number.as_deref(), Some("E-1"));
        assert_eq!(i.display_name.as_deref(), Some("Ana Silva"));
        assert!(i.active);
        assert_eq!(i.groups, vec!["a", "b"]);
        assert_eq!(i.idp_id, id.to_string());
    }
}
