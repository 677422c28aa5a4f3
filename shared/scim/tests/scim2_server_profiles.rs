//! Profiles, ETags and paging against the real scim2-server.

mod common;

use std::collections::HashSet;

use common::{spec, ScimServer};
use serde_json::json;
use tenure_scim::{
    builtin, diff_with, if_match, Capabilities, Deprovision, Desired, Op, PatchOp, Profile,
    ScimError, UserSpec,
};

#[tokio::test]
async fn list_all_users_pages_of_two_over_five() {
    let server = ScimServer::start();
    let client = server.client();
    let mut ids = HashSet::new();
    for i in 0..5 {
        let u = client
            .create_user(&spec(&format!("user{i}"), &format!("E-{i}")))
            .await
            .expect("create");
        ids.insert(u.value.id);
    }
    let page = client.list_users(1, 2).await.expect("page");
    assert_eq!(page.value.total_results, Some(5));
    assert_eq!(page.value.start_index, 1);
    assert_eq!(page.value.items.len(), 2);

    let (users, records) = client.list_all_users(2).await.expect("list");
    let listed: HashSet<String> = users.iter().map(|u| u.id.clone()).collect();
    assert_eq!(users.len(), 5);
    assert_eq!(listed, ids, "5 distinct users, the ones created");
    let paths: Vec<&str> = records.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/Users?startIndex=1&count=2",
            "/Users?startIndex=3&count=2",
            "/Users?startIndex=5&count=2"
        ]
    );
    assert!(records.iter().all(|r| r.status == Some(200)));

    // A page past the end is empty, not an error.
    let past = client.list_users(9, 2).await.expect("past the end").value;
    assert!(past.items.is_empty());
    assert_eq!(past.total_results, Some(5));
}

#[tokio::test]
async fn stale_if_match_gets_412_on_patch_put_and_delete() {
    let server = ScimServer::start();
    let client = server.client();
    let caps = client
        .service_provider_config()
        .await
        .expect("discovery")
        .value;
    assert!(caps.etag, "scim2-server announces ETags");
    let v1 = client
        .create_user(&spec("ada", "E-1"))
        .await
        .expect("create")
        .value;
    let id = v1.id.clone();
    // Someone else changes the account: the version moves on.
    client
        .patch_user(&id, &[PatchOp::replace("title", "Boss")])
        .await
        .expect("patch");
    // scim2-server answers PATCH with 204, so the new version takes a read.
    let v2 = client
        .get_user(&id)
        .await
        .expect("get")
        .value
        .expect("exists");
    assert_ne!(v1.etag, v2.etag);
    let stale = if_match(caps, Some(&v1));
    assert_eq!(stale, v1.etag.as_deref());

    let ops = [
        Op::Patch {
            id: id.clone(),
            ops: vec![PatchOp::replace("active", false)],
        },
        Op::Replace {
            id: id.clone(),
            spec: UserSpec {
                active: false,
                ..spec("ada", "E-1")
            },
        },
        Op::Delete { id: id.clone() },
    ];
    for op in &ops {
        let err = client
            .execute_if_match(op, stale)
            .await
            .expect_err("stale version");
        assert!(err.is_precondition_failed(), "{op:?}: {err}");
        assert!(matches!(err, ScimError::Http { status: 412, .. }));
        assert!(!err.is_retryable());
    }
    let now = client
        .get_user(&id)
        .await
        .expect("get")
        .value
        .expect("not deleted");
    assert!(now.active, "no stale write went through");
    assert_eq!(now.etag, v2.etag);

    // The re-read version works.
    let op = diff_with(&Desired::Deactivated, Some(&now), caps, &Profile::generic());
    assert_eq!(op.len(), 1);
    client
        .execute_if_match(&op[0], if_match(caps, Some(&now)))
        .await
        .expect("fresh version");
    let done = client
        .get_user(&id)
        .await
        .expect("get")
        .value
        .expect("exists");
    assert!(!done.active);
    client
        .execute_if_match(&Op::Delete { id: id.clone() }, done.etag.as_deref())
        .await
        .expect("delete with fresh version");
    assert_eq!(client.get_user(&id).await.expect("get").value, None);
}

const CUSTOM: &str = r#"
name = "hr-legacy"
extends = "generic"
discovery = false
external_id = false
put_allowed = false
deprovision = "block"
auth_hint = "Bearer token from the HR admin page"

[assumed]
patch = false   # forced back on: PUT is not allowed, so PATCH is the only way
etag = true
"#;

#[tokio::test]
async fn custom_toml_profile_drives_a_lifecycle() {
    let profile: Profile = toml::from_str(CUSTOM).expect("valid profile");
    assert_eq!(profile.name, "hr-legacy");
    assert!(!profile.discovery && !profile.external_id && !profile.put_allowed);
    assert!(profile.groups, "unset fields come from generic");
    assert_eq!(profile.deprovision, Deprovision::Block);
    assert_eq!(profile.auth_hint, "Bearer token from the HR admin page");
    let caps = profile.apply(None);
    assert_eq!(
        caps,
        Capabilities {
            patch: true,
            filter: true,
            etag: true
        }
    );
    let err = toml::from_str::<Profile>("extends = \"gitlab\"\nputallowed = true")
        .expect_err("typo is an error");
    assert!(err.to_string().contains("putallowed"), "{err}");

    let server = ScimServer::start();
    let client = server.client();
    let (found, record) = client.discover(&profile).await.expect("discover");
    assert!(record.is_none(), "discovery off: nothing sent");
    assert_eq!(found.caps, caps);

    let want = spec("grace", "E-7");
    let ops = diff_with(&Desired::Present(want.clone()), None, caps, &profile);
    let [Op::Create(create)] = ops.as_slice() else {
        panic!("expected a create, got {ops:?}");
    };
    let created = client
        .create_user_with(create, &profile)
        .await
        .expect("create")
        .value;
    assert_eq!(created.external_id, None, "externalId was not sent");
    assert_eq!(
        diff_with(
            &Desired::Present(want.clone()),
            Some(&created),
            caps,
            &profile
        ),
        vec![],
        "an account without externalId is in sync"
    );
    for attr in profile.lookup_attributes() {
        assert_eq!(*attr, "userName");
        let hit = client
            .find_user_with(attr, "GRACE", &profile)
            .await
            .expect("find")
            .value;
        assert_eq!(hit.map(|u| u.id), Some(created.id.clone()));
    }

    let moved = UserSpec {
        title: Some("Staff Engineer".into()),
        ..want
    };
    let ops = diff_with(&Desired::Present(moved), Some(&created), caps, &profile);
    assert!(matches!(ops.as_slice(), [Op::Patch { .. }]), "{ops:?}");
    client
        .execute_with(&ops[0], &profile, if_match(caps, Some(&created)))
        .await
        .expect("update");
    // 204 without a body: read the new state and version back.
    let updated = client
        .get_user(&created.id)
        .await
        .expect("get")
        .value
        .expect("exists");
    assert_ne!(updated.etag, created.etag);
    assert_eq!(updated.title.as_deref(), Some("Staff Engineer"));

    let ops = diff_with(&Desired::Deactivated, Some(&updated), caps, &profile);
    assert_eq!(
        ops,
        vec![Op::Patch {
            id: created.id.clone(),
            ops: vec![PatchOp::replace("active", false)]
        }]
    );
    client
        .execute_with(&ops[0], &profile, if_match(caps, Some(&updated)))
        .await
        .expect("deactivate");
    let after = client
        .get_user(&created.id)
        .await
        .expect("get")
        .value
        .expect("kept");
    assert!(!after.active);
    assert_eq!(after.title.as_deref(), Some("Staff Engineer"));
    assert_eq!(after.external_id, None);
}

#[tokio::test]
async fn server_without_patch_generic_puts_and_a_no_put_profile_fails_visibly() {
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
    let generic = Profile::generic();
    let (found, record) = client.discover(&generic).await.expect("discover");
    assert_eq!(
        record.map(|r| r.path),
        Some("/ServiceProviderConfig".into())
    );
    assert!(!found.caps.patch && found.caps.etag);
    let created = client
        .create_user_with(&spec("linus", "E-9"), &generic)
        .await
        .expect("create")
        .value;
    let ops = diff_with(&Desired::Deactivated, Some(&created), found.caps, &generic);
    assert!(matches!(ops.as_slice(), [Op::Replace { .. }]), "{ops:?}");
    let put = client
        .execute_with(&ops[0], &generic, if_match(found.caps, Some(&created)))
        .await
        .expect("PUT with If-Match");
    assert_eq!(put.record.method, "PUT");
    let after = put.value.expect("returned");
    assert!(!after.active);
    assert_eq!(after.to_spec().title.as_deref(), Some("Engineer"));

    // GitLab's profile PATCHes whatever the server says; a server that
    // really lacks PATCH answers 501, a visible, non-retryable failure.
    let gitlab = builtin("gitlab").expect("gitlab");
    let caps = gitlab.apply(Some(found.caps));
    let ops = diff_with(
        &Desired::Present(spec("linus", "E-9")),
        Some(&after),
        caps,
        &gitlab,
    );
    assert!(matches!(ops.as_slice(), [Op::Patch { .. }]), "{ops:?}");
    let err = client
        .execute_with(&ops[0], &gitlab, None)
        .await
        .expect_err("no PATCH here");
    assert_eq!(err.status(), Some(501));
    assert!(!err.is_retryable());
}
