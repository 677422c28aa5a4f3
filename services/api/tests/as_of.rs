//! `GET /v1/persons/{p}?as_of=T` on a fresh database: a person hired,
//! moved and terminated at different instants, asked about at each
//! instant, answers with the lifecycle, attributes and entitlements that
//! held then, folded from the events; a projection changed after the fact
//! does not change the answer.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tenure_api::auth::Tokens;
use tenure_api::router;
use tenure_config::Scope;
use tenure_domain::{Attributes, Entitlement, PersonEvent};
use tenure_store::sqlx::{self, PgPool};
use tenure_store::{append, ExpectedVersion, Metadata, NewEvent};
use tenure_testkit::TestDb;
use uuid::Uuid;

const TOKEN: &str = "as-of-token";

async fn setup() -> anyhow::Result<(TestDb, PgPool, String)> {
    let db = TestDb::create().await?;
    let pool = tenure_store::connect(&db.url(), None, 4).await?;
    tenure_store::migrate(&pool).await?;
    let tokens = Tokens::single("auditor", TOKEN, &[Scope::AuditRead]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = router(pool.clone(), tokens);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((db, pool, base))
}

/// Appends the events one transaction each, as the engine records them,
/// and returns the instant the last was recorded.
async fn record(pool: &PgPool, person: Uuid, events: &[PersonEvent]) -> DateTime<Utc> {
    let mut conn = pool.acquire().await.expect("conn");
    let mut at = Utc::now();
    for e in events {
        let written = append(
            &mut conn,
            &format!("person-{person}"),
            ExpectedVersion::Any,
            &[NewEvent {
                event_id: Uuid::new_v4(),
                event_type: e.event_type().into(),
                data: e.to_data(),
                metadata: Metadata {
                    correlation_id: Uuid::new_v4(),
                    causation_id: None,
                    person_id: Some(person),
                    app: None,
                    source: Some("hr".into()),
                    actor: "engine".into(),
                    effective_at: None,
                },
            }],
        )
        .await
        .expect("append");
        at = written[0].recorded_at;
    }
    // Instants apart, so "up to T" separates the steps.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    at
}

fn attrs(department: &str, title: &str) -> Attributes {
    serde_json::from_value(json!({
        "given_name": "Ada", "family_name": "Lovelace", "display_name": "Ada Lovelace",
        "email": "ada@example.com", "department": department, "title": title,
    }))
    .expect("attributes")
}

fn entitled(app: &str, from: Entitlement, to: Entitlement) -> PersonEvent {
    PersonEvent::EntitlementChanged {
        app: app.into(),
        from,
        to,
    }
}

async fn as_of(base: &str, key: &str, at: DateTime<Utc>) -> (u16, Value) {
    let at = at.to_rfc3339().replace('+', "%2B");
    let resp = reqwest::Client::new()
        .get(format!("{base}/v1/persons/{key}?as_of={at}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn entitlements(v: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(v["entitlements"].clone()).expect("entitlements")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_as_of_each_instant_is_what_the_events_recorded_up_to_then_say(
) -> anyhow::Result<()> {
    let (_db, pool, base) = setup().await?;
    let ada = Uuid::new_v4();
    let before = Utc::now() - Duration::seconds(1);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let hired = record(
        &pool,
        ada,
        &[
            PersonEvent::PersonHired {
                since: Utc::now(),
                attributes: attrs("Eng", "Engineer"),
            },
            entitled("wiki", Entitlement::NoAccount, Entitlement::Active),
            entitled("chat", Entitlement::NoAccount, Entitlement::Active),
        ],
    )
    .await;
    let moved = record(
        &pool,
        ada,
        &[
            PersonEvent::AttributesChanged {
                changes: BTreeMap::new(),
                attributes: attrs("Sales", "Account Manager"),
            },
            // Sales has no wiki.
            entitled("wiki", Entitlement::Active, Entitlement::Revoked),
        ],
    )
    .await;
    let terminated = record(
        &pool,
        ada,
        &[
            PersonEvent::PersonTerminated {
                since: Utc::now(),
                reason: tenure_domain::person::TerminationReason::Status,
                attributes: attrs("Sales", "Account Manager"),
            },
            entitled("chat", Entitlement::Active, Entitlement::Revoked),
        ],
    )
    .await;

    let (status, body) = as_of(&base, &ada.to_string(), before).await;
    assert_eq!(status, 404, "nothing recorded yet: {body}");

    let (status, at_hire) = as_of(&base, &ada.to_string(), hired).await;
    assert_eq!(status, 200, "{at_hire}");
    assert_eq!(at_hire["lifecycle"], "active");
    assert_eq!(at_hire["attributes"]["department"], "Eng");
    assert_eq!(
        entitlements(&at_hire),
        BTreeMap::from([
            ("chat".to_string(), "active".to_string()),
            ("wiki".to_string(), "active".to_string())
        ])
    );
    assert_eq!(at_hire["events"], 3);

    let (_, at_move) = as_of(&base, &ada.to_string(), moved).await;
    assert_eq!(at_move["lifecycle"], "active");
    assert_eq!(at_move["attributes"]["department"], "Sales");
    assert_eq!(at_move["attributes"]["title"], "Account Manager");
    assert_eq!(entitlements(&at_move)["wiki"], "revoked");
    assert_eq!(entitlements(&at_move)["chat"], "active");

    let (_, at_end) = as_of(&base, &ada.to_string(), terminated).await;
    assert_eq!(at_end["lifecycle"], "terminated");
    assert_eq!(entitlements(&at_end)["chat"], "revoked");

    // Between two steps (`record` waits 20 ms after each): the earlier
    // one holds.
    let (_, between) = as_of(&base, &ada.to_string(), hired + Duration::milliseconds(10)).await;
    assert_eq!(between["attributes"]["department"], "Eng");

    // The projections are changed after the fact (a bad rebuild, a manual
    // edit): the answers stay those of the events.
    sqlx::query(
        "INSERT INTO persons (person_id, source, source_person_id, status, attributes, version)
         VALUES ($1, 'hr', 'E-1', 'active', $2, 9)",
    )
    .bind(ada)
    .bind(json!({"email": "ada@example.com", "department": "Forged"}))
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO entitlements (app, person_id, entitlement) VALUES ('wiki', $1, 'active')",
    )
    .bind(ada)
    .execute(&pool)
    .await?;
    for (at, then) in [(hired, &at_hire), (moved, &at_move), (terminated, &at_end)] {
        let (_, again) = as_of(&base, &ada.to_string(), at).await;
        assert_eq!(&again, then);
    }
    // Named by e-mail (found through the projection), answered from events.
    let (status, by_email) = as_of(&base, "ada@example.com", moved).await;
    assert_eq!(status, 200);
    assert_eq!(by_email, at_move);
    Ok(())
}
