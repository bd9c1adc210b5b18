//! A tenant's own pipeline as the `vigil-tenant` chart runs it, on this machine: the platform's
//! control plane (platform NATS user, PostgreSQL), a tenant provisioned as the operator does it,
//! and `vigil run --services ingest,detect` configured as the chart configures it (the tenant's
//! NATS user limited to `vigil.<tenant>.>`, its inbox prefix, no stream management, detect on
//! the tenant's own consumer). An event posted with the tenant's ingest token becomes an alert
//! the control plane stores; another tenant's valid token cannot push events through it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Server, vigil};
use vigil_auth::{MasterKey, TokenSettings};
use vigil_bus::Bus;
use vigil_bus::jetstream::{JetStreamBus, JetStreamConfig};
use vigil_e2e::{JwtNats, TestDatabase, free_port};
use vigil_operator::Provisioner;
use vigil_operator::crd::PipelineService;
use vigil_operator::nats::NatsIssuer;
use vigil_schema::TenantId;
use vigil_store::Store;

const RULE: &str = r#"title: Whoami run by a tenant user
id: 5b0c6d1e-8e0a-4c57-9f6e-2b7f0c1de2e1
status: test
logsource:
  category: process_creation
  product: windows
detection:
  selection:
    Image|endswith: '\whoami.exe'
  condition: selection
level: high
tags:
  - attack.discovery
  - attack.t1033
"#;

fn event(id: &str) -> String {
    serde_json::json!({
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "EventID": 1,
        "Hostname": "ws-017.acme.example",
        "UtcTime": "2026-11-27 10:00:00.000",
        "Image": "C:\\Windows\\System32\\whoami.exe",
        "CommandLine": "whoami /all",
        "User": "ACME\\bob",
        "ProcessGuid": id,
    })
    .to_string()
}

struct Pipeline {
    child: Child,
    admin: u16,
    ingest: u16,
}

impl Pipeline {
    fn post(&self, token: &str, body: &str) -> u16 {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.ingest)).unwrap();
        let request = format!(
            "POST /v1/events HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0)
    }

    fn ready(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.admin)) else {
            return false;
        };
        if stream
            .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut response = String::new();
        stream.read_to_string(&mut response).is_ok()
            && (response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"))
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_pipeline_runs_on_its_own_nats_user() {
    let nats = JwtNats::start().unwrap();
    let platform_creds = nats.platform_creds().unwrap();
    let database = TestDatabase::create("tenant_pipeline").await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The platform: control plane and alert persister, as the vigil chart runs them.
    let control = Server::start_with_env(
        &dir.path().join("control"),
        &[
            "--services",
            "control",
            "--bus",
            &nats.url(),
            "--store",
            &database.url,
        ],
        &[(
            "VIGIL_BUS__CREDENTIALS_FILE",
            platform_creds.to_str().unwrap(),
        )],
        "http",
    );
    let admin = control.admin_token();

    // The operator's provisioning, with the control plane's master key.
    let store = Store::connect(&database.url).await.unwrap();
    let master = std::fs::read_to_string(control.data_dir.join("master.key")).unwrap();
    let mut platform = JetStreamConfig::new(nats.url());
    platform.credentials_file = Some(platform_creds.clone());
    let platform: Arc<dyn Bus> = Arc::new(JetStreamBus::connect(platform).await.unwrap());
    let provisioner = Provisioner {
        store: store.clone(),
        bus: platform,
        master: Arc::new(MasterKey::from_file_contents(&master).unwrap()),
        tokens: TokenSettings::default(),
        nats: Some(Arc::new(
            NatsIssuer::new(&nats.account_seed(), None, None).unwrap(),
        )),
    };
    let acme = TenantId::new("acme").unwrap();
    let manager = "kubernetes:tenants/acme";
    provisioner
        .ensure_tenant(&acme, "ACME", manager, false, false)
        .await
        .unwrap();
    let consumers = provisioner
        .ensure_consumers(&acme, &[PipelineService::Ingest, PipelineService::Detect])
        .await
        .unwrap();
    let credentials = provisioner
        .issue_credentials(&acme, manager, 90, true, &consumers)
        .await
        .unwrap();
    let user = credentials.nats.unwrap();
    let creds_path = dir.path().join("acme.creds");
    std::fs::write(&creds_path, &user.creds).unwrap();
    // A second tenant, with a valid ingest token of its own.
    let globex = TenantId::new("globex").unwrap();
    provisioner
        .ensure_tenant(&globex, "Globex", "kubernetes:tenants/globex", false, false)
        .await
        .unwrap();
    let globex_token = provisioner
        .issue_credentials(&globex, "kubernetes:tenants/globex", 90, false, &[])
        .await
        .unwrap()
        .ingest_token;

    // acme's pipeline, configured as the vigil-tenant chart configures it.
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("whoami.yml"), RULE).unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "[detect]\ntenant = \"acme\"\nrules = [\"{}\"]\n",
            rules.display()
        ),
    )
    .unwrap();
    let (admin_port, ingest_port) = (free_port().unwrap(), free_port().unwrap());
    let child = vigil()
        .args(["run", "--services", "ingest,detect", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("pipeline"))
        .args(["--bus", &nats.url(), "--store", &database.url])
        .env("VIGIL_BUS__CREDENTIALS_FILE", &creds_path)
        .env("VIGIL_BUS__INBOX_PREFIX", &user.inbox_prefix)
        .env("VIGIL_BUS__MANAGE_STREAMS", "false")
        .env("VIGIL_DETECT__CORRELATION_PARTITIONS", "4")
        // A publish the server refuses is never acknowledged: fail it sooner than 30 s.
        .env("VIGIL_BUS__PUBLISH_TIMEOUT_SECS", "5")
        .env("VIGIL_ADMIN__LISTEN", format!("127.0.0.1:{admin_port}"))
        .env(
            "VIGIL_INGEST__HTTP_LISTEN",
            format!("127.0.0.1:{ingest_port}"),
        )
        .env("VIGIL_INGEST__BATCH_EVENTS", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("pipeline.log")).unwrap())
        .spawn()
        .unwrap();
    let mut pipeline = Pipeline {
        child,
        admin: admin_port,
        ingest: ingest_port,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pipeline.ready() {
        if let Ok(Some(status)) = pipeline.child.try_wait() {
            panic!(
                "the tenant pipeline exited with {status}: {}",
                std::fs::read_to_string(dir.path().join("pipeline.log")).unwrap()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the tenant pipeline did not become ready: {}",
            std::fs::read_to_string(dir.path().join("pipeline.log")).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Leave detect a moment to load the rule directory.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // acme's event: accepted, detected, stored by the platform's persister.
    assert_eq!(
        pipeline.post(&credentials.ingest_token, &event("{acme-1}")),
        200
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let alerts = loop {
        let listed = control.ok(
            &admin,
            &["alerts", "list", "--tenant", "acme", "--format", "json"],
        );
        let alerts: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
        if !alerts.is_empty() {
            break alerts;
        }
        assert!(
            Instant::now() < deadline,
            "no alert for acme: {}",
            std::fs::read_to_string(dir.path().join("pipeline.log")).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["tenant"], "acme");
    assert_eq!(alerts[0]["rule_id"], "5b0c6d1e-8e0a-4c57-9f6e-2b7f0c1de2e1");

    // globex's valid token through acme's pipeline: ingest verifies it, but acme's NATS user
    // may not publish to vigil.globex.events, so nothing is accepted.
    let status = pipeline.post(&globex_token, &event("{globex-1}"));
    assert_ne!(
        status, 200,
        "acme's pipeline must not carry globex's events"
    );
    assert!(
        status >= 500,
        "a refusal by the bus is a server-side failure: {status}"
    );
    let listed = control.ok(
        &admin,
        &["alerts", "list", "--tenant", "globex", "--format", "json"],
    );
    assert_eq!(listed.trim(), "[]");

    drop(pipeline);
    drop(control);
    store.close().await;
    database.drop().await.unwrap();
}
