//! Values the mirror or the engine could not store or index are refused at
//! the edge with 400 `invalidValue` naming the attribute (never a 500), and
//! a change whose identity snapshot could not be published is refused with
//! 413 — over real HTTP against a real PostgreSQL.

mod common;

use common::{filter, start, start_with};
use serde_json::json;

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn refused(r: &common::Resp, attribute: &str) {
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.scim_type(), "invalidValue", "{}", r.body);
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("'{attribute}'")),
        "the error names {attribute}: {detail}"
    );
}

#[tokio::test]
async fn nul_characters_anywhere_are_a_400_naming_the_attribute() -> anyhow::Result<()> {
    let s = start().await?;
    refused(
        &s.post("/Users", &json!({"userName": "ana\u{0}"})).await?,
        "userName",
    );
    refused(
        &s.post(
            "/Users",
            &json!({"userName": "ana", "name": {"givenName": "A\u{0}na"}}),
        )
        .await?,
        "name.givenName",
    );
    refused(
        &s.post(
            "/Users",
            &json!({"userName": "ana", ENTERPRISE: {"department": "R\u{0}D"}}),
        )
        .await?,
        &format!("{ENTERPRISE}:department"),
    );
    refused(
        &s.post(
            "/Users",
            &json!({"userName": "ana", "urn:example:custom:1.0:User": {"note": "x\u{0}"}}),
        )
        .await?,
        "urn:example:custom:1.0:User:note",
    );
    let id = s.user("ana", json!({})).await?;
    refused(
        &s.patch(
            &format!("/Users/{id}"),
            json!([{"op": "replace", "path": "displayName", "value": "A\u{0}"}]),
        )
        .await?,
        "displayName",
    );
    refused(
        &s.post("/Groups", &json!({"displayName": "dev\u{0}s"}))
            .await?,
        "displayName",
    );
    // A NUL in a filter is not a server error either.
    let r = s
        .get(&format!("/Users?{}", filter("userName eq \"a\u{0}b\"")))
        .await?;
    assert!(r.status < 500, "{} {}", r.status, r.body);
    // Nothing was stored by the refused requests.
    assert_eq!(s.ids("/Users").await?, vec![id]);
    Ok(())
}

#[tokio::test]
async fn values_larger_than_an_index_allows_are_a_400_naming_the_attribute() -> anyhow::Result<()> {
    let s = start().await?;
    // The case: a 9,000-character e-mail, over the engine's index limit.
    let email = format!("{}@example.com", "a".repeat(9000));
    refused(
        &s.post(
            "/Users",
            &json!({"userName": "ana", "emails": [{"value": email, "primary": true}]}),
        )
        .await?,
        "emails.value",
    );
    refused(
        &s.post("/Users", &json!({"userName": "u".repeat(3000)}))
            .await?,
        "userName",
    );
    refused(
        &s.post(
            "/Users",
            &json!({"userName": "ana", "externalId": "x".repeat(3000)}),
        )
        .await?,
        "externalId",
    );
    refused(
        &s.post(
            "/Users",
            &json!({"userName": "ana", ENTERPRISE: {"employeeNumber": "9".repeat(300)}}),
        )
        .await?,
        &format!("{ENTERPRISE}:employeeNumber"),
    );
    refused(
        &s.post("/Groups", &json!({"displayName": "g".repeat(3000)}))
            .await?,
        "displayName",
    );
    // At the limits, accepted.
    let at_limit = format!("{}@example.com", "a".repeat(242));
    let id = s
        .user(
            &"u".repeat(256),
            json!({"emails": [{"value": at_limit}], "externalId": "x".repeat(256)}),
        )
        .await?;
    assert_eq!(s.get(&format!("/Users/{id}")).await?.status, 200);
    Ok(())
}

#[tokio::test]
async fn a_change_whose_snapshot_could_not_be_published_is_a_413_and_stores_nothing(
) -> anyhow::Result<()> {
    // A small limit stands in for the NATS server's max_payload.
    let s = start_with(|p| p.with_max_snapshot_bytes(2048)).await?;
    let ana = s.user("ana", json!({})).await?;
    let mut groups = Vec::new();
    let mut refused_at = None;
    for i in 0..40 {
        let name = format!("group-{i:02}-{}", "x".repeat(80));
        let r = s
            .post(
                "/Groups",
                &json!({"displayName": name, "members": [{"value": ana}]}),
            )
            .await?;
        if r.status == 413 {
            refused_at = Some((i, r));
            break;
        }
        assert_eq!(r.status, 201, "{}", r.body);
        groups.push(r.id());
    }
    let (i, r) = refused_at.expect("the snapshot outgrows 2 KiB before 40 groups");
    assert!(i > 5, "small snapshots pass");
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("identity snapshot of user 'ana'") && detail.contains("2048"),
        "{detail}"
    );
    // The refused group was not created.
    assert_eq!(s.ids("/Groups").await?.len(), groups.len());
    // Leaving a group (a shrinking change) still works, and so does a
    // small change to the user.
    let r = s.delete(&format!("/Groups/{}", groups[0])).await?;
    assert_eq!(r.status, 204);
    let r = s
        .patch(
            &format!("/Users/{ana}"),
            json!([{"op": "replace", "path": "active", "value": false}]),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    Ok(())
}
