//! Tenure's JetStream bus: stream layout, subjects, message contracts and a
//! publish that only returns once JetStream has stored the message.

pub mod dlq;
pub mod messages;
pub mod quarantine;

pub use messages::{
    FetchEnvelope, IdentityEnvelope, IdpFetch, IdpFetchTarget, IngestEnvelope, Job,
};

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use bytes::Bytes;
use std::time::Duration;

pub const INGEST_STREAM: &str = "TENURE_INGEST";
pub const JOBS_STREAM: &str = "TENURE_JOBS";
pub const QUARANTINE_STREAM: &str = "TENURE_QUARANTINE";
pub const DLQ_STREAM: &str = "TENURE_DLQ";
pub const FETCH_STREAM: &str = "TENURE_FETCH";
/// IdP notifications waiting for their re-fetch from the IdP's API; apart
/// from `TENURE_FETCH`, whose worker reads every `tenure.fetch.>` subject as
/// an HR fetch.
pub const IDP_FETCH_STREAM: &str = "TENURE_IDP_FETCH";

pub mod subjects {
    pub fn ingest(source: &str) -> String {
        format!("tenure.ingest.{source}")
    }
    pub fn jobs(app: &str, partition: u32) -> String {
        format!("tenure.jobs.{app}.{partition}")
    }
    pub fn jobs_of_app(app: &str) -> String {
        format!("tenure.jobs.{app}.*")
    }
    pub fn quarantine(source: &str) -> String {
        format!("tenure.quarantine.{source}")
    }
    pub fn dlq(app: &str) -> String {
        format!("tenure.dlq.{app}")
    }
    /// IdP identity snapshots; same stream as HR records, so the engine
    /// applies both in one order.
    pub fn identity(provider: &str) -> String {
        format!("tenure.identity.{provider}")
    }
    /// Users and groups an IdP notification named, to read back from the
    /// IdP's API. Not under `tenure.fetch.>`: the HR fetch worker consumes
    /// all of that subtree as `FetchEnvelope`s.
    pub fn idp_fetch(provider: &str) -> String {
        format!("tenure.idp_fetch.{provider}")
    }
    /// Persons a dataless webhook named, to fetch back from the HRIS API.
    pub fn fetch(source: &str) -> String {
        format!("tenure.fetch.{source}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("JetStream stream {stream}: {detail}")]
    Stream { stream: String, detail: String },
    #[error("publish to {subject} failed: {detail}")]
    Publish { subject: String, detail: String },
    #[error("consumer {name}: {detail}")]
    Consumer { name: String, detail: String },
    #[error("message decode: {0}")]
    Decode(String),
}

#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub sequence: u64,
    /// JetStream had already stored a message with this id in its window.
    pub duplicate: bool,
}

impl Bus {
    /// Connects and makes sure Tenure's streams exist. `url` may list
    /// several servers of a cluster, separated by commas.
    pub async fn connect(url: &str, duplicate_window: Duration) -> Result<Self, BusError> {
        let servers = url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BusError::Connect {
                url: url.to_string(),
                detail: e.to_string(),
            })?;
        let client = async_nats::ConnectOptions::new()
            .name("tenure")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(servers)
            .await
            .map_err(|e| BusError::Connect {
                url: url.to_string(),
                detail: e.to_string(),
            })?;
        // Publishes wait for the stream's ack; a generous timeout rides out a
        // JetStream leader election instead of failing the webhook.
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(10))
            .build(client.clone());
        let bus = Bus { client, js };
        bus.ensure_streams(duplicate_window).await?;
        Ok(bus)
    }

    async fn ensure_streams(&self, duplicate_window: Duration) -> Result<(), BusError> {
        let day = Duration::from_secs(24 * 3600);
        let configs = [
            stream::Config {
                name: INGEST_STREAM.into(),
                subjects: vec!["tenure.ingest.>".into(), "tenure.identity.>".into()],
                duplicate_window,
                max_age: 30 * day,
                storage: stream::StorageType::File,
                ..Default::default()
            },
            stream::Config {
                name: JOBS_STREAM.into(),
                subjects: vec!["tenure.jobs.>".into()],
                duplicate_window: duplicate_window.min(day),
                max_age: 7 * day,
                storage: stream::StorageType::File,
                ..Default::default()
            },
            stream::Config {
                name: QUARANTINE_STREAM.into(),
                subjects: vec!["tenure.quarantine.>".into()],
                // Unauthenticated senders can reach the quarantine, so it is
                // bounded: oldest entries go first.
                max_bytes: 512 * 1024 * 1024,
                max_age: 90 * day,
                discard: stream::DiscardPolicy::Old,
                storage: stream::StorageType::File,
                ..Default::default()
            },
            stream::Config {
                name: FETCH_STREAM.into(),
                subjects: vec!["tenure.fetch.>".into()],
                duplicate_window,
                // The fetch worker quarantines what it cannot complete
                // after its redeliveries; a week bounds anything left.
                max_age: 7 * day,
                storage: stream::StorageType::File,
                ..Default::default()
            },
            stream::Config {
                name: IDP_FETCH_STREAM.into(),
                subjects: vec!["tenure.idp_fetch.>".into()],
                duplicate_window: duplicate_window.min(Duration::from_secs(3600)),
                max_age: 7 * day,
                storage: stream::StorageType::File,
                ..Default::default()
            },
            stream::Config {
                name: DLQ_STREAM.into(),
                subjects: vec!["tenure.dlq.>".into()],
                // Dead letters wait for an operator: kept until redriven.
                max_age: 365 * day,
                storage: stream::StorageType::File,
                ..Default::default()
            },
        ];
        for cfg in configs {
            let name = cfg.name.clone();
            self.js
                .create_or_update_stream(cfg)
                .await
                .map_err(|e| BusError::Stream {
                    stream: name,
                    detail: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// Publishes and waits until JetStream has stored the message.
    pub async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        headers: &[(&str, &str)],
        payload: Bytes,
    ) -> Result<Stored, BusError> {
        let ack = self.send(subject, msg_id, headers, payload).await?;
        Self::await_ack(subject, ack).await
    }

    async fn send(
        &self,
        subject: &str,
        msg_id: &str,
        headers: &[(&str, &str)],
        payload: Bytes,
    ) -> Result<jetstream::context::PublishAckFuture, BusError> {
        let mut msg = PublishMessage::build().payload(payload).message_id(msg_id);
        for (k, v) in headers {
            msg = msg.header(*k, *v);
        }
        self.js
            .send_publish(subject.to_string(), msg)
            .await
            .map_err(|e| BusError::Publish {
                subject: subject.to_string(),
                detail: e.to_string(),
            })
    }

    async fn await_ack(
        subject: &str,
        ack: jetstream::context::PublishAckFuture,
    ) -> Result<Stored, BusError> {
        let ack = ack.await.map_err(|e| BusError::Publish {
            subject: subject.to_string(),
            detail: e.to_string(),
        })?;
        Ok(Stored {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// Publishes a batch with all messages in flight at once, then waits for
    /// every ack; the result has one entry per input, in order.
    pub async fn publish_many(
        &self,
        messages: Vec<(String, String, Bytes)>,
    ) -> Vec<Result<Stored, BusError>> {
        let mut pending = Vec::with_capacity(messages.len());
        for (subject, msg_id, payload) in messages {
            let sent = self.send(&subject, &msg_id, &[], payload).await;
            pending.push((subject, sent));
        }
        let mut out = Vec::with_capacity(pending.len());
        for (subject, sent) in pending {
            out.push(match sent {
                Ok(ack) => Self::await_ack(&subject, ack).await,
                Err(e) => Err(e),
            });
        }
        out
    }

    /// A durable pull consumer with explicit acks.
    pub async fn durable_consumer(
        &self,
        stream_name: &str,
        durable: &str,
        filter_subject: &str,
        ack_wait: Duration,
        max_deliver: i64,
    ) -> Result<consumer::PullConsumer, BusError> {
        let err = |e: String| BusError::Consumer {
            name: durable.to_string(),
            detail: e,
        };
        let stream = self
            .js
            .get_stream(stream_name)
            .await
            .map_err(|e| err(e.to_string()))?;
        stream
            .get_or_create_consumer(
                durable,
                consumer::pull::Config {
                    durable_name: Some(durable.to_string()),
                    filter_subject: filter_subject.to_string(),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait,
                    max_deliver,
                    max_ack_pending: 1000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| err(e.to_string()))
    }
}

pub fn header<'a>(msg: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    msg.headers.as_ref()?.get(name).map(|v| v.as_str())
}
