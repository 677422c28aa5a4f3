//! An independent SCIM client against this server: scim2-tester (PyPI,
//! built on scim2-client and scim2-models) runs its discovery, CRUD,
//! attribute-selection and PATCH checks for every resource type and
//! attribute the server publishes.
//!
//! The Python environment is the one the repository's scripts create
//! (`.venv`, see scripts/lib.sh): found through `TENURE_SCIM2_SERVER` (the
//! path of its `scim2-server`) or `/work/main/.venv/bin`, else the
//! workspace's `.venv/bin`. Without it the test is skipped, except when `CI`
//! is set, where it fails.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;

fn venv_bin() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("TENURE_SCIM2_SERVER") {
        if let Some(dir) = PathBuf::from(p).parent() {
            candidates.push(dir.to_path_buf());
        }
    }
    candidates.push(PathBuf::from("/work/main/.venv/bin"));
    candidates.push(tenure_testkit::workspace_root().join(".venv/bin"));
    candidates.into_iter().find(|d| d.join("python").exists())
}

#[tokio::test]
async fn scim2_tester_checks_pass() -> anyhow::Result<()> {
    let Some(bin) = venv_bin() else {
        anyhow::ensure!(
            std::env::var_os("CI").is_none(),
            "no Python venv with scim2-tester (set TENURE_SCIM2_SERVER)"
        );
        eprintln!("skipped: no Python venv with scim2-tester");
        return Ok(());
    };
    let python = bin.join("python");
    let probe = tokio::process::Command::new(&python)
        .args(["-c", "import scim2_tester, httpx2"])
        .output()
        .await?;
    if !probe.status.success() {
        anyhow::ensure!(
            std::env::var_os("CI").is_none(),
            "{} lacks scim2-tester[httpx2]: {}",
            python.display(),
            String::from_utf8_lossy(&probe.stderr)
        );
        eprintln!(
            "skipped: scim2-tester[httpx2] is not installed in {}",
            bin.display()
        );
        return Ok(());
    }

    let s = common::start().await?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scim2_check.py");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        tokio::process::Command::new(&python)
            .arg(&script)
            .arg(&s.base)
            .arg(&s.token)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    anyhow::ensure!(
        out.status.success(),
        "scim2-tester failed to run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    let status = |r: &Value| r["status"].as_str().unwrap_or_default().to_string();
    let mut failed = Vec::new();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for r in &results {
        *counts.entry(status(r)).or_default() += 1;
        if status(r) == "SKIPPED" {
            eprintln!(
                "  skipped [{}] {}: {}",
                r["resource_type"].as_str().unwrap_or("-"),
                r["title"].as_str().unwrap_or("?"),
                r["reason"].as_str().unwrap_or_default()
            );
        }
        if matches!(status(r).as_str(), "ERROR" | "CRITICAL") {
            failed.push(format!(
                "{} [{}] {}: {}",
                status(r),
                r["resource_type"].as_str().unwrap_or("-"),
                r["title"].as_str().unwrap_or("?"),
                r["reason"].as_str().unwrap_or_default()
            ));
        }
    }
    eprintln!("scim2-tester: {counts:?}");
    for f in &failed {
        eprintln!("  {f}");
    }
    let passed = counts.get("SUCCESS").copied().unwrap_or_default();
    // Discovery, CRUD and PATCH checks for User and Group, per attribute.
    anyhow::ensure!(passed >= 100, "only {passed} checks succeeded");
    let titles: Vec<&str> = results
        .iter()
        .filter(|r| status(r) == "SUCCESS")
        .filter_map(|r| r["title"].as_str())
        .collect();
    for want in [
        "service_provider_config_endpoint",
        "query_all_resource_types",
        "query_all_schemas",
        "object_creation",
        "object_query",
        "object_query_without_id",
        "object_replacement",
        "object_deletion",
        "check_add_attribute",
        "check_remove_attribute",
        "check_replace_attribute",
        "object_list_with_attributes",
        "random_url",
    ] {
        anyhow::ensure!(titles.contains(&want), "no successful {want} check");
    }
    anyhow::ensure!(
        failed.is_empty(),
        "{} scim2-tester checks failed",
        failed.len()
    );
    Ok(())
}
