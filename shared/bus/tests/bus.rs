use bytes::Bytes;
use std::time::Duration;
use tenure_bus::{subjects, Bus, INGEST_STREAM};
use tenure_testkit::NatsServer;

#[tokio::test]
async fn publish_is_deduplicated_by_message_id_and_survives_a_restart_of_the_client(
) -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    let first = bus
        .publish(
            &subjects::ingest("generic"),
            "generic:d-1",
            &[],
            Bytes::from_static(b"{}"),
        )
        .await?;
    let again = bus
        .publish(
            &subjects::ingest("generic"),
            "generic:d-1",
            &[],
            Bytes::from_static(b"{}"),
        )
        .await?;
    assert!(!first.duplicate);
    assert!(
        again.duplicate,
        "same message id within the window is a duplicate"
    );
    assert_eq!(first.sequence, again.sequence);

    // Streams already exist: a second process connecting must not fail or reset them.
    let bus2 = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    let mut stream = bus2.js.get_stream(INGEST_STREAM).await?;
    assert_eq!(stream.info().await?.state.messages, 1);
    Ok(())
}

#[tokio::test]
async fn durable_consumer_redelivers_unacked_messages() -> anyhow::Result<()> {
    use futures::StreamExt;
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    bus.publish(
        &subjects::jobs("wiki", 3),
        "j-1",
        &[],
        Bytes::from_static(b"job"),
    )
    .await?;
    let consumer = bus
        .durable_consumer(
            tenure_bus::JOBS_STREAM,
            "fanout-wiki",
            &subjects::jobs_of_app("wiki"),
            Duration::from_secs(1),
            5,
        )
        .await?;
    let mut msgs = consumer.messages().await?;
    let first = msgs.next().await.expect("a message")?;
    assert_eq!(first.payload.as_ref(), b"job");
    drop(first); // never acked, as if the worker died
    let again = tokio::time::timeout(Duration::from_secs(5), msgs.next())
        .await?
        .expect("redelivery")?;
    assert_eq!(
        again.info().map_err(|e| anyhow::anyhow!("{e}"))?.delivered,
        2
    );
    again.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

#[tokio::test]
async fn quarantine_keeps_payload_and_reason() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    bus.quarantine(
        "generic",
        401,
        "bad signature",
        Bytes::from_static(b"{\"x\":1}"),
    )
    .await?;
    bus.quarantine(
        "generic",
        422,
        "work_email: not an e-mail",
        Bytes::from_static(b"{}"),
    )
    .await?;
    let items = bus.list_quarantine(10).await?;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].status, 401);
    assert_eq!(items[0].reason, "bad signature");
    assert_eq!(items[0].payload, "{\"x\":1}");
    assert_eq!(items[1].status, 422);
    assert_eq!(bus.list_quarantine(1).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_server_list_connects_to_any_live_member() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let dead = format!("nats://127.0.0.1:{}", tenure_testkit::free_port());
    let bus = Bus::connect(&format!("{dead}, {}", nats.url()), Duration::from_secs(60)).await?;
    let stored = bus
        .publish(
            &subjects::ingest("generic"),
            "x-1",
            &[],
            Bytes::from_static(b"{}"),
        )
        .await?;
    assert_eq!(stored.sequence, 1);
    assert!(Bus::connect("not a url at all", Duration::from_secs(60))
        .await
        .is_err());
    Ok(())
}

#[tokio::test]
async fn dead_letters_are_listed_and_redriven_onto_the_job_queue() -> anyhow::Result<()> {
    use tenure_bus::dlq::DeadLetter;
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    let job = |app: &str| tenure_bus::Job {
        app: app.into(),
        person_id: uuid::Uuid::new_v4(),
        correlation_id: uuid::Uuid::new_v4(),
        causation_id: Some(uuid::Uuid::new_v4()),
        approved: false,
    };
    let letter = |job: tenure_bus::Job| DeadLetter {
        job,
        error: "POST /Users failed with HTTP 503".into(),
        deliveries: 20,
        reason: "exhausted".into(),
        dead_at: chrono::Utc::now(),
    };
    let wiki_job = job("wiki");
    let first = bus.dead_letter(&letter(wiki_job.clone())).await?;
    assert_eq!(
        bus.dead_letter(&letter(wiki_job.clone())).await?,
        first,
        "the same failure is filed once"
    );
    bus.dead_letter(&letter(job("git"))).await?;
    assert_eq!(bus.list_dlq(None, 100).await?.len(), 2);
    let wiki = bus.list_dlq(Some("wiki"), 100).await?;
    assert_eq!(wiki.len(), 1);
    assert_eq!(wiki[0].letter.job, wiki_job);

    let redriven = bus.redrive(first, 8).await?;
    assert_eq!(redriven, Some(wiki_job.clone()));
    assert!(bus.list_dlq(Some("wiki"), 100).await?.is_empty());
    assert_eq!(
        bus.redrive(first, 8).await?,
        None,
        "a redriven letter is gone"
    );
    let jobs = bus.js.get_stream(tenure_bus::JOBS_STREAM).await?;
    let m = jobs.get_raw_message(1).await?;
    assert_eq!(
        m.subject.as_str(),
        subjects::jobs("wiki", wiki_job.partition(8))
    );
    assert_eq!(
        serde_json::from_slice::<tenure_bus::Job>(&m.payload)?,
        wiki_job
    );
    Ok(())
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_with_its_error_and_redriven_to_its_subject(
) -> anyhow::Result<()> {
    use futures::StreamExt;
    use tenure_bus::dlq::{settle_poison, DeadEntry, DeadFilter, Redriven};
    use tenure_bus::Redelivery;
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    // A job dead letter too, so both kinds are listed side by side.
    bus.dead_letter(&tenure_bus::dlq::DeadLetter {
        job: tenure_bus::Job {
            app: "msg".into(),
            person_id: uuid::Uuid::new_v4(),
            correlation_id: uuid::Uuid::new_v4(),
            causation_id: None,
            approved: false,
        },
        error: "HTTP 400".into(),
        deliveries: 1,
        reason: "refused".into(),
        dead_at: chrono::Utc::now(),
    })
    .await?;
    bus.publish(
        &subjects::ingest("generic"),
        "generic:poison-1",
        &[("Tenure-Trace", "abc")],
        Bytes::from_static(b"{\"email\":\"x\"}"),
    )
    .await?;
    let consumer = bus
        .bounded_consumer(
            INGEST_STREAM,
            "engine-test",
            "tenure.ingest.>",
            &Redelivery::exponential(3, Duration::from_secs(1), Duration::from_secs(2)),
        )
        .await?;
    let mut msgs = consumer.messages().await?;
    let msg = msgs.next().await.expect("a message")?;
    let seq = settle_poison(
        &bus,
        &msg,
        "engine-test",
        "index row size 9016 exceeds btree maximum 2704",
    )
    .await?;
    // Terminated: never delivered again.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), msgs.next())
            .await
            .is_err(),
        "a settled poison message is not redelivered"
    );
    // Settling the same message again (another instance, a retry) files it once.
    let again = tenure_bus::dlq::DeadMessage::from_jetstream(&msg, "engine-test", "again");
    assert_eq!(bus.dead_letter_message(&again).await?, seq);

    let all = bus.list_dead(&DeadFilter::default(), 100).await?;
    assert_eq!(all.len(), 2);
    assert!(matches!(&all[0], DeadEntry::Job(j) if j.letter.job.app == "msg"));
    let DeadEntry::Message(dead) = &all[1] else {
        panic!("second entry should be a dead message: {:?}", all[1]);
    };
    assert_eq!(dead.message.consumer, "engine-test");
    assert_eq!(dead.message.subject, "tenure.ingest.generic");
    assert_eq!(dead.message.stream.as_deref(), Some(INGEST_STREAM));
    assert_eq!(dead.message.stream_sequence, Some(1));
    assert!(dead.message.error.contains("btree maximum"));
    assert_eq!(dead.payload_text.as_deref(), Some("{\"email\":\"x\"}"));
    let json = serde_json::to_value(&all[1])?;
    assert_eq!(json["kind"], "message", "entries are labelled by kind");
    assert_eq!(serde_json::to_value(&all[0])?["kind"], "job");
    // The job list and the app filter ignore dead messages, even of an app named `msg`.
    assert_eq!(bus.list_dlq(None, 100).await?.len(), 1);
    let only_app = DeadFilter {
        app: Some("msg".into()),
        consumer: None,
    };
    assert_eq!(bus.list_dead(&only_app, 100).await?.len(), 1);
    assert_eq!(
        bus.list_dead_messages(Some("engine-test"), 100)
            .await?
            .len(),
        1
    );

    let redriven = bus.redrive_any(seq, 8).await?;
    assert_eq!(
        redriven,
        Some(Redriven::Message {
            consumer: "engine-test".into(),
            subject: "tenure.ingest.generic".into()
        })
    );
    assert!(bus.list_dead_messages(None, 100).await?.is_empty());
    let back = tokio::time::timeout(Duration::from_secs(5), msgs.next())
        .await?
        .expect("the redriven message")?;
    assert_eq!(back.payload.as_ref(), b"{\"email\":\"x\"}");
    assert_eq!(tenure_bus::header(&back, "Tenure-Trace"), Some("abc"));
    back.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

#[tokio::test]
async fn a_large_dead_message_keeps_its_start_and_is_redriven_whole_from_its_stream(
) -> anyhow::Result<()> {
    use futures::StreamExt;
    use tenure_bus::dlq::{settle_poison, MAX_DEAD_PAYLOAD};
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    let big = Bytes::from(vec![b'a'; 3 * MAX_DEAD_PAYLOAD]);
    bus.publish(&subjects::ingest("generic"), "big-1", &[], big.clone())
        .await?;
    let consumer = bus
        .bounded_consumer(
            INGEST_STREAM,
            "big-test",
            "tenure.ingest.>",
            &tenure_bus::Redelivery::exponential(5, Duration::from_secs(1), Duration::from_secs(4)),
        )
        .await?;
    let mut msgs = consumer.messages().await?;
    let msg = msgs.next().await.expect("a message")?;
    let seq = settle_poison(&bus, &msg, "big-test", "too big").await?;
    let dead = &bus.list_dead_messages(None, 10).await?[0];
    assert!(dead.message.payload_truncated);
    assert_eq!(dead.message.payload_bytes, big.len() as u64);
    assert_eq!(dead.message.payload_bytes_kept().len(), MAX_DEAD_PAYLOAD);
    bus.redrive_message(seq).await?;
    let back = tokio::time::timeout(Duration::from_secs(5), msgs.next())
        .await?
        .expect("redriven")?;
    assert_eq!(back.payload, big);
    Ok(())
}

#[tokio::test]
async fn a_bounded_consumer_stops_redelivering_after_max_deliver_and_bounds_an_old_unbounded_one(
) -> anyhow::Result<()> {
    use futures::StreamExt;
    use tenure_bus::Redelivery;
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Duration::from_secs(60)).await?;
    // As an older release created it: redelivered forever.
    bus.durable_consumer(
        INGEST_STREAM,
        "old",
        "tenure.ingest.>",
        Duration::from_secs(30),
        -1,
    )
    .await?;
    let redelivery = Redelivery::exponential(3, Duration::from_secs(1), Duration::from_secs(1));
    let consumer = bus
        .bounded_consumer(INGEST_STREAM, "old", "tenure.ingest.>", &redelivery)
        .await?;
    let mut consumer = consumer;
    let info = consumer.info().await?.config.clone();
    assert_eq!(info.max_deliver, 3);
    assert_eq!(info.backoff, redelivery.backoff[..2].to_vec());
    bus.publish(
        &subjects::ingest("generic"),
        "crash-1",
        &[],
        Bytes::from_static(b"{}"),
    )
    .await?;
    let watch = bus.watch_exhausted(INGEST_STREAM, "old").await?;
    let watcher = tokio::spawn(watch);
    let mut msgs = consumer.messages().await?;
    let mut deliveries = 0;
    // Never acked (a worker that crashes on it): delivered three times, then no more.
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(4), msgs.next()).await {
        let m = m?;
        deliveries += 1;
        assert_eq!(
            redelivery.is_last(m.info().map_err(|e| anyhow::anyhow!("{e}"))?.delivered),
            deliveries == 3
        );
    }
    assert_eq!(deliveries, 3);
    // The message JetStream gave up on is filed, not lost.
    let mut filed = Vec::new();
    for _ in 0..50 {
        filed = bus.list_dead_messages(Some("old"), 10).await?;
        if !filed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(filed.len(), 1, "the exhausted message is dead-lettered");
    assert_eq!(filed[0].message.deliveries, 3);
    assert_eq!(filed[0].message.stream_sequence, Some(1));
    assert!(filed[0].message.error.contains("without being settled"));
    watcher.abort();
    assert_eq!(redelivery.nak_delay(1), Duration::from_secs(1));
    assert_eq!(redelivery.nak_delay(50), Duration::from_secs(1));
    Ok(())
}
