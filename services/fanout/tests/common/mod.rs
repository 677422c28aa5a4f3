//! The harness the fanout integration tests share: a fresh migrated
//! database, a SCIM server with a tenant of its own, a worker for the app
//! `wiki` configured from a TOML snippet, and persons written straight into
//! the projections the worker reads.

// Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

use serde_json::Value;
use tenure_bus::Job;
use tenure_config::{Config, FanoutConfig};
use tenure_fanout::{app_worker, AppWorker};
use tenure_store::sqlx::{self, PgPool};
use tenure_testkit::{ScimServer, TestDb};
use uuid::Uuid;

/// A fresh database, migrated, and a pool on it.
pub async fn database() -> (TestDb, PgPool) {
    let db = TestDb::create().await.expect("database");
    let pool = tenure_store::connect(&db.url(), None, 8)
        .await
        .expect("connect");
    tenure_store::migrate(&pool).await.expect("migrate");
    (db, pool)
}

/// A tenant name of its own, so no two tests share accounts on a server.
pub fn tenant() -> String {
    format!("t{}", &Uuid::new_v4().simple().to_string()[..8])
}

/// Retries short enough for a test.
pub fn fanout() -> FanoutConfig {
    FanoutConfig {
        base_delay_ms: 10,
        max_delay_ms: 100,
        ..FanoutConfig::default()
    }
}

/// A worker for the app `wiki` at `base_url`, its token read from the
/// environment as configured, `app_extra` added to the `[[app]]` table.
pub async fn wiki_worker(
    base_url: &str,
    token: &str,
    app_extra: &str,
    fanout: &FanoutConfig,
    pool: &PgPool,
) -> AppWorker {
    let text = format!(
        "[[app]]\nname = \"wiki\"\nbase_url = \"{base_url}\"\ntoken = {{ env = \"TENURE_FANOUT_TEST_TOKEN\" }}\n{app_extra}"
    );
    std::env::set_var("TENURE_FANOUT_TEST_TOKEN", token);
    let cfg = Config::parse(&text, "test").expect("config");
    app_worker(&cfg.apps[0], fanout, pool.clone())
        .await
        .expect("worker")
}

pub struct Setup {
    _db: TestDb,
    pub server: ScimServer,
    pub tenant: String,
    pub pool: PgPool,
    pub http: reqwest::Client,
}

/// A fresh database and a SCIM server: with `None` the plain scim2-server,
/// otherwise the fault server with these faults (with none it behaves as
/// scim2-server and keeps the log of what it received).
pub async fn setup(faults: Option<&[&str]>) -> Setup {
    let (db, pool) = database().await;
    let server = match faults {
        Some(f) => ScimServer::start_with_faults(f).expect("fault server"),
        None => ScimServer::start().expect("scim2-server"),
    };
    Setup {
        _db: db,
        server,
        tenant: tenant(),
        pool,
        http: reqwest::Client::new(),
    }
}

impl Setup {
    /// The SCIM base URL of this test's tenant.
    pub fn url(&self) -> String {
        self.server.tenant_url(&self.tenant)
    }

    /// A worker for the app `wiki` on this test's tenant.
    pub async fn worker(&self, app_extra: &str) -> AppWorker {
        wiki_worker(
            &self.url(),
            &self.server.token,
            app_extra,
            &fanout(),
            &self.pool,
        )
        .await
    }

    /// The `Resources` of a list at `path` under the tenant (`Users`,
    /// `Groups?count=1000`, …), as the server answers it.
    pub async fn list(&self, path: &str) -> Vec<Value> {
        let body: Value = self
            .http
            .get(format!("{}/{path}", self.url()))
            .bearer_auth(&self.server.token)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        body["Resources"].as_array().cloned().unwrap_or_default()
    }
}

/// A person with these attributes, active, and the given entitlement in
/// the wiki.
pub async fn hire_person(
    pool: &PgPool,
    source_person_id: &str,
    attributes: Value,
    entitlement: &str,
) -> Uuid {
    let person_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO persons (person_id, source, source_person_id, status, attributes, version)
         VALUES ($1, 'test', $2, 'active', $3, 1)",
    )
    .bind(person_id)
    .bind(source_person_id)
    .bind(attributes)
    .execute(pool)
    .await
    .expect("person");
    sqlx::query("INSERT INTO entitlements (app, person_id, entitlement) VALUES ('wiki', $1, $2)")
        .bind(person_id)
        .bind(entitlement)
        .execute(pool)
        .await
        .expect("entitlement");
    person_id
}

/// The fanout job for a person in the wiki.
pub fn job(person_id: Uuid) -> Job {
    Job {
        app: "wiki".into(),
        person_id,
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        approved: false,
    }
}

pub async fn move_to(pool: &PgPool, person: Uuid, department: &str) {
    sqlx::query(
        "UPDATE persons SET attributes = jsonb_set(attributes, '{department}', to_jsonb($2::text))
         WHERE person_id = $1",
    )
    .bind(person)
    .bind(department)
    .execute(pool)
    .await
    .expect("move");
}

pub async fn set_entitlement(pool: &PgPool, person: Uuid, entitlement: &str) {
    sqlx::query("UPDATE entitlements SET entitlement = $2 WHERE app = 'wiki' AND person_id = $1")
        .bind(person)
        .bind(entitlement)
        .execute(pool)
        .await
        .expect("entitlement");
}

/// (event_type, data) of every event of a stream, in order.
pub async fn stream_events(pool: &PgPool, stream_id: &str) -> Vec<(String, Value)> {
    sqlx::query_as::<_, (String, Value)>(
        "SELECT event_type, data FROM events WHERE stream_id = $1 ORDER BY version",
    )
    .bind(stream_id)
    .fetch_all(pool)
    .await
    .expect("events")
}
