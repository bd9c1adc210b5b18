//! `vigil` as a process: real HTTP requests to its admin port, real signals, real NATS and
//! PostgreSQL, and the exact error lines for bad configuration.

// Test helpers panic with the value: the clearest failure a test can give.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vigil_e2e::{NatsServer, free_port};

fn vigil() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    // Tests must not inherit an operator's configuration.
    for (key, _) in std::env::vars() {
        if key.starts_with("VIGIL_") || key.starts_with("OTEL_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    // Parallel tests each get their own control-plane port.
    command.env(
        "VIGIL_CONTROL__LISTEN",
        format!("127.0.0.1:{}", free_port().unwrap()),
    );
    command.env(
        "VIGIL_INGEST__HTTP_LISTEN",
        format!("127.0.0.1:{}", free_port().unwrap()),
    );
    command
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

struct Running {
    child: Child,
    admin: String,
}

impl Running {
    fn start(dir: &Path, args: &[&str]) -> Self {
        let port = free_port().unwrap();
        let child = vigil()
            .arg("run")
            .args(args)
            .current_dir(dir)
            .env("VIGIL_ADMIN__LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self {
            child,
            admin: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("{}{path}", self.admin)).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some((200, _)) = self.get("/readyz").await {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("vigil exited early with {status}: {}", self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "vigil not ready within 20 s: {:?}",
            self.get("/readyz").await
        );
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit; returns the exit code and how long it took.
    fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill().ok();
        panic!("vigil did not exit within {limit:?}");
    }

    fn stderr(&mut self) -> String {
        use std::io::Read;
        let mut text = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            stderr.read_to_string(&mut text).ok();
        }
        text
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_defaults_serve_admin_endpoints_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut vigil = Running::start(dir.path(), &[]);
    vigil.wait_ready().await;
    assert_eq!(vigil.get("/healthz").await, Some((200, "ok\n".into())));
    let (status, body) = vigil.get("/readyz").await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "bus: ok\nstore: ok\nservices: started\n")
    );
    let (status, metrics) = vigil.get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("vigil_build_info{version=\""), "{metrics}");
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(
            line.starts_with("vigil_"),
            "metric without the vigil_ prefix: {line}"
        );
    }
    assert!(
        dir.path().join("vigil-data/vigil.db").is_file(),
        "embedded store not in ./vigil-data"
    );

    vigil.signal("TERM");
    let (code, took) = vigil.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", vigil.stderr());
    assert!(took < Duration::from_secs(10));
    let log = vigil.stderr();
    assert!(
        log.contains("shutting down") && log.contains("SIGTERM"),
        "{log}"
    );
    assert!(log.contains("vigil stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut vigil = Running::start(dir.path(), &["--data-dir", "elsewhere"]);
    vigil.wait_ready().await;
    assert!(dir.path().join("elsewhere/vigil.db").is_file());
    vigil.signal("INT");
    assert_eq!(vigil.wait_exit(Duration::from_secs(10)).0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_and_postgres_readiness_follows_the_bus() {
    let mut nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bus = nats.url();
    // A database of its own: the store keeps signing keys sealed with the master key of the
    // data directory that created them.
    let database = vigil_e2e::TestDatabase::create("readiness").await.unwrap();
    let mut vigil = Running::start(dir.path(), &["--bus", &bus, "--store", &database.url]);
    vigil.wait_ready().await;

    // The bus goes away: not ready, with the reason; it comes back: ready again, same process.
    nats.kill().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = vigil.get("/readyz").await.unwrap();
        if status == 503 {
            // Which reason depends on where the client is in its reconnect cycle.
            assert!(
                body.starts_with("bus: cannot connect to the bus at nats://127.0.0.1:")
                    || body.starts_with("bus: bus check timed out"),
                "{body}"
            );
            assert!(body.contains("store: ok"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still ready without NATS: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nats.restart().unwrap();
    vigil.wait_ready().await;

    vigil.signal("TERM");
    assert_eq!(vigil.wait_exit(Duration::from_secs(10)).0, Some(0));
    database.drop().await.unwrap();
}

fn run_to_end(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    vigil()
        .args(args)
        .current_dir(dir.path())
        .env("VIGIL_ADMIN__LISTEN", format!("127.0.0.1:{port}"))
        .output()
        .unwrap()
}

fn stderr_line(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {text}");
    lines[0].to_owned()
}

#[test]
fn unreachable_bus_fails_with_one_line() {
    let port = free_port().unwrap();
    let output = run_to_end(&["run", "--bus", &format!("nats://127.0.0.1:{port}")]);
    assert_eq!(output.status.code(), Some(1));
    let line = stderr_line(&output);
    assert!(
        line.starts_with(&format!(
            "error: cannot connect to the bus at nats://127.0.0.1:{port}: "
        )),
        "{line}"
    );
}

#[test]
fn unreachable_store_fails_with_one_line_and_no_password() {
    let port = free_port().unwrap();
    let url = format!("postgres://vigil:hunter2@127.0.0.1:{port}/vigil");
    let output = run_to_end(&["run", "--store", &url]);
    assert_eq!(output.status.code(), Some(1));
    let line = stderr_line(&output);
    assert!(
        line.starts_with(&format!(
            "error: cannot connect to the store at postgres://vigil:***@127.0.0.1:{port}/vigil"
        )),
        "{line}"
    );
    assert!(!line.contains("hunter2"));
}

#[test]
fn busy_admin_port_fails_with_one_line() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = vigil()
        .arg("run")
        .current_dir(dir.path())
        .env("VIGIL_ADMIN__LISTEN", &address)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let line = stderr_line(&output);
    assert!(
        line.starts_with(&format!(
            "error: cannot listen on {address} for the admin endpoints"
        )),
        "{line}"
    );
}

#[test]
fn version_is_printed() {
    let output = run_to_end(&["--version"]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("vigil {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn config_check_accepts_the_full_example() {
    let file = fixture("full.toml");
    let output = run_to_end(&["config", "check", file.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{}: ok\n", file.display())
    );
}

/// Golden errors: each bad configuration fails with exit code 2 and exactly this line.
#[test]
fn config_check_rejects_bad_files_with_the_reason() {
    let cases = [
        (
            "unknown-key.toml",
            "bus.replica: unknown field: found `replica`, expected `one of `url`, `credentials_file`, `inbox_prefix`, `replicas`, `duplicate_window_secs`, `max_age_hours`, `max_bytes`, `in_process_max_messages`, `max_publish_in_flight`, `max_publish_in_flight_bytes`, `publish_timeout_secs`, `manage_streams``",
        ),
        (
            "bad-bus-url.toml",
            "bus.url: \"http://127.0.0.1:4222\" is neither \"in-process\" nor a nats://, tls://, ws:// or wss:// URL",
        ),
        (
            "wrong-type.toml",
            "shutdown_grace_secs: invalid type: found string \"soon\", expected u64",
        ),
        ("not-toml.toml", "invalid TOML"),
        (
            "detect-missing-rules.toml",
            "detect: /nonexistent/vigil-rules does not exist",
        ),
        (
            "detect-zero-reload.toml",
            "detect.reload_secs must be at least 1",
        ),
        (
            "tenant-limit-above-listener.toml",
            "ingest.tenant_limits.acme.max_body_bytes: 2000 is above ingest.max_body_bytes (1000)",
        ),
        (
            "vrl-broken.toml",
            "ingest.parsers.acme: the VRL program does not compile",
        ),
        (
            "unknown-service.toml",
            "services.1: unknown variant: found `sigma`, expected `one of `ingest`, `baseline`, `detect`, `triage`, `response`, `reporting`, `control`, `operator``",
        ),
    ];
    for (name, expected) in cases {
        let file = fixture(name);
        let output = run_to_end(&["config", "check", file.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(2), "{name}");
        let line = stderr_line(&output);
        assert!(line.starts_with("error: "), "{name}: {line}");
        assert!(
            line.contains(&file.display().to_string()),
            "{name}: file not named: {line}"
        );
        assert!(line.contains(expected), "{name}: {line}");
    }
    let output = run_to_end(&["config", "check", "/nonexistent.toml"]);
    assert_eq!(
        stderr_line(&output),
        "error: configuration file /nonexistent.toml does not exist"
    );
}

#[test]
fn unknown_env_keys_are_rejected_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let output = vigil()
        .args(["run"])
        .current_dir(dir.path())
        .env("VIGIL_STORE__URI", "sqlite://x.db")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let line = stderr_line(&output);
    assert!(line.contains("VIGIL_STORE__URI"), "{line}");
    assert!(line.contains("unknown field: found `uri`"), "{line}");
}

#[test]
fn rules_check_reports_loaded_and_rejected_as_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.yml"),
        "title: Whoami\nid: 11111111-1111-4111-8111-111111111111\nlogsource:\n  product: windows\n  category: process_creation\ndetection:\n  selection:\n    CommandLine|contains: whoami\n  condition: selection\nlevel: medium\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("broken.yml"), "title: [unclosed\n").unwrap();
    let output = run_to_end(&[
        "rules",
        "check",
        dir.path().to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["loaded"], 1);
    let rejected = report["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("broken.yml")
    );
    assert!(rejected[0]["reason"].as_str().unwrap().len() > 3);
    assert!(rejected[0].get("rule_id").is_some());

    let output = run_to_end(&["rules", "check", "/nonexistent/rules"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_line(&output).starts_with("error: cannot read /nonexistent/rules"));
}
