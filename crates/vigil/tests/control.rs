//! The control plane end to end through the `vigil` CLI, against `vigil run` on embedded
//! defaults and on NATS JetStream + PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Server, vigil};
use vigil_bus::{Bus, OutgoingMessage};
use vigil_e2e::{NatsServer, TestDatabase, shared_dir};
use vigil_schema::{Alert, AlertId, AlertSource, AttackTechnique, EventId, Level, TenantId};

#[test]
fn embedded_defaults_onboard_a_tenant_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["admin.token", "master.key"] {
            let mode = std::fs::metadata(server.data_dir.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
    let admin = server.admin_token();
    let created: serde_json::Value = serde_json::from_str(&server.ok(
        &admin,
        &[
            "tenant",
            "create",
            "acme",
            "--name",
            "Acme Corp",
            "--format",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(created["id"], "acme");
    assert_eq!(created["state"], "active");
    let ingest = server.ok(
        &admin,
        &["token", "issue", "--tenant", "acme", "--role", "ingest"],
    );
    assert_eq!(
        ingest.trim().split('.').count(),
        3,
        "a compact JWT: {ingest}"
    );

    // The MSSP's rule, pushed through the control plane; the detect service picks it up.
    let rule = shared_dir().join(
        "data/sigma/rules/windows/process_creation/proc_creation_win_amsi_registry_tampering.yml",
    );
    server.ok(&admin, &["rules", "push", rule.to_str().unwrap()]);
    // Detection content reloads every 2 s; give it one cycle before sending events.
    std::thread::sleep(Duration::from_secs(3));

    // The ingest token sends SigmaHQ's regression events over HTTP; the admin token cannot.
    let events = std::fs::read_to_string(shared_dir().join(
        "data/sigma/regression_data/rules/windows/process_creation/proc_creation_win_amsi_registry_tampering/7dbbcac2-57a0-45ac-b306-ff30a8bd2981.json",
    ))
    .unwrap();
    let (status, body) = server.post_events(ingest.trim(), &events);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"accepted\""), "{body}");
    let (status, body) = server.post_events(&admin, &events);
    assert_eq!(status, 403, "{body}");

    // A forensics upload: the EVTX file's records through HTTP ingest, with a one-hour token
    // issued for the upload and revoked after it.
    let evtx = shared_dir().join(
        "data/sigma/regression_data/rules/windows/process_creation/proc_creation_win_amsi_registry_tampering/7dbbcac2-57a0-45ac-b306-ff30a8bd2981.evtx",
    );
    let output = vigil()
        .args([
            "ingest",
            "evtx",
            evtx.to_str().unwrap(),
            "--tenant",
            "acme",
            "--format",
            "json",
        ])
        .env("VIGIL_ENDPOINT", &server.endpoint)
        .env("VIGIL_TOKEN", &admin)
        .env(
            "VIGIL_INGEST_ENDPOINT",
            format!("http://127.0.0.1:{}", server.ingest_port),
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let uploaded: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(uploaded["files"], 1);
    assert!(uploaded["records"].as_u64().unwrap() >= 1, "{uploaded}");
    let tokens: Vec<serde_json::Value> = serde_json::from_str(&server.ok(
        &admin,
        &["token", "list", "--tenant", "acme", "--format", "json"],
    ))
    .unwrap();
    let upload = tokens
        .iter()
        .find(|t| t["subject"] == "evtx-upload")
        .unwrap();
    assert!(upload["revoked_time"].is_string(), "{upload}");
    // The posted record and the uploaded EVTX record each fire the rule: two alerts, listed
    // through the CLI once the persister stored them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let alerts = loop {
        let alerts: Vec<serde_json::Value> = serde_json::from_str(&server.ok(
            &admin,
            &["alerts", "list", "--tenant", "acme", "--format", "json"],
        ))
        .unwrap();
        if alerts.len() >= 2 || Instant::now() > deadline {
            break alerts;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    for alert in &alerts {
        assert_eq!(alert["tenant"], "acme");
        assert_eq!(alert["rule_id"], "7dbbcac2-57a0-45ac-b306-ff30a8bd2981");
        assert_eq!(alert["level"], "high", "{alert}");
        assert_eq!(alert["event_ids"].as_array().unwrap().len(), 1);
        assert!(alert["attack"].to_string().contains("T1685"), "{alert}");
    }

    // SigmaHQ's process_creation rules, pushed globally and listed for the tenant.
    let rules = shared_dir().join("data/sigma/rules/windows/process_creation");
    let pushed = server.ok(&admin, &["rules", "push", rules.to_str().unwrap()]);
    assert!(pushed.starts_with("pushed "), "{pushed}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&server.ok(
        &admin,
        &["rules", "list", "--tenant", "acme", "--format", "json"],
    ))
    .unwrap();
    assert!(listed.len() > 1000, "{}", listed.len());

    // A tenant viewer sees its tenant and nothing else.
    let viewer = server.ok(
        &admin,
        &[
            "token",
            "issue",
            "--tenant",
            "acme",
            "--role",
            "tenant-viewer",
        ],
    );
    let viewer = viewer.trim();
    server.ok(viewer, &["tenant", "get", "acme"]);
    let denied = server.cli(viewer, &["tenant", "list"]);
    assert_eq!(denied.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.starts_with("error: PermissionDenied"), "{stderr}");
    let unauthenticated = server.cli("not-a-token", &["tenant", "list"]);
    assert!(String::from_utf8_lossy(&unauthenticated.stderr).starts_with("error: Unauthenticated"));

    // Mutations and refused tokens are counted on the admin port.
    let metrics = server.metrics();
    assert!(
        metrics.contains(
            r#"vigil_control_mutations_total{action="tenant.create",outcome="success"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"vigil_control_unauthenticated_total{reason="malformed"} 1"#),
        "{metrics}"
    );

    let completions = vigil().args(["completions", "bash"]).output().unwrap();
    assert!(String::from_utf8_lossy(&completions.stdout).contains("vigil"));
}

/// Alerts the way the detect service will make them: SigmaHQ rules over SigmaHQ's regression
/// events, one alert per matching record.
fn regression_alerts(tenant: &TenantId) -> Vec<Alert> {
    let shared = shared_dir().join("data/sigma");
    let cases = [
        "windows/process_creation/proc_creation_win_certutil_decode",
        "windows/process_creation/proc_creation_win_bitsadmin_download",
        "windows/process_creation/proc_creation_win_amsi_registry_tampering",
    ];
    let rules: Vec<PathBuf> = cases
        .iter()
        .map(|case| shared.join(format!("rules/{case}.yml")))
        .collect();
    let mappings = Arc::new(vigil_sigma::Mappings::builtin().unwrap());
    let ruleset = vigil_sigma::RuleSet::load(&rules, mappings).unwrap();
    assert!(ruleset.check().rejected.is_empty());
    let mut alerts = Vec::new();
    for case in cases {
        let case_dir = shared.join(format!("regression_data/rules/{case}"));
        for entry in std::fs::read_dir(&case_dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let (records, error) =
                vigil_sigma::source::json_records(&std::fs::read_to_string(&path).unwrap());
            assert!(error.is_none());
            for (index, record) in records.iter().enumerate() {
                let event_id =
                    EventId::derive(&[path.to_string_lossy().as_bytes(), &index.to_le_bytes()]);
                for detection in ruleset.detect(record) {
                    let now = time::OffsetDateTime::now_utc();
                    alerts.push(Alert {
                        id: AlertId::derive(&[
                            tenant.as_str().as_bytes(),
                            detection.rule.id.as_bytes(),
                            event_id.to_string().as_bytes(),
                        ]),
                        tenant: tenant.clone(),
                        source: AlertSource::Sigma,
                        rule_id: detection.rule.id.clone(),
                        rule_title: detection.rule.title.clone(),
                        level: detection
                            .rule
                            .level
                            .as_str()
                            .parse()
                            .unwrap_or(Level::Medium),
                        attack: detection
                            .rule
                            .attack
                            .iter()
                            .map(|id| {
                                let technique = vigil_sigma::technique(id);
                                AttackTechnique {
                                    id: id.clone(),
                                    name: technique
                                        .as_ref()
                                        .map(|t| t.name.clone())
                                        .unwrap_or_default(),
                                    tactics: technique.map(|t| t.tactics).unwrap_or_default(),
                                }
                            })
                            .collect(),
                        event_ids: vec![event_id],
                        matched: Vec::new(),
                        entities: Default::default(),
                        intel: None,
                        event_time: now,
                        detected_time: now,
                    });
                }
            }
        }
    }
    assert!(alerts.len() >= 3, "{} alerts", alerts.len());
    alerts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_from_jetstream_are_listed_by_tenant_on_postgres() {
    let nats = NatsServer::start().unwrap();
    let database = TestDatabase::create("e2e").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = {
        let (nats_url, store_url, path) = (nats.url(), database.url.clone(), dir.path().to_owned());
        tokio::task::spawn_blocking(move || {
            Server::start(&path, &["--bus", &nats_url, "--store", &store_url])
        })
        .await
        .unwrap()
    };
    let admin = server.admin_token();
    for tenant in ["acme", "globex"] {
        server.ok(&admin, &["tenant", "create", tenant]);
    }
    let acme = TenantId::new("acme").unwrap();
    let alerts = regression_alerts(&acme);
    let bus = vigil_bus::jetstream::JetStreamBus::connect(
        vigil_bus::jetstream::JetStreamConfig::new(nats.url()),
    )
    .await
    .unwrap();
    // Every alert twice, under different message ids (a detect process redelivering).
    for (round, alert) in [0, 1]
        .iter()
        .flat_map(|round| alerts.iter().map(move |a| (round, a)))
    {
        let message = OutgoingMessage::encode(alert, format!("{}-{round}", alert.id)).unwrap();
        bus.publish_durable(message).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let text = server.ok(
            &admin,
            &[
                "alerts", "list", "--tenant", "acme", "--format", "json", "--limit", "1000",
            ],
        );
        let listed: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        if listed.len() >= alerts.len() || Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(listed.len(), alerts.len(), "each alert once");
    for alert in &listed {
        for key in [
            "id",
            "tenant",
            "rule_id",
            "rule_title",
            "level",
            "event_ids",
            "attack",
        ] {
            assert!(alert.get(key).is_some(), "{key} missing in {alert}");
        }
        assert_eq!(alert["tenant"], "acme");
        assert!(
            alert["attack"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t.as_str().is_some_and(|t| t.starts_with('T')))
        );
    }
    let globex = server.ok(
        &admin,
        &["alerts", "list", "--tenant", "globex", "--format", "json"],
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&globex).unwrap(),
        serde_json::json!([])
    );
    let viewer = server.ok(
        &admin,
        &[
            "token",
            "issue",
            "--tenant",
            "globex",
            "--role",
            "tenant-viewer",
        ],
    );
    let denied = server.cli(viewer.trim(), &["alerts", "list", "--tenant", "acme"]);
    assert_eq!(denied.status.code(), Some(1));
    drop(server);
    database.drop().await.unwrap();
}

#[test]
fn the_cli_talks_tls_to_a_tls_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = Server::start_with_env(
        dir.path(),
        &[],
        &[
            ("VIGIL_CONTROL__TLS__CERT_FILE", cert.to_str().unwrap()),
            ("VIGIL_CONTROL__TLS__KEY_FILE", key.to_str().unwrap()),
        ],
        "https",
    );
    let admin = server.admin_token();
    // Without the CA the server's certificate is not trusted.
    let untrusted = server.cli(&admin, &["tenant", "list"]);
    assert_eq!(untrusted.status.code(), Some(1));
    let trusted = vigil()
        .args(["tenant", "create", "acme"])
        .env("VIGIL_ENDPOINT", &server.endpoint)
        .env("VIGIL_TOKEN", &admin)
        .env("VIGIL_CA_FILE", &cert)
        .output()
        .unwrap();
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
}

#[test]
fn principals_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let admin = server.admin_token();
    server.ok(&admin, &["tenant", "create", "acme"]);
    let created = server.ok(
        &admin,
        &[
            "principal",
            "create",
            "alice@acme.example",
            "--role",
            "tenant-viewer",
            "--tenant",
            "acme",
            "--name",
            "Alice",
        ],
    );
    assert_eq!(
        created.trim(),
        "created principal alice@acme.example (tenant-viewer for acme)"
    );
    let token = server.ok(
        &admin,
        &[
            "token",
            "issue",
            "--tenant",
            "acme",
            "--role",
            "tenant-viewer",
            "--subject",
            "alice@acme.example",
        ],
    );
    let token = token.trim();
    server.ok(token, &["tenant", "get", "acme"]);
    let listed: serde_json::Value = serde_json::from_str(&server.ok(
        &admin,
        &["principal", "list", "--tenant", "acme", "--format", "json"],
    ))
    .unwrap();
    assert_eq!(listed[0]["subject"], "alice@acme.example");
    assert_eq!(listed[0]["display_name"], "Alice");
    assert_eq!(listed[0]["live_tokens"], 1);
    let table = server.ok(&admin, &["principal", "list"]);
    assert!(table.starts_with("SUBJECT"), "{table}");
    assert!(table.contains("alice@acme.example"), "{table}");

    let disabled = server.ok(
        &admin,
        &[
            "principal",
            "disable",
            "alice@acme.example",
            "--tenant",
            "acme",
        ],
    );
    assert_eq!(
        disabled.trim(),
        "disabled principal alice@acme.example; revoked 1 token(s)"
    );
    let refused = server.cli(token, &["tenant", "get", "acme"]);
    assert_eq!(refused.status.code(), Some(1));
    let refused = server.cli(
        &admin,
        &[
            "token",
            "issue",
            "--tenant",
            "acme",
            "--role",
            "tenant-viewer",
            "--subject",
            "alice@acme.example",
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("principal alice@acme.example is disabled"),
        "{message}"
    );
}
