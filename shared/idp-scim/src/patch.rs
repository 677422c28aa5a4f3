//! PATCH (RFC 7644 §3.5.2) applied to a resource's JSON in memory: every
//! operation is applied in order to a copy, and the copy is written only if
//! all of them succeed, so a PATCH is atomic.
//!
//! Besides the RFC forms this accepts what identity providers send:
//! operation names in any case (`"Replace"`), `remove` of a multi-valued
//! attribute with a `value` list naming the values to remove (Authentik and
//! Entra remove group members as `{"op":"remove","path":"members",
//! "value":[{"value":"<id>"}]}`), `add` to `attr[filter].sub` creating the
//! value when none matches and the filter is a conjunction of `eq` tests
//! (`emails[type eq "work"].value`), and path-less values keyed by
//! `urn:…:attr`. Group members are kept in an indexed set so that a PATCH
//! with thousands of member operations stays linear.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::ScimError;
use crate::filter::{
    get_ci, key_ci, parse_patch_path, resolve, AttrName, CmpOp, Cond, Filter, Lit, PatchPath,
    PathError, SimplePath, SubName,
};
use crate::resource::is_urn;
use crate::schema::{Attr, Kind, Mutability, Schema, Ty, PATCH_OP};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Add,
    Remove,
    Replace,
}

#[derive(Debug, Clone)]
pub(crate) struct Op {
    pub kind: OpKind,
    pub path: Option<PatchPath>,
    /// `Some(Value::Null)` when the client sent `"value": null`.
    pub value: Option<Value>,
}

/// Parses a PatchOp request body; every path is resolved before anything is
/// applied.
pub(crate) fn parse_ops(kind: Kind, body: Value) -> Result<Vec<Op>, ScimError> {
    let Value::Object(mut m) = body else {
        return Err(ScimError::invalid_syntax(
            "the PATCH body must be a PatchOp object",
        ));
    };
    if let Some(schemas) = get_ci(&m, "schemas") {
        let ok = schemas.as_array().is_some_and(|a| {
            a.iter()
                .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP)))
        });
        if !ok {
            return Err(ScimError::invalid_syntax(format!(
                "'schemas' must contain {PATCH_OP}"
            )));
        }
    }
    let key = key_ci(&m, "Operations")
        .ok_or_else(|| ScimError::invalid_syntax("'Operations' is required"))?;
    let Some(Value::Array(raw)) = m.remove(&key) else {
        return Err(ScimError::invalid_syntax("'Operations' must be an array"));
    };
    let mut ops = Vec::with_capacity(raw.len());
    for (i, o) in raw.into_iter().enumerate() {
        let n = i + 1;
        let Value::Object(o) = o else {
            return Err(ScimError::invalid_syntax(format!(
                "operation {n} must be an object"
            )));
        };
        let op = get_ci(&o, "op").and_then(Value::as_str).unwrap_or_default();
        let op = match op.to_ascii_lowercase().as_str() {
            "add" => OpKind::Add,
            "remove" => OpKind::Remove,
            "replace" => OpKind::Replace,
            _ => {
                return Err(ScimError::invalid_syntax(format!(
                    "operation {n}: 'op' must be add, remove or replace"
                )))
            }
        };
        let path = match get_ci(&o, "path") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => {
                Some(parse_patch_path(kind, s.trim()).map_err(|e| match e {
                    PathError::Path(d) => ScimError::invalid_path(format!("operation {n}: {d}")),
                    PathError::Filter(d) => {
                        ScimError::invalid_filter(format!("operation {n}: {d}"))
                    }
                })?)
            }
            Some(_) => {
                return Err(ScimError::invalid_path(format!(
                    "operation {n}: 'path' must be a string"
                )))
            }
        };
        let value = get_ci(&o, "value").cloned();
        if op != OpKind::Remove && value.is_none() {
            return Err(ScimError::invalid_value(format!(
                "operation {n}: {op:?} needs a 'value'"
            )));
        }
        if op == OpKind::Remove && path.is_none() {
            return Err(ScimError::no_target(format!(
                "operation {n}: remove needs a 'path'"
            )));
        }
        ops.push(Op {
            kind: op,
            path,
            value,
        });
    }
    Ok(ops)
}

/// A group's members, in order, indexed by id.
#[derive(Debug, Default, Clone)]
pub(crate) struct MemberSet {
    items: Vec<Option<Map<String, Value>>>,
    index: HashMap<String, usize>,
}

/// Canonical form of a member id: a UUID in lower case, anything else as is.
fn member_key(s: &str) -> String {
    Uuid::parse_str(s.trim())
        .map(|u| u.to_string())
        .unwrap_or_else(|_| s.to_string())
}

fn member(v: Value) -> Result<(String, Map<String, Value>), ScimError> {
    let mut obj = match v {
        Value::Object(o) => o,
        Value::String(s) => {
            let mut m = Map::new();
            m.insert("value".into(), Value::String(s));
            m
        }
        _ => {
            return Err(ScimError::invalid_value(
                "a member must be an object with a 'value'",
            ))
        }
    };
    let k = key_ci(&obj, "value")
        .ok_or_else(|| ScimError::invalid_value("a member must have a 'value'"))?;
    let Some(Value::String(id)) = obj.remove(&k) else {
        return Err(ScimError::invalid_value(
            "a member's 'value' must be a string",
        ));
    };
    let key = member_key(&id);
    obj.insert("value".into(), Value::String(key.clone()));
    Ok((key, obj))
}

fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

impl MemberSet {
    pub fn from_values(values: Vec<Value>) -> Result<Self, ScimError> {
        let mut s = MemberSet::default();
        s.add(Value::Array(values))?;
        Ok(s)
    }

    fn add(&mut self, v: Value) -> Result<(), ScimError> {
        for it in items(v) {
            let (key, obj) = member(it)?;
            match self.index.get(&key) {
                Some(&i) => {
                    if let Some(Some(existing)) = self.items.get_mut(i) {
                        for (k, x) in obj {
                            if k != "value" {
                                existing.insert(k, x);
                            }
                        }
                    }
                }
                None => {
                    self.index.insert(key, self.items.len());
                    self.items.push(Some(obj));
                }
            }
        }
        Ok(())
    }

    fn remove_key(&mut self, key: &str) {
        if let Some(i) = self.index.remove(&member_key(key)) {
            if let Some(slot) = self.items.get_mut(i) {
                *slot = None;
            }
        }
    }

    /// Removes the members a `value` list names (by `value`, or by all the
    /// given fields when an entry has no `value`).
    fn remove_listed(&mut self, v: Value) -> Result<(), ScimError> {
        for it in items(v) {
            match &it {
                Value::String(s) => self.remove_key(s),
                Value::Object(o) => match get_ci(o, "value") {
                    Some(Value::String(s)) => self.remove_key(s),
                    Some(_) => {
                        return Err(ScimError::invalid_value(
                            "a member's 'value' must be a string",
                        ))
                    }
                    None => {
                        let doomed: Vec<String> = self
                            .items
                            .iter()
                            .flatten()
                            .filter(|m| subset_eq(o, m))
                            .filter_map(|m| m.get("value").and_then(Value::as_str))
                            .map(str::to_string)
                            .collect();
                        for k in doomed {
                            self.remove_key(&k);
                        }
                    }
                },
                _ => {
                    return Err(ScimError::invalid_value(
                        "members to remove must be objects with a 'value'",
                    ))
                }
            }
        }
        Ok(())
    }

    fn clear(&mut self) {
        self.items.clear();
        self.index.clear();
    }

    pub fn into_values(self) -> Vec<Value> {
        self.items
            .into_iter()
            .flatten()
            .map(Value::Object)
            .collect()
    }

    fn to_values(&self) -> Vec<Value> {
        self.items
            .iter()
            .flatten()
            .cloned()
            .map(Value::Object)
            .collect()
    }
}

/// Whether every field of `pattern` is in `m` with the same value (field
/// names compared ignoring case).
fn subset_eq(pattern: &Map<String, Value>, m: &Map<String, Value>) -> bool {
    pattern.iter().all(|(k, v)| get_ci(m, k) == Some(v))
}

/// What a PATCH is applied to.
#[derive(Debug, Clone)]
pub(crate) struct Doc {
    pub data: Map<String, Value>,
    /// A group's members; None for users.
    pub members: Option<MemberSet>,
}

pub(crate) fn apply(kind: Kind, doc: &mut Doc, ops: Vec<Op>) -> Result<(), ScimError> {
    for (i, op) in ops.into_iter().enumerate() {
        apply_op(kind, doc, op.kind, op.path, op.value).map_err(|mut e| {
            e.detail = format!("operation {}: {}", i + 1, e.detail);
            e
        })?;
    }
    Ok(())
}

fn apply_op(
    kind: Kind,
    doc: &mut Doc,
    op: OpKind,
    path: Option<PatchPath>,
    value: Option<Value>,
) -> Result<(), ScimError> {
    let Some(path) = path else {
        return apply_without_path(kind, doc, op, value);
    };
    match path {
        PatchPath::Extension(s) => apply_extension(doc, op, s, value),
        PatchPath::Attr { name, sub, filter } => {
            if let (Some(set), AttrName::Known { ext: None, attr }) = (doc.members.as_mut(), &name)
            {
                if attr.name == "members" {
                    let attr: &'static Attr = attr;
                    return apply_members(
                        set,
                        attr,
                        op,
                        &name,
                        sub.as_ref(),
                        filter.as_ref(),
                        value,
                    );
                }
            }
            apply_attr(
                &mut doc.data,
                op,
                &name,
                sub.as_ref(),
                filter.as_ref(),
                value,
            )
        }
    }
}

fn apply_members(
    set: &mut MemberSet,
    attr: &'static Attr,
    op: OpKind,
    name: &AttrName,
    sub: Option<&SubName>,
    filter: Option<&Filter>,
    value: Option<Value>,
) -> Result<(), ScimError> {
    match (sub, filter, op) {
        (None, None, OpKind::Add) => return set.add(value.unwrap_or(Value::Null)),
        (None, None, OpKind::Replace) => {
            set.clear();
            return set.add(value.unwrap_or(Value::Null));
        }
        (None, None, OpKind::Remove) => {
            match value {
                Some(v) if !v.is_null() => set.remove_listed(v)?,
                _ => set.clear(),
            }
            return Ok(());
        }
        (None, Some(f), OpKind::Remove) => {
            if let Some(id) = value_eq(f) {
                set.remove_key(&id);
                return Ok(());
            }
        }
        _ => {}
    }
    // Anything else (sub-attributes, other filters): apply to the members
    // as plain JSON, then index them again.
    let mut tmp = Map::new();
    tmp.insert(attr.name.into(), Value::Array(set.to_values()));
    apply_attr(&mut tmp, op, name, sub, filter, value)?;
    *set = MemberSet::from_values(tmp.remove(attr.name).map(items).unwrap_or_default())?;
    Ok(())
}

/// `value eq "x"` as a filter, the RFC's way to address one member.
fn value_eq(f: &Filter) -> Option<String> {
    match f {
        Filter::Test(t)
            if t.attr.name == "value" && t.sub.is_none() && t.value_filter.is_none() =>
        {
            match &t.cond {
                Cond::Cmp(CmpOp::Eq, Lit::Str(s)) => Some(s.clone()),
                _ => None,
            }
        }
        _ => None,
    }
}

fn apply_without_path(
    kind: Kind,
    doc: &mut Doc,
    op: OpKind,
    value: Option<Value>,
) -> Result<(), ScimError> {
    let Some(Value::Object(obj)) = value else {
        return Err(ScimError::invalid_value(
            "an operation without a path needs an object 'value'",
        ));
    };
    for (k, v) in obj {
        if k.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if is_urn(&k) && v.is_object() && kind.extension(&k).is_none() {
            if k.eq_ignore_ascii_case(kind.core().id) {
                apply_without_path(kind, doc, op, Some(v))?;
                continue;
            }
            // A whole container of an extension this server does not know.
            let key = key_ci(&doc.data, &k).unwrap_or(k);
            match (doc.data.get_mut(&key), v) {
                (Some(Value::Object(existing)), Value::Object(add)) => merge_object(existing, add),
                (_, v) => {
                    doc.data.insert(key, v);
                }
            }
            continue;
        }
        match resolve(kind, &k, true) {
            Ok(SimplePath::Extension(s)) => apply_extension(doc, op, s, Some(v))?,
            Ok(SimplePath::Attr { name, sub }) => {
                if let AttrName::Known { attr, .. } = &name {
                    // id, meta, groups: ignored as in a PUT body.
                    if attr.mutability == Mutability::ReadOnly {
                        continue;
                    }
                }
                apply_op(
                    kind,
                    doc,
                    op,
                    Some(PatchPath::Attr {
                        name,
                        sub,
                        filter: None,
                    }),
                    Some(v),
                )?;
            }
            Err(_) => {
                // An attribute of no schema: kept as sent, like in a POST.
                let key = key_ci(&doc.data, &k).unwrap_or(k);
                if v.is_null() {
                    doc.data.remove(&key);
                } else {
                    doc.data.insert(key, v);
                }
            }
        }
    }
    Ok(())
}

fn apply_extension(
    doc: &mut Doc,
    op: OpKind,
    s: &'static Schema,
    value: Option<Value>,
) -> Result<(), ScimError> {
    let value = value.filter(|v| !v.is_null());
    let (OpKind::Add | OpKind::Replace, Some(v)) = (op, value) else {
        if let Some(k) = key_ci(&doc.data, s.id) {
            doc.data.remove(&k);
        }
        return Ok(());
    };
    let Value::Object(obj) = v else {
        return Err(ScimError::invalid_value(format!(
            "the value for '{}' must be an object",
            s.id
        )));
    };
    for (k, x) in obj {
        match s.attr(&k) {
            Some(a) if a.mutability == Mutability::ReadOnly => {}
            Some(a) => apply_attr(
                &mut doc.data,
                op,
                &AttrName::Known {
                    ext: Some(s),
                    attr: a,
                },
                None,
                None,
                Some(x),
            )?,
            None => {
                let key = key_ci(&doc.data, s.id).unwrap_or_else(|| s.id.to_string());
                let c = doc
                    .data
                    .entry(key)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(c) = c {
                    c.insert(k, x);
                }
            }
        }
    }
    Ok(())
}

fn merge_object(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        let key = key_ci(into, &k).unwrap_or(k);
        if v.is_null() {
            into.remove(&key);
        } else {
            into.insert(key, v);
        }
    }
}

fn apply_attr(
    data: &mut Map<String, Value>,
    op: OpKind,
    name: &AttrName,
    sub: Option<&SubName>,
    filter: Option<&Filter>,
    value: Option<Value>,
) -> Result<(), ScimError> {
    let (urn, attr_name, known): (Option<&str>, &str, Option<&'static Attr>) = match name {
        AttrName::Known { ext, attr } => (ext.map(|e| e.id), attr.name, Some(*attr)),
        AttrName::Custom { urn, name } => (Some(urn.as_str()), name.as_str(), None),
    };
    if let Some(a) = known {
        if a.mutability == Mutability::ReadOnly {
            return Err(ScimError::mutability(format!("'{}' is read-only", a.name)));
        }
    }
    if let Some(SubName::Known(s)) = sub {
        if s.mutability == Mutability::ReadOnly {
            return Err(ScimError::mutability(format!(
                "'{attr_name}.{}' is read-only",
                s.name
            )));
        }
    }
    // `"value": null` on add or replace unassigns, like remove (but a
    // replace through a filter still needs a match).
    let (op, value) = match (op, value) {
        (OpKind::Add | OpKind::Replace, Some(Value::Null)) if filter.is_none() => {
            (OpKind::Remove, None)
        }
        (op, v) => (op, v),
    };

    let container_key = urn.map(|u| key_ci(data, u).unwrap_or_else(|| u.to_string()));
    let c: &mut Map<String, Value> = match &container_key {
        None => data,
        Some(ck) => {
            if !data.contains_key(ck) {
                if op == OpKind::Remove {
                    return Ok(());
                }
                data.insert(ck.clone(), Value::Object(Map::new()));
            }
            match data.get_mut(ck) {
                Some(Value::Object(m)) => m,
                _ => return Err(ScimError::invalid_path(format!("'{ck}' is not an object"))),
            }
        }
    };
    let key = key_ci(c, attr_name).unwrap_or_else(|| attr_name.to_string());
    let multi = known.is_some_and(|a| a.multi) || c.get(&key).is_some_and(Value::is_array);
    let complex =
        known.is_some_and(|a| a.ty == Ty::Complex) || c.get(&key).is_some_and(Value::is_object);
    match (filter, sub) {
        (None, None) => whole(c, key, op, value, multi, complex)?,
        (None, Some(s)) => sub_everywhere(c, key, op, value, multi, s.name())?,
        (Some(f), s) => filtered(c, key, op, value, f, s.map(SubName::name))?,
    }
    if let Some(ck) = container_key {
        if matches!(data.get(&ck), Some(Value::Object(m)) if m.is_empty()) {
            data.remove(&ck);
        }
    }
    Ok(())
}

fn need(value: Option<Value>) -> Result<Value, ScimError> {
    value.ok_or_else(|| ScimError::invalid_value("this operation needs a 'value'"))
}

fn whole(
    c: &mut Map<String, Value>,
    key: String,
    op: OpKind,
    value: Option<Value>,
    multi: bool,
    complex: bool,
) -> Result<(), ScimError> {
    match op {
        OpKind::Add => {
            let v = need(value)?;
            if multi {
                let slot = c.entry(key).or_insert_with(|| Value::Array(Vec::new()));
                if !slot.is_array() {
                    let old = slot.take();
                    *slot = Value::Array(if old.is_null() { vec![] } else { vec![old] });
                }
                if let Value::Array(a) = slot {
                    let mut touched = Vec::new();
                    for it in items(v) {
                        match a.iter().position(|x| x == &it) {
                            Some(i) => touched.push(i),
                            None => {
                                a.push(it);
                                touched.push(a.len() - 1);
                            }
                        }
                    }
                    fix_primary(a, &touched);
                }
            } else if let (true, Value::Object(add), Some(Value::Object(existing))) =
                (complex, &v, c.get_mut(&key))
            {
                merge_object(existing, add.clone());
            } else {
                c.insert(key, v);
            }
        }
        OpKind::Replace => {
            let v = need(value)?;
            if multi {
                c.insert(key, Value::Array(items(v)));
            } else if let (true, Value::Object(add), Some(Value::Object(existing))) =
                (complex, &v, c.get_mut(&key))
            {
                merge_object(existing, add.clone());
            } else {
                c.insert(key, v);
            }
        }
        OpKind::Remove => {
            let listed = value.filter(|v| !v.is_null());
            match (listed, c.get_mut(&key)) {
                (Some(v), Some(Value::Array(a))) => {
                    remove_listed(a, v);
                    if a.is_empty() {
                        c.remove(&key);
                    }
                }
                _ => {
                    c.remove(&key);
                }
            }
        }
    }
    Ok(())
}

/// Removes from `a` the values a `value` list names: by `value` when an
/// entry has one, otherwise by all its fields, or by equality.
fn remove_listed(a: &mut Vec<Value>, v: Value) {
    for it in items(v) {
        match &it {
            Value::Object(o) => match get_ci(o, "value") {
                Some(val) => a.retain(|el| {
                    el.as_object()
                        .and_then(|e| get_ci(e, "value"))
                        .is_none_or(|x| x != val)
                }),
                None => a.retain(|el| !el.as_object().is_some_and(|e| subset_eq(o, e))),
            },
            other => a.retain(|el| {
                el != other
                    && el
                        .as_object()
                        .and_then(|e| get_ci(e, "value"))
                        .is_none_or(|x| x != other)
            }),
        }
    }
}

fn set_sub(el: &mut Value, sub: &str, v: &Value) {
    if let Value::Object(o) = el {
        let k = key_ci(o, sub).unwrap_or_else(|| sub.to_string());
        if v.is_null() {
            o.remove(&k);
        } else {
            o.insert(k, v.clone());
        }
    }
}

fn remove_sub(el: &mut Value, sub: &str) {
    if let Value::Object(o) = el {
        if let Some(k) = key_ci(o, sub) {
            o.remove(&k);
        }
    }
}

fn is_empty_object(v: &Value) -> bool {
    matches!(v, Value::Object(o) if o.is_empty())
}

fn sub_everywhere(
    c: &mut Map<String, Value>,
    key: String,
    op: OpKind,
    value: Option<Value>,
    multi: bool,
    sub: &str,
) -> Result<(), ScimError> {
    let remove_key = match c.get_mut(&key) {
        Some(Value::Array(a)) => {
            if op == OpKind::Remove {
                a.iter_mut().for_each(|el| remove_sub(el, sub));
                a.retain(|el| !is_empty_object(el));
            } else {
                let v = need(value)?;
                if a.is_empty() {
                    let mut m = Map::new();
                    m.insert(sub.to_string(), v);
                    a.push(Value::Object(m));
                } else {
                    a.iter_mut().for_each(|el| set_sub(el, sub, &v));
                }
            }
            a.is_empty()
        }
        Some(el @ Value::Object(_)) => {
            if op == OpKind::Remove {
                remove_sub(el, sub);
            } else {
                set_sub(el, sub, &need(value)?);
            }
            is_empty_object(el)
        }
        Some(_) if op == OpKind::Remove => false,
        Some(_) => {
            return Err(ScimError::invalid_path(format!(
                "'{key}' has no sub-attributes"
            )))
        }
        None if op == OpKind::Remove => false,
        None => {
            let mut m = Map::new();
            m.insert(sub.to_string(), need(value)?);
            let v = Value::Object(m);
            c.insert(key.clone(), if multi { Value::Array(vec![v]) } else { v });
            false
        }
    };
    if remove_key {
        c.remove(&key);
    }
    Ok(())
}

/// The value a filter made only of `eq` tests describes, used to create the
/// value that `add` to `attr[filter].sub` targets when none matches.
fn eq_template(f: &Filter) -> Option<Map<String, Value>> {
    match f {
        Filter::Test(t) if t.sub.is_none() && t.value_filter.is_none() && t.ext.is_none() => {
            let v = match &t.cond {
                Cond::Cmp(CmpOp::Eq, Lit::Str(s)) => Value::String(s.clone()),
                Cond::Cmp(CmpOp::Eq, Lit::Bool(b)) => Value::Bool(*b),
                Cond::Cmp(CmpOp::Eq, Lit::Num(n)) => {
                    serde_json::Number::from_f64(*n).map(Value::Number)?
                }
                _ => return None,
            };
            let mut m = Map::new();
            m.insert(t.attr.name.to_string(), v);
            Some(m)
        }
        Filter::And(a, b) => {
            let mut m = eq_template(a)?;
            m.extend(eq_template(b)?);
            Some(m)
        }
        _ => None,
    }
}

fn filtered(
    c: &mut Map<String, Value>,
    key: String,
    op: OpKind,
    value: Option<Value>,
    f: &Filter,
    sub: Option<&str>,
) -> Result<(), ScimError> {
    if !c.contains_key(&key) {
        if op == OpKind::Remove {
            return Ok(());
        }
        c.insert(key.clone(), Value::Array(Vec::new()));
    }
    let Some(Value::Array(a)) = c.get_mut(&key) else {
        return Err(ScimError::invalid_path(format!(
            "'{key}' is not multi-valued"
        )));
    };
    let matched: Vec<usize> = a
        .iter()
        .enumerate()
        .filter(|(_, el)| el.as_object().is_some_and(|o| f.matches(o)))
        .map(|(i, _)| i)
        .collect();
    match op {
        OpKind::Remove => {
            let doomed: HashSet<usize> = matched.into_iter().collect();
            match sub {
                None => {
                    let mut i = 0;
                    a.retain(|_| {
                        let keep = !doomed.contains(&i);
                        i += 1;
                        keep
                    });
                }
                Some(s) => {
                    for &i in &doomed {
                        if let Some(el) = a.get_mut(i) {
                            remove_sub(el, s);
                        }
                    }
                    a.retain(|el| !is_empty_object(el));
                }
            }
        }
        OpKind::Replace => {
            if matched.is_empty() {
                return Err(ScimError::no_target(format!(
                    "no value of '{key}' matches the filter"
                )));
            }
            let v = need(value)?;
            for &i in &matched {
                let Some(el) = a.get_mut(i) else { continue };
                match sub {
                    Some(s) => set_sub(el, s, &v),
                    None if v.is_object() => *el = v.clone(),
                    None => {
                        return Err(ScimError::invalid_value(format!(
                            "a value of '{key}' must be an object"
                        )))
                    }
                }
            }
            fix_primary(a, &matched);
        }
        OpKind::Add => {
            let v = need(value)?;
            let mut touched = matched;
            if touched.is_empty() {
                let mut el = eq_template(f).ok_or_else(|| {
                    ScimError::no_target(format!(
                        "no value of '{key}' matches the filter, and the filter does not describe a new one"
                    ))
                })?;
                match (sub, v) {
                    (Some(s), v) => {
                        el.insert(s.to_string(), v);
                    }
                    (None, Value::Object(o)) => merge_object(&mut el, o),
                    (None, _) => {
                        return Err(ScimError::invalid_value(format!(
                            "a value of '{key}' must be an object"
                        )))
                    }
                }
                a.push(Value::Object(el));
                touched.push(a.len() - 1);
            } else {
                for &i in &touched {
                    let Some(el) = a.get_mut(i) else { continue };
                    match (sub, &v, el) {
                        (Some(s), v, el) => set_sub(el, s, v),
                        (None, Value::Object(o), Value::Object(e)) => merge_object(e, o.clone()),
                        _ => {
                            return Err(ScimError::invalid_value(format!(
                                "a value of '{key}' must be an object"
                            )))
                        }
                    }
                }
            }
            fix_primary(a, &touched);
        }
    }
    if a.is_empty() {
        c.remove(&key);
    }
    Ok(())
}

/// RFC 7643 §2.4: at most one value is primary; the one just written wins.
fn fix_primary(a: &mut [Value], touched: &[usize]) {
    let is_primary = |v: &Value| {
        v.as_object()
            .and_then(|o| get_ci(o, "primary"))
            .is_some_and(|p| {
                p == &Value::Bool(true)
                    || p.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true"))
            })
    };
    let Some(winner) = touched
        .iter()
        .rev()
        .copied()
        .find(|&i| a.get(i).is_some_and(is_primary))
    else {
        return;
    };
    for (i, el) in a.iter_mut().enumerate() {
        if i != winner && is_primary(el) {
            set_sub(el, "primary", &Value::Bool(false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::normalize;
    use serde_json::json;

    fn user() -> Map<String, Value> {
        json!({
            "userName": "bjensen",
            "displayName": "Babs",
            "active": true,
            "emails": [
                {"value": "b@work.com", "type": "work", "primary": true},
                {"value": "b@home.org", "type": "home"}
            ],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "1"}
        })
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    fn patch(kind: Kind, doc: &mut Doc, ops: Value) -> Result<(), ScimError> {
        let ops = parse_ops(kind, json!({"schemas": [PATCH_OP], "Operations": ops}))?;
        apply(kind, doc, ops)?;
        doc.data = normalize(kind, std::mem::take(&mut doc.data))?;
        Ok(())
    }

    fn user_doc() -> Doc {
        Doc {
            data: user(),
            members: None,
        }
    }

    #[test]
    fn replace_add_remove_simple_and_filtered() {
        let mut d = user_doc();
        patch(
            Kind::User,
            &mut d,
            json!([
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@work.com"},
                {"op": "add", "path": "emails[type eq \"other\"].value", "value": "o@x.org"},
                {"op": "add", "path": "name.givenName", "value": "Barbara"},
                {"op": "remove", "path": "displayName"},
                {"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "value": "2"}
            ]),
        )
        .expect("patch");
        assert_eq!(d.data["active"], json!(false));
        assert_eq!(
            d.data["emails"],
            json!([
                {"value": "new@work.com", "type": "work", "primary": true},
                {"value": "b@home.org", "type": "home"},
                {"value": "o@x.org", "type": "other"}
            ])
        );
        assert_eq!(d.data["name"], json!({"givenName": "Barbara"}));
        assert!(d.data.get("displayName").is_none());
        assert_eq!(
            d.data["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["employeeNumber"],
            json!("2")
        );
    }

    #[test]
    fn no_path_values_and_read_only_attributes() {
        let mut d = user_doc();
        patch(
            Kind::User,
            &mut d,
            json!([{"op": "replace", "value": {
                "id": "ignored", "meta": {"version": "x"}, "DISPLAYNAME": "B",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "R&D",
                "name.familyName": "Jensen"
            }}]),
        )
        .expect("patch");
        assert_eq!(d.data["displayName"], json!("B"));
        assert_eq!(d.data["name"], json!({"familyName": "Jensen"}));
        assert_eq!(
            d.data["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            json!({"employeeNumber": "1", "department": "R&D"})
        );
        let err = patch(
            Kind::User,
            &mut user_doc(),
            json!([{"op": "replace", "path": "id", "value": "x"}]),
        )
        .expect_err("id is read-only");
        assert_eq!(err.scim_type, Some(crate::error::ScimType::Mutability));
    }

    #[test]
    fn primary_moves_to_the_new_value() {
        let mut d = user_doc();
        patch(
            Kind::User,
            &mut d,
            json!([{"op": "add", "path": "emails", "value": [{"value": "c@x", "primary": true}]}]),
        )
        .expect("patch");
        let primaries: Vec<_> = d.data["emails"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["primary"] == json!(true))
            .map(|e| e["value"].clone())
            .collect();
        assert_eq!(primaries, vec![json!("c@x")]);
    }

    #[test]
    fn failures_are_classified() {
        let cases = [
            (
                json!([{"op": "replace", "path": "emails[type eq \"fax\"].value", "value": "x"}]),
                "noTarget",
            ),
            (json!([{"op": "remove"}]), "noTarget"),
            (
                json!([{"op": "add", "path": "nosuch", "value": "x"}]),
                "invalidPath",
            ),
            (
                json!([{"op": "add", "path": "emails[type eq]", "value": "x"}]),
                "invalidFilter",
            ),
            (
                json!([{"op": "replace", "path": "active", "value": "maybe"}]),
                "invalidValue",
            ),
            (
                json!([{"op": "remove", "path": "userName"}]),
                "invalidValue",
            ),
            (json!([{"op": "jump", "path": "userName"}]), "invalidSyntax"),
            (json!([{"op": "add", "path": "title"}]), "invalidValue"),
        ];
        for (ops, want) in cases {
            let err = patch(Kind::User, &mut user_doc(), ops.clone()).expect_err("must fail");
            let got = err.scim_type.map(|t| format!("{t:?}")).unwrap_or_default();
            assert_eq!(got.to_lowercase(), want.to_lowercase(), "{ops}");
        }
    }

    #[test]
    fn members_in_both_removal_forms() {
        let ids: Vec<String> = (0..4).map(|_| Uuid::new_v4().to_string()).collect();
        let mut d = Doc {
            data: json!({"displayName": "g"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            members: Some(MemberSet::default()),
        };
        patch(
            Kind::Group,
            &mut d,
            json!([
                {"op": "add", "path": "members", "value": ids.iter().map(|i| json!({"value": i})).collect::<Vec<_>>()},
                {"op": "Add", "path": "members", "value": [{"value": ids[0].to_uppercase(), "display": "Zero"}]},
                {"op": "remove", "path": "members", "value": [{"value": ids[1]}]},
                {"op": "remove", "path": format!("members[value eq \"{}\"]", ids[2])},
            ]),
        )
        .expect("patch");
        let left: Vec<Value> = d
            .members
            .clone()
            .map(MemberSet::into_values)
            .unwrap_or_default();
        assert_eq!(
            left,
            vec![
                json!({"value": ids[0], "display": "Zero"}),
                json!({"value": ids[3]})
            ]
        );
        patch(
            Kind::Group,
            &mut d,
            json!([{"op": "replace", "path": "members[value eq \"nobody\"].display", "value": "x"}]),
        )
        .expect_err("no match");
        patch(
            Kind::Group,
            &mut d,
            json!([{"op": "remove", "path": "members"}]),
        )
        .expect("clear");
        assert!(d
            .members
            .map(MemberSet::into_values)
            .unwrap_or_default()
            .is_empty());
    }
}
