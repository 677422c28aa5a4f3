use chrono::{Duration, Utc};
use serde_json::json;
use tenure_audit::read::deprovision;

use crate::{db, tick, write, Person};

#[tokio::test]
async fn time_to_deprovision_measures_each_app_and_explains_breaches() {
    let db = db().await;
    let pool = &db.pool;
    let window_start = Utc::now() - Duration::days(2);

    // Left now; both apps switched off at once.
    let mut quick = Person::new("quick");
    quick.hired(pool).await;
    quick.account_created(pool, "wiki").await;
    quick.account_created(pool, "chat").await;
    let quick_end = Utc::now();
    quick.terminated(pool, quick_end).await;
    let wiki_off = quick.account_deactivated(pool, "wiki").await;
    let chat_off = quick.account_deactivated(pool, "chat").await;

    // Left 30 hours ago but HR said so only now; the wiki deactivation is
    // then held by the guard and the app's breaker is open, so it is still
    // pending when the report is made.
    let mut slow = Person::new("slow");
    slow.hired(pool).await;
    slow.account_created(pool, "wiki").await;
    slow.terminated(pool, Utc::now() - Duration::hours(30))
        .await;
    write(
        pool,
        "app-wiki",
        "CircuitOpened",
        json!({"cooldown_ms": 30000, "failing_persons": 3, "persons_seen": 3, "last_error": "connection refused"}),
        tenure_store::Metadata { app: Some("wiki".into()), actor: "fanout".into(), ..Default::default() },
    )
    .await;
    slow.account(
        pool,
        "wiki",
        "DeprovisionStaged",
        json!({"reason": "3 deprovisions in 1h exceed 2"}),
    )
    .await;

    // Left long before the window: not counted.
    let mut old = Person::new("old");
    old.hired(pool).await;
    old.account_created(pool, "wiki").await;
    old.terminated(pool, Utc::now() - Duration::days(90)).await;

    let now = tick().await;
    let report = deprovision(pool, window_start, now, 24 * 3600, now)
        .await
        .unwrap();
    assert_eq!(report.leavers, 2);
    assert_eq!(report.rows.len(), 3);

    let row = |p: &Person, app: &str| {
        report
            .rows
            .iter()
            .find(|r| r.person_id == p.id && r.app == app)
            .unwrap_or_else(|| panic!("no row for {} in {app}", p.email))
    };
    let wiki = row(&quick, "wiki");
    assert_eq!(wiki.acknowledged_at, Some(wiki_off.recorded_at));
    assert_eq!(
        wiki.seconds,
        (wiki_off.recorded_at - quick_end).num_seconds()
    );
    assert!(!wiki.breach && !wiki.pending && wiki.reasons.is_empty());
    assert_eq!(
        row(&quick, "chat").acknowledged_at,
        Some(chat_off.recorded_at)
    );

    let pending = row(&slow, "wiki");
    assert!(pending.pending && pending.breach);
    assert!(pending.seconds >= 30 * 3600);
    assert_eq!(
        pending.reasons,
        [
            "termination recorded 1d 6h after it took effect",
            "circuit breaker open (connection refused)",
            "staged by the mass-change guard: 3 deprovisions in 1h exceed 2",
        ]
    );

    let wiki_stats = report.per_app.iter().find(|s| s.app == "wiki").unwrap();
    assert_eq!(
        (
            wiki_stats.accounts,
            wiki_stats.acknowledged,
            wiki_stats.pending,
            wiki_stats.breaches
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(report.overall.acknowledged, 2);
    assert_eq!(report.overall.breaches, 1);
    assert_eq!(report.breaches().count(), 1);
    assert!(report.overall.max_seconds.unwrap() < 60);

    // A generous SLA has no breach; a window without leavers has no rows.
    let lenient = deprovision(pool, window_start, now, 7 * 86_400, now)
        .await
        .unwrap();
    assert_eq!(lenient.overall.breaches, 0);
    let empty = deprovision(pool, now, now + Duration::days(1), 3600, now)
        .await
        .unwrap();
    assert_eq!((empty.leavers, empty.rows.len()), (0, 0));
}
