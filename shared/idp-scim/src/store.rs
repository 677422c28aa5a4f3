//! PostgreSQL access (`migrations/0007_idp_scim.sql`). Queries are built at
//! run time with binds; the callers own the transactions and the lock order:
//! groups (by id) before users (by id).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::error::ScimError;
use crate::resource::{identity, Meta};

/// A stored resource.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub meta: Meta,
    pub data: Map<String, Value>,
}

type Row = (Uuid, Value, i64, DateTime<Utc>, DateTime<Utc>);

fn stored((id, data, version, created, modified): Row) -> Stored {
    Stored {
        meta: Meta {
            id,
            version,
            created,
            modified,
        },
        data: match data {
            Value::Object(m) => m,
            _ => Map::new(),
        },
    }
}

/// A group member: the user's id and the member's other sub-attributes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Member {
    pub id: Uuid,
    pub attrs: Map<String, Value>,
}

fn text<'a>(data: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    data.get(key).and_then(Value::as_str)
}

pub(crate) enum Table {
    Users,
    Groups,
}

impl Table {
    fn name(&self) -> &'static str {
        match self {
            Table::Users => "idp_scim_users",
            Table::Groups => "idp_scim_groups",
        }
    }
    /// The indexed column derived from the resource's required attribute.
    fn name_column(&self) -> &'static str {
        match self {
            Table::Users => "user_name",
            Table::Groups => "display_name",
        }
    }
    fn name_attr(&self) -> &'static str {
        match self {
            Table::Users => "userName",
            Table::Groups => "displayName",
        }
    }
}

const COLS: &str = "id, resource, version, created_at, modified_at";

pub(crate) async fn insert(
    conn: &mut PgConnection,
    table: Table,
    provider: &str,
    data: &Map<String, Value>,
) -> Result<Stored, ScimError> {
    let id = Uuid::new_v4();
    let sql = format!(
        "INSERT INTO {} (provider, id, {}, external_id, resource) VALUES ($1, $2, $3, $4, $5) RETURNING {COLS}",
        table.name(),
        table.name_column()
    );
    let row: Row = sqlx::query_as(&sql)
        .bind(provider)
        .bind(id)
        .bind(text(data, table.name_attr()).unwrap_or_default())
        .bind(text(data, "externalId"))
        .bind(Value::Object(data.clone()))
        .fetch_one(conn)
        .await?;
    Ok(stored(row))
}

pub(crate) async fn get(
    db: impl PgExecutor<'_>,
    table: Table,
    provider: &str,
    id: Uuid,
    lock: bool,
) -> Result<Option<Stored>, ScimError> {
    let sql = format!(
        "SELECT {COLS} FROM {} WHERE provider = $1 AND id = $2{}",
        table.name(),
        if lock { " FOR UPDATE" } else { "" }
    );
    let row: Option<Row> = sqlx::query_as(&sql)
        .bind(provider)
        .bind(id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(stored))
}

pub(crate) async fn update(
    conn: &mut PgConnection,
    table: Table,
    provider: &str,
    id: Uuid,
    data: &Map<String, Value>,
) -> Result<Stored, ScimError> {
    let sql = format!(
        "UPDATE {} SET {} = $3, external_id = $4, resource = $5, version = version + 1, modified_at = now() \
         WHERE provider = $1 AND id = $2 RETURNING {COLS}",
        table.name(),
        table.name_column()
    );
    let row: Row = sqlx::query_as(&sql)
        .bind(provider)
        .bind(id)
        .bind(text(data, table.name_attr()).unwrap_or_default())
        .bind(text(data, "externalId"))
        .bind(Value::Object(data.clone()))
        .fetch_one(conn)
        .await?;
    Ok(stored(row))
}

/// Marks resources changed without touching their data (a user whose groups
/// changed, a group whose member was deleted), so their ETag changes.
pub(crate) async fn touch(
    conn: &mut PgConnection,
    table: Table,
    provider: &str,
    ids: &[Uuid],
) -> Result<(), ScimError> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "UPDATE {} SET version = version + 1, modified_at = now() WHERE provider = $1 AND id = ANY($2)",
        table.name()
    );
    sqlx::query(&sql)
        .bind(provider)
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn delete(
    conn: &mut PgConnection,
    table: Table,
    provider: &str,
    id: Uuid,
) -> Result<(), ScimError> {
    let sql = format!(
        "DELETE FROM {} WHERE provider = $1 AND id = $2",
        table.name()
    );
    sqlx::query(&sql)
        .bind(provider)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Candidate rows for a filter, narrowed by an index when the filter allows.
pub(crate) enum Lookup {
    All,
    Name(String),
    ExternalId(String),
    Id(Uuid),
    Member(Uuid),
    Nothing,
}

pub(crate) async fn find(
    db: impl PgExecutor<'_>,
    table: Table,
    provider: &str,
    lookup: &Lookup,
) -> Result<Vec<Stored>, ScimError> {
    let t = table.name();
    let (sql, arg): (String, Option<String>) = match lookup {
        Lookup::Nothing => return Ok(Vec::new()),
        Lookup::All => (
            format!("SELECT {COLS} FROM {t} WHERE provider = $1 ORDER BY created_at, id"),
            None,
        ),
        Lookup::Name(n) => (
            format!(
                "SELECT {COLS} FROM {t} WHERE provider = $1 AND lower({}) = lower($2) ORDER BY created_at, id",
                table.name_column()
            ),
            Some(n.clone()),
        ),
        Lookup::ExternalId(e) => (
            format!(
                "SELECT {COLS} FROM {t} WHERE provider = $1 AND external_id = $2 ORDER BY created_at, id"
            ),
            Some(e.clone()),
        ),
        Lookup::Id(id) => (
            format!("SELECT {COLS} FROM {t} WHERE provider = $1 AND id = $2::uuid"),
            Some(id.to_string()),
        ),
        Lookup::Member(user) => (
            "SELECT g.id, g.resource, g.version, g.created_at, g.modified_at FROM idp_scim_groups g \
             JOIN idp_scim_members m ON m.provider = g.provider AND m.group_id = g.id \
             WHERE g.provider = $1 AND m.user_id = $2::uuid ORDER BY g.created_at, g.id"
                .to_string(),
            Some(user.to_string()),
        ),
    };
    let mut q = sqlx::query_as::<_, Row>(&sql).bind(provider);
    if let Some(a) = arg {
        q = q.bind(a);
    }
    Ok(q.fetch_all(db).await?.into_iter().map(stored).collect())
}

pub(crate) async fn count(
    db: impl PgExecutor<'_>,
    table: Table,
    provider: &str,
) -> Result<i64, ScimError> {
    let sql = format!("SELECT count(*) FROM {} WHERE provider = $1", table.name());
    Ok(sqlx::query_scalar(&sql)
        .bind(provider)
        .fetch_one(db)
        .await?)
}

pub(crate) async fn page(
    db: impl PgExecutor<'_>,
    table: Table,
    provider: &str,
    offset: i64,
    limit: i64,
) -> Result<Vec<Stored>, ScimError> {
    let sql = format!(
        "SELECT {COLS} FROM {} WHERE provider = $1 ORDER BY created_at, id OFFSET $2 LIMIT $3",
        table.name()
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(provider)
        .bind(offset)
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(stored).collect())
}

/// The groups (id, displayName) of each user, sorted by name. `None` means
/// every user of the provider.
pub(crate) async fn groups_of(
    db: impl PgExecutor<'_>,
    provider: &str,
    users: Option<&[Uuid]>,
) -> Result<HashMap<Uuid, Vec<(Uuid, String)>>, ScimError> {
    let rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "SELECT m.user_id, g.id, g.display_name FROM idp_scim_members m \
         JOIN idp_scim_groups g ON g.provider = m.provider AND g.id = m.group_id \
         WHERE m.provider = $1 AND ($2::uuid[] IS NULL OR m.user_id = ANY($2)) \
         ORDER BY m.user_id, g.display_name, g.id",
    )
    .bind(provider)
    .bind(users)
    .fetch_all(db)
    .await?;
    let mut out: HashMap<Uuid, Vec<(Uuid, String)>> = HashMap::new();
    for (user, gid, name) in rows {
        out.entry(user).or_default().push((gid, name));
    }
    Ok(out)
}

/// The members of each group, in the order they were added. `None` means
/// every group of the provider.
pub(crate) async fn members_of(
    db: impl PgExecutor<'_>,
    provider: &str,
    groups: Option<&[Uuid]>,
) -> Result<HashMap<Uuid, Vec<Member>>, ScimError> {
    let rows: Vec<(Uuid, Uuid, Value)> = sqlx::query_as(
        "SELECT group_id, user_id, attrs FROM idp_scim_members \
         WHERE provider = $1 AND ($2::uuid[] IS NULL OR group_id = ANY($2)) ORDER BY group_id, seq",
    )
    .bind(provider)
    .bind(groups)
    .fetch_all(db)
    .await?;
    let mut out: HashMap<Uuid, Vec<Member>> = HashMap::new();
    for (gid, uid, attrs) in rows {
        out.entry(gid).or_default().push(Member {
            id: uid,
            attrs: match attrs {
                Value::Object(m) => m,
                _ => Map::new(),
            },
        });
    }
    Ok(out)
}

/// Locks the users with these ids (in id order) and returns those that exist.
pub(crate) async fn lock_users(
    conn: &mut PgConnection,
    provider: &str,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, ScimError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "SELECT id FROM idp_scim_users WHERE provider = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
    )
    .bind(provider)
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

/// Locks the groups with these ids (in id order).
pub(crate) async fn lock_groups(
    conn: &mut PgConnection,
    provider: &str,
    ids: &[Uuid],
) -> Result<(), ScimError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT id FROM idp_scim_groups WHERE provider = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
    )
    .bind(provider)
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(())
}

/// The ids of the groups a user belongs to, sorted.
pub(crate) async fn group_ids_of(
    conn: &mut PgConnection,
    provider: &str,
    user: Uuid,
) -> Result<Vec<Uuid>, ScimError> {
    Ok(sqlx::query_scalar(
        "SELECT group_id FROM idp_scim_members WHERE provider = $1 AND user_id = $2 ORDER BY group_id",
    )
    .bind(provider)
    .bind(user)
    .fetch_all(conn)
    .await?)
}

fn members_json(members: &[&Member]) -> Value {
    Value::Array(
        members
            .iter()
            .map(|m| {
                let mut o = m.attrs.clone();
                o.insert("value".into(), Value::String(m.id.to_string()));
                Value::Object(o)
            })
            .collect(),
    )
}

pub(crate) async fn add_members(
    conn: &mut PgConnection,
    provider: &str,
    group: Uuid,
    members: &[&Member],
) -> Result<(), ScimError> {
    if members.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO idp_scim_members (provider, group_id, user_id, attrs) \
         SELECT $1, $2, (e->>'value')::uuid, e - 'value' \
         FROM jsonb_array_elements($3::jsonb) WITH ORDINALITY AS t(e, n) ORDER BY n",
    )
    .bind(provider)
    .bind(group)
    .bind(members_json(members))
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn update_members(
    conn: &mut PgConnection,
    provider: &str,
    group: Uuid,
    members: &[&Member],
) -> Result<(), ScimError> {
    if members.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE idp_scim_members m SET attrs = e - 'value' FROM jsonb_array_elements($3::jsonb) AS e \
         WHERE m.provider = $1 AND m.group_id = $2 AND m.user_id = (e->>'value')::uuid",
    )
    .bind(provider)
    .bind(group)
    .bind(members_json(members))
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn remove_members(
    conn: &mut PgConnection,
    provider: &str,
    group: Uuid,
    users: &[Uuid],
) -> Result<(), ScimError> {
    if users.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM idp_scim_members WHERE provider = $1 AND group_id = $2 AND user_id = ANY($3)",
    )
    .bind(provider)
    .bind(group)
    .bind(users)
    .execute(conn)
    .await?;
    Ok(())
}

/// Current identity snapshots of these users (who must be locked by the
/// caller), with their previous snapshot.
async fn identities(
    conn: &mut PgConnection,
    provider: &str,
    users: &[Uuid],
) -> Result<Vec<(tenure_domain::IdpIdentity, Option<Value>)>, ScimError> {
    let rows: Vec<(Uuid, Value, Option<Value>, Vec<String>)> = sqlx::query_as(
        "SELECT u.id, u.resource, u.last_snapshot, \
                COALESCE(array_agg(g.display_name) FILTER (WHERE g.id IS NOT NULL), '{}') \
         FROM idp_scim_users u \
         LEFT JOIN idp_scim_members m ON m.provider = u.provider AND m.user_id = u.id \
         LEFT JOIN idp_scim_groups g ON g.provider = m.provider AND g.id = m.group_id \
         WHERE u.provider = $1 AND u.id = ANY($2) \
         GROUP BY u.provider, u.id ORDER BY u.id",
    )
    .bind(provider)
    .bind(users)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, data, last, groups)| {
            let data = match data {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            (identity(provider, id, &data, groups, false), last)
        })
        .collect())
}

/// Writes a fresh snapshot to the outbox for each of these users (locked by
/// the caller) whose snapshot differs from the last one written. Returns how
/// many were written. With `max_bytes`, a snapshot larger than that fails
/// the whole write with 413: it could not be published, and refusing the
/// change keeps the IdP's view and Tenure's apart visibly instead of
/// stalling the relay (a removal passes `None`: it only shrinks snapshots).
pub(crate) async fn snapshot(
    conn: &mut PgConnection,
    provider: &str,
    users: &[Uuid],
    max_bytes: Option<usize>,
) -> Result<usize, ScimError> {
    if users.is_empty() {
        return Ok(0);
    }
    let mut fresh = Vec::new();
    for (ident, last) in identities(conn, provider, users).await? {
        let unchanged = last
            .and_then(|l| serde_json::from_value::<tenure_domain::IdpIdentity>(l).ok())
            .is_some_and(|l| l == ident);
        if !unchanged {
            let json = snapshot_json(&ident)?;
            if let Some(max) = max_bytes {
                check_snapshot_size(&ident, &json, max)?;
            }
            fresh.push(json);
        }
    }
    write_outbox(conn, provider, fresh).await
}

fn check_snapshot_size(
    ident: &tenure_domain::IdpIdentity,
    json: &Value,
    max: usize,
) -> Result<(), ScimError> {
    let size = json.to_string().len();
    if size <= max {
        return Ok(());
    }
    let name: String = ident.user_name.chars().take(80).collect();
    Err(ScimError::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        None,
        format!(
            "the identity snapshot of user '{name}' would be {size} bytes ({} groups, {} e-mails); at most {max} bytes can be published",
            ident.groups.len(),
            ident.emails.len()
        ),
    ))
}

/// Writes the "deleted" snapshot of a user about to be deleted.
pub(crate) async fn snapshot_deleted(
    conn: &mut PgConnection,
    provider: &str,
    user: Uuid,
) -> Result<usize, ScimError> {
    let mut fresh = Vec::new();
    for (mut ident, _) in identities(conn, provider, &[user]).await? {
        ident.deleted = true;
        let mut json = snapshot_json(&ident)?;
        // A deletion must always go through: a deleted user's groups mean
        // nothing, so an oversized one is sent without them.
        if json.to_string().len() > crate::Provider::DEFAULT_MAX_SNAPSHOT_BYTES {
            ident.groups.clear();
            json = snapshot_json(&ident)?;
        }
        fresh.push(json);
    }
    write_outbox(conn, provider, fresh).await
}

fn snapshot_json(ident: &tenure_domain::IdpIdentity) -> Result<Value, ScimError> {
    serde_json::to_value(ident).map_err(|e| {
        tracing::error!(error = %e, "cannot serialise an identity snapshot");
        ScimError::internal()
    })
}

async fn write_outbox(
    conn: &mut PgConnection,
    provider: &str,
    snapshots: Vec<Value>,
) -> Result<usize, ScimError> {
    if snapshots.is_empty() {
        return Ok(0);
    }
    let n = snapshots.len();
    let arr = Value::Array(snapshots);
    sqlx::query(
        "INSERT INTO idp_scim_outbox (provider, user_id, snapshot) \
         SELECT $1, (e->>'idp_id')::uuid, e \
         FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS t(e, n) ORDER BY n",
    )
    .bind(provider)
    .bind(&arr)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE idp_scim_users u SET last_snapshot = e FROM jsonb_array_elements($2::jsonb) AS e \
         WHERE u.provider = $1 AND u.id = (e->>'idp_id')::uuid",
    )
    .bind(provider)
    .bind(&arr)
    .execute(&mut *conn)
    .await?;
    Ok(n)
}
