//! What the SCIM client learned about an app's server (member key, removal
//! form, paging, filter support; see `tenure_scim::learned`), kept across
//! restarts in `app_server_behaviour` and recorded as one
//! `ServerBehaviourLearned` event per lesson on the app's stream.

use crate::worker::{AppWorker, WorkerError};
use serde_json::json;
use tenure_scim::{Learned, Lesson};
use tenure_store::sqlx;
use tenure_store::{ExpectedVersion, NewEvent};

impl AppWorker {
    /// Seeds the client with what earlier runs learned (the client takes
    /// only the first seed, and keeps what it learned since).
    pub(crate) async fn load_learned(&self) -> Result<(), WorkerError> {
        let stored: Option<serde_json::Value> =
            sqlx::query_scalar("SELECT learned FROM app_server_behaviour WHERE app = $1")
                .bind(&self.app.name)
                .fetch_optional(&self.pool)
                .await?;
        let stored = stored
            .and_then(|v| serde_json::from_value::<Learned>(v).ok())
            .unwrap_or_default();
        self.client.seed_learned(stored);
        Ok(())
    }

    /// Stores and records the lessons the client learned since the last
    /// call; returns them for reports.
    pub(crate) async fn store_lessons(&self) -> Result<Vec<Lesson>, WorkerError> {
        let lessons = self.client.take_lessons();
        if lessons.is_empty() {
            return Ok(lessons);
        }
        let learned = self.client.learned();
        let doc = serde_json::to_value(learned).unwrap_or_default();
        let events: Vec<NewEvent> = lessons
            .iter()
            .map(|l| {
                self.app_event(
                    "ServerBehaviourLearned",
                    json!({ "what": l.what, "value": l.value, "reason": l.reason, "learned": doc }),
                )
            })
            .collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO app_server_behaviour (app, learned, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (app) DO UPDATE SET learned = $2, updated_at = now()",
        )
        .bind(&self.app.name)
        .bind(&doc)
        .execute(&mut *tx)
        .await?;
        tenure_store::append(
            &mut tx,
            &format!("app-{}", self.app.name),
            ExpectedVersion::Any,
            &events,
        )
        .await?;
        tx.commit().await?;
        Ok(lessons)
    }
}
