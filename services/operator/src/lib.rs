//! Vigil's Kubernetes operator: a `Tenant` resource becomes a provisioned tenant.
//!
//! For each `Tenant` ([`crd::Tenant`]) the operator validates the spec; creates or updates the
//! tenant in the store (with its signing key), never taking over a tenant another resource or
//! the API manages; creates the JetStream consumers of the services the tenant runs in its own
//! Deployments; issues an ingest token and, with the MSSP's NATS account key, a NATS user
//! limited to `vigil.<tenant>.>`; writes both to a Secret the tenant's Deployments mount; and
//! reports `Ready`, `Provisioned` and `Degraded` conditions with reasons. Its finalizer offboards
//! the tenant when the resource is deleted: data kept (the default) or purged.
//!
//! Runs as `vigil run --services operator`, next to the store and the bus like any service.

pub mod crd;
mod metric_names;
pub mod nats;
pub mod provision;
pub mod reconcile;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};
use vigil_auth::{MasterKey, TokenSettings};
use vigil_runtime::ServiceContext;

pub use crd::{Tenant, TenantSpec, TenantStatus};
pub use provision::{Failure, Provisioner};
pub use reconcile::{Context, error_policy, reconcile};

/// The operator's configuration (`[operator]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Watch `Tenant`s in this namespace only; every namespace when unset.
    pub namespace: Option<String>,
    /// The master key that seals signing keys: the control plane's (same store, same key).
    /// Defaults to `DATA_DIR/master.key`.
    pub master_key_file: Option<PathBuf>,
    /// Per-tenant NATS users; none without it (then tenants must set
    /// `spec.credentials.nats: false`).
    pub nats: Option<NatsConfig>,
    /// How often a healthy tenant is reconciled again, in seconds.
    pub resync_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespace: None,
            master_key_file: None,
            nats: None,
            resync_secs: 3600,
        }
    }
}

/// The MSSP's NATS account, whose key signs tenant users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// File holding the account's seed (`SA...`), or the seed of one of its signing keys.
    pub account_seed_file: PathBuf,
    /// The account's public key (`A...`) when the seed is a signing key's.
    #[serde(default)]
    pub account: Option<String>,
    /// The NATS URL tenants' services use, written to their Secret as `nats-url`.
    #[serde(default)]
    pub url: Option<String>,
}

impl Config {
    /// Checks values that deserialize but cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.resync_secs == 0 {
            return Err("operator.resync_secs must be at least 1".into());
        }
        if let Some(namespace) = &self.namespace
            && namespace.trim().is_empty()
        {
            return Err("operator.namespace must not be empty".into());
        }
        Ok(())
    }
}

/// Why the operator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// A key file is missing or invalid.
    #[error("{0}")]
    Keys(String),
    /// The Kubernetes API cannot be reached.
    #[error("cannot reach the Kubernetes API: {0}")]
    Kube(String),
}

/// Loads the master key (never creates one: a new key would not open the control plane's
/// signing keys) and the NATS account key.
pub fn load_keys(
    config: &Config,
    data_dir: &std::path::Path,
) -> Result<(MasterKey, Option<nats::NatsIssuer>), OperatorError> {
    let path = config
        .master_key_file
        .clone()
        .unwrap_or_else(|| data_dir.join("master.key"));
    let text = std::fs::read_to_string(&path).map_err(|err| {
        OperatorError::Keys(format!(
            "cannot read the master key {}: {err}; mount the control plane's master key there \
             or set operator.master_key_file",
            path.display()
        ))
    })?;
    let master = MasterKey::from_file_contents(&text)
        .map_err(|err| OperatorError::Keys(format!("master key {}: {err}", path.display())))?;
    let issuer = match &config.nats {
        None => None,
        Some(nats) => {
            let seed = std::fs::read_to_string(&nats.account_seed_file).map_err(|err| {
                OperatorError::Keys(format!(
                    "cannot read the NATS account seed {}: {err}",
                    nats.account_seed_file.display()
                ))
            })?;
            Some(
                nats::NatsIssuer::new(&seed, nats.account.as_deref(), nats.url.clone()).map_err(
                    |err| {
                        OperatorError::Keys(format!("{}: {err}", nats.account_seed_file.display()))
                    },
                )?,
            )
        }
    };
    Ok((master, issuer))
}

/// Runs the operator until the context's shutdown. `tokens` are the control plane's token
/// settings, so the ingest tokens it issues verify everywhere.
pub async fn run(
    context: ServiceContext,
    config: Config,
    tokens: TokenSettings,
    data_dir: PathBuf,
) -> Result<(), OperatorError> {
    let (master, issuer) = load_keys(&config, &data_dir)?;
    let client = kube::Client::try_default()
        .await
        .map_err(|err| OperatorError::Kube(err.to_string()))?;
    let tenants: Api<Tenant> = match &config.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let secrets: Api<Secret> = match &config.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let controller = Controller::new(tenants, watcher::Config::default()).owns(
        secrets,
        watcher::Config::default().labels("app.kubernetes.io/managed-by=vigil-operator"),
    );
    let reporter = kube::runtime::events::Reporter {
        controller: "vigil-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = kube::runtime::events::Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context {
        recorder,
        client,
        provisioner: Provisioner {
            store: context.store.clone(),
            bus: Arc::clone(&context.bus),
            master: Arc::new(master),
            tokens,
            nats: issuer.map(Arc::new),
        },
        tenants: controller.store(),
        failures: Mutex::new(HashMap::new()),
        resync: Duration::from_secs(config.resync_secs),
    });
    tracing::info!(namespace = ?config.namespace, nats_users = ctx.provisioner.nats.is_some(), "operator watching Tenant resources");
    let shutdown = context.shutdown.clone();
    controller
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "controller event");
            }
        })
        .await;
    Ok(())
}
