//! One conformance suite, run against both bus implementations: the in-process bus and
//! JetStream on a real `nats-server` (started per test on a free port).

// Test helpers panic with the value: the clearest failure a test can give.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use vigil_bus::inprocess::{InProcessBus, InProcessConfig};
use vigil_bus::jetstream::{JetStreamBus, JetStreamConfig};
use vigil_bus::{
    Bus, ConsumerSpec, HEADER_CONSUMER, HEADER_DEAD_LETTER_REASON, HEADER_DELIVERIES,
    HEADER_ENCODING, HEADER_ORIGINAL_SUBJECT, OutgoingMessage, Subject,
};
use vigil_e2e::NatsServer;
use vigil_schema::{Stage, TenantId};

/// Stream limit used by the backpressure test.
const SMALL_STREAM: usize = 10;

struct Fixture {
    bus: Arc<dyn Bus>,
    _server: Option<NatsServer>,
}

fn in_process() -> Fixture {
    Fixture {
        bus: Arc::new(InProcessBus::new(InProcessConfig {
            max_messages: SMALL_STREAM,
            publish_timeout: Duration::from_secs(20),
            ..InProcessConfig::default()
        })),
        _server: None,
    }
}

async fn jetstream() -> Fixture {
    let server = NatsServer::start().expect("nats-server");
    let mut config = JetStreamConfig::new(server.url());
    config.max_messages = SMALL_STREAM as i64;
    config.publish_timeout = Duration::from_secs(20);
    config.max_bytes = 64 * 1024 * 1024;
    let bus = JetStreamBus::connect(config).await.expect("connect");
    Fixture {
        bus: Arc::new(bus),
        _server: Some(server),
    }
}

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn events_of(name: &str) -> Subject {
    Subject::new(tenant(name), Stage::Events)
}

fn spec(name: &str, tenant_name: Option<&str>) -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(name, Stage::Events, tenant_name.map(tenant));
    spec.ack_wait = Duration::from_secs(1);
    spec.max_deliveries = 3;
    spec.max_in_flight = 64;
    spec
}

async fn publish(bus: &dyn Bus, subject: Subject, id: &str, payload: &str) -> bool {
    let message = OutgoingMessage::new(subject, id, Bytes::from(payload.to_owned()));
    bus.publish_durable(message).await.unwrap().duplicate
}

async fn next(sub: &mut vigil_bus::Subscription) -> vigil_bus::Delivery {
    tokio::time::timeout(Duration::from_secs(15), sub.next())
        .await
        .expect("a delivery within 15 s")
        .expect("subscription open")
        .expect("delivery")
}

/// Whether `sub` yields nothing within `wait`.
async fn quiet(sub: &mut vigil_bus::Subscription, wait: Duration) -> bool {
    tokio::time::timeout(wait, sub.next()).await.is_err()
}

fn text(delivery: &vigil_bus::Delivery) -> String {
    String::from_utf8_lossy(&delivery.payload).into_owned()
}

async fn keeps_order_per_subject(fixture: Fixture) {
    let bus = fixture.bus.as_ref();
    let mut sub = bus.subscribe(spec("order", None)).await.unwrap();
    let mut acks = Vec::new();
    // Pipelined publishes on two subjects: order holds per subject.
    for i in 0..SMALL_STREAM / 2 {
        for name in ["acme", "globex"] {
            let message = OutgoingMessage::new(
                events_of(name),
                format!("{name}-{i}"),
                format!("{name} {i}"),
            );
            acks.push(bus.publish(message).await.unwrap());
        }
    }
    for ack in acks {
        assert!(!ack.await.unwrap().duplicate);
    }
    let mut seen = std::collections::HashMap::<String, Vec<usize>>::new();
    for _ in 0..SMALL_STREAM {
        let delivery = next(&mut sub).await;
        assert_eq!(delivery.deliveries, 1);
        let body = text(&delivery);
        let (name, i) = body.split_once(' ').unwrap();
        assert_eq!(delivery.subject.tenant.as_str(), name);
        seen.entry(name.to_owned())
            .or_default()
            .push(i.parse().unwrap());
        delivery.ack().await.unwrap();
    }
    for (_, order) in seen {
        assert_eq!(order, (0..SMALL_STREAM / 2).collect::<Vec<_>>());
    }
}

async fn redelivers_what_was_not_acked(fixture: Fixture) {
    let bus = fixture.bus.as_ref();
    let mut sub = bus.subscribe(spec("redeliver", None)).await.unwrap();
    publish(bus, events_of("acme"), "m1", "one").await;
    let first = next(&mut sub).await;
    assert_eq!(first.deliveries, 1);
    drop(first); // processed nothing, acked nothing: as a crashed consumer would
    let again = next(&mut sub).await;
    assert_eq!(text(&again), "one");
    assert_eq!(again.deliveries, 2);
    assert_eq!(again.id.as_deref(), Some("m1"));
    again.ack().await.unwrap();
    assert!(
        quiet(&mut sub, Duration::from_millis(1500)).await,
        "acked message came back"
    );
}

async fn redelivers_after_nak_delay_and_respects_in_progress(fixture: Fixture) {
    let bus = fixture.bus.as_ref();
    let mut sub = bus.subscribe(spec("nak", None)).await.unwrap();
    publish(bus, events_of("acme"), "n1", "nak me").await;
    let delivery = next(&mut sub).await;
    let started = tokio::time::Instant::now();
    delivery
        .nak(Some(Duration::from_millis(300)))
        .await
        .unwrap();
    let again = next(&mut sub).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(again.deliveries, 2);
    // Keep it in progress past the 1 s ack wait: no redelivery meanwhile.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        again.in_progress().await.unwrap();
    }
    again.ack().await.unwrap();
    assert!(quiet(&mut sub, Duration::from_millis(1500)).await);
}

async fn drops_duplicates_within_the_window(fixture: Fixture) {
    let bus = fixture.bus.as_ref();
    let mut sub = bus.subscribe(spec("dedup", None)).await.unwrap();
    assert!(!publish(bus, events_of("acme"), "same-id", "first").await);
    assert!(publish(bus, events_of("acme"), "same-id", "second").await);
    let delivery = next(&mut sub).await;
    assert_eq!(text(&delivery), "first");
    delivery.ack().await.unwrap();
    assert!(
        quiet(&mut sub, Duration::from_millis(500)).await,
        "duplicate delivered"
    );
}

async fn keeps_tenants_apart(fixture: Fixture) {
    let bus = fixture.bus.as_ref();
    let mut acme = bus.subscribe(spec("iso", Some("acme"))).await.unwrap();
    let mut globex = bus.subscribe(spec("iso", Some("globex"))).await.unwrap();
    let mut all = bus.subscribe(spec("iso", None)).await.unwrap();
    publish(bus, events_of("acme"), "a1", "for acme").await;
    publish(bus, events_of("globex"), "g1", "for globex").await;
    let delivery = next(&mut acme).await;
    assert_eq!(
        (delivery.subject.tenant.as_str(), text(&delivery).as_str()),
        ("acme", "for acme")
    );
    delivery.ack().await.unwrap();
    let delivery = next(&mut globex).await;
    assert_eq!(delivery.subject.tenant.as_str(), "globex");
    delivery.ack().await.unwrap();
    assert!(
        quiet(&mut acme, Duration::from_millis(1500)).await,
        "acme saw another tenant"
    );
    assert!(
        quiet(&mut globex, Duration::from_millis(200)).await,
        "globex saw another tenant"
    );
    let mut tenants = Vec::new();
    for _ in 0..2 {
        let delivery = next(&mut all).await;
        tenants.push(delivery.subject.tenant.to_string());
        delivery.ack().await.unwrap();
    }
    tenants.sort();
    assert_eq!(tenants, ["acme", "globex"]);
}

async fn dead_letters_after_max_deliveries(fixture: Fixture) {
    let bus = fixture.bus.as_ref();
    let mut dead = bus
        .subscribe(ConsumerSpec::new(
            "dlq-reader",
            Stage::Deadletter,
            Some(tenant("acme")),
        ))
        .await
        .unwrap();
    let mut sub = bus.subscribe(spec("poison", None)).await.unwrap();
    publish(bus, events_of("acme"), "poison-1", "crashes the consumer").await;
    for attempt in 1..=3 {
        let delivery = next(&mut sub).await;
        assert_eq!(delivery.deliveries, attempt);
        drop(delivery);
    }
    // The fourth delivery goes to the dead-letter subject instead of the caller.
    assert!(
        quiet(&mut sub, Duration::from_millis(2500)).await,
        "over-delivered message reached the caller"
    );
    let letter = next(&mut dead).await;
    assert_eq!(text(&letter), "crashes the consumer");
    assert_eq!(letter.subject.to_string(), "vigil.acme.deadletter");
    let reason = letter.headers.get(HEADER_DEAD_LETTER_REASON).unwrap();
    assert!(
        reason.contains("not acknowledged after 3 deliveries"),
        "{reason}"
    );
    assert_eq!(
        letter.headers.get(HEADER_ORIGINAL_SUBJECT),
        Some("vigil.acme.events")
    );
    assert_eq!(letter.headers.get(HEADER_CONSUMER), Some("poison-all"));
    assert_eq!(letter.headers.get(HEADER_DELIVERIES), Some("4"));
    letter.ack().await.unwrap();
    // The consumer carries on with the next message.
    publish(bus, events_of("acme"), "fine-1", "fine").await;
    let delivery = next(&mut sub).await;
    assert_eq!(text(&delivery), "fine");
    delivery.ack().await.unwrap();
}

async fn dead_letters_undecodable_payloads(fixture: Fixture) {
    use vigil_schema::Event;
    let bus = fixture.bus.as_ref();
    let mut dead = bus
        .subscribe(ConsumerSpec::new(
            "dlq-reader",
            Stage::Deadletter,
            Some(tenant("acme")),
        ))
        .await
        .unwrap();
    let mut sub = bus.subscribe(spec("decode", None)).await.unwrap();
    let bad_payloads: [&[u8]; 5] = [
        b"not json",
        b"{\"id\": 1}",
        // Well-formed JSON but for a string that is not UTF-8 (a lead byte without its
        // continuation).
        b"{\"source\": {\"transport\": \"http\", \"format\": \"\xc3\x28\"}}",
        b"",
        b"{\"truncated\": ",
    ];
    for (i, payload) in bad_payloads.iter().enumerate() {
        let message = OutgoingMessage::new(events_of("acme"), format!("bad-{i}"), payload.to_vec());
        bus.publish_durable(message).await.unwrap();
    }
    // Compressed payloads that lie about their encoding, or cannot be decompressed.
    let mut garbage_zstd =
        OutgoingMessage::new(events_of("acme"), "bad-zstd", b"not zstd".to_vec());
    garbage_zstd.headers.insert(HEADER_ENCODING, "zstd");
    bus.publish_durable(garbage_zstd).await.unwrap();
    let mut unknown_encoding =
        OutgoingMessage::new(events_of("acme"), "bad-encoding", b"{}".to_vec());
    unknown_encoding.headers.insert(HEADER_ENCODING, "brotli");
    bus.publish_durable(unknown_encoding).await.unwrap();
    // A few KiB that decompress past the limit: refused once the limit is passed.
    let zeros = vec![0u8; vigil_bus::MAX_DECODED_PAYLOAD + 1];
    let mut bomb = OutgoingMessage::new(
        events_of("acme"),
        "bomb",
        zstd::bulk::compress(&zeros, 3).unwrap(),
    );
    drop(zeros);
    bomb.headers.insert(HEADER_ENCODING, "zstd");
    bus.publish_durable(bomb).await.unwrap();
    // A payload that decodes but claims another tenant than its subject.
    let mut foreign = sample_event("globex");
    foreign.id = vigil_schema::EventId::derive(&[b"foreign"]);
    let mut smuggled = OutgoingMessage::encode(&foreign, "smuggled").unwrap();
    smuggled.subject = events_of("acme");
    bus.publish_durable(smuggled).await.unwrap();
    let good = sample_event("acme");
    bus.publish_durable(OutgoingMessage::encode(&good, good.id.to_string()).unwrap())
        .await
        .unwrap();

    let (event, delivery) =
        tokio::time::timeout(Duration::from_secs(15), sub.next_payload::<Event>())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    assert_eq!(event, good);
    delivery.ack().await.unwrap();
    let mut reasons = Vec::new();
    for _ in 0..bad_payloads.len() + 4 {
        let letter = next(&mut dead).await;
        reasons.push(
            letter
                .headers
                .get(HEADER_DEAD_LETTER_REASON)
                .unwrap()
                .to_owned(),
        );
        letter.ack().await.unwrap();
    }
    assert!(reasons[0].starts_with("cannot decode event"), "{reasons:?}");
    assert!(
        reasons[2].starts_with("cannot decode event: the payload is not UTF-8"),
        "{reasons:?}"
    );
    assert!(reasons[5].starts_with("cannot decompress"), "{reasons:?}");
    assert_eq!(
        reasons[6],
        "unsupported payload encoding \"brotli\": expected zstd or none"
    );
    assert_eq!(
        reasons[7], "decompressed payload exceeds 64 MiB",
        "{reasons:?}"
    );
    assert!(
        reasons
            .last()
            .unwrap()
            .contains("payload of tenant globex arrived on subject vigil.acme.events"),
        "{reasons:?}"
    );
}

fn sample_event(tenant_name: &str) -> vigil_schema::Event {
    use vigil_schema::*;
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    Event {
        id: EventId::derive(&[tenant_name.as_bytes(), b"sample"]),
        tenant: tenant(tenant_name),
        event_time: now,
        received_time: now,
        source: Source {
            transport: "test".into(),
            format: "json".into(),
            peer: None,
        },
        logsource: Logsource::default(),
        entities: Entities::default(),
        fields: Fields::from_pairs([("message", FieldValue::from("hello"))]),
        raw: None,
        parse_error: None,
    }
}

async fn carries_compressed_batches(fixture: Fixture) {
    use vigil_schema::EventBatch;
    let bus = fixture.bus.as_ref();
    let mut sub = bus.subscribe(spec("batches", None)).await.unwrap();
    let batch = EventBatch {
        tenant: tenant("acme"),
        events: (0..50)
            .map(|i| {
                let mut event = sample_event("acme");
                event.id = vigil_schema::EventId::derive(&[b"batch", &[i]]);
                event
            })
            .collect(),
    };
    let message = OutgoingMessage::encode_compressed(&batch, batch.message_id()).unwrap();
    assert_eq!(message.headers.get(HEADER_ENCODING), Some("zstd"));
    let plain = serde_json::to_vec(&batch).unwrap();
    assert!(
        message.payload.len() * 4 < plain.len(),
        "zstd did not shrink the batch"
    );
    bus.publish_durable(message).await.unwrap();
    let (back, delivery) =
        tokio::time::timeout(Duration::from_secs(15), sub.next_payload::<EventBatch>())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    assert_eq!(back, batch);
    delivery.ack().await.unwrap();
}

async fn applies_backpressure_instead_of_growing(fixture: Fixture) {
    let bus = Arc::clone(&fixture.bus);
    // The consumer exists before anything is published, so every message is kept for it.
    let consumer = spec("slow", None);
    bus.ensure_consumer(&consumer).await.unwrap();
    for i in 0..SMALL_STREAM {
        publish(bus.as_ref(), events_of("acme"), &format!("bp-{i}"), "fill").await;
    }
    let blocked = tokio::spawn({
        let bus = Arc::clone(&bus);
        async move { publish(bus.as_ref(), events_of("acme"), "bp-overflow", "overflow").await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !blocked.is_finished(),
        "publish into a full stream completed without waiting"
    );
    let mut sub = bus.subscribe(consumer).await.unwrap();
    let mut bodies = Vec::new();
    for _ in 0..=SMALL_STREAM {
        let delivery = next(&mut sub).await;
        bodies.push(text(&delivery));
        delivery.ack().await.unwrap();
    }
    assert!(!blocked.await.unwrap(), "overflow publish was not stored");
    assert_eq!(bodies.last().map(String::as_str), Some("overflow"));
}

async fn shares_one_consumer_between_instances(fixture: Fixture) {
    let bus = fixture.bus.as_ref();
    let mut first = bus.subscribe(spec("shared", None)).await.unwrap();
    let mut second = bus.subscribe(spec("shared", None)).await.unwrap();
    for i in 0..6 {
        publish(bus, events_of("acme"), &format!("s-{i}"), &i.to_string()).await;
    }
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let delivery = tokio::select! {
            d = next(&mut first) => d,
            d = next(&mut second) => d,
        };
        seen.push(text(&delivery));
        delivery.ack().await.unwrap();
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2", "3", "4", "5"]);
    assert!(quiet(&mut first, Duration::from_millis(1500)).await);
    assert!(quiet(&mut second, Duration::from_millis(100)).await);
}

async fn rejects_invalid_consumers(fixture: Fixture) {
    let bus = fixture.bus.as_ref();
    let mut bad = spec("has space", None);
    let err = bus.subscribe(bad.clone()).await.unwrap_err();
    assert!(
        err.to_string().contains("consumer name \"has space\""),
        "{err}"
    );
    bad.name = "ok".into();
    bad.max_deliveries = 0;
    let err = bus.subscribe(bad).await.unwrap_err();
    assert!(err.to_string().contains("greater than zero"), "{err}");
}

/// A consumer of one partition gets only that partition's messages of its tenant, one at a
/// time: a refused message comes back before the next one.
async fn partitions_deliver_one_at_a_time_in_order(fixture: Fixture) {
    let bus = fixture.bus.as_ref();
    let partition_spec = |partition: u32| {
        let mut spec = ConsumerSpec::new("parts", Stage::Correlate, Some(tenant("acme")));
        spec.partition = Some(partition);
        spec.ack_wait = Duration::from_secs(5);
        spec.max_deliveries = 5;
        spec.max_in_flight = 1;
        spec
    };
    let mut one = bus.subscribe(partition_spec(1)).await.unwrap();
    let mut two = bus.subscribe(partition_spec(2)).await.unwrap();
    assert_eq!(partition_spec(1).filter_subject(), "vigil.acme.correlate.1");
    assert_eq!(partition_spec(1).durable_name(), "parts-acme-p1");
    let to = |name: &str, partition: u32| {
        Subject::partitioned(tenant(name), Stage::Correlate, partition)
    };
    for (id, subject) in [
        ("a", to("acme", 1)),
        ("b", to("acme", 2)),
        ("c", to("globex", 1)),
        ("d", to("acme", 1)),
    ] {
        assert!(!publish(bus, subject, id, id).await);
    }
    let first = next(&mut one).await;
    assert_eq!(
        (text(&first).as_str(), first.subject.partition),
        ("a", Some(1))
    );
    // The next message of the partition waits for the first to be settled, even refused.
    assert!(quiet(&mut one, Duration::from_millis(500)).await);
    first.nak(Some(Duration::from_millis(300))).await.unwrap();
    let again = next(&mut one).await;
    assert_eq!((text(&again).as_str(), again.deliveries), ("a", 2));
    again.ack().await.unwrap();
    let second = next(&mut one).await;
    assert_eq!(text(&second), "d");
    second.ack().await.unwrap();
    let other = next(&mut two).await;
    assert_eq!(text(&other), "b");
    other.ack().await.unwrap();
    // globex's message is for no consumer here.
    assert!(quiet(&mut one, Duration::from_millis(300)).await);

    let mut wrong = spec("parts", None);
    wrong.partition = Some(1);
    let err = bus.subscribe(wrong).await.unwrap_err();
    assert!(err.to_string().contains("no partitions"), "{err}");
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::in_process()).await
                }
            )*
        }
        mod jetstream {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::jetstream().await).await
                }
            )*
        }
    };
}

conformance!(
    keeps_order_per_subject,
    redelivers_what_was_not_acked,
    redelivers_after_nak_delay_and_respects_in_progress,
    drops_duplicates_within_the_window,
    keeps_tenants_apart,
    dead_letters_after_max_deliveries,
    dead_letters_undecodable_payloads,
    applies_backpressure_instead_of_growing,
    shares_one_consumer_between_instances,
    rejects_invalid_consumers,
    carries_compressed_batches,
    partitions_deliver_one_at_a_time_in_order,
);
