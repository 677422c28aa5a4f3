//! SCIM Groups against the real scim2-server: create, chunked membership
//! PATCHes, rename, a converge loop, PUT without PATCH, delete.

mod common;

use std::collections::BTreeSet;

use common::{spec, ScimServer};
use serde_json::json;
use tenure_scim::{
    diff_group, diff_group_delete, group_if_match, CallRecord, Capabilities, GroupOp, GroupSpec,
    Profile, RemoteGroup, ScimClient,
};

const CAPS: Capabilities = Capabilities {
    patch: true,
    filter: true,
    etag: true,
};

/// Creates `n` users and returns their remote ids.
async fn users(client: &ScimClient, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let user = client
            .create_user(&spec(&format!("user{i}"), &format!("E-{i}")))
            .await
            .expect("create user")
            .value;
        ids.push(user.id);
    }
    ids
}

fn set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

/// Runs `ops` in order, each with the group's current ETag, reading the
/// group back after each call; returns the records of the writes.
async fn run(
    client: &ScimClient,
    ops: &[GroupOp],
    profile: &Profile,
    caps: Capabilities,
    mut current: Option<RemoteGroup>,
) -> (Option<RemoteGroup>, Vec<CallRecord>) {
    let mut records = Vec::new();
    for op in ops {
        let call = client
            .execute_group(op, profile, group_if_match(caps, current.as_ref()))
            .await
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
        records.push(call.record);
        current = match op {
            GroupOp::Delete { .. } => None,
            GroupOp::Create(_) => call.value,
            _ => {
                let id = op.id().expect("id");
                client.get_group(id).await.expect("get").value
            }
        };
    }
    (current, records)
}

#[tokio::test]
async fn group_lifecycle_with_chunked_membership() {
    let server = ScimServer::start();
    let client = server.client();
    let profile = Profile::generic();
    let ids = users(&client, 5).await;

    // Create with two members.
    let mut want = GroupSpec {
        display_name: "Engineering".into(),
        external_id: Some("G-1".into()),
        members: set(&ids[..2]),
    };
    let ops = diff_group(&want, None, CAPS, &profile, 2);
    assert!(matches!(ops.as_slice(), [GroupOp::Create(_)]), "{ops:?}");
    let created = client
        .execute_group(&ops[0], &profile, None)
        .await
        .expect("create");
    assert_eq!(created.record.method, "POST");
    assert_eq!(created.record.path, "/Groups");
    assert_eq!(created.record.status, Some(201));
    let group = created.value.expect("created group");
    assert_eq!(created.record.remote_id.as_deref(), Some(group.id.as_str()));
    assert_eq!(group.display_name, "Engineering");
    assert_eq!(group.external_id.as_deref(), Some("G-1"));
    assert_eq!(group.members, want.members);
    assert!(group.etag.is_some());

    let found = client.find_group("Engineering").await.expect("find");
    assert_eq!(found.value.as_ref().map(|g| &g.id), Some(&group.id));
    assert!(found
        .record
        .path
        .starts_with("/Groups?filter=displayName eq"));
    assert_eq!(
        client.find_group("engineering").await.expect("find").value,
        None,
        "displayName is matched case-sensitively"
    );

    // Add three more, at most two per PATCH: two PATCH calls.
    want.members = set(&ids);
    let ops = diff_group(&want, Some(&group), CAPS, &profile, 2);
    assert_eq!(ops.len(), 2, "{ops:?}");
    let (group, records) = run(&client, &ops, &profile, CAPS, Some(group)).await;
    let group = group.expect("group");
    assert_eq!(records.len(), 2);
    assert!(records
        .iter()
        .all(|r| r.method == "PATCH" && r.status == Some(204)));
    assert_eq!(group.members, set(&ids));

    // Remove one.
    want.members.remove(&ids[0]);
    let ops = diff_group(&want, Some(&group), CAPS, &profile, 2);
    assert!(
        matches!(ops.as_slice(), [GroupOp::RemoveMembers { members, .. }] if members == &vec![ids[0].clone()]),
        "{ops:?}"
    );
    let (group, _) = run(&client, &ops, &profile, CAPS, Some(group)).await;
    let group = group.expect("group");
    assert_eq!(group.members, set(&ids[1..]));

    // Rename.
    want.display_name = "Platform".into();
    let ops = diff_group(&want, Some(&group), CAPS, &profile, 2);
    assert!(
        matches!(ops.as_slice(), [GroupOp::Rename { .. }]),
        "{ops:?}"
    );
    let (group, _) = run(&client, &ops, &profile, CAPS, Some(group)).await;
    let group = group.expect("group");
    assert_eq!(group.display_name, "Platform");

    // A full converge loop from a mixed change: diff, execute, read, diff.
    want.display_name = "Platform Team".into();
    want.members = [ids[0].clone(), ids[2].clone()].into_iter().collect();
    let mut current = Some(group);
    let mut rounds = 0;
    loop {
        let ops = diff_group(&want, current.as_ref(), CAPS, &profile, 2);
        if ops.is_empty() {
            break;
        }
        rounds += 1;
        assert!(rounds <= 2, "no convergence: {ops:?}");
        current = run(&client, &ops, &profile, CAPS, current).await.0;
    }
    assert_eq!(rounds, 1);
    let group = client
        .get_group(&current.expect("group").id)
        .await
        .expect("get")
        .value
        .expect("group");
    assert_eq!(group.to_spec(), want);

    let (all, pages) = client.list_all_groups(1).await.expect("list");
    assert_eq!(all.iter().map(|g| &g.id).collect::<Vec<_>>(), [&group.id]);
    assert!(!pages.is_empty());

    // Delete, then it is gone; deleting again is done too.
    let ops = diff_group_delete(Some(&group));
    let deleted = client
        .execute_group(&ops[0], &profile, group_if_match(CAPS, Some(&group)))
        .await
        .expect("delete");
    assert_eq!(deleted.record.method, "DELETE");
    assert_eq!(deleted.value, None);
    let gone = client.get_group(&group.id).await.expect("get");
    assert_eq!(gone.value, None);
    assert_eq!(gone.record.status, Some(404));
    let again = client
        .execute_group(&ops[0], &profile, None)
        .await
        .expect("delete again");
    assert_eq!(again.record.status, Some(404));
}

#[tokio::test]
async fn stale_etag_on_a_group_write_is_a_precondition_failure() {
    let server = ScimServer::start();
    let client = server.client();
    let profile = Profile::generic();
    let ids = users(&client, 2).await;
    let group = client
        .create_group(
            &GroupSpec {
                display_name: "Ops".into(),
                external_id: None,
                members: set(&ids[..1]),
            },
            &profile,
        )
        .await
        .expect("create")
        .value;
    let op = GroupOp::AddMembers {
        id: group.id.clone(),
        members: vec![ids[1].clone()],
    };
    client
        .execute_group(&op, &profile, group.etag.as_deref())
        .await
        .expect("first write");
    let err = client
        .execute_group(&op, &profile, group.etag.as_deref())
        .await
        .expect_err("stale etag");
    assert!(err.is_precondition_failed(), "{err}");
}

#[tokio::test]
async fn server_without_patch_updates_groups_by_put() {
    let server = ScimServer::start_with_config(&json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": false},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": 100},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": []
    }));
    let client = server.client();
    let profile = Profile::generic();
    let caps = client
        .service_provider_config()
        .await
        .expect("discover")
        .value;
    assert!(!caps.patch);
    let ids = users(&client, 3).await;
    let mut want = GroupSpec {
        display_name: "Sales".into(),
        external_id: Some("G-7".into()),
        members: set(&ids[..1]),
    };
    let group = client
        .create_group(&want, &profile)
        .await
        .expect("create")
        .value;
    want.display_name = "Sales EMEA".into();
    want.members = set(&ids[1..]);
    let ops = diff_group(&want, Some(&group), caps, &profile, 1);
    assert!(
        matches!(ops.as_slice(), [GroupOp::Replace { .. }]),
        "{ops:?}"
    );
    let put = client
        .execute_group(&ops[0], &profile, group_if_match(caps, Some(&group)))
        .await
        .expect("PUT");
    assert_eq!(put.record.method, "PUT");
    let after = client
        .get_group(&group.id)
        .await
        .expect("get")
        .value
        .expect("group");
    assert_eq!(after.to_spec(), want);
    assert!(diff_group(&want, Some(&after), caps, &profile, 1).is_empty());

    // A profile that forbids PUT as well: nothing is planned.
    let no_put = Profile {
        put_allowed: false,
        ..Profile::generic()
    };
    want.members.clear();
    assert!(diff_group(&want, Some(&after), caps, &no_put, 1).is_empty());
}

/// Which member-removal forms scim2-server (RFC-strict) takes: the
/// `members[value eq …]` path filter and a `replace` of the member list,
/// not the value list Authentik and Entra send. Tenure's fallback order
/// ends at a form it takes either way.
#[tokio::test]
async fn removal_forms_against_scim2_server() {
    use tenure_scim::{diff_group_with, RemoveForm};
    let server = ScimServer::start();
    let client = server.client();
    let profile = Profile::generic();
    let ids = users(&client, 3).await;
    let want = GroupSpec {
        display_name: "Ops".into(),
        external_id: None,
        members: set(&ids),
    };
    let created = client
        .execute_group(&GroupOp::Create(want.clone()), &profile, None)
        .await
        .expect("create")
        .value
        .expect("group");
    let fewer = GroupSpec {
        members: set(&ids[1..]),
        ..want.clone()
    };
    let value_list = diff_group_with(
        &fewer,
        Some(&created),
        CAPS,
        &profile,
        10,
        RemoveForm::ValueList,
    );
    assert!(matches!(
        value_list.as_slice(),
        [GroupOp::RemoveMemberValues { .. }]
    ));
    let err = client
        .execute_group(&value_list[0], &profile, None)
        .await
        .expect_err("scim2-server refuses a value list");
    assert_eq!(err.status(), Some(400), "{err}");
    let replace = diff_group_with(
        &fewer,
        Some(&created),
        CAPS,
        &profile,
        10,
        RemoveForm::ReplaceMembers,
    );
    assert!(matches!(
        replace.as_slice(),
        [GroupOp::ReplaceMembers { .. }]
    ));
    let (after, _) = run(&client, &replace, &profile, CAPS, Some(created)).await;
    assert_eq!(after.expect("group").members, set(&ids[1..]));
}
