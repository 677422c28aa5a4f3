//! `just bench`: the audit queries (docs/audit.md) on a large history.
//!
//! Generates three years of a company's history into a fresh database and
//! loads it with `COPY`: `BENCH_PERSONS` persons (default 100,000), 10 apps,
//! hires (the first 40% in an initial import), movers (title and
//! department changes), leaves, terminations, and for every change the
//! fanout's SCIM calls and account events, with payloads shaped as
//! services/fanout/src/worker.rs writes them; a few deprovisionings fail
//! once or for good, each app is swept monthly and its circuit breaker opens
//! twice a year. `BENCH_EVENTS` (default 10,000,000) is the approximate
//! total: it sets how often a person moves. Every event carries its correct
//! stream version and hash chain (computed with the store's own
//! `tenure_store::chain`), so the store's verification passes on the data.
//!
//! Then measures, on that data: 100 random persons' timelines; access at an
//! instant for the app every person has; time to deprovision for one
//! quarter; the exceptions report; an event search page; a signed export of
//! one quarter and its verification; the first checkpoint of the whole log.
//! `BENCH_VERIFY_STORE=1` also runs `tenure_store::verify` over everything;
//! `BENCH_KEEP_DB=1` keeps the database (its name is printed) for
//! `EXPLAIN ANALYZE` by hand (drop it afterwards), and `BENCH_REUSE_DB=<name>`
//! measures again on such a database without generating anything.

use anyhow::Context;
use chrono::{DateTime, Duration, SubsecRound, TimeZone, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::BufReader;
use std::time::Instant;
use tenure_audit::export::{export, verify_export, ExportFilter};
use tenure_audit::search::{search, SearchFilter};
use tenure_e2e::bench::percentile;
use tenure_store::chain::{event_hash, EventFields, GENESIS_HASH};
use tenure_store::sqlx::{self, postgres::PgPoolOptions, Connection, PgConnection};
use tenure_store::Metadata;
use tenure_testkit::TestDb;
use uuid::Uuid;

const APPS: [&str; 10] = [
    "mail",
    "chat",
    "wiki",
    "git",
    "ci",
    "crm",
    "erp",
    "support",
    "design",
    "hr-portal",
];
/// Apps by department index; mail, chat and wiki are everyone's.
const DEPARTMENTS: [(&str, &[usize]); 7] = [
    ("Engineering", &[3, 4]),
    ("Sales", &[5]),
    ("Finance", &[6]),
    ("Support", &[7, 5]),
    ("Design", &[8, 3]),
    ("People", &[9, 6]),
    ("Operations", &[6, 7]),
];
const TITLES: [&str; 8] = [
    "Associate",
    "Analyst",
    "Specialist",
    "Senior Specialist",
    "Lead",
    "Manager",
    "Senior Manager",
    "Director",
];
const GIVEN: [&str; 12] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim",
    "Margaret", "Linus",
];
const FAMILY: [&str; 12] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman",
    "Berners", "Hamilton", "Torvalds",
];
const LOCATIONS: [(&str, &str); 4] = [
    ("Berlin", "Europe/Berlin"),
    ("London", "Europe/London"),
    ("New York", "America/New_York"),
    ("Singapore", "Asia/Singapore"),
];
const HISTORY_DAYS: i64 = 1095;
/// Events per `COPY` (one transaction each).
const CHUNK_EVENTS: usize = 20_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The history ends here, so that every run generates the same data.
fn history_end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0)
        .single()
        .unwrap_or_else(Utc::now)
}

/// SplitMix64: fast, seeded, good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo).max(1) as u64) as i64
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn uuid(&mut self) -> Uuid {
        let bytes = (u128::from(self.next()) << 64 | u128::from(self.next())).to_le_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    NotHired,
    Active,
    OnLeave,
    Terminated,
}

struct Person {
    id: Uuid,
    number: u32,
    given: usize,
    family: usize,
    department: usize,
    title: usize,
    location: usize,
    manager: Option<u32>,
    status: Status,
    /// Per app: the account's remote id once created, and whether active.
    accounts: [Option<bool>; 10],
}

impl Person {
    fn email(&self) -> String {
        format!(
            "{}.{}.{}@example.com",
            GIVEN[self.given].to_lowercase(),
            FAMILY[self.family].to_lowercase(),
            self.number
        )
    }
    fn attributes(&self, persons_ids: &[Uuid]) -> Value {
        let (location, time_zone) = LOCATIONS[self.location];
        json!({
            "given_name": GIVEN[self.given],
            "family_name": FAMILY[self.family],
            "display_name": format!("{} {}", GIVEN[self.given], FAMILY[self.family]),
            "email": self.email(),
            "employee_number": format!("E{:07}", self.number),
            "department": DEPARTMENTS[self.department].0,
            "cost_center": format!("CC-{}", 100 + self.department),
            "organization": "Example Corp",
            "title": TITLES[self.title],
            "manager_id": self.manager.map(|m| persons_ids[m as usize].to_string()),
            "location": location,
            "time_zone": time_zone,
        })
    }
    fn record(&self, persons_ids: &[Uuid], status: &str, end_date: Option<String>) -> Value {
        let (location, time_zone) = LOCATIONS[self.location];
        let mut r = json!({
            "person_id": format!("W{:07}", self.number),
            "given_name": GIVEN[self.given],
            "family_name": FAMILY[self.family],
            "work_email": self.email(),
            "employee_number": format!("E{:07}", self.number),
            "department": DEPARTMENTS[self.department].0,
            "cost_center": format!("CC-{}", 100 + self.department),
            "title": TITLES[self.title],
            "location": location,
            "time_zone": time_zone,
            "employment_status": status,
        });
        if let Some(m) = self.manager {
            r["manager_id"] = json!(persons_ids[m as usize].to_string());
        }
        if let Some(d) = end_date {
            r["end_date"] = json!(d);
        }
        r
    }
    fn entitled(&self, app: usize) -> bool {
        app < 3 || DEPARTMENTS[self.department].1.contains(&app)
    }
    fn remote_id(&self, app: usize) -> String {
        format!("{app:x}{:08x}", self.number)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Hire,
    Move,
    LeaveStart,
    LeaveEnd,
    Terminate,
    Sweep(usize),
    CircuitOpen(usize),
}

/// Appends events to a `COPY … FROM STDIN` text buffer, keeping each
/// stream's version and hash chain and a strictly increasing `recorded_at`
/// (global order and time order agree, as with the real writers).
struct Writer {
    heads: HashMap<String, (i64, [u8; 32])>,
    buf: Vec<u8>,
    in_buf: usize,
    last: DateTime<Utc>,
    written: u64,
    rng: Rng,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
}

/// COPY text format escaping (JSON never holds raw control characters,
/// but it does hold backslashes).
fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

impl Writer {
    fn emit(
        &mut self,
        stream_id: &str,
        event_type: &str,
        data: &Value,
        metadata: &Metadata,
        at: DateTime<Utc>,
    ) -> anyhow::Result<Uuid> {
        let at = at
            .trunc_subsecs(6)
            .max(self.last + Duration::microseconds(1));
        self.last = at;
        let event_id = self.rng.uuid();
        let metadata = serde_json::to_value(metadata)?;
        let (version, prev_hash) = match self.heads.get(stream_id) {
            Some((v, h)) => (v + 1, *h),
            None => (1, GENESIS_HASH),
        };
        // The store's own chain function, as `tenure_store::append` uses.
        let hash = event_hash(
            &prev_hash,
            &EventFields {
                stream_id,
                version,
                event_id,
                event_type,
                data,
                metadata: &metadata,
                recorded_at: at,
            },
        );
        self.heads.insert(stream_id.to_owned(), (version, hash));

        let b = &mut self.buf;
        push_escaped(b, stream_id.as_bytes());
        b.push(b'\t');
        b.extend_from_slice(version.to_string().as_bytes());
        b.push(b'\t');
        b.extend_from_slice(event_id.hyphenated().to_string().as_bytes());
        b.push(b'\t');
        push_escaped(b, event_type.as_bytes());
        b.push(b'\t');
        push_escaped(b, &tenure_store::canonical::to_canonical_bytes(data));
        b.push(b'\t');
        push_escaped(b, &tenure_store::canonical::to_canonical_bytes(&metadata));
        b.push(b'\t');
        b.extend_from_slice(
            at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .as_bytes(),
        );
        b.extend_from_slice(b"\t\\\\x");
        push_hex(b, &prev_hash);
        b.extend_from_slice(b"\t\\\\x");
        push_hex(b, &hash);
        b.push(b'\n');
        self.in_buf += 1;
        self.written += 1;
        if self.in_buf >= CHUNK_EVENTS {
            self.flush()?;
        }
        Ok(event_id)
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.in_buf > 0 {
            let chunk = std::mem::take(&mut self.buf);
            self.in_buf = 0;
            self.tx
                .blocking_send(chunk)
                .map_err(|_| anyhow::anyhow!("the loader stopped"))?;
        }
        Ok(())
    }
}

fn meta(correlation: Uuid, causation: Option<Uuid>, person: Option<Uuid>) -> Metadata {
    Metadata {
        correlation_id: correlation,
        causation_id: causation,
        person_id: person,
        app: None,
        source: None,
        actor: "engine".into(),
        effective_at: None,
    }
}

fn call(method: &str, path: String, status: u16, remote_id: &str, latency: u64) -> Value {
    let error = (status >= 400)
        .then(|| format!("{method} {path} failed with HTTP {status}: Service Unavailable"));
    json!({
        "method": method,
        "path": path,
        "status": status,
        "latency_ms": latency,
        "remote_id": remote_id,
        "error": error,
        "attempt": 1,
    })
}

/// What the generator produced, for choosing query parameters.
struct Generated {
    persons: Vec<Uuid>,
    events: u64,
}

fn generate(
    n_persons: usize,
    target_events: usize,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> anyhow::Result<Generated> {
    let end = history_end();
    let start = end - Duration::days(HISTORY_DAYS);
    let mut rng = Rng(0x7e0_u64 ^ n_persons as u64);
    let ids: Vec<Uuid> = (0..n_persons).map(|_| rng.uuid()).collect();
    let mut persons: Vec<Person> = (0..n_persons)
        .map(|i| Person {
            id: ids[i],
            number: i as u32,
            given: rng.below(GIVEN.len() as u64) as usize,
            family: rng.below(FAMILY.len() as u64) as usize,
            department: rng.below(DEPARTMENTS.len() as u64) as usize,
            title: rng.below(4) as usize,
            location: rng.below(LOCATIONS.len() as u64) as usize,
            manager: (i > 0).then(|| rng.below(i.min(1000) as u64) as u32),
            status: Status::NotHired,
            accounts: [None; 10],
        })
        .collect();

    // Events per change: the person's two (record, decision) and a SCIM
    // call plus an account event per app (~4.4 apps on average).
    let per_change = 2.0 + 2.0 * 4.4;
    let base = per_change * (1.0 + 0.3 + 2.0 * 0.08);
    let per_person = target_events as f64 / n_persons.max(1) as f64;
    let moves = ((per_person - base) / per_change).max(0.0);

    let secs = |d: DateTime<Utc>| d.timestamp_micros();
    let day = 86_400_000_000i64;
    let mut schedule: Vec<(i64, u32, Kind)> = Vec::new();
    for i in 0..n_persons {
        let hire = if i < n_persons * 2 / 5 {
            secs(start) + rng.between(0, 30 * day)
        } else {
            secs(start) + rng.between(0, HISTORY_DAYS * 9 / 10 * day)
        };
        let leaves_at = if rng.chance(0.3) {
            rng.between(hire + 30 * day, secs(end))
        } else {
            secs(end)
        };
        schedule.push((hire, i as u32, Kind::Hire));
        if leaves_at < secs(end) {
            schedule.push((leaves_at, i as u32, Kind::Terminate));
        }
        if rng.chance(0.08) {
            let from = rng.between(hire + day, leaves_at);
            let to = from + rng.between(30 * day, 180 * day);
            schedule.push((from, i as u32, Kind::LeaveStart));
            schedule.push((to.min(leaves_at - day), i as u32, Kind::LeaveEnd));
        }
        let n = rng.below((2.0 * moves).round() as u64 + 1);
        for _ in 0..n {
            schedule.push((rng.between(hire + day, leaves_at), i as u32, Kind::Move));
        }
    }
    for app in 0..APPS.len() {
        for m in 0..(HISTORY_DAYS / 30) {
            schedule.push((
                secs(start) + m * 30 * day + 3 * 3_600_000_000,
                0,
                Kind::Sweep(app),
            ));
        }
        for _ in 0..(HISTORY_DAYS / 180) {
            schedule.push((
                rng.between(secs(start), secs(end)),
                0,
                Kind::CircuitOpen(app),
            ));
        }
    }
    schedule.sort_by_key(|s| s.0);

    let mut w = Writer {
        heads: HashMap::new(),
        buf: Vec::with_capacity(CHUNK_EVENTS * 700),
        in_buf: 0,
        last: start,
        written: 0,
        rng: Rng(rng.next()),
        tx,
    };
    let ms = Duration::milliseconds;
    for (at_micros, who, kind) in schedule {
        let at = Utc.timestamp_micros(at_micros).single().unwrap_or(start);
        let correlation = rng.uuid();
        match kind {
            Kind::Sweep(app) => {
                let unmanaged: Vec<Value> = (0..rng.below(3))
                    .map(|k| {
                        json!({"id": format!("x{app}{k}{}", rng.below(1000)),
                               "user_name": format!("contractor{}", rng.below(500)),
                               "active": true})
                    })
                    .collect();
                let mut m = meta(correlation, None, None);
                m.app = Some(APPS[app].into());
                m.actor = "fanout".into();
                w.emit(
                    &format!("app-{}", APPS[app]),
                    "AccountsSwept",
                    &json!({"checked": n_persons, "unmanaged_count": unmanaged.len(), "unmanaged": unmanaged}),
                    &m,
                    at,
                )?;
                continue;
            }
            Kind::CircuitOpen(app) => {
                let mut m = meta(correlation, None, None);
                m.app = Some(APPS[app].into());
                m.actor = "fanout".into();
                let stream = format!("app-{}", APPS[app]);
                w.emit(
                    &stream,
                    "CircuitOpened",
                    &json!({"last_error": "connection refused", "failures": 5}),
                    &m,
                    at,
                )?;
                let closed = at + Duration::minutes(rng.between(5, 240));
                // Closing is written when the next change after it is: keep
                // time order by writing it right away with its own instant.
                w.emit(
                    &stream,
                    "CircuitClosed",
                    &json!({}),
                    &m,
                    closed.min(at + ms(1)),
                )?;
                continue;
            }
            _ => {}
        }
        let p = &mut persons[who as usize];
        let stream = format!("person-{}", p.id);
        // Apply the change to the person, then decide what each app gets.
        let (decision, status_word, mut data): (&str, &str, Value) = match kind {
            Kind::Hire => {
                if p.status != Status::NotHired {
                    continue;
                }
                p.status = Status::Active;
                ("PersonHired", "active", json!({"since": at}))
            }
            Kind::Move => {
                if p.status != Status::Active {
                    continue;
                }
                let mut changes = serde_json::Map::new();
                if rng.chance(0.2) {
                    let from = p.department;
                    p.department = rng.below(DEPARTMENTS.len() as u64) as usize;
                    changes.insert(
                        "department".into(),
                        json!({"from": DEPARTMENTS[from].0, "to": DEPARTMENTS[p.department].0}),
                    );
                } else {
                    let from = p.title;
                    p.title = (p.title + 1).min(TITLES.len() - 1);
                    if rng.chance(0.5) {
                        p.manager = Some(rng.below(u64::from(who.max(1))) as u32);
                    }
                    changes.insert(
                        "title".into(),
                        json!({"from": TITLES[from], "to": TITLES[p.title]}),
                    );
                }
                ("AttributesChanged", "active", json!({"changes": changes}))
            }
            Kind::LeaveStart => {
                if p.status != Status::Active {
                    continue;
                }
                p.status = Status::OnLeave;
                ("LeaveStarted", "leave", json!({"since": at}))
            }
            Kind::LeaveEnd => {
                if p.status != Status::OnLeave {
                    continue;
                }
                p.status = Status::Active;
                ("LeaveEnded", "active", json!({"since": at}))
            }
            Kind::Terminate => {
                if !matches!(p.status, Status::Active | Status::OnLeave) {
                    continue;
                }
                p.status = Status::Terminated;
                (
                    "PersonTerminated",
                    "terminated",
                    json!({"since": at, "reason": "end_of_last_day"}),
                )
            }
            Kind::Sweep(_) | Kind::CircuitOpen(_) => continue,
        };
        data["attributes"] = p.attributes(&ids);
        let end_date = (decision == "PersonTerminated").then(|| at.date_naive().to_string());
        let received = w.emit(
            &stream,
            "SourceRecordReceived",
            &json!({
                "source": "workday",
                "delivery_id": format!("wd-{}", rng.next()),
                "effective": at,
                "record": p.record(&ids, status_word, end_date),
            }),
            &Metadata {
                source: Some("workday".into()),
                ..meta(correlation, None, Some(p.id))
            },
            at,
        )?;
        let decided = w.emit(
            &stream,
            decision,
            &data,
            &Metadata {
                effective_at: Some(at),
                ..meta(correlation, Some(received), Some(p.id))
            },
            at + ms(3),
        )?;

        // The fanout's jobs, one per app, a moment later.
        let user_name = p.email();
        let mut t = at + ms(rng.between(200, 2_000));
        for (app, app_name) in APPS.iter().enumerate() {
            let entitled = p.status == Status::Active && p.entitled(app);
            let remote_id = p.remote_id(app);
            let account = format!("account-{app_name}-{}", p.id);
            let m = Metadata {
                app: Some((*app_name).into()),
                actor: "fanout".into(),
                ..meta(correlation, Some(decided), Some(p.id))
            };
            let path = format!("/Users/{remote_id}");
            let (state_type, state_data, method, status) = match (p.accounts[app], entitled) {
                (None, true) => {
                    p.accounts[app] = Some(true);
                    (
                        "AccountCreated",
                        json!({"remote_id": remote_id, "user_name": user_name, "active": true}),
                        "POST",
                        201,
                    )
                }
                (Some(false), true) => {
                    p.accounts[app] = Some(true);
                    (
                        "AccountUpdated",
                        json!({"remote_id": remote_id,
                               "changes": [{"op": "replace", "path": "active", "value": true}]}),
                        "PATCH",
                        200,
                    )
                }
                (Some(true), true) if decision == "AttributesChanged" => (
                    "AccountUpdated",
                    json!({"remote_id": remote_id, "changes": [
                        {"op": "replace", "path": "title", "value": TITLES[p.title]},
                        {"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                         "value": DEPARTMENTS[p.department].0},
                    ]}),
                    "PATCH",
                    200,
                ),
                (Some(true), false) => {
                    // A leaver's deprovisioning sometimes fails once (the
                    // app answers 503) and is retried minutes later, and
                    // rarely never succeeds (an exception to report).
                    if decision == "PersonTerminated" && rng.chance(0.03) {
                        w.emit(
                            &account,
                            "ScimCallFailed",
                            &call("PATCH", path.clone(), 503, &remote_id, rng.below(900) + 100),
                            &m,
                            t,
                        )?;
                        if rng.chance(0.1) {
                            continue;
                        }
                        t += Duration::minutes(rng.between(5, 90));
                    }
                    p.accounts[app] = Some(false);
                    (
                        "AccountDeactivated",
                        json!({"remote_id": remote_id,
                               "changes": [{"op": "replace", "path": "active", "value": false}]}),
                        "PATCH",
                        200,
                    )
                }
                _ => continue,
            };
            let call_path = if method == "POST" {
                "/Users".to_owned()
            } else {
                path
            };
            w.emit(
                &account,
                "ScimCallSucceeded",
                &call(method, call_path, status, &remote_id, rng.below(400) + 20),
                &m,
                t,
            )?;
            w.emit(&account, state_type, &state_data, &m, t + ms(1))?;
            t += ms(rng.between(50, 1_500));
        }
    }
    w.flush()?;
    Ok(Generated {
        persons: ids,
        events: w.written,
    })
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Generates and `COPY`s the history; generation runs on a thread of its
/// own so that it overlaps with the database's work.
async fn load(url: &str, n_persons: usize, target: usize) -> anyhow::Result<Generated> {
    let load = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let generator = std::thread::spawn(move || generate(n_persons, target, tx));
    let mut conn = PgConnection::connect(url).await?;
    let mut chunks = 0usize;
    while let Some(chunk) = rx.recv().await {
        chunks += 1;
        if chunks.is_multiple_of(50) {
            eprintln!(
                "loaded ~{} events after {:.0} s",
                chunks * CHUNK_EVENTS,
                load.elapsed().as_secs_f64()
            );
        }
        let mut copy = conn
            .copy_in_raw(
                "COPY events (stream_id, version, event_id, event_type, data, metadata, \
                 recorded_at, prev_hash, hash) FROM STDIN",
            )
            .await?;
        copy.send(chunk).await?;
        copy.finish().await?;
    }
    let generated = generator
        .join()
        .map_err(|_| anyhow::anyhow!("the generator panicked"))??;
    let load_secs = load.elapsed().as_secs_f64();
    sqlx::query("VACUUM ANALYZE events")
        .execute(&mut conn)
        .await?;
    println!(
        "generated and loaded {} events in {load_secs:.0} s ({:.0} events/s, index upkeep included; VACUUM ANALYZE {:.0} s more)",
        generated.events,
        generated.events as f64 / load_secs,
        load.elapsed().as_secs_f64() - load_secs
    );
    Ok(generated)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n_persons = env_usize("BENCH_PERSONS", 100_000);
    let target = env_usize("BENCH_EVENTS", 10_000_000);
    // `BENCH_REUSE_DB=<name>`: measure again on a database kept by an
    // earlier run (`BENCH_KEEP_DB=1`) instead of generating a new one.
    let reuse = std::env::var("BENCH_REUSE_DB")
        .ok()
        .filter(|v| !v.is_empty());
    let (db, url) = match &reuse {
        Some(name) => {
            let admin = std::env::var("TENURE_TEST_PG_ADMIN_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
            (None, format!("{base}/{name}"))
        }
        None => {
            let db = TestDb::create().await?;
            let url = db.url();
            (Some(db), url)
        }
    };
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await?;
    let persons = match reuse {
        Some(_) => {
            // A checkpoint from the earlier run would leave nothing to sign.
            sqlx::query("DELETE FROM audit_checkpoints")
                .execute(&pool)
                .await?;
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT metadata->>'person_id' FROM events WHERE event_type = 'PersonHired' \
                 ORDER BY global_position",
            )
            .fetch_all(&pool)
            .await?;
            ids.iter().filter_map(|i| i.parse().ok()).collect()
        }
        None => {
            tenure_store::migrate(&pool).await?;
            load(&url, n_persons, target).await?.persons
        }
    };
    let size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('events'))")
            .fetch_one(&pool)
            .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    println!(
        "{total} events of {} persons; events table with indexes {size}",
        persons.len()
    );
    let generated = Generated {
        persons,
        events: u64::try_from(total).unwrap_or(0),
    };

    let end = history_end();
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut row = |name: &str, value: String, budget: &str| {
        rows.push((name.to_owned(), value, budget.to_owned()));
    };

    // Timelines of 100 random persons (warm-up run first, then measured).
    let mut rng = Rng(42);
    let sample: Vec<Uuid> = (0..100)
        .map(|_| generated.persons[rng.below(generated.persons.len() as u64) as usize])
        .collect();
    let mut ms = Vec::new();
    let mut timeline_events = 0;
    for p in &sample {
        let t = Instant::now();
        timeline_events += tenure_store::person_timeline(&pool, *p).await?.len();
        ms.push(ms_since(t));
    }
    ms.sort_by(f64::total_cmp);
    row(
        "person timeline (100 persons)",
        format!(
            "p50 {:.1} ms, p99 {:.1} ms ({} events/person avg)",
            percentile(&ms, 50.0),
            percentile(&ms, 99.0),
            timeline_events / sample.len()
        ),
        "p99 < 20 ms",
    );

    let at = end - Duration::days(107);
    let t = Instant::now();
    let access = tenure_audit::read::access_at(&pool, "mail", at, false).await?;
    row(
        "access at an instant (app mail)",
        format!("{:.0} ms ({} accounts)", ms_since(t), access.rows.len()),
        "< 500 ms",
    );
    let t = Instant::now();
    let access = tenure_audit::read::access_at(&pool, "design", at, false).await?;
    row(
        "access at an instant (app design)",
        format!("{:.0} ms ({} accounts)", ms_since(t), access.rows.len()),
        "< 500 ms",
    );

    let q_from = Utc
        .with_ymd_and_hms(2026, 4, 1, 0, 0, 0)
        .single()
        .unwrap_or(end);
    let q_to = Utc
        .with_ymd_and_hms(2026, 7, 1, 0, 0, 0)
        .single()
        .unwrap_or(end);
    let t = Instant::now();
    let report = tenure_audit::read::deprovision(&pool, q_from, q_to, 4 * 3600, end).await?;
    row(
        "time to deprovision, 2026 Q2",
        format!(
            "{:.0} ms ({} leavers, {} breaches)",
            ms_since(t),
            report.leavers,
            report.breaches().count()
        ),
        "< 2 s",
    );

    let t = Instant::now();
    let exceptions = tenure_audit::read::exceptions(&pool).await?;
    row(
        "exceptions",
        format!(
            "{:.0} ms ({} active leaver accounts, {} failed last calls)",
            ms_since(t),
            exceptions.active_leaver_accounts.len(),
            exceptions.failed_last_calls.len()
        ),
        "-",
    );

    let t = Instant::now();
    let page = search(
        &pool,
        &SearchFilter {
            app: Some("crm".into()),
            event_types: vec!["AccountDeactivated".into()],
            from: Some(q_from),
            to: Some(q_to),
            limit: 100,
            ..SearchFilter::default()
        },
    )
    .await?;
    row(
        "event search page (app, type, quarter, 100)",
        format!("{:.0} ms ({} events)", ms_since(t), page.events.len()),
        "-",
    );
    let t = Instant::now();
    let page = search(
        &pool,
        &SearchFilter {
            person_id: Some(sample[0]),
            limit: 100,
            ..SearchFilter::default()
        },
    )
    .await?;
    row(
        "event search page (person, 100)",
        format!("{:.0} ms ({} events)", ms_since(t), page.events.len()),
        "-",
    );

    let key = tenure_audit::signing::generate();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("export.jsonl");
    let t = Instant::now();
    let manifest = {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        export(
            &pool,
            &ExportFilter {
                from: q_from,
                to: q_to,
                app: None,
            },
            &key,
            &mut out,
        )
        .await?
    };
    let export_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let verification = verify_export(
        BufReader::new(std::fs::File::open(&path)?),
        &key.verifying_key(),
    )?;
    let verify_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        verification.is_ok(),
        "the export does not verify: {:?}",
        verification.problems.first()
    );
    let n = manifest.count as f64;
    row(
        "export + verify, 2026 Q2",
        format!(
            "{:.0} events/s ({} events: export {:.0}/s, verify {:.0}/s)",
            n / (export_secs + verify_secs),
            manifest.count,
            n / export_secs,
            n / verify_secs
        ),
        ">= 100,000 events/s",
    );

    let t = Instant::now();
    let checkpoint = tenure_audit::checkpoint::create_checkpoint(&pool, &key)
        .await?
        .context("a checkpoint over the loaded events")?;
    let secs = t.elapsed().as_secs_f64();
    row(
        "first checkpoint (whole log)",
        format!(
            "{:.0} events/s ({} events in {secs:.1} s)",
            checkpoint.event_count as f64 / secs,
            checkpoint.event_count
        ),
        "-",
    );

    if std::env::var("BENCH_VERIFY_STORE").is_ok_and(|v| v == "1") {
        let t = Instant::now();
        let report = tenure_store::verify(&pool).await?;
        anyhow::ensure!(
            report.is_ok(),
            "chain problems: {:?}",
            report.problems.first()
        );
        row(
            "tenure_store::verify (whole log)",
            format!(
                "{:.0} events/s ({} streams)",
                report.events as f64 / t.elapsed().as_secs_f64(),
                report.streams
            ),
            "-",
        );
    }

    println!("\n| query | measured | budget |\n|---|---|---|");
    for (name, value, budget) in rows {
        println!("| {name} | {value} | {budget} |");
    }
    pool.close().await;
    if let Some(db) = db {
        if std::env::var("BENCH_KEEP_DB").is_ok_and(|v| v == "1") {
            // For EXPLAIN ANALYZE by hand; dropped by nobody, so say its name.
            println!("\nkept database {}", db.name);
            std::mem::forget(db);
        }
    }
    Ok(())
}
