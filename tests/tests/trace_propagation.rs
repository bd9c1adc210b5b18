//! One event's path is one trace: a consumer's span is the child of the publisher's span across
//! a real JetStream hop, exported over OTLP to an in-process collector; and gRPC metadata
//! carries the same context.

// Test helpers panic with the value: the clearest failure a test can give.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fake_opentelemetry_collector::FakeCollectorServer;
use opentelemetry::trace::TraceContextExt;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use vigil_bus::jetstream::{JetStreamBus, JetStreamConfig};
use vigil_bus::{Bus, ConsumerSpec, OutgoingMessage, Subject};
use vigil_e2e::NatsServer;
use vigil_schema::{Stage, TenantId};
use vigil_telemetry::{OtlpSettings, TelemetryConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_span_is_a_child_of_the_publisher_span() {
    let mut collector = FakeCollectorServer::start().await.unwrap();
    let telemetry = vigil_telemetry::init(
        &TelemetryConfig {
            log_filter: "info".into(),
            ..TelemetryConfig::default()
        },
        Some(OtlpSettings::grpc(collector.endpoint())),
    )
    .unwrap();
    assert!(telemetry.exporting());

    let nats = NatsServer::start().unwrap();
    let bus = JetStreamBus::connect(JetStreamConfig::new(nats.url()))
        .await
        .unwrap();
    let tenant = TenantId::new("acme").unwrap();
    let mut subscription = bus
        .subscribe(ConsumerSpec::new(
            "trace",
            Stage::Events,
            Some(tenant.clone()),
        ))
        .await
        .unwrap();

    let publish_span = tracing::info_span!("ingest.publish", tenant = %tenant);
    async {
        let message = OutgoingMessage::new(
            Subject::new(tenant.clone(), Stage::Events),
            "trace-1",
            "payload",
        );
        assert!(
            message.headers.get("traceparent").is_some(),
            "no traceparent header"
        );
        bus.publish_durable(message).await.unwrap();
    }
    .instrument(publish_span.clone())
    .await;

    let delivery = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let consume_span = tracing::info_span!("detect.consume", tenant = %delivery.subject.tenant);
    delivery.follow(&consume_span);
    consume_span.in_scope(|| tracing::info!("evaluating rules"));
    delivery.ack().await.unwrap();

    // gRPC: the same context survives metadata injection and extraction.
    let mut metadata = tonic::metadata::MetadataMap::new();
    consume_span.in_scope(|| vigil_telemetry::grpc::inject_current(&mut metadata));
    let extracted = vigil_telemetry::grpc::extract(&metadata);
    let consume_context = consume_span.context();
    assert_eq!(
        extracted.span().span_context().trace_id(),
        consume_context.span().span_context().trace_id()
    );
    assert_eq!(
        extracted.span().span_context().span_id(),
        consume_context.span().span_context().span_id()
    );

    drop(publish_span);
    drop(consume_span);
    telemetry.shutdown();
    let spans = collector.exported_spans(2, Duration::from_secs(10)).await;
    let find = |name: &str| {
        spans
            .iter()
            .find(|span| span.name == name)
            .unwrap_or_else(|| panic!("span {name} not exported: {spans:?}"))
    };
    let publisher = find("ingest.publish");
    let consumer = find("detect.consume");
    assert_eq!(consumer.trace_id, publisher.trace_id, "not one trace");
    assert_eq!(
        consumer.parent_span_id, publisher.span_id,
        "consumer is not the publisher's child"
    );
    let tenant_attribute = consumer
        .attributes
        .get("tenant")
        .cloned()
        .unwrap_or_default();
    assert!(tenant_attribute.contains("\"acme\""), "{tenant_attribute}");
}
