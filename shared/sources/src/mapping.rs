//! Field mappings: how a vendor's fields become a `SourceRecord`.
//!
//! Every vendor has a default mapping (see `FieldMapping::defaults`); a
//! source's configuration overrides it key by key:
//!
//! ```toml
//! person_id = "id"                         # vendor field holding the person's id
//! date_format = "MM/DD/YYYY"               # or chrono syntax "%m/%d/%Y"; ISO is always accepted too
//! time_zone = "America/Denver"             # zone for persons without one of their own
//!
//! [fields]                                 # attribute = vendor field
//! cost_center = "customFields.costCentre"  # dot-path into the JSON
//! title = "jobs[primary=true].title"       # first list element whose `primary` is true
//! work_email = "company_email|personal_email"  # first of several that has a value
//! division = ""                            # "" unmaps a default
//!
//! [status]                                 # vendor value = active | on_leave | terminated | rescinded
//! "Leave of Absence" = "on_leave"
//! "*" = "active"                           # any other value (otherwise it is an error)
//! ```
//!
//! Paths: a path is first looked up as one literal key (vendor field names
//! may contain dots or spaces, e.g. BambooHR's `Employee #`); otherwise it is
//! split on `.` and walked through objects, list indexes (`cost_centers.0`)
//! and list filters (`emails[type=work]`). Status values match without
//! regard to case or surrounding blanks.
//!
//! Absent and empty are different things. A field whose *value* is empty
//! (`null`, `""`, BambooHR's `0000-00-00`) is a person without that value.
//! A field that is *not in the payload at all* means the sender was not set
//! up to send it (a webhook that does not post it, an API user without
//! permission): for required attributes and for fields the operator mapped
//! explicitly that is a configuration error, so the payload is quarantined
//! and can be replayed once fixed, rather than silently dropping a value.
//! Default-mapped optional fields that are absent are simply not set.
//!
//! Errors name both the vendor field and the attribute, e.g.
//! `fields.workEmail (work_email): missing`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tenure_domain::{EmploymentStatus, RecordError, SourceRecord};

use crate::adapter::{AdapterError, Kind};

/// Per-source mapping from vendor fields to person attributes: overrides
/// over the vendor's defaults (`FieldMapping::defaults`). Deserialised from
/// the source's `mapping` TOML table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// The vendor field holding the person's stable id (default: the
    /// vendor's own employee id). It becomes `SourceRecord::person_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person_id: Option<String>,
    /// Attribute name (see `ATTRIBUTES`) → vendor field or path; `""`
    /// removes a default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    /// Vendor status value → one of `STATUS_TARGETS`; `"*"` catches every
    /// value not listed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub status: BTreeMap<String, String>,
    /// How dates are written: chrono syntax (`%m/%d/%Y`) or the tokens
    /// `YYYY`, `MM`, `DD` (`MM/DD/YYYY`). ISO dates are accepted whatever
    /// this says, because the same vendor's API answers in ISO while its
    /// webhooks follow the tenant's display format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_format: Option<String>,
    /// IANA zone for persons whose record does not carry one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// The attribute names `fields` may map (the `SourceRecord` fields a source
/// can state, apart from `person_id`, which has its own key).
pub const ATTRIBUTES: [&str; 18] = [
    "given_name",
    "family_name",
    "display_name",
    "work_email",
    "employee_number",
    "department",
    "cost_center",
    "organization",
    "division",
    "title",
    "manager_id",
    "location",
    "time_zone",
    "employment_status",
    "start_date",
    "end_date",
    "effective_date",
    "revoke_immediately",
];

/// What a vendor status value may mean.
pub const STATUS_TARGETS: [&str; 4] = ["active", "on_leave", "terminated", "rescinded"];

/// A mapping that cannot work, naming the TOML key at fault
/// (`fields.colour`, `status."Leave"`, `time_zone`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct MappingError {
    pub key: String,
    pub message: String,
}

impl MappingError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attr {
    GivenName,
    FamilyName,
    DisplayName,
    WorkEmail,
    EmployeeNumber,
    Department,
    CostCenter,
    Organization,
    Division,
    Title,
    ManagerId,
    Location,
    TimeZone,
    EmploymentStatus,
    StartDate,
    EndDate,
    EffectiveDate,
    RevokeImmediately,
}

impl Attr {
    const ALL: [Attr; 18] = [
        Attr::GivenName,
        Attr::FamilyName,
        Attr::DisplayName,
        Attr::WorkEmail,
        Attr::EmployeeNumber,
        Attr::Department,
        Attr::CostCenter,
        Attr::Organization,
        Attr::Division,
        Attr::Title,
        Attr::ManagerId,
        Attr::Location,
        Attr::TimeZone,
        Attr::EmploymentStatus,
        Attr::StartDate,
        Attr::EndDate,
        Attr::EffectiveDate,
        Attr::RevokeImmediately,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Attr::GivenName => "given_name",
            Attr::FamilyName => "family_name",
            Attr::DisplayName => "display_name",
            Attr::WorkEmail => "work_email",
            Attr::EmployeeNumber => "employee_number",
            Attr::Department => "department",
            Attr::CostCenter => "cost_center",
            Attr::Organization => "organization",
            Attr::Division => "division",
            Attr::Title => "title",
            Attr::ManagerId => "manager_id",
            Attr::Location => "location",
            Attr::TimeZone => "time_zone",
            Attr::EmploymentStatus => "employment_status",
            Attr::StartDate => "start_date",
            Attr::EndDate => "end_date",
            Attr::EffectiveDate => "effective_date",
            Attr::RevokeImmediately => "revoke_immediately",
        }
    }

    fn parse(name: &str) -> Option<Attr> {
        Attr::ALL.into_iter().find(|a| a.name() == name)
    }

    /// A record cannot exist without these, so they cannot be unmapped.
    fn required(self) -> bool {
        matches!(self, Attr::GivenName | Attr::FamilyName | Attr::WorkEmail)
    }
}

fn status_target(s: &str) -> Option<EmploymentStatus> {
    match s.trim() {
        "active" => Some(EmploymentStatus::Active),
        "on_leave" => Some(EmploymentStatus::OnLeave),
        "terminated" => Some(EmploymentStatus::Terminated),
        "rescinded" => Some(EmploymentStatus::Rescinded),
        _ => None,
    }
}

/// Checks a path's syntax: non-empty segments, balanced `[key=value]`.
fn check_path(path: &str) -> Result<(), String> {
    for alt in path.split('|') {
        let alt = alt.trim();
        if alt.is_empty() {
            return Err("an alternative in the path is empty".into());
        }
        for seg in alt.split('.') {
            if seg.is_empty() {
                return Err(format!("{alt:?} has an empty segment"));
            }
            let opens = seg.matches('[').count();
            let closes = seg.matches(']').count();
            if opens != closes || opens > 1 {
                return Err(format!("segment {seg:?}: use name[key=value]"));
            }
            if opens == 1 {
                let ok = seg.ends_with(']')
                    && seg
                        .find('[')
                        .and_then(|i| seg.get(i + 1..seg.len() - 1))
                        .is_some_and(|f| f.split_once('=').is_some_and(|(k, _)| !k.is_empty()));
                if !ok {
                    return Err(format!("segment {seg:?}: use name[key=value]"));
                }
            }
        }
    }
    Ok(())
}

/// Turns `MM/DD/YYYY`-style tokens into chrono syntax and checks that the
/// format round-trips a date. Chrono's formatter reports bad specifiers
/// through `fmt::Error`, so the check writes into a `String` instead of
/// calling `to_string`, which would panic.
pub(crate) fn chrono_date_format(fmt: &str) -> Result<String, String> {
    let f = fmt.trim();
    if f.is_empty() {
        return Err("must not be empty".into());
    }
    let converted = if f.contains('%') {
        f.to_string()
    } else {
        let c = f
            .replace("YYYY", "%Y")
            .replace("MM", "%m")
            .replace("DD", "%d");
        let leftover: String = c
            .split('%')
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part
                } else {
                    part.get(1..).unwrap_or("")
                }
            })
            .collect();
        if leftover.chars().any(|ch| ch.is_ascii_alphabetic()) {
            return Err(format!(
                "{f:?}: use the tokens YYYY, MM, DD (e.g. \"MM/DD/YYYY\") or chrono syntax (\"%m/%d/%Y\")"
            ));
        }
        c
    };
    let items: Vec<Item<'_>> = StrftimeItems::new(&converted).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(format!("{f:?} is not a valid date format"));
    }
    let sample = NaiveDate::from_ymd_opt(2026, 3, 14).ok_or("internal: sample date")?;
    let mut text = String::new();
    if write!(text, "{}", sample.format_with_items(items.into_iter())).is_err() {
        return Err(format!("{f:?} is not a valid date format"));
    }
    match NaiveDate::parse_from_str(&text, &converted) {
        Ok(d) if d == sample => Ok(converted),
        _ => Err(format!(
            "{f:?} does not describe a whole date (it needs a year, month and day)"
        )),
    }
}

fn check_zone(z: &str) -> Result<(), String> {
    z.trim()
        .parse::<chrono_tz::Tz>()
        .map(|_| ())
        .map_err(|_| format!("unknown IANA time zone {z:?} (e.g. \"Europe/Berlin\")"))
}

impl FieldMapping {
    /// The vendor's default mapping; a source's own mapping is laid over it.
    pub fn defaults(kind: Kind) -> FieldMapping {
        match kind {
            Kind::BambooHr => crate::bamboohr::default_mapping(),
            Kind::HiBob => crate::hibob::default_mapping(),
            Kind::Personio => crate::personio::default_mapping(),
            Kind::Gusto => crate::gusto::default_mapping(),
            Kind::Deel => crate::deel::default_mapping(),
            Kind::Frappe => crate::frappe::default_mapping(),
            Kind::Csv => crate::csv::default_mapping(),
            Kind::Generic => FieldMapping::default(),
        }
    }

    /// This mapping laid over the vendor's defaults: what the adapter
    /// actually uses (for `tenure sources show`-style displays and docs).
    pub fn effective(&self, kind: Kind) -> FieldMapping {
        let mut m = FieldMapping::defaults(kind);
        if let Some(p) = &self.person_id {
            m.person_id = Some(p.clone());
        }
        for (k, v) in &self.fields {
            m.fields.insert(k.clone(), v.clone());
        }
        m.fields.retain(|_, v| !v.trim().is_empty());
        for (k, v) in &self.status {
            m.status.insert(k.clone(), v.clone());
        }
        if self.date_format.is_some() {
            m.date_format = self.date_format.clone();
        }
        if self.time_zone.is_some() {
            m.time_zone = self.time_zone.clone();
        }
        m
    }

    /// Checks names, status targets, paths, the date format and the zone.
    /// Errors name the TOML key (`fields.colour`, `status."On leave"`).
    pub fn validate(&self) -> Result<(), MappingError> {
        if let Some(p) = &self.person_id {
            if p.trim().is_empty() {
                return Err(MappingError::new("person_id", "must name a vendor field"));
            }
            check_path(p).map_err(|m| MappingError::new("person_id", m))?;
        }
        for (attr, path) in &self.fields {
            let key = format!("fields.{attr}");
            if attr == "person_id" {
                return Err(MappingError::new(
                    key,
                    "the person id has its own key: write person_id = \"…\" at the top of the mapping",
                ));
            }
            let a = Attr::parse(attr).ok_or_else(|| {
                MappingError::new(
                    &key,
                    format!(
                        "unknown attribute; expected one of {}",
                        ATTRIBUTES.join(", ")
                    ),
                )
            })?;
            if path.trim().is_empty() {
                if a.required() {
                    return Err(MappingError::new(
                        key,
                        "is required and cannot be unmapped; name the vendor field that holds it",
                    ));
                }
                continue;
            }
            check_path(path).map_err(|m| MappingError::new(&key, m))?;
        }
        for (value, target) in &self.status {
            let key = format!("status.{value:?}");
            if value.trim().is_empty() {
                return Err(MappingError::new(key, "the vendor value must not be empty"));
            }
            if status_target(target).is_none() {
                return Err(MappingError::new(
                    key,
                    format!(
                        "{target:?} is not a status; expected one of {}",
                        STATUS_TARGETS.join(", ")
                    ),
                ));
            }
        }
        if let Some(f) = &self.date_format {
            chrono_date_format(f).map_err(|m| MappingError::new("date_format", m))?;
        }
        if let Some(z) = &self.time_zone {
            check_zone(z).map_err(|m| MappingError::new("time_zone", m))?;
        }
        Ok(())
    }

    /// Validates this mapping and lays it over the vendor's defaults.
    pub(crate) fn resolve(&self, kind: Kind) -> Result<Resolved, MappingError> {
        self.validate()?;
        let defaults = FieldMapping::defaults(kind);
        let person_id_explicit = self.person_id.is_some();
        let person_id = self
            .person_id
            .clone()
            .or(defaults.person_id.clone())
            .unwrap_or_else(|| "person_id".into());
        let mut fields = Vec::new();
        for attr in Attr::ALL {
            let name = attr.name();
            let (path, explicit) = match self.fields.get(name) {
                Some(p) => (p.trim().to_string(), true),
                None => match defaults.fields.get(name) {
                    Some(p) => (p.trim().to_string(), false),
                    None => continue,
                },
            };
            if path.is_empty() {
                continue;
            }
            fields.push(FieldSource {
                attr,
                path,
                explicit,
            });
        }
        for required in [Attr::GivenName, Attr::FamilyName, Attr::WorkEmail] {
            if kind != Kind::Generic && !fields.iter().any(|f| f.attr == required) {
                return Err(MappingError::new(
                    format!("fields.{}", required.name()),
                    "is required: name the vendor field that holds it",
                ));
            }
        }
        let mut status = Vec::new();
        let mut status_wildcard = None;
        let mut merged = defaults.status.clone();
        for (k, v) in &self.status {
            // An override replaces a default regardless of its case.
            merged.retain(|dk, _| !dk.trim().eq_ignore_ascii_case(k.trim()));
            merged.insert(k.clone(), v.clone());
        }
        for (value, target) in &merged {
            let t = status_target(target).ok_or_else(|| {
                MappingError::new(
                    format!("status.{value:?}"),
                    format!("{target:?} is not a status"),
                )
            })?;
            if value.trim() == "*" {
                status_wildcard = Some(t);
            } else {
                status.push((value.trim().to_lowercase(), t));
            }
        }
        let date_format = match self.date_format.as_ref().or(defaults.date_format.as_ref()) {
            Some(f) => chrono_date_format(f).map_err(|m| MappingError::new("date_format", m))?,
            None => "%Y-%m-%d".to_string(),
        };
        let date_format_label = self
            .date_format
            .clone()
            .or(defaults.date_format.clone())
            .unwrap_or_else(|| "YYYY-MM-DD".into());
        let time_zone = self
            .time_zone
            .clone()
            .or(defaults.time_zone)
            .map(|z| z.trim().to_string());
        if let Some(z) = &time_zone {
            check_zone(z).map_err(|m| MappingError::new("time_zone", m))?;
        }
        Ok(Resolved {
            person_id,
            person_id_explicit,
            fields,
            status,
            status_wildcard,
            date_format,
            date_format_label,
            time_zone,
        })
    }
}

pub(crate) struct FieldSource {
    pub attr: Attr,
    pub path: String,
    /// Set by the operator rather than by the vendor's defaults.
    pub explicit: bool,
}

/// A validated mapping laid over the vendor defaults.
pub(crate) struct Resolved {
    pub person_id: String,
    pub person_id_explicit: bool,
    pub fields: Vec<FieldSource>,
    status: Vec<(String, EmploymentStatus)>,
    status_wildcard: Option<EmploymentStatus>,
    date_format: String,
    date_format_label: String,
    pub time_zone: Option<String>,
}

impl Resolved {
    /// Every vendor path the mapping reads, the person id first.
    pub(crate) fn paths(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.person_id.as_str()).chain(self.fields.iter().map(|f| f.path.as_str()))
    }

    /// Mapped fields the document does not carry at all. A data-carrying
    /// webhook that lacks one is not a whole snapshot of the person, and a
    /// record is a whole snapshot (docs/lifecycle.md), so the adapter
    /// fetches the person instead of dropping those values.
    pub(crate) fn absent_paths(&self, doc: &Doc<'_>) -> Vec<String> {
        self.paths()
            .filter(|p| matches!(doc.lookup(p), Found::Absent))
            .map(str::to_string)
            .collect()
    }

    /// Like `absent_paths`, for the fields no record can do without: the
    /// person id, names, work e-mail and the employment status.
    pub(crate) fn absent_required(&self, doc: &Doc<'_>) -> Vec<String> {
        std::iter::once(self.person_id.as_str())
            .chain(
                self.fields
                    .iter()
                    .filter(|f| f.attr.required() || f.attr == Attr::EmploymentStatus)
                    .map(|f| f.path.as_str()),
            )
            .filter(|p| matches!(doc.lookup(p), Found::Absent))
            .map(str::to_string)
            .collect()
    }

    fn status_of(&self, value: &str) -> Option<EmploymentStatus> {
        let v = value.trim().to_lowercase();
        self.status
            .iter()
            .find(|(k, _)| *k == v)
            .map(|(_, s)| *s)
            .or(self.status_wildcard)
    }

    fn source_of(&self, attr: &str) -> Option<&str> {
        if attr == "person_id" {
            return Some(&self.person_id);
        }
        self.fields
            .iter()
            .find(|f| f.attr.name() == attr)
            .map(|f| f.path.as_str())
    }
}

/// How a vendor nests its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Fields are keys (or paths) of the JSON object.
    Plain,
    /// Personio's `attributes`: each field is `{"label", "value", …}`;
    /// a path's first segment names the attribute and the rest walks its
    /// `value`.
    Personio,
}

/// A JSON document to map, with what the error messages call it.
pub(crate) struct Doc<'a> {
    pub root: &'a Value,
    pub shape: Shape,
    /// Prepended to vendor paths in error messages (`employees[0].fields.`).
    pub prefix: String,
    /// A second literal name to try for a field (BambooHR field webhooks
    /// post English display names unless the admin set aliases).
    pub alias: fn(&str) -> Option<&'static str>,
}

pub(crate) fn no_alias(_: &str) -> Option<&'static str> {
    None
}

#[derive(Debug)]
pub(crate) enum Found<'a> {
    /// Not in the document at all.
    Absent,
    /// Present without a value: `null`, blank text, an empty list slot.
    Empty,
    Value(&'a Value),
}

fn classify(v: &Value) -> Found<'_> {
    match v {
        Value::Null => Found::Empty,
        Value::String(s) if s.trim().is_empty() => Found::Empty,
        other => Found::Value(other),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn step<'a>(cur: &'a Value, seg: &str) -> Found<'a> {
    if cur.is_null() {
        // A parent without a value: the person has no such value.
        return Found::Empty;
    }
    if let (Some(open), true) = (seg.find('['), seg.ends_with(']')) {
        let name = &seg[..open];
        let filter = seg.get(open + 1..seg.len() - 1).unwrap_or("");
        let Some((key, want)) = filter.split_once('=') else {
            return Found::Absent;
        };
        let list = if name.is_empty() {
            cur
        } else {
            match cur.as_object().and_then(|o| o.get(name)) {
                Some(v) => v,
                None => return Found::Absent,
            }
        };
        return match list {
            Value::Null => Found::Empty,
            Value::Array(items) => items
                .iter()
                .find(|item| {
                    item.get(key)
                        .and_then(scalar_text)
                        .is_some_and(|t| t.trim() == want.trim())
                })
                .map_or(Found::Empty, classify),
            _ => Found::Absent,
        };
    }
    match cur {
        Value::Object(o) => o.get(seg).map_or(Found::Absent, classify),
        Value::Array(items) => match seg.parse::<usize>() {
            Ok(i) => items.get(i).map_or(Found::Empty, classify),
            Err(_) => Found::Absent,
        },
        _ => Found::Absent,
    }
}

impl<'a> Doc<'a> {
    pub(crate) fn plain(root: &'a Value, prefix: impl Into<String>) -> Self {
        Doc {
            root,
            shape: Shape::Plain,
            prefix: prefix.into(),
            alias: no_alias,
        }
    }

    /// Looks a path up; `a|b` takes the first alternative with a value.
    pub(crate) fn lookup(&self, path: &str) -> Found<'a> {
        let mut empty = false;
        for alt in path.split('|') {
            match self.lookup_one(alt.trim()) {
                Found::Value(v) => return Found::Value(v),
                Found::Empty => empty = true,
                Found::Absent => {}
            }
        }
        if empty {
            Found::Empty
        } else {
            Found::Absent
        }
    }

    fn lookup_one(&self, path: &str) -> Found<'a> {
        let literal = |name: &str| -> Option<Found<'a>> {
            let v = self.root.as_object()?.get(name)?;
            Some(match (self.shape, v) {
                (Shape::Personio, Value::Object(o)) if o.contains_key("value") => {
                    o.get("value").map_or(Found::Empty, classify)
                }
                _ => classify(v),
            })
        };
        if let Some(found) = literal(path) {
            return found;
        }
        if let Some(found) = (self.alias)(path).and_then(literal) {
            return found;
        }
        let mut segs = path.split('.');
        let Some(first) = segs.next() else {
            return Found::Absent;
        };
        let mut cur = match self.shape {
            Shape::Plain => match step(self.root, first) {
                Found::Value(v) => v,
                other => return other,
            },
            Shape::Personio => match literal(first) {
                Some(Found::Value(v)) => v,
                Some(other) => return other,
                None => return Found::Absent,
            },
        };
        for seg in segs {
            match step(cur, seg) {
                Found::Value(v) => cur = v,
                other => return other,
            }
        }
        Found::Value(cur)
    }

    /// How error messages call a field: the key the payload really uses
    /// (a display-name alias when that is what was posted).
    fn name(&self, path: &str, attr: &str) -> String {
        let obj = self.root.as_object();
        let shown = match (self.alias)(path) {
            Some(alias) if obj.is_some_and(|o| !o.contains_key(path) && o.contains_key(alias)) => {
                alias
            }
            _ => path,
        };
        format!("{}{shown} ({attr})", self.prefix)
    }
}

/// What the adapter knows besides the document when it builds a record.
pub(crate) struct Ctx {
    pub effective_at: DateTime<Utc>,
}

fn config(field: String, message: impl Into<String>) -> AdapterError {
    AdapterError::config(Some(field), message)
}

fn invalid(field: String, message: impl Into<String>) -> AdapterError {
    AdapterError::invalid(field, message)
}

const NOT_SENT: &str = "not in the payload: the sender is not set up to send this field (check which fields the webhook posts or the API user may read), or the mapping names the wrong field";

/// Builds and validates one record. Errors name the vendor field and the
/// attribute.
pub(crate) fn build_record(
    res: &Resolved,
    doc: &Doc<'_>,
    ctx: &Ctx,
) -> Result<SourceRecord, AdapterError> {
    let as_text = |path: &str, attr: &str, v: &Value| -> Result<Option<String>, AdapterError> {
        match v {
            Value::String(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            Value::Number(n) => Ok(Some(n.to_string())),
            Value::Bool(b) => Ok(Some(b.to_string())),
            Value::Null => Ok(None),
            Value::Object(_) => Err(invalid(
                doc.name(path, attr),
                "expected a single value but found an object; map a field inside it (e.g. department.name)",
            )),
            Value::Array(_) => Err(invalid(
                doc.name(path, attr),
                "expected a single value but found a list; pick an element (e.g. emails[type=work].value or cost_centers.0.name)",
            )),
        }
    };

    // The person id.
    let person_id = match doc.lookup(&res.person_id) {
        Found::Absent => return Err(config(doc.name(&res.person_id, "person_id"), NOT_SENT)),
        Found::Empty => return Err(invalid(doc.name(&res.person_id, "person_id"), "missing")),
        Found::Value(v) => as_text(&res.person_id, "person_id", v)?
            .ok_or_else(|| invalid(doc.name(&res.person_id, "person_id"), "missing"))?,
    };

    let mut texts: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut status = EmploymentStatus::Active;
    let mut dates: BTreeMap<&'static str, NaiveDate> = BTreeMap::new();
    let mut revoke = false;

    for f in &res.fields {
        let attr = f.attr.name();
        let found = doc.lookup(&f.path);
        let value = match found {
            Found::Absent => {
                if f.attr.required() || f.explicit || f.attr == Attr::EmploymentStatus {
                    return Err(config(doc.name(&f.path, attr), NOT_SENT));
                }
                continue;
            }
            Found::Empty => None,
            Found::Value(v) => as_text(&f.path, attr, v)?,
        };
        match f.attr {
            Attr::EmploymentStatus => {
                let raw = value.ok_or_else(|| invalid(doc.name(&f.path, attr), "missing"))?;
                status = res.status_of(&raw).ok_or_else(|| {
                    config(
                        doc.name(&f.path, attr),
                        format!(
                            "the value {raw:?} has no status mapping; add status.{raw:?} = \"active\" (or on_leave, terminated, rescinded) to the source's mapping"
                        ),
                    )
                })?;
            }
            Attr::StartDate | Attr::EndDate | Attr::EffectiveDate => {
                if let Some(raw) = value {
                    match parse_date(&raw, &res.date_format) {
                        Ok(Some(d)) => {
                            dates.insert(attr, d);
                        }
                        Ok(None) => {}
                        Err(()) => {
                            return Err(invalid(
                                doc.name(&f.path, attr),
                                format!(
                                    "{raw:?} is not a date in the format {} (set the mapping's date_format)",
                                    res.date_format_label
                                ),
                            ))
                        }
                    }
                }
            }
            Attr::RevokeImmediately => {
                if let Some(raw) = value {
                    revoke = parse_flag(&raw).ok_or_else(|| {
                        invalid(
                            doc.name(&f.path, attr),
                            format!("{raw:?} is not a yes/no value (true, false, yes, no, 1, 0)"),
                        )
                    })?;
                }
            }
            _ => {
                if let Some(v) = value {
                    texts.insert(attr, v);
                } else if f.attr.required() {
                    return Err(invalid(doc.name(&f.path, attr), "missing"));
                }
            }
        }
    }

    let take = |texts: &mut BTreeMap<&'static str, String>, k: &str| texts.remove(k);
    let required =
        |texts: &mut BTreeMap<&'static str, String>, a: Attr| -> Result<String, AdapterError> {
            take(texts, a.name()).ok_or_else(|| {
                let path = res.source_of(a.name()).unwrap_or("?");
                invalid(doc.name(path, a.name()), "missing")
            })
        };
    let given_name = required(&mut texts, Attr::GivenName)?;
    let family_name = required(&mut texts, Attr::FamilyName)?;
    let work_email = required(&mut texts, Attr::WorkEmail)?;
    let start_date = dates.remove("start_date");
    let mut end_date = dates.remove("end_date");
    if let (Some(start), Some(end)) = (start_date, end_date) {
        // A last day before the first day belongs to an earlier employment
        // (a rehire keeps the old termination date in several HRIS) or to
        // a hire withdrawn before it began; the status says what holds now.
        if end < start {
            end_date = None;
        }
    }
    let time_zone = take(&mut texts, "time_zone").or_else(|| res.time_zone.clone());
    let record = SourceRecord {
        person_id,
        given_name,
        family_name,
        display_name: take(&mut texts, "display_name"),
        work_email,
        employee_number: take(&mut texts, "employee_number"),
        department: take(&mut texts, "department"),
        cost_center: take(&mut texts, "cost_center"),
        organization: take(&mut texts, "organization"),
        division: take(&mut texts, "division"),
        title: take(&mut texts, "title"),
        manager_id: take(&mut texts, "manager_id"),
        location: take(&mut texts, "location"),
        time_zone,
        employment_status: status,
        start_date,
        end_date,
        effective_at: ctx.effective_at,
        effective_date: dates.remove("effective_date"),
        sequence: None,
        revoke_immediately: revoke,
    };
    record.validate().map_err(|e| record_error(res, doc, e))?;
    Ok(record)
}

/// Names the vendor field behind a record validation error.
fn record_error(res: &Resolved, doc: &Doc<'_>, e: RecordError) -> AdapterError {
    match res.source_of(&e.field) {
        Some(path) => AdapterError::invalid(doc.name(path, &e.field), e.message),
        None if e.field == "time_zone" => AdapterError::config(Some("time_zone".into()), e.message),
        None => AdapterError::invalid(e.field, e.message),
    }
}

fn parse_flag(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" | "x" => Some(true),
        "false" | "no" | "n" | "0" | "" => Some(false),
        _ => None,
    }
}

/// Parses a date in the configured format, falling back to ISO (also with
/// a time part, as Personio writes `2020-01-31T00:00:00+01:00`: the date is
/// taken as written, which is the person's local date). Empty values and
/// BambooHR's `0000-00-00` mean no date.
pub(crate) fn parse_date(raw: &str, chrono_fmt: &str) -> Result<Option<NaiveDate>, ()> {
    let t = raw.trim();
    if t.is_empty() || t.starts_with("0000-00-00") {
        return Ok(None);
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, chrono_fmt) {
        return Ok(Some(d));
    }
    if let (Some(head), Some(tail)) = (t.get(..10), t.get(10..)) {
        if tail.is_empty() || tail.starts_with('T') || tail.starts_with(' ') {
            if let Ok(d) = NaiveDate::parse_from_str(head, "%Y-%m-%d") {
                return Ok(Some(d));
            }
        }
    }
    Err(())
}

/// Parses a vendor timestamp: Unix seconds (number or digits), RFC 3339,
/// ISO with a `+0000` offset (BambooHR), or a naive ISO time, which is
/// read in `zone` (UTC when none: HiBob's `triggeredAt` has no offset).
pub(crate) fn parse_instant(v: &Value, zone: Option<chrono_tz::Tz>) -> Option<DateTime<Utc>> {
    match v {
        Value::Number(n) => n.as_i64().and_then(|s| Utc.timestamp_opt(s, 0).single()),
        Value::String(s) => parse_instant_str(s, zone),
        _ => None,
    }
}

pub(crate) fn parse_instant_str(s: &str, zone: Option<chrono_tz::Tz>) -> Option<DateTime<Utc>> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<i64>()
            .ok()
            .and_then(|secs| Utc.timestamp_opt(secs, 0).single());
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(d) = DateTime::parse_from_str(t, fmt) {
            return Some(d.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, fmt) {
            return match zone {
                Some(z) => z
                    .from_local_datetime(&naive)
                    .earliest()
                    .map(|d| d.with_timezone(&Utc)),
                None => Some(Utc.from_utc_datetime(&naive)),
            };
        }
    }
    None
}

/// A JSON value as a vendor id (text or a number) that can safely become
/// a URL path segment: not empty, not `.` or `..` (which URL normalisation
/// would turn into a different path even when percent-encoded), no control
/// characters, at most 256 characters.
pub(crate) fn id_text(v: &Value) -> Option<String> {
    let id = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    usable_id(&id).then_some(id)
}

pub(crate) fn usable_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id.chars().count() <= 256
        && !id.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn toml_mapping(s: &str) -> FieldMapping {
        match toml::from_str(s) {
            Ok(m) => m,
            Err(e) => panic!("mapping does not parse: {e}"),
        }
    }

    fn csv_res(m: &FieldMapping) -> Resolved {
        match m.resolve(Kind::Csv) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    fn person() -> Value {
        json!({
            "person_id": "E-1", "given_name": "Ana", "family_name": "Silva",
            "work_email": "ana@example.com", "employment_status": "active",
            "start_date": "2026-03-03"
        })
    }

    #[test]
    fn toml_overrides_parse_and_validate() {
        let m = toml_mapping(
            r#"
            person_id = "employeeNumber"
            date_format = "MM/DD/YYYY"
            time_zone = "America/Denver"
            [fields]
            cost_center = "customFields.costCentre"
            division = ""
            [status]
            "Leave of Absence" = "on_leave"
            "*" = "active"
            "#,
        );
        assert_eq!(m.validate(), Ok(()));
        let eff = m.effective(Kind::BambooHr);
        assert_eq!(
            eff.fields.get("cost_center").map(String::as_str),
            Some("customFields.costCentre")
        );
        assert!(!eff.fields.contains_key("division"));
        assert_eq!(
            eff.fields.get("given_name").map(String::as_str),
            Some("firstName")
        );
        assert_eq!(eff.person_id.as_deref(), Some("employeeNumber"));
    }

    #[test]
    fn unknown_toml_keys_are_refused() {
        let r: Result<FieldMapping, _> = toml::from_str("colour = \"blue\"");
        assert!(r.is_err());
    }

    #[test]
    fn validation_names_the_toml_key() {
        let key = |s: &str| toml_mapping(s).validate().map_err(|e| e.key);
        assert_eq!(key("[fields]\ncolour = \"x\""), Err("fields.colour".into()));
        assert_eq!(
            key("[fields]\nperson_id = \"x\""),
            Err("fields.person_id".into())
        );
        assert_eq!(
            key("[fields]\nwork_email = \"\""),
            Err("fields.work_email".into())
        );
        assert_eq!(
            key("[fields]\ntitle = \"a..b\""),
            Err("fields.title".into())
        );
        assert_eq!(
            key("[fields]\ntitle = \"jobs[primary].title\""),
            Err("fields.title".into())
        );
        assert_eq!(
            key("[status]\nLeave = \"away\""),
            Err("status.\"Leave\"".into())
        );
        assert_eq!(key("time_zone = \"Mars/Olympus\""), Err("time_zone".into()));
        assert_eq!(key("date_format = \"%Q\""), Err("date_format".into()));
        assert_eq!(key("date_format = \"MM/YYYY\""), Err("date_format".into()));
        assert_eq!(key("date_format = \"Month DD\""), Err("date_format".into()));
        assert_eq!(key("person_id = \" \""), Err("person_id".into()));
        assert_eq!(key("date_format = \"%d.%m.%Y\""), Ok(()));
        assert_eq!(key("date_format = \"DD.MM.YYYY\""), Ok(()));
    }

    #[test]
    fn date_formats() {
        let us = chrono_date_format("MM/DD/YYYY").unwrap_or_default();
        assert_eq!(us, "%m/%d/%Y");
        assert_eq!(
            parse_date("03/14/2026", &us),
            Ok(NaiveDate::from_ymd_opt(2026, 3, 14))
        );
        // ISO is accepted whatever the format says.
        assert_eq!(
            parse_date("2026-03-14", &us),
            Ok(NaiveDate::from_ymd_opt(2026, 3, 14))
        );
        assert_eq!(
            parse_date("2020-01-31T00:00:00+01:00", "%Y-%m-%d"),
            Ok(NaiveDate::from_ymd_opt(2020, 1, 31))
        );
        assert_eq!(parse_date("0000-00-00", "%Y-%m-%d"), Ok(None));
        assert_eq!(parse_date("  ", "%Y-%m-%d"), Ok(None));
        assert_eq!(parse_date("14/03/2026", &us), Err(()));
        assert_eq!(parse_date("2026-02-30", "%Y-%m-%d"), Err(()));
        // Multi-byte text near the ISO cut must not panic.
        assert_eq!(parse_date("2026-03-1ä4", "%Y-%m-%d"), Err(()));
    }

    #[test]
    fn instants() {
        let utc = |s| parse_instant_str(s, None);
        let want = Utc.with_ymd_and_hms(2026, 1, 31, 18, 42, 0).single();
        assert_eq!(utc("2026-01-31T18:42:00+0000"), want);
        assert_eq!(utc("2026-01-31T18:42:00Z"), want);
        assert_eq!(utc("2026-01-31T19:42:00+01:00"), want);
        assert_eq!(utc("2026-01-31T18:42:00"), want);
        assert_eq!(utc("1769884920"), want);
        assert_eq!(parse_instant(&json!(1769884920), None), want);
        assert_eq!(
            parse_instant_str(
                "2026-01-31 19:42:00.000000",
                Some(chrono_tz::Europe::Berlin)
            ),
            want
        );
        assert_eq!(utc("yesterday"), None);
        assert_eq!(utc("99999999999999999999"), None);
    }

    #[test]
    fn paths_walk_objects_lists_filters_and_alternatives() {
        let v = json!({
            "a.b": "literal",
            "a": {"b": "nested", "n": null},
            "jobs": [{"primary": false, "title": "Old"}, {"primary": true, "title": "New"}],
            "emails": [{"type": "work", "value": "w@example.com"}],
            "empty": [],
            "blank": "  ",
            "num": 42
        });
        let doc = Doc::plain(&v, "");
        let text = |p: &str| match doc.lookup(p) {
            Found::Value(v) => scalar_text(v),
            Found::Empty => Some("<empty>".into()),
            Found::Absent => None,
        };
        assert_eq!(text("a.b").as_deref(), Some("literal"));
        assert_eq!(text("a.n").as_deref(), Some("<empty>"));
        assert_eq!(text("a.n.deeper").as_deref(), Some("<empty>"));
        assert_eq!(text("jobs[primary=true].title").as_deref(), Some("New"));
        assert_eq!(text("jobs.0.title").as_deref(), Some("Old"));
        assert_eq!(text("jobs.7.title").as_deref(), Some("<empty>"));
        assert_eq!(
            text("emails[type=work].value").as_deref(),
            Some("w@example.com")
        );
        assert_eq!(text("emails[type=home].value").as_deref(), Some("<empty>"));
        assert_eq!(text("empty.0").as_deref(), Some("<empty>"));
        assert_eq!(text("blank").as_deref(), Some("<empty>"));
        assert_eq!(text("num").as_deref(), Some("42"));
        assert_eq!(text("missing"), None);
        assert_eq!(text("num.x"), None);
        assert_eq!(text("missing|blank").as_deref(), Some("<empty>"));
        assert_eq!(text("blank|a.b").as_deref(), Some("literal"));
        assert_eq!(text("nope|nada"), None);
    }

    #[test]
    fn personio_attributes_unwrap_values() {
        let v = json!({
            "first_name": {"label": "First name", "value": "Ana"},
            "department": {"label": "Department", "value": {"type": "Department", "attributes": {"id": 7, "name": "IT"}}},
            "termination_date": {"label": "Termination date", "value": null}
        });
        let doc = Doc {
            root: &v,
            shape: Shape::Personio,
            prefix: String::new(),
            alias: no_alias,
        };
        assert!(matches!(doc.lookup("first_name"), Found::Value(Value::String(s)) if s == "Ana"));
        assert!(
            matches!(doc.lookup("department.attributes.name"), Found::Value(Value::String(s)) if s == "IT")
        );
        assert!(matches!(doc.lookup("termination_date"), Found::Empty));
        assert!(matches!(doc.lookup("dynamic_99"), Found::Absent));
    }

    #[test]
    fn builds_a_valid_record_with_defaults_and_zone() {
        let m = toml_mapping("time_zone = \"Europe/Lisbon\"");
        let res = csv_res(&m);
        let v = person();
        let r = build_record(&res, &Doc::plain(&v, ""), &Ctx { effective_at: at() });
        let r = match r {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(r.person_id, "E-1");
        assert_eq!(r.time_zone.as_deref(), Some("Europe/Lisbon"));
        assert_eq!(r.start_date, NaiveDate::from_ymd_opt(2026, 3, 3));
        assert_eq!(r.effective_at, at());
        assert_eq!(r.employment_status, EmploymentStatus::Active);
    }

    fn build_err(m: &FieldMapping, v: Value) -> AdapterError {
        let res = csv_res(m);
        match build_record(&res, &Doc::plain(&v, "row."), &Ctx { effective_at: at() }) {
            Ok(r) => panic!("expected an error, got {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn errors_name_vendor_field_and_attribute() {
        use crate::adapter::ErrorKind;
        let m = toml_mapping("[fields]\nwork_email = \"workEmail\"");
        let mut v = person();
        v["workEmail"] = Value::Null;
        let e = build_err(&m, v);
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(e.field.as_deref(), Some("row.workEmail (work_email)"));
        assert_eq!(e.to_string(), "row.workEmail (work_email): missing");

        // Absent (not sent at all) is a configuration problem.
        let e = build_err(&m, person());
        assert_eq!(e.kind, ErrorKind::Config);
        assert_eq!(e.field.as_deref(), Some("row.workEmail (work_email)"));

        let mut v = person();
        v["work_email"] = "not-an-email".into();
        let e = build_err(&FieldMapping::default(), v);
        assert_eq!(e.field.as_deref(), Some("row.work_email (work_email)"));
        assert_eq!(e.kind, ErrorKind::Invalid);

        let mut v = person();
        v["start_date"] = "03/03/2026".into();
        let e = build_err(&FieldMapping::default(), v);
        assert_eq!(e.field.as_deref(), Some("row.start_date (start_date)"));
        assert!(e.message.contains("YYYY-MM-DD"), "{e}");

        let mut v = person();
        v["employment_status"] = "retired".into();
        let e = build_err(&FieldMapping::default(), v);
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(e.message.contains("status.\"retired\""), "{e}");

        let mut v = person();
        v["department"] = json!({"name": "IT"});
        let e = build_err(&FieldMapping::default(), v);
        assert_eq!(e.field.as_deref(), Some("row.department (department)"));

        let mut v = person();
        v["time_zone"] = "Mars/Olympus".into();
        let e = build_err(&FieldMapping::default(), v);
        assert_eq!(e.field.as_deref(), Some("row.time_zone (time_zone)"));

        // An explicitly mapped optional field that is not sent is named.
        let m = toml_mapping("[fields]\ncost_center = \"customFields.costCentre\"");
        let e = build_err(&m, person());
        assert_eq!(e.kind, ErrorKind::Config);
        assert_eq!(
            e.field.as_deref(),
            Some("row.customFields.costCentre (cost_center)")
        );
    }

    #[test]
    fn status_map_is_case_insensitive_with_wildcard() {
        let m =
            toml_mapping("[status]\n\"Leave of Absence\" = \"on_leave\"\n\"*\" = \"terminated\"");
        let res = csv_res(&m);
        assert_eq!(
            res.status_of(" leave of absence "),
            Some(EmploymentStatus::OnLeave)
        );
        assert_eq!(res.status_of("ACTIVE"), Some(EmploymentStatus::Active));
        assert_eq!(
            res.status_of("gone fishing"),
            Some(EmploymentStatus::Terminated)
        );
        let plain = csv_res(&FieldMapping::default());
        assert_eq!(plain.status_of("gone fishing"), None);
    }

    #[test]
    fn end_before_start_is_an_earlier_employment() {
        let mut v = person();
        v["start_date"] = "2026-03-03".into();
        v["end_date"] = "2025-12-31".into();
        let res = csv_res(&FieldMapping::default());
        let r = build_record(&res, &Doc::plain(&v, ""), &Ctx { effective_at: at() });
        assert!(matches!(r, Ok(ref r) if r.end_date.is_none()), "{r:?}");
    }

    #[test]
    fn flags() {
        assert_eq!(parse_flag("Yes"), Some(true));
        assert_eq!(parse_flag("0"), Some(false));
        assert_eq!(parse_flag("maybe"), None);
    }
}
