//! Alert storage on PostgreSQL: persistence throughput (store batches, and the persister
//! consuming JetStream) and the latency of tenant-filtered, time-ranged alert pages with
//! 1,000,000 alerts stored.
//!
//! `cargo xtask bench alerts [--alerts N] [--persist N] [--queries N]`. Needs the machine's
//! PostgreSQL (a database of its own is created and dropped) and starts its own nats-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use time::OffsetDateTime;
use vigil_bus::{Bus, OutgoingMessage};
use vigil_schema::{
    Alert, AlertId, AlertSource, AttackTechnique, EventId, Level, MatchedField, TenantId,
};
use vigil_store::{AlertQuery, Store};

const TENANTS: usize = 10;
const SPAN_SECS: i64 = 30 * 24 * 3600;

/// A realistic alert: a SigmaHQ rule's title, two techniques, two matched fields.
fn alert(tenant: &TenantId, n: u64, start: i64) -> Alert {
    // A cheap, fixed pseudo-random spread over the time span.
    let offset = (n.wrapping_mul(2_654_435_761) % SPAN_SECS as u64) as i64;
    let time = OffsetDateTime::from_unix_timestamp(start + offset).unwrap();
    let level = match n % 10 {
        0 => Level::Critical,
        1..=3 => Level::High,
        4..=7 => Level::Medium,
        _ => Level::Low,
    };
    Alert {
        id: AlertId::derive(&[tenant.as_str().as_bytes(), &n.to_le_bytes()]),
        tenant: tenant.clone(),
        source: AlertSource::Sigma,
        rule_id: format!("5f9a0d1e-0000-4000-8000-{:012}", n % 400),
        rule_title: "Suspicious Certutil Decode Of A File With Unusual Extension".into(),
        level,
        attack: vec![
            AttackTechnique {
                id: "T1027".into(),
                name: "Obfuscated Files or Information".into(),
                tactics: vec!["defense-evasion".into()],
            },
            AttackTechnique {
                id: "T1140".into(),
                name: "Deobfuscate/Decode Files or Information".into(),
                tactics: vec!["defense-evasion".into()],
            },
        ],
        event_ids: vec![EventId::derive(&[&n.to_le_bytes()])],
        matched: vec![
            MatchedField {
                field: "Image".into(),
                value: "C:\\Windows\\System32\\certutil.exe".into(),
            },
            MatchedField {
                field: "CommandLine".into(),
                value: "certutil -decode payload.b64 C:\\Users\\Public\\run.exe".into(),
            },
        ],
        entities: Default::default(),
        intel: None,
        event_time: time,
        detected_time: time,
    }
}

fn tenants() -> Vec<TenantId> {
    (0..TENANTS)
        .map(|i| TenantId::new(&format!("tenant-{i}")).unwrap())
        .collect()
}

async fn fill(store: &Store, total: usize, start: i64) -> f64 {
    let tenants = tenants();
    let began = Instant::now();
    let mut inserted = 0usize;
    let mut n = 0u64;
    while inserted < total {
        // About 1,000 alerts per transaction; tenant 0 holds 40 % of them, the other nine
        // share the rest.
        let tx = store.begin().await.unwrap();
        for (index, tenant) in tenants.iter().enumerate() {
            let share = if index == 0 { 400 } else { 600 / (TENANTS - 1) };
            let alerts: Vec<Alert> = (0..share)
                .map(|_| {
                    n += 1;
                    alert(tenant, n, start)
                })
                .collect();
            inserted += tx.tenant(tenant).insert_alerts(&alerts).await.unwrap() as usize;
        }
        tx.commit().await.unwrap();
    }
    inserted as f64 / began.elapsed().as_secs_f64()
}

async fn persister(store: &Store, count: usize, start: i64) -> f64 {
    let nats = vigil_e2e::NatsServer::start().unwrap();
    let bus: Arc<dyn Bus> = Arc::new(
        vigil_bus::jetstream::JetStreamBus::connect(vigil_bus::jetstream::JetStreamConfig::new(
            nats.url(),
        ))
        .await
        .unwrap(),
    );
    let spec = vigil_bus::ConsumerSpec::new(
        vigil_control::ALERTS_CONSUMER,
        vigil_schema::Stage::Alerts,
        None,
    );
    bus.ensure_consumer(&spec).await.unwrap();
    let tenant = TenantId::new("persisted").unwrap();
    let mut pending = Vec::new();
    for n in 0..count as u64 {
        let alert = alert(&tenant, 10_000_000 + n, start);
        let message = OutgoingMessage::encode(&alert, alert.id.to_string()).unwrap();
        pending.push(bus.publish(message).await.unwrap());
        if pending.len() >= 4096 {
            for ack in pending.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in pending.drain(..) {
        ack.await.unwrap();
    }
    let context = vigil_runtime::ServiceContext {
        bus: Arc::clone(&bus),
        store: store.clone(),
        shutdown: tokio_util::sync::CancellationToken::new(),
        readiness: Default::default(),
    };
    let began = Instant::now();
    let task = {
        let context = context.clone();
        tokio::spawn(async move { vigil_control::persist_alerts(&context, 1000).await })
    };
    loop {
        let stored = store.tenant(&tenant).count_alerts().await.unwrap();
        if stored as usize >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = count as f64 / began.elapsed().as_secs_f64();
    context.shutdown.cancel();
    task.await.unwrap().unwrap();
    rate
}

async fn queries(store: &Store, count: usize, start: i64) -> (Histogram<u64>, Histogram<u64>) {
    let tenant = &tenants()[0];
    let other = &tenants()[5];
    let mut filtered = Histogram::<u64>::new(3).unwrap();
    let mut deep = Histogram::<u64>::new(3).unwrap();
    for i in 0..count as i64 {
        // Windows of 1 hour to 7 days at spread-out positions; every third query also filters
        // by level; alternate between the big tenant and a small one.
        let length = [3600, 6 * 3600, 24 * 3600, 7 * 24 * 3600][(i % 4) as usize];
        let from = start + (i * 7919 * 60) % (SPAN_SECS - length);
        let query = AlertQuery {
            from: Some(from * 1_000_000),
            to: Some((from + length) * 1_000_000),
            min_level: (i % 3 == 0).then_some(Level::High),
            rule_id: None,
            after: None,
            limit: 100,
        };
        let scope = if i % 2 == 0 { tenant } else { other };
        let began = Instant::now();
        let page = store.tenant(scope).alerts(&query).await.unwrap();
        filtered.record(began.elapsed().as_micros() as u64).unwrap();
        // Follow the cursor five pages deep on every tenth query.
        if i % 10 == 0 {
            let mut query = query.clone();
            let mut last = page.last().cloned();
            for _ in 0..5 {
                let Some(previous) = last else { break };
                query.after = Some((
                    vigil_store::micros(previous.detected_time),
                    previous.id.to_string(),
                ));
                let began = Instant::now();
                let page = store.tenant(scope).alerts(&query).await.unwrap();
                deep.record(began.elapsed().as_micros() as u64).unwrap();
                last = page.last().cloned();
            }
        }
    }
    (filtered, deep)
}

fn main() {
    let total = vigil_e2e::bench_arg("--alerts", 1_000_000);
    let persist = vigil_e2e::bench_arg("--persist", 100_000);
    let count = vigil_e2e::bench_arg("--queries", 2000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let database = vigil_e2e::TestDatabase::create("bench").await.unwrap();
        let store = Store::connect(&database.url).await.unwrap();
        store.migrate().await.unwrap();
        let start = 1_800_000_000;
        let rate = fill(&store, total, start).await;
        println!("store: {total} alerts in batches of 1,000 per transaction: {rate:.0} alerts/s");
        let rate = persister(&store, persist, start).await;
        println!(
            "persister: {persist} alerts from JetStream to PostgreSQL, acked after commit: {rate:.0} alerts/s"
        );
        let (filtered, deep) = queries(&store, count, start).await;
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "page of 100, tenant + time range (+ level) with {total} alerts stored, {count} queries: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(&filtered, 0.5),
            ms(&filtered, 0.99),
            filtered.max() as f64 / 1000.0
        );
        println!(
            "next pages by cursor ({} queries): p50 {:.2} ms, p99 {:.2} ms",
            deep.len(),
            ms(&deep, 0.5),
            ms(&deep, 0.99)
        );
        store.close().await;
        database.drop().await.unwrap();
    });
}
