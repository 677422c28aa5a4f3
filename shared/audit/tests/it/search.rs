use chrono::Utc;
use tenure_audit::search::{search, SearchFilter};

use crate::{db, tick, Person};

#[tokio::test]
async fn search_filters_and_pages_with_a_position_cursor() {
    let db = db().await;
    let pool = &db.pool;
    let mut ada = Person::new("ada");
    let mut bob = Person::new("bob");
    let hire = ada.hired(pool).await;
    bob.hired(pool).await;
    let start = tick().await;
    ada.account_created(pool, "wiki").await;
    ada.account_created(pool, "chat").await;
    bob.account_created(pool, "wiki").await;
    ada.terminated(pool, Utc::now()).await;
    ada.account_deactivated(pool, "wiki").await;

    let all = |f: SearchFilter| async move {
        let mut f = f;
        let mut out = Vec::new();
        let mut pages = 0;
        loop {
            let page = search(pool, &f).await.unwrap();
            pages += 1;
            out.extend(
                page.events
                    .iter()
                    .map(|e| (e.global_position, e.event_type.clone())),
            );
            match page.next_cursor {
                Some(c) => f.after = Some(c),
                None => break,
            }
        }
        (out, pages)
    };

    let (ada_events, pages) = all(SearchFilter {
        person_id: Some(ada.id),
        limit: 2,
        ..Default::default()
    })
    .await;
    assert_eq!(ada_events.len(), 7);
    assert_eq!(pages, 4);
    assert!(ada_events.windows(2).all(|w| w[0].0 < w[1].0));

    let (wiki, _) = all(SearchFilter {
        app: Some("wiki".into()),
        event_types: vec!["AccountCreated".into(), "AccountDeactivated".into()],
        limit: 100,
        ..Default::default()
    })
    .await;
    let kinds: Vec<_> = wiki.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        kinds,
        ["AccountCreated", "AccountCreated", "AccountDeactivated"]
    );

    let (by_correlation, _) = all(SearchFilter {
        correlation_id: Some(hire.metadata.correlation_id),
        limit: 100,
        ..Default::default()
    })
    .await;
    // The hire and the five account events of jobs it caused.
    assert_eq!(by_correlation.len(), 6);

    let (before, _) = all(SearchFilter {
        to: Some(start),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(before.len(), 2);
    let (since, _) = all(SearchFilter {
        from: Some(start),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(since.len(), 8);

    assert!(search(
        pool,
        &SearchFilter {
            limit: 0,
            ..Default::default()
        }
    )
    .await
    .is_err());
}
