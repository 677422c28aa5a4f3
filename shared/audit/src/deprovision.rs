//! Time to deprovision: from a leaver's effective termination to each app's
//! acknowledged deactivation or deletion, with the SLA breaches and the
//! reasons the events show for them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use tenure_store::RecordedEvent;
use uuid::Uuid;

use crate::access::AccountFold;
use crate::leavers::Termination;
use crate::render::{Report, Table};
use crate::time::human_seconds;
use crate::EventRef;

/// Events that may explain a slow deprovisioning, besides the account
/// state events; the SQL reads select these too.
pub const REASON_TYPES: &[&str] = &[
    "JobDeadLettered",
    "DeprovisionStaged",
    "ScimCallFailed",
    "ReconcileFailed",
];

/// App-stream events of the circuit breaker.
pub const CIRCUIT_TYPES: &[&str] = &["CircuitOpened", "CircuitClosed"];

/// A HR record that arrives later than this after the termination took
/// effect is named as a reason.
const LATE_RECORD_SECS: i64 = 60;

/// One (leaver, app) whose account held access when the termination took
/// effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeprovisionRow {
    pub person_id: Uuid,
    pub person: String,
    pub app: String,
    pub user_name: Option<String>,
    pub terminated_at: DateTime<Utc>,
    pub termination: EventRef,
    /// When the app acknowledged the deactivation or deletion.
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<EventRef>,
    /// `acknowledged_at - terminated_at`, or, while pending, the time
    /// elapsed until the report was made.
    pub seconds: i64,
    pub pending: bool,
    pub breach: bool,
    /// What the events show happened in between (empty when nothing went
    /// wrong).
    pub reasons: Vec<String>,
}

/// Whether the account had to be switched off for this termination, and
/// when that was acknowledged. It had to be when it held access at the
/// effective instant, or gained access after it but before the termination
/// was recorded (a late HR record: access that should not have existed).
/// Time is always measured from the effective instant. `account` is the
/// whole account stream in version order, `circuit` the app's circuit
/// events in order.
pub fn deprovision_row(
    termination: &Termination,
    app: &str,
    account: &[RecordedEvent],
    circuit: &[RecordedEvent],
    now: DateTime<Utc>,
    sla_secs: i64,
) -> Option<DeprovisionRow> {
    let at = termination.effective_at;
    let known = termination.event.at.max(at);
    let split = account.partition_point(|e| e.recorded_at <= at);
    let split_known = account.partition_point(|e| e.recorded_at <= known);
    let active = |f: &AccountFold| f.state.as_ref().filter(|s| s.active).cloned();
    let mut fold = AccountFold::default();
    for e in &account[..split] {
        fold.apply(e);
    }
    // Where to look for the end of access from, once access is owed.
    let mut owed = active(&fold).map(|s| (s, split));
    if owed.is_none() {
        for (i, e) in account[split..split_known].iter().enumerate() {
            fold.apply(e);
            if let Some(s) = active(&fold) {
                owed = Some((s, split + i + 1));
                break;
            }
        }
    }
    let (held, from) = owed?;
    let user_name = held.user_name;
    let mut ended: Option<&RecordedEvent> = None;
    for e in &account[from..] {
        fold.apply(e);
        if active(&fold).is_none() {
            ended = Some(e);
            break;
        }
    }
    let end = ended.map_or(now, |e| e.recorded_at);
    let seconds = (end - at).num_seconds().max(0);

    let mut reasons = Reasons::default();
    let late = (termination.event.at - at).num_seconds();
    if late > LATE_RECORD_SECS {
        reasons.add(format!(
            "termination recorded {} after it took effect",
            human_seconds(late)
        ));
    }
    let open_before = circuit
        .iter()
        .take_while(|e| e.recorded_at <= at)
        .last()
        .filter(|e| e.event_type == "CircuitOpened");
    let during = circuit
        .iter()
        .filter(|e| e.recorded_at > at && e.recorded_at <= end && e.event_type == "CircuitOpened");
    for e in open_before.into_iter().chain(during) {
        reasons.add(format!(
            "circuit breaker open ({})",
            e.data["last_error"].as_str().unwrap_or("app not reachable")
        ));
    }
    for e in account[split..].iter().take_while(|e| e.recorded_at <= end) {
        let d = &e.data;
        let s = |k: &str| d[k].as_str().unwrap_or("").to_owned();
        match e.event_type.as_str() {
            "JobDeadLettered" => reasons.add(format!(
                "dead letter #{}: {}: {}",
                d["sequence"],
                s("reason"),
                s("error")
            )),
            "DeprovisionStaged" => {
                reasons.add(format!("staged by the mass-change guard: {}", s("reason")))
            }
            "ScimCallFailed" => {
                let outcome = match d["status"].as_u64() {
                    Some(status) => format!("HTTP {status}"),
                    None => s("error"),
                };
                reasons.add(format!(
                    "SCIM {} {} failed: {outcome}",
                    s("method"),
                    s("path")
                ))
            }
            "ReconcileFailed" => reasons.add(format!("reconcile failed: {}", s("error"))),
            _ => {}
        }
    }
    let pending = ended.is_none();
    if pending && reasons.is_empty() {
        reasons.add("no deactivation recorded".into());
    }
    Some(DeprovisionRow {
        person_id: termination.person_id,
        person: termination.person.clone(),
        app: app.to_owned(),
        user_name,
        terminated_at: at,
        termination: termination.event.clone(),
        acknowledged_at: ended.map(|e| e.recorded_at),
        acknowledged_by: ended.map(EventRef::from),
        seconds,
        pending,
        breach: seconds > sla_secs,
        reasons: reasons.finish(),
    })
}

/// Reasons in first-seen order, repeats counted.
#[derive(Default)]
struct Reasons(Vec<(String, usize)>);

impl Reasons {
    fn add(&mut self, r: String) {
        match self.0.iter_mut().find(|(seen, _)| *seen == r) {
            Some((_, n)) => *n += 1,
            None => self.0.push((r, 1)),
        }
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn finish(self) -> Vec<String> {
        self.0
            .into_iter()
            .map(|(r, n)| if n > 1 { format!("{r} (x{n})") } else { r })
            .collect()
    }
}

/// Nearest-rank percentile of sorted values (`q` in 0..=1).
pub fn percentile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// The app, or `*` for all apps.
    pub app: String,
    pub accounts: usize,
    pub acknowledged: usize,
    pub pending: usize,
    /// Over acknowledged accounts only; pending ones are counted apart.
    pub p50_seconds: Option<i64>,
    pub p95_seconds: Option<i64>,
    pub max_seconds: Option<i64>,
    pub breaches: usize,
}

fn stats<'a>(app: &str, rows: impl Iterator<Item = &'a DeprovisionRow>) -> Stats {
    let rows: Vec<_> = rows.collect();
    let mut done: Vec<i64> = rows
        .iter()
        .filter(|r| !r.pending)
        .map(|r| r.seconds)
        .collect();
    done.sort_unstable();
    Stats {
        app: app.to_owned(),
        accounts: rows.len(),
        acknowledged: done.len(),
        pending: rows.len() - done.len(),
        p50_seconds: percentile(&done, 0.50),
        p95_seconds: percentile(&done, 0.95),
        max_seconds: done.last().copied(),
        breaches: rows.iter().filter(|r| r.breach).count(),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeprovisionReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub sla_seconds: i64,
    pub generated_at: DateTime<Utc>,
    /// Leavers whose termination took effect in `[from, to)`.
    pub leavers: usize,
    pub overall: Stats,
    pub per_app: Vec<Stats>,
    pub rows: Vec<DeprovisionRow>,
}

impl DeprovisionReport {
    pub fn new(
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        sla_secs: i64,
        generated_at: DateTime<Utc>,
        leavers: usize,
        mut rows: Vec<DeprovisionRow>,
    ) -> Self {
        rows.sort_by(|a, b| {
            (a.terminated_at, &a.person, &a.app).cmp(&(b.terminated_at, &b.person, &b.app))
        });
        let mut apps: BTreeMap<&str, ()> = BTreeMap::new();
        for r in &rows {
            apps.insert(&r.app, ());
        }
        let per_app = apps
            .keys()
            .map(|app| stats(app, rows.iter().filter(|r| r.app == *app)))
            .collect();
        DeprovisionReport {
            from,
            to,
            sla_seconds: sla_secs,
            generated_at,
            leavers,
            overall: stats("*", rows.iter()),
            per_app,
            rows,
        }
    }

    pub fn breaches(&self) -> impl Iterator<Item = &DeprovisionRow> {
        self.rows.iter().filter(|r| r.breach)
    }

    /// The per-app and overall figures.
    pub fn summary(&self) -> Table {
        let opt = |v: Option<i64>| v.map(human_seconds).unwrap_or_else(|| "-".into());
        let mut t = Table::new(&[
            "app",
            "accounts",
            "acknowledged",
            "pending",
            "p50",
            "p95",
            "max",
            "breaches",
        ]);
        for s in self.per_app.iter().chain(std::iter::once(&self.overall)) {
            t.push(vec![
                s.app.clone(),
                s.accounts.to_string(),
                s.acknowledged.to_string(),
                s.pending.to_string(),
                opt(s.p50_seconds),
                opt(s.p95_seconds),
                opt(s.max_seconds),
                s.breaches.to_string(),
            ]);
        }
        t
    }
}

impl Report for DeprovisionReport {
    /// One row per (leaver, app).
    fn table(&self) -> Table {
        let mut t = Table::new(&[
            "person",
            "person_id",
            "app",
            "user_name",
            "terminated_at",
            "acknowledged_at",
            "time",
            "breach",
            "reasons",
        ]);
        for r in &self.rows {
            t.push(vec![
                r.person.clone(),
                r.person_id.to_string(),
                r.app.clone(),
                r.user_name.clone().unwrap_or_default(),
                r.terminated_at.to_rfc3339(),
                r.acknowledged_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "pending".into()),
                human_seconds(r.seconds),
                if r.breach { "yes" } else { "" }.into(),
                r.reasons.join("; "),
            ]);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tests::{ev, t0};
    use chrono::Duration;
    use proptest::prelude::*;
    use serde_json::json;

    const A: &str = "account-wiki-00000000-0000-0000-0000-000000000001";

    fn termination(at: DateTime<Utc>, recorded: DateTime<Utc>) -> Termination {
        Termination {
            person_id: Uuid::from_u128(1),
            person: "ada@x".into(),
            effective_at: at,
            reason: "end_of_last_day".into(),
            event: EventRef {
                event_id: Uuid::nil(),
                global_position: 1,
                event_type: "PersonTerminated".into(),
                correlation_id: Uuid::nil(),
                causation_id: None,
                at: recorded,
            },
            rehired_at: None,
        }
    }

    fn created(at: DateTime<Utc>) -> RecordedEvent {
        ev(
            A,
            1,
            "AccountCreated",
            json!({"remote_id": "r1", "user_name": "ada", "active": true}),
            at,
        )
    }

    #[test]
    fn acknowledged_deactivation_is_measured_from_the_effective_instant() {
        let end = t0() + Duration::days(10);
        let account = [
            created(t0()),
            ev(
                A,
                2,
                "ScimCallFailed",
                json!({"method": "PATCH", "path": "/Users/r1", "status": 503}),
                end + Duration::minutes(1),
            ),
            ev(
                A,
                3,
                "ScimCallFailed",
                json!({"method": "PATCH", "path": "/Users/r1", "status": 503}),
                end + Duration::minutes(2),
            ),
            ev(
                A,
                4,
                "AccountDeactivated",
                json!({"remote_id": "r1"}),
                end + Duration::minutes(3),
            ),
        ];
        let row = deprovision_row(
            &termination(end, end),
            "wiki",
            &account,
            &[],
            end + Duration::days(1),
            60,
        )
        .unwrap();
        assert_eq!(row.seconds, 180);
        assert!(!row.pending && row.breach);
        assert_eq!(row.reasons, ["SCIM PATCH /Users/r1 failed: HTTP 503 (x2)"]);
        assert_eq!(
            row.acknowledged_by.unwrap().event_type,
            "AccountDeactivated"
        );
        assert_eq!(row.user_name.as_deref(), Some("ada"));
    }

    #[test]
    fn pending_deprovision_names_the_guard_the_dead_letter_and_the_breaker() {
        let end = t0() + Duration::days(10);
        let account = [
            created(t0()),
            ev(
                A,
                2,
                "DeprovisionStaged",
                json!({"reason": "5 of 10 accounts in 1h"}),
                end + Duration::minutes(1),
            ),
            ev(
                A,
                3,
                "JobDeadLettered",
                json!({"sequence": 7, "reason": "budget", "error": "timeout"}),
                end + Duration::minutes(5),
            ),
        ];
        let circuit = [ev(
            "app-wiki",
            1,
            "CircuitOpened",
            json!({"last_error": "connection refused"}),
            end - Duration::minutes(5),
        )];
        let now = end + Duration::hours(30);
        let row = deprovision_row(
            &termination(end, end),
            "wiki",
            &account,
            &circuit,
            now,
            86_400,
        )
        .unwrap();
        assert!(row.pending && row.breach);
        assert_eq!(row.seconds, 30 * 3600);
        assert_eq!(
            row.reasons,
            [
                "circuit breaker open (connection refused)",
                "staged by the mass-change guard: 5 of 10 accounts in 1h",
                "dead letter #7: budget: timeout",
            ]
        );
    }

    #[test]
    fn a_late_hr_record_is_a_reason_and_an_inactive_account_is_not_a_row() {
        let end = t0() + Duration::days(10);
        let account = [
            created(t0()),
            ev(
                A,
                2,
                "AccountDeleted",
                json!({"remote_id": "r1"}),
                end + Duration::days(2),
            ),
        ];
        let row = deprovision_row(
            &termination(end, end + Duration::days(2)),
            "wiki",
            &account,
            &[],
            end,
            86_400,
        )
        .unwrap();
        assert_eq!(
            row.reasons,
            ["termination recorded 2d 0h after it took effect"]
        );
        assert!(row.breach);

        let gone_before = [
            created(t0()),
            ev(
                A,
                2,
                "AccountDeactivated",
                json!({"remote_id": "r1"}),
                t0() + Duration::days(1),
            ),
        ];
        assert!(
            deprovision_row(&termination(end, end), "wiki", &gone_before, &[], end, 60).is_none()
        );
    }

    #[test]
    fn access_granted_after_the_last_day_but_before_hr_said_so_is_owed() {
        // HR reported on day 12 a termination effective on day 10; the
        // account was created on day 11 and switched off on day 12.
        let end = t0() + Duration::days(10);
        let account = [
            created(end + Duration::days(1)),
            ev(
                A,
                2,
                "AccountDeactivated",
                json!({"remote_id": "r1"}),
                end + Duration::days(2),
            ),
        ];
        let row = deprovision_row(
            &termination(end, end + Duration::days(2)),
            "wiki",
            &account,
            &[],
            end + Duration::days(3),
            86_400,
        )
        .unwrap();
        assert_eq!(row.seconds, 2 * 86_400);
        assert!(row.breach);
        // Created only after HR said so: not this termination's account.
        let later = [created(end + Duration::days(3))];
        assert!(deprovision_row(
            &termination(end, end + Duration::days(2)),
            "wiki",
            &later,
            &[],
            end + Duration::days(4),
            60
        )
        .is_none());
    }

    #[test]
    fn statistics_are_nearest_rank_over_acknowledged_accounts() {
        assert_eq!(percentile(&[], 0.5), None);
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.95), Some(95));
        assert_eq!(percentile(&[7], 0.95), Some(7));
    }

    proptest! {
        #[test]
        fn percentiles_lie_between_min_and_max_and_grow_with_q(
            mut v in prop::collection::vec(0i64..1_000_000, 1..200)
        ) {
            v.sort_unstable();
            let p50 = percentile(&v, 0.5).unwrap();
            let p95 = percentile(&v, 0.95).unwrap();
            prop_assert!(v[0] <= p50 && p50 <= p95 && p95 <= *v.last().unwrap());
            let below = v.iter().filter(|x| **x <= p50).count();
            prop_assert!(below * 2 >= v.len());
        }
    }
}
