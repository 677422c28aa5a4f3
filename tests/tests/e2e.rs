//! Tenure end to end over HTTP: signed HR webhook → JetStream → engine →
//! event store → fanout → scim2-server, and the audit trail that explains it.

use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tenure_e2e::{person, wait_for, Stack};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const WAIT: Duration = Duration::from_secs(30);

async fn wait_user<F>(
    stack: &Stack,
    tenant: &str,
    user_name: &str,
    pred: F,
) -> anyhow::Result<Option<Value>>
where
    F: Fn(Option<&Value>) -> bool,
{
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let u = stack.scim_user(tenant, user_name).await?;
        if pred(u.as_ref()) {
            return Ok(u);
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("{user_name} in {tenant} is still {u:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn hire_move_and_termination_reach_the_apps_and_the_audit_explains_each_call(
) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let hire = person(
        "E-1",
        "Ana",
        "Silva",
        "Engineering",
        "active",
        "2026-01-02T09:00:00Z",
    );
    let accepted = stack.send(&hire, "hire-1").await?;
    let hire_correlation = accepted["correlation_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let wiki = wait_user(&stack, &stack.wiki_tenant, "ana.silva@example.com", |u| {
        u.is_some()
    })
    .await?;
    let wiki = wiki.expect("wiki account");
    assert_eq!(wiki["name"]["givenName"], "Ana");
    assert_eq!(wiki["name"]["familyName"], "Silva");
    assert_eq!(wiki["displayName"], "Ana Silva");
    assert_eq!(wiki["emails"][0]["value"], "ana.silva@example.com");
    assert_eq!(wiki["active"], true);
    assert_eq!(wiki["title"], "Engineer");
    assert_eq!(wiki[ENTERPRISE]["department"], "Engineering");
    assert_eq!(wiki[ENTERPRISE]["employeeNumber"], "1");
    let person_id = wiki["externalId"].as_str().unwrap_or_default().to_string();
    assert!(
        uuid::Uuid::parse_str(&person_id).is_ok(),
        "externalId is Tenure's person id: {person_id}"
    );
    let git = wait_user(&stack, &stack.git_tenant, "ana.silva", |u| u.is_some()).await?;
    assert!(
        git.is_some(),
        "Engineering gets a git account named by the e-mail's local part"
    );

    // A title change is sent as an update to the same remote account.
    let mut promoted = hire.clone();
    promoted["title"] = "Staff Engineer".into();
    promoted["effective_at"] = "2026-02-01T09:00:00Z".into();
    stack.send(&promoted, "promo-1").await?;
    let updated = wait_user(&stack, &stack.wiki_tenant, "ana.silva@example.com", |u| {
        u.is_some_and(|u| u["title"] == "Staff Engineer")
    })
    .await?;
    assert_eq!(
        updated.map(|u| u["id"].clone()),
        Some(wiki["id"].clone()),
        "updated in place, not re-created"
    );

    // Termination: wiki deactivates (keeps the account), git deletes.
    let mut leaver = promoted.clone();
    leaver["employment_status"] = "terminated".into();
    leaver["end_date"] = "2026-03-31".into();
    leaver["effective_at"] = "2026-03-31T17:00:00Z".into();
    let term = stack.send(&leaver, "term-1").await?;
    let term_correlation = term["correlation_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    wait_user(&stack, &stack.wiki_tenant, "ana.silva@example.com", |u| {
        u.is_some_and(|u| u["active"] == false)
    })
    .await?;
    wait_user(&stack, &stack.git_tenant, "ana.silva", |u| u.is_none()).await?;
    assert_eq!(stack.scim_users(&stack.wiki_tenant).await?.len(), 1);

    // The audit timeline: the record, the decision, then every SCIM call,
    // each call caused by the decision and correlated with the delivery.
    let deadline = std::time::Instant::now() + WAIT;
    let events: Vec<Value> = loop {
        let t = stack
            .api(&format!("/v1/persons/{person_id}/timeline"))
            .await?;
        let events = t["events"].as_array().cloned().unwrap_or_default();
        let done = events
            .iter()
            .filter(|e| {
                e["event_type"] == "AccountDeleted" || e["event_type"] == "AccountDeactivated"
            })
            .count();
        if done == 2 {
            break events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timeline incomplete: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let types: Vec<&str> = events
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    let pos = |t: &str| types.iter().position(|x| *x == t).unwrap_or(usize::MAX);
    assert_eq!(types[0], "SourceRecordReceived");
    assert_eq!(types[1], "PersonHired");
    assert!(pos("PersonHired") < pos("AccountCreated"));
    assert!(pos("PersonTerminated") < pos("AccountDeactivated"));
    assert!(pos("PersonTerminated") < pos("AccountDeleted"));
    let by_id: HashMap<&str, &Value> = events
        .iter()
        .filter_map(|e| Some((e["event_id"].as_str()?, e)))
        .collect();
    let index: HashMap<&str, usize> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((e["event_id"].as_str()?, i)))
        .collect();
    for (i, e) in events.iter().enumerate() {
        if let Some(cause) = e["metadata"]["causation_id"].as_str() {
            let c = by_id
                .get(cause)
                .unwrap_or_else(|| panic!("cause {cause} of {e} is not in the timeline"));
            assert!(index[cause] < i, "cause comes first");
            assert_eq!(
                c["metadata"]["correlation_id"],
                e["metadata"]["correlation_id"]
            );
        }
    }
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| e["event_type"] == "ScimCallSucceeded")
        .collect();
    assert!(calls
        .iter()
        .any(|c| c["data"]["method"] == "POST" && c["data"]["status"] == 201));
    assert!(calls.iter().any(|c| c["data"]["method"] == "PATCH"));
    assert!(calls.iter().any(|c| c["data"]["method"] == "DELETE"));
    for c in &calls {
        assert!(
            c["data"]["latency_ms"].is_u64() && c["data"]["path"].is_string(),
            "{c}"
        );
    }
    let created = events
        .iter()
        .find(|e| e["event_type"] == "AccountCreated")
        .expect("created");
    assert_eq!(
        created["metadata"]["correlation_id"],
        hire_correlation.as_str()
    );
    let deactivated = events
        .iter()
        .find(|e| e["event_type"] == "AccountDeactivated")
        .expect("deactivated");
    assert_eq!(
        deactivated["metadata"]["correlation_id"],
        term_correlation.as_str()
    );
    assert_eq!(deactivated["data"]["remote_id"], wiki["id"]);

    let verify = stack.api("/v1/audit/verify").await?;
    assert_eq!(
        verify["problems"].as_array().map(Vec::len),
        Some(0),
        "{verify}"
    );
    Ok(())
}

#[tokio::test]
async fn the_same_webhook_twice_gives_one_account_and_no_duplicate_events() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let hire = person(
        "E-2",
        "Bo",
        "Berg",
        "Engineering",
        "active",
        "2026-01-02T09:00:00Z",
    );
    let first = stack.send(&hire, "dup-1").await?;
    let second = stack.send(&hire, "dup-1").await?;
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    wait_user(&stack, &stack.wiki_tenant, "bo.berg@example.com", |u| {
        u.is_some()
    })
    .await?;
    wait_user(&stack, &stack.git_tenant, "bo.berg", |u| u.is_some()).await?;

    // A redelivery that slipped past JetStream's window (new message id,
    // same delivery) is caught by the engine's inbox.
    let bus = tenure_bus::Bus::connect(&stack.nats.url(), Duration::from_secs(60)).await?;
    let envelope = tenure_bus::IngestEnvelope {
        source: "generic".into(),
        delivery_id: "dup-1".into(),
        received_at: chrono::Utc::now(),
        correlation_id: uuid::Uuid::new_v4(),
        record: serde_json::from_value(hire.clone())?,
    };
    let stored = bus
        .publish(
            &tenure_bus::subjects::ingest("generic"),
            "replayed-after-window",
            &[],
            serde_json::to_vec(&envelope)?.into(),
        )
        .await?;
    assert!(!stored.duplicate);
    // The engine has consumed it once every message is acknowledged.
    wait_for(WAIT, || async {
        let mut c = bus
            .js
            .get_stream(tenure_bus::INGEST_STREAM)
            .await?
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("engine")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let info = c.info().await?;
        Ok(info.num_ack_pending == 0
            && info.num_pending == 0
            && info.delivered.stream_sequence >= 2)
    })
    .await?;
    assert_eq!(stack.scim_users(&stack.wiki_tenant).await?.len(), 1);
    assert_eq!(stack.scim_users(&stack.git_tenant).await?.len(), 1);
    assert_eq!(
        stack
            .psql_count("SELECT count(*) FROM events WHERE event_type = 'SourceRecordReceived'")
            .await?,
        1
    );
    assert_eq!(
        stack
            .psql_count("SELECT count(*) FROM events WHERE event_type = 'PersonHired'")
            .await?,
        1
    );
    assert_eq!(
        stack
            .psql_count("SELECT count(*) FROM events WHERE event_type = 'AccountCreated'")
            .await?,
        2
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_signature_changes_nothing_downstream_and_is_recorded_without_its_body(
) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let forged = person(
        "E-3",
        "Mallory",
        "Mask",
        "Engineering",
        "active",
        "2026-01-02T09:00:00Z",
    );
    let (status, body) = stack
        .post_signed(&serde_json::to_vec(&forged)?, "forged-1", "not-the-secret")
        .await?;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_signature");

    // A real record afterwards proves the pipeline was live the whole time.
    stack
        .send(
            &person(
                "E-4",
                "Real",
                "Person",
                "Sales",
                "active",
                "2026-01-02T09:00:00Z",
            ),
            "ok-1",
        )
        .await?;
    wait_user(&stack, &stack.wiki_tenant, "real.person@example.com", |u| {
        u.is_some()
    })
    .await?;
    let users = stack.scim_users(&stack.wiki_tenant).await?;
    assert_eq!(users.len(), 1, "only the genuine record reached the app");
    assert!(stack.scim_users(&stack.git_tenant).await?.is_empty());
    assert_eq!(stack.psql_count("SELECT count(*) FROM persons").await?, 1);
    assert_eq!(
        stack
            .psql_count("SELECT count(*) FROM events WHERE data::text LIKE '%Mallory%'")
            .await?,
        0
    );

    // Refused before authentication: recorded apart from the quarantine
    // (which keeps payloads for replay), as metadata with the body's hash.
    let out = stack.tenure(&["quarantine", "list"]).output()?;
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(listing.contains("quarantine is empty"), "{listing}");
    let out = stack.tenure(&["quarantine", "rejected"]).output()?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let size = format!("body {} bytes sha256:", serde_json::to_vec(&forged)?.len());
    assert!(
        listing.contains("#1")
            && listing.contains("401")
            && listing.contains("invalid_signature")
            && listing.contains(&size),
        "{listing}"
    );
    Ok(())
}

#[tokio::test]
async fn fanout_killed_mid_run_converges_without_duplicate_accounts() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    const N: usize = 40;
    for i in 0..N {
        let p = person(
            &format!("E-{}", 100 + i),
            "Kim",
            &format!("Number{i}"),
            "Engineering",
            "active",
            "2026-01-02T09:00:00Z",
        );
        stack.send(&p, &format!("bulk-{i}")).await?;
    }
    // Kill the fanout with SIGKILL while it is part-way through the work.
    wait_for(WAIT, || async {
        Ok(!stack.scim_users(&stack.wiki_tenant).await?.is_empty())
    })
    .await?;
    stack.kill_fanout()?;
    let at_kill = stack.scim_users(&stack.wiki_tenant).await?.len();
    assert!(
        at_kill < N,
        "the kill happened mid-run ({at_kill} of {N} done)"
    );

    stack.start_fanout()?;
    wait_for(Duration::from_secs(60), || async {
        Ok(stack.scim_users(&stack.wiki_tenant).await?.len() >= N
            && stack.scim_users(&stack.git_tenant).await?.len() >= N)
    })
    .await?;
    // Let redelivered jobs of the killed process run out, then count.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for tenant in [&stack.wiki_tenant, &stack.git_tenant] {
        let users = stack.scim_users(tenant).await?;
        assert_eq!(users.len(), N, "exactly one account per person in {tenant}");
        let external: HashSet<&str> = users
            .iter()
            .filter_map(|u| u["externalId"].as_str())
            .collect();
        assert_eq!(external.len(), N, "no person has two accounts");
    }
    assert_eq!(
        stack
            .psql_count("SELECT count(*) FROM accounts WHERE remote_id IS NOT NULL")
            .await?,
        2 * N as i64
    );
    Ok(())
}

#[tokio::test]
async fn reconcile_repairs_accounts_changed_behind_tenures_back() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack
        .send(
            &person(
                "E-5",
                "Dana",
                "Drift",
                "Engineering",
                "active",
                "2026-01-02T09:00:00Z",
            ),
            "h-5",
        )
        .await?;
    stack
        .send(
            &person(
                "E-6",
                "Eli",
                "Edit",
                "Engineering",
                "active",
                "2026-01-02T09:00:00Z",
            ),
            "h-6",
        )
        .await?;
    let dana = wait_user(&stack, &stack.wiki_tenant, "dana.drift@example.com", |u| {
        u.is_some()
    })
    .await?
    .expect("dana");
    let eli = wait_user(&stack, &stack.wiki_tenant, "eli.edit@example.com", |u| {
        u.is_some()
    })
    .await?
    .expect("eli");

    // An admin deletes Dana's account and deactivates Eli's directly in the app.
    let http = reqwest::Client::new();
    let base = stack.scim.tenant_url(&stack.wiki_tenant);
    let id = |u: &Value| u["id"].as_str().unwrap_or_default().to_string();
    http.delete(format!("{base}/Users/{}", id(&dana)))
        .bearer_auth(&stack.scim.token)
        .send()
        .await?
        .error_for_status()?;
    http.patch(format!("{base}/Users/{}", id(&eli)))
        .bearer_auth(&stack.scim.token)
        .header("content-type", "application/scim+json")
        .body(r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}"#)
        .send()
        .await?
        .error_for_status()?;

    // Tenure's own record still says all is well; a live plan sees the drift
    // and says what a reconcile would send, changing nothing.
    let offline = stack.tenure(&["plan", "--app", "wiki"]).output()?;
    let offline = String::from_utf8_lossy(&offline.stdout).to_string();
    assert!(
        offline.contains("0 to create, 0 to update, 0 to delete, 2 in sync"),
        "{offline}"
    );
    let live = stack
        .tenure(&["plan", "--app", "wiki", "--live"])
        .output()?;
    assert!(
        live.status.success(),
        "{}",
        String::from_utf8_lossy(&live.stderr)
    );
    let live = String::from_utf8_lossy(&live.stdout).to_string();
    // The exact requests, bodies included.
    assert!(live.contains("POST /Users\n"), "{live}");
    assert!(
        live.contains("\"userName\": \"dana.drift@example.com\""),
        "{live}"
    );
    let patch = format!("PATCH /Users/{}\n", id(&eli));
    let after_patch = live.split(&patch).nth(1).unwrap_or_default();
    assert!(
        after_patch.contains("\"path\": \"active\"") && after_patch.contains("\"value\": true"),
        "{live}"
    );
    assert!(
        live.contains("1 to create, 1 to update, 0 to delete, 0 in sync"),
        "{live}"
    );
    assert_eq!(
        stack.scim_users(&stack.wiki_tenant).await?.len(),
        1,
        "planning changed nothing"
    );

    let out = stack.tenure(&["reconcile", "--app", "wiki"]).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 jobs queued"));
    let dana2 = wait_user(&stack, &stack.wiki_tenant, "dana.drift@example.com", |u| {
        u.is_some()
    })
    .await?
    .expect("dana back");
    assert_ne!(
        id(&dana2),
        id(&dana),
        "re-created after the remote id stopped resolving"
    );
    wait_user(&stack, &stack.wiki_tenant, "eli.edit@example.com", |u| {
        u.is_some_and(|u| u["active"] == true)
    })
    .await?;
    assert_eq!(stack.scim_users(&stack.wiki_tenant).await?.len(), 2);
    // git was not asked and still holds exactly its two accounts.
    assert_eq!(stack.scim_users(&stack.git_tenant).await?.len(), 2);

    let unknown = stack.tenure(&["reconcile", "--app", "nope"]).output()?;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no app named"));
    Ok(())
}

#[tokio::test]
async fn existing_app_accounts_are_linked_when_entitled_and_never_touched_otherwise(
) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let core = "urn:ietf:params:scim:schemas:core:2.0:User";
    // Accounts an admin made by hand before Tenure, without externalId.
    let ivy = stack
        .create_in_app(
            &stack.git_tenant,
            serde_json::json!({"schemas": [core], "userName": "ivy.ito", "active": true}),
        )
        .await?;
    let sam = stack
        .create_in_app(
            &stack.git_tenant,
            serde_json::json!({"schemas": [core], "userName": "sam.sales", "active": true}),
        )
        .await?;

    // Ivy is in Engineering: her existing git account is adopted, not duplicated.
    stack
        .send(
            &person(
                "E-7",
                "Ivy",
                "Ito",
                "Engineering",
                "active",
                "2026-01-02T09:00:00Z",
            ),
            "h-7",
        )
        .await?;
    let linked = wait_user(&stack, &stack.git_tenant, "ivy.ito", |u| {
        u.is_some_and(|u| u["externalId"].is_string())
    })
    .await?;
    assert_eq!(linked.map(|u| u["id"].clone()), Some(ivy["id"].clone()));

    // Sam is in Sales, outside git's scope (whose policy deletes): the
    // unrelated "sam.sales" account that shares the name must survive.
    stack
        .send(
            &person(
                "E-8",
                "Sam",
                "Sales",
                "Sales",
                "active",
                "2026-01-02T09:00:00Z",
            ),
            "h-8",
        )
        .await?;
    wait_user(&stack, &stack.wiki_tenant, "sam.sales@example.com", |u| {
        u.is_some()
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let users = stack.scim_users(&stack.git_tenant).await?;
    assert_eq!(users.len(), 2, "{users:?}");
    let still = users
        .iter()
        .find(|u| u["userName"] == "sam.sales")
        .expect("sam.sales kept");
    assert_eq!(still["id"], sam["id"]);
    assert_eq!(still["active"], true);
    assert!(still.get("externalId").is_none());
    let linked_events = stack
        .psql_count("SELECT count(*) FROM events WHERE event_type = 'AccountAdopted'")
        .await?;
    assert_eq!(linked_events, 1);
    // `tenure drift` lists the adoption; Sam's account stays unmanaged.
    let drift = stack.tenure(&["drift", "--app", "git"]).output()?;
    let drift = String::from_utf8_lossy(&drift.stdout).to_string();
    let adopted: Vec<&str> = drift.lines().filter(|l| l.starts_with("adopted")).collect();
    assert_eq!(adopted.len(), 1, "{drift}");
    assert!(adopted[0].contains("ivy.ito"), "{drift}");
    assert!(
        drift
            .lines()
            .any(|l| l.starts_with("unmanaged") && l.contains("sam.sales")),
        "{drift}"
    );
    Ok(())
}

#[tokio::test]
async fn a_mass_termination_is_held_for_approval_while_single_leavers_pass() -> anyhow::Result<()> {
    let mut stack = Stack::with_options(tenure_e2e::Options {
        // One job at a time makes the count exact; three deprovisions an hour pass.
        wiki: "concurrency = 1\nmass_change = { max_count = 3, min_count = 100 }".into(),
        ..tenure_e2e::Options::default()
    })
    .await?;
    stack.start_core().await?;
    stack.start_fanout()?;
    const N: usize = 6;
    for i in 0..N {
        stack
            .send(
                &person(
                    &format!("E-{}", 200 + i),
                    "Max",
                    &format!("Mass{i}"),
                    "Sales",
                    "active",
                    "2026-01-02T09:00:00Z",
                ),
                &format!("h-{i}"),
            )
            .await?;
    }
    wait_for(WAIT, || async {
        Ok(stack.scim_users(&stack.wiki_tenant).await?.len() == N)
    })
    .await?;
    // A bad import terminates everyone at once.
    for i in 0..N {
        stack
            .send(
                &person(
                    &format!("E-{}", 200 + i),
                    "Max",
                    &format!("Mass{i}"),
                    "Sales",
                    "terminated",
                    "2026-02-02T09:00:00Z",
                ),
                &format!("t-{i}"),
            )
            .await?;
    }
    let inactive = |users: &[Value]| users.iter().filter(|u| u["active"] == false).count();
    wait_for(WAIT, || async {
        Ok(stack
            .psql_count("SELECT count(*) FROM events WHERE event_type = 'DeprovisionStaged'")
            .await?
            == 3)
    })
    .await?;
    let users = stack.scim_users(&stack.wiki_tenant).await?;
    assert_eq!(inactive(&users), 3, "three went through, three are held");

    let listing =
        String::from_utf8_lossy(&stack.tenure(&["staged", "--app", "wiki"]).output()?.stdout)
            .to_string();
    assert_eq!(
        listing.lines().filter(|l| l.contains("held")).count(),
        3,
        "{listing}"
    );
    assert!(listing.contains("more needs approval"), "{listing}");

    let out = stack
        .tenure(&["approve", "--app", "wiki", "--all"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 held change(s) released"));
    wait_for(WAIT, || async {
        Ok(inactive(&stack.scim_users(&stack.wiki_tenant).await?) == N)
    })
    .await?;
    assert_eq!(
        stack
            .psql_count("SELECT count(*) FROM staged_changes")
            .await?,
        0
    );
    Ok(())
}

#[tokio::test]
async fn a_newly_added_app_is_provisioned_for_existing_persons_on_reconcile() -> anyhow::Result<()>
{
    let mut stack = Stack::start().await?;
    stack
        .send(
            &person(
                "E-31",
                "Ola",
                "Old",
                "Engineering",
                "active",
                "2026-01-02T09:00:00Z",
            ),
            "h-31",
        )
        .await?;
    stack
        .send(
            &person(
                "E-32",
                "Pia",
                "Prior",
                "Sales",
                "active",
                "2026-01-02T09:00:00Z",
            ),
            "h-32",
        )
        .await?;
    wait_for(WAIT, || async {
        Ok(stack.scim_users(&stack.wiki_tenant).await?.len() == 2)
    })
    .await?;

    // An operator adds a chat app for Engineering and restarts the fanout.
    let chat_tenant = format!("chat{}", &stack.wiki_tenant[4..]);
    let config = stack.dir.path().join("tenure.toml");
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(&format!(
        "\n[[app]]\nname = \"chat\"\nbase_url = \"{}\"\ntoken = {{ env = \"TENURE_APP_TOKEN\" }}\nrule = 'person.department == \"Engineering\"'\n",
        stack.scim.tenant_url(&chat_tenant)
    ));
    std::fs::write(&config, text)?;
    stack.kill_fanout()?;
    stack.start_fanout()?;

    let out = stack.tenure(&["reconcile", "--app", "chat"]).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 person(s) changed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let chat = stack
        .wait_user(&chat_tenant, "ola.old@example.com", |u| u.is_some())
        .await?;
    assert_eq!(
        chat.map(|u| u["active"].clone()),
        Some(serde_json::json!(true))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let users = stack.scim_users(&chat_tenant).await?;
    assert_eq!(
        users.len(),
        1,
        "only Engineering is in the chat app's rule: {users:?}"
    );
    Ok(())
}

#[tokio::test]
async fn app_profiles_shape_the_requests_an_app_gets() -> anyhow::Result<()> {
    // The wiki behaves like Nextcloud (no externalId stored), git like
    // GitLab (no discovery, PATCH only).
    let mut stack = Stack::with_options(tenure_e2e::Options {
        wiki: "profile = \"nextcloud\"".into(),
        git: "profile = \"gitlab\"".into(),
        ..tenure_e2e::Options::default()
    })
    .await?;
    stack.start_core().await?;
    stack.start_fanout()?;
    let hire = person(
        "E-41",
        "Noa",
        "Next",
        "Engineering",
        "active",
        "2026-01-02T09:00:00Z",
    );
    stack.send(&hire, "h-41").await?;
    let wiki = stack
        .wait_user(&stack.wiki_tenant, "noa.next@example.com", |u| u.is_some())
        .await?
        .expect("wiki account");
    assert!(
        wiki.get("externalId").is_none(),
        "no externalId is sent to a Nextcloud-like app: {wiki}"
    );
    stack
        .wait_user(&stack.git_tenant, "noa.next", |u| u.is_some())
        .await?;

    let mut promoted = hire.clone();
    promoted["title"] = "Lead".into();
    promoted["effective_at"] = "2026-02-01T09:00:00Z".into();
    stack.send(&promoted, "p-41").await?;
    let updated = stack
        .wait_user(&stack.wiki_tenant, "noa.next@example.com", |u| {
            u.is_some_and(|u| u["title"] == "Lead")
        })
        .await?;
    assert_eq!(updated.map(|u| u["id"].clone()), Some(wiki["id"].clone()));

    let lookups = stack
        .psql_count("SELECT count(*) FROM events WHERE event_type = 'ScimCallSucceeded' AND metadata->>'app' = 'wiki' AND data->>'path' LIKE '%externalId%'")
        .await?;
    assert_eq!(lookups, 0, "never filtered on externalId");
    let puts = stack
        .psql_count("SELECT count(*) FROM events WHERE event_type LIKE 'ScimCall%' AND metadata->>'app' = 'git' AND data->>'method' = 'PUT'")
        .await?;
    assert_eq!(puts, 0, "GitLab never gets a PUT");
    Ok(())
}

#[tokio::test]
async fn a_sweep_reports_unmanaged_accounts_and_deactivates_them_on_request() -> anyhow::Result<()>
{
    let mut stack = Stack::with_options(tenure_e2e::Options {
        wiki: "unmanaged_keep = [\"svc-bot\"]".into(),
        ..tenure_e2e::Options::default()
    })
    .await?;
    stack.start_core().await?;
    stack.start_fanout()?;
    stack
        .send(
            &person(
                "E-51",
                "Una",
                "Managed",
                "Sales",
                "active",
                "2026-01-02T09:00:00Z",
            ),
            "h-51",
        )
        .await?;
    stack
        .wait_user(&stack.wiki_tenant, "una.managed@example.com", |u| {
            u.is_some()
        })
        .await?;
    let core = "urn:ietf:params:scim:schemas:core:2.0:User";
    let rogue = stack
        .create_in_app(
            &stack.wiki_tenant,
            serde_json::json!({"schemas": [core], "userName": "old-contractor", "active": true}),
        )
        .await?;

    stack
        .create_in_app(
            &stack.wiki_tenant,
            serde_json::json!({"schemas": [core], "userName": "svc-bot", "active": true}),
        )
        .await?;

    let out = stack.tenure(&["drift", "--app", "wiki"]).output()?;
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("old-contractor")
            && report
                .contains("3 accounts listed, 1 managed by Tenure, 2 unmanaged, 0 deactivated"),
        "{report}"
    );
    assert_eq!(
        stack
            .scim_user(&stack.wiki_tenant, "old-contractor")
            .await?
            .map(|u| u["active"].clone()),
        Some(serde_json::json!(true)),
        "reporting changes nothing"
    );

    let out = stack
        .tenure(&["drift", "--app", "wiki", "--deactivate"])
        .output()?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 deactivated"));
    let after = stack
        .scim_user(&stack.wiki_tenant, "old-contractor")
        .await?
        .expect("kept, not deleted");
    assert_eq!(after["id"], rogue["id"]);
    assert_eq!(after["active"], false);
    let kept = stack
        .scim_user(&stack.wiki_tenant, "svc-bot")
        .await?
        .expect("service account");
    assert_eq!(kept["active"], true, "unmanaged_keep is never deactivated");
    assert_eq!(
        stack
            .scim_user(&stack.wiki_tenant, "una.managed@example.com")
            .await?
            .map(|u| u["active"].clone()),
        Some(serde_json::json!(true))
    );
    let swept = stack.psql_count("SELECT count(*) FROM events WHERE stream_id = 'app-wiki' AND event_type = 'AccountsSwept'").await?;
    assert_eq!(swept, 2);
    Ok(())
}

#[tokio::test]
async fn per_app_mapping_names_accounts_by_template_and_links_the_manager() -> anyhow::Result<()> {
    let mut stack = Stack::with_options(tenure_e2e::Options {
        wiki: concat!(
            "[app.mapping]\n",
            "user_name = \"{given_name}.{family_name}\"\n",
            "cost_center = \"CC-{cost_center}\"\n",
        )
        .into(),
        ..tenure_e2e::Options::default()
    })
    .await?;
    stack.start_core().await?;
    stack.start_fanout()?;

    let boss = person(
        "E-300",
        "Mia",
        "Boss",
        "Sales",
        "active",
        "2026-01-02T09:00:00Z",
    );
    stack.send(&boss, "boss-1").await?;
    let boss_account = wait_user(&stack, &stack.wiki_tenant, "Mia.Boss", |u| u.is_some())
        .await?
        .expect("the manager's wiki account");
    assert_eq!(boss_account["userName"], "Mia.Boss", "mapping.user_name");
    assert!(boss_account[ENTERPRISE].get("manager").is_none());
    let boss_id = boss_account["id"].as_str().unwrap_or_default().to_string();
    assert!(!boss_id.is_empty());
    // The account is on record once its reconcile commits.
    let deadline = std::time::Instant::now() + WAIT;
    while stack
        .psql_count(&format!(
            "SELECT count(*) FROM accounts WHERE app = 'wiki' AND remote_id = '{boss_id}'"
        ))
        .await?
        == 0
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no account row for {boss_id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut report = person(
        "E-301",
        "Rex",
        "Report",
        "Sales",
        "active",
        "2026-01-02T09:00:00Z",
    );
    report["manager_id"] = "E-300".into();
    report["cost_center"] = "4711".into();
    report["organization"] = "Acme".into();
    report["division"] = "EMEA".into();
    stack.send(&report, "report-1").await?;
    let account = wait_user(&stack, &stack.wiki_tenant, "Rex.Report", |u| {
        u.is_some_and(|u| u[ENTERPRISE]["manager"]["value"].is_string())
    })
    .await?
    .expect("the report's wiki account");
    assert_eq!(account["userName"], "Rex.Report");
    assert_eq!(account[ENTERPRISE]["manager"]["value"], boss_id.as_str());
    assert_eq!(account[ENTERPRISE]["costCenter"], "CC-4711");
    assert_eq!(account[ENTERPRISE]["organization"], "Acme");
    assert_eq!(account[ENTERPRISE]["division"], "EMEA");
    assert_eq!(account[ENTERPRISE]["employeeNumber"], "301");
    assert_eq!(account[ENTERPRISE]["department"], "Sales");
    assert_eq!(account["emails"][0]["value"], "rex.report@example.com");
    Ok(())
}

#[tokio::test]
async fn a_report_hired_before_the_manager_gets_the_manager_link_once_the_manager_has_an_account(
) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut report = person(
        "E-401",
        "Rae",
        "Early",
        "Sales",
        "active",
        "2026-01-02T09:00:00Z",
    );
    report["manager_id"] = "E-400".into();
    stack.send(&report, "report-1").await?;
    let first = stack
        .wait_user(&stack.wiki_tenant, "rae.early@example.com", |u| u.is_some())
        .await?
        .expect("report's account");
    assert!(
        first[ENTERPRISE].get("manager").is_none(),
        "no manager account yet: {first}"
    );

    stack
        .send(
            &person(
                "E-400",
                "Max",
                "Later",
                "Sales",
                "active",
                "2026-01-02T09:00:00Z",
            ),
            "boss-1",
        )
        .await?;
    let boss = stack
        .wait_user(&stack.wiki_tenant, "max.later@example.com", |u| u.is_some())
        .await?
        .expect("manager's account");
    let linked = stack
        .wait_user(&stack.wiki_tenant, "rae.early@example.com", |u| {
            u.is_some_and(|u| u[ENTERPRISE]["manager"]["value"] == boss["id"])
        })
        .await?;
    assert_eq!(
        linked.map(|u| u["id"].clone()),
        Some(first["id"].clone()),
        "updated in place"
    );
    Ok(())
}

async fn groups_in(
    stack: &Stack,
    tenant: &str,
) -> anyhow::Result<HashMap<String, HashSet<String>>> {
    let r = reqwest::Client::new()
        .get(format!(
            "{}/Groups?count=1000",
            stack.scim.tenant_url(tenant)
        ))
        .bearer_auth(&stack.scim.token)
        .send()
        .await?
        .error_for_status()?;
    let v: Value = r.json().await?;
    let mut out = HashMap::new();
    for g in v["Resources"].as_array().cloned().unwrap_or_default() {
        let members = g["members"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m["value"].as_str().map(str::to_string))
            .collect();
        out.insert(
            g["displayName"].as_str().unwrap_or_default().to_string(),
            members,
        );
    }
    Ok(out)
}

#[tokio::test]
async fn groups_follow_departments_and_rules_and_empty_groups_are_deleted() -> anyhow::Result<()> {
    let mut stack = Stack::with_options(tenure_e2e::Options {
        wiki: "[[app.group]]\nname = \"dept-{department}\"\n[[app.group]]\nname = \"sre\"\nrule = 'person.title == \"SRE\"'\n".into(),
        ..tenure_e2e::Options::default()
    })
    .await?;
    stack.start_core().await?;
    stack.start_fanout()?;
    let mut ana = person(
        "E-501",
        "Ana",
        "Group",
        "Engineering",
        "active",
        "2026-01-02T09:00:00Z",
    );
    ana["title"] = "SRE".into();
    let bo = person(
        "E-502",
        "Bo",
        "Group",
        "Engineering",
        "active",
        "2026-01-02T09:00:00Z",
    );
    let cy = person(
        "E-503",
        "Cy",
        "Group",
        "Sales",
        "active",
        "2026-01-02T09:00:00Z",
    );
    for (r, d) in [(&ana, "a1"), (&bo, "b1"), (&cy, "c1")] {
        stack.send(r, d).await?;
    }
    let id = |u: Option<Value>| {
        u.and_then(|u| u["id"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let a = id(stack
        .wait_user(&stack.wiki_tenant, "ana.group@example.com", |u| u.is_some())
        .await?);
    let b = id(stack
        .wait_user(&stack.wiki_tenant, "bo.group@example.com", |u| u.is_some())
        .await?);
    let c = id(stack
        .wait_user(&stack.wiki_tenant, "cy.group@example.com", |u| u.is_some())
        .await?);
    let set = |ids: &[&String]| {
        ids.iter()
            .map(|s| s.to_string())
            .collect::<HashSet<String>>()
    };

    let expect = |groups: HashMap<String, HashSet<String>>, want: &[(&str, HashSet<String>)]| {
        groups.len() == want.len() && want.iter().all(|(n, m)| groups.get(*n) == Some(m))
    };
    let wanted = [
        ("dept-Engineering", set(&[&a, &b])),
        ("dept-Sales", set(&[&c])),
        ("sre", set(&[&a])),
    ];
    if wait_for(WAIT, || async {
        Ok(expect(
            groups_in(&stack, &stack.wiki_tenant).await?,
            &wanted,
        ))
    })
    .await
    .is_err()
    {
        anyhow::bail!(
            "groups: {:?}\nfanout: {}",
            groups_in(&stack, &stack.wiki_tenant).await?,
            stack
                .log("fanout-2.log")
                .lines()
                .filter(|l| l.contains("group") || l.contains("WARN"))
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    // Bo moves to Sales, Cy leaves: memberships follow.
    let mut bo2 = bo.clone();
    bo2["department"] = "Sales".into();
    bo2["effective_at"] = "2026-02-01T09:00:00Z".into();
    stack.send(&bo2, "b2").await?;
    let mut cy2 = cy.clone();
    cy2["employment_status"] = "terminated".into();
    cy2["effective_at"] = "2026-02-01T09:00:00Z".into();
    stack.send(&cy2, "c2").await?;
    let wanted = [
        ("dept-Engineering", set(&[&a])),
        ("dept-Sales", set(&[&b])),
        ("sre", set(&[&a])),
    ];
    if wait_for(WAIT, || async {
        Ok(expect(
            groups_in(&stack, &stack.wiki_tenant).await?,
            &wanted,
        ))
    })
    .await
    .is_err()
    {
        anyhow::bail!(
            "groups: {:?}\nfanout: {}",
            groups_in(&stack, &stack.wiki_tenant).await?,
            stack
                .log("fanout-2.log")
                .lines()
                .filter(|l| l.contains("group") || l.contains("WARN"))
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    // Sales is renamed Revenue in HR: the same group, renamed in place.
    let sales_id = {
        let r = reqwest::Client::new()
            .get(format!(
                "{}/Groups",
                stack.scim.tenant_url(&stack.wiki_tenant)
            ))
            .query(&[("filter", "displayName eq \"dept-Sales\"")])
            .bearer_auth(&stack.scim.token)
            .send()
            .await?
            .error_for_status()?;
        let v: Value = r.json().await?;
        v["Resources"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(!sales_id.is_empty());
    let mut bo3 = bo2.clone();
    bo3["department"] = "Revenue".into();
    bo3["effective_at"] = "2026-02-15T09:00:00Z".into();
    stack.send(&bo3, "b3").await?;
    let wanted = [
        ("dept-Engineering", set(&[&a])),
        ("dept-Revenue", set(&[&b])),
        ("sre", set(&[&a])),
    ];
    if wait_for(WAIT, || async {
        Ok(expect(
            groups_in(&stack, &stack.wiki_tenant).await?,
            &wanted,
        ))
    })
    .await
    .is_err()
    {
        anyhow::bail!(
            "groups after the rename: {:?}\nfanout log: {}",
            groups_in(&stack, &stack.wiki_tenant).await?,
            stack
                .log("fanout-2.log")
                .lines()
                .filter(|l| l.contains("group"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let r = reqwest::Client::new()
        .get(format!(
            "{}/Groups/{sales_id}",
            stack.scim.tenant_url(&stack.wiki_tenant)
        ))
        .bearer_auth(&stack.scim.token)
        .send()
        .await?
        .error_for_status()?;
    let renamed: Value = r.json().await?;
    assert_eq!(
        renamed["displayName"], "dept-Revenue",
        "renamed in place, same id"
    );

    // Ana leaves: the groups she alone was in are deleted.
    let mut ana2 = ana.clone();
    ana2["employment_status"] = "terminated".into();
    ana2["effective_at"] = "2026-03-01T09:00:00Z".into();
    stack.send(&ana2, "a2").await?;
    let wanted = [("dept-Revenue", set(&[&b]))];
    if wait_for(WAIT, || async {
        Ok(expect(
            groups_in(&stack, &stack.wiki_tenant).await?,
            &wanted,
        ))
    })
    .await
    .is_err()
    {
        anyhow::bail!(
            "groups: {:?}\nfanout: {}",
            groups_in(&stack, &stack.wiki_tenant).await?,
            stack
                .log("fanout-2.log")
                .lines()
                .filter(|l| l.contains("group") || l.contains("WARN"))
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let synced = stack.psql_count("SELECT count(*) FROM events WHERE stream_id = 'app-wiki' AND event_type = 'GroupsSynced'").await?;
    assert!(
        synced >= 3,
        "every sync that changed something is recorded ({synced})"
    );
    Ok(())
}

#[tokio::test]
async fn an_app_that_needs_pre_created_groups_gets_members_only_once_the_group_exists(
) -> anyhow::Result<()> {
    let mut stack = Stack::with_options(tenure_e2e::Options {
        // Nextcloud creates groups itself; an app that cannot is described by
        // a profile that may not create them.
        wiki: "profile = { extends = \"nextcloud\", name = \"no-group-create\", create_groups = false }\n[[app.group]]\nname = \"staff\"\n".into(),
        ..tenure_e2e::Options::default()
    })
    .await?;
    stack.start_core().await?;
    stack.start_fanout()?;
    stack
        .send(
            &person(
                "E-601",
                "Pre",
                "Made",
                "Sales",
                "active",
                "2026-01-02T09:00:00Z",
            ),
            "p1",
        )
        .await?;
    let user = stack
        .wait_user(&stack.wiki_tenant, "pre.made@example.com", |u| u.is_some())
        .await?
        .expect("account");

    let out = stack.tenure(&["groups", "--app", "wiki"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("\"staff\" must be created in the app first") && text.contains("0 created"),
        "{text}"
    );
    assert!(
        groups_in(&stack, &stack.wiki_tenant).await?.is_empty(),
        "Tenure did not create it"
    );

    // An admin creates the group in the app; Tenure then keeps its members.
    reqwest::Client::new()
        .post(format!(
            "{}/Groups",
            stack.scim.tenant_url(&stack.wiki_tenant)
        ))
        .bearer_auth(&stack.scim.token)
        .header("content-type", "application/scim+json")
        .body(
            r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"staff"}"#,
        )
        .send()
        .await?
        .error_for_status()?;
    let out = stack.tenure(&["groups", "--app", "wiki"]).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let groups = groups_in(&stack, &stack.wiki_tenant).await?;
    let want: HashSet<String> = [user["id"].as_str().unwrap_or_default().to_string()]
        .into_iter()
        .collect();
    assert_eq!(groups.get("staff"), Some(&want));
    Ok(())
}
