//! Users read from the IdP's API land in the same mirror as SCIM pushes:
//! one state, one outbox, no snapshot when nothing changed.

mod common;

use common::{start, PROVIDER};
use serde_json::json;
use tenure_domain::IdpIdentity;
use tenure_idp_scim::{
    apply_fetched, apply_fetched_deleted, group_member_names, mark_published, pending, FetchedUser,
};

async fn drain(s: &common::Server) -> anyhow::Result<Vec<IdpIdentity>> {
    let rows = pending(&s.pool, PROVIDER, 1000).await?;
    let seqs: Vec<i64> = rows.iter().map(|(seq, _)| *seq).collect();
    mark_published(&s.pool, &seqs).await?;
    Ok(rows.into_iter().map(|(_, i)| i).collect())
}

fn ana(groups: &[&str]) -> FetchedUser {
    FetchedUser {
        user_name: "asilva".into(),
        emails: vec!["Ana.Silva@example.com".into()],
        display_name: Some("Ana Silva".into()),
        active: true,
        external_id: Some("ak-uid-7".into()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

#[tokio::test]
async fn fetched_user_updates_the_scim_user_and_its_memberships() -> anyhow::Result<()> {
    let s = start().await?;
    // Authentik's SCIM provider pushed Ana and two groups; she is in "ops".
    let id = s
        .user(
            "ASilva",
            json!({
                "externalId": "ak-uid-7",
                "name": {"formatted": "Ana Silva"},
                "emails": [{"value": "ana.silva@example.com", "primary": true}],
            }),
        )
        .await?;
    let dev = s.group("developers", &[]).await?;
    s.group("ops", &[&id]).await?;
    drain(&s).await?;

    // The API says: developers, and a group SCIM has not pushed yet.
    let applied = apply_fetched(&s.pool, PROVIDER, &ana(&["developers", "not-pushed"])).await?;
    assert_eq!(applied.id.to_string(), id, "the SCIM id is kept");
    assert!(!applied.created);
    assert_eq!(applied.unknown_groups, vec!["not-pushed".to_string()]);
    let snaps = drain(&s).await?;
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0].idp_id, id);
    assert_eq!(snaps[0].groups, vec!["developers".to_string()]);
    assert_eq!(snaps[0].user_name, "asilva", "the API's spelling wins");
    // The same e-mail in another case is not a change.
    assert_eq!(snaps[0].emails, vec!["ana.silva@example.com".to_string()]);
    // SCIM sees the same state.
    let r = s.get(&format!("/Groups/{dev}")).await?;
    assert_eq!(r.body["members"][0]["value"], json!(id));
    let r = s.get(&format!("/Users/{id}")).await?;
    assert_eq!(r.body["groups"].as_array().map(Vec::len), Some(1));

    // Applying the same state again writes nothing.
    let again = apply_fetched(&s.pool, PROVIDER, &ana(&["developers", "not-pushed"])).await?;
    assert_eq!(again.snapshots, 0);
    assert!(drain(&s).await?.is_empty());

    // Groups emptied in Authentik.
    apply_fetched(&s.pool, PROVIDER, &ana(&[])).await?;
    let snaps = drain(&s).await?;
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].groups.is_empty());
    assert_eq!(
        group_member_names(&s.pool, PROVIDER, "developers").await?,
        Vec::<String>::new()
    );

    // Deactivated.
    let mut off = ana(&[]);
    off.active = false;
    apply_fetched(&s.pool, PROVIDER, &off).await?;
    let snaps = drain(&s).await?;
    assert_eq!(snaps.len(), 1);
    assert!(!snaps[0].active);
    Ok(())
}

#[tokio::test]
async fn a_user_scim_has_not_pushed_is_created_and_scim_then_links_it() -> anyhow::Result<()> {
    let s = start().await?;
    s.group("developers", &[]).await?;
    drain(&s).await?;
    let applied = apply_fetched(&s.pool, PROVIDER, &ana(&["developers"])).await?;
    assert!(applied.created);
    let snaps = drain(&s).await?;
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].groups, vec!["developers".to_string()]);
    assert_eq!(snaps[0].external_id.as_deref(), Some("ak-uid-7"));
    assert_eq!(snaps[0].display_name.as_deref(), Some("Ana Silva"));

    // Authentik's provider then creates it: 409, looks it up, links it.
    let r = s
        .post(
            "/Users",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "asilva"}),
        )
        .await?;
    assert_eq!(r.status, 409);
    let r = s.get("/Users?filter=userName%20eq%20%22asilva%22").await?;
    assert_eq!(r.body["Resources"][0]["id"], json!(applied.id.to_string()));
    Ok(())
}

#[tokio::test]
async fn a_user_gone_from_the_idp_is_deleted_like_a_scim_delete() -> anyhow::Result<()> {
    let s = start().await?;
    let id = s.user("asilva", json!({})).await?;
    s.group("developers", &[&id]).await?;
    drain(&s).await?;
    let deleted = apply_fetched_deleted(&s.pool, PROVIDER, "ASILVA").await?;
    assert_eq!(deleted.map(|u| u.to_string()), Some(id.clone()));
    let snaps = drain(&s).await?;
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].deleted);
    assert_eq!(snaps[0].idp_id, id);
    assert_eq!(s.get(&format!("/Users/{id}")).await?.status, 404);
    // Unknown users: nothing to do.
    assert_eq!(
        apply_fetched_deleted(&s.pool, PROVIDER, "nobody").await?,
        None
    );
    assert!(drain(&s).await?.is_empty());
    // A nameless fetch is refused.
    let mut nameless = ana(&[]);
    nameless.user_name = "  ".into();
    assert!(apply_fetched(&s.pool, PROVIDER, &nameless).await.is_err());
    Ok(())
}

#[tokio::test]
async fn a_user_renamed_in_the_idp_is_found_by_external_id() -> anyhow::Result<()> {
    let s = start().await?;
    let id = s.user("ana.old", json!({"externalId": "ak-uid-7"})).await?;
    drain(&s).await?;
    let applied = apply_fetched(&s.pool, PROVIDER, &ana(&[])).await?;
    assert_eq!(applied.id.to_string(), id);
    assert!(!applied.created);
    let snaps = drain(&s).await?;
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].user_name, "asilva");
    Ok(())
}
