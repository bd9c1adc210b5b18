//! Detection throughput and threat-intel lookups.
//!
//! `cargo xtask bench detect [--events N] [--indicators N] [--windows-percent P]`:
//! 1. a feed of N indicators (default 1,000,000: IPv4 addresses, networks, domains, SHA-256
//!    digests) parsed and indexed: time, memory, nanoseconds per lookup;
//! 2. the engine alone: batches of 500 events (P% SigmaHQ's regression records, default 80, the
//!    rest loghub's OpenSSH and Linux syslog, cycled; each event carries its record's text as
//!    `raw`, as ingest sends it) against every SigmaHQ rule and the feed;
//! 3. the service: the same batches in JetStream (its own nats-server), drained by the detect
//!    service with every SigmaHQ rule and the feed loaded, publishing alerts; beside it, in the
//!    same run, a consumer that only decodes and acknowledges the batches (the bus's ceiling).
//!    With `--correlation 1`, a correlation counting every Windows event per host is loaded
//!    too (it never fires), so every Windows event also goes through the correlation
//!    partitions, and the service is timed until they are drained as well.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use vigil_bus::jetstream::{JetStreamBus, JetStreamConfig};
use vigil_bus::{Bus, ConsumerSpec, OutgoingMessage};
use vigil_detect::content::{Content, Sources, build_global};
use vigil_detect::evaluate::{TenantState, evaluate_batch};
use vigil_intel::{IntelBuilder, parse_feed};
use vigil_runtime::{Readiness, ServiceContext};
use vigil_schema::{AlertBatch, Event, EventBatch, EventBatchWithoutRaw, Stage, TenantId};

mod support;

/// The `vigil` binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 500;

fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let pick = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (pick("VmRSS:"), pick("VmHWM:"))
}

/// A small deterministic generator (xorshift), so every run indexes the same feed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn feed(count: usize) -> (String, Vec<String>, Vec<String>, Vec<String>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut text = String::with_capacity(count * 24);
    let (mut ips, mut domains, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..count {
        let r = rng.next();
        let line = match n % 10 {
            0..=6 => {
                let ip = format!(
                    "{}.{}.{}.{}",
                    r >> 24 & 0xff,
                    r >> 16 & 0xff,
                    r >> 8 & 0xff,
                    r & 0xff
                );
                ips.push(ip.clone());
                ip
            }
            7 => format!(
                "{}.{}.{}.0/24",
                r >> 24 & 0xff,
                r >> 16 & 0xff,
                r >> 8 & 0xff
            ),
            8 => {
                let domain = format!("h{:x}.example{}.net", r, n % 97);
                domains.push(domain.clone());
                domain
            }
            _ => {
                let hash = format!(
                    "{:016x}{:016x}{:016x}{:016x}",
                    r,
                    rng.next(),
                    rng.next(),
                    rng.next()
                );
                hashes.push(hash.clone());
                hash
            }
        };
        text.push_str(&line);
        text.push('\n');
    }
    (text, ips, domains, hashes)
}

fn sigma_dirs(shared: &Path) -> Vec<PathBuf> {
    ["rules", "rules-emerging-threats", "rules-threat-hunting"]
        .iter()
        .map(|d| shared.join("data/sigma").join(d))
        .collect()
}

/// A correlation over every Windows event, per host, that never fires: the correlation
/// partitions' work without alerts of its own.
const CORRELATION: &str = r"
title: Bench any Windows event
id: 7e1c0000-0000-4000-8000-0000000000b1
name: bench_any_windows
logsource:
    product: windows
detection:
    sel:
        EventID|gt: 0
    condition: sel
level: informational
---
title: Bench Windows events per host
id: 7e1c0000-0000-4000-8000-0000000000b2
correlation:
    type: event_count
    rules:
        - bench_any_windows
    group-by:
        - Computer
    timespan: 1m
    condition:
        gte: 1000000000
level: low
";

fn main() {
    let total = vigil_e2e::bench_arg("--events", 200_000);
    let correlation = vigil_e2e::bench_arg("--correlation", 0) != 0;
    let indicators = vigil_e2e::bench_arg("--indicators", 1_000_000);
    let shared = vigil_e2e::shared_dir();
    let tenant = TenantId::new("bench").unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    // 1. The feed.
    let (text, ips, domains, hashes) = feed(indicators);
    let feed_dir = tempfile::tempdir().unwrap();
    let feed_path = feed_dir.path().join("bench-feed.txt");
    std::fs::write(&feed_path, &text).unwrap();
    let (before, _) = memory();
    let began = Instant::now();
    let mut builder = IntelBuilder::new();
    let report = parse_feed("bench", "list", text.as_bytes(), now, &mut |i| {
        builder.add(i)
    })
    .unwrap();
    let set = builder.build();
    let took = began.elapsed();
    drop(text);
    let (after, _) = memory();
    println!(
        "intel: {} indicators indexed in {:.2} s; RSS {} MB before, {} MB after ({} skipped)",
        set.len(),
        took.as_secs_f64(),
        before,
        after,
        report.skipped
    );
    let mut rng = Rng(42);
    let probes = 2_000_000;
    let addresses: Vec<std::net::IpAddr> = (0..probes)
        .map(|i| {
            if i % 2 == 0 {
                ips[i % ips.len()].parse().unwrap()
            } else {
                let r = rng.next();
                std::net::IpAddr::from([(r >> 24) as u8, (r >> 16) as u8, (r >> 8) as u8, r as u8])
            }
        })
        .collect();
    let began = Instant::now();
    let hits = addresses
        .iter()
        .filter(|a| set.lookup_ip(**a, now).is_some())
        .count();
    let ip_ns = began.elapsed().as_nanos() as f64 / probes as f64;
    let names: Vec<String> = (0..probes)
        .map(|i| match i % 2 {
            0 => format!("www.{}", domains[i % domains.len()]),
            _ => format!("host{i}.clean.example.org"),
        })
        .collect();
    let began = Instant::now();
    let domain_hits = names
        .iter()
        .filter(|d| set.lookup_domain(d, now).is_some())
        .count();
    let domain_ns = began.elapsed().as_nanos() as f64 / probes as f64;
    let began = Instant::now();
    let hash_hits = (0..probes)
        .filter(|i| set.lookup_hash(&hashes[i % hashes.len()], now).is_some())
        .count();
    let hash_ns = began.elapsed().as_nanos() as f64 / probes as f64;
    println!(
        "intel lookups: IP {ip_ns:.0} ns ({hits} hits of {probes}), domain with parents {domain_ns:.0} ns ({domain_hits} hits), SHA-256 {hash_ns:.0} ns ({hash_hits} hits)"
    );
    drop(set);

    // 2. The engine alone.
    let windows_percent = vigil_e2e::bench_arg("--windows-percent", 80).min(100);
    let records = support::records(&shared);
    println!(
        "inputs: {windows_percent}% Windows records (SigmaHQ's {} regression records), the rest syslog (loghub's {} OpenSSH and Linux lines), cycled",
        records.0.len(),
        records.1.len()
    );
    let events = support::events(&tenant, &records, total, windows_percent);
    let mappings = Arc::new(vigil_sigma::Mappings::builtin().unwrap());
    let correlation_dir = tempfile::tempdir().unwrap();
    let mut rule_dirs = sigma_dirs(&shared);
    if correlation {
        std::fs::write(correlation_dir.path().join("bench.yml"), CORRELATION).unwrap();
        rule_dirs.push(correlation_dir.path().to_owned());
        println!("correlation: every Windows event counted per host in the correlation partitions");
    }
    let sources = Sources {
        rule_dirs,
        intel_paths: vec![feed_path.clone()],
        placeholders: Default::default(),
    };
    let (before, _) = memory();
    let began = Instant::now();
    let global = build_global(&sources, Vec::new(), Vec::new(), &mappings, None, now).unwrap();
    global.rules.compile_all();
    let (after, _) = memory();
    println!(
        "content: {} rules and {} indicators loaded in {:.2} s; RSS {before} MB before, {after} MB after",
        global.rules.check().loaded,
        global.intel.len(),
        began.elapsed().as_secs_f64()
    );
    let content = Content {
        global: Arc::new(global),
        tenants: Default::default(),
        generation: 1,
    };
    let router = TenantState::new(&content, None);
    let partitions = vigil_detect::Config::default().correlation_partitions;
    let began = Instant::now();
    let mut alerts = 0;
    for (n, chunk) in events.chunks(BATCH).enumerate() {
        let result = evaluate_batch(
            &content,
            &tenant,
            &router,
            chunk,
            &n.to_string(),
            partitions,
            time::OffsetDateTime::now_utc(),
        );
        alerts += result.alerts.len();
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "engine: {total} events in {secs:.2} s = {:.0} events/s ({alerts} alerts)",
        total as f64 / secs
    );
    drop(content);

    // 3. The service on JetStream.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(service(&tenant, events, sources));
    let (rss, peak) = memory();
    println!("bench process: RSS {rss} MB, peak {peak} MB");
}

async fn service(tenant: &TenantId, events: Vec<Event>, sources: Sources) {
    let nats = vigil_e2e::NatsServer::start().unwrap();
    let bus = Arc::new(
        JetStreamBus::connect(JetStreamConfig::new(nats.url()))
            .await
            .unwrap(),
    );
    let client = async_nats::connect(nats.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let dir = tempfile::tempdir().unwrap();
    let store =
        vigil_store::Store::connect(&format!("sqlite://{}", dir.path().join("b.db").display()))
            .await
            .unwrap();
    store.migrate().await.unwrap();
    store
        .platform()
        .create_tenant(tenant, "bench", 0)
        .await
        .unwrap();
    let config = vigil_detect::Config {
        rules: sources.rule_dirs.clone(),
        intel: sources.intel_paths.clone(),
        ..vigil_detect::Config::default()
    };
    let baseline = ConsumerSpec::new("baseline", Stage::Events, Some(tenant.clone()));
    bus.ensure_consumer(&baseline).await.unwrap();
    bus.ensure_consumer(&config.consumer()).await.unwrap();
    // Alerts kept for a consumer, as the persister would.
    bus.ensure_consumer(&ConsumerSpec::new("sink", Stage::Alerts, None))
        .await
        .unwrap();
    let total = events.len();
    let batches: Vec<EventBatch> = events
        .chunks(BATCH)
        .map(|chunk| EventBatch {
            tenant: tenant.clone(),
            events: chunk.to_vec(),
        })
        .collect();
    drop(events);
    let began = Instant::now();
    let mut acks = Vec::new();
    for batch in &batches {
        let message = OutgoingMessage::encode_compressed(batch, batch.message_id()).unwrap();
        acks.push(bus.publish(message).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
    }
    println!(
        "published {} batches ({total} events) in {:.2} s",
        batches.len(),
        began.elapsed().as_secs_f64()
    );
    drop(batches);

    // The bus's ceiling: decode (as the service decodes) and acknowledge only.
    let mut subscription = bus.subscribe(baseline).await.unwrap();
    let began = Instant::now();
    let mut seen = 0;
    while seen < total {
        let (batch, delivery) = subscription
            .next_payload::<EventBatchWithoutRaw>()
            .await
            .unwrap()
            .unwrap();
        let batch = batch.into_batch();
        seen += batch.events.len();
        delivery.ack().await.unwrap();
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "consume only (decode + ack): {seen} events in {secs:.2} s = {:.0} events/s",
        seen as f64 / secs
    );

    let shutdown = CancellationToken::new();
    let context = ServiceContext {
        bus: bus.clone() as Arc<dyn Bus>,
        store,
        shutdown: shutdown.clone(),
        readiness: Readiness::default(),
    };
    let task = tokio::spawn(vigil_detect::run(context, config.clone()));
    let durable = config.consumer().durable_name();
    let pending_of = async |durable: &str, stream: &str| {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = jetstream
            .get_consumer_from_stream(durable, stream)
            .await
            .unwrap();
        let info = consumer.info().await.unwrap();
        info.num_pending as usize + info.num_ack_pending
    };
    let pending = async || pending_of(&durable, "VIGIL_EVENTS").await;
    let all = pending().await;
    // From the first batch taken (rules and feed loaded) until none is left.
    let (start, at_start) = loop {
        let left = pending().await;
        if left < all {
            break (Instant::now(), left);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    loop {
        if pending().await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The events' correlation batches are in JetStream once their event batches are acked.
    for partition in 0..config.correlation_partitions {
        let durable = config.partition_consumer(partition).durable_name();
        loop {
            if pending_of(&durable, "VIGIL_CORRELATE").await == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let correlation_batches = jetstream
        .get_stream("VIGIL_CORRELATE")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    let drained = at_start * BATCH;
    let messages = jetstream
        .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
            "sink-all",
            "VIGIL_ALERTS",
        )
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .num_pending;
    println!(
        "detect service: {drained} events in {secs:.2} s = {:.0} events/s, {correlation_batches} correlation batches",
        drained as f64 / secs
    );
    // Counted after the clock stopped: the alerts inside the messages.
    let mut sink = bus
        .subscribe(ConsumerSpec::new("sink", Stage::Alerts, None))
        .await
        .unwrap();
    let mut alerts = 0;
    for _ in 0..messages {
        let (batch, delivery) = sink.next_payload::<AlertBatch>().await.unwrap().unwrap();
        alerts += batch.alerts.len();
        delivery.ack().await.unwrap();
    }
    println!("alerts published: {alerts} in {messages} messages");
    shutdown.cancel();
    let _ = task.await;
}
