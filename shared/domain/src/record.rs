//! The generic HR person record (the documented JSON format of the generic
//! webhook) and its validation. Validation names the offending field so that
//! the ingest service can answer with an actionable 422.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const MAX_TEXT: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmploymentStatus {
    Active,
    /// Employed but away (parental leave, sabbatical); apps decide per
    /// policy whether access stays.
    OnLeave,
    Terminated,
    /// A hire that will not happen after all: no trace may remain downstream.
    Rescinded,
}

/// One fact about one person as a source states it at `effective_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRecord {
    pub person_id: String,
    pub given_name: String,
    pub family_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub work_email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_center: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub division: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    pub employment_status: EmploymentStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<NaiveDate>,
    pub effective_at: DateTime<Utc>,
    /// The local date from which this record's facts hold (a future move,
    /// leave or return). Without it they hold from `effective_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_date: Option<NaiveDate>,
    /// The source's own ordering of records with the same effective time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// Cut access at once, whatever `end_date` says (urgent termination).
    #[serde(default, skip_serializing_if = "is_false")]
    pub revoke_immediately: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {message}")]
pub struct RecordError {
    pub field: String,
    pub message: String,
}

impl RecordError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The person attributes Tenure keeps, normalised from a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Attributes {
    pub given_name: String,
    pub family_name: String,
    pub display_name: String,
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_center: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub division: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub from: Option<String>,
    pub to: Option<String>,
}

impl Attributes {
    /// Attribute lookup by the names used in app scope filters and docs.
    pub fn get(&self, name: &str) -> Option<&str> {
        match name {
            "given_name" => Some(&self.given_name),
            "family_name" => Some(&self.family_name),
            "display_name" => Some(&self.display_name),
            "email" => Some(&self.email),
            "employee_number" => self.employee_number.as_deref(),
            "department" => self.department.as_deref(),
            "cost_center" => self.cost_center.as_deref(),
            "organization" => self.organization.as_deref(),
            "division" => self.division.as_deref(),
            "title" => self.title.as_deref(),
            "manager_id" => self.manager_id.as_deref(),
            "location" => self.location.as_deref(),
            "time_zone" => self.time_zone.as_deref(),
            _ => None,
        }
    }

    pub const NAMES: [&'static str; 13] = [
        "given_name",
        "family_name",
        "display_name",
        "email",
        "employee_number",
        "department",
        "cost_center",
        "organization",
        "division",
        "title",
        "manager_id",
        "location",
        "time_zone",
    ];

    /// Field-by-field differences, for the audit trail of a change.
    pub fn changes_to(&self, next: &Attributes) -> BTreeMap<String, Change> {
        Self::NAMES
            .iter()
            .filter_map(|name| {
                let (a, b) = (self.get(name), next.get(name));
                (a != b).then(|| {
                    (
                        (*name).to_string(),
                        Change {
                            from: a.map(str::to_string),
                            to: b.map(str::to_string),
                        },
                    )
                })
            })
            .collect()
    }
}

fn clean(v: &Option<String>) -> Option<String> {
    v.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl SourceRecord {
    /// Parses and validates a JSON body. Errors name the field at fault.
    pub fn from_json(body: &[u8]) -> Result<Self, ParseError> {
        // serde would also fill a struct from a JSON array by position,
        // which no sender means.
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {}
            Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
                return Err(ParseError::Invalid(RecordError::new(
                    ".",
                    "the body must be one JSON object (a person record)",
                )))
            }
            _ => {}
        }
        let de = &mut serde_json::Deserializer::from_slice(body);
        let record: SourceRecord = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                ParseError::Syntax(inner.to_string())
            } else {
                let field = if path == "." {
                    missing_field(&inner.to_string()).unwrap_or_else(|| path.clone())
                } else {
                    path
                };
                ParseError::Invalid(RecordError::new(field, strip_position(&inner.to_string())))
            }
        })?;
        // One object and nothing after it: `{…}xyz` is not a record with a
        // comment, it is a body the sender did not mean to send.
        de.end().map_err(|e| {
            ParseError::Syntax(format!("trailing characters after the record: {e}"))
        })?;
        record.validate().map_err(ParseError::Invalid)?;
        Ok(record)
    }

    pub fn validate(&self) -> Result<(), RecordError> {
        text("person_id", &self.person_id)?;
        text("given_name", &self.given_name)?;
        text("family_name", &self.family_name)?;
        for (name, value) in [
            ("display_name", &self.display_name),
            ("employee_number", &self.employee_number),
            ("department", &self.department),
            ("cost_center", &self.cost_center),
            ("organization", &self.organization),
            ("division", &self.division),
            ("title", &self.title),
            ("manager_id", &self.manager_id),
            ("location", &self.location),
        ] {
            if let Some(v) = value {
                if v.chars().count() > MAX_TEXT {
                    return Err(RecordError::new(
                        name,
                        format!("longer than {MAX_TEXT} characters"),
                    ));
                }
                if v.chars().any(char::is_control) {
                    return Err(RecordError::new(name, "contains control characters"));
                }
            }
        }
        email("work_email", &self.work_email)?;
        if let Some(tz) = &self.time_zone {
            if tz.parse::<chrono_tz::Tz>().is_err() {
                return Err(RecordError::new(
                    "time_zone",
                    format!("unknown IANA time zone {tz:?} (e.g. \"Europe/Berlin\")"),
                ));
            }
        }
        if let (Some(start), Some(end)) = (self.start_date, self.end_date) {
            if end < start {
                return Err(RecordError::new(
                    "end_date",
                    format!("{end} is before start_date {start}"),
                ));
            }
        }
        Ok(())
    }

    pub fn attributes(&self) -> Attributes {
        let given = self.given_name.trim().to_string();
        let family = self.family_name.trim().to_string();
        Attributes {
            display_name: clean(&self.display_name).unwrap_or_else(|| format!("{given} {family}")),
            given_name: given,
            family_name: family,
            email: self.work_email.trim().to_string(),
            employee_number: clean(&self.employee_number),
            department: clean(&self.department),
            cost_center: clean(&self.cost_center),
            organization: clean(&self.organization),
            division: clean(&self.division),
            title: clean(&self.title),
            manager_id: clean(&self.manager_id),
            location: clean(&self.location),
            time_zone: clean(&self.time_zone),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("malformed JSON: {0}")]
    Syntax(String),
    #[error("invalid record: {0}")]
    Invalid(RecordError),
}

fn text(field: &str, v: &str) -> Result<(), RecordError> {
    let t = v.trim();
    if t.is_empty() {
        return Err(RecordError::new(field, "must not be empty"));
    }
    if t.chars().count() > MAX_TEXT {
        return Err(RecordError::new(
            field,
            format!("longer than {MAX_TEXT} characters"),
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(RecordError::new(field, "contains control characters"));
    }
    Ok(())
}

/// RFC 5321: at most 254 characters in all, 64 before the `@`. Also what
/// keeps a work e-mail well inside an index entry (2,704 bytes).
const MAX_EMAIL: usize = 254;
const MAX_EMAIL_LOCAL: usize = 64;

fn email(field: &str, v: &str) -> Result<(), RecordError> {
    let t = v.trim();
    if t.chars().count() > MAX_EMAIL {
        return Err(RecordError::new(
            field,
            format!("longer than {MAX_EMAIL} characters (RFC 5321)"),
        ));
    }
    text(field, v)?;
    let bad = || RecordError::new(field, format!("{t:?} is not an e-mail address"));
    let (local, domain) = t.split_once('@').ok_or_else(bad)?;
    if local.chars().count() > MAX_EMAIL_LOCAL {
        return Err(RecordError::new(
            field,
            format!("the part before the @ is longer than {MAX_EMAIL_LOCAL} characters (RFC 5321)"),
        ));
    }
    if local.is_empty()
        || domain.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || t.chars().any(char::is_whitespace)
    {
        return Err(bad());
    }
    Ok(())
}

fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// serde appends "at line X column Y"; the field name already locates the problem.
fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "person_id": "E-1", "given_name": "Ana", "family_name": "Silva",
            "work_email": "ana@example.com", "employment_status": "active",
            "start_date": "2026-03-03", "effective_at": "2026-02-01T10:00:00Z",
            "time_zone": "Europe/Berlin"
        })
    }

    fn parse(v: serde_json::Value) -> Result<SourceRecord, ParseError> {
        SourceRecord::from_json(v.to_string().as_bytes())
    }

    fn field_of(r: Result<SourceRecord, ParseError>) -> String {
        match r {
            Err(ParseError::Invalid(e)) => e.field,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn valid_record_parses_and_normalises() {
        let r = parse(valid()).expect("valid");
        let a = r.attributes();
        assert_eq!(a.display_name, "Ana Silva");
        assert_eq!(a.time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(a.cost_center, None);
        let mut v = valid();
        v["cost_center"] = " CC-7 ".into();
        v["organization"] = "Acme".into();
        v["division"] = "".into();
        let a = parse(v).expect("valid").attributes();
        assert_eq!(a.get("cost_center"), Some("CC-7"));
        assert_eq!(a.get("organization"), Some("Acme"));
        assert_eq!(a.get("division"), None);
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = valid();
        v["work_email"] = "not-an-email".into();
        assert_eq!(field_of(parse(v)), "work_email");

        let mut v = valid();
        v["time_zone"] = "Mars/Olympus".into();
        assert_eq!(field_of(parse(v)), "time_zone");

        let mut v = valid();
        v["start_date"] = "03/03/2026".into();
        assert_eq!(field_of(parse(v)), "start_date");

        let mut v = valid();
        v.as_object_mut().map(|o| o.remove("given_name"));
        assert_eq!(field_of(parse(v)), "given_name");

        let mut v = valid();
        v["employment_status"] = "retired".into();
        assert_eq!(field_of(parse(v)), "employment_status");

        let mut v = valid();
        v["end_date"] = "2026-01-01".into();
        assert_eq!(field_of(parse(v)), "end_date");

        let mut v = valid();
        v["favourite_colour"] = "blue".into();
        let e = parse(v);
        assert!(
            matches!(e, Err(ParseError::Invalid(ref r)) if r.message.contains("favourite_colour")),
            "{e:?}"
        );
    }

    #[test]
    fn only_a_json_object_is_a_record() {
        let as_array = serde_json::json!(["E-1", "Ana", "Silva", null, "ana@example.com"]);
        assert!(matches!(parse(as_array), Err(ParseError::Invalid(_))));
        let mut v = valid();
        v["title"] = "Boss\u{0007}".into();
        assert_eq!(field_of(parse(v)), "title");
        let mut v = valid();
        v["cost_center"] = "CC\u{0007}".into();
        assert_eq!(field_of(parse(v)), "cost_center");
        let mut v = valid();
        v["division"] = "x".repeat(257).into();
        assert_eq!(field_of(parse(v)), "division");
    }

    #[test]
    fn syntax_errors_are_not_field_errors() {
        assert!(matches!(
            SourceRecord::from_json(b"{\"person_id\": "),
            Err(ParseError::Syntax(_))
        ));
    }

    #[test]
    fn work_email_is_bounded_as_rfc_5321_says() {
        let with_email = |e: String| {
            let mut v = valid();
            v["work_email"] = serde_json::Value::String(e);
            parse(v)
        };
        let at_limit = format!(
            "{}@{}.example.com",
            "a".repeat(64),
            "d".repeat(254 - 64 - 13)
        );
        assert_eq!(at_limit.len(), 254);
        assert!(with_email(at_limit).is_ok());
        let err = with_email(format!("ana@{}.example.com", "d".repeat(250)));
        assert!(
            matches!(&err, Err(ParseError::Invalid(e)) if e.field == "work_email" && e.message.contains("254")),
            "{err:?}"
        );
        let err = with_email(format!("{}@example.com", "a".repeat(65)));
        assert!(
            matches!(&err, Err(ParseError::Invalid(e)) if e.field == "work_email" && e.message.contains("64")),
            "{err:?}"
        );
    }
}
