use chrono::{Duration, Utc};
use sqlx::{Connection, Executor};
use tenure_audit::checkpoint::{
    create_checkpoint, list_checkpoints, verify_checkpoints, Checkpoint,
};
use tenure_audit::export::{export, verify_export, ExportFilter};
use tenure_audit::signing;

use crate::{db, Person};

async fn history(pool: &sqlx::PgPool) -> (Person, Person) {
    let mut ada = Person::new("ada");
    let mut bob = Person::new("bob");
    ada.hired(pool).await;
    bob.hired(pool).await;
    ada.account_created(pool, "wiki").await;
    bob.account_created(pool, "wiki").await;
    ada.terminated(pool, Utc::now()).await;
    ada.account_deactivated(pool, "wiki").await;
    (ada, bob)
}

fn lines(file: &[u8]) -> Vec<String> {
    String::from_utf8(file.to_vec())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn join(lines: &[String]) -> Vec<u8> {
    let mut s = lines.join("\n");
    s.push('\n');
    s.into_bytes()
}

#[tokio::test]
async fn a_signed_export_verifies_offline_and_any_edited_removed_or_moved_line_is_found() {
    let db = db().await;
    let pool = &db.pool;
    history(pool).await;
    let key = signing::generate();
    let public = key.verifying_key();
    let filter = ExportFilter {
        from: Utc::now() - Duration::hours(1),
        to: Utc::now() + Duration::hours(1),
        app: None,
    };
    let mut file = Vec::new();
    let manifest = export(pool, &filter, &key, &mut file).await.unwrap();
    assert_eq!(manifest.count, 8);
    let original = lines(&file);
    assert_eq!(original.len(), 9, "eight events and the manifest");

    let ok = verify_export(file.as_slice(), &public).unwrap();
    assert!(ok.is_ok(), "{:?}", ok.problems);
    assert_eq!(ok.events, 8);

    let check = |bytes: Vec<u8>, expect: &str| {
        let r = verify_export(bytes.as_slice(), &public).unwrap();
        assert!(!r.is_ok(), "{expect}: not detected");
        assert!(
            r.problems.iter().any(|p| p.contains(expect)),
            "{expect}: {:?}",
            r.problems
        );
    };

    let mut edited = original.clone();
    edited[2] = edited[2].replace("r-ada", "r-eve");
    assert_ne!(edited[2], original[2], "the edit must change the line");
    check(join(&edited), "line 3 (account-wiki-");
    check(join(&edited), "edited");

    let mut removed = original.clone();
    removed.remove(4);
    check(
        join(&removed),
        "the manifest counts 8 events, the file holds 7",
    );

    let mut reordered = original.clone();
    reordered.swap(2, 3);
    check(join(&reordered), "out of order");
    check(join(&reordered), "SHA-256 differs");

    let mut no_manifest = original.clone();
    no_manifest.pop();
    check(join(&no_manifest), "no manifest");

    // A forger re-signs a doctored file with a key of their own.
    let mut forged = original.clone();
    forged.remove(4);
    forged.pop();
    let forger = signing::generate();
    let mut resigned = join(&forged);
    // Re-exporting from a doctored source is the forger's best move; here
    // the manifest from another key stands in for it.
    let mut other = Vec::new();
    export(pool, &filter, &forger, &mut other).await.unwrap();
    resigned.extend_from_slice(lines(&other).last().unwrap().as_bytes());
    resigned.push(b'\n');
    check(resigned, "not signed by the given public key");
    let wrong_key = verify_export(file.as_slice(), &forger.verifying_key()).unwrap();
    assert!(!wrong_key.signature_valid);

    // One app's events only.
    let mut chat = Vec::new();
    let only = ExportFilter {
        app: Some("wiki".into()),
        ..filter.clone()
    };
    let m = export(pool, &only, &key, &mut chat).await.unwrap();
    assert_eq!(m.count, 5);
    assert!(verify_export(chat.as_slice(), &public).unwrap().is_ok());
}

/// A checkpoint covering `events` events. A checkpoint covers only events
/// below the oldest transaction still running anywhere in the cluster (so
/// none can commit into its past later); other databases' transactions
/// hold that back for a moment, so this signs until it has caught up.
async fn settled_checkpoint(
    pool: &sqlx::PgPool,
    key: &ed25519_dalek::SigningKey,
    events: i64,
) -> Checkpoint {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        create_checkpoint(pool, key).await.unwrap();
        if let Some(last) = list_checkpoints(pool).await.unwrap().pop() {
            if last.event_count == events {
                return last;
            }
            assert!(last.event_count < events, "{last:?}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "checkpoint never caught up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Deletes with the append-only triggers off, as a superuser could.
async fn tamper(url: &str, sql: &str) -> u64 {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    conn.execute("SET session_replication_role = replica")
        .await
        .unwrap();
    let n = conn.execute(sql).await.unwrap().rows_affected();
    conn.execute("RESET session_replication_role")
        .await
        .unwrap();
    n
}

#[tokio::test]
async fn checkpoints_detect_a_whole_stream_deleted_behind_the_triggers() {
    let db = db().await;
    let pool = &db.pool;
    let key = signing::generate();
    assert!(
        create_checkpoint(pool, &key).await.unwrap().is_none(),
        "no events yet"
    );
    let (_ada, bob) = history(pool).await;
    let first = settled_checkpoint(pool, &key, 8).await;
    assert!(
        create_checkpoint(pool, &key).await.unwrap().is_none(),
        "nothing new"
    );

    let mut carl = Person::new("carl");
    carl.hired(pool).await;
    let second = settled_checkpoint(pool, &key, 9).await;
    assert_eq!(list_checkpoints(pool).await.unwrap().last(), Some(&second));

    let ok = verify_checkpoints(pool, Some(&key.verifying_key()))
        .await
        .unwrap();
    assert!(ok.is_ok(), "{:?}", ok.problems);
    assert_eq!(ok.events, 9);
    // The store's own per-stream check cannot see a whole stream vanish.
    let deleted = tamper(
        &db.url,
        &format!(
            "DELETE FROM events WHERE stream_id = 'account-wiki-{}'",
            bob.id
        ),
    )
    .await;
    assert_eq!(deleted, 2);
    assert!(tenure_store::verify(pool).await.unwrap().is_ok());

    let found = verify_checkpoints(pool, Some(&key.verifying_key()))
        .await
        .unwrap();
    assert!(!found.is_ok());
    let at_first = format!("checkpoint #{} at position", first.id);
    let problem = found
        .problems
        .iter()
        .find(|p| p.starts_with(&at_first))
        .unwrap_or_else(|| panic!("{:?}", found.problems));
    assert!(problem.contains("6 events now, 8 when signed"), "{problem}");
    assert!(found
        .problems
        .iter()
        .any(|p| p.starts_with(&format!("checkpoint #{} at position", second.id))));

    let other = signing::generate();
    let foreign = verify_checkpoints(pool, Some(&other.verifying_key()))
        .await
        .unwrap();
    assert!(foreign
        .problems
        .iter()
        .any(|p| p.contains("not signed by the given public key")));
}

#[tokio::test]
async fn checkpoints_detect_an_edited_event_and_an_edited_checkpoint() {
    let db = db().await;
    let pool = &db.pool;
    let key = signing::generate();
    let (ada, _bob) = history(pool).await;
    settled_checkpoint(pool, &key, 8).await;

    tamper(
        &db.url,
        &format!(
            "UPDATE events SET data = jsonb_set(data, '{{user_name}}', '\"eve\"') \
             WHERE stream_id = 'account-wiki-{}' AND event_type = 'AccountCreated'",
            ada.id
        ),
    )
    .await;
    let found = verify_checkpoints(pool, Some(&key.verifying_key()))
        .await
        .unwrap();
    assert!(
        found
            .problems
            .iter()
            .any(|p| p.contains("does not match its hash")),
        "{:?}",
        found.problems
    );

    sqlx::query("UPDATE audit_checkpoints SET event_count = event_count - 1")
        .execute(pool)
        .await
        .unwrap();
    let found = verify_checkpoints(pool, Some(&key.verifying_key()))
        .await
        .unwrap();
    assert!(
        found
            .problems
            .iter()
            .any(|p| p.contains("invalid signature")),
        "{:?}",
        found.problems
    );
}
