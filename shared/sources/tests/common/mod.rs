//! Helpers shared by the contract tests: fixtures from the repository's
//! `tests/fixtures/<vendor>/`, headers, adapters and outcome accessors.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tenure_domain::SourceRecord;
use tenure_sources::{
    Adapter, AdapterError, ApiSettings, ErrorKind, FetchRequest, FieldMapping, Kind, Outcome,
};

pub fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/../../tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("cannot read fixture {full}: {e}"))
}

pub fn json_fixture(path: &str) -> Value {
    serde_json::from_slice(&fixture(path))
        .unwrap_or_else(|e| panic!("fixture {path} is not JSON: {e}"))
}

pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    h
}

pub fn mapping(toml_text: &str) -> FieldMapping {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("mapping does not parse: {e}"))
}

pub fn adapter(kind: Kind, toml_text: &str, secret: Option<&str>) -> Adapter {
    Adapter::try_new(
        kind,
        mapping(toml_text),
        secret.map(|s| s.as_bytes().to_vec()),
    )
    .unwrap_or_else(|e| panic!("mapping refused: {e}"))
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad time {s}: {e}"))
        .with_timezone(&Utc)
}

pub fn date(s: &str) -> chrono::NaiveDate {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_else(|e| panic!("bad date {s}: {e}"))
}

pub fn records(r: Result<Outcome, AdapterError>) -> Vec<SourceRecord> {
    match r {
        Ok(Outcome::Records(v)) => v,
        other => panic!("expected records, got {other:?}"),
    }
}

pub fn one_record(r: Result<Outcome, AdapterError>) -> SourceRecord {
    let mut v = records(r);
    assert_eq!(v.len(), 1, "expected one record: {v:?}");
    v.remove(0)
}

pub fn fetches(r: Result<Outcome, AdapterError>) -> Vec<FetchRequest> {
    match r {
        Ok(Outcome::Fetch(v)) => v,
        other => panic!("expected a fetch, got {other:?}"),
    }
}

pub fn one_fetch(r: Result<Outcome, AdapterError>) -> FetchRequest {
    let mut v = fetches(r);
    assert_eq!(v.len(), 1, "expected one fetch: {v:?}");
    v.remove(0)
}

pub fn ignored(r: Result<Outcome, AdapterError>) -> String {
    match r {
        Ok(Outcome::Ignored { reason }) => reason,
        other => panic!("expected ignored, got {other:?}"),
    }
}

pub fn error(r: Result<Outcome, AdapterError>, kind: ErrorKind) -> AdapterError {
    match r {
        Err(e) if e.kind == kind => e,
        other => panic!("expected a {kind:?} error, got {other:?}"),
    }
}

pub fn api(base: &str, token: &str, user: Option<&str>) -> ApiSettings {
    ApiSettings {
        base_url: base.into(),
        token: token.into(),
        user: user.map(str::to_string),
    }
}

pub fn request(id: &str, event: &str, occurred_at: &str) -> FetchRequest {
    FetchRequest {
        source_person_id: id.into(),
        event: event.into(),
        occurred_at: at(occurred_at),
    }
}

pub fn header_value<'a>(call: &'a tenure_sources::FetchCall, name: &str) -> Option<&'a str> {
    call.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
