// A benchmark binary: it reports on stdout and stops at the first error.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

//! Bus throughput on a real `nats-server` (file storage), Vigil's JetStream bus against raw
//! async-nats with the same payloads, stream settings and pipelining, in the same run.
//!
//! `cargo xtask bench bus [--messages N] [--runs N] [--batch N]`
//!
//! Scenarios, each with a publisher and a consumer running at the same time; a run ends when
//! the consumer has acknowledged every message:
//! 1. raw async-nats, one event per message;
//! 2. Vigil's bus, one event per message (the overhead figure compares 2 with 1);
//! 3. Vigil's bus, `--batch` events per message as an `EventBatch`, pre-encoded;
//! 4. as 3, compressed with zstd level 1 beforehand;
//! 5. `EventBatch`es encoded (JSON, zstd) in the publisher and decoded in the consumer.
//!
//! Both sides use mimalloc, the allocator of the `vigil` binary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use vigil_bus::jetstream::{JetStreamBus, JetStreamConfig};
use vigil_bus::{Bus, ConsumerSpec, OutgoingMessage, Subject};
use vigil_e2e::NatsServer;
use vigil_schema::{
    Entities, Event, EventBatch, EventId, FieldValue, Fields, Logsource, RawRecord, Source, Stage,
    TenantId,
};

const WINDOW: usize = 4096;

// The allocator of the `vigil` binary, for both sides of the comparison.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    messages: usize,
    runs: usize,
    batch: usize,
}

fn args() -> Args {
    let mut args = Args {
        messages: 200_000,
        runs: 3,
        batch: 100,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut value = || {
            iter.next()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        };
        match arg.as_str() {
            "--messages" => args.messages = value(),
            "--runs" => args.runs = value(),
            "--batch" => args.batch = value(),
            // `cargo bench` passes `--bench`; ignore it and anything unknown.
            _ => {}
        }
    }
    args.messages = args.messages.max(1);
    args.runs = args.runs.max(1);
    args.batch = args.batch.max(1);
    args
}

/// Real sshd log lines (loghub's OpenSSH_2k.log), so that payload sizes and compression ratios
/// are those of real logs rather than of one repeated synthetic record.
fn log_lines() -> Vec<String> {
    let path = vigil_e2e::shared_dir().join("data/loghub/OpenSSH_2k.log");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{}: {err} (set VIGIL_SHARED_DIR)", path.display()));
    text.lines().map(str::to_owned).collect()
}

/// The word after `marker` in `line`.
fn word_after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.split_whitespace().next()
}

/// A normalized event as ingest would make it from one sshd syslog line.
fn sample_event(tenant: &TenantId, lines: &[String], i: usize) -> Event {
    let line = &lines[i % lines.len()];
    let now = time::OffsetDateTime::now_utc();
    let user = word_after(line, "user ").or_else(|| word_after(line, "for "));
    let ip = word_after(line, "from ").and_then(|w| w.parse().ok());
    let pid = line
        .split_once("sshd[")
        .and_then(|(_, rest)| rest.split(']').next())
        .and_then(|pid| pid.parse::<i64>().ok());
    let message = line.split_once("]: ").map_or(line.as_str(), |(_, m)| m);
    let mut fields = vec![
        ("hostname", FieldValue::from("LabSZ")),
        ("program", FieldValue::from("sshd")),
        ("message", FieldValue::from(message)),
        ("facility", FieldValue::from("auth")),
        ("severity", FieldValue::from("info")),
    ];
    if let Some(pid) = pid {
        fields.push(("pid", FieldValue::Int(pid)));
    }
    Event {
        id: EventId::derive(&[tenant.as_str().as_bytes(), &i.to_le_bytes()]),
        tenant: tenant.clone(),
        event_time: now,
        received_time: now,
        source: Source {
            transport: "syslog".into(),
            format: "syslog-rfc3164".into(),
            peer: Some("10.20.30.40".into()),
        },
        logsource: Logsource {
            product: Some("linux".into()),
            category: None,
            service: Some("sshd".into()),
        },
        entities: Entities {
            user: user.map(str::to_owned),
            host: Some("LabSZ".into()),
            src_ip: ip,
            dst_ip: None,
            process: Some("sshd".into()),
        },
        fields: Fields::from_pairs(fields),
        raw: Some(RawRecord::new(line)),
        parse_error: None,
    }
}

struct Outcome {
    messages_per_second: f64,
    events_per_second: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn stream_config(name: &str, subject: &str) -> stream::Config {
    // The same settings Vigil uses for its stage streams.
    let mut config = JetStreamConfig::new("").stream_config(Stage::Events);
    config.name = name.to_owned();
    config.subjects = vec![subject.to_owned()];
    config
}

async fn raw_run(url: &str, payloads: &[Bytes], run: usize) -> Outcome {
    let client = async_nats::connect(url).await.unwrap();
    let context = jetstream::ContextBuilder::new()
        .max_ack_inflight(WINDOW)
        .backpressure_on_inflight(true)
        .build(client.clone());
    let name = format!("RAW_{run}");
    let stream = context
        .create_stream(stream_config(&name, &format!("raw{run}.*.events")))
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: WINDOW as i64 * 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let total = payloads.len();
    let started = Instant::now();
    let consume = tokio::spawn(async move {
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(1024)
            .messages()
            .await
            .unwrap();
        let mut seen = 0;
        while seen < total {
            let message = messages.next().await.unwrap().unwrap();
            message.ack().await.unwrap();
            seen += 1;
        }
    });
    let subject = format!("raw{run}.acme.events");
    let mut acks = std::collections::VecDeque::with_capacity(WINDOW);
    for (i, payload) in payloads.iter().enumerate() {
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .message_id(format!("raw-{run}-{i}"));
        acks.push_back(
            context
                .send_publish(subject.clone(), publish)
                .await
                .unwrap(),
        );
        if acks.len() >= WINDOW {
            acks.pop_front().unwrap().await.unwrap();
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
    consume.await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    context.delete_stream(&name).await.unwrap();
    Outcome {
        messages_per_second: total as f64 / seconds,
        events_per_second: total as f64 / seconds,
    }
}

enum Payloads<'a> {
    Encoded(&'a [Bytes], usize),
    Compressed(&'a [Bytes], usize),
    Batches(&'a [EventBatch]),
}

async fn vigil_run(
    bus: &JetStreamBus,
    payloads: Payloads<'_>,
    total: usize,
    run: usize,
) -> Outcome {
    let tenant = TenantId::new(&format!("bench{run}")).unwrap();
    let mut spec = ConsumerSpec::new("bench", Stage::Events, Some(tenant.clone()));
    let durable = spec.durable_name();
    spec.max_in_flight = WINDOW * 2;
    bus.ensure_consumer(&spec).await.unwrap();
    let mut subscription = bus.subscribe(spec).await.unwrap();
    let (events_per_message, decode) = match &payloads {
        Payloads::Encoded(_, per) | Payloads::Compressed(_, per) => (*per, false),
        Payloads::Batches(items) => (items[0].events.len(), true),
    };
    let started = Instant::now();
    let consume = tokio::spawn(async move {
        let mut seen = 0;
        let mut events = 0;
        while seen < total {
            if decode {
                let (batch, delivery) = subscription
                    .next_payload::<EventBatch>()
                    .await
                    .unwrap()
                    .unwrap();
                events += batch.events.len();
                delivery.ack().await.unwrap();
            } else {
                let delivery = subscription.next().await.unwrap().unwrap();
                delivery.ack().await.unwrap();
            }
            seen += 1;
        }
        events
    });
    let subject = Subject::new(tenant.clone(), Stage::Events);
    let mut acks = std::collections::VecDeque::with_capacity(WINDOW);
    for i in 0..total {
        let message = match &payloads {
            Payloads::Encoded(items, _) => OutgoingMessage::new(
                subject.clone(),
                format!("v-{run}-{i}"),
                items[i % items.len()].clone(),
            ),
            Payloads::Compressed(items, _) => {
                let mut message = OutgoingMessage::new(
                    subject.clone(),
                    format!("c-{run}-{i}"),
                    items[i % items.len()].clone(),
                );
                message.headers.insert(vigil_bus::HEADER_ENCODING, "zstd");
                message
            }
            Payloads::Batches(items) => {
                let mut batch = items[i % items.len()].clone();
                batch.tenant = tenant.clone();
                for event in &mut batch.events {
                    event.tenant = tenant.clone();
                }
                OutgoingMessage::encode_compressed(&batch, format!("b-{run}-{i}")).unwrap()
            }
        };
        acks.push_back(bus.publish(message).await.unwrap());
        if acks.len() >= WINDOW {
            acks.pop_front().unwrap().await.unwrap();
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let decoded_events = consume.await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    // Like the raw run's stream, the consumer goes away after its run: consumers left on the
    // stream would make every later publish check their interest.
    let context = jetstream::new(bus.client().clone());
    context
        .get_stream(vigil_bus::stream_name(Stage::Events))
        .await
        .unwrap()
        .delete_consumer(&durable)
        .await
        .unwrap();
    if decode {
        assert_eq!(decoded_events, total * events_per_message);
    }
    Outcome {
        messages_per_second: total as f64 / seconds,
        events_per_second: (total * events_per_message) as f64 / seconds,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let server = NatsServer::start().expect("nats-server");
    let tenant = TenantId::new("acme").unwrap();
    let lines = log_lines();
    let single: Vec<Bytes> = (0..args.messages)
        .map(|i| Bytes::from(serde_json::to_vec(&sample_event(&tenant, &lines, i)).unwrap()))
        .collect();
    let event_bytes = single.iter().map(Bytes::len).sum::<usize>() / single.len();
    // A thousand distinct batches, sent round-robin with fresh message ids: memory stays small.
    let batch_count = (args.messages / 10).clamp(1, 1000);
    let batch_messages = (args.messages / 10).max(1);
    let batches: Vec<EventBatch> = (0..batch_count)
        .map(|b| EventBatch {
            tenant: tenant.clone(),
            events: (0..args.batch)
                .map(|i| sample_event(&tenant, &lines, b * args.batch + i))
                .collect(),
        })
        .collect();
    let encoded_batches: Vec<Bytes> = batches
        .iter()
        .map(|batch| Bytes::from(serde_json::to_vec(batch).unwrap()))
        .collect();
    let batch_bytes = encoded_batches[0].len();
    let compressed_batches: Vec<Bytes> = encoded_batches
        .iter()
        .map(|batch| Bytes::from(zstd::bulk::compress(batch, 1).unwrap()))
        .collect();
    let compressed_bytes = compressed_batches[0].len();

    let mut config = JetStreamConfig::new(server.url());
    config.max_publish_in_flight = WINDOW;
    let bus = Arc::new(JetStreamBus::connect(config).await.unwrap());

    let mut raw = Vec::new();
    let mut vigil = Vec::new();
    let mut batched = Vec::new();
    let mut batched_codec = Vec::new();
    let mut batched_compressed = Vec::new();
    for run in 0..args.runs {
        // Alternate so neither side always gets the warmer server.
        raw.push(
            raw_run(&server.url(), &single, run)
                .await
                .messages_per_second,
        );
        vigil.push(
            vigil_run(&bus, Payloads::Encoded(&single, 1), single.len(), run)
                .await
                .messages_per_second,
        );
        batched.push(
            vigil_run(
                &bus,
                Payloads::Encoded(&encoded_batches, args.batch),
                batch_messages,
                100 + run,
            )
            .await
            .events_per_second,
        );
        batched_compressed.push(
            vigil_run(
                &bus,
                Payloads::Compressed(&compressed_batches, args.batch),
                batch_messages,
                300 + run,
            )
            .await
            .events_per_second,
        );
        batched_codec.push(
            vigil_run(&bus, Payloads::Batches(&batches), batch_messages, 200 + run)
                .await
                .events_per_second,
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("per run, raw msg/s: {raw:.0?}");
    println!("per run, vigil msg/s: {vigil:.0?}");
    let raw_rate = median(raw);
    let vigil_rate = median(vigil);
    let overhead = (1.0 - vigil_rate / raw_rate) * 100.0;
    println!(
        "bus benchmark: {} messages per run, median of {} runs, nats-server on 127.0.0.1, file storage, events from loghub OpenSSH_2k.log",
        args.messages, args.runs
    );
    println!(
        "event payload: {event_bytes} bytes (JSON); batch: {} events, {batch_bytes} bytes, {compressed_bytes} bytes with zstd-1",
        args.batch
    );
    println!("raw async-nats, 1 event/message:        {raw_rate:>10.0} msg/s");
    println!(
        "vigil bus, 1 event/message:             {vigil_rate:>10.0} msg/s  (overhead {overhead:.1} %)"
    );
    println!(
        "vigil bus, {} events/message:           {:>10.0} events/s (pre-encoded)",
        args.batch,
        median(batched)
    );
    println!(
        "vigil bus, {} events/message, zstd:     {:>10.0} events/s (pre-encoded)",
        args.batch,
        median(batched_compressed)
    );
    println!(
        "vigil bus, {} events/message, JSON+zstd: {:>9.0} events/s (encode, compress, decompress, decode included)",
        args.batch,
        median(batched_codec)
    );
}
