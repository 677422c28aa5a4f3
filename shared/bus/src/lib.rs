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
    /// Where dead messages of any kind are filed (see `dlq::DeadMessage`),
    /// one subject per consumer; the trailing dot keeps them apart from an
    /// app named `msg`.
    pub const DLQ_MESSAGES_PREFIX: &str = "tenure.dlq.msg.";
    pub fn dlq_message(consumer: &str) -> String {
        format!("{DLQ_MESSAGES_PREFIX}{consumer}")
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
        quarantine::ensure_rejected_stream(&self.js).await?;
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

/// How often, and how far apart, JetStream delivers a message to a
/// consumer before the consumer gives up on it. Every consumer is bounded:
/// a message that can never be processed is dead-lettered (see
/// `dlq::settle_poison`) instead of being redelivered forever and filling
/// `max_ack_pending`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redelivery {
    /// Deliveries in all, the first included. Finite.
    pub max_deliver: i64,
    /// Waits before each redelivery of an unacknowledged message (JetStream
    /// consumer `backoff`, nats-server 2.7.1+): the first one is also the
    /// ack wait, so it must exceed the longest processing of one message.
    /// The last one repeats. Also used for explicit NAK delays
    /// (`nak_delay`), so both kinds of retry follow one schedule.
    pub backoff: Vec<Duration>,
    pub max_ack_pending: i64,
}

impl Redelivery {
    /// `max_deliver` deliveries, the first redelivery after `first` (which
    /// is also the ack wait), each later one twice as late, up to `cap`.
    pub fn exponential(max_deliver: i64, first: Duration, cap: Duration) -> Self {
        let max_deliver = max_deliver.max(1);
        let mut backoff = Vec::new();
        let first = first.max(Duration::from_secs(1));
        let cap = cap.max(first);
        let mut wait = first;
        // JetStream needs fewer backoff steps than deliveries.
        let steps = usize::try_from(max_deliver - 1).unwrap_or(0).clamp(1, 16);
        for _ in 0..steps {
            backoff.push(wait.min(cap));
            wait = wait.saturating_mul(2);
        }
        Redelivery {
            max_deliver,
            backoff,
            max_ack_pending: 1000,
        }
    }

    /// The ack wait JetStream applies (the first backoff step).
    pub fn ack_wait(&self) -> Duration {
        self.backoff
            .first()
            .copied()
            .unwrap_or(Duration::from_secs(30))
    }

    /// The wait before redelivering a message NAKed on its `delivered`th
    /// delivery (1-based).
    pub fn nak_delay(&self, delivered: i64) -> Duration {
        let i = usize::try_from(delivered.saturating_sub(1)).unwrap_or(0);
        self.backoff
            .get(i)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(30))
    }

    /// This delivery is the last JetStream will make: a failure now must be
    /// dead-lettered, not NAKed.
    pub fn is_last(&self, delivered: i64) -> bool {
        delivered >= self.max_deliver
    }
}

impl Bus {
    /// A durable pull consumer bounded by `redelivery`. An existing
    /// consumer of the same name is updated to these settings (nats-server
    /// 2.9 accepts changes of `max_deliver`, `backoff`, `ack_wait` and
    /// `max_ack_pending` on a durable), so a consumer created unbounded by an
    /// older release becomes bounded on the next start.
    pub async fn bounded_consumer(
        &self,
        stream_name: &str,
        durable: &str,
        filter_subject: &str,
        redelivery: &Redelivery,
    ) -> Result<consumer::PullConsumer, BusError> {
        let err = |e: String| BusError::Consumer {
            name: durable.to_string(),
            detail: e,
        };
        if redelivery.max_deliver < 1 {
            return Err(err("max_deliver must be finite (1 or more)".into()));
        }
        let stream = self
            .js
            .get_stream(stream_name)
            .await
            .map_err(|e| err(e.to_string()))?;
        // JetStream refuses a backoff with as many steps as deliveries.
        let steps = usize::try_from(redelivery.max_deliver - 1).unwrap_or(0);
        let backoff: Vec<Duration> = redelivery.backoff.iter().copied().take(steps).collect();
        let config = consumer::pull::Config {
            durable_name: Some(durable.to_string()),
            filter_subject: filter_subject.to_string(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: redelivery.ack_wait(),
            max_deliver: redelivery.max_deliver,
            backoff,
            max_ack_pending: redelivery.max_ack_pending,
            ..Default::default()
        };
        stream
            .create_consumer(config)
            .await
            .map_err(|e| err(e.to_string()))
    }
}

/// Runs `work` while telling JetStream every `every` that `msg` is still
/// being processed, so a handler that runs longer than the consumer's ack
/// wait (the first backoff step) is not redelivered to another worker
/// meanwhile.
pub async fn with_progress<T>(
    msg: &jetstream::Message,
    every: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    let every = every.max(Duration::from_millis(100));
    tokio::pin!(work);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                if let Err(e) = msg.ack_with(jetstream::AckKind::Progress).await {
                    tracing::debug!(error = %e, "progress ack failed");
                }
            }
        }
    }
}

pub fn header<'a>(msg: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    msg.headers.as_ref()?.get(name).map(|v| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_redelivery_doubles_up_to_its_cap_and_stays_there() {
        let r = Redelivery::exponential(35, Duration::from_secs(30), Duration::from_secs(1800));
        let secs: Vec<u64> = r.backoff.iter().map(Duration::as_secs).collect();
        assert_eq!(&secs[..7], &[30, 60, 120, 240, 480, 960, 1800]);
        assert!(secs[7..].iter().all(|s| *s == 1800));
        assert!(
            r.backoff.len() < 35,
            "JetStream needs fewer steps than deliveries"
        );
        assert_eq!(r.ack_wait(), Duration::from_secs(30));
        assert_eq!(r.nak_delay(1), Duration::from_secs(30));
        assert_eq!(r.nak_delay(3), Duration::from_secs(120));
        assert_eq!(r.nak_delay(1000), Duration::from_secs(1800));
        assert!(!r.is_last(34) && r.is_last(35) && r.is_last(36));
    }

    #[test]
    fn a_redelivery_is_always_finite_and_has_an_ack_wait() {
        let one = Redelivery::exponential(0, Duration::ZERO, Duration::ZERO);
        assert_eq!(one.max_deliver, 1);
        assert!(one.is_last(1));
        assert!(one.ack_wait() >= Duration::from_secs(1));
    }
}
