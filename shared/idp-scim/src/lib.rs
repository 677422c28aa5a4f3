//! Inbound SCIM 2.0 service provider for identity providers (Authentik):
//! the IdP pushes its Users and Groups here (RFC 7643/7644), and every change
//! to what a user looks like, including the groups they belong to, is
//! written as a [`tenure_domain::IdpIdentity`] snapshot to an outbox in the
//! same transaction as the change. [`pending`] and [`mark_published`] let a
//! relay move the snapshots to the message bus; [`Provider::changed`] wakes
//! it.
//!
//! Mount it with `Router::nest("/scim/v2", tenure_idp_scim::router(provider))`.
//! Users read from the IdP's own API (after a notification) are written
//! into the same store with [`apply_fetched`] / [`apply_fetched_deleted`],
//! under the same locking and outbox rules.
//!
//! Choices worth knowing:
//! - Group members must be users of the same provider that already exist; an
//!   unknown (or non-user) member id fails the whole request with 400
//!   `invalidValue` naming it, rather than being dropped silently. Authentik
//!   creates users before the groups they belong to, and a later full sync
//!   repairs anything refused.
//! - Filters are parsed into a tree and evaluated over the stored JSON; an
//!   `eq` on `userName`, `externalId`, `id`, a group's `displayName` or
//!   `members.value` in the top-level conjunction is answered by an index
//!   first. Unknown attributes are `invalidFilter`.
//! - A snapshot is only written when it differs from the last one written
//!   for that user, so Authentik's periodic full sync (a PUT of every user)
//!   publishes nothing when nothing changed.
//! - Unknown attributes and extensions a client sends are stored and
//!   returned; `password` is accepted and discarded.

mod error;
mod fetched;
mod filter;
mod http;
pub mod limits;
mod patch;
mod resource;
mod schema;
mod service;
mod store;

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

pub use error::Error;
pub use fetched::{apply_fetched, apply_fetched_deleted, group_member_names, Applied, FetchedUser};

/// One identity provider pushing to this service, with its own namespace of
/// users and groups.
pub struct Provider {
    pub pool: PgPool,
    /// The configured name of the IdP (e.g. "authentik"); it scopes every
    /// row and is the `provider` of the snapshots.
    pub name: String,
    /// The bearer token the IdP presents; compared in constant time. Empty
    /// admits nobody.
    pub token: String,
    /// Public URL prefix of the SCIM endpoints, for `meta.location` and
    /// `Location` (e.g. `http://host:8080/scim/v2`).
    pub base_url: String,
    /// Page size cap for list responses (`count` is capped to it).
    pub max_results: usize,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Largest identity snapshot a change may produce (serialised JSON);
    /// a change that would make a larger one is refused with 413. Set it
    /// below the message bus's largest message (the relay publishes each
    /// snapshot as one message), or the relay dead-letters what it cannot
    /// publish.
    pub max_snapshot_bytes: usize,
    changed: Notify,
}

impl Provider {
    pub const DEFAULT_MAX_RESULTS: usize = 100;
    pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
    /// With the attribute limits (see [`limits`]) a user's own attributes
    /// stay far below this; what can reach it is membership in very many
    /// groups.
    pub const DEFAULT_MAX_SNAPSHOT_BYTES: usize = 256 * 1024;

    pub fn new(
        pool: PgPool,
        name: impl Into<String>,
        token: impl Into<String>,
        base_url: impl Into<String>,
    ) -> Self {
        Provider {
            pool,
            name: name.into(),
            token: token.into(),
            base_url: base_url.into(),
            max_results: Self::DEFAULT_MAX_RESULTS,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            max_snapshot_bytes: Self::DEFAULT_MAX_SNAPSHOT_BYTES,
            changed: Notify::new(),
        }
    }

    pub fn with_max_results(mut self, n: usize) -> Self {
        self.max_results = n.max(1);
        self
    }

    pub fn with_max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    pub fn with_max_snapshot_bytes(mut self, n: usize) -> Self {
        self.max_snapshot_bytes = n;
        self
    }

    /// Resolves when snapshots were written since the last call (a permit is
    /// kept if nobody was waiting, so a wake-up between two polls is not
    /// lost). Meant for one relay task per provider; poll [`pending`] on a
    /// timer as well, for rows written by other processes.
    pub fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }

    pub(crate) fn published(&self, snapshots: usize) {
        if snapshots > 0 {
            self.changed.notify_one();
        }
    }

    pub(crate) fn base(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("max_results", &self.max_results)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_snapshot_bytes", &self.max_snapshot_bytes)
            .finish_non_exhaustive()
    }
}

/// The SCIM endpoints: `/Users`, `/Users/{id}`, `/Users/.search`, the same
/// for `/Groups`, `/ServiceProviderConfig`, `/ResourceTypes[/{name}]` and
/// `/Schemas[/{urn}]`. Every route needs the provider's bearer token.
pub fn router(p: Arc<Provider>) -> axum::Router {
    http::router(p)
}

/// Identity snapshots waiting to be published (outbox), oldest first, with
/// their sequence numbers. For one user, a higher sequence number is always
/// the newer snapshot.
pub async fn pending(
    pool: &PgPool,
    provider: &str,
    limit: i64,
) -> Result<Vec<(i64, tenure_domain::IdpIdentity)>, Error> {
    let rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(
        "SELECT seq, snapshot FROM idp_scim_outbox WHERE provider = $1 ORDER BY seq LIMIT $2",
    )
    .bind(provider)
    .bind(limit.max(0))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(seq, v)| {
            serde_json::from_value(v)
                .map(|i| (seq, i))
                .map_err(|source| Error::Snapshot { seq, source })
        })
        .collect()
}

/// Outbox rows as stored (sequence number, snapshot JSON), oldest first,
/// for a relay that decodes each row itself so that one unreadable row
/// cannot hold up the rows behind it.
pub async fn pending_rows(
    pool: &PgPool,
    provider: &str,
    limit: i64,
) -> Result<Vec<(i64, serde_json::Value)>, Error> {
    Ok(sqlx::query_as(
        "SELECT seq, snapshot FROM idp_scim_outbox WHERE provider = $1 ORDER BY seq LIMIT $2",
    )
    .bind(provider)
    .bind(limit.max(0))
    .fetch_all(pool)
    .await?)
}

/// Removes published snapshots from the outbox.
pub async fn mark_published(pool: &PgPool, seqs: &[i64]) -> Result<(), Error> {
    if seqs.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM idp_scim_outbox WHERE seq = ANY($1)")
        .bind(seqs)
        .execute(pool)
        .await?;
    Ok(())
}
