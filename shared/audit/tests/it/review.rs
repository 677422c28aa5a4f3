use chrono::Utc;
use serde_json::json;
use tenure_audit::render::{render, Format};
use tenure_audit::review::access_review;
use tenure_store::Metadata;
use uuid::Uuid;

use crate::{db, tick, write, Person};

fn hr(person: &Person) -> Metadata {
    Metadata {
        correlation_id: Uuid::new_v4(),
        person_id: Some(person.id),
        source: Some("generic".into()),
        actor: "engine".into(),
        ..Metadata::default()
    }
}

#[tokio::test]
async fn the_review_lists_each_account_with_the_hr_record_of_that_instant() {
    let db = db().await;
    let pool = &db.pool;
    let mut ada = Person::new("ada");
    let mut bob = Person::new("bob");
    ada.hired(pool).await;
    bob.hired(pool).await;
    let moved = write(
        pool,
        &format!("person-{}", ada.id),
        "AttributesChanged",
        json!({
            "changes": {"title": {"from": null, "to": "Engineer"}},
            "attributes": {"email": ada.email, "display_name": "Ada L", "department": "Engineering",
                           "title": "Engineer", "manager_id": "E-1"}
        }),
        hr(&ada),
    )
    .await;
    ada.account_created(pool, "wiki").await;
    ada.account_created(pool, "git").await;
    bob.account_created(pool, "wiki").await;
    let reviewed = tick().await;
    // Later history must not leak into the review of `reviewed`.
    write(
        pool,
        &format!("person-{}", ada.id),
        "AttributesChanged",
        json!({
            "changes": {"department": {"from": "Engineering", "to": "Sales"}},
            "attributes": {"email": ada.email, "department": "Sales", "title": "Seller", "manager_id": "E-9"}
        }),
        hr(&ada),
    )
    .await;
    bob.terminated(pool, Utc::now()).await;
    bob.account_deactivated(pool, "wiki").await;

    let all = access_review(pool, None, reviewed, false).await.unwrap();
    let keys: Vec<_> = all
        .rows
        .iter()
        .map(|r| (r.app.as_str(), r.person.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("git", "ada@example.com"),
            ("wiki", "ada@example.com"),
            ("wiki", "bob@example.com")
        ]
    );
    let ada_wiki = &all.rows[1];
    assert_eq!(ada_wiki.manager.as_deref(), Some("E-1"));
    assert_eq!(ada_wiki.department.as_deref(), Some("Engineering"));
    assert_eq!(ada_wiki.title.as_deref(), Some("Engineer"));
    assert_eq!(ada_wiki.display_name.as_deref(), Some("Ada L"));
    let change = ada_wiki.last_hr_change.as_ref().unwrap();
    assert_eq!(
        (change.event_id, change.event_type.as_str()),
        (moved.event_id, "AttributesChanged")
    );
    assert_eq!(ada_wiki.user_name.as_deref(), Some("ada"));

    let wiki_now = access_review(pool, Some("wiki"), Utc::now(), false)
        .await
        .unwrap();
    assert_eq!(wiki_now.rows.len(), 1, "bob's account was switched off");
    assert_eq!(wiki_now.rows[0].department.as_deref(), Some("Sales"));
    let with_inactive = access_review(pool, Some("wiki"), Utc::now(), true)
        .await
        .unwrap();
    assert_eq!(with_inactive.rows.len(), 2);

    let csv = render(&all, Format::Csv).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "app,person,person_id,display_name,user_name,remote_id,active,account_since,manager,\
         department,title,last_hr_change,last_hr_change_at,granted_by,correlation_id"
    );
    let ada_line = lines.nth(1).unwrap();
    assert!(
        ada_line.starts_with(&format!(
            "wiki,ada@example.com,{},Ada L,ada,r-ada,yes,",
            ada.id
        )),
        "{ada_line}"
    );
    assert!(
        ada_line.contains(",E-1,Engineering,Engineer,AttributesChanged #"),
        "{ada_line}"
    );
}
