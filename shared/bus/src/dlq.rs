//! Dead letters: jobs that used up their retry budget or were refused for
//! good, kept with their last error until an operator redrives them.

use crate::{subjects, Bus, BusError, Job, DLQ_STREAM};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What is stored for each dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub job: Job,
    pub error: String,
    /// Deliveries of the job before it was given up.
    pub deliveries: u64,
    /// `exhausted` (retry budget used up) or `refused` (a permanent error).
    pub reason: String,
    pub dead_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterEntry {
    pub sequence: u64,
    #[serde(flatten)]
    pub letter: DeadLetter,
}

fn err(e: impl std::fmt::Display) -> BusError {
    BusError::Stream {
        stream: DLQ_STREAM.into(),
        detail: e.to_string(),
    }
}

impl Bus {
    /// As [`Bus::dead_letter`], de-duplicated on `origin` (the dead job's
    /// own message, `<stream>:<sequence>`) and its delivery count: a job
    /// that was redriven and fails again is a new message, so its dead
    /// letter is filed again instead of being taken for the first one
    /// (which the redrive removed).
    pub async fn dead_letter_from(
        &self,
        letter: &DeadLetter,
        origin: &str,
    ) -> Result<u64, BusError> {
        let payload = serde_json::to_vec(letter).map_err(|e| BusError::Decode(e.to_string()))?;
        let msg_id = format!(
            "dlq:{}:{}:{origin}:{}",
            letter.job.app, letter.job.person_id, letter.deliveries
        );
        Ok(self
            .publish(
                &subjects::dlq(&letter.job.app),
                &msg_id,
                &[],
                Bytes::from(payload),
            )
            .await?
            .sequence)
    }

    pub async fn dead_letter(&self, letter: &DeadLetter) -> Result<u64, BusError> {
        let payload = serde_json::to_vec(letter).map_err(|e| BusError::Decode(e.to_string()))?;
        // One dead letter per job and delivery count: a crash between this
        // publish and the ack does not file the same failure twice.
        let msg_id = format!(
            "dlq:{}:{}:{}:{}",
            letter.job.app,
            letter.job.person_id,
            letter
                .job
                .causation_id
                .map(|c| c.to_string())
                .unwrap_or_default(),
            letter.deliveries
        );
        Ok(self
            .publish(
                &subjects::dlq(&letter.job.app),
                &msg_id,
                &[],
                Bytes::from(payload),
            )
            .await?
            .sequence)
    }

    /// Job dead letters, oldest first, optionally of one app (dead messages
    /// are listed by `list_dead`).
    pub async fn list_dlq(
        &self,
        app: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetterEntry>, BusError> {
        Ok(self
            .scan_dead(limit, |e| match e {
                DeadEntry::Job(j) => app.is_none_or(|a| a == j.letter.job.app),
                DeadEntry::Message(_) => false,
            })
            .await?
            .into_iter()
            .filter_map(|e| match e {
                DeadEntry::Job(j) => Some(j),
                DeadEntry::Message(_) => None,
            })
            .collect())
    }

    pub async fn dead_letter_entry(
        &self,
        sequence: u64,
    ) -> Result<Option<DeadLetterEntry>, BusError> {
        let stream = self.js.get_stream(DLQ_STREAM).await.map_err(err)?;
        let Ok(m) = stream.get_raw_message(sequence).await else {
            return Ok(None);
        };
        let letter =
            serde_json::from_slice(&m.payload).map_err(|e| BusError::Decode(e.to_string()))?;
        Ok(Some(DeadLetterEntry { sequence, letter }))
    }

    /// Puts the job back on its app's queue and removes the dead letter.
    /// The job is level-triggered, so it converges on the person's state as
    /// it is now, not as it was when it failed.
    pub async fn redrive(&self, sequence: u64, partitions: u32) -> Result<Option<Job>, BusError> {
        let Some(entry) = self.dead_letter_entry(sequence).await? else {
            return Ok(None);
        };
        let job = entry.letter.job;
        let payload = serde_json::to_vec(&job).map_err(|e| BusError::Decode(e.to_string()))?;
        self.publish(
            &subjects::jobs(&job.app, job.partition(partitions)),
            &format!("redrive:{DLQ_STREAM}:{sequence}"),
            &[],
            Bytes::from(payload),
        )
        .await?;
        let stream = self.js.get_stream(DLQ_STREAM).await.map_err(err)?;
        stream.delete_message(sequence).await.map_err(err)?;
        Ok(Some(job))
    }
}

// ---------------------------------------------------------------------------
// Dead messages: any consumed (or relayed) message that could not be
// processed, whatever its kind. Kept apart from job dead letters on
// `tenure.dlq.msg.<consumer>` so `tenure dlq` can label both.

/// Payload bytes kept in a dead message. Larger payloads are cut, and
/// redriven from their original stream while it still holds them: the
/// dead letter must itself fit under the server's `max_payload`.
pub const MAX_DEAD_PAYLOAD: usize = 64 * 1024;
const MAX_DEAD_HEADERS: usize = 32;
const MAX_DEAD_HEADER_VALUE: usize = 1024;
const MAX_DEAD_ERROR: usize = 2000;

/// One message a consumer or relay gave up on, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadMessage {
    /// The durable consumer (or relay) that gave up.
    pub consumer: String,
    /// Where the message was read from or was to be published; a redrive
    /// publishes it here again.
    pub subject: String,
    /// The JetStream stream it was read from; `None` for a relay's row that
    /// never reached JetStream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_sequence: Option<u64>,
    /// Identifies the original message for de-duplication of dead letters
    /// (`<stream>:<sequence>`, or the relay's own row key).
    pub origin: String,
    /// Deliveries (or publish attempts) before it was given up.
    pub deliveries: u64,
    pub error: String,
    /// The payload, base64, at most `MAX_DEAD_PAYLOAD` bytes of it.
    pub payload: String,
    /// Size of the whole original payload.
    pub payload_bytes: u64,
    /// `payload` holds only the start of the original.
    #[serde(default)]
    pub payload_truncated: bool,
    /// The original headers (bounded), `Nats-Msg-Id` included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    pub dead_at: DateTime<Utc>,
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let end = (0..=max)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}…", &s[..end])
}

impl DeadMessage {
    /// A dead message for `payload` as published (or to be published) on
    /// `subject`; payload, headers and error are bounded here.
    pub fn new(
        consumer: &str,
        subject: &str,
        origin: String,
        payload: &[u8],
        headers: Vec<(String, String)>,
        deliveries: u64,
        error: &str,
    ) -> Self {
        use base64::Engine as _;
        let kept = &payload[..payload.len().min(MAX_DEAD_PAYLOAD)];
        DeadMessage {
            consumer: consumer.to_string(),
            subject: subject.to_string(),
            stream: None,
            stream_sequence: None,
            origin,
            deliveries,
            error: cut(error, MAX_DEAD_ERROR),
            payload: base64::engine::general_purpose::STANDARD.encode(kept),
            payload_bytes: payload.len() as u64,
            payload_truncated: kept.len() < payload.len(),
            headers: headers
                .into_iter()
                .take(MAX_DEAD_HEADERS)
                .map(|(k, v)| (cut(&k, 256), cut(&v, MAX_DEAD_HEADER_VALUE)))
                .collect(),
            dead_at: Utc::now(),
        }
    }

    /// A dead message for a message delivered by a JetStream consumer.
    pub fn from_jetstream(
        msg: &async_nats::jetstream::Message,
        consumer: &str,
        error: &str,
    ) -> Self {
        let headers = msg
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .flat_map(|(k, vs)| {
                        vs.iter()
                            .map(move |v| (k.to_string(), v.as_str().to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (stream, seq, delivered) = match msg.info() {
            Ok(i) => (
                Some(i.stream.to_string()),
                Some(i.stream_sequence),
                u64::try_from(i.delivered).unwrap_or(1),
            ),
            Err(_) => (None, None, 1),
        };
        let origin = match (&stream, seq) {
            (Some(s), Some(n)) => format!("{s}:{n}"),
            _ => format!("{}:{}", msg.subject, uuid::Uuid::new_v4()),
        };
        let mut dead = DeadMessage::new(
            consumer,
            msg.subject.as_str(),
            origin,
            &msg.payload,
            headers,
            delivered,
            error,
        );
        dead.stream = stream;
        dead.stream_sequence = seq;
        dead
    }

    /// The kept payload bytes (all of them unless `payload_truncated`).
    pub fn payload_bytes_kept(&self) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(&self.payload)
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadMessageEntry {
    pub sequence: u64,
    #[serde(flatten)]
    pub message: DeadMessage,
    /// The kept payload as text, when it is UTF-8 (for reading).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_text: Option<String>,
}

/// Either kind of dead letter, labelled by `kind` when serialised.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeadEntry {
    /// A fanout job for one (app, person).
    Job(DeadLetterEntry),
    /// Any other message a consumer or relay could not process.
    Message(DeadMessageEntry),
}

impl DeadEntry {
    pub fn sequence(&self) -> u64 {
        match self {
            DeadEntry::Job(e) => e.sequence,
            DeadEntry::Message(e) => e.sequence,
        }
    }
}

/// Which dead letters to list; every field narrows the list.
#[derive(Debug, Clone, Default)]
pub struct DeadFilter {
    /// Job dead letters of this app only (and no dead messages).
    pub app: Option<String>,
    /// Dead messages of this consumer only (and no job dead letters).
    pub consumer: Option<String>,
}

/// What a redrive put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Redriven {
    Job { job: Job },
    Message { consumer: String, subject: String },
}

fn decode_entry(m: &async_nats::jetstream::message::StreamMessage) -> Option<DeadEntry> {
    if m.subject.starts_with(subjects::DLQ_MESSAGES_PREFIX) {
        let message: DeadMessage = serde_json::from_slice(&m.payload).ok()?;
        let payload_text = String::from_utf8(message.payload_bytes_kept()).ok();
        Some(DeadEntry::Message(DeadMessageEntry {
            sequence: m.sequence,
            message,
            payload_text,
        }))
    } else {
        let letter: DeadLetter = serde_json::from_slice(&m.payload).ok()?;
        Some(DeadEntry::Job(DeadLetterEntry {
            sequence: m.sequence,
            letter,
        }))
    }
}

impl Bus {
    /// Files a message that could not be processed. Filed once per original
    /// message (`origin`), however often it is given up on.
    pub async fn dead_letter_message(&self, dead: &DeadMessage) -> Result<u64, BusError> {
        let payload = serde_json::to_vec(dead).map_err(|e| BusError::Decode(e.to_string()))?;
        let msg_id = format!("dlq:msg:{}:{}", dead.consumer, dead.origin);
        Ok(self
            .publish(
                &subjects::dlq_message(&dead.consumer),
                &msg_id,
                &[],
                Bytes::from(payload),
            )
            .await?
            .sequence)
    }

    /// Dead letters of both kinds, oldest first.
    pub async fn list_dead(
        &self,
        filter: &DeadFilter,
        limit: usize,
    ) -> Result<Vec<DeadEntry>, BusError> {
        self.scan_dead(limit, |entry| match entry {
            DeadEntry::Job(j) => {
                filter.consumer.is_none()
                    && filter.app.as_deref().is_none_or(|a| a == j.letter.job.app)
            }
            DeadEntry::Message(d) => {
                filter.app.is_none()
                    && filter
                        .consumer
                        .as_deref()
                        .is_none_or(|c| c == d.message.consumer)
            }
        })
        .await
    }

    /// The dead-letter stream oldest first, up to `limit` entries that
    /// `wanted` keeps. Redriven letters leave gaps; entries that do not
    /// decode are skipped.
    async fn scan_dead(
        &self,
        limit: usize,
        wanted: impl Fn(&DeadEntry) -> bool,
    ) -> Result<Vec<DeadEntry>, BusError> {
        let mut stream = self.js.get_stream(DLQ_STREAM).await.map_err(err)?;
        let state = stream.info().await.map_err(err)?.state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return Ok(out);
        }
        for seq in state.first_sequence..=state.last_sequence {
            if out.len() >= limit {
                break;
            }
            let Ok(m) = stream.get_raw_message(seq).await else {
                continue;
            };
            match decode_entry(&m) {
                Some(entry) if wanted(&entry) => out.push(entry),
                _ => {}
            }
        }
        Ok(out)
    }

    /// One dead letter of either kind.
    pub async fn dead_entry(&self, sequence: u64) -> Result<Option<DeadEntry>, BusError> {
        let stream = self.js.get_stream(DLQ_STREAM).await.map_err(err)?;
        let Ok(m) = stream.get_raw_message(sequence).await else {
            return Ok(None);
        };
        decode_entry(&m)
            .map(Some)
            .ok_or_else(|| BusError::Decode(format!("dead letter #{sequence} is unreadable")))
    }

    /// Dead messages only, oldest first, optionally of one consumer.
    pub async fn list_dead_messages(
        &self,
        consumer: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadMessageEntry>, BusError> {
        let filter = DeadFilter {
            app: None,
            consumer: consumer.map(str::to_string),
        };
        Ok(self
            .list_dead(&filter, usize::MAX)
            .await?
            .into_iter()
            .filter_map(|e| match e {
                DeadEntry::Message(m) => Some(m),
                DeadEntry::Job(_) => None,
            })
            .take(limit)
            .collect())
    }

    /// Publishes a dead message's payload to its original subject again
    /// (with its original headers, under a new message id so JetStream's
    /// de-duplication does not drop it) and removes the dead letter. A cut
    /// payload is read whole from its original stream; when that has aged
    /// out the redrive fails and the dead letter stays.
    pub async fn redrive_message(&self, sequence: u64) -> Result<Option<Redriven>, BusError> {
        let Some(DeadEntry::Message(entry)) = self.dead_entry(sequence).await? else {
            return Ok(None);
        };
        let dead = entry.message;
        let payload = if dead.payload_truncated {
            let (Some(stream), Some(seq)) = (&dead.stream, dead.stream_sequence) else {
                return Err(BusError::Stream {
                    stream: DLQ_STREAM.into(),
                    detail: format!(
                        "dead letter #{sequence} kept only {} of {} payload bytes and names no stream to read the rest from",
                        MAX_DEAD_PAYLOAD, dead.payload_bytes
                    ),
                });
            };
            let original = self.js.get_stream(stream).await.map_err(err)?;
            let m = original
                .get_raw_message(seq)
                .await
                .map_err(|e| BusError::Stream {
                    stream: stream.clone(),
                    detail: format!("the original message #{seq} is gone ({e}); the dead letter keeps only the start of it"),
                })?;
            m.payload
        } else {
            Bytes::from(dead.payload_bytes_kept())
        };
        let headers: Vec<(&str, &str)> = dead
            .headers
            .iter()
            .filter(|(k, _)| {
                !k.eq_ignore_ascii_case("Nats-Msg-Id") && !k.starts_with("Nats-Expected")
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.publish(
            &dead.subject,
            &format!("redrive:{DLQ_STREAM}:{sequence}"),
            &headers,
            payload,
        )
        .await?;
        let stream = self.js.get_stream(DLQ_STREAM).await.map_err(err)?;
        stream.delete_message(sequence).await.map_err(err)?;
        Ok(Some(Redriven::Message {
            consumer: dead.consumer,
            subject: dead.subject,
        }))
    }

    /// Redrives a dead letter of either kind.
    pub async fn redrive_any(
        &self,
        sequence: u64,
        partitions: u32,
    ) -> Result<Option<Redriven>, BusError> {
        match self.dead_entry(sequence).await? {
            None => Ok(None),
            Some(DeadEntry::Job(_)) => Ok(self
                .redrive(sequence, partitions)
                .await?
                .map(|job| Redriven::Job { job })),
            Some(DeadEntry::Message(_)) => self.redrive_message(sequence).await,
        }
    }
}

/// Gives up on a delivered message: files it as a dead message with
/// `error`, then terminates it so JetStream never delivers it again. When
/// the dead letter cannot be stored the message is NAKed for a later try
/// instead, so nothing is dropped unrecorded; the error is returned.
pub async fn settle_poison(
    bus: &Bus,
    msg: &async_nats::jetstream::Message,
    consumer: &str,
    error: &str,
) -> Result<u64, BusError> {
    use async_nats::jetstream::AckKind;
    let dead = DeadMessage::from_jetstream(msg, consumer, error);
    match bus.dead_letter_message(&dead).await {
        Ok(seq) => {
            tracing::warn!(
                consumer,
                subject = %dead.subject,
                stream_sequence = dead.stream_sequence,
                deliveries = dead.deliveries,
                dead_letter = seq,
                error = %dead.error,
                "message dead-lettered"
            );
            msg.ack_with(AckKind::Term)
                .await
                .map_err(|e| BusError::Consumer {
                    name: consumer.to_string(),
                    detail: format!("terminating a dead-lettered message: {e}"),
                })?;
            Ok(seq)
        }
        Err(e) => {
            let _ = msg
                .ack_with(AckKind::Nak(Some(std::time::Duration::from_secs(30))))
                .await;
            Err(e)
        }
    }
}

#[derive(Deserialize)]
struct MaxDeliveriesAdvisory {
    stream_seq: u64,
    deliveries: u64,
}

impl Bus {
    /// Files a dead message for every message JetStream stops delivering to
    /// `consumer` because it reached `max_deliver` without being settled:
    /// a worker that crashed, hung past the ack wait or NAKed it on its last
    /// delivery. Subscribes before returning; the returned future does the
    /// filing and ends with the connection (spawn it, or select it against a
    /// shutdown signal). A message the worker already dead-lettered itself is
    /// not filed twice (same origin).
    pub async fn watch_exhausted(
        &self,
        stream: &str,
        consumer: &str,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static, BusError> {
        use futures::StreamExt;
        let subject = format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}");
        let mut sub =
            self.client
                .subscribe(subject.clone())
                .await
                .map_err(|e| BusError::Consumer {
                    name: consumer.to_string(),
                    detail: format!("subscribing to {subject}: {e}"),
                })?;
        let bus = self.clone();
        let stream = stream.to_string();
        let consumer = consumer.to_string();
        Ok(async move {
            while let Some(m) = sub.next().await {
                let Ok(adv) = serde_json::from_slice::<MaxDeliveriesAdvisory>(&m.payload) else {
                    continue;
                };
                if let Err(e) = bus.file_exhausted(&stream, &consumer, &adv).await {
                    tracing::error!(%stream, %consumer, stream_sequence = adv.stream_seq, error = %e, "a message exhausted its deliveries and could not be dead-lettered");
                }
            }
        })
    }

    async fn file_exhausted(
        &self,
        stream: &str,
        consumer: &str,
        adv: &MaxDeliveriesAdvisory,
    ) -> Result<(), BusError> {
        let original = self.js.get_stream(stream).await.map_err(err)?;
        let m = original
            .get_raw_message(adv.stream_seq)
            .await
            .map_err(|e| BusError::Stream {
                stream: stream.to_string(),
                detail: format!("message #{}: {e}", adv.stream_seq),
            })?;
        let headers = m
            .headers
            .iter()
            .flat_map(|(k, vs)| {
                vs.iter()
                    .map(move |v| (k.to_string(), v.as_str().to_string()))
            })
            .collect();
        let mut dead = DeadMessage::new(
            consumer,
            m.subject.as_str(),
            format!("{stream}:{}", adv.stream_seq),
            &m.payload,
            headers,
            adv.deliveries,
            &format!(
                "delivered {} times without being settled: the worker failed, crashed or exceeded the ack wait on every delivery",
                adv.deliveries
            ),
        );
        dead.stream = Some(stream.to_string());
        dead.stream_sequence = Some(adv.stream_seq);
        let seq = self.dead_letter_message(&dead).await?;
        tracing::warn!(%stream, %consumer, stream_sequence = adv.stream_seq, deliveries = adv.deliveries, dead_letter = seq, "message exhausted its deliveries; dead-lettered");
        Ok(())
    }
}
