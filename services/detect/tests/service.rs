//! The detect service on the in-process bus and SQLite: tenant overrides, own rules and feeds
//! stay with their tenant; correlation windows survive a restart; content reloads without one;
//! bad batches pass without stopping anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use vigil_bus::inprocess::{InProcessBus, InProcessConfig};
use vigil_bus::{Bus, ConsumerSpec, OutgoingMessage, Subscription};
use vigil_detect::Config;
use vigil_runtime::{Readiness, ServiceContext};
use vigil_schema::{
    Alert, AlertBatch, AlertSource, Entities, Event, EventBatch, EventId, Fields, Level, RawRecord,
    Source, Stage, TenantId,
};
use vigil_store::{NewRule, OverrideRecord, Store};

const WHOAMI: &str = "6b1a9d30-0000-4000-8000-000000000001";
const CALC: &str = "6b1a9d30-0000-4000-8000-000000000002";
const BURST: &str = "6b1a9d30-0000-4000-8000-000000000003";

fn whoami_rule() -> String {
    format!(
        r"
title: Whoami
id: {WHOAMI}
name: whoami_run
logsource:
    product: windows
    category: process_creation
detection:
    sel:
        Image|endswith: '\whoami.exe'
    condition: sel
level: low
tags:
    - attack.t1033
"
    )
}

fn calc_rule() -> String {
    format!(
        r"
title: Calculator
id: {CALC}
logsource:
    product: windows
    category: process_creation
detection:
    sel:
        Image|endswith: '\calc.exe'
    condition: sel
level: medium
"
    )
}

fn burst_rule() -> String {
    format!(
        r"
title: Whoami burst
id: {BURST}
correlation:
    type: event_count
    rules:
        - whoami_run
    group-by:
        - Computer
    timespan: 10m
    condition:
        gte: 3
level: high
"
    )
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

struct Harness {
    bus: Arc<InProcessBus>,
    store: Store,
    alerts: Subscription,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new(tenants: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        for id in tenants {
            store
                .platform()
                .create_tenant(&tenant(id), id, 0)
                .await
                .unwrap();
        }
        let bus = Arc::new(InProcessBus::new(InProcessConfig::default()));
        let alerts = bus
            .subscribe(ConsumerSpec::new("test", Stage::Alerts, None))
            .await
            .unwrap();
        Self {
            bus,
            store,
            alerts,
            _dir: dir,
        }
    }

    /// Starts a detect process; cancel the token to stop it.
    async fn start(&self, config: Config) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let shutdown = CancellationToken::new();
        let context = ServiceContext {
            bus: Arc::clone(&self.bus) as Arc<dyn Bus>,
            store: self.store.clone(),
            shutdown: shutdown.clone(),
            readiness: Readiness::default(),
        };
        vigil_detect::ensure_consumer(&context, &config)
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            vigil_detect::run(context, config).await.unwrap();
        });
        (shutdown, task)
    }

    async fn send(&self, tenant_id: &str, events: Vec<Event>) {
        let batch = EventBatch {
            tenant: tenant(tenant_id),
            events,
        };
        let message = OutgoingMessage::encode_compressed(&batch, batch.message_id()).unwrap();
        self.bus.publish_durable(message).await.unwrap();
    }

    /// Alerts until `quiet` passes without one.
    async fn alerts(&mut self, quiet: Duration) -> Vec<Alert> {
        let mut alerts = Vec::new();
        while let Ok(Some(Ok((batch, delivery)))) =
            tokio::time::timeout(quiet, self.alerts.next_payload::<AlertBatch>()).await
        {
            delivery.ack().await.unwrap();
            batch.validate().unwrap();
            assert!(!batch.alerts.is_empty(), "an empty alert batch");
            alerts.extend(batch.alerts);
        }
        alerts.sort_by(|a, b| (&a.tenant, &a.rule_id).cmp(&(&b.tenant, &b.rule_id)));
        alerts
    }

    async fn global_rule(&self, yaml: &str, id: &str, kind: &str) {
        self.store
            .platform()
            .global_rules()
            .upsert(new_rule(yaml, id, kind), "test", now_micros())
            .await
            .unwrap();
    }
}

fn new_rule(yaml: &str, id: &str, kind: &str) -> NewRule {
    NewRule {
        rule_id: id.into(),
        title: id.into(),
        level: "low".into(),
        kind: kind.into(),
        yaml: yaml.into(),
    }
}

fn now_micros() -> i64 {
    vigil_store::micros(time::OffsetDateTime::now_utc())
}

fn process(image: &str, computer: &str) -> serde_json::Value {
    json!({"Event": {"System": {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1,
                                 "Computer": computer},
                      "EventData": {"Image": image}}})
}

fn connection(destination: &str) -> serde_json::Value {
    json!({"Event": {"System": {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 3,
                                 "Computer": "pc1"},
                      "EventData": {"Image": "C:\\Windows\\System32\\svchost.exe",
                                    "DestinationIp": destination}}})
}

fn event(tenant_id: &str, n: u32, record: serde_json::Value) -> Event {
    let host = record["Event"]["System"]["Computer"]
        .as_str()
        .map(str::to_owned);
    let now = time::OffsetDateTime::now_utc();
    Event {
        id: EventId::derive(&[tenant_id.as_bytes(), &n.to_le_bytes()]),
        tenant: tenant(tenant_id),
        event_time: now,
        received_time: now,
        source: Source {
            transport: "test".into(),
            format: "evtx".into(),
            peer: None,
        },
        logsource: Default::default(),
        entities: Entities {
            host,
            ..Entities::default()
        },
        // As ingest sends it: the record's text rides along; detection skips it unread.
        raw: Some(RawRecord::new(&record.to_string())),
        fields: Fields::from_json(record),
        parse_error: None,
    }
}

fn config(reload_secs: u64) -> Config {
    Config {
        reload_secs,
        ..Config::default()
    }
}

fn summary(alerts: &[Alert]) -> Vec<(String, String, Level, String)> {
    alerts
        .iter()
        .map(|alert| {
            (
                alert.tenant.to_string(),
                alert.rule_id.clone(),
                alert.level,
                alert.entities.host.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_gets_its_own_overrides_rules_and_feeds() {
    let mut harness = Harness::new(&["acme", "globex"]).await;
    harness
        .global_rule(&whoami_rule(), WHOAMI, "detection")
        .await;
    let store = &harness.store;
    // globex: the global rule at another level, never for its jump host.
    store
        .tenant(&tenant("globex"))
        .set_override(OverrideRecord {
            tenant: String::new(),
            rule_id: WHOAMI.into(),
            enabled: None,
            level: Some("critical".into()),
            exceptions: json!([{"field": "host", "values": ["JUMP-01"]}]).to_string(),
            version: 0,
            updated_at: now_micros(),
            updated_by: "test".into(),
        })
        .await
        .unwrap();
    // acme: a rule of its own.
    store
        .tenant(&tenant("acme"))
        .rules()
        .upsert(
            new_rule(&calc_rule(), CALC, "detection"),
            "test",
            now_micros(),
        )
        .await
        .unwrap();
    // globex: a feed of its own; everyone: a global feed from a file.
    store
        .tenant(&tenant("globex"))
        .feeds()
        .upsert(
            "globex-c2",
            "list",
            b"198.51.100.7\n".to_vec(),
            1,
            "test",
            now_micros(),
        )
        .await
        .unwrap();
    let feeds = tempfile::tempdir().unwrap();
    let global_feed = feeds.path().join("mssp.csv");
    std::fs::write(
        &global_feed,
        "indicator,confidence,labels\n203.0.113.5,90,c2\n",
    )
    .unwrap();
    let (shutdown, task) = harness
        .start(Config {
            intel: vec![global_feed],
            ..config(60)
        })
        .await;

    for id in ["acme", "globex"] {
        harness
            .send(
                id,
                vec![
                    event(id, 1, process("C:\\Windows\\System32\\whoami.exe", "pc1")),
                    event(
                        id,
                        2,
                        process("C:\\Windows\\System32\\whoami.exe", "jump-01"),
                    ),
                    event(id, 3, process("C:\\Windows\\System32\\calc.exe", "pc1")),
                    event(id, 4, connection("198.51.100.7")),
                    event(id, 5, connection("203.0.113.5")),
                ],
            )
            .await;
    }
    let alerts = harness.alerts(Duration::from_secs(3)).await;
    let text = |s: &str| s.to_owned();
    assert_eq!(
        summary(&alerts),
        vec![
            (text("acme"), text(WHOAMI), Level::Low, text("pc1")),
            (text("acme"), text(WHOAMI), Level::Low, text("jump-01")),
            (text("acme"), text(CALC), Level::Medium, text("pc1")),
            (text("acme"), text("intel/mssp"), Level::High, text("pc1")),
            (text("globex"), text(WHOAMI), Level::Critical, text("pc1")),
            (
                text("globex"),
                text("intel/globex-c2"),
                Level::Medium,
                text("pc1")
            ),
            (text("globex"), text("intel/mssp"), Level::High, text("pc1")),
        ],
        "{alerts:#?}"
    );
    let whoami = alerts.iter().find(|a| a.rule_id == WHOAMI).unwrap();
    assert_eq!(whoami.source, AlertSource::Sigma);
    assert_eq!(whoami.attack[0].id, "T1033");
    assert!(!whoami.attack[0].name.is_empty());
    assert_eq!(whoami.matched[0].field, "Image");
    let intel = alerts.iter().find(|a| a.rule_id == "intel/mssp").unwrap();
    let matched = intel.intel.as_ref().unwrap();
    assert_eq!(
        (matched.confidence, matched.labels.clone()),
        (Some(90), vec!["c2".to_owned()])
    );
    assert_eq!(intel.matched[0].value, "203.0.113.5");
    assert!(intel.matched[0].field.ends_with("DestinationIp"));

    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlation_windows_survive_a_restart() {
    let mut harness = Harness::new(&["acme"]).await;
    harness
        .global_rule(&whoami_rule(), WHOAMI, "detection")
        .await;
    harness
        .global_rule(&burst_rule(), BURST, "correlation")
        .await;
    let whoami = || process("C:\\Windows\\System32\\whoami.exe", "pc1");

    let (shutdown, task) = harness.start(config(60)).await;
    // A hit stamped a year ahead (a sender's wrong clock) counts in no window and does not
    // move the watermark: the real events after it still count.
    let mut future = event("acme", 9, whoami());
    future.event_time += time::Duration::days(365);
    harness
        .send(
            "acme",
            vec![
                event("acme", 1, whoami()),
                future,
                event("acme", 2, whoami()),
            ],
        )
        .await;
    // The hits only feed the correlation (`generate` is false): no alert yet.
    assert!(harness.alerts(Duration::from_secs(2)).await.is_empty());
    // The window is saved in the partition that owns pc1's group of the burst.
    let partition = vigil_sigma::partition_of(BURST, Some(&[Some("pc1".to_owned())]), 16);
    let scope = harness.store.tenant(&tenant("acme"));
    let saved = scope
        .detect_state_version(&format!("correlation/{partition}"))
        .await
        .unwrap();
    assert_eq!(saved, Some(1), "the window was saved");
    for other in (0..16).filter(|p| *p != partition) {
        let name = format!("correlation/{other}");
        assert_eq!(scope.detect_state_version(&name).await.unwrap(), None);
    }
    shutdown.cancel();
    task.await.unwrap();

    // A new process continues the window: the third hit fires the correlation.
    let (shutdown, task) = harness.start(config(60)).await;
    harness.send("acme", vec![event("acme", 3, whoami())]).await;
    let alerts = harness.alerts(Duration::from_secs(2)).await;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let burst = &alerts[0];
    assert_eq!(
        (burst.rule_id.as_str(), burst.source, burst.level),
        (BURST, AlertSource::Correlation, Level::High)
    );
    assert!(
        burst
            .matched
            .iter()
            .any(|m| m.field == "Computer" && m.value == "pc1"),
        "{burst:#?}"
    );
    // The alert names the three events of its window, across the restart, and not the one
    // from the future.
    let id = |n: u32| EventId::derive(&["acme".as_bytes(), &n.to_le_bytes()]);
    assert_eq!(burst.event_ids, vec![id(1), id(2), id(3)], "{burst:#?}");
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_reloads_while_events_flow() {
    let mut harness = Harness::new(&["acme"]).await;
    let rules = tempfile::tempdir().unwrap();
    let rule_file = rules.path().join("calc.yml");
    std::fs::write(&rule_file, calc_rule()).unwrap();
    let (shutdown, task) = harness
        .start(Config {
            rules: vec![rules.path().to_owned()],
            ..config(1)
        })
        .await;
    let mut n = 0;
    let mut send = async |harness: &mut Harness, image: &str| {
        n += 1;
        harness
            .send("acme", vec![event("acme", n, process(image, "pc1"))])
            .await;
        harness
            .alerts(Duration::from_millis(1500))
            .await
            .into_iter()
            .map(|a| a.rule_id)
            .collect::<Vec<_>>()
    };
    let whoami = "C:\\Windows\\System32\\whoami.exe";
    let calc = "C:\\Windows\\System32\\calc.exe";
    assert_eq!(send(&mut harness, calc).await, [CALC]);
    assert!(send(&mut harness, whoami).await.is_empty());

    // A rule pushed to the store is picked up without a restart.
    harness
        .global_rule(&whoami_rule(), WHOAMI, "detection")
        .await;
    wait_reload().await;
    assert_eq!(send(&mut harness, whoami).await, [WHOAMI]);

    // A file that no longer parses keeps its previous version active.
    std::fs::write(&rule_file, "title: broken\ndetection: [").unwrap();
    wait_reload().await;
    assert_eq!(send(&mut harness, calc).await, [CALC]);

    // The tenant disables the global rule: its events stop firing it.
    harness
        .store
        .tenant(&tenant("acme"))
        .set_override(OverrideRecord {
            tenant: String::new(),
            rule_id: WHOAMI.into(),
            enabled: Some(false),
            level: None,
            exceptions: "[]".into(),
            version: 0,
            updated_at: now_micros(),
            updated_by: "test".into(),
        })
        .await
        .unwrap();
    wait_reload().await;
    assert!(send(&mut harness, whoami).await.is_empty());
    shutdown.cancel();
    task.await.unwrap();
}

async fn wait_reload() {
    tokio::time::sleep(Duration::from_millis(2500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_and_bare_events_pass_without_stopping_anything() {
    let mut harness = Harness::new(&["acme", "globex"]).await;
    harness
        .global_rule(&whoami_rule(), WHOAMI, "detection")
        .await;
    let (shutdown, task) = harness.start(config(60)).await;
    // A batch of acme holding a globex event is refused whole.
    harness
        .send(
            "acme",
            vec![
                event(
                    "acme",
                    1,
                    process("C:\\Windows\\System32\\whoami.exe", "pc1"),
                ),
                event(
                    "globex",
                    2,
                    process("C:\\Windows\\System32\\whoami.exe", "pc1"),
                ),
            ],
        )
        .await;
    // Events with no field a rule needs, or no fields at all, and odd shapes.
    harness
        .send(
            "acme",
            vec![
                event("acme", 3, json!({})),
                event(
                    "acme",
                    4,
                    json!({"Event": {"System": {"EventID": "not a number"}}}),
                ),
                event("acme", 5, json!({"message": "x".repeat(100_000)})),
                event(
                    "acme",
                    6,
                    json!({"Event": null, "DestinationIp": "not an ip"}),
                ),
                event(
                    "acme",
                    7,
                    process("C:\\Windows\\System32\\whoami.exe", "pc2"),
                ),
            ],
        )
        .await;
    let alerts = harness.alerts(Duration::from_secs(3)).await;
    assert_eq!(summary(&alerts).len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].entities.host.as_deref(), Some("pc2"));
    assert!(!task.is_finished());
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_stream_and_its_correlation_windows() {
    let mut harness = Harness::new(&["acme"]).await;
    harness
        .global_rule(&whoami_rule(), WHOAMI, "detection")
        .await;
    harness.global_rule(&calc_rule(), CALC, "detection").await;
    // Nine hits in the window: only a state both processes share reaches it.
    harness
        .global_rule(
            &burst_rule().replace("gte: 3", "gte: 9"),
            BURST,
            "correlation",
        )
        .await;
    let (first, first_task) = harness.start(config(60)).await;
    let (second, second_task) = harness.start(config(60)).await;
    for n in 0..9 {
        harness
            .send(
                "acme",
                vec![
                    event(
                        "acme",
                        2 * n,
                        process("C:\\Windows\\System32\\whoami.exe", "pc1"),
                    ),
                    event(
                        "acme",
                        2 * n + 1,
                        process("C:\\Windows\\System32\\calc.exe", "pc1"),
                    ),
                ],
            )
            .await;
    }
    let alerts = harness.alerts(Duration::from_secs(4)).await;
    let ids: std::collections::HashSet<_> = alerts.iter().map(|a| a.id).collect();
    assert_eq!(ids.len(), alerts.len(), "an alert twice: {alerts:#?}");
    let calc = alerts.iter().filter(|a| a.rule_id == CALC).count();
    let bursts = alerts.iter().filter(|a| a.rule_id == BURST).count();
    assert_eq!((calc, bursts), (9, 1), "{alerts:#?}");
    for (shutdown, task) in [(first, first_task), (second, second_task)] {
        shutdown.cancel();
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_saved_whole_is_taken_up_by_its_partitions() {
    let mut harness = Harness::new(&["acme", "globex"]).await;
    harness
        .global_rule(&whoami_rule(), WHOAMI, "detection")
        .await;
    harness
        .global_rule(&burst_rule(), BURST, "correlation")
        .await;
    let whoami = || process("C:\\Windows\\System32\\whoami.exe", "pc1");
    // What a release before partitioning saved for acme: one state holding pc1's window with
    // two hits in it.
    let rules = vigil_sigma::RuleSet::from_texts(
        vec![(
            "burst.yml".into(),
            format!("{}\n---\n{}", whoami_rule(), burst_rule()),
        )],
        Arc::new(vigil_sigma::Mappings::builtin().unwrap()),
        &vigil_sigma::LoadOptions::default(),
    )
    .unwrap();
    let mut correlator = rules.correlator();
    let mut watermark = 0;
    for n in 1..=2 {
        let hit = event("acme", n, whoami());
        let fields = &vigil_runtime::EventFields(&hit.fields);
        let detections = rules.detect_flat(fields);
        watermark = hit.event_time.unix_timestamp();
        correlator.observe_flat(fields, &detections, watermark, Some(&hit.id.to_string()));
    }
    let whole: serde_json::Value = serde_json::from_slice(&correlator.snapshot()).unwrap();
    let saved = json!({"watermark": watermark, "applied": [], "global": whole});
    harness
        .store
        .tenant(&tenant("acme"))
        .put_detect_state("correlation", None, serde_json::to_vec(&saved).unwrap(), 0)
        .await
        .unwrap()
        .unwrap();

    let (shutdown, task) = harness.start(config(60)).await;
    // globex's pc1 is another tenant's host: acme's old window is not its.
    harness
        .send("globex", vec![event("globex", 3, whoami())])
        .await;
    harness.send("acme", vec![event("acme", 3, whoami())]).await;
    let alerts = harness.alerts(Duration::from_secs(2)).await;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let burst = &alerts[0];
    assert_eq!(
        (burst.tenant.as_str(), burst.rule_id.as_str()),
        ("acme", BURST)
    );
    let id = |n: u32| EventId::derive(&["acme".as_bytes(), &n.to_le_bytes()]);
    assert_eq!(burst.event_ids, vec![id(1), id(2), id(3)], "{burst:#?}");
    // The window now lives in its partition's row.
    let partition = vigil_sigma::partition_of(BURST, Some(&[Some("pc1".to_owned())]), 16);
    let version = harness
        .store
        .tenant(&tenant("acme"))
        .detect_state_version(&format!("correlation/{partition}"))
        .await
        .unwrap();
    assert_eq!(version, Some(1));
    shutdown.cancel();
    task.await.unwrap();
}
