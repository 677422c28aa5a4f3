//! The person aggregate.
//!
//! Every record a source sends is a *fact*: a snapshot of the person that
//! holds from its effective instant on. The person at time `t` is the newest
//! fact in force at `t` (by effective instant, then the source's sequence),
//! read with the lifecycle rules in [`view_at`]. That makes the outcome
//! independent of arrival order and duplicates: a late record slots into
//! history, a replayed one is recognised by its delivery id, and a future
//! one waits until its instant.
//!
//! `decide` compares what the facts say *now* with what was last recorded
//! and emits events for the differences (lifecycle transitions, attribute
//! changes, per-app entitlements); `evolve` folds them. [`wakeups`] lists the
//! future instants at which `decide` would say something new, which is what
//! the engine's durable scheduler stores.

use crate::entitlement::{AppPolicy, Entitlement};
use crate::identity::IdpIdentity;
use crate::record::{Attributes, Change, EmploymentStatus, SourceRecord};
use crate::timing::{day_end, day_start, parse_tz};
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    PreHire,
    Active,
    OnLeave,
    Terminated,
    /// The hire was rescinded before it happened.
    Cancelled,
    /// Terminated long enough ago that the retention period has ended.
    Purged,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::PreHire => "pre_hire",
            Lifecycle::Active => "active",
            Lifecycle::OnLeave => "on_leave",
            Lifecycle::Terminated => "terminated",
            Lifecycle::Cancelled => "cancelled",
            Lifecycle::Purged => "purged",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pre_hire" => Lifecycle::PreHire,
            "active" => Lifecycle::Active,
            "on_leave" => Lifecycle::OnLeave,
            "terminated" => Lifecycle::Terminated,
            "cancelled" => Lifecycle::Cancelled,
            "purged" => Lifecycle::Purged,
            _ => return None,
        })
    }

    fn was_employed(self) -> bool {
        matches!(self, Lifecycle::Terminated | Lifecycle::Purged)
    }
}

/// Site-wide timing rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Zone for persons whose records name none.
    pub default_tz: Tz,
    /// Local hour at which a start date (or an effective date) begins.
    pub day_start_hour: u32,
    /// Days after termination at which the person counts as purged.
    pub purge_after_days: Option<u32>,
    /// Days before a known last day at which a warning event is recorded.
    pub expiry_warning_days: Option<u32>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default_tz: chrono_tz::UTC,
            day_start_hour: 0,
            purge_after_days: None,
            expiry_warning_days: None,
        }
    }
}

/// One received record with the instant from which it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    pub source: String,
    pub delivery_id: String,
    pub effective: DateTime<Utc>,
    pub record: SourceRecord,
}

impl Fact {
    /// Total order of facts: later effective instant wins, then the source's
    /// sequence, then the time the source stated it; the delivery id only
    /// makes the order total so arrival order never matters.
    fn key(&self) -> (DateTime<Utc>, u64, DateTime<Utc>, &str, &str) {
        (
            self.effective,
            self.record.sequence.unwrap_or(0),
            self.record.effective_at,
            &self.source,
            &self.delivery_id,
        )
    }
}

/// The instant from which a record holds: its `effective_date` at the start
/// of the local working day, else `effective_at`.
pub fn effective_instant(record: &SourceRecord, policy: &Policy) -> DateTime<Utc> {
    match record.effective_date {
        Some(date) => day_start(
            date,
            parse_tz(record.time_zone.as_deref(), policy.default_tz),
            policy.day_start_hour,
        ),
        None => record.effective_at,
    }
}

/// What the facts say about a person at one instant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    pub lifecycle: Lifecycle,
    /// When the current lifecycle state began according to the facts.
    pub since: DateTime<Utc>,
    pub attributes: Attributes,
    pub start_at: Option<DateTime<Utc>>,
    /// End of the last day, when one is known.
    pub end_at: Option<DateTime<Utc>>,
    /// When access ends (end of the last day, or at once when revoked).
    pub termination_at: Option<DateTime<Utc>>,
    /// The source asked to cut access at once.
    #[serde(default)]
    pub revoked_immediately: bool,
    /// IdP groups of the person's linked identities, sorted and distinct.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The newest fact in force at `now`.
pub fn current_fact(facts: &[Fact], now: DateTime<Utc>) -> Option<&Fact> {
    facts
        .iter()
        .filter(|f| f.effective <= now)
        .max_by(|a, b| a.key().cmp(&b.key()))
}

/// The person at `now` according to `facts`; `None` before any fact holds.
pub fn view_at(facts: &[Fact], now: DateTime<Utc>, policy: &Policy) -> Option<View> {
    let fact = current_fact(facts, now)?;
    let r = &fact.record;
    let tz = parse_tz(r.time_zone.as_deref(), policy.default_tz);
    let start_at = r
        .start_date
        .map(|d| day_start(d, tz, policy.day_start_hour));
    let end_at = r.end_date.map(|d| day_end(d, tz));
    let termination_at = match r.employment_status {
        EmploymentStatus::Rescinded => None,
        _ if r.revoke_immediately => Some(fact.effective),
        EmploymentStatus::Terminated => Some(end_at.unwrap_or(fact.effective)),
        EmploymentStatus::Active | EmploymentStatus::OnLeave => end_at,
    };
    let (lifecycle, since) = if r.employment_status == EmploymentStatus::Rescinded {
        (Lifecycle::Cancelled, fact.effective)
    } else if let Some(t) = termination_at.filter(|t| *t <= now) {
        match policy
            .purge_after_days
            .map(|d| t + Duration::days(i64::from(d)))
        {
            Some(p) if p <= now => (Lifecycle::Purged, p),
            _ => (Lifecycle::Terminated, t),
        }
    } else if start_at.is_some_and(|s| s > now) {
        (Lifecycle::PreHire, fact.effective)
    } else {
        let began = start_at.map_or(fact.effective, |s| s.max(fact.effective));
        match r.employment_status {
            EmploymentStatus::OnLeave => (Lifecycle::OnLeave, fact.effective),
            _ => (Lifecycle::Active, began),
        }
    };
    Some(View {
        lifecycle,
        since,
        attributes: r.attributes(),
        start_at,
        end_at,
        termination_at,
        revoked_immediately: r.revoke_immediately
            && r.employment_status != EmploymentStatus::Rescinded,
        groups: Vec::new(),
    })
}

/// What was last recorded about the person: the state `decide` compares with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub facts: Vec<Fact>,
    pub lifecycle: Option<Lifecycle>,
    pub attributes: Attributes,
    pub start_at: Option<DateTime<Utc>>,
    pub pending_termination: Option<DateTime<Utc>>,
    pub entitlements: BTreeMap<String, Entitlement>,
    /// Last days already warned about.
    pub warned: BTreeSet<DateTime<Utc>>,
    /// Apps whose assignment rule currently fails on this person, with the error.
    #[serde(default)]
    pub rule_failures: BTreeMap<String, String>,
    /// IdP identities linked to this person, by provider.
    #[serde(default)]
    pub identities: BTreeMap<String, LinkedIdentity>,
}

/// Stable person id per (source, source person id), the same in every
/// service: the engine's stream name and ingest's look-ups agree on it.
pub fn person_id_for(source: &str, source_person_id: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("tenure:person:{source}:{source_person_id}").as_bytes(),
    )
}

/// What an IdP last said about the identity linked to a person.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedIdentity {
    pub idp_id: String,
    pub user_name: String,
    pub active: bool,
    pub groups: BTreeSet<String>,
}

impl Person {
    pub fn entitlement(&self, app: &str) -> Entitlement {
        self.entitlements
            .get(app)
            .copied()
            .unwrap_or(Entitlement::NoAccount)
    }

    /// The IdP groups of every linked identity, sorted and distinct; what
    /// assignment rules see as `person.groups`.
    pub fn groups(&self) -> Vec<String> {
        let all: BTreeSet<&String> = self.identities.values().flat_map(|i| &i.groups).collect();
        all.into_iter().cloned().collect()
    }

    pub fn has_delivery(&self, source: &str, delivery_id: &str) -> bool {
        self.facts
            .iter()
            .any(|f| f.delivery_id == delivery_id && f.source == source)
    }

    /// The person with only the facts that can still be in force at `at` or
    /// later: the one in force at `at` and every one effective after it.
    /// Any other fact is outranked by the one in force at `at` at every
    /// later instant, so `decide`, `wakeups` and `catch_up` from any instant
    /// `>= at` answer exactly as with every fact. What is lost is
    /// [`Person::has_delivery`] for the dropped deliveries: whoever keeps
    /// a compacted person must recognise redeliveries by other means (the
    /// engine's inbox does). This is what keeps a stored snapshot the same
    /// size for a person with ten records as for one with ten thousand.
    /// Facts are kept in their total order, so two compactions of the same
    /// facts are equal.
    pub fn compacted(mut self, at: DateTime<Utc>) -> Person {
        let in_force = current_fact(&self.facts, at).cloned();
        self.facts
            .retain(|f| f.effective > at || in_force.as_ref() == Some(f));
        self.facts.sort_by(|a, b| a.key().cmp(&b.key()));
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminationReason {
    /// The last day ended.
    EndOfLastDay,
    /// The source says terminated with no (or a past) last day.
    Status,
    /// The source asked to cut access at once.
    RevokedImmediately,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum PersonEvent {
    /// A record exactly as received, with the instant from which it holds.
    SourceRecordReceived {
        source: String,
        delivery_id: String,
        effective: DateTime<Utc>,
        record: SourceRecord,
    },
    /// The record holds from a future instant; it is applied then.
    RecordScheduled {
        delivery_id: String,
        effective: DateTime<Utc>,
    },
    /// A newer record is already in force; this one changes nothing now.
    RecordSuperseded {
        delivery_id: String,
        effective: DateTime<Utc>,
        current_effective: DateTime<Utc>,
    },
    HireScheduled {
        start_at: DateTime<Utc>,
        attributes: Attributes,
    },
    PersonHired {
        since: DateTime<Utc>,
        attributes: Attributes,
    },
    PersonRehired {
        since: DateTime<Utc>,
        lifecycle: Lifecycle,
        attributes: Attributes,
    },
    LeaveStarted {
        since: DateTime<Utc>,
        attributes: Attributes,
    },
    LeaveEnded {
        since: DateTime<Utc>,
        attributes: Attributes,
    },
    HireRescinded {
        since: DateTime<Utc>,
        attributes: Attributes,
    },
    PersonTerminated {
        since: DateTime<Utc>,
        reason: TerminationReason,
        attributes: Attributes,
    },
    PersonPurged {
        since: DateTime<Utc>,
        attributes: Attributes,
    },
    AttributesChanged {
        changes: BTreeMap<String, Change>,
        attributes: Attributes,
    },
    TerminationScheduled {
        at: DateTime<Utc>,
    },
    TerminationCancelled {
        was: DateTime<Utc>,
    },
    /// What one app should hold for the person changed.
    EntitlementChanged {
        app: String,
        from: Entitlement,
        to: Entitlement,
    },
    ContractExpiryWarning {
        end_at: DateTime<Utc>,
    },
    /// The app's rule failed on this person's data; the entitlement stays
    /// as it was until the rule or the data is fixed.
    RuleFailed {
        app: String,
        error: String,
    },
    RuleRecovered {
        app: String,
    },
    /// An IdP identity was linked to the person, or what the IdP says
    /// about it (groups, active) changed.
    IdentitySynced {
        provider: String,
        idp_id: String,
        user_name: String,
        active: bool,
        groups: BTreeSet<String>,
        #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
        groups_added: BTreeSet<String>,
        #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
        groups_removed: BTreeSet<String>,
    },
    /// The IdP deleted the identity, or it now belongs to someone else.
    IdentityUnlinked {
        provider: String,
        idp_id: String,
    },
}

impl PersonEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            PersonEvent::SourceRecordReceived { .. } => "SourceRecordReceived",
            PersonEvent::RecordScheduled { .. } => "RecordScheduled",
            PersonEvent::RecordSuperseded { .. } => "RecordSuperseded",
            PersonEvent::HireScheduled { .. } => "HireScheduled",
            PersonEvent::PersonHired { .. } => "PersonHired",
            PersonEvent::PersonRehired { .. } => "PersonRehired",
            PersonEvent::LeaveStarted { .. } => "LeaveStarted",
            PersonEvent::LeaveEnded { .. } => "LeaveEnded",
            PersonEvent::HireRescinded { .. } => "HireRescinded",
            PersonEvent::PersonTerminated { .. } => "PersonTerminated",
            PersonEvent::PersonPurged { .. } => "PersonPurged",
            PersonEvent::AttributesChanged { .. } => "AttributesChanged",
            PersonEvent::TerminationScheduled { .. } => "TerminationScheduled",
            PersonEvent::TerminationCancelled { .. } => "TerminationCancelled",
            PersonEvent::EntitlementChanged { .. } => "EntitlementChanged",
            PersonEvent::ContractExpiryWarning { .. } => "ContractExpiryWarning",
            PersonEvent::RuleFailed { .. } => "RuleFailed",
            PersonEvent::RuleRecovered { .. } => "RuleRecovered",
            PersonEvent::IdentitySynced { .. } => "IdentitySynced",
            PersonEvent::IdentityUnlinked { .. } => "IdentityUnlinked",
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
}

// Commands live for one decision and are matched on at once; boxing the
// record would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    ApplyRecord {
        source: String,
        delivery_id: String,
        record: SourceRecord,
        /// Engine time, injected so decisions are reproducible.
        now: DateTime<Utc>,
    },
    /// Time has passed: act on whatever became due.
    Tick { now: DateTime<Utc> },
    /// An IdP's current view of the identity correlated with this person.
    /// A deleted identity is unlinked.
    ApplyIdentity {
        identity: IdpIdentity,
        now: DateTime<Utc>,
    },
}

/// The apps and timing rules decisions are made against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    pub policy: Policy,
    pub apps: Vec<AppPolicy>,
}

pub fn decide(state: &Person, command: &Command, ctx: &Context) -> Vec<PersonEvent> {
    let mut out = Vec::new();
    let now = match command {
        Command::Tick { now } => *now,
        Command::ApplyIdentity { identity, now } => {
            out.extend(identity_events(state, identity));
            if out.is_empty() {
                return out;
            }
            *now
        }
        Command::ApplyRecord {
            source,
            delivery_id,
            record,
            now,
        } => {
            if state.has_delivery(source, delivery_id) {
                return out;
            }
            let fact = Fact {
                source: source.clone(),
                delivery_id: delivery_id.clone(),
                effective: effective_instant(record, &ctx.policy),
                record: record.clone(),
            };
            out.push(PersonEvent::SourceRecordReceived {
                source: source.clone(),
                delivery_id: delivery_id.clone(),
                effective: fact.effective,
                record: record.clone(),
            });
            if fact.effective > *now {
                out.push(PersonEvent::RecordScheduled {
                    delivery_id: delivery_id.clone(),
                    effective: fact.effective,
                });
            } else if let Some(current) = current_fact(&state.facts, *now) {
                if fact.key() < current.key() {
                    out.push(PersonEvent::RecordSuperseded {
                        delivery_id: delivery_id.clone(),
                        effective: fact.effective,
                        current_effective: current.effective,
                    });
                }
            }
            *now
        }
    };
    let after_facts = out.iter().fold(state.clone(), evolve);
    let Some(mut view) = view_at(&after_facts.facts, now, &ctx.policy) else {
        return out;
    };
    view.groups = after_facts.groups();

    if state.lifecycle != Some(view.lifecycle) {
        out.push(transition(state.lifecycle, &view));
    } else if state.attributes != view.attributes {
        out.push(PersonEvent::AttributesChanged {
            changes: state.attributes.changes_to(&view.attributes),
            attributes: view.attributes.clone(),
        });
    }
    if view.lifecycle == Lifecycle::PreHire
        && state.lifecycle == Some(Lifecycle::PreHire)
        && state.start_at != view.start_at
    {
        if let Some(start_at) = view.start_at {
            out.push(PersonEvent::HireScheduled {
                start_at,
                attributes: view.attributes.clone(),
            });
        }
    }

    let pending = view.termination_at.filter(|t| *t > now);
    match (state.pending_termination, pending) {
        (old, Some(at)) if old != Some(at) => out.push(PersonEvent::TerminationScheduled { at }),
        (Some(was), None)
            if view.lifecycle != Lifecycle::Terminated && view.lifecycle != Lifecycle::Purged =>
        {
            out.push(PersonEvent::TerminationCancelled { was })
        }
        _ => {}
    }

    for app in &ctx.apps {
        let from = state.entitlement(&app.name);
        let failing = state.rule_failures.get(&app.name);
        match app.try_entitlement(&view, now) {
            Ok(to) => {
                if failing.is_some() {
                    out.push(PersonEvent::RuleRecovered {
                        app: app.name.clone(),
                    });
                }
                if to != from {
                    out.push(PersonEvent::EntitlementChanged {
                        app: app.name.clone(),
                        from,
                        to,
                    });
                }
            }
            Err(e) if failing != Some(&e.0) => out.push(PersonEvent::RuleFailed {
                app: app.name.clone(),
                error: e.0,
            }),
            Err(_) => {}
        }
    }

    if let (Some(days), Some(end_at)) = (ctx.policy.expiry_warning_days, view.end_at) {
        let warn_from = end_at - Duration::days(i64::from(days));
        if warn_from <= now && now < end_at && !state.warned.contains(&end_at) && pending.is_some()
        {
            out.push(PersonEvent::ContractExpiryWarning { end_at });
        }
    }
    out
}

/// The events that bring the person's linked identity in line with what
/// the IdP says now; none when nothing changed (snapshots repeat).
fn identity_events(state: &Person, identity: &IdpIdentity) -> Vec<PersonEvent> {
    let linked = state.identities.get(&identity.provider);
    if identity.deleted {
        return match linked {
            Some(l) if l.idp_id == identity.idp_id => vec![PersonEvent::IdentityUnlinked {
                provider: identity.provider.clone(),
                idp_id: identity.idp_id.clone(),
            }],
            _ => vec![],
        };
    }
    let groups: BTreeSet<String> = identity
        .groups
        .iter()
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty())
        .collect();
    let before = linked.map(|l| &l.groups);
    let unchanged = linked.is_some_and(|l| {
        l.idp_id == identity.idp_id
            && l.user_name == identity.user_name
            && l.active == identity.active
            && l.groups == groups
    });
    if unchanged {
        return vec![];
    }
    let empty = BTreeSet::new();
    let before = before.unwrap_or(&empty);
    vec![PersonEvent::IdentitySynced {
        provider: identity.provider.clone(),
        idp_id: identity.idp_id.clone(),
        user_name: identity.user_name.clone(),
        active: identity.active,
        groups_added: groups.difference(before).cloned().collect(),
        groups_removed: before.difference(&groups).cloned().collect(),
        groups,
    }]
}

fn transition(from: Option<Lifecycle>, view: &View) -> PersonEvent {
    let attributes = view.attributes.clone();
    let since = view.since;
    match view.lifecycle {
        Lifecycle::PreHire => PersonEvent::HireScheduled {
            start_at: view.start_at.unwrap_or(since),
            attributes,
        },
        Lifecycle::Active | Lifecycle::OnLeave if from.is_some_and(Lifecycle::was_employed) => {
            PersonEvent::PersonRehired {
                since,
                lifecycle: view.lifecycle,
                attributes,
            }
        }
        Lifecycle::Active if from == Some(Lifecycle::OnLeave) => {
            PersonEvent::LeaveEnded { since, attributes }
        }
        Lifecycle::Active => PersonEvent::PersonHired { since, attributes },
        Lifecycle::OnLeave => PersonEvent::LeaveStarted { since, attributes },
        Lifecycle::Cancelled => PersonEvent::HireRescinded { since, attributes },
        Lifecycle::Terminated => PersonEvent::PersonTerminated {
            since,
            reason: termination_reason(view),
            attributes,
        },
        Lifecycle::Purged => PersonEvent::PersonPurged { since, attributes },
    }
}

fn termination_reason(view: &View) -> TerminationReason {
    if view.revoked_immediately {
        TerminationReason::RevokedImmediately
    } else if view.termination_at.is_some() && view.termination_at == view.end_at {
        TerminationReason::EndOfLastDay
    } else {
        TerminationReason::Status
    }
}

pub fn evolve(mut state: Person, event: &PersonEvent) -> Person {
    match event {
        PersonEvent::SourceRecordReceived {
            source,
            delivery_id,
            effective,
            record,
        } => state.facts.push(Fact {
            source: source.clone(),
            delivery_id: delivery_id.clone(),
            effective: *effective,
            record: record.clone(),
        }),
        PersonEvent::RecordScheduled { .. } | PersonEvent::RecordSuperseded { .. } => {}
        PersonEvent::HireScheduled {
            start_at,
            attributes,
        } => {
            state.lifecycle = Some(Lifecycle::PreHire);
            state.start_at = Some(*start_at);
            state.attributes = attributes.clone();
        }
        PersonEvent::PersonHired { attributes, .. }
        | PersonEvent::LeaveEnded { attributes, .. } => {
            state.lifecycle = Some(Lifecycle::Active);
            state.attributes = attributes.clone();
        }
        PersonEvent::PersonRehired {
            lifecycle,
            attributes,
            ..
        } => {
            state.lifecycle = Some(*lifecycle);
            state.attributes = attributes.clone();
        }
        PersonEvent::LeaveStarted { attributes, .. } => {
            state.lifecycle = Some(Lifecycle::OnLeave);
            state.attributes = attributes.clone();
        }
        PersonEvent::HireRescinded { attributes, .. } => {
            state.lifecycle = Some(Lifecycle::Cancelled);
            state.attributes = attributes.clone();
        }
        PersonEvent::PersonTerminated { attributes, .. } => {
            state.lifecycle = Some(Lifecycle::Terminated);
            state.pending_termination = None;
            state.attributes = attributes.clone();
        }
        PersonEvent::PersonPurged { attributes, .. } => {
            state.lifecycle = Some(Lifecycle::Purged);
            state.pending_termination = None;
            state.attributes = attributes.clone();
        }
        PersonEvent::AttributesChanged { attributes, .. } => state.attributes = attributes.clone(),
        PersonEvent::TerminationScheduled { at } => state.pending_termination = Some(*at),
        PersonEvent::TerminationCancelled { .. } => state.pending_termination = None,
        PersonEvent::EntitlementChanged { app, to, .. } => {
            state.entitlements.insert(app.clone(), *to);
        }
        PersonEvent::ContractExpiryWarning { end_at } => {
            state.warned.insert(*end_at);
        }
        PersonEvent::RuleFailed { app, error } => {
            state.rule_failures.insert(app.clone(), error.clone());
        }
        PersonEvent::RuleRecovered { app } => {
            state.rule_failures.remove(app);
        }
        PersonEvent::IdentitySynced {
            provider,
            idp_id,
            user_name,
            active,
            groups,
            ..
        } => {
            state.identities.insert(
                provider.clone(),
                LinkedIdentity {
                    idp_id: idp_id.clone(),
                    user_name: user_name.clone(),
                    active: *active,
                    groups: groups.clone(),
                },
            );
        }
        PersonEvent::IdentityUnlinked { provider, idp_id } => {
            if state
                .identities
                .get(provider)
                .is_some_and(|l| &l.idp_id == idp_id)
            {
                state.identities.remove(provider);
            }
        }
    }
    state
}

pub fn fold<'a>(events: impl IntoIterator<Item = &'a PersonEvent>) -> Person {
    events.into_iter().fold(Person::default(), evolve)
}

/// Why the engine must look at a person again at some instant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Wakeup {
    pub at: DateTime<Utc>,
    /// `record`, `start`, `termination`, `purge`, `expiry_warning`,
    /// `pre_provision`, `app_purge`.
    pub kind: String,
    pub app: Option<String>,
}

/// Every future instant at which `decide(Tick)` could emit something, given
/// the facts known now. The engine stores them as durable schedules.
pub fn wakeups(state: &Person, ctx: &Context, now: DateTime<Utc>) -> Vec<Wakeup> {
    let mut out = Vec::new();
    let mut add = |at: DateTime<Utc>, kind: &str, app: Option<&str>| {
        if at > now {
            out.push(Wakeup {
                at,
                kind: kind.to_string(),
                app: app.map(str::to_string),
            });
        }
    };
    for f in &state.facts {
        add(f.effective, "record", None);
    }
    if let Some(view) =
        view_at(&state.facts, now, &ctx.policy).filter(|v| v.lifecycle != Lifecycle::Cancelled)
    {
        if let Some(s) = view.start_at {
            add(s, "start", None);
        }
        if let Some(t) = view.termination_at {
            add(t, "termination", None);
            if let Some(d) = ctx.policy.purge_after_days {
                add(t + Duration::days(i64::from(d)), "purge", None);
            }
            for app in &ctx.apps {
                if let Some(d) = app.purge_after_days {
                    add(
                        t + Duration::days(i64::from(d)),
                        "app_purge",
                        Some(&app.name),
                    );
                }
            }
        }
        if let Some(s) = view.start_at {
            for app in &ctx.apps {
                if app.pre_provision_days > 0 {
                    add(
                        s - Duration::days(i64::from(app.pre_provision_days)),
                        "pre_provision",
                        Some(&app.name),
                    );
                }
            }
        }
        if let (Some(days), Some(e)) = (ctx.policy.expiry_warning_days, view.end_at) {
            add(e - Duration::days(i64::from(days)), "expiry_warning", None);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Catch-up after an outage: decides at every wakeup instant after `from`
/// up to `now`, in due order, then at `now`. Each transition is recorded at
/// the instant it was due rather than collapsed into one jump, so the audit
/// shows, say, a hire and the termination that followed it. Returns the
/// events with the instant each was decided at.
pub fn catch_up(
    state: &Person,
    ctx: &Context,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, PersonEvent)> {
    // A bound against a pathological fact set; real persons have a handful.
    const MAX_STEPS: usize = 10_000;
    let mut out = Vec::new();
    let mut current = state.clone();
    let mut at = from;
    for _ in 0..MAX_STEPS {
        let Some(next) = wakeups(&current, ctx, at)
            .into_iter()
            .map(|w| w.at)
            .find(|t| *t < now)
        else {
            break;
        };
        for e in decide(&current, &Command::Tick { now: next }, ctx) {
            current = evolve(current, &e);
            out.push((next, e));
        }
        at = next;
    }
    for e in decide(&current, &Command::Tick { now }, ctx) {
        out.push((now, e));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entitlement::{LeavePolicy, PurgeAction};
    use crate::TerminationPolicy;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("instant")
    }

    fn record(status: EmploymentStatus, start: &str, stated: &str) -> SourceRecord {
        SourceRecord {
            person_id: "E-1".into(),
            given_name: "Ana".into(),
            family_name: "Silva".into(),
            display_name: None,
            work_email: "ana@example.com".into(),
            employee_number: None,
            department: Some("Engineering".into()),
            title: None,
            cost_center: None,
            organization: None,
            division: None,
            manager_id: None,
            location: None,
            time_zone: Some("Europe/Berlin".into()),
            employment_status: status,
            start_date: Some(start.parse().expect("date")),
            end_date: None,
            effective_at: utc(stated),
            effective_date: None,
            sequence: None,
            revoke_immediately: false,
        }
    }

    fn app(name: &str) -> AppPolicy {
        AppPolicy {
            name: name.into(),
            scope: None,
            rule: None,
            on_termination: TerminationPolicy::Deactivate,
            on_leave: LeavePolicy::Suspend,
            pre_provision_days: 0,
            purge_after_days: None,
            purge_action: PurgeAction::Delete,
        }
    }

    fn ctx() -> Context {
        Context {
            policy: Policy {
                default_tz: chrono_tz::UTC,
                ..Policy::default()
            },
            apps: vec![app("wiki")],
        }
    }

    fn apply(
        state: &Person,
        r: &SourceRecord,
        now: &str,
        id: &str,
        ctx: &Context,
    ) -> (Person, Vec<PersonEvent>) {
        let events = decide(
            state,
            &Command::ApplyRecord {
                source: "generic".into(),
                delivery_id: id.into(),
                record: r.clone(),
                now: utc(now),
            },
            ctx,
        );
        (events.iter().fold(state.clone(), evolve), events)
    }

    fn tick(state: &Person, now: &str, ctx: &Context) -> (Person, Vec<PersonEvent>) {
        let events = decide(state, &Command::Tick { now: utc(now) }, ctx);
        (events.iter().fold(state.clone(), evolve), events)
    }

    fn types(events: &[PersonEvent]) -> Vec<&'static str> {
        events.iter().map(PersonEvent::event_type).collect()
    }

    #[test]
    fn future_hire_waits_for_the_local_start_of_day() {
        let c = ctx();
        let (s, ev) = apply(
            &Person::default(),
            &record(
                EmploymentStatus::Active,
                "2026-03-03",
                "2026-02-10T09:00:00Z",
            ),
            "2026-02-10T09:00:00Z",
            "d1",
            &c,
        );
        assert_eq!(types(&ev), ["SourceRecordReceived", "HireScheduled"]);
        assert_eq!(s.lifecycle, Some(Lifecycle::PreHire));
        let w = wakeups(&s, &c, utc("2026-02-10T09:00:00Z"));
        assert_eq!(
            w.iter()
                .map(|w| (w.kind.as_str(), w.at))
                .collect::<Vec<_>>(),
            [("start", utc("2026-03-02T23:00:00Z"))]
        );
        let (s2, ev) = tick(&s, "2026-03-02T22:59:59Z", &c);
        assert!(ev.is_empty(), "{ev:?}");
        let (s2b, ev) = tick(&s2, "2026-03-02T23:00:00Z", &c);
        assert_eq!(types(&ev), ["PersonHired", "EntitlementChanged"]);
        assert_eq!(s2b.entitlement("wiki"), Entitlement::Active);
    }

    #[test]
    fn last_day_ends_at_local_midnight_and_can_be_cancelled() {
        let c = ctx();
        let (s, _) = apply(
            &Person::default(),
            &record(
                EmploymentStatus::Active,
                "2026-01-05",
                "2026-01-05T09:00:00Z",
            ),
            "2026-01-05T09:00:00Z",
            "d1",
            &c,
        );
        let mut leaving = record(
            EmploymentStatus::Active,
            "2026-01-05",
            "2026-05-20T09:00:00Z",
        );
        leaving.end_date = Some("2026-05-29".parse().expect("date"));
        let (s, ev) = apply(&s, &leaving, "2026-05-20T09:00:00Z", "d2", &c);
        assert_eq!(types(&ev), ["SourceRecordReceived", "TerminationScheduled"]);
        // Friday 29 May ends at 22:00 UTC in Berlin (CEST).
        let (still, ev) = tick(&s, "2026-05-29T21:59:00Z", &c);
        assert!(ev.is_empty());
        let (gone, ev) = tick(&still, "2026-05-29T22:00:00Z", &c);
        assert_eq!(types(&ev), ["PersonTerminated", "EntitlementChanged"]);
        assert_eq!(gone.entitlement("wiki"), Entitlement::Revoked);

        // The same person, but HR withdraws the termination before Friday.
        let staying = record(
            EmploymentStatus::Active,
            "2026-01-05",
            "2026-05-25T09:00:00Z",
        );
        let (kept, ev) = apply(&s, &staying, "2026-05-25T09:00:00Z", "d3", &c);
        assert_eq!(types(&ev), ["SourceRecordReceived", "TerminationCancelled"]);
        let (kept, ev) = tick(&kept, "2026-06-01T00:00:00Z", &c);
        assert!(ev.is_empty());
        assert_eq!(kept.lifecycle, Some(Lifecycle::Active));
    }

    #[test]
    fn revoke_immediately_ignores_the_last_day() {
        let c = ctx();
        let (s, _) = apply(
            &Person::default(),
            &record(
                EmploymentStatus::Active,
                "2026-01-05",
                "2026-01-05T09:00:00Z",
            ),
            "2026-01-05T09:00:00Z",
            "d1",
            &c,
        );
        let mut urgent = record(
            EmploymentStatus::Terminated,
            "2026-01-05",
            "2026-05-20T09:00:00Z",
        );
        urgent.end_date = Some("2026-05-31".parse().expect("date"));
        urgent.revoke_immediately = true;
        let (s, ev) = apply(&s, &urgent, "2026-05-20T09:00:01Z", "d2", &c);
        assert_eq!(
            types(&ev),
            [
                "SourceRecordReceived",
                "PersonTerminated",
                "EntitlementChanged"
            ]
        );
        assert!(
            matches!(
                ev[1],
                PersonEvent::PersonTerminated {
                    reason: TerminationReason::RevokedImmediately,
                    ..
                }
            ),
            "{:?}",
            ev[1]
        );
        assert_eq!(s.entitlement("wiki"), Entitlement::Revoked);
    }

    #[test]
    fn revoke_immediately_without_a_last_day_says_so() {
        let c = ctx();
        let (s, _) = apply(
            &Person::default(),
            &record(
                EmploymentStatus::Active,
                "2026-01-05",
                "2026-01-05T09:00:00Z",
            ),
            "2026-01-05T09:00:00Z",
            "d1",
            &c,
        );
        let mut urgent = record(
            EmploymentStatus::Terminated,
            "2026-01-05",
            "2026-05-20T09:00:00Z",
        );
        urgent.revoke_immediately = true;
        let (_, ev) = apply(&s, &urgent, "2026-05-20T09:00:00Z", "d2", &c);
        assert!(
            matches!(
                ev[1],
                PersonEvent::PersonTerminated {
                    reason: TerminationReason::RevokedImmediately,
                    ..
                }
            ),
            "{:?}",
            ev[1]
        );
    }

    #[test]
    fn a_future_move_applies_on_its_date_not_before() {
        let c = ctx();
        let (s, _) = apply(
            &Person::default(),
            &record(
                EmploymentStatus::Active,
                "2026-01-05",
                "2026-01-05T09:00:00Z",
            ),
            "2026-01-05T09:00:00Z",
            "d1",
            &c,
        );
        let mut mover = record(
            EmploymentStatus::Active,
            "2026-01-05",
            "2026-06-10T09:00:00Z",
        );
        mover.department = Some("Sales".into());
        mover.effective_date = Some("2026-07-01".parse().expect("date"));
        let (s, ev) = apply(&s, &mover, "2026-06-10T09:00:00Z", "d2", &c);
        assert_eq!(types(&ev), ["SourceRecordReceived", "RecordScheduled"]);
        assert_eq!(s.attributes.department.as_deref(), Some("Engineering"));
        let (s, ev) = tick(&s, "2026-06-30T21:59:59Z", &c);
        assert!(ev.is_empty());
        let (s, ev) = tick(&s, "2026-06-30T22:00:00Z", &c);
        assert_eq!(types(&ev), ["AttributesChanged"]);
        assert_eq!(s.attributes.department.as_deref(), Some("Sales"));
    }

    #[test]
    fn replayed_and_late_records_change_nothing() {
        let c = ctx();
        let r1 = record(
            EmploymentStatus::Active,
            "2026-01-05",
            "2026-01-05T09:00:00Z",
        );
        let (s, _) = apply(&Person::default(), &r1, "2026-03-01T09:00:00Z", "d1", &c);
        let mut newer = r1.clone();
        newer.title = Some("Lead".into());
        newer.effective_at = utc("2026-02-01T09:00:00Z");
        let (s, _) = apply(&s, &newer, "2026-03-01T09:00:00Z", "d2", &c);
        // The same delivery again: nothing at all.
        let (s2, ev) = apply(&s, &newer, "2026-03-01T10:00:00Z", "d2", &c);
        assert!(ev.is_empty());
        assert_eq!(s2, s);
        // An older record arriving late: kept for the audit, no effect.
        let mut old = r1.clone();
        old.title = Some("Intern".into());
        old.effective_at = utc("2026-01-20T09:00:00Z");
        let (s3, ev) = apply(&s, &old, "2026-03-01T10:00:00Z", "d0", &c);
        assert_eq!(types(&ev), ["SourceRecordReceived", "RecordSuperseded"]);
        assert_eq!(s3.attributes.title.as_deref(), Some("Lead"));
    }

    #[test]
    fn rescinded_hire_then_a_new_hire() {
        let mut c = ctx();
        c.apps[0].pre_provision_days = 7;
        let (s, _) = apply(
            &Person::default(),
            &record(
                EmploymentStatus::Active,
                "2026-03-03",
                "2026-02-01T09:00:00Z",
            ),
            "2026-02-01T09:00:00Z",
            "d1",
            &c,
        );
        let (s, ev) = tick(&s, "2026-02-23T23:00:00Z", &c);
        assert_eq!(types(&ev), ["EntitlementChanged"]);
        assert_eq!(s.entitlement("wiki"), Entitlement::PreProvisioned);
        let (s, ev) = apply(
            &s,
            &record(
                EmploymentStatus::Rescinded,
                "2026-03-03",
                "2026-02-25T09:00:00Z",
            ),
            "2026-02-25T09:00:00Z",
            "d2",
            &c,
        );
        assert_eq!(
            types(&ev),
            [
                "SourceRecordReceived",
                "HireRescinded",
                "EntitlementChanged"
            ]
        );
        assert_eq!(s.entitlement("wiki"), Entitlement::Removed);
        let (s, ev) = apply(
            &s,
            &record(
                EmploymentStatus::Active,
                "2026-04-01",
                "2026-03-20T09:00:00Z",
            ),
            "2026-04-02T09:00:00Z",
            "d3",
            &c,
        );
        assert_eq!(
            types(&ev),
            ["SourceRecordReceived", "PersonHired", "EntitlementChanged"]
        );
        assert_eq!(s.entitlement("wiki"), Entitlement::Active);
    }

    #[test]
    fn leave_follows_the_app_policy() {
        let mut c = ctx();
        let mut keep = app("chat");
        keep.on_leave = LeavePolicy::Keep;
        c.apps.push(keep);
        let (s, _) = apply(
            &Person::default(),
            &record(
                EmploymentStatus::Active,
                "2026-01-05",
                "2026-01-05T09:00:00Z",
            ),
            "2026-01-05T09:00:00Z",
            "d1",
            &c,
        );
        let (s, ev) = apply(
            &s,
            &record(
                EmploymentStatus::OnLeave,
                "2026-01-05",
                "2026-04-01T09:00:00Z",
            ),
            "2026-04-01T09:00:00Z",
            "d2",
            &c,
        );
        assert_eq!(
            types(&ev),
            ["SourceRecordReceived", "LeaveStarted", "EntitlementChanged"]
        );
        assert_eq!(s.entitlement("wiki"), Entitlement::Suspended);
        assert_eq!(s.entitlement("chat"), Entitlement::Active);
        let (s, ev) = apply(
            &s,
            &record(
                EmploymentStatus::Active,
                "2026-01-05",
                "2026-09-01T09:00:00Z",
            ),
            "2026-09-01T09:00:00Z",
            "d3",
            &c,
        );
        assert_eq!(
            types(&ev),
            ["SourceRecordReceived", "LeaveEnded", "EntitlementChanged"]
        );
        assert_eq!(s.entitlement("wiki"), Entitlement::Active);
    }

    #[test]
    fn grace_then_purge_per_app_and_expiry_warning() {
        let mut c = ctx();
        c.apps[0].purge_after_days = Some(30);
        c.policy.expiry_warning_days = Some(14);
        let mut r = record(
            EmploymentStatus::Active,
            "2026-01-05",
            "2026-01-05T09:00:00Z",
        );
        r.end_date = Some("2026-06-30".parse().expect("date"));
        let (s, ev) = apply(&Person::default(), &r, "2026-01-05T09:00:00Z", "d1", &c);
        assert_eq!(
            types(&ev),
            [
                "SourceRecordReceived",
                "PersonHired",
                "TerminationScheduled",
                "EntitlementChanged"
            ]
        );
        let kinds: Vec<String> = wakeups(&s, &c, utc("2026-01-05T09:00:00Z"))
            .into_iter()
            .map(|w| w.kind)
            .collect();
        assert_eq!(kinds, ["expiry_warning", "termination", "app_purge"]);
        // 14 days before the end of 30 June in Berlin.
        let (s, ev) = tick(&s, "2026-06-16T21:59:59Z", &c);
        assert!(ev.is_empty());
        let (s, ev) = tick(&s, "2026-06-16T22:00:00Z", &c);
        assert_eq!(types(&ev), ["ContractExpiryWarning"]);
        let (s, ev) = tick(&s, "2026-06-17T00:00:00Z", &c);
        assert!(ev.is_empty(), "warned once");
        let (s, _) = tick(&s, "2026-07-01T00:00:00Z", &c);
        assert_eq!(s.entitlement("wiki"), Entitlement::Revoked);
        let (s, ev) = tick(&s, "2026-07-31T00:00:00Z", &c);
        assert_eq!(types(&ev), ["EntitlementChanged"]);
        assert_eq!(s.entitlement("wiki"), Entitlement::Purged);
    }

    #[test]
    fn moving_time_zone_moves_the_start_instant() {
        let c = ctx();
        let (s, _) = apply(
            &Person::default(),
            &record(
                EmploymentStatus::Active,
                "2026-03-03",
                "2026-02-01T09:00:00Z",
            ),
            "2026-02-01T09:00:00Z",
            "d1",
            &c,
        );
        let first = wakeups(&s, &c, utc("2026-02-01T09:00:00Z"));
        assert_eq!(
            first[0].at,
            utc("2026-03-02T23:00:00Z"),
            "midnight in Berlin"
        );
        let mut moved = record(
            EmploymentStatus::Active,
            "2026-03-03",
            "2026-02-10T09:00:00Z",
        );
        moved.time_zone = Some("America/New_York".into());
        let (s, ev) = apply(&s, &moved, "2026-02-10T09:00:00Z", "d2", &c);
        assert_eq!(
            types(&ev),
            ["SourceRecordReceived", "AttributesChanged", "HireScheduled"]
        );
        let starts: Vec<DateTime<Utc>> = wakeups(&s, &c, utc("2026-02-10T09:00:00Z"))
            .into_iter()
            .filter(|w| w.kind == "start")
            .map(|w| w.at)
            .collect();
        assert_eq!(
            starts,
            [utc("2026-03-03T05:00:00Z")],
            "midnight in New York"
        );
        let (s, ev) = tick(&s, "2026-03-03T04:59:59Z", &c);
        assert!(ev.is_empty(), "not yet active in New York: {ev:?}");
        let (s, _) = tick(&s, "2026-03-03T05:00:00Z", &c);
        assert_eq!(s.lifecycle, Some(Lifecycle::Active));
    }

    #[test]
    fn catch_up_records_each_transition_at_its_due_instant() {
        let c = ctx();
        let mut r = record(
            EmploymentStatus::Active,
            "2026-03-03",
            "2026-02-01T09:00:00Z",
        );
        r.end_date = Some("2026-03-31".parse().expect("date"));
        let (s, _) = apply(&Person::default(), &r, "2026-02-01T09:00:00Z", "d1", &c);
        // The engine was down from February until May.
        let steps = catch_up(
            &s,
            &c,
            utc("2026-02-01T09:00:00Z"),
            utc("2026-05-01T00:00:00Z"),
        );
        let seen: Vec<(&str, DateTime<Utc>)> =
            steps.iter().map(|(t, e)| (e.event_type(), *t)).collect();
        assert_eq!(
            seen,
            [
                ("PersonHired", utc("2026-03-02T23:00:00Z")),
                ("EntitlementChanged", utc("2026-03-02T23:00:00Z")),
                ("PersonTerminated", utc("2026-03-31T22:00:00Z")),
                ("EntitlementChanged", utc("2026-03-31T22:00:00Z")),
            ]
        );
        let end = steps.iter().fold(s, |st, (_, e)| evolve(st, e));
        assert_eq!(end.lifecycle, Some(Lifecycle::Terminated));
    }

    #[test]
    fn a_rule_failing_on_odd_data_keeps_access_as_it_was() {
        let mut c = ctx();
        // Fails when the title is not a number.
        c.apps[0].rule = Some(
            crate::entitlement::Rule::compile("person.title == \"\" || int(person.title) > 0")
                .expect("rule"),
        );
        let (s, _) = apply(
            &Person::default(),
            &record(
                EmploymentStatus::Active,
                "2026-01-05",
                "2026-01-05T09:00:00Z",
            ),
            "2026-01-05T09:00:00Z",
            "d1",
            &c,
        );
        assert_eq!(s.entitlement("wiki"), Entitlement::Active);
        let mut odd = record(
            EmploymentStatus::Active,
            "2026-01-05",
            "2026-02-01T09:00:00Z",
        );
        odd.title = Some("Chief".into());
        let (s, ev) = apply(&s, &odd, "2026-02-01T09:00:00Z", "d2", &c);
        assert_eq!(
            types(&ev),
            ["SourceRecordReceived", "AttributesChanged", "RuleFailed"]
        );
        assert_eq!(
            s.entitlement("wiki"),
            Entitlement::Active,
            "a broken rule does not revoke"
        );
        let (s, ev) = tick(&s, "2026-02-01T10:00:00Z", &c);
        assert!(ev.is_empty(), "reported once: {ev:?}");
        let mut fixed = odd.clone();
        fixed.title = Some("7".into());
        fixed.effective_at = utc("2026-02-02T09:00:00Z");
        let (s, ev) = apply(&s, &fixed, "2026-02-02T09:00:00Z", "d3", &c);
        assert_eq!(
            types(&ev),
            ["SourceRecordReceived", "AttributesChanged", "RuleRecovered"]
        );
        assert!(s.rule_failures.is_empty());
    }

    #[test]
    fn events_round_trip_through_storage_form() {
        let c = ctx();
        let (_, ev) = apply(
            &Person::default(),
            &record(
                EmploymentStatus::Active,
                "2026-03-03",
                "2026-03-01T01:00:00Z",
            ),
            "2026-03-03T08:00:00Z",
            "d1",
            &c,
        );
        for e in ev {
            let back = PersonEvent::from_stored(e.event_type(), e.to_data()).expect("decode");
            assert_eq!(back, e);
        }
    }

    fn identity(groups: &[&str], deleted: bool) -> IdpIdentity {
        IdpIdentity {
            provider: "authentik".into(),
            idp_id: "ak-1".into(),
            user_name: "ana".into(),
            external_id: None,
            emails: vec!["ana@example.com".into()],
            employee_number: None,
            display_name: None,
            active: true,
            groups: groups.iter().map(|g| (*g).to_string()).collect(),
            deleted,
        }
    }

    fn sync(
        state: &Person,
        id: &IdpIdentity,
        now: &str,
        ctx: &Context,
    ) -> (Person, Vec<PersonEvent>) {
        let events = decide(
            state,
            &Command::ApplyIdentity {
                identity: id.clone(),
                now: utc(now),
            },
            ctx,
        );
        (events.iter().fold(state.clone(), evolve), events)
    }

    #[test]
    fn idp_groups_drive_rules_and_repeated_snapshots_change_nothing() {
        let mut c = ctx();
        c.apps[0].rule = Some(
            crate::entitlement::Rule::compile(r#""wiki-users" in person.groups"#).expect("rule"),
        );
        let (s, _) = apply(
            &Person::default(),
            &record(
                EmploymentStatus::Active,
                "2026-01-05",
                "2026-01-05T09:00:00Z",
            ),
            "2026-01-05T09:00:00Z",
            "d1",
            &c,
        );
        assert_eq!(
            s.entitlement("wiki"),
            Entitlement::Revoked,
            "employed, but not in the group yet"
        );

        let (s, ev) = sync(
            &s,
            &identity(&["wiki-users", "staff"], false),
            "2026-01-06T09:00:00Z",
            &c,
        );
        assert_eq!(types(&ev), ["IdentitySynced", "EntitlementChanged"]);
        assert_eq!(s.entitlement("wiki"), Entitlement::Active);
        assert_eq!(s.groups(), ["staff", "wiki-users"]);

        let (s, ev) = sync(
            &s,
            &identity(&["staff", "wiki-users"], false),
            "2026-01-06T10:00:00Z",
            &c,
        );
        assert!(ev.is_empty(), "same snapshot, other order: {ev:?}");

        let (s, ev) = sync(&s, &identity(&["staff"], false), "2026-01-07T09:00:00Z", &c);
        assert_eq!(types(&ev), ["IdentitySynced", "EntitlementChanged"]);
        match &ev[0] {
            PersonEvent::IdentitySynced { groups_removed, .. } => {
                assert_eq!(groups_removed.iter().collect::<Vec<_>>(), ["wiki-users"])
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.entitlement("wiki"), Entitlement::Revoked);

        let (s, _) = sync(
            &s,
            &identity(&["wiki-users"], false),
            "2026-01-08T09:00:00Z",
            &c,
        );
        assert_eq!(s.entitlement("wiki"), Entitlement::Active);
        // A later HR change keeps the IdP groups in the rule's view.
        let mut moved = record(
            EmploymentStatus::Active,
            "2026-01-05",
            "2026-01-09T09:00:00Z",
        );
        moved.department = Some("Sales".into());
        let (s, ev) = apply(&s, &moved, "2026-01-09T09:00:00Z", "d2", &c);
        assert_eq!(types(&ev), ["SourceRecordReceived", "AttributesChanged"]);
        assert_eq!(s.entitlement("wiki"), Entitlement::Active);

        let (s, ev) = sync(&s, &identity(&[], true), "2026-01-10T09:00:00Z", &c);
        assert_eq!(types(&ev), ["IdentityUnlinked", "EntitlementChanged"]);
        assert!(s.identities.is_empty());
        assert_eq!(s.entitlement("wiki"), Entitlement::Revoked);
        let (_, ev) = sync(&s, &identity(&[], true), "2026-01-10T10:00:00Z", &c);
        assert!(ev.is_empty(), "deleting twice is harmless");
    }

    #[test]
    fn idp_groups_do_not_outlive_the_employment() {
        let mut c = ctx();
        c.apps[0].rule = Some(
            crate::entitlement::Rule::compile(r#""wiki-users" in person.groups"#).expect("rule"),
        );
        let (s, _) = apply(
            &Person::default(),
            &record(
                EmploymentStatus::Active,
                "2026-01-05",
                "2026-01-05T09:00:00Z",
            ),
            "2026-01-05T09:00:00Z",
            "d1",
            &c,
        );
        let (s, _) = sync(
            &s,
            &identity(&["wiki-users"], false),
            "2026-01-06T09:00:00Z",
            &c,
        );
        let mut gone = record(
            EmploymentStatus::Terminated,
            "2026-01-05",
            "2026-02-01T09:00:00Z",
        );
        gone.revoke_immediately = true;
        let (s, _) = apply(&s, &gone, "2026-02-01T09:00:00Z", "d2", &c);
        assert_eq!(s.entitlement("wiki"), Entitlement::Revoked);
        // The IdP still lists the group (Authentik syncs hours later): no access.
        let (s, _) = sync(
            &s,
            &identity(&["wiki-users", "x"], false),
            "2026-02-01T10:00:00Z",
            &c,
        );
        assert_eq!(s.entitlement("wiki"), Entitlement::Revoked);
    }
}
