use chrono::{DateTime, Utc};
use serde::Serialize;
use tenure_store::RecordedEvent;
use uuid::Uuid;

/// Points at the stored event behind an answer, so an auditor can look it
/// up (`tenure audit search --correlation …`) and check its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventRef {
    pub event_id: Uuid,
    pub global_position: i64,
    pub event_type: String,
    pub correlation_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    pub at: DateTime<Utc>,
}

impl From<&RecordedEvent> for EventRef {
    fn from(e: &RecordedEvent) -> Self {
        EventRef {
            event_id: e.event_id,
            global_position: e.global_position,
            event_type: e.event_type.clone(),
            correlation_id: e.metadata.correlation_id,
            causation_id: e.metadata.causation_id,
            at: e.recorded_at,
        }
    }
}
