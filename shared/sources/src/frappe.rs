//! Frappe HR (ERPNext HR).
//!
//! Authentication: `X-Frappe-Webhook-Signature` = base64 HMAC-SHA256(the
//! webhook's secret, raw body). Frappe signs no timestamp.
//!
//! Payload: a Frappe webhook on the Employee doctype posts the fields the
//! admin chose, as JSON (its "Request Structure" must be JSON; form-encoded
//! bodies are refused as malformed). The body is the document's fields
//! (`{"name", "first_name", …}`), or a template that nests them under
//! `"doc"`, which is accepted too. Employee fields: `name` (the id,
//! `HR-EMP-00001`), `first_name`, `last_name`, `employee_name`,
//! `company_email`, `personal_email`, `department`, `designation`,
//! `branch`, `company`, `reports_to`, `date_of_joining`, `relieving_date`,
//! `status` (Active, Inactive, Suspended, Left). Because the admin chooses
//! the fields, a body that lacks a mapped field is not a whole picture of
//! the employee and is fetched back instead of dropping the value.
//!
//! The effective time is the document's `modified` (Frappe writes it
//! without a zone, in the site's time zone: it is read in the mapping's
//! `time_zone`, else UTC), or the time of receipt when it is not posted.
//! The delivery id is derived from `name` and `modified`, which together
//! identify one saved version of the document.
//!
//! Default statuses: Left → terminated (with `relieving_date` as the last
//! day), Inactive and Suspended → on_leave (access suspended, reversibly),
//! Active → active.
//!
//! Fetch-back: `GET {base}/api/resource/Employee/{name}` with
//! `Authorization: token <api key>:<api secret>` (`user` = API key and
//! `token` = API secret, or `token` = `key:secret`); the document is in
//! `data`.

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::adapter::{
    accept_json, base, encode_component, header, json_object, Adapter, AdapterError, ApiSettings,
    FetchCall, FetchRequest, Outcome,
};
use crate::mapping::{build_record, id_text, parse_instant, Ctx, Doc, FieldMapping, Resolved};
use crate::signature::{verify_b64_sha256, H_FRAPPE_SIGNATURE};

pub(crate) fn default_mapping() -> FieldMapping {
    FieldMapping {
        person_id: Some("name".into()),
        fields: [
            ("given_name", "first_name"),
            ("family_name", "last_name"),
            ("display_name", "employee_name"),
            ("work_email", "company_email"),
            ("department", "department"),
            ("organization", "company"),
            ("title", "designation"),
            ("manager_id", "reports_to"),
            ("location", "branch"),
            ("start_date", "date_of_joining"),
            ("end_date", "relieving_date"),
            ("employment_status", "status"),
        ]
        .into_iter()
        .map(|(a, f)| (a.to_string(), f.to_string()))
        .collect(),
        status: [
            ("Active", "active"),
            ("Inactive", "on_leave"),
            ("Suspended", "on_leave"),
            ("Left", "terminated"),
        ]
        .into_iter()
        .map(|(a, f)| (a.to_string(), f.to_string()))
        .collect(),
        date_format: None,
        time_zone: None,
    }
}

/// The employee document inside a webhook body.
fn document(
    payload: &serde_json::Map<String, Value>,
) -> (&serde_json::Map<String, Value>, &'static str) {
    match payload.get("doc") {
        Some(Value::Object(doc)) => (doc, "doc."),
        _ => (payload, ""),
    }
}

pub(crate) fn handle(
    adapter: &Adapter,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Outcome, AdapterError> {
    let secret = adapter.secret()?;
    let sig = header(headers, H_FRAPPE_SIGNATURE).ok_or_else(|| {
        AdapterError::unauthorized("header X-Frappe-Webhook-Signature is missing")
    })?;
    if !verify_b64_sha256(secret, &[body], sig) {
        return Err(AdapterError::unauthorized(
            "X-Frappe-Webhook-Signature does not match the body",
        ));
    }
    let payload = json_object(body).map_err(|e| {
        AdapterError::malformed(format!(
            "{} (set the Frappe webhook's Request Structure to JSON)",
            e.message
        ))
    })?;
    let res = adapter.resolved()?;
    let (doc_map, prefix) = document(&payload);
    let doctype = doc_map
        .get("doctype")
        .and_then(Value::as_str)
        .unwrap_or("Employee");
    if doctype != "Employee" {
        return Ok(Outcome::Ignored {
            reason: format!("Frappe doctype {doctype:?} is not Employee"),
        });
    }
    let zone = res
        .time_zone
        .as_deref()
        .and_then(|z| z.parse::<chrono_tz::Tz>().ok());
    let effective_at = match doc_map.get("modified").filter(|v| !v.is_null()) {
        Some(v) => parse_instant(v, zone).ok_or_else(|| {
            AdapterError::invalid(format!("{prefix}modified"), "not a date and time")
        })?,
        None => now,
    };
    let doc_value = Value::Object(doc_map.clone());
    let doc = Doc::plain(&doc_value, prefix);
    if !res.absent_paths(&doc).is_empty() {
        let id = doc_map
            .get(res.person_id.as_str())
            .or_else(|| doc_map.get("name"))
            .and_then(id_text)
            .ok_or_else(|| {
                AdapterError::invalid(format!("{prefix}name"), "missing or not a usable id")
            })?;
        return Ok(Outcome::Fetch(vec![FetchRequest {
            source_person_id: id,
            event: "employee.webhook".into(),
            occurred_at: effective_at,
        }]));
    }
    Ok(Outcome::Records(vec![build_record(
        &res,
        &doc,
        &Ctx { effective_at },
    )?]))
}

/// One saved version of one document: `name` and `modified` together.
pub(crate) fn delivery_id(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    let (doc, _) = document(obj);
    let name = doc.get("name").and_then(id_text)?;
    let modified = doc.get("modified").and_then(Value::as_str)?.trim();
    if modified.is_empty() {
        return None;
    }
    let digest = Sha256::digest(format!("{name}\u{0}{modified}").as_bytes());
    Some(format!("frappe:{}", hex::encode(&digest[..16])))
}

fn authorization(api: &ApiSettings) -> (String, String) {
    let value = match api.user.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        Some(key) => format!("token {key}:{}", api.token.trim()),
        None => format!("token {}", api.token.trim()),
    };
    ("Authorization".into(), value)
}

pub(crate) fn fetch_call(req: &FetchRequest, api: &ApiSettings) -> FetchCall {
    FetchCall {
        method: http::Method::GET,
        url: format!(
            "{}/api/resource/Employee/{}",
            base(api),
            encode_component(req.source_person_id.trim())
        ),
        headers: vec![authorization(api), accept_json()],
        body: None,
    }
}

pub(crate) fn record_from_api(
    res: &Resolved,
    body: &Value,
    fetched_at: DateTime<Utc>,
) -> Result<tenure_domain::SourceRecord, AdapterError> {
    let person = body
        .get("data")
        .filter(|d| d.is_object())
        .ok_or_else(|| AdapterError::malformed("not a Frappe document ({\"data\": {…}})"))?;
    build_record(
        res,
        &Doc::plain(person, "data."),
        &Ctx {
            effective_at: fetched_at,
        },
    )
}
