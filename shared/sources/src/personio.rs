//! Personio.
//!
//! Authentication: Personio documents no webhook signature, so a shared
//! secret authenticates it. The webhook is registered with the secret as a
//! token that Personio sends back on every delivery, in either
//! `Authorization: Bearer <secret>` or `X-Tenure-Token: <secret>` (the
//! latter for setups where a proxy consumes `Authorization`). Both are
//! compared in constant time. Without a signature there is no body
//! integrity or replay protection beyond TLS: a replay is a duplicate,
//! deduplicated downstream, and fetch-back means a forged event can only
//! make Tenure re-read a person from Personio, never inject data.
//!
//! Payloads are "dataless" (`{"company_id", "event_name", "occurred_at",
//! "payload", "meta"}`): `person.created|updated|deleted` and
//! `employment.created|updated|deleted|started|terminated` become
//! `Outcome::Fetch` of the person. The person's id is `payload.id` for
//! person events and `payload.person.id` (or `payload.person_id`) for
//! employment events, whose own `id` is the employment's. (Personio's
//! public pages show the envelope but not per-event payloads; these names
//! follow its v2 API, where an employment refers to `person.id`.) Other
//! events (absences, attendances, documents) are ignored. Personio must
//! get a 2xx within 3 s and retries for 3 days, which fetch-back through
//! the durable queue allows.
//!
//! Fetch-back: `GET {base}/v1/company/employees/{id}` (base
//! `https://api.personio.de`) with the bearer token the service obtained
//! from `/v1/auth`. Attributes come as `{"data": {"attributes": {"first_name":
//! {"label", "value"}, …}}}`; a mapping path's first segment names the
//! attribute and the rest walks its `value` (`department.attributes.name`).
//! Personio returns only attributes whitelisted for the API credentials,
//! so a mapped attribute that is missing is reported as a configuration
//! error. Dates come as `2020-01-31T00:00:00+01:00`; the date as written
//! is the person's local date.

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::Value;

use crate::adapter::{
    accept_json, base, bearer, encode_component, header, json_object, Adapter, AdapterError,
    ApiSettings, FetchCall, FetchRequest, Outcome,
};
use crate::mapping::{
    build_record, id_text, no_alias, parse_instant, Ctx, Doc, FieldMapping, Resolved, Shape,
};
use crate::signature::{token_matches, H_TENURE_TOKEN};

pub(crate) fn default_mapping() -> FieldMapping {
    FieldMapping {
        person_id: Some("id".into()),
        fields: [
            ("given_name", "first_name"),
            ("family_name", "last_name"),
            ("work_email", "email"),
            ("department", "department.attributes.name"),
            ("cost_center", "cost_centers.0.attributes.name"),
            ("organization", "subcompany.attributes.name"),
            ("title", "position"),
            ("manager_id", "supervisor.attributes.id.value"),
            ("location", "office.attributes.name"),
            ("start_date", "hire_date"),
            ("end_date", "termination_date"),
            ("employment_status", "status"),
        ]
        .into_iter()
        .map(|(a, f)| (a.to_string(), f.to_string()))
        .collect(),
        status: [
            ("active", "active"),
            ("onboarding", "active"),
            ("leave", "on_leave"),
            ("inactive", "terminated"),
        ]
        .into_iter()
        .map(|(a, f)| (a.to_string(), f.to_string()))
        .collect(),
        date_format: None,
        time_zone: None,
    }
}

fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(auth) = header(headers, "authorization") {
        let mut parts = auth.splitn(2, ' ');
        let scheme = parts.next().unwrap_or("");
        if scheme.eq_ignore_ascii_case("bearer") {
            return parts.next().map(str::trim).filter(|t| !t.is_empty());
        }
    }
    header(headers, H_TENURE_TOKEN)
}

pub(crate) fn handle(
    adapter: &Adapter,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Outcome, AdapterError> {
    let secret = adapter.secret()?;
    let token = presented_token(headers).ok_or_else(|| {
        AdapterError::unauthorized(
            "no token: send the shared secret as `Authorization: Bearer <secret>` or `X-Tenure-Token: <secret>`",
        )
    })?;
    if !token_matches(secret, token.as_bytes()) {
        return Err(AdapterError::unauthorized(
            "the token does not match this source's secret",
        ));
    }
    let payload = json_object(body)?;
    if !payload.contains_key("event_name") {
        return Err(AdapterError::malformed(
            "not a Personio webhook ({\"company_id\", \"event_name\", \"occurred_at\", \"payload\"})",
        ));
    }
    let event = payload
        .get("event_name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| AdapterError::invalid("event_name", "missing"))?;
    let is_person = event.starts_with("person.");
    let is_employment = event.starts_with("employment.");
    if !is_person && !is_employment {
        return Ok(Outcome::Ignored {
            reason: format!("Personio event {event:?} does not concern a person's employment"),
        });
    }
    let occurred_at = payload
        .get("occurred_at")
        .and_then(|v| parse_instant(v, None))
        .ok_or_else(|| AdapterError::invalid("occurred_at", "missing or not an ISO 8601 time"))?;
    let inner = payload
        .get("payload")
        .filter(|p| p.is_object())
        .ok_or_else(|| AdapterError::invalid("payload", "missing or not an object"))?;
    let from_person = || {
        inner
            .get("person")
            .and_then(|p| p.get("id").or(Some(p)))
            .and_then(id_text)
            .or_else(|| inner.get("person_id").and_then(id_text))
    };
    let (id, named) = if is_person {
        (
            inner.get("id").and_then(id_text).or_else(from_person),
            "payload.id",
        )
    } else {
        (from_person(), "payload.person.id")
    };
    let id =
        id.ok_or_else(|| AdapterError::invalid(named, "missing: the person the event is about"))?;
    Ok(Outcome::Fetch(vec![FetchRequest {
        source_person_id: id,
        event: event.to_string(),
        occurred_at,
    }]))
}

pub(crate) fn fetch_call(req: &FetchRequest, api: &ApiSettings) -> FetchCall {
    FetchCall {
        method: http::Method::GET,
        url: format!(
            "{}/v1/company/employees/{}",
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
    if body.get("success").and_then(Value::as_bool) == Some(false) {
        return Err(AdapterError::invalid(
            "success",
            "the Personio API answered with an error",
        ));
    }
    let attributes = body
        .get("data")
        .and_then(|d| d.get("attributes"))
        .filter(|a| a.is_object())
        .ok_or_else(|| {
            AdapterError::malformed("not a Personio employee ({\"data\": {\"attributes\": {…}}})")
        })?;
    let doc = Doc {
        root: attributes,
        shape: Shape::Personio,
        prefix: "data.attributes.".into(),
        alias: no_alias,
    };
    build_record(
        res,
        &doc,
        &Ctx {
            effective_at: fetched_at,
        },
    )
}
