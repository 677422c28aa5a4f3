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
