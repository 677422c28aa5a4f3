//! The SCIM operations on Users and Groups, each in one transaction that
//! also writes the outbox snapshots of every user whose snapshot changed.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tracing::Instrument;
use uuid::Uuid;

use crate::error::ScimError;
use crate::filter::{Filter, Hint};
use crate::patch::{self, Doc, MemberSet};
use crate::resource::{location, normalize, render, Projection};
use crate::schema::{Kind, LIST_RESPONSE};
use crate::store::{self, Lookup, Member, Stored, Table};
use crate::Provider;

/// A rendered resource and its version, for the ETag header.
pub(crate) struct Rendered {
    pub id: Uuid,
    pub version: i64,
    pub body: Map<String, Value>,
}

fn table(kind: Kind) -> Table {
    match kind {
        Kind::User => Table::Users,
        Kind::Group => Table::Groups,
    }
}

/// Resource ids are UUIDs; anything else names no resource.
pub(crate) fn parse_id(kind: Kind, id: &str) -> Result<Uuid, ScimError> {
    Uuid::parse_str(id).map_err(|_| not_found(kind, id))
}

fn not_found(kind: Kind, id: &str) -> ScimError {
    let shown: String = id.chars().take(80).collect();
    ScimError::not_found(format!("{} '{shown}' not found", kind.name()))
}

/// Runs a write again when PostgreSQL reports a serialization failure or
/// deadlock.
pub(crate) async fn retrying<T, F, Fut>(mut f: F) -> Result<T, ScimError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ScimError>>,
{
    let mut attempt = 0u64;
    loop {
        match f().await {
            Err(e) if e.retry && attempt < 4 => {
                attempt += 1;
                tracing::debug!(attempt, "retrying after a transaction conflict");
                tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
            }
            other => return other,
        }
    }
}

/// Whether an `If-Match` / `If-None-Match` value names this version.
pub(crate) fn etag_matches(header: &str, version: i64) -> bool {
    let want = format!("\"{version}\"");
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == want)
}

fn check_if_match(if_match: Option<&str>, version: i64) -> Result<(), ScimError> {
    match if_match {
        Some(h) if !etag_matches(h, version) => Err(ScimError::precondition_failed()),
        _ => Ok(()),
    }
}

fn group_values(base_url: &str, groups: &[(Uuid, String)]) -> Vec<Value> {
    groups
        .iter()
        .map(|(gid, name)| {
            json!({
                "value": gid.to_string(),
                "display": name,
                "$ref": location(base_url, Kind::Group, *gid),
                "type": "direct",
            })
        })
        .collect()
}

fn member_values(base_url: &str, members: &[Member]) -> Vec<Value> {
    members
        .iter()
        .map(|m| {
            let mut o = m.attrs.clone();
            o.insert("value".into(), Value::String(m.id.to_string()));
            o.insert(
                "$ref".into(),
                Value::String(location(base_url, Kind::User, m.id)),
            );
            Value::Object(o)
        })
        .collect()
}

fn render_user(p: &Provider, s: &Stored, groups: Option<&[(Uuid, String)]>) -> Rendered {
    let base = p.base();
    Rendered {
        id: s.meta.id,
        version: s.meta.version,
        body: render(
            Kind::User,
            base,
            &s.meta,
            &s.data,
            groups.map(|g| ("groups", group_values(base, g))),
        ),
    }
}

fn render_group(p: &Provider, s: &Stored, members: Option<&[Member]>) -> Rendered {
    let base = p.base();
    Rendered {
        id: s.meta.id,
        version: s.meta.version,
        body: render(
            Kind::Group,
            base,
            &s.meta,
            &s.data,
            members.map(|m| ("members", member_values(base, m))),
        ),
    }
}

/// Splits a normalised group into its data and its members.
fn split_members(
    mut data: Map<String, Value>,
) -> Result<(Map<String, Value>, Vec<Member>), ScimError> {
    let raw = match data.remove("members") {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    let mut members: Vec<Member> = Vec::with_capacity(raw.len());
    let mut seen = HashSet::new();
    for v in MemberSet::from_values(raw)?.into_values() {
        let Value::Object(mut o) = v else { continue };
        let value = o
            .remove("value")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let shown: String = value.chars().take(80).collect();
        let id = Uuid::parse_str(&value).map_err(|_| {
            ScimError::invalid_value(format!("member '{shown}' is not a user of this provider"))
        })?;
        if let Some(t) = o.get("type").and_then(Value::as_str) {
            if !t.eq_ignore_ascii_case("User") {
                return Err(ScimError::invalid_value(format!(
                    "member '{shown}' has type '{t}': only users can be members"
                )));
            }
        }
        o.remove("$ref");
        if seen.insert(id) {
            members.push(Member { id, attrs: o });
        }
    }
    Ok((data, members))
}

fn object(body: Value, kind: Kind) -> Result<Map<String, Value>, ScimError> {
    match body {
        Value::Object(m) => Ok(m),
        _ => Err(ScimError::invalid_syntax(format!(
            "the body must be a {} object",
            kind.name()
        ))),
    }
}

pub(crate) async fn create(p: &Provider, kind: Kind, body: Value) -> Result<Rendered, ScimError> {
    let data = normalize(kind, object(body, kind)?)?;
    let span = tracing::info_span!("scim_create", provider = %p.name, resource = kind.name(), id = tracing::field::Empty);
    let (rendered, written) = retrying(|| create_once(p, kind, data.clone()))
        .instrument(span.clone())
        .await?;
    span.record("id", tracing::field::display(rendered.id));
    p.published(written);
    tracing::info!(parent: &span, snapshots = written, "created");
    Ok(rendered)
}

async fn create_once(
    p: &Provider,
    kind: Kind,
    data: Map<String, Value>,
) -> Result<(Rendered, usize), ScimError> {
    let mut tx = p.pool.begin().await?;
    let out = match kind {
        Kind::User => {
            let s = store::insert(&mut tx, Table::Users, &p.name, &data).await?;
            let n =
                store::snapshot(&mut tx, &p.name, &[s.meta.id], Some(p.max_snapshot_bytes)).await?;
            (render_user(p, &s, Some(&[])), n)
        }
        Kind::Group => {
            let (data, members) = split_members(data)?;
            let s = store::insert(&mut tx, Table::Groups, &p.name, &data).await?;
            let ids: Vec<Uuid> = members.iter().map(|m| m.id).collect();
            require_users(&mut tx, p, &ids).await?;
            let refs: Vec<&Member> = members.iter().collect();
            store::add_members(&mut tx, &p.name, s.meta.id, &refs).await?;
            store::touch(&mut tx, Table::Users, &p.name, &ids).await?;
            let n = store::snapshot(&mut tx, &p.name, &ids, Some(p.max_snapshot_bytes)).await?;
            (render_group(p, &s, Some(&members)), n)
        }
    };
    tx.commit().await?;
    Ok(out)
}

/// Locks these users and fails with `invalidValue` naming the first id that
/// is not a user of this provider.
async fn require_users(
    conn: &mut sqlx::PgConnection,
    p: &Provider,
    ids: &[Uuid],
) -> Result<(), ScimError> {
    let mut sorted = ids.to_vec();
    sorted.sort();
    sorted.dedup();
    let found: HashSet<Uuid> = store::lock_users(conn, &p.name, &sorted)
        .await?
        .into_iter()
        .collect();
    if let Some(missing) = ids.iter().find(|id| !found.contains(id)) {
        return Err(ScimError::invalid_value(format!(
            "member '{missing}' is not a user of this provider"
        )));
    }
    Ok(())
}

pub(crate) async fn get(
    p: &Provider,
    kind: Kind,
    id: &str,
    projection: &Projection,
) -> Result<Rendered, ScimError> {
    let uid = parse_id(kind, id)?;
    let s = store::get(&p.pool, table(kind), &p.name, uid, false)
        .await?
        .ok_or_else(|| not_found(kind, id))?;
    let mut r = match kind {
        Kind::User => {
            let groups = if projection.wants("groups") {
                store::groups_of(&p.pool, &p.name, Some(&[uid]))
                    .await?
                    .remove(&uid)
            } else {
                None
            };
            render_user(p, &s, Some(groups.as_deref().unwrap_or_default()))
        }
        Kind::Group => {
            let members = if projection.wants("members") {
                Some(
                    store::members_of(&p.pool, &p.name, Some(&[uid]))
                        .await?
                        .remove(&uid)
                        .unwrap_or_default(),
                )
            } else {
                None
            };
            render_group(p, &s, members.as_deref())
        }
    };
    r.body = projection.apply(r.body);
    Ok(r)
}

pub(crate) struct ListParams {
    pub filter: Option<Filter>,
    /// 1-based.
    pub start_index: usize,
    pub count: Option<usize>,
    pub projection: Projection,
}

pub(crate) async fn list(p: &Provider, kind: Kind, params: ListParams) -> Result<Value, ScimError> {
    let t = || table(kind);
    // Never 0: a client paging by startIndex alone (Authentik) must advance.
    let cap = p.max_results.max(1);
    let count = params.count.unwrap_or(cap).min(cap);
    let start = params.start_index.max(1);
    let (total, page): (usize, Vec<Stored>) = match &params.filter {
        None => {
            let total = store::count(&p.pool, t(), &p.name).await?;
            let page = if count == 0 {
                Vec::new()
            } else {
                store::page(
                    &p.pool,
                    t(),
                    &p.name,
                    i64::try_from(start - 1).unwrap_or(i64::MAX),
                    i64::try_from(count).unwrap_or(i64::MAX),
                )
                .await?
            };
            (usize::try_from(total).unwrap_or_default(), page)
        }
        Some(f) => {
            let lookup = match f.hint() {
                None => Lookup::All,
                Some(Hint::UserName(n)) if kind == Kind::User => Lookup::Name(n),
                Some(Hint::DisplayName(n)) if kind == Kind::Group => Lookup::Name(n),
                Some(Hint::ExternalId(e)) => Lookup::ExternalId(e),
                Some(Hint::Id(id)) => Uuid::parse_str(&id).map_or(Lookup::Nothing, Lookup::Id),
                Some(Hint::Member(u)) if kind == Kind::Group => {
                    Uuid::parse_str(&u).map_or(Lookup::Nothing, Lookup::Member)
                }
                Some(_) => Lookup::All,
            };
            let candidates = store::find(&p.pool, t(), &p.name, &lookup).await?;
            let matched = match kind {
                Kind::User => {
                    let groups = if f.mentions("groups") {
                        Some(store::groups_of(&p.pool, &p.name, None).await?)
                    } else {
                        None
                    };
                    candidates
                        .into_iter()
                        .filter(|s| {
                            let g = groups
                                .as_ref()
                                .map(|g| g.get(&s.meta.id).map(Vec::as_slice).unwrap_or_default());
                            f.matches(&render_user(p, s, g).body)
                        })
                        .collect::<Vec<_>>()
                }
                Kind::Group => {
                    let members = if f.mentions("members") {
                        let ids: Vec<Uuid> = candidates.iter().map(|s| s.meta.id).collect();
                        Some(store::members_of(&p.pool, &p.name, Some(&ids)).await?)
                    } else {
                        None
                    };
                    candidates
                        .into_iter()
                        .filter(|s| {
                            let m = members
                                .as_ref()
                                .map(|m| m.get(&s.meta.id).map(Vec::as_slice).unwrap_or_default());
                            f.matches(&render_group(p, s, m).body)
                        })
                        .collect::<Vec<_>>()
                }
            };
            let total = matched.len();
            let page = matched.into_iter().skip(start - 1).take(count).collect();
            (total, page)
        }
    };
    let ids: Vec<Uuid> = page.iter().map(|s| s.meta.id).collect();
    let resources: Vec<Value> = match kind {
        Kind::User => {
            let mut groups = if params.projection.wants("groups") && !ids.is_empty() {
                store::groups_of(&p.pool, &p.name, Some(&ids)).await?
            } else {
                HashMap::new()
            };
            page.iter()
                .map(|s| {
                    let g = groups.remove(&s.meta.id).unwrap_or_default();
                    Value::Object(params.projection.apply(render_user(p, s, Some(&g)).body))
                })
                .collect()
        }
        Kind::Group => {
            let mut members = if params.projection.wants("members") && !ids.is_empty() {
                Some(store::members_of(&p.pool, &p.name, Some(&ids)).await?)
            } else {
                None
            };
            page.iter()
                .map(|s| {
                    let m = members
                        .as_mut()
                        .map(|m| m.remove(&s.meta.id).unwrap_or_default());
                    Value::Object(
                        params
                            .projection
                            .apply(render_group(p, s, m.as_deref()).body),
                    )
                })
                .collect()
        }
    };
    Ok(json!({
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    }))
}

/// What a write changes, for PUT and PATCH.
enum Change {
    Replace(Map<String, Value>),
    Patch(Vec<patch::Op>),
}

pub(crate) async fn replace(
    p: &Provider,
    kind: Kind,
    id: &str,
    if_match: Option<&str>,
    body: Value,
) -> Result<Rendered, ScimError> {
    let uid = parse_id(kind, id)?;
    let data = normalize(kind, object(body, kind)?)?;
    write(
        p,
        kind,
        id,
        uid,
        if_match,
        || Change::Replace(data.clone()),
        "replaced",
    )
    .await
}

pub(crate) async fn patch(
    p: &Provider,
    kind: Kind,
    id: &str,
    if_match: Option<&str>,
    body: Value,
) -> Result<Rendered, ScimError> {
    let uid = parse_id(kind, id)?;
    let ops = patch::parse_ops(kind, body)?;
    write(
        p,
        kind,
        id,
        uid,
        if_match,
        || Change::Patch(ops.clone()),
        "patched",
    )
    .await
}

async fn write(
    p: &Provider,
    kind: Kind,
    id: &str,
    uid: Uuid,
    if_match: Option<&str>,
    change: impl Fn() -> Change,
    what: &'static str,
) -> Result<Rendered, ScimError> {
    let span =
        tracing::info_span!("scim_write", provider = %p.name, resource = kind.name(), id = %uid);
    let (rendered, written) = retrying(|| async {
        match kind {
            Kind::User => write_user(p, id, uid, if_match, change()).await,
            Kind::Group => write_group(p, id, uid, if_match, change()).await,
        }
    })
    .instrument(span.clone())
    .await?;
    p.published(written);
    tracing::info!(parent: &span, snapshots = written, version = rendered.version, "{what}");
    Ok(rendered)
}

async fn write_user(
    p: &Provider,
    id: &str,
    uid: Uuid,
    if_match: Option<&str>,
    change: Change,
) -> Result<(Rendered, usize), ScimError> {
    let mut tx = p.pool.begin().await?;
    let current = store::get(&mut *tx, Table::Users, &p.name, uid, true)
        .await?
        .ok_or_else(|| not_found(Kind::User, id))?;
    check_if_match(if_match, current.meta.version)?;
    let data = match change {
        Change::Replace(d) => d,
        Change::Patch(ops) => {
            let mut doc = Doc {
                data: current.data.clone(),
                members: None,
            };
            patch::apply(Kind::User, &mut doc, ops)?;
            normalize(Kind::User, doc.data)?
        }
    };
    let (s, n) = if data == current.data {
        (current, 0)
    } else {
        let s = store::update(&mut tx, Table::Users, &p.name, uid, &data).await?;
        let n = store::snapshot(&mut tx, &p.name, &[uid], Some(p.max_snapshot_bytes)).await?;
        (s, n)
    };
    let groups = store::groups_of(&mut *tx, &p.name, Some(&[uid]))
        .await?
        .remove(&uid)
        .unwrap_or_default();
    tx.commit().await?;
    Ok((render_user(p, &s, Some(&groups)), n))
}

async fn write_group(
    p: &Provider,
    id: &str,
    gid: Uuid,
    if_match: Option<&str>,
    change: Change,
) -> Result<(Rendered, usize), ScimError> {
    let mut tx = p.pool.begin().await?;
    let current = store::get(&mut *tx, Table::Groups, &p.name, gid, true)
        .await?
        .ok_or_else(|| not_found(Kind::Group, id))?;
    check_if_match(if_match, current.meta.version)?;
    let old = store::members_of(&mut *tx, &p.name, Some(&[gid]))
        .await?
        .remove(&gid)
        .unwrap_or_default();
    let (data, new) = match change {
        Change::Replace(d) => split_members(d)?,
        Change::Patch(ops) => {
            let mut doc = Doc {
                data: current.data.clone(),
                members: Some(MemberSet::from_values(member_values(p.base(), &old))?),
            };
            patch::apply(Kind::Group, &mut doc, ops)?;
            let mut data = doc.data;
            data.insert(
                "members".into(),
                Value::Array(doc.members.map(MemberSet::into_values).unwrap_or_default()),
            );
            split_members(normalize(Kind::Group, data)?)?
        }
    };
    let old_by_id: HashMap<Uuid, &Member> = old.iter().map(|m| (m.id, m)).collect();
    let new_ids: HashSet<Uuid> = new.iter().map(|m| m.id).collect();
    let added: Vec<&Member> = new
        .iter()
        .filter(|m| !old_by_id.contains_key(&m.id))
        .collect();
    let changed: Vec<&Member> = new
        .iter()
        .filter(|m| old_by_id.get(&m.id).is_some_and(|o| o.attrs != m.attrs))
        .collect();
    let removed: Vec<Uuid> = old
        .iter()
        .map(|m| m.id)
        .filter(|id| !new_ids.contains(id))
        .collect();
    let renamed = current.data.get("displayName") != data.get("displayName");
    let data_changed = data != current.data;
    if !data_changed && added.is_empty() && removed.is_empty() && changed.is_empty() {
        tx.commit().await?;
        return Ok((render_group(p, &current, Some(&old)), 0));
    }
    // Users whose snapshot may change: those who joined or left, and every
    // member when the group was renamed.
    let mut affected: Vec<Uuid> = added
        .iter()
        .map(|m| m.id)
        .chain(removed.iter().copied())
        .collect();
    if renamed {
        affected.extend(old.iter().map(|m| m.id));
        affected.extend(new_ids.iter().copied());
    }
    affected.sort();
    affected.dedup();
    let added_ids: Vec<Uuid> = added.iter().map(|m| m.id).collect();
    let locked: HashSet<Uuid> = store::lock_users(&mut tx, &p.name, &affected)
        .await?
        .into_iter()
        .collect();
    if let Some(missing) = added_ids.iter().find(|id| !locked.contains(id)) {
        return Err(ScimError::invalid_value(format!(
            "member '{missing}' is not a user of this provider"
        )));
    }
    let s = store::update(&mut tx, Table::Groups, &p.name, gid, &data).await?;
    store::remove_members(&mut tx, &p.name, gid, &removed).await?;
    store::add_members(&mut tx, &p.name, gid, &added).await?;
    store::update_members(&mut tx, &p.name, gid, &changed).await?;
    // Their `groups` attribute changed, so does their version.
    store::touch(&mut tx, Table::Users, &p.name, &affected).await?;
    let n = store::snapshot(&mut tx, &p.name, &affected, Some(p.max_snapshot_bytes)).await?;
    // As a GET will list them: in the order they joined.
    let members = store::members_of(&mut *tx, &p.name, Some(&[gid]))
        .await?
        .remove(&gid)
        .unwrap_or_default();
    tx.commit().await?;
    Ok((render_group(p, &s, Some(&members)), n))
}

pub(crate) async fn delete(
    p: &Provider,
    kind: Kind,
    id: &str,
    if_match: Option<&str>,
) -> Result<(), ScimError> {
    let uid = parse_id(kind, id)?;
    let span =
        tracing::info_span!("scim_delete", provider = %p.name, resource = kind.name(), id = %uid);
    let written = retrying(|| async {
        match kind {
            Kind::User => delete_user(p, id, uid, if_match).await,
            Kind::Group => delete_group(p, id, uid, if_match).await,
        }
    })
    .instrument(span.clone())
    .await?;
    p.published(written);
    tracing::info!(parent: &span, snapshots = written, "deleted");
    Ok(())
}

async fn delete_user(
    p: &Provider,
    id: &str,
    uid: Uuid,
    if_match: Option<&str>,
) -> Result<usize, ScimError> {
    delete_user_in(&p.pool, &p.name, id, uid, if_match).await
}

/// Deletes a user of `provider`, writing its "deleted" snapshot; shared by
/// SCIM `DELETE` and users the IdP's API no longer has.
pub(crate) async fn delete_user_in(
    pool: &sqlx::PgPool,
    provider: &str,
    id: &str,
    uid: Uuid,
    if_match: Option<&str>,
) -> Result<usize, ScimError> {
    // Groups are locked before users everywhere; the user's groups are read
    // first, locked, and read again under the user's lock. If the user
    // joined another group in between, start over.
    for _ in 0..8 {
        let mut tx = pool.begin().await?;
        let groups = store::group_ids_of(&mut tx, provider, uid).await?;
        store::lock_groups(&mut tx, provider, &groups).await?;
        let current = store::get(&mut *tx, Table::Users, provider, uid, true)
            .await?
            .ok_or_else(|| not_found(Kind::User, id))?;
        check_if_match(if_match, current.meta.version)?;
        let now_in = store::group_ids_of(&mut tx, provider, uid).await?;
        if now_in.iter().any(|g| !groups.contains(g)) {
            tx.rollback().await?;
            continue;
        }
        let n = store::snapshot_deleted(&mut tx, provider, uid).await?;
        store::touch(&mut tx, Table::Groups, provider, &now_in).await?;
        store::delete(&mut tx, Table::Users, provider, uid).await?;
        tx.commit().await?;
        return Ok(n);
    }
    let mut e = ScimError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        None,
        "the user's groups kept changing; retry the request",
    );
    e.retry = true;
    Err(e)
}

async fn delete_group(
    p: &Provider,
    id: &str,
    gid: Uuid,
    if_match: Option<&str>,
) -> Result<usize, ScimError> {
    let mut tx = p.pool.begin().await?;
    let current = store::get(&mut *tx, Table::Groups, &p.name, gid, true)
        .await?
        .ok_or_else(|| not_found(Kind::Group, id))?;
    check_if_match(if_match, current.meta.version)?;
    let mut members: Vec<Uuid> = store::members_of(&mut *tx, &p.name, Some(&[gid]))
        .await?
        .remove(&gid)
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.id)
        .collect();
    members.sort();
    store::lock_users(&mut tx, &p.name, &members).await?;
    store::delete(&mut tx, Table::Groups, &p.name, gid).await?;
    store::touch(&mut tx, Table::Users, &p.name, &members).await?;
    let n = store::snapshot(&mut tx, &p.name, &members, None).await?;
    tx.commit().await?;
    Ok(n)
}
