//! Gusto.
//!
//! Setup: after a webhook subscription is created Gusto POSTs
//! `{"verification_token": "…"}` to the URL. That token is the secret that
//! signs every later delivery, so Tenure cannot know it yet: the call is
//! answered 200 with `Outcome::Handshake` without a signature check, and
//! `Adapter::handshake_quarantine_reason` tells the ingest to keep the
//! payload in quarantine, where the operator reads the token once
//! (`tenure quarantine show`), configures it as the source secret and
//! verifies the subscription with Gusto. The token is never logged or
//! echoed back. A forged verification call can only add a quarantine entry.
//!
//! Authentication: `X-Gusto-Signature` = hex HMAC-SHA256(verification
//! token, raw body). Gusto signs no timestamp.
//!
//! Events: `{"uuid", "event_type", "resource_type", "resource_uuid",
//! "entity_type", "entity_uuid", "timestamp"}` (Unix seconds). Every
//! `employee.*` event on an `Employee` entity — created, updated,
//! onboarded, terminated (created), terminated_effective /
//! termination_effective, termination_cancelled, rehired, rehire_effective,
//! rehire_cancelled, deleted — becomes `Outcome::Fetch` of `entity_uuid`:
//! the employee as the API shows it afterwards is what holds (a cancelled
//! termination simply no longer shows). Other entities (bank accounts,
//! payrolls, companies) are ignored. The delivery id is `uuid`.
//!
//! Fetch-back: `GET {base}/v1/employees/{uuid}` (base
//! `https://api.gusto.com`) with the bearer token. Gusto states
//! employment through `terminated` and a list of `terminations`, which the
//! adapter condenses into `_tenure.status` and `_tenure.end_date` for the
//! default mapping (see `derive`). Title and start date come from the
//! primary job.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use http::HeaderMap;
use serde_json::{json, Value};

use crate::adapter::{
    accept_json, base, bearer, clean_delivery_id, encode_component, header, json_object, Adapter,
    AdapterError, ApiSettings, FetchCall, FetchRequest, Outcome,
};
use crate::mapping::{
    build_record, id_text, parse_date, parse_instant, Ctx, Doc, FieldMapping, Resolved,
};
use crate::signature::{verify_hex_sha256, H_GUSTO_SIGNATURE};

pub(crate) fn default_mapping() -> FieldMapping {
    FieldMapping {
        person_id: Some("uuid".into()),
        fields: [
            ("given_name", "first_name"),
            ("family_name", "last_name"),
            ("work_email", "work_email"),
            ("department", "department"),
            ("title", "jobs[primary=true].title"),
            ("manager_id", "manager_uuid"),
            ("start_date", "jobs[primary=true].hire_date"),
            ("end_date", "_tenure.end_date"),
            ("employment_status", "_tenure.status"),
        ]
        .into_iter()
        .map(|(a, f)| (a.to_string(), f.to_string()))
        .collect(),
        status: [("active", "active"), ("terminated", "terminated")]
            .into_iter()
            .map(|(a, f)| (a.to_string(), f.to_string()))
            .collect(),
        date_format: None,
        time_zone: None,
    }
}

/// The token in Gusto's setup call, if this body is one.
pub(crate) fn verification_token(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) if !o.contains_key("event_type") => o
            .get("verification_token")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string),
        _ => None,
    }
}

pub(crate) fn handle(
    adapter: &Adapter,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Outcome, AdapterError> {
    if verification_token(body).is_some() {
        return Ok(Outcome::Handshake {
            status: 200,
            content_type: "application/json",
            body: r#"{"status":"verification token received; the operator must configure it and verify the subscription"}"#.into(),
        });
    }
    let secret = adapter.secret()?;
    let sig = header(headers, H_GUSTO_SIGNATURE)
        .ok_or_else(|| AdapterError::unauthorized("header X-Gusto-Signature is missing"))?;
    if !verify_hex_sha256(secret, &[body], sig) {
        return Err(AdapterError::unauthorized(
            "X-Gusto-Signature does not match the body",
        ));
    }
    let payload = json_object(body)?;
    if !payload.contains_key("event_type") {
        return Err(AdapterError::malformed(
            "not a Gusto event ({\"uuid\", \"event_type\", \"entity_type\", \"entity_uuid\", \"timestamp\"})",
        ));
    }
    let event = payload
        .get("event_type")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| AdapterError::invalid("event_type", "missing"))?;
    let entity = payload
        .get("entity_type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    if !event.starts_with("employee.") || !entity.eq_ignore_ascii_case("Employee") {
        return Ok(Outcome::Ignored {
            reason: format!(
                "Gusto event {event:?} on {entity:?} does not concern a person's employment"
            ),
        });
    }
    let occurred_at = payload
        .get("timestamp")
        .and_then(|v| parse_instant(v, None))
        .ok_or_else(|| AdapterError::invalid("timestamp", "missing or not Unix seconds"))?;
    let id = payload
        .get("entity_uuid")
        .and_then(id_text)
        .ok_or_else(|| AdapterError::invalid("entity_uuid", "missing or not a usable id"))?;
    Ok(Outcome::Fetch(vec![FetchRequest {
        source_person_id: id,
        event: event.to_string(),
        occurred_at,
    }]))
}

pub(crate) fn delivery_id(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("uuid")
        .and_then(Value::as_str)
        .and_then(clean_delivery_id)
}

pub(crate) fn fetch_call(req: &FetchRequest, api: &ApiSettings) -> FetchCall {
    FetchCall {
        method: http::Method::GET,
        url: format!(
            "{}/v1/employees/{}",
            base(api),
            encode_component(req.source_person_id.trim())
        ),
        headers: vec![bearer(api), accept_json()],
        body: None,
    }
}

/// Condenses Gusto's employment state into `_tenure.status` and
/// `_tenure.end_date`:
/// - `terminated: true` → terminated, ending on the latest termination's
///   `effective_date`;
/// - otherwise active, with the latest termination's date as the last day
///   while it is still ahead or only just passed (Gusto processes a
///   termination the day after the last day, 00:00 Pacific, and only then
///   sets `terminated`). A termination older than that on an employee who
///   is not terminated belongs to an earlier employment: the employee was
///   rehired, and it must not end the current one.
fn derive(employee: &Value, fetched_at: DateTime<Utc>) -> Value {
    let terminated = employee
        .get("terminated")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let latest: Option<NaiveDate> = employee
        .get("terminations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("effective_date").and_then(Value::as_str))
        .filter_map(|d| parse_date(d, "%Y-%m-%d").ok().flatten())
        .max();
    let processing_lag = (fetched_at - Duration::days(2)).date_naive();
    let end_date = match latest {
        Some(d) if terminated || d >= processing_lag => Some(d.to_string()),
        _ => None,
    };
    json!({
        "status": if terminated { "terminated" } else { "active" },
        "end_date": end_date,
    })
}

pub(crate) fn record_from_api(
    res: &Resolved,
    body: &Value,
    fetched_at: DateTime<Utc>,
) -> Result<tenure_domain::SourceRecord, AdapterError> {
    let Some(obj) = body.as_object() else {
        return Err(AdapterError::malformed(
            "the Gusto API answer must be one JSON object",
        ));
    };
    let mut employee = obj.clone();
    employee.insert("_tenure".into(), derive(body, fetched_at));
    let employee = Value::Object(employee);
    build_record(
        res,
        &Doc::plain(&employee, ""),
        &Ctx {
            effective_at: fetched_at,
        },
    )
}
