//! Leavers from the person streams (`person-<uuid>`): when each termination
//! took effect, and who is a leaver now.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tenure_store::RecordedEvent;
use uuid::Uuid;

use crate::EventRef;

/// Person events that move the lifecycle, each carrying `since` and the
/// person's `attributes` (shared/domain's `PersonEvent`).
pub const LIFECYCLE_TYPES: &[&str] = &[
    "HireScheduled",
    "PersonHired",
    "PersonRehired",
    "LeaveStarted",
    "LeaveEnded",
    "HireRescinded",
    "PersonTerminated",
    "PersonPurged",
];

/// One termination as the engine recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Termination {
    pub person_id: Uuid,
    /// Work e-mail (or name) as the termination event carries it.
    pub person: String,
    /// The effective instant: `since` of `PersonTerminated` (end of the
    /// last day at the person's site, or when access had to be cut).
    pub effective_at: DateTime<Utc>,
    /// `end_of_last_day`, `status` or `revoked_immediately`.
    pub reason: String,
    pub event: EventRef,
    /// When the person was employed again afterwards, if they were.
    pub rehired_at: Option<DateTime<Utc>>,
}

/// How a person is named in reports: work e-mail, else user name, else the
/// display name, from the `attributes` of a lifecycle event.
pub fn person_label(attributes: &Value) -> String {
    ["email", "user_name", "display_name"]
        .iter()
        .find_map(|k| attributes[*k].as_str().filter(|s| !s.is_empty()))
        .unwrap_or("")
        .to_owned()
}

fn person_of(stream_id: &str) -> Option<Uuid> {
    stream_id.strip_prefix("person-")?.parse().ok()
}

fn instant(v: &Value) -> Option<DateTime<Utc>> {
    serde_json::from_value(v.clone()).ok()
}

/// Every termination in one person stream (events in version order).
pub fn terminations<'a>(events: impl IntoIterator<Item = &'a RecordedEvent>) -> Vec<Termination> {
    let mut out: Vec<Termination> = Vec::new();
    for e in events {
        match e.event_type.as_str() {
            "PersonTerminated" => {
                let Some(person_id) = person_of(&e.stream_id) else {
                    continue;
                };
                out.push(Termination {
                    person_id,
                    person: person_label(&e.data["attributes"]),
                    effective_at: instant(&e.data["since"]).unwrap_or(e.recorded_at),
                    reason: e.data["reason"].as_str().unwrap_or("").to_owned(),
                    event: EventRef::from(e),
                    rehired_at: None,
                });
            }
            "PersonRehired" | "PersonHired" | "LeaveEnded" => {
                if let Some(last) = out.last_mut().filter(|t| t.rehired_at.is_none()) {
                    last.rehired_at = Some(instant(&e.data["since"]).unwrap_or(e.recorded_at));
                }
            }
            _ => {}
        }
    }
    out
}

/// The termination that makes the person a leaver now: the last lifecycle
/// event is a termination or a purge.
pub fn current_leaver<'a>(
    events: impl IntoIterator<Item = &'a RecordedEvent> + Clone,
) -> Option<Termination> {
    let last = events
        .clone()
        .into_iter()
        .filter(|e| LIFECYCLE_TYPES.contains(&e.event_type.as_str()))
        .last()?;
    if !matches!(
        last.event_type.as_str(),
        "PersonTerminated" | "PersonPurged"
    ) {
        return None;
    }
    terminations(events).pop()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tests::{ev, t0};
    use chrono::Duration;
    use serde_json::json;

    const P: &str = "person-00000000-0000-0000-0000-000000000007";

    #[test]
    fn termination_takes_effect_at_since_and_a_rehire_ends_it() {
        let last_day = t0() + Duration::days(3);
        let events = [
            ev(
                P,
                1,
                "PersonHired",
                json!({"since": t0(), "attributes": {"email": "ada@x"}}),
                t0(),
            ),
            ev(
                P,
                2,
                "PersonTerminated",
                json!({"since": last_day, "reason": "end_of_last_day", "attributes": {"email": "ada@x"}}),
                last_day + Duration::seconds(2),
            ),
        ];
        let t = terminations(&events);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].effective_at, last_day);
        assert_eq!(t[0].person, "ada@x");
        assert_eq!(t[0].person_id, Uuid::from_u128(7));
        assert!(current_leaver(&events).is_some());

        let mut back = events.to_vec();
        back.push(ev(
            P,
            3,
            "PersonRehired",
            json!({"since": last_day + Duration::days(30), "lifecycle": "active", "attributes": {}}),
            last_day + Duration::days(30),
        ));
        assert_eq!(
            terminations(&back)[0].rehired_at,
            Some(last_day + Duration::days(30))
        );
        assert!(current_leaver(&back).is_none());
    }

    #[test]
    fn a_purge_keeps_the_person_a_leaver() {
        let events = [
            ev(
                P,
                1,
                "PersonTerminated",
                json!({"since": t0(), "reason": "status", "attributes": {}}),
                t0(),
            ),
            ev(
                P,
                2,
                "AttributesChanged",
                json!({"changes": {}, "attributes": {}}),
                t0(),
            ),
            ev(
                P,
                3,
                "PersonPurged",
                json!({"since": t0(), "attributes": {}}),
                t0(),
            ),
        ];
        assert_eq!(
            current_leaver(&events).map(|t| t.reason),
            Some("status".into())
        );
    }
}
