//! Against a real SCIM server (scim2-server), so the client's requests, PATCH
//! paths and filters are checked against an independent implementation.

mod common;

use std::time::Duration;

use common::{spec, ScimServer, TOKEN};
use tenure_scim::{
    diff, Auth, Capabilities, Desired, Op, RemoteUser, ScimClient, ScimError, UserSpec,
};

#[tokio::test]
async fn crud_round_trip() {
    let server = ScimServer::start();
    let client = server.client();
    let want = spec("Ada", "E-1");

    let created = client.create_user(&want).await.expect("create");
    let user = created.value;
    assert_eq!(created.record.method, "POST");
    assert_eq!(created.record.path, "/Users");
    assert_eq!(created.record.status, Some(201));
    assert_eq!(created.record.remote_id.as_deref(), Some(user.id.as_str()));
    assert_eq!(user.to_spec(), want);
    assert!(user.etag.is_some(), "meta.version is the ETag");

    let by_ext = client.find_user("externalId", "E-1").await.expect("find");
    assert_eq!(by_ext.value.as_ref().map(|u| &u.id), Some(&user.id));
    assert_eq!(by_ext.record.status, Some(200));
    assert!(by_ext
        .record
        .path
        .starts_with("/Users?filter=externalId eq"));
    // externalId is case-exact.
    let none = client.find_user("externalId", "e-1").await.expect("find");
    assert_eq!(none.value, None);
    assert_eq!(none.record.status, Some(200));
    // userName is case-insensitive.
    let by_name = client.find_user("userName", "ADA").await.expect("find");
    assert_eq!(by_name.value.as_ref().map(|u| &u.id), Some(&user.id));
    let missing = client.find_user("userName", "nobody").await.expect("find");
    assert_eq!(missing.value, None);

    let got = client.get_user(&user.id).await.expect("get");
    assert_eq!(got.record.path, format!("/Users/{}", user.id));
    assert_eq!(
        got.value.as_ref().map(RemoteUser::to_spec),
        Some(want.clone())
    );

    // PATCH, then read back: the server really changed.
    let mut changed = want.clone();
    changed.given_name = "Augusta".into();
    changed.email = "augusta@example.com".into();
    changed.title = None;
    changed.department = Some("Analytics".into());
    changed.active = false;
    let ops = diff(
        &Desired::Present(changed.clone()),
        Some(&user),
        Capabilities::default(),
    );
    let [Op::Patch { id, ops }] = ops.as_slice() else {
        panic!("expected one patch, got {ops:?}");
    };
    let patched = client.patch_user(id, ops).await.expect("patch");
    assert!(matches!(patched.record.status, Some(200 | 204)));
    let after = client
        .get_user(&user.id)
        .await
        .expect("get")
        .value
        .expect("still there");
    assert_eq!(after.to_spec(), changed);
    assert_ne!(after.etag, user.etag, "the version moves on change");

    // PUT replaces everything it is given and drops what it is not.
    let mut replaced = spec("ada.l", "E-1");
    replaced.employee_number = None;
    replaced.department = None;
    replaced.display_name = String::new();
    let put = client.replace_user(&user.id, &replaced).await.expect("put");
    assert_eq!(put.value.to_spec(), replaced);
    let after = client.get_user(&user.id).await.expect("get").value;
    assert_eq!(after.map(|u| u.to_spec()), Some(replaced.clone()));

    let deleted = client.delete_user(&user.id).await.expect("delete");
    assert_eq!(deleted.record.status, Some(204));
    let gone = client.get_user(&user.id).await.expect("get");
    assert_eq!(gone.value, None);
    assert_eq!(gone.record.status, Some(404));
    let again = client
        .delete_user(&user.id)
        .await
        .expect("delete is idempotent");
    assert_eq!(again.record.status, Some(404));
    // PUT never creates.
    let err = client
        .replace_user(&user.id, &replaced)
        .await
        .expect_err("put on a deleted user");
    assert_eq!(err.status(), Some(404));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn duplicate_create_is_uniqueness_conflict() {
    let server = ScimServer::start();
    let client = server.client();
    client
        .create_user(&spec("grace", "E-2"))
        .await
        .expect("create");
    // Same userName up to case: userName is unique case-insensitively.
    let err = client
        .create_user(&spec("GRACE", "E-3"))
        .await
        .expect_err("duplicate");
    match &err {
        ScimError::Http {
            status,
            scim_type,
            record,
            ..
        } => {
            assert_eq!(*status, 409);
            assert_eq!(scim_type.as_deref(), Some("uniqueness"));
            assert_eq!(record.status, Some(409));
            assert!(record
                .error
                .as_deref()
                .is_some_and(|e| e.contains("uniqueness")));
        }
        other => panic!("expected Http 409, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(err.scim_type(), Some("uniqueness"));
}

#[tokio::test]
async fn wrong_token_is_401_and_not_retryable() {
    let server = ScimServer::start();
    let secret = "wrong-secret-value";
    let client = ScimClient::new(
        &server.tenant_url(),
        Auth::Bearer(secret.into()),
        Duration::from_secs(10),
    )
    .expect("client");
    let err = client.find_user("userName", "x").await.expect_err("401");
    assert_eq!(err.status(), Some(401));
    assert!(!err.is_retryable());
    let record = err.record().expect("record");
    assert_eq!(record.status, Some(401));
    for text in [
        err.to_string(),
        format!("{err:?}"),
        format!("{client:?}"),
        serde_json::to_string(record).expect("json"),
    ] {
        assert!(!text.contains(secret), "secret leaked: {text}");
    }
}

#[tokio::test]
async fn service_provider_config_reports_capabilities() {
    let server = ScimServer::start();
    let caps = server
        .client()
        .service_provider_config()
        .await
        .expect("discovery");
    assert_eq!(
        caps.value,
        Capabilities {
            patch: true,
            filter: true,
            etag: true
        }
    );
    assert_eq!(caps.record.path, "/ServiceProviderConfig");
}

#[tokio::test]
async fn filter_values_are_escaped() {
    let server = ScimServer::start();
    let client = server.client();
    let ext = r#"we"ird\id eq "x" or userName pr"#;
    let created = client
        .create_user(&spec("weird", ext))
        .await
        .expect("create");
    let found = client.find_user("externalId", ext).await.expect("find");
    assert_eq!(found.value.map(|u| u.id), Some(created.value.id));
    // Had the quote not been escaped this would match every user.
    client
        .create_user(&spec("other", "E-9"))
        .await
        .expect("create");
    let none = client
        .find_user("externalId", r#"x" or userName pr or externalId eq "y"#)
        .await
        .expect("find");
    assert_eq!(none.value, None);
}

#[tokio::test]
async fn unsupported_find_attribute_and_transport_errors() {
    let server = ScimServer::start();
    let client = server.client();
    let err = client.find_user("title", "x").await.expect_err("config");
    assert!(matches!(err, ScimError::Config(_)));
    assert!(err.record().is_none());

    // Nothing listens on a port we just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let dead = ScimClient::new(
        &format!("http://127.0.0.1:{port}/t/v2"),
        Auth::Bearer(TOKEN.into()),
        Duration::from_secs(2),
    )
    .expect("client");
    let err = dead.get_user("x").await.expect_err("no server");
    match &err {
        ScimError::Transport {
            record, timeout, ..
        } => {
            assert!(!timeout);
            assert_eq!(record.status, None);
            assert_eq!(record.path, "/Users/x");
            assert!(record.error.is_some());
        }
        other => panic!("expected transport error, got {other:?}"),
    }
    assert!(err.is_retryable());
}

/// One reconcile pass as the engine would run it: look up, decide, act.
async fn reconcile(client: &ScimClient, desired: &Desired, external_id: &str, caps: Capabilities) {
    let remote = client
        .find_user("externalId", external_id)
        .await
        .expect("find")
        .value;
    for op in diff(desired, remote.as_ref(), caps) {
        client.execute(&op).await.expect("execute");
    }
}

async fn assert_converged(
    client: &ScimClient,
    desired: &Desired,
    external_id: &str,
    caps: Capabilities,
) -> Option<RemoteUser> {
    let remote = client
        .find_user("externalId", external_id)
        .await
        .expect("find")
        .value;
    let left = diff(desired, remote.as_ref(), caps);
    assert!(left.is_empty(), "not converged: {left:?} for {remote:?}");
    remote
}

async fn reconcile_lifecycle(caps: Capabilities) {
    let server = ScimServer::start();
    let client = server.client();
    let ext = "E-42";

    // Joiner.
    let hired = spec("Linus", ext);
    let present = Desired::Present(hired.clone());
    reconcile(&client, &present, ext, caps).await;
    let remote = assert_converged(&client, &present, ext, caps)
        .await
        .expect("created");
    assert_eq!(remote.to_spec(), hired);

    // Mover: every kind of change, including clearing attributes and a
    // case-only userName change that must not cause a write.
    let moved = UserSpec {
        user_name: "LINUS".into(),
        given_name: "Linus B.".into(),
        family_name: String::new(),
        display_name: "Linus Benedict".into(),
        email: "lbt@example.com".into(),
        title: None,
        department: Some("Kernel".into()),
        employee_number: None,
        cost_center: Some("CC-2".into()),
        organization: None,
        division: Some(String::new()),
        manager: Some("torvalds-boss".into()),
        ..hired.clone()
    };
    let present = Desired::Present(moved.clone());
    reconcile(&client, &present, ext, caps).await;
    let remote = assert_converged(&client, &present, ext, caps)
        .await
        .expect("still there");
    if caps.patch {
        assert_eq!(remote.user_name, "Linus", "case-only change is not written");
    }
    let user_name_after_move = remote.user_name.clone();
    assert_eq!(remote.family_name, None);
    assert_eq!(remote.title, None);
    assert_eq!(remote.employee_number, None);
    assert_eq!(remote.department.as_deref(), Some("Kernel"));
    assert_eq!(remote.cost_center.as_deref(), Some("CC-2"));
    assert_eq!(remote.organization, None);
    assert_eq!(remote.division, None);
    assert_eq!(remote.manager.as_deref(), Some("torvalds-boss"));

    // Leaver, first deactivated: the profile must survive.
    reconcile(&client, &Desired::Deactivated, ext, caps).await;
    let remote = assert_converged(&client, &Desired::Deactivated, ext, caps)
        .await
        .expect("kept");
    assert!(!remote.active);
    let mut expected = moved.clone();
    expected.user_name = user_name_after_move;
    expected.division = None;
    expected.active = false;
    assert_eq!(remote.to_spec(), expected);

    // Then deleted.
    reconcile(&client, &Desired::Deleted, ext, caps).await;
    assert!(assert_converged(&client, &Desired::Deleted, ext, caps)
        .await
        .is_none());

    // Neither Deactivated nor Deleted brings the account back.
    reconcile(&client, &Desired::Deactivated, ext, caps).await;
    assert!(assert_converged(&client, &Desired::Deleted, ext, caps)
        .await
        .is_none());
}

#[tokio::test]
async fn reconcile_converges_with_patch() {
    reconcile_lifecycle(Capabilities::default()).await;
}

#[tokio::test]
async fn reconcile_converges_with_put_only() {
    reconcile_lifecycle(Capabilities {
        patch: false,
        ..Capabilities::default()
    })
    .await;
}

#[tokio::test]
async fn patch_on_account_without_email_or_enterprise_data() {
    let server = ScimServer::start();
    let client = server.client();
    let bare = UserSpec {
        email: String::new(),
        title: None,
        department: None,
        employee_number: None,
        cost_center: None,
        organization: None,
        division: None,
        manager: None,
        display_name: String::new(),
        given_name: String::new(),
        family_name: String::new(),
        ..spec("bare", "E-7")
    };
    let created = client.create_user(&bare).await.expect("create").value;
    assert_eq!(created.to_spec(), bare);
    let full = spec("bare", "E-7");
    for op in diff(
        &Desired::Present(full.clone()),
        Some(&created),
        Capabilities::default(),
    ) {
        client.execute(&op).await.expect("patch adds attributes");
    }
    let after = client
        .get_user(&created.id)
        .await
        .expect("get")
        .value
        .expect("still there");
    assert_eq!(after.to_spec(), full);

    // And back: every optional attribute removed, externalId included.
    let stripped = UserSpec {
        external_id: String::new(),
        ..bare
    };
    let ops = diff(
        &Desired::Present(stripped.clone()),
        Some(&after),
        Capabilities::default(),
    );
    assert_eq!(ops.len(), 1);
    for op in &ops {
        client.execute(op).await.expect("patch removes attributes");
    }
    let after = client.get_user(&created.id).await.expect("get").value;
    assert_eq!(after.map(|u| u.to_spec()), Some(stripped));
}

/// Every enterprise attribute Tenure maps, the manager as a reference to
/// another account on the same server: created, changed, cleared, and each
/// step converges (a second diff finds nothing to do).
#[tokio::test]
async fn enterprise_extension_round_trip_converges() {
    let server = ScimServer::start();
    let client = server.client();
    let caps = Capabilities::default();
    let boss = UserSpec {
        manager: None,
        ..spec("grace", "E-1")
    };
    let boss = client.create_user(&boss).await.expect("create boss").value;
    let other_boss = UserSpec {
        manager: None,
        ..spec("alan", "E-2")
    };
    let other_boss = client
        .create_user(&other_boss)
        .await
        .expect("create other boss")
        .value;

    let report = UserSpec {
        employee_number: Some("7".into()),
        department: Some("Compilers".into()),
        cost_center: Some("CC-7".into()),
        organization: Some("Navy".into()),
        division: Some("Research".into()),
        manager: Some(boss.id.clone()),
        ..spec("kathleen", "E-3")
    };
    let created = client.create_user(&report).await.expect("create").value;
    assert_eq!(created.to_spec(), report);
    let got = client
        .get_user(&created.id)
        .await
        .expect("get")
        .value
        .expect("there");
    assert_eq!(got.manager.as_deref(), Some(boss.id.as_str()));
    assert!(diff(&Desired::Present(report.clone()), Some(&got), caps).is_empty());

    for next in [
        UserSpec {
            cost_center: Some("CC-8".into()),
            organization: None,
            division: Some("Ops".into()),
            manager: Some(other_boss.id.clone()),
            ..report.clone()
        },
        UserSpec {
            cost_center: None,
            organization: Some("Navy".into()),
            division: None,
            manager: None,
            ..report.clone()
        },
        report.clone(),
    ] {
        let current = client
            .get_user(&created.id)
            .await
            .expect("get")
            .value
            .expect("there");
        let want = Desired::Present(next.clone());
        let ops = diff(&want, Some(&current), caps);
        let [Op::Patch { id, ops }] = ops.as_slice() else {
            panic!("expected one patch, got {ops:?}");
        };
        client.patch_user(id, ops).await.expect("patch");
        let after = client
            .get_user(&created.id)
            .await
            .expect("get")
            .value
            .expect("there");
        assert_eq!(after.to_spec(), next);
        assert!(
            diff(&want, Some(&after), caps).is_empty(),
            "not converged: {after:?}"
        );
        assert_eq!(
            tenure_scim::apply_patch(&current, ops).map(|r| r.to_spec()),
            Some(next),
            "the local model of the patch agrees with the server"
        );
    }
}
