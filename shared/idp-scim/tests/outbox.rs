//! The outbox: every change to what a user looks like leaves a snapshot,
//! written in the same transaction, that `pending` returns until
//! `mark_published` removes it.

mod common;

use std::time::Duration;

use common::{filter, start, PROVIDER};
use serde_json::json;
use tenure_domain::IdpIdentity;
use tenure_idp_scim::{mark_published, pending};

/// Takes what is pending, checks it is oldest first, and marks it published.
async fn drain(s: &common::Server) -> anyhow::Result<Vec<IdpIdentity>> {
    let rows = pending(&s.pool, PROVIDER, 1000).await?;
    let seqs: Vec<i64> = rows.iter().map(|(seq, _)| *seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(seqs, sorted, "oldest first");
    mark_published(&s.pool, &seqs).await?;
    assert!(pending(&s.pool, PROVIDER, 1000).await?.is_empty());
    Ok(rows.into_iter().map(|(_, i)| i).collect())
}

#[tokio::test]
async fn authentik_traffic_leaves_one_snapshot_per_change() -> anyhow::Result<()> {
    let s = start().await?;
    assert!(pending(&s.pool, PROVIDER, 10).await?.is_empty());

    // 1. Authentik creates the user (its default mapping: no displayName,
    // no active; externalId is the Authentik uid).
    let user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "ana.silva",
        "externalId": "ak-uid-1",
        "name": {"formatted": "Ana Silva", "givenName": "Ana", "familyName": "Silva"},
        "emails": [{"value": "Ana.Silva@Example.com", "type": "other", "primary": true}],
        "photos": [],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "E-1001"},
    });
    let r = s.post("/Users", &user).await?;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.id();
    let snaps = drain(&s).await?;
    assert_eq!(
        snaps,
        vec![IdpIdentity {
            provider: PROVIDER.into(),
            idp_id: id.clone(),
            user_name: "ana.silva".into(),
            external_id: Some("ak-uid-1".into()),
            emails: vec!["Ana.Silva@Example.com".into()],
            employee_number: Some("E-1001".into()),
            display_name: Some("Ana Silva".into()),
            active: true,
            groups: vec![],
            deleted: false,
        }]
    );

    // 2. A second create of the same userName (another worker, a retry) is
    // refused and writes nothing.
    let r = s.post("/Users", &user).await?;
    assert_eq!(r.status, 409);
    assert_eq!(r.scim_type(), "uniqueness");
    assert!(drain(&s).await?.is_empty());

    // 3. Authentik looks the user up by userName after the 409.
    let r = s
        .get(&format!("/Users?{}", filter("userName eq \"ANA.SILVA\"")))
        .await?;
    assert_eq!(r.body["totalResults"], 1);
    assert_eq!(r.body["Resources"][0]["id"], json!(id));

    // 4. It then updates with a full PUT: the same data publishes nothing,
    // changed data publishes the new snapshot.
    let r = s.put(&format!("/Users/{id}"), &user).await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        drain(&s).await?.is_empty(),
        "an unchanged PUT publishes nothing"
    );
    let mut changed = user.clone();
    changed["name"]["formatted"] = json!("Ana M. Silva");
    changed["active"] = json!(false);
    let r = s.put(&format!("/Users/{id}"), &changed).await?;
    assert_eq!(r.status, 200, "{}", r.body);
    let snaps = drain(&s).await?;
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].display_name.as_deref(), Some("Ana M. Silva"));
    assert!(!snaps[0].active);
    assert!(snaps[0].groups.is_empty());

    // 5. It creates a group (no members yet): no user changes.
    let r = s
        .post(
            "/Groups",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "displayName": "Engineering", "externalId": "ak-group-pk"}),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.body);
    let g = r.id();
    assert!(drain(&s).await?.is_empty());

    // 6. It adds the member with PATCH.
    let r = s
        .patch(
            &format!("/Groups/{g}"),
            json!([{"op": "add", "path": "members", "value": [{"value": id}]}]),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    let snaps = drain(&s).await?;
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].idp_id, id);
    assert_eq!(snaps[0].groups, vec!["Engineering".to_string()]);
    assert!(!snaps[0].deleted);

    // 7. It removes the member with the value-list form.
    let r = s
        .patch(
            &format!("/Groups/{g}"),
            json!([{"op": "remove", "path": "members", "value": [{"value": id}]}]),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    let snaps = drain(&s).await?;
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].groups.is_empty());

    // 8. It deletes the user.
    s.patch(
        &format!("/Groups/{g}"),
        json!([{"op": "add", "path": "members", "value": [{"value": id}]}]),
    )
    .await?;
    assert_eq!(drain(&s).await?.len(), 1);
    let r = s.delete(&format!("/Users/{id}")).await?;
    assert_eq!(r.status, 204);
    let snaps = drain(&s).await?;
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].deleted);
    assert_eq!(snaps[0].idp_id, id);
    assert_eq!(snaps[0].user_name, "ana.silva");
    assert_eq!(
        snaps[0].groups,
        vec!["Engineering".to_string()],
        "as last known"
    );
    Ok(())
}

#[tokio::test]
async fn group_changes_reach_every_affected_member() -> anyhow::Result<()> {
    let s = start().await?;
    let a = s.user("a", json!({})).await?;
    let b = s.user("b", json!({})).await?;
    let c = s.user("c", json!({})).await?;
    drain(&s).await?;

    let admins = s.group("Admins", &[&a, &b]).await?;
    let staff = s.group("Staff", &[&a]).await?;
    let snaps = drain(&s).await?;
    // a twice (two groups), b once; each snapshot is the level at its time.
    let of = |snaps: &[IdpIdentity], id: &str| -> Vec<Vec<String>> {
        snaps
            .iter()
            .filter(|i| i.idp_id == id)
            .map(|i| i.groups.clone())
            .collect()
    };
    assert_eq!(
        of(&snaps, &a),
        vec![
            vec!["Admins".to_string()],
            vec!["Admins".into(), "Staff".into()]
        ]
    );
    assert_eq!(of(&snaps, &b), vec![vec!["Admins".to_string()]]);
    assert!(of(&snaps, &c).is_empty());

    // A rename changes every member's snapshot.
    let r = s
        .patch(
            &format!("/Groups/{admins}"),
            json!([{"op": "replace", "path": "displayName", "value": "Admin"}]),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    let snaps = drain(&s).await?;
    assert_eq!(
        of(&snaps, &a),
        vec![vec!["Admin".to_string(), "Staff".into()]]
    );
    assert_eq!(of(&snaps, &b), vec![vec!["Admin".to_string()]]);
    assert_eq!(snaps.len(), 2);

    // A PUT of the group that swaps b for c.
    let r = s
        .put(
            &format!("/Groups/{admins}"),
            &json!({"displayName": "Admin", "members": [{"value": a}, {"value": c}]}),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    let snaps = drain(&s).await?;
    assert_eq!(snaps.len(), 2, "a is unchanged");
    assert_eq!(of(&snaps, &b), vec![Vec::<String>::new()]);
    assert_eq!(of(&snaps, &c), vec![vec!["Admin".to_string()]]);

    // Deleting a group takes it away from its members.
    assert_eq!(s.delete(&format!("/Groups/{staff}")).await?.status, 204);
    let snaps = drain(&s).await?;
    assert_eq!(of(&snaps, &a), vec![vec!["Admin".to_string()]]);
    assert_eq!(snaps.len(), 1);

    // A failed PATCH writes no snapshot.
    let r = s
        .patch(
            &format!("/Groups/{admins}"),
            json!([{"op": "remove", "path": "members", "value": [{"value": a}]},
                   {"op": "add", "path": "members", "value": [{"value": uuid::Uuid::new_v4()}]}]),
        )
        .await?;
    assert_eq!(r.status, 400);
    assert!(drain(&s).await?.is_empty());

    // User PATCHes publish too; user writes that change nothing visible to
    // the engine (a photo) don't.
    let r = s
        .patch(
            &format!("/Users/{a}"),
            json!([{"op": "add", "path": "photos", "value": [{"value": "https://p.test/a.png"}]}]),
        )
        .await?;
    assert_eq!(r.status, 200);
    assert!(drain(&s).await?.is_empty());
    s.patch(
        &format!("/Users/{a}"),
        json!([{"op": "add", "path": "emails", "value": [{"value": "a@x.org"}]}]),
    )
    .await?;
    let snaps = drain(&s).await?;
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].emails, vec!["a@x.org".to_string()]);
    Ok(())
}

#[tokio::test]
async fn changed_wakes_the_relay_and_limit_pages_the_outbox() -> anyhow::Result<()> {
    let s = start().await?;
    let p = s.provider.clone();
    let waiter =
        tokio::spawn(
            async move { tokio::time::timeout(Duration::from_secs(10), p.changed()).await },
        );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = s.user("first", json!({})).await?;
    assert!(waiter.await?.is_ok(), "changed() resolved after a write");
    // A write while nobody waits leaves a permit.
    s.user("second", json!({})).await?;
    tokio::time::timeout(Duration::from_secs(5), s.provider.changed()).await?;

    for i in 0..3 {
        s.user(&format!("more{i}"), json!({})).await?;
    }
    let page = pending(&s.pool, PROVIDER, 2).await?;
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].1.idp_id, first);
    mark_published(&s.pool, &[page[0].0]).await?;
    let rest = pending(&s.pool, PROVIDER, 100).await?;
    assert_eq!(rest.len(), 4);
    assert_eq!(rest[0].0, page[1].0);
    assert!(pending(&s.pool, "another-idp", 100).await?.is_empty());
    mark_published(&s.pool, &[]).await?;
    Ok(())
}
