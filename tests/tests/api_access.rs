//! The operator API of a real `tenure` process: named tokens with scopes
//! (hashes made by `tenure api token-hash`), refusals, the audit trail of
//! operator actions, and an audit answer over HTTP from a real hire.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use tenure_e2e::{person, tenure_bin, wait_for, Options, Stack, API_TOKEN};

const AUDITOR_TOKEN: &str = "auditor-0f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// `tenure api token-hash`, the token on stdin as an operator would pipe it.
fn token_hash(token: &str) -> anyhow::Result<String> {
    let mut child = Command::new(tenure_bin()?)
        .args(["api", "token-hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(format!("{token}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "token-hash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_scoped_every_action_is_recorded_and_auditors_get_the_review(
) -> anyhow::Result<()> {
    let hash = token_hash(AUDITOR_TOKEN)?;
    assert!(hash.starts_with("sha256:") && hash.len() == 71, "{hash}");
    let short = Command::new(tenure_bin()?)
        .args(["api", "token-hash"])
        .stdin(Stdio::null())
        .output()?;
    assert!(!short.status.success(), "an empty token has no hash");

    let mut stack = Stack::with_options(Options {
        extra: format!(
            "[[api.token]]\nname = \"auditor\"\nhash = \"{hash}\"\nscopes = [\"audit:read\"]\n"
        ),
        ..Options::default()
    })
    .await?;
    stack.start_core().await?;
    stack.start_fanout()?;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", stack.api_port);

    let none = http.get(url("/v1/persons")).send().await?;
    assert_eq!(none.status(), 401);
    let wrong = http
        .get(url("/v1/persons"))
        .bearer_auth("not-a-token")
        .send()
        .await?;
    assert_eq!(wrong.status(), 401);
    let read = http
        .get(url("/v1/persons"))
        .bearer_auth(AUDITOR_TOKEN)
        .send()
        .await?;
    assert_eq!(read.status(), 200);
    let refused = http
        .post(url("/v1/apps/wiki/approve"))
        .bearer_auth(AUDITOR_TOKEN)
        .json(&serde_json::json!({"all": true}))
        .send()
        .await?;
    assert_eq!(refused.status(), 403);
    let body: serde_json::Value = refused.json().await?;
    assert_eq!(body["error"], "forbidden", "{body}");
    let approved = http
        .post(url("/v1/apps/wiki/approve"))
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({"all": true}))
        .send()
        .await?;
    assert_eq!(approved.status(), 200);
    assert_eq!(
        stack
            .psql_count(
                "SELECT count(*) FROM events WHERE stream_id = 'operator' \
                 AND event_type = 'OperatorActionTaken' AND metadata->>'actor' = 'api:e2e' \
                 AND data->>'action' = 'approve'"
            )
            .await?,
        1,
        "only the allowed approval is recorded, under the token's name"
    );

    stack
        .send(
            &person(
                "E-1",
                "Ana",
                "Silva",
                "Engineering",
                "active",
                "2026-01-01T00:00:00Z",
            ),
            "hire-ana",
        )
        .await?;
    stack
        .wait_user(&stack.wiki_tenant, "ana.silva@example.com", |u| u.is_some())
        .await?;
    let review = || {
        http.get(url("/v1/audit/review?app=wiki"))
            .header("accept", "text/csv")
            .bearer_auth(AUDITOR_TOKEN)
            .send()
    };
    // The account event lands just after the user appears in the app.
    wait_for(Duration::from_secs(30), || async {
        Ok(review()
            .await?
            .error_for_status()?
            .text()
            .await?
            .lines()
            .count()
            == 2)
    })
    .await?;
    let csv = review().await?.error_for_status()?.text().await?;
    let row = csv.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("wiki,ana.silva@example.com,") && row.contains(",Engineering,Engineer,"),
        "{csv}"
    );
    // The CLI prints the same review, from the same code.
    let cli = stack
        .tenure(&["audit", "review", "--app", "wiki", "--format", "csv"])
        .output()?;
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert_eq!(String::from_utf8(cli.stdout)?, csv);
    Ok(())
}
