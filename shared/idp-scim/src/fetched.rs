//! Users read from the IdP's own API (Authentik's `/api/v3/core/users/`
//! after a notification), written into the same mirror the SCIM endpoint
//! keeps, so there is one IdP state and one outbox. The rules of the SCIM
//! writes hold: groups are locked before users, the snapshot is written in
//! the same transaction, and an unchanged user writes no snapshot.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{json, Map, Value};
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::{Error, ScimError};
use crate::resource::normalize;
use crate::schema::Kind;
use crate::service::{delete_user_in, retrying};
use crate::store::{self, Lookup, Member, Table};

/// A user as the IdP's API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchedUser {
    /// The SCIM `userName` (Authentik: `username`); matched ignoring case.
    pub user_name: String,
    /// E-mail addresses, primary first (Authentik has one).
    pub emails: Vec<String>,
    pub display_name: Option<String>,
    pub active: bool,
    /// Only used when the user is created here (Authentik's SCIM mapping
    /// sends its `uid`); an existing user keeps what SCIM stored.
    pub external_id: Option<String>,
    /// Names of the user's groups (case-sensitive, as SCIM `displayName`).
    pub groups: Vec<String>,
}

/// What [`apply_fetched`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The user's SCIM id in the mirror.
    pub id: Uuid,
    /// The user was not in the mirror yet (the IdP's SCIM provider had not
    /// pushed it) and was created.
    pub created: bool,
    /// Snapshots written to the outbox (0 when nothing changed).
    pub snapshots: usize,
    /// Group names the user belongs to in the IdP that the mirror does not
    /// hold: not created here (the IdP's SCIM provider pushes groups, with
    /// their ids and members), so not in the snapshot until it does.
    pub unknown_groups: Vec<String>,
}

/// Upserts `user` by `userName` (ignoring case; an existing user keeps its
/// SCIM id), sets its memberships to exactly the named groups the mirror
/// holds, and writes its snapshot to the outbox in the same transaction
/// when it changed.
pub async fn apply_fetched(
    pool: &PgPool,
    provider: &str,
    user: &FetchedUser,
) -> Result<Applied, Error> {
    let name = user.user_name.trim();
    if name.is_empty() {
        return Err(Error::Invalid("the fetched user has no user name".into()));
    }
    let span = tracing::info_span!("idp_apply_fetched", %provider, user = %name, id = tracing::field::Empty);
    let applied = retrying(|| apply_once(pool, provider, name, user))
        .instrument(span.clone())
        .await
        .map_err(Error::from)?;
    span.record("id", tracing::field::display(applied.id));
    tracing::info!(parent: &span, created = applied.created, snapshots = applied.snapshots, unknown_groups = ?applied.unknown_groups, "fetched user applied");
    Ok(applied)
}

/// A user the IdP no longer has (its API answered 404): deleted from the
/// mirror as a SCIM `DELETE` would, with its "deleted" snapshot. Returns
/// the deleted user's id, `None` when the mirror did not hold it.
pub async fn apply_fetched_deleted(
    pool: &PgPool,
    provider: &str,
    user_name: &str,
) -> Result<Option<Uuid>, Error> {
    let name = user_name.trim();
    let span = tracing::info_span!("idp_apply_deleted", %provider, user = %name);
    async {
        if name.is_empty() {
            return Ok(None);
        }
        for _ in 0..4 {
            let found = store::find(
                pool,
                Table::Users,
                provider,
                &Lookup::Name(name.to_string()),
            )
            .await?;
            let Some(current) = found.into_iter().next() else {
                tracing::info!("user not in the mirror; nothing to delete");
                return Ok(None);
            };
            let id = current.meta.id;
            let shown = id.to_string();
            match retrying(|| delete_user_in(pool, provider, &shown, id, None)).await {
                Ok(n) => {
                    tracing::info!(%id, snapshots = n, "user deleted from the mirror");
                    return Ok(Some(id));
                }
                // Deleted by a concurrent SCIM DELETE meanwhile: look again.
                Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => continue,
                Err(e) => return Err(Error::from(e)),
            }
        }
        Ok(None)
    }
    .instrument(span)
    .await
}

/// The names of the members of a mirror group (by exact `displayName`), for
/// re-fetching them when the IdP reports the group changed or deleted.
pub async fn group_member_names(
    pool: &PgPool,
    provider: &str,
    group: &str,
) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT u.user_name FROM idp_scim_groups g \
         JOIN idp_scim_members m ON m.provider = g.provider AND m.group_id = g.id \
         JOIN idp_scim_users u ON u.provider = m.provider AND u.id = m.user_id \
         WHERE g.provider = $1 AND g.display_name = $2 ORDER BY u.user_name",
    )
    .bind(provider)
    .bind(group)
    .fetch_all(pool)
    .await?)
}

async fn apply_once(
    pool: &PgPool,
    provider: &str,
    name: &str,
    user: &FetchedUser,
) -> Result<Applied, ScimError> {
    let wanted_names: BTreeSet<&str> = user
        .groups
        .iter()
        .map(|g| g.as_str())
        .filter(|g| !g.is_empty())
        .collect();
    // Groups are locked before users: read what to lock, lock it, and check
    // under the user's lock that the user's memberships did not move.
    for _ in 0..8 {
        let mut tx = pool.begin().await?;
        let names: Vec<String> = wanted_names.iter().map(|s| s.to_string()).collect();
        let known: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, display_name FROM idp_scim_groups WHERE provider = $1 AND display_name = ANY($2)",
        )
        .bind(provider)
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?;
        let target: HashMap<Uuid, String> = known.into_iter().collect();
        let known_names: HashSet<&str> = target.values().map(String::as_str).collect();
        let unknown_groups: Vec<String> = wanted_names
            .iter()
            .filter(|n| !known_names.contains(**n))
            .map(|n| n.to_string())
            .collect();
        let existing = store::find(
            &mut *tx,
            Table::Users,
            provider,
            &Lookup::Name(name.to_string()),
        )
        .await?
        .into_iter()
        .next();
        // Renamed in the IdP: the user SCIM stored under the same
        // externalId (Authentik's uid) is the one to update.
        let existing = match (existing, user.external_id.as_deref()) {
            (None, Some(x)) if !x.is_empty() => {
                let mut by_external = store::find(
                    &mut *tx,
                    Table::Users,
                    provider,
                    &Lookup::ExternalId(x.to_string()),
                )
                .await?;
                if by_external.len() == 1 {
                    by_external.pop()
                } else {
                    None
                }
            }
            (found, _) => found,
        };
        let before: Vec<Uuid> = match &existing {
            Some(s) => store::group_ids_of(&mut tx, provider, s.meta.id).await?,
            None => Vec::new(),
        };
        let mut to_lock: Vec<Uuid> = before.iter().chain(target.keys()).copied().collect();
        to_lock.sort();
        to_lock.dedup();
        store::lock_groups(&mut tx, provider, &to_lock).await?;

        let (uid, created, data_changed) = match existing {
            Some(s) => {
                let Some(current) =
                    store::get(&mut *tx, Table::Users, provider, s.meta.id, true).await?
                else {
                    // Deleted in between: start over (it may be created).
                    tx.rollback().await?;
                    continue;
                };
                let now_in = store::group_ids_of(&mut tx, provider, current.meta.id).await?;
                if now_in != before {
                    tx.rollback().await?;
                    continue;
                }
                let data = merged(&current.data, name, user)?;
                let changed = data != current.data;
                if changed {
                    store::update(&mut tx, Table::Users, provider, current.meta.id, &data).await?;
                }
                (current.meta.id, false, changed)
            }
            None => {
                let data = new_user(name, user)?;
                match store::insert(&mut tx, Table::Users, provider, &data).await {
                    Ok(s) => (s.meta.id, true, true),
                    // Created by a SCIM push meanwhile: update that one.
                    Err(e) if e.status == axum::http::StatusCode::CONFLICT => {
                        tx.rollback().await?;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
        };

        let before: HashSet<Uuid> = before.into_iter().collect();
        let added: Vec<Uuid> = target
            .keys()
            .filter(|g| !before.contains(g))
            .copied()
            .collect();
        let removed: Vec<Uuid> = before
            .iter()
            .filter(|g| !target.contains_key(g))
            .copied()
            .collect();
        let member = Member {
            id: uid,
            attrs: Map::new(),
        };
        for g in &added {
            store::add_members(&mut tx, provider, *g, &[&member]).await?;
        }
        for g in &removed {
            store::remove_members(&mut tx, provider, *g, &[uid]).await?;
        }
        let mut touched: Vec<Uuid> = added.iter().chain(removed.iter()).copied().collect();
        touched.sort();
        store::touch(&mut tx, Table::Groups, provider, &touched).await?;
        if !touched.is_empty() && !data_changed {
            store::touch(&mut tx, Table::Users, provider, &[uid]).await?;
        }
        let snapshots = if created || data_changed || !touched.is_empty() {
            store::snapshot(
                &mut tx,
                provider,
                &[uid],
                Some(crate::Provider::DEFAULT_MAX_SNAPSHOT_BYTES),
            )
            .await?
        } else {
            0
        };
        tx.commit().await?;
        return Ok(Applied {
            id: uid,
            created,
            snapshots,
            unknown_groups,
        });
    }
    let mut e = ScimError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        None,
        "the user's groups kept changing; retry",
    );
    e.retry = true;
    Err(e)
}

fn email_values(emails: &[String]) -> Value {
    Value::Array(
        emails
            .iter()
            .enumerate()
            .map(|(i, e)| json!({"value": e, "type": "other", "primary": i == 0}))
            .collect(),
    )
}

fn clean_emails(user: &FetchedUser) -> Vec<String> {
    let mut seen = HashSet::new();
    user.emails
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty() && seen.insert(e.to_lowercase()))
        .map(str::to_string)
        .collect()
}

/// A new SCIM user as Authentik's default SCIM mapping would push it.
fn new_user(name: &str, user: &FetchedUser) -> Result<Map<String, Value>, ScimError> {
    let mut data = Map::new();
    data.insert("userName".into(), Value::String(name.to_string()));
    data.insert("active".into(), Value::Bool(user.active));
    if let Some(d) = user
        .display_name
        .as_deref()
        .filter(|d| !d.trim().is_empty())
    {
        data.insert("displayName".into(), Value::String(d.trim().to_string()));
        data.insert("name".into(), json!({"formatted": d.trim()}));
    }
    let emails = clean_emails(user);
    if !emails.is_empty() {
        data.insert("emails".into(), email_values(&emails));
    }
    if let Some(x) = user.external_id.as_deref().filter(|x| !x.is_empty()) {
        data.insert("externalId".into(), Value::String(x.to_string()));
    }
    normalize(Kind::User, data)
}

/// The stored user with what the API says changed. Attributes the API does
/// not describe (name parts, the enterprise extension, externalId) stay as
/// SCIM stored them; e-mails are only replaced when the fetched ones are
/// not all there already, so the SCIM push and the fetch do not flap.
fn merged(
    current: &Map<String, Value>,
    name: &str,
    user: &FetchedUser,
) -> Result<Map<String, Value>, ScimError> {
    let mut data = current.clone();
    if data.get("userName").and_then(Value::as_str) != Some(name) {
        data.insert("userName".into(), Value::String(name.to_string()));
    }
    if data.get("active").and_then(Value::as_bool).unwrap_or(true) != user.active {
        data.insert("active".into(), Value::Bool(user.active));
    }
    if let Some(d) = user
        .display_name
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        let shown = data
            .get("displayName")
            .and_then(Value::as_str)
            .or_else(|| data.get("name")?.get("formatted")?.as_str());
        if shown != Some(d) {
            data.insert("displayName".into(), Value::String(d.to_string()));
        }
    }
    let emails = clean_emails(user);
    if !emails.is_empty() {
        let stored: HashSet<String> = match data.get("emails") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|i| i.get("value").and_then(Value::as_str))
                .map(str::to_lowercase)
                .collect(),
            _ => HashSet::new(),
        };
        if emails.iter().any(|e| !stored.contains(&e.to_lowercase())) {
            data.insert("emails".into(), email_values(&emails));
        }
    }
    if data == *current {
        return Ok(data);
    }
    normalize(Kind::User, data)
}
