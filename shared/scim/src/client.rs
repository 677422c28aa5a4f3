//! The HTTP side: one [`ScimClient`] per downstream app, turning SCIM calls
//! into [`Call`]s (value plus audit record) or [`ScimError`]s.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, IF_MATCH, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::bulk::BulkLimits;
use crate::diff::{Capabilities, Op, PatchOp};
use crate::discovery::ProviderConfig;
pub use crate::error::{CallRecord, ScimError};
use crate::group::{GroupOp, GroupSpec, RemoteGroup};
use crate::learned::{Learned, Lesson, Paging};
use crate::profile::Profile;
use crate::user::{get_ci, RemoteUser, UserSpec, PATCH_OP_SCHEMA};

const SCIM_JSON: &str = "application/scim+json";

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

/// One page of a list (RFC 7644 §3.4.2 ListResponse).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The server's `totalResults`: all matches, not just this page; `None`
    /// when the server leaves it out (then only an empty or repeated page
    /// ends a listing).
    pub total_results: Option<usize>,
    /// 1-based index of the first item of this page.
    pub start_index: usize,
    pub items: Vec<T>,
}

/// The page size of the scan a look-up falls back to when the server
/// ignores `filter`.
const LOOKUP_SCAN_PAGE: usize = 100;

/// The page cap of [`ScimClient::list_all_users`].
pub const MAX_LIST_PAGES: usize = 10_000;

/// The `If-Match` value for a write to `remote`: its ETag when the server
/// supports ETags (`caps.etag`) and the account was read with one, else
/// `None` (an unconditional write, as without ETag support).
pub fn if_match(caps: Capabilities, remote: Option<&RemoteUser>) -> Option<&str> {
    if caps.etag {
        remote.and_then(|r| r.etag.as_deref())
    } else {
        None
    }
}

/// [`if_match`] for a group: its ETag when the server supports ETags and
/// the group was read with one.
pub fn group_if_match(caps: Capabilities, remote: Option<&RemoteGroup>) -> Option<&str> {
    if caps.etag {
        remote.and_then(|r| r.etag.as_deref())
    } else {
        None
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
    /// The `Content-Type` of request bodies (see [`Profile::content_type`]).
    content_type: HeaderValue,
    /// What this client learned about the server, shared by its clones.
    learned: Arc<Mutex<LearnedState>>,
    /// A quiet period the server asked for (429/503 with `Retry-After`),
    /// honoured by every request of this client and its clones.
    pause: Arc<crate::pause::AppPause>,
}

/// [`Learned`] and the lessons not yet handed to the caller.
#[derive(Default)]
struct LearnedState {
    learned: Learned,
    /// Set once the caller has seeded what it stored earlier.
    seeded: bool,
    lessons: Vec<Lesson>,
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
pub(crate) struct Raw {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
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
            content_type: HeaderValue::from_static(SCIM_JSON),
            learned: Arc::default(),
            pause: Arc::default(),
        })
    }

    /// The app-wide pause this client (and its clones) honour.
    pub fn pause(&self) -> &crate::pause::AppPause {
        &self.pause
    }

    /// [`ScimClient::new`] sending request bodies as `profile.content_type`.
    pub fn for_profile(
        base_url: &str,
        auth: Auth,
        timeout: Duration,
        profile: &Profile,
    ) -> Result<Self, ScimError> {
        let mut client = ScimClient::new(base_url, auth, timeout)?;
        client.content_type = HeaderValue::from_str(&profile.content_type).map_err(|_| {
            ScimError::Config(format!(
                "content type {:?} is not a valid header",
                profile.content_type
            ))
        })?;
        Ok(client)
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// What this client knows about the server's quirks now.
    pub fn learned(&self) -> Learned {
        self.learned.lock().map(|s| s.learned).unwrap_or_default()
    }

    /// Starts from what was learned earlier (stored by the caller). Only the
    /// first call counts, and what this client learned itself in the
    /// meantime wins over the stored copy, field by field.
    pub fn seed_learned(&self, stored: Learned) {
        if let Ok(mut s) = self.learned.lock() {
            if !s.seeded {
                s.seeded = true;
                let now = s.learned;
                let fresh = Learned::default();
                s.learned = Learned {
                    paging: if now.paging != fresh.paging {
                        now.paging
                    } else {
                        stored.paging
                    },
                    filter_ignored: now.filter_ignored || stored.filter_ignored,
                    member_key: now.member_key.or(stored.member_key),
                    remove_form: now.remove_form.max(stored.remove_form),
                };
            }
        }
    }

    /// Records a lesson: `change` moves [`Learned`] on; when it changed
    /// anything, the lesson is kept for [`ScimClient::take_lessons`].
    pub fn learn(
        &self,
        what: &str,
        value: &str,
        reason: String,
        change: impl FnOnce(&mut Learned),
    ) {
        if let Ok(mut s) = self.learned.lock() {
            let before = s.learned;
            change(&mut s.learned);
            if s.learned != before {
                tracing::warn!(base_url = %self.base, what, value, reason = %reason, "learned a server quirk");
                s.lessons.push(Lesson {
                    what: what.to_owned(),
                    value: value.to_owned(),
                    reason,
                });
            }
        }
    }

    /// The lessons learned since the last call, oldest first.
    pub fn take_lessons(&self) -> Vec<Lesson> {
        self.learned
            .lock()
            .map(|mut s| std::mem::take(&mut s.lessons))
            .unwrap_or_default()
    }

    /// Reads `/ServiceProviderConfig`. Features the document leaves out are
    /// taken as unsupported, the safe reading. A 404 or 501 comes back as an
    /// `Http` error for which [`ScimError::is_discovery_unsupported`] is true.
    pub async fn service_provider_config(&self) -> Result<Call<Capabilities>, ScimError> {
        Ok(self.service_provider().await?.map(|c| c.caps))
    }

    /// [`ScimClient::service_provider_config`] with the bulk limits: `bulk`
    /// is `Some` only when the document says bulk is supported and gives a
    /// positive `maxOperations` and `maxPayloadSize` (RFC 7643 §5 makes both
    /// required; without them no request could be sized safely).
    pub async fn service_provider(&self) -> Result<Call<ProviderConfig>, ScimError> {
        let (url, rel) = self.url(&["ServiceProviderConfig"], &[])?;
        let (raw, record) = self.send(Method::GET, url, rel, None, None, None).await?;
        if !raw.status.is_success() {
            return Err(http_error(raw, record));
        }
        let doc = parse_json(&raw, &record)?;
        let feature = |name: &str| {
            doc.as_object()
                .and_then(|o| get_ci(o, name))
                .and_then(Value::as_object)
        };
        let supported = |name: &str| {
            feature(name)
                .and_then(|f| get_ci(f, "supported"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let caps = Capabilities {
            patch: supported("patch"),
            filter: supported("filter"),
            etag: supported("etag"),
        };
        let limit = |key: &str| {
            feature("bulk")
                .and_then(|f| get_ci(f, key))
                .and_then(|v| match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                })
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n > 0)
        };
        let bulk = match (
            supported("bulk"),
            limit("maxOperations"),
            limit("maxPayloadSize"),
        ) {
            (true, Some(max_operations), Some(max_payload_size)) => Some(BulkLimits {
                max_operations,
                max_payload_size,
            }),
            _ => None,
        };
        Ok(Call {
            value: ProviderConfig { caps, bulk },
            record,
        })
    }

    /// `None` when the server says 404.
    pub async fn get_user(&self, id: &str) -> Result<Call<Option<RemoteUser>>, ScimError> {
        self.get_resource("Users", id, parse_user).await
    }

    /// `GET /<kind>/<id>`: `None` on 404, else the parsed resource.
    async fn get_resource<T>(
        &self,
        kind: &str,
        id: &str,
        parse: fn(&Raw, &CallRecord) -> Result<T, ScimError>,
    ) -> Result<Call<Option<T>>, ScimError> {
        let (url, rel) = self.url(&[kind, id], &[])?;
        let (raw, record) = self
            .send(Method::GET, url, rel, Some(id), None, None)
            .await?;
        if raw.status == StatusCode::NOT_FOUND {
            return Ok(Call {
                value: None,
                record,
            });
        }
        if !raw.status.is_success() {
            return Err(http_error(raw, record));
        }
        let value = parse(&raw, &record)?;
        Ok(Call {
            value: Some(value),
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
        let exact = attribute == "externalId";
        self.find_one(
            "Users",
            "users",
            attribute,
            value,
            RemoteUser::from_scim,
            |u: &RemoteUser| {
                if exact {
                    u.external_id.as_deref() == Some(value)
                } else {
                    u.user_name.to_lowercase() == value.to_lowercase()
                }
            },
            |u| u.id.clone(),
        )
        .await
    }

    /// `GET /<kind>?filter=<attribute> eq "<value>"`, re-checking every
    /// result with `hit`: a server that ignores or loosens the filter cannot
    /// make us act on the wrong resource, and more than one hit is an
    /// [`ScimError::Ambiguous`] error. When the answer holds resources that
    /// do not match (the filter was ignored) and may not be complete, the
    /// whole list is paged through and matched here, so a match beyond the
    /// first page is still found; the lesson `filter = ignored` is kept.
    #[allow(clippy::too_many_arguments)]
    async fn find_one<T>(
        &self,
        kind: &str,
        noun: &str,
        attribute: &str,
        value: &str,
        parse: fn(&Value) -> Result<T, ScimError>,
        hit: impl Fn(&T) -> bool,
        id_of: fn(&T) -> String,
    ) -> Result<Call<Option<T>>, ScimError> {
        let filter = format!("{attribute} eq {}", filter_string(value));
        let (url, rel) = self.url(&[kind], &[("filter", &filter)])?;
        let (raw, mut record) = self.send(Method::GET, url, rel, None, None, None).await?;
        if !raw.status.is_success() {
            return Err(http_error(raw, record));
        }
        let doc = parse_json(&raw, &record)?;
        let (resources, total) = match list_items(&doc, parse) {
            Ok(found) => (found.items, found.total_results),
            Err(detail) => return Err(invalid(record, detail)),
        };
        // A resource that does not match means the server ignored (or
        // loosened) the filter: its answer is then a page of everything, in
        // which the absence of a match proves nothing.
        let misses = resources.iter().filter(|r| !hit(r)).count();
        let candidates = if misses == 0 {
            resources
        } else {
            self.learn(
                "filter",
                "ignored",
                format!("GET /{kind}?filter={filter} answered {misses} {noun} that do not match"),
                |l| l.filter_ignored = true,
            );
            if total.is_some_and(|t| t <= resources.len()) {
                resources
            } else {
                let (all, _) = self
                    .list_all_capped(kind, LOOKUP_SCAN_PAGE, MAX_LIST_PAGES, parse, id_of)
                    .await?;
                all
            }
        };
        let mut matches: Vec<T> = candidates.into_iter().filter(|r| hit(r)).collect();
        match matches.len() {
            0 | 1 => {
                let found = matches.pop();
                record.remote_id = found.as_ref().map(id_of);
                Ok(Call {
                    value: found,
                    record,
                })
            }
            count => {
                record.error = Some(format!("{count} {noun} match {attribute}"));
                Err(ScimError::Ambiguous {
                    record,
                    attribute: attribute.to_owned(),
                    count,
                })
            }
        }
    }

    pub async fn create_user(&self, spec: &UserSpec) -> Result<Call<RemoteUser>, ScimError> {
        self.post_user(spec.to_scim()).await
    }

    /// [`ScimClient::create_user`] under an app's profile: the body is
    /// [`UserSpec::to_scim_with`], so no `externalId` goes to an app that
    /// does not store it.
    pub async fn create_user_with(
        &self,
        spec: &UserSpec,
        profile: &Profile,
    ) -> Result<Call<RemoteUser>, ScimError> {
        self.post_user(spec.to_scim_with(profile)).await
    }

    /// [`ScimClient::find_user`] under an app's profile: looking up by
    /// `externalId` in an app that does not store it is a `Config` error and
    /// sends nothing (it could only ever miss, or match by accident). Use
    /// [`Profile::lookup_attributes`] for the attributes that make sense.
    pub async fn find_user_with(
        &self,
        attribute: &str,
        value: &str,
        profile: &Profile,
    ) -> Result<Call<Option<RemoteUser>>, ScimError> {
        if attribute.eq_ignore_ascii_case("externalId") && !profile.external_id {
            return Err(ScimError::Config(format!(
                "profile {} does not store externalId; look up by userName",
                profile.name
            )));
        }
        self.find_user(attribute, value).await
    }

    async fn post_user(&self, body: Value) -> Result<Call<RemoteUser>, ScimError> {
        let (url, rel) = self.url(&["Users"], &[])?;
        let (raw, mut record) = self
            .send(Method::POST, url, rel, None, Some(&body), None)
            .await?;
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
        self.patch_inner(id, ops, None).await
    }

    async fn patch_inner(
        &self,
        id: &str,
        ops: &[PatchOp],
        if_match: Option<&str>,
    ) -> Result<Call<Option<RemoteUser>>, ScimError> {
        // RFC 7644 requires at least one operation; sending none would only
        // earn a 400 that looks like a server problem in the audit log.
        if ops.is_empty() {
            return Err(ScimError::Config("PATCH without operations".into()));
        }
        let (url, rel) = self.url(&["Users", id], &[])?;
        let body = patch_body(ops);
        let (raw, record) = self
            .send(Method::PATCH, url, rel, Some(id), Some(&body), if_match)
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
        self.put_inner(id, spec.to_scim(), None).await
    }

    async fn put_inner(
        &self,
        id: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> Result<Call<RemoteUser>, ScimError> {
        let (url, rel) = self.url(&["Users", id], &[])?;
        let body = put_body(id, body);
        let (raw, record) = self
            .send(Method::PUT, url, rel, Some(id), Some(&body), if_match)
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
        self.delete_inner(id, None).await
    }

    async fn delete_inner(&self, id: &str, if_match: Option<&str>) -> Result<Call<()>, ScimError> {
        let (url, rel) = self.url(&["Users", id], &[])?;
        let (raw, record) = self
            .send(Method::DELETE, url, rel, Some(id), None, if_match)
            .await?;
        if raw.status.is_success() || raw.status == StatusCode::NOT_FOUND {
            return Ok(Call { value: (), record });
        }
        Err(http_error(raw, record))
    }

    /// Runs one planned operation. The value is the resource as the server
    /// returned it: `None` for a delete or a PATCH answered with 204.
    pub async fn execute(&self, op: &Op) -> Result<Call<Option<RemoteUser>>, ScimError> {
        self.run(op, None, None).await
    }

    /// [`ScimClient::execute`] as a conditional write: a PATCH, PUT or DELETE
    /// carries `If-Match: <etag>` when `etag` is `Some` (a create has nothing
    /// to match and ignores it). Pass [`if_match`]`(caps, remote)` to send it
    /// only when the server supports ETags. If the account changed since it
    /// was read the server answers 412, an `Http` error for which
    /// [`ScimError::is_precondition_failed`] is true: read again, diff again.
    ///
    /// The tag is sent as read (`meta.version`, often weak: `W/"3"`), as RFC
    /// 7644 §3.14 shows; a server applying HTTP's strong comparison to weak
    /// tags would refuse every conditional write, so such an app needs a
    /// profile with `etag = false`.
    pub async fn execute_if_match(
        &self,
        op: &Op,
        etag: Option<&str>,
    ) -> Result<Call<Option<RemoteUser>>, ScimError> {
        self.run(op, None, etag).await
    }

    /// [`ScimClient::execute_if_match`] under an app's profile. Create and
    /// PUT bodies go through [`UserSpec::to_scim_with`]. An op the profile
    /// forbids (a `Replace` where PUT is not allowed, a PATCH of `externalId`
    /// where it is not stored) is a `Config` error and nothing is sent;
    /// [`crate::diff_with`] never plans one.
    pub async fn execute_with(
        &self,
        op: &Op,
        profile: &Profile,
        etag: Option<&str>,
    ) -> Result<Call<Option<RemoteUser>>, ScimError> {
        match op {
            Op::Replace { .. } if !profile.put_allowed => {
                return Err(ScimError::Config(format!(
                    "profile {} does not allow PUT; plan with diff_with",
                    profile.name
                )));
            }
            Op::Patch { ops, .. }
                if !profile.external_id
                    && ops
                        .iter()
                        .any(|p| p.path.eq_ignore_ascii_case(crate::diff::PATH_EXTERNAL_ID)) =>
            {
                return Err(ScimError::Config(format!(
                    "profile {} does not store externalId; plan with diff_with",
                    profile.name
                )));
            }
            _ => {}
        }
        self.run(op, Some(profile), etag).await
    }

    async fn run(
        &self,
        op: &Op,
        profile: Option<&Profile>,
        etag: Option<&str>,
    ) -> Result<Call<Option<RemoteUser>>, ScimError> {
        let body = |spec: &UserSpec| match profile {
            Some(p) => spec.to_scim_with(p),
            None => spec.to_scim(),
        };
        match op {
            Op::Create(spec) => Ok(self.post_user(body(spec)).await?.map(Some)),
            Op::Patch { id, ops } => self.patch_inner(id, ops, etag).await,
            Op::Replace { id, spec } => Ok(self.put_inner(id, body(spec), etag).await?.map(Some)),
            Op::Delete { id } => Ok(self.delete_inner(id, etag).await?.map(|()| None)),
        }
    }

    /// One page of `GET /Users?startIndex=..&count=..` (RFC 7644 §3.4.2.4).
    /// `start_index` is 1-based. The page's `start_index` is the server's
    /// (the requested one when it does not say) and `items` may be fewer, or
    /// more, than `count`: servers cap pages and some ignore `count`.
    pub async fn list_users(
        &self,
        start_index: usize,
        count: usize,
    ) -> Result<Call<Page<RemoteUser>>, ScimError> {
        self.list_page("Users", start_index, count, RemoteUser::from_scim)
            .await
    }

    /// One page of `GET /<resource>?startIndex=..&count=..`, items read with
    /// `parse`.
    ///
    /// `count` is left out once the server is known to fail with it
    /// ([`Paging::StartIndexOnly`]); then pages are the server's own size.
    /// A 400, 500 or 501 to a request carrying `count` is tried once more
    /// without it, and when that succeeds the lesson is kept for every later
    /// list (see [`ScimClient::take_lessons`]).
    async fn list_page<T>(
        &self,
        resource: &str,
        start_index: usize,
        count: usize,
        parse: fn(&Value) -> Result<T, ScimError>,
    ) -> Result<Call<Page<T>>, ScimError> {
        let with_count = self.learned().paging == Paging::StartIndexAndCount;
        let first = self
            .list_page_once(resource, start_index, with_count.then_some(count), parse)
            .await;
        match first {
            Err(e) if with_count && matches!(e.status(), Some(400 | 500 | 501)) => {
                let refused = e
                    .record()
                    .and_then(|r| r.error.clone())
                    .unwrap_or_else(|| e.to_string());
                let call = self
                    .list_page_once(resource, start_index, None, parse)
                    .await?;
                self.learn(
                    "paging",
                    "start_index_only",
                    format!(
                        "GET /{resource} with count={count} failed ({refused}); without count it succeeded"
                    ),
                    |l| l.paging = Paging::StartIndexOnly,
                );
                Ok(call)
            }
            other => other,
        }
    }

    async fn list_page_once<T>(
        &self,
        resource: &str,
        start_index: usize,
        count: Option<usize>,
        parse: fn(&Value) -> Result<T, ScimError>,
    ) -> Result<Call<Page<T>>, ScimError> {
        if start_index == 0 {
            return Err(ScimError::Config("startIndex is 1-based".into()));
        }
        let start = start_index.to_string();
        let count = count.map(|c| c.to_string());
        let mut query = vec![("startIndex", start.as_str())];
        if let Some(c) = &count {
            query.push(("count", c.as_str()));
        }
        let (url, rel) = self.url(&[resource], &query)?;
        let (raw, record) = self.send(Method::GET, url, rel, None, None, None).await?;
        if !raw.status.is_success() {
            return Err(http_error(raw, record));
        }
        let doc = parse_json(&raw, &record)?;
        let body = match list_items(&doc, parse) {
            Ok(found) => found,
            Err(detail) => return Err(invalid(record, detail)),
        };
        let page = Page {
            total_results: body.total_results,
            start_index: body.start_index.unwrap_or(start_index),
            items: body.items,
        };
        Ok(Call {
            value: page,
            record,
        })
    }

    /// Every user, `page_size` at a time, with the record of each page call.
    /// Stops at [`MAX_LIST_PAGES`] pages; see [`ScimClient::list_all_users_capped`].
    pub async fn list_all_users(
        &self,
        page_size: usize,
    ) -> Result<(Vec<RemoteUser>, Vec<CallRecord>), ScimError> {
        self.list_all_users_capped(page_size, MAX_LIST_PAGES).await
    }

    /// Pages through `/Users` until done, guarded against servers that
    /// ignore `count` or `startIndex`, fail on `count`, or misreport or
    /// leave out `totalResults`:
    ///
    /// - the next page starts after the users actually received, not after
    ///   `count`, and a short page is not taken as the end (servers may cap
    ///   pages below `count`, and a server that fails on `count` gets none);
    /// - it stops on an empty page, or once the next start is past
    ///   `totalResults`;
    /// - a user listed twice is kept once; a page with no user not already
    ///   listed ends the listing when the server gave no `totalResults` (it
    ///   answers everything every time), and is an `InvalidResponse` error
    ///   when `totalResults` says there is more (the server seems to ignore
    ///   `startIndex`; going on would loop);
    /// - more than `max_pages` pages is an `InvalidResponse` error rather
    ///   than a silently partial list.
    pub async fn list_all_users_capped(
        &self,
        page_size: usize,
        max_pages: usize,
    ) -> Result<(Vec<RemoteUser>, Vec<CallRecord>), ScimError> {
        self.list_all_capped("Users", page_size, max_pages, RemoteUser::from_scim, |u| {
            u.id.clone()
        })
        .await
    }

    /// Pages through `/<resource>` as [`ScimClient::list_all_users_capped`]
    /// describes, items read with `parse` and told apart by `id_of`.
    async fn list_all_capped<T>(
        &self,
        resource: &str,
        page_size: usize,
        max_pages: usize,
        parse: fn(&Value) -> Result<T, ScimError>,
        id_of: impl Fn(&T) -> String,
    ) -> Result<(Vec<T>, Vec<CallRecord>), ScimError> {
        if page_size == 0 {
            return Err(ScimError::Config("page size must be positive".into()));
        }
        let noun = resource.to_lowercase();
        let mut items = Vec::new();
        let mut seen = HashSet::new();
        let mut records = Vec::new();
        let mut start = 1usize;
        for _ in 0..max_pages {
            let call = self.list_page(resource, start, page_size, parse).await?;
            let page = call.value;
            records.push(call.record.clone());
            if page.items.is_empty() {
                return Ok((items, records));
            }
            let received = page.items.len();
            let before = items.len();
            for item in page.items {
                if seen.insert(id_of(&item)) {
                    items.push(item);
                }
            }
            if items.len() == before {
                if page.total_results.is_none() {
                    return Ok((items, records));
                }
                return Err(invalid(
                    call.record,
                    format!("page at startIndex {start} repeats {noun} already listed; the server seems to ignore startIndex"),
                ));
            }
            start = start.saturating_add(received);
            if page.total_results.is_some_and(|total| start > total) {
                return Ok((items, records));
            }
        }
        let last = records.pop().unwrap_or_else(|| CallRecord {
            method: "GET".into(),
            path: format!("/{resource}"),
            status: None,
            latency_ms: 0,
            remote_id: None,
            error: None,
        });
        Err(invalid(
            last,
            format!("more than {max_pages} pages of {noun}; refusing to go on"),
        ))
    }

    /// `POST /Groups` with [`GroupSpec::to_scim`] (members included).
    pub async fn create_group(
        &self,
        spec: &GroupSpec,
        profile: &Profile,
    ) -> Result<Call<RemoteGroup>, ScimError> {
        let (url, rel) = self.url(&["Groups"], &[])?;
        let body = spec.to_scim(profile);
        let (raw, mut record) = self
            .send(Method::POST, url, rel, None, Some(&body), None)
            .await?;
        if !raw.status.is_success() {
            return Err(http_error(raw, record));
        }
        let group = parse_group(&raw, &record)?;
        record.remote_id = Some(group.id.clone());
        Ok(Call {
            value: group,
            record,
        })
    }

    /// `None` when the server says 404.
    pub async fn get_group(&self, id: &str) -> Result<Call<Option<RemoteGroup>>, ScimError> {
        self.get_resource("Groups", id, parse_group).await
    }

    /// Finds the one group whose `displayName` is exactly `display_name`
    /// (case-sensitive), with `GET /Groups?filter=displayName eq "..."`.
    /// Results are re-checked locally (servers may match case-insensitively
    /// or ignore the filter); more than one exact match is an
    /// [`ScimError::Ambiguous`] error.
    pub async fn find_group(
        &self,
        display_name: &str,
    ) -> Result<Call<Option<RemoteGroup>>, ScimError> {
        self.find_one(
            "Groups",
            "groups",
            "displayName",
            display_name,
            RemoteGroup::from_scim,
            |g: &RemoteGroup| g.display_name == display_name,
            |g| g.id.clone(),
        )
        .await
    }

    /// One page of `GET /Groups?startIndex=..&count=..`, as
    /// [`ScimClient::list_users`].
    pub async fn list_groups(
        &self,
        start_index: usize,
        count: usize,
    ) -> Result<Call<Page<RemoteGroup>>, ScimError> {
        self.list_page("Groups", start_index, count, RemoteGroup::from_scim)
            .await
    }

    /// Every group, `page_size` at a time, with the record of each page
    /// call; guarded as [`ScimClient::list_all_users_capped`], at most
    /// [`MAX_LIST_PAGES`] pages.
    pub async fn list_all_groups(
        &self,
        page_size: usize,
    ) -> Result<(Vec<RemoteGroup>, Vec<CallRecord>), ScimError> {
        self.list_all_capped(
            "Groups",
            page_size,
            MAX_LIST_PAGES,
            RemoteGroup::from_scim,
            |g| g.id.clone(),
        )
        .await
    }

    /// Runs one planned group operation, carrying `If-Match: <etag>` on
    /// PATCH, PUT and DELETE when `etag` is `Some` (see
    /// [`group_if_match`]). The value is the group as the server returned
    /// it: `None` for a delete (a 404 counts as done) or a PATCH answered
    /// with 204. A `Replace` under a profile that forbids PUT, a PATCH under
    /// a profile that changes groups by PUT only, any change to a protected
    /// group ([`Profile::is_protected_group`]), or an add or remove without
    /// members, is a `Config` error and nothing is sent.
    pub async fn execute_group(
        &self,
        op: &GroupOp,
        profile: &Profile,
        etag: Option<&str>,
    ) -> Result<Call<Option<RemoteGroup>>, ScimError> {
        if let Some(id) = op.id() {
            let name = match op {
                GroupOp::Rename { display_name, .. } => display_name.as_str(),
                GroupOp::Replace { spec, .. } => spec.display_name.as_str(),
                _ => "",
            };
            if profile.is_protected_group(name, id) {
                return Err(ScimError::Config(format!(
                    "group {id:?} is protected by profile {}; Tenure never changes or deletes it",
                    profile.name
                )));
            }
        }
        match op {
            GroupOp::Create(spec) => Ok(self.create_group(spec, profile).await?.map(Some)),
            GroupOp::Rename { id, .. }
            | GroupOp::AddMembers { id, .. }
            | GroupOp::RemoveMembers { id, .. }
            | GroupOp::RemoveMemberValues { id, .. }
            | GroupOp::ReplaceMembers { id, .. } => {
                if !profile.group_patch {
                    return Err(ScimError::Config(format!(
                        "profile {} changes groups by PUT only; plan with diff_group",
                        profile.name
                    )));
                }
                let empty = matches!(
                    op,
                    GroupOp::AddMembers { members, .. }
                        | GroupOp::RemoveMembers { members, .. }
                        | GroupOp::RemoveMemberValues { members, .. }
                        if members.is_empty()
                );
                let ops = op.patch_ops().unwrap_or_default();
                if ops.is_empty() || empty {
                    return Err(ScimError::Config("group PATCH without members".into()));
                }
                let (url, rel) = self.url(&["Groups", id], &[])?;
                let body = json!({ "schemas": [PATCH_OP_SCHEMA], "Operations": ops });
                let (raw, record) = self
                    .send(Method::PATCH, url, rel, Some(id), Some(&body), etag)
                    .await?;
                self.group_write_result(raw, record)
            }
            GroupOp::Replace { id, spec } => {
                if !profile.put_allowed {
                    return Err(ScimError::Config(format!(
                        "profile {} does not allow PUT; plan with diff_group",
                        profile.name
                    )));
                }
                let (url, rel) = self.url(&["Groups", id], &[])?;
                let mut body = spec.to_scim(profile);
                if let Some(obj) = body.as_object_mut() {
                    obj.insert("id".into(), id.as_str().into());
                }
                let (raw, record) = self
                    .send(Method::PUT, url, rel, Some(id), Some(&body), etag)
                    .await?;
                self.group_write_result(raw, record)
            }
            GroupOp::Delete { id } => {
                let (url, rel) = self.url(&["Groups", id], &[])?;
                let (raw, record) = self
                    .send(Method::DELETE, url, rel, Some(id), None, etag)
                    .await?;
                if raw.status.is_success() || raw.status == StatusCode::NOT_FOUND {
                    return Ok(Call {
                        value: None,
                        record,
                    });
                }
                Err(http_error(raw, record))
            }
        }
    }

    /// A PATCH or PUT response on a group: the group, or `None` for 204 or
    /// an empty body.
    fn group_write_result(
        &self,
        raw: Raw,
        record: CallRecord,
    ) -> Result<Call<Option<RemoteGroup>>, ScimError> {
        if !raw.status.is_success() {
            return Err(http_error(raw, record));
        }
        if raw.status == StatusCode::NO_CONTENT || raw.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Call {
                value: None,
                record,
            });
        }
        let group = parse_group(&raw, &record)?;
        Ok(Call {
            value: Some(group),
            record,
        })
    }

    /// The absolute URL for `segments` under the base, and the relative
    /// path for the audit record (query shown unencoded, for readability).
    pub(crate) fn url(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
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
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in query {
                pairs.append_pair(key, value);
            }
            drop(pairs);
            let shown: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            rel = format!("{rel}?{}", shown.join("&"));
        }
        Ok((url, rel))
    }

    /// Sends one request and reads the whole response, whatever its status.
    /// Only a missing response is an error here.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        rel: String,
        remote_id: Option<&str>,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<(Raw, CallRecord), ScimError> {
        // Checked before anything is recorded: a bad stored version is our
        // problem, not the server's.
        let if_match = if_match
            .map(|tag| {
                HeaderValue::from_str(tag).map_err(|_| {
                    ScimError::Config("ETag contains characters not allowed in a header".into())
                })
            })
            .transpose()?;
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
        if let Some(tag) = if_match {
            req = req.header(IF_MATCH, tag);
        }
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body)
                .map_err(|e| ScimError::Config(format!("cannot encode request: {e}")))?;
            req = req
                .header(CONTENT_TYPE, self.content_type.clone())
                .body(bytes);
        }
        // The server asked the whole app to hold off: wait, then send.
        self.pause.wait().await;
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
                if matches!(raw.status.as_u16(), 429 | 503) {
                    if let Some(asked) = raw
                        .headers
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after)
                    {
                        self.pause.pause_for(asked);
                    }
                }
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

/// What a ListResponse holds (RFC 7644 §3.4.2), each part as sent.
struct ListBody<T> {
    items: Vec<T>,
    total_results: Option<usize>,
    start_index: Option<usize>,
}

/// A ListResponse's items, `totalResults` and `startIndex`. `Resources` may
/// be absent when nothing matched, and numbers may come as strings; an item
/// that does not parse is an error (the detail).
fn list_items<T>(
    doc: &Value,
    parse: fn(&Value) -> Result<T, ScimError>,
) -> Result<ListBody<T>, String> {
    let Some(obj) = doc.as_object() else {
        return Err("list response is not an object".into());
    };
    let number = |key: &str| match get_ci(obj, key) {
        Some(Value::Number(n)) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
        // Some servers send numbers as strings.
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let items = match get_ci(obj, "Resources") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut parsed = Vec::with_capacity(items.len());
            for item in items {
                parsed.push(parse(item).map_err(|e| e.to_string())?);
            }
            parsed
        }
        Some(_) => return Err("Resources is not an array".into()),
    };
    Ok(ListBody {
        items,
        total_results: number("totalResults"),
        start_index: number("startIndex"),
    })
}

/// The request [`ScimClient::execute_with`] sends for `op`: method, path
/// relative to the base URL (ids unencoded, for reading) and the exact JSON
/// body, for `tenure plan` to show without sending anything.
pub fn planned_request(op: &Op, profile: &Profile) -> (&'static str, String, Option<Value>) {
    match op {
        Op::Create(spec) => ("POST", "/Users".into(), Some(spec.to_scim_with(profile))),
        Op::Patch { id, ops } => ("PATCH", format!("/Users/{id}"), Some(patch_body(ops))),
        Op::Replace { id, spec } => (
            "PUT",
            format!("/Users/{id}"),
            Some(put_body(id, spec.to_scim_with(profile))),
        ),
        Op::Delete { id } => ("DELETE", format!("/Users/{id}"), None),
    }
}

/// The body of a User PATCH.
fn patch_body(ops: &[PatchOp]) -> Value {
    json!({ "schemas": [PATCH_OP_SCHEMA], "Operations": ops })
}

/// The body of a User PUT: the resource with its `id`.
fn put_body(id: &str, mut body: Value) -> Value {
    if let Some(obj) = body.as_object_mut() {
        obj.insert("id".into(), id.into());
    }
    body
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

/// Error text from a server, fit for audit records and logs: an HTML error
/// page from a proxy must not bloat every record (see
/// [`crate::error::summarize_body`]).
pub(crate) fn truncate(s: &str) -> String {
    crate::error::summarize_body(s).unwrap_or_default()
}

pub(crate) fn invalid(mut record: CallRecord, detail: String) -> ScimError {
    record.error = Some(detail.clone());
    ScimError::InvalidResponse { record, detail }
}

pub(crate) fn parse_json(raw: &Raw, record: &CallRecord) -> Result<Value, ScimError> {
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

fn parse_group(raw: &Raw, record: &CallRecord) -> Result<RemoteGroup, ScimError> {
    let doc = parse_json(raw, record)?;
    let mut group =
        RemoteGroup::from_scim(&doc).map_err(|e| invalid(record.clone(), e.to_string()))?;
    if group.etag.is_none() {
        group.etag = raw
            .headers
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
    Ok(group)
}

/// Turns a non-success response into an `Http` error, reading the RFC 7644
/// §3.12 error body when there is one.
pub(crate) fn http_error(raw: Raw, mut record: CallRecord) -> ScimError {
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
        .or_else(|| crate::error::summarize_body(&String::from_utf8_lossy(&raw.body)))
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
        let (url, rel) = c.url(&["Users", "a b/../c"], &[]).expect("url");
        assert_eq!(url.as_str(), "http://h:1/tenant/v2/Users/a%20b%2F..%2Fc");
        assert_eq!(rel, "/Users/a%20b%2F..%2Fc");
        let (url, rel) = c
            .url(&["Users"], &[("filter", "userName eq \"x\"")])
            .expect("url");
        assert_eq!(
            url.as_str(),
            "http://h:1/tenant/v2/Users?filter=userName+eq+%22x%22"
        );
        assert_eq!(rel, "/Users?filter=userName eq \"x\"");
        assert!(c.url(&["Users", ""], &[]).is_err());
        let (url, rel) = c
            .url(&["Users"], &[("startIndex", "3"), ("count", "2")])
            .expect("url");
        assert_eq!(
            url.as_str(),
            "http://h:1/tenant/v2/Users?startIndex=3&count=2"
        );
        assert_eq!(rel, "/Users?startIndex=3&count=2");
    }
}
