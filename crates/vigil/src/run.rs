//! `vigil run`: connect the bus and the store, serve the admin endpoints, start the services,
//! and stop cleanly on SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use vigil_bus::Bus;
use vigil_bus::inprocess::InProcessBus;
use vigil_bus::jetstream::JetStreamBus;
use vigil_runtime::{AdminState, Readiness, ServiceContext};
use vigil_store::Store;
use vigil_telemetry::OtlpSettings;

use crate::config::Config;
use crate::services::ServiceName;

/// Why `vigil run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Telemetry could not be set up.
    #[error("{0}")]
    Telemetry(#[from] vigil_telemetry::TelemetryError),
    /// The bus is unreachable or misconfigured.
    #[error("{0}")]
    Bus(#[from] vigil_bus::BusError),
    /// The store is unreachable or misconfigured.
    #[error("{0}")]
    Store(#[from] vigil_store::StoreError),
    /// A file or socket could not be opened.
    #[error("{0}")]
    Io(String),
    /// A service stopped with an error.
    #[error("service {service} failed: {reason}")]
    Service {
        /// The service.
        service: ServiceName,
        /// Its error.
        reason: String,
    },
}

impl RunError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        1
    }
}

/// Runs until a shutdown signal or a service failure.
pub async fn run(config: Config) -> Result<(), RunError> {
    let telemetry = vigil_telemetry::init(&config.telemetry, OtlpSettings::from_env()?)?;
    let render_metrics = vigil_telemetry::init_metrics()?;
    let services = config.effective_services();

    std::fs::create_dir_all(&config.data_dir).map_err(|err| {
        RunError::Io(format!(
            "cannot create data directory {}: {err}",
            config.data_dir.display()
        ))
    })?;
    let bus: Arc<dyn Bus> = if config.bus.is_in_process() {
        Arc::new(InProcessBus::new(config.bus.in_process()))
    } else {
        Arc::new(JetStreamBus::connect(config.bus.jetstream()).await?)
    };
    let store = Store::connect(&config.store_url()).await?;
    let listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .map_err(|err| {
            RunError::Io(format!(
                "cannot listen on {} for the admin endpoints: {err}",
                config.admin.listen
            ))
        })?;
    store.migrate().await?;

    let shutdown = CancellationToken::new();
    let readiness = Readiness::default();
    let admin = AdminState {
        bus: Arc::clone(&bus),
        store: store.clone(),
        readiness: readiness.clone(),
        render_metrics: Arc::new(move || render_metrics.render()),
    };
    let admin_task = tokio::spawn(vigil_runtime::serve_admin(
        listener,
        admin,
        shutdown.clone(),
    ));

    let context = ServiceContext {
        bus: Arc::clone(&bus),
        store: store.clone(),
        shutdown: shutdown.clone(),
        readiness: readiness.clone(),
    };
    // Consumers exist before any service publishes: a stage stream keeps a message only for
    // consumers that exist when it arrives.
    if services.contains(&ServiceName::Detect) {
        vigil_detect::ensure_consumer(&context, &config.detect)
            .await
            .map_err(|err| RunError::Service {
                service: ServiceName::Detect,
                reason: err.to_string(),
            })?;
    }
    let mut tasks: JoinSet<(ServiceName, Result<(), String>)> = JoinSet::new();
    for service in &services {
        start_service(&mut tasks, *service, context.clone(), &config);
    }
    readiness.set_started();
    let names: Vec<&str> = services.iter().map(|s| s.as_str()).collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        services = %names.join(","),
        bus = bus.kind(),
        store = store.backend(),
        admin = %config.admin.listen,
        "vigil started"
    );

    let mut failure = None;
    tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down");
        }
        Some(result) = tasks.join_next(), if !tasks.is_empty() => {
            // A service that returns before shutdown was asked for has stopped working.
            failure = Some(service_failure(result).unwrap_or_else(|| {
                RunError::Io("a service stopped by itself".into())
            }));
            tracing::error!("a service stopped, shutting down the others");
        }
    }
    readiness.set_stopping();
    shutdown.cancel();

    // Services stop taking messages and finish what they hold; whatever they did not ack is
    // redelivered to the next process.
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let drained = tokio::time::timeout(grace, async {
        while let Some(result) = tasks.join_next().await {
            if failure.is_none() {
                failure = service_failure(result);
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "services did not stop within the grace period"
        );
        tasks.abort_all();
    }
    if let Err(err) = bus.flush().await {
        tracing::warn!(error = %err, "flushing the bus on shutdown failed");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
    tracing::info!("vigil stopped");
    telemetry.shutdown();
    match failure {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

fn service_failure(
    result: Result<(ServiceName, Result<(), String>), tokio::task::JoinError>,
) -> Option<RunError> {
    match result {
        Ok((_, Ok(()))) => None,
        Ok((service, Err(reason))) => Some(RunError::Service { service, reason }),
        Err(err) => Some(RunError::Io(format!(
            "a service task ended abnormally: {err}"
        ))),
    }
}

/// Starts one service. Each service crate's `run(ctx, config)` is wired here as it lands.
fn start_service(
    tasks: &mut JoinSet<(ServiceName, Result<(), String>)>,
    service: ServiceName,
    context: ServiceContext,
    config: &Config,
) {
    match service {
        ServiceName::Control => {
            let control = config.control.clone();
            let data_dir = config.data_dir.clone();
            tasks.spawn(async move {
                let result = vigil_control::run(context, control, data_dir)
                    .await
                    .map_err(|err| err.to_string());
                (service, result)
            });
        }
        ServiceName::Ingest => {
            let ingest = config.ingest.clone();
            tasks.spawn(async move {
                let result = vigil_ingest::run(context, ingest)
                    .await
                    .map_err(|err| err.to_string());
                (service, result)
            });
        }
        ServiceName::Detect => {
            let detect = config.detect.clone();
            tasks.spawn(async move {
                let result = vigil_detect::run(context, detect)
                    .await
                    .map_err(|err| err.to_string());
                (service, result)
            });
        }
        ServiceName::Operator => {
            let operator = config.operator.clone();
            let tokens = config.control.tokens.clone();
            let data_dir = config.data_dir.clone();
            tasks.spawn(async move {
                let result = vigil_operator::run(context, operator, tokens, data_dir)
                    .await
                    .map_err(|err| err.to_string());
                (service, result)
            });
        }
        // Configuration validation refuses services this build does not contain.
        other => tracing::error!(service = %other, "service is not available in this build"),
    }
}

/// Resolves with the signal's name on SIGTERM or SIGINT.
async fn shutdown_signal() -> &'static str {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt => "SIGINT",
            },
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM, only SIGINT stops vigil");
                let _ = interrupt.await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        "SIGINT"
    }
}
