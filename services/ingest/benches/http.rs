//! HTTP ingest throughput and acknowledgement latency against raw async-nats, in one run on one
//! nats-server started by the benchmark.
//!
//! `cargo xtask bench ingest [--events N] [--batch N] [--concurrency N] [--seconds N]`
//! - ingest: NDJSON requests of `--batch` ~500-byte events, `--concurrency` in flight, each
//!   answered only after JetStream acknowledged its events;
//! - raw: the same events published by async-nats one JetStream message each, pipelined;
//! - latency: 20,000 events/s offered as requests of 100 events, p50/p99 of the answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

// The allocator of the `vigil` binary, so that the figures are what `vigil run` does; with
// glibc's malloc a fifth of the samples of a profile were malloc and free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use hdrhistogram::Histogram;
use vigil_auth::{MasterKey, Role, Scope, SigningKey, TokenRequest, TokenSettings};
use vigil_bus::{Bus, ConsumerSpec};
use vigil_schema::{Stage, TenantId};
use vigil_store::{KeyRecord, Store};

/// About 500 bytes of an sshd event as a shipper would send it, varied per index.
fn event(n: usize) -> String {
    let user = ["root", "admin", "oracle", "ubuntu"][n % 4];
    serde_json::json!({
        "@timestamp": format!("2026-11-27T10:{:02}:{:02}.{:03}Z", (n / 60) % 60, n % 60, n % 1000),
        "host": {"name": format!("bastion-{}", n % 7)},
        "process": {"name": "sshd", "pid": 4000 + n % 900},
        "source": {"ip": format!("203.0.113.{}", n % 250), "port": 40000 + n % 20000},
        "user": {"name": user},
        "event": {"category": "authentication", "outcome": "failure", "sequence": n},
        "message": format!("Failed password for {user} from 203.0.113.{} port {} ssh2", n % 250, 40000 + n % 20000),
        "log": {"file": {"path": "/var/log/auth.log"}, "offset": n * 512},
        "agent": {"type": "filebeat", "version": "8.15.0", "id": format!("7f3c2a10-5b1e-4c9d-8e2f-{:012x}", n % 9973)},
        "ecs": {"version": "8.11.0"}
    })
    .to_string()
}

fn main() {
    let total = vigil_e2e::bench_arg("--events", 1_000_000);
    let batch = vigil_e2e::bench_arg("--batch", 1000);
    let concurrency = vigil_e2e::bench_arg("--concurrency", 4);
    let seconds = vigil_e2e::bench_arg("--seconds", 10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let nats = vigil_e2e::NatsServer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("v.db").display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let tenant = TenantId::new("acme").unwrap();
        store.platform().create_tenant(&tenant, "acme", 0).await.unwrap();
        let master = MasterKey::generate().unwrap();
        let key = SigningKey::generate(Some(tenant.clone())).unwrap();
        store
            .platform()
            .insert_key(KeyRecord {
                kid: key.kid().to_owned(),
                tenant: Some("acme".into()),
                public_key: key.public_key().to_vec(),
                sealed_private_key: key.seal(&master).unwrap(),
                created_at: 0,
                not_after: None,
            })
            .await
            .unwrap();
        let token = vigil_auth::issue(
            &TokenSettings::default(),
            &key,
            &TokenRequest {
                subject: "bench".into(),
                role: Role::Ingest,
                scope: Scope::tenant(tenant.clone()),
                ttl: Duration::from_secs(3600),
            },
        )
        .unwrap()
        .token;
        let bus: Arc<dyn Bus> = Arc::new(
            vigil_bus::jetstream::JetStreamBus::connect(
                vigil_bus::jetstream::JetStreamConfig::new(nats.url()),
            )
            .await
            .unwrap(),
        );
        bus.ensure_consumer(&ConsumerSpec::new("bench", Stage::Events, Some(tenant.clone())))
            .await
            .unwrap();
        let port = vigil_e2e::free_port().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let context = vigil_runtime::ServiceContext {
            bus: Arc::clone(&bus),
            store: store.clone(),
            shutdown: shutdown.clone(),
            readiness: Default::default(),
        };
        let config = vigil_ingest::Config {
            http_listen: ([127, 0, 0, 1], port).into(),
            syslog: vigil_ingest::syslog::SyslogConfig {
                udp_listen: None,
                tcp_listen: None,
                ..Default::default()
            },
            ..Default::default()
        };
        tokio::spawn(vigil_ingest::run(context, config));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let url = format!("http://127.0.0.1:{port}/v1/events");
        let events: Vec<String> = (0..total).map(event).collect();
        let bytes: usize = events.iter().map(String::len).sum();
        println!(
            "{total} events, {} bytes on average",
            bytes / total.max(1)
        );

        // Ingest over HTTP.
        let bodies: Vec<String> = events.chunks(batch).map(|chunk| chunk.join("\n")).collect();
        let http = reqwest::Client::new();
        let began = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let bodies = Arc::new(bodies);
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (http, url, token, next, bodies) = (
                http.clone(),
                url.clone(),
                token.clone(),
                Arc::clone(&next),
                Arc::clone(&bodies),
            );
            workers.spawn(async move {
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = bodies.get(index) else { break };
                    let response = http
                        .post(&url)
                        .bearer_auth(&token)
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status().as_u16(), 200);
                }
            });
        }
        while workers.join_next().await.is_some() {}
        let ingest_rate = total as f64 / began.elapsed().as_secs_f64();
        println!(
            "ingest: HTTP NDJSON, {batch} events per request, {concurrency} in flight, answered after JetStream ack: {ingest_rate:.0} events/s"
        );

        // Raw async-nats: one JetStream message per event, pipelined.
        let raw_rate = vigil_e2e::raw_jetstream_rate(
            &nats.url(),
            "vigil.raw.events",
            events.iter().map(|event| event.clone().into_bytes()),
        )
        .await
        .unwrap();
        println!("raw async-nats: one JetStream message per event, pipelined: {raw_rate:.0} events/s");

        // Acknowledgement latency at 20,000 events/s offered (200 requests/s of 100 events).
        let mut latency = Histogram::<u64>::new(3).unwrap();
        let small: Vec<String> = events.chunks(100).take(200 * seconds).map(|c| c.join("\n")).collect();
        let mut interval = tokio::time::interval(Duration::from_millis(5));
        let mut in_flight = tokio::task::JoinSet::new();
        for body in small {
            interval.tick().await;
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            in_flight.spawn(async move {
                let began = Instant::now();
                let response = http.post(&url).bearer_auth(&token).body(body).send().await.unwrap();
                assert_eq!(response.status().as_u16(), 200);
                began.elapsed()
            });
            while let Some(Ok(elapsed)) = in_flight.try_join_next() {
                latency.record(elapsed.as_micros() as u64).unwrap();
            }
        }
        while let Some(Ok(elapsed)) = in_flight.join_next().await {
            latency.record(elapsed.as_micros() as u64).unwrap();
        }
        println!(
            "ack latency at 20,000 events/s (requests of 100): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            latency.value_at_quantile(0.5) as f64 / 1000.0,
            latency.value_at_quantile(0.99) as f64 / 1000.0,
            latency.max() as f64 / 1000.0
        );
        shutdown.cancel();
    });
}
