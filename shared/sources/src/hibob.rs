//! HiBob (Bob), webhooks v2.
//!
//! Setup: when a webhook is created Bob POSTs the text `Ping test` (and, if
//! that fails, `{"text":"Ping test"}`), signed or not, and needs a 2xx. It
//! is answered with `Outcome::Handshake` before any secret is needed, since
//! it publishes nothing.
//!
//! Authentication: `Bob-Signature` = base64 HMAC-SHA512(webhook secret, raw
//! body). Bob signs no timestamp, so there is no replay window to check; a
//! replayed delivery is a duplicate and deduplicated downstream.
//!
//! Payloads are ids only: `{"companyId", "type", "triggeredBy",
//! "triggeredAt", "version": "v2", "data": {"employeeId", …}}`. Every
//! `employee.*` event (`created`, `updated`, `deleted`, lifecycle `joined`,
//! `left`, `activated`, `inactivated`, and `access.revoked.immediately`)
//! and every `table.entry.*` event (work and lifecycle table rows) becomes
//! `Outcome::Fetch` of `data.employeeId`. Lifecycle events fire at local
//! midnight on the effective date, so fetching then reads the new state.
//! `employee.access.revoked.immediately` is special: the API still shows
//! the future termination date, so the fetched record gets
//! `revoke_immediately` from the event itself. Other event types (time
//! off, tasks, …) are ignored.
//!
//! Fetch-back: `POST {base}/v1/people/{id}` (base `https://api.hibob.com`),
//! Basic auth `<service user id>:<token>`, body `{"fields": [...],
//! "humanReadable": "APPEND"}`: the single-employee read, which selects
//! fields in its body. `APPEND` keeps machine values (ISO dates, ids) in
//! place and adds a `humanReadable` node with list items as names, so the
//! default mapping reads department, title and site from
//! `humanReadable.work.*` and everything else from machine values.
//! (`REPLACE` would render dates in the service user's display format.)

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::Value;

use crate::adapter::{
    accept_json, base, basic, encode_component, header, json_object, Adapter, AdapterError,
    ApiSettings, FetchCall, FetchRequest, Outcome,
};
use crate::mapping::{build_record, id_text, parse_instant, Ctx, Doc, FieldMapping, Resolved};
use crate::signature::{verify_b64_sha512, H_HIBOB_SIGNATURE};

pub(crate) const EVENT_REVOKED_IMMEDIATELY: &str = "employee.access.revoked.immediately";

pub(crate) fn default_mapping() -> FieldMapping {
    FieldMapping {
        person_id: Some("id".into()),
        fields: [
            ("given_name", "firstName"),
            ("family_name", "surname"),
            ("display_name", "displayName"),
            ("work_email", "email"),
            ("employee_number", "work.employeeIdInCompany"),
            ("department", "humanReadable.work.department"),
            ("title", "humanReadable.work.title"),
            ("manager_id", "work.reportsTo.id"),
            ("location", "humanReadable.work.site"),
            ("start_date", "work.startDate"),
            ("end_date", "internal.terminationDate"),
            ("employment_status", "internal.lifecycleStatus"),
        ]
        .into_iter()
        .map(|(a, f)| (a.to_string(), f.to_string()))
        .collect(),
        // Bob's lifecycle statuses. Garden leave ends the work but not the
        // employment: on_leave suspends access at once, and the termination
        // date still ends it for good.
        status: [
            ("hired", "active"),
            ("employed", "active"),
            ("leave", "on_leave"),
            ("garden leave", "on_leave"),
            ("terminated", "terminated"),
        ]
        .into_iter()
        .map(|(a, f)| (a.to_string(), f.to_string()))
        .collect(),
        date_format: None,
        time_zone: None,
    }
}

fn is_ping(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    if t == "Ping test" {
        return true;
    }
    matches!(
        serde_json::from_str::<Value>(t),
        Ok(Value::Object(o)) if o.len() == 1 && o.get("text").and_then(Value::as_str) == Some("Ping test")
    )
}

pub(crate) fn handle(
    adapter: &Adapter,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Outcome, AdapterError> {
    if is_ping(body) {
        return Ok(Outcome::Handshake {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: "ok".into(),
        });
    }
    let secret = adapter.secret()?;
    let sig = header(headers, H_HIBOB_SIGNATURE)
        .ok_or_else(|| AdapterError::unauthorized("header Bob-Signature is missing"))?;
    if !verify_b64_sha512(secret, &[body], sig) {
        return Err(AdapterError::unauthorized(
            "Bob-Signature does not match the body",
        ));
    }
    let payload = json_object(body)?;
    if !payload.contains_key("type") && !payload.contains_key("data") {
        return Err(AdapterError::malformed(
            "not a Bob webhook v2 payload ({\"companyId\", \"type\", \"triggeredAt\", \"data\"})",
        ));
    }
    let kind = payload
        .get("type")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AdapterError::invalid("type", "missing"))?;
    if !(kind.starts_with("employee.") || kind.starts_with("table.entry.")) {
        return Ok(Outcome::Ignored {
            reason: format!("Bob event {kind:?} does not concern a person's employment"),
        });
    }
    let occurred_at = payload
        .get("triggeredAt")
        .and_then(|v| parse_instant(v, None))
        .ok_or_else(|| AdapterError::invalid("triggeredAt", "missing or not an ISO 8601 time"))?;
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

/// Bob's request field ids for the mapped response paths: root fields are
/// `root.<name>`; category fields `<category>.<name>`; custom fields
/// `<category>.custom.<field_id>`. Paths into an object field
/// (`work.reportsTo.id`) request the field itself. (Bob documents field ids
/// in dot notation from the fields metadata; this derivation is how its
/// response paths relate to them, and is the part to check against the
/// fields metadata when a custom field does not come back.)
fn request_fields(res: &Resolved) -> Vec<String> {
    let mut out = vec!["root.id".to_string()];
    for path in res.paths() {
        for alt in path.split('|') {
            let p = alt.trim();
            let p = p.strip_prefix("humanReadable.").unwrap_or(p);
            let segs: Vec<&str> = p
                .split('.')
                .map(|s| s.split('[').next().unwrap_or(""))
                .collect();
            let id = match segs.as_slice() {
                [] | [""] => continue,
                [one] => format!("root.{one}"),
                [cat, "custom", field, ..] => format!("{cat}.custom.{field}"),
                [cat, field, ..] => format!("{cat}.{field}"),
            };
            if !out.contains(&id) {
                out.push(id);
            }
        }
    }
    out
}

pub(crate) fn fetch_call(
    res: &Resolved,
    req: &FetchRequest,
    api: &ApiSettings,
) -> Result<FetchCall, AdapterError> {
    let user = api
        .user
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            AdapterError::config(
                Some("api.user".into()),
                "HiBob's API needs the service user's id beside its token",
            )
        })?;
    let body = serde_json::json!({
        "fields": request_fields(res),
        "humanReadable": "APPEND",
    });
    Ok(FetchCall {
        method: http::Method::POST,
        url: format!(
            "{}/v1/people/{}",
            base(api),
            encode_component(req.source_person_id.trim())
        ),
        headers: vec![
            basic(user, api.token.trim()),
            accept_json(),
            ("Content-Type".into(), "application/json".into()),
        ],
        body: Some(body.to_string()),
    })
}

pub(crate) fn record_from_api(
    res: &Resolved,
    body: &Value,
    fetched_at: DateTime<Utc>,
) -> Result<tenure_domain::SourceRecord, AdapterError> {
    // The search endpoint wraps employees in a list; the read-by-id
    // endpoint answers with the employee itself. Accept both.
    let person = match body.get("employees").and_then(Value::as_array) {
        Some(list) if list.len() == 1 => &list[0],
        Some(_) => {
            return Err(AdapterError::invalid(
                "employees",
                "the answer must hold exactly one employee",
            ))
        }
        None => body,
    };
    if !person.is_object() {
        return Err(AdapterError::malformed(
            "the Bob API answer must be one JSON object",
        ));
    }
    build_record(
        res,
        &Doc::plain(person, ""),
        &Ctx {
            effective_at: fetched_at,
        },
    )
}
