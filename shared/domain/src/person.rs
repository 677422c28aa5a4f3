//! The person aggregate: `decide` turns a command into events, `evolve` folds
//! events into state. Both are pure; the engine is a thin shell around them.

use crate::record::{Attributes, Change, EmploymentStatus, SourceRecord};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    PreHire,
    Active,
    Terminated,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::PreHire => "pre_hire",
            Lifecycle::Active => "active",
            Lifecycle::Terminated => "terminated",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub lifecycle: Option<Lifecycle>,
    pub attributes: Attributes,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    /// Effective time of the newest record applied: older records are
    /// superseded, so a replayed or late webhook cannot roll a person back.
    pub last_effective_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum PersonEvent {
    /// The source record exactly as received; every decision points back to it.
    SourceRecordReceived {
        source: String,
        delivery_id: String,
        record: SourceRecord,
    },
    /// A record older than the newest one applied; kept for the audit only.
    RecordSuperseded {
        delivery_id: String,
        effective_at: DateTime<Utc>,
        latest_effective_at: DateTime<Utc>,
    },
    /// Hire with a start date in the future (local to the person).
    HireScheduled {
        start_date: NaiveDate,
        attributes: Attributes,
    },
    PersonHired {
        start_date: Option<NaiveDate>,
        attributes: Attributes,
    },
    PersonRehired {
        start_date: Option<NaiveDate>,
        attributes: Attributes,
    },
    AttributesChanged {
        changes: BTreeMap<String, Change>,
        attributes: Attributes,
    },
    /// A last day in the future; recorded so nothing is lost until it is due.
    TerminationScheduled { end_date: NaiveDate },
    PersonTerminated {
        end_date: Option<NaiveDate>,
        attributes: Attributes,
        reason: TerminationReason,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminationReason {
    /// The source says the employment status is terminated.
    Status,
    /// The last day (end_date) has passed in the person's time zone.
    EndDatePassed,
}

impl PersonEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            PersonEvent::SourceRecordReceived { .. } => "SourceRecordReceived",
            PersonEvent::RecordSuperseded { .. } => "RecordSuperseded",
            PersonEvent::HireScheduled { .. } => "HireScheduled",
            PersonEvent::PersonHired { .. } => "PersonHired",
            PersonEvent::PersonRehired { .. } => "PersonRehired",
            PersonEvent::AttributesChanged { .. } => "AttributesChanged",
            PersonEvent::TerminationScheduled { .. } => "TerminationScheduled",
            PersonEvent::PersonTerminated { .. } => "PersonTerminated",
        }
    }

    /// The stored `data` payload (the enum content without its tag).
    pub fn to_data(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut m)) => {
                m.remove("data").unwrap_or(serde_json::Value::Null)
            }
            _ => serde_json::Value::Null,
        }
    }

    pub fn from_stored(
        event_type: &str,
        data: serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::json!({ "type": event_type, "data": data }))
    }

    /// Whether the event can change what downstream apps should hold.
    pub fn affects_apps(&self) -> bool {
        !matches!(
            self,
            PersonEvent::SourceRecordReceived { .. }
                | PersonEvent::RecordSuperseded { .. }
                | PersonEvent::TerminationScheduled { .. }
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    ApplyRecord {
        source: String,
        delivery_id: String,
        record: SourceRecord,
        /// Engine time, injected so decisions are reproducible.
        now: DateTime<Utc>,
        /// The site's time zone when the record names none.
        default_tz: Tz,
    },
}

/// The person's local calendar date at `now`.
pub fn local_today(attributes_tz: Option<&str>, default_tz: Tz, now: DateTime<Utc>) -> NaiveDate {
    let tz = attributes_tz
        .and_then(|t| t.parse::<Tz>().ok())
        .unwrap_or(default_tz);
    now.with_timezone(&tz).date_naive()
}

pub fn decide(state: &Person, command: &Command) -> Vec<PersonEvent> {
    let Command::ApplyRecord {
        source,
        delivery_id,
        record,
        now,
        default_tz,
    } = command;
    let mut out = vec![PersonEvent::SourceRecordReceived {
        source: source.clone(),
        delivery_id: delivery_id.clone(),
        record: record.clone(),
    }];
    if let Some(latest) = state.last_effective_at {
        if record.effective_at < latest {
            out.push(PersonEvent::RecordSuperseded {
                delivery_id: delivery_id.clone(),
                effective_at: record.effective_at,
                latest_effective_at: latest,
            });
            return out;
        }
    }

    let attributes = record.attributes();
    let today = local_today(attributes.time_zone.as_deref(), *default_tz, *now);
    let last_day_passed = record.end_date.is_some_and(|d| d < today);
    let terminated = record.employment_status == EmploymentStatus::Terminated || last_day_passed;
    let starts_later = record.start_date.is_some_and(|d| d > today);

    if terminated {
        let reason = if record.employment_status == EmploymentStatus::Terminated {
            TerminationReason::Status
        } else {
            TerminationReason::EndDatePassed
        };
        match state.lifecycle {
            Some(Lifecycle::Terminated) => push_changes(&mut out, state, &attributes),
            _ => out.push(PersonEvent::PersonTerminated {
                end_date: record.end_date,
                attributes,
                reason,
            }),
        }
        return out;
    }

    match (state.lifecycle, starts_later, record.start_date) {
        (None | Some(Lifecycle::PreHire), true, Some(start)) => {
            if state.lifecycle.is_none() || state.start_date != Some(start) {
                out.push(PersonEvent::HireScheduled {
                    start_date: start,
                    attributes,
                });
            } else {
                push_changes(&mut out, state, &attributes);
            }
        }
        (Some(Lifecycle::Terminated), true, Some(start)) => out.push(PersonEvent::HireScheduled {
            start_date: start,
            attributes,
        }),
        (None | Some(Lifecycle::PreHire), _, _) => out.push(PersonEvent::PersonHired {
            start_date: record.start_date,
            attributes,
        }),
        (Some(Lifecycle::Terminated), _, _) => out.push(PersonEvent::PersonRehired {
            start_date: record.start_date,
            attributes,
        }),
        (Some(Lifecycle::Active), _, _) => push_changes(&mut out, state, &attributes),
    }

    if let Some(end) = record.end_date {
        if state.end_date != Some(end) {
            out.push(PersonEvent::TerminationScheduled { end_date: end });
        }
    }
    out
}

fn push_changes(out: &mut Vec<PersonEvent>, state: &Person, next: &Attributes) {
    let changes = state.attributes.changes_to(next);
    if !changes.is_empty() {
        out.push(PersonEvent::AttributesChanged {
            changes,
            attributes: next.clone(),
        });
    }
}

pub fn evolve(mut state: Person, event: &PersonEvent) -> Person {
    match event {
        PersonEvent::SourceRecordReceived { record, .. } => {
            if state
                .last_effective_at
                .is_none_or(|t| record.effective_at >= t)
            {
                state.last_effective_at = Some(record.effective_at);
            }
        }
        PersonEvent::RecordSuperseded { .. } => {}
        PersonEvent::HireScheduled {
            start_date,
            attributes,
        } => {
            state.lifecycle = Some(Lifecycle::PreHire);
            state.start_date = Some(*start_date);
            state.end_date = None;
            state.attributes = attributes.clone();
        }
        PersonEvent::PersonHired {
            start_date,
            attributes,
        }
        | PersonEvent::PersonRehired {
            start_date,
            attributes,
        } => {
            state.lifecycle = Some(Lifecycle::Active);
            state.start_date = *start_date;
            state.end_date = None;
            state.attributes = attributes.clone();
        }
        PersonEvent::AttributesChanged { attributes, .. } => {
            state.attributes = attributes.clone();
        }
        PersonEvent::TerminationScheduled { end_date } => state.end_date = Some(*end_date),
        PersonEvent::PersonTerminated {
            end_date,
            attributes,
            ..
        } => {
            state.lifecycle = Some(Lifecycle::Terminated);
            state.end_date = *end_date;
            state.attributes = attributes.clone();
        }
    }
    state
}

pub fn fold<'a>(events: impl IntoIterator<Item = &'a PersonEvent>) -> Person {
    events.into_iter().fold(Person::default(), evolve)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn record(status: EmploymentStatus, start: &str, eff_hour: u32) -> SourceRecord {
        SourceRecord {
            person_id: "E-1".into(),
            given_name: "Ana".into(),
            family_name: "Silva".into(),
            display_name: None,
            work_email: "ana@example.com".into(),
            employee_number: None,
            department: Some("Engineering".into()),
            title: None,
            manager_id: None,
            location: None,
            time_zone: Some("Europe/Berlin".into()),
            employment_status: status,
            start_date: Some(start.parse().expect("date")),
            end_date: None,
            effective_at: Utc
                .with_ymd_and_hms(2026, 3, 1, eff_hour, 0, 0)
                .single()
                .expect("t"),
        }
    }

    fn apply(
        state: &Person,
        r: &SourceRecord,
        now: DateTime<Utc>,
        id: &str,
    ) -> (Person, Vec<PersonEvent>) {
        let events = decide(
            state,
            &Command::ApplyRecord {
                source: "generic".into(),
                delivery_id: id.into(),
                record: r.clone(),
                now,
                default_tz: chrono_tz::UTC,
            },
        );
        (events.iter().fold(state.clone(), evolve), events)
    }

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).single().expect("t")
    }

    fn types(events: &[PersonEvent]) -> Vec<&'static str> {
        events.iter().map(PersonEvent::event_type).collect()
    }

    #[test]
    fn hire_today_is_active_and_future_hire_is_recorded() {
        let (s, ev) = apply(
            &Person::default(),
            &record(EmploymentStatus::Active, "2026-03-03", 1),
            at(2026, 3, 3, 8),
            "d1",
        );
        assert_eq!(types(&ev), ["SourceRecordReceived", "PersonHired"]);
        assert_eq!(s.lifecycle, Some(Lifecycle::Active));

        let (s, ev) = apply(
            &Person::default(),
            &record(EmploymentStatus::Active, "2026-03-10", 1),
            at(2026, 3, 3, 8),
            "d1",
        );
        assert_eq!(types(&ev), ["SourceRecordReceived", "HireScheduled"]);
        assert_eq!(s.lifecycle, Some(Lifecycle::PreHire));
        assert_eq!(s.start_date, Some("2026-03-10".parse().expect("date")));
    }

    #[test]
    fn start_date_is_judged_in_the_persons_time_zone() {
        // 23:30 UTC on 2 March is already 3 March in Berlin.
        let now = Utc
            .with_ymd_and_hms(2026, 3, 2, 23, 30, 0)
            .single()
            .expect("t");
        let (s, _) = apply(
            &Person::default(),
            &record(EmploymentStatus::Active, "2026-03-03", 1),
            now,
            "d1",
        );
        assert_eq!(s.lifecycle, Some(Lifecycle::Active));
    }

    #[test]
    fn update_termination_and_rehire() {
        let now = at(2026, 3, 5, 8);
        let (s, _) = apply(
            &Person::default(),
            &record(EmploymentStatus::Active, "2026-03-03", 1),
            now,
            "d1",
        );
        let mut moved = record(EmploymentStatus::Active, "2026-03-03", 2);
        moved.department = Some("Sales".into());
        let (s, ev) = apply(&s, &moved, now, "d2");
        assert_eq!(types(&ev), ["SourceRecordReceived", "AttributesChanged"]);
        match &ev[1] {
            PersonEvent::AttributesChanged { changes, .. } => {
                assert_eq!(changes.keys().collect::<Vec<_>>(), ["department"]);
                assert_eq!(changes["department"].to.as_deref(), Some("Sales"));
            }
            other => panic!("{other:?}"),
        }
        let (s, ev) = apply(
            &s,
            &record(EmploymentStatus::Terminated, "2026-03-03", 3),
            now,
            "d3",
        );
        assert_eq!(types(&ev), ["SourceRecordReceived", "PersonTerminated"]);
        assert_eq!(s.lifecycle, Some(Lifecycle::Terminated));
        let (s, ev) = apply(
            &s,
            &record(EmploymentStatus::Active, "2026-03-05", 4),
            now,
            "d4",
        );
        assert_eq!(types(&ev), ["SourceRecordReceived", "PersonRehired"]);
        assert_eq!(s.lifecycle, Some(Lifecycle::Active));
    }

    #[test]
    fn older_record_is_superseded_and_changes_nothing() {
        let now = at(2026, 3, 5, 8);
        let (s, _) = apply(
            &Person::default(),
            &record(EmploymentStatus::Terminated, "2026-03-03", 5),
            now,
            "d1",
        );
        let (s2, ev) = apply(
            &s,
            &record(EmploymentStatus::Active, "2026-03-03", 4),
            now,
            "d0",
        );
        assert_eq!(types(&ev), ["SourceRecordReceived", "RecordSuperseded"]);
        assert_eq!(s2, s);
    }

    #[test]
    fn passed_end_date_terminates() {
        let mut r = record(EmploymentStatus::Active, "2026-01-01", 1);
        r.end_date = Some("2026-03-04".parse().expect("date"));
        let (s, ev) = apply(&Person::default(), &r, at(2026, 3, 4, 12), "d1");
        assert_eq!(
            s.lifecycle,
            Some(Lifecycle::Active),
            "last day itself still active: {ev:?}"
        );
        let (s, _) = apply(&s, &r, at(2026, 3, 5, 12), "d2");
        assert_eq!(s.lifecycle, Some(Lifecycle::Terminated));
    }

    #[test]
    fn events_round_trip_through_storage_form() {
        let (_, ev) = apply(
            &Person::default(),
            &record(EmploymentStatus::Active, "2026-03-03", 1),
            at(2026, 3, 3, 8),
            "d1",
        );
        for e in ev {
            let back = PersonEvent::from_stored(e.event_type(), e.to_data()).expect("decode");
            assert_eq!(back, e);
        }
    }

    fn arb_record() -> impl Strategy<Value = SourceRecord> {
        (
            prop_oneof![
                Just(EmploymentStatus::Active),
                Just(EmploymentStatus::Terminated)
            ],
            0u32..20,
            0u32..24,
            prop_oneof![Just("Engineering"), Just("Sales")],
        )
            .prop_map(|(status, start_day, hour, dept)| {
                let mut r = record(status, "2026-03-01", hour);
                r.start_date = chrono::NaiveDate::from_ymd_opt(2026, 3, 1 + start_day);
                r.department = Some(dept.into());
                r
            })
    }

    proptest! {
        /// Delivering any record twice (a webhook retry with a new delivery id)
        /// leaves the same state as delivering it once.
        #[test]
        fn duplicates_do_not_change_state(records in proptest::collection::vec(arb_record(), 1..12), dup in 0usize..12) {
            let now = at(2026, 3, 10, 12);
            let mut once = Person::default();
            let mut twice = Person::default();
            for (i, r) in records.iter().enumerate() {
                once = apply(&once, r, now, &format!("d{i}")).0;
                twice = apply(&twice, r, now, &format!("d{i}")).0;
                if i == dup % records.len() {
                    twice = apply(&twice, r, now, &format!("again{i}")).0;
                }
            }
            prop_assert_eq!(once, twice);
        }

        /// The outcome depends only on the newest record by effective time,
        /// whatever order the records arrive in.
        #[test]
        fn newest_record_wins_in_any_order(records in proptest::collection::vec(arb_record(), 1..8), seed in any::<u64>()) {
            let now = at(2026, 3, 10, 12);
            let mut shuffled = records.clone();
            // A deterministic shuffle from the seed keeps failures reproducible.
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let fold_all = |rs: &[SourceRecord]| rs.iter().enumerate().fold(Person::default(), |st, (i, r)| apply(&st, r, now, &format!("d{i}")).0);
            let a = fold_all(&records);
            let b = fold_all(&shuffled);
            let newest = records.iter().map(|r| r.effective_at).max();
            prop_assert_eq!(a.last_effective_at, newest);
            prop_assert_eq!(a.last_effective_at, b.last_effective_at);
            // With distinct effective times the newest record decides the lifecycle.
            let mut times: Vec<_> = records.iter().map(|r| r.effective_at).collect();
            times.sort();
            times.dedup();
            if times.len() == records.len() {
                prop_assert_eq!(a.lifecycle.map(|l| l == Lifecycle::Terminated), b.lifecycle.map(|l| l == Lifecycle::Terminated));
                prop_assert_eq!(a.attributes.department, b.attributes.department);
            }
        }
    }
}
