//! CSV import: one person per row, the header row naming the columns. The
//! default mapping expects columns named like the record's fields
//! (`person_id`, `given_name`, `family_name`, `work_email`,
//! `employment_status` with values `active`, `on_leave`, `terminated`,
//! `rescinded`, `start_date`, …); a source's mapping renames them
//! (`work_email = "E-mail"`). Empty cells mean no value.
//!
//! Each row is validated on its own, so one bad row does not hold back the
//! others; errors name the 1-based line, the column and the attribute. A
//! header that lacks a required column fails the whole file at line 1.
//! Rows get `sequence` = their line number, so that when a file states the
//! same person twice with the same effective time, the later row wins.

use std::fmt;
use std::io::Read;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tenure_domain::SourceRecord;

use crate::adapter::{Adapter, AdapterError};
use crate::mapping::{build_record, Ctx, Doc, FieldMapping, Found, Resolved};

pub(crate) fn default_mapping() -> FieldMapping {
    FieldMapping {
        person_id: Some("person_id".into()),
        fields: crate::mapping::ATTRIBUTES
            .iter()
            .map(|a| (a.to_string(), a.to_string()))
            .collect(),
        status: crate::mapping::STATUS_TARGETS
            .iter()
            .map(|s| (s.to_string(), s.to_string()))
            .collect(),
        date_format: None,
        time_zone: None,
    }
}

/// A row (or the header) that did not become a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RowError {
    /// 1-based line in the file (the header is line 1).
    pub line: u64,
    /// The CSV column at fault, as the header names it.
    pub column: Option<String>,
    /// The record attribute that column feeds.
    pub attribute: Option<String>,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(c) = &self.column {
            write!(f, ", column {c:?}")?;
        }
        if let Some(a) = &self.attribute {
            write!(f, " ({a})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl RowError {
    fn whole(line: u64, message: impl Into<String>) -> Self {
        Self {
            line,
            column: None,
            attribute: None,
            message: message.into(),
        }
    }

    /// Splits an adapter error's `column (attribute)` field name.
    fn from_adapter(line: u64, e: AdapterError) -> Self {
        let (column, attribute) = match e.field.as_deref() {
            Some(f) => match f.rsplit_once(" (") {
                Some((col, attr)) => (
                    Some(col.to_string()),
                    Some(attr.trim_end_matches(')').to_string()),
                ),
                None => (Some(f.to_string()), None),
            },
            None => (None, None),
        };
        Self {
            line,
            column,
            attribute,
            message: e.message,
        }
    }
}

fn header_errors(res: &Resolved, headers: &[String]) -> Vec<RowError> {
    let mut row = Map::new();
    for h in headers {
        row.insert(h.clone(), Value::Null);
    }
    let row = Value::Object(row);
    let doc = Doc::plain(&row, "");
    let mut errors = Vec::new();
    let mut check = |path: &str, attr: &str, must: bool| {
        if must && matches!(doc.lookup(path), Found::Absent) {
            errors.push(RowError {
                line: 1,
                column: Some(path.to_string()),
                attribute: Some(attr.to_string()),
                message: "the header has no such column".into(),
            });
        }
    };
    check(&res.person_id, "person_id", true);
    for f in &res.fields {
        let must = f.explicit
            || matches!(
                f.attr.name(),
                "given_name" | "family_name" | "work_email" | "employment_status"
            );
        check(&f.path, f.attr.name(), must);
    }
    errors
}

pub(crate) fn records_from_csv(
    adapter: &Adapter,
    input: impl Read,
    effective_at: DateTime<Utc>,
) -> Vec<Result<SourceRecord, RowError>> {
    let res = match adapter.resolved() {
        Ok(r) => r,
        Err(e) => return vec![Err(RowError::from_adapter(1, e))],
    };
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(::csv::Trim::All)
        .flexible(false)
        .from_reader(input);
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let n = if i == 0 {
                    name.trim_start_matches('\u{feff}')
                } else {
                    name
                };
                n.trim().to_string()
            })
            .collect(),
        Err(e) => {
            return vec![Err(RowError::whole(
                1,
                format!("cannot read the header: {e}"),
            ))]
        }
    };
    if headers.iter().all(String::is_empty) {
        return vec![Err(RowError::whole(1, "the file has no header row"))];
    }
    let problems = header_errors(&res, &headers);
    if !problems.is_empty() {
        return problems.into_iter().map(Err).collect();
    }
    let mut out = Vec::new();
    for result in reader.records() {
        let row = match result {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                out.push(Err(RowError::whole(
                    line,
                    format!("not a valid CSV row: {}", csv_reason(&e)),
                )));
                // A broken quote can swallow the rest of the file; the
                // reader keeps going where it can.
                continue;
            }
        };
        let line = row.position().map_or(0, |p| p.line());
        if row.iter().all(str::is_empty) {
            continue;
        }
        let mut obj = Map::new();
        for (name, cell) in headers.iter().zip(row.iter()) {
            let v = if cell.is_empty() {
                Value::Null
            } else {
                Value::String(cell.to_string())
            };
            obj.insert(name.clone(), v);
        }
        let obj = Value::Object(obj);
        let doc = Doc::plain(&obj, "");
        out.push(
            build_record(&res, &doc, &Ctx { effective_at })
                .map(|mut r| {
                    r.sequence = Some(line);
                    r
                })
                .map_err(|e| RowError::from_adapter(line, e)),
        );
    }
    out
}

fn csv_reason(e: &::csv::Error) -> String {
    match e.kind() {
        ::csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("it has {len} cells but the header has {expected_len}"),
        ::csv::ErrorKind::Utf8 { .. } => "it is not UTF-8 text".into(),
        _ => {
            let s = e.to_string();
            s.split(" at line ").next().unwrap_or(&s).to_string()
        }
    }
}
