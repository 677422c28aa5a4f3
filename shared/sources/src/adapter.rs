use std::fmt;

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use tenure_domain::{EmploymentStatus, SourceRecord};

use crate::mapping::{FieldMapping, MappingError, Resolved};

/// The vendor format a source speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Generic,
    #[serde(rename = "bamboohr")]
    BambooHr,
    #[serde(rename = "hibob")]
    HiBob,
    Personio,
    Gusto,
    Deel,
    Frappe,
    Csv,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Generic,
        Kind::BambooHr,
        Kind::HiBob,
        Kind::Personio,
        Kind::Gusto,
        Kind::Deel,
        Kind::Frappe,
        Kind::Csv,
    ];

    /// The name used in configuration (`kind = "bamboohr"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Generic => "generic",
            Kind::BambooHr => "bamboohr",
            Kind::HiBob => "hibob",
            Kind::Personio => "personio",
            Kind::Gusto => "gusto",
            Kind::Deel => "deel",
            Kind::Frappe => "frappe",
            Kind::Csv => "csv",
        }
    }

    /// Whether the vendor's webhooks can ask for a fetch-back, so the
    /// source needs `ApiSettings`.
    pub fn fetches(self) -> bool {
        !matches!(self, Kind::Generic | Kind::Csv)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a verified webhook asks of Tenure.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A setup call (HiBob's `Ping test`, Gusto's verification token): answer
    /// it and publish nothing. See `Adapter::handshake_quarantine_reason`
    /// for the one handshake whose payload must be kept.
    Handshake {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    /// The webhook carried the person's data.
    Records(Vec<SourceRecord>),
    /// Dataless: fetch these persons back from the HRIS API.
    Fetch(Vec<FetchRequest>),
    /// Authentic, but nothing Tenure acts on (an unrelated event type).
    Ignored { reason: String },
}

/// One person to fetch back from the HRIS API, published to the durable
/// fetch queue so the webhook's answer never waits for the HRIS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    pub source_person_id: String,
    /// The vendor's event name (`employee.updated`, `employment.terminated`).
    pub event: String,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Signature or token wrong or missing: 401.
    Unauthorized,
    /// Not the vendor's format at all: 400.
    Malformed,
    /// The vendor's format, but a field is missing or invalid: 422.
    Invalid,
    /// Tenure's configuration cannot handle it (no secret, a mapping names a
    /// field that is not there): 422, quarantined for replay after a fix.
    Config,
}

/// Why a payload was refused. `field` names the payload field at fault and,
/// for mapped fields, the attribute it feeds: `fields.workEmail
/// (work_email)`. The message never contains a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterError {
    pub kind: ErrorKind,
    /// The payload field at fault, when there is one.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for AdapterError {
    /// `field: message` when a field is known, so a log line alone locates
    /// the problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for AdapterError {}

impl AdapterError {
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Unauthorized,
            field: None,
            message: message.into(),
        }
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Malformed,
            field: None,
            message: message.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Invalid,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn config(field: Option<String>, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Config,
            field,
            message: message.into(),
        }
    }

    /// The HTTP status the ingest answers with for this error.
    pub fn status(&self) -> u16 {
        match self.kind {
            ErrorKind::Unauthorized => 401,
            ErrorKind::Malformed => 400,
            ErrorKind::Invalid | ErrorKind::Config => 422,
        }
    }
}

impl From<MappingError> for AdapterError {
    fn from(e: MappingError) -> Self {
        AdapterError::config(
            Some(format!("mapping.{}", e.key)),
            format!("the source's field mapping is invalid: {}", e.message),
        )
    }
}

/// Where and how to reach the HRIS API for fetch-back.
#[derive(Clone)]
pub struct ApiSettings {
    pub base_url: String,
    /// API key / token, already resolved from the secret store.
    pub token: String,
    /// A user or service id some vendors pair with the token (HiBob).
    pub user: Option<String>,
}

impl fmt::Debug for ApiSettings {
    /// The token is a secret and never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiSettings")
            .field("base_url", &self.base_url)
            .field("token", &"<redacted>")
            .field("user", &self.user)
            .finish()
    }
}

/// An HTTP request to send to the HRIS API, built without doing I/O.
#[derive(Clone, PartialEq, Eq)]
pub struct FetchCall {
    pub method: http::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// A JSON body, for vendors whose read endpoint takes one (HiBob's
    /// `POST /v1/people/{id}` selects fields in its body).
    pub body: Option<String>,
}

impl fmt::Debug for FetchCall {
    /// Credentials in `Authorization` are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                if k.eq_ignore_ascii_case("authorization") {
                    (k.as_str(), "<redacted>")
                } else {
                    (k.as_str(), v.as_str())
                }
            })
            .collect();
        f.debug_struct("FetchCall")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &headers)
            .field("body", &self.body)
            .finish()
    }
}

/// One configured source: its vendor format, field mapping and webhook
/// secret. Pure: every method is a function of its arguments.
pub struct Adapter {
    pub kind: Kind,
    pub mapping: FieldMapping,
    secret: Option<Vec<u8>>,
}

impl fmt::Debug for Adapter {
    /// The webhook secret is never printed, only whether one is set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adapter")
            .field("kind", &self.kind)
            .field("mapping", &self.mapping)
            .field(
                "secret",
                &if self.secret.is_some() {
                    "<set>"
                } else {
                    "<none>"
                },
            )
            .finish()
    }
}

/// Longest delivery id passed on (the ingest's own limit).
const MAX_DELIVERY_ID: usize = 128;

/// A delivery id as the ingest accepts it, or nothing.
pub(crate) fn clean_delivery_id(id: &str) -> Option<String> {
    let id = id.trim();
    let ok = !id.is_empty()
        && id.len() <= MAX_DELIVERY_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    ok.then(|| id.to_string())
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl Adapter {
    /// Builds an adapter without checking the mapping; a bad mapping makes
    /// every call answer `ErrorKind::Config`. Prefer `try_new` at startup.
    pub fn new(kind: Kind, mapping: FieldMapping, secret: Option<Vec<u8>>) -> Self {
        Self {
            kind,
            mapping,
            secret,
        }
    }

    /// Builds an adapter, refusing a mapping that cannot work for this
    /// vendor (so configuration errors surface at startup, naming the key).
    pub fn try_new(
        kind: Kind,
        mapping: FieldMapping,
        secret: Option<Vec<u8>>,
    ) -> Result<Self, MappingError> {
        if kind != Kind::Generic {
            mapping.resolve(kind)?;
        } else {
            mapping.validate()?;
        }
        Ok(Self::new(kind, mapping, secret))
    }

    pub(crate) fn resolved(&self) -> Result<Resolved, AdapterError> {
        self.mapping.resolve(self.kind).map_err(AdapterError::from)
    }

    /// Whether a webhook secret is configured, i.e. whether requests can be
    /// authenticated at all (without one they are kept for replay).
    pub fn has_secret(&self) -> bool {
        self.secret.as_deref().is_some_and(|s| !s.is_empty())
    }

    /// The webhook secret, or the configuration error that quarantines the
    /// payload until one is set (it can then be replayed).
    pub(crate) fn secret(&self) -> Result<&[u8], AdapterError> {
        match self.secret.as_deref() {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(AdapterError::config(
                None,
                format!(
                    "no webhook secret is configured for this {} source; the payload is kept and can be replayed once it is set",
                    self.kind
                ),
            )),
        }
    }

    /// Verifies and parses one webhook. `max_skew_secs` bounds timestamp
    /// headers where the vendor signs one.
    pub fn handle(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
        max_skew_secs: u64,
    ) -> Result<Outcome, AdapterError> {
        match self.kind {
            Kind::Generic => crate::generic::handle(self, headers, body, now, max_skew_secs),
            Kind::BambooHr => crate::bamboohr::handle(self, headers, body, now, max_skew_secs),
            Kind::HiBob => crate::hibob::handle(self, headers, body),
            Kind::Personio => crate::personio::handle(self, headers, body),
            Kind::Gusto => crate::gusto::handle(self, headers, body),
            Kind::Deel => crate::deel::handle(self, headers, body),
            Kind::Frappe => crate::frappe::handle(self, headers, body, now),
            Kind::Csv => Err(AdapterError::config(
                None,
                "a csv source takes no webhooks; import its files instead",
            )),
        }
    }

    /// The vendor's own id for this delivery when it has one.
    pub fn delivery_id(&self, headers: &HeaderMap, body: &[u8]) -> Option<String> {
        match self.kind {
            Kind::Generic => {
                header(headers, crate::signature::H_TENURE_DELIVERY).and_then(clean_delivery_id)
            }
            Kind::Gusto => crate::gusto::delivery_id(body),
            Kind::Deel => crate::deel::delivery_id(body),
            Kind::Frappe => crate::frappe::delivery_id(body),
            // BambooHR, HiBob and Personio put no delivery id in their
            // payloads or documented headers: the service hashes the body.
            Kind::BambooHr | Kind::HiBob | Kind::Personio | Kind::Csv => None,
        }
    }

    /// When a webhook answered with `Outcome::Handshake` carries something
    /// the operator must read, the reason under which the ingest should
    /// keep the payload in quarantine (`tenure quarantine show` reveals it).
    ///
    /// Gusto's setup call carries the verification token, and that token is
    /// the signing secret of every later delivery: the operator must read it
    /// once to configure the source. It is not logged or echoed; keeping
    /// the payload in the bounded, access-controlled quarantine is the one
    /// place it goes.
    pub fn handshake_quarantine_reason(&self, body: &[u8]) -> Option<&'static str> {
        match self.kind {
            Kind::Gusto if crate::gusto::verification_token(body).is_some() => {
                Some("gusto verification token received: read it with `tenure quarantine show`, configure it as this source's webhook secret, then verify the subscription with Gusto")
            }
            _ => None,
        }
    }

    /// Maps a CSV file, one person per row, with the header's column names
    /// as vendor field names (so a vendor's own export maps through that
    /// vendor's mapping). Every row is validated on its own and effective
    /// at `effective_at`; see the `csv` module.
    pub fn records_from_csv(
        &self,
        input: impl std::io::Read,
        effective_at: DateTime<Utc>,
    ) -> Vec<Result<SourceRecord, crate::csv::RowError>> {
        crate::csv::records_from_csv(self, input, effective_at)
    }

    /// The API request for one person. Kinds that never ask for a fetch
    /// (generic, csv) get a call with an empty URL, which no HTTP client
    /// sends; `try_fetch_call` says why.
    pub fn fetch_call(&self, req: &FetchRequest, api: &ApiSettings) -> FetchCall {
        self.try_fetch_call(req, api).unwrap_or_else(|_| FetchCall {
            method: http::Method::GET,
            url: String::new(),
            headers: Vec::new(),
            body: None,
        })
    }

    /// The API request for one person, or why it cannot be built (a kind
    /// without an API, missing credentials, a mapping that cannot work).
    pub fn try_fetch_call(
        &self,
        req: &FetchRequest,
        api: &ApiSettings,
    ) -> Result<FetchCall, AdapterError> {
        let res = self.resolved()?;
        if !crate::mapping::usable_id(req.source_person_id.trim()) {
            return Err(AdapterError::invalid(
                "source_person_id",
                "not a usable id (empty, \".\", \"..\", control characters or over 256 characters)",
            ));
        }
        if api.base_url.trim().is_empty() {
            return Err(AdapterError::config(
                Some("api.base_url".into()),
                "no API base URL is configured for this source",
            ));
        }
        match self.kind {
            Kind::BambooHr => Ok(crate::bamboohr::fetch_call(&res, req, api)),
            Kind::HiBob => crate::hibob::fetch_call(&res, req, api),
            Kind::Personio => Ok(crate::personio::fetch_call(req, api)),
            Kind::Gusto => Ok(crate::gusto::fetch_call(req, api)),
            Kind::Deel => Ok(crate::deel::fetch_call(req, api)),
            Kind::Frappe => Ok(crate::frappe::fetch_call(req, api)),
            Kind::Generic | Kind::Csv => Err(AdapterError::config(
                None,
                format!("a {} source has no API to fetch persons from", self.kind),
            )),
        }
    }

    /// Maps the HRIS API's answer for one person to a record, effective at
    /// `fetched_at` (the API states the person as of that instant).
    pub fn record_from_api(
        &self,
        req: &FetchRequest,
        body: &serde_json::Value,
        fetched_at: DateTime<Utc>,
    ) -> Result<SourceRecord, AdapterError> {
        let res = self.resolved()?;
        let mut record = match self.kind {
            Kind::BambooHr => crate::bamboohr::record_from_api(&res, body, fetched_at),
            Kind::HiBob => crate::hibob::record_from_api(&res, body, fetched_at),
            Kind::Personio => crate::personio::record_from_api(&res, body, fetched_at),
            Kind::Gusto => crate::gusto::record_from_api(&res, body, fetched_at),
            Kind::Deel => crate::deel::record_from_api(&res, body, fetched_at),
            Kind::Frappe => crate::frappe::record_from_api(&res, body, fetched_at),
            Kind::Generic | Kind::Csv => Err(AdapterError::config(
                None,
                format!("a {} source has no API to fetch persons from", self.kind),
            )),
        }?;
        // The answer must be about the person asked for; a proxy or a
        // mix-up must not overwrite someone else.
        if !res.person_id_explicit && record.person_id != req.source_person_id.trim() {
            return Err(AdapterError::invalid(
                format!("{} (person_id)", res.person_id),
                format!(
                    "the API answered for person {:?} but {:?} was asked for",
                    record.person_id, req.source_person_id
                ),
            ));
        }
        if self.is_immediate_revocation(req) {
            record.revoke_immediately = true;
        }
        Ok(record)
    }

    /// Whether the fetch was asked for because the person was deleted in
    /// the HRIS (`employee.deleted`, `person.deleted`, BambooHR's `Deleted`
    /// field-webhook action). The API then answers 404.
    ///
    /// Why deletion is not mapped to a record at the webhook: the webhook
    /// carries only the id, and a record needs the person's data. Why it is
    /// not `rescinded`: HR systems delete records created by mistake, but
    /// also real employees (BambooHR allows it), and `rescinded` removes
    /// every downstream trace, which is irreversible. A person the HRIS no
    /// longer knows must lose access at once, reversibly: on a 404 for such
    /// a request the fetch worker publishes `revocation_record` of the last
    /// known record (terminated, `revoke_immediately`). Any other 404 is an
    /// error to retry and dead-letter like any failed fetch.
    pub fn is_deletion(&self, req: &FetchRequest) -> bool {
        let e = req.event.to_ascii_lowercase();
        match self.kind {
            // Personio's `employment.deleted` also fires for a removed
            // employment of a person who still exists; the 404 decides.
            Kind::Personio => e == "person.deleted" || e == "employment.deleted",
            _ => e.ends_with(".deleted"),
        }
    }

    /// The record that ends a deleted person's access now (see
    /// `is_deletion`): the last known record, terminated with
    /// `revoke_immediately`, effective when the HRIS reported the deletion.
    pub fn revocation_record(&self, last_known: &SourceRecord, req: &FetchRequest) -> SourceRecord {
        let mut r = last_known.clone();
        r.employment_status = EmploymentStatus::Terminated;
        r.revoke_immediately = true;
        r.effective_at = req.occurred_at;
        r.effective_date = None;
        r.sequence = None;
        r
    }

    /// HiBob fires `employee.access.revoked.immediately` when a termination
    /// flow ends with "Revoke access immediately"; the API still shows the
    /// future termination date, so the event itself carries the urgency.
    fn is_immediate_revocation(&self, req: &FetchRequest) -> bool {
        self.kind == Kind::HiBob && req.event == crate::hibob::EVENT_REVOKED_IMMEDIATELY
    }
}

/// Parses a JSON body that must be one object, or says why not.
pub(crate) fn json_object(
    body: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, AdapterError> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(o)) => Ok(o),
        Ok(_) => Err(AdapterError::malformed("the body must be one JSON object")),
        Err(e) => Err(AdapterError::malformed(format!(
            "malformed JSON: {}",
            strip_position(&e.to_string())
        ))),
    }
}

fn strip_position(msg: &str) -> &str {
    match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}

/// Percent-encodes one URL path segment or query value (RFC 3986
/// unreserved characters stay), so an id from a payload cannot change the
/// request's path or query.
pub(crate) fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn base(api: &ApiSettings) -> &str {
    api.base_url.trim().trim_end_matches('/')
}

pub(crate) fn bearer(api: &ApiSettings) -> (String, String) {
    (
        "Authorization".into(),
        format!("Bearer {}", api.token.trim()),
    )
}

pub(crate) fn basic(user: &str, password: &str) -> (String, String) {
    use base64::Engine as _;
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    ("Authorization".into(), format!("Basic {creds}"))
}

pub(crate) fn accept_json() -> (String, String) {
    ("Accept".into(), "application/json".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let api = ApiSettings {
            base_url: "https://api.example.com".into(),
            token: "s3cret-token".into(),
            user: Some("svc".into()),
        };
        assert!(!format!("{api:?}").contains("s3cret"));
        let call = FetchCall {
            method: http::Method::GET,
            url: "https://api.example.com/x".into(),
            headers: vec![bearer(&api), accept_json()],
            body: None,
        };
        let shown = format!("{call:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("application/json"));
    }

    #[test]
    fn adapter_debug_hides_the_secret() {
        let a = Adapter::new(
            Kind::Gusto,
            FieldMapping::default(),
            Some(b"tok-123".to_vec()),
        );
        let shown = format!("{a:?}");
        assert!(!shown.contains("tok-123"), "{shown}");
        assert!(shown.contains("<set>"));
    }

    #[test]
    fn components_are_encoded() {
        assert_eq!(encode_component("a/b?c d"), "a%2Fb%3Fc%20d");
        assert_eq!(encode_component("HR-EMP-0001"), "HR-EMP-0001");
    }

    #[test]
    fn delivery_ids_are_cleaned() {
        assert_eq!(clean_delivery_id(" abc-1:2 ").as_deref(), Some("abc-1:2"));
        assert_eq!(clean_delivery_id("has space"), None);
        assert_eq!(clean_delivery_id(&"x".repeat(129)), None);
    }

    #[test]
    fn error_display_and_status() {
        let e = AdapterError::invalid("fields.workEmail (work_email)", "missing");
        assert_eq!(e.to_string(), "fields.workEmail (work_email): missing");
        assert_eq!(e.status(), 422);
        assert_eq!(AdapterError::unauthorized("x").status(), 401);
        assert_eq!(AdapterError::malformed("x").status(), 400);
    }
}
