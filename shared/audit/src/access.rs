//! Who held access, when: a pure fold of one account stream
//! (`account-<app>-<person>`) into the account's state and its access
//! intervals.
//!
//! An account holds access while it exists in the app and is active. It
//! comes to exist with `AccountCreated`, or when Tenure finds and takes over
//! an existing one (`AccountLinked`, `AccountAdopted`); `AccountUpdated`
//! and `AccountDeactivated` change it; `AccountDeleted` removes it. Each of
//! these events is written after the app acknowledged the SCIM call, so its
//! `recorded_at` is when the app's state changed as far as Tenure knows.
//! Every other event on the stream (SCIM call records, failures, dead
//! letters) leaves the account as it was.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tenure_store::RecordedEvent;
use uuid::Uuid;

use crate::EventRef;

/// The event types that change an account; the SQL reads select these.
pub const ACCOUNT_STATE_TYPES: &[&str] = &[
    "AccountCreated",
    "AccountLinked",
    "AccountAdopted",
    "AccountUpdated",
    "AccountDeactivated",
    "AccountDeleted",
];

/// What one event does to an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The account is created or taken over. `active` is `None` when the
    /// event does not say (a link records only ids).
    Appeared {
        remote_id: Option<String>,
        user_name: Option<String>,
        active: Option<bool>,
    },
    /// Attributes written; `None` leaves a value as it was.
    Changed {
        remote_id: Option<String>,
        user_name: Option<String>,
        active: Option<bool>,
    },
    Removed,
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// The effect of an event of an account stream, from its type and payload
/// as the fanout writes them; `None` for events that change nothing.
pub fn effect(event_type: &str, data: &Value) -> Option<Effect> {
    match event_type {
        "AccountCreated" => Some(Effect::Appeared {
            remote_id: text(&data["remote_id"]),
            user_name: text(&data["user_name"]),
            active: data["active"].as_bool(),
        }),
        "AccountLinked" | "AccountAdopted" => Some(Effect::Appeared {
            remote_id: text(&data["remote_id"]),
            user_name: text(&data["user_name"]),
            // An adoption keeps the account as found; a link records only
            // ids (see `active_assumed`).
            active: data["active"]
                .as_bool()
                .or_else(|| data["before"]["active"].as_bool()),
        }),
        "AccountDeactivated" => Some(Effect::Changed {
            remote_id: text(&data["remote_id"]),
            user_name: None,
            active: Some(false),
        }),
        "AccountUpdated" => {
            // A PATCH lists its operations; a PUT carries the whole account.
            let (user_name, active) = match data["changes"].as_array() {
                Some(ops) => {
                    let value_of = |path: &str| {
                        ops.iter()
                            .rev()
                            .find(|op| op["path"].as_str() == Some(path))
                            .map(|op| &op["value"])
                    };
                    (
                        value_of("userName").and_then(text),
                        value_of("active").and_then(Value::as_bool),
                    )
                }
                None => {
                    let spec = &data["replaced_with"];
                    (text(&spec["user_name"]), spec["active"].as_bool())
                }
            };
            Some(Effect::Changed {
                remote_id: text(&data["remote_id"]),
                user_name,
                active,
            })
        }
        "AccountDeleted" => Some(Effect::Removed),
        _ => None,
    }
}

/// The account as it stood after some prefix of its stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountState {
    pub remote_id: Option<String>,
    pub user_name: Option<String>,
    pub active: bool,
    /// True when no event said whether the account was active and it is
    /// counted as active (an `AccountLinked` records only ids); an auditor
    /// would rather see a possibly inactive account than miss an active one.
    pub active_assumed: bool,
    /// When the account came to exist (created or taken over) and by which
    /// event.
    pub appeared: EventRef,
    /// When the current active/inactive state began.
    pub since: DateTime<Utc>,
    /// The event that began the current access interval (while active).
    pub granted_by: Option<EventRef>,
    /// The last event that changed the account.
    pub last_change: EventRef,
}

/// A period during which the account existed and was active.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccessInterval {
    pub from: DateTime<Utc>,
    /// `None`: still open after the last event folded.
    pub to: Option<DateTime<Utc>>,
    pub remote_id: Option<String>,
    pub user_name: Option<String>,
    pub granted_by: EventRef,
    pub ended_by: Option<EventRef>,
}

impl AccessInterval {
    /// `from <= at < to`.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && self.to.is_none_or(|to| at < to)
    }
}

/// Fold state: the account (if it exists) and the intervals so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountFold {
    pub state: Option<AccountState>,
    pub intervals: Vec<AccessInterval>,
}

impl AccountFold {
    /// Applies one event of the account stream (in version order).
    pub fn apply(&mut self, event: &RecordedEvent) {
        let Some(effect) = effect(&event.event_type, &event.data) else {
            return;
        };
        let at = event.recorded_at;
        let this = EventRef::from(event);
        let was_active = self.state.as_ref().is_some_and(|s| s.active);
        match (effect, self.state.take()) {
            (Effect::Removed, _) => {}
            (
                Effect::Appeared {
                    remote_id,
                    user_name,
                    active,
                },
                None,
            ) => {
                let is_active = active.unwrap_or(true);
                self.state = Some(AccountState {
                    remote_id,
                    user_name,
                    active: is_active,
                    active_assumed: active.is_none(),
                    appeared: this.clone(),
                    since: at,
                    granted_by: is_active.then(|| this.clone()),
                    last_change: this,
                });
            }
            (
                Effect::Appeared {
                    remote_id,
                    user_name,
                    active,
                }
                | Effect::Changed {
                    remote_id,
                    user_name,
                    active,
                },
                Some(mut s),
            ) => {
                // A repeated create or link (an at-least-once retry) is a
                // change of the account that already exists.
                if remote_id.is_some() {
                    s.remote_id = remote_id;
                }
                if user_name.is_some() {
                    s.user_name = user_name;
                }
                if let Some(active) = active {
                    s.active_assumed = false;
                    if active != s.active {
                        s.active = active;
                        s.since = at;
                        s.granted_by = active.then(|| this.clone());
                    }
                }
                s.last_change = this;
                self.state = Some(s);
            }
            (Effect::Changed { .. }, None) => {
                // A change of an account never seen created: nothing to
                // change (an account stream written before links existed).
            }
        }
        let now_active = self.state.as_ref().is_some_and(|s| s.active);
        match (was_active, now_active) {
            (false, true) => {
                if let Some(s) = &self.state {
                    self.intervals.push(AccessInterval {
                        from: at,
                        to: None,
                        remote_id: s.remote_id.clone(),
                        user_name: s.user_name.clone(),
                        granted_by: EventRef::from(event),
                        ended_by: None,
                    });
                }
            }
            (true, false) => {
                if let Some(open) = self.intervals.last_mut() {
                    open.to = Some(at);
                    open.ended_by = Some(EventRef::from(event));
                }
            }
            (true, true) => {
                // Keep the interval's names current (a rename keeps access).
                if let (Some(open), Some(s)) = (self.intervals.last_mut(), &self.state) {
                    open.remote_id = s.remote_id.clone();
                    open.user_name = s.user_name.clone();
                }
            }
            (false, false) => {}
        }
    }
}

/// Folds a whole account stream (events in version order).
pub fn fold_account<'a>(events: impl IntoIterator<Item = &'a RecordedEvent>) -> AccountFold {
    let mut fold = AccountFold::default();
    for e in events {
        fold.apply(e);
    }
    fold
}

/// The account as it stood at `at`: the fold of the events recorded at or
/// before `at`.
pub fn state_at<'a>(
    events: impl IntoIterator<Item = &'a RecordedEvent>,
    at: DateTime<Utc>,
) -> Option<AccountState> {
    fold_account(events.into_iter().take_while(|e| e.recorded_at <= at)).state
}

/// `(app, person)` of an account stream id `account-<app>-<person>`. App
/// names may contain `-`; the person id is the fixed-length tail.
pub fn parse_account_stream(stream_id: &str) -> Option<(&str, Uuid)> {
    let rest = stream_id.strip_prefix("account-")?;
    let split = rest.len().checked_sub(37)?;
    let (app, person) = rest.split_at(split);
    let person = person.strip_prefix('-')?;
    Some((app, person.parse().ok()?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;
    use serde_json::json;
    use tenure_store::Metadata;

    pub(crate) fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).single().unwrap()
    }

    pub(crate) fn ev(
        stream: &str,
        version: i64,
        event_type: &str,
        data: Value,
        at: DateTime<Utc>,
    ) -> RecordedEvent {
        RecordedEvent {
            global_position: version,
            transaction_id: version,
            stream_id: stream.into(),
            version,
            event_id: Uuid::from_u128(version as u128),
            event_type: event_type.into(),
            data,
            metadata: Metadata {
                correlation_id: Uuid::from_u128(1000 + version as u128),
                actor: "fanout".into(),
                ..Metadata::default()
            },
            recorded_at: at,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    const S: &str = "account-wiki-00000000-0000-0000-0000-000000000001";

    fn hours(h: i64) -> DateTime<Utc> {
        t0() + Duration::hours(h)
    }

    #[test]
    fn stream_ids_name_app_and_person_even_with_dashes_in_the_app() {
        let p = Uuid::from_u128(1);
        assert_eq!(parse_account_stream(S), Some(("wiki", p)));
        let s = format!("account-team-wiki-{p}");
        assert_eq!(parse_account_stream(&s), Some(("team-wiki", p)));
        assert_eq!(parse_account_stream("person-x"), None);
        assert_eq!(parse_account_stream("account-short"), None);
    }

    #[test]
    fn create_deactivate_delete_gives_one_closed_interval() {
        let events = [
            ev(S, 1, "ScimCallSucceeded", json!({"status": 201}), hours(0)),
            ev(
                S,
                2,
                "AccountCreated",
                json!({"remote_id": "r1", "user_name": "ada", "active": true}),
                hours(0),
            ),
            ev(
                S,
                3,
                "AccountUpdated",
                json!({"remote_id": "r1", "changes": [{"op": "replace", "path": "title", "value": "x"}]}),
                hours(5),
            ),
            ev(
                S,
                4,
                "AccountDeactivated",
                json!({"remote_id": "r1"}),
                hours(10),
            ),
            ev(
                S,
                5,
                "AccountDeleted",
                json!({"remote_id": "r1"}),
                hours(20),
            ),
        ];
        let fold = fold_account(&events);
        assert_eq!(fold.state, None);
        assert_eq!(fold.intervals.len(), 1);
        let i = &fold.intervals[0];
        assert_eq!((i.from, i.to), (hours(0), Some(hours(10))));
        assert_eq!(i.user_name.as_deref(), Some("ada"));
        assert_eq!(i.granted_by.event_type, "AccountCreated");
        assert_eq!(
            i.ended_by.as_ref().map(|e| e.event_type.as_str()),
            Some("AccountDeactivated")
        );

        let at = |h| state_at(&events, hours(h));
        assert!(at(-1).is_none());
        assert!(at(7).unwrap().active);
        let s = at(12).unwrap();
        assert!(!s.active);
        assert_eq!(s.since, hours(10));
        assert!(at(21).is_none());
    }

    #[test]
    fn patch_and_replace_updates_can_switch_access_both_ways() {
        let events = [
            ev(
                S,
                1,
                "AccountCreated",
                json!({"remote_id": "r1", "user_name": "ada", "active": false}),
                hours(0),
            ),
            ev(
                S,
                2,
                "AccountUpdated",
                json!({"remote_id": "r1", "changes": [
                    {"op": "replace", "path": "active", "value": true},
                    {"op": "replace", "path": "userName", "value": "ada.l"}]}),
                hours(1),
            ),
            ev(
                S,
                3,
                "AccountUpdated",
                json!({"remote_id": "r1", "replaced_with": {"user_name": "ada.l", "active": false}}),
                hours(2),
            ),
        ];
        let fold = fold_account(&events);
        assert_eq!(fold.intervals.len(), 1);
        assert_eq!(fold.intervals[0].from, hours(1));
        assert_eq!(fold.intervals[0].to, Some(hours(2)));
        assert_eq!(fold.intervals[0].user_name.as_deref(), Some("ada.l"));
        assert!(!fold.state.unwrap().active);
    }

    #[test]
    fn a_link_without_an_active_flag_counts_as_access_and_says_so() {
        let events = [ev(
            S,
            1,
            "AccountLinked",
            json!({"remote_id": "r9", "user_name": "bob", "found_by": "userName"}),
            hours(0),
        )];
        let s = fold_account(&events).state.unwrap();
        assert!(s.active && s.active_assumed);
        let adopted = [ev(
            S,
            1,
            "AccountAdopted",
            json!({"remote_id": "r9", "user_name": "bob", "before": {"active": false}}),
            hours(0),
        )];
        let s = fold_account(&adopted).state.unwrap();
        assert!(!s.active && !s.active_assumed);
    }

    fn arb_event() -> impl Strategy<Value = (&'static str, Value)> {
        prop_oneof![
            Just((
                "AccountCreated",
                json!({"remote_id": "r", "user_name": "u", "active": true})
            )),
            Just((
                "AccountCreated",
                json!({"remote_id": "r", "user_name": "u", "active": false})
            )),
            Just(("AccountLinked", json!({"remote_id": "r", "user_name": "u"}))),
            Just(("AccountDeactivated", json!({"remote_id": "r"}))),
            Just((
                "AccountUpdated",
                json!({"remote_id": "r", "changes": [{"op": "replace", "path": "active", "value": true}]})
            )),
            Just((
                "AccountUpdated",
                json!({"remote_id": "r", "changes": [{"op": "replace", "path": "title", "value": "t"}]})
            )),
            Just(("AccountDeleted", json!({"remote_id": "r"}))),
            Just(("ScimCallFailed", json!({"status": 500}))),
        ]
    }

    fn build(spec: &[((&'static str, Value), u8)]) -> Vec<RecordedEvent> {
        let mut at = t0();
        spec.iter()
            .enumerate()
            .map(|(i, ((kind, data), gap))| {
                at += Duration::minutes(i64::from(*gap));
                ev(S, i as i64 + 1, kind, data.clone(), at)
            })
            .collect()
    }

    proptest! {
        /// The intervals and the state at an instant are two views of the
        /// same history: active at T exactly when an interval contains T.
        #[test]
        fn intervals_agree_with_the_state_at_every_instant(
            spec in prop::collection::vec((arb_event(), 0u8..5), 0..30),
            probe in 0i64..200,
        ) {
            let events = build(&spec);
            let fold = fold_account(&events);
            let at = t0() + Duration::minutes(probe);
            let active = state_at(&events, at).is_some_and(|s| s.active);
            let covered = fold.intervals.iter().any(|i| i.contains(at));
            prop_assert_eq!(active, covered);
            for w in fold.intervals.windows(2) {
                prop_assert!(w[0].to.is_some_and(|to| to <= w[1].from));
            }
        }

        /// Fanout records at least once: an event recorded twice in a row
        /// (a retried job) changes neither the intervals nor the state.
        #[test]
        fn a_repeated_event_changes_nothing(
            spec in prop::collection::vec((arb_event(), 1u8..5), 1..30),
            which in any::<prop::sample::Index>(),
        ) {
            let events = build(&spec);
            let i = which.index(events.len());
            let mut twice = events.clone();
            let mut copy = events[i].clone();
            copy.event_id = Uuid::new_v4();
            twice.insert(i + 1, copy);
            let a = fold_account(&events);
            let b = fold_account(&twice);
            prop_assert_eq!(
                a.intervals.iter().map(|i| (i.from, i.to)).collect::<Vec<_>>(),
                b.intervals.iter().map(|i| (i.from, i.to)).collect::<Vec<_>>()
            );
            prop_assert_eq!(
                a.state.map(|s| (s.active, s.since)),
                b.state.map(|s| (s.active, s.since))
            );
        }
    }
}
