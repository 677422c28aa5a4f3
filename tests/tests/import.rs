//! Operator bulk and safety commands end to end: `tenure import csv` through
//! JetStream, the engine and the fanout to a real SCIM app, and
//! `tenure quarantine replay` of a webhook refused for a missing secret.

use std::time::Duration;
use tenure_e2e::{wait_for, Options, Stack};

const WAIT: Duration = Duration::from_secs(30);
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const INGEST: &str = "TENURE_INGEST";

const HIRES: &str = "\
person_id,given_name,family_name,work_email,department,title,employment_status,start_date
I-1,Ana,Silva,ana.silva@example.com,Engineering,Engineer,active,2025-01-06
I-2,Bo,Berg,bo.berg@example.com,Engineering,SRE,active,2025-02-03
I-3,Chen,Wu,chen.wu@example.com,Sales,Account Executive,active,2025-03-03
I-4,Dara,Okafor,dara.okafor@example.com,Support,Agent,active,2025-04-07
I-5,Eli,Novak,eli.novak@example.com,Finance,Analyst,active,2025-05-05
";

async fn started(extra: &str) -> anyhow::Result<Stack> {
    let mut stack = Stack::with_options(Options {
        extra: extra.into(),
        ..Options::default()
    })
    .await?;
    stack.start_core().await?;
    stack.start_fanout()?;
    Ok(stack)
}

fn write(stack: &Stack, name: &str, text: &str) -> anyhow::Result<String> {
    let path = stack.dir.path().join(name);
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

/// Waits until the engine has recorded `n` deliveries in its inbox.
async fn wait_inbox(stack: &Stack, n: i64) -> anyhow::Result<()> {
    wait_for(WAIT, || async move {
        Ok(stack.psql_count("SELECT count(*) FROM inbox").await? == n)
    })
    .await
}

#[tokio::test]
async fn csv_import_reports_then_publishes_idempotently_and_refuses_bad_files() -> anyhow::Result<()>
{
    let stack = started("[[source]]\nname = \"hr_csv\"\nkind = \"csv\"\n").await?;
    let hires = write(&stack, "hires.csv", HIRES)?;

    // An unknown source is refused, naming the configured ones.
    let (ok, _, err) = stack.run_tenure(&["import", "csv", &hires, "--source", "nope"], &[])?;
    assert!(!ok);
    assert!(err.contains("configured sources: hr_csv"), "{err}");

    // Dry run: five new persons reported, nothing published.
    let before = stack.stream_last_sequence(INGEST).await?;
    let (ok, out, err) = stack.run_tenure(
        &["import", "csv", &hires, "--source", "hr_csv", "--dry-run"],
        &[],
    )?;
    assert!(ok, "{out}\n{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("new ")).count(),
        5,
        "{out}"
    );
    assert!(out.contains("5 new, 0 changed, 0 unchanged"), "{out}");
    assert!(out.contains("dry run: nothing was published"), "{out}");
    assert_eq!(stack.stream_last_sequence(INGEST).await?, before);

    // The import: five deliveries, five accounts in the wiki app.
    let (ok, out, err) = stack.run_tenure(&["import", "csv", &hires, "--source", "hr_csv"], &[])?;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("5 published, 0 duplicates"), "{out}");
    assert_eq!(stack.stream_last_sequence(INGEST).await?, before + 5);
    wait_for(WAIT, || async {
        Ok(stack.scim_users(&stack.wiki_tenant).await?.len() == 5)
    })
    .await?;
    let bo = stack
        .wait_user(&stack.wiki_tenant, "bo.berg@example.com", |u| u.is_some())
        .await?
        .expect("bo in the wiki");
    assert_eq!(bo[ENTERPRISE]["department"], "Engineering");
    assert_eq!(bo["active"], true);
    wait_inbox(&stack, 5).await?;
    // One import, one correlation id in the audit trail.
    let correlation = out
        .lines()
        .find_map(|l| l.strip_prefix("import "))
        .and_then(|l| l.split(':').next())
        .expect("the summary names the import's correlation id");
    let hired = stack
        .psql_count(&format!(
            "SELECT count(DISTINCT stream_id) FROM events WHERE metadata->>'correlation_id' = '{correlation}'"
        ))
        .await?;
    assert!(
        hired >= 5,
        "{hired} streams carry correlation {correlation}"
    );
    let events = stack.psql_count("SELECT count(*) FROM events").await?;

    // Re-import of the same file: all unchanged, all duplicates, no events.
    let (ok, out, err) = stack.run_tenure(&["import", "csv", &hires, "--source", "hr_csv"], &[])?;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("0 new, 0 changed, 5 unchanged"), "{out}");
    assert!(out.contains("0 published, 5 duplicates"), "{out}");
    assert_eq!(stack.stream_last_sequence(INGEST).await?, before + 5);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stack.psql_count("SELECT count(*) FROM events").await?,
        events
    );
    assert_eq!(stack.psql_count("SELECT count(*) FROM inbox").await?, 5);

    // Bo moves to Sales (and his row moves to the end of the file): exactly
    // that change is reported and published as one new delivery.
    let mut lines: Vec<&str> = HIRES.lines().collect();
    let bo_row = lines.remove(2).replace("Engineering", "Sales");
    let mut moved = lines.join("\n");
    moved.push('\n');
    moved.push_str(&bo_row);
    moved.push('\n');
    let moved = write(&stack, "moved.csv", &moved)?;
    let (ok, out, err) = stack.run_tenure(&["import", "csv", &moved, "--source", "hr_csv"], &[])?;
    assert!(ok, "{out}\n{err}");
    let changed: Vec<&str> = out.lines().filter(|l| l.starts_with("changed")).collect();
    assert_eq!(changed.len(), 1, "{out}");
    assert!(changed[0].contains("I-2"), "{out}");
    assert!(
        changed[0].ends_with("department: \"Engineering\" -> \"Sales\""),
        "{out}"
    );
    assert!(out.contains("0 new, 1 changed, 4 unchanged"), "{out}");
    assert!(out.contains("1 published, 4 duplicates"), "{out}");
    assert_eq!(stack.stream_last_sequence(INGEST).await?, before + 6);
    stack
        .wait_user(&stack.wiki_tenant, "bo.berg@example.com", |u| {
            u.is_some_and(|u| u[ENTERPRISE]["department"] == "Sales")
        })
        .await?;
    wait_inbox(&stack, 6).await?;

    // A file with bad rows: every error listed, non-zero exit, nothing
    // published, not even the good rows.
    let bad = write(
        &stack,
        "bad.csv",
        "person_id,given_name,family_name,work_email,department,title,employment_status,start_date\n\
         I-6,Fay,Lee,fay.lee@example.com,Sales,Lead,active,2025-06-02\n\
         I-7,Gil,Roth,not-an-email,Sales,,active,2025-06-02\n\
         I-8,Hana,Sato,hana.sato@example.com,Sales,,retired,2025-06-02\n",
    )?;
    let (ok, out, err) = stack.run_tenure(&["import", "csv", &bad, "--source", "hr_csv"], &[])?;
    assert!(!ok, "{out}\n{err}");
    assert!(
        err.contains("line 3, column \"work_email\" (work_email)"),
        "{err}"
    );
    assert!(
        err.contains("line 4, column \"employment_status\""),
        "{err}"
    );
    assert!(err.contains("retired"), "{err}");
    assert!(err.contains("2 row error(s)"), "{err}");
    assert!(err.contains("nothing was published"), "{err}");
    assert_eq!(stack.stream_last_sequence(INGEST).await?, before + 6);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.psql_count("SELECT count(*) FROM persons").await?, 5);
    Ok(())
}

const BAMBOO_KEY: &str = "bamboo-test-key";

#[tokio::test]
async fn a_webhook_quarantined_for_a_missing_secret_is_replayed_once_it_is_set(
) -> anyhow::Result<()> {
    // The running ingest has no TEST_BAMBOO_KEY: the source has no secret.
    let stack = started(
        "[[source]]\nname = \"bamboo\"\nkind = \"bamboohr\"\nsecret = { env = \"TEST_BAMBOO_KEY\" }\n\
         [[source]]\nname = \"personio\"\nkind = \"personio\"\nsecret = { env = \"TEST_PERSONIO_TOKEN\" }\n",
    )
    .await?;
    // A BambooHR field webhook that carries every mapped field: records,
    // no fetch-back.
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/bamboohr/fields_hire.json"
    ))?;
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = tenure_sources::signature::sign_bamboohr(BAMBOO_KEY.as_bytes(), &body, &ts);
    let (status, answer) = stack
        .post_raw(
            "/v1/sources/bamboo/webhook",
            &[
                ("content-type", "application/json".into()),
                ("x-bamboohr-timestamp", ts),
                ("x-bamboohr-signature", sig),
            ],
            &body,
        )
        .await?;
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("source_not_configured"), "{answer}");

    let bus = tenure_bus::Bus::connect(&stack.nats.url(), Duration::from_secs(120)).await?;
    let entry = bus
        .list_quarantine(20)
        .await?
        .into_iter()
        .find(|q| q.source == "bamboo")
        .expect("the webhook is quarantined");
    let seq = entry.sequence.to_string();

    // Still no secret: the replay says why and publishes nothing.
    let before = stack.stream_last_sequence(INGEST).await?;
    let (ok, out, err) = stack.run_tenure(&["quarantine", "replay", &seq], &[])?;
    assert!(!ok, "{out}\n{err}");
    assert!(err.contains("no webhook secret"), "{err}");
    assert_eq!(stack.stream_last_sequence(INGEST).await?, before);

    // A wrong secret does not let it in either: the signature is checked.
    let (ok, _, err) = stack.run_tenure(
        &["quarantine", "replay", &seq],
        &[("TEST_BAMBOO_KEY", "not-the-key")],
    )?;
    assert!(!ok);
    assert!(err.contains("invalid_signature"), "{err}");

    // With the secret configured, the replay publishes the record and the
    // person reaches the app.
    let (ok, out, err) = stack.run_tenure(
        &["quarantine", "replay", &seq],
        &[("TEST_BAMBOO_KEY", BAMBOO_KEY)],
    )?;
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("replayed from source bamboo: accepted"),
        "{out}"
    );
    assert!(out.contains("tenure.ingest.bamboo"), "{out}");
    assert!(out.contains("person 1042"), "{out}");
    assert_eq!(stack.stream_last_sequence(INGEST).await?, before + 1);
    let user = stack
        .wait_user(&stack.wiki_tenant, "cabbott@acme.example", |u| u.is_some())
        .await?
        .expect("replayed person in the wiki");
    assert_eq!(user[ENTERPRISE]["department"], "Product");

    // The entry stays as an audit record; replaying again is a duplicate.
    assert!(bus.quarantined(entry.sequence).await?.is_some());
    let (ok, out, err) = stack.run_tenure(
        &["quarantine", "replay", &seq],
        &[("TEST_BAMBOO_KEY", BAMBOO_KEY)],
    )?;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("duplicate"), "{out}");
    assert_eq!(stack.stream_last_sequence(INGEST).await?, before + 1);

    // A bearer-token source's payload cannot be authenticated again (the
    // token is never kept): refused without --force.
    let body = br#"{"company_id":1,"event_name":"person.created","occurred_at":"2026-02-16T10:00:00Z","payload":{"person_id":77}}"#;
    let (status, answer) = stack
        .post_raw(
            "/v1/sources/personio/webhook",
            &[
                ("content-type", "application/json".into()),
                ("x-tenure-token", "whatever".into()),
            ],
            body,
        )
        .await?;
    assert_eq!(status, 422, "{answer}");
    let personio = bus
        .list_quarantine(20)
        .await?
        .into_iter()
        .find(|q| q.source == "personio")
        .expect("personio webhook quarantined");
    assert!(
        !personio.headers.iter().any(|(n, _)| n == "x-tenure-token"),
        "the token is not kept"
    );
    let (ok, _, err) = stack.run_tenure(
        &["quarantine", "replay", &personio.sequence.to_string()],
        &[("TEST_PERSONIO_TOKEN", "whatever")],
    )?;
    assert!(!ok);
    assert!(err.contains("--force"), "{err}");
    Ok(())
}
