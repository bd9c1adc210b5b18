//! `vigil run`'s configuration: defaults, then the TOML file, then `VIGIL_*` environment
//! variables, then command-line flags. Unknown keys are rejected with the key and the file.
//!
//! Environment variables map to keys with `__` between levels: `VIGIL_BUS__URL` sets
//! `bus.url`, `VIGIL_ADMIN__LISTEN` sets `admin.listen`. Only variables whose first level is a
//! configuration section are read, so that `VIGIL_TOKEN` and `VIGIL_ENDPOINT` (the CLI's
//! credentials) are never mistaken for configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use vigil_bus::inprocess::InProcessConfig;
use vigil_bus::jetstream::JetStreamConfig;
use vigil_telemetry::TelemetryConfig;

use crate::services::ServiceName;

/// Top-level sections; `VIGIL_<SECTION>…` variables are read only for these.
const SECTIONS: &[&str] = &[
    "data_dir",
    "services",
    "shutdown_grace_secs",
    "bus",
    "store",
    "admin",
    "telemetry",
    "control",
    "ingest",
    "detect",
    "operator",
];

/// Everything `vigil run` is configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the embedded store and first-start files.
    pub data_dir: PathBuf,
    /// Services to run; empty means every service this build has.
    pub services: Vec<ServiceName>,
    /// How long services get to finish after SIGTERM before the process exits anyway.
    pub shutdown_grace_secs: u64,
    /// The message bus.
    pub bus: BusConfig,
    /// The database.
    pub store: StoreConfig,
    /// The admin endpoints.
    pub admin: AdminConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// The control plane.
    pub control: vigil_control::Config,
    /// Log intake.
    pub ingest: vigil_ingest::Config,
    /// Detection.
    pub detect: vigil_detect::Config,
    /// The Kubernetes operator.
    pub operator: vigil_operator::Config,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("vigil-data"),
            services: Vec::new(),
            shutdown_grace_secs: 8,
            bus: BusConfig::default(),
            store: StoreConfig::default(),
            admin: AdminConfig::default(),
            telemetry: TelemetryConfig::default(),
            control: vigil_control::Config::default(),
            ingest: vigil_ingest::Config::default(),
            detect: vigil_detect::Config::default(),
            operator: vigil_operator::Config::default(),
        }
    }
}

/// The bus: in-process (embedded default) or NATS JetStream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// `in-process`, or NATS URLs (`nats://host:4222`, comma-separated for a cluster).
    pub url: String,
    /// NATS credentials file, for per-tenant users limited to `vigil.<tenant>.>`.
    pub credentials_file: Option<PathBuf>,
    /// Reply-subject prefix; a per-tenant NATS user needs its own (`_INBOX_<tenant>`, written
    /// by the operator to the tenant's Secret as `nats-inbox-prefix`).
    pub inbox_prefix: Option<String>,
    /// JetStream stream replicas: 1 on one server, 3 in production.
    pub replicas: usize,
    /// Window in which a repeated message id is dropped, in seconds.
    pub duplicate_window_secs: u64,
    /// Oldest message kept per stage stream, in hours.
    pub max_age_hours: u64,
    /// Most bytes per stage stream (JetStream) before publishers wait.
    pub max_bytes: i64,
    /// Most messages held per stage by the in-process bus before publishers wait.
    pub in_process_max_messages: usize,
    /// Most publishes awaiting acknowledgement at once (JetStream).
    pub max_publish_in_flight: usize,
    /// Most payload bytes awaiting acknowledgement at once (JetStream).
    pub max_publish_in_flight_bytes: usize,
    /// How long a publish may wait for room and acknowledgement, in seconds.
    pub publish_timeout_secs: u64,
    /// Whether this process creates and updates the JetStream streams.
    pub manage_streams: bool,
}

impl Default for BusConfig {
    fn default() -> Self {
        let jetstream = JetStreamConfig::new("");
        Self {
            url: "in-process".into(),
            credentials_file: None,
            inbox_prefix: None,
            replicas: jetstream.replicas,
            duplicate_window_secs: jetstream.duplicate_window.as_secs(),
            max_age_hours: jetstream.max_age.as_secs() / 3600,
            max_bytes: jetstream.max_bytes,
            in_process_max_messages: InProcessConfig::default().max_messages,
            max_publish_in_flight: jetstream.max_publish_in_flight,
            max_publish_in_flight_bytes: jetstream.max_publish_in_flight_bytes,
            publish_timeout_secs: jetstream.publish_timeout.as_secs(),
            manage_streams: true,
        }
    }
}

impl BusConfig {
    /// Whether the in-process bus is selected.
    pub fn is_in_process(&self) -> bool {
        self.url == "in-process"
    }

    /// JetStream settings from this section.
    pub fn jetstream(&self) -> JetStreamConfig {
        let mut config = JetStreamConfig::new(self.url.clone());
        config.credentials_file = self.credentials_file.clone();
        config.inbox_prefix = self.inbox_prefix.clone();
        config.replicas = self.replicas;
        config.duplicate_window = Duration::from_secs(self.duplicate_window_secs);
        config.max_age = Duration::from_secs(self.max_age_hours * 3600);
        config.max_bytes = self.max_bytes;
        config.max_publish_in_flight = self.max_publish_in_flight;
        config.max_publish_in_flight_bytes = self.max_publish_in_flight_bytes;
        config.publish_timeout = Duration::from_secs(self.publish_timeout_secs);
        config.manage_streams = self.manage_streams;
        config
    }

    /// In-process settings from this section.
    pub fn in_process(&self) -> InProcessConfig {
        InProcessConfig {
            max_messages: self.in_process_max_messages,
            duplicate_window: Duration::from_secs(self.duplicate_window_secs),
            publish_timeout: Duration::from_secs(self.publish_timeout_secs),
            ..InProcessConfig::default()
        }
    }
}

/// The database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `postgres://…` or `sqlite://PATH`; default `sqlite://<data_dir>/vigil.db`.
    pub url: Option<String>,
}

/// The admin endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9464)),
        }
    }
}

/// Command-line flags that override the configuration.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--services`.
    pub services: Option<Vec<String>>,
    /// `--bus`.
    pub bus_url: Option<String>,
    /// `--store`.
    pub store_url: Option<String>,
}

impl Config {
    /// Loads defaults, `file`, `VIGIL_*` variables and `overrides`, in that order, and
    /// validates the result. Errors name the key and where it came from.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, String> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(format!(
                    "configuration file {} does not exist",
                    path.display()
                ));
            }
            // Read it ourselves so that a TOML syntax error is reported with the file's name.
            let text = std::fs::read_to_string(path).map_err(|err| {
                format!("cannot read configuration file {}: {err}", path.display())
            })?;
            if let Err(err) = text.parse::<toml::Table>() {
                let message = err.to_string().replace('\n', " ");
                return Err(format!(
                    "{}: invalid TOML: {}",
                    path.display(),
                    message.trim()
                ));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let env = Env::prefixed("VIGIL_").split("__").filter(|key| {
            let first = key.as_str().split('.').next().unwrap_or_default();
            SECTIONS
                .iter()
                .any(|section| first.eq_ignore_ascii_case(section))
        });
        figment = figment.merge(env);
        if let Some(dir) = &overrides.data_dir {
            figment = figment.merge(("data_dir", dir));
        }
        if let Some(services) = &overrides.services {
            figment = figment.merge(("services", services));
        }
        if let Some(url) = &overrides.bus_url {
            figment = figment.merge(("bus.url", url));
        }
        if let Some(url) = &overrides.store_url {
            figment = figment.merge(("store.url", url));
        }
        let config: Config = figment.extract().map_err(|err| describe(&err))?;
        config.validate().map_err(|(key, message)| {
            match figment.find_metadata(key).and_then(|m| source_name(m, key)) {
                Some(source) => format!("{source}: {message}"),
                None => message,
            }
        })?;
        Ok(config)
    }

    /// Checks values that parse but cannot work; the error names the offending key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.bus.is_in_process() {
            for url in self.bus.url.split(',') {
                let url = url.trim();
                let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
                    .iter()
                    .any(|scheme| url.starts_with(scheme));
                if !scheme_ok {
                    return Err((
                        "bus.url",
                        format!(
                            "bus.url: {url:?} is neither \"in-process\" nor a nats://, tls://, ws:// or wss:// URL"
                        ),
                    ));
                }
            }
        }
        if let Some(url) = &self.store.url {
            let ok = ["postgres://", "postgresql://", "sqlite://"]
                .iter()
                .any(|scheme| url.starts_with(scheme));
            if !ok {
                return Err((
                    "store.url",
                    format!(
                        "store.url: {:?} is neither a postgres:// nor a sqlite:// URL",
                        vigil_store::redact(url)
                    ),
                ));
            }
        }
        if self.bus.replicas == 0 || self.bus.replicas > 5 {
            return Err((
                "bus.replicas",
                format!("bus.replicas: {} is not between 1 and 5", self.bus.replicas),
            ));
        }
        if self.bus.max_publish_in_flight == 0 || self.bus.max_publish_in_flight_bytes < 1024 {
            return Err((
                "bus.max_publish_in_flight",
                "bus.max_publish_in_flight: must be greater than zero (and max_publish_in_flight_bytes at least 1024)".into(),
            ));
        }
        if self.bus.in_process_max_messages == 0 {
            return Err((
                "bus.in_process_max_messages",
                "bus.in_process_max_messages: must be greater than zero".into(),
            ));
        }
        if let Err(err) = vigil_telemetry::validate_filter(&self.telemetry.log_filter) {
            return Err((
                "telemetry.log_filter",
                format!("telemetry.log_filter: {err}"),
            ));
        }
        self.ingest.validate()?;
        if let Err(message) = self.detect.validate() {
            return Err(("detect", message));
        }
        if let Err(message) = self.operator.validate() {
            return Err(("operator", message));
        }
        if let Some(service) = self.services.iter().find(|s| !s.is_available()) {
            return Err((
                "services",
                format!(
                    "services: {service} is not available in this build of vigil {}",
                    env!("CARGO_PKG_VERSION")
                ),
            ));
        }
        Ok(())
    }

    /// The services to start.
    pub fn effective_services(&self) -> Vec<ServiceName> {
        if self.services.is_empty() {
            ServiceName::ALL
                .into_iter()
                .filter(|s| s.is_available() && s.runs_by_default())
                .collect()
        } else {
            self.services.clone()
        }
    }

    /// The store URL, defaulting to SQLite in the data directory.
    pub fn store_url(&self) -> String {
        self.store
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("vigil.db").display()))
    }
}

/// Where the value of `key` came from, for error messages: the file, or the variable.
fn source_name(metadata: &figment::Metadata, key: &str) -> Option<String> {
    match &metadata.source {
        Some(figment::Source::File(path)) => Some(path.display().to_string()),
        _ if metadata.name.contains("environment") => Some(format!(
            "environment variable VIGIL_{}",
            key.replace('.', "__").to_ascii_uppercase()
        )),
        _ => None,
    }
}

/// Figment's message on one line, with the key and the source (file or variable).
fn describe(err: &figment::Error) -> String {
    let mut parts = Vec::new();
    for error in err.clone() {
        let mut line = error.kind.to_string();
        if !error.path.is_empty() {
            line = format!("{}: {line}", error.path.join("."));
        }
        if let Some(metadata) = &error.metadata {
            match &metadata.source {
                Some(figment::Source::File(path)) => line = format!("{}: {line}", path.display()),
                _ if metadata.name.contains("environment") => {
                    let key = error.path.join("__").to_ascii_uppercase();
                    line = format!("environment variable VIGIL_{key}: {line}")
                }
                _ => {}
            }
        }
        parts.push(line);
    }
    parts.join("; ")
}

#[cfg(test)]
// figment's Jail closures return figment's large error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn write(jail: &Jail, toml: &str) -> PathBuf {
        let path = jail.directory().join("vigil.toml");
        std::fs::write(&path, toml).unwrap();
        path
    }

    #[test]
    fn defaults_are_the_embedded_shape() {
        Jail::expect_with(|_jail| {
            let config = Config::load(None, &Overrides::default()).unwrap();
            assert!(config.bus.is_in_process());
            assert_eq!(config.admin.listen.port(), 9464);
            assert_eq!(config.store_url(), "sqlite://vigil-data/vigil.db");
            Ok(())
        });
    }

    #[test]
    fn file_then_env_then_flags() {
        Jail::expect_with(|jail| {
            let path = write(
                jail,
                "data_dir = \"/srv/vigil\"\n[bus]\nurl = \"nats://file:4222\"\nreplicas = 3\n[admin]\nlisten = \"127.0.0.1:9000\"\n",
            );
            jail.set_env("VIGIL_BUS__URL", "nats://env:4222");
            jail.set_env("VIGIL_ADMIN__LISTEN", "127.0.0.1:9001");
            // CLI credentials must not be read as configuration keys.
            jail.set_env("VIGIL_TOKEN", "secret");
            jail.set_env("VIGIL_ENDPOINT", "http://127.0.0.1:50051");
            let config = Config::load(Some(&path), &Overrides::default()).unwrap();
            assert_eq!(config.bus.url, "nats://env:4222");
            assert_eq!(config.bus.replicas, 3);
            assert_eq!(config.admin.listen.port(), 9001);
            assert_eq!(config.store_url(), "sqlite:///srv/vigil/vigil.db");
            let flags = Overrides {
                bus_url: Some("nats://flag:4222".into()),
                store_url: Some("postgres://vigil@db/vigil".into()),
                ..Overrides::default()
            };
            let config = Config::load(Some(&path), &flags).unwrap();
            assert_eq!(config.bus.url, "nats://flag:4222");
            assert_eq!(config.store_url(), "postgres://vigil@db/vigil");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_file() {
        Jail::expect_with(|jail| {
            let path = write(jail, "[bus]\nurll = \"nats://x\"\n");
            let err = Config::load(Some(&path), &Overrides::default()).unwrap_err();
            assert!(err.contains("unknown field: found `urll`"), "{err}");
            assert!(err.contains("vigil.toml"), "{err}");
            assert!(err.contains("bus.urll") || err.contains("bus"), "{err}");
            let path = write(jail, "colour = \"blue\"\n");
            let err = Config::load(Some(&path), &Overrides::default()).unwrap_err();
            assert!(err.contains("`colour`"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_in_env_name_the_variable() {
        Jail::expect_with(|jail| {
            jail.set_env("VIGIL_BUS__NOPE", "1");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.contains("`nope`"), "{err}");
            assert!(err.contains("VIGIL_BUS__NOPE"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_rejected_with_reasons() {
        let cases = [
            (
                "[bus]\nurl = \"http://x\"\n",
                "bus.url: \"http://x\" is neither",
            ),
            (
                "[bus]\nreplicas = 0\n",
                "bus.replicas: 0 is not between 1 and 5",
            ),
            ("[bus]\nreplicas = \"three\"\n", "replicas"),
            (
                "[store]\nurl = \"mysql://root:pw@x/y\"\n",
                "store.url: \"mysql://root:***@x/y\"",
            ),
            ("[admin]\nlisten = \"not an address\"\n", "listen"),
            (
                "services = [\"ingest\", \"nope\"]\n",
                "unknown variant: found `nope`",
            ),
            (
                "services = [\"triage\"]\n",
                "services: triage is not available in this build",
            ),
            (
                "[detect]\nreload_secs = 0\n",
                "detect.reload_secs must be at least 1",
            ),
            ("[telemetry]\nlog_format = \"xml\"\n", "xml"),
            ("[bus\nurl = 1", "invalid TOML"),
        ];
        for (toml, expected) in cases {
            Jail::expect_with(|jail| {
                let path = write(jail, toml);
                let err = Config::load(Some(&path), &Overrides::default()).unwrap_err();
                assert!(err.contains(expected), "{toml:?}: {err}");
                assert!(!err.contains('\n'), "multi-line error for {toml:?}: {err}");
                assert!(!err.contains(":pw@"), "secret leaked: {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn missing_file_is_named() {
        let err = Config::load(
            Some(Path::new("/nonexistent/vigil.toml")),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "configuration file /nonexistent/vigil.toml does not exist"
        );
    }
}
