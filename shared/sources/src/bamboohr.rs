//! BambooHR.
//!
//! Authentication: `X-BambooHR-Signature` = hex HMAC-SHA256(webhook private
//! key, raw body ‖ `X-BambooHR-Timestamp` as sent). The timestamp must be
//! within the skew window, so a captured delivery cannot be replayed later.
//! (The documentation does not fix the timestamp's format: Unix seconds and
//! ISO 8601 are both accepted.)
//!
//! Two payload shapes exist, chosen per webhook in BambooHR:
//! - event-based (`{"type": "employee.created|updated|deleted", "timestamp",
//!   "data": {"companyId", "employeeId", "changedFields"}}`): ids only, so
//!   every event becomes `Outcome::Fetch`;
//! - field-based (`{"employees": [{"action", "changedFields", "fields",
//!   "id", "timestamp"}]}`): `Updated` entries carry the posted fields and
//!   become records; `Created` and `Deleted` entries carry empty `fields`
//!   by design and are fetched. Field names are the English display names
//!   (`First Name`, `Work Email`) unless the admin set aliases; the default
//!   mapping uses the API names (`firstName`) and falls back to the display
//!   names. An `Updated` entry that does not post every mapped field is not
//!   a whole picture of the person, so it is fetched as well (unmap fields
//!   you do not post with `fields.<attribute> = ""` to avoid the API call).
//!
//! Write mappings with API field names (`firstName`, `customCostCentre`):
//! they also select the fields the fetch-back asks for. Standard fields
//! posted under their display names are found anyway; give custom fields
//! their API name as alias in the webhook.
//!
//! Deletion: see `Adapter::is_deletion`; `employee.deleted` is fetched, the
//! API's 404 then revokes access immediately.
//!
//! Fetch-back: `GET {base}/v1/employees/{id}/?fields=<mapped fields>` with
//! Basic auth `<API key>:x`, where base is
//! `https://api.bamboohr.com/api/gateway.php/<company>`. Dates come as
//! `YYYY-MM-DD`, `0000-00-00` meaning none.

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::{Map, Value};

use crate::adapter::{
    accept_json, base, basic, encode_component, header, json_object, Adapter, AdapterError,
    ApiSettings, FetchCall, FetchRequest, Outcome,
};
use crate::mapping::{
    build_record, id_text, parse_instant, parse_instant_str, Ctx, Doc, FieldMapping, Resolved,
    Shape,
};
use crate::signature::{verify_hex_sha256, H_BAMBOOHR_SIGNATURE, H_BAMBOOHR_TIMESTAMP};

pub(crate) fn default_mapping() -> FieldMapping {
    FieldMapping {
        person_id: Some("id".into()),
        fields: [
            ("given_name", "firstName"),
            ("family_name", "lastName"),
            ("work_email", "workEmail"),
            ("employee_number", "employeeNumber"),
            ("department", "department"),
            ("division", "division"),
            ("title", "jobTitle"),
            ("manager_id", "supervisorEId"),
            ("location", "location"),
            ("start_date", "hireDate"),
            ("end_date", "terminationDate"),
            ("employment_status", "status"),
        ]
        .into_iter()
        .map(|(a, f)| (a.to_string(), f.to_string()))
        .collect(),
        status: [("Active", "active"), ("Inactive", "terminated")]
            .into_iter()
            .map(|(a, f)| (a.to_string(), f.to_string()))
            .collect(),
        date_format: None,
        time_zone: None,
    }
}

/// The English display name a field webhook posts for an API field name
/// when the admin did not alias it (BambooHR's field list).
fn display_name(api_name: &str) -> Option<&'static str> {
    Some(match api_name {
        "firstName" => "First Name",
        "lastName" => "Last Name",
        "preferredName" => "Preferred Name",
        "middleName" => "Middle Name",
        "workEmail" => "Work Email",
        "homeEmail" => "Home Email",
        "employeeNumber" => "Employee #",
        "department" => "Department",
        "division" => "Division",
        "jobTitle" => "Job Title",
        "location" => "Location",
        "hireDate" => "Hire Date",
        "originalHireDate" => "Original Hire Date",
        "terminationDate" => "Termination Date",
        "status" => "Status",
        "employmentHistoryStatus" => "Employment Status",
        _ => return None,
    })
}

const EVENT_TYPES: [&str; 3] = ["employee.created", "employee.updated", "employee.deleted"];

pub(crate) fn handle(
    adapter: &Adapter,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
    max_skew_secs: u64,
) -> Result<Outcome, AdapterError> {
    let secret = adapter.secret()?;
    let raw_ts = headers
        .get(H_BAMBOOHR_TIMESTAMP)
        .map(|v| v.as_bytes())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| AdapterError::unauthorized("header X-BambooHR-Timestamp is missing"))?;
    let ts = header(headers, H_BAMBOOHR_TIMESTAMP).unwrap_or("");
    let sent = parse_instant_str(ts, None).ok_or_else(|| {
        AdapterError::unauthorized(
            "header X-BambooHR-Timestamp must be Unix seconds or an ISO 8601 time",
        )
    })?;
    let skew = now.signed_duration_since(sent).num_seconds();
    if skew.unsigned_abs() > max_skew_secs {
        return Err(AdapterError::unauthorized(format!(
            "X-BambooHR-Timestamp is {skew} s away from the server clock (allowed: {max_skew_secs} s); a replayed or delayed delivery is refused"
        )));
    }
    let sig = header(headers, H_BAMBOOHR_SIGNATURE)
        .ok_or_else(|| AdapterError::unauthorized("header X-BambooHR-Signature is missing"))?;
    if !verify_hex_sha256(secret, &[body, raw_ts], sig) {
        return Err(AdapterError::unauthorized(
            "X-BambooHR-Signature does not match the body and timestamp",
        ));
    }
    let payload = json_object(body)?;
    if let Some(employees) = payload.get("employees") {
        let res = adapter.resolved()?;
        return field_webhook(&res, employees, sent);
    }
    if payload.contains_key("type") || payload.contains_key("data") {
        return event_webhook(&payload, sent);
    }
    Err(AdapterError::malformed(
        "neither a BambooHR event webhook ({\"type\", \"data\"}) nor a field webhook ({\"employees\"})",
    ))
}

fn event_webhook(
    payload: &Map<String, Value>,
    sent: DateTime<Utc>,
) -> Result<Outcome, AdapterError> {
    let kind = payload
        .get("type")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            AdapterError::invalid(
                "type",
                "missing (expected employee.created, employee.updated or employee.deleted)",
            )
        })?;
    if !EVENT_TYPES.contains(&kind) {
        return Ok(Outcome::Ignored {
            reason: format!("BambooHR event {kind:?} does not concern a person's employment"),
        });
    }
    let occurred_at = match payload.get("timestamp") {
        None | Some(Value::Null) => sent,
        Some(v) => parse_instant(v, None)
            .ok_or_else(|| AdapterError::invalid("timestamp", "not an ISO 8601 time"))?,
    };
    let id = payload
        .get("data")
        .and_then(|d| d.get("employeeId"))
        .and_then(id_text)
        .ok_or_else(|| AdapterError::invalid("data.employeeId", "missing or not a usable id"))?;
    Ok(Outcome::Fetch(vec![FetchRequest {
        source_person_id: id,
        event: kind.to_string(),
        occurred_at,
    }]))
}

fn field_webhook(
    res: &Resolved,
    employees: &Value,
    sent: DateTime<Utc>,
) -> Result<Outcome, AdapterError> {
    let list = employees
        .as_array()
        .ok_or_else(|| AdapterError::invalid("employees", "must be a list"))?;
    if list.is_empty() {
        return Ok(Outcome::Ignored {
            reason: "the field webhook lists no employees".into(),
        });
    }
    let mut records = Vec::new();
    let mut fetches = Vec::new();
    let mut need_fetch = false;
    for (i, entry) in list.iter().enumerate() {
        let at = |f: &str| format!("employees[{i}].{f}");
        let entry = entry
            .as_object()
            .ok_or_else(|| AdapterError::invalid(format!("employees[{i}]"), "must be an object"))?;
        let id = entry
            .get("id")
            .and_then(id_text)
            .ok_or_else(|| AdapterError::invalid(at("id"), "missing or not a usable id"))?;
        let occurred_at = match entry.get("timestamp") {
            None | Some(Value::Null) => sent,
            Some(v) => parse_instant(v, None)
                .ok_or_else(|| AdapterError::invalid(at("timestamp"), "not an ISO 8601 time"))?,
        };
        let action = entry
            .get("action")
            .and_then(Value::as_str)
            .map(|a| a.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                AdapterError::invalid(
                    at("action"),
                    "missing (expected Created, Updated or Deleted)",
                )
            })?;
        if !matches!(action.as_str(), "created" | "updated" | "deleted") {
            return Err(AdapterError::invalid(
                at("action"),
                format!("{action:?} is not Created, Updated or Deleted"),
            ));
        }
        fetches.push(FetchRequest {
            source_person_id: id.clone(),
            event: format!("employee_with_fields.{action}"),
            occurred_at,
        });
        if action != "updated" {
            need_fetch = true;
            continue;
        }
        // The employee id sits beside `fields`, not in it.
        let mut fields = match entry.get("fields") {
            Some(Value::Object(f)) => f.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err(AdapterError::invalid(at("fields"), "must be an object")),
        };
        fields
            .entry("id")
            .or_insert_with(|| Value::String(id.clone()));
        let fields = Value::Object(fields);
        let doc = Doc {
            root: &fields,
            shape: Shape::Plain,
            prefix: at("fields."),
            alias: display_name,
        };
        if need_fetch || !res.absent_paths(&doc).is_empty() {
            need_fetch = true;
            continue;
        }
        records.push(build_record(
            res,
            &doc,
            &Ctx {
                effective_at: occurred_at,
            },
        )?);
    }
    if need_fetch {
        Ok(Outcome::Fetch(fetches))
    } else {
        Ok(Outcome::Records(records))
    }
}

/// The API field names the mapping reads (first path segments, without
/// `id`, which BambooHR always returns).
fn api_fields(res: &Resolved) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for path in res.paths() {
        for alt in path.split('|') {
            let first = alt.trim().split('.').next().unwrap_or("");
            let first = first.split('[').next().unwrap_or("").trim();
            if !first.is_empty() && first != "id" && !out.iter().any(|f| f == first) {
                out.push(first.to_string());
            }
        }
    }
    out
}

pub(crate) fn fetch_call(res: &Resolved, req: &FetchRequest, api: &ApiSettings) -> FetchCall {
    let fields: Vec<String> = api_fields(res)
        .iter()
        .map(|f| encode_component(f))
        .collect();
    FetchCall {
        method: http::Method::GET,
        url: format!(
            "{}/v1/employees/{}/?fields={}",
            base(api),
            encode_component(req.source_person_id.trim()),
            fields.join(",")
        ),
        headers: vec![basic(api.token.trim(), "x"), accept_json()],
        body: None,
    }
}

pub(crate) fn record_from_api(
    res: &Resolved,
    body: &Value,
    fetched_at: DateTime<Utc>,
) -> Result<tenure_domain::SourceRecord, AdapterError> {
    if !body.is_object() {
        return Err(AdapterError::malformed(
            "the BambooHR API answer must be one JSON object",
        ));
    }
    build_record(
        res,
        &Doc::plain(body, ""),
        &Ctx {
            effective_at: fetched_at,
        },
    )
}
