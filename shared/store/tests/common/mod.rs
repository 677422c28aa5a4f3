//! Per-test PostgreSQL databases.
//!
//! Every test gets its own freshly created and migrated database, so tests
//! can run in parallel (threads or processes) without seeing each other's
//! rows. Shared items are not used by every test binary.
#![allow(dead_code)]

use sqlx::{Connection, PgConnection, PgPool};
use tenure_store::{Metadata, NewEvent};
use uuid::Uuid;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub struct TestDb {
    pub name: String,
    /// URL of the test database, connecting as the admin user.
    pub url: String,
    /// Superuser pool on the test database.
    pub pool: PgPool,
    admin_url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let admin_url = std::env::var("TENURE_TEST_PG_ADMIN_URL")
            .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let name = format!("tenure_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connect to admin database (set TENURE_TEST_PG_ADMIN_URL)");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;

        let url = with_database(&admin_url, &name);
        let pool = tenure_store::connect(&url, None, 8)
            .await
            .expect("connect to test database");
        tenure_store::migrate(&pool).await.expect("migrate");
        TestDb {
            name,
            url,
            pool,
            admin_url,
        }
    }

    /// A pool that runs as the application role.
    pub async fn app_pool(&self) -> PgPool {
        tenure_store::connect(&self.url, Some("tenure_app"), 4)
            .await
            .expect("connect as tenure_app")
    }

    /// A dedicated superuser connection (for holding transactions open).
    pub async fn conn(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("connect to test database")
    }

    /// Best effort: a failing test skips this and leaves its database behind
    /// for inspection (names start with `tenure_test_`).
    pub async fn drop_db(self) {
        self.pool.close().await;
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await;
            let _ = admin.close().await;
        }
    }
}

/// Replaces the database name (the last path segment) in a PostgreSQL URL.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].rfind('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

pub fn metadata(actor: &str) -> Metadata {
    Metadata {
        correlation_id: Uuid::new_v4(),
        actor: actor.to_owned(),
        ..Metadata::default()
    }
}

pub fn event(event_type: &str, data: serde_json::Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: event_type.to_owned(),
        data,
        metadata: metadata("test"),
    }
}

pub fn person_event(event_type: &str, person_id: Uuid, data: serde_json::Value) -> NewEvent {
    let mut e = event(event_type, data);
    e.metadata.person_id = Some(person_id);
    e
}
