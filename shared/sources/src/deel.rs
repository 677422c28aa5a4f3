//! Deel.
//!
//! Authentication: `x-deel-signature` = hex HMAC-SHA256(signing key,
//! "POST" ‖ raw body). Deel signs no timestamp.
//!
//! Payloads: `{"data": {"meta": {"event_type", "organization_id",
//! "tracking_id" | "event_id", "occurred_at"?, …}, "resource": {…} | [{…}]},
//! "timestamp"}`. For person events (`employee.*`, `people.*`, `person.*`,
//! `worker.*`, `hris.*`) the resource is the person's current state and is
//! mapped to records directly, effective at `meta.occurred_at` (else the
//! delivery `timestamp`). Some of them only identify the profile (e.g.
//! `worker.v2.updated` "includes the profile id"): a resource without the
//! required fields is fetched back by its `id` instead. Contract, payment
//! and other events are ignored: contracts are not persons, and Deel's
//! person events follow every contract change that matters for access.
//!
//! The default mapping reads Deel's People (HRIS profile) object:
//! `first_name`, `last_name`, `work_email`, `job_title`, `department.name`,
//! `direct_manager.id`, `country`, `start_date`, `termination_last_day`,
//! `hiring_status`. Deel documents resources per event only by example, so
//! these names (and the status values) are the part to check against a
//! real payload; absent optional fields are simply not set.
//!
//! Fetch-back: `GET {base}/rest/v2/people/{id}` (base
//! `https://api.letsdeel.com`) with the bearer token; the person is in
//! `data`.

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::Value;

use crate::adapter::{
    accept_json, base, bearer, clean_delivery_id, encode_component, header, json_object, Adapter,
    AdapterError, ApiSettings, FetchCall, FetchRequest, Outcome,
};
use crate::mapping::{build_record, id_text, parse_instant, Ctx, Doc, FieldMapping, Resolved};
use crate::signature::{verify_hex_sha256, H_DEEL_SIGNATURE};

const PERSON_EVENTS: [&str; 5] = ["employee.", "people.", "person.", "worker.", "hris."];

pub(crate) fn default_mapping() -> FieldMapping {
    FieldMapping {
        person_id: Some("id".into()),
        fields: [
            ("given_name", "first_name"),
            ("family_name", "last_name"),
            ("work_email", "work_email"),
            ("department", "department.name"),
            ("title", "job_title"),
            ("manager_id", "direct_manager.id"),
            ("location", "country"),
            ("start_date", "start_date"),
            ("end_date", "termination_last_day"),
            ("employment_status", "hiring_status"),
        ]
        .into_iter()
        .map(|(a, f)| (a.to_string(), f.to_string()))
        .collect(),
        // Offboarding workers still work until their last day, which
        // `termination_last_day` carries.
        status: [
            ("active", "active"),
            ("onboarding", "active"),
            ("offboarding", "active"),
            ("inactive", "terminated"),
            ("terminated", "terminated"),
        ]
        .into_iter()
        .map(|(a, f)| (a.to_string(), f.to_string()))
        .collect(),
        date_format: None,
        time_zone: None,
    }
}

pub(crate) fn handle(
    adapter: &Adapter,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Outcome, AdapterError> {
    let secret = adapter.secret()?;
    let sig = header(headers, H_DEEL_SIGNATURE)
        .ok_or_else(|| AdapterError::unauthorized("header x-deel-signature is missing"))?;
    if !verify_hex_sha256(secret, &[b"POST", body], sig) {
        return Err(AdapterError::unauthorized(
            "x-deel-signature does not match the body",
        ));
    }
    let payload = json_object(body)?;
    let data = payload
        .get("data")
        .filter(|d| d.is_object())
        .ok_or_else(|| {
            AdapterError::malformed(
                "not a Deel webhook ({\"data\": {\"meta\", \"resource\"}, \"timestamp\"})",
            )
        })?;
    let meta = data
        .get("meta")
        .filter(|m| m.is_object())
        .ok_or_else(|| AdapterError::invalid("data.meta", "missing"))?;
    let event = meta
        .get("event_type")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| AdapterError::invalid("data.meta.event_type", "missing"))?;
    if !PERSON_EVENTS.iter().any(|p| event.starts_with(p)) {
        return Ok(Outcome::Ignored {
            reason: format!("Deel event {event:?} does not describe a person"),
        });
    }
    let occurred_at = match meta.get("occurred_at").filter(|v| !v.is_null()) {
        Some(v) => parse_instant(v, None).ok_or_else(|| {
            AdapterError::invalid("data.meta.occurred_at", "not an ISO 8601 time")
        })?,
        None => payload
            .get("timestamp")
            .and_then(|v| parse_instant(v, None))
            .ok_or_else(|| AdapterError::invalid("timestamp", "missing or not an ISO 8601 time"))?,
    };
    let resources: Vec<(String, &Value)> = match data.get("resource") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("data.resource[{i}]."), r))
            .collect(),
        Some(r @ Value::Object(_)) => vec![("data.resource.".to_string(), r)],
        _ => {
            return Err(AdapterError::invalid(
                "data.resource",
                "missing or not an object",
            ))
        }
    };
    if resources.is_empty() {
        return Ok(Outcome::Ignored {
            reason: format!("Deel event {event:?} lists no resource"),
        });
    }
    let res = adapter.resolved()?;
    let mut records = Vec::new();
    let mut fetches = Vec::new();
    let mut need_fetch = false;
    for (prefix, resource) in resources {
        if !resource.is_object() {
            return Err(AdapterError::invalid(
                prefix.trim_end_matches('.'),
                "must be an object",
            ));
        }
        let doc = Doc::plain(resource, prefix.clone());
        let id = resource.get("id").and_then(id_text);
        if !res.absent_required(&doc).is_empty() {
            // The event only identifies the profile: read it from the API.
            let id = id.ok_or_else(|| {
                AdapterError::invalid(format!("{prefix}id"), "missing or not a usable id")
            })?;
            fetches.push(FetchRequest {
                source_person_id: id,
                event: event.to_string(),
                occurred_at,
            });
            need_fetch = true;
            continue;
        }
        if let Some(id) = id {
            fetches.push(FetchRequest {
                source_person_id: id,
                event: event.to_string(),
                occurred_at,
            });
        }
        if !need_fetch {
            records.push(build_record(
                &res,
                &doc,
                &Ctx {
                    effective_at: occurred_at,
                },
            )?);
        }
    }
    if need_fetch {
        Ok(Outcome::Fetch(fetches))
    } else {
        Ok(Outcome::Records(records))
    }
}

pub(crate) fn delivery_id(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let meta = v.get("data")?.get("meta")?;
    ["event_id", "tracking_id"].into_iter().find_map(|k| {
        meta.get(k)
            .and_then(Value::as_str)
            .and_then(clean_delivery_id)
    })
}

pub(crate) fn fetch_call(req: &FetchRequest, api: &ApiSettings) -> FetchCall {
    FetchCall {
        method: http::Method::GET,
        url: format!(
            "{}/rest/v2/people/{}",
            base(api),
            encode_component(req.source_person_id.trim())
        ),
        headers: vec![bearer(api), accept_json()],
        body: None,
    }
}

pub(crate) fn record_from_api(
    res: &Resolved,
    body: &Value,
    fetched_at: DateTime<Utc>,
) -> Result<tenure_domain::SourceRecord, AdapterError> {
    let (person, prefix) = match body.get("data") {
        Some(d @ Value::Object(_)) => (d, "data."),
        _ => (body, ""),
    };
    if !person.is_object() {
        return Err(AdapterError::malformed(
            "the Deel API answer must be one JSON object",
        ));
    }
    build_record(
        res,
        &Doc::plain(person, prefix),
        &Ctx {
            effective_at: fetched_at,
        },
    )
}
