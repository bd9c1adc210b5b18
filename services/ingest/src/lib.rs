//! The ingest service: logs in, authenticated per tenant, normalized to the schema's `Event`,
//! and acknowledged only after the bus durably accepted them.
//!
//! Today: HTTP `POST /v1/events` (JSON object, array or NDJSON; gzip and zstd), Splunk HEC
//! (`/services/collector/event|raw|health|ack`), OTLP logs over HTTP (`POST /v1/logs`,
//! protobuf and JSON) and syslog over UDP, TCP and TLS. Custom VRL parsers per tenant are the
//! rest of the ingest issue.

pub mod body;
pub mod hec;
pub mod http;
pub mod limits;
mod metric_names;
pub mod normalize;
pub mod otlp;
pub mod parsers;
pub mod syslog;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigil_auth::{TokenSettings, Verifier};
use vigil_runtime::ServiceContext;

pub use http::{IngestState, router};
pub use normalize::Normalizer;

/// The ingest service's configuration (`[ingest]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP listen address (`/v1/events`).
    pub http_listen: SocketAddr,
    /// Largest request body as sent, in bytes.
    pub max_body_bytes: usize,
    /// Largest request body after gzip or zstd decoding, in bytes.
    pub max_decoded_bytes: usize,
    /// Most events in one request.
    pub max_events_per_request: usize,
    /// Largest single event (its record as sent), in bytes.
    pub max_event_bytes: usize,
    /// Most fields in one event, after flattening nested objects.
    pub max_fields: usize,
    /// Deepest nesting of objects and arrays in one record (1: an object of scalars); at most
    /// 127, below serde_json's recursion limit, which refuses deeper input while reading it.
    pub max_depth: usize,
    /// Events per bus message.
    pub batch_events: usize,
    /// Seconds a client gets to send a request's headers (also what an idle keep-alive
    /// connection is given for its next request); then the connection is closed.
    pub header_timeout_secs: u64,
    /// Seconds a request body may go without new data; then it is refused with 408.
    pub body_timeout_secs: u64,
    /// Token issuer, audience and leeway: the control plane's.
    pub tokens: TokenSettings,
    /// How often keys, revocations and suspended tenants are reloaded from the store, in
    /// seconds.
    pub trust_refresh_secs: u64,
    /// Serve HTTP ingest (JSON, HEC, OTLP) over TLS with this certificate and key.
    pub tls: Option<syslog::TlsFiles>,
    /// Syslog over UDP and TCP.
    pub syslog: syslog::SyslogConfig,
    /// Every tenant's rate, unless `tenant_limits` gives it another.
    pub rate: limits::Rate,
    /// Limits of particular tenants, each overriding the ones above.
    pub tenant_limits: std::collections::BTreeMap<vigil_schema::TenantId, limits::TenantLimits>,
    /// Custom parsers (VRL programs) per tenant, run on each of its records before the
    /// built-in normalization.
    pub parsers: std::collections::BTreeMap<vigil_schema::TenantId, parsers::ParserConfig>,
}

impl Config {
    /// Checks values that deserialize but cannot work: the key that is wrong and a message
    /// naming it in full.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.header_timeout_secs == 0 || self.body_timeout_secs == 0 {
            return Err((
                "ingest.header_timeout_secs",
                "ingest.header_timeout_secs and ingest.body_timeout_secs must be greater than zero"
                    .into(),
            ));
        }
        if !(1..=127).contains(&self.max_depth) {
            return Err((
                "ingest.max_depth",
                format!(
                    "ingest.max_depth is {}; it must be 1 to 127 (serde_json refuses 128 levels)",
                    self.max_depth
                ),
            ));
        }
        if self.max_event_bytes == 0 || self.max_fields == 0 {
            return Err((
                "ingest.max_event_bytes",
                "ingest.max_event_bytes and ingest.max_fields must be greater than zero".into(),
            ));
        }
        self.rate
            .validate("ingest.rate")
            .map_err(|message| ("ingest.rate", message))?;
        for (tenant, limits) in &self.tenant_limits {
            limits
                .validate(&format!("ingest.tenant_limits.{tenant}"), self)
                .map_err(|message| ("ingest.tenant_limits", message))?;
        }
        parsers::compile_all(&self.parsers).map_err(|message| ("ingest.parsers", message))?;
        Ok(())
    }

    /// The configuration as it applies to `tenant`'s requests.
    pub fn for_tenant(&self, tenant: &vigil_schema::TenantId) -> Self {
        let mut config = self.clone();
        if let Some(limits) = self.tenant_limits.get(tenant) {
            limits.apply(&mut config);
        }
        config
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8088)),
            max_body_bytes: 16 * 1024 * 1024,
            max_decoded_bytes: 64 * 1024 * 1024,
            max_events_per_request: 100_000,
            max_event_bytes: 1024 * 1024,
            max_fields: 1_000,
            max_depth: 32,
            batch_events: 500,
            header_timeout_secs: 30,
            body_timeout_secs: 30,
            tokens: TokenSettings::default(),
            trust_refresh_secs: 5,
            tls: None,
            syslog: syslog::SyslogConfig::default(),
            rate: limits::Rate::default(),
            tenant_limits: std::collections::BTreeMap::new(),
            parsers: std::collections::BTreeMap::new(),
        }
    }
}

/// Why ingest could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The store (keys and revocations).
    #[error("{0}")]
    Store(#[from] vigil_store::StoreError),
    /// The mapping data.
    #[error("{0}")]
    Mapping(#[from] vigil_sigma::MappingError),
    /// Sockets.
    #[error("{0}")]
    Io(String),
}

/// Serves the ingest router on `listener`, over TLS when an acceptor is given (a handshake gets
/// 10 seconds), until `shutdown`; then waits up to 30 seconds for requests in progress, whose
/// answers follow the bus's acknowledgement. A client that does not send its headers within
/// `header_timeout` is disconnected (hyper's timer), so slow senders cannot hold connections.
async fn serve_http(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
    shutdown: tokio_util::sync::CancellationToken,
    header_timeout: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %err, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (tls, app, watcher) = (tls.clone(), app.clone(), graceful.watcher());
        tokio::spawn(async move {
            // HTTP/1.1 only (what log shippers speak; TLS offers no ALPN for h2): the automatic
            // version detection would wait for a client's first bytes with no timeout.
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .http1_only();
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = match tls {
                None => {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    watcher.watch(builder.serve_connection(io, service)).await
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await
                    else {
                        return;
                    };
                    let io = hyper_util::rt::TokioIo::new(stream);
                    watcher.watch(builder.serve_connection(io, service)).await
                }
            };
        });
    }
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP ingest connections still open 30 s after shutdown; leaving them");
    }
}

/// Serves ingest until the context's shutdown.
pub async fn run(context: ServiceContext, config: Config) -> Result<(), IngestError> {
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(|err| {
            IngestError::Io(format!(
                "cannot listen on {} for HTTP ingest: {err}",
                config.http_listen
            ))
        })?;
    let https = config
        .tls
        .as_ref()
        .map(syslog::TlsFiles::acceptor)
        .transpose()
        .map_err(|err| IngestError::Io(err.replace("ingest.syslog.tls", "ingest.tls")))?;
    let verifier = Verifier::new(config.tokens.clone());
    vigil_runtime::trust::refresh_trust(&context.store, &verifier).await?;
    let refresher = tokio::spawn(vigil_runtime::trust::refresh_loop(
        context.store.clone(),
        verifier.clone(),
        Duration::from_secs(config.trust_refresh_secs.max(1)),
        context.shutdown.clone(),
    ));
    let state = IngestState {
        bus: Arc::clone(&context.bus),
        verifier: vigil_runtime::trust::OnDemandVerifier::new(context.store.clone(), verifier),
        normalizer: Normalizer::builtin()?
            .with_parsers(parsers::compile_all(&config.parsers).map_err(IngestError::Io)?),
        config: Arc::new(config.clone()),
        channels: hec::Channels::default(),
        rates: Arc::new(limits::TenantRates::new(
            config.rate,
            config
                .tenant_limits
                .iter()
                .filter_map(|(tenant, limits)| limits.rate.map(|rate| (tenant.clone(), rate)))
                .collect(),
        )),
        tenant_configs: Arc::new(
            config
                .tenant_limits
                .keys()
                .map(|tenant| (tenant.clone(), Arc::new(config.for_tenant(tenant))))
                .collect(),
        ),
    };
    tracing::info!(listen = %config.http_listen, "HTTP ingest listening");
    let mut listeners = tokio::task::JoinSet::new();
    let syslog = Arc::new(config.syslog.clone());
    if syslog.attributes_tenants() {
        if let Some(address) = syslog.udp_listen {
            let socket = tokio::net::UdpSocket::bind(address).await.map_err(|err| {
                IngestError::Io(format!(
                    "cannot listen on {address} for syslog over UDP: {err}"
                ))
            })?;
            listeners.spawn(syslog::serve_udp(
                socket,
                state.clone(),
                Arc::clone(&syslog),
                context.shutdown.clone(),
            ));
            tracing::info!(listen = %address, "syslog over UDP listening");
        }
        if let Some(address) = syslog.tcp_listen {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|err| {
                    IngestError::Io(format!(
                        "cannot listen on {address} for syslog over TCP: {err}"
                    ))
                })?;
            listeners.spawn(syslog::serve_stream(
                listener,
                None,
                state.clone(),
                Arc::clone(&syslog),
                context.shutdown.clone(),
            ));
            tracing::info!(listen = %address, "syslog over TCP listening");
        }
        if let (Some(address), Some(tls)) = (syslog.tls_listen, &syslog.tls) {
            let acceptor = tls.acceptor().map_err(IngestError::Io)?;
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|err| {
                    IngestError::Io(format!(
                        "cannot listen on {address} for syslog over TLS: {err}"
                    ))
                })?;
            listeners.spawn(syslog::serve_stream(
                listener,
                Some(acceptor),
                state.clone(),
                Arc::clone(&syslog),
                context.shutdown.clone(),
            ));
            tracing::info!(listen = %address, "syslog over TLS listening");
        }
    } else {
        tracing::info!(
            "syslog listeners off: set ingest.syslog.tenant or ingest.syslog.networks to say whose messages they receive"
        );
    }
    let header_timeout = Duration::from_secs(config.header_timeout_secs.max(1));
    serve_http(
        listener,
        https,
        router(state),
        context.shutdown.clone(),
        header_timeout,
    )
    .await;
    context.shutdown.cancel();
    while listeners.join_next().await.is_some() {}
    let _ = refresher.await;
    Ok(())
}
