//! SCIM Bulk against the real scim2-server: what its discovery announces,
//! and that its answers map to the results of the single calls.

mod common;

use common::{spec, ScimServer};
use tenure_scim::{BulkItem, BulkLimits, Op, PatchOp, Profile, RemoteUser, ScimClient, UserSpec};

fn create(bulk_id: &str, s: UserSpec) -> BulkItem {
    BulkItem {
        bulk_id: bulk_id.into(),
        op: Op::Create(s),
        etag: None,
    }
}

async fn get(client: &ScimClient, id: &str) -> Option<RemoteUser> {
    client.get_user(id).await.expect("get").value
}

#[tokio::test]
async fn creates_conflicts_and_conditional_writes_in_one_request() {
    let server = ScimServer::start();
    let client = server.client();
    let (found, _) = client
        .discover(&Profile::generic())
        .await
        .expect("discover");
    let limits = found.bulk.expect("scim2-server announces bulk");
    assert_eq!(
        limits,
        BulkLimits {
            max_operations: 1000,
            max_payload_size: 1_048_576
        }
    );

    let taken = client
        .create_user(&spec("grace", "E-0"))
        .await
        .expect("create")
        .value;
    let items = vec![
        create("b1", spec("ada", "E-1")),
        create("b2", spec("GRACE", "E-2")),
        create("b3", spec("alan", "E-3")),
    ];
    let call = client
        .bulk_users(&items, &Profile::generic(), limits, None)
        .await
        .expect("bulk");
    assert_eq!(call.record.path, "/Bulk");
    assert_eq!(call.record.status, Some(200));
    let mut created = Vec::new();
    for i in [0, 2] {
        let ok = call.results[i]
            .as_ref()
            .expect("ran")
            .as_ref()
            .expect("created");
        assert_eq!(ok.record.status, Some(201));
        let user = ok.value.clone().expect("user");
        let stored = get(&client, &user.id).await.expect("exists");
        assert_eq!(stored.to_spec(), items[i].op_spec());
        assert_eq!(user.to_spec(), stored.to_spec(), "as sent is as stored");
        assert_eq!(user.etag, stored.etag, "version from the answer");
        created.push(stored);
    }
    // A taken userName (case-insensitively) is the 409 of a single create.
    let conflict = call.results[1]
        .as_ref()
        .expect("ran")
        .as_ref()
        .expect_err("409");
    assert_eq!(conflict.status(), Some(409));
    assert_eq!(conflict.scim_type(), Some("uniqueness"));
    let single = client
        .create_user(&spec("GRACE", "E-2"))
        .await
        .expect_err("409");
    assert_eq!(single.status(), conflict.status());
    assert_eq!(single.scim_type(), conflict.scim_type());

    // Conditional writes: the current version lands, a stale one is a 412
    // as with If-Match, and a delete of a missing user counts as done.
    let (ada, alan) = (&created[0], &created[1]);
    let items = vec![
        BulkItem {
            bulk_id: "p1".into(),
            op: Op::Patch {
                id: ada.id.clone(),
                ops: vec![PatchOp::replace("title", "Countess")],
            },
            etag: ada.etag.clone(),
        },
        BulkItem {
            bulk_id: "p2".into(),
            op: Op::Patch {
                id: alan.id.clone(),
                ops: vec![PatchOp::replace("title", "Stale")],
            },
            etag: Some("W/\"stale\"".into()),
        },
        BulkItem {
            bulk_id: "d1".into(),
            op: Op::Delete {
                id: taken.id.clone(),
            },
            etag: None,
        },
        BulkItem {
            bulk_id: "d2".into(),
            op: Op::Delete {
                id: "no-such-user".into(),
            },
            etag: None,
        },
    ];
    let call = client
        .bulk_users(&items, &Profile::generic(), limits, None)
        .await
        .expect("bulk");
    assert!(
        matches!(&call.results[0], Some(Ok(_))),
        "{:?}",
        call.results[0]
    );
    let stale = call.results[1]
        .as_ref()
        .expect("ran")
        .as_ref()
        .expect_err("412");
    assert!(stale.is_precondition_failed(), "{stale}");
    assert!(matches!(&call.results[2], Some(Ok(c)) if c.value.is_none()));
    assert!(matches!(&call.results[3], Some(Ok(c)) if c.record.status == Some(404)));
    assert_eq!(
        get(&client, &ada.id).await.and_then(|u| u.title).as_deref(),
        Some("Countess")
    );
    assert_eq!(
        get(&client, &alan.id)
            .await
            .and_then(|u| u.title)
            .as_deref(),
        Some("Engineer")
    );
    assert!(get(&client, &taken.id).await.is_none());
}

trait OpSpec {
    fn op_spec(&self) -> UserSpec;
}

impl OpSpec for BulkItem {
    fn op_spec(&self) -> UserSpec {
        match &self.op {
            Op::Create(s) => s.clone(),
            other => panic!("not a create: {other:?}"),
        }
    }
}
