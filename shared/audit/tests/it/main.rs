//! The audit queries on a real PostgreSQL: a fresh, migrated database per
//! test, events appended through `tenure_store::append` as the engine and
//! the fanout write them.

mod access;
mod deprovision;
mod evidence;
mod review;
mod search;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use tenure_store::{append, ExpectedVersion, Metadata, NewEvent, RecordedEvent};
use tenure_testkit::TestDb;
use uuid::Uuid;

pub struct Db {
    pub pool: PgPool,
    pub url: String,
    // Dropped last: removes the database.
    _db: TestDb,
}

pub async fn db() -> Db {
    let db = TestDb::create().await.expect("create a test database");
    let url = db.url();
    let pool = tenure_store::connect(&url, None, 4)
        .await
        .expect("connect to the test database");
    tenure_store::migrate(&pool).await.expect("migrate");
    Db { pool, url, _db: db }
}

pub async fn write(
    pool: &PgPool,
    stream: &str,
    event_type: &str,
    data: Value,
    metadata: Metadata,
) -> RecordedEvent {
    let mut conn = pool.acquire().await.expect("connection");
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
    .await
    .expect("append");
    written.remove(0)
}

/// A clear gap between two instants of the scenario.
pub async fn tick() -> DateTime<Utc> {
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let t = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    t
}

/// One person's life as the engine and the fanout record it.
pub struct Person {
    pub id: Uuid,
    pub email: String,
    pub hire: Option<RecordedEvent>,
}

impl Person {
    pub fn new(name: &str) -> Person {
        Person {
            id: Uuid::new_v4(),
            email: format!("{name}@example.com"),
            hire: None,
        }
    }

    fn person_meta(&self, correlation: Uuid) -> Metadata {
        Metadata {
            correlation_id: correlation,
            person_id: Some(self.id),
            source: Some("generic".into()),
            actor: "engine".into(),
            ..Metadata::default()
        }
    }

    fn attributes(&self) -> Value {
        json!({"email": self.email, "given_name": "A", "family_name": "B"})
    }

    pub async fn hired(&mut self, pool: &PgPool) -> RecordedEvent {
        let e = write(
            pool,
            &format!("person-{}", self.id),
            "PersonHired",
            json!({"since": Utc::now() - Duration::days(60), "attributes": self.attributes()}),
            self.person_meta(Uuid::new_v4()),
        )
        .await;
        self.hire = Some(e.clone());
        e
    }

    pub async fn terminated(&self, pool: &PgPool, since: DateTime<Utc>) -> RecordedEvent {
        write(
            pool,
            &format!("person-{}", self.id),
            "PersonTerminated",
            json!({"since": since, "reason": "end_of_last_day", "attributes": self.attributes()}),
            self.person_meta(Uuid::new_v4()),
        )
        .await
    }

    /// An event of this person's account stream in `app`, caused by the
    /// hire (as a fanout job started by it would be).
    pub async fn account(
        &self,
        pool: &PgPool,
        app: &str,
        event_type: &str,
        data: Value,
    ) -> RecordedEvent {
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

    pub fn user_name(&self) -> String {
        self.email.split('@').next().unwrap_or_default().to_owned()
    }

    pub async fn account_created(&self, pool: &PgPool, app: &str) -> RecordedEvent {
        let remote = format!("r-{}", self.user_name());
        self.account(
            pool,
            app,
            "ScimCallSucceeded",
            json!({"method": "POST", "path": "/Users", "status": 201, "latency_ms": 3, "remote_id": remote, "error": null, "attempt": 1}),
        )
        .await;
        self.account(
            pool,
            app,
            "AccountCreated",
            json!({"remote_id": remote, "user_name": self.user_name(), "active": true}),
        )
        .await
    }

    pub async fn account_deactivated(&self, pool: &PgPool, app: &str) -> RecordedEvent {
        let remote = format!("r-{}", self.user_name());
        self.account(
            pool,
            app,
            "AccountDeactivated",
            json!({"remote_id": remote, "changes": [{"op": "replace", "path": "active", "value": false}]}),
        )
        .await
    }

    pub async fn call_failed(&self, pool: &PgPool, app: &str, status: u16) -> RecordedEvent {
        self.account(
            pool,
            app,
            "ScimCallFailed",
            json!({"method": "PATCH", "path": format!("/Users/r-{}", self.user_name()), "status": status, "latency_ms": 2, "remote_id": null, "error": "server error", "attempt": 1}),
        )
        .await
    }
}
