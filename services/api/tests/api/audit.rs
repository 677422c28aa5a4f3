//! `/v1/audit/...` over HTTP on events appended through the store, as the
//! engine and the fanout write them; the answers are the ones
//! `tenure-audit` (and so `tenure audit …`) gives, in the same rendering.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use tenure_api::auth::Tokens;
use tenure_api::router;
use tenure_audit::render::{render, Format};
use tenure_config::Scope;
use tenure_store::sqlx::PgPool;
use tenure_store::{append, ExpectedVersion, Metadata, NewEvent, RecordedEvent};
use uuid::Uuid;

use crate::{call, serve, setup};

async fn write(
    pool: &PgPool,
    stream: &str,
    event_type: &str,
    data: Value,
    metadata: Metadata,
) -> anyhow::Result<RecordedEvent> {
    let mut conn = pool.acquire().await?;
    let mut written = append(
        &mut conn,
        stream,
        ExpectedVersion::Any,
        &[NewEvent {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            data,
            metadata,
        }],
    )
    .await?;
    Ok(written.remove(0))
}

struct Person {
    id: Uuid,
    name: &'static str,
    hire: Option<RecordedEvent>,
}

impl Person {
    fn new(name: &'static str) -> Person {
        Person {
            id: Uuid::new_v4(),
            name,
            hire: None,
        }
    }

    fn email(&self) -> String {
        format!("{}@example.com", self.name)
    }

    fn attributes(&self, department: &str, title: &str, manager: &str) -> Value {
        json!({"email": self.email(), "given_name": self.name, "family_name": "X",
               "display_name": format!("{} X", self.name), "department": department,
               "title": title, "manager_id": manager})
    }

    async fn person_event(
        &mut self,
        pool: &PgPool,
        event_type: &str,
        data: Value,
    ) -> anyhow::Result<RecordedEvent> {
        let e = write(
            pool,
            &format!("person-{}", self.id),
            event_type,
            data,
            Metadata {
                correlation_id: Uuid::new_v4(),
                person_id: Some(self.id),
                source: Some("generic".into()),
                actor: "engine".into(),
                ..Metadata::default()
            },
        )
        .await?;
        if event_type == "PersonHired" {
            self.hire = Some(e.clone());
        }
        Ok(e)
    }

    async fn account(
        &self,
        pool: &PgPool,
        app: &str,
        event_type: &str,
        data: Value,
    ) -> anyhow::Result<RecordedEvent> {
        let cause = self.hire.as_ref();
        write(
            pool,
            &format!("account-{app}-{}", self.id),
            event_type,
            data,
            Metadata {
                correlation_id: cause.map_or_else(Uuid::new_v4, |h| h.metadata.correlation_id),
                causation_id: cause.map(|h| h.event_id),
                person_id: Some(self.id),
                app: Some(app.into()),
                actor: "fanout".into(),
                ..Metadata::default()
            },
        )
        .await
    }

    async fn account_created(&self, pool: &PgPool, app: &str) -> anyhow::Result<RecordedEvent> {
        self.account(
            pool,
            app,
            "AccountCreated",
            json!({"remote_id": format!("r-{}", self.name), "user_name": self.name, "active": true}),
        )
        .await
    }
}

async fn tick() -> DateTime<Utc> {
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let t = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    t
}

#[tokio::test]
async fn auditors_get_the_cli_answers_as_json_and_csv() -> anyhow::Result<()> {
    let (_db, _nats, pool, _bus) = setup().await?;
    let mut ada = Person::new("ada");
    let mut bob = Person::new("bob");
    let ada_hr = ada.attributes("Engineering", "Engineer", "E-1");
    ada.person_event(
        &pool,
        "PersonHired",
        json!({"since": Utc::now() - Duration::days(30), "attributes": ada_hr}),
    )
    .await?;
    let bob_hr = bob.attributes("Sales", "Seller", "E-2");
    bob.person_event(
        &pool,
        "PersonHired",
        json!({"since": Utc::now() - Duration::days(30), "attributes": bob_hr}),
    )
    .await?;
    ada.account_created(&pool, "wiki").await?;
    ada.account_created(&pool, "git").await?;
    bob.account_created(&pool, "wiki").await?;
    let reviewed = tick().await;
    let bob_hr = bob.attributes("Sales", "Seller", "E-2");
    bob.person_event(
        &pool,
        "PersonTerminated",
        json!({"since": Utc::now(), "reason": "end_of_last_day", "attributes": bob_hr}),
    )
    .await?;
    bob.account(
        &pool,
        "wiki",
        "AccountDeactivated",
        json!({"remote_id": "r-bob", "changes": [{"op": "replace", "path": "active", "value": false}]}),
    )
    .await?;
    // The projections say something else; the audit answers do not read them.
    tenure_store::sqlx::query("DELETE FROM accounts")
        .execute(&pool)
        .await
        .ok();

    let tokens = Tokens::single("auditor", "audit-token", &[Scope::AuditRead]);
    let app = serve(router(pool.clone(), tokens)).await?;
    let at = reviewed.to_rfc3339().replace('+', "%2B");

    // The access review, JSON.
    let (status, review) = call(
        &app,
        "GET",
        &format!("/v1/audit/review?at={at}"),
        Some("audit-token"),
        "",
    )
    .await?;
    assert_eq!(status, 200, "{review}");
    let rows = review["rows"].as_array().expect("rows");
    let keys: Vec<(&str, &str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["app"].as_str().unwrap_or(""),
                r["person"].as_str().unwrap_or(""),
                r["department"].as_str().unwrap_or(""),
                r["manager"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("git", "ada@example.com", "Engineering", "E-1"),
            ("wiki", "ada@example.com", "Engineering", "E-1"),
            ("wiki", "bob@example.com", "Sales", "E-2"),
        ]
    );
    assert_eq!(rows[2]["title"], "Seller");
    assert_eq!(rows[2]["last_hr_change"]["event_type"], "PersonHired");

    // The same review as CSV, by query and by Accept, byte for byte what
    // the CLI prints (both render the one report).
    let expected = render(
        &tenure_audit::review::access_review(&pool, Some("wiki"), reviewed, false).await?,
        Format::Csv,
    )?;
    for (path, headers) in [
        (
            format!("/v1/audit/review?app=wiki&at={at}&format=csv"),
            vec![],
        ),
        (
            format!("/v1/audit/review?app=wiki&at={at}"),
            vec![("accept", "text/csv")],
        ),
    ] {
        let resp = app
            .raw("GET", &path, Some("audit-token"), &headers, "")
            .await?;
        assert_eq!(resp.status(), 200);
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert!(ctype.starts_with("text/csv"), "{ctype}");
        let body = resp.text().await?;
        assert_eq!(body, expected);
        assert_eq!(body.lines().count(), 3, "header, ada, bob: {body}");
    }

    // Now: bob's wiki account was switched off.
    let (_, now) = call(
        &app,
        "GET",
        "/v1/audit/review?app=wiki",
        Some("audit-token"),
        "",
    )
    .await?;
    assert_eq!(now["rows"].as_array().map(Vec::len), Some(1), "{now}");

    // Access at the instant, one app.
    let (status, access) = call(
        &app,
        "GET",
        &format!("/v1/audit/access?app=wiki&at={at}"),
        Some("audit-token"),
        "",
    )
    .await?;
    assert_eq!(status, 200, "{access}");
    assert_eq!(access["rows"].as_array().map(Vec::len), Some(2));
    // A person's intervals, by e-mail resolved once... the persons table
    // was never filled here, so by id.
    let (status, intervals) = call(
        &app,
        "GET",
        &format!("/v1/audit/access?person={}", bob.id),
        Some("audit-token"),
        "",
    )
    .await?;
    assert_eq!(status, 200, "{intervals}");
    assert!(
        intervals["apps"][0]["intervals"][0]["to"].is_string(),
        "{intervals}"
    );

    // Leavers: bob, deprovisioned in the wiki.
    let from = (Utc::now() - Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let (status, deprov) = call(
        &app,
        "GET",
        &format!("/v1/audit/deprovision?from={from}"),
        Some("audit-token"),
        "",
    )
    .await?;
    assert_eq!(status, 200, "{deprov}");
    assert_eq!(
        deprov["rows"][0]["person_id"],
        bob.id.to_string(),
        "{deprov}"
    );
    assert_eq!(deprov["rows"][0]["breach"], false);

    let (status, exceptions) =
        call(&app, "GET", "/v1/audit/exceptions", Some("audit-token"), "").await?;
    assert_eq!(status, 200);
    assert_eq!(
        exceptions["active_leaver_accounts"],
        json!([]),
        "{exceptions}"
    );

    // Event search, a page at a time.
    let (status, page) = call(
        &app,
        "GET",
        &format!("/v1/audit/events?person={}&limit=2", ada.id),
        Some("audit-token"),
        "",
    )
    .await?;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().map(Vec::len), Some(2));
    let next = page["next_cursor"].as_i64().expect("a second page");
    let (_, rest) = call(
        &app,
        "GET",
        &format!(
            "/v1/audit/events?person={}&after={next}&type=AccountCreated,PersonHired",
            ada.id
        ),
        Some("audit-token"),
        "",
    )
    .await?;
    assert_eq!(rest["events"].as_array().map(Vec::len), Some(1), "{rest}");
    assert_eq!(rest["events"][0]["event_type"], "AccountCreated");

    // Bad input is the caller's error, said plainly.
    let (status, bad) = call(
        &app,
        "GET",
        "/v1/audit/review?at=yesterday",
        Some("audit-token"),
        "",
    )
    .await?;
    assert_eq!(status, 400);
    assert!(
        bad["message"]
            .as_str()
            .is_some_and(|m| m.contains("RFC 3339")),
        "{bad}"
    );
    let (status, _) = call(
        &app,
        "GET",
        "/v1/audit/review?format=xml",
        Some("audit-token"),
        "",
    )
    .await?;
    assert_eq!(status, 400);
    assert_eq!(
        call(&app, "GET", "/v1/audit/review", None, "").await?.0,
        401
    );
    Ok(())
}
