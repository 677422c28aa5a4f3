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

    /// Dead letters, oldest first, optionally of one app.
    pub async fn list_dlq(
        &self,
        app: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetterEntry>, BusError> {
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
            // Redriven letters leave gaps.
            let Ok(m) = stream.get_raw_message(seq).await else {
                continue;
            };
            let Ok(letter) = serde_json::from_slice::<DeadLetter>(&m.payload) else {
                continue;
            };
            if app.is_none_or(|a| a == letter.job.app) {
                out.push(DeadLetterEntry {
                    sequence: seq,
                    letter,
                });
            }
        }
        Ok(out)
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
