//! The control plane: one gRPC API (`proto/vigil/control/v1`) through which an MSSP manages
//! tenants, credentials, rules, threat-intel feeds, alerts and the audit log; and the alert
//! persister, which stores the `alerts` stage idempotently.
//!
//! Every call is authenticated by a JWT ([`vigil_auth::Verifier`]) and authorized by
//! [`vigil_auth::Principal::may`] before anything is read; every mutation commits together with
//! its audit record, and a refused or failed mutation is audited too.

mod api;
mod intel;
mod metric_names;
mod persist;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigil_auth::{MasterKey, Role, Scope, SigningKey, TokenRequest, TokenSettings, Verifier};
use vigil_runtime::ServiceContext;
use vigil_store::{KeyRecord, Store};

pub use api::{ControlApi, serve};
pub use persist::{CONSUMER as ALERTS_CONSUMER, persist_alerts};
pub use vigil_runtime::trust::{load_trust, refresh_trust};

/// The control plane's configuration (`[control]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Token issuer, audience and clock leeway.
    pub tokens: TokenSettings,
    /// The master key sealing signing keys [default: DATA_DIR/master.key, created on first
    /// start]. In Kubernetes, a mounted Secret.
    pub master_key_file: Option<PathBuf>,
    /// Write an mssp-admin token to DATA_DIR/admin.token (mode 0600) when none is there.
    pub write_admin_token: bool,
    /// Validity of that first admin token, in hours.
    pub admin_token_ttl_hours: u64,
    /// How often keys, revocations and suspended tenants are reloaded from the store, in
    /// seconds: the longest a revocation by another process takes to apply here.
    pub trust_refresh_secs: u64,
    /// Largest accepted request message, in bytes.
    pub max_request_bytes: usize,
    /// Serve gRPC over TLS with this certificate and key (PEM); plaintext when unset.
    pub tls: Option<TlsConfig>,
    /// Store alerts from the bus (the alert persister).
    pub persist_alerts: bool,
    /// Most alerts stored in one transaction.
    pub persist_batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 50051)),
            tokens: TokenSettings::default(),
            master_key_file: None,
            write_admin_token: true,
            admin_token_ttl_hours: 24 * 90,
            trust_refresh_secs: 5,
            max_request_bytes: 16 * 1024 * 1024,
            tls: None,
            persist_alerts: true,
            persist_batch: 1000,
        }
    }
}

/// TLS for the gRPC API (`[control.tls]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Its private key, PEM.
    pub key_file: PathBuf,
    /// Require client certificates signed by this CA (PEM): mutual TLS on top of tokens.
    pub client_ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Reads the files into tonic's server TLS settings; errors name the file.
    pub fn load(&self) -> Result<tonic::transport::ServerTlsConfig, ControlError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|err| {
                ControlError::Io(format!(
                    "control.tls: cannot read {}: {err}",
                    path.display()
                ))
            })
        };
        let identity =
            tonic::transport::Identity::from_pem(read(&self.cert_file)?, read(&self.key_file)?);
        let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca_file {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
        }
        Ok(tls)
    }
}

/// Why the control plane could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Keys or tokens.
    #[error("{0}")]
    Auth(#[from] vigil_auth::AuthError),
    /// The store.
    #[error("{0}")]
    Store(#[from] vigil_store::StoreError),
    /// The bus.
    #[error("{0}")]
    Bus(#[from] vigil_bus::BusError),
    /// Files and sockets.
    #[error("{0}")]
    Io(String),
}

/// Now, in the store's microseconds.
pub(crate) fn now_micros() -> i64 {
    vigil_store::micros(time::OffsetDateTime::now_utc())
}

/// Opens the master key and makes sure a platform signing key exists.
pub async fn prepare_keys(
    store: &Store,
    config: &Config,
    data_dir: &Path,
) -> Result<MasterKey, ControlError> {
    let path = config
        .master_key_file
        .clone()
        .unwrap_or_else(|| data_dir.join("master.key"));
    let master = MasterKey::load_or_create(&path)?;
    match store.platform().active_key(None).await? {
        None => {
            create_key(store, &master, None).await?;
            tracing::info!("created the platform signing key");
        }
        Some(record) => {
            // Every control-plane process must hold the master key that sealed the store's
            // keys; say so at start rather than on the first token issued.
            SigningKey::unseal(&record.kid, None, &record.sealed_private_key, &master).map_err(
                |_| {
                    ControlError::Io(format!(
                        "the store's signing keys were sealed with another master key than {}: \
                         point control.master_key_file at the master key of this store",
                        path.display()
                    ))
                },
            )?;
        }
    }
    Ok(master)
}

/// Generates and stores a signing key for `tenant` (or the platform).
pub(crate) async fn create_key(
    store_or_tx: &Store,
    master: &MasterKey,
    tenant: Option<vigil_schema::TenantId>,
) -> Result<SigningKey, ControlError> {
    let key = SigningKey::generate(tenant)?;
    store_or_tx
        .platform()
        .insert_key(key_record(&key, master)?)
        .await?;
    Ok(key)
}

pub(crate) fn key_record(key: &SigningKey, master: &MasterKey) -> Result<KeyRecord, ControlError> {
    Ok(vigil_runtime::trust::key_record(key, master, now_micros())?)
}

pub(crate) use vigil_runtime::trust::token_record;

/// Writes an mssp-admin token to `DATA_DIR/admin.token` (0600) when the file does not exist.
pub async fn write_first_admin_token(
    store: &Store,
    master: &MasterKey,
    config: &Config,
    data_dir: &Path,
) -> Result<Option<PathBuf>, ControlError> {
    let path = data_dir.join("admin.token");
    if !config.write_admin_token || path.exists() {
        return Ok(None);
    }
    let record = store
        .platform()
        .active_key(None)
        .await?
        .ok_or_else(|| ControlError::Io("no platform signing key".into()))?;
    let key = SigningKey::unseal(&record.kid, None, &record.sealed_private_key, master)?;
    let issued = vigil_auth::issue(
        &config.tokens,
        &key,
        &TokenRequest {
            subject: "admin".into(),
            role: Role::MsspAdmin,
            scope: Scope::All,
            ttl: Duration::from_secs(config.admin_token_ttl_hours.saturating_mul(3600)),
        },
    )?;
    store.platform().insert_token(token_record(&issued)).await?;
    vigil_auth::write_secret_file(&path, format!("{}\n", issued.token).as_bytes())
        .map_err(|err| ControlError::Io(format!("cannot write {}: {err}", path.display())))?;
    tracing::info!(path = %path.display(), "wrote the first mssp-admin token");
    Ok(Some(path))
}

/// Runs the control plane until the context's shutdown: the gRPC API on `config.listen`, the
/// trust refresher and, when enabled, the alert persister.
pub async fn run(
    context: ServiceContext,
    config: Config,
    data_dir: PathBuf,
) -> Result<(), ControlError> {
    let tls = config.tls.as_ref().map(TlsConfig::load).transpose()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|err| {
            ControlError::Io(format!(
                "cannot listen on {} for the control plane: {err}",
                config.listen
            ))
        })?;
    let store = context.store.clone();
    let master = prepare_keys(&store, &config, &data_dir).await?;
    let verifier = Verifier::new(config.tokens.clone());
    refresh_trust(&store, &verifier).await?;
    write_first_admin_token(&store, &master, &config, &data_dir).await?;

    let api = ControlApi::new(store.clone(), verifier.clone(), master, config.clone());
    let refresher = tokio::spawn(vigil_runtime::trust::refresh_loop(
        store.clone(),
        verifier.clone(),
        Duration::from_secs(config.trust_refresh_secs.max(1)),
        context.shutdown.clone(),
    ));
    let persister = if config.persist_alerts {
        let context = context.clone();
        let batch = config.persist_batch.max(1);
        Some(tokio::spawn(async move {
            persist_alerts(&context, batch).await
        }))
    } else {
        None
    };
    tracing::info!(listen = %config.listen, tls = tls.is_some(), "control plane listening");
    let served = serve(api, listener, tls, context.shutdown.clone()).await;
    context.shutdown.cancel();
    let _ = refresher.await;
    if let Some(persister) = persister {
        match persister.await {
            Ok(Err(err)) => return Err(err),
            Err(err) => return Err(ControlError::Io(format!("alert persister: {err}"))),
            Ok(Ok(())) => {}
        }
    }
    served.map_err(|err| ControlError::Io(format!("control plane server: {err}")))
}

/// Shared state behind the API.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub store: Store,
    pub verifier: Verifier,
    pub master: Arc<MasterKey>,
    pub config: Arc<Config>,
}
