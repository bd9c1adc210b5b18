//! JetStream under faults: the server restarts under a live publisher and subscription.

// Test helpers panic with the value: the clearest failure a test can give.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use vigil_bus::jetstream::{JetStreamBus, JetStreamConfig};
use vigil_bus::{Bus, ConsumerSpec, OutgoingMessage, Subject};
use vigil_e2e::NatsServer;
use vigil_schema::{Stage, TenantId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_and_consuming_resume_after_a_server_restart() {
    let mut server = NatsServer::start().unwrap();
    let bus = JetStreamBus::connect(JetStreamConfig::new(server.url()))
        .await
        .unwrap();
    let tenant = TenantId::new("acme").unwrap();
    let subject = Subject::new(tenant.clone(), Stage::Events);
    let mut spec = ConsumerSpec::new("restart", Stage::Events, Some(tenant));
    spec.ack_wait = Duration::from_secs(2);
    let mut subscription = bus.subscribe(spec).await.unwrap();

    bus.publish_durable(OutgoingMessage::new(subject.clone(), "before", "before"))
        .await
        .unwrap();
    // Received but not acknowledged when the server goes down.
    let unacked = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&unacked.payload[..], b"before");

    server.restart().unwrap();
    drop(unacked);

    // The client reconnects by itself; a publish retried with the same id is stored once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let receipt = loop {
        match bus
            .publish_durable(OutgoingMessage::new(subject.clone(), "after", "after"))
            .await
        {
            Ok(receipt) => break receipt,
            Err(err) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %err, "publish during reconnect failed, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("no publish within 20 s of the restart: {err}"),
        }
    };
    assert!(!receipt.duplicate);
    let duplicate = bus
        .publish_durable(OutgoingMessage::new(subject.clone(), "after", "after"))
        .await
        .unwrap();
    assert!(duplicate.duplicate, "dedup state lost over the restart");

    // The same subscription gets the unacknowledged message again, then the new one.
    let mut bodies = Vec::new();
    while bodies.len() < 2 {
        let next = tokio::time::timeout(Duration::from_secs(30), subscription.next())
            .await
            .expect("a delivery within 30 s of the restart")
            .expect("subscription open");
        match next {
            Ok(delivery) => {
                bodies.push(String::from_utf8_lossy(&delivery.payload).into_owned());
                delivery.ack().await.unwrap();
            }
            // Missed heartbeats while the server was away are reported, not fatal.
            Err(err) => tracing::debug!(error = %err, "transient consumer error"),
        }
    }
    bodies.sort();
    assert_eq!(bodies, ["after", "before"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_window_releases_on_server_ack_without_caller_polling() {
    let server = NatsServer::start().unwrap();
    let mut config = JetStreamConfig::new(server.url());
    config.max_publish_in_flight_bytes = 64 * 1024;
    let bus = JetStreamBus::connect(config).await.unwrap();
    let tenant = TenantId::new("acme").unwrap();
    let spec = ConsumerSpec::new("window", Stage::Events, Some(tenant.clone()));
    bus.ensure_consumer(&spec).await.unwrap();
    let subject = Subject::new(tenant, Stage::Events);
    // Forty 16 KiB publishes through a 64 KiB window, holding every ack future unpolled: the
    // window must free itself as the server answers, or this would wait forever.
    let mut pending = Vec::new();
    let publishes = async {
        for i in 0..40 {
            let message =
                OutgoingMessage::new(subject.clone(), format!("w-{i}"), vec![b'x'; 16 * 1024]);
            pending.push(bus.publish(message).await.unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(20), publishes)
        .await
        .expect("publishing stalled on the byte window");
    for ack in pending {
        assert!(!ack.await.unwrap().duplicate);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_delivery_rules_never_stop_a_consumer_from_starting() {
    let server = NatsServer::start().unwrap();
    let bus = JetStreamBus::connect(JetStreamConfig::new(server.url()))
        .await
        .unwrap();
    let tenant = TenantId::new("acme").unwrap();
    let mut spec = ConsumerSpec::new("rules", Stage::Events, Some(tenant.clone()));
    bus.ensure_consumer(&spec).await.unwrap();
    bus.publish_durable(OutgoingMessage::new(
        Subject::new(tenant, Stage::Events),
        "kept",
        "kept",
    ))
    .await
    .unwrap();
    // A new release changes the ack wait: the consumer still opens, at the same position.
    spec.ack_wait = Duration::from_secs(7);
    spec.max_in_flight = 10;
    let mut subscription = bus.subscribe(spec).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&delivery.payload[..], b"kept");
    delivery.ack().await.unwrap();
}

/// A pull of many large messages must not outrun the client: nats-server cuts off a connection
/// with more than 64 MiB waiting for it ("Slow Consumer Detected"), drops what it had queued,
/// and JetStream redelivers those messages only after the ack wait. Found in the detect
/// benchmark: a consumer of 800 event batches stalled 30 s. The consumer here reads 1 MiB
/// messages and blocks its only runtime thread on each, so the connection is not read
/// meanwhile; every message must still arrive once, long before the ack wait.
#[tokio::test]
async fn a_consumer_slow_on_large_messages_is_not_cut_off() {
    const MESSAGES: usize = 150;
    let server = NatsServer::start().unwrap();
    let bus = JetStreamBus::connect(JetStreamConfig::new(server.url()))
        .await
        .unwrap();
    let tenant = TenantId::new("acme").unwrap();
    let mut spec = ConsumerSpec::new("large", Stage::Events, Some(tenant.clone()));
    spec.ack_wait = Duration::from_secs(120);
    bus.ensure_consumer(&spec).await.unwrap();
    let subject = Subject::new(tenant, Stage::Events);
    let mut acks = Vec::new();
    for i in 0..MESSAGES {
        let payload = vec![b'x'; 1000 * 1000];
        let message = OutgoingMessage::new(subject.clone(), format!("large-{i}"), payload);
        acks.push(bus.publish(message).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let mut subscription = bus.subscribe(spec).await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let consume = async {
        while seen.len() < MESSAGES {
            let delivery = subscription.next().await.unwrap().unwrap();
            assert_eq!(delivery.deliveries, 1, "{:?} was redelivered", delivery.id);
            // Work that keeps the runtime's only thread from reading the connection.
            std::thread::sleep(Duration::from_millis(20));
            seen.insert(delivery.id.clone());
            delivery.ack().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), consume)
        .await
        .unwrap_or_else(|_| panic!("{} of {MESSAGES} messages arrived", seen.len()));
}
