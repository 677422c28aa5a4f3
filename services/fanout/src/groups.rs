//! Group sync: the groups an app should hold are computed from the people
//! with an active account in it and the app's `[[app.group]]` definitions,
//! then converged like accounts: found by stored id or name, created before
//! any membership, members added and removed in chunks (or the group
//! replaced where PATCH is missing), and groups Tenure no longer wants
//! deleted. Only groups Tenure created or adopted are ever deleted.

use crate::mapping;
use crate::worker::{AppWorker, WorkerError};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use tenure_domain::Attributes;
use tenure_scim::{diff_group, diff_group_delete, group_if_match, GroupOp, GroupSpec, RemoteGroup};
use tenure_store::sqlx::{self, Row};
use tenure_store::{ExpectedVersion, Metadata, NewEvent};
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
        let mut known: BTreeMap<String, String> = sqlx::query_as::<_, (String, String)>(
            "SELECT display_name, remote_id FROM app_groups WHERE app = $1",
        )
        .bind(&self.app.name)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();

        let caps = self.caps();
        let mut events = Vec::new();
        self.detect_renames(&desired, &mut known, &mut events)
            .await?;
        for (name, ids) in &desired {
            let spec = GroupSpec {
                display_name: name.clone(),
                external_id: None,
                members: ids.clone(),
            };
            let found = self.find_group(known.get(name), name, &mut events).await;
            let remote = match found {
                Ok(r) => r,
                Err(e) => {
                    report.errors.push(e);
                    continue;
                }
            };
            if remote.is_none() && !self.profile.create_groups {
                report.missing.push(name.clone());
                continue;
            }
            let ops = diff_group(
                &spec,
                remote.as_ref(),
                caps,
                &self.profile,
                self.app.group_chunk,
            );
            let mut current = remote;
            for op in ops {
                match self.run_group_op(&op, current.as_ref(), &mut events).await {
                    Ok(next) => {
                        match &op {
                            GroupOp::Create(_) => report.created += 1,
                            _ => report.updated += 1,
                        }
                        current =
                            next.or_else(|| tenure_scim::apply_group_op(current.as_ref(), &op));
                    }
                    Err(e) => {
                        report.errors.push(e);
                        break;
                    }
                }
            }
            if let Some(g) = current.filter(|g| !g.id.is_empty()) {
                sqlx::query(
                    "INSERT INTO app_groups (app, display_name, remote_id, members, updated_at) VALUES ($1, $2, $3, $4, now())
                     ON CONFLICT (app, display_name) DO UPDATE SET remote_id = $3, members = $4, updated_at = now()",
                )
                .bind(&self.app.name)
                .bind(name)
                .bind(&g.id)
                .bind(i32::try_from(ids.len()).unwrap_or(i32::MAX))
                .execute(&self.pool)
                .await?;
            }
        }
        for (name, id) in known.iter().filter(|(n, _)| !desired.contains_key(*n)) {
            let remote = match self.find_group(Some(id), name, &mut events).await {
                Ok(r) => r,
                Err(e) => {
                    report.errors.push(e);
                    continue;
                }
            };
            let mut ok = true;
            for op in diff_group_delete(remote.as_ref()) {
                if let Err(e) = self.run_group_op(&op, remote.as_ref(), &mut events).await {
                    report.errors.push(e);
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
        if report.created + report.updated + report.deleted > 0
            || !report.errors.is_empty()
            || !report.missing.is_empty()
        {
            events.push(self.group_event(
                "GroupsSynced",
                json!({ "groups": report.groups, "created": report.created, "updated": report.updated,
                        "deleted": report.deleted, "errors": report.errors, "missing": report.missing }),
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

    /// A group that would be deleted while a new one with exactly its
    /// members would be created is the same group under a new name (a
    /// department renamed in HR): it is renamed in place, keeping its id and
    /// whatever the app attaches to it.
    async fn detect_renames(
        &self,
        desired: &BTreeMap<String, BTreeSet<String>>,
        known: &mut BTreeMap<String, String>,
        events: &mut Vec<NewEvent>,
    ) -> Result<(), WorkerError> {
        let orphans: Vec<(String, String)> = known
            .iter()
            .filter(|(n, _)| !desired.contains_key(*n))
            .map(|(n, i)| (n.clone(), i.clone()))
            .collect();
        let mut newcomers: Vec<&String> =
            desired.keys().filter(|n| !known.contains_key(*n)).collect();
        if orphans.is_empty() || newcomers.is_empty() {
            return Ok(());
        }
        for (old_name, old_id) in orphans {
            let Ok(Some(old)) = self.find_group(Some(&old_id), &old_name, events).await else {
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
            known.insert(new_name, old.id.clone());
            sqlx::query("DELETE FROM app_groups WHERE app = $1 AND display_name = $2")
                .bind(&self.app.name)
                .bind(&old_name)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
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
                Err(e) => return Err(self.failed(e, events)),
            }
        }
        if !self.caps().filter {
            return Ok(None);
        }
        match self.client.find_group(name).await {
            Ok(call) => {
                events.push(self.call_event(&call.record, true));
                Ok(call.value)
            }
            Err(e) => Err(self.failed(e, events)),
        }
    }

    async fn run_group_op(
        &self,
        op: &GroupOp,
        current: Option<&RemoteGroup>,
        events: &mut Vec<NewEvent>,
    ) -> Result<Option<RemoteGroup>, String> {
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
            Err(e) => Err(self.failed(e, events)),
        }
    }

    fn failed(&self, e: tenure_scim::ScimError, events: &mut Vec<NewEvent>) -> String {
        if let Some(r) = e.record() {
            events.push(self.call_event(r, false));
        }
        e.to_string()
    }

    fn call_event(&self, record: &tenure_scim::CallRecord, ok: bool) -> NewEvent {
        self.group_event(
            if ok {
                "ScimCallSucceeded"
            } else {
                "ScimCallFailed"
            },
            serde_json::to_value(record).unwrap_or_default(),
        )
    }

    fn group_event(&self, kind: &str, data: serde_json::Value) -> NewEvent {
        NewEvent {
            event_id: Uuid::new_v4(),
            event_type: kind.into(),
            data,
            metadata: Metadata {
                correlation_id: Uuid::new_v4(),
                causation_id: None,
                person_id: None,
                app: Some(self.app.name.clone()),
                source: None,
                actor: "fanout".into(),
                effective_at: None,
            },
        }
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
    fn an_idp_group_placeholder_needs_a_pattern() {
        let text = "[[app]]\nname = \"git\"\nbase_url = \"http://127.0.0.1:1/scim/v2\"\n[[app.group]]\nname = \"{idp_group}\"\n";
        let err = tenure_config::Config::parse(text, "test").expect_err("invalid");
        assert!(err.to_string().contains("idp_groups"), "{err}");
    }
}
