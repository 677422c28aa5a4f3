//! Identity providers as sources: the inbound SCIM 2.0 endpoint Authentik's
//! SCIM provider pushes to, and the publisher that moves the snapshots it
//! writes (in the same transaction as each SCIM change) to JetStream.

use axum::Router;
use bytes::Bytes;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tenure_bus::{subjects, Bus, IdentityEnvelope};
use tenure_config::Config;
use tenure_store::sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

/// The routes for every `[[idp]]` (at `/scim/v2/<name>`, and at `/scim/v2`
/// too when there is exactly one) and one publisher task per IdP.
pub fn mount(
    cfg: &Config,
    pool: PgPool,
    bus: Bus,
    shutdown: CancellationToken,
) -> anyhow::Result<(Router, Vec<JoinHandle<()>>)> {
    let mut router = Router::new();
    let mut tasks = Vec::new();
    let public = cfg
        .ingest
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", cfg.ingest.listen));
    for idp in &cfg.idp {
        let token = idp.token.resolve()?;
        let make = |prefix: &str| {
            let mut p = tenure_idp_scim::Provider::new(
                pool.clone(),
                idp.name.clone(),
                token.expose().to_string(),
                format!("{}{prefix}", public.trim_end_matches('/')),
            );
            p.max_body_bytes = p.max_body_bytes.max(cfg.ingest.max_body_bytes);
            Arc::new(p)
        };
        let prefix = format!("/scim/v2/{}", idp.name);
        router = router.nest(&prefix, tenure_idp_scim::router(make(&prefix)));
        if cfg.idp.len() == 1 {
            router = router.nest("/scim/v2", tenure_idp_scim::router(make("/scim/v2")));
        }
        tasks.push(tokio::spawn(publish_loop(
            pool.clone(),
            bus.clone(),
            idp.name.clone(),
            shutdown.clone(),
        )));
    }
    Ok((router, tasks))
}

/// Publishes pending identity snapshots, oldest first. The outbox sequence
/// is the message id, so two ingest instances publishing the same rows (or
/// a crash between publish and mark) never produce two messages.
pub async fn publish_loop(pool: PgPool, bus: Bus, provider: String, shutdown: CancellationToken) {
    info!(%provider, "identity publisher running");
    loop {
        let published = match publish_pending(&pool, &bus, &provider).await {
            Ok(n) => n,
            Err(e) => {
                warn!(%provider, error = %e, "identity snapshots not published yet; retrying");
                0
            }
        };
        if published > 0 {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

pub async fn publish_pending(pool: &PgPool, bus: &Bus, provider: &str) -> anyhow::Result<usize> {
    let pending = tenure_idp_scim::pending(pool, provider, 200).await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let mut done = Vec::with_capacity(pending.len());
    for (seq, identity) in pending {
        let env = IdentityEnvelope {
            delivery_id: format!("scim:{seq}"),
            received_at: Utc::now(),
            correlation_id: Uuid::new_v5(
                &Uuid::NAMESPACE_OID,
                format!("idp:{provider}:{seq}").as_bytes(),
            ),
            identity,
        };
        let payload = Bytes::from(serde_json::to_vec(&env)?);
        bus.publish(&subjects::identity(provider), &env.msg_id(), &[], payload)
            .await?;
        done.push(seq);
    }
    tenure_idp_scim::mark_published(pool, &done).await?;
    Ok(done.len())
}
