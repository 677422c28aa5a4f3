//! IdP identities merged into HR persons on a fresh PostgreSQL database:
//! correlation in both arrival orders, groups feeding rules, ambiguity and
//! deletion.

use chrono::{TimeZone, Utc};
use std::collections::HashMap;
use tenure_bus::{IdentityEnvelope, IngestEnvelope};
use tenure_domain::entitlement::Rule;
use tenure_domain::{AppPolicy, Context, Correlation, IdpIdentity, Policy, SourceRecord};
use tenure_engine::process::{apply_identity, person_id_for};
use tenure_engine::{apply_envelope, Applied, Engine};
use tenure_store::sqlx::{self, PgPool};
use tenure_testkit::TestDb;
use uuid::Uuid;

async fn db() -> anyhow::Result<(TestDb, PgPool)> {
    let db = TestDb::create().await?;
    let owner = tenure_store::connect(&db.url(), None, 2).await?;
    tenure_store::migrate(&owner).await?;
    owner.close().await;
    let pool = tenure_store::connect(&db.url(), Some("tenure_app"), 4).await?;
    Ok((db, pool))
}

fn engine(how: Correlation) -> anyhow::Result<Engine> {
    let mut git = AppPolicy::new("git");
    git.rule = Some(Rule::compile(r#""developers" in person.groups"#)?);
    Ok(Engine {
        ctx: Context {
            policy: Policy::default(),
            apps: vec![AppPolicy::new("wiki"), git],
        },
        partitions: 4,
        snapshot_every: 50,
        correlation: HashMap::from([("authentik".to_string(), how)]),
    })
}

fn hire(person: &str, email: &str, number: &str, delivery: &str) -> anyhow::Result<IngestEnvelope> {
    let record: SourceRecord = serde_json::from_value(serde_json::json!({
        "person_id": person, "given_name": "Bo", "family_name": "Berg",
        "work_email": email, "employee_number": number, "employment_status": "active",
        "start_date": "2026-01-05", "effective_at": "2026-01-05T09:00:00Z"
    }))?;
    Ok(IngestEnvelope {
        source: "generic".into(),
        delivery_id: delivery.into(),
        received_at: Utc::now(),
        correlation_id: Uuid::new_v4(),
        record,
    })
}

fn identity(
    idp_id: &str,
    email: &str,
    groups: &[&str],
    seq: u32,
    deleted: bool,
) -> IdentityEnvelope {
    IdentityEnvelope {
        sequence: Some(i64::from(seq)),
        delivery_id: format!("scim:{seq}"),
        received_at: Utc::now(),
        correlation_id: Uuid::new_v4(),
        identity: IdpIdentity {
            provider: "authentik".into(),
            idp_id: idp_id.into(),
            user_name: email.split('@').next().unwrap_or_default().into(),
            external_id: None,
            emails: vec![email.to_uppercase()],
            employee_number: Some("4711".into()),
            display_name: None,
            active: true,
            groups: groups.iter().map(|g| (*g).to_string()).collect(),
            deleted,
        },
    }
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 1, 12, 0, 0)
        .single()
        .expect("time")
}

async fn entitlement(pool: &PgPool, app: &str, person: Uuid) -> anyhow::Result<Option<String>> {
    Ok(
        sqlx::query_scalar(
            "SELECT entitlement FROM entitlements WHERE app = $1 AND person_id = $2",
        )
        .bind(app)
        .bind(person)
        .fetch_optional(pool)
        .await?,
    )
}

async fn groups(pool: &PgPool, person: Uuid) -> anyhow::Result<serde_json::Value> {
    Ok(
        sqlx::query_scalar("SELECT groups FROM persons WHERE person_id = $1")
            .bind(person)
            .fetch_one(pool)
            .await?,
    )
}

#[tokio::test]
async fn identity_after_the_hire_links_by_email_and_its_groups_grant_access() -> anyhow::Result<()>
{
    let (_db, pool) = db().await?;
    let engine = engine(Correlation::Email)?;
    apply_envelope(
        &pool,
        &engine,
        &hire("E-1", "bo@example.com", "4711", "d1")?,
        now(),
    )
    .await?;
    let bo = person_id_for("generic", "E-1");
    assert_eq!(
        entitlement(&pool, "git", bo).await?.as_deref(),
        Some("revoked")
    );

    // E-mail matching ignores case.
    let applied = apply_identity(
        &pool,
        &engine,
        &identity("ak-1", "bo@example.com", &["developers", "staff"], 1, false),
        now(),
    )
    .await?;
    let Applied::Recorded {
        person_id,
        events,
        jobs,
    } = applied
    else {
        panic!("expected a recording");
    };
    assert_eq!(person_id, bo);
    assert_eq!(events, ["IdentitySynced", "EntitlementChanged"]);
    assert!(jobs.contains(&"git".to_string()), "{jobs:?}");
    assert!(
        jobs.contains(&"wiki".to_string()),
        "wiki holds an account and hears of the new groups: {jobs:?}"
    );
    assert_eq!(
        entitlement(&pool, "git", bo).await?.as_deref(),
        Some("active")
    );
    assert_eq!(
        groups(&pool, bo).await?,
        serde_json::json!(["developers", "staff"])
    );

    // The same snapshot again (Authentik's periodic full sync) changes nothing.
    let again = apply_identity(
        &pool,
        &engine,
        &identity("ak-1", "bo@example.com", &["staff", "developers"], 2, false),
        now(),
    )
    .await?;
    assert!(
        matches!(again, Applied::Recorded { ref events, .. } if events.is_empty()),
        "{again:?}"
    );
    // The same delivery twice is skipped.
    let dup = apply_identity(
        &pool,
        &engine,
        &identity("ak-1", "bo@example.com", &[], 2, false),
        now(),
    )
    .await?;
    assert_eq!(dup, Applied::AlreadyProcessed);

    // Removed from the group in the IdP: access to git ends.
    apply_identity(
        &pool,
        &engine,
        &identity("ak-1", "bo@example.com", &["staff"], 3, false),
        now(),
    )
    .await?;
    assert_eq!(
        entitlement(&pool, "git", bo).await?.as_deref(),
        Some("revoked")
    );

    // Deleted in the IdP: unlinked, groups gone.
    let gone = apply_identity(
        &pool,
        &engine,
        &identity("ak-1", "bo@example.com", &[], 4, true),
        now(),
    )
    .await?;
    assert!(
        matches!(gone, Applied::Recorded { ref events, .. } if events == &["IdentityUnlinked"]),
        "{gone:?}"
    );
    assert_eq!(groups(&pool, bo).await?, serde_json::json!([]));
    Ok(())
}

#[tokio::test]
async fn identity_before_the_hire_waits_and_links_when_the_person_arrives() -> anyhow::Result<()> {
    let (_db, pool) = db().await?;
    let engine = engine(Correlation::EmployeeNumber)?;
    let early = apply_identity(
        &pool,
        &engine,
        &identity("ak-9", "someone@else.org", &["developers"], 1, false),
        now(),
    )
    .await?;
    assert!(matches!(early, Applied::Recorded { ref events, .. } if events.is_empty()));
    let waiting: Option<Uuid> =
        sqlx::query_scalar("SELECT person_id FROM idp_identities WHERE idp_id = 'ak-9'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(waiting, None);

    // Correlated by employee number, whatever the e-mail says.
    let applied = apply_envelope(
        &pool,
        &engine,
        &hire("E-2", "bo@example.com", "4711", "d1")?,
        now(),
    )
    .await?;
    let Applied::Recorded {
        person_id, events, ..
    } = applied
    else {
        panic!("expected a recording");
    };
    assert!(events.contains(&"IdentitySynced".to_string()), "{events:?}");
    assert_eq!(
        entitlement(&pool, "git", person_id).await?.as_deref(),
        Some("active")
    );
    let linked: Option<Uuid> =
        sqlx::query_scalar("SELECT person_id FROM idp_identities WHERE idp_id = 'ak-9'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(linked, Some(person_id));
    Ok(())
}

#[tokio::test]
async fn an_identity_matching_two_persons_links_neither() -> anyhow::Result<()> {
    let (_db, pool) = db().await?;
    let engine = engine(Correlation::EmployeeNumber)?;
    apply_envelope(
        &pool,
        &engine,
        &hire("E-1", "a@example.com", "4711", "d1")?,
        now(),
    )
    .await?;
    apply_envelope(
        &pool,
        &engine,
        &hire("E-2", "b@example.com", "4711", "d2")?,
        now(),
    )
    .await?;
    let applied = apply_identity(
        &pool,
        &engine,
        &identity("ak-1", "a@example.com", &["developers"], 1, false),
        now(),
    )
    .await?;
    assert!(
        matches!(applied, Applied::Recorded { ref events, .. } if events.is_empty()),
        "{applied:?}"
    );
    for p in ["E-1", "E-2"] {
        assert_eq!(
            entitlement(&pool, "git", person_id_for("generic", p))
                .await?
                .as_deref(),
            Some("revoked")
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_older_snapshot_delivered_after_a_newer_one_leaves_the_newer_groups(
) -> anyhow::Result<()> {
    let (_db, pool) = db().await?;
    let engine = engine(Correlation::Email)?;
    apply_envelope(
        &pool,
        &engine,
        &hire("E-1", "bo@example.com", "4711", "d1")?,
        now(),
    )
    .await?;
    let bo = person_id_for("generic", "E-1");
    let newer = identity("ak-1", "bo@example.com", &["developers", "staff"], 7, false);
    apply_identity(&pool, &engine, &newer, now()).await?;
    assert_eq!(
        entitlement(&pool, "git", bo).await?.as_deref(),
        Some("active")
    );

    // Snapshot 5 failed once and comes back after 7 was applied: it must
    // not take the person out of "developers" again.
    let older = identity("ak-1", "bo@example.com", &["staff"], 5, false);
    assert_eq!(
        apply_identity(&pool, &engine, &older, now()).await?,
        Applied::Stale
    );
    assert_eq!(
        groups(&pool, bo).await?,
        serde_json::json!(["developers", "staff"])
    );
    assert_eq!(
        entitlement(&pool, "git", bo).await?.as_deref(),
        Some("active")
    );
    let synced: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'IdentitySynced'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(synced, 1, "the stale snapshot recorded nothing");
    // Settled all the same: delivering it again is a plain duplicate.
    assert_eq!(
        apply_identity(&pool, &engine, &older, now()).await?,
        Applied::AlreadyProcessed
    );

    // A newer one still applies.
    let newest = identity("ak-1", "bo@example.com", &["staff"], 8, false);
    apply_identity(&pool, &engine, &newest, now()).await?;
    assert_eq!(groups(&pool, bo).await?, serde_json::json!(["staff"]));
    assert_eq!(
        entitlement(&pool, "git", bo).await?.as_deref(),
        Some("revoked")
    );
    Ok(())
}
