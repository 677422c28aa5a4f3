//! Fetch-back for dataless webhooks (BambooHR event hooks, HiBob,
//! Personio, Gusto): the webhook only names a person, so the person is read
//! from the HRIS API. This runs from the durable `TENURE_FETCH` stream, not
//! in the webhook's request, so the vendor gets its 2xx at once (Personio
//! wants one within 3 s) and a slow or failing HRIS API is retried like any
//! downstream call. Fetches that cannot succeed (the person is gone, the
//! token is refused, the answer does not map) are quarantined with the
//! reason, to be replayed once fixed.

use crate::{IngestState, SourceRuntime};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tenure_bus::{subjects, Bus, FetchEnvelope, IngestEnvelope, FETCH_STREAM};
use tenure_config::{Config, SourceApiConfig};
use tenure_sources::{ApiSettings, FetchCall};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

/// The durable consumer of `tenure.fetch.>`; also the name its dead
/// messages are filed under.
pub const CONSUMER: &str = "tenure-fetch";

/// How the fetch consumer is bounded: 35 deliveries, the first retry after
/// 30 s, doubling up to 30 min, which rides out an HRIS outage of about 15
/// hours before the fetch is quarantined for an operator to replay. Each
/// delivery already retries `max_attempts` times with backoff; a delivery
/// that runs longer than the 30 s ack wait reports progress.
pub fn redelivery() -> tenure_bus::Redelivery {
    tenure_bus::Redelivery::exponential(35, Duration::from_secs(30), Duration::from_secs(1800))
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Worth trying again later: timeouts, 429, 5xx, connection errors.
    #[error("{0}")]
    Transient(String),
    /// Will not succeed until something changes: quarantined.
    #[error("{0}")]
    Permanent(String),
    /// The HRIS does not know the person (404/410).
    #[error("{0}")]
    NotFound(String),
}

/// A source's API client: reqwest with the configured timeout.
pub struct ApiClient {
    http: reqwest::Client,
    api: ApiSettings,
    max_attempts: u32,
    /// Vendors whose API takes a short-lived token obtained with client
    /// credentials (Personio: `POST /v1/auth` with `client_id` = `api.user`
    /// and `client_secret` = `api.token`) keep the current one here.
    session: Option<tokio::sync::Mutex<Option<String>>>,
}

impl ApiClient {
    pub fn new(cfg: &SourceApiConfig) -> anyhow::Result<Self> {
        let token = cfg.token.resolve()?;
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(cfg.timeout_ms.max(1)))
                .connect_timeout(Duration::from_millis(cfg.timeout_ms.clamp(1, 5_000)))
                .build()?,
            api: ApiSettings {
                base_url: cfg.base_url.trim_end_matches('/').to_string(),
                token: token.expose().to_string(),
                user: cfg.user.clone(),
            },
            max_attempts: cfg.max_attempts.max(1),
            session: None,
        })
    }

    /// For a source of `kind`: Personio with `api.user` set exchanges the
    /// client id and secret for a session token; with only `api.token` the
    /// token is used as it is.
    pub fn for_source(kind: tenure_sources::Kind, cfg: &SourceApiConfig) -> anyhow::Result<Self> {
        let mut client = Self::new(cfg)?;
        if kind == tenure_sources::Kind::Personio && cfg.user.is_some() {
            client.session = Some(tokio::sync::Mutex::new(None));
        }
        Ok(client)
    }

    /// The call with the session token in place of the configured secret,
    /// obtaining one first when there is none (or `renew`).
    async fn with_session(&self, call: &FetchCall, renew: bool) -> Result<FetchCall, FetchError> {
        let Some(session) = &self.session else {
            return Ok(call.clone());
        };
        let mut current = session.lock().await;
        if current.is_none() || renew {
            *current = Some(self.personio_token().await?);
        }
        let token = current.clone().unwrap_or_default();
        let mut call = call.clone();
        for (k, v) in &mut call.headers {
            if k.eq_ignore_ascii_case("authorization") {
                *v = format!("Bearer {token}");
            }
        }
        Ok(call)
    }

    async fn personio_token(&self) -> Result<String, FetchError> {
        let url = format!("{}/v1/auth", self.api.base_url);
        let resp = self
            .http
            .post(&url)
            .header("accept", "application/json")
            .json(&serde_json::json!({
                "client_id": self.api.user.clone().unwrap_or_default(),
                "client_secret": self.api.token,
            }))
            .send()
            .await
            .map_err(|e| FetchError::Transient(format!("POST {}: {e}", path_of(&url))))?;
        let status = resp.status();
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(FetchError::Transient(format!(
                "POST {} answered {status}",
                path_of(&url)
            )));
        }
        if !status.is_success() {
            return Err(FetchError::Permanent(format!(
                "POST {} answered {status}: check the source's api.user (client id) and api.token (client secret)",
                path_of(&url)
            )));
        }
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| FetchError::Permanent(format!("POST {}: {e}", path_of(&url))))?;
        body.pointer("/data/token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                FetchError::Permanent(format!(
                    "POST {} answered without data.token",
                    path_of(&url)
                ))
            })
    }

    /// Sends one call, retrying transient failures with exponential backoff
    /// and jitter, waiting what `Retry-After` asks for when the API says so.
    pub async fn get_json(&self, call: &FetchCall) -> Result<serde_json::Value, FetchError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        let mut renewed = false;
        loop {
            attempt += 1;
            let sent = self.with_session(call, false).await?;
            let err = match self.send(&sent).await {
                Ok(v) => return Ok(v),
                // A session token expired: one new token, then the call again.
                Err((FetchError::Permanent(m), _))
                    if self.session.is_some() && !renewed && m.contains("answered 401") =>
                {
                    renewed = true;
                    let fresh = self.with_session(call, true).await?;
                    match self.send(&fresh).await {
                        Ok(v) => return Ok(v),
                        Err((FetchError::Transient(m), retry_after)) => {
                            (FetchError::Transient(m), retry_after)
                        }
                        Err((e, _)) => return Err(e),
                    }
                }
                Err((FetchError::Transient(m), retry_after)) => {
                    (FetchError::Transient(m), retry_after)
                }
                Err((e, _)) => return Err(e),
            };
            if attempt >= self.max_attempts {
                return Err(err.0);
            }
            let jitter = Duration::from_millis(rand::random::<u64>() % 100);
            let wait = err.1.unwrap_or(delay).min(Duration::from_secs(60)) + jitter;
            warn!(attempt, error = %err.0, wait_ms = wait.as_millis() as u64, "HRIS API call failed; retrying");
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    async fn send(
        &self,
        call: &FetchCall,
    ) -> Result<serde_json::Value, (FetchError, Option<Duration>)> {
        let mut req = self.http.request(call.method.clone(), &call.url);
        for (k, v) in &call.headers {
            req = req.header(k, v);
        }
        if let Some(body) = &call.body {
            req = req.body(body.clone());
        }
        let resp = req.send().await.map_err(|e| {
            (
                FetchError::Transient(format!("{} {}: {e}", call.method, path_of(&call.url))),
                None,
            )
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.bytes().await.map_err(|e| {
            (
                FetchError::Transient(format!("reading the answer: {e}")),
                None,
            )
        })?;
        let what = format!(
            "{} {} answered {}",
            call.method,
            path_of(&call.url),
            status.as_u16()
        );
        match status.as_u16() {
            200..=299 => serde_json::from_slice(&body).map_err(|e| {
                (
                    FetchError::Permanent(format!("{what} with invalid JSON: {e}")),
                    None,
                )
            }),
            404 | 410 => Err((
                FetchError::NotFound(format!("{what}: the person is not in the HRIS")),
                None,
            )),
            401 | 403 => Err((
                FetchError::Permanent(format!("{what}: check the source's api.token")),
                None,
            )),
            408 | 425 | 429 | 500..=599 => Err((FetchError::Transient(what), retry_after)),
            _ => Err((FetchError::Permanent(what), None)),
        }
    }
}

/// The URL without its query string: logs and quarantine reasons never
/// carry query parameters (some vendors put keys there).
fn path_of(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// Fetches one person and turns the answer into the record the engine gets.
pub async fn fetch_record(
    source: &SourceRuntime,
    client: &ApiClient,
    env: &FetchEnvelope,
) -> Result<IngestEnvelope, FetchError> {
    let call = source
        .adapter
        .try_fetch_call(&env.request, &client.api)
        .map_err(|e| FetchError::Permanent(format!("building the HRIS request: {e}")))?;
    let body = client.get_json(&call).await?;
    let record = source
        .adapter
        .record_from_api(&env.request, &body, Utc::now())
        .map_err(|e| FetchError::Permanent(format!("mapping the HRIS answer: {e}")))?;
    Ok(IngestEnvelope {
        source: env.source.clone(),
        delivery_id: format!("fetch:{}:{}", env.delivery_id, env.request.source_person_id),
        received_at: env.received_at,
        correlation_id: env.correlation_id,
        record,
    })
}

/// Consumes `tenure.fetch.>` until cancelled.
pub async fn run(cfg: Config, state: Arc<IngestState>, shutdown: CancellationToken) {
    let mut clients = std::collections::HashMap::new();
    for src in &cfg.sources {
        if let Some(api) = &src.api {
            match ApiClient::for_source(src.kind, api) {
                Ok(c) => {
                    clients.insert(src.name.clone(), Arc::new(c));
                }
                Err(e) => {
                    warn!(source = %src.name, error = %e, "HRIS API client unavailable; fetches for it are quarantined")
                }
            }
        }
    }
    let consumer = match state
        .bus
        .bounded_consumer(FETCH_STREAM, CONSUMER, "tenure.fetch.>", &redelivery())
        .await
    {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "fetch consumer unavailable");
            return;
        }
    };
    // A fetch that crashed or hung on every delivery is filed, not lost.
    match state.bus.watch_exhausted(FETCH_STREAM, CONSUMER).await {
        Ok(watch) => {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = watch => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
        Err(e) => warn!(error = %e, "cannot watch for exhausted fetches"),
    }
    let mut messages = match consumer.messages().await {
        Ok(m) => m,
        Err(e) => {
            error!(error = %e, "fetch consumer unavailable");
            return;
        }
    };
    // Fetches for different persons run in parallel, a few at a time, so one
    // slow HRIS answer does not hold up the rest.
    let permits = Arc::new(tokio::sync::Semaphore::new(4));
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = messages.next() => m,
        };
        let msg = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                warn!(error = %e, "fetch consumer error; continuing");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            None => break,
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let state = state.clone();
        let clients = clients.clone();
        tokio::spawn(async move {
            handle(&state, &clients, msg).await;
            drop(permit);
        });
    }
}

async fn handle(
    state: &IngestState,
    clients: &std::collections::HashMap<String, Arc<ApiClient>>,
    msg: async_nats::jetstream::Message,
) {
    let env: FetchEnvelope = match serde_json::from_slice(&msg.payload) {
        Ok(e) => e,
        Err(e) => {
            let why = format!("undecodable fetch request: {e}");
            if let Err(de) = tenure_bus::dlq::settle_poison(&state.bus, &msg, CONSUMER, &why).await
            {
                error!(error = %de, %why, "could not dead-letter an undecodable fetch request; it is redelivered");
            }
            return;
        }
    };
    let span = tracing::info_span!("fetch", source = %env.source, delivery_id = %env.delivery_id, person = %env.request.source_person_id, correlation_id = %env.correlation_id);
    let redelivery = redelivery();
    let work = async {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        let outcome = match (state.sources.get(&env.source), clients.get(&env.source)) {
            (None, _) => Err(FetchError::Permanent(format!(
                "source {:?} is no longer configured",
                env.source
            ))),
            (Some(_), None) => Err(FetchError::Permanent(format!(
                "source {:?} has no usable [source.api] to fetch persons from",
                env.source
            ))),
            (Some(source), Some(client)) => match fetch_record(source, client, &env).await {
                Err(FetchError::NotFound(m)) if source.adapter.is_deletion(&env.request) => {
                    revocation(state, source, &env).await.map_err(|e| {
                        FetchError::Permanent(format!("{m}; and no earlier record to revoke: {e}"))
                    })
                }
                // An HRIS may answer 404 for a moment right after the event
                // (replication lag); retried, then quarantined.
                Err(FetchError::NotFound(m)) => Err(FetchError::Transient(m)),
                other => other,
            },
        };
        let result = match outcome {
            Ok(record) => publish_record(&state.bus, &record).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                info!("person fetched back and published");
                let _ = msg.ack().await;
            }
            Err(FetchError::Transient(m)) if !redelivery.is_last(delivered) => {
                let wait = redelivery.nak_delay(delivered);
                warn!(error = %m, delivered, wait_s = wait.as_secs(), "fetch failed; JetStream redelivers it later");
                let _ = msg
                    .ack_with(async_nats::jetstream::AckKind::Nak(Some(wait)))
                    .await;
            }
            Err(e) => {
                let reason = format!("fetch_failed: after {delivered} deliveries: {e}");
                warn!(%reason, "fetch quarantined");
                let quarantined = state
                    .bus
                    .quarantine_request(
                        &env.source,
                        0,
                        &reason,
                        Bytes::from(msg.payload.to_vec()),
                        &[("x-tenure-kind".into(), "fetch".into())],
                    )
                    .await;
                match quarantined {
                    Ok(_) => {
                        let _ = msg.ack_with(async_nats::jetstream::AckKind::Term).await;
                    }
                    // The quarantine is unavailable: the dead-letter queue
                    // keeps it instead (or, failing that too, it is
                    // redelivered, and filed once JetStream stops).
                    Err(qe) => {
                        warn!(error = %qe, "could not quarantine the fetch; dead-lettering it");
                        let why = format!("{reason} (the quarantine was unavailable: {qe})");
                        if let Err(de) =
                            tenure_bus::dlq::settle_poison(&state.bus, &msg, CONSUMER, &why).await
                        {
                            warn!(error = %de, "could not dead-letter the fetch either; it will be redelivered");
                        }
                    }
                }
            }
        }
    };
    tenure_bus::with_progress(&msg, redelivery.ack_wait() / 2, work)
        .instrument(span)
        .await
}

/// A person deleted in the HRIS loses access at once, reversibly: the last
/// record Tenure holds, terminated with `revoke_immediately` (see
/// `Adapter::is_deletion` for why not "rescinded").
async fn revocation(
    state: &IngestState,
    source: &SourceRuntime,
    env: &FetchEnvelope,
) -> Result<IngestEnvelope, String> {
    let pool = state
        .pool
        .as_ref()
        .ok_or("ingest runs without the database")?;
    let person = tenure_domain::person::person_id_for(&env.source, &env.request.source_person_id);
    let last: Option<serde_json::Value> = tenure_store::sqlx::query_scalar(
        "SELECT data->'record' FROM events WHERE stream_id = $1 AND event_type = 'SourceRecordReceived'
         ORDER BY version DESC LIMIT 1",
    )
    .bind(format!("person-{person}"))
    .fetch_optional(pool)
    .await
    .map_err(|e| e.to_string())?;
    let last: tenure_domain::SourceRecord =
        serde_json::from_value(last.ok_or("the person was never seen")?)
            .map_err(|e| e.to_string())?;
    info!("person deleted in the HRIS; revoking access now");
    Ok(IngestEnvelope {
        source: env.source.clone(),
        delivery_id: format!(
            "deleted:{}:{}",
            env.delivery_id, env.request.source_person_id
        ),
        received_at: env.received_at,
        correlation_id: env.correlation_id,
        record: source.adapter.revocation_record(&last, &env.request),
    })
}

async fn publish_record(bus: &Bus, env: &IngestEnvelope) -> Result<(), FetchError> {
    let payload = serde_json::to_vec(env)
        .map(Bytes::from)
        .map_err(|e| FetchError::Permanent(format!("encoding: {e}")))?;
    bus.publish(&subjects::ingest(&env.source), &env.msg_id(), &[], payload)
        .await
        .map(|_| ())
        .map_err(|e| FetchError::Transient(format!("JetStream: {e}")))
}
