//! A real gRPC hop carries the trace: the server's request span is the child of the client's
//! span, exported over OTLP to an in-process collector. The service is tonic's health service;
//! the client uses Vigil's interceptor and the server Vigil's `server_span`.

// Test helpers panic with the value: the clearest failure a test can give.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fake_opentelemetry_collector::FakeCollectorServer;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;
use vigil_telemetry::grpc::{TraceContextInterceptor, server_span};
use vigil_telemetry::{OtlpSettings, TelemetryConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_span_is_a_child_of_the_client_span() {
    let mut collector = FakeCollectorServer::start().await.unwrap();
    let telemetry = vigil_telemetry::init(
        &TelemetryConfig::default(),
        Some(OtlpSettings::grpc(collector.endpoint())),
    )
    .unwrap();

    let (_reporter, health_service) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move {
            tonic::transport::Server::builder()
                .trace_fn(server_span)
                .add_service(health_service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await
        }
    });

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::with_interceptor(channel, TraceContextInterceptor);
    let call_span = tracing::info_span!("cli.call");
    let response = async {
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
    }
    .instrument(call_span.clone())
    .await
    .unwrap();
    assert_eq!(
        response.into_inner().status,
        1,
        "health service not SERVING"
    );

    drop(call_span);
    stop.cancel();
    server.await.unwrap().unwrap();
    telemetry.shutdown();
    let spans = collector.exported_spans(2, Duration::from_secs(10)).await;
    let find = |name: &str| {
        spans
            .iter()
            .find(|span| span.name == name)
            .unwrap_or_else(|| panic!("span {name} not exported: {spans:?}"))
    };
    let client_span = find("cli.call");
    let request_span = find("grpc.request");
    assert_eq!(request_span.trace_id, client_span.trace_id, "not one trace");
    assert_eq!(request_span.parent_span_id, client_span.span_id);
    let method = request_span
        .attributes
        .get("rpc.method")
        .cloned()
        .unwrap_or_default();
    assert!(method.contains("/grpc.health.v1.Health/Check"), "{method}");
}
