//! SCIM Bulk against a recording server: when discovery lets Tenure use it,
//! the exact `POST /Bulk` it sends, how the limits split work, and how each
//! operation's result maps to what the single call would have returned.

mod recorder;

use std::time::Duration;

use recorder::{spc, spc_bulk, Recorder};
use serde_json::{json, Value};
use tenure_scim::{
    builtin, Auth, BulkItem, BulkLimits, Op, PatchOp, Profile, ScimClient, UserSpec,
};

const CORE: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

fn spec(name: &str, ext: &str) -> UserSpec {
    UserSpec {
        user_name: name.into(),
        external_id: ext.into(),
        given_name: "Ada".into(),
        family_name: "Lovelace".into(),
        display_name: "Ada Lovelace".into(),
        email: format!("{name}@example.com"),
        active: true,
        ..UserSpec::default()
    }
}

fn client(server: &Recorder) -> ScimClient {
    ScimClient::new(
        &server.base_url,
        Auth::Bearer("tok".into()),
        Duration::from_secs(5),
    )
    .expect("client")
}

fn create(bulk_id: &str, name: &str, ext: &str) -> BulkItem {
    BulkItem {
        bulk_id: bulk_id.into(),
        op: Op::Create(spec(name, ext)),
        etag: None,
    }
}

const LIMITS: BulkLimits = BulkLimits {
    max_operations: 100,
    max_payload_size: 1 << 20,
};

#[tokio::test]
async fn discovery_offers_bulk_only_when_announced_and_allowed() {
    let cases: [(Option<Value>, &str, Option<BulkLimits>); 6] = [
        (
            Some(spc_bulk(50, 65536)),
            "generic",
            Some(BulkLimits {
                max_operations: 50,
                max_payload_size: 65536,
            }),
        ),
        (Some(spc(true, true, true)), "generic", None),
        // Announced but unusable: no operation may be sent.
        (Some(spc_bulk(0, 65536)), "generic", None),
        (None, "generic", None),
        // The profile's veto beats the announcement.
        (Some(spc_bulk(50, 65536)), "zulip", None),
        (Some(spc_bulk(50, 65536)), "gitlab", None),
    ];
    for (doc, profile, want) in cases {
        let server = Recorder::start(doc.clone()).await;
        let (found, _) = client(&server)
            .discover(&builtin(profile).expect("profile"))
            .await
            .expect("discover");
        assert_eq!(found.bulk, want, "{profile} with {doc:?}");
    }
    // A custom profile can turn bulk off for an app that misannounces it.
    let off: Profile = serde_json::from_value(json!({"bulk": false})).expect("profile");
    let server = Recorder::start(Some(spc_bulk(50, 65536))).await;
    let (found, _) = client(&server).discover(&off).await.expect("discover");
    assert_eq!(found.bulk, None);
}

#[tokio::test]
async fn one_request_carries_every_operation_and_each_result_maps_back() {
    let server = Recorder::start(Some(spc_bulk(100, 1 << 20))).await;
    let existing = server.seed("grace");
    let c = client(&server);
    let items = vec![
        create("p-1", "ada", "E-1"),
        // Taken: answered 409 inside the bulk response.
        create("p-2", "grace", "E-2"),
        BulkItem {
            bulk_id: "p-3".into(),
            op: Op::Patch {
                id: existing.clone(),
                ops: vec![PatchOp::replace("active", false)],
            },
            etag: Some("W/\"1\"".into()),
        },
    ];
    let call = c
        .bulk_users(&items, &Profile::generic(), LIMITS, None)
        .await
        .expect("bulk");

    // Exactly one request, and exactly this body.
    let log = server.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].path, "/Bulk");
    assert_eq!(log[0].auth.as_deref(), Some("Bearer"));
    let user = |name: &str, ext: &str| {
        json!({
            "schemas": [CORE], "userName": name, "externalId": ext,
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "displayName": "Ada Lovelace",
            "emails": [{"value": format!("{name}@example.com"), "type": "work", "primary": true}],
            "active": true,
        })
    };
    assert_eq!(
        log[0].body,
        Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations": [
                {"method": "POST", "path": "/Users", "bulkId": "p-1", "data": user("ada", "E-1")},
                {"method": "POST", "path": "/Users", "bulkId": "p-2", "data": user("grace", "E-2")},
                {"method": "PATCH", "path": format!("/Users/{existing}"), "bulkId": "p-3",
                 "version": "W/\"1\"",
                 "data": {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                          "Operations": [{"op": "replace", "path": "active", "value": false}]}},
            ]
        }))
    );

    assert_eq!(call.record.method, "POST");
    assert_eq!(call.record.path, "/Bulk");
    assert_eq!(call.record.status, Some(200));
    assert_eq!(call.results.len(), 3);

    // The create: a Call like POST /Users's, id from the location.
    let created = call.results[0]
        .as_ref()
        .expect("ran")
        .as_ref()
        .expect("created");
    let ada = created.value.as_ref().expect("user");
    assert_eq!(ada.user_name, "ada");
    assert_eq!(ada.external_id.as_deref(), Some("E-1"));
    assert_eq!(ada.etag.as_deref(), Some("W/\"1\""));
    assert_eq!(created.record.method, "POST");
    assert_eq!(created.record.path, "/Users");
    assert_eq!(created.record.status, Some(201));
    assert_eq!(created.record.remote_id.as_deref(), Some(ada.id.as_str()));
    assert!(server.user(&ada.id).is_some(), "really created");

    // The conflict: the same error a single POST /Users gets.
    let conflict = call.results[1]
        .as_ref()
        .expect("ran")
        .as_ref()
        .expect_err("409");
    assert_eq!(conflict.status(), Some(409));
    assert_eq!(conflict.scim_type(), Some("uniqueness"));
    assert!(!conflict.is_retryable());
    let record = conflict.record().expect("record");
    assert_eq!(
        (record.method.as_str(), record.path.as_str()),
        ("POST", "/Users")
    );
    assert!(
        record.error.as_deref().is_some_and(|e| e.contains("409")),
        "{record:?}"
    );

    // The PATCH: no body in the answer, as a 204 would be.
    let patched = call.results[2]
        .as_ref()
        .expect("ran")
        .as_ref()
        .expect("patched");
    assert_eq!(patched.value, None);
    assert_eq!(patched.record.method, "PATCH");
    assert_eq!(patched.record.status, Some(200));
    assert_eq!(patched.record.remote_id.as_deref(), Some(existing.as_str()));
    assert_eq!(server.user(&existing).expect("user")["active"], false);
}

#[tokio::test]
async fn fail_on_errors_leaves_the_rest_unknown() {
    let server = Recorder::start(Some(spc_bulk(100, 1 << 20))).await;
    server.seed("grace");
    let c = client(&server);
    let items = vec![create("a", "grace", "E-2"), create("b", "ada", "E-1")];
    let call = c
        .bulk_users(&items, &Profile::generic(), LIMITS, Some(1))
        .await
        .expect("bulk");
    assert_eq!(
        server.log()[0].body.as_ref().expect("body")["failOnErrors"],
        1
    );
    assert!(matches!(&call.results[0], Some(Err(e)) if e.status() == Some(409)));
    assert!(call.results[1].is_none(), "not run, so nothing is known");
}

#[tokio::test]
async fn limits_split_the_work_and_nothing_oversized_is_sent() {
    let server = Recorder::start(Some(spc_bulk(2, 1 << 20))).await;
    let c = client(&server);
    let items: Vec<BulkItem> = (0..5)
        .map(|i| create(&format!("b{i}"), &format!("u{i}"), &format!("E-{i}")))
        .collect();
    let by_count = BulkLimits {
        max_operations: 2,
        max_payload_size: 1 << 20,
    };
    let chunks = by_count
        .chunks(&c, &items, &Profile::generic())
        .expect("chunks");
    assert_eq!(chunks, vec![0..2, 2..4, 4..5]);

    // About 330 bytes per create: a 900-byte limit fits two per request.
    let by_size = BulkLimits {
        max_operations: 100,
        max_payload_size: 900,
    };
    let chunks = by_size
        .chunks(&c, &items, &Profile::generic())
        .expect("chunks");
    assert_eq!(chunks, vec![0..2, 2..4, 4..5]);
    for range in chunks {
        c.bulk_users(&items[range], &Profile::generic(), by_size, None)
            .await
            .expect("fits");
    }
    for r in server.log() {
        let body = serde_json::to_vec(&r.body).expect("json");
        assert!(body.len() <= 900, "{} bytes", body.len());
    }

    server.clear_log();
    let tiny = BulkLimits {
        max_operations: 100,
        max_payload_size: 100,
    };
    let err = c
        .bulk_users(&items[..1], &Profile::generic(), tiny, None)
        .await
        .expect_err("too large");
    assert!(matches!(err, tenure_scim::ScimError::Config(_)), "{err}");
    let err = c
        .bulk_users(&items[..3], &Profile::generic(), by_count, None)
        .await
        .expect_err("too many");
    assert!(matches!(err, tenure_scim::ScimError::Config(_)), "{err}");
    let dup = vec![create("x", "a", "E-a"), create("x", "b", "E-b")];
    assert!(c
        .bulk_users(&dup, &Profile::generic(), LIMITS, None)
        .await
        .is_err());
    // Nextcloud does not store externalId: the create goes without it, and
    // a PUT under GitLab's profile is refused before anything is sent.
    let put = BulkItem {
        bulk_id: "r".into(),
        op: Op::Replace {
            id: "u1".into(),
            spec: spec("ada", "E-1"),
        },
        etag: None,
    };
    let gitlab = builtin("gitlab").expect("gitlab");
    assert!(c.bulk_users(&[put], &gitlab, LIMITS, None).await.is_err());
    assert!(server.log().is_empty(), "nothing sent: {:?}", server.log());
    let nextcloud = builtin("nextcloud").expect("nextcloud");
    c.bulk_users(&items[..1], &nextcloud, LIMITS, None)
        .await
        .expect("bulk");
    let sent = server.log()[0].body.clone().expect("body");
    assert!(sent["Operations"][0]["data"].get("externalId").is_none());
}
