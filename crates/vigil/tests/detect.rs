//! Detection end to end on NATS JetStream and PostgreSQL: SigmaHQ's regression events posted
//! over HTTP to `vigil run`, with every SigmaHQ rule loaded, come out as alerts on the tenant's
//! alerts subject, each once, also when the process is killed mid-stream and restarted; the
//! CLI lists them, stored once each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Server;
use vigil_bus::jetstream::{JetStreamBus, JetStreamConfig};
use vigil_bus::{Bus, ConsumerSpec, Subscription};
use vigil_e2e::{NatsServer, TestDatabase, shared_dir};
use vigil_schema::{Alert, AlertBatch, Stage, TenantId};

/// One regression case: the rules it names and its JSON records.
struct Case {
    key: String,
    rules: Vec<String>,
    body: String,
}

fn cases(sigma: &Path) -> Vec<Case> {
    let mut infos = Vec::new();
    let mut stack = vec![sigma.join("regression_data")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|name| name == "info.yml") {
                infos.push(path);
            }
        }
    }
    infos.sort();
    let mut cases = Vec::new();
    for info in infos {
        let text = std::fs::read_to_string(&info).unwrap();
        let yaml: serde_json::Value = yaml_serde::from_str(&text).unwrap();
        let rules: Vec<String> = yaml["rule_metadata"]
            .as_array()
            .unwrap()
            .iter()
            .map(|rule| rule["id"].as_str().unwrap().to_owned())
            .collect();
        let dir = info.parent().unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            let (records, error) =
                vigil_sigma::source::json_records(&std::fs::read_to_string(&path).unwrap());
            assert!(error.is_none(), "{}", path.display());
            cases.push(Case {
                key: path.strip_prefix(sigma).unwrap().display().to_string(),
                rules: rules.clone(),
                body: serde_json::to_string(&records).unwrap(),
            });
        }
    }
    cases
}

fn post_all(server: &Server, token: &str, cases: &[Case]) {
    for case in cases {
        let (status, body) = server
            .post_events_with(token, &case.body, &[("Idempotency-Key", &case.key)])
            .unwrap();
        assert_eq!(status, 200, "{}: {body}", case.key);
    }
}

/// Writes a configuration with these rule directories and `[detect]` lines, and returns the
/// `vigil run` arguments that use it with this bus and store.
fn run_args(
    config: &Path,
    rules: &[PathBuf],
    detect: &str,
    nats: &NatsServer,
    database: &TestDatabase,
) -> Vec<String> {
    let rules = serde_json::to_string(rules).unwrap();
    std::fs::write(config, format!("[detect]\nrules = {rules}\n{detect}")).unwrap();
    vec![
        "--config".into(),
        config.display().to_string(),
        "--bus".into(),
        nats.url(),
        "--store".into(),
        database.url.clone(),
    ]
}

/// Reads alerts until `done` says so or the deadline passes, acknowledging each.
async fn collect(
    subscription: &mut Subscription,
    alerts: &mut Vec<Alert>,
    deadline: Instant,
    done: impl Fn(&[Alert]) -> bool,
) {
    while !done(alerts) && Instant::now() < deadline {
        let next = tokio::time::timeout(
            Duration::from_secs(1),
            subscription.next_payload::<AlertBatch>(),
        );
        if let Ok(Some(Ok((batch, delivery)))) = next.await {
            delivery.ack().await.unwrap();
            batch.validate().unwrap();
            alerts.extend(batch.alerts);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_events_become_alerts_once_each_across_a_crash() {
    let sigma = shared_dir().join("data/sigma");
    let cases = cases(&sigma);
    assert!(cases.len() >= 200, "{} regression files", cases.len());
    let nats = NatsServer::start().unwrap();
    let database = TestDatabase::create("detect").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    let rules: Vec<PathBuf> = ["rules", "rules-emerging-threats", "rules-threat-hunting"]
        .iter()
        .map(|name| sigma.join(name))
        .collect();
    let args = run_args(&config, &rules, "", &nats, &database);
    let start = {
        let (args, path) = (args.clone(), dir.path().to_owned());
        move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Server::start(&path, &args)
        }
    };
    let mut server = tokio::task::spawn_blocking(start.clone()).await.unwrap();
    let admin = server.admin_token();
    server.ok(&admin, &["tenant", "create", "acme"]);
    let token = server
        .ok(
            &admin,
            &["token", "issue", "--tenant", "acme", "--role", "ingest"],
        )
        .trim()
        .to_owned();

    let acme = TenantId::new("acme").unwrap();
    let bus = JetStreamBus::connect(JetStreamConfig::new(nats.url()))
        .await
        .unwrap();
    let mut subscription = bus
        .subscribe(ConsumerSpec::new("e2e", Stage::Alerts, Some(acme.clone())))
        .await
        .unwrap();

    let (first, second) = cases.split_at(cases.len() / 2);
    let server_ref = &server;
    tokio::task::block_in_place(|| post_all(server_ref, &token, first));
    // Kill the process as soon as detection is under way: whatever it had not acknowledged
    // comes back to the restarted process.
    let mut alerts = Vec::new();
    collect(
        &mut subscription,
        &mut alerts,
        Instant::now() + Duration::from_secs(300),
        |alerts| !alerts.is_empty(),
    )
    .await;
    assert!(!alerts.is_empty(), "no alert before the crash");
    server.kill_hard();
    drop(server);
    let server = tokio::task::spawn_blocking(start).await.unwrap();
    // The last request before the crash, sent again with its key, adds nothing.
    let server_ref = &server;
    tokio::task::block_in_place(|| {
        post_all(server_ref, &token, &first[first.len() - 1..]);
        post_all(server_ref, &token, second);
    });

    let expected: BTreeSet<String> = cases.iter().flat_map(|c| c.rules.clone()).collect();
    collect(
        &mut subscription,
        &mut alerts,
        Instant::now() + Duration::from_secs(600),
        |alerts| {
            let seen: BTreeSet<&str> = alerts.iter().map(|a| a.rule_id.as_str()).collect();
            expected.iter().all(|rule| seen.contains(rule.as_str()))
        },
    )
    .await;
    // Anything still in flight (a duplicate would show here).
    collect(
        &mut subscription,
        &mut alerts,
        Instant::now() + Duration::from_secs(5),
        |_| false,
    )
    .await;

    let seen: BTreeSet<&str> = alerts.iter().map(|a| a.rule_id.as_str()).collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|rule| !seen.contains(rule.as_str()))
        .collect();
    assert!(missing.is_empty(), "rules that did not fire: {missing:?}");
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for alert in &alerts {
        *by_id.entry(alert.id.to_string()).or_default() += 1;
        assert_eq!(alert.tenant, acme);
        assert_eq!(alert.event_ids.len(), 1);
        assert!(alert.detected_time >= alert.event_time || alert.event_time.year() < 2030);
    }
    let duplicates: BTreeMap<&String, &usize> = by_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "alerts published twice: {duplicates:?}"
    );
    // ATT&CK names come with the technique ids.
    assert!(
        alerts
            .iter()
            .flat_map(|a| &a.attack)
            .any(|t| !t.name.is_empty() && !t.tactics.is_empty())
    );

    // The same alerts, stored by the persister on PostgreSQL, listed through the CLI.
    let deadline = Instant::now() + Duration::from_secs(120);
    let listed = loop {
        let text = tokio::task::block_in_place(|| {
            server.ok(
                &admin,
                &[
                    "alerts", "list", "--tenant", "acme", "--format", "json", "--limit", "10000",
                ],
            )
        });
        let listed: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        if listed.len() >= by_id.len() || Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(listed.len(), by_id.len(), "every alert stored once");
    let listed_rules: BTreeSet<&str> = listed
        .iter()
        .map(|alert| alert["rule_id"].as_str().unwrap())
        .collect();
    assert!(
        expected
            .iter()
            .all(|rule| listed_rules.contains(rule.as_str()))
    );
    for alert in &listed {
        assert_eq!(alert["tenant"], "acme");
        assert!(by_id.contains_key(alert["id"].as_str().unwrap()), "{alert}");
    }

    drop(server);
    drop(bus);
    database.drop().await.unwrap();
}

/// A Sysmon process creation of whoami on `host`, as ingest receives it.
fn whoami_on(host: &str) -> serde_json::Value {
    serde_json::json!({"Event": {
        "System": {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1,
                   "Computer": host},
        "EventData": {"Image": "C:\\Windows\\System32\\whoami.exe"}}})
}

const WHOAMI_RULE: &str = r"
title: Whoami
id: 6b1a9d30-0000-4000-8000-0000000000a1
name: whoami_run
logsource:
    product: windows
    category: process_creation
detection:
    sel:
        Image|endswith: '\whoami.exe'
    condition: sel
level: low
";

const BURST_RULE: &str = r"
title: Whoami burst
id: 6b1a9d30-0000-4000-8000-0000000000a2
correlation:
    type: event_count
    rules:
        - whoami_run
    group-by:
        - Computer
    timespan: 1h
    condition:
        gte: 3
level: high
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlations_fire_once_across_two_processes_and_a_crash() {
    let nats = NatsServer::start().unwrap();
    let database = TestDatabase::create("correlate").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("whoami.yml"), WHOAMI_RULE).unwrap();
    std::fs::write(rules.join("burst.yml"), BURST_RULE).unwrap();
    let config = dir.path().join("vigil.toml");
    let args = run_args(
        &config,
        &[rules],
        "correlation_partitions = 4\n",
        &nats,
        &database,
    );
    // Every process of a deployment shares the store's master key: the first one's.
    let master_key = dir
        .path()
        .join("first/data/master.key")
        .display()
        .to_string();
    let start = |name: &str, extra: &[&str]| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        let mut args: Vec<String> = args.clone();
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let master_key = master_key.clone();
        move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env = [("VIGIL_CONTROL__MASTER_KEY_FILE", master_key.as_str())];
            Server::start_with_env(&path, &args, &env, "http")
        }
    };
    let first = tokio::task::spawn_blocking(start("first", &[]))
        .await
        .unwrap();
    let admin = first.admin_token();
    first.ok(&admin, &["tenant", "create", "acme"]);
    let token = first
        .ok(
            &admin,
            &["token", "issue", "--tenant", "acme", "--role", "ingest"],
        )
        .trim()
        .to_owned();
    // A second process running detection (and a control plane, which the harness waits for).
    let second_args = ["--services", "detect,control"];
    let mut second = tokio::task::spawn_blocking(start("second", &second_args))
        .await
        .unwrap();

    let acme = TenantId::new("acme").unwrap();
    let bus = JetStreamBus::connect(JetStreamConfig::new(nats.url()))
        .await
        .unwrap();
    let mut subscription = bus
        .subscribe(ConsumerSpec::new("e2e", Stage::Alerts, Some(acme.clone())))
        .await
        .unwrap();
    // Three hits on each host: each host's burst fires once, on its third.
    let hosts: Vec<String> = (0..24).map(|n| format!("ws{n:02}")).collect();
    let post = |server: &Server, hosts: &[String]| {
        for host in hosts {
            let body = serde_json::to_string(&vec![whoami_on(host); 3]).unwrap();
            let (status, answer) = server
                .post_events_with(&token, &body, &[("Idempotency-Key", host)])
                .unwrap();
            assert_eq!(status, 200, "{host}: {answer}");
        }
    };
    let (early, late) = hosts.split_at(hosts.len() / 2);
    tokio::task::block_in_place(|| post(&first, early));
    let mut alerts = Vec::new();
    collect(
        &mut subscription,
        &mut alerts,
        Instant::now() + Duration::from_secs(120),
        |alerts| !alerts.is_empty(),
    )
    .await;
    assert!(!alerts.is_empty(), "no correlation before the crash");
    // The second process dies without a word; what it held comes back after the ack wait.
    second.kill_hard();
    drop(second);
    let second = tokio::task::spawn_blocking(start("second", &second_args))
        .await
        .unwrap();
    tokio::task::block_in_place(|| post(&first, late));

    let bursts_by_host = |alerts: &[Alert]| -> BTreeMap<String, usize> {
        let mut by_host = BTreeMap::new();
        for alert in alerts {
            let host = alert
                .matched
                .iter()
                .find(|m| m.field == "Computer")
                .map(|m| m.value.clone())
                .unwrap_or_default();
            *by_host.entry(host).or_default() += 1;
        }
        by_host
    };
    collect(
        &mut subscription,
        &mut alerts,
        Instant::now() + Duration::from_secs(300),
        |alerts| bursts_by_host(alerts).len() >= hosts.len(),
    )
    .await;
    // Anything still in flight (a duplicate would show here).
    collect(
        &mut subscription,
        &mut alerts,
        Instant::now() + Duration::from_secs(5),
        |_| false,
    )
    .await;
    let expected: BTreeMap<String, usize> = hosts.iter().map(|h| (h.clone(), 1)).collect();
    assert_eq!(bursts_by_host(&alerts), expected, "{alerts:#?}");
    for alert in &alerts {
        assert_eq!(alert.tenant, acme);
        assert_eq!(alert.rule_id, "6b1a9d30-0000-4000-8000-0000000000a2");
        // The whoami hits only feed the burst (`generate` is false).
        assert_eq!(alert.event_ids.len(), 3, "{alert:#?}");
    }

    drop(second);
    drop(first);
    drop(bus);
    database.drop().await.unwrap();
}
