//! Tenure's configuration file (TOML) and process-wide telemetry setup.
//! Secrets are never stored in the file itself: the file names an
//! environment variable or a file that holds them.

pub mod api_token;
pub mod secret;
pub mod telemetry;

pub use api_token::{ApiToken, ApiTokens, Scope};
pub use secret::{Secret, SecretRef};

use serde::Deserialize;
use std::path::Path;
use std::time::Duration;
use tenure_domain::entitlement::Rule;
use tenure_domain::{AppPolicy, LeavePolicy, Policy, PurgeAction, ScopeFilter, TerminationPolicy};
use tenure_scim::Profile;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("secret {0}")]
    Secret(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub nats: NatsConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub fanout: FanoutConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default, rename = "app")]
    pub apps: Vec<AppConfig>,
    /// HR sources besides the generic webhook: `[[source]]` blocks.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// Identity providers that push users and groups (Authentik): `[[idp]]`.
    #[serde(default)]
    pub idp: Vec<IdpConfig>,
    /// Evidence signing and audit report defaults: `[audit]`.
    #[serde(default)]
    pub audit: AuditConfig,
}

/// `[audit]`: the key that signs evidence exports and checkpoints, and the
/// deprovisioning SLA of `tenure audit deprovision` (docs/audit.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Ed25519 signing key: a 32-byte seed as 64 hex digits
    /// (`tenure audit keygen` makes one).
    pub signing_key: Option<SecretRef>,
    /// Hours from a leaver's effective termination to each app's
    /// acknowledged deactivation before it counts as a breach.
    pub deprovision_sla_hours: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            signing_key: None,
            deprovision_sla_hours: 24,
        }
    }
}

/// One HR system's webhook (`POST /v1/sources/<name>/webhook`), its
/// signature secret, the API used to fetch persons back for dataless
/// webhooks, its field mapping and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// a-z, 0-9 and _; the URL path segment and the NATS subject token.
    pub name: String,
    pub kind: tenure_sources::Kind,
    /// HMAC key, verification token or shared secret, per the vendor.
    #[serde(default)]
    pub secret: Option<SecretRef>,
    #[serde(default)]
    pub api: Option<SourceApiConfig>,
    #[serde(default)]
    pub mapping: tenure_sources::FieldMapping,
    /// Overrides `ingest.max_body_bytes` for this source.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Webhooks accepted per second (token bucket); beyond it, 429.
    #[serde(default)]
    pub rate_limit_per_second: Option<u32>,
    #[serde(default)]
    pub rate_limit_burst: Option<u32>,
}

/// The HRIS API that dataless webhooks are completed from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceApiConfig {
    pub base_url: String,
    pub token: SecretRef,
    /// Service user paired with the token where the vendor needs one (HiBob).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default = "default_api_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_api_attempts")]
    pub max_attempts: u32,
}

fn default_api_timeout_ms() -> u64 {
    10_000
}

fn default_api_attempts() -> u32 {
    5
}

/// An identity provider pushing to the inbound SCIM endpoint
/// (`/scim/v2/<name>/…`) and, optionally, its notification webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdpConfig {
    pub name: String,
    /// How an IdP user is matched to an HR person.
    #[serde(default)]
    pub correlate: tenure_domain::Correlation,
    /// Bearer token the IdP's SCIM provider sends.
    pub token: SecretRef,
    /// The IdP's own API, for re-fetching users named by a notification.
    #[serde(default)]
    pub api_url: Option<String>,
    #[serde(default)]
    pub api_token: Option<SecretRef>,
    /// Shared secret the notification webhook must send as a bearer token.
    #[serde(default)]
    pub webhook_token: Option<SecretRef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: String,
    /// Role the services switch to after connecting; it may only read and
    /// append events, so append-only does not depend on code review.
    pub role: Option<String>,
    /// Connections one Tenure process opens at most: every service it runs
    /// (ingest, engine, fanout with all its apps, api) shares one pool of
    /// this size. Checked at start-up against PostgreSQL's own limit.
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/tenure".into(),
            role: Some("tenure_app".into()),
            max_connections: 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    pub url: String,
    /// How long JetStream remembers a message id for de-duplication.
    pub duplicate_window_secs: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            duplicate_window_secs: 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    pub listen: String,
    pub max_body_bytes: usize,
    /// Signed timestamps older or newer than this are rejected (replay guard).
    pub max_clock_skew_secs: u64,
    pub generic: GenericSourceConfig,
    /// The URL senders reach ingest at (behind a proxy), for SCIM
    /// `meta.location`; defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// Listener bounds (docs/security.md).
    pub header_read_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub max_connections: usize,
    /// At most this many from one client address, so one client cannot
    /// take every connection; 0 = no per-address limit.
    pub max_connections_per_client: usize,
    /// Requests that fail authentication recorded per source per minute;
    /// more are answered the same but only counted.
    pub unauthenticated_per_source_per_minute: u32,
    /// The same, per client address.
    pub unauthenticated_per_client_per_minute: u32,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 256 * 1024,
            max_clock_skew_secs: 300,
            generic: GenericSourceConfig::default(),
            public_url: None,
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            idle_timeout_secs: 120,
            max_connections: 512,
            max_connections_per_client: 256,
            unauthenticated_per_source_per_minute: 60,
            unauthenticated_per_client_per_minute: 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenericSourceConfig {
    pub secret: SecretRef,
    /// Accept `v1=` signatures, which do not cover the delivery id
    /// (deprecated; counted and logged). `false` accepts only `v2=`.
    pub accept_v1: bool,
}

impl Default for GenericSourceConfig {
    fn default() -> Self {
        Self {
            secret: SecretRef::Env {
                env: "TENURE_GENERIC_SECRET".into(),
            },
            accept_v1: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// IANA zone used for persons whose record names none.
    pub default_time_zone: String,
    /// Local hour at which a start date (or an `effective_date`) begins.
    pub day_start_hour: u32,
    /// Days after termination at which a person counts as purged.
    pub purge_after_days: Option<u32>,
    /// Days before a known last day at which `ContractExpiryWarning` is recorded.
    pub expiry_warning_days: Option<u32>,
    pub consumer_name: String,
    /// Job subjects per app: tenure.jobs.<app>.<0..partitions>.
    pub partitions: u32,
    /// Longest sleep of the scheduler between looks at due schedules; it
    /// otherwise sleeps exactly until the next due instant.
    pub scheduler_poll_ms: u64,
    /// Cron expression (seconds first, as the `cron` crate reads it) of the
    /// expiry sweep, which re-evaluates persons whose last day is near.
    pub expiry_sweep_cron: String,
    /// A person's state is stored again after this many new events, so a
    /// load folds at most this many (see docs/adr/0020).
    pub snapshot_every: u32,
    /// Ingest messages (and, separately, IdP snapshots) applied at once,
    /// each for a different person; one person's are applied in order.
    pub workers: usize,
    /// Messages held by the engine at once (running plus queued behind a
    /// busy person); above it the engine stops pulling until some finish.
    pub max_in_flight: usize,
    /// Deliveries of a record or IdP snapshot that keeps failing before it
    /// is dead-lettered (one that fails for good goes at once).
    pub max_deliver: i64,
    /// Wait before the first redelivery of a failed message; each later one
    /// waits twice as long, up to 10 minutes. Also the consumers' ack wait.
    pub redeliver_after_secs: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_time_zone: "UTC".into(),
            day_start_hour: 0,
            purge_after_days: None,
            expiry_warning_days: Some(14),
            consumer_name: "engine".into(),
            partitions: 8,
            scheduler_poll_ms: 1000,
            expiry_sweep_cron: HOURLY.into(),
            snapshot_every: 50,
            workers: 4,
            max_in_flight: 1000,
            max_deliver: 10,
            redeliver_after_secs: 10,
        }
    }
}

/// Every hour on the hour.
pub const HOURLY: &str = "0 0 * * * *";

impl EngineConfig {
    pub fn default_tz(&self) -> Result<chrono_tz::Tz, ConfigError> {
        self.default_time_zone.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "engine.default_time_zone: unknown IANA time zone {:?}",
                self.default_time_zone
            ))
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutConfig {
    /// Jobs in flight per app (distinct persons; one person is never
    /// worked on twice at once).
    pub concurrency: usize,
    pub request_timeout_ms: u64,
    pub max_attempts: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    /// JetStream redeliveries of a job before it is left for operators.
    pub max_deliver: i64,
    /// How long a job may go unacknowledged before JetStream hands it to
    /// another worker (a running job keeps extending it).
    pub ack_wait_secs: u64,
    /// Distinct persons whose jobs failed (after their retries) within
    /// `breaker_window_secs` that open an app's circuit (at least 2): no
    /// calls go to the app until a probe succeeds. One person failing
    /// again and again never opens it.
    pub breaker_failures: u32,
    /// Share (0 to 1) of the persons with a job in the window whose latest
    /// job failed, needed as well as `breaker_failures`.
    pub breaker_error_rate: f64,
    /// How far back job outcomes count for the circuit breaker.
    pub breaker_window_secs: u64,
    /// First wait before probing an open circuit; doubles per failed probe.
    pub breaker_cooldown_ms: u64,
    pub breaker_max_cooldown_ms: u64,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            request_timeout_ms: 10_000,
            max_attempts: 5,
            base_delay_ms: 200,
            max_delay_ms: 30_000,
            max_deliver: 20,
            ack_wait_secs: 30,
            breaker_failures: 5,
            breaker_error_rate: 0.5,
            breaker_window_secs: 60,
            breaker_cooldown_ms: 10_000,
            breaker_max_cooldown_ms: 300_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub listen: String,
    /// Named bearer tokens with scopes (`[[api.token]]`), or the deprecated
    /// single secret. Without any the API refuses every /v1 request.
    pub token: ApiTokens,
    /// Listener bounds, as for `[ingest]` (docs/security.md).
    pub header_read_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            token: ApiTokens::None,
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            idle_timeout_secs: 120,
            max_connections: 512,
            max_connections_per_client: 256,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UserNameFrom {
    /// The full work e-mail address.
    #[default]
    Email,
    /// The part of the work e-mail before the `@`.
    EmailLocalPart,
    /// The employee number (falls back to the e-mail when absent).
    EmployeeNumber,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub name: String,
    pub base_url: String,
    #[serde(default)]
    pub token: Option<SecretRef>,
    #[serde(default)]
    pub scope: Option<ScopeFilter>,
    /// CEL assignment rule over `person`; see docs/configuration.md.
    #[serde(default)]
    pub rule: Option<toml::Spanned<String>>,
    #[serde(skip)]
    compiled_rule: Option<Rule>,
    #[serde(default)]
    pub on_termination: TerminationPolicy,
    #[serde(default)]
    pub on_leave: LeavePolicy,
    /// Create accounts (inactive) this many days before the start date.
    #[serde(default)]
    pub pre_provision_days: u32,
    /// Days after termination before the account is purged; never if unset.
    #[serde(default)]
    pub purge_after_days: Option<u32>,
    #[serde(default)]
    pub purge_action: PurgeAction,
    #[serde(default)]
    pub user_name: UserNameFrom,
    /// Per-app attribute templates; `mapping.user_name` overrides `user_name`.
    #[serde(default)]
    pub mapping: MappingConfig,
    /// How the User resource is shaped for this app (attributes omitted,
    /// `name.formatted`, constants); overrides the profile's shape key by
    /// key. Read through [`AppConfig::scim_profile`].
    #[serde(default)]
    pub shape: Option<tenure_scim::ShapeOverride>,
    /// Whether an account found by `userName` that Tenure did not create
    /// may be taken over.
    #[serde(default)]
    pub adopt: AdoptPolicy,
    /// Cron expression of this app's periodic full reconcile.
    #[serde(default = "hourly")]
    pub reconcile_cron: String,
    /// Jobs in flight for this app (default: fanout.concurrency).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Requests per second this app accepts from Tenure; unlimited if unset.
    #[serde(default)]
    pub rate_limit_per_second: Option<u32>,
    /// Requests allowed at once above the steady rate (default: the rate).
    #[serde(default)]
    pub rate_limit_burst: Option<u32>,
    #[serde(default)]
    pub mass_change: MassChangeGuard,
    /// The app's SCIM quirks: a built-in profile name ("generic", "gitlab",
    /// "zulip", "nextcloud", "keycloak", "openwebui", "grafana") or a table
    /// (`extends` plus overrides). Default: generic.
    #[serde(default)]
    pub profile: Option<ProfileSetting>,
    /// With a user name, the token is sent as the password of HTTP Basic
    /// auth (Nextcloud app passwords) instead of as a bearer token.
    #[serde(default)]
    pub basic_user: Option<String>,
    /// What the periodic sweep does with accounts Tenure does not manage.
    #[serde(default)]
    pub unmanaged: UnmanagedPolicy,
    /// userNames the sweep never deactivates (the admin account Tenure logs
    /// in with, service accounts); they are still reported.
    #[serde(default)]
    pub unmanaged_keep: Vec<String>,
    /// Groups Tenure keeps in the app, from `[[app.group]]` tables.
    #[serde(default, rename = "group")]
    pub groups: Vec<GroupConfig>,
    /// Most members added or removed by one PATCH of a group.
    #[serde(default = "default_group_chunk")]
    pub group_chunk: usize,
    /// Consecutive group syncs that may send the same change to one group
    /// (each answered with success) before the group is set aside as not
    /// converging (`GroupNotConverging`), until redriven or reconfigured.
    #[serde(default = "default_group_repeat_limit")]
    pub group_repeat_limit: u32,
    /// Whether the fanout sends SCIM Bulk requests to this app.
    #[serde(default)]
    pub bulk: BulkMode,
    /// Most jobs of this app planned together into bulk requests; the
    /// server's `maxOperations` caps it further.
    #[serde(default = "default_bulk_batch")]
    pub bulk_batch: usize,
}

/// Whether an existing account found by `userName` (not by Tenure's own
/// link or `externalId`) is taken over for the person.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AdoptPolicy {
    /// Never: the reconcile is refused and recorded; an operator links or
    /// removes the account.
    Never,
    /// Only an account with no `externalId`, or with the person's own (an
    /// account made by hand before Tenure, or by Tenure before a crash).
    #[default]
    UnmanagedOnly,
    /// Any account with the person's `userName`, even one whose `externalId`
    /// names someone else.
    Always,
}

impl AdoptPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            AdoptPolicy::Never => "never",
            AdoptPolicy::UnmanagedOnly => "unmanaged_only",
            AdoptPolicy::Always => "always",
        }
    }
}

/// Whether an app gets SCIM Bulk requests (RFC 7644 §3.7).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BulkMode {
    /// When its `/ServiceProviderConfig` announces bulk with limits and its
    /// profile does not forbid it.
    #[default]
    Auto,
    /// Never: one request per operation.
    Off,
}

/// How an app's account attributes are built from the person's attributes.
/// Templates are text with `{placeholder}`s naming a person attribute
/// ([`tenure_domain::Attributes::NAMES`]), `email_local_part` or
/// `person_id`; `{{` and `}}` are literal braces. An absent attribute
/// renders as nothing, and an empty result leaves the SCIM attribute unset.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MappingConfig {
    pub user_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// `name.formatted`; setting it sends the attribute.
    pub name_formatted: Option<String>,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub title: Option<String>,
    pub department: Option<String>,
    pub employee_number: Option<String>,
    pub cost_center: Option<String>,
    pub organization: Option<String>,
    pub division: Option<String>,
    /// Send the manager (as the manager's account id in this app).
    pub manager: bool,
    /// Any other attribute, by SCIM path (`nickName`, `preferredLanguage`,
    /// `urn:…:User:attr`): a template, or a table or array (for complex
    /// and multi-valued attributes such as `addresses`) whose strings are
    /// templates. Parts that render empty are left out; an empty result
    /// removes the attribute.
    pub attributes: std::collections::BTreeMap<String, toml::Value>,
}

impl Default for MappingConfig {
    fn default() -> Self {
        Self {
            user_name: None,
            given_name: None,
            family_name: None,
            name_formatted: None,
            display_name: None,
            email: None,
            title: None,
            department: None,
            employee_number: None,
            cost_center: None,
            organization: None,
            division: None,
            manager: true,
            attributes: std::collections::BTreeMap::new(),
        }
    }
}

impl MappingConfig {
    /// The templates that are set, by their key (`attributes.<path>` for
    /// the free ones).
    pub fn templates(&self) -> impl Iterator<Item = (String, &str)> {
        [
            ("user_name", &self.user_name),
            ("given_name", &self.given_name),
            ("family_name", &self.family_name),
            ("name_formatted", &self.name_formatted),
            ("display_name", &self.display_name),
            ("email", &self.email),
            ("title", &self.title),
            ("department", &self.department),
            ("employee_number", &self.employee_number),
            ("cost_center", &self.cost_center),
            ("organization", &self.organization),
            ("division", &self.division),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k.to_owned(), v)))
        .chain(self.attributes.iter().flat_map(|(k, v)| {
            let mut leaves = Vec::new();
            template_leaves(v, &mut leaves);
            leaves
                .into_iter()
                .map(move |t| (format!("attributes.{k:?}"), t))
        }))
    }
}

/// The strings of a free mapping's value, each a template.
fn template_leaves<'a>(v: &'a toml::Value, out: &mut Vec<&'a str>) {
    match v {
        toml::Value::String(s) => out.push(s),
        toml::Value::Array(items) => items.iter().for_each(|i| template_leaves(i, out)),
        toml::Value::Table(t) => t.values().for_each(|i| template_leaves(i, out)),
        _ => {}
    }
}

/// Placeholders a template may use besides the person attribute names.
pub const EXTRA_PLACEHOLDERS: [&str; 3] = ["email_local_part", "person_id", "idp_group"];

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    Placeholder(String),
}

/// Parses a mapping template, checking braces and placeholder names.
pub fn parse_template(template: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some('{') | None => return Err("unbalanced '{'".into()),
                        Some(c) => name.push(c),
                    }
                }
                let name = name.trim().to_string();
                if !tenure_domain::Attributes::NAMES.contains(&name.as_str())
                    && !EXTRA_PLACEHOLDERS.contains(&name.as_str())
                {
                    return Err(format!(
                        "unknown placeholder {{{name}}}; use one of {}, {}",
                        tenure_domain::Attributes::NAMES.join(", "),
                        EXTRA_PLACEHOLDERS.join(", ")
                    ));
                }
                if !text.is_empty() {
                    out.push(Segment::Text(std::mem::take(&mut text)));
                }
                out.push(Segment::Placeholder(name));
            }
            '}' => return Err("unbalanced '}' (write '}}' for a literal brace)".into()),
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        out.push(Segment::Text(text));
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnmanagedPolicy {
    /// List them in an `AccountsSwept` event and leave them alone.
    #[default]
    Report,
    /// Also set `active=false` on them.
    Deactivate,
}

/// A built-in profile's name or a table describing a custom one. Kept as
/// raw TOML so a mistake in a custom profile is reported precisely.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct ProfileSetting(toml::Value);

impl AppConfig {
    /// The app's SCIM profile with the app's `[app.shape]` over the
    /// profile's own shape; a shape that omits `externalId` makes the
    /// profile not store it (so it is not looked up by either).
    pub fn scim_profile(&self) -> Result<Profile, ConfigError> {
        let mut profile = self.base_profile()?;
        if let Some(o) = &self.shape {
            profile.shape = profile
                .shape
                .overridden(o)
                .map_err(|e| ConfigError::Invalid(format!("app {:?}: {e}", self.name)))?;
        }
        if profile.shape.omits("externalId") {
            profile.external_id = false;
        }
        Ok(profile)
    }

    fn base_profile(&self) -> Result<Profile, ConfigError> {
        match self.profile.as_ref().map(|p| &p.0) {
            None => Ok(Profile::generic()),
            Some(toml::Value::Table(t)) => Profile::deserialize(toml::Value::Table(t.clone()))
                .map_err(|e| ConfigError::Invalid(format!("app {:?}: profile: {e}", self.name))),
            Some(other) => {
                let name = other.as_str().ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "app {:?}: profile must be a built-in profile's name or a table",
                        self.name
                    ))
                })?;
                tenure_scim::builtin(name).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "app {:?}: unknown profile {name:?}; built-in profiles: {}",
                        self.name,
                        tenure_scim::profile::BUILTIN_NAMES.join(", ")
                    ))
                })
            }
        }
    }
}

/// Holds deprovisioning back for approval when too much of an app would be
/// switched off at once (a bad HR import, a wrong rule).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MassChangeGuard {
    pub enabled: bool,
    /// Deactivations and deletions within the window that trip the guard.
    pub max_count: u32,
    /// Share of the app's accounts that trips the guard (with at least
    /// `min_count` deprovisions, so single leavers of small apps pass).
    pub max_share: f64,
    pub min_count: u32,
    pub window_minutes: u32,
}

impl Default for MassChangeGuard {
    fn default() -> Self {
        Self {
            enabled: true,
            max_count: 50,
            max_share: 0.25,
            min_count: 5,
            window_minutes: 60,
        }
    }
}

impl MassChangeGuard {
    /// Whether one more deprovision, after `recent` in the window, is too many.
    pub fn trips(&self, recent: u64, accounts: u64) -> bool {
        let next = recent + 1;
        self.enabled
            && (next > u64::from(self.max_count)
                || (next > u64::from(self.min_count)
                    && next as f64 > self.max_share * accounts as f64))
    }
}

fn default_bulk_batch() -> usize {
    100
}

fn default_group_repeat_limit() -> u32 {
    3
}

fn default_group_chunk() -> usize {
    50
}

/// One group definition: every person with an active account in the app
/// whose rule holds is a member of the group named by the template, e.g.
/// `name = "dept-{department}"` gives one group per department.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: String,
    #[serde(default)]
    pub rule: Option<String>,
    /// Mirror the person's IdP groups whose names match this pattern (`*`
    /// matches any run of characters, e.g. `"gitea-*"`): one app group per
    /// matching IdP group, named by `name` where `{idp_group}` is the IdP
    /// group's name.
    #[serde(default)]
    pub idp_groups: Option<String>,
    #[serde(skip)]
    compiled_rule: Option<Rule>,
}

impl GroupConfig {
    pub fn compiled_rule(&self) -> Option<&Rule> {
        self.compiled_rule.as_ref()
    }

    /// The person's IdP groups this definition mirrors; `None` when the
    /// definition does not mirror IdP groups.
    pub fn matching_idp_groups<'a>(&self, groups: &'a [String]) -> Option<Vec<&'a String>> {
        let pattern = self.idp_groups.as_deref()?;
        Some(groups.iter().filter(|g| glob_match(pattern, g)).collect())
    }
}

/// `*` matches any run of characters (also none); everything else is
/// literal and case-sensitive, like IdP group names.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

fn hourly() -> String {
    HOURLY.into()
}

impl AppConfig {
    pub fn concurrency(&self, fanout: &FanoutConfig) -> usize {
        self.concurrency.unwrap_or(fanout.concurrency).max(1)
    }

    pub fn policy(&self) -> AppPolicy {
        AppPolicy {
            name: self.name.clone(),
            scope: self.scope.clone(),
            rule: self.compiled_rule.clone(),
            on_termination: self.on_termination,
            on_leave: self.on_leave,
            pre_provision_days: self.pre_provision_days,
            purge_after_days: self.purge_after_days,
            purge_action: self.purge_action,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        // TOML has no null: `role = ""` is how a config says "no SET ROLE".
        cfg.database.role = cfg.database.role.filter(|r| !r.is_empty());
        for app in &mut cfg.apps {
            if let Some(rule) = &app.rule {
                let compiled = Rule::compile(rule.get_ref()).map_err(|e| {
                    let line = text[..rule.span().start.min(text.len())]
                        .lines()
                        .count()
                        .max(1);
                    ConfigError::Parse {
                        path: origin.to_string(),
                        message: format!("line {line}: app {:?}: invalid rule: {e}", app.name),
                    }
                })?;
                app.compiled_rule = Some(compiled);
            }
            for group in &mut app.groups {
                let uses_idp_group = parse_template(&group.name)
                    .map(|segs| {
                        segs.iter()
                            .any(|x| matches!(x, Segment::Placeholder(p) if p == "idp_group"))
                    })
                    .unwrap_or(false);
                if uses_idp_group && group.idp_groups.is_none() {
                    return Err(ConfigError::Invalid(format!(
                        "app {:?}: group {:?} uses {{idp_group}} but sets no idp_groups pattern",
                        app.name, group.name
                    )));
                }
                parse_template(&group.name).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "app {:?}: group name {:?}: {e}",
                        app.name, group.name
                    ))
                })?;
                if let Some(rule) = &group.rule {
                    group.compiled_rule = Some(Rule::compile(rule).map_err(|e| {
                        ConfigError::Invalid(format!(
                            "app {:?}: group {:?}: invalid rule: {e}",
                            app.name, group.name
                        ))
                    })?);
                }
            }
            if app.bulk_batch == 0 {
                return Err(ConfigError::Invalid(format!(
                    "app {:?}: bulk_batch must be at least 1",
                    app.name
                )));
            }
            if app.group_chunk == 0 {
                return Err(ConfigError::Invalid(format!(
                    "app {:?}: group_chunk must be at least 1",
                    app.name
                )));
            }
            if app.group_repeat_limit == 0 {
                return Err(ConfigError::Invalid(format!(
                    "app {:?}: group_repeat_limit must be at least 1",
                    app.name
                )));
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.engine.default_tz()?;
        api_token::validate(&self.api.token)?;
        if self.engine.day_start_hour > 23 {
            return Err(ConfigError::Invalid(
                "engine.day_start_hour must be 0-23".into(),
            ));
        }
        check_cron("engine.expiry_sweep_cron", &self.engine.expiry_sweep_cron)?;
        for (key, value) in [
            (
                "ingest.header_read_timeout_secs",
                self.ingest.header_read_timeout_secs,
            ),
            (
                "ingest.request_timeout_secs",
                self.ingest.request_timeout_secs,
            ),
            ("ingest.idle_timeout_secs", self.ingest.idle_timeout_secs),
            ("ingest.max_connections", self.ingest.max_connections as u64),
            (
                "api.header_read_timeout_secs",
                self.api.header_read_timeout_secs,
            ),
            ("api.request_timeout_secs", self.api.request_timeout_secs),
            ("api.idle_timeout_secs", self.api.idle_timeout_secs),
            ("api.max_connections", self.api.max_connections as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{key} must be at least 1")));
            }
        }
        if self.engine.partitions == 0 {
            return Err(ConfigError::Invalid(
                "engine.partitions must be at least 1".into(),
            ));
        }
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        let mut seen_sources = std::collections::BTreeSet::from(["generic"]);
        for src in &self.sources {
            if !name_ok(&src.name) {
                return Err(ConfigError::Invalid(format!(
                    "source {:?}: names use a-z, 0-9 and _ only (they become URL paths and NATS subjects)",
                    src.name
                )));
            }
            if !seen_sources.insert(&src.name) {
                return Err(ConfigError::Invalid(format!(
                    "source {:?} is defined twice (\"generic\" is built in)",
                    src.name
                )));
            }
            // A mapping that cannot work for the vendor fails at load, not at
            // the first webhook.
            if let Err(e) = tenure_sources::Adapter::try_new(src.kind, src.mapping.clone(), None) {
                return Err(ConfigError::Invalid(format!(
                    "source {:?}: [source.mapping] {e}",
                    src.name
                )));
            }
            if let Some(api) = &src.api {
                if !(api.base_url.starts_with("http://") || api.base_url.starts_with("https://")) {
                    return Err(ConfigError::Invalid(format!(
                        "source {:?}: api.base_url must start with http:// or https://",
                        src.name
                    )));
                }
            }
        }
        let mut seen_idp = std::collections::BTreeSet::new();
        for idp in &self.idp {
            if !name_ok(&idp.name) || !seen_idp.insert(&idp.name) {
                return Err(ConfigError::Invalid(format!(
                    "idp {:?}: names are unique and use a-z, 0-9 and _ only",
                    idp.name
                )));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for app in &self.apps {
            let ok = !app.name.is_empty()
                && app.name.len() <= 64
                && app
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "app {:?}: names use a-z, 0-9 and _ only (they become NATS subjects and stream ids)",
                    app.name
                )));
            }
            if !seen.insert(&app.name) {
                return Err(ConfigError::Invalid(format!(
                    "app {:?} is defined twice",
                    app.name
                )));
            }
            if !(app.base_url.starts_with("http://") || app.base_url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "app {:?}: base_url must start with http:// or https://",
                    app.name
                )));
            }
            check_cron(
                &format!("app {:?}: reconcile_cron", app.name),
                &app.reconcile_cron,
            )?;
            let profile = app.scim_profile()?;
            for path in app.mapping.attributes.keys() {
                let canon = tenure_scim::shape::check_free_path(path, "mapping.attributes")
                    .map_err(|e| ConfigError::Invalid(format!("app {:?}: {e}", app.name)))?;
                if profile.shape.constant.contains_key(&canon) {
                    return Err(ConfigError::Invalid(format!(
                        "app {:?}: {path:?} is both mapped and a shape constant; keep one",
                        app.name
                    )));
                }
            }
            if app.basic_user.is_some() && app.token.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "app {:?}: basic_user needs a token (the app password)",
                    app.name
                )));
            }
            for (key, template) in app.mapping.templates() {
                let segments = parse_template(template).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "app {:?}: mapping.{key} = {template:?}: {e}",
                        app.name
                    ))
                })?;
                if segments
                    .iter()
                    .any(|x| matches!(x, Segment::Placeholder(p) if p == "idp_group"))
                {
                    return Err(ConfigError::Invalid(format!(
                        "app {:?}: mapping.{key}: {{idp_group}} is only meaningful in [[app.group]] names",
                        app.name
                    )));
                }
            }
            if let Some(f) = &app.scope {
                if !tenure_domain::Attributes::NAMES.contains(&f.attribute.as_str()) {
                    return Err(ConfigError::Invalid(format!(
                        "app {:?}: scope.attribute {:?} is not one of {}",
                        app.name,
                        f.attribute,
                        tenure_domain::Attributes::NAMES.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn app(&self, name: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.name == name)
    }
}

fn check_cron(what: &str, expr: &str) -> Result<(), ConfigError> {
    expr.parse::<cron::Schedule>().map(|_| ()).map_err(|e| {
        ConfigError::Invalid(format!(
            "{what}: {expr:?} is not a cron expression (sec min hour day month weekday): {e}"
        ))
    })
}

impl EngineConfig {
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        Ok(Policy {
            default_tz: self.default_tz()?,
            day_start_hour: self.day_start_hour,
            purge_after_days: self.purge_after_days,
            expiry_warning_days: self.expiry_warning_days,
        })
    }
}

impl FanoutConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mass_change_guard_lets_single_leavers_through() {
        let g = MassChangeGuard::default();
        assert!(!g.trips(0, 3), "a single termination in a tiny app passes");
        assert!(!g.trips(4, 10), "up to min_count always passes");
        assert!(
            g.trips(5, 10),
            "the sixth of ten accounts in an hour is held"
        );
        assert!(!g.trips(20, 1000));
        assert!(
            g.trips(50, 10_000),
            "more than max_count is held whatever the size"
        );
        assert!(!MassChangeGuard {
            enabled: false,
            ..g
        }
        .trips(1000, 1000));
    }

    #[test]
    fn full_example_parses() {
        let cfg = Config::parse(
            r#"
            [database]
            url = "postgres://postgres@127.0.0.1/t"
            [ingest.generic]
            secret = { file = "/run/secrets/hr" }
            [[app]]
            name = "wiki"
            base_url = "http://127.0.0.1:9000/wiki/v2"
            token = { env = "WIKI_TOKEN" }
            scope = { attribute = "department", values = ["Engineering"] }
            on_termination = "delete"
            user_name = "email_local_part"
            "#,
            "test",
        )
        .expect("parses");
        assert_eq!(cfg.apps.len(), 1);
        assert_eq!(cfg.apps[0].on_termination, TerminationPolicy::Delete);
        assert_eq!(cfg.ingest.max_clock_skew_secs, 300);
        assert_eq!(cfg.database.role.as_deref(), Some("tenure_app"));
        let no_role = Config::parse("[database]\nrole = \"\"\n", "test").expect("parses");
        assert_eq!(no_role.database.role, None);
    }

    #[test]
    fn mistakes_are_reported_with_context() {
        let e = Config::parse(
            "[[app]]\nname = \"Wiki!\"\nbase_url = \"http://x\"\n",
            "c.toml",
        )
        .expect_err("bad name");
        assert!(e.to_string().contains("Wiki!"), "{e}");
        let e = Config::parse("[databse]\nurl = \"x\"\n", "c.toml").expect_err("typo");
        assert!(e.to_string().contains("databse"), "{e}");
        let e = Config::parse(
            "[[app]]\nname = \"a\"\nbase_url = \"http://x\"\nscope = { attribute = \"shoe_size\", values = [] }\n",
            "c.toml",
        )
        .expect_err("bad attribute");
        assert!(e.to_string().contains("shoe_size"), "{e}");
        let e = Config::parse(
            "[[app]]\nname = \"a\"\nbase_url = \"http://x\"\nscope = { attribute = \"department\", value = \"Sales\" }\n",
            "c.toml",
        )
        .expect_err("typo in scope");
        assert!(e.to_string().contains("value"), "{e}");
        let text = "[[app]]\nname = \"git\"\nbase_url = \"http://x\"\n\nrule = \"person.shoe_size == 42\"\n";
        let e = Config::parse(text, "c.toml").expect_err("bad rule");
        assert!(
            e.to_string().contains("line 5") && e.to_string().contains("shoe_size"),
            "{e}"
        );
        let ok = Config::parse("[[app]]\nname = \"git\"\nbase_url = \"http://x\"\nrule = 'person.department == \"Engineering\"'\n", "c.toml")
            .expect("valid rule");
        assert!(ok.apps[0].policy().rule.is_some());
        let e = Config::parse(
            "[[app]]\nname = \"a\"\nbase_url = \"http://x\"\nprofile = \"gitlub\"\n",
            "c.toml",
        )
        .expect_err("unknown profile");
        assert!(
            e.to_string().contains("gitlub") && e.to_string().contains("gitlab"),
            "{e}"
        );
        let custom = Config::parse(
            "[[app]]\nname = \"a\"\nbase_url = \"http://x\"\nprofile = { extends = \"gitlab\", name = \"ours\", put_allowed = true }\n",
            "c.toml",
        )
        .expect("custom profile");
        let p = custom.apps[0].scim_profile().expect("profile");
        assert!(
            p.put_allowed && !p.discovery,
            "extends gitlab, overrides PUT: {p:?}"
        );
    }

    #[test]
    fn mapping_templates_parse() {
        let cfg = Config::parse(
            "[[app]]\nname = \"wiki\"\nbase_url = \"http://x\"\n[app.mapping]\nuser_name = \"{given_name}.{family_name}\"\ncost_center = \"CC-{ cost_center }\"\nmanager = false\n",
            "c.toml",
        )
        .expect("valid mapping");
        let m = &cfg.apps[0].mapping;
        assert_eq!(m.user_name.as_deref(), Some("{given_name}.{family_name}"));
        assert!(!m.manager);
        let plain = Config::parse(
            "[[app]]\nname = \"wiki\"\nbase_url = \"http://x\"\n",
            "c.toml",
        )
        .expect("no mapping");
        assert_eq!(plain.apps[0].mapping, MappingConfig::default());
        assert!(
            plain.apps[0].mapping.manager,
            "the manager is sent by default"
        );
        assert_eq!(
            parse_template("{{{email_local_part}}}-{person_id}"),
            Ok(vec![
                Segment::Text("{".into()),
                Segment::Placeholder("email_local_part".into()),
                Segment::Text("}-".into()),
                Segment::Placeholder("person_id".into()),
            ])
        );
    }

    #[test]
    fn mapping_mistakes_name_the_app_and_the_template() {
        for (template, why) in [
            ("{given_name", "unbalanced '{'"),
            ("{given_{name}}", "unbalanced '{'"),
            ("given_name}", "unbalanced '}'"),
            ("{shoe_size}", "unknown placeholder {shoe_size}"),
            ("{}", "unknown placeholder {}"),
        ] {
            let text = format!(
                "[[app]]\nname = \"wiki\"\nbase_url = \"http://x\"\n[app.mapping]\ndivision = {template:?}\n"
            );
            let e = Config::parse(&text, "c.toml")
                .expect_err(template)
                .to_string();
            assert!(
                e.contains("\"wiki\"")
                    && e.contains("mapping.division")
                    && e.contains(template)
                    && e.contains(why),
                "{template}: {e}"
            );
        }
        let e = Config::parse(
            "[[app]]\nname = \"wiki\"\nbase_url = \"http://x\"\n[app.mapping]\nusername = \"{email}\"\n",
            "c.toml",
        )
        .expect_err("unknown key");
        assert!(e.to_string().contains("username"), "{e}");
    }

    #[test]
    fn shapes_override_the_profile_key_by_key() {
        let text = r#"
[[app]]
name = "wiki"
base_url = "http://x"
adopt = "never"
profile = { extends = "generic", name = "strict", shape = { name_formatted = true, omit = ["title"], constant = { userType = "Employee" } } }
[app.shape]
omit = ["emails.type", "Emails.Primary"]
[app.shape.constant]
preferredLanguage = "en"
"urn:acme:params:scim:schemas:extension:acme:1.0:User:plan" = { tier = "gold" }
[app.mapping]
name_formatted = "{family_name}, {given_name}"
[app.mapping.attributes]
nickName = "{given_name}"
"#;
        let cfg = Config::parse(text, "c.toml").expect("valid shape");
        let app = &cfg.apps[0];
        assert_eq!(app.adopt, AdoptPolicy::Never);
        let p = app.scim_profile().expect("profile");
        assert!(p.shape.name_formatted, "from the profile");
        assert_eq!(
            p.shape.omit.iter().map(String::as_str).collect::<Vec<_>>(),
            ["emails.primary", "emails.type"],
            "the app's list replaces the profile's"
        );
        assert_eq!(p.shape.constant.len(), 3, "constants merge");
        assert_eq!(
            p.shape.constant["urn:acme:params:scim:schemas:extension:acme:1.0:User:plan"]["tier"],
            "gold"
        );
        assert_eq!(
            Config::parse("[[app]]\nname = \"a\"\nbase_url = \"http://x\"\n", "c")
                .expect("plain")
                .apps[0]
                .adopt,
            AdoptPolicy::UnmanagedOnly
        );
        let no_ext = Config::parse(
            "[[app]]\nname = \"a\"\nbase_url = \"http://x\"\n[app.shape]\nomit = [\"externalId\"]\n",
            "c",
        )
        .expect("valid");
        assert!(!no_ext.apps[0].scim_profile().expect("profile").external_id);
        for (extra, why) in [
            ("[app.shape]\nomit = [\"userName\"]\n", "cannot be omitted"),
            ("[app.shape]\nomit = [\"emails.kind\"]\n", "emails.kind"),
            ("[app.shape]\nomitt = []\n", "omitt"),
            ("[app.shape.constant]\ntitle = \"x\"\n", "[app.mapping]"),
            ("[app.mapping.attributes]\ntitle = \"{title}\"\n", "set from the person"),
            ("[app.mapping.attributes]\nnickName = \"{shoe}\"\n", "shoe"),
            (
                "[app.mapping.attributes]\naddresses = [{ locality = \"{shoe}\" }]\n",
                "shoe",
            ),
            (
                "[app.shape.constant]\nnickName = \"x\"\n[app.mapping.attributes]\nnickName = \"{given_name}\"\n",
                "both mapped and a shape constant",
            ),
            ("adopt = \"sometimes\"\n", "sometimes"),
        ] {
            let text = format!("[[app]]\nname = \"wiki\"\nbase_url = \"http://x\"\n{extra}");
            let e = Config::parse(&text, "c.toml").expect_err(why).to_string();
            assert!(e.contains(why), "{extra}: {e}");
        }
    }

    #[test]
    fn sources_and_idps_are_checked_at_load() {
        let ok = r#"
[[source]]
name = "bamboo"
kind = "bamboohr"
secret = { env = "X" }
[source.mapping.fields]
cost_center = "customCostCentre"
[[idp]]
name = "authentik"
token = { env = "Y" }
correlate = "employee_number"
"#;
        let cfg = Config::parse(ok, "test").expect("valid");
        assert_eq!(cfg.sources[0].kind, tenure_sources::Kind::BambooHr);
        assert_eq!(
            cfg.idp[0].correlate,
            tenure_domain::Correlation::EmployeeNumber
        );

        let bad_mapping = ok.replace("cost_center = ", "favourite_colour = ");
        let err = Config::parse(&bad_mapping, "test").expect_err("unknown attribute");
        assert!(
            err.to_string().contains("bamboo") && err.to_string().contains("favourite_colour"),
            "{err}"
        );

        let twice = format!("{ok}\n[[source]]\nname = \"bamboo\"\nkind = \"deel\"\n");
        assert!(Config::parse(&twice, "test").is_err());
        let generic = ok.replace("name = \"bamboo\"", "name = \"generic\"");
        assert!(Config::parse(&generic, "test")
            .expect_err("reserved")
            .to_string()
            .contains("built in"));
        let bad_kind = ok.replace("kind = \"bamboohr\"", "kind = \"workday\"");
        assert!(Config::parse(&bad_kind, "test").is_err());
    }
}
