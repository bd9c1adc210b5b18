//! Syslog over TCP to JetStream against raw async-nats, in one run on one nats-server started by
//! the benchmark.
//!
//! `cargo xtask bench syslog [--lines N] [--connections N]`
//! - ingest: loghub's OpenSSH and Linux lines (RFC 3164 with a priority), cycled, newline framed
//!   over `--connections` TCP connections as fast as the listener reads them; the clock stops
//!   when every line is on JetStream as a normalized event (read back from a consumer);
//! - raw: the same lines published by async-nats one JetStream message each, pipelined.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

/// The `vigil` binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use vigil_bus::{Bus, ConsumerSpec};
use vigil_schema::{EventBatch, Stage, TenantId};
use vigil_store::Store;

fn main() {
    let total = vigil_e2e::bench_arg("--lines", 1_000_000);
    let connections = vigil_e2e::bench_arg("--connections", 4).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let shared = vigil_e2e::shared_dir().join("data/loghub");
        let mut source = Vec::new();
        for log in ["OpenSSH_2k.log", "Linux_2k.log"] {
            let text = std::fs::read_to_string(shared.join(log)).unwrap();
            source.extend(text.lines().map(|line| format!("<38>{line}")));
        }
        let lines: Vec<&str> = (0..total).map(|n| source[n % source.len()].as_str()).collect();
        let bytes: usize = lines.iter().map(|line| line.len() + 1).sum();
        println!(
            "{total} syslog lines from loghub's OpenSSH and Linux logs, {} bytes on average, {connections} TCP connections",
            bytes / total.max(1)
        );

        let nats = vigil_e2e::NatsServer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("v.db").display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let tenant = TenantId::new("acme").unwrap();
        store.platform().create_tenant(&tenant, "acme", 0).await.unwrap();
        let bus: Arc<dyn Bus> = Arc::new(
            vigil_bus::jetstream::JetStreamBus::connect(
                vigil_bus::jetstream::JetStreamConfig::new(nats.url()),
            )
            .await
            .unwrap(),
        );
        let spec = ConsumerSpec::new("bench", Stage::Events, Some(tenant.clone()));
        bus.ensure_consumer(&spec).await.unwrap();
        let port = vigil_e2e::free_port().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let context = vigil_runtime::ServiceContext {
            bus: Arc::clone(&bus),
            store: store.clone(),
            shutdown: shutdown.clone(),
            readiness: Default::default(),
        };
        let config = vigil_ingest::Config {
            http_listen: ([127, 0, 0, 1], vigil_e2e::free_port().unwrap()).into(),
            syslog: vigil_ingest::syslog::SyslogConfig {
                udp_listen: None,
                tcp_listen: Some(([127, 0, 0, 1], port).into()),
                tls_listen: None,
                tenant: Some(tenant.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        tokio::spawn(vigil_ingest::run(context, config));
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Ingest over TCP: senders write as fast as the listener reads; a consumer counts the
        // events on JetStream.
        let mut subscription = bus.subscribe(spec).await.unwrap();
        let began = Instant::now();
        let mut senders = tokio::task::JoinSet::new();
        for part in lines.chunks(total.div_ceil(connections)) {
            let mut payload = Vec::with_capacity(part.iter().map(|l| l.len() + 1).sum());
            for line in part {
                payload.extend_from_slice(line.as_bytes());
                payload.push(b'\n');
            }
            senders.spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                stream.write_all(&payload).await.unwrap();
                stream.shutdown().await.unwrap();
            });
        }
        let mut seen = 0;
        while seen < total {
            let next = tokio::time::timeout(Duration::from_secs(30), subscription.next_payload::<EventBatch>())
                .await
                .expect("events stopped arriving");
            let (batch, delivery) = next.unwrap().unwrap();
            seen += batch.events.len();
            delivery.ack().await.unwrap();
        }
        let ingest_rate = seen as f64 / began.elapsed().as_secs_f64();
        while senders.join_next().await.is_some() {}
        println!("ingest: syslog over TCP, newline framing, to JetStream-acknowledged events: {ingest_rate:.0} lines/s");

        // Raw async-nats: one JetStream message per line, pipelined.
        let raw_rate = vigil_e2e::raw_jetstream_rate(
            &nats.url(),
            "vigil.raw.events",
            lines.iter().map(|line| line.as_bytes().to_vec()),
        )
        .await
        .unwrap();
        println!("raw async-nats: one JetStream message per line, pipelined: {raw_rate:.0} lines/s");
        shutdown.cancel();
    });
}
