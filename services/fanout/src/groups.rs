//! Group sync: the groups an app should hold are computed from the people
//! with an active account in it and the app's `[[app.group]]` definitions,
//! then converged like accounts: found by stored id or name, created before
//! any membership, members added and removed in chunks (or the group
//! replaced where PATCH is missing), and groups Tenure no longer wants
//! deleted. Only groups Tenure created or adopted are ever deleted, and a
//! profile's protected groups (Nextcloud's `admin`) never are.
//!
//! Real servers differ from the RFC here, so the sync learns and checks:
//! which key the server returns members by (id, `$ref`, userName,
//! display), turning its answer back into account ids before comparing;
//! which member-removal form it accepts, falling back from the RFC's path
//! filter to a value list, a replace of the member list, then PUT; and
//! whether its writes take effect: a group that needs the same change after
//! `group_repeat_limit` syncs that each sent it is set aside
//! (`GroupNotConverging`) instead of being written forever.

use crate::mapping;
use crate::worker::{AppWorker, WorkerError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use tenure_domain::Attributes;
use tenure_scim::{
    diff_group_delete, diff_group_with, group_if_match, learn_member_key, normalise_members,
    repeat_verdict, GroupChange, GroupOp, GroupSpec, Lesson, MemberDirectory, MemberKey,
    RemoteGroup, RemoveForm, RepeatVerdict, ScimError,
};
use tenure_store::sqlx::{self, Row};
use tenure_store::{ExpectedVersion, NewEvent};
use uuid::Uuid;

#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupReport {
    pub app: String,
    pub groups: usize,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub errors: Vec<String>,
    /// Groups the app must have but may not be created by Tenure.
    pub missing: Vec<String>,
    /// Why nothing was done, when nothing could be.
    pub skipped: Option<String>,
    /// Groups set aside because they do not converge; not touched until
    /// redriven (`tenure groups --redrive`) or the app's group
    /// configuration changes.
    pub stuck: Vec<StuckGroup>,
    /// Wanted groups the profile protects; never changed.
    pub protected: Vec<String>,
    /// What this sync learned about the server.
    pub learned: Vec<Lesson>,
}

/// A group the loop detector set aside.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StuckGroup {
    pub name: String,
    pub remote_id: String,
    pub reason: String,
    pub since: Option<DateTime<Utc>>,
}

/// Page size when groups are listed (servers without `filter`).
const GROUP_PAGE: usize = 100;

/// What Tenure keeps about one group it manages.
#[derive(Debug, Clone, Default)]
struct KnownGroup {
    remote_id: String,
    pending_change: Option<String>,
    repeats: u32,
    stuck_reason: Option<String>,
    stuck_at: Option<DateTime<Utc>>,
    stuck_config: Option<String>,
}

/// Desired groups: name → member account ids. Pure, for tests.
/// One member candidate: person, attributes, IdP groups, remote account id.
pub type Member = (Uuid, Attributes, Vec<String>, String);

pub fn desired_groups(
    app: &tenure_config::AppConfig,
    members: &[Member],
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for group in &app.groups {
        for (person, attrs, idp_groups, remote_id) in members {
            // A rule that fails on odd data leaves the person out of that group only.
            if let Some(rule) = group.compiled_rule() {
                if !rule.evaluate(attrs, idp_groups).unwrap_or(false) {
                    continue;
                }
            }
            let names: Vec<String> = match group.matching_idp_groups(idp_groups) {
                None => vec![mapping::render(&group.name, *person, attrs)],
                Some(matching) => matching
                    .into_iter()
                    .map(|g| mapping::render_with(&group.name, *person, attrs, &[("idp_group", g)]))
                    .collect(),
            };
            for name in names {
                let name = name.trim().to_string();
                if !name.is_empty() {
                    out.entry(name).or_default().insert(remote_id.clone());
                }
            }
        }
    }
    out
}

/// A digest of what decides how the app's groups sync: the group
/// definitions, the profile and the repeat limit. When it changes, groups
/// set aside as not converging are tried again.
pub fn group_config_fingerprint(
    app: &tenure_config::AppConfig,
    profile: &tenure_scim::Profile,
) -> String {
    let defs: Vec<(String, Option<String>, Option<String>)> = app
        .groups
        .iter()
        .map(|g| (g.name.clone(), g.rule.clone(), g.idp_groups.clone()))
        .collect();
    let text = json!({
        "base_url": app.base_url,
        "groups": defs,
        "profile": profile,
        "group_repeat_limit": app.group_repeat_limit,
        "group_chunk": app.group_chunk,
    });
    tenure_scim::group::digest(&text.to_string())
}

/// How one group's calls ended.
struct Converged {
    /// The group as it is now (ids as members), when it exists.
    current: Option<RemoteGroup>,
    /// Whether this sync counts towards the loop detector: it sent the
    /// change and the server answered for good (success or a permanent
    /// refusal), not a passing failure.
    counted: bool,
}

impl AppWorker {
    pub async fn sync_groups(&self) -> Result<GroupReport, WorkerError> {
        let mut report = GroupReport {
            app: self.app.name.clone(),
            ..GroupReport::default()
        };
        if self.app.groups.is_empty() {
            return Ok(report);
        }
        if !self.profile.groups {
            report.skipped = Some(format!("profile {} has no groups", self.profile.name));
            return Ok(report);
        }
        self.load_learned().await?;
        let rows = sqlx::query(
            "SELECT p.person_id, p.attributes, p.groups, a.remote_id FROM persons p
             JOIN entitlements e ON e.app = $1 AND e.person_id = p.person_id AND e.entitlement = 'active'
             JOIN accounts a ON a.app = $1 AND a.person_id = p.person_id AND a.remote_id IS NOT NULL",
        )
        .bind(&self.app.name)
        .fetch_all(&self.pool)
        .await?;
        let mut members = Vec::with_capacity(rows.len());
        for r in &rows {
            let attrs: Attributes =
                serde_json::from_value(r.try_get("attributes")?).unwrap_or_default();
            let groups: Vec<String> =
                serde_json::from_value(r.try_get("groups")?).unwrap_or_default();
            members.push((
                r.try_get::<Uuid, _>("person_id")?,
                attrs,
                groups,
                r.try_get::<String, _>("remote_id")?,
            ));
        }
        let desired = desired_groups(&self.app, &members);
        let dir = self.member_directory().await?;
        let mut known = self.known_groups().await?;
        let config = group_config_fingerprint(&self.app, &self.profile);

        let caps = self.caps();
        let mut events = Vec::new();
        self.detect_renames(&desired, &mut known, &dir, &mut events)
            .await?;
        for (name, ids) in &desired {
            let mut row = known.get(name).cloned();
            let known_id = row.as_ref().map(|r| r.remote_id.clone());
            if self
                .profile
                .is_protected_group(name, known_id.as_deref().unwrap_or_default())
            {
                report.protected.push(name.clone());
                continue;
            }
            if let Some(r) = row.as_ref().filter(|r| r.stuck_reason.is_some()) {
                if r.stuck_config.as_deref() == Some(config.as_str()) {
                    report.stuck.push(StuckGroup {
                        name: name.clone(),
                        remote_id: r.remote_id.clone(),
                        reason: r.stuck_reason.clone().unwrap_or_default(),
                        since: r.stuck_at,
                    });
                    continue;
                }
                self.release_group(name, "the app's group configuration changed")
                    .await?;
                row = row.map(|r| KnownGroup {
                    pending_change: None,
                    repeats: 0,
                    stuck_reason: None,
                    stuck_at: None,
                    stuck_config: None,
                    ..r
                });
            }
            let spec = GroupSpec {
                display_name: name.clone(),
                external_id: None,
                members: ids.clone(),
            };
            // The reads of a group found as wanted are not kept: every sync
            // reads every group, and only what changed (or failed) is worth
            // a place on the app's stream.
            let reads_from = events.len();
            let remote = match self
                .read_group(known_id.as_deref(), name, &dir, &mut events)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    report.errors.push(e);
                    continue;
                }
            };
            if remote
                .as_ref()
                .is_some_and(|g| self.profile.is_protected_group(name, &g.id))
            {
                report.protected.push(name.clone());
                continue;
            }
            if remote.is_none() && !self.profile.create_groups {
                report.missing.push(name.clone());
                continue;
            }
            let change = GroupChange::between(&spec, remote.as_ref());
            let (last, repeats) = row
                .as_ref()
                .map(|r| (r.pending_change.clone(), r.repeats))
                .unwrap_or_default();
            let target = spec.fingerprint();
            let verdict = repeat_verdict(
                change.as_ref(),
                &target,
                last.as_deref(),
                repeats,
                self.app.group_repeat_limit,
            );
            if let (RepeatVerdict::Stuck { repeats }, Some(change), Some(g)) =
                (verdict, change.as_ref(), remote.as_ref())
            {
                let learned = self.client.learned();
                let reason = format!(
                    "{repeats} syncs in a row changed the group and it still needs a change ({}): \
                     the server refuses the change, or accepts it and the group still does not end up as wanted (members read by {}, removals sent as {})",
                    change.summary(),
                    learned.member_key.unwrap_or(MemberKey::Id).as_str(),
                    learned.remove_form.as_str(),
                );
                self.park_group(name, &g.id, &reason, &config, change, repeats)
                    .await?;
                report.stuck.push(StuckGroup {
                    name: name.clone(),
                    remote_id: g.id.clone(),
                    reason,
                    since: Some(Utc::now()),
                });
                continue;
            }
            if change.is_none() && remote.is_some() {
                events.truncate(reads_from);
            }
            let done = self
                .converge_group(&spec, remote, caps, &dir, &mut report, &mut events)
                .await;
            let (pending, repeats) = match verdict {
                RepeatVerdict::Send { repeats } if done.counted => (Some(target), repeats),
                RepeatVerdict::Send { .. } => (last, repeats),
                _ => (None, 0),
            };
            if let Some(g) = done.current.filter(|g| !g.id.is_empty()) {
                sqlx::query(
                    "INSERT INTO app_groups (app, display_name, remote_id, members, pending_change, repeats, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, now())
                     ON CONFLICT (app, display_name) DO UPDATE
                     SET remote_id = $3, members = $4, pending_change = $5, repeats = $6, updated_at = now()",
                )
                .bind(&self.app.name)
                .bind(name)
                .bind(&g.id)
                .bind(i32::try_from(ids.len()).unwrap_or(i32::MAX))
                .bind(pending)
                .bind(i32::try_from(repeats).unwrap_or(i32::MAX))
                .execute(&self.pool)
                .await?;
            }
        }
        for (name, row) in known.iter().filter(|(n, _)| !desired.contains_key(*n)) {
            if self.profile.is_protected_group(name, &row.remote_id) {
                continue;
            }
            let remote = match self
                .find_group(Some(&row.remote_id), name, &mut events)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    report.errors.push(e);
                    continue;
                }
            };
            if remote
                .as_ref()
                .is_some_and(|g| self.profile.is_protected_group(&g.display_name, &g.id))
            {
                continue;
            }
            let mut ok = true;
            for op in diff_group_delete(remote.as_ref()) {
                if let Err(e) = self.run_group_op(&op, remote.as_ref(), &mut events).await {
                    report.errors.push(e.to_string());
                    ok = false;
                }
            }
            if ok {
                report.deleted += usize::from(remote.is_some());
                sqlx::query("DELETE FROM app_groups WHERE app = $1 AND display_name = $2")
                    .bind(&self.app.name)
                    .bind(name)
                    .execute(&self.pool)
                    .await?;
            }
        }
        report.groups = desired.len();
        report.learned = self.store_lessons().await?;
        if report.created + report.updated + report.deleted > 0
            || !report.errors.is_empty()
            || !report.missing.is_empty()
        {
            let stuck: Vec<&str> = report.stuck.iter().map(|s| s.name.as_str()).collect();
            events.push(self.app_event(
                "GroupsSynced",
                json!({ "groups": report.groups, "created": report.created, "updated": report.updated,
                        "deleted": report.deleted, "errors": report.errors, "missing": report.missing,
                        "stuck": stuck, "protected": report.protected }),
            ));
        }
        if !events.is_empty() {
            let mut conn = self.pool.acquire().await?;
            tenure_store::append(
                &mut conn,
                &format!("app-{}", self.app.name),
                ExpectedVersion::Any,
                &events,
            )
            .await?;
        }
        Ok(report)
    }

    /// Sends the calls that make `remote` match `spec`, falling back to the
    /// next member-removal form when the server refuses one (400 or 501 to
    /// a removal; 405 to any PATCH of a group, or 501 to one that is not a
    /// removal, goes straight to PUT). A form that worked after a refusal is
    /// learned for the app.
    async fn converge_group(
        &self,
        spec: &GroupSpec,
        remote: Option<RemoteGroup>,
        caps: tenure_scim::Capabilities,
        dir: &MemberDirectory,
        report: &mut GroupReport,
        events: &mut Vec<NewEvent>,
    ) -> Converged {
        let first_form = self.client.learned().remove_form;
        let mut form = first_form;
        let mut refused: Option<String> = None;
        let mut current = remote;
        let plan = |current: Option<&RemoteGroup>, form| {
            diff_group_with(
                spec,
                current,
                caps,
                &self.profile,
                self.app.group_chunk,
                form,
            )
        };
        let mut ops: std::collections::VecDeque<GroupOp> = plan(current.as_ref(), form).into();
        while let Some(op) = ops.pop_front() {
            match self.run_group_op(&op, current.as_ref(), events).await {
                Ok(next) => {
                    match &op {
                        GroupOp::Create(_) => report.created += 1,
                        _ => report.updated += 1,
                    }
                    current = match next {
                        Some(g) => Some(self.normalise(&g, dir)),
                        None => tenure_scim::apply_group_op(current.as_ref(), &op),
                    };
                }
                Err(e) => {
                    let status = e.status();
                    // A removal refused with 400 or 501 is a form the server
                    // does not take; 405 to any PATCH, or 501 to one that is
                    // not a removal, means no PATCH on groups at all.
                    let form_refused = op.removes_members() && matches!(status, Some(400 | 501));
                    let patch_refused = op.patch_ops().is_some()
                        && !form_refused
                        && matches!(status, Some(405 | 501));
                    let next_form = if patch_refused {
                        Some(RemoveForm::Put)
                    } else if form_refused {
                        form.next()
                    } else {
                        None
                    };
                    if let Some(next_form) = next_form.filter(|f| *f > form) {
                        tracing::info!(app = %self.app.name, group = %spec.display_name, refused = form.as_str(), next = next_form.as_str(), error = %e, "group change refused; trying the next form");
                        refused = Some(format!(
                            "{} on {}: {e}",
                            form.as_str(),
                            e.record().map(|r| r.path.as_str()).unwrap_or_default()
                        ));
                        form = next_form;
                        ops = plan(current.as_ref(), form).into();
                        continue;
                    }
                    report.errors.push(e.to_string());
                    return Converged {
                        current,
                        counted: !e.is_retryable(),
                    };
                }
            }
        }
        if form != first_form {
            let why = refused.unwrap_or_default();
            self.client.learn(
                "remove_form",
                form.as_str(),
                format!(
                    "group {:?}: the server refused {why}; {} worked",
                    spec.display_name,
                    form.as_str()
                ),
                |l| l.remove_form = l.remove_form.max(form),
            );
        }
        Converged {
            current,
            counted: true,
        }
    }

    /// The app's linked accounts, to tell whose a group member is.
    async fn member_directory(&self) -> Result<MemberDirectory, WorkerError> {
        let rows = sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT remote_id, user_name FROM accounts WHERE app = $1 AND remote_id IS NOT NULL",
        )
        .bind(&self.app.name)
        .fetch_all(&self.pool)
        .await?;
        Ok(MemberDirectory::new(rows))
    }

    async fn known_groups(&self) -> Result<BTreeMap<String, KnownGroup>, WorkerError> {
        let rows = sqlx::query(
            "SELECT display_name, remote_id, pending_change, repeats, stuck_reason, stuck_at, stuck_config
             FROM app_groups WHERE app = $1",
        )
        .bind(&self.app.name)
        .fetch_all(&self.pool)
        .await?;
        let mut out = BTreeMap::new();
        for r in rows {
            out.insert(
                r.try_get::<String, _>("display_name")?,
                KnownGroup {
                    remote_id: r.try_get("remote_id")?,
                    pending_change: r.try_get("pending_change")?,
                    repeats: u32::try_from(r.try_get::<i32, _>("repeats")?).unwrap_or(0),
                    stuck_reason: r.try_get("stuck_reason")?,
                    stuck_at: r.try_get("stuck_at")?,
                    stuck_config: r.try_get("stuck_config")?,
                },
            );
        }
        Ok(out)
    }

    /// Groups set aside as not converging, for `tenure groups`.
    pub async fn stuck_groups(&self) -> Result<Vec<StuckGroup>, WorkerError> {
        Ok(self
            .known_groups()
            .await?
            .into_iter()
            .filter_map(|(name, r)| {
                Some(StuckGroup {
                    reason: r.stuck_reason?,
                    name,
                    remote_id: r.remote_id,
                    since: r.stuck_at,
                })
            })
            .collect())
    }

    /// Lets the named groups (all that are set aside, when `names` is
    /// empty) be synced again, each with a `GroupRedriven` event; returns
    /// the groups released.
    pub async fn redrive_groups(&self, names: &[String]) -> Result<Vec<String>, WorkerError> {
        let mut released = Vec::new();
        for g in self.stuck_groups().await? {
            if names.is_empty() || names.contains(&g.name) {
                self.release_group(&g.name, "redriven by an operator")
                    .await?;
                released.push(g.name);
            }
        }
        Ok(released)
    }

    async fn park_group(
        &self,
        name: &str,
        remote_id: &str,
        reason: &str,
        config: &str,
        change: &GroupChange,
        repeats: u32,
    ) -> Result<(), WorkerError> {
        tracing::warn!(app = %self.app.name, group = name, reason, "group set aside: it does not converge");
        let learned = self.client.learned();
        let event = self.app_event(
            "GroupNotConverging",
            json!({
                "group": name, "remote_id": remote_id, "reason": reason, "repeats": repeats,
                "change": change, "member_key": learned.member_key, "remove_form": learned.remove_form,
            }),
        );
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE app_groups SET stuck_reason = $3, stuck_at = now(), stuck_config = $4, updated_at = now()
             WHERE app = $1 AND display_name = $2",
        )
        .bind(&self.app.name)
        .bind(name)
        .bind(reason)
        .bind(config)
        .execute(&mut *tx)
        .await?;
        tenure_store::append(
            &mut tx,
            &format!("app-{}", self.app.name),
            ExpectedVersion::Any,
            &[event],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_group(&self, name: &str, why: &str) -> Result<(), WorkerError> {
        let event = self.app_event("GroupRedriven", json!({ "group": name, "reason": why }));
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE app_groups SET stuck_reason = NULL, stuck_at = NULL, stuck_config = NULL,
             pending_change = NULL, repeats = 0, updated_at = now()
             WHERE app = $1 AND display_name = $2",
        )
        .bind(&self.app.name)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        tenure_store::append(
            &mut tx,
            &format!("app-{}", self.app.name),
            ExpectedVersion::Any,
            &[event],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A group that would be deleted while a new one with exactly its
    /// members would be created is the same group under a new name (a
    /// department renamed in HR): it is renamed in place, keeping its id and
    /// whatever the app attaches to it.
    async fn detect_renames(
        &self,
        desired: &BTreeMap<String, BTreeSet<String>>,
        known: &mut BTreeMap<String, KnownGroup>,
        dir: &MemberDirectory,
        events: &mut Vec<NewEvent>,
    ) -> Result<(), WorkerError> {
        let orphans: Vec<(String, KnownGroup)> = known
            .iter()
            .filter(|(n, _)| !desired.contains_key(*n))
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        let mut newcomers: Vec<&String> =
            desired.keys().filter(|n| !known.contains_key(*n)).collect();
        if orphans.is_empty() || newcomers.is_empty() {
            return Ok(());
        }
        for (old_name, old_row) in orphans {
            if self
                .profile
                .is_protected_group(&old_name, &old_row.remote_id)
            {
                continue;
            }
            let Ok(Some(old)) = self
                .read_group(Some(&old_row.remote_id), &old_name, dir, events)
                .await
            else {
                continue;
            };
            let Some(pos) = newcomers
                .iter()
                .position(|n| desired.get(*n) == Some(&old.members))
            else {
                continue;
            };
            let new_name = newcomers.remove(pos).clone();
            known.remove(&old_name);
            known.insert(
                new_name,
                KnownGroup {
                    remote_id: old.id.clone(),
                    ..KnownGroup::default()
                },
            );
            sqlx::query("DELETE FROM app_groups WHERE app = $1 AND display_name = $2")
                .bind(&self.app.name)
                .bind(&old_name)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// The group by stored id or name, its members turned into account ids
    /// (see [`AppWorker::normalise`]).
    async fn read_group(
        &self,
        known_id: Option<&str>,
        name: &str,
        dir: &MemberDirectory,
        events: &mut Vec<NewEvent>,
    ) -> Result<Option<RemoteGroup>, String> {
        let known_id = known_id.map(str::to_owned);
        let found = self.find_group(known_id.as_ref(), name, events).await?;
        Ok(found.map(|g| self.normalise(&g, dir)))
    }

    /// The group with its members as account ids, read by the key this
    /// server uses: learned from the first group with members Tenure knows,
    /// checked on every read (a server upgrade may change it), and recorded
    /// as a lesson when it changes.
    fn normalise(&self, group: &RemoteGroup, dir: &MemberDirectory) -> RemoteGroup {
        let current = self.client.learned().member_key;
        let key = learn_member_key(group, dir, current);
        if let Some(k) = key.filter(|k| Some(*k) != current) {
            let total = group.member_refs.len().max(group.members.len());
            let resolved = tenure_scim::group::resolved_by(group, dir, k);
            self.client.learn(
                "member_key",
                k.as_str(),
                format!(
                    "group {:?} ({}): {resolved} of its {total} members are known accounts when read by {}",
                    group.display_name,
                    group.id,
                    k.as_str()
                ),
                |l| l.member_key = Some(k),
            );
        }
        normalise_members(group, dir, key.unwrap_or(MemberKey::Id))
    }

    async fn find_group(
        &self,
        known_id: Option<&String>,
        name: &str,
        events: &mut Vec<NewEvent>,
    ) -> Result<Option<RemoteGroup>, String> {
        if let Some(id) = known_id {
            match self.client.get_group(id).await {
                Ok(call) => {
                    events.push(self.call_event(&call.record, true));
                    if call.value.is_some() {
                        return Ok(call.value);
                    }
                }
                Err(e) => return Err(self.failed(&e, events)),
            }
        }
        if !self.caps().filter {
            // No filter support: look through the whole list (paged as the
            // server allows), so an existing group is found, not created
            // twice.
            return match self.client.list_all_groups(GROUP_PAGE).await {
                Ok((groups, records)) => {
                    for r in &records {
                        events.push(self.call_event(r, true));
                    }
                    let mut hits = groups.into_iter().filter(|g| g.display_name == name);
                    match (hits.next(), hits.next()) {
                        (Some(_), Some(_)) => {
                            Err(format!("more than one group in the app is named {name:?}"))
                        }
                        (found, _) => Ok(found),
                    }
                }
                Err(e) => Err(self.failed(&e, events)),
            };
        }
        match self.client.find_group(name).await {
            Ok(call) => {
                events.push(self.call_event(&call.record, true));
                Ok(call.value)
            }
            Err(e) => Err(self.failed(&e, events)),
        }
    }

    async fn run_group_op(
        &self,
        op: &GroupOp,
        current: Option<&RemoteGroup>,
        events: &mut Vec<NewEvent>,
    ) -> Result<Option<RemoteGroup>, ScimError> {
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
        let etag = group_if_match(self.caps(), current).map(str::to_string);
        match self
            .client
            .execute_group(op, &self.profile, etag.as_deref())
            .await
        {
            Ok(call) => {
                events.push(self.call_event(&call.record, true));
                Ok(call.value)
            }
            Err(e) => {
                self.failed(&e, events);
                Err(e)
            }
        }
    }

    fn failed(&self, e: &ScimError, events: &mut Vec<NewEvent>) -> String {
        if let Some(r) = e.record() {
            events.push(self.call_event(r, false));
        }
        e.to_string()
    }

    fn call_event(&self, record: &tenure_scim::CallRecord, ok: bool) -> NewEvent {
        self.app_event(
            if ok {
                "ScimCallSucceeded"
            } else {
                "ScimCallFailed"
            },
            serde_json::to_value(record).unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(groups: &str) -> tenure_config::AppConfig {
        let text =
            format!("[[app]]\nname = \"git\"\nbase_url = \"http://127.0.0.1:1/scim/v2\"\n{groups}");
        let cfg = tenure_config::Config::parse(&text, "test").expect("config");
        cfg.apps.into_iter().next().expect("app")
    }

    fn member(dept: &str, groups: &[&str], remote: &str) -> Member {
        (
            Uuid::new_v4(),
            Attributes {
                department: Some(dept.into()),
                ..Attributes::default()
            },
            groups.iter().map(|g| (*g).to_string()).collect(),
            remote.into(),
        )
    }

    #[test]
    fn idp_groups_are_mirrored_by_pattern_and_usable_in_rules() {
        let app = app(r#"
[[app.group]]
name = "{idp_group}"
idp_groups = "git-*"
[[app.group]]
name = "admins"
rule = '"platform-admins" in person.groups'
[[app.group]]
name = "dept-{department}"
"#);
        let members = [
            member("Eng", &["git-core", "git-docs", "staff"], "r1"),
            member("Eng", &["git-core", "platform-admins"], "r2"),
            member("Ops", &["staff"], "r3"),
        ];
        let desired = desired_groups(&app, &members);
        let names: Vec<&str> = desired.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["admins", "dept-Eng", "dept-Ops", "git-core", "git-docs"]
        );
        let ids = |g: &str| desired[g].iter().cloned().collect::<Vec<_>>();
        assert_eq!(ids("git-core"), ["r1", "r2"]);
        assert_eq!(ids("git-docs"), ["r1"]);
        assert_eq!(ids("admins"), ["r2"]);
    }

    #[test]
    fn the_repeat_limit_defaults_to_three_and_must_be_positive() {
        assert_eq!(app("").group_repeat_limit, 3);
        let text = "[[app]]\nname = \"git\"\nbase_url = \"http://127.0.0.1:1/scim/v2\"\ngroup_repeat_limit = 0\n";
        let err = tenure_config::Config::parse(text, "test").expect_err("invalid");
        assert!(err.to_string().contains("group_repeat_limit"), "{err}");
    }

    #[test]
    fn the_config_fingerprint_follows_what_decides_a_sync() {
        let profile = tenure_scim::Profile::generic();
        let a = app("[[app.group]]\nname = \"dept-{department}\"\n");
        let same = app("[[app.group]]\nname = \"dept-{department}\"\n");
        let other = app("[[app.group]]\nname = \"team-{department}\"\n");
        let limit = app("group_repeat_limit = 5\n[[app.group]]\nname = \"dept-{department}\"\n");
        let fp = group_config_fingerprint(&a, &profile);
        assert_eq!(fp, group_config_fingerprint(&same, &profile));
        assert_ne!(fp, group_config_fingerprint(&other, &profile));
        assert_ne!(fp, group_config_fingerprint(&limit, &profile));
        let nextcloud = tenure_scim::builtin("nextcloud").expect("nextcloud");
        assert_ne!(fp, group_config_fingerprint(&a, &nextcloud));
    }

    #[test]
    fn an_idp_group_placeholder_needs_a_pattern() {
        let text = "[[app]]\nname = \"git\"\nbase_url = \"http://127.0.0.1:1/scim/v2\"\n[[app.group]]\nname = \"{idp_group}\"\n";
        let err = tenure_config::Config::parse(text, "test").expect_err("invalid");
        assert!(err.to_string().contains("idp_groups"), "{err}");
    }
}
