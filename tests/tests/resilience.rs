//! An app that misbehaves for one person, for everyone, or under load must
//! not stall everyone else: the circuit breaker judges the app's health,
//! a stuck person is dead-lettered and left alone by reconciles, the
//! mass-change guard holds under concurrency, a Retry-After pauses the
//! whole app, and one process stays inside its connection budget.

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tenure_e2e::{person, psql, tenure_bin, wait_for, Options, Stack, SECRET, TEST_FANOUT};
use tenure_testkit::fault::Fault;
use tenure_testkit::{free_port, NatsServer, ScimServer, TestDb};

async fn count(stack: &Stack, sql: &str) -> anyhow::Result<i64> {
    stack.psql_count(sql).await
}

async fn events(stack: &Stack, kind: &str) -> anyhow::Result<i64> {
    count(
        stack,
        &format!("SELECT count(*) FROM events WHERE event_type = '{kind}'"),
    )
    .await
}

fn hire(i: usize, given: &str, family: &str) -> Value {
    person(
        &format!("E-{i}"),
        given,
        family,
        "Sales",
        "active",
        "2026-01-02T09:00:00Z",
    )
}

/// Hires `n` persons, employee numbers from `first` and family names
/// `{family}{i}`, and waits until the wiki holds an account for each.
async fn hire_all(
    stack: &Stack,
    first: usize,
    n: usize,
    given: &str,
    family: &str,
) -> anyhow::Result<()> {
    for i in 0..n {
        stack
            .send(
                &hire(first + i, given, &format!("{family}{i}")),
                &format!("h-{i}"),
            )
            .await?;
    }
    wait_for(Duration::from_secs(60), || async {
        Ok(stack.scim_users(&stack.wiki_tenant).await?.len() == n)
    })
    .await
}

/// Every log of the stack's processes, for a failure message.
fn logs(stack: &Stack) -> String {
    let mut out = String::new();
    if let Ok(dir) = std::fs::read_dir(stack.dir.path()) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".log") {
                out.push_str(&format!("--- {name}\n{}\n", stack.log(&name)));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_the_app_keeps_refusing_is_dead_lettered_without_pausing_the_app_and_left_out_of_reconciles(
) -> anyhow::Result<()> {
    let mut stack = Stack::with_options(Options {
        // The strictest breaker there is: two failing persons would open it.
        fanout: format!("{TEST_FANOUT}max_attempts = 2\nmax_deliver = 3\nbreaker_failures = 2\n"),
        // A periodic reconcile every two seconds. The app is said to answer
        // a taken userName with 409 (so creates go first, without a
        // userName look-up), one create per request, as in the report.
        wiki: "reconcile_cron = \"*/2 * * * * *\"\nbulk = \"off\"\nprofile = { extends = \"generic\", unique_user_name = true }\n".into(),
        wiki_faults: vec!["duplicate-500"],
        ..Options::default()
    })
    .await?;
    // Someone created the account by hand: same userName, no externalId.
    // This server cannot say 409, so every create of the person is a 500.
    let stuck_name = "sam.stuck@example.com";
    stack
        .create_in_app(
            &stack.wiki_tenant,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": stuck_name,
                "active": true,
            }),
        )
        .await?;
    stack.start_core().await?;
    stack.start_fanout()?;
    stack.send(&hire(1, "Sam", "Stuck"), "hire-stuck").await?;

    // While the stuck person fails again and again, everyone else's change
    // reaches the app promptly.
    for i in 0..5 {
        let family = format!("Fine{i}");
        let started = Instant::now();
        stack
            .send(&hire(10 + i, "Fay", &family), &format!("hire-{i}"))
            .await?;
        let name = format!("fay.fine{i}@example.com");
        wait_for(Duration::from_secs(10), || async {
            Ok(stack.scim_user(&stack.wiki_tenant, &name).await?.is_some())
        })
        .await?;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name} took {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_for(Duration::from_secs(60), || async {
        Ok(events(&stack, "JobDeadLettered").await? == 1)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&stack)))?;
    assert_eq!(
        events(&stack, "CircuitOpened").await?,
        0,
        "one person's failures opened the circuit"
    );
    let listing =
        String::from_utf8_lossy(&stack.tenure(&["dlq", "list"]).output()?.stdout).to_string();
    assert!(
        listing.contains("exhausted")
            && listing.contains("after 3 deliveries")
            && listing.contains("HTTP 500"),
        "the dead letter carries the server's answer: {listing}"
    );
    assert_eq!(
        count(&stack, "SELECT count(*) FROM open_dead_letters").await?,
        1
    );

    // Periodic reconciles keep running for everyone else, and leave the
    // dead-lettered person alone.
    let stuck_id = stack.psql_text(
        "SELECT metadata->>'person_id' FROM events WHERE event_type = 'JobDeadLettered'",
    )?;
    assert_eq!(stuck_id.len(), 36, "{stuck_id:?}");
    let server = stack.server(&stack.wiki_tenant);
    server.clear_requests()?;
    let reconciled_others = || async {
        Ok(server
            .requests()?
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/Users/"))
            .count()
            >= 10)
    };
    wait_for(Duration::from_secs(20), reconciled_others).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let about_stuck: Vec<_> = server
        .requests()?
        .into_iter()
        .filter(|r| {
            r.query.contains(&stuck_id)
                || r.body.to_string().contains(stuck_name)
                || r.body.to_string().contains(&stuck_id)
        })
        .collect();
    assert!(
        about_stuck.is_empty(),
        "a reconcile retried the dead-lettered person: {about_stuck:?}"
    );

    // The operator redrives it: it is tried again, and dead-lettered again
    // (a new letter, not mistaken for the first one).
    let out = stack.tenure(&["dlq", "redrive", "--all"]).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(Duration::from_secs(60), || async {
        Ok(events(&stack, "JobDeadLettered").await? == 2)
    })
    .await?;
    assert_eq!(events(&stack, "DeadLetterRedriven").await?, 1);
    assert!(server
        .requests()?
        .iter()
        .any(|r| r.method == "POST" && r.body.to_string().contains(stuck_name)));
    let listing =
        String::from_utf8_lossy(&stack.tenure(&["dlq", "list"]).output()?.stdout).to_string();
    assert_eq!(listing.lines().count(), 1, "{listing}");

    // The person changes (a new name fixes the clash): the change runs at
    // once and clears the dead letter.
    let mut renamed = hire(1, "Sam", "Stuck");
    renamed["work_email"] = "sam.stuck2@example.com".into();
    stack.send(&renamed, "rename-stuck").await?;
    wait_for(Duration::from_secs(20), || async {
        Ok(stack
            .scim_user(&stack.wiki_tenant, "sam.stuck2@example.com")
            .await?
            .is_some())
    })
    .await?;
    assert_eq!(events(&stack, "DeadLetterCleared").await?, 1);
    assert_eq!(
        count(&stack, "SELECT count(*) FROM open_dead_letters").await?,
        0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_leavers_at_once_pass_the_guard_only_up_to_its_limit() -> anyhow::Result<()> {
    const ACCOUNTS: usize = 28;
    let mut stack = Stack::with_options(Options {
        // 7 of 28 (25 %) pass; the 8th deprovision in the hour needs approval.
        wiki: "concurrency = 16\nmass_change = { max_share = 0.25, min_count = 5, max_count = 50 }"
            .into(),
        fanout: format!("{TEST_FANOUT}max_deliver = 50\n"),
        proxy_wiki: true,
        ..Options::default()
    })
    .await?;
    let proxy = stack.wiki_proxy()?;
    stack.start_core().await?;
    stack.start_fanout()?;
    hire_all(&stack, 100, ACCOUNTS, "Lea", "Ver").await?;
    wait_for(Duration::from_secs(30), || async {
        Ok(
            count(&stack, "SELECT count(*) FROM accounts WHERE app = 'wiki'").await?
                == ACCOUNTS as i64,
        )
    })
    .await?;
    // A slow app keeps every job in flight at once: all of them check the
    // guard before any deprovision is committed.
    proxy.set_default(Fault::Delay(Duration::from_millis(400)));
    let leavers = (0..10).map(|i| {
        let stack = &stack;
        async move {
            let mut p = hire(100 + i, "Lea", &format!("Ver{i}"));
            p["employment_status"] = "terminated".into();
            p["effective_at"] = "2026-02-02T09:00:00Z".into();
            stack.send(&p, &format!("t-{i}")).await
        }
    });
    for r in futures::future::join_all(leavers).await {
        r?;
    }
    wait_for(Duration::from_secs(60), || async {
        Ok(events(&stack, "DeprovisionStaged").await?
            + events(&stack, "AccountDeactivated").await?
            == 10)
    })
    .await?;
    // Let any straggler land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let inactive = stack
        .scim_users(&stack.wiki_tenant)
        .await?
        .iter()
        .filter(|u| u["active"] == false)
        .count();
    assert_eq!(inactive, 7, "exactly the limit is deactivated");
    assert_eq!(
        count(&stack, "SELECT count(*) FROM staged_changes").await?,
        3
    );

    // A reconcile of everyone sends nothing for the seven already inactive,
    // so it holds none of them.
    proxy.set_default(Fault::Pass);
    let out = stack.tenure(&["reconcile", "--app", "wiki"]).output()?;
    assert!(out.status.success());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        count(&stack, "SELECT count(*) FROM staged_changes").await?,
        3
    );
    assert_eq!(events(&stack, "DeprovisionStaged").await?, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_pauses_the_whole_app_not_just_one_call() -> anyhow::Result<()> {
    const N: usize = 12;
    let mut stack = Stack::with_options(Options {
        // A server's pause is honoured up to max_delay_ms.
        fanout: "ack_wait_secs = 5\nconcurrency = 4\nbase_delay_ms = 50\nmax_delay_ms = 5000\n"
            .into(),
        wiki: "concurrency = 4".into(),
        proxy_wiki: true,
        ..Options::default()
    })
    .await?;
    let proxy = stack.wiki_proxy()?;
    stack.start_core().await?;
    stack.start_fanout()?;
    hire_all(&stack, 300, N, "Rae", "Pause").await?;
    // Every request is slowed a little so several are always in flight;
    // the first one after this gets 429 with Retry-After: 2.
    proxy.set_default(Fault::Delay(Duration::from_millis(50)));
    proxy.push([Fault::Status(429, Some(2))]);
    let changes = (0..N).map(|i| {
        let stack = &stack;
        async move {
            let mut p = hire(300 + i, "Rae", &format!("Pause{i}"));
            p["title"] = "Paused Engineer".into();
            p["effective_at"] = "2026-03-02T09:00:00Z".into();
            stack.send(&p, &format!("c-{i}")).await
        }
    });
    for r in futures::future::join_all(changes).await {
        r?;
    }
    let answered_429 = || proxy.seen().iter().position(|(_, _, s)| *s == Some(429));
    wait_for(Duration::from_secs(30), || async {
        Ok(answered_429().is_some())
    })
    .await
    .map_err(|e| anyhow::anyhow!("no 429 answered: {e}: {:?}", proxy.seen()))?;
    let at = proxy.seen().len();
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let during = proxy.seen().len() - at;
    eprintln!("requests inside the Retry-After window: {during}");
    // Only requests already on their way when the 429 arrived may land.
    assert!(
        during <= 4,
        "{during} requests reached the app inside its Retry-After window"
    );
    wait_for(Duration::from_secs(30), || async {
        Ok(stack
            .scim_users(&stack.wiki_tenant)
            .await?
            .iter()
            .filter(|u| u["title"] == "Paused Engineer")
            .count()
            == N)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&stack)))?;
    Ok(())
}

/// `tenure` with `config` against a fresh database and NATS, as `up`.
struct Up {
    _nats: NatsServer,
    db: TestDb,
    dir: tempfile::TempDir,
    child: Option<Child>,
    ingest_port: u16,
    app_token: String,
}

impl Up {
    async fn new(config_body: &str) -> anyhow::Result<(Self, u16)> {
        let nats = NatsServer::start()?;
        let db = TestDb::create().await?;
        let dir = tempfile::tempdir()?;
        let (ingest_port, api_port) = (free_port(), free_port());
        std::fs::write(
            dir.path().join("tenure.toml"),
            format!(
                "[ingest]\nlisten = \"127.0.0.1:{ingest_port}\"\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n{config_body}"
            ),
        )?;
        Ok((
            Self {
                _nats: nats,
                db,
                dir,
                child: None,
                ingest_port,
                app_token: "unused".into(),
            },
            api_port,
        ))
    }

    fn command(&self, args: &[&str], nats: &str) -> anyhow::Result<Command> {
        let mut c = Command::new(tenure_bin()?);
        c.args(args)
            .env("TENURE_CONFIG", self.dir.path().join("tenure.toml"))
            .env("TENURE_DATABASE_URL", self.db.url())
            .env("TENURE_NATS_URL", nats)
            .env("TENURE_GENERIC_SECRET", SECRET)
            .env("TENURE_APP_TOKEN", &self.app_token)
            .env("TENURE_LOG", "info,sqlx=warn")
            .stdin(Stdio::null());
        Ok(c)
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join("up.log"))?;
        let child = self
            .command(&["up"], &self._nats.url())?
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let url = format!("http://127.0.0.1:{}/healthz", self.ingest_port);
        wait_for(Duration::from_secs(60), || async {
            Ok(reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success()))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}: {}", self.log()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Tenure's connections to the test database. The test's own `psql`
    /// calls are left out, including one that just ended: its backend can
    /// still be listed for a moment after the client has gone.
    async fn connections(&self) -> anyhow::Result<i64> {
        self.count(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name <> 'psql'",
        )
        .await
    }

    async fn count(&self, sql: &str) -> anyhow::Result<i64> {
        Ok(psql(&self.db.name, sql)?.parse()?)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_without_any_app_keeps_running_and_says_so_once() -> anyhow::Result<()> {
    let (mut up, _) = Up::new("").await?;
    up.start().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(up.running(), "tenure up stopped:\n{}", up.log());
    let log = up.log();
    assert_eq!(log.matches("no [[app]] is configured").count(), 1, "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_apps_with_default_settings_stay_within_the_connection_budget() -> anyhow::Result<()>
{
    // The documented default of `[database] max_connections`.
    const BUDGET: i64 = 20;
    let scim = ScimServer::start()?;
    // A slow app keeps every worker busy, so each holds a connection.
    let proxy = tenure_testkit::fault::FaultProxy::start(scim.port).await?;
    proxy.set_default(Fault::Delay(Duration::from_millis(150)));
    let apps: String = ["wiki", "git", "chat"]
        .iter()
        .map(|name| {
            format!(
                "[[app]]\nname = \"{name}\"\nbase_url = \"{}\"\ntoken = {{ env = \"TENURE_APP_TOKEN\" }}\n",
                proxy.url(&format!("/{name}{}/v2", free_port()))
            )
        })
        .collect();
    let (mut up, _) = Up::new(&apps).await?;
    up.app_token = scim.token.clone();
    up.start().await?;
    // Load: hires for all three apps at once, so every worker is busy.
    let http = reqwest::Client::new();
    let mut peak = up.connections().await?;
    for i in 0..60 {
        let body = serde_json::to_vec(&hire(500 + i, "Con", &format!("Nect{i}")))?;
        let ts = chrono::Utc::now().timestamp();
        let r = http
            .post(format!(
                "http://127.0.0.1:{}/v1/sources/generic/records",
                up.ingest_port
            ))
            .header("content-type", "application/json")
            .header("x-tenure-delivery", format!("h-{i}"))
            .header("x-tenure-timestamp", ts.to_string())
            .header(
                "x-tenure-signature",
                tenure_sources::signature::sign_generic(SECRET.as_bytes(), ts, &body),
            )
            .body(body)
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 202);
        peak = peak.max(up.connections().await?);
    }
    // Sampled until every hire has an account in each of the three apps.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        peak = peak.max(up.connections().await?);
        if up.count("SELECT count(*) FROM accounts").await? == 180 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "not provisioned:\n{}", up.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("peak connections: {peak}");
    assert!(up.running(), "{}", up.log());
    assert!(
        peak <= BUDGET,
        "{peak} connections to the database, budget {BUDGET}"
    );
    assert!(peak >= 3, "the process did use the database ({peak})");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_postgresql_cannot_take_stops_start_up_with_a_clear_message() -> anyhow::Result<()>
{
    let (up, _) = Up::new("[database]\nmax_connections = 5000\n").await?;
    let out = up.command(&["up"], &up._nats.url())?.output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        stderr.contains("PostgreSQL has room for")
            && stderr.contains("[database] max_connections = 5000")
            && stderr.contains("raise max_connections in postgresql.conf"),
        "{stderr}"
    );
    // Too small for the services of one process is as clear.
    let (up, _) = Up::new("[database]\nmax_connections = 2\n").await?;
    let out = up.command(&["up"], &up._nats.url())?.output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        stderr.contains("[database] max_connections = 2 is too small"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_max_deliver_reaches_jetstream_so_the_last_delivery_still_dead_letters(
) -> anyhow::Result<()> {
    let mut stack = Stack::with_options(Options {
        fanout: format!("{TEST_FANOUT}max_attempts = 1\nmax_deliver = 2\n"),
        proxy_wiki: true,
        ..Options::default()
    })
    .await?;
    let proxy = stack.wiki_proxy()?;
    stack.start_core().await?;
    // The first start creates the app's consumer with max_deliver = 2.
    stack.start_fanout()?;
    wait_for(Duration::from_secs(30), || async {
        Ok(!proxy.seen().is_empty())
    })
    .await?;
    stack.kill_fanout()?;
    let path = stack.dir.path().join("tenure.toml");
    let config = std::fs::read_to_string(&path)?.replace("max_deliver = 2", "max_deliver = 4");
    std::fs::write(&path, config)?;
    stack.start_fanout()?;
    // The app fails this person's every request.
    proxy.set_default(Fault::Status(503, None));
    stack.send(&hire(700, "Max", "Deliver"), "hire-700").await?;
    wait_for(Duration::from_secs(60), || async {
        Ok(events(&stack, "JobDeadLettered").await? == 1)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&stack)))?;
    let listing =
        String::from_utf8_lossy(&stack.tenure(&["dlq", "list"]).output()?.stdout).to_string();
    assert!(listing.contains("after 4 deliveries"), "{listing}");
    Ok(())
}
