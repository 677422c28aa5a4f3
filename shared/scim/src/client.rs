//! The HTTP side: one [`ScimClient`] per downstream app, turning SCIM calls
//! into [`Call`]s (value plus audit record) or [`ScimError`]s.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::diff::{Capabilities, Op, PatchOp};
pub use crate::error::{CallRecord, ScimError};
use crate::user::{get_ci, RemoteUser, UserSpec, PATCH_OP_SCHEMA};

const SCIM_JSON: &str = "application/scim+json";
/// Error bodies are copied into audit records; an HTML error page from a
/// proxy should not bloat every record.
const MAX_DETAIL_CHARS: usize = 500;

/// How the client authenticates. `Debug` never prints the secrets.
#[derive(Clone)]
pub enum Auth {
    None,
    Bearer(String),
    Basic { user: String, password: String },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Auth::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

/// A result of one SCIM call together with its audit record.
#[derive(Debug, Clone)]
pub struct Call<T> {
    pub value: T,
    pub record: CallRecord,
}

impl<T> Call<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Call<U> {
        Call {
            value: f(self.value),
            record: self.record,
        }
    }
}

/// A SCIM 2.0 client for one app. Cloning is cheap and shares the
/// connection pool.
#[derive(Clone)]
pub struct ScimClient {
    http: reqwest::Client,
    base: Url,
    /// `base`'s path without a trailing slash, stripped from request URLs to
    /// get the relative path put in audit records.
    base_path: String,
    auth: Auth,
    timeout: Duration,
}

impl fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScimClient")
            .field("base_url", &self.base.as_str())
            .field("auth", &self.auth)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A response of any status, before the caller decides what the status means.
struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl ScimClient {
    /// `base_url` is the SCIM root under which `/Users` lives, e.g.
    /// `https://app.example.com/scim/v2`. `timeout` bounds each request as a
    /// whole, including reading the body.
    pub fn new(base_url: &str, auth: Auth, timeout: Duration) -> Result<Self, ScimError> {
        let base = Url::parse(base_url)
            .map_err(|e| ScimError::Config(format!("invalid SCIM base URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ScimError::Config(format!(
                "SCIM base URL must be http or https, not {}",
                base.scheme()
            )));
        }
        // Credentials belong in `Auth`; in the URL they would end up in logs
        // and audit records.
        if !base.username().is_empty() || base.password().is_some() {
            return Err(ScimError::Config(
                "SCIM base URL must not contain credentials; use Auth".into(),
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(ScimError::Config(
                "SCIM base URL must not have a query or fragment".into(),
            ));
        }
        if timeout.is_zero() {
            return Err(ScimError::Config("SCIM timeout must be positive".into()));
        }
        // Checked up front so a bad secret is a configuration error, and
        // without echoing the secret.
        match &auth {
            Auth::Bearer(token) if HeaderValue::from_str(&format!("Bearer {token}")).is_err() => {
                return Err(ScimError::Config(
                    "bearer token contains characters not allowed in a header".into(),
                ));
            }
            Auth::Bearer(token) if token.is_empty() => {
                return Err(ScimError::Config("bearer token is empty".into()));
            }
            _ => {}
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // A redirected POST turns into a GET and a cross-host redirect
            // would send our requests elsewhere; a SCIM endpoint that
            // redirects is misconfigured and should fail visibly.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tenure-scim/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ScimError::Config(format!("cannot build HTTP client: {e}")))?;
        let base_path = base.path().trim_end_matches('/').to_owned();
        Ok(ScimClient {
            http,
            base,
            base_path,
            auth,
            timeout,
        })
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// Reads `/ServiceProviderConfig`. Features the document leaves out are
    /// taken as unsupported, the safe reading. A 404 or 501 comes back as an
    /// `Http` error for which [`ScimError::is_discovery_unsupported`] is true.
    pub async fn service_provider_config(&self) -> Result<Call<Capabilities>, ScimError> {
        let (url, rel) = self.url(&["ServiceProviderConfig"], None)?;
        let (raw, record) = self.send(Method::GET, url, rel, None, None).await?;
        if !raw.status.is_success() {
            return Err(http_error(raw, record));
        }
        let doc = parse_json(&raw, &record)?;
        let supported = |feature: &str| {
            doc.as_object()
                .and_then(|o| get_ci(o, feature))
                .and_then(Value::as_object)
                .and_then(|f| get_ci(f, "supported"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let caps = Capabilities {
            patch: supported("patch"),
            filter: supported("filter"),
            etag: supported("etag"),
        };
        Ok(Call {
            value: caps,
            record,
        })
    }

    /// `None` when the server says 404.
    pub async fn get_user(&self, id: &str) -> Result<Call<Option<RemoteUser>>, ScimError> {
        let (url, rel) = self.url(&["Users", id], None)?;
        let (raw, record) = self.send(Method::GET, url, rel, Some(id), None).await?;
        if raw.status == StatusCode::NOT_FOUND {
            return Ok(Call {
                value: None,
                record,
            });
        }
        if !raw.status.is_success() {
            return Err(http_error(raw, record));
        }
        let user = parse_user(&raw, &record)?;
        Ok(Call {
            value: Some(user),
            record,
        })
    }

    /// Finds the one user whose `externalId` (case-exact) or `userName`
    /// (case-insensitive) is `value`, with `GET /Users?filter=...`.
    ///
    /// Results are re-checked locally, so a server that ignores or loosens
    /// the filter cannot make us act on the wrong account; more than one
    /// match is an [`ScimError::Ambiguous`] error.
    pub async fn find_user(
        &self,
        attribute: &str,
        value: &str,
    ) -> Result<Call<Option<RemoteUser>>, ScimError> {
        let attribute = if attribute.eq_ignore_ascii_case("externalId") {
            "externalId"
        } else if attribute.eq_ignore_ascii_case("userName") {
            "userName"
        } else {
            return Err(ScimError::Config(format!(
                "find_user supports externalId and userName, not {attribute:?}"
            )));
        };
        let filter = format!("{attribute} eq {}", filter_string(value));
        let (url, rel) = self.url(&["Users"], Some(("filter", &filter)))?;
        let (raw, mut record) = self.send(Method::GET, url, rel, None, None).await?;
        if !raw.status.is_success() {
            return Err(http_error(raw, record));
        }
        let doc = parse_json(&raw, &record)?;
        let resources = match doc.as_object().and_then(|o| get_ci(o, "Resources")) {
            // RFC 7644 §3.4.2 lets a server omit Resources when nothing matched.
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(_) => return Err(invalid(record, "Resources is not an array".into())),
        };
        let mut matches = Vec::new();
        for item in &resources {
            let user = match RemoteUser::from_scim(item) {
                Ok(u) => u,
                Err(e) => return Err(invalid(record, e.to_string())),
            };
            let hit = match attribute {
                "externalId" => user.external_id.as_deref() == Some(value),
                _ => user.user_name.to_lowercase() == value.to_lowercase(),
            };
            if hit {
                matches.push(user);
            }
        }
        match matches.len() {
            0 | 1 => {
                let found = matches.pop();
                record.remote_id = found.as_ref().map(|u| u.id.clone());
                Ok(Call {
                    value: found,
                    record,
                })
            }
            count => {
                record.error = Some(format!("{count} users match {attribute}"));
                Err(ScimError::Ambiguous {
                    record,
                    attribute: attribute.to_owned(),
                    count,
                })
            }
        }
    }

    pub async fn create_user(&self, spec: &UserSpec) -> Result<Call<RemoteUser>, ScimError> {
        let (url, rel) = self.url(&["Users"], None)?;
        let body = spec.to_scim();
        let (raw, mut record) = self.send(Method::POST, url, rel, None, Some(&body)).await?;
        if !raw.status.is_success() {
            return Err(http_error(raw, record));
        }
        let user = parse_user(&raw, &record)?;
        record.remote_id = Some(user.id.clone());
        Ok(Call {
            value: user,
            record,
        })
    }

    /// Applies PATCH operations. `None` when the server answers 204 without
    /// returning the resource.
    pub async fn patch_user(
        &self,
        id: &str,
        ops: &[PatchOp],
    ) -> Result<Call<Option<RemoteUser>>, ScimError> {
        // RFC 7644 requires at least one operation; sending none would only
        // earn a 400 that looks like a server problem in the audit log.
        if ops.is_empty() {
            return Err(ScimError::Config("PATCH without operations".into()));
        }
        let (url, rel) = self.url(&["Users", id], None)?;
        let body = json!({ "schemas": [PATCH_OP_SCHEMA], "Operations": ops });
        let (raw, record) = self
            .send(Method::PATCH, url, rel, Some(id), Some(&body))
            .await?;
        if !raw.status.is_success() {
            return Err(http_error(raw, record));
        }
        if raw.status == StatusCode::NO_CONTENT || raw.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Call {
                value: None,
                record,
            });
        }
        let user = parse_user(&raw, &record)?;
        Ok(Call {
            value: Some(user),
            record,
        })
    }

    /// PUT: replaces the whole resource. A missing `id` is a 404 `Http`
    /// error; PUT never creates.
    pub async fn replace_user(
        &self,
        id: &str,
        spec: &UserSpec,
    ) -> Result<Call<RemoteUser>, ScimError> {
        let (url, rel) = self.url(&["Users", id], None)?;
        let mut body = spec.to_scim();
        if let Some(obj) = body.as_object_mut() {
            obj.insert("id".into(), id.into());
        }
        let (raw, record) = self
            .send(Method::PUT, url, rel, Some(id), Some(&body))
            .await?;
        if !raw.status.is_success() {
            return Err(http_error(raw, record));
        }
        let user = parse_user(&raw, &record)?;
        Ok(Call {
            value: user,
            record,
        })
    }

    /// A 404 counts as success: the account is gone either way, which is
    /// what a retried or repeated delete needs.
    pub async fn delete_user(&self, id: &str) -> Result<Call<()>, ScimError> {
        let (url, rel) = self.url(&["Users", id], None)?;
        let (raw, record) = self.send(Method::DELETE, url, rel, Some(id), None).await?;
        if raw.status.is_success() || raw.status == StatusCode::NOT_FOUND {
            return Ok(Call { value: (), record });
        }
        Err(http_error(raw, record))
    }

    /// Runs one planned operation. The value is the resource as the server
    /// returned it: `None` for a delete or a PATCH answered with 204.
    pub async fn execute(&self, op: &Op) -> Result<Call<Option<RemoteUser>>, ScimError> {
        match op {
            Op::Create(spec) => Ok(self.create_user(spec).await?.map(Some)),
            Op::Patch { id, ops } => self.patch_user(id, ops).await,
            Op::Replace { id, spec } => Ok(self.replace_user(id, spec).await?.map(Some)),
            Op::Delete { id } => Ok(self.delete_user(id).await?.map(|()| None)),
        }
    }

    /// The absolute URL for `segments` under the base, and the relative
    /// path for the audit record (query shown unencoded, for readability).
    fn url(
        &self,
        segments: &[&str],
        query: Option<(&str, &str)>,
    ) -> Result<(Url, String), ScimError> {
        if segments.iter().any(|s| s.is_empty()) {
            return Err(ScimError::Config("empty SCIM resource id".into()));
        }
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| ScimError::Config("SCIM base URL cannot have paths".into()))?;
            // Segments are percent-encoded here, so an id such as "../x"
            // stays inside /Users.
            path.pop_if_empty().extend(segments);
        }
        let mut rel = url
            .path()
            .strip_prefix(&self.base_path)
            .unwrap_or(url.path())
            .to_owned();
        if let Some((key, value)) = query {
            url.query_pairs_mut().append_pair(key, value);
            rel = format!("{rel}?{key}={value}");
        }
        Ok((url, rel))
    }

    /// Sends one request and reads the whole response, whatever its status.
    /// Only a missing response is an error here.
    async fn send(
        &self,
        method: Method,
        url: Url,
        rel: String,
        remote_id: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(Raw, CallRecord), ScimError> {
        let span = tracing::info_span!(
            "scim_request",
            method = %method,
            path = %rel,
            status = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        let mut record = CallRecord {
            method: method.to_string(),
            path: rel,
            status: None,
            latency_ms: 0,
            remote_id: remote_id.map(str::to_owned),
            error: None,
        };
        let mut req = self
            .http
            .request(method, url)
            .header(ACCEPT, "application/scim+json, application/json");
        req = match &self.auth {
            Auth::None => req,
            Auth::Bearer(token) => req.bearer_auth(token),
            Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
        };
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body)
                .map_err(|e| ScimError::Config(format!("cannot encode request: {e}")))?;
            req = req.header(CONTENT_TYPE, SCIM_JSON).body(bytes);
        }
        let started = Instant::now();
        let outcome = async {
            let resp = req.send().await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?.to_vec();
            Ok::<_, reqwest::Error>(Raw {
                status,
                headers,
                body,
            })
        }
        .instrument(span.clone())
        .await;
        record.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        span.record("latency_ms", record.latency_ms);
        match outcome {
            Ok(raw) => {
                record.status = Some(raw.status.as_u16());
                span.record("status", raw.status.as_u16());
                span.in_scope(|| tracing::debug!(status = raw.status.as_u16(), "SCIM response"));
                Ok((raw, record))
            }
            Err(e) => {
                let timeout = e.is_timeout();
                let detail = if timeout {
                    format!("no response within {:?}", self.timeout)
                } else {
                    error_chain(&e)
                };
                record.error = Some(detail.clone());
                span.in_scope(|| tracing::debug!(error = %detail, "SCIM request failed"));
                Err(ScimError::Transport {
                    record,
                    detail,
                    timeout,
                })
            }
        }
    }
}

/// A SCIM filter string literal: RFC 7644 filter values use JSON string
/// syntax, so JSON encoding escapes quotes, backslashes and controls.
fn filter_string(value: &str) -> String {
    Value::from(value).to_string()
}

/// `reqwest::Error`'s own message is generic ("error sending request");
/// the cause (connection refused, DNS, TLS) is in the source chain. The URL
/// is dropped because the record already has the path.
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = if e.is_connect() {
        "connection failed".to_owned()
    } else if e.is_body() || e.is_decode() {
        "reading the response failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

fn invalid(mut record: CallRecord, detail: String) -> ScimError {
    record.error = Some(detail.clone());
    ScimError::InvalidResponse { record, detail }
}

fn parse_json(raw: &Raw, record: &CallRecord) -> Result<Value, ScimError> {
    serde_json::from_slice(&raw.body)
        .map_err(|e| invalid(record.clone(), format!("body is not JSON: {e}")))
}

fn parse_user(raw: &Raw, record: &CallRecord) -> Result<RemoteUser, ScimError> {
    let doc = parse_json(raw, record)?;
    let mut user =
        RemoteUser::from_scim(&doc).map_err(|e| invalid(record.clone(), e.to_string()))?;
    // meta.version is the ETag (RFC 7644 §3.14); the header covers servers
    // that send only the header.
    if user.etag.is_none() {
        user.etag = raw
            .headers
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
    Ok(user)
}

/// Turns a non-success response into an `Http` error, reading the RFC 7644
/// §3.12 error body when there is one.
fn http_error(raw: Raw, mut record: CallRecord) -> ScimError {
    let status = raw.status.as_u16();
    let body: Option<Value> = serde_json::from_slice(&raw.body).ok();
    let obj = body.as_ref().and_then(Value::as_object);
    let scim_type = obj
        .and_then(|o| get_ci(o, "scimType"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let detail = obj
        .and_then(|o| get_ci(o, "detail"))
        .and_then(Value::as_str)
        .map(truncate)
        .or_else(|| {
            let text = String::from_utf8_lossy(&raw.body);
            let text = text.trim();
            (!text.is_empty()).then(|| truncate(text))
        })
        .unwrap_or_else(|| {
            raw.status
                .canonical_reason()
                .unwrap_or("no detail")
                .to_owned()
        });
    let retry_after = raw
        .headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    record.error = Some(match &scim_type {
        Some(t) => format!("HTTP {status} ({t}): {detail}"),
        None => format!("HTTP {status}: {detail}"),
    });
    ScimError::Http {
        record,
        status,
        scim_type,
        detail,
        retry_after,
    }
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3). A date
/// in the past means "now".
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let future = (chrono::Utc::now() + chrono::Duration::seconds(30))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let wait = parse_retry_after(&future).expect("http date");
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn filter_values_are_escaped() {
        assert_eq!(filter_string("plain"), "\"plain\"");
        assert_eq!(filter_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn debug_redacts_secrets() {
        let bearer = Auth::Bearer("s3cret-token".into());
        let basic = Auth::Basic {
            user: "svc".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{bearer:?}").contains("s3cret"));
        let basic_dbg = format!("{basic:?}");
        assert!(!basic_dbg.contains("hunter2"));
        assert!(basic_dbg.contains("svc"));
        let client = ScimClient::new("http://127.0.0.1:1/t/v2", bearer, Duration::from_secs(1))
            .expect("valid client");
        assert!(!format!("{client:?}").contains("s3cret"));
    }

    #[test]
    fn rejects_bad_configuration() {
        let t = Duration::from_secs(1);
        for url in [
            "not a url",
            "ftp://host/scim",
            "http://user:pw@host/scim",
            "http://host/scim?x=1",
        ] {
            let err = ScimClient::new(url, Auth::None, t).expect_err(url);
            assert!(matches!(err, ScimError::Config(_)), "{url}: {err}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
        let err = ScimClient::new("http://h/scim", Auth::Bearer("a\nb".into()), t)
            .expect_err("newline in token");
        assert!(matches!(err, ScimError::Config(_)));
        assert!(ScimClient::new("http://h/scim", Auth::None, Duration::ZERO).is_err());
    }

    #[test]
    fn urls_and_record_paths() {
        let c = ScimClient::new("http://h:1/tenant/v2/", Auth::None, Duration::from_secs(1))
            .expect("valid client");
        let (url, rel) = c.url(&["Users", "a b/../c"], None).expect("url");
        assert_eq!(url.as_str(), "http://h:1/tenant/v2/Users/a%20b%2F..%2Fc");
        assert_eq!(rel, "/Users/a%20b%2F..%2Fc");
        let (url, rel) = c
            .url(&["Users"], Some(("filter", "userName eq \"x\"")))
            .expect("url");
        assert_eq!(
            url.as_str(),
            "http://h:1/tenant/v2/Users?filter=userName+eq+%22x%22"
        );
        assert_eq!(rel, "/Users?filter=userName eq \"x\"");
        assert!(c.url(&["Users", ""], None).is_err());
    }
}
